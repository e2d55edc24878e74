"""The HTTP API of docs/protocol.md, built by `create_app(config)`.

Every error is `{"error": "<reason naming the field>"}`. JSON bodies are read by hand (bounded
size, UTF-8, depth) rather than by pydantic, so that each rejection names the field in words and
the checks are exactly validation.py's; pydantic models below only describe the responses.
"""

# No `from __future__ import annotations` here: FastAPI reads the routes' annotations, and the
# `User` dependency is local to create_app, so they must be evaluated where they are written.
import asyncio
import contextlib
import errno
import hashlib
import json
import logging
import os
import secrets
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from email.utils import formatdate
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import StreamingResponse

from kaio_spec import catalog, validation
from kaio_spec._version import __version__
from kaio_spec.server import apidocs, auth, storage
from kaio_spec.server.config import ServerConfig
from kaio_spec.server.headers import DefaultHeaders, attachment
from kaio_spec.server.scheduler import Scheduler
from kaio_spec.server.states import JobStatus
from kaio_spec.server.storage import hosts_of
from kaio_spec.server.store import TELEMETRY_FIELDS, JobFilter, NotFound, Store, iso, now

log = logging.getLogger("kaio.server")

MAX_JSON_BYTES = 64 * 1024
MAX_JSON_DEPTH = 16
MAX_TEXT_FIELD = 512
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
FILE_CHUNK = 256 * 1024  # an output sent in pieces of this size
UPLOAD_WRITE_CHUNK = 1024 * 1024
# Protocol extensions this server offers, listed in GET /healthz so that a client asks for them
# only where they exist (docs/base-packages.md). streamed-upload: a package PUT may come chunked,
# of unknown length, as the client compresses it (receive_body streams and counts it either way).
FEATURES = ("base-packages", "jobs-filters", "streamed-upload")
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
SIGNIN_LINK_TTL_S = 60.0
# A tenant's own list: no cache keeps it (headers.py); a client may still send If-None-Match.
LIST_HEADERS = {"Cache-Control": "no-store"}
# GET /jobs reads on the event loop only the few jobs that changed since the last listing (about
# 10 us each); more than this many are read on a thread.
LIST_READS_ON_LOOP = 64
SIGNED_ON_LOOP = 64  # output URLs GET /jobs/download signs on the event loop (about 10 us each)


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        self.status = status
        self.message = message


# ---- response shapes (for /openapi.json) --------------------------------------------------------


class ErrorOut(BaseModel):
    error: str


class HistoryOut(BaseModel):
    status: str
    at: str


class JobOut(BaseModel):
    unique_job_name: str
    job_name: str
    status: str
    timestamp: str
    start_time: str | None
    end_time: str | None
    failure_reason: str | None
    status_history: list[HistoryOut]
    instance_type: str
    instance_count: int
    volume_size_gb: int
    entrypoint: str
    image_uri: str | None
    workflow: str | None
    env_names: list[str]
    labels: dict[str, str]
    archived: bool
    data_deleted: bool


class JobListOut(BaseModel):
    jobs: list[JobOut]
    count: int


class ProjectOut(BaseModel):
    id: str
    name: str


class LoginOut(BaseModel):
    access_token: str
    exp: int
    project: ProjectOut


class PresignOut(BaseModel):
    unique_job_name: str
    upload_url: str
    s3_uri: str
    env_names: list[str]
    base_package: str | None = None  # only when the upload takes an overlay on it


class PackageOut(BaseModel):
    sha256: str
    size: int


class DownloadOut(BaseModel):
    output_files: list[tuple[str, str, str]]


class InstanceOut(BaseModel):
    instance_type: str
    vcpus: int
    memory_gb: int
    gpus: int
    gpu_memory_gb: int
    on_your_plan: bool


class InstancesOut(BaseModel):
    jobs: list[InstanceOut]


class InstanceTelemetryOut(BaseModel):
    host: str
    runtime_s: float | None = None
    exit_code: int | None = None
    cpu_seconds: float | None = None
    peak_cpu_percent: float | None = None
    peak_rss_bytes: int | None = None
    peak_gpu_util_percent: float | None = None
    peak_gpu_memory_mb: float | None = None
    samples: list[list[float | None]]


class TelemetryOut(BaseModel):
    unique_job_name: str
    status: str
    sample_fields: list[str]
    instances: list[InstanceTelemetryOut]


class HealthOut(BaseModel):
    status: str
    version: str
    features: list[str]
    jobs_confined: bool
    isolation: str


class SignInLinkOut(BaseModel):
    code: str
    expires_in: int


