"""Connections that send nothing, or never finish their headers, are closed.

uvicorn times out a connection only while it idles between requests (keep-alive); one that
connects and sends nothing, or trickles its request line and headers, would be held for ever,
and a few thousand of them pin the server. This protocol gives every request `header_timeout_s`
from the connection (or the previous response) to the end of its headers. A request body that
stalls is the route's to time out (bodies.receive_body), since only the route knows it is waiting for one.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

DEFAULT_HEADER_TIMEOUT_S = 10.0
DEFAULT_KEEP_ALIVE_S = 5  # uvicorn's own default, set here so that it is a decision
# Past this many open connections uvicorn answers 503 at once: the file descriptors and memory
# they hold stay bounded. uvicorn counts silent connections too, so the bound sits far above
# what clients use (a few per tenant) and the header timeout sheds the silent ones.
DEFAULT_MAX_CONNECTIONS = 8192


def header_timeout_protocol(header_timeout_s: float) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol, with the headers of each request due in `header_timeout_s`."""

    class HeaderTimeoutProtocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None

        def _arm_header_timer(self) -> None:
            self._cancel_header_timer()
            self._header_timer = self.loop.call_later(header_timeout_s, self._headers_too_late)

        def _cancel_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_late(self) -> None:
            self._header_timer = None
            if not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_header_timer()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm_header_timer()

        def on_headers_complete(self) -> None:
            self._cancel_header_timer()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_header_timer()
            super().connection_lost(exc)

    return HeaderTimeoutProtocol
