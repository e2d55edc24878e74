"""`needs:` in the apply loop: when a dependent job may be submitted, and what it gets.

- `NeedsGate.ready(track)`, asked by run.py before submitting a job: True once every job (every
  cell) it needs has completed and its outputs are on disk; False while one is still to come;
  False and the track held ("Skipped: needs prep, which failed") when one failed, was skipped
  or could not be downloaded. A held job is not submitted in this run; a later apply plans it
  again, and submits it once its needs have completed (--rerun-failed re-runs a failed need).
- `InputFiles.files(job)`: what is added to the dependent's package: each needed job's
  downloaded outputs under `inputs/<key>/` (`inputs/<key>/<cell name>/` for a cell), its logs
  and kaio's download marker left out, and `needs.json` listing them. This is the portable
  design: the platform sees an ordinary package, so it works against the hosted API as well.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from kaio_spec import downloads
from kaio_spec.errors import InvalidInput
from kaio_spec.executor.board import Situation
from kaio_spec.executor.results import SKIPPED
from kaio_spec.planner import PlannedJob
from kaio_spec.planner.needs import NEEDS_JSON, NeededJob
from kaio_spec.statuses import JobStatus

__all__ = ["SKIPPED", "Held", "InputFiles", "NeedsGate"]

_NOT_PACKAGED = ("logs/", downloads.MARKER)  # of a needed job's downloaded folder
# What a job's package may carry of its needs' outputs: they travel in memory (the package's
# in-memory tail, packaging.Package.with_files), so a pipeline handing on GBs of checkpoints is
# refused with a clear message rather than exhausting the machine's memory.
MAX_NEEDED_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class Held:
    """Why a job is not submitted in this run: `status` is SKIPPED (a need failed: counts as a
    failure) or NotSubmitted (a --detach run, which does not wait for its needs)."""

    status: str
    reason: str


class NeedsGate:
    """Answers, for the apply loop, whether a job's needs allow submitting it (main thread)."""

    def __init__(
        self,
        tracks: Iterable[Any],
        *,
        detach: bool,
        not_submitted: str,
        on_held: Callable[[str, str], None] = lambda name, text: None,
    ):
        self.by_job_name = {t.job.job_name: t for t in tracks}
        self.detach = detach
        self.not_submitted = not_submitted
        self.on_held = on_held  # (job name, what happened): the reporter's event

    def ready(self, track: Any) -> bool:
        """Whether `track`'s job may be submitted now; sets `track.held` when it may not be
        in this run at all."""
        needs = track.job.needs
        if not needs:
            return True
        waiting = None
        for need in needs:
            state = self._state(need)
            if state == "done":
                continue
            if state != "waiting":
                self._hold(track, Held(SKIPPED, f"needs {need.key}, which {state}"))
                return False
            waiting = waiting or need.key
        if waiting and self.detach:
            why = (
                f"waits for {waiting} (--detach does not wait for it); kaio apply again "
                "submits it once that has completed"
            )
            self._hold(track, Held(self.not_submitted, why))
        return waiting is None

    def _hold(self, track: Any, held: Held) -> None:
        track.held = held
        word = "skipped" if held.status == SKIPPED else "not submitted"
        self.on_held(track.job.name, f"{word}: {held.reason}")

    def _state(self, need: NeededJob) -> str:
        """done, waiting, or (a phrase) why it never will be in this run."""
        track = self.by_job_name.get(need.job_name)
        if track is None:  # not applied by this run: its outputs on disk, or nothing
            return "done" if _downloaded(need) else "this apply does not run"
        if track.held is not None:
            return "was skipped" if track.held.status == SKIPPED else "waiting"
        situation = track.situation(False)
        if situation == Situation.FAILED:
            return "failed"
        if situation != Situation.COMPLETED:
            return "waiting"
        if track.download_error is not None:
            return "completed, but its outputs could not be downloaded"
        unique, _ = track.latest()
        return "done" if track.downloaded == unique else "waiting"


