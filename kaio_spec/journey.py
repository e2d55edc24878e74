"""The rest of the user's journey around `kaio apply`, as a library: the commands `kaio jobs`,
`kaio status`, `kaio download`, `kaio stop` and `kaio logs` are thin shells over these.

    client = targets.connect()
    jobs = list_jobs(client)                          # [job_json(...)], newest first
    status = manifest_status(client, "kaio.yaml")     # executor.Comparison: jobs + orphans
    job = find_job(client, "20261128-142233123-demo-train-ab12cd")

Every function takes a logged-in Client and raises KaioErrors that name the job or file and say
what would be right (InvalidInput for an unknown job, PlatformError when the API fails).
"""

from __future__ import annotations

import contextlib
import fnmatch
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kaio_spec import catalog
from kaio_spec.errors import InvalidInput, PlatformError
from kaio_spec.statuses import JobStatus

__all__ = [
    "JOB_FIELDS",
    "api_errors",
    "connect",
    "download",
    "find_job",
    "is_manifest_argument",
    "job_json",
    "list_jobs",
    "live_jobs_of",
    "manifest_status",
    "select",
    "status",
    "status_json",
    "stop_job",
]

# `kaio jobs -o json`'s job shape, in this order (a stable subset of the API's job).
JOB_FIELDS = (
    "unique_job_name",
    "job_name",
    "status",
    "timestamp",
    "start_time",
    "end_time",
    "failure_reason",
    "instance_type",
    "instance_count",
    "labels",
    "archived",
)


@contextlib.contextmanager
def api_errors(api_base: str) -> Iterator[None]:
    """Turns the client's requests errors into PlatformError with the API's reason
    (transport.platform_errors, imported here: commands that never call the API skip it)."""
    from kaio_spec.transport import platform_errors

    with platform_errors(api_base):
        yield


def job_json(job: dict[str, Any]) -> dict[str, Any]:
    """The API's job as `kaio jobs -o json` prints it: JOB_FIELDS, status in SageMaker's
    spelling, missing fields as null."""
    out = {name: job.get(name) for name in JOB_FIELDS}
    out["status"] = catalog.normalize_status(str(job.get("status") or JobStatus.PENDING))
    out["labels"] = dict(job.get("labels") or {})
    out["archived"] = bool(job.get("archived"))
    return out


def list_jobs(client, include_archived: bool = False) -> list[dict[str, Any]]:
    """All of your jobs, newest first, as job_json()."""
    with api_errors(client.api_base):
        jobs = client.get_jobs(include_archived=include_archived).get("jobs") or []
    return [job_json(j) for j in jobs]


def is_manifest_argument(arg: str) -> bool:
    """Whether FILE|UNIQUE_JOB_NAME names a manifest: an existing file, or anything that looks
    like a path (a .yaml/.yml name, a folder part). Unique job names never contain '/' or '.';
    a folder named like a job (where `kaio download UNIQUE` puts it) is not a manifest."""
    path = Path(arg)
    if path.is_file():
        return True
    if arg.endswith((".yaml", ".yml")) or "/" in arg or arg in (".", ".."):
        if path.is_dir():
            raise InvalidInput(f"{arg}: is a folder; give the manifest file (e.g. {arg}/kaio.yaml)")
        raise InvalidInput(f"{arg}: no such file")
    return False


def find_job(client, unique_job_name: str) -> dict[str, Any]:
    """The API's job, or InvalidInput naming it (and the job you may have meant)."""
    import requests

    with api_errors(client.api_base):
        try:
            return client.get_job(unique_job_name)
        except requests.HTTPError as e:
            if e.response is None or e.response.status_code not in (400, 404):
                raise
        jobs = client.get_jobs(include_archived=True).get("jobs") or []
    raise InvalidInput(_unknown_job(client.api_base, unique_job_name, jobs))


