"""The HTTP API of docs/protocol.md, built by `create_app(config)`.

Every error is `{"error": "<reason naming the field>"}`. JSON bodies are read by hand (bounded
size, UTF-8, depth) rather than by pydantic, so that each rejection names the field in words and
the checks are exactly validation.py's; pydantic models (openapi.py) only describe the responses.
"""

# No `from __future__ import annotations` here: FastAPI reads the routes' annotations as written.
import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Literal

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from kaio_spec import validation
from kaio_spec._version import __version__
from kaio_spec.server import apidocs, auth, storage
from kaio_spec.server.bodies import (
    MAX_TEXT_FIELD,
    read_json,
    receive_body,
    refuse_declared_over,
)
from kaio_spec.server.config import ServerConfig
from kaio_spec.server.deps import User
from kaio_spec.server.errors import ApiError
from kaio_spec.server.headers import DefaultHeaders, attachment
from kaio_spec.server.openapi import (
    ERRORS,
    PRESIGN_BODY,
    DownloadOut,
    JobListOut,
    JobOut,
    PackageOut,
    PresignOut,
    TelemetryOut,
)
from kaio_spec.server.responses import conditional, etag_matches, file_response, json_text, ok
from kaio_spec.server.routes import meta, signin
from kaio_spec.server.scheduler import Scheduler
from kaio_spec.server.signin import SignInLinks
from kaio_spec.server.states import JobStatus
from kaio_spec.server.storage import hosts_of
from kaio_spec.server.store import TELEMETRY_FIELDS, JobFilter, NotFound, Store
from kaio_spec.server.uploads import Uploads, check_takes_upload

log = logging.getLogger("kaio.server")

# SageMaker Processing's own limit: a job the cloud would refuse is refused here too, and one
# tenant cannot ask this machine for a million processes.
DEFAULT_MAX_RUNTIME_HOURS = 24.0  # SageMaker's default MaxRuntimeInSeconds
DEFAULT_VOLUME_GB = 5
LOG_CHUNK = 1024 * 1024
MAX_LOG_OFFSET = 2**53  # far past any log, and exact in every JSON reader (a JavaScript number)
# GET /jobs/<unique>/telemetry: what each point of an instance's samples holds (runner.Instance)
TELEMETRY_SAMPLE_FIELDS = (
    "seconds",
    "cpu_percent",
    "rss_bytes",
    "gpu_util_percent",
    "gpu_memory_mb",
)
PACKAGE_BUCKET = "kaio-local"  # the s3_uri of a presign answer names it, and no folder
MAX_LIST_LIMIT = 1000  # jobs in one page of GET /jobs (feature jobs-filters)

# ---- the dashboard (static files, no build step) -------------------------------------------------

DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboard"
DASHBOARD_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# No inline script or style anywhere: the page is files from this server and nothing else, so
# text a job controls (its labels, logs, file names) cannot become code even if it reached HTML.
DASHBOARD_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
DASHBOARD_HEADERS = {
    "Content-Security-Policy": DASHBOARD_CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",  # revalidate (ETag): an upgraded server serves its own page
}
# A tenant's own list: no cache keeps it (headers.py); a client may still send If-None-Match.
LIST_HEADERS = {"Cache-Control": "no-store"}
# GET /jobs reads on the event loop only the few jobs that changed since the last listing (about
# 10 us each); more than this many are read on a thread.
LIST_READS_ON_LOOP = 64
SIGNED_ON_LOOP = 64  # output URLs GET /jobs/download signs on the event loop (about 10 us each)


# ---- request parsing ----------------------------------------------------------------------------


def _required(obj: dict, name: str, field: str) -> Any:
    if name not in obj or obj[name] is None:
        raise validation.FieldError(field, "is required")
    return obj[name]


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
    """(job name, job fields for the store, env) from a presign body; FieldError otherwise."""
    job_name = validation.check_job_name(_required(body, "job_name", "job_name"))
    spec = _required(body, "job_spec", "job_spec")
    if not isinstance(spec, dict):
        raise validation.FieldError("job_spec", "must be an object")
    itype = validation.check_instance_type(_required(spec, "instance_type", "instance_type"))
    count = validation.check_instance_count(spec.get("instance_count", 1))
    env = validation.check_env(body.get("env"))
    fields = {
        "instance_type": itype.name,
        "instance_count": count,
        "volume_size_gb": validation.check_volume_size(
            spec.get("volume_size_gb", DEFAULT_VOLUME_GB)
        ),
        "entrypoint": validation.check_entrypoint_name(_required(spec, "entrypoint", "entrypoint")),
        "max_runtime_hours": validation.check_max_runtime_hours(
            spec.get("max_runtime_hours", DEFAULT_MAX_RUNTIME_HOURS)
        ),
        "image_uri": _optional_text(spec, "image_uri"),
        "framework": _optional_text(spec, "framework"),
        "framework_version": _optional_text(spec, "framework_version"),
        "workflow": _optional_text(spec, "workflow") or "processing",
        "env_names": sorted(env),
        "labels": validation.check_labels(body.get("labels")),
    }
    return job_name, fields, env


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


