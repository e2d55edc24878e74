"""A job folder as a gzip-compressed tar: what is left out, what is added, and a hash of it all.

Three layers, so that a sweep of many jobs over one folder compresses that folder once:

    scan_folder(directory)            what would be packaged, and what was skipped and why
    build_package(directory, ...)     the folder compressed once, on disk: a `Package`
    package.with_files({...})         the same bytes plus a few small per-job files (params.json):
                                      a new `Package` that reuses the folder's compressed bytes
    package.overlay({...})            those per-job files alone, as a package of their own, for a
                                      server that holds the folder's package as a base package
                                      (docs/base-packages.md); package.sha256() names that base

How `with_files` stays cheap: a package is ONE gzip member whose deflate stream is cut in two.
The folder's part (`_Blob`, a file on disk) is the gzip header and the folder's tar entries,
compressed and ended with a sync flush but no final block and no trailer. A package's tail is a
fresh deflate stream (the per-job entries, then the tar's end-of-archive blocks) that ends with the
final block, then the gzip trailer: the CRC-32 continued from the folder's CRC (zlib.crc32 takes a
starting value) and the total length. Every gzip reader, streaming or not (`tar xzf`, Python's
tarfile in "r:gz" and "r|gz" modes), sees one ordinary member.

The folder's part is compressed pigz-style on every core: the tar stream is cut into chunks, each
deflated in a worker thread (ISA-L's deflate, from the isal package, or zlib where it is missing;
both release the GIL) with the previous chunk's last 32 KiB as its dictionary, each ending on a byte boundary (Z_SYNC_FLUSH); concatenated in order they are one valid
deflate stream. At most a few chunks are in flight, so memory stays flat whatever the folder's size.

Deflate is spent only where it pays: each chunk is looked at in segments of 64 KiB, and a sample
from each segment's middle is compressed; a segment whose sample shrinks by less than a tenth
(already-compressed data: npz, parquet, checkpoints, images, archives, random bytes) goes out as
stored deflate blocks (the bytes as they are, 64 KiB behind each 5-byte block header), the
others are deflated, a run of neighbouring segments at a time with the 32 KiB before
the run as dictionary. The content decides, never a file's name, and it decides the same way
every time: the same folder gives the same bytes, on one core or many. Stored blocks are part
of every deflate stream; each reader inflates them at the speed of a copy.

A package can be read while it is being written (start_package): the folder's part grows on disk
and a reader follows it, so an upload starts with the first compressed chunk (Client.submit_job,
where the server takes uploads of unknown length) instead of after the last.

What is never packaged: `.git`, `.kaio` (kaio apply's state), virtual environments (any folder holding `pyvenv.cfg` or
`conda-meta/`, and folders named like one), `__pycache__`, `.env` and `.env.*` files (secrets), and
what the folder's top-level `.kaioignore` lists, in gitignore syntax (negation included; as in git,
a file inside an ignored folder cannot be re-included). A `.kaioignore` cannot bring back what is
never packaged. Symbolic links are never followed: a link to something inside the folder is packaged
as a link (with a relative target); a link pointing outside the folder, or to nothing, is skipped
with a warning, and so are sockets, pipes and devices.

The package's requirements.txt is the user's, with the platform's automatic dependencies
(catalog.AUTOMATIC_REQUIREMENTS) appended when the user does not already name them: a version the
user pinned stays as it is, and the user's file on disk is never modified.

The content hash is sha256 over the sorted (path, kind, executable bit, sha256 of the bytes) of
every file and link in the package, merged requirements and injected files included; directories,
modification times and owners do not count, so the same code gives the same hash on any machine.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import stat
import struct
import tarfile
import tempfile
import threading
import time
import warnings
import weakref
import zlib
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal, Protocol

import pathspec
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from kaio_spec import catalog
from kaio_spec.validation import FieldError

try:
    from isal import isal_zlib
except ImportError:  # no wheel for this platform: zlib does the same, slower
    isal_zlib = None  # type: ignore[assignment]

# The gzip trailer's CRC-32, of every byte of the tar stream: ISA-L's is ~5x zlib's speed.
_crc32 = isal_zlib.crc32 if isal_zlib is not None else zlib.crc32

IGNORE_FILE = ".kaioignore"
REQUIREMENTS_FILE = "requirements.txt"

# Folders that hold a virtual environment by name alone; any folder with pyvenv.cfg or conda-meta/
# is one too, whatever its name.
VENV_DIR_NAMES = frozenset({".venv", "venv", ".virtualenv", ".tox", ".nox", ".conda"})
# .kaio: kaio apply's own state beside a manifest (executor/state.py); packaging it would change the folder's
# content hash, hence every job_name, on each run.
NEVER_DIR_NAMES = frozenset({".git", "__pycache__", ".kaio", *VENV_DIR_NAMES})

# The comment line above the automatic dependencies in the package's requirements.txt.
AUTOMATIC_MARKER = "# added by kaio: the platform's automatic dependencies"

# ISA-L's default level: as fast as its level 1 (3x zlib's level 1), text ~5% smaller than gzip -1
# makes it, and quicker than either for zlib to inflate (the server's ingest). Measured by
# benchmarks/packaging.py. Without isal, zlib's level 2.
DEFAULT_COMPRESSLEVEL = 2
CHUNK_SIZE = 1 << 20  # bytes of tar stream per compression task
_WINDOW = 32 * 1024  # deflate's window: the dictionary handed from one chunk to the next
# Where deflate pays: each SEGMENT of a chunk is judged by compressing SAMPLE bytes from its middle
# (about 3% of the bytes; zlib level 1 on incompressible data is its slowest case, ~50 MB/s).
_SEGMENT = 64 * 1024
_SAMPLE = 2 * 1024
_PAYS_BELOW = 0.9  # deflate a segment whose sample compresses to less than 90% of its size
_MAX_STORED = 0xFFFF  # bytes in one stored deflate block
_BLOCK = tarfile.BLOCKSIZE  # 512
_END_OF_ARCHIVE = b"\0" * (2 * _BLOCK)
_READ_SIZE = 1 << 20

Kind = Literal["file", "dir", "symlink"]


# ---- what is packaged -------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One thing that goes into the package, before it is read."""

    path: str  # relative, with forward slashes
    kind: Kind
    source: Path | None = None  # a file on disk ...
    data: bytes | None = None  # ... or bytes made here (merged requirements, injected files)
    executable: bool = False
    link_target: str | None = None
    mtime: int = 0


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


