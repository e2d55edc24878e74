"""GET /jobs/<unique_job_name>/links (local): the caller's jobs that a job needs, and those that
need it, for the dashboard's job page to link (issue 16). What a job needs is the `needs` label
kaio apply gives it (catalog.NEEDS_LABEL: the needed jobs' job_names, or their keys in the same
manifest); only the caller's own jobs are ever matched, so a label naming another tenant's job
links nothing. kaio apply's needs stay within one manifest, so only the jobs of the job's own
manifest label are read (the store's jobs_by_manifest index): the dashboard polls this every few
seconds, and a tenant's other sweeps cost it nothing."""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations as written.
import json
from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from kaio_spec import catalog
from kaio_spec.server.deps import StoreDep, User, own
from kaio_spec.server.openapi import ERRORS
from kaio_spec.server.store import JobFilter

router = APIRouter()


@router.get("/jobs/{unique_job_name}/links", responses=ERRORS)
async def job_links(unique_job_name: str, user: User, store: StoreDep) -> dict[str, Any]:
    # 404 for another tenant's job, as for a missing one
    this = json.loads(own(store.job_json, unique_job_name, user))
    manifest = (this.get("labels") or {}).get("manifest")
    if not isinstance(manifest, str):  # not applied from a manifest: nothing it could name
        return {"needs": [], "needed_by": []}
    only = JobFilter(labels=(("manifest", manifest),))
    texts = await run_in_threadpool(store.jobs_json, user["id"], True, None, only)
    jobs = [json.loads(text) for text in texts or () if text]
    names = set(_needed_names(this))  # read once, not once per job compared
    return {
        "needs": _latest(j for j in jobs if _named(names, this, j)),
        "needed_by": _latest(j for j in jobs if _named(set(_needed_names(j)), j, this)),
    }


def _named(names: set[str], job: dict, other: dict) -> bool:
    """Whether `names`, what `job`'s needs label says, name `other` (by job_name, or by key in
    its manifest)."""
    if not names or job["job_name"] == other["job_name"]:
        return False
    if other["job_name"] in names:
        return True
    mine, theirs = job.get("labels") or {}, other.get("labels") or {}
    manifest = mine.get("manifest")
    return (
        manifest is not None and theirs.get("manifest") == manifest and theirs.get("key") in names
    )


def _needed_names(job: dict) -> list[str]:
    """The job's needs label, read as untrusted: a JSON list of strings, else nothing."""
    try:
        value = json.loads((job.get("labels") or {}).get(catalog.NEEDS_LABEL) or "[]")
    except ValueError:
        return []
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _latest(jobs) -> list[dict[str, str]]:
    """Each job_name once, its latest submission (the listing is newest first)."""
    seen: dict[str, dict[str, str]] = {}
    for j in jobs:
        if j["job_name"] not in seen:
            seen[j["job_name"]] = {
                "unique_job_name": j["unique_job_name"],
                "job_name": j["job_name"],
                "status": j["status"],
            }
    return sorted(seen.values(), key=lambda link: link["job_name"])
