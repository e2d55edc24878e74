"""The HTTP API of docs/protocol.md, built by `create_app(config)`.

Every error is `{"error": "<reason naming the field>"}`. JSON bodies are read by hand (bounded
size, UTF-8, depth) rather than by pydantic, so that each rejection names the field in words and
the checks are exactly validation.py's; pydantic models (openapi.py) only describe the responses.
"""

# No `from __future__ import annotations` here: FastAPI reads the routes' annotations as written.
import contextlib
import hashlib
import logging
import os
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from kaio_spec import validation
from kaio_spec._version import __version__
from kaio_spec.server import apidocs, auth, storage
from kaio_spec.server.config import ServerConfig
from kaio_spec.server.errors import ApiError
from kaio_spec.server.headers import DefaultHeaders
from kaio_spec.server.openapi import (
    ERRORS,
)
from kaio_spec.server.responses import etag_matches
from kaio_spec.server.routes import jobs, meta, outputs, packages, signin
from kaio_spec.server.scheduler import Scheduler
from kaio_spec.server.signin import SignInLinks
from kaio_spec.server.store import Store
from kaio_spec.server.uploads import Uploads

log = logging.getLogger("kaio.server")

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
    app.include_router(jobs.router)
    app.include_router(outputs.router)
    app.include_router(packages.router)

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
