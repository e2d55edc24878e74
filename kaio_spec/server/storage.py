"""Files on disk: the layout of a job's folder, presigned URLs, package checks and outputs.

<data dir>/jobs/<unique_job_name>/
    env.json              the env values, mode 0600, deleted when the job ends
    outcome.json          how the run ended, written before its outputs are collected
    package.tar.gz        the upload, renamed into place only once complete
    pkg/                  the checked, unpacked package (renamed into place once whole)
    pkg-files.json        once queued: size and mtime of pkg/'s files, to tell outputs apart
    work/algo-N/          each instance's own copy of pkg/, its working folder (the last
                          instance's is pkg/ itself, renamed: one copy fewer)
    resourceconfig-algo-N.json  each instance's SM_RESOURCE_CONFIG, outside the outputs
    jupyter/algo-N/       a notebook instance's Jupyter runtime files
    logs/algo-N/          stdout.log, stderr.log
    outputs/              after the job ends: the files instances created or changed (the
                          working folder itself, the rest removed; algo-N/ each when several)

<data dir>/packages/<user id>/<sha256>/   a base package (docs/base-packages.md), renamed into
    package.tar.gz                         place whole once checked and unpacked
    tree/                 its files, copied into the pkg/ of each job that uses it
    meta.json             size, unpacked bytes, last used (unix seconds) for the retention sweep

A folder or file made costs far more than the bytes in it on some file systems (a trivial job's
whole run makes a dozen), so the layout makes no more of them than it needs, and prepare_run
makes what it can while the job waits in the queue.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import hmac
import io
import json
import os
import posixpath
import shutil
import stat
import sys
import tarfile
import tempfile
import time
import types
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path, PurePosixPath
from typing import BinaryIO, cast
from urllib.parse import quote, urlencode

from kaio_spec import catalog, validation
from kaio_spec.files import write_atomic
from kaio_spec.server import auth, unpack
from kaio_spec.server.states import JobStatus

_gzip_module: types.ModuleType
_InflateError: type[Exception]
try:  # ISA-L's inflate, ~2x zlib's (a dependency; zlib where it could not be installed)
    from isal import igzip as _gzip_module
    from isal.igzip_lib import IsalError as _InflateError  # type: ignore[assignment]
except ImportError:  # pragma: no cover
    _gzip_module = gzip
    _InflateError = zlib.error

PACKAGE = "package.tar.gz"
LOG_NAMES = ("stdout.log", "stderr.log")
BASE_META = "meta.json"  # a base package's size, unpacked bytes and last use
# A base package serves jobs of any volume, so it may unpack to as much as the largest one holds:
# more could never be used, and the bound keeps a gzip bomb off the disk.
MAX_BASE_UNPACKED_BYTES = catalog.MAX_VOLUME_GB * 1024**3


def host_name(index: int) -> str:
    """Instance index (0-based) to SageMaker's host name: algo-1, algo-2, ..."""
    return f"algo-{index + 1}"


def hosts_of(job: dict) -> list[str]:
    return [host_name(i) for i in range(job["instance_count"])]


