"""The API reference at /docs: Swagger UI from the copy the fastapi-offline package ships
(pinned in pyproject.toml), never from a CDN. A script from elsewhere would run in the origin
that holds a dashboard tab's token, and offline (a laptop on a plane, an air-gapped cluster) the
page would not load; so the page is files of this server under the dashboard's strict CSP, and
docs.js (not an inline script) starts Swagger UI on /openapi.json.
"""

from __future__ import annotations

import hashlib
import importlib.resources

SWAGGER_PACKAGE = "fastapi_offline"
SWAGGER_TYPES = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
}


def load_swagger() -> dict[str, tuple[bytes, str, str]]:
    """Swagger UI's files by name: (bytes, media type, ETag), as load_dashboard gives; none
    when the package is missing (the page then says so)."""
    try:
        folder = importlib.resources.files(SWAGGER_PACKAGE) / "static"
    except ModuleNotFoundError:
        return {}
    files = {}
    for name, media in SWAGGER_TYPES.items():
        path = folder / name
        if path.is_file():
            data = path.read_bytes()
            files[name] = (data, media, '"' + hashlib.sha256(data).hexdigest()[:32] + '"')
    return files