@dataclass(frozen=True)
class FolderScan:
    root: Path
    entries: tuple[Entry, ...]  # in tar order (sorted by path)
    skipped: tuple[Skipped, ...]


@dataclass(frozen=True)
class PackagedFile:
    """One file or link as packaged: what the content hash is made of."""

    path: str
    kind: Kind
    size: int
    executable: bool
    digest: str  # sha256 of the bytes (of the target, for a link)


def _is_venv(path: Path) -> bool:
    return (path / "pyvenv.cfg").is_file() or (path / "conda-meta").is_dir()


def _never_packaged(name: str, path: Path, is_dir: bool) -> str | None:
    """Why this is never packaged, or None."""
    if is_dir:
        if name in NEVER_DIR_NAMES:
            return f"{name}/ is never packaged"
        if _is_venv(path):
            return "a virtual environment is never packaged"
        return None
    if name == ".git":  # a worktree's or submodule's pointer file
        return ".git is never packaged"
    if name == ".env" or name.startswith(".env."):
        return ".env files hold secrets and are never packaged; pass variables with env="
    return None


def _load_ignore(root: Path) -> pathspec.GitIgnoreSpec | None:
    path = root / IGNORE_FILE
    if not path.is_file():
        return None
    return pathspec.GitIgnoreSpec.from_lines(path.read_text(encoding="utf-8").splitlines())


def scan_folder(directory: str | os.PathLike, exclude: Iterable[str] = ()) -> FolderScan:
    """What `build_package` would package from `directory`, in order, and what it skips (links
    out of the folder, special files). Ignored paths are left out silently, and so are the
    `exclude`d ones: relative paths (forward slashes) of files or folders, such as the folders a
    manifest downloads its outputs to when they lie inside the job's folder."""
    excluded = {e.strip("/") for e in exclude if e.strip("/")}
    root = Path(directory)
    if not root.exists():
        raise FileNotFoundError(f"directory {str(directory)!r} does not exist")
    if not root.is_dir():
        raise FileNotFoundError(f"directory {str(directory)!r} is not a directory")
    real_root = Path(os.path.realpath(root))
    spec = _load_ignore(root)
    entries: list[Entry] = []
    skipped: list[Skipped] = []

    def walk(folder: Path, rel: str) -> None:
        with os.scandir(folder) as it:
            children = sorted(it, key=lambda e: e.name)
        for child in children:
            child_rel = f"{rel}{child.name}"
            path = Path(child.path)
            st = child.stat(follow_symlinks=False)
            is_dir = stat.S_ISDIR(st.st_mode)
            if _never_packaged(child.name, path, is_dir) or child_rel in excluded:
                continue
            if spec is not None and spec.match_file(child_rel + "/" if is_dir else child_rel):
                continue
            mtime = int(st.st_mtime)
            if is_dir:
                entries.append(Entry(child_rel, "dir", mtime=mtime))
                walk(path, child_rel + "/")
            elif stat.S_ISREG(st.st_mode):
                executable = bool(st.st_mode & stat.S_IXUSR)
                entries.append(
                    Entry(child_rel, "file", source=path, executable=executable, mtime=mtime)
                )
            elif stat.S_ISLNK(st.st_mode):
                target = _link_inside(real_root, rel, path)
                if target is None:
                    skipped.append(Skipped(child_rel, _link_problem(path)))
                else:
                    entries.append(Entry(child_rel, "symlink", link_target=target, mtime=mtime))
            else:
                skipped.append(Skipped(child_rel, "not a regular file, folder or link"))

    walk(root, "")
    return FolderScan(root, tuple(entries), tuple(skipped))


def _link_inside(real_root: Path, rel_parent: str, link: Path) -> str | None:
    """The link's target relative to the link's folder, if it resolves to an existing path inside
    the package's folder; else None. Only folders inside the root are walked (links are never
    followed), so the link's real folder is real_root/rel_parent."""
    resolved = Path(os.path.realpath(link))
    if not resolved.exists():
        return None
    try:
        resolved.relative_to(real_root)
    except ValueError:
        return None
    if resolved == real_root:
        return None  # a link to the folder itself would loop when followed
    return Path(os.path.relpath(resolved, real_root / rel_parent)).as_posix()


def _link_problem(link: Path) -> str:
    target = os.readlink(link)
    if not os.path.exists(link):
        return f"link to {target!r}, which does not exist: skipped"
    return f"link to {target!r}, outside the folder: skipped (links are never followed out)"


# ---- requirements ------------------------------------------------------------------------------


