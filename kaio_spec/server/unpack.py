"""Writing an archive's members under one folder so that no link can ever lead out of it.

Every file, folder and link is made relative to an open descriptor of the folder it goes in,
and that folder is opened from the root one by `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`
(Linux 5.6+, called through ctypes: Python has no binding), or, where the kernel lacks it, one
component at a time with `O_NOFOLLOW`. No path is ever resolved by name from outside, so a check
that missed a hostile link (CVE-2025-4517: a chain of links past PATH_MAX that `realpath` stops
following) still cannot make a write land anywhere but beneath the root: the kernel refuses to
follow the link. The checks of what a package may hold are storage.py's; this is the floor.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
import sys
from collections.abc import Callable
from typing import Protocol


class Readable(Protocol):
    """What write_file reads a member's bytes from: a file, or storage._MemberData."""

    def read(self, size: int, /) -> bytes: ...


Parts = tuple[str, ...]  # a path below the root, one name per component, none '', '.' or '..'

_SYS_OPENAT2 = 437  # the same number on every Linux architecture (the unified syscall table)
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_LINK_HOPS = 40  # as the kernel's own bound on links followed while resolving one path


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


class LinkInTheWay(OSError):
    """A path goes through a link (or something that is no folder) below the root."""


def _libc_syscall() -> Callable | None:
    if not sys.platform.startswith("linux"):  # 437 is openat2 on Linux only
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).syscall
    except (OSError, AttributeError):
        return None


_syscall = _libc_syscall()
_openat2_missing = _syscall is None


def _openat2(dir_fd: int, path: str, flags: int) -> int:
    """openat2 beneath `dir_fd`, through no link; ENOSYS where the kernel has none."""
    how = _OpenHow(flags, 0, _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS | _RESOLVE_NO_MAGICLINKS)
    assert _syscall is not None
    fd = _syscall(
        _SYS_OPENAT2,
        ctypes.c_int(dir_fd),
        ctypes.c_char_p(os.fsencode(path)),
        ctypes.byref(how),
        ctypes.c_size_t(ctypes.sizeof(how)),
    )
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return fd


def open_beneath(root_fd: int, parts: Parts, openat2: bool = True) -> int:
    """A descriptor of folder `parts` below `root_fd`, reached through no link. LinkInTheWay
    when a component is a link or not a folder; FileNotFoundError when one is missing.
    `openat2` False: the walk that stands in for it on kernels without it (for its tests)."""
    global _openat2_missing
    if not parts:
        return os.dup(root_fd)
    if openat2 and not _openat2_missing:
        try:
            return _openat2(root_fd, "/".join(parts), _DIR_FLAGS)
        except OSError as e:
            if e.errno == errno.ENOSYS:
                _openat2_missing = True  # an old kernel: the walk below does the same
            elif e.errno in (errno.ELOOP, errno.EXDEV, errno.ENOTDIR):
                way = "/".join(parts)
                raise LinkInTheWay(e.errno, "a link or a file is in the way", way) from None
            elif e.errno != errno.ENAMETOOLONG:  # longer than PATH_MAX: walk it
                raise
    return _walk(root_fd, parts)


def _walk(root_fd: int, parts: Parts, make: bool = False) -> int:
    """Folder `parts` opened one component at a time, each through no link (and made first
    where missing, when `make`)."""
    fd = os.dup(root_fd)
    try:
        for name in parts:
            if make:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o700, dir_fd=fd)
            try:
                inner = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise LinkInTheWay(e.errno, "a link or a file is in the way", name) from None
                raise
            os.close(fd)
            fd = inner
    except BaseException:
        os.close(fd)
        raise
    return fd


