"""What `apply` returns: every job's end, structured (the CLI prints it; scripts read it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kaio_spec.errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK
from kaio_spec.statuses import JobStatus

__all__ = ["INVALID", "NOT_SUBMITTED", "SKIPPED", "ApplyResult", "JobResult"]

NOT_SUBMITTED = "NotSubmitted"  # a job's status when apply never got to submit it
SKIPPED = "Skipped"  # not submitted because a job it needs failed (executor/needs.py)
INVALID = "Invalid"  # a job the executor could not submit: its spec or package is wrong


@dataclass(frozen=True)
class JobResult:
    """One planned job after apply.

    `status`: the last attempt's status (SageMaker's spelling), or "NotSubmitted". `attempts`:
    attempts used (retries count; a submission stopped before it ever ran does not).
    `unique_job_names`: every submission, oldest first. `outputs`: the folder holding the last
    attempt's outputs and logs, once downloaded. `failure_reason`: the platform's, or why the job
    could not be submitted. `log_path`: the first instance's stderr log, when downloaded."""

    key: str
    name: str
    job_name: str
    status: str
    attempts: int = 0
    unique_job_names: tuple[str, ...] = ()
    outputs: Path | None = None
    failure_reason: str | None = None
    log_path: Path | None = None

    @property
    def completed(self) -> bool:
        return self.status == JobStatus.COMPLETED

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "name": self.name,
            "job_name": self.job_name,
            "status": self.status,
            "attempts": self.attempts,
            "unique_job_names": list(self.unique_job_names),
            "outputs": str(self.outputs) if self.outputs else None,
            "failure_reason": self.failure_reason,
            "log_path": str(self.log_path) if self.log_path else None,
        }


@dataclass(frozen=True)
class ApplyResult:
    """The end of one apply: `jobs` in plan order; `interrupted` (Ctrl-C), `detached` (returned
    once everything was submitted); `stopped_orphans` and `pruned_outputs` (--prune); `restarts`: attempts that failed
    because the platform restarted under them (they count as attempts and were retried while
    retries remained)."""

    manifest: str
    jobs: tuple[JobResult, ...]
    interrupted: bool = False
    detached: bool = False
    halted: str | None = None  # why submitting stopped early (fail_fast)
    stopped_orphans: tuple[str, ...] = ()
    pruned_outputs: tuple[str, ...] = ()  # where --prune moved stale outputs folders
    restarts: int = 0
    declined: bool = False  # the confirmation was answered no: nothing was done
    polls: int = 0  # GET /jobs listings made (the first one, then one per polling round)

    @property
    def ok(self) -> bool:
        """Every job completed (detached: nothing failed so far)."""
        if self.detached:
            return not self.failed
        return all(j.completed for j in self.jobs)

    @property
    def failed(self) -> list[JobResult]:
        return [
            j
            for j in self.jobs
            if j.status in (JobStatus.FAILED, JobStatus.STOPPED, INVALID, SKIPPED)
        ]

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for j in self.jobs:
            counts[j.status] = counts.get(j.status, 0) + 1
        return counts

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        if self.declined:
            return EXIT_FAILURE
        return EXIT_OK if self.ok else EXIT_FAILURE

    def to_json(self) -> dict[str, Any]:
        return {
            "manifest": self.manifest,
            "ok": self.ok,
            "interrupted": self.interrupted,
            "declined": self.declined,
            "detached": self.detached,
            "halted": self.halted,
            "counts": self.counts(),
            "stopped_orphans": list(self.stopped_orphans),
            "pruned_outputs": list(self.pruned_outputs),
            "restarts": self.restarts,
            "jobs": [j.to_json() for j in self.jobs],
        }