@dataclass(frozen=True)
class JobFiles:
    root: Path

    @property
    def package(self) -> Path:
        return self.root / PACKAGE

    @property
    def pkg(self) -> Path:
        return self.root / "pkg"

    @property
    def pkg_files(self) -> Path:
        return self.root / "pkg-files.json"

    @property
    def env_file(self) -> Path:
        return self.root / "env.json"

    @property
    def outputs(self) -> Path:
        return self.root / "outputs"

    def work(self, host: str) -> Path:
        return self.root / "work" / host

    def config(self, host: str) -> Path:
        return self.root / f"resourceconfig-{host}.json"

    def jupyter(self, host: str) -> Path:
        return self.root / "jupyter" / host

    def tmp(self, host: str) -> Path:
        """An instance's TMPDIR, when it needs one of its own (sandbox.Sandbox.private_tmp)."""
        return self.root / "tmp" / host

    def remove_tmp(self) -> None:
        shutil.rmtree(self.root / "tmp", ignore_errors=True)

    def logs(self, host: str) -> Path:
        return self.root / "logs" / host

    # ---- env values: needed to start the job, never kept beyond it ------------------------------

    def write_env(self, env: dict[str, str]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        # Secrets: its owner's only. Not synced: a crash loses the job's processes with it.
        write_atomic(self.env_file, json.dumps(env), mode=0o600, fsync=False)

    def read_env(self) -> dict[str, str]:
        try:
            return json.loads(self.env_file.read_text())
        except FileNotFoundError:
            return {}

    def forget_env(self) -> None:
        self.env_file.unlink(missing_ok=True)

    # ---- how the run ended, kept for a restart while its outputs were being collected -------

    @property
    def outcome_file(self) -> Path:
        return self.root / "outcome.json"

    def record_outcome(self, status: str, reason: str | None) -> None:
        outcome = json.dumps({"status": status, "reason": reason})
        write_atomic(self.outcome_file, outcome, mode=None, fsync=False)

    def read_outcome(self) -> tuple[JobStatus, str | None] | None:
        """(final status, reason) the run ended with, if it got that far."""
        try:
            raw = json.loads(self.outcome_file.read_text())
            status, reason = JobStatus(raw["status"]), raw["reason"]
        except (OSError, ValueError, TypeError, KeyError):
            return None
        if not status.is_final or not (reason is None or isinstance(reason, str)):
            return None
        return status, reason


class Layout:
    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.jobs = data_dir / "jobs"
        self.envs = data_dir / "envs"
        self.packages = data_dir / "packages"
        self.jobs.mkdir(parents=True, exist_ok=True)

    def job(self, unique: str) -> JobFiles:
        return JobFiles(self.jobs / unique)

    def base(self, user_id: str, sha256: str) -> BaseFiles:
        """A user's base package; user ids come from signed tokens and the hash is checked hex,
        so neither can leave the packages folder."""
        return BaseFiles(self.packages / user_id / sha256)

    def base_packages(self) -> Iterator[BaseFiles]:
        """Every user's stored base packages (temp folders left out)."""
        for folder in self.packages.glob("*/*"):
            if validation.is_sha256(folder.name) and folder.is_dir():
                yield BaseFiles(folder)

    def remove_partial_uploads(self) -> None:
        """Temp files of uploads a killed server never finished (and of base packages it was
        storing or deleting)."""
        for part in self.jobs.glob("*/*.part-*"):
            part.unlink(missing_ok=True)
        for tmp in [*self.jobs.glob("*/pkg.tmp-*"), *self.packages.glob("*/*.tmp-*")]:
            shutil.rmtree(tmp, ignore_errors=True)


# ---- base packages ------------------------------------------------------------------------------


class BaseGone(LookupError):
    """The base package a job was presigned against is no longer on the platform."""

    def __init__(self, sha256: str):
        super().__init__(f"base_package: {sha256} no longer on the platform; presign again")


@dataclass(frozen=True)
class BaseMeta:
    size: int
    unpacked_bytes: int
    last_used: float  # unix seconds: uploaded, or presigned or uploaded against


@dataclass(frozen=True)
class BaseFiles:
    root: Path

    @property
    def sha256(self) -> str:
        return self.root.name

    @property
    def package(self) -> Path:
        return self.root / PACKAGE

    @property
    def tree(self) -> Path:
        return self.root / "tree"

    @property
    def meta_file(self) -> Path:
        return self.root / BASE_META

    def meta(self) -> BaseMeta:
        """BaseGone when the base package is not (or no longer) stored."""
        try:
            raw = json.loads(self.meta_file.read_text())
            return BaseMeta(int(raw["size"]), int(raw["unpacked_bytes"]), float(raw["last_used"]))
        except (OSError, ValueError, TypeError, KeyError):
            raise BaseGone(self.sha256) from None

    def touch(self, fresh_s: float = 0.0) -> BaseMeta | None:
        """Mark the base package used now (the retention sweep spares it); None if not stored.
        A mark younger than `fresh_s` is left as it is: a sweep submits each job against the
        base twice (presign, upload), and rewriting meta.json each time cost ~2 ms."""
        try:
            meta = self.meta()
            if time.time() - meta.last_used < fresh_s:
                return meta
            used = BaseMeta(meta.size, meta.unpacked_bytes, time.time())
            _write_meta(self.meta_file, used)
        except (BaseGone, FileNotFoundError):  # gone, or being deleted under us
            return None
        return used

    def temp(self) -> Path:
        """A fresh temp folder's path beside the base package (removed at start if left over)."""
        return temp_beside(self.root)


def _write_meta(path: Path, meta: BaseMeta) -> None:
    # Two presigns may mark the same base package used at once: write_atomic's temporary
    # names are unique. Not synced: on a presign's path, and a lost last-used time costs little.
    write_atomic(path, json.dumps(meta.__dict__), mode=None, fsync=False)


class BaseExtract:
    """Checks and unpacks a base package read from a stream into a new folder (an ingest.Extract:
    it is unpacked as its upload arrives, as a job's package is), counting the bytes it unpacks
    to. No entrypoint is asked for: a base package need not be a whole job."""

    def __init__(self) -> None:
        self._check = _MemberCheck(None, MAX_BASE_UNPACKED_BYTES)

    def __call__(self, source: BinaryIO, tree: Path) -> None:
        tree.mkdir()  # an archive with no members still makes a (empty) base package
        _extract(source, tree, self._check)

    @property
    def unpacked_bytes(self) -> int:
        return self._check.total


def store_base_package(tmp: Path, base: BaseFiles, size: int, unpacked_bytes: int) -> None:
    """Write the meta.json of the base package checked and unpacked in `tmp` (package.tar.gz,
    already hashed, and tree/) and rename `tmp` into place as `base`, whole."""
    _write_meta(tmp / BASE_META, BaseMeta(size, unpacked_bytes, time.time()))
    try:
        os.replace(tmp, base.root)
    except OSError:
        if not base.root.is_dir():
            raise
        # Already stored by an earlier request: the same bytes, so nothing to do.


def remove_base(base: BaseFiles) -> None:
    """Delete a base package: renamed away first, so that a job copying it sees all of it or
    none (BaseGone), never half."""
    doomed = base.temp()
    try:
        os.replace(base.root, doomed)
    except FileNotFoundError:
        return
    shutil.rmtree(doomed, ignore_errors=True)


# ---- presigned URLs ---------------------------------------------------------------------------


class BadSignature(Exception):
    pass


class MalformedSignature(BadSignature):
    """Not even the shape of a signature this server makes (64 hex digits)."""


_HEX = frozenset("0123456789abcdef")


class Signer:
    """HMAC-SHA256 over method, object key and expiry, with a key derived from the server secret."""

    def __init__(self, secret: bytes, ttl_s: int):
        self._key = auth.derive(secret, "presigned-url")
        self.ttl_s = ttl_s

    def _sign(self, method: str, key: str, expires: int) -> str:
        msg = f"{method.upper()}\n{key}\n{expires}".encode("utf-8", "surrogatepass")
        return hmac.new(self._key, msg, hashlib.sha256).hexdigest()

    def path(self, method: str, key: str, expires: int | None = None) -> str:
        """The path and query of a URL that allows `method` on object `key` until `expires`."""
        expires = int(time.time()) + self.ttl_s if expires is None else expires
        query = urlencode({"expires": expires, "signature": self._sign(method, key, expires)})
        return f"/objects/{quote(key, safe='/')}?{query}"

    def verify(self, method: str, key: str, expires: str | None, signature: str | None) -> None:
        if not expires or not signature:
            raise BadSignature("the URL has no signature")
        if len(signature) != 64 or not _HEX.issuperset(signature):
            raise MalformedSignature("must be 64 lower-case hex digits, as the server made it")
        try:
            when = int(expires)
        except ValueError:
            raise BadSignature("the URL's expiry is not a number") from None
        expected = self._sign(method, key, when)
        if not hmac.compare_digest(expected, signature):
            raise BadSignature("the URL's signature does not match (changed or for another object)")
        if when < time.time():
            raise BadSignature("the URL has expired")


def package_key(unique: str) -> str:
    return f"{unique}/{PACKAGE}"


def output_key(unique: str, rel: str) -> str:
    return f"{unique}/outputs/{rel}"


# ---- package checks ---------------------------------------------------------------------------


class PackageError(ValueError):
    """The package is unreadable or unsafe; the message says why and which member."""


# What the kernel takes: a name of at most 255 bytes per component (NAME_MAX), a path of at most
# 4,095 (PATH_MAX with its terminating NUL). Longer names could not be made: refused up front.
MAX_COMPONENT_BYTES = 255
MAX_PATH_BYTES = 4095
# A folder costs a block of the volume however little it holds (300k empty folders in a 1.4 MB
# package once took 1.37 GB), so each counts as one.
FOLDER_BYTES = 4096


def _inside(path: str) -> bool:
    """True if a relative POSIX path stays inside the folder it is relative to."""
    norm = posixpath.normpath(path)
    return not posixpath.isabs(path) and norm != ".." and not norm.startswith("../")


def _check_length(name: str, what: str, value: str) -> None:
    raw = os.fsencode(value)  # tarfile keeps undecodable bytes as surrogates
    if b"\0" in raw:
        raise PackageError(f"package: {name!r} has a NUL byte in its {what}")
    if len(raw) > MAX_PATH_BYTES:
        raise PackageError(f"package: {name!r} has a {what} longer than {MAX_PATH_BYTES} bytes")
    if any(len(part) > MAX_COMPONENT_BYTES for part in raw.split(b"/")):
        raise PackageError(
            f"package: {name!r} has a {what} with a component longer than "
            f"{MAX_COMPONENT_BYTES} bytes"
        )


def check_member(m: tarfile.TarInfo) -> None:
    name = m.name
    _check_length(name, "name", name)
    # POSIX only: `a:b.csv` is an ordinary file name here, not a drive. The name is split by
    # hand, not by PurePosixPath (the same components, ".." kept; a third of the checks' cost
    # in a package of small files).
    if name.startswith("/"):
        raise PackageError(f"package: {name!r} is an absolute path")
    if ".." in name.split("/") or "\\" in name:
        raise PackageError(f"package: {name!r} has a '..' component or a backslash")
    if m.size < 0:  # GNU's base-256 sizes can be negative: counted, it would hide bytes
        raise PackageError(f"package: {name!r} has a negative size ({m.size})")
    if m.ischr() or m.isblk() or m.isfifo():
        raise PackageError(f"package: {name!r} is a device file or a FIFO")
    if m.issym() or m.islnk():
        _check_length(name, "link target", m.linkname)
    if m.issym():
        target = posixpath.join(posixpath.dirname(name), m.linkname)
        if posixpath.isabs(m.linkname) or not _inside(target):
            raise PackageError(f"package: {name!r} links outside the package ({m.linkname!r})")
    elif m.islnk():
        if posixpath.isabs(m.linkname) or not _inside(m.linkname):
            raise PackageError(f"package: {name!r} links outside the package ({m.linkname!r})")
    elif not (m.isreg() or m.isdir()):
        raise PackageError(f"package: {name!r} is not a file, folder or link")


def _parts(name: str) -> unpack.Parts:
    return tuple(p for p in posixpath.normpath(name).split("/") if p not in ("", "."))


class _MemberCheck:
    """Checks members one by one as an archive is read, against what `tree` holds so far;
    `finish()` once all were seen. `entrypoint` None: none is required. `counted`: unpacked
    bytes already on the volume."""

    def __init__(self, entrypoint: str | None, max_unpacked_bytes: int, counted: int = 0):
        self.entrypoint = entrypoint
        self.max_unpacked_bytes = max_unpacked_bytes
        self.total = counted
        self.has_entrypoint = False
        self.last = ""  # the member being unpacked, for errors the extraction itself raises
        self.links: set[unpack.Parts] = set()  # the package's own symbolic links
        self.files: set[unpack.Parts] = set()  # its files and hard links

    def __call__(self, m: tarfile.TarInfo, tree: unpack.Tree) -> unpack.Parts:
        """The member's path, once it passed every check."""
        check_member(m)
        self.last = m.name
        if m.isreg():
            self.total += m.size
        elif m.isdir():
            self.total += FOLDER_BYTES
        if self.total > self.max_unpacked_bytes:
            raise PackageError(
                f"package: unpacks to more than the volume's {self.max_unpacked_bytes} bytes"
            )
        parts = _parts(m.name)
        self._check_way(m, parts)
        if m.issym() and not unpack.resolves_inside(tree, parts, m.linkname):
            raise PackageError(
                f"package: {m.name!r} links outside the package once the links on its way are "
                f"followed ({m.linkname!r})"
            )
        if not m.isdir():
            self.links.discard(parts)  # a later member replaces an earlier one
            self.files.discard(parts)
            (self.links if m.issym() else self.files).add(parts)
        if m.isreg() and posixpath.normpath(m.name) == self.entrypoint:
            self.has_entrypoint = True
        return parts

    def _check_way(self, m: tarfile.TarInfo, parts: unpack.Parts) -> None:
        """Nothing is unpacked through a link of the package, nor through one of its files."""
        for i in range(1, len(parts)):
            if parts[:i] in self.links:
                where = "/".join(parts[:i])
                raise PackageError(f"package: {m.name!r} goes through the link {where!r}")
            if parts[:i] in self.files:
                raise self._through_file(m, parts[:i])

    def _through_file(self, m: tarfile.TarInfo, file: unpack.Parts) -> PackageError:
        return PackageError(
            f"package: {m.name!r} clashes with an earlier member (one path as a file and as a "
            "folder)"
        )

    def finish(self, tree: unpack.Tree) -> None:
        """Every link still leads inside now that all are made (a later link can change
        where an earlier one goes), and the entrypoint is there."""
        for parts in sorted(self.links):
            target = tree.readlink(parts)
            if not unpack.resolves_inside(tree, parts, target):
                raise PackageError(
                    f"package: {'/'.join(parts)!r} links outside the package once the links "
                    f"on its way are followed ({target!r})"
                )
        if self.entrypoint is not None and not self.has_entrypoint:
            raise PackageError(
                f"package: the entrypoint {self.entrypoint!r} is not at its top level"
            )


class _OverlayCheck(_MemberCheck):
    """The member checks, plus tar's rule for a member landing on an existing path of the tree
    (the base package's files, then the overlay's so far): a file or link replaces a file or
    link; a file over a folder, a folder over a file, or a path through a file or link, is
    refused."""

    def __init__(self, max_unpacked_bytes: int, counted: int):
        super().__init__(None, max_unpacked_bytes, counted)
        self.unpacked: set[tuple[str, ...]] = set()  # paths the overlay made, to name the culprit

    def __call__(self, m: tarfile.TarInfo, tree: unpack.Tree) -> unpack.Parts:
        parts = super().__call__(m, tree)
        for i in range(1, len(parts)):
            above = tree.lstat(parts[:i])
            if above is None:
                break  # unpacking makes the rest of the way
            if not stat.S_ISDIR(above.st_mode):
                raise self._through_file(m, parts[:i])
        found = tree.lstat(parts)
        if found is not None and stat.S_ISDIR(found.st_mode) != m.isdir():
            put, have = ("a folder", "a file") if m.isdir() else ("a file", "a folder")
            raise PackageError(f"package: {m.name!r} is {put} where {self._owner(parts)} {have}")
        self.unpacked.update(parts[:i] for i in range(1, len(parts) + 1))
        return parts

    def _through_file(self, m: tarfile.TarInfo, file: unpack.Parts) -> PackageError:
        return PackageError(
            f"package: {m.name!r} is inside {'/'.join(file)!r}, which {self._owner(file)} as a "
            "file or link, not a folder"
        )

    def _owner(self, parts: tuple[str, ...]) -> str:
        return "an earlier member has" if parts in self.unpacked else "the base package has"

    def finish(self, tree: unpack.Tree) -> None:
        if self.links:  # a link of the overlay may change where one of the base's goes
            self.links = set(tree.links_below())
        super().finish(tree)


# Errors of reading a damaged archive (gzip's BadGzipFile is an OSError; other OSErrors, such as
# a full disk while unpacking, are the platform's, not the package's).
_READ_ERRORS = (
    tarfile.TarError,
    EOFError,
    zlib.error,
    _InflateError,
    UnicodeError,
    gzip.BadGzipFile,
    io.UnsupportedOperation,  # a seek back in an upload (tarfile only seeks forward in a sane one)
)
# Member data is copied in pieces of 1 MiB: far fewer Python calls than tarfile's 16 KiB.
_COPY_BUFSIZE = 1024 * 1024


# What unpacking raises when two members claim one path as a file and as a folder.
_CLASH_ERRORS = (IsADirectoryError, NotADirectoryError, FileExistsError)


def _extract(source: BinaryIO, dest: Path, check: _MemberCheck) -> None:
    """Unpack the tar.gz read from `source` into `dest` front to back, as a stream (an upload as
    it arrives: ingest.py), each member checked before anything of it is written, and written by
    unpack.Tree, which cannot follow a link out of `dest` even if a check missed one. Read to the
    end of the gzip stream, whose CRC and length are checked. PackageError when a member is
    unsafe or the archive unreadable; what was unpacked so far stays in `dest`, for the caller's
    temp folder to drop."""
    try:
        # "r:" over a gzip reader, as tarfile's "r:gz" does: tarfile's own stream mode ("r|")
        # copies its whole read-ahead for every header it reads (twice the CPU). This one seeks
        # only forward, which a gzip reader does by reading on, as a stream allows.
        with (
            _gzip_module.GzipFile(fileobj=source, mode="rb") as gz,
            tarfile.open(fileobj=gz, mode="r:", copybufsize=_COPY_BUFSIZE) as tf,  # type: ignore[call-overload]
            unpack.Tree(dest) as tree,
        ):
            for m in tf:
                _write_member(tf, m, check(m, tree), tree)
            while gz.read(_COPY_BUFSIZE):  # the tar's padding, then the gzip trailer's checks
                pass
            check.finish(tree)
            tree.finish()
    except PackageError:
        raise
    except unpack.LinkInTheWay:
        raise PackageError(f"package: {check.last!r} goes through a link or a file") from None
    except _READ_ERRORS as e:
        raise PackageError(f"package: not a readable tar.gz ({e})") from None
    except _CLASH_ERRORS:
        raise PackageError(
            f"package: {check.last!r} clashes with an earlier member (one path as a file and "
            "as a folder)"
        ) from None


def _write_member(tf: tarfile.TarFile, m: tarfile.TarInfo, parts: unpack.Parts, tree: unpack.Tree):
    """One checked member, as tar would make it (a file or link replaces a file or link, never
    writing through it) with the data filter's modes: no set-id bits, nothing writable by
    others, always readable and writable by the platform."""
    if m.isdir():
        if parts:  # '.' is the folder unpacked into, there already
            tree.make_folder(parts, m.mode & 0o755, m.mtime)
        return
    if not parts:
        raise IsADirectoryError(m.name)  # a file over the folder unpacked into
    found = tree.lstat(parts)
    if found is not None:
        if stat.S_ISDIR(found.st_mode):
            raise IsADirectoryError(m.name)
        tree.unlink(parts)
    if m.issym():
        tree.symlink(parts, m.linkname)
    elif m.islnk():
        tree.hardlink(parts, _parts(m.linkname))
    else:
        data = (
            tf.extractfile(m)
            if m.sparse is not None
            else _MemberData(cast(BinaryIO, tf.fileobj), m)
        )
        assert data is not None
        tree.write_file(parts, data, (m.mode & 0o755) | 0o600, m.mtime, _COPY_BUFSIZE)


class _MemberData:
    """A member's bytes read straight from the archive's (decompressed) stream, which tarfile
    leaves at the member's data once it has read its header: what tarfile.extractfile gives,
    without its two layers of buffers (two copies of every byte, and three objects per member,
    which cost a package of many small files dearly). Sparse members go through extractfile."""

    def __init__(self, stream: BinaryIO, m: tarfile.TarInfo):
        stream.seek(m.offset_data)  # forward only, and a no-op where tarfile left it
        self._stream = stream
        self._left = m.size

    def read(self, size: int) -> bytes:
        if self._left <= 0:
            return b""
        data = self._stream.read(min(size, self._left))
        if not data:
            raise tarfile.ReadError("unexpected end of data")
        self._left -= len(data)
        return data


def replace_dir(tmp: Path, dest: Path) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)