class Tree:
    """A folder that members are written into, by descriptor only (see the module's doc).
    Use as a context manager; `finish()` gives folders their modes and times at the end (a
    read-only folder made early would refuse the members that go in it)."""

    def __init__(self, root: str | os.PathLike, openat2: bool = True):
        self._openat2 = openat2
        self._root = os.open(root, _DIR_FLAGS)
        self._parent: tuple[Parts, int] | None = None  # the last folder written in, kept open
        self._folders: list[tuple[Parts, int, float]] = []  # (folder, mode, mtime) for finish

    def __enter__(self) -> Tree:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._drop_parent()
        if self._root >= 0:
            os.close(self._root)
            self._root = -1

    def _drop_parent(self) -> None:
        if self._parent is not None:
            os.close(self._parent[1])
            self._parent = None

    def _folder(self, parts: Parts, make: bool) -> int:
        """The open folder `parts` (not to be closed: kept for the next member, which usually
        goes in the same one), made with its parents when `make` and missing."""
        if self._parent is not None and self._parent[0] == parts:
            return self._parent[1]
        self._drop_parent()
        try:
            fd = open_beneath(self._root, parts, self._openat2)
        except FileNotFoundError:
            if not make:
                raise
            fd = _walk(self._root, parts, make=True)
        self._parent = (parts, fd)
        return fd

    # ---- reading ------------------------------------------------------------------------------

    def lstat(self, parts: Parts) -> os.stat_result | None:
        """The entry at `parts` itself (a link not followed); None when it or its folder is
        missing, or its folder is no folder."""
        if not parts:
            return os.fstat(self._root)
        try:
            return os.stat(parts[-1], dir_fd=self._folder(parts[:-1], False), follow_symlinks=False)
        except (FileNotFoundError, LinkInTheWay):
            return None

    def readlink(self, parts: Parts) -> str:
        return os.readlink(parts[-1], dir_fd=self._folder(parts[:-1], False))

    def links_below(self) -> list[Parts]:
        """Every link in the tree (fwalk: by descriptor, whatever the paths' lengths)."""
        found = []
        for folder, dirs, files, fd in os.fwalk(".", dir_fd=self._root):
            rel = tuple(p for p in folder.split("/") if p not in ("", "."))
            for name in dirs + files:
                if stat.S_ISLNK(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
                    found.append((*rel, name))
        return found

    # ---- writing ------------------------------------------------------------------------------

    def make_folder(self, parts: Parts, mode: int, mtime: float) -> None:
        if parts:
            parent = self._folder(parts[:-1], True)
            try:
                os.mkdir(parts[-1], 0o700, dir_fd=parent)
            except FileExistsError:
                if not stat.S_ISDIR(
                    os.stat(parts[-1], dir_fd=parent, follow_symlinks=False).st_mode
                ):
                    raise
        self._folders.append((parts, mode, mtime))

    def write_file(self, parts: Parts, data: Readable, mode: int, mtime: float, bufsize: int):
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(parts[-1], flags, 0o600, dir_fd=self._folder(parts[:-1], True))
        with open(fd, "wb", buffering=0, closefd=True) as out:
            while chunk := data.read(bufsize):
                view = memoryview(chunk)
                while view:  # a raw write may take part of it (a signal, a full disk)
                    view = view[out.write(view) :]
            os.fchmod(fd, mode)
            os.utime(fd, (mtime, mtime))

    def symlink(self, parts: Parts, target: str) -> None:
        os.symlink(target, parts[-1], dir_fd=self._folder(parts[:-1], True))

    def hardlink(self, parts: Parts, target: Parts) -> None:
        """A hard link to the regular file `target`; LinkInTheWay when it is anything else."""
        if not target:
            raise LinkInTheWay(errno.EPERM, "not a regular file", ".")
        src = open_beneath(self._root, target[:-1], self._openat2)
        try:
            st = os.stat(target[-1], dir_fd=src, follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):
                raise LinkInTheWay(errno.EPERM, "not a regular file", "/".join(target))
            dst = self._folder(parts[:-1], True)
            os.link(target[-1], parts[-1], src_dir_fd=src, dst_dir_fd=dst, follow_symlinks=False)
        finally:
            os.close(src)

    def unlink(self, parts: Parts) -> None:
        os.unlink(parts[-1], dir_fd=self._folder(parts[:-1], False))

    def finish(self) -> None:
        """Folders' modes and times, deepest first (setting a time inside a folder changes its
        own); a folder always stays the platform's to write and remove."""
        self._drop_parent()
        for parts, mode, mtime in sorted(self._folders, key=lambda f: len(f[0]), reverse=True):
            fd = open_beneath(self._root, parts, self._openat2)
            try:
                os.fchmod(fd, mode | 0o700)
                os.utime(fd, (mtime, mtime))
            finally:
                os.close(fd)
        self._folders.clear()


def resolves_inside(tree: Tree, parts: Parts, target: str) -> bool:
    """Whether link `parts` -> `target` stays below the root once every link on its way (those
    in the tree now) is followed, as the kernel would. A missing component counts as a folder."""
    if target.startswith("/"):
        return False
    where: list[str] = list(parts[:-1])
    pending = target.split("/")
    hops = 0
    while pending:
        name = pending.pop(0)
        if name in ("", "."):
            continue
        if name == "..":
            if not where:
                return False
            where.pop()
            continue
        st = tree.lstat((*where, name))
        if st is not None and stat.S_ISLNK(st.st_mode):
            hops += 1
            if hops > MAX_LINK_HOPS:
                return False  # a loop: refused rather than followed for ever
            inner = tree.readlink((*where, name))
            if inner.startswith("/"):
                return False
            pending = inner.split("/") + pending
            continue
        where.append(name)
    return True