def _requirement_name(line: str) -> str | None:
    """The canonical project name a requirements.txt line asks for, or None for options, includes,
    comments and blanks."""
    line = line.split(" #", 1)[0].strip()
    if not line or line.startswith("#"):
        return None
    if "#egg=" in line:  # git+https://...#egg=name
        return canonicalize_name(line.split("#egg=", 1)[1].split("&", 1)[0])
    if line.startswith("-"):
        return None
    # Per-line options (--hash=..., --config-settings) follow the requirement.
    line = line.split(" --", 1)[0].split(" -", 1)[0].strip()
    try:
        return canonicalize_name(Requirement(line).name)
    except InvalidRequirement:
        return None


def _logical_lines(text: str) -> Iterator[str]:
    """requirements.txt lines with backslash continuations joined."""
    pending = ""
    for raw in text.splitlines():
        if raw.endswith("\\"):
            pending += raw[:-1] + " "
            continue
        yield pending + raw
        pending = ""
    if pending:
        yield pending


def _included_file(line: str) -> str | None:
    parts = line.split(" #", 1)[0].split(None, 1)
    if len(parts) == 2 and parts[0] in ("-r", "--requirement"):
        return parts[1].strip()
    if parts and parts[0].startswith("--requirement="):
        return parts[0].split("=", 1)[1]
    return None


def requirement_names(text: str, base: Path | None = None, _seen: set | None = None) -> set[str]:
    """Canonical names a requirements file asks for, following `-r other.txt` inside `base`."""
    names: set[str] = set()
    seen = _seen if _seen is not None else set()
    for line in _logical_lines(text):
        included = _included_file(line.strip())
        if included and base is not None:
            path = (base / included).resolve()
            if path not in seen and path.is_file():
                seen.add(path)
                names |= requirement_names(path.read_text(encoding="utf-8"), path.parent, seen)
            continue
        name = _requirement_name(line)
        if name:
            names.add(name)
    return names


def merge_requirements(
    user_text: str | None,
    automatic: Iterable[str] = catalog.AUTOMATIC_REQUIREMENTS,
    base: Path | None = None,
) -> str:
    """The package's requirements.txt: the user's text unchanged, then each automatic dependency
    the user does not already ask for (by canonical name, so a pin like `psutil==5.9.8` or a
    spelling like `gputil` wins). In hash-checking mode (any `--hash`), pip would refuse an
    unhashed addition, so nothing is added and a warning says so."""
    text = user_text or ""
    if "--hash" in text or "--require-hashes" in text:
        warnings.warn(
            "requirements.txt uses --hash, so kaio cannot add its automatic dependencies "
            f"({', '.join(automatic)}); add them, hashed, yourself if your job needs them",
            UserWarning,
            stacklevel=3,
        )
        return text
    present = requirement_names(text, base)
    missing = [dep for dep in automatic if canonicalize_name(dep) not in present]
    if not missing:
        return text
    if text and not text.endswith("\n"):
        text += "\n"
    return text + AUTOMATIC_MARKER + "\n" + "".join(f"{dep}\n" for dep in missing)


# ---- parallel gzip ------------------------------------------------------------------------------


def _gzip_header() -> bytes:
    # magic, deflate, no flags, mtime 0 (reproducible), no extra flags, OS unknown
    return b"\x1f\x8b\x08\x00" + b"\0\0\0\0" + b"\x00\xff"


def _deflater(level: int):
    """The library that deflates at `level`: ISA-L's for levels 1 to 3 (each about
    three times as fast as zlib's level 1, and text a little smaller), zlib's otherwise or
    where isal is not installed. Each writes the same bytes for the same input every time."""
    return isal_zlib if isal_zlib is not None and 1 <= level <= 3 else zlib


def _deflate(chunk: bytes | memoryview, level: int, zdict: bytes, final: bool) -> bytes:
    lib = _deflater(level)
    if zdict:
        c = lib.compressobj(level, lib.DEFLATED, -zlib.MAX_WBITS, zdict=zdict)
    else:
        c = lib.compressobj(level, lib.DEFLATED, -zlib.MAX_WBITS)
    return c.compress(chunk) + c.flush(lib.Z_FINISH if final else lib.Z_SYNC_FLUSH)


def _stored(data: memoryview) -> Iterator[bytes | memoryview]:
    """`data` as stored deflate blocks (RFC 1951, 3.2.4): each a byte 0 (not final, type 00,
    padded to the byte; the stream is on a byte boundary before each, as every chunk and stored
    block ends on one), LEN and its complement NLEN, then up to 65535 bytes as they are. Written
    here rather than by zlib at level 0, whose blocks shrink to fit its output buffer."""
    for start in range(0, len(data), _MAX_STORED):
        block = data[start : start + _MAX_STORED]
        yield struct.pack("<BHH", 0, len(block), len(block) ^ 0xFFFF)
        yield block


