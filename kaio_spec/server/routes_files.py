"""The input files routes (local, docs/inputs.md): which files a tenant lacks, and their upload;
and the presign's `inputs` and `needs`, assembled for the new job (routes/jobs.py calls
assemble_inputs).

A job names its inputs in its presign (`inputs`, checked and assembled by filestore.py); here the
client first learns which of those files the platform lacks (`POST /files/missing`) and sends
only those (`PUT /files/<sha256>`). No route ever answers a stored file's bytes.
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations as written.
from pathlib import Path

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from kaio_spec import validation
from kaio_spec.server import filestore, storage
from kaio_spec.server.bodies import read_json, receive_hashed, refuse_declared_over
from kaio_spec.server.deps import ConfigDep, User
from kaio_spec.server.errors import ApiError
from kaio_spec.server.filestore import FileStore
from kaio_spec.server.openapi import ERRORS
from kaio_spec.server.responses import ok
from kaio_spec.server.states import JobStatus
from kaio_spec.server.store import NotFound, Store

MAX_ASKED = 10_000  # hashes in one POST /files/missing

router = APIRouter(tags=["local"])


def store_of(config, user: dict) -> FileStore:
    return FileStore(config.data_dir.expanduser(), user["id"])


@router.post("/files/missing", responses=ERRORS)
async def missing_files(request: Request, user: User, config: ConfigDep):
    """Which of the given SHA-256s the caller has not uploaded (another tenant's count not)."""
    body = await read_json(request)
    hashes = body.get("sha256")
    if not isinstance(hashes, list) or len(hashes) > MAX_ASKED:
        raise ApiError(400, f"sha256: must be a list of at most {MAX_ASKED} hashes")
    if not all(validation.is_sha256(h) for h in hashes):
        raise ApiError(400, "sha256: each must be 64 lower-case hex digits")
    store = store_of(config, user)
    return ok({"missing": await run_in_threadpool(store.missing, hashes)})


@router.put("/files/{sha256}", responses=ERRORS)
async def put_file(sha256: str, request: Request, user: User, config: ConfigDep):
    """Store one input file (raw body) whose SHA-256 is the URL's; harmless again (200)."""
    if not validation.is_sha256(sha256):
        raise ApiError(400, "sha256: must be 64 lower-case hex digits (the file's SHA-256)")
    refuse_declared_over(request, config.max_upload_bytes)
    store = store_of(config, user)
    tmp = await run_in_threadpool(store.temp)
    try:
        with open(tmp, "wb", buffering=0) as sink:
            size = await receive_hashed(
                request, sha256, config.max_upload_bytes, sink, config.upload_stall_s
            )
        await run_in_threadpool(store.commit, tmp, sha256)
    finally:
        tmp.unlink(missing_ok=True)
    return ok({"sha256": sha256, "size": size})


def assemble_inputs(
    data_dir: Path, user_id: str, body: dict, jobs: Store, layout: storage.Layout
) -> Path | None:
    """The presign's `inputs` (files of the caller's store) and `needs` (outputs of the caller's
    completed jobs) assembled in a temp folder, read-only (None without either), for
    filestore.place once the job exists. 400 for bad names or paths, 409 for files not uploaded
    or jobs that are not the caller's completed ones."""
    try:
        inputs = filestore.parse_inputs(body)
        needs = filestore.parse_needs(body, inputs)
        if inputs is None and needs is None:
            return None
        tmp = filestore.assemble(FileStore(data_dir, user_id), inputs or {})
    except filestore.MissingFiles as e:
        raise ApiError(409, str(e)) from None
    except filestore.InputsError as e:
        raise ApiError(400, str(e)) from None
    try:
        for path, unique in (needs or {}).items():
            _needed_job(jobs, user_id, path, unique)
            filestore.link_outputs(layout.job(unique).outputs, tmp / path)
        filestore.seal(tmp)
    except BaseException:
        filestore.remove(tmp)
        raise
    return tmp


def _needed_job(jobs: Store, user_id: str, path: str, unique: str) -> None:
    try:
        job = jobs.get_job(unique, user_id)  # another tenant's job and none look the same
    except NotFound:
        raise ApiError(409, f"needs[{path!r}]: no job {unique!r}") from None
    if job["status"] != JobStatus.COMPLETED or job["data_deleted"]:
        raise ApiError(409, f"needs[{path!r}]: {unique} has no outputs to link (not completed)")