def remove_tree(root: Path) -> None:
    """Remove a folder and all it holds, even folders a job made unreadable or read-only (mode
    000, 500), which rmtree alone would leave behind an API that said the data is deleted. Each
    such folder is given back to the platform (u+rwx) by a descriptor reached through no link,
    and the removal retried; what still cannot be removed stays, as with rmtree."""
    if sys.version_info >= (3, 12):
        shutil.rmtree(root, onexc=_unlock_and_retry)
    else:
        shutil.rmtree(root, onerror=_unlock_and_retry)


def _unlock_and_retry(function: Callable, path: str, error: object) -> None:
    exc = error[1] if isinstance(error, tuple) else error
    if not isinstance(exc, PermissionError):
        return  # gone already, or not the platform's to remove
    with contextlib.suppress(OSError):
        if function in (os.unlink, os.rmdir):  # its folder is read-only
            _give_back(os.path.dirname(path))
            function(path)
        elif _give_back(path):  # a folder that could not be opened or listed
            remove_tree(Path(path))


def _give_back(folder: str) -> bool:
    """Make `folder` the platform's to list and change again (u+rwx); whether it now is."""
    if not hasattr(os, "O_PATH"):  # not Linux: no way to change it through no link
        return False
    fd = os.open(folder, os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.chmod(f"/proc/self/fd/{fd}", 0o700)  # the folder opened, never a link's target
    finally:
        os.close(fd)
    return os.access(folder, os.R_OK | os.W_OK | os.X_OK, follow_symlinks=False)


def remove_temp(tmp: Path) -> None:
    """Drop a temp folder unless it was renamed into place (only when something failed)."""
    if tmp.exists():
        shutil.rmtree(tmp, ignore_errors=True)


def unpack_package(path: Path, dest: Path, entrypoint: str, max_unpacked_bytes: int) -> None:
    """Check and unpack the package at `path` in one read (one decompression) as `dest`: see
    extract_package; renamed into place only once the whole package passed, nothing is left
    behind when it does not."""
    _unpack_file(path, dest, partial(extract_package, entrypoint, max_unpacked_bytes))


def unpack_overlay(
    base: BaseFiles, overlay: Path, dest: Path, entrypoint: str, max_unpacked_bytes: int
) -> None:
    """A job's files from a base package and the overlay at `overlay` (extract_overlay), renamed
    into place as `dest` only once whole."""
    _unpack_file(overlay, dest, partial(extract_overlay, base, entrypoint, max_unpacked_bytes))


def _unpack_file(path: Path, dest: Path, extract: Callable[[BinaryIO, Path], None]) -> None:
    tmp = temp_beside(dest)
    try:
        with open(path, "rb") as source:
            extract(source, tmp)
        replace_dir(tmp, dest)
    finally:
        remove_temp(tmp)


def extract_package(entrypoint: str, max_unpacked_bytes: int, source: BinaryIO, tmp: Path) -> None:
    """Check and unpack a package read from `source` into the new folder `tmp`: each member is
    checked before anything of it is written. PackageError when it is unsafe or unreadable."""
    tmp.mkdir()
    _extract(source, tmp, _MemberCheck(entrypoint, max_unpacked_bytes))


def extract_overlay(
    base: BaseFiles, entrypoint: str, max_unpacked_bytes: int, source: BinaryIO, tmp: Path
) -> None:
    """A job's files from a base package and an overlay read from `source` (docs/base-packages.md),
    made as the new folder `tmp`: a copy of the base's tree (mtimes kept) with the overlay
    unpacked on top as a later tar member would be. The entrypoint must be a regular file at the
    top level of the result; the base's unpacked bytes count against the volume with the
    overlay's. PackageError for a bad overlay; BaseGone if the base was deleted."""
    meta = base.meta()
    if meta.unpacked_bytes > max_unpacked_bytes:
        raise PackageError(
            f"package: the base package unpacks to more than the volume's {max_unpacked_bytes} "
            "bytes"
        )
    _copy_base_tree(base, tmp)
    _extract(source, tmp, _OverlayCheck(max_unpacked_bytes, meta.unpacked_bytes))
    if not _is_regular(tmp / entrypoint):
        raise PackageError(
            f"package: the entrypoint {entrypoint!r} is at the top level of neither the base "
            "package nor the overlay"
        )


def _copy_base_tree(base: BaseFiles, dest: Path) -> None:
    # Files as hard links to the base's: a queued job holds no copy of its folder's data (10,000
    # cells over a 20 MB folder would hold 200 GB before one ran). own_package replaces them by
    # copies when the job starts, before anything of it runs. Links share the base's mtimes: the
    # job sees its files as a whole package would give them (tar sets each member's).
    try:
        shutil.copytree(base.tree, dest, symlinks=True, copy_function=_link_or_copy)
    except (OSError, shutil.Error):
        if not base.tree.is_dir():  # deleted by the retention sweep as we copied
            raise BaseGone(base.sha256) from None
        raise


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:  # a file system without hard links, or one that refuses this one
        shutil.copy2(src, dst, follow_symlinks=False)


def own_package(files: JobFiles) -> None:
    """Make each file of pkg/ the job's own copy where it shares its data (a hard link to its
    base package's file: _copy_base_tree), keeping its bytes, mode and mtime. Called as a run
    starts, before pip builds in pkg/ or the job writes its working folder, so that nothing a
    job does reaches its base package or another job. NoRoom, before a byte is copied, when
    the copies would not fit the free space."""
    if not files.pkg.is_dir():
        return
    shared = [(rel, st) for rel, st in _regular_files(files.pkg).items() if st.st_nlink > 1]
    need = sum(st.st_size for _, st in shared)
    fs = os.statvfs(files.root)
    if need > fs.f_bavail * fs.f_frsize:
        raise NoRoom(
            f"the job's copy of its base package's files needs {need} bytes; the platform's "
            f"disk has {fs.f_bavail * fs.f_frsize} free"
        )
    for rel, _ in shared:
        path = files.pkg / rel
        fd, copy = tempfile.mkstemp(dir=path.parent, prefix=".kaio-own-")
        os.close(fd)
        shutil.copy2(path, copy, follow_symlinks=False)
        os.replace(copy, path)


def _lstat_mode(path: Path) -> int | None:
    try:
        return os.lstat(path).st_mode
    except FileNotFoundError:
        return None


def _is_regular(path: Path) -> bool:
    mode = _lstat_mode(path)
    return mode is not None and stat.S_ISREG(mode)


def temp_beside(path: Path) -> Path:
    return path.with_name(f"{path.name}.tmp-{os.getpid()}-{time.monotonic_ns()}")


# ---- outputs ----------------------------------------------------------------------------------


def _regular_files(root: Path) -> dict[str, os.stat_result]:
    """Relative path -> lstat of every regular file under root (links and the like skipped)."""
    found: dict[str, os.stat_result] = {}
    for folder, dirs, files in os.walk(root):
        for name in files:
            full = os.path.join(folder, name)
            st = os.lstat(full)
            if stat.S_ISREG(st.st_mode):
                found[os.path.relpath(full, root)] = st
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(folder, d))]
    return found