def _downloaded(need: NeededJob) -> bool:
    marker = downloads.read_marker(need.outputs) or {}
    unique = marker.get("unique_job_name")
    return (
        marker.get("job_name") == need.job_name
        and marker.get("status") == JobStatus.COMPLETED
        and isinstance(unique, str)
        and downloads.is_complete(need.outputs, unique)
    )


class InputFiles:
    """The files a dependent job's package gets from its needs, each needed job's read once per
    run (a 100-cell sweep that needs `prep` reads prep's outputs once). Thread-safe."""

    def __init__(self):
        self._read: dict[str, tuple[dict[str, bytes], dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def files(self, job: PlannedJob, linked: bool = False) -> dict[str, bytes | str]:
        """`inputs/...` and needs.json for `job` ({} when it needs nothing); needs.json alone
        when the platform links the needed outputs itself (`linked`: linked_needs says which).
        Raises InvalidInput when a needed job's outputs are not (or no longer) on disk as
        downloaded."""
        if not job.needs:
            return {}
        out: dict[str, bytes | str] = {}
        listing: dict[str, list[dict[str, Any]]] = {}
        if not linked:
            _check_size(job)
        for need in job.needs:
            if linked:
                marker, names = _output_names(need)
                entry = {**need.to_json(), "unique_job_name": marker["unique_job_name"]}
                listing.setdefault(need.key, []).append({**entry, "files": names})
                continue
            files, entry = self._outputs(need)
            out.update((f"{need.path}/{rel}", data) for rel, data in files.items())
            listing.setdefault(need.key, []).append(entry)
        out[NEEDS_JSON] = json.dumps(listing, indent=2, ensure_ascii=False) + "\n"
        return out

    def _outputs(self, need: NeededJob) -> tuple[dict[str, bytes], dict[str, Any]]:
        with self._lock:
            found = self._read.get(need.job_name)
            if found is None:
                found = self._read[need.job_name] = _read_outputs(need)
            return found


def linked_needs(job: PlannedJob) -> dict[str, str] | None:
    """The presign's `needs` where the platform links needed outputs (feature needs-links):
    each need's place under inputs/ -> the unique_job_name whose outputs were downloaded."""
    if not job.needs:
        return None
    out = {}
    for need in job.needs:
        marker, _ = _output_names(need)
        out[need.path.removeprefix("inputs/")] = marker["unique_job_name"]
    return out


def _output_names(need: NeededJob) -> tuple[dict[str, Any], list[str]]:
    """The needed job's download marker and the output files it lists (not its logs)."""
    if not _downloaded(need):
        raise InvalidInput(
            f"the outputs of {need.name} ({need.job_name}), which it needs, are not in "
            f"{need.outputs} as downloaded; run kaio apply again"
        )
    marker = downloads.read_marker(need.outputs) or {}
    names = sorted(
        rel
        for rel in marker["files"]
        if not rel.startswith(_NOT_PACKAGED[0]) and rel != _NOT_PACKAGED[1]
    )
    return marker, names


def _check_size(job: PlannedJob) -> None:
    total = 0
    for need in job.needs:
        _, names = _output_names(need)
        total += sum((need.outputs / rel).stat().st_size for rel in names)
    if total > MAX_NEEDED_BYTES:
        raise InvalidInput(
            f"the outputs of the jobs it needs are {total / 2**20:,.0f} MiB; a job's package "
            f"carries at most {MAX_NEEDED_BYTES / 2**20:,.0f} MiB of them"
        )


def _read_outputs(need: NeededJob) -> tuple[dict[str, bytes], dict[str, Any]]:
    marker, names = _output_names(need)
    files = {rel: (need.outputs / rel).read_bytes() for rel in names}
    entry = {**need.to_json(), "unique_job_name": marker["unique_job_name"], "files": names}
    return files, entry
