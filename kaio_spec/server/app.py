"""The HTTP API of docs/protocol.md, built by `create_app(config)`: the platform's parts made
once and put on `app.state` (read by the routes through deps.py), the error handlers, and one
APIRouter per area (routes/).

Every error is `{"error": "<reason naming the field>"}`. JSON bodies are read by hand (bounded
size, UTF-8, depth: bodies.py) rather than by pydantic, so that each rejection names the field in
words and the checks are exactly validation.py's; pydantic models (openapi.py) only describe the
responses.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from kaio_spec import validation
from kaio_spec._version import __version__
from kaio_spec.server import apidocs, auth, filestore, routes_files, storage
from kaio_spec.server.config import ServerConfig
from kaio_spec.server.errors import ApiError
from kaio_spec.server.headers import DefaultHeaders
from kaio_spec.server.routes import (
    bulk,
    dashboard,
    jobs,
    links,
    meta,
    outputs,
    packages,
    signin,
    submit,
)
from kaio_spec.server.scheduler import Scheduler
from kaio_spec.server.signin import SignInLinks
from kaio_spec.server.store import Store
from kaio_spec.server.uploads import Uploads

log = logging.getLogger("kaio.server")


def create_app(config: ServerConfig) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await run_in_threadpool(app.state.scheduler.start)
        try:
            yield
        finally:
            await run_in_threadpool(app.state.scheduler.shutdown)
            app.state.store.close()

    app = FastAPI(
        title="Kaio local platform",
        version=__version__,
        description="The Kaio API (docs/protocol.md), served by `kaio server`.",
        lifespan=lifespan,
        redoc_url=None,
        docs_url=None,  # served from the package's own files (apidocs.py), not a CDN
    )
    _open_platform(app, config)
    app.add_middleware(DefaultHeaders)
    for error, handler in ERROR_HANDLERS.items():
        app.add_exception_handler(error, handler)
    # In this order: the first route that matches answers, and /jobs/status/<u> and
    # /jobs/download/<u> must win over /jobs/<u>/logs and /jobs/<u>/telemetry.
    app.include_router(meta.router)
    app.include_router(signin.router)
    app.include_router(bulk.router)
    app.include_router(submit.router)
    app.include_router(jobs.router)
    app.include_router(outputs.router)
    app.include_router(links.router)  # needs and dependents: issue 16
    app.include_router(packages.router)
    app.include_router(dashboard.router)
    app.include_router(routes_files.router)  # /files: docs/inputs.md
    return app


def _open_platform(app: FastAPI, config: ServerConfig) -> None:
    """The platform's parts, on app.state for the routes (deps.py)."""
    data_dir = config.data_dir.expanduser()
    data_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        os.chmod(data_dir, 0o700)
    store = Store(data_dir)
    layout = storage.Layout(data_dir)
    secret = auth.load_or_create_secret(data_dir)
    scheduler = Scheduler(config, store, layout)
    state = app.state
    state.config = config
    state.store = store
    state.layout = layout
    state.tokens = auth.Tokens(
        secret, config.token_ttl_s, auth.RevokedTokens(data_dir / auth.REVOKED_FILE)
    )
    state.signer = storage.Signer(secret, config.url_ttl_s)
    state.scheduler = scheduler
    # How stale a base package's last-used mark may get: far below the retention period.
    state.uploads = Uploads(store, layout, scheduler, min(60.0, config.retention_s / 10))
    state.signin_links = SignInLinks()
    state.dashboard = dashboard.load_dashboard()
    state.swagger = apidocs.load_swagger()
    filestore.remove_partial(data_dir)  # input uploads a stopped server cut short


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


# Callable[..., Any]: each handler takes its own exception type, as Starlette calls it.
ERROR_HANDLERS: dict[type[Exception], Callable[..., Any]] = {
    ApiError: api_error,
    validation.FieldError: field_error,
    StarletteHTTPException: http_error,
    RequestValidationError: request_invalid,
    Exception: unexpected,
}
