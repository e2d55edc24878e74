"""Request bodies, read as they come: JSON bounded in size and depth and checked for valid
Unicode (read by hand rather than by pydantic, so that each rejection names the field in words);
uploads streamed through a hash, never whole in memory, given up when they stall."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request

from kaio_spec.server import ingest
from kaio_spec.server.errors import ApiError

MAX_JSON_BYTES = 64 * 1024
MAX_JSON_DEPTH = 16
MAX_TEXT_FIELD = 512


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


async def read_json(
    request: Request, stall_s: float = 60.0, max_bytes: int = MAX_JSON_BYTES
) -> dict:
    ctype = request.headers.get("content-type", "")
    if ctype.split(";")[0].strip().lower() != "application/json":
        raise ApiError(400, "Content-Type: must be application/json")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise ApiError(413, f"body: larger than {max_bytes} bytes")
    body = bytearray()
    async for chunk in stalls_timed_out(request, stall_s):
        body += chunk
        if len(body) > max_bytes:
            raise ApiError(413, f"body: larger than {max_bytes} bytes")
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
    request: Request, hasher: Any, limit: int, sink: Any = None, stall_s: float = 60.0
) -> int:
    """Stream the body through `hasher` (and into `sink`, a file or an ingest.PackageIngest),
    never whole in memory; its size. 413 past `limit`; 408 when it stalls for `stall_s`. One pass
    over the bytes, hashed (hashlib lets go of the GIL) and written together by one thread
    (ingest.BodyPump) while the loop reads on. A body that says it is small
    (ingest.SMALL_BODY_BYTES) is gathered on the loop and hashed and written (to the page cache)
    there: cheaper than that thread and the hops to it."""

    def take(data: bytes) -> None:
        hasher.update(data)
        if sink is not None:
            sink.write(data)

    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) <= ingest.SMALL_BODY_BYTES:
        pieces = [chunk async for chunk in _pieces_within(request, limit, stall_s)]
        take(b"".join(pieces))
        return sum(map(len, pieces))
    size = 0
    pump = ingest.BodyPump(take)
    try:
        async for chunk in _pieces_within(request, limit, stall_s):
            size += len(chunk)
            if not pump.offer(chunk):
                await run_in_threadpool(pump.wait_for_room)
        await run_in_threadpool(pump.finish)
    finally:
        await run_in_threadpool(pump.close)
    return size


async def _pieces_within(request: Request, limit: int, stall_s: float) -> AsyncIterator[bytes]:
    """The body's pieces (stalls_timed_out); 413 once they pass `limit` bytes, 400 if the
    client goes away before the last."""
    size = 0
    try:
        async for chunk in stalls_timed_out(request, stall_s):
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"body: larger than the {limit} bytes allowed")
            yield chunk
    except ClientDisconnect:
        # Nobody reads the answer; the status keeps the server's log free of a traceback.
        raise ApiError(400, "body: the client went away before sending all of it") from None


async def receive_hashed(
    request: Request, sha256: str, limit: int, sink: Any = None, stall_s: float = 60.0
) -> int:
    """receive_body for a body its URL names by SHA-256 (a base package, an input file): 400
    when its bytes hash to something else."""
    hasher = hashlib.sha256()
    size = await receive_body(request, hasher, limit, sink, stall_s)
    if hasher.hexdigest() != sha256:
        raise ApiError(400, f"body: its SHA-256 is {hasher.hexdigest()}, not the URL's")
    return size
