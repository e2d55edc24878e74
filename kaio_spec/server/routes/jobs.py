"""A tenant's jobs: POST /jobs/presign (a job made, its upload URL signed), GET /jobs (the
list, conditional, filtered), and one job's status, stop, archive, restore and deleted data."""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations as written.
from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from kaio_spec import validation
from kaio_spec.jobspec import JobSpec
from kaio_spec.server import filestore, routes_files, storage
from kaio_spec.server.bodies import MAX_TEXT_FIELD, read_json
from kaio_spec.server.config import ServerConfig
from kaio_spec.server.deps import (
    ConfigDep,
    LayoutDep,
    SchedulerDep,
    SignerDep,
    StoreDep,
    UploadsDep,
    User,
    job_out,
    own_job,
)
from kaio_spec.server.errors import ApiError
from kaio_spec.server.openapi import ERRORS, PRESIGN_BODY, JobListOut, JobOut, PresignOut
from kaio_spec.server.responses import conditional, ok
from kaio_spec.server.states import JobStatus
from kaio_spec.server.store import JobFilter, NotFound, Store
from kaio_spec.server.uploads import Uploads

# SageMaker Processing's own limit: a job the cloud would refuse is refused here too, and one
# tenant cannot ask this machine for a million processes.
DEFAULT_MAX_RUNTIME_HOURS = 24.0  # SageMaker's default MaxRuntimeInSeconds
PACKAGE_BUCKET = "kaio-local"  # the s3_uri of a presign answer names it, and no folder
MAX_LIST_LIMIT = 1000  # jobs in one page of GET /jobs (feature jobs-filters)
# A tenant's own list: no cache keeps it (headers.py); a client may still send If-None-Match.
LIST_HEADERS = {"Cache-Control": "no-store"}
# GET /jobs reads on the event loop only the few jobs that changed since the last listing (about
# 10 us each); more than this many are read on a thread.
LIST_READS_ON_LOOP = 64

router = APIRouter()


def _optional_text(spec: dict, name: str) -> str | None:
    value = spec.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_TEXT_FIELD:
        raise validation.FieldError(
            name, f"must be a string of at most {MAX_TEXT_FIELD} characters"
        )
    return value


def parse_presign(body: dict) -> tuple[str, dict, dict[str, str]]:
    """(job name, job fields for the store, env) from a presign body; FieldError otherwise.
    The job's fields are checked as the client checks them: by making its JobSpec."""
    job = JobSpec.from_presign_body(body, max_runtime_hours=DEFAULT_MAX_RUNTIME_HOURS)
    spec = body["job_spec"]
    fields = {
        "instance_type": job.instance_type,
        "instance_count": job.instance_count,
        "volume_size_gb": job.volume_size_gb,
        "entrypoint": job.entrypoint,
        "max_runtime_hours": job.max_runtime_hours,
        "image_uri": _optional_text(spec, "image_uri"),
        "framework": _optional_text(spec, "framework"),
        "framework_version": _optional_text(spec, "framework_version"),
        "workflow": _optional_text(spec, "workflow") or "processing",
        "env_names": sorted(job.env),
        "labels": dict(job.labels),
    }
    return job.job_name, fields, dict(job.env)


def parse_base_package(body: dict) -> str | None:
    """The optional base package a presign asks for (docs/base-packages.md)."""
    value = body.get("base_package")
    if value is not None and not validation.is_sha256(value):
        raise validation.FieldError(
            "base_package", "must be a package's SHA-256: 64 lower-case hex digits"
        )
    return value


def parse_label_filters(values: list[str]) -> tuple[tuple[str, str], ...]:
    """GET /jobs's `label=key=value` filters."""
    pairs = []
    for value in values:
        key, eq, wanted = value.partition("=")
        if not eq or not key:
            raise ApiError(400, f"label: {value!r} must be key=value")
        pairs.append((key, wanted))
    return tuple(pairs)


@router.post(
    "/jobs/presign",
    response_model=PresignOut,
    responses=ERRORS,
    openapi_extra={"requestBody": PRESIGN_BODY},
)
async def presign(
    request: Request,
    user: User,
    config: ConfigDep,
    store: StoreDep,
    layout: LayoutDep,
    signer: SignerDep,
    uploads: UploadsDep,
):
    body = await read_json(request)
    job_name, fields, env = parse_presign(body)
    base = parse_base_package(body)

    job = await run_in_threadpool(
        make_job, user["id"], job_name, fields, env, base, body, config, store, layout, uploads
    )
    return ok(presign_answer(job, config, signer))


def make_job(
    user_id: str,
    job_name: str,
    fields: dict,
    env: dict[str, str],
    base: str | None,
    body: dict,
    config: ServerConfig,
    store: Store,
    layout: storage.Layout,
    uploads: Uploads,
) -> dict:
    """The job a presign body asks for, made Pending (off the event loop): on its base package
    where the tenant holds it, with its inputs and its env values in place."""
    # Marked used before the job exists, so that the retention sweep spares it.
    if base is not None and uploads.use_base(user_id, base):
        fields["base_package"] = base
    data_dir = config.data_dir.expanduser()
    inputs = routes_files.assemble_inputs(data_dir, user_id, body, store, layout)
    job = store.create_job(user_id, job_name, fields)
    files = layout.job(job["unique_job_name"])
    try:
        if inputs is not None:  # docs/inputs.md: 400/409 above, before the job exists
            filestore.place(inputs, files.root)
        if env:  # read_env: {} when there is no file
            files.write_env(env)
    except OSError as e:  # the platform's own trouble (a full disk): the job fails, not hangs
        files.forget_env()
        reason = f"the platform could not make the job ({e.strerror or type(e).__name__})"
        store.transition(job["unique_job_name"], JobStatus.FAILED, failure_reason=reason)
        raise
    return job


