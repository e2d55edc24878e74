"""A fault-injecting HTTP proxy for tests: forwards to a real server, misbehaves on request.

    with FaultProxy(kaio_server.url) as proxy:
        client = Client(proxy.url).login(key)           # everything goes through the proxy
        proxy.on("GET", "/jobs").status(503, times=2)   # two 503s, then the real answer
        proxy.on("POST", "/jobs/presign").drop_response()   # acted on, answer never arrives
        proxy.on("PUT", "/objects/.*").reset()          # connection reset, nothing forwarded
        proxy.on("GET", "/jobs/download/.*").rewrite_json(lambda body: {...})
        proxy.on("GET", "/objects/.*").truncate(10)     # 10 body bytes, then the line goes dead
        proxy.on("GET", "/jobs").delay(0.5)             # slow, then forwarded
        proxy.on("PUT", "/objects/.*").cut(1 << 20)     # 1 MiB of the body forwarded, then reset
        proxy.seen                                      # [(method, path), ...] as received
        proxy.body_sizes("PUT", "/objects/.*")          # their request bodies' sizes

The server's own address in a JSON answer (presigned upload and download URLs name the server's
configured address, never the Host header) is rewritten to the proxy's, as a reverse proxy in
front of a server does: the PUT and the downloads pass through the proxy as well. Each rule matches a method (or "*") and a regular expression over the path
(without the query string), and applies `times` times (None: always), in the order rules were
added. Request bodies, of a Content-Length or chunked, are streamed to the server (chunked as they
came), never held whole in memory.

Standard library only; one thread per connection; loopback only.
"""

from __future__ import annotations

import http.client
import io
import json
import re
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}
COPY_CHUNK = 256 * 1024


@dataclass
class Rule:
    method: str
    path: re.Pattern
    action: str  # reset | status | drop_response | rewrite | truncate | delay | cut
    times: int | None = 1
    status_code: int = 503
    body: bytes = b""
    rewrite: Callable[[int, dict, bytes], tuple[int, dict, bytes]] | None = None
    keep_bytes: int = 0
    seconds: float = 0.0
    hits: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def claim(self, method: str, path: str) -> bool:
        if self.method not in ("*", method) or not self.path.fullmatch(path):
            return False
        with self.lock:
            if self.times is not None and self.hits >= self.times:
                return False
            self.hits += 1
            return True


class RuleBuilder:
    def __init__(self, proxy: FaultProxy, method: str, path: str):
        self._proxy = proxy
        self._method = method.upper()
        self._path = re.compile(path)

    def _add(self, action: str, times: int | None, **kw) -> Rule:
        rule = Rule(self._method, self._path, action, times, **kw)
        self._proxy.rules.append(rule)
        return rule

    def reset(self, times: int | None = 1) -> Rule:
        """Read the request, forward nothing, reset the connection."""
        return self._add("reset", times)

    def status(self, code: int, error: str | None = None, times: int | None = 1) -> Rule:
        """Answer `code` with {"error": ...} without forwarding."""
        body = json.dumps({"error": error or f"injected {code}"}).encode()
        return self._add("status", times, status_code=code, body=body)

    def drop_response(self, times: int | None = 1) -> Rule:
        """Forward the request (the server acts on it), then reset instead of answering."""
        return self._add("drop_response", times)

    def rewrite(
        self, fn: Callable[[int, dict, bytes], tuple[int, dict, bytes]], times: int | None = 1
    ) -> Rule:
        """Forward, then answer fn(status, headers, body) instead of the server's answer."""
        return self._add("rewrite", times, rewrite=fn)

    def rewrite_json(self, fn: Callable[[object], object], times: int | None = 1) -> Rule:
        def rewrite(status: int, headers: dict, body: bytes) -> tuple[int, dict, bytes]:
            return status, headers, json.dumps(fn(json.loads(body))).encode()

        return self.rewrite(rewrite, times)

    def truncate(self, keep_bytes: int, times: int | None = 1) -> Rule:
        """Forward; send the answer's headers and its first `keep_bytes` body bytes, then reset."""
        return self._add("truncate", times, keep_bytes=keep_bytes)

    def cut(self, keep_bytes: int, times: int | None = 1) -> Rule:
        """Forward the first `keep_bytes` of the request's body, then reset both connections
        (a line that dies in the middle of an upload)."""
        return self._add("cut", times, keep_bytes=keep_bytes)

    def delay(self, seconds: float, times: int | None = 1) -> Rule:
        """Wait, then forward as usual."""
        return self._add("delay", times, seconds=seconds)


