"""Files written whole or not at all: the one atomic write every module uses (core; imports only
the standard library, so the server, the executor and the CLI may all use it cheaply)."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path


def write_atomic(
    path: Path, data: str | bytes, *, mode: int | None = 0o600, fsync: bool = True
) -> None:
    """`data` into `path`: a reader, or a process killed half-way, sees the old file or the new
    one, never half (a temporary file beside it, renamed over it). The folder must exist.

    mode: the file's permissions from its first byte on (0o600: its owner's only, for keys and
    state); None: as open() would make it (0o666 less the umask), for files meant to be shared.
    fsync: True makes the write durable before this returns (the file, then its folder for the
    rename); False for files a crash may lose, on paths where a sync would cost too much."""
    # A unique temporary name: two threads or processes may write the same file at once.
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 if mode is None else mode)
    try:
        with os.fdopen(fd, "wb") as f:
            if mode is not None:
                os.fchmod(f.fileno(), mode)  # O_CREAT's mode is filtered by the umask
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if fsync:
        fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    # The rename itself is durable only once the folder is synced (POSIX); not possible on Windows.
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
