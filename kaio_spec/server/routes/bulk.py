"""POST /jobs/stop (local, feature `jobs-stop`): many of the caller's jobs stopped with one request.

`kaio stop FILE` on a 10,000-job sweep was 10,000 requests, each its own transaction and its own
walk of the queue; here a request names up to MAX_STOP_NAMES jobs (or a label selector such as
`manifest=NAME`), they move to Stopping in one transaction, and the queued ones end Stopped in a
second (docs/protocol.md). Tenant-scoped: another tenant's job, named or labelled, is never read
nor stopped, and is reported exactly as a missing one. Idempotent: a job already Stopping or
ended is reported as it is.
"""

# No `from __future__ import annotations`: FastAPI reads the route's annotations.
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from kaio_spec.server.bodies import MAX_TEXT_FIELD, read_json
from kaio_spec.server.deps import SchedulerDep, StoreDep, User
from kaio_spec.server.errors import ApiError
from kaio_spec.server.openapi import ERRORS
from kaio_spec.server.responses import ok
from kaio_spec.server.routes.jobs import parse_label_filters as _parse_labels
from kaio_spec.server.states import JobStatus

FEATURE = "jobs-stop"  # listed in GET /healthz
MAX_STOP_NAMES = 500  # names in one request: 500 of the longest fit the 64 KB a body may hold
MAX_SELECTOR_LABELS = 10


class StoppedOut(BaseModel):
    unique_job_name: str
    job_name: str
    status: str
    outcome: str  # "stopping": asked to stop (now or before); "ended": it had ended already


class StopManyOut(BaseModel):
    jobs: list[StoppedOut]
    unknown: list[str]
    count: int


STOP_BODY = {
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "description": "exactly one of unique_job_names and labels",
                "properties": {
                    "unique_job_names": {
                        "type": "array",
                        "items": {"type": "string"},
                        "minItems": 1,
                        "maxItems": MAX_STOP_NAMES,
                    },
                    "labels": {
                        "type": "array",
                        "items": {"type": "string", "description": "key=value"},
                        "minItems": 1,
                        "maxItems": MAX_SELECTOR_LABELS,
                    },
                },
            }
        }
    },
    "required": True,
}

router = APIRouter()


@router.post(
    "/jobs/stop",
    tags=["local"],
    response_model=StopManyOut,
    responses=ERRORS,
    openapi_extra={"requestBody": STOP_BODY},
)
async def stop_jobs(request: Request, user: User, store: StoreDep, scheduler: SchedulerDep):
    """Stop the named jobs, or every running job of yours with all the labels given."""
    names, labels = parse_stop(await read_json(request))
    return ok(await run_in_threadpool(stop_many, store, scheduler, user["id"], names, labels))


def parse_stop(body: dict) -> tuple[list[str] | None, tuple[tuple[str, str], ...]]:
    """(names, ()) or (None, labels) from the body; ApiError 400 naming the field otherwise."""
    names, labels = body.get("unique_job_names"), body.get("labels")
    if (names is None) == (labels is None):
        raise ApiError(400, "body: give exactly one of unique_job_names and labels")
    if names is not None:
        return _strings(names, "unique_job_names", MAX_STOP_NAMES), ()
    return None, _parse_labels(_strings(labels, "labels", MAX_SELECTOR_LABELS))


def _strings(value: Any, field: str, most: int) -> list[str]:
    if not isinstance(value, list) or not value:
        raise ApiError(400, f"{field}: must be a non-empty list of strings")
    if len(value) > most:
        raise ApiError(400, f"{field}: at most {most} in one request, got {len(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item or len(item) > MAX_TEXT_FIELD:
            raise ApiError(
                400,
                f"{field}[{i}]: must be a non-empty string of at most {MAX_TEXT_FIELD} characters",
            )
    return value


def stop_many(store, scheduler, user_id: str, names: list[str] | None, labels) -> dict:
    """The stop itself, off the event loop: the jobs read, the live ones moved to Stopping in
    one transaction, then handed to the scheduler (which ends the queued ones at once)."""
    if names is None:
        found = {j["unique_job_name"]: j for j in store.live_jobs_labelled(user_id, labels)}
        names = list(found)
    else:
        names = list(dict.fromkeys(names))  # a name given twice is stopped (and listed) once
        found = store.owned_jobs(user_id, names)
    live = [n for n in names if n in found and found[n]["status"] != JobStatus.STOPPING.value]
    live = [n for n in live if not JobStatus(found[n]["status"]).is_final]
    moved = store.transition_all(live, JobStatus.STOPPING)
    scheduler.request_stops(moved)
    now = store.owned_jobs(user_id, [n for n in names if n in found])  # as they are now
    jobs = []
    for name in names:
        if name not in now:
            continue
        was = JobStatus(found[name]["status"])
        job = now[name]
        outcome = "ended" if was.is_final or (name in live and name not in moved) else "stopping"
        jobs.append({**job, "outcome": outcome})
    unknown = [n for n in names if n not in found]
    return {"jobs": jobs, "unknown": unknown, "count": len(jobs)}