def prepare_run(files: JobFiles, hosts: list[str]) -> None:
    """Make what a run needs before its processes start and what can be made before it is its
    turn, none of which shows through the API: the logs' folders, the working folders' parent,
    each instance's resource config and the record of what pkg/ holds (pkg-files.json, for
    collect_outputs). Called when a job joins the queue, off the path from one job's end to
    the next one's start, and again when it starts, which then costs a stat: pkg-files.json,
    written last, says it was all made."""
    if files.pkg_files.exists():
        return
    for host in hosts:
        files.logs(host).mkdir(parents=True, exist_ok=True)
        files.config(host).write_text(json.dumps({"current_host": host, "hosts": hosts}))
    files.work(hosts[0]).parent.mkdir(exist_ok=True)
    original = {rel: [st.st_size, st.st_mtime_ns] for rel, st in _regular_files(files.pkg).items()}
    # Not synced: on the path from one job's end to the next one's start (a crash restarts it).
    write_atomic(files.pkg_files, json.dumps(original), mode=None, fsync=False)


def hand_out_package(files: JobFiles, hosts: list[str]) -> dict[str, tuple[int, int]]:
    """Give each instance a working folder of its own holding the package: copies of pkg/ for
    all instances but the last, which gets pkg/ itself (renamed, not copied: a single instance
    costs no copy). Returns what pkg/ held (prepare_run recorded it), for collect_outputs."""
    original = _original_files(files)
    _check_room_for_copies(files, original, len(hosts) - 1)
    for host in hosts[:-1]:
        shutil.copytree(files.pkg, files.work(host), symlinks=True)
    os.replace(files.pkg, files.work(hosts[-1]))
    return original


