"""The input files routes (local, docs/inputs.md): which files a tenant lacks, and their upload.

A job names its inputs in its presign (`inputs`, checked and assembled by filestore.py); here the
client first learns which of those files the platform lacks (`POST /files/missing`) and sends
only those (`PUT /files/<sha256>`). No route ever answers a stored file's bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from kaio_spec import validation
from kaio_spec.server import filestore
from kaio_spec.server.filestore import FileStore

FEATURE = "inputs"  # listed in GET /healthz
NEEDS_FEATURE = "needs-links"  # presign's `needs`: needed outputs linked, not uploaded
MAX_ASKED = 10_000  # hashes in one POST /files/missing


def make_router(caller: Callable[..., Any], data_dir: Path) -> APIRouter:
    """The routes, authenticated by `caller` (app.py's bearer-token dependency). Made as the
    server starts: what uploads a stopped server cut short left in `data_dir` goes first."""
    from kaio_spec.server import app as api  # app.py includes this router: imported when called

    filestore.remove_partial(data_dir)

    router = APIRouter(tags=["local"])
    # Not Annotated: with postponed annotations, FastAPI could not see a local alias.
    user_of = Depends(caller)

    def store_of(request: Request, user: dict) -> FileStore:
        return FileStore(request.app.state.config.data_dir.expanduser(), user["id"])

    @router.post("/files/missing", responses=api.ERRORS)
    async def missing_files(request: Request, user: dict = user_of):
        """Which of the given SHA-256s the caller has not uploaded (another tenant's count not)."""
        body = await api.read_json(request)
        hashes = body.get("sha256")
        if not isinstance(hashes, list) or len(hashes) > MAX_ASKED:
            raise api.ApiError(400, f"sha256: must be a list of at most {MAX_ASKED} hashes")
        if not all(validation.is_sha256(h) for h in hashes):
            raise api.ApiError(400, "sha256: each must be 64 lower-case hex digits")
        store = store_of(request, user)
        return api.ok({"missing": await run_in_threadpool(store.missing, hashes)})

    @router.put("/files/{sha256}", responses=api.ERRORS)
    async def put_file(sha256: str, request: Request, user: dict = user_of):
        """Store one input file (raw body) whose SHA-256 is the URL's; harmless again (200)."""
        if not validation.is_sha256(sha256):
            raise api.ApiError(400, "sha256: must be 64 lower-case hex digits (the file's SHA-256)")
        config = request.app.state.config
        api.refuse_declared_over(request, config.max_upload_bytes)
        store = store_of(request, user)
        tmp = await run_in_threadpool(store.temp)
        try:
            with open(tmp, "wb", buffering=0) as sink:
                hasher = hashlib.sha256()
                size = await api.receive_body(
                    request, hasher, config.max_upload_bytes, sink, config.upload_stall_s
                )
            if hasher.hexdigest() != sha256:
                raise api.ApiError(400, f"body: its SHA-256 is {hasher.hexdigest()}, not the URL's")
            await run_in_threadpool(store.commit, tmp, sha256)
        finally:
            tmp.unlink(missing_ok=True)
        return api.ok({"sha256": sha256, "size": size})

    return router


def assemble_inputs(data_dir, user_id: str, body: dict, jobs, layout):
    """The presign's `inputs` (files of the caller's store) and `needs` (outputs of the caller's
    completed jobs) assembled in a temp folder, read-only (None without either), for
    filestore.place once the job exists. 400 for bad names or paths, 409 for files not uploaded
    or jobs that are not the caller's completed ones. `jobs`: the Store, `layout`: storage's."""
    from kaio_spec.server.app import ApiError

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


def _needed_job(jobs, user_id: str, path: str, unique: str) -> None:
    from kaio_spec.server.app import ApiError
    from kaio_spec.server.states import JobStatus
    from kaio_spec.server.store import NotFound

    try:
        job = jobs.get_job(unique, user_id)  # another tenant's job and none look the same
    except NotFound:
        raise ApiError(409, f"needs[{path!r}]: no job {unique!r}") from None
    if job["status"] != JobStatus.COMPLETED or job["data_deleted"]:
        raise ApiError(409, f"needs[{path!r}]: {unique} has no outputs to link (not completed)")
