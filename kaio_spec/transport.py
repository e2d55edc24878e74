"""HTTP plumbing for the Client: one pooled requests.Session, retries that are safe to make, error
messages that carry the server's reason, streamed uploads and downloads.

What is retried, and why only that:

- Connection failures before a request is sent (refused, DNS, connect timeout): any method, since
  the server never saw the request (urllib3 counts these as `connect` errors).
- GET, HEAD, OPTIONS and DELETE on a dropped connection, a read timeout or a 502/503/504: they
  are idempotent, so sending them twice is harmless.
- The package PUT to a presigned URL, and a base package's PUT /packages/<sha256>: idempotent
  (the same object is written again), but their bodies are streams, so `put_stream` re-opens them
  and sends them again itself. A body of unknown length (a package uploaded while it is being
  compressed) goes out chunked, to a server that says it takes that ("streamed-upload" in
  /healthz's features); each try re-reads it from its first byte.
- Never a POST once it may have reached the server. `POST /jobs/presign` in particular creates a
  job; a blind retry after a lost response could create a second one. A caller that loses a
  presign response (requests.ConnectionError or a 502/503/504 from it) recovers by looking the job
  up by its job_name (and labels) in `GET /jobs`: a match still `Pending` was never uploaded and
  never starts; submit again, or stop it. POST /login and POST .../stop are not retried either.

Nothing here logs a header, a body or a URL's query string: presigned URLs are credentials, and
bodies hold API keys and environment values.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ReadTimeoutError
from urllib3.util.retry import Retry

from kaio_spec._version import __version__
from kaio_spec.errors import KaioError, PlatformError

if TYPE_CHECKING:
    from rich.progress import Progress

LOGGER = "kaio_spec.client"

TIMEOUT = (10, 300)  # seconds to connect, and to wait for each read of a response
# urllib3 applies the first figure to each send of a request body as well.
UPLOAD_TIMEOUT = (60, 600)
RETRY_STATUSES = frozenset({502, 503, 504})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})
DEFAULT_RETRIES = 4
DEFAULT_BACKOFF = 0.5  # seconds; doubles each try, at most BACKOFF_MAX
BACKOFF_MAX = 8.0
PROGRESS_MIN_BYTES = 32 * 1024 * 1024
_COPY_SIZE = 1 << 20


def redact(url: str) -> str:
    """A URL without its query string and fragment (presigned URLs carry their signature there)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def error_reason(resp: requests.Response) -> str | None:
    """The `{"error": ...}` reason a Kaio server gives, if the body has one."""
    try:
        body = resp.json()
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    reason = body.get("error") or body.get("detail")
    if isinstance(reason, dict):  # some routes nest it: {"error": {"message": ...}}
        reason = reason.get("message")
    return str(reason) if reason else None


def raise_for_status(resp: requests.Response) -> None:
    """Like resp.raise_for_status(), with the server's reason and without the URL's query string."""
    if resp.status_code < 400:
        return
    reason = error_reason(resp)
    method = resp.request.method if resp.request is not None else "?"
    where = f"{method} {redact(resp.url)}"
    message = f"{resp.status_code} {resp.reason or ''}".rstrip()
    message += f": {reason} ({where})" if reason else f" ({where})"
    raise requests.HTTPError(message, response=resp, request=resp.request)


@contextlib.contextmanager
def platform_errors(
    api_base: str,
    *,
    unreachable: Callable[[requests.RequestException], str] | None = None,
    refused: Callable[[requests.HTTPError], KaioError | None] | None = None,
) -> Iterator[None]:
    """The one place requests' exceptions become KaioErrors (as httpx's map_httpcore_exceptions
    maps httpcore's): inside it, an HTTP error becomes `refused(e)` where that gives one, else a
    PlatformError carrying the API's reason; any other (no connection, a timeout) a PlatformError
    saying `unreachable(e)` (by default: contact was lost). KaioErrors pass through. The
    PlatformError's `status`, `cause` and `transient` say what happened."""
    try:
        yield
    except KaioError:
        raise
    except requests.HTTPError as e:
        code = e.response.status_code if e.response is not None else None
        error = refused(e) if refused is not None else None
        if error is None:
            transient = code is not None and code >= 500
            cause = f"HTTP {code}" if code is not None else type(e).__name__
            error = PlatformError(f"{api_base}: {e}", status=code, cause=cause, transient=transient)
        raise error from None
    except requests.RequestException as e:
        message = (
            unreachable(e)
            if unreachable is not None
            else f"lost contact with {api_base} ({type(e).__name__}); check that it runs and "
            "try again"
        )
        transient = isinstance(e, requests.ConnectionError | requests.Timeout)
        raise PlatformError(message, cause=type(e).__name__, transient=transient) from None