class NoRoom(OSError):
    """The disk has no room for the copies of a package each instance gets."""


def _check_room_for_copies(files: JobFiles, original: dict[str, tuple[int, int]], copies: int):
    """NoRoom, before a byte is copied, when the copies would not fit the free space: a
    half-made copy would fill the disk every other job writes to."""
    if copies <= 0:
        return
    need = copies * sum(size for size, _ in original.values())
    fs = os.statvfs(files.root)
    free = fs.f_bavail * fs.f_frsize
    if need > free:
        raise NoRoom(
            f"the package's {copies} copies for the job's other instances need {need} bytes; "
            f"the platform's disk has {free} free"
        )


def _original_files(files: JobFiles) -> dict[str, tuple[int, int]]:
    """(size, mtime_ns) of each file the package held: from pkg-files.json, else from pkg/ while
    it is there (a run cut short before prepare_run)."""
    if not files.pkg_files.exists() and files.pkg.is_dir():
        return {rel: (st.st_size, st.st_mtime_ns) for rel, st in _regular_files(files.pkg).items()}
    try:
        recorded = json.loads(files.pkg_files.read_text())
        return {rel: (int(v[0]), int(v[1])) for rel, v in recorded.items()}
    except (OSError, ValueError, TypeError, IndexError, AttributeError):
        return {}