def check_sha256(value: str) -> None:
    if not validation.is_sha256(value):
        raise ApiError(400, "sha256: must be 64 lower-case hex digits (the package's SHA-256)")


def load_dashboard(folder: Path = DASHBOARD_DIR) -> dict[str, tuple[bytes, str, str]]:
    """The dashboard's files by name: (bytes, media type, ETag). Read once at start-up, from a
    fixed list made here, so no request path ever reaches the file system."""
    files = {}
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            media = DASHBOARD_TYPES.get(path.suffix)
            if media and path.is_file():
                data = path.read_bytes()
                etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
                files[path.name] = (data, media, etag)
    return files


def create_app(config: ServerConfig) -> FastAPI:
    data_dir = config.data_dir.expanduser()
    data_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        os.chmod(data_dir, 0o700)
    store = Store(data_dir)
    layout = storage.Layout(data_dir)
    secret = auth.load_or_create_secret(data_dir)
    tokens = auth.Tokens(
        secret, config.token_ttl_s, auth.RevokedTokens(data_dir / auth.REVOKED_FILE)
    )
    signer = storage.Signer(secret, config.url_ttl_s)
    scheduler = Scheduler(config, store, layout)
    # How stale a base package's last-used mark may get: far below the retention period.
    uploads = Uploads(store, layout, scheduler, min(60.0, config.retention_s / 10))
    dashboard = load_dashboard()
    swagger = apidocs.load_swagger()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await run_in_threadpool(scheduler.start)
        try:
            yield
        finally:
            await run_in_threadpool(scheduler.shutdown)
            store.close()

    app = FastAPI(
        title="Kaio local platform",
        version=__version__,
        description="The Kaio API (docs/protocol.md), served by `kaio server`.",
        lifespan=lifespan,
        redoc_url=None,
        docs_url=None,  # served below from the package's own files (apidocs.py), not a CDN
    )
    app.add_middleware(DefaultHeaders)
    # The platform's parts, for the routes (deps.py).
    app.state.config = config
    app.state.store = store
    app.state.layout = layout
    app.state.tokens = tokens
    app.state.signer = signer
    app.state.scheduler = scheduler
    app.state.uploads = uploads
    app.state.signin_links = SignInLinks()
    app.state.dashboard = dashboard
    app.state.swagger = swagger
    for error, handler in ERROR_HANDLERS.items():
        app.add_exception_handler(error, handler)
    app.include_router(meta.router)
    app.include_router(signin.router)

    # ---- helpers --------------------------------------------------------------------------

    def own(read: Callable[[str, str], Any], unique: str, user: dict) -> Any:
        try:
            return read(unique, user["id"])
        except NotFound:
            # Someone else's job and a missing one answer the same.
            raise ApiError(404, f"unique_job_name: no job {unique!r}") from None

    def own_job(unique: str, user: dict) -> dict:
        return own(store.get_job, unique, user)

    def job_out(unique: str, user: dict) -> Response:
        return json_text(own(store.job_json, unique, user))

    def base_url(request: Request) -> str:
        # The configured address, never the Host header: a request saying `Host: evil.example`
        # must not get URLs (credentials) that send their bearer elsewhere.
        return config.base_url

    # ---- routes ---------------------------------------------------------------------------

    @app.post(
        "/jobs/presign",
        response_model=PresignOut,
        responses=ERRORS,
        openapi_extra={"requestBody": PRESIGN_BODY},
    )
    async def presign(request: Request, user: User):
        body = await read_json(request)
        job_name, fields, env = parse_presign(body)
        base = parse_base_package(body)

        def create() -> dict:
            # Marked used before the job exists, so that the retention sweep spares it.
            if base is not None and uploads.use_base(user["id"], base):
                fields["base_package"] = base
            job = store.create_job(user["id"], job_name, fields)
            if env:  # read_env: {} when there is no file
                layout.job(job["unique_job_name"]).write_env(env)
            return job

        job = await run_in_threadpool(create)
        unique = job["unique_job_name"]
        answer = {
            "unique_job_name": unique,
            "upload_url": base_url(request) + signer.path("PUT", storage.package_key(unique)),
            # Where the package is kept, as an object key in a symbolic bucket: never the data
            # folder's path, which is no tenant's business.
            "s3_uri": f"s3://{PACKAGE_BUCKET}/{storage.package_key(unique)}",
            "env_names": job["env_names"],
        }
        if job["base_package"]:
            answer["base_package"] = job["base_package"]  # the upload takes an overlay on it
        return ok(answer)

    @app.get(
        "/jobs",
        response_model=JobListOut,
        responses={**ERRORS, 304: {"description": "Not Modified (If-None-Match, local)"}},
    )
    async def list_jobs(
        request: Request,
        user: User,
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
        body = f'{{"jobs":[{",".join(jobs)}],"count":{len(jobs)}}}'.encode()
        return conditional(request, body, "application/json", LIST_HEADERS)

    @app.get("/jobs/status/{unique_job_name}", response_model=JobOut, responses=ERRORS)
    async def job_status(unique_job_name: str, user: User):  # one indexed read
        return job_out(unique_job_name, user)

    @app.post("/jobs/{unique_job_name}/stop", response_model=JobOut, responses=ERRORS)
    def stop_job(unique_job_name: str, user: User):
        job = own_job(unique_job_name, user)
        status = JobStatus(job["status"])
        if status.is_final:
            raise ApiError(409, f"status: the job already ended ({status.value})")
        if status is not JobStatus.STOPPING:
            if store.transition(unique_job_name, JobStatus.STOPPING):
                scheduler.request_stop(unique_job_name)
            else:  # it ended between the read and the transition
                ended = own_job(unique_job_name, user)["status"]
                raise ApiError(409, f"status: the job already ended ({ended})")
        return job_out(unique_job_name, user)

    @app.get("/jobs/download/{unique_job_name}", response_model=DownloadOut, responses=ERRORS)
    async def download(unique_job_name: str, request: Request, user: User):
        job = own_job(unique_job_name, user)  # one indexed read
        if not JobStatus(job["status"]).is_final:
            raise ApiError(409, f"status: the job has not ended yet ({job['status']})")
        if job["data_deleted"]:
            return ok({"output_files": []})
        listing = scheduler.listing(unique_job_name)
        if listing is None or len(listing) > SIGNED_ON_LOOP:
            # The folder to list (the job ended before this server started), or many URLs to
            # sign: off the event loop.
            return await run_in_threadpool(output_files, job, listing, base_url(request))
        return output_files(job, listing, base_url(request))

    def output_files(job: dict, listing: list | None, root: str) -> JSONResponse:
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

    @app.delete("/jobs/{unique_job_name}/data", response_model=JobOut, responses=ERRORS)
    def delete_data(unique_job_name: str, user: User):
        job = own_job(unique_job_name, user)
        if not JobStatus(job["status"]).is_final:
            raise ApiError(409, f"status: stop the job first ({job['status']})")
        scheduler.delete_data(unique_job_name)
        return job_out(unique_job_name, user)

    @app.post("/jobs/{unique_job_name}/archive", response_model=JobOut, responses=ERRORS)
    def archive(unique_job_name: str, user: User):
        own_job(unique_job_name, user)
        store.update_job(unique_job_name, archived=1)
        return job_out(unique_job_name, user)

    @app.post("/jobs/{unique_job_name}/restore", response_model=JobOut, responses=ERRORS)
    def restore(unique_job_name: str, user: User):
        own_job(unique_job_name, user)
        store.update_job(unique_job_name, archived=0)
        return job_out(unique_job_name, user)

    # ---- base packages (local, docs/base-packages.md) ----------------------------------------

    @app.get("/packages/{sha256}", tags=["local"], response_model=PackageOut, responses=ERRORS)
    def get_base_package(sha256: str, user: User):
        """Whether the caller holds the base package with this SHA-256 (404: not theirs, or none)."""
        check_sha256(sha256)
        try:
            meta = layout.base(user["id"], sha256).meta()
        except storage.BaseGone:
            raise ApiError(404, f"sha256: no base package {sha256}") from None
        return ok({"sha256": sha256, "size": meta.size})

    @app.put("/packages/{sha256}", tags=["local"], response_model=PackageOut, responses=ERRORS)
    async def put_base_package(sha256: str, request: Request, user: User):
        """Store a base package (raw body: a tar.gz whose SHA-256 is the URL's), checked and
        unpacked once for every job presigned against it."""
        check_sha256(sha256)
        refuse_declared_over(request, config.max_upload_bytes)
        async with uploads.base_lock(user["id"], sha256):
            base = layout.base(user["id"], sha256)
            if await run_in_threadpool(base.touch) is not None:
                size = await _receive_hashed(request, sha256)  # harmless again: 200
            else:
                size = await _store_base(base, request)
        return ok({"sha256": sha256, "size": size})

    async def _receive_hashed(request: Request, sha256: str, sink: BinaryIO | None = None) -> int:
        hasher = hashlib.sha256()
        size = await receive_body(
            request, hasher, config.max_upload_bytes, sink, config.upload_stall_s
        )
        if hasher.hexdigest() != sha256:
            raise ApiError(400, f"body: its SHA-256 is {hasher.hexdigest()}, not the URL's")
        return size

    async def _store_base(base: storage.BaseFiles, request: Request) -> int:
        # The whole base package is made in a temp folder renamed into place at the end: a
        # killed server leaves no half of one (and start-up removes the temp folder).
        tmp = base.temp()
        tmp.mkdir(parents=True)
        try:
            with open(tmp / storage.PACKAGE, "wb", buffering=0) as f:
                size = await _receive_hashed(request, base.sha256, f)
            await run_in_threadpool(storage.store_base_package, tmp, base, size)
        except storage.PackageError as e:
            raise ApiError(400, str(e)) from None
        finally:
            await run_in_threadpool(storage.remove_temp, tmp)
        return size

    @app.get(
        "/jobs/{unique_job_name}/logs",
        tags=["local"],
        responses={**ERRORS, 200: {"content": {"text/plain": {}}}},
        response_class=Response,
    )
    def logs(
        unique_job_name: str,
        user: User,
        host: Annotated[str, Query(max_length=32)] = "algo-1",
        offset: Annotated[int, Query(ge=0, le=MAX_LOG_OFFSET)] = 0,
        stream: Literal["stdout", "stderr"] = "stdout",
    ):
        """Log bytes of one instance from `offset`; the next offset is in X-Next-Offset."""
        job = own_job(unique_job_name, user)
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

    @app.get(
        "/jobs/{unique_job_name}/telemetry",
        tags=["local"],
        response_model=TelemetryOut,
        responses=ERRORS,
    )
    def telemetry(unique_job_name: str, user: User):
        """Each instance's CPU, memory and GPU use over time (`samples`, one row per point in
        the order of `sample_fields`; at most 240 points, evenly thinned over a long run) and
        its totals and peaks once the job has ended. A running job's samples so far."""
        job = own_job(unique_job_name, user)
        live = scheduler.live_samples(unique_job_name) or {}
        saved = {row["host"]: row for row in store.telemetry(unique_job_name)}
        instances = []
        for host in hosts_of(job):
            row = saved.get(host) or {}
            totals = {
                f: row.get(f) for f in TELEMETRY_FIELDS if f != "samples"
            }  # null until it ends
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

    # ---- the dashboard (local) ----------------------------------------------------------------

    def dashboard_file(name: str, request: Request, files: dict | None = None) -> Response:
        found = (dashboard if files is None else files).get(name)
        if found is None:
            raise ApiError(404, f"no dashboard file {name!r}")
        data, media, etag = found
        headers = {**DASHBOARD_HEADERS, "ETag": etag}
        if etag_matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers=headers)
        return Response(data, media_type=media, headers=headers)

    @app.get(
        "/",
        tags=["local"],
        response_class=Response,
        responses={200: {"content": {"text/html": {}}}},
    )
    def dashboard_page(request: Request):
        """The web dashboard (signs in with an API key, then uses this API with the token)."""
        return dashboard_file("index.html", request)

    @app.get("/dashboard/{name}", tags=["local"], response_class=Response, responses=ERRORS)
    def dashboard_asset(name: str, request: Request):
        """The dashboard's scripts, styles and images."""
        return dashboard_file(name, request)

    @app.get("/docs", tags=["local"], response_class=Response, include_in_schema=False)
    def api_docs(request: Request):
        """The API reference (Swagger UI on /openapi.json), from this server's own files."""
        return dashboard_file("docs.html", request)

    @app.get("/docs/{name}", tags=["local"], response_class=Response, include_in_schema=False)
    def api_docs_asset(name: str, request: Request):
        return dashboard_file(name, request, swagger)

    # ---- presigned objects ------------------------------------------------------------------

    def check_signature(request: Request, method: str, key: str) -> None:
        q = request.query_params
        try:
            signer.verify(method, key, q.get("expires"), q.get("signature"))
        except storage.MalformedSignature as e:
            raise ApiError(400, f"signature: {e}") from None
        except storage.BadSignature as e:
            raise ApiError(403, f"signature: {e}") from None

    @app.get("/objects/{key:path}", tags=["presigned"], responses=ERRORS)
    def get_object(key: str, request: Request):
        check_signature(request, "GET", key)
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

    @app.put("/objects/{key:path}", tags=["presigned"], responses=ERRORS)
    async def put_object(key: str, request: Request):
        check_signature(request, "PUT", key)
        unique, _, name = key.partition("/")
        if name != storage.PACKAGE:
            raise ApiError(403, "signature: this URL does not allow uploads")
        async with uploads.job_lock(unique):
            return await _upload(unique, request)

    async def _upload(unique: str, request: Request) -> Response:
        try:
            job = store.get_job(unique)  # one indexed read: not worth a thread hop
        except NotFound:
            raise ApiError(404, "object: the job no longer exists") from None
        refuse_declared_over(request, config.max_upload_bytes)
        if job["uploaded_at"]:
            # A retried PUT of the same bytes succeeds (whatever the job did since); other
            # bytes are a conflict.
            md5 = hashlib.md5(usedforsecurity=False)
            await receive_body(request, md5, config.max_upload_bytes, stall_s=config.upload_stall_s)
            if md5.hexdigest() != job["etag"]:
                raise ApiError(409, "body: the job's package was already uploaded")
            return Response(status_code=200, headers={"ETag": f'"{job["etag"]}"'})
        check_takes_upload(job)
        files = layout.job(unique)
        if uploads.base_gone(job):  # said before the body is read: nothing it holds could help
            await run_in_threadpool(
                uploads.fail, job, files, 409, storage.BaseGone(job["base_package"])
            )
        files.root.mkdir(parents=True, exist_ok=True)
        part = files.root / f"{storage.PACKAGE}.part-{os.getpid()}-{id(request)}"
        md5 = hashlib.md5(usedforsecurity=False)
        try:
            with open(part, "wb", buffering=0) as f:
                size = await receive_body(
                    request, md5, config.max_upload_bytes, f, config.upload_stall_s
                )
            etag = md5.hexdigest()
            if job["etag"] and etag != job["etag"]:
                # A crash cut the unpacking of the bytes first received short: a retry may
                # send those again, nothing else (as after an upload that was accepted).
                raise ApiError(409, "body: the job's package was already received")
            os.replace(part, files.package)
        finally:
            part.unlink(missing_ok=True)
        if not job["etag"]:  # the bytes this job takes from now on, whatever happens next
            await run_in_threadpool(store.update_job, unique, etag=etag)
        await run_in_threadpool(uploads.accept, job, files, size, etag)
        return Response(status_code=200, headers={"ETag": f'"{etag}"'})

    return app