def _unknown_job(api_base: str, name: str, jobs: list[dict[str, Any]]) -> str:
    message = f"{name}: no such job of yours on {api_base}"
    same = [j for j in jobs if j.get("job_name") == name]
    if same:  # a job_name (not unique) was given: point at its latest attempt
        latest = same[0]["unique_job_name"]
        n = len(same)
        more = f", the latest of {n} jobs named {name}" if n > 1 else ""
        return f"{message}; did you mean {latest}{more}? (`kaio jobs` lists them)"
    close = [j["unique_job_name"] for j in jobs if name in str(j.get("unique_job_name"))]
    if close:
        return f"{message}; did you mean {close[0]}? (`kaio jobs` lists them)"
    return f"{message}; `kaio jobs` lists your jobs' unique names"


def manifest_status(client, file_or_plan):
    """The manifest's planned jobs (a file, or a planner.Plan made from one) against what the API
    has, with ONE GET /jobs: an executor.Comparison (each job's attempts, newest first, and the
    orphans)."""
    from kaio_spec.executor import compare
    from kaio_spec.planner import Plan, plan

    planned = file_or_plan if isinstance(file_or_plan, Plan) else plan(file_or_plan)
    with api_errors(client.api_base):
        return compare(client, planned)


def select(observed, only: str | None):
    """The observed jobs whose name or key matches the glob `only` (all if None); InvalidInput
    if none does."""
    if not only:
        return list(observed)
    chosen = [
        o
        for o in observed
        if fnmatch.fnmatchcase(o.job.name, only) or fnmatch.fnmatchcase(o.job.key, only)
    ]
    if not chosen:
        names = ", ".join(o.job.name for o in list(observed)[:5])
        raise InvalidInput(f"--only {only!r}: matches no job of the manifest (its jobs: {names}…)")
    return chosen


def live_jobs_of(comparison) -> list[dict[str, Any]]:
    """Every API job of the manifest still running (Pending, InProgress): the planned jobs'
    attempts, their older versions and the orphans; newest first."""
    from kaio_spec.executor import LIVE_STATUSES, status_of

    seen: dict[str, dict[str, Any]] = {}
    for o in comparison.observed:
        for j in (*o.attempts, *o.replaced):
            seen[str(j.get("unique_job_name"))] = j
    for j in comparison.orphans:
        seen[str(j.get("unique_job_name"))] = j
    live = [j for j in seen.values() if status_of(j) in LIVE_STATUSES - {JobStatus.STOPPING}]
    return sorted(live, key=lambda j: str(j.get("unique_job_name")), reverse=True)


def running_jobs(client, planned, only: str | None = None) -> list[dict[str, Any]]:
    """`kaio stop FILE`'s jobs: every API job of the manifest still running (live_jobs_of); with
    `only`, those of the jobs it matches alone (orphans dropped: they match no pattern)."""
    from dataclasses import replace

    comparison = manifest_status(client, planned)
    if only:
        chosen = tuple(select(comparison.observed, only))
        comparison = replace(comparison, observed=chosen, orphans=())
    return live_jobs_of(comparison)


def submitted_jobs(client, planned, file: str, only: str | None = None) -> list[tuple[str, str]]:
    """`kaio logs FILE`'s jobs: (name, unique_job_name) of the latest attempt of each submitted
    job (those `only` matches); InvalidInput naming FILE when none has been submitted."""
    comparison = manifest_status(client, planned)
    chosen = select(comparison.observed, only)
    jobs = [(o.job.name, o.unique_job_name) for o in chosen if o.unique_job_name]
    if not jobs:
        raise InvalidInput(
            f"{file}: none of its jobs has been submitted yet; `kaio apply {file}` submits them"
        )
    return jobs


