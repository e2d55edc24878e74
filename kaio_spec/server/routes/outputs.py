"""What a job wrote, for its owner to read: its output files (GET /jobs/download lists them with
presigned URLs, GET /objects/... sends one), its logs and its telemetry."""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations as written.
import contextlib
import json
import os
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from kaio_spec.server import storage
from kaio_spec.server.deps import (
    ConfigDep,
    LayoutDep,
    SchedulerDep,
    SignerDep,
    StoreDep,
    User,
    check_signature,
    own_job,
)
from kaio_spec.server.errors import ApiError
from kaio_spec.server.headers import attachment
from kaio_spec.server.openapi import ERRORS, DownloadOut, TelemetryOut
from kaio_spec.server.responses import file_response, ok
from kaio_spec.server.states import JobStatus
from kaio_spec.server.storage import hosts_of
from kaio_spec.server.store import TELEMETRY_FIELDS, NotFound

LOG_CHUNK = 1024 * 1024
MAX_LOG_OFFSET = 2**53  # far past any log, and exact in every JSON reader (a JavaScript number)
SIGNED_ON_LOOP = 64  # output URLs GET /jobs/download signs on the event loop (about 10 us each)
# GET /jobs/<unique>/telemetry: what each point of an instance's samples holds (runner.Instance)
TELEMETRY_SAMPLE_FIELDS = (
    "seconds",
    "cpu_percent",
    "rss_bytes",
    "gpu_util_percent",
    "gpu_memory_mb",
)

router = APIRouter()


@router.get("/jobs/download/{unique_job_name}", response_model=DownloadOut, responses=ERRORS)
async def download(
    unique_job_name: str,
    user: User,
    config: ConfigDep,
    store: StoreDep,
    layout: LayoutDep,
    signer: SignerDep,
    scheduler: SchedulerDep,
):
    job = own_job(store, unique_job_name, user)  # one indexed read
    if not JobStatus(job["status"]).is_final:
        raise ApiError(409, f"status: the job has not ended yet ({job['status']})")
    if job["data_deleted"]:
        return ok({"output_files": []})
    listing = scheduler.listing(unique_job_name)
    # The configured address, never the Host header: a request saying `Host: evil.example`
    # must not get URLs (credentials) that send their bearer elsewhere.
    signed = (job, listing, config.base_url, layout, signer)
    if listing is None or len(listing) > SIGNED_ON_LOOP:
        # The folder to list (the job ended before this server started), or many URLs to
        # sign: off the event loop.
        return await run_in_threadpool(output_files, *signed)
    return output_files(*signed)


def output_files(
    job: dict,
    listing: list | None,
    root: str,
    layout: storage.Layout,
    signer: storage.Signer,
) -> JSONResponse:
    unique = job["unique_job_name"]
    if listing is None:
        listing = storage.list_outputs(layout.job(unique), hosts_of(job))
    return ok(
        {
            "output_files": [
                [rel, modified, root + signer.path("GET", storage.output_key(unique, rel))]
                for rel, modified, _ in listing
            ]
        }
    )


@router.get("/objects/{key:path}", tags=["presigned"], responses=ERRORS)
def get_object(key: str, request: Request, store: StoreDep, layout: LayoutDep, signer: SignerDep):
    check_signature(request, signer, "GET", key)
    unique, _, rest = key.partition("/")
    kind, _, rel = rest.partition("/")
    try:
        job = store.get_job(unique)
    except NotFound:
        raise ApiError(404, "object: no such object") from None
    opened = None
    if kind == "outputs" and not job["data_deleted"]:
        opened = storage.open_output(layout.job(unique), hosts_of(job), rel)
    if opened is None:
        raise ApiError(404, "object: no such object (deleted, or never written)")
    response = file_response(opened)
    # A download, never a page: an output named x.html cannot run in this origin.
    response.headers["Content-Disposition"] = attachment(rel)
    return response


@router.get(
    "/jobs/{unique_job_name}/logs",
    tags=["local"],
    responses={**ERRORS, 200: {"content": {"text/plain": {}}}},
    response_class=Response,
)
def logs(
    unique_job_name: str,
    user: User,
    store: StoreDep,
    layout: LayoutDep,
    host: Annotated[str, Query(max_length=32)] = "algo-1",
    offset: Annotated[int, Query(ge=0, le=MAX_LOG_OFFSET)] = 0,
    stream: Literal["stdout", "stderr"] = "stdout",
):
    """Log bytes of one instance from `offset`; the next offset is in X-Next-Offset."""
    job = own_job(store, unique_job_name, user)
    if host not in hosts_of(job):
        raise ApiError(400, f"host: the job's hosts are algo-1 to algo-{len(hosts_of(job))}")
    path = layout.job(unique_job_name).logs(host) / f"{stream}.log"
    data = b""
    with contextlib.suppress(FileNotFoundError), open(path, "rb") as f:
        if offset < os.fstat(f.fileno()).st_size:  # never a seek past the end
            f.seek(offset)
            data = f.read(LOG_CHUNK)
    return Response(
        data,
        media_type="text/plain; charset=utf-8",
        headers={"X-Next-Offset": str(offset + len(data))},
    )


@router.get(
    "/jobs/{unique_job_name}/telemetry",
    tags=["local"],
    response_model=TelemetryOut,
    responses=ERRORS,
)
def telemetry(unique_job_name: str, user: User, store: StoreDep, scheduler: SchedulerDep):
    """Each instance's CPU, memory and GPU use over time (`samples`, one row per point in
    the order of `sample_fields`; at most 240 points, evenly thinned over a long run) and
    its totals and peaks once the job has ended. A running job's samples so far."""
    job = own_job(store, unique_job_name, user)
    live = scheduler.live_samples(unique_job_name) or {}
    saved = {row["host"]: row for row in store.telemetry(unique_job_name)}
    instances = []
    for host in hosts_of(job):
        row = saved.get(host) or {}
        totals = {f: row.get(f) for f in TELEMETRY_FIELDS if f != "samples"}  # null until it ends
        samples = live.get(host) if host in live else json.loads(row.get("samples") or "[]")
        instances.append({"host": host, **totals, "samples": samples})
    return ok(
        {
            "unique_job_name": unique_job_name,
            "status": job["status"],
            "sample_fields": list(TELEMETRY_SAMPLE_FIELDS),
            "instances": instances,
        }
    )
