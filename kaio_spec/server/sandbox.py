"""Which isolation jobs get (Sandbox.mode): namespaces (namespaces.py) where bubblewrap can make
them, else Landlock's confinement below, else none; and that confinement, so that one tenant's
job cannot reach the platform's data folder where namespaces are not to be had.

Jobs run as the server's own OS user. Unconfined, a job could read the data folder: the secret
that signs every tenant's tokens and URLs, the database, other tenants' packages and outputs. A
confined job (Linux 5.19+ with Landlock enabled; no privilege needed) reaches everything the
server's user can, except the data folder, of which each instance reaches only the folders it
writes (runner.JobRun._instance_folders) and, read-only, its resource config and the
environments. It cannot ptrace a process outside its domain, and, from Landlock ABI 6, cannot
signal one either (it can still read /proc/<pid>/environ of the server's user's processes: the
docs/local-platform.md says what that leaves open).

Landlock only grants: "everything but the data folder" is a rule for every entry of each of the
folder's ancestors but the one leading to it. Which costs jobs this much: they cannot list those
ancestors (/, and for the default data folder ~ and ~/.kaio) nor create new entries directly in
them. When the temp folder is one of them (a data folder under /tmp), each instance gets a
TMPDIR of its own instead. `kaio server --no-sandbox` runs jobs unconfined.

The same holds for pip installing a job's requirements.txt (a package's build backend is the
tenant's code), which may also write the environment it installs into.

A confinement applies to the thread that asks for it and to the processes it starts from then
on, so each instance's process is started from a thread of its own (the one that then waits for
it, runner.JobRun._start_instance), and pip from a short-lived one (`spawn`).

The syscalls are called through ctypes: the Python bindings published so far (py-landlock 0.1,
landlock 1.0.dev) are early releases without Landlock's signal scoping.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import itertools
import os
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from kaio_spec.server import namespaces

T = TypeVar("T")

# linux/landlock.h and the x86-64/arm64 syscall numbers (the same on both: they came after the
# syscall tables were unified).
_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38
_SCOPE_SIGNAL = 1 << 1

_EXECUTE, _WRITE_FILE, _READ_FILE, _READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_TRUNCATE, _IOCTL_DEV = 1 << 14, 1 << 15
# Filesystem rights each ABI knows: 1: bits 0-12; 2: + REFER; 3: + TRUNCATE; 5: + IOCTL_DEV.
_FS_RIGHTS = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 4: (1 << 15) - 1}
_ALL_FS_RIGHTS = (1 << 16) - 1
# Rights that make sense on a file (Landlock refuses directory rights on a rule for one).
_FILE_RIGHTS = _EXECUTE | _WRITE_FILE | _READ_FILE | _TRUNCATE | _IOCTL_DEV
_READ_EXECUTE = _EXECUTE | _READ_FILE | _READ_DIR
_RACY_NS = 2_000_000_000  # more than any filesystem's mtime step (FAT's 2 s, NFS's 1 s at worst)
# ABI 1 (Linux 5.13-5.18) denies moving a file to another folder whatever the rules: confined,
# many a job's tools would break. ABI 2 protects all but truncate(2) by path (ABI 3 adds it).
MIN_ABI = 2


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class SandboxError(OSError):
    """The kernel refused to confine a job that Landlock should have confined."""


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def landlock_abi() -> int:
    """The kernel's Landlock ABI version; 0 where there is none (not Linux, too old a kernel,
    Landlock not enabled)."""
    libc = _libc()
    if libc is None:
        return 0
    abi = libc.syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0), _CREATE_RULESET_VERSION)
    return max(abi, 0)


def confinement(enabled: bool, abi: int) -> tuple[bool, str]:
    """Whether jobs are confined on a kernel of Landlock ABI `abi` (0: none), and the line
    the server says so with."""
    if not enabled:
        return False, "jobs run unconfined (--no-sandbox): a job can read this data folder"
    if abi < MIN_ABI:
        why = "has no Landlock" if abi == 0 else f"has Landlock ABI {abi}, which"
        if abi:
            why += " forbids moving files between folders, even a job's own"
        return False, (
            f"WARNING: jobs run unconfined: this kernel {why} (Linux 5.19+ with Landlock "
            "enabled confines them): a job can read this data folder, other tenants' files "
            "included"
        )
    caveat = "" if abi >= 3 else " (from Linux 6.2, nor truncate any file of it)"
    return (
        True,
        f"jobs are confined with Landlock (ABI {abi}): none reaches this data folder{caveat}",
    )


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


# Folders a job's tools create in the home folder on first use (IPython, for notebooks, above
# all): made by the server when its confined jobs could not make them (Sandbox.prepare_home).
HOME_FOLDERS = (
    ("IPYTHONDIR", ".ipython"),
    ("JUPYTER_CONFIG_DIR", ".jupyter"),
    ("JUPYTER_DATA_DIR", ".local/share/jupyter"),
    ("XDG_CACHE_HOME", ".cache"),
    ("XDG_CONFIG_HOME", ".config"),
)


# What a Landlock fallback leaves open that namespaces close (the warning at start says so).
LANDLOCK_GAPS = (
    "jobs share the file system outside the data folder with the server and with each other "
    "(a job can write the server's Python environment and home, and so run code in other "
    "tenants' jobs), see other jobs' processes and their environments in /proc, and leave "
    "processes running in the background"
)


class Sandbox:
    """How jobs are started on this platform: in namespaces of their own (namespaces.py), else
    confined with Landlock (see the module's docstring), or neither. `mode` says which:
    "namespaces", "landlock" or "none"."""

    def __init__(
        self,
        data_dir: Path,
        enabled: bool = True,
        isolation: str = "auto",
        job_network: bool = True,
    ):
        self.data_dir = os.path.realpath(data_dir)
        self.job_network = job_network
        # Namespaces where bwrap can make them; else Landlock (isolation="landlock": always).
        why_not = namespaces.unavailable() if enabled and isolation == "auto" else None
        in_namespaces = enabled and isolation == "auto" and why_not is None
        abi = 0 if in_namespaces else landlock_abi()
        confined, self.summary = confinement(enabled, abi)  # what the server says at start
        self.abi = abi if confined else 0
        self.mode = "namespaces" if in_namespaces else "landlock" if confined else "none"
        if in_namespaces:
            self.summary = (
                "jobs run in namespaces of their own (bubblewrap): a read-only file system, "
                "none of this data folder but their own folders, a private /proc, /tmp and "
                "tenant's HOME, network " + ("shared" if job_network else "none")
            )
        elif why_not is not None:
            self.summary = (
                f"WARNING: jobs cannot run in namespaces ({why_not}), so {LANDLOCK_GAPS}; "
                + self.summary
            )
        self._libc = _libc()
        # The data folder's ancestors, nearest first: where confined jobs create nothing.
        self.ancestors: list[str] = []
        folder = self.data_dir
        while folder != os.path.dirname(folder):
            folder = os.path.dirname(folder)
            self.ancestors.append(folder)
        tmp = os.path.realpath(tempfile.gettempdir())
        home = os.path.realpath(os.path.expanduser("~"))
        # A temp folder of each instance's own, when jobs may not create files in the system's.
        self.private_tmp = self.active and (tmp in self.ancestors or _inside(tmp, self.data_dir))
        self.home_restricted = self.active and home in self.ancestors
        self._outside_lock = threading.Lock()
        self._outside: list[tuple[int, bool]] = []
        self._outside_key: list | None = None
        self._outside_listed_ns = 0

    @property
    def active(self) -> bool:
        """Whether jobs are confined with Landlock (not: in namespaces)."""
        return self.abi > 0

    @property
    def namespaced(self) -> bool:
        return self.mode == "namespaces"

    def home_of(self, tenant: str) -> Path:
        """A tenant's HOME in namespaces: kept across its jobs, seen by no other tenant's."""
        return Path(self.data_dir) / "homes" / tenant

    def command(
        self, argv: list[str], cwd: Path, writable: list[Path], readable: list[Path], **jail
    ) -> list[str]:
        """`argv` as it is started: in namespaces (namespaces.Jail's `home`, `gpus`), or as it
        is where jobs are confined with Landlock (spawn) or not at all."""
        if not self.namespaced:
            return argv
        jail["home"].mkdir(parents=True, exist_ok=True, mode=0o700)
        where = namespaces.Jail(
            self.data_dir, writable=writable, readable=readable, network=self.job_network, **jail
        )
        return namespaces.command(argv, where, cwd)

    def prepare_home(self) -> None:
        """Make the home folders that jobs' tools would make on first use, when confined jobs
        cannot (the data folder is under the home folder): a notebook job needs ~/.ipython."""
        if not self.home_restricted:
            return
        for variable, default in HOME_FOLDERS:
            folder = os.environ.get(variable) or os.path.join(os.path.expanduser("~"), default)
            with contextlib.suppress(OSError):
                os.makedirs(folder, mode=0o700, exist_ok=True)

    def notice(self) -> str | None:
        """What a confined job's log says first, where confinement may surprise it."""
        if not self.home_restricted:
            return None
        where = ", ".join(self.ancestors)
        return (
            f"kaio: this job is confined away from the platform's data folder {self.data_dir}: it "
            f"can create no new file or folder directly in {where} (kaio server --no-sandbox "
            "lifts this)"
        )

    def spawn(self, writable: list[Path], readable: list[Path], start: Callable[[], T]) -> T:
        """`start()`'s result, its processes started confined to everything outside the data
        folder, `writable` (all rights) and `readable` (read and execute), folders or files of
        the data folder, when the sandbox is active; unconfined otherwise. Raises SandboxError,
        or what `start` raises."""
        if not self.active:
            return start()
        outcome: dict = {}

        def confined() -> None:
            try:
                self.confine_this_thread(writable, readable)
                outcome["value"] = start()
            except BaseException as e:  # handed to the caller's thread
                outcome["error"] = e

        thread = threading.Thread(target=confined, name="job-launcher", daemon=True)
        thread.start()
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    def confine_this_thread(self, writable: list[Path], readable: list[Path]) -> None:
        """Confine the calling thread, and what it starts from now on, as `spawn` says; for a
        thread that does nothing else for the platform. Nothing when the sandbox is inactive."""
        if not self.active:
            return
        handled = self._handled()
        attr = _RulesetAttr(handled, 0, _SCOPE_SIGNAL if self.abi >= 6 else 0)
        size = ctypes.sizeof(_RulesetAttr) if self.abi >= 6 else 8  # older: handled_access_fs
        ruleset = self._call(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), 0)
        try:
            with self._outside_lock:
                for fd, is_dir in self._outside_entries():
                    self._add_rule(ruleset, fd, handled if is_dir else handled & _FILE_RIGHTS)
            for path in writable:
                self._allow(ruleset, str(path), handled)
            for path in readable:
                if path.exists():
                    self._allow(ruleset, str(path), _READ_EXECUTE & handled)
            # Required of an unprivileged thread: nothing it starts may gain privileges (setuid).
            assert self._libc is not None  # an active sandbox found it
            self._check(self._libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
            self._call(_SYS_RESTRICT_SELF, ruleset, 0)
        finally:
            os.close(ruleset)

    # ---- Landlock ------------------------------------------------------------------------------

    def _handled(self) -> int:
        return _FS_RIGHTS.get(self.abi, _ALL_FS_RIGHTS)

    def _outside_entries(self) -> list[tuple[int, bool]]:
        """(O_PATH descriptor, is a folder) of each entry of _outside_data_dir, opened again
        only when an ancestor changed (an entry added, removed or renamed changes its mtime):
        jobs start without reopening hundreds of paths each. Call with _outside_lock held."""
        key = []
        for folder in self.ancestors:
            with contextlib.suppress(OSError):
                st = os.stat(folder)
                key.append((folder, st.st_ino, st.st_mtime_ns))
        # As git's "racy" check: a folder changed within a clock tick of the listing might
        # change again with the same mtime, so its listing is not trusted until it is older.
        racy = any(mtime >= self._outside_listed_ns - _RACY_NS for _, _, mtime in key)
        if racy or key != self._outside_key:
            self._outside_listed_ns = time.time_ns()
            for fd, _ in self._outside:
                os.close(fd)
            self._outside = []
            for path in self._outside_data_dir():
                try:
                    fd = os.open(path, os.O_PATH | os.O_CLOEXEC | os.O_NOFOLLOW)
                except OSError as e:
                    if e.errno in (errno.EMFILE, errno.ENFILE):
                        raise SandboxError(e.errno, f"Landlock: cannot hold {path} open") from e
                    continue  # gone since it was listed
                mode = os.fstat(fd).st_mode
                if stat.S_ISLNK(mode):  # became a link since it was listed
                    os.close(fd)
                    continue
                self._outside.append((fd, stat.S_ISDIR(mode)))
            self._outside_key = key
        return self._outside

    def _outside_data_dir(self) -> Iterator[str]:
        """Every entry of each ancestor of the data folder but the one leading to it, and but
        links: a path through a link reaches what its target's own place allows, and a rule
        for a link's target could be a rule for the data folder itself."""
        for below, ancestor in itertools.pairwise([self.data_dir, *self.ancestors]):
            try:
                entries = list(os.scandir(ancestor))
            except OSError:
                continue
            for entry in entries:
                if entry.path != below and not entry.is_symlink():
                    yield entry.path

    def _allow(self, ruleset: int, path: str, rights: int) -> None:
        """A rule granting `rights` beneath the folder `path`, or on the file `path`."""
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            if not stat.S_ISDIR(os.fstat(fd).st_mode):
                rights &= _FILE_RIGHTS
            self._add_rule(ruleset, fd, rights)
        finally:
            os.close(fd)

    def _add_rule(self, ruleset: int, fd: int, rights: int) -> None:
        rule = _PathBeneathAttr(rights, fd)
        self._call(_SYS_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), 0)

    def _call(self, number: int, *args) -> int:
        assert self._libc is not None
        return self._check(self._libc.syscall(number, *args))

    @staticmethod
    def _check(result: int) -> int:
        if result < 0:
            err = ctypes.get_errno()
            raise SandboxError(err, f"Landlock: {os.strerror(err)}")
        return result
