"""What the routes need, as FastAPI dependencies: the platform's parts, which create_app puts on
`app.state`, and the authenticated caller. A route names what it uses in its signature
(`store: StoreDep, user: User`), so that nothing reaches it by a closure.

Every dependency is async: FastAPI runs a plain `def` dependency on the thread pool, a hop on
every request (the poll of GET /jobs is the hot path) for what is one attribute read."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from starlette.responses import Response

from kaio_spec.server import auth, storage
from kaio_spec.server.config import ServerConfig
from kaio_spec.server.errors import ApiError
from kaio_spec.server.responses import json_text
from kaio_spec.server.scheduler import Scheduler
from kaio_spec.server.signin import SignInLinks
from kaio_spec.server.store import NotFound, Store
from kaio_spec.server.uploads import Uploads


async def _config(request: Request) -> ServerConfig:
    return request.app.state.config


async def _store(request: Request) -> Store:
    return request.app.state.store


async def _layout(request: Request) -> storage.Layout:
    return request.app.state.layout


async def _scheduler(request: Request) -> Scheduler:
    return request.app.state.scheduler


async def _signer(request: Request) -> storage.Signer:
    return request.app.state.signer


async def _tokens(request: Request) -> auth.Tokens:
    return request.app.state.tokens


async def _signin_links(request: Request) -> SignInLinks:
    return request.app.state.signin_links


async def _uploads(request: Request) -> Uploads:
    return request.app.state.uploads


async def _dashboard_files(request: Request) -> StaticFiles:
    return request.app.state.dashboard


async def _swagger_files(request: Request) -> StaticFiles:
    return request.app.state.swagger


ConfigDep = Annotated[ServerConfig, Depends(_config)]
StoreDep = Annotated[Store, Depends(_store)]
LayoutDep = Annotated[storage.Layout, Depends(_layout)]
SchedulerDep = Annotated[Scheduler, Depends(_scheduler)]
SignerDep = Annotated[storage.Signer, Depends(_signer)]
TokensDep = Annotated[auth.Tokens, Depends(_tokens)]
SignInLinksDep = Annotated[SignInLinks, Depends(_signin_links)]
UploadsDep = Annotated[Uploads, Depends(_uploads)]
# Files read once at start-up, by name: (bytes, media type, ETag).
StaticFiles = dict[str, tuple[bytes, str, str]]
DashboardFilesDep = Annotated[StaticFiles, Depends(_dashboard_files)]
SwaggerFilesDep = Annotated[StaticFiles, Depends(_swagger_files)]


# Async, so that no request hops to the thread pool just to be authenticated: a token is checked
# once (auth.Tokens remembers it) and the key by one indexed read. It reads the tokens and the
# store from app.state itself rather than as two dependencies of its own: each dependency costs
# FastAPI about 10 us to solve, and every authenticated request solves this one.
async def caller(request: Request) -> dict:
    """The tenant a request's Bearer token signs in: {"id", "key_id", "claims"}; 401 otherwise."""
    tokens: auth.Tokens = request.app.state.tokens
    store: Store = request.app.state.store
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
    """What `read` gives for the caller's job `unique`; 404 for a job that is not theirs."""
    try:
        return read(unique, user["id"])
    except NotFound:
        # Someone else's job and a missing one answer the same.
        raise ApiError(404, f"unique_job_name: no job {unique!r}") from None


def own_job(store: Store, unique: str, user: dict) -> dict:
    return own(store.get_job, unique, user)


def job_out(store: Store, unique: str, user: dict) -> Response:
    """The caller's job as GET /jobs/status answers it."""
    return json_text(own(store.job_json, unique, user))


def check_signature(request: Request, signer: storage.Signer, method: str, key: str) -> None:
    """A presigned URL's expiry and signature: 400 when malformed, 403 when wrong or expired."""
    q = request.query_params
    try:
        signer.verify(method, key, q.get("expires"), q.get("signature"))
    except storage.MalformedSignature as e:
        raise ApiError(400, f"signature: {e}") from None
    except storage.BadSignature as e:
        raise ApiError(403, f"signature: {e}") from None
