"""A plan against reality: each planned job matched, by job_name, to its attempts in GET /jobs.

    observed = observe(plan, client.get_jobs(include_archived=True)["jobs"])
    comparison = compare(client, plan)          # the same, with ONE GET /jobs, plus orphans

The job_name is the identity: the API's list is the truth, whatever a local state file says. Each
planned job gets an action:

- `create`: the API has no job of that job_name;
- `unchanged`: its latest attempt is running (Pending, InProgress, Stopping) or Completed, or it
  failed with no retries left (it stays failed; change the code or raise `retries` to run it again);
- `retry`: its latest attempt Failed or was Stopped and attempts remain (`retries` + 1 in all), or
  every job of that name ended without ever starting (see `counts_as_attempt`);
- `replace`: no job of that job_name, but jobs of the same key and name under another job_name
  (the code or the spec changed since). The old jobs are left alone.

Only when asked (`request`, from `kaio apply --rerun-failed` and `--replace PATTERN`):

- `rerun`: its latest attempt failed or was stopped and no retries are left: one more attempt
  under the same job_name (attempts go on counting), then `retries` more if that one fails;
- `replace-requested`: a job matching --replace whose latest attempt has ended, Completed
  included: one more attempt, the same way (a running job is left alone: never two at once).

`settings.retry_on: platform` retries only failures that were the platform's (`platform_failure`).

Orphans are the manifest's jobs (job_name starting with "<manifest>-", and labels naming this
manifest where the server keeps labels) that the plan no longer defines, the replaced ones aside.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import requests

from kaio_spec import catalog
from kaio_spec.errors import InvalidInput
from kaio_spec.planner import Action, Plan, PlannedJob
from kaio_spec.planner.identity import HASH_CHARS, slug
from kaio_spec.statuses import LIVE_STATUSES, JobStatus
from kaio_spec.transport import platform_errors

__all__ = [
    "LIVE_STATUSES",
    "Comparison",
    "Observed",
    "compare",
    "counts_as_attempt",
    "fetch_jobs",
    "find_orphans",
    "list_jobs",
    "manifest_prefix",
    "observe",
    "orphan_json",
    "platform_failure",
    "request",
    "retryable",
    "same_key_and_name",
    "status_of",
]


def status_of(api_job: dict[str, Any]) -> str:
    """The job's status in SageMaker's spelling (hosted spellings mapped)."""
    return catalog.normalize_status(str(api_job.get("status") or JobStatus.PENDING))


def ever_started(api_job: dict[str, Any]) -> bool:
    if api_job.get("start_time"):
        return True
    history = api_job.get("status_history") or []
    return any(
        catalog.normalize_status(str(h.get("status", ""))) == JobStatus.IN_PROGRESS
        for h in history
        if isinstance(h, dict)
    )


def counts_as_attempt(api_job: dict[str, Any]) -> bool:
    """Whether an API job used up one of its job's attempts: everything but a job Stopped before
    it ever started. Those are submissions the executor abandoned (a presign whose answer was lost,
    so the package could never be uploaded: executor/recover.py stops it and submits again), or
    queued jobs a user stopped; neither ran, so neither costs a retry."""
    return not (status_of(api_job) == JobStatus.STOPPED and not ever_started(api_job))


# What the platform, not the job, caused (a restart or shutdown under a running job, no capacity,
# the platform's own error): in failure reasons of the local platform and of SageMaker. A job that
# ran past max_runtime_hours (MaxRuntimeExceeded) is not one.
PLATFORM_FAILURES = (
    "platform restarted",
    "platform shut down",
    "capacity",
    "internalservererror",
    "internal server error",
    "no package was uploaded",
)


def platform_failure(api_job: dict[str, Any]) -> bool:
    """Whether an attempt failed because of the platform rather than the job's own code."""
    if status_of(api_job) != JobStatus.FAILED:
        return False
    reason = str(api_job.get("failure_reason") or "").lower()
    return any(mark in reason for mark in PLATFORM_FAILURES)


