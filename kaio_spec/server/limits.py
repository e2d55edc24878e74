"""What a job's instance type and volume promise, held while it runs (runner.JobRun enforces it).

- memory: an instance whose processes hold more than its type's memory ends the job Failed;
- volume: a job whose files (working folders, private temp folders) take more than its
  volume_size_gb ends Failed ("VolumeExceeded"); in namespaces, /tmp and /dev/shm are memory
  capped at that size too;
- processes: an instance running more than `max_processes` ends the job Failed;
- logs: each stream of each instance keeps its first `log_cap_bytes`, then a marker line.

Memory, processes and volume are read from the telemetry the platform samples anyway (psutil,
every runner.SAMPLE_INTERVAL_S; the volume less often), so they hold on any machine, without
the cgroups a server may not be allowed to make: what an instance does between two samples can
go past them for that long.
"""

from __future__ import annotations

import contextlib
import functools
import os
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from kaio_spec import catalog
from kaio_spec.server.config import ServerConfig

GIB = 1024**3
VOLUME_EXCEEDED = "VolumeExceeded"


def size_text(n: float) -> str:
    """4 GiB, 128 MiB."""
    if n >= GIB:
        return f"{n / GIB:.4g} GiB"
    if n >= 1024**2:
        return f"{n / 1024**2:.4g} MiB"
    return f"{int(n)} bytes"


@dataclass(frozen=True)
class Limits:
    instance_type: str
    memory_bytes: int
    volume_gb: int
    volume_bytes: int
    max_processes: int
    log_cap_bytes: int

    @classmethod
    def of(cls, job: dict, config: ServerConfig) -> Limits:
        itype = catalog.INSTANCE_TYPES[job["instance_type"]]
        volume_gb = job["volume_size_gb"]
        return cls(
            instance_type=itype.name,
            memory_bytes=int(itype.memory_gb * GIB * config.limits_scale),
            volume_gb=volume_gb,
            volume_bytes=int(volume_gb * GIB * config.limits_scale),
            max_processes=config.max_processes,
            log_cap_bytes=config.log_cap_bytes,
        )

    def memory_exceeded(self, host: str) -> str:
        return f"{host} used more than the {size_text(self.memory_bytes)} of {self.instance_type}"

    def processes_exceeded(self, host: str) -> str:
        return (
            f"{host} ran more than {self.max_processes} processes at once, the limit of an "
            "instance on this platform"
        )

    def volume_exceeded(self) -> str:
        return (
            f"{VOLUME_EXCEEDED}: the job's files took more than the "
            f"{size_text(self.volume_bytes)} of its volume_size_gb={self.volume_gb}"
        )


def disk_usage(folders: list[Path]) -> int:
    """Bytes of disk the files beneath `folders` take (links not followed; a sparse file counts
    what it holds, as on a real volume)."""
    total = 0
    stack = [str(f) for f in folders]
    while stack:
        folder = stack.pop()
        with contextlib.suppress(OSError), os.scandir(folder) as entries:
            for entry in entries:
                with contextlib.suppress(OSError):
                    st = entry.stat(follow_symlinks=False)
                    total += st.st_blocks * 512
                    if stat.S_ISDIR(st.st_mode):
                        stack.append(entry.path)
    return total


class LogPump:
    """Copies what an instance writes to one stream (a pipe) into its log file, up to `cap`
    bytes; then writes a marker line and drops the rest (still read, so the job never blocks)."""

    CHUNK = 65536

    def __init__(self, read_fd: int, log: BinaryIO, cap: int, name: str):
        self.read_fd = read_fd
        self.log = log
        self.cap = cap
        self.written = 0
        self.thread = threading.Thread(target=self._pump, name=name, daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        try:
            while chunk := os.read(self.read_fd, self.CHUNK):
                if self.written >= self.cap:
                    continue
                part = chunk[: self.cap - self.written]
                self.written += len(part)
                self._write(part)
                if self.written >= self.cap:
                    self._write(
                        f"\nkaio: this log reached its cap of {size_text(self.cap)}; the rest "
                        "of it was dropped\n".encode()
                    )
        finally:
            os.close(self.read_fd)

    def _write(self, data: bytes) -> None:
        with contextlib.suppress(ValueError, OSError):  # closed by a job that ended meanwhile
            self.log.write(data)


class PidsCgroups:
    """A pids cgroup per instance, where the server may make them: the kernel then refuses the
    instance's fork past `max_processes` at once, however fast it forks (a fork bomb harms no
    other job), where sampling would see it only at the next sample. cgroup v1's pids hierarchy,
    or v2 where the server's cgroup already delegates the pids controller to its children;
    anything else (no such cgroup, no right to make one) leaves the sampled count alone."""

    def __init__(self, platform: str):
        self.root: Path | None = None  # where instances' cgroups are made, beside the server's
        self.prefix = f"kaio-{platform}-"  # theirs: another platform's are never touched
        for parent in _pids_parents():
            probe = parent / f"{self.prefix}probe"
            try:
                probe.mkdir(exist_ok=True)
                probe.rmdir()
            except OSError:
                continue
            self.root = parent
            for left in parent.glob(self.prefix + "*"):  # of a server that was killed
                self.remove(left)
            break

    def create(self, name: str, max_processes: int) -> Path | None:
        """A new cgroup for one instance, or None where there are none to be had."""
        if self.root is None:
            return None
        folder = self.root / (self.prefix + name)
        try:
            folder.mkdir(exist_ok=True)
            (folder / "pids.max").write_text(str(max_processes))
        except OSError:
            return None
        return folder

    @staticmethod
    def command(folder: Path | None, argv: list[str]) -> list[str]:
        """`argv` started inside cgroup `folder`: a shell moves itself in, then becomes argv,
        so that nothing of the instance is ever started outside it."""
        if folder is None:
            return argv
        enter = 'echo $$ > "$0" && exec "$@"'
        return ["/bin/sh", "-c", enter, str(folder / "cgroup.procs"), *argv]

    @staticmethod
    def refused_forks(folder: Path | None) -> int:
        """How many forks the cgroup refused (pids.events' "max")."""
        if folder is None:
            return 0
        with contextlib.suppress(OSError, ValueError):
            for line in (folder / "pids.events").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "max":
                    return int(value)
        return 0

    @staticmethod
    def remove(folder: Path | None, wait_s: float = 0.0) -> None:
        """Once its processes are gone (a cgroup with processes cannot be removed: killed ones
        may take a moment to go), waiting up to `wait_s` for them."""
        deadline = time.monotonic() + wait_s
        while folder is not None:
            try:
                folder.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                if time.monotonic() >= deadline:
                    return
                time.sleep(0.02)


@functools.cache
def pids_cgroups(platform: str) -> PidsCgroups:
    """The platform's PidsCgroups, made once per process."""
    return PidsCgroups(platform)


def _pids_parents() -> list[Path]:
    """The server's own cgroup in the pids hierarchy (v1), or in the unified one (v2) if it
    delegates pids to its children."""
    found = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            rel = path.lstrip("/")
            if "pids" in controllers.split(","):
                found.append(Path("/sys/fs/cgroup/pids") / rel)
            elif controllers == "":
                for mount in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
                    control = mount / rel / "cgroup.subtree_control"
                    with contextlib.suppress(OSError):
                        if "pids" in control.read_text().split():
                            found.append(mount / rel)
    return found
