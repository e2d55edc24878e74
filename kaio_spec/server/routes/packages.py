"""Uploads: a job's package, PUT on the presigned URL that POST /jobs/presign signed, and a
tenant's base packages (GET and PUT /packages/<sha256>, docs/base-packages.md). The bytes are
streamed in here (bodies.receive_body); what is done with them, and the rules they are held to,
is uploads.py's."""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations as written.
import hashlib
import logging
import os

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from kaio_spec import validation
from kaio_spec.server import ingest, storage
from kaio_spec.server.bodies import receive_body, receive_hashed, refuse_declared_over
from kaio_spec.server.config import ServerConfig
from kaio_spec.server.deps import (
    ConfigDep,
    LayoutDep,
    SignerDep,
    StoreDep,
    UploadsDep,
    User,
    check_signature,
)
from kaio_spec.server.errors import ApiError
from kaio_spec.server.openapi import ERRORS, PackageOut
from kaio_spec.server.responses import ok
from kaio_spec.server.store import NotFound, Store
from kaio_spec.server.uploads import Uploads, check_takes_upload, unpack_failure

router = APIRouter()
log = logging.getLogger("kaio.server")


def check_sha256(value: str) -> None:
    if not validation.is_sha256(value):
        raise ApiError(400, "sha256: must be 64 lower-case hex digits (the package's SHA-256)")


@router.get("/packages/{sha256}", tags=["local"], response_model=PackageOut, responses=ERRORS)
def get_base_package(sha256: str, user: User, layout: LayoutDep):
    """Whether the caller holds the base package with this SHA-256 (404: not theirs, or none)."""
    check_sha256(sha256)
    try:
        meta = layout.base(user["id"], sha256).meta()
    except storage.BaseGone:
        raise ApiError(404, f"sha256: no base package {sha256}") from None
    return ok({"sha256": sha256, "size": meta.size})


@router.put("/packages/{sha256}", tags=["local"], response_model=PackageOut, responses=ERRORS)
async def put_base_package(
    sha256: str,
    request: Request,
    user: User,
    config: ConfigDep,
    layout: LayoutDep,
    uploads: UploadsDep,
):
    """Store a base package (raw body: a tar.gz whose SHA-256 is the URL's), checked and
    unpacked once for every job presigned against it."""
    check_sha256(sha256)
    refuse_declared_over(request, config.max_upload_bytes)
    async with uploads.base_lock(user["id"], sha256):
        base = layout.base(user["id"], sha256)
        if await run_in_threadpool(base.touch) is not None:
            size = await _receive_hashed(request, config, sha256)  # harmless again: 200
        else:
            size = await _store_base(base, request, config)
    return ok({"sha256": sha256, "size": size})


async def _receive_hashed(
    request: Request, config: ServerConfig, sha256: str, sink: ingest.PackageIngest | None = None
) -> int:
    return await receive_hashed(
        request, sha256, config.max_upload_bytes, sink, config.upload_stall_s
    )


async def _store_base(base: storage.BaseFiles, request: Request, config: ServerConfig) -> int:
    # The whole base package is made in a temp folder renamed into place at the end: a
    # killed server leaves no half of one (and start-up removes the temp folder). It is
    # unpacked as it arrives (ingest.py), as a job's package is.
    tmp = base.temp()
    tmp.mkdir(parents=True)
    extract = storage.BaseExtract()
    package = ingest.PackageIngest(tmp / f"{storage.PACKAGE}.part", tmp / "tree", extract)
    try:
        size = await _receive_hashed(request, config, base.sha256, package)
        await run_in_threadpool(package.finish, tmp / storage.PACKAGE)
        await run_in_threadpool(storage.store_base_package, tmp, base, size, extract.unpacked_bytes)
    except storage.PackageError as e:
        raise ApiError(400, str(e)) from None
    except OSError as e:  # the platform's own trouble (a full disk)
        log.exception("base package %s: unpacking it", base.sha256)
        raise ApiError(*unpack_failure(e)) from None
    finally:
        await run_in_threadpool(package.close)
        await run_in_threadpool(storage.remove_temp, tmp)
    return size


