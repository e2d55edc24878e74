"""Headers every answer of the server carries unless its route chose otherwise.

A tenant's answers hold credentials (tokens, presigned URLs) and their data: no cache, shared or
the browser's own, may keep them (`Cache-Control: no-store`); and no browser may guess a type
other than the one declared (`X-Content-Type-Options: nosniff`), so that a job's log or output
is never run as a page or a script. The dashboard's static files set their own Cache-Control
(revalidated with ETags).
"""

from __future__ import annotations

from urllib.parse import quote

from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEFAULTS = ((b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff"))


class DefaultHeaders:
    """Pure ASGI (no per-request task, unlike BaseHTTPMiddleware): adds DEFAULTS to the start
    of each HTTP response that does not already carry them."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_defaults(message: Message) -> None:
            if message["type"] == "http.response.start":
                # The raw list (lower-case names, as Starlette sends them): a few microseconds
                # less per answer than a MutableHeaders view, on the poll's hot path.
                raw = list(message.get("headers") or ())
                present = {name.lower() for name, _ in raw}
                raw += [(name, value) for name, value in DEFAULTS if name not in present]
                message["headers"] = raw
            await send(message)

        await self.app(scope, receive, send_with_defaults)


def attachment(path: str) -> str:
    """Content-Disposition for a download named after the last part of `path`: an ASCII
    fallback name and the exact one (RFC 6266, RFC 8187)."""
    name = path.rsplit("/", 1)[-1] or "download"
    fallback = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\%' else "_" for c in name
    )
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='', errors='replace')}"
