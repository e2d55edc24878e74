"""A job's package (or a base package) checked and unpacked as its upload arrives, not after it
is stored whole.

The piece of the body that the server receives is written to the package's temp file and handed
to a thread that reads the growing stream as a tar.gz (storage.extract_package, or
extract_overlay on a base package) into a temp folder beside the job's pkg/. Receiving,
decompressing and writing the files overlap, so the upload is answered soon after its last byte
instead of a whole unpacking later. Only once the body is whole, and its hash is the one the job
takes, are the package and its folder renamed into place; a body cut short, refused or hashed
otherwise leaves nothing behind (close()), and a killed server's temp files are removed at start
(storage.Layout.remove_partial_uploads). The checks are storage.py's and unpack.py's, the same
whether the package comes from a file or from the wire. A small body (SMALL_BODY_BYTES) is
unpacked in one go once it is whole and accepted: the same checks, with no thread of its own.
"""

from __future__ import annotations

import io
import os
import threading
from collections import deque
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import BinaryIO

from kaio_spec.server import storage

# A body's bytes are handed on in pieces of at least PIECE_BYTES (fewer wake-ups between threads:
# on a loaded machine each costs a wait for a time slice), at most BODY_BUDGET bytes queued by
# the event loop and AHEAD_BYTES (and the piece being read) waiting for the unpacking thread: the
# memory one upload may hold. Not less: with 2 MiB ahead, the three threads waited on each other
# and submit_job took 0.5-1 s longer on a loaded machine, though the unpacking had less left to
# do after the last byte.
PIECE_BYTES = 1024 * 1024
BODY_BUDGET = 8 * PIECE_BYTES
AHEAD_BYTES = 32 * PIECE_BYTES
# A body this small (a sweep cell's overlay: a few hundred bytes) is received whole on the event
# loop and unpacked in one go once it is whole and its hash checked, by the thread that accepts
# it: starting the threads that let a large package unpack while it arrives, and handing work
# between them, cost more than the whole unpacking (benchmarks/scale.py's server CPU per job).
SMALL_BODY_BYTES = 64 * 1024

Extract = Callable[[BinaryIO, Path], None]  # (the package's bytes, the new folder to make)


def extractor(job: dict, base: storage.BaseFiles | None) -> Extract:
    """What makes a job's files from its package (on `base`, its base package, if any): checked
    and unpacked in one read, nothing of a bad package reaches pkg/."""
    volume = job["volume_size_gb"] * 1024**3
    if base is None:
        return partial(storage.extract_package, job["entrypoint"], volume)
    return partial(storage.extract_overlay, base, job["entrypoint"], volume)


class BodyPump:
    """The pieces of a request's body handed from the event loop to one thread that takes them
    (hashes and stores them: `take`), without a thread hop per piece: offer() never blocks, and
    the loop waits (wait_for_room(), off the loop) only while BODY_BUDGET bytes are queued. The
    thread takes the queued pieces together, PIECE_BYTES or more at a time. finish() at the end
    of the body raises what `take` raised; close() always."""

    def __init__(self, take: Callable[[bytes], None]):
        self._take = take
        self._cond = threading.Condition()
        self._pieces: deque[bytes] = deque()
        self._queued = 0
        self._ended = False  # the whole body was offered
        self._stopped = False  # take failed, or close(): pieces are dropped from now on
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="body", daemon=True)
        self._thread.start()

    def offer(self, piece: bytes) -> bool:
        """Queue `piece`; whether there is room for more."""
        with self._cond:
            if self._stopped:
                return True  # dropped: finish() says why
            self._pieces.append(piece)
            self._queued += len(piece)
            if self._queued >= PIECE_BYTES:
                self._cond.notify_all()
            return self._queued < BODY_BUDGET

    def wait_for_room(self) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._queued < BODY_BUDGET or self._stopped)

    def finish(self) -> None:
        with self._cond:
            self._ended = True
            self._cond.notify_all()
        self._thread.join()
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._thread.join()

    def _run(self) -> None:
        while (pieces := self._next()) is not None:
            try:
                self._take(b"".join(pieces))
            except BaseException as e:
                with self._cond:
                    self._error, self._stopped = e, True
                    self._cond.notify_all()
                return

    def _next(self) -> list[bytes] | None:
        """The pieces queued, once there are PIECE_BYTES of them or the body ended; None when
        there is nothing more to take."""
        with self._cond:
            self._cond.wait_for(lambda: self._queued >= PIECE_BYTES or self._ended or self._stopped)
            if self._stopped or not self._pieces:
                return None
            pieces = list(self._pieces)
            self._pieces.clear()
            self._queued = 0
            self._cond.notify_all()  # room again for the loop
        return pieces


class _BodyCut(Exception):
    """The body ended before its last byte: the unpacking is dropped."""