def read_timed_out(e: requests.RequestException) -> bool:
    """The server took the request but did not answer in time (after the session's retries,
    requests reports that as a ConnectionError caused by a ReadTimeoutError)."""
    if isinstance(e, requests.ReadTimeout):
        return True
    reason = getattr(e.args[0], "reason", None) if e.args else None
    return isinstance(reason, ReadTimeoutError)


def make_session(
    retries: int = DEFAULT_RETRIES, backoff: float = DEFAULT_BACKOFF
) -> requests.Session:
    """One Session (connection reuse) with urllib3 retries for what is safe to retry (above)."""
    retry = Retry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        other=0,
        allowed_methods=IDEMPOTENT_METHODS,
        status_forcelist=RETRY_STATUSES,
        backoff_factor=backoff,
        backoff_max=BACKOFF_MAX,
        raise_on_status=False,  # the last answer comes back, and raise_for_status says why
        respect_retry_after_header=True,
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry, pool_connections=4, pool_maxsize=16)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = (
        f"kaio-spec/{__version__} python-requests/{requests.__version__}"
    )
    return session


class Transport:
    """The session, the API's base URL and the retry settings the Client uses."""

    def __init__(
        self,
        api_base: str,
        retries: int = DEFAULT_RETRIES,
        backoff: float = DEFAULT_BACKOFF,
        log: logging.Logger | None = None,
    ):
        self.api_base = api_base.rstrip("/")
        self.log = log or logging.getLogger(LOGGER)
        self.retries = retries
        self.backoff = backoff
        self.session = make_session(retries, backoff)

    def url(self, path_or_url: str) -> str:
        if path_or_url.startswith(("http://", "https://")):
            return path_or_url
        return urljoin(self.api_base + "/", path_or_url.lstrip("/"))

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        json: Any = None,
        params: dict[str, str] | None = None,
        stream: bool = False,
        timeout=TIMEOUT,
    ) -> requests.Response:
        """One request (retried by the session only where safe); the response, whatever its
        status. Connection failures raise requests.ConnectionError / Timeout."""
        url = self.url(path)
        start = time.monotonic()
        try:
            resp = self.session.request(
                method,
                url,
                headers=headers,
                json=json,
                params=params,
                stream=stream,
                timeout=timeout,
            )
        except requests.RequestException as e:
            self.log.debug("%s %s failed: %s", method, redact(url), type(e).__name__)
            raise
        self.log.debug(
            "%s %s -> %s (%.2f s)", method, redact(url), resp.status_code, time.monotonic() - start
        )
        return resp

    def _sleep_before_retry(self, attempt: int) -> None:
        time.sleep(min(BACKOFF_MAX, self.backoff * 2**attempt))

    def put_stream(
        self,
        url: str,
        open_body: Callable[[], IO[bytes]],
        size: int | None,
        progress: bool = False,
        description: str = "upload",
        accept_after_retry: Callable[[requests.Response], bool] | None = None,
        headers: dict[str, str] | None = None,
    ) -> requests.Response:
        """PUTs `size` bytes from a fresh `open_body()` stream; on a dropped connection, a timeout
        or a 502/503/504, opens the body again and sends it again, up to `retries` times. Memory
        stays flat: the body is read in small pieces as it is sent. `size` None: the length is not
        known yet, and the body is sent chunked (Transfer-Encoding), as it is read.

        A refusal of a second or later try may only say that an earlier try, whose answer was
        lost, went through: `accept_after_retry(resp)` decides, and True counts as success."""
        last_error: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                self._sleep_before_retry(attempt - 1)
                self.log.debug("upload: try %d of %d", attempt + 1, self.retries + 1)
            with open_body() as body, _progress(progress, size, description) as advance:
                stream = (
                    _CountingReader(body, size, advance)
                    if size is not None
                    else _pieces(body, advance)
                )
                try:
                    resp = self._put(url, stream, headers)
                except (requests.ConnectionError, requests.Timeout) as e:
                    last_error = e
                    continue
            if resp.status_code in RETRY_STATUSES and attempt < self.retries:
                resp.close()
                continue
            retried = attempt > 0 and accept_after_retry is not None
            if (
                resp.status_code >= 400
                and retried
                and accept_after_retry
                and accept_after_retry(resp)
            ):
                return resp
            raise_for_status(resp)
            return resp
        assert last_error is not None
        raise last_error

    def _put(self, url: str, body: Any, headers: dict[str, str] | None = None) -> requests.Response:
        start = time.monotonic()
        try:
            resp = self.session.put(url, data=body, headers=headers, timeout=UPLOAD_TIMEOUT)
        except requests.RequestException as e:
            self.log.debug("PUT %s failed: %s", redact(url), type(e).__name__)
            raise
        self.log.debug(
            "PUT %s -> %s (%.2f s)", redact(url), resp.status_code, time.monotonic() - start
        )
        return resp

    def download(self, url: str, target: Path) -> int:
        """Streams `url` to a temporary name beside `target`, then renames it into place (a
        reader never sees half a file). A connection dropped mid-body is tried again, whole.
        Returns the bytes written."""
        last_error: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                self._sleep_before_retry(attempt - 1)
            tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.part")
            try:
                with self.request("GET", url, stream=True) as resp:
                    raise_for_status(resp)
                    written = 0
                    with open(tmp, "xb") as f:
                        for piece in resp.iter_content(_COPY_SIZE):
                            f.write(piece)
                            written += len(piece)
                os.replace(tmp, target)
                return written
            except (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,  # a body cut short
            ) as e:
                last_error = e
            finally:
                if tmp.exists():
                    tmp.unlink()
        assert last_error is not None
        raise last_error


