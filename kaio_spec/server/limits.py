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
import os
import stat
import threading
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