class _Pipe(io.RawIOBase):
    """Bytes handed, in order, from the thread receiving a body to the one unpacking it: a
    file read front to back to the latter, of which the former is at most AHEAD_BYTES (and the
    piece being read) ahead. A piece put after the reader stopped is dropped."""

    def __init__(self) -> None:
        super().__init__()
        self._cond = threading.Condition()
        self._pieces: deque[bytes | None] = deque()
        self._queued = 0  # bytes in _pieces
        self._left = memoryview(b"")
        self._at_end = False
        self._reader_gone = False

    def put(self, piece: bytes | None) -> None:
        """Hand `piece` on; b"" is the end of the body, None a body cut short."""
        with self._cond:
            self._cond.wait_for(lambda: self._queued < AHEAD_BYTES or self._reader_gone)
            if self._reader_gone:
                return
            self._pieces.append(piece)
            self._queued += len(piece or b"")
            self._cond.notify_all()

    def stop_reading(self) -> None:
        with self._cond:
            self._reader_gone = True
            self._cond.notify_all()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        # So that the gzip reader above seeks forward, which it does by reading on (tarfile
        # skips a member's padding so); a seek back would reach seek() here and is refused.
        return True

    def readinto(self, buffer) -> int:
        if not self._left and not self._at_end:
            piece = self._next()
            if piece is None:
                raise _BodyCut
            self._at_end = not piece
            self._left = memoryview(piece)
        n = min(len(buffer), len(self._left))
        buffer[:n] = self._left[:n]
        self._left = self._left[n:]
        return n

    def _next(self) -> bytes | None:
        with self._cond:
            self._cond.wait_for(lambda: self._pieces)
            piece = self._pieces.popleft()
            self._queued -= len(piece or b"")
            self._cond.notify_all()  # room again for the receiver
        return piece


class PackageIngest:
    """One upload of a package, given piece by piece to write() (a BodyPump's sink): each
    piece is written to `part` and, once the body has passed SMALL_BODY_BYTES, unpacked as it
    arrives by `extract` in a thread into a temp folder beside `dest`; a smaller body is unpacked
    by finish(), from memory, by the same `extract`. finish() once the body is whole and
    accepted; close() always, after."""

    def __init__(self, part: Path, dest: Path, extract: Extract):
        self._part = part
        self._dest = dest
        self._tmp = storage.temp_beside(dest)
        self._extract = extract
        self._file = open(part, "wb", buffering=0)  # noqa: SIM115 (closed by finish or close)
        self._pipe = _Pipe()
        self._error: BaseException | None = None
        self._ended = False
        self._held: list[bytes] | None = []  # the body while small: None once it streams
        self._held_bytes = 0
        self._thread: threading.Thread | None = None

    def _stream(self) -> None:
        """Unpack from now on as the body arrives: the pieces held so far first."""
        held, self._held = self._held or [], None
        self._thread = threading.Thread(
            target=self._unpack,
            args=(self._extract,),
            name=f"ingest {self._dest.parent.name}",
            daemon=True,
        )
        self._thread.start()
        for piece in held:
            self._pipe.put(piece)

    def _unpack(self, extract: Extract) -> None:
        try:
            # A raw stream read as a file: tarfile and the gzip reader need only read().
            extract(self._pipe, self._tmp)  # type: ignore[arg-type]
        except _BodyCut:
            pass  # nothing to say: close() drops what was made
        except BaseException as e:  # said by finish(), once the body is whole
            self._error = e
        finally:
            self._pipe.stop_reading()  # the rest of the body is still stored and hashed

    def write(self, piece: bytes) -> None:
        """The next piece of the body (receive_body hands each one over and drops it)."""
        self._file.write(piece)
        if self._held is not None:
            self._held.append(piece)
            self._held_bytes += len(piece)
            if self._held_bytes > SMALL_BODY_BYTES:
                self._stream()
        else:
            self._pipe.put(piece)

    def finish(self, package: Path) -> None:
        """The body is whole and its hash the job's: store it as `package`, wait for its
        unpacking (or, for a small body, unpack it now) and raise what that raised
        (storage.PackageError, BaseGone, OSError), or rename its folder into place as `dest`,
        replacing what was there."""
        self._ended = True
        self._file.close()
        os.replace(self._part, package)
        if self._thread is None:  # small: whole in memory, never unpacked before now
            self._extract(io.BytesIO(b"".join(self._held or ())), self._tmp)
        else:
            self._pipe.put(b"")
            self._thread.join()
            if self._error is not None:
                raise self._error
        storage.replace_dir(self._tmp, self._dest)

    def close(self) -> None:
        """Stop the unpacking if the body ended short, and remove what was not renamed into
        place."""
        if self._thread is not None:
            if not self._ended:
                self._pipe.put(None)
            self._thread.join()
        self._file.close()
        self._part.unlink(missing_ok=True)
        storage.remove_temp(self._tmp)