ERRORS = {code: {"model": ErrorOut} for code in (400, 401, 403, 404, 409, 413)}

LOGIN_BODY = {
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["api_key"],
                "properties": {"api_key": {"type": "string"}},
            }
        }
    },
    "required": True,
}
PRESIGN_BODY = {
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["job_name", "job_spec"],
                "properties": {
                    "job_name": {"type": "string", "pattern": catalog.JOB_NAME_RE.pattern},
                    "job_spec": {
                        "type": "object",
                        "required": ["instance_type", "entrypoint"],
                        "properties": {
                            "instance_type": {"enum": list(catalog.INSTANCE_TYPES)},
                            "instance_count": {
                                "type": "integer",
                                "minimum": catalog.MIN_INSTANCE_COUNT,
                                "maximum": catalog.MAX_INSTANCE_COUNT,
                            },
                            "volume_size_gb": {
                                "type": "integer",
                                "minimum": catalog.MIN_VOLUME_GB,
                                "maximum": catalog.MAX_VOLUME_GB,
                            },
                            "entrypoint": {"type": "string"},
                            "image_uri": {"type": "string"},
                            "framework": {"type": "string"},
                            "framework_version": {"type": "string"},
                            "max_runtime_hours": {
                                "type": "number",
                                "exclusiveMinimum": 0,
                                "maximum": catalog.MAX_RUNTIME_HOURS,
                            },
                            "workflow": {"type": "string"},
                        },
                    },
                    "env": {"type": "object", "additionalProperties": {"type": "string"}},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "base_package": {
                        "type": "string",
                        "description": "SHA-256 of a base package (docs/base-packages.md)",
                    },
                },
            }
        }
    },
    "required": True,
}


# ---- request parsing ----------------------------------------------------------------------------


def _depth(value: Any) -> int:
    """Nesting depth, iteratively (a recursive walk is what deep JSON is meant to break)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        deepest = max(deepest, d)
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v)
    return deepest


def _not_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _lone_surrogate_at(value: Any) -> str | None:
    """Where (`job_spec.entrypoint`, `env`) the first string or key holds a lone surrogate,
    which JSON's \\ud800 escapes allow and UTF-8 (so the store, a file name, an environment
    variable) cannot carry; None when there is none. Iterative, as _depth."""
    stack: list[tuple[str, Any]] = [("body", value)]
    while stack:
        path, v = stack.pop()
        if isinstance(v, str) and _not_utf8(v):
            return path
        if isinstance(v, dict):
            for key, inner in v.items():
                if _not_utf8(key):
                    return path
                stack.append((key if path == "body" else f"{path}.{key}", inner))
        elif isinstance(v, list):
            stack.extend((f"{path}[{i}]", inner) for i, inner in enumerate(v))
    return None


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


async def read_json(request: Request, stall_s: float = 60.0) -> dict:
    ctype = request.headers.get("content-type", "")
    if ctype.split(";")[0].strip().lower() != "application/json":
        raise ApiError(400, "Content-Type: must be application/json")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_JSON_BYTES:
        raise ApiError(413, f"body: larger than {MAX_JSON_BYTES} bytes")
    body = bytearray()
    async for chunk in stalls_timed_out(request, stall_s):
        body += chunk
        if len(body) > MAX_JSON_BYTES:
            raise ApiError(413, f"body: larger than {MAX_JSON_BYTES} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ApiError(400, f"body: not valid UTF-8 (byte {e.start})") from None
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ApiError(400, f"body: nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as e:
        raise ApiError(400, f"body: not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise ApiError(400, "body: must be a JSON object")
    if _depth(value) > MAX_JSON_DEPTH:
        raise ApiError(400, f"body: nested deeper than {MAX_JSON_DEPTH} levels")
    if (where := _lone_surrogate_at(value)) is not None:
        raise ApiError(
            400, f"{where}: holds a lone surrogate (a \\ud800-style escape), not valid Unicode"
        )
    return value


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


def refuse_declared_over(request: Request, limit: int) -> None:
    """413 before a byte is read when the body says it is too large."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"body: larger than the {limit} bytes allowed")


async def stalls_timed_out(request: Request, stall_s: float) -> AsyncIterator[bytes]:
    """The body's pieces; 408 when none comes for `stall_s` seconds, so that a client that
    stops sending frees what the request holds (an upload's lock) instead of keeping it."""
    pieces = request.stream().__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(pieces.__anext__(), stall_s)
        except StopAsyncIteration:
            return
        except asyncio.TimeoutError:
            raise ApiError(408, f"body: no byte came for {stall_s:g} s; send it again") from None
        yield chunk