def _deflate_pays(segment: memoryview) -> bool:
    """Whether deflating `segment` would shrink it worth the time: its middle sample, compressed
    at level 1 without history, must shrink below _PAYS_BELOW of its size."""
    start = max(0, (len(segment) - _SAMPLE) // 2)
    sample = segment[start : start + _SAMPLE]
    return len(_deflater(1).compress(sample, 1, -zlib.MAX_WBITS)) < len(sample) * _PAYS_BELOW


def _runs(chunk: memoryview) -> list[tuple[int, int, bool]]:
    """The chunk as runs of neighbouring segments: (start, end, deflate pays)."""
    runs: list[tuple[int, int, bool]] = []
    for start in range(0, len(chunk), _SEGMENT):
        end = min(start + _SEGMENT, len(chunk))
        pays = _deflate_pays(chunk[start:end])
        if runs and runs[-1][2] == pays:
            runs[-1] = (runs[-1][0], end, pays)
        else:
            runs.append((start, end, pays))
    return runs


def _compress_chunk(chunk: bytes, level: int, zdict: bytes) -> list[bytes | memoryview]:
    """One chunk of the tar stream as deflate blocks ending on a byte boundary, not final:
    deflated where deflate pays, stored where it does not. In pieces, to be written in order
    (a stored block's bytes are the chunk's own, not a copy)."""
    if level == 0:
        return list(_stored(memoryview(chunk)))
    view = memoryview(chunk)
    out: list[bytes | memoryview] = []
    for start, end, pays in _runs(view):
        if not pays:
            out.extend(_stored(view[start:end]))
            continue
        # The 32 KiB before the run, which may reach back into the previous chunk.
        before = bytes(view[max(0, start - _WINDOW) : start])
        if len(before) < _WINDOW:
            before = (zdict + before)[-_WINDOW:]
        out.append(_deflate(view[start:end], level, before, False))
    return out


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class _Sink(Protocol):
    """Where a deflate stream goes: a file, or a build's _Published file."""

    def write(self, data: bytes | memoryview, /) -> object: ...


class _ParallelDeflater:
    """Writes a deflate stream to `out`, compressing CHUNK_SIZE pieces on a thread pool, in order.
    Keeps the running CRC-32 and length of what was written, for the gzip trailer."""

    def __init__(
        self,
        out: _Sink,
        level: int,
        workers: int,
        chunk_size: int = CHUNK_SIZE,
    ):
        self._out = out
        self._level = level
        self._chunk = chunk_size
        self._pool = ThreadPoolExecutor(workers, "kaio-gzip") if workers > 1 else None
        self._max_pending = max(2, 2 * workers)
        self._pending: deque[Future] = deque()
        # What was written and not yet cut into chunks: the callers' own (immutable) bytes,
        # held rather than copied, and joined once into a chunk (each copy of the stream costs).
        self._held: deque[bytes | memoryview] = deque()
        self._held_bytes = 0
        self._zdict = b""
        self.crc = 0
        self.length = 0

    def write(self, data: bytes) -> None:
        self._held.append(data)
        self._held_bytes += len(data)
        while self._held_bytes >= self._chunk:
            self._submit(self._take(self._chunk))

    def _take(self, n: int) -> bytes:
        """The first `n` bytes held, as one bytes object."""
        pieces = []
        while n:
            piece = self._held.popleft()
            if len(piece) > n:
                rest = memoryview(piece)
                piece, rest = rest[:n], rest[n:]
                self._held.appendleft(rest)
            pieces.append(piece)
            n -= len(piece)
            self._held_bytes -= len(piece)
        return b"".join(pieces)

    def _submit(self, chunk: bytes) -> None:
        self.crc = _crc32(chunk, self.crc)
        self.length += len(chunk)
        zdict, self._zdict = self._zdict, chunk[-_WINDOW:]
        args = (chunk, self._level, zdict)
        if self._pool is None:
            self._emit(_compress_chunk(*args))
            return
        self._pending.append(self._pool.submit(_compress_chunk, *args))
        while len(self._pending) > self._max_pending:
            self._emit(self._pending.popleft().result())

    def _emit(self, pieces: list[bytes | memoryview]) -> None:
        for piece in pieces:
            self._out.write(piece)

    def close(self) -> None:
        """Compress what is buffered, without ending the stream (no final block)."""
        try:
            if self._held_bytes:
                self._submit(self._take(self._held_bytes))
            while self._pending:
                self._emit(self._pending.popleft().result())
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)


# ---- tar ---------------------------------------------------------------------------------------


def _tar_header(entry: Entry, size: int) -> bytes:
    info = tarfile.TarInfo(entry.path)
    info.mtime = entry.mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if entry.kind == "dir":
        info.type, info.mode, info.size = tarfile.DIRTYPE, 0o755, 0
    elif entry.kind == "symlink":
        info.type, info.mode, info.size = tarfile.SYMTYPE, 0o777, 0
        info.linkname = entry.link_target or ""
    else:
        info.type, info.size = tarfile.REGTYPE, size
        info.mode = 0o755 if entry.executable else 0o644
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _padding(size: int) -> bytes:
    return b"\0" * (-size % _BLOCK)


def _write_entry(entry: Entry, out) -> PackagedFile | None:
    """Writes one entry's tar header and bytes to `out`; the file as hashed, or None for a dir."""
    if entry.kind == "dir":
        out.write(_tar_header(entry, 0))
        return None
    if entry.kind == "symlink":
        out.write(_tar_header(entry, 0))
        digest = hashlib.sha256((entry.link_target or "").encode()).hexdigest()
        return PackagedFile(entry.path, "symlink", 0, False, digest)
    if entry.data is not None:
        out.write(_tar_header(entry, len(entry.data)))
        out.write(entry.data)
        out.write(_padding(len(entry.data)))
        digest = hashlib.sha256(entry.data).hexdigest()
        return PackagedFile(entry.path, "file", len(entry.data), entry.executable, digest)
    assert entry.source is not None
    with open(entry.source, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        out.write(_tar_header(entry, size))
        h = hashlib.sha256()
        left = size
        while left:
            data = f.read(min(left, _READ_SIZE))
            if not data:
                raise RuntimeError(
                    f"{entry.path} shrank while it was being packaged; package it again once "
                    "nothing is writing to it"
                )
            h.update(data)
            out.write(data)
            left -= len(data)
    out.write(_padding(size))
    return PackagedFile(entry.path, "file", size, entry.executable, h.hexdigest())


def content_hash(files: Iterable[PackagedFile]) -> str:
    """sha256 over the sorted (path, kind, executable bit, digest) of every file and link."""
    h = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.path):
        h.update(
            b"\0".join(
                [
                    f.path.encode("utf-8", "surrogateescape"),
                    f.kind.encode(),
                    b"x" if f.executable else b"-",
                    f.digest.encode(),
                ]
            )
            + b"\n"
        )
    return h.hexdigest()