class _ClientGone(OSError):
    pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    proxy: FaultProxy  # set on the subclass made per proxy

    def log_message(self, format, *args):  # quiet
        pass

    def _dispatch(self) -> None:
        method = self.command
        path = urlsplit(self.path).path
        self.proxy.seen.append((method, path))
        self.proxy.sent.append((method, path, int(self.headers.get("Content-Length") or 0)))
        rule = next((r for r in list(self.proxy.rules) if r.claim(method, path)), None)
        action = rule.action if rule else None
        if action == "delay":
            time.sleep(rule.seconds)
            if self.proxy.stopped:  # the test is over: a request held past it goes nowhere
                return self._reset()
        if action == "reset":
            self._drain_body()
            return self._reset()
        if action == "status":
            self._drain_body()
            return self._answer(rule.status_code, {"Content-Type": "application/json"}, rule.body)
        try:
            upstream = self._forward(rule.keep_bytes if action == "cut" else None)
        except _ClientGone:
            self.close_connection = True  # nobody to answer
            return
        except OSError:
            return self._answer(502, {"Content-Type": "application/json"}, b'{"error": "upstream"}')
        try:
            resp = upstream.getresponse()
            headers = {k: v for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP}
            if action == "drop_response":
                resp.read()
                return self._reset()
            if action == "rewrite":
                body = self._own_address(resp.read())
                status, headers, body = rule.rewrite(resp.status, headers, body)
                headers = {k: v for k, v in headers.items() if k.lower() != "content-length"}
                return self._answer(status, headers, body)
            if action == "truncate":
                self._send_head(resp.status, resp.reason, headers)
                self.wfile.write(resp.read(rule.keep_bytes))
                self.wfile.flush()
                return self._reset()
            if resp.getheader("Content-Type", "").startswith("application/json"):
                headers = {k: v for k, v in headers.items() if k.lower() != "content-length"}
                return self._answer(resp.status, headers, self._own_address(resp.read()))
            self._relay(resp, headers)
        finally:
            upstream.close()

    def _own_address(self, body: bytes) -> bytes:
        """The body with the server's address (in its URLs) replaced by the proxy's."""
        return body.replace(self.proxy.upstream_url.encode(), self.proxy.url.encode())

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _dispatch

    def _chunked(self) -> bool:
        return "chunked" in self.headers.get("Transfer-Encoding", "").lower()

    def _body(self):
        """The request's body in pieces, as they arrive (de-chunked); _ClientGone if it ends
        early."""
        if not self._chunked():
            left = int(self.headers.get("Content-Length") or 0)
            while left > 0:
                data = self.rfile.read(min(left, COPY_CHUNK))
                if not data:
                    raise _ClientGone("the client's body ended early")
                left -= len(data)
                yield data
            return
        while True:
            line = self.rfile.readline(64)
            if not line.strip():
                raise _ClientGone("the client's body ended early")
            size = int(line.split(b";")[0].strip(), 16)
            if not size:
                break
            data = self.rfile.read(size)
            if len(data) < size or self.rfile.readline(64) != b"\r\n":
                raise _ClientGone("the client's body ended early")
            yield data
        while self.rfile.readline(1024) not in (b"\r\n", b""):  # trailers
            pass

    def _drain_body(self) -> None:
        for _ in self._body():
            pass

    def _forward(self, cut_after: int | None = None) -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection(
            self.proxy.upstream_host, self.proxy.upstream_port, timeout=120
        )
        conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
        for key, value in self.headers.items():
            if key.lower() not in HOP_BY_HOP:
                conn.putheader(key, value)
        chunked = self._chunked()
        if chunked:
            conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        forwarded = 0
        try:
            for data in self._body():
                if cut_after is not None and forwarded + len(data) >= cut_after:
                    data = data[: cut_after - forwarded]
                conn.send(f"{len(data):x}\r\n".encode() + data + b"\r\n" if chunked else data)
                forwarded += len(data)
                if cut_after is not None and forwarded >= cut_after:
                    self._reset()
                    raise _ClientGone("cut by the rule")
        except _ClientGone:
            # The client went away mid-body: so does the upstream request, as a real proxy
            # would do (a server left waiting for the rest would hold the upload's lock).
            conn.close()
            raise
        if chunked:
            conn.send(b"0\r\n\r\n")
        self.proxy.received.append((self.command, urlsplit(self.path).path, forwarded))
        return conn

    def _send_head(self, status: int, reason: str | None, headers: dict) -> None:
        self.send_response_only(status, reason)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()

    def _answer(self, status: int, headers: dict, body: bytes) -> None:
        self._send_head(status, None, {**headers, "Content-Length": str(len(body))})
        if self.command != "HEAD":
            self.wfile.write(body)

    def _relay(self, resp: http.client.HTTPResponse, headers: dict) -> None:
        length = resp.getheader("Content-Length")
        no_body = self.command == "HEAD" or resp.status in (204, 304)
        if length is None and not no_body:
            headers["Transfer-Encoding"] = "chunked"
        self._send_head(resp.status, resp.reason, headers)
        if no_body:
            return
        while data := resp.read(COPY_CHUNK):
            if length is None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            else:
                self.wfile.write(data)
        if length is None:
            self.wfile.write(b"0\r\n\r\n")

    def _reset(self) -> None:
        """Close the client's connection with a TCP reset, as a dying server or network would."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass
        self.wfile = io.BytesIO()  # what the handler would still flush goes nowhere


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        # A client that gave up (a test's short timeout) before a delayed answer: expected here.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class FaultProxy:
    """See the module's docstring."""

    def __init__(self, upstream_url: str):
        parts = urlsplit(upstream_url)
        self.upstream_url = f"{parts.scheme}://{parts.netloc}"
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.rules: list[Rule] = []
        self.seen: list[tuple[str, str]] = []
        self.sent: list[tuple[str, str, int]] = []  # (method, path, request body bytes)
        # (method, path, body bytes forwarded) of each request forwarded whole, chunked or not
        self.received: list[tuple[str, str, int]] = []
        handler = type("Handler", (_Handler,), {"proxy": self})
        self._server = _QuietServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.stopped = False
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fault-proxy", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def on(self, method: str, path: str) -> RuleBuilder:
        return RuleBuilder(self, method, path)

    def clear(self) -> None:
        self.rules.clear()
        self.seen.clear()
        self.sent.clear()
        self.received.clear()

    def body_sizes(self, method: str, path: str) -> list[int]:
        """The request body sizes (Content-Length) of the requests matching, in order."""
        pattern = re.compile(path)
        return [n for m, p, n in self.sent if m == method.upper() and pattern.fullmatch(p)]

    def count(self, method: str, path: str) -> int:
        """How many requests matching `method` and the path regex reached the proxy."""
        pattern = re.compile(path)
        return sum(1 for m, p in self.seen if m == method.upper() and pattern.fullmatch(p))

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopped = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