def stop_job(client, unique_job_name: str) -> tuple[str, str]:
    """Ask a job to stop. Returns (outcome, status): ("stopping", ...) or ("ended", its final
    status) when it had already ended (409). InvalidInput if there is no such job."""
    import requests

    with api_errors(client.api_base):
        try:
            job = client.stop_job(unique_job_name)
            return "stopping", catalog.normalize_status(str(job.get("status")))
        except requests.HTTPError as e:
            code = e.response.status_code if e.response is not None else None
            if code == 409:
                job = client.get_job(unique_job_name)
                return "ended", catalog.normalize_status(str(job.get("status")))
            if code not in (400, 404):
                raise
    find_job(client, unique_job_name)  # raises InvalidInput with a suggestion
    raise PlatformError(f"{unique_job_name}: the API refused to stop it")  # pragma: no cover


STOPS_AT_ONCE = 8  # a manifest's stop requests in flight at once, where each stops one job
STOP_NAMES_PER_REQUEST = 500  # POST /jobs/stop's most


def stop_jobs(client, unique_job_names: list[str]) -> list[tuple[str, str]]:
    """stop_job for each, in order. Where the server stops many jobs with one request
    (Client.stop_jobs, feature jobs-stop) a 10,000-job sweep takes 20 requests; elsewhere (the
    hosted API) one request per job, several at once (the client is shared by threads, as
    apply's workers share it). InvalidInput if a name is no job of yours."""
    from concurrent.futures import ThreadPoolExecutor

    from kaio_spec.client import JOBS_STOP

    if len(unique_job_names) > 1 and client.offers(JOBS_STOP):
        return _stop_in_bulk(client, unique_job_names)
    if len(unique_job_names) <= 1:
        return [stop_job(client, u) for u in unique_job_names]
    with ThreadPoolExecutor(STOPS_AT_ONCE, thread_name_prefix="stop") as pool:
        return list(pool.map(lambda u: stop_job(client, u), unique_job_names))