async def receive_body(
    request: Request, hasher: Any, limit: int, sink: BinaryIO | None = None, stall_s: float = 60.0
) -> int:
    """Stream the body through `hasher` (and into `sink`), never whole in memory; its size. 413
    past `limit`; 408 when it stalls for `stall_s`. One pass over the bytes: each piece hashed
    (hashlib lets go of the GIL) and written together."""

    def take(data: bytearray) -> None:
        hasher.update(data)
        if sink is not None:
            sink.write(data)

    size = 0
    pending = bytearray()
    try:
        async for chunk in stalls_timed_out(request, stall_s):
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"body: larger than the {limit} bytes allowed")
            pending += chunk
            if len(pending) >= UPLOAD_WRITE_CHUNK:
                # Large pieces off the event loop; the last small one (all of a small package)
                # is not worth a thread hop.
                data, pending = pending, bytearray()
                await run_in_threadpool(take, data)
    except ClientDisconnect:
        # Nobody reads the answer; the status keeps the server's log free of a traceback.
        raise ApiError(400, "body: the client went away before sending all of it") from None
    take(pending)
    return size


class SignInLinks:
    """One-time codes that sign a browser tab in (`kaio dashboard`), so that the API key never
    travels in a URL: random, single use, short-lived, kept only as hashes and only in memory
    (a restart voids them, which costs nothing: the CLI makes a new one in a second)."""

    def __init__(
        self, ttl_s: float = SIGNIN_LINK_TTL_S, clock: Callable[[], float] = time.monotonic
    ):
        self.ttl_s = ttl_s
        self._clock = clock
        # sha256 -> (expiry, user, key id, the expiry of the token that made the code)
        self._codes: dict[str, tuple[float, str, int, int]] = {}
        self._lock = threading.Lock()

    def issue(self, user_id: str, key_id: int, not_after: int) -> str:
        code = secrets.token_urlsafe(32)
        with self._lock:
            t = self._clock()
            self._codes = {h: v for h, v in self._codes.items() if v[0] > t}
            self._codes[self._hash(code)] = (t + self.ttl_s, user_id, key_id, not_after)
        return code

    def redeem(self, code: str) -> tuple[str, int, int] | None:
        """(user id, key id, when its token must expire by) of a valid code, which is then
        spent; None otherwise."""
        with self._lock:
            found = self._codes.pop(self._hash(code), None)
            if found is None or found[0] <= self._clock() or found[3] <= time.time():
                return None
        return found[1], found[2], found[3]

    @staticmethod
    def _hash(code: str) -> str:
        return hashlib.sha256(code.encode("utf-8", "surrogatepass")).hexdigest()


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


def ok(content: dict) -> JSONResponse:
    """A 200 answered as is: the route's response_model documents it in /openapi.json without
    pydantic validating and re-encoding every response (a poll of GET /jobs is the hot path)."""
    return JSONResponse(content)


def json_text(text: str) -> Response:
    """A 200 whose JSON the store already rendered (store.job_json)."""
    return Response(text, media_type="application/json")


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """If-None-Match's weak comparison (RFC 9110 13.1.2): any listed tag, or *."""
    if not if_none_match:
        return False
    tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return etag in tags or "*" in tags


def conditional(request: Request, body: bytes, media: str, headers: dict[str, str]) -> Response:
    """The body with an ETag made from it, or a bodiless 304 when the caller already holds it."""
    etag = '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'
    headers = {**headers, "ETag": etag}
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media, headers=headers)


# ---- the app ------------------------------------------------------------------------------------