# ---- the package --------------------------------------------------------------------------------


class _Blob:
    """The folder's compressed part on disk; deleted by close() or when no package uses it."""

    def __init__(
        self,
        path: Path | None,
        size: int,
        crc: int,
        length: int,
        level: int,
        data: bytes | None = None,
    ):
        self.path = path  # None when the part is small enough to live in memory: `data`
        self.data = data
        self.size = size  # compressed bytes
        self.crc = crc  # CRC-32 of the uncompressed tar bytes so far
        self.length = length  # uncompressed tar bytes so far
        self.level = level
        self._finalizer = weakref.finalize(self, _unlink, str(path)) if path else None

    @classmethod
    def empty(cls, level: int) -> _Blob:
        """A gzip header and nothing else: the start of a package of per-job files alone."""
        head = _gzip_header()
        return cls(None, len(head), 0, 0, level, data=head)

    def open(self) -> io.BufferedIOBase:
        return io.BytesIO(self.data or b"") if self.path is None else open(self.path, "rb")

    def close(self) -> None:
        if self._finalizer is not None:
            self._finalizer()


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _tail(entries: Iterable[Entry], blob: _Blob) -> tuple[bytes, list[PackagedFile]]:
    """The package's end: the given entries, the end-of-archive blocks, the final deflate block
    and the gzip trailer continuing the blob's CRC and length."""
    raw = io.BytesIO()
    files = [f for e in entries if (f := _write_entry(e, raw)) is not None]
    raw.write(_END_OF_ARCHIVE)
    data = raw.getvalue()
    crc = zlib.crc32(data, blob.crc)
    length = (blob.length + len(data)) & 0xFFFFFFFF
    tail = _deflate(data, blob.level, b"", True) + struct.pack("<II", crc, length)
    return tail, files


@dataclass(eq=False)
class Package:
    """A job's package: a gzip-compressed tar made of the folder's part on disk and a small tail.

    `size` is the package's size in bytes, `content_hash` the hash of what it holds, `files` what
    it holds (files and links), `skipped` what the folder had that was left out with a warning.
    Read it with `open()` (a seekable stream of `size` bytes) or `save(path)`. The folder package
    (from build_package) owns the file on disk: `close()` it, or use it in a `with`, when done;
    packages made from it by `with_files` read that same file.
    """

    directory: Path
    entrypoint: str | None
    files: tuple[PackagedFile, ...]
    content_hash: str
    skipped: tuple[Skipped, ...]
    _blob: _Blob = field(repr=False)
    _tail: bytes = field(repr=False)
    _owner: bool = field(default=True, repr=False)
    _sha256: str | None = field(default=None, repr=False)

    @property
    def size(self) -> int:
        return self._blob.size + len(self._tail)

    @property
    def path(self) -> Path | None:
        """The file holding the folder's compressed part (not the whole package: see save());
        None for a package of in-memory files alone (overlay())."""
        return self._blob.path

    def sha256(self) -> str:
        """SHA-256 of the package's bytes: what the server knows a base package by
        (docs/base-packages.md). Read once, then remembered."""
        if self._sha256 is None:
            digest = hashlib.sha256()
            with self.open() as src:
                while data := src.read(_READ_SIZE):
                    digest.update(data)
            self._sha256 = digest.hexdigest()
        return self._sha256

    def paths(self) -> list[str]:
        return [f.path for f in self.files]

    def open(self) -> PackageReader:
        return PackageReader(self._blob, self._tail)

    def save(self, path: str | os.PathLike) -> Path:
        """Writes the whole package (a .tar.gz any tool can read) to `path`."""
        with self.open() as src, open(path, "wb") as dst:
            while data := src.read(_READ_SIZE):
                dst.write(data)
        return Path(path)

    def with_files(
        self, files: Mapping[str, bytes | str], executable: Iterable[str] = ()
    ) -> Package:
        """This package plus small files given in memory (e.g. {"params.json": "..."}), without
        compressing the folder again. A given path that the folder also has replaces the folder's
        file (the later tar member wins when unpacked, in tar and in Python's tarfile alike)."""
        extra = self._extra(files, executable)
        tail, added = _tail(extra, self._blob)
        by_path = {f.path: f for f in self.files}
        for f in added:
            by_path[f.path] = f
        merged = tuple(sorted(by_path.values(), key=lambda f: f.path))
        return Package(
            self.directory,
            self.entrypoint,
            merged,
            content_hash(merged),
            self.skipped,
            self._blob,
            tail,
            _owner=False,
        )

    def overlay(self, files: Mapping[str, bytes | str], executable: Iterable[str] = ()) -> Package:
        """The files that with_files(files) would add, as a package of their own: what is
        uploaded for a job whose server already holds this package as its base package
        (docs/base-packages.md). Checked as with_files checks them; held in memory."""
        blob = _Blob.empty(self._blob.level)
        tail, added = _tail(self._extra(files, executable), blob)
        return Package(self.directory, None, tuple(added), content_hash(added), (), blob, tail)

    def _extra(self, files: Mapping[str, bytes | str], executable: Iterable[str]) -> list[Entry]:
        """The entries of files given in memory, refused where they clash with the package."""
        extra = _extra_entries(files, set(executable))
        by_path = {f.path: f for f in self.files}
        dirs = self._dirs()
        for e in extra:
            if e.kind != "dir" and e.path in dirs:
                raise ValueError(f"{e.path}: the package already has a folder of that name")
            for parent in _parents(e.path):
                if by_path.get(parent):
                    raise ValueError(f"{e.path}: {parent} is a file in the package, not a folder")
        return extra

    def _dirs(self) -> set[str]:
        dirs: set[str] = set()
        for f in self.files:
            dirs.update(_parents(f.path))
        return dirs

    def close(self) -> None:
        """Deletes the folder's compressed part, if this package made it."""
        if self._owner:
            self._blob.close()

    def __enter__(self) -> Package:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _parents(path: str) -> list[str]:
    parts = path.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def check_package_path(path: str) -> str:
    """A path for a file put into a package: relative, forward slashes, no `..`."""
    bad = (
        not isinstance(path, str)
        or not path
        or "\0" in path
        or "\\" in path
        or path.startswith("/")
        or any(part in ("", ".", "..") for part in path.split("/"))
    )
    if bad:
        raise ValueError(
            f"{path!r}: a packaged file's path must be relative, with '/' between folders and no "
            "'.', '..' or empty parts"
        )
    return path


