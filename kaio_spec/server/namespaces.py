"""Jobs in namespaces of their own, with bubblewrap (`bwrap`, the tool Flatpak runs apps with).

Each instance, and each venv/pip build for a job, runs as `bwrap ... -- command` in new user,
mount, PID and IPC namespaces, with every capability dropped:

- the whole file system read-only (the server's Python, its site-packages, its home);
- the platform's data folder replaced by an empty read-only folder, in which only the job's own
  folders are mounted again: its working folder (writable), its resource config and the
  environments (read-only): other jobs' names, the secret and the database are not there;
- a private /proc (only the job's own processes: no other job's /proc/<pid>/environ), /tmp and
  /dev/shm (memory, gone with the job), a minimal /dev plus the GPUs the job was given;
- HOME: a folder of the tenant's own in the data folder, kept across its jobs (~/.cache/pip,
  ~/.ipython), never another tenant's;
- network: the host's, unless `kaio server --job-network none` (then a loopback of its own).

PID 1 of the namespace is a shell (INIT) that runs the command, waits for it and exits with its
status: when it exits, or bwrap is killed, the kernel kills every process left in the namespace,
so nothing a job started outlives it. bwrap's own init would do the same, but bwrap exits
without reaping it, so the job's CPU time and peak memory would be lost to wait4's resource
usage (the instance's telemetry); the shell is reaped by bwrap, the command by the shell. As
PID 1 it gets no signal it has no handler for: its handler for SIGTERM and SIGINT passes them
to its process group (the command's), as an unconfined instance's group would get them.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import psutil

# PID 1 inside: runs "$@", passes SIGTERM/SIGINT to its group, exits with the command's status.
INIT = (
    "trap 'trap \"\" TERM INT; kill -TERM 0' TERM; trap 'trap \"\" TERM INT; kill -INT 0' INT; "
    '"$@" & child=$!; '
    "while :; do wait $child 2>/dev/null; code=$?; kill -0 $child 2>/dev/null || exit $code; done"
)
# Device nodes every CUDA program needs besides its GPUs' own /dev/nvidiaN.
NVIDIA_CONTROL = (
    "/dev/nvidiactl",
    "/dev/nvidia-uvm",
    "/dev/nvidia-uvm-tools",
    "/dev/nvidia-modeset",
)
# Variables that point into the server's home: a job gets its tenant's home instead.
HOME_VARIABLES = (
    "XDG_CACHE_HOME",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "XDG_STATE_HOME",
    "XDG_RUNTIME_DIR",
    "IPYTHONDIR",
    "JUPYTER_CONFIG_DIR",
    "JUPYTER_DATA_DIR",
    "PIP_CACHE_DIR",
    "TMPDIR",
)


def bwrap() -> str | None:
    return shutil.which("bwrap")


def unavailable() -> str | None:
    """Why jobs cannot run in namespaces here (no bwrap, user namespaces refused), or None."""
    exe = bwrap()
    if exe is None:
        return "bubblewrap (bwrap) is not installed"
    probe = [exe, "--unshare-user", "--unshare-pid", "--cap-drop", "ALL", "--ro-bind", "/", "/"]
    probe += ["--proc", "/proc", "--dev", "/dev", "--", "true"]
    try:
        done = subprocess.run(probe, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"bwrap did not run ({e})"
    if done.returncode != 0:
        return f"bwrap cannot make namespaces here: {done.stderr.strip() or done.returncode}"
    return None


@dataclass
class Jail:
    """What one process sees of the data folder and of the machine (paths as on the host)."""

    data_dir: str
    home: Path
    writable: list[Path] = field(default_factory=list)
    readable: list[Path] = field(default_factory=list)
    gpus: list[int] = field(default_factory=list)
    network: bool = True
    tmp_bytes: int | None = None  # the most /tmp and /dev/shm (memory) may hold


def command(argv: list[str], jail: Jail, cwd: Path | str) -> list[str]:
    """`argv` run by bwrap in namespaces of its own, seeing what `jail` says."""
    exe = bwrap()
    assert exe is not None
    args = [exe, "--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts"]
    args += ["--unshare-cgroup-try", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    args += ["--as-pid-1"]  # INIT is PID 1 (see the module's docstring)
    if not jail.network:
        args.append("--unshare-net")
    args += ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    size = ["--size", str(jail.tmp_bytes)] if jail.tmp_bytes else []
    args += [*size, "--tmpfs", "/tmp", *size, "--tmpfs", "/dev/shm"]
    for path in platform_under_private_mounts():  # the server's Python, back over the tmpfs
        args += ["--ro-bind", path, path]
    for node in _gpu_nodes(jail.gpus):
        args += ["--dev-bind", node, node]
    # An empty folder over the data folder (made read-only last), then the job's own in it.
    args += ["--tmpfs", jail.data_dir]
    binds = [("--bind", path) for path in [*jail.writable, jail.home]]
    binds += [("--ro-bind", path) for path in jail.readable if path.exists()]
    # A folder before what is inside it: a writable environment inside the read-only ones.
    for option, folder in sorted(binds, key=lambda bind: len(bind[1].parts)):
        args += [option, str(folder), str(folder)]
    args += ["--remount-ro", jail.data_dir, "--chdir", str(cwd)]
    return [*args, "--", "/bin/sh", "-c", INIT, "kaio-init", *argv]


PRIVATE_MOUNTS = ("/tmp", "/dev/shm")  # each job gets an empty one of its own


@functools.cache
def platform_under_private_mounts() -> tuple[str, ...]:
    """The folders of the server's own Python (its installation, its venv, this package) that lie
    under /tmp or /dev/shm: a job's private tmpfs would hide them, and with them the interpreter
    every instance runs (a checkout and its .venv in /tmp, as CI makes them). Read-only to jobs,
    as they are wherever else they lie."""
    here = Path(__file__).resolve().parents[2]  # the folder holding kaio_spec (a checkout)
    places = {sys.prefix, sys.base_prefix, sys.exec_prefix, str(here)}
    places.add(str(Path(sys.executable).resolve().parent.parent))
    under = [
        os.path.realpath(p)
        for p in places
        if any(os.path.realpath(p).startswith(m + "/") for m in PRIVATE_MOUNTS)
    ]
    # Outermost first, and none inside another (a venv inside the checkout is bound with it).
    kept: list[str] = []
    for path in sorted(set(under), key=len):
        if not any(path == k or path.startswith(k + "/") for k in kept):
            kept.append(path)
    return tuple(kept)


def environment(env: dict[str, str], home: Path) -> dict[str, str]:
    """The job's environment in its namespaces: its tenant's HOME, its private /tmp."""
    env = {k: v for k, v in env.items() if k not in HOME_VARIABLES}
    env["HOME"] = str(home)
    env["TMPDIR"] = "/tmp"
    return env


def _gpu_nodes(gpus: list[int]) -> list[str]:
    if not gpus:
        return []
    wanted = [f"/dev/nvidia{g}" for g in gpus] + list(NVIDIA_CONTROL)
    wanted += glob.glob("/dev/nvidia-caps/*")
    return [node for node in wanted if os.path.exists(node)]


def signal_job(pid: int, sig: int) -> None:
    """Send `sig` (SIGTERM, SIGINT or SIGKILL) to the job bwrap `pid` runs: SIGTERM and SIGINT
    to INIT, which passes them to the command's process group; SIGKILL, or a job whose INIT is
    not started yet, to bwrap's group: the namespace dies with bwrap."""
    inits: list[psutil.Process] = []
    if sig != signal.SIGKILL:
        with contextlib.suppress(psutil.Error):
            inits = psutil.Process(pid).children()
    for init in inits:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(init.pid, sig)
    if not inits:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)


def exit_code(code: int) -> int:
    """The command's exit code as subprocess says it: bwrap exits 128+N for a command that
    signal N killed (as a shell does), which is taken for the signal."""
    if 128 < code < 128 + signal.NSIG:
        return -(code - 128)
    return code