def file_response(f: BinaryIO) -> StreamingResponse:
    """The open file's bytes, as many as it held when opened (something may still append)."""
    st = os.fstat(f.fileno())

    def chunks() -> Iterator[bytes]:
        with f:
            left = st.st_size
            while left > 0 and (data := f.read(min(FILE_CHUNK, left))):
                left -= len(data)
                yield data

    return StreamingResponse(
        chunks(),
        media_type="application/octet-stream",
        headers={
            "Content-Length": str(st.st_size),
            "Last-Modified": formatdate(st.st_mtime, usegmt=True),
        },
    )


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
    health = {
        "status": "ok",
        "version": __version__,
        "features": list(FEATURES),
        "jobs_confined": scheduler.sandbox.mode != "none" and scheduler.backend.name == "local",
        "isolation": scheduler.sandbox.mode,  # "namespaces", "landlock" or "none"
    }
    # Weak: a lock lives while a request holds it (and the requests queued behind it), so the
    # maps do not grow by one lock per upload for the server's whole life.
    upload_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
    package_locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = (
        weakref.WeakValueDictionary()  # (user id, sha256)
    )
    # How stale a base package's last-used mark may get: far below the retention period.
    touch_fresh_s = min(60.0, config.retention_s / 10)
    signin_links = SignInLinks()
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
    app.state.config = config
    app.state.store = store
    app.state.scheduler = scheduler
    app.state.signer = signer
    app.state.signin_links = signin_links

    # ---- errors ---------------------------------------------------------------------------

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError):
        return JSONResponse({"error": e.message}, status_code=e.status)

    @app.exception_handler(validation.FieldError)
    async def field_error(request: Request, e: validation.FieldError):
        return JSONResponse({"error": str(e)}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException):
        if e.status_code in (404, 405):
            # docs/protocol.md: 404 on a route means "not supported here"; a wrong method is that too.
            msg = f"no route {request.method} {request.url.path}"
            return JSONResponse({"error": msg}, status_code=404)
        return JSONResponse({"error": str(e.detail)}, status_code=e.status_code)

    @app.exception_handler(RequestValidationError)
    async def request_invalid(request: Request, e: RequestValidationError):
        errors = e.errors()
        first = errors[0] if errors else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("query", "path", "header")]
        field = ".".join(loc) or "request"
        return JSONResponse({"error": f"{field}: {first.get('msg', 'invalid')}"}, status_code=400)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, e: Exception):
        log.exception("%s %s", request.method, request.url.path)
        return JSONResponse({"error": "internal error (logged by the server)"}, status_code=500)

    # ---- helpers --------------------------------------------------------------------------

    # Async, so that no request hops to the thread pool just to be authenticated: a token is
    # checked once (auth.Tokens remembers it) and the key by one indexed read.
    async def caller(request: Request) -> dict:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "Authorization: a Bearer token is required (POST /login)")
        try:
            claims = tokens.verify(token.strip())
        except auth.TokenError as e:
            raise ApiError(401, f"Authorization: {e}; log in again") from None
        if not store.key_is_active(claims.user_id, claims.key_id):
            raise ApiError(401, "Authorization: the API key behind this token was revoked")
        return {"id": claims.user_id, "key_id": claims.key_id, "claims": claims}

    User = Annotated[dict, Depends(caller)]

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

    @app.get("/healthz", response_model=HealthOut, tags=["local"])
    async def healthz():
        return ok(health)

    @app.post(
        "/login",
        response_model=LoginOut,
        responses=ERRORS,
        openapi_extra={"requestBody": LOGIN_BODY},
    )
    async def login(request: Request):
        body = await read_json(request)
        key = body.get("api_key")
        if not isinstance(key, str) or not key:
            raise ApiError(400, "api_key: must be a non-empty string")
        found = await run_in_threadpool(store.login, key)
        if found is None:
            raise ApiError(403, "api_key: unknown or revoked")
        user, key_id = found
        return signed_in(user, key_id)

    def signed_in(user: dict, key_id: int, not_after: int | None = None) -> JSONResponse:
        token, exp = tokens.issue(user["id"], key_id, not_after)
        return ok({"access_token": token, "exp": exp, "project": user})

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
            if base is not None and layout.base(user["id"], base).touch(touch_fresh_s) is not None:
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

    @app.get("/instances", response_model=InstancesOut, responses=ERRORS)
    async def instances(user: User):
        return ok(
            {
                "jobs": [
                    {
                        "instance_type": t.name,
                        "vcpus": t.vcpus,
                        "memory_gb": t.memory_gb,
                        "gpus": t.gpus,
                        "gpu_memory_gb": t.gpu_memory_gb,
                        "on_your_plan": True,  # the local platform runs every type
                    }
                    for t in catalog.INSTANCE_TYPES.values()
                ]
            }
        )

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
        lock = package_locks.setdefault((user["id"], sha256), asyncio.Lock())
        async with lock:
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

    @app.post("/logout", tags=["local"], status_code=204, response_class=Response, responses=ERRORS)
    def logout(user: User):
        """Sign the caller's token out: it is refused from now until it would have expired
        (other tokens of the same key go on working). The dashboard's Sign out calls this."""
        claims = user["claims"]
        tokens.revoked.revoke(claims.token_id, claims.exp)
        return Response(status_code=204)

    @app.post("/dashboard/links", tags=["local"], response_model=SignInLinkOut, responses=ERRORS)
    def create_signin_link(user: User):
        """A one-time code (valid briefly) that signs a dashboard tab in as the caller: `kaio
        dashboard` opens `/#signin=<code>`, so no API key or token ever sits in a URL. The token
        it gives ends when the caller's own token does: a token cannot renew itself this way."""
        code = signin_links.issue(user["id"], user["key_id"], user["claims"].exp)
        return ok({"code": code, "expires_in": int(signin_links.ttl_s)})

    @app.post(
        "/login/link",
        tags=["local"],
        response_model=LoginOut,
        responses=ERRORS,
        openapi_extra={
            "requestBody": {
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["code"],
                            "properties": {"code": {"type": "string"}},
                        }
                    }
                },
                "required": True,
            }
        },
    )
    async def login_with_link(request: Request):
        """Exchange a code from POST /dashboard/links for a token, once (403 when the code is
        unknown, used or expired)."""
        body = await read_json(request)
        code = body.get("code")
        if not isinstance(code, str) or not code or len(code) > MAX_TEXT_FIELD:
            raise ApiError(400, "code: must be a non-empty string")
        found = signin_links.redeem(code)
        if found is None:
            raise ApiError(403, "code: unknown, already used or expired; make a new link")
        user_id, key_id, not_after = found

        def project() -> dict | None:
            if not store.key_is_active(user_id, key_id):
                return None
            return next(
                (
                    {"id": u["id"], "name": u["name"]}
                    for u in store.list_users()
                    if u["id"] == user_id
                ),
                None,
            )

        user = await run_in_threadpool(project)
        if user is None:
            raise ApiError(403, "code: the API key behind this link was revoked")
        return signed_in(user, key_id, not_after)

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
        lock = upload_locks.setdefault(unique, asyncio.Lock())
        async with lock:
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
        if job["status"] != JobStatus.PENDING.value or job["data_deleted"]:
            raise ApiError(409, f"status: the job no longer takes an upload ({job['status']})")
        files = layout.job(unique)
        if job["base_package"] and not base_of(job).meta_file.is_file():
            # Said before the body is read: nothing it holds could help.
            await run_in_threadpool(
                _fail_upload, job, files, 409, storage.BaseGone(job["base_package"])
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
        await run_in_threadpool(_accept_package, job, files, size, etag)
        return Response(status_code=200, headers={"ETag": f'"{etag}"'})

    def base_of(job: dict) -> storage.BaseFiles:
        return layout.base(job["user_id"], job["base_package"])

    def _accept_package(job: dict, files: storage.JobFiles, size: int, etag: str) -> None:
        try:
            _unpack_job_files(job, files, size)
        except storage.BaseGone as e:
            _fail_upload(job, files, 409, e)
        except storage.PackageError as e:
            _fail_upload(job, files, 400, e)
        except OSError as e:  # the platform's own trouble (a full disk): the job fails, not hangs
            log.exception("job %s: unpacking its package", job["unique_job_name"])
            full = e.errno in (errno.ENOSPC, errno.EDQUOT)
            reason = f"package: the platform could not unpack it ({e.strerror or type(e).__name__})"
            _fail_upload(job, files, 507 if full else 503, RuntimeError(reason))
        if job["base_package"]:  # used by an upload too (and a sweep now would be harmless)
            base_of(job).touch(touch_fresh_s)
        store.update_job(
            job["unique_job_name"], uploaded_at=iso(now()), etag=etag, package_bytes=size
        )
        scheduler.enqueue(job["unique_job_name"])

    def _unpack_job_files(job: dict, files: storage.JobFiles, size: int) -> None:
        """Checked and unpacked in one read: nothing of a bad package reaches pkg/."""
        volume = job["volume_size_gb"] * 1024**3
        if not job["base_package"]:
            _check_package_bytes(job, size)
            storage.unpack_package(files.package, files.pkg, job["entrypoint"], volume)
            return
        base = base_of(job)
        # Counted with its base, so that a job is taken or refused alike whether or not its
        # client could use a base package.
        _check_package_bytes(job, size + base.meta().size, " with its base package")
        storage.unpack_overlay(base, files.package, files.pkg, job["entrypoint"], volume)

    def _check_package_bytes(job: dict, size: int, counting: str = "") -> None:
        if size > job["volume_size_gb"] * 1024**3 // 2:
            raise storage.PackageError(
                f"package: {size} bytes{counting} is more than half the job's "
                f"{job['volume_size_gb']} GB volume"
            )

    def _fail_upload(job: dict, files: storage.JobFiles, status: int, error: Exception) -> None:
        """The job fails with the reason its upload is refused for."""
        files.forget_env()
        store.transition(job["unique_job_name"], JobStatus.FAILED, failure_reason=str(error))
        raise ApiError(status, str(error))

    return app
