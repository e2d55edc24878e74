"""Processes a job left behind: found by a mark in their environment, killed once it has ended.

A job's end and a stop signal each instance's process group (docs/protocol.md). A process that left
the group (a daemon, `start_new_session=True`) would outlive its job, where SageMaker's
container would take it down with it. So each instance, and the pip that installs its
requirements, starts with KAIO_JOB_RUN=<platform>:<job> in its environment, which every process
it starts inherits; after jobs end, the platform looks through the processes of its own OS user
for its mark and SIGKILLs those whose job no longer runs.

The platform is named by a hash of its data folder: servers side by side never touch each
other's jobs, and a restarted server knows the processes of the jobs its predecessor ran. The
mark is read from /proc/<pid>/environ, the environment a process started with: a process that
changes its own environment still carries it, one started again with a cleaned environment
(a deliberate escape) does not. Linux only (elsewhere nothing is found).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
from collections.abc import Callable
from pathlib import Path

MARK = "KAIO_JOB_RUN"
# How soon after its job's end a left-behind process is killed, at the latest.
SCAN_INTERVAL_S = 2.0


def platform_id(data_dir: Path) -> str:
    return hashlib.sha256(os.path.realpath(data_dir).encode()).hexdigest()[:16]


def mark(platform: str, unique: str) -> str:
    """The value of MARK for a job's processes."""
    return f"{platform}:{unique}"


def marked_processes(platform: str) -> dict[int, str]:
    """pid -> job, for each process of this OS user that started with the platform's mark."""
    needle = f"\0{MARK}={platform}:".encode()
    uid = os.getuid()
    found: dict[int, str] = {}
    with contextlib.suppress(OSError), os.scandir("/proc") as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                if entry.stat().st_uid != uid:
                    continue
                with open(f"/proc/{entry.name}/environ", "rb") as f:
                    env = b"\0" + f.read()
            except OSError:  # gone, or not ours to read
                continue
            at = env.find(needle)
            if at >= 0:
                start = at + len(needle)
                end = env.find(b"\0", start)
                found[int(entry.name)] = env[start : end if end >= 0 else None].decode(
                    "utf-8", "replace"
                )
    return found


def kill_leftovers(platform: str, running: Callable[[], set[str]]) -> int:
    """SIGKILL the platform's marked processes whose job is not in `running()`; how many.

    `running` is asked after the scan: a job that starts meanwhile has no process in it yet
    (a job is running before its first process starts), so nothing of it can be taken for a
    leftover."""
    found = marked_processes(platform)
    if not found:
        return 0
    alive = running()
    killed = 0
    for pid, job in found.items():
        if job in alive:
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            # Its group too: what it started without the mark (a cleaned environment) and left
            # in its group goes with it. Marked processes start in sessions of their own, so
            # their groups are the job's; the platform's own is never signalled, whatever.
            group = os.getpgid(pid)
            if group != os.getpgrp():
                os.killpg(group, signal.SIGKILL)
            os.kill(pid, signal.SIGKILL)
            killed += 1
    return killed


def sweep_homes(
    homes: Path, cutoff_s: float, busy: set[str], remove: Callable[[Path], None]
) -> None:
    """Delete the HOME of each tenant (namespaces.py: `homes/<tenant>`) that is not in `busy`
    (no job of its queued or running) and that no job of its used since `cutoff_s` (a job
    touches it as it ends): caches a tenant no longer uses go with its jobs' data."""
    with contextlib.suppress(OSError), os.scandir(homes) as entries:
        for entry in entries:
            with contextlib.suppress(OSError):
                if entry.name not in busy and entry.stat().st_mtime < cutoff_s:
                    remove(Path(entry.path))