def _extra_entries(files: Mapping[str, bytes | str], executable: set[str]) -> list[Entry]:
    now = int(time.time())
    entries = []
    for path in sorted(files):
        check_package_path(path)
        data = files[path]
        if isinstance(data, str):
            data = data.encode("utf-8")
        if not isinstance(data, bytes | bytearray):
            raise TypeError(f"{path}: content must be bytes or str, got {type(data).__name__}")
        entries.append(
            Entry(path, "file", data=bytes(data), executable=path in executable, mtime=now)
        )
    # Folders the extra files need, so that an unpacker creates them with sane modes.
    dirs = sorted({d for e in entries for d in _parents(e.path)})
    return [Entry(d, "dir", mtime=now) for d in dirs] + entries


class PackageReader(io.RawIOBase):
    """The package's bytes as a seekable stream: the blob on disk, then the tail. It has a length,
    so an HTTP client sends Content-Length (a presigned PUT refuses chunked bodies), and it can be
    rewound to send again."""

    def __init__(self, blob: _Blob, tail: bytes):
        super().__init__()
        self._blob_size = blob.size
        self._file = blob.open()  # closed by close()
        self._tail = tail
        self._pos = 0

    def __len__(self) -> int:
        return self._blob_size + len(self._tail)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self)}[whence]
        self._pos = max(0, min(base + offset, len(self)))
        return self._pos

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        if self._pos < self._blob_size:
            self._file.seek(self._pos)
            n = self._file.readinto(view[: self._blob_size - self._pos])
        else:
            start = self._pos - self._blob_size
            piece = self._tail[start : start + len(view)]
            n = len(piece)
            view[:n] = piece
        self._pos += n
        return n

    def close(self) -> None:
        if not self.closed:
            self._file.close()
        super().close()


def build_package(
    directory: str | os.PathLike = ".",
    entrypoint: str | None = None,
    *,
    automatic_requirements: Iterable[str] = catalog.AUTOMATIC_REQUIREMENTS,
    compresslevel: int = DEFAULT_COMPRESSLEVEL,
    workers: int | None = None,
    tmp_dir: str | os.PathLike | None = None,
    exclude: Iterable[str] = (),
) -> Package:
    """Packages `directory` once (see the module's docstring for what is left out and added).

    Raises FileNotFoundError if the directory does not exist, and FieldError (a ValueError) if
    `entrypoint` is given but is not a file the package holds at its top (e.g. .kaioignore lists
    it). Skipped links and special files are listed in `skipped`, each with a warning.
    """
    scan, entries = _prepare(directory, entrypoint, automatic_requirements, exclude)
    compression = _Compression(compresslevel, workers or default_workers())
    return _build(Path(directory), entrypoint, scan, entries, compression, _blob_file(tmp_dir))


def start_package(
    directory: str | os.PathLike = ".",
    entrypoint: str | None = None,
    *,
    automatic_requirements: Iterable[str] = catalog.AUTOMATIC_REQUIREMENTS,
    compresslevel: int = DEFAULT_COMPRESSLEVEL,
    workers: int | None = None,
    tmp_dir: str | os.PathLike | None = None,
    exclude: Iterable[str] = (),
) -> PackageBuild:
    """build_package, compressing in a background thread: the bytes can be read (and uploaded)
    as they are made, with `open()`; `result()` waits for the Package. The folder is scanned and
    checked here, so build_package's errors for a bad directory or entrypoint are raised here,
    before anything is compressed."""
    scan, entries = _prepare(directory, entrypoint, automatic_requirements, exclude)
    compression = _Compression(compresslevel, workers or default_workers())
    return PackageBuild(Path(directory), entrypoint, scan, entries, compression, tmp_dir)


