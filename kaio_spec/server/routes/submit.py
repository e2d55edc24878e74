"""POST /jobs/submit (local, feature `jobs-submit`): many of the caller's jobs made, each with its
package, in one request.

A sweep of 1,000 cells over one folder was 2,000 requests: for each cell a presign and the PUT of
its overlay (its params.json over the folder's base package: a few hundred bytes). Here one
request carries up to MAX_SUBMIT_JOBS of them: each item is a presign body (the same fields, the
same checks) with `base_package` required and `package`, its overlay on that base, in base64.
Each item is made, unpacked and queued as its presign and PUT would have been, and answered on
its own (docs/protocol.md): the presign's answer and the package's ETag, or an error with the
status the two requests would have answered. An item refused before its job exists made nothing;
one whose overlay was refused made a job that failed with the reason, as a refused PUT does.
"""

# No `from __future__ import annotations`: FastAPI reads the route's annotations.
import base64
import binascii
import hashlib
import logging
import os
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from kaio_spec import catalog, validation
from kaio_spec.server import ingest, storage
from kaio_spec.server.bodies import read_json
from kaio_spec.server.config import ServerConfig
from kaio_spec.server.deps import ConfigDep, LayoutDep, SignerDep, StoreDep, UploadsDep, User
from kaio_spec.server.errors import ApiError
from kaio_spec.server.openapi import ERRORS, PRESIGN_BODY
from kaio_spec.server.responses import ok
from kaio_spec.server.routes.jobs import make_job, parse_base_package, parse_presign, presign_answer
from kaio_spec.server.store import Store, iso, now
from kaio_spec.server.uploads import Uploads, unpack_failure

MAX_SUBMIT_JOBS = catalog.MAX_SUBMIT_JOBS
MAX_OVERLAY_BYTES = catalog.MAX_SUBMIT_OVERLAY_BYTES  # decoded
# 100 items of the largest overlay, in base64, with their presign fields.
MAX_SUBMIT_BODY_BYTES = 10 * 1024 * 1024

PRESIGN_SCHEMA: dict[str, Any] = PRESIGN_BODY["content"]["application/json"]["schema"]  # type: ignore[index]
SUBMIT_BODY = {
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["jobs"],
                "properties": {
                    "jobs": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": MAX_SUBMIT_JOBS,
                        "items": {
                            **PRESIGN_SCHEMA,
                            "description": "a presign body, with base_package and package "
                            "(the job's overlay on it, a tar.gz in base64)",
                        },
                    }
                },
            }
        }
    },
    "required": True,
}

router = APIRouter()
log = logging.getLogger("kaio.server")


@router.post(
    "/jobs/submit", tags=["local"], responses=ERRORS, openapi_extra={"requestBody": SUBMIT_BODY}
)
async def submit_jobs(
    request: Request,
    user: User,
    config: ConfigDep,
    store: StoreDep,
    layout: LayoutDep,
    signer: SignerDep,
    uploads: UploadsDep,
):
    """Make each job of `jobs` with its package; each answered on its own, in order."""
    items = _items(await read_json(request, max_bytes=MAX_SUBMIT_BODY_BYTES))
    platform = (user["id"], config, store, layout, uploads)
    # One hop to a thread for them all: each job is made and unpacked there, in turn.
    made = await run_in_threadpool(lambda: [submit_one(item, *platform) for item in items])
    answers = []
    for job, etag, error in made:
        answer: dict[str, Any] = presign_answer(job, config, signer) if job else {}
        if etag:
            answer["etag"] = etag
        if error:
            answer["error"] = {"status": error.status, "message": error.message}
        answers.append(answer)
    return ok({"jobs": answers, "count": len(answers)})


def _items(body: dict) -> list[dict]:
    items = body.get("jobs")
    if not isinstance(items, list) or not items:
        raise ApiError(400, "jobs: must be a non-empty list of presign bodies")
    if len(items) > MAX_SUBMIT_JOBS:
        raise ApiError(400, f"jobs: at most {MAX_SUBMIT_JOBS} in one request, got {len(items)}")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ApiError(400, f"jobs[{i}]: must be an object (a presign body with package)")
    return items


def submit_one(
    item: dict,
    user_id: str,
    config: ServerConfig,
    store: Store,
    layout: storage.Layout,
    uploads: Uploads,
) -> tuple[dict | None, str | None, ApiError | None]:
    """(the job made or None, its package's ETag or None, why not): presign, then PUT."""
    try:
        job_name, fields, env = parse_presign(item)
        base = parse_base_package(item)
        overlay = _overlay(item)
        if base is None:
            raise ApiError(400, "base_package: required here (a whole package goes by PUT)")
        if not uploads.use_base(user_id, base):
            raise ApiError(409, f"base_package: you hold no base package {base}")
        etag = hashlib.md5(overlay, usedforsecurity=False).hexdigest()
        # Made as uploaded: a crash before its package is unpacked fails it at restart
        # (Scheduler.recover), rather than leaving a job that waits for an upload never sent.
        fields.update(uploaded_at=iso(now()), etag=etag, package_bytes=len(overlay))
        job = make_job(user_id, job_name, fields, env, base, item, config, store, layout, uploads)
    except validation.FieldError as e:
        return None, None, ApiError(400, str(e))
    except ApiError as e:
        return None, None, e
    except OSError as e:  # this job's trouble, not the request's: no 500 for the others' sake
        log.exception("POST /jobs/submit: making %s", item.get("job_name"))
        return None, None, ApiError(*unpack_failure(e))
    try:
        _take(job, overlay, etag, layout.job(job["unique_job_name"]), uploads)
        return job, etag, None
    except ApiError as e:  # the job failed with the reason (uploads.fail)
        return store.get_job(job["unique_job_name"]), None, e


def _overlay(item: dict) -> bytes:
    text = item.get("package")
    if not isinstance(text, str):
        raise ApiError(400, "package: must be the job's overlay, a tar.gz in base64")
    if len(text) > (MAX_OVERLAY_BYTES + 2) // 3 * 4:
        raise ApiError(400, f"package: more than {MAX_OVERLAY_BYTES} bytes; PUT it instead")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "package: not valid base64") from None


def _take(job: dict, overlay: bytes, etag: str, files: storage.JobFiles, uploads: Uploads) -> None:
    """The job's package taken as its PUT would take it (routes/packages.py): unpacked on its
    base, the job queued; ApiError, and the job failed, where it is refused."""
    if uploads.base_gone(job):  # swept since use_base marked it: fails the job, as a PUT would
        uploads.fail(job, files, 409, storage.BaseGone(job["base_package"]))
    part = files.root / f"{storage.PACKAGE}.part-{os.getpid()}-submit"
    package = None
    try:
        files.root.mkdir(parents=True, exist_ok=True)
        package = ingest.PackageIngest(part, files.pkg, ingest.extractor(job, uploads.base_of(job)))
        package.write(overlay)
    except OSError as e:  # the platform's own trouble (a full disk): the job fails, not hangs
        if package is not None:
            package.close()
        log.exception("job %s: storing its package", job["unique_job_name"])
        status, reason = unpack_failure(e)
        uploads.fail(job, files, status, RuntimeError(reason))
    assert package is not None  # uploads.fail raised otherwise
    try:
        uploads.accept(job, files, len(overlay), etag, package)
    finally:
        package.close()