def _pieces(body: IO[bytes], advance: Callable[[int], None]) -> Iterator[bytes]:
    """A body of unknown length for requests (a generator: sent chunked), reporting progress."""
    while data := body.read(_COPY_SIZE):
        advance(len(data))
        yield data


class _CountingReader:
    """A body stream for requests: has a length (so Content-Length is sent, never chunked: a
    presigned PUT refuses chunked bodies) and reports progress as it is read."""

    def __init__(self, body: IO[bytes], size: int, advance: Callable[[int], None]):
        self._body = body
        self._size = size
        self._advance = advance

    def __len__(self) -> int:
        # The whole size: requests subtracts tell() itself.
        return self._size

    def tell(self) -> int:
        return self._body.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._body.seek(offset, whence)

    def read(self, n: int = -1) -> bytes:
        data = self._body.read(n)
        if data:
            self._advance(len(data))
        return data

    def __iter__(self):
        while data := self.read(_COPY_SIZE):
            yield data


class _progress:
    """A rich progress bar on stderr, or nothing; yields `advance(nbytes)`."""

    def __init__(self, show: bool, total: int | None, description: str):
        self._show = show
        self._total = total
        self._description = description
        self._bar: Progress | None = None

    def __enter__(self) -> Callable[[int], None]:
        if not self._show:
            return lambda n: None
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(file=sys.stderr),
            transient=True,
        )
        self._bar.__enter__()
        task = self._bar.add_task(self._description, total=self._total)
        bar = self._bar
        return lambda n: bar.advance(task, n)

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)


def show_progress(size: int, verbose: bool) -> bool:
    """A progress bar for large uploads when verbose or when stderr is a terminal."""
    return size >= PROGRESS_MIN_BYTES and (verbose or sys.stderr.isatty())