def _prepare(
    directory: str | os.PathLike,
    entrypoint: str | None,
    automatic_requirements: Iterable[str],
    exclude: Iterable[str],
) -> tuple[FolderScan, list[Entry]]:
    """The folder scanned (a warning for each skipped path) and checked; the entries to pack."""
    scan = scan_folder(directory, exclude)
    for s in scan.skipped:
        warnings.warn(f"{s.path}: {s.reason}", UserWarning, stacklevel=3)
    entries = _with_merged_requirements(scan, automatic_requirements)
    if entrypoint is not None:
        _check_entrypoint_packaged(entrypoint, entries, scan.root)
    return scan, entries


@dataclass(frozen=True)
class _Compression:
    level: int
    workers: int


def _build(
    directory: Path,
    entrypoint: str | None,
    scan: FolderScan,
    entries: list[Entry],
    compression: _Compression,
    blob_file: tuple[int, str],
    growth: _Growth | None = None,
) -> Package:
    blob, files = _write_blob(entries, compression, blob_file, growth)
    try:
        tail, _ = _tail([], blob)
    except BaseException:
        blob.close()
        raise
    return Package(
        directory, entrypoint, tuple(files), content_hash(files), scan.skipped, blob, tail
    )


def folder_content_hash(
    directory: str | os.PathLike = ".",
    entrypoint: str | None = None,
    *,
    automatic_requirements: Iterable[str] = catalog.AUTOMATIC_REQUIREMENTS,
    exclude: Iterable[str] = (),
) -> str:
    """The `content_hash` that `build_package(directory, entrypoint, exclude=...)` would report,
    computed by reading and hashing the files only: nothing is compressed or written. The planner
    uses it for job identities. Raises what build_package raises for a missing directory or
    entrypoint."""
    scan = scan_folder(directory, exclude)
    entries = _with_merged_requirements(scan, automatic_requirements)
    if entrypoint is not None:
        _check_entrypoint_packaged(entrypoint, entries, scan.root)
    sink = _NullSink()
    return content_hash(f for e in entries if (f := _write_entry(e, sink)) is not None)


def folder_files(
    directory: str | os.PathLike = ".",
    *,
    automatic_requirements: Iterable[str] = catalog.AUTOMATIC_REQUIREMENTS,
    exclude: Iterable[str] = (),
) -> list[PackagedFile]:
    """The files and links `build_package(directory, exclude=...)` would hold, with their
    digests (what its content hash is made of), read and hashed only; for saying which files
    changed between two versions of a folder (executor/explain.py)."""
    scan = scan_folder(directory, exclude)
    entries = _with_merged_requirements(scan, automatic_requirements)
    sink = _NullSink()
    return [f for e in entries if (f := _write_entry(e, sink)) is not None]


class _NullSink:
    """Where folder_content_hash "writes" the tar stream: _write_entry hashes as it goes."""

    def write(self, data: bytes | memoryview) -> None:
        pass


def _with_merged_requirements(scan: FolderScan, automatic: Iterable[str]) -> list[Entry]:
    entries = list(scan.entries)
    index = next((i for i, e in enumerate(entries) if e.path == REQUIREMENTS_FILE), None)
    user = entries[index] if index is not None else None
    if user is not None and user.kind != "file":
        return entries  # a link or folder named requirements.txt: leave it as it is
    user_text = user.source.read_text(encoding="utf-8") if user and user.source else None
    merged = merge_requirements(user_text, tuple(automatic), scan.root)
    if user is not None and merged == user_text:
        return entries
    entry = Entry(
        REQUIREMENTS_FILE,
        "file",
        data=merged.encode("utf-8"),
        executable=user.executable if user else False,
        # Not the clock: the same folder must give the same bytes (and a test compares them).
        mtime=user.mtime if user else max((e.mtime for e in entries), default=0),
    )
    if index is not None:
        entries[index] = entry
    else:
        entries.append(entry)
        entries.sort(key=lambda e: e.path)
    return entries


def _check_entrypoint_packaged(entrypoint: str, entries: list[Entry], root: Path) -> None:
    kinds = {e.path: e for e in entries}
    entry = kinds.get(entrypoint)
    if entry is not None and (
        entry.kind == "file" or (entry.kind == "symlink" and (root / entrypoint).is_file())
    ):
        return
    if (root / entrypoint).is_file():
        raise FieldError(
            "entrypoint",
            f"{entrypoint!r} is left out of the package ({IGNORE_FILE} or the rules for what is "
            "never packaged); the job could not start without it",
        )
    raise FileNotFoundError(
        f"entrypoint {entrypoint!r} not found in {str(root)!r}: it must be a file at the top of "
        "the directory"
    )


def _blob_file(tmp_dir) -> tuple[int, str]:
    return tempfile.mkstemp(prefix="kaio-package-", suffix=".tar.gz.part", dir=tmp_dir)


def _write_blob(
    entries: list[Entry],
    compression: _Compression,
    blob_file: tuple[int, str],
    growth: _Growth | None = None,
) -> tuple[_Blob, list[PackagedFile]]:
    """The folder's part written to `blob_file` (from _blob_file; deleted here on failure), each
    compressed piece told to `growth` once it is in the file, for readers that follow it."""
    fd, name = blob_file
    level = compression.level
    try:
        with os.fdopen(fd, "wb") as raw:
            out = raw if growth is None else _Published(raw, growth)
            out.write(_gzip_header())
            deflater = _ParallelDeflater(out, level, compression.workers)
            try:
                files = [f for e in entries if (f := _write_entry(e, deflater)) is not None]
            finally:
                deflater.close()
            size = raw.tell()
    except BaseException:
        _unlink(name)
        raise
    return _Blob(Path(name), size, deflater.crc, deflater.length, level), files


# ---- a package read as it is made ---------------------------------------------------------------


class PackagingCancelled(Exception):
    """A PackageBuild was closed before it finished."""