def presign_answer(job: dict, config: ServerConfig, signer: storage.Signer) -> dict:
    unique = job["unique_job_name"]
    answer = {
        "unique_job_name": unique,
        # The configured address, never the Host header: a request saying `Host: evil.example`
        # must not get URLs (credentials) that send their bearer elsewhere.
        "upload_url": config.base_url + signer.path("PUT", storage.package_key(unique)),
        # Where the package is kept, as an object key in a symbolic bucket: never the data
        # folder's path, which is no tenant's business.
        "s3_uri": f"s3://{PACKAGE_BUCKET}/{storage.package_key(unique)}",
        "env_names": job["env_names"],
    }
    if job["base_package"]:
        answer["base_package"] = job["base_package"]  # the upload takes an overlay on it
    return answer


@router.get(
    "/jobs",
    response_model=JobListOut,
    responses={**ERRORS, 304: {"description": "Not Modified (If-None-Match, local)"}},
)
async def list_jobs(
    request: Request,
    user: User,
    store: StoreDep,
    include_archived: bool = False,
    job_name: Annotated[str | None, Query(max_length=MAX_TEXT_FIELD)] = None,
    label: Annotated[list[str], Query(max_length=MAX_TEXT_FIELD)] = [],  # noqa: B006
    limit: Annotated[int | None, Query(ge=1, le=MAX_LIST_LIMIT)] = None,
    after: Annotated[str | None, Query(max_length=MAX_TEXT_FIELD)] = None,
):
    """The caller's jobs, newest first. (local) An ETag comes with the list, and a request
    whose If-None-Match holds it is answered 304 with no body while the list is the same.
    (local, feature `jobs-filters`) Only the jobs named `job_name`, only those with each
    `label=key=value`, at most `limit` of them, after the job `after` (the last of the
    previous page)."""
    only = JobFilter(job_name, parse_label_filters(label), limit, after)
    try:
        jobs = store.jobs_json(user["id"], include_archived, LIST_READS_ON_LOOP, only)
        if jobs is None:  # many jobs to read again (the first listing): off the event loop
            jobs = await run_in_threadpool(
                store.jobs_json, user["id"], include_archived, None, only
            )
    except NotFound:
        raise ApiError(400, f"after: no job {after!r} of yours") from None
    assert jobs is not None  # jobs_json reads every job when max_reads is None
    body = f'{{"jobs":[{",".join(jobs)}],"count":{len(jobs)}}}'.encode()
    return conditional(request, body, "application/json", LIST_HEADERS)


@router.get("/jobs/status/{unique_job_name}", response_model=JobOut, responses=ERRORS)
async def job_status(unique_job_name: str, user: User, store: StoreDep):  # one indexed read
    return job_out(store, unique_job_name, user)


@router.post("/jobs/{unique_job_name}/stop", response_model=JobOut, responses=ERRORS)
def stop_job(unique_job_name: str, user: User, store: StoreDep, scheduler: SchedulerDep):
    job = own_job(store, unique_job_name, user)
    status = JobStatus(job["status"])
    if status.is_final:
        raise ApiError(409, f"status: the job already ended ({status.value})")
    if status is not JobStatus.STOPPING:
        if store.transition(unique_job_name, JobStatus.STOPPING):
            scheduler.request_stop(unique_job_name)
        else:  # it ended between the read and the transition
            ended = own_job(store, unique_job_name, user)["status"]
            raise ApiError(409, f"status: the job already ended ({ended})")
    return job_out(store, unique_job_name, user)


@router.delete("/jobs/{unique_job_name}/data", response_model=JobOut, responses=ERRORS)
def delete_data(unique_job_name: str, user: User, store: StoreDep, scheduler: SchedulerDep):
    job = own_job(store, unique_job_name, user)
    if not JobStatus(job["status"]).is_final:
        raise ApiError(409, f"status: stop the job first ({job['status']})")
    scheduler.delete_data(unique_job_name)
    return job_out(store, unique_job_name, user)


@router.post("/jobs/{unique_job_name}/archive", response_model=JobOut, responses=ERRORS)
def archive(unique_job_name: str, user: User, store: StoreDep):
    own_job(store, unique_job_name, user)
    store.update_job(unique_job_name, archived=1)
    return job_out(store, unique_job_name, user)


@router.post("/jobs/{unique_job_name}/restore", response_model=JobOut, responses=ERRORS)
def restore(unique_job_name: str, user: User, store: StoreDep):
    own_job(store, unique_job_name, user)
    store.update_job(unique_job_name, archived=0)
    return job_out(store, unique_job_name, user)
