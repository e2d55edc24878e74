"""Instance processes started ahead of their jobs, each already inside cgroups of its own.

Moving a process into a cgroup of a v1 hierarchy makes it wait for an RCU grace period (the
kernel's lock on every thread group: ~10 ms, however little else the machine does): paid as each
instance starts, it would delay every job by that much. So the platform keeps as many processes
ready as it has instance slots, started in the background: each a shell that has entered a fresh
cgroup of its own (its pids.max set) and waits on a pipe. An instance takes one and writes it,
through the pipe, the shell text that makes it the instance: change to its working folder, export
its environment, exec its command (every word quoted). Nothing of the instance runs outside its
cgroups, as when it starts them itself (limits.InstanceCgroups.command).

Used where instances would be moved into cgroups (InstanceCgroups has parents) and are started
as bwrap commands or unconfined; not with Landlock, whose confinement comes from the thread that
starts the process. A shell whose pipe closes unwritten (the server went away) exits.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
import shlex
import subprocess
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from kaio_spec.server.limits import InstanceCgroups, instance_cgroups

log = logging.getLogger("kaio.server")

# Enters each cgroup.procs given as an argument, then runs what the pipe (its stdin) says; if
# the pipe closes with nothing said (the server went away), leaves and removes its cgroups.
WAIT = (
    'for procs in "$@"; do echo $$ > "$procs" || exit 125; done; . /dev/stdin; '
    'for procs in "$@"; do echo $$ > "${procs%/*/*}/cgroup.procs"; rmdir "${procs%/*}"; '
    "done 2>/dev/null; exit 125"
)
NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass
class Ready:
    """One process waiting in its cgroups; `stdout` and `stderr` are its pipes' read ends."""

    proc: subprocess.Popen
    cgroups: dict[str, Path]
    stdout: int
    stderr: int
    control: int  # the write end of its stdin
    pipe: tuple[int, int]  # (st_dev, st_ino) of that pipe: the descriptor is still it

    def run(self, text: bytes) -> bool:
        """Hand it `text` (script()); False, and it is discarded, if it is gone or its pipe is
        no longer the descriptor kept (then nothing is written there)."""
        if self.proc.poll() is not None or not self._still_its_pipe():
            log.warning("a prestarted process was lost (exit %s)", self.proc.returncode)
            self.discard()
            return False
        try:
            view = memoryview(text)
            while view:
                view = view[os.write(self.control, view) :]
        except OSError:  # it died meanwhile (BrokenPipeError)
            self.discard()
            return False
        os.close(self.control)
        self.control = -1
        return True

    def _still_its_pipe(self) -> bool:
        try:
            st = os.fstat(self.control)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self.pipe

    def discard(self) -> None:
        """End it (it exits when its pipe closes; killed if its pipe is not ours any more)."""
        if self.control >= 0 and self._still_its_pipe():
            os.close(self.control)
        else:
            with contextlib.suppress(OSError):
                self.proc.kill()
        self.control = -1
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        for fd in (self.stdout, self.stderr):
            with contextlib.suppress(OSError):
                os.close(fd)


def script(argv: list[str], env: dict[str, str], cwd: Path | str) -> bytes | None:
    """The shell text that turns a waiting process into `argv` run in `cwd` with exactly `env`;
    None where a variable's name is not a shell name (start that instance directly then)."""
    if not all(NAME_RE.fullmatch(name) for name in env):
        return None
    # cd sets PWD and OLDPWD, which a process started directly would not have.
    words = [f"cd -- {shlex.quote(str(cwd))} || exit 127", "unset PWD OLDPWD"]
    if env:
        words.append("export " + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()))
    words.append("exec " + " ".join(shlex.quote(a) for a in argv) + " </dev/null")
    # One compound command: a text cut short (the server killed mid-write) runs nothing.
    return ("{ " + "; ".join(words) + "; }\n").encode("utf-8", "surrogateescape")


class Pool:
    """Up to `size` processes ready in cgroups of `cgroups` (their limits are set as an instance
    takes one: InstanceCgroups.restrict), refilled in the background."""

    def __init__(self, cgroups: InstanceCgroups, size: int):
        self.cgroups = cgroups
        self.size = size
        self._ready: deque[Ready] = deque()
        self._lock = threading.Lock()
        self._wanted = threading.Event()
        self._closed = False
        self._numbers = itertools.count()
        # Started from this thread, which lives as long as the server: bwrap's --die-with-parent
        # kills a sandbox when the *thread* that started it ends.
        threading.Thread(target=self._fill, name="prestart", daemon=True).start()
        self._wanted.set()

    def take(self) -> Ready | None:
        """A ready process (its pipe to be written with Ready.run), or None if none is yet."""
        with self._lock:
            ready = self._ready.popleft() if self._ready else None
        self._wanted.set()
        return ready

    def close(self) -> None:
        """End the processes not taken and remove their cgroups; no more are started."""
        with self._lock:
            self._closed = True
            left, self._ready = list(self._ready), deque()
        for ready in left:
            ready.discard()
            self.cgroups.remove(ready.cgroups, wait_s=1.0)

    def _fill(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            while True:
                with self._lock:
                    if self._closed or len(self._ready) >= self.size:
                        break
                try:
                    ready = self._start()
                except Exception:  # the thread must live on (see __init__)
                    # e.g. out of processes: the next take starts directly, and asks again
                    log.exception("starting a process ahead of an instance")
                    break
                with self._lock:
                    closed = self._closed
                    if not closed:
                        self._ready.append(ready)
                if closed:  # the thread lives on: what it started dies with it (above)
                    ready.discard()
                    self.cgroups.remove(ready.cgroups, wait_s=1.0)
                    break

    def _start(self) -> Ready:
        cgroups = self.cgroups.make(f"ready-{next(self._numbers)}")
        procs = sorted({str(folder / "cgroup.procs") for folder in cgroups.values()})
        (out, out_w), (err, err_w), (ctl, ctl_w) = os.pipe(), os.pipe(), os.pipe()
        try:
            proc = subprocess.Popen(
                ["/bin/sh", "-c", WAIT, "kaio-ready", *procs],
                cwd="/",
                env={},  # the instance's own comes through the pipe
                stdin=ctl,
                stdout=out_w,
                stderr=err_w,
                start_new_session=True,
            )
        except OSError:
            for fd in (out, err, ctl_w):
                os.close(fd)
            self.cgroups.remove(cgroups)
            raise
        finally:
            for fd in (out_w, err_w, ctl):
                os.close(fd)
        st = os.fstat(ctl_w)
        return Ready(proc, cgroups, out, err, ctl_w, (st.st_dev, st.st_ino))


_pools: dict[str, Pool] = {}
_pools_lock = threading.Lock()


def pool(platform: str, size: int) -> Pool:
    """The platform's pool (one per server process), started on first use."""
    with _pools_lock:
        if platform not in _pools:
            _pools[platform] = Pool(instance_cgroups(platform), size)
        return _pools[platform]


def close(platform: str) -> None:
    """End the platform's ready processes, at shutdown (what the jobs took ends with them)."""
    with _pools_lock:
        taken = _pools.pop(platform, None)
    if taken is not None:
        taken.close()