class PackagingFailed(RuntimeError):
    """What a reader of a PackageBuild raises when the build failed (PackageBuild.result() raises
    the build's own error). Not an OSError: an HTTP client must not take it for a network fault."""


class _Growth:
    """How much of the folder's part is in its file, told by the builder to readers that follow
    it; then, once it is done, the package's tail or the build's error."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.written = 0
        self.tail: bytes | None = None  # set when the build finished
        self.error: BaseException | None = None
        self.cancelled = False

    def advance(self, n: int) -> None:
        with self._cond:
            if self.cancelled:
                raise PackagingCancelled("the package's build was cancelled")
            self.written += n
            self._cond.notify_all()

    def finish(self, tail: bytes | None, error: BaseException | None = None) -> None:
        with self._cond:
            self.tail, self.error = tail, error
            self._cond.notify_all()

    def cancel(self) -> None:
        with self._cond:
            self.cancelled = True

    def wait_past(self, pos: int) -> tuple[int, bytes | None]:
        """Blocks until more than `pos` bytes are written or the build is done: (bytes written,
        the tail once done). Raises PackagingFailed when the build failed."""
        with self._cond:
            self._cond.wait_for(
                lambda: self.written > pos or self.tail is not None or self.error is not None
            )
            if self.error is not None:
                raise PackagingFailed(f"packaging failed: {self.error}") from self.error
            return self.written, self.tail


class _Published:
    """The blob's file for a build that is read as it grows: each write is flushed, then told."""

    def __init__(self, raw: BinaryIO, growth: _Growth):
        self._raw = raw
        self._growth = growth

    def write(self, data: bytes | memoryview) -> None:
        self._raw.write(data)
        self._raw.flush()
        self._growth.advance(len(data))


class PackageBuild:
    """A package being built in a background thread (start_package). `open()` reads its bytes as
    they are made, from the first, as often as needed (each reader gets the same bytes: a
    retried upload sends what the first try sent); `result()` waits for the Package, which
    `close()` deletes with the build (a `with` block does both)."""

    def __init__(
        self,
        directory: Path,
        entrypoint: str | None,
        scan: FolderScan,
        entries: list[Entry],
        compression: _Compression,
        tmp_dir,
    ):
        self.directory = directory
        self.entrypoint = entrypoint
        # At most this many bytes, whatever compresses: known before any is compressed.
        self.size_bound = _size_bound(entries)
        self._growth = _Growth()
        self._package: Package | None = None
        blob_file = _blob_file(tmp_dir)
        self._path = blob_file[1]
        args = (directory, entrypoint, scan, entries, compression, blob_file)
        self._thread = threading.Thread(target=self._run, args=args, name="kaio-package")
        self._thread.start()

    def _run(self, *args: Any) -> None:
        try:
            self._package = _build(*args, growth=self._growth)  # type: ignore[misc]
        except BaseException as e:
            self._growth.finish(None, e)
        else:
            self._growth.finish(self._package._tail)

    def open(self) -> BinaryIO:
        """A stream of the package's bytes that waits for those not made yet."""
        return io.BufferedReader(_FollowingReader(self._path, self._growth), _READ_SIZE)

    def failed(self) -> BaseException | None:
        """The build's error, once it has failed; else None."""
        return self._growth.error

    def result(self) -> Package:
        """The finished Package (waits for it); raises the build's error if it failed."""
        self._thread.join()
        if self._growth.error is not None:
            raise self._growth.error
        assert self._package is not None
        return self._package

    def close(self) -> None:
        """Stops the build if it is still running; deletes the package's file."""
        self._growth.cancel()
        self._thread.join()
        if self._package is not None:
            self._package.close()

    def __enter__(self) -> PackageBuild:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _FollowingReader(io.RawIOBase):
    """A PackageBuild's bytes from the first: the blob's file as far as it is written (waiting
    for more while the build runs), then the tail."""

    def __init__(self, path: str, growth: _Growth):
        super().__init__()
        try:
            self._file = open(path, "rb")  # noqa: SIM115 (closed by close())
        except FileNotFoundError:
            growth.wait_past(0)  # the build failed and removed it: PackagingFailed says why
            raise
        self._growth = growth
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        written, tail = self._growth.wait_past(self._pos)
        if self._pos < written:
            self._file.seek(self._pos)
            n = self._file.readinto(view[: written - self._pos])
        else:  # the build is done: the tail after the blob
            assert tail is not None
            piece = tail[self._pos - written : self._pos - written + len(view)]
            n = len(piece)
            view[:n] = piece
        self._pos += n
        return n

    def close(self) -> None:
        if not self.closed:
            self._file.close()
        super().close()


def _size_bound(entries: list[Entry]) -> int:
    """More bytes than the package of `entries` can take, from their sizes alone (cheap: it is
    asked for before the presign): the tar stream's size, counting each header as generously as
    a pax header with the path and link target twice over can be, plus what stored and deflated
    blocks, flushes and the gzip header and trailer add to it (well under 1/256)."""
    tar = len(_END_OF_ARCHIVE)
    for e in entries:
        size = 0
        if e.kind == "file" and e.data is not None:
            size = len(e.data)
        elif e.kind == "file":
            with contextlib.suppress(OSError):  # gone: the build says so
                size = os.stat(e.source or "").st_size
        names = len(e.path.encode("utf-8", "surrogateescape")) + len(e.link_target or "") * 4
        tar += 4 * _BLOCK + 2 * names + size + len(_padding(size))
    return tar + tar // 256 + 65536
