"""Signing in and out: POST /login with an API key, POST /logout, and the one-time links that
sign a dashboard tab in (`kaio dashboard`: POST /dashboard/links, then POST /login/link)."""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations as written.
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from kaio_spec.server import auth
from kaio_spec.server.bodies import MAX_TEXT_FIELD, read_json
from kaio_spec.server.deps import SignInLinksDep, StoreDep, TokensDep, User
from kaio_spec.server.errors import ApiError
from kaio_spec.server.openapi import (
    ERRORS,
    LINK_LOGIN_BODY,
    LOGIN_BODY,
    LoginOut,
    SignInLinkOut,
)
from kaio_spec.server.responses import ok
from kaio_spec.server.store import Store

router = APIRouter()


def signed_in(
    tokens: auth.Tokens, user: dict, key_id: int, not_after: int | None = None
) -> JSONResponse:
    token, exp = tokens.issue(user["id"], key_id, not_after)
    return ok({"access_token": token, "exp": exp, "project": user})


@router.post(
    "/login",
    response_model=LoginOut,
    responses=ERRORS,
    openapi_extra={"requestBody": LOGIN_BODY},
)
async def login(request: Request, store: StoreDep, tokens: TokensDep):
    body = await read_json(request)
    key = body.get("api_key")
    if not isinstance(key, str) or not key:
        raise ApiError(400, "api_key: must be a non-empty string")
    found = await run_in_threadpool(store.login, key)
    if found is None:
        raise ApiError(403, "api_key: unknown or revoked")
    user, key_id = found
    return signed_in(tokens, user, key_id)


@router.post("/logout", tags=["local"], status_code=204, response_class=Response, responses=ERRORS)
def logout(user: User, tokens: TokensDep):
    """Sign the caller's token out: it is refused from now until it would have expired
    (other tokens of the same key go on working). The dashboard's Sign out calls this."""
    claims = user["claims"]
    assert tokens.revoked is not None  # create_app gives the platform's tokens their list
    tokens.revoked.revoke(claims.token_id, claims.exp)
    return Response(status_code=204)


@router.post("/dashboard/links", tags=["local"], response_model=SignInLinkOut, responses=ERRORS)
def create_signin_link(user: User, signin_links: SignInLinksDep):
    """A one-time code (valid briefly) that signs a dashboard tab in as the caller: `kaio
    dashboard` opens `/#signin=<code>`, so no API key or token ever sits in a URL. The token
    it gives ends when the caller's own token does: a token cannot renew itself this way."""
    code = signin_links.issue(user["id"], user["key_id"], user["claims"].exp)
    return ok({"code": code, "expires_in": int(signin_links.ttl_s)})


@router.post(
    "/login/link",
    tags=["local"],
    response_model=LoginOut,
    responses=ERRORS,
    openapi_extra={"requestBody": LINK_LOGIN_BODY},
)
async def login_with_link(
    request: Request, store: StoreDep, tokens: TokensDep, signin_links: SignInLinksDep
):
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
    user = await run_in_threadpool(_project_of_active_key, store, user_id, key_id)
    if user is None:
        raise ApiError(403, "code: the API key behind this link was revoked")
    return signed_in(tokens, user, key_id, not_after)


def _project_of_active_key(store: Store, user_id: str, key_id: int) -> dict | None:
    """The project ({"id", "name"}) of a key still active; None once it is revoked."""
    if not store.key_is_active(user_id, key_id):
        return None
    return next(
        ({"id": u["id"], "name": u["name"]} for u in store.list_users() if u["id"] == user_id),
        None,
    )