@router.put("/objects/{key:path}", tags=["presigned"], responses=ERRORS)
async def put_object(
    key: str,
    request: Request,
    config: ConfigDep,
    store: StoreDep,
    layout: LayoutDep,
    signer: SignerDep,
    uploads: UploadsDep,
):
    # A job's package, on the URL POST /jobs/presign signed: unpacked, then the job queued.
    # (A comment, not a docstring: /openapi.json describes the route as it always has.)
    check_signature(request, signer, "PUT", key)
    unique, _, name = key.partition("/")
    if name != storage.PACKAGE:
        raise ApiError(403, "signature: this URL does not allow uploads")
    async with uploads.job_lock(unique):
        try:
            job = store.get_job(unique)  # one indexed read: not worth a thread hop
        except NotFound:
            raise ApiError(404, "object: the job no longer exists") from None
        refuse_declared_over(request, config.max_upload_bytes)
        if job["uploaded_at"]:
            etag = await _upload_again(job, request, config)
        else:
            etag = await _upload(job, request, config, store, layout.job(unique), uploads)
    return Response(status_code=200, headers={"ETag": f'"{etag}"'})


async def _upload_again(job: dict, request: Request, config: ServerConfig) -> str:
    """A retried PUT of the same bytes succeeds (whatever the job did since); other bytes are a
    conflict."""
    md5 = hashlib.md5(usedforsecurity=False)
    await receive_body(request, md5, config.max_upload_bytes, stall_s=config.upload_stall_s)
    if md5.hexdigest() != job["etag"]:
        raise ApiError(409, "body: the job's package was already uploaded")
    return job["etag"]


async def _upload(
    job: dict,
    request: Request,
    config: ServerConfig,
    store: Store,
    files: storage.JobFiles,
    uploads: Uploads,
) -> str:
    """The job's first package (or a retry after a crash cut its unpacking short); its MD5."""
    check_takes_upload(job)
    if uploads.base_gone(job):  # said before the body is read: nothing it holds could help
        await run_in_threadpool(
            uploads.fail, job, files, 409, storage.BaseGone(job["base_package"])
        )
    files.root.mkdir(parents=True, exist_ok=True)
    part = files.root / f"{storage.PACKAGE}.part-{os.getpid()}-{id(request)}"
    md5 = hashlib.md5(usedforsecurity=False)
    # Unpacked as it arrives (ingest.py), renamed into place by uploads.accept.
    base = uploads.base_of(job) if job["base_package"] else None
    package = ingest.PackageIngest(part, files.pkg, ingest.extractor(job, base))
    try:
        size = await receive_body(
            request, md5, config.max_upload_bytes, package, config.upload_stall_s
        )
        etag = md5.hexdigest()
        if job["etag"] and etag != job["etag"]:
            # A crash cut the unpacking of the bytes first received short: a retry may send
            # those again, nothing else (as after an upload that was accepted).
            raise ApiError(409, "body: the job's package was already received")
    except BaseException:
        await run_in_threadpool(package.close)
        raise
    # One hop to a thread for all the rest: on a busy server each hop costs a wait.
    await run_in_threadpool(_accept, job, files, size, etag, package, store, uploads)
    return etag


def _accept(
    job: dict,
    files: storage.JobFiles,
    size: int,
    etag: str,
    package: ingest.PackageIngest,
    store: Store,
    uploads: Uploads,
) -> None:
    """The whole body received: the job takes these bytes from now on, whatever happens next;
    its package is unpacked (or its unpacking ended) and the job queued (uploads.accept)."""
    try:
        if not job["etag"]:
            store.update_job(job["unique_job_name"], etag=etag)
        uploads.accept(job, files, size, etag, package)
    finally:
        package.close()