# ---- errors: every one answered {"error": "<field>: <reason>"} ------------------------------------


async def api_error(request: Request, e: ApiError):
    return JSONResponse({"error": e.message}, status_code=e.status)


async def field_error(request: Request, e: validation.FieldError):
    return JSONResponse({"error": str(e)}, status_code=400)


async def http_error(request: Request, e: StarletteHTTPException):
    if e.status_code in (404, 405):
        # docs/protocol.md: 404 on a route means "not supported here"; a wrong method is that too.
        msg = f"no route {request.method} {request.url.path}"
        return JSONResponse({"error": msg}, status_code=404)
    return JSONResponse({"error": str(e.detail)}, status_code=e.status_code)


async def request_invalid(request: Request, e: RequestValidationError):
    errors = e.errors()
    first = errors[0] if errors else {}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("query", "path", "header")]
    field = ".".join(loc) or "request"
    return JSONResponse({"error": f"{field}: {first.get('msg', 'invalid')}"}, status_code=400)


async def unexpected(request: Request, e: Exception):
    log.exception("%s %s", request.method, request.url.path)
    return JSONResponse({"error": "internal error (logged by the server)"}, status_code=500)


ERROR_HANDLERS = {
    ApiError: api_error,
    validation.FieldError: field_error,
    StarletteHTTPException: http_error,
    RequestValidationError: request_invalid,
    Exception: unexpected,
}