def retryable(api_job: dict[str, Any], retry_on: str) -> bool:
    """Whether `settings.retry_on` lets this ended attempt be retried ("any": every failure or
    stop; "platform": only platform_failure)."""
    return retry_on != "platform" or platform_failure(api_job)


def manifest_prefix(manifest_name: str) -> str:
    """Every job_name of a manifest starts with this (planner/identity.py keeps it whole)."""
    return slug(manifest_name) + "-"


def _stem(job_name: str) -> str:
    """A job_name without its identity hash: the same for every version of one key and name."""
    return job_name[: -(HASH_CHARS + 1)] if len(job_name) > HASH_CHARS + 1 else job_name


def same_key_and_name(job: PlannedJob, job_name: str) -> bool:
    """Whether `job_name` is this job's, or an older version's of it (same key and name)."""
    return bool(job_name) and _stem(job_name) == _stem(job.job_name)


@dataclass(frozen=True)
class Observed:
    """A planned job (its `action` set) and what the API has of it.

    `attempts`: the API's jobs with this job_name, newest first (abandoned ones included; see
    `counts_as_attempt`). `replaced`: jobs of the same key and name under older job_names."""

    job: PlannedJob
    attempts: tuple[dict[str, Any], ...] = ()
    replaced: tuple[dict[str, Any], ...] = ()

    @property
    def action(self) -> Action:
        return self.job.action

    @property
    def latest(self) -> dict[str, Any] | None:
        return self.attempts[0] if self.attempts else None

    @property
    def status(self) -> str | None:
        """The latest attempt's status, or None if the job was never submitted."""
        return status_of(self.attempts[0]) if self.attempts else None

    @property
    def unique_job_name(self) -> str | None:
        return self.attempts[0].get("unique_job_name") if self.attempts else None

    @property
    def unique_job_names(self) -> list[str]:
        """Every attempt's unique_job_name, oldest first."""
        return [str(a.get("unique_job_name")) for a in reversed(self.attempts)]

    @property
    def attempts_used(self) -> int:
        return sum(1 for a in self.attempts if counts_as_attempt(a))

    @property
    def attempts_left(self) -> int:
        return max(0, self.job.retries + 1 - self.attempts_used)

    @property
    def failure_reason(self) -> str | None:
        return self.attempts[0].get("failure_reason") if self.attempts else None


def _action(
    job: PlannedJob, attempts: Sequence[dict], replaced: Sequence[dict], retry_on: str = "any"
) -> Action:
    if not attempts:
        return Action.REPLACE if replaced else Action.CREATE
    counted = [a for a in attempts if counts_as_attempt(a)]
    if not counted:
        return Action.RETRY  # only abandoned submissions: none ran
    status = status_of(counted[0])
    if status in LIVE_STATUSES or status == JobStatus.COMPLETED:
        return Action.UNCHANGED
    if len(counted) <= job.retries and retryable(counted[0], retry_on):
        return Action.RETRY
    return Action.UNCHANGED