def stop_named(client, names: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Stop each (unique_job_name, job_name): `kaio stop -o json`'s entries, in order, each
    {"unique_job_name", "job_name", "outcome" (stopping | ended), "status"}."""
    stopped = stop_jobs(client, [unique for unique, _ in names])
    return [
        {"unique_job_name": unique, "job_name": job_name, "outcome": outcome, "status": status}
        for (unique, job_name), (outcome, status) in zip(names, stopped, strict=True)
    ]


def _stop_in_bulk(client, unique_job_names: list[str]) -> list[tuple[str, str]]:
    outcomes: dict[str, tuple[str, str]] = {}
    unknown: list[str] = []
    step = STOP_NAMES_PER_REQUEST
    with api_errors(client.api_base):
        for i in range(0, len(unique_job_names), step):
            answer = client.stop_jobs(unique_job_names[i : i + step])
            for job in answer.get("jobs") or []:
                status = catalog.normalize_status(str(job.get("status")))
                outcomes[str(job.get("unique_job_name"))] = (str(job.get("outcome")), status)
            unknown += [str(u) for u in answer.get("unknown") or []]
    if unknown:
        find_job(client, unknown[0])  # raises InvalidInput with a suggestion
    missing = [u for u in unique_job_names if u not in outcomes]
    if missing:
        raise PlatformError(f"{missing[0]}: the API did not say whether it stopped")
    return [outcomes[u] for u in unique_job_names]


def status_json(comparison) -> dict[str, Any]:
    """`kaio status -o json`: the manifest, each planned job with its latest attempt, the
    orphans, and the stale outputs folders (shape in `kaio status --help`)."""
    from kaio_spec.downloads import is_complete, stale_outputs
    from kaio_spec.executor.observe import manifest_prefix, orphan_json

    jobs = []
    for o in comparison.observed:
        unique = o.unique_job_name
        jobs.append(
            {
                "key": o.job.key,
                "name": o.job.name,
                "job_name": o.job.job_name,
                "status": o.status,
                "unique_job_name": unique,
                "attempts": o.attempts_used,
                "unique_job_names": o.unique_job_names,
                "failure_reason": o.failure_reason,
                "outputs": str(o.job.outputs),
                "downloaded": bool(unique) and is_complete(o.job.outputs, unique),
                "action": o.action.value,
            }
        )
    plan = comparison.plan
    return {
        "manifest": plan.manifest.name,
        "file": plan.manifest.file,
        "jobs": jobs,
        "orphans": [orphan_json(j) for j in comparison.orphans],
        "stale_outputs": [
            str(p)
            for p in stale_outputs(
                [j.outputs for j in plan.jobs], manifest_prefix(plan.manifest.name)
            )
        ],
    }


# ---- for notebooks and scripts: the commands' answers as data (kaio_spec exports these) --------


def connect(api: str | None = None):
    """A logged-in Client chosen exactly as the `kaio` commands choose one: `api`, else
    $KAIO_API_BASE, else the address `kaio login` saved, else the local platform (started in
    the background if nothing answers); the key from $KAIO_API_KEY, `kaio login` or the local
    platform's key file (targets.py). Raises InvalidInput (no key, a refused key, a malformed
    address) or PlatformError (unreachable), each saying what to do."""
    from kaio_spec import targets

    return targets.connect(api)


def status(path_or_plan, client=None) -> dict[str, Any]:
    """`kaio status FILE -o json` as a dict: each planned job with its latest attempt, and the
    orphans. `client`: a logged-in Client (default: connect())."""
    return status_json(manifest_status(client or connect(), path_or_plan))


def download(
    path_or_plan,
    client=None,
    *,
    only: str | None = None,
    dest: str | Path | None = None,
    force: bool = False,
) -> list[dict[str, Any]]:
    """`kaio download FILE -o json`'s list: every job of the manifest whose latest attempt has
    ended, downloaded to its `outputs` folder (or DEST/<job name>); each entry {"name",
    "unique_job_name", "dest", "outcome", "files", "message"}, outcome downloaded | already |
    conflict | not_ended | not_submitted. `only`: a glob over job keys and names."""
    from kaio_spec.downloads import download as download_job

    client = client or connect()
    comparison = manifest_status(client, path_or_plan)
    out = []
    for o in select(comparison.observed, only):
        where = Path(dest) / o.job.name if dest else o.job.outputs
        doc: dict[str, Any] = {"unique_job_name": o.unique_job_name, "dest": str(where)}
        if o.unique_job_name is None:
            doc |= {"outcome": "not_submitted", "files": []}
            doc["message"] = "never submitted (`kaio apply` submits it)"
        elif not catalog.is_final(o.status or JobStatus.PENDING):
            doc |= {"outcome": "not_ended", "files": []}
            doc["message"] = f"still {o.status}; not downloaded"
        else:
            with api_errors(client.api_base):
                doc = download_job(client, o.unique_job_name, where, force=force).to_json()
        out.append({"name": o.job.name, **doc})
    return out


def download_one(client, job: dict[str, Any], dest: str | Path | None = None, *, force=False):
    """`kaio download UNIQUE_JOB_NAME -o json`'s entry: that job's outputs and logs into `dest`
    (default ./UNIQUE_JOB_NAME), as download()'s entries with "name" None."""
    from kaio_spec.downloads import download as download_job

    unique = str(job["unique_job_name"])
    with api_errors(client.api_base):
        doc = download_job(client, unique, Path(dest or unique), force=force).to_json()
    return {"name": None, **doc}


def download_failed(results: list[dict[str, Any]]) -> bool:
    """Whether a download failed (`kaio download` exits 1): a destination was left alone
    (conflict), or the one job named by its unique name has not ended. A manifest's jobs still
    running or never submitted are listed and skipped, not failures."""
    named_one = len(results) == 1 and results[0]["name"] is None
    return any(r["outcome"] == "conflict" for r in results) or (
        named_one and results[0]["outcome"] == "not_ended"
    )
