"""Answers the routes give: JSON as is, conditional (ETag) bodies, files streamed."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from email.utils import formatdate
from typing import BinaryIO

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

FILE_CHUNK = 256 * 1024  # an output sent in pieces of this size


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