def collect_outputs(
    files: JobFiles, hosts: list[str], original: dict[str, tuple[int, int]] | None = None
) -> int:
    """Make each instance's working folder its outputs (outputs/, or outputs/algo-N/ when there
    are several), keeping only what it created or changed. `original` is hand_out_package's
    answer (read back from pkg-files.json when not given). Returns how many files were kept."""
    if original is None:
        original = _original_files(files)
    kept = 0
    for host in hosts:
        work = files.work(host)
        if not work.is_dir():
            continue
        found = _drop_unchanged(work, original)
        kept += found
        if not found:
            with contextlib.suppress(OSError):  # what the platform may not remove stays
                os.rmdir(work)
            continue
        dest = files.outputs / host if len(hosts) > 1 else files.outputs
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(work, dest)  # one rename, whatever the job wrote
        except OSError:  # outputs of a collection a crash cut short: the rest joins them
            # Links moved as links: what they point to is none of the outputs' business.
            shutil.copytree(work, dest, symlinks=True, dirs_exist_ok=True, copy_function=os.replace)
            shutil.rmtree(work)
    return kept


def _drop_unchanged(work: Path, original: dict[str, tuple[int, int]]) -> int:
    """Remove from `work`, in one walk, all but the regular files the job created or changed
    (with names a URL and JSON can carry), and the folders that leaves empty; how many stay.
    What cannot be removed (a folder the job made read-only) stays, as rmtree would leave it."""
    kept = 0
    # Each step relative to an open folder that is no link: a process the job left behind,
    # swapping a folder for a link while this walks, cannot make it remove anything elsewhere.
    for folder, dirs, names, folder_fd in os.fwalk(work, topdown=False):
        prefix = os.path.relpath(folder, work) + "/" if folder != str(work) else ""
        for name in names:
            with contextlib.suppress(OSError):
                st = os.stat(name, dir_fd=folder_fd, follow_symlinks=False)
                if stat.S_ISREG(st.st_mode) and _is_output(prefix + name, st, original):
                    kept += 1
                else:
                    os.unlink(name, dir_fd=folder_fd)
        for name in dirs:
            with contextlib.suppress(OSError):  # a folder left holding outputs is not empty
                st = os.stat(name, dir_fd=folder_fd, follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    os.unlink(name, dir_fd=folder_fd)
                else:
                    os.rmdir(name, dir_fd=folder_fd)
    return kept


def _is_output(rel: str, st: os.stat_result, original: dict[str, tuple[int, int]]) -> bool:
    try:
        rel.encode("utf-8")
    except UnicodeError:
        return False  # a name no URL or JSON can carry
    return original.get(rel) != (st.st_size, st.st_mtime_ns)


def list_outputs(files: JobFiles, hosts: list[str]) -> list[tuple[str, str, Path]]:
    """(relative path, modified ISO, file) of every output and log, sorted by path."""
    listed: dict[str, Path] = {}
    if files.outputs.is_dir():
        for rel in _regular_files(files.outputs):
            listed[rel] = files.outputs / rel
    for host in hosts:
        for name in LOG_NAMES:
            log = files.logs(host) / name
            if log.is_file():
                listed[f"logs/{host}/{name}"] = log  # the platform's logs win over a job's file
    rows = []
    for rel, path in sorted(listed.items()):
        mtime = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
        rows.append((rel, mtime.isoformat(timespec="milliseconds"), path))
    return rows


def open_output(files: JobFiles, hosts: list[str], rel: str) -> BinaryIO | None:
    """Output `rel` open for reading, or None; never anything outside the job's folder. Opened
    one folder at a time, through no link, and checked to be a regular file once open: checks
    of a path before opening it could be raced by a process the job left behind."""
    parts = PurePosixPath(rel).parts
    if not parts or rel.startswith("/") or ".." in parts or "\x00" in rel:
        return None
    if len(parts) == 3 and parts[0] == "logs" and parts[1] in hosts and parts[2] in LOG_NAMES:
        root, parts = files.logs(parts[1]), parts[2:]
    else:
        root = files.outputs
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        folder = os.open(root, flags | os.O_DIRECTORY)
    except OSError:
        return None
    try:
        for name in parts[:-1]:
            inner = os.open(name, flags | os.O_DIRECTORY, dir_fd=folder)
            os.close(folder)
            folder = inner
        fd = os.open(parts[-1], flags | os.O_NONBLOCK, dir_fd=folder)  # a FIFO must not block
    except OSError:
        return None
    finally:
        os.close(folder)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return os.fdopen(fd, "rb")


def tail(path: Path, lines: int = 10, max_bytes: int = 4096) -> str:
    """The last lines of a text file, for failure reasons."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return ""
    text = data.decode("utf-8", "replace").rstrip()
    return "\n".join(text.splitlines()[-lines:])
