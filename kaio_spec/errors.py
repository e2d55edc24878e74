"""The exception tree. Every expected failure is one of these, and the CLI maps each to an exit code.

    KaioError                      base of everything kaio-spec raises on purpose
    ├── InvalidInput (ValueError)  bad arguments, spec or file: exit 2
    │   └── ManifestError          a manifest with one or more positioned errors
    └── PlatformError              the platform misbehaved or could not be reached: exit 1

A job that fails is not an exception: apply reports it in its result (ApplyResult.failed), which
the CLI turns into exit 1, so that one failed cell of a sweep does not hide the others.

The Client keeps the seed's contract on top of this: it raises `ValueError` (InvalidInput is one),
`FileNotFoundError`, `RuntimeError` and `requests.HTTPError` exactly where the seed documents them.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_INVALID = 2
EXIT_INTERRUPTED = 130


class KaioError(Exception):
    """Base of every error kaio-spec raises on purpose."""

    exit_code = EXIT_FAILURE


class InvalidInput(KaioError, ValueError):
    """The user gave something invalid; the message says what would be right."""

    exit_code = EXIT_INVALID


class ManifestError(InvalidInput):
    """A manifest (or several) with positioned errors; `errors` lists them in file order."""

    def __init__(self, errors: list, message: str | None = None):
        self.errors = list(errors)
        super().__init__(message or "\n".join(str(e) for e in self.errors))


class PlatformError(KaioError):
    """The Kaio API could not be reached or answered something unusable.

    Where it stands for a failed request (transport.platform_errors): `status`, the HTTP status
    the API answered (None: no answer); `cause`, what went wrong in a word (`ConnectionError`,
    `HTTP 503`); `transient`, whether the same request may work later (no connection, a timeout,
    a 5xx), which is what a loop that waits for the API asks."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        cause: str | None = None,
        transient: bool = False,
    ):
        super().__init__(message)
        self.status = status
        self.cause = cause or message
        self.transient = transient
