"""The web dashboard (static files, no build step) at / and /dashboard/<name>, and the API
reference at /docs (Swagger UI from this server's own files, apidocs.py). Every file is read once
at start-up (app.state.dashboard, app.state.swagger) and served with a strict CSP and an ETag."""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations as written.
import hashlib
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import Response

from kaio_spec.server.deps import DashboardFilesDep, StaticFiles, SwaggerFilesDep
from kaio_spec.server.errors import ApiError
from kaio_spec.server.openapi import ERRORS
from kaio_spec.server.responses import etag_matches

DASHBOARD_DIR = Path(__file__).resolve().parent.parent / "dashboard"
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

router = APIRouter()


def load_dashboard(folder: Path = DASHBOARD_DIR) -> StaticFiles:
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


def static_file(name: str, request: Request, files: StaticFiles) -> Response:
    """One of `files` (load_dashboard's or apidocs.load_swagger's), or 304 when the caller
    already holds it."""
    found = files.get(name)
    if found is None:
        raise ApiError(404, f"no dashboard file {name!r}")
    data, media, etag = found
    headers = {**DASHBOARD_HEADERS, "ETag": etag}
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=media, headers=headers)


@router.get(
    "/",
    tags=["local"],
    response_class=Response,
    responses={200: {"content": {"text/html": {}}}},
)
def dashboard_page(request: Request, files: DashboardFilesDep):
    """The web dashboard (signs in with an API key, then uses this API with the token)."""
    return static_file("index.html", request, files)


@router.get("/dashboard/{name}", tags=["local"], response_class=Response, responses=ERRORS)
def dashboard_asset(name: str, request: Request, files: DashboardFilesDep):
    """The dashboard's scripts, styles and images."""
    return static_file(name, request, files)


@router.get("/docs", tags=["local"], response_class=Response, include_in_schema=False)
def api_docs(request: Request, files: DashboardFilesDep):
    """The API reference (Swagger UI on /openapi.json), from this server's own files."""
    return static_file("docs.html", request, files)


@router.get("/docs/{name}", tags=["local"], response_class=Response, include_in_schema=False)
def api_docs_asset(name: str, request: Request, files: SwaggerFilesDep):
    return static_file(name, request, files)
