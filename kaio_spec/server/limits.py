"""What a job's instance type and volume promise, held while it runs (runner.JobRun enforces it).

- memory: an instance whose processes hold more than its type's memory ends the job Failed;
- volume: a job whose files (working folders, private temp folders, in namespaces its tenant's
  HOME) take more than its volume_size_gb ends Failed ("VolumeExceeded"); in namespaces, /tmp
  and /dev/shm are memory capped at that size too;
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


# Per controller: the file holding the limit (cgroup v1's name, v2's) and the event that says
# the limit was hit (v1's and v2's file, the key in it).
CONTROLLERS = {
    "pids": (("pids.max", "pids.max"), ("pids.events", "pids.events", "max")),
    "memory": (
        ("memory.limit_in_bytes", "memory.max"),
        ("memory.oom_control", "memory.events", "oom_kill"),
    ),
}


class InstanceCgroups:
    """A cgroup per instance where the server may make them: the kernel then holds the instance
    to `max_processes` (refusing its forks past it, however fast it forks: a fork bomb harms no
    other job) and, on cgroup v2, to its type's memory (the OOM killer ends it), where sampling
    would see either only at the next sample. cgroup v1's pids hierarchy, or v2 where the
    server's cgroup already delegates pids and memory to its children; without them (no such
    cgroup, no right to make one) the sampled figures alone hold."""

    def __init__(self, platform: str):
        self.prefix = f"kaio-{platform}-"  # theirs: another platform's are never touched
        self.parents: dict[str, tuple[Path, int]] = {}  # controller -> (folder, cgroup version)
        self.held: set[Path] = set()  # made and not removed yet: never swept
        for controller, parent, version in _cgroup_parents():
            # Moving a process into a v1 cgroup costs ~10 ms (an RCU grace period): one move,
            # for pids (which sampling cannot hold), not a second one for memory (which it can).
            if (controller, version) == ("memory", 1):
                continue
            probe = parent / f"{self.prefix}probe"
            try:
                probe.mkdir(exist_ok=True)
                probe.rmdir()
            except OSError:
                continue
            self.parents.setdefault(controller, (parent, version))
            for left in parent.glob(self.prefix + "*"):  # of a server that was killed
                self.remove({controller: left})

    def create(self, name: str, limits: Limits) -> dict[str, Path]:
        """The cgroups of one instance (controller -> folder; none where there are none)."""
        return self.restrict(self.make(name), limits)

    def make(self, name: str) -> dict[str, Path]:
        """Cgroups named `name`, without limits yet; kept from sweep() until remove()d."""
        made: dict[str, Path] = {}
        for controller, (parent, _) in self.parents.items():
            folder = parent / (self.prefix + name)
            try:
                folder.mkdir(exist_ok=True)
            except OSError:
                continue
            made[controller] = folder
            self.held.add(folder)
        return made

    def restrict(self, cgroups: dict[str, Path], limits: Limits) -> dict[str, Path]:
        """Those of `cgroups` whose limit could be set to what `limits` says."""
        values = {"pids": limits.max_processes, "memory": limits.memory_bytes}
        kept: dict[str, Path] = {}
        for controller, folder in cgroups.items():
            limit_file = CONTROLLERS[controller][0][self.parents[controller][1] - 1]
            try:
                (folder / limit_file).write_text(str(values[controller]))
            except OSError:
                continue
            kept[controller] = folder
        return kept

    @staticmethod
    def command(cgroups: dict[str, Path], argv: list[str]) -> list[str]:
        """`argv` started inside `cgroups`: a shell moves itself in, then becomes argv, so that
        nothing of the instance is ever started outside them."""
        procs = sorted({str(folder / "cgroup.procs") for folder in cgroups.values()})
        if not procs:
            return argv
        enter = 'for procs in "$@"; do [ "$procs" = -- ] && break; echo $$ > "$procs"; shift; '
        enter += 'done; shift; exec "$@"'
        return ["/bin/sh", "-c", enter, "kaio-cgroups", *procs, "--", *argv]

    def hit(self, cgroups: dict[str, Path], controller: str) -> bool:
        """Whether the instance's `controller` cgroup refused a fork or killed for memory."""
        folder = cgroups.get(controller)
        if folder is None:
            return False
        version = self.parents[controller][1]
        events, key = CONTROLLERS[controller][1][version - 1], CONTROLLERS[controller][1][2]
        with contextlib.suppress(OSError, ValueError):
            for line in (folder / events).read_text().splitlines():
                name, _, value = line.partition(" ")
                if name == key:
                    return int(value) > 0
        return False

    def remove(self, cgroups: dict[str, Path], wait_s: float = 0.0) -> None:
        """Once their processes are gone (a cgroup with processes cannot be removed: killed ones
        may take a moment to go), waiting up to `wait_s` for them."""
        deadline = time.monotonic() + wait_s
        for folder in set(cgroups.values()):
            self.held.discard(folder)
            while True:
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() >= deadline:
                        break
                    time.sleep(0.02)

    def sweep(self, running: set[str]) -> None:
        """Remove the cgroups of jobs not in `running` that nothing is left in (what a job left
        behind, on a platform without namespaces, keeps its cgroup until it is killed)."""
        for parent, _ in self.parents.values():
            for folder in parent.glob(self.prefix + "*"):
                rest = folder.name[len(self.prefix) :]
                if folder in self.held:
                    continue
                if not any(rest.startswith(unique + "-") for unique in running):
                    self.remove({"": folder})


@functools.cache
def instance_cgroups(platform: str) -> InstanceCgroups:
    """The platform's InstanceCgroups, made once per process."""
    return InstanceCgroups(platform)


def _cgroup_parents() -> list[tuple[str, Path, int]]:
    """(controller, the server's own cgroup for it, cgroup version): v1 hierarchies of pids and
    memory, and the unified one (v2) for each of them it delegates to its children."""
    found = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            rel = path.lstrip("/")
            for controller in CONTROLLERS:
                if controller in controllers.split(","):
                    found.append((controller, Path("/sys/fs/cgroup") / controller / rel, 1))
            if controllers == "":
                for mount in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
                    with contextlib.suppress(OSError):
                        delegated = (mount / rel / "cgroup.subtree_control").read_text().split()
                        found += [(c, mount / rel, 2) for c in CONTROLLERS if c in delegated]
    return found