def _by_name(api_jobs: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    by_name: dict[str, list[dict[str, Any]]] = {}
    for j in api_jobs:
        by_name.setdefault(str(j.get("job_name")), []).append(j)
    for attempts in by_name.values():
        # Newest first, as GET /jobs answers; sorted again so any source order works. The unique
        # name starts with a UTC timestamp, so it sorts like the submission time.
        attempts.sort(key=lambda j: str(j.get("unique_job_name") or ""), reverse=True)
    return by_name


def _same_job(job: PlannedJob, other: dict[str, Any]) -> bool:
    """An API job under another job_name that is this key and name (an older version)."""
    name = str(other.get("job_name") or "")
    if name == job.job_name or _stem(name) != _stem(job.job_name):
        return False
    labels = other.get("labels") or {}
    if isinstance(labels, dict) and "key" in labels and "name" in labels:
        return labels.get("key") == job.key and labels.get("name") == job.name
    return True


def _of_manifest(plan: Plan, api_job: dict[str, Any]) -> bool:
    name = str(api_job.get("job_name") or "")
    if not name.startswith(manifest_prefix(plan.manifest.name)):
        return False
    labels = api_job.get("labels") or {}
    # "demo-x" is not an orphan of "demo" when the server kept the labels that say so.
    return not (
        isinstance(labels, dict) and labels.get("manifest") not in (None, plan.manifest.name)
    )


def observe(
    plan: Plan | Iterable[PlannedJob], api_jobs: Iterable[dict[str, Any]]
) -> list[Observed]:
    """Each planned job, in plan order, with its action set (dataclasses.replace) and its attempts
    in `api_jobs` (GET /jobs's "jobs"), newest first."""
    api_jobs = list(api_jobs)
    by_name = _by_name(api_jobs)
    stems: dict[str, list[dict[str, Any]]] = {}
    for name, found in by_name.items():
        stems.setdefault(_stem(name), []).extend(found)
    retry_on = plan.manifest.settings.retry_on if isinstance(plan, Plan) else "any"
    out = []
    for job in plan:
        attempts = tuple(by_name.get(job.job_name, ()))
        replaced = tuple(j for j in stems.get(_stem(job.job_name), ()) if _same_job(job, j))
        action = _action(job, attempts, replaced, retry_on)
        out.append(Observed(dataclasses.replace(job, action=action), attempts, replaced))
    return out


def find_orphans(
    plan: Plan, api_jobs: Iterable[dict[str, Any]], observed: Sequence[Observed] | None = None
) -> list[dict[str, Any]]:
    """The API's jobs of this manifest that the plan does not define (and that are not older
    versions of a planned job), newest first. `observed`: observe(plan, api_jobs), if made."""
    api_jobs = list(api_jobs)
    planned = {job.job_name for job in plan.jobs}
    if observed is None:
        observed = observe(plan, api_jobs)
    replaced = {id(j) for o in observed for j in o.replaced}  # older versions: never pruned
    orphans = [
        j
        for j in api_jobs
        if _of_manifest(plan, j)
        and str(j.get("job_name")) not in planned
        and id(j) not in replaced
        and not j.get("archived")  # `kaio forget` archived it: no longer listed
    ]
    orphans.sort(key=lambda j: str(j.get("unique_job_name") or ""), reverse=True)
    return orphans


@dataclass(frozen=True)
class Comparison:
    """A plan compared with the API: `plan` has every job's action set, `observed` the same jobs
    with their attempts, `orphans` the manifest's jobs the plan no longer defines."""

    plan: Plan
    observed: tuple[Observed, ...]
    orphans: tuple[dict[str, Any], ...]

    def __iter__(self):
        return iter(self.observed)

    def __len__(self) -> int:
        return len(self.observed)

    def live_orphans(self) -> list[dict[str, Any]]:
        return [j for j in self.orphans if status_of(j) in LIVE_STATUSES]

    def to_json(self) -> dict[str, Any]:
        """`kaio plan -o json`'s shape, actions filled in, plus "orphans"."""
        doc = self.plan.to_json()
        doc["orphans"] = [orphan_json(j) for j in self.orphans]
        return doc


def _requested(o: Observed, rerun_failed: bool, replace: str | None) -> Action | None:
    """The action --rerun-failed or --replace asks of one observed job, if any."""
    counted = [a for a in o.attempts if counts_as_attempt(a)]
    if not counted or status_of(counted[0]) in LIVE_STATUSES:
        return None  # never ran (create or retry already), or running: never two at once
    job = o.job
    if replace and (
        fnmatch.fnmatchcase(job.key, replace) or fnmatch.fnmatchcase(job.name, replace)
    ):
        return Action.REPLACE_REQUESTED
    if (
        rerun_failed
        and job.action == Action.UNCHANGED
        and status_of(counted[0]) != JobStatus.COMPLETED
    ):
        return Action.RERUN
    return None


def request(
    comparison: Comparison, *, rerun_failed: bool = False, replace: str | None = None
) -> Comparison:
    """`comparison` with what `kaio apply --rerun-failed` and `--replace PATTERN` ask for: every
    job whose latest attempt failed or was stopped for good becomes `rerun`; every job matching
    PATTERN (fnmatch over keys and names) whose latest attempt has ended becomes
    `replace-requested`. Raises InvalidInput when PATTERN matches no job."""
    if replace and not any(
        fnmatch.fnmatchcase(o.job.key, replace) or fnmatch.fnmatchcase(o.job.name, replace)
        for o in comparison.observed
    ):
        raise InvalidInput(
            f"--replace {replace!r} matches no job of {comparison.plan.manifest.name} (it is "
            "matched against each job's key and name, e.g. 'train' or 'train-lr*')"
        )
    observed = []
    for o in comparison.observed:
        action = _requested(o, rerun_failed, replace)
        if action is not None:
            o = dataclasses.replace(o, job=dataclasses.replace(o.job, action=action))
        observed.append(o)
    plan = dataclasses.replace(comparison.plan, jobs=tuple(o.job for o in observed))
    return Comparison(plan, tuple(observed), comparison.orphans)


def orphan_json(api_job: dict[str, Any]) -> dict[str, Any]:
    return {
        "job_name": api_job.get("job_name"),
        "unique_job_name": api_job.get("unique_job_name"),
        "status": status_of(api_job),
        "action": "orphan",
    }


JOBS_FILTERS = "jobs-filters"  # the feature in GET /healthz: GET /jobs takes label=key=value


def fetch_jobs(client, **filters: Any) -> list[dict[str, Any]]:
    """ONE GET /jobs, archived jobs included: a job hidden from the list still exists and still
    holds its job_name. `filters`: Client.query_jobs's (JOBS_FILTERS). Raises what the client
    raises."""
    if filters:
        return list(client.query_jobs(include_archived=True, **filters).get("jobs") or [])
    return list(client.get_jobs(include_archived=True).get("jobs") or [])


def manifest_filter(client, jobs: Sequence[PlannedJob], listing: Iterable[dict[str, Any]]):
    """The GET /jobs filters that list only these jobs' manifest, where the server takes them
    (JOBS_FILTERS) and they lose nothing: every listed job of a planned job_name carries the
    manifest's label (one submitted without it would be missed, and submitted again). None
    otherwise: the whole list then."""
    names = {job.labels.get("manifest") for job in jobs}
    if len(names) != 1 or None in names:
        return None
    (manifest,) = names
    job_names = {job.job_name for job in jobs}
    for j in listing:
        labels = j.get("labels")
        if j.get("job_name") in job_names and (
            not isinstance(labels, dict) or labels.get("manifest") != manifest
        ):
            return None
    try:
        features = client.features()
    except (AttributeError, requests.RequestException):
        return None
    return {"labels": [f"manifest={manifest}"]} if JOBS_FILTERS in features else None


def list_jobs(client) -> list[dict[str, Any]]:
    """fetch_jobs, with an API that cannot be reached (after the client's own retries), or
    that refuses, as a PlatformError that says where."""
    where = getattr(client, "api_base", "the API")

    def unreachable(e: Exception) -> str:
        return f"cannot list the jobs at {where}: {type(e).__name__}"

    with platform_errors(where, unreachable=unreachable):
        return fetch_jobs(client)


def compare(client, plan: Plan, api_jobs: Iterable[dict[str, Any]] | None = None) -> Comparison:
    """`plan` against what the API has, with one GET /jobs (or the `api_jobs` given)."""
    jobs = list_jobs(client) if api_jobs is None else list(api_jobs)
    observed = observe(plan, jobs)
    new_plan = dataclasses.replace(plan, jobs=tuple(o.job for o in observed))
    return Comparison(new_plan, tuple(observed), tuple(find_orphans(plan, jobs, observed)))
