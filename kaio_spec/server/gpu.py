"""Local NVIDIA GPUs: detection, and which GPUs each instance of a job sees.

Kept apart and pure (detection aside) so the assignment rules can be tested without a GPU.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

from kaio_spec.catalog import InstanceType

QUERY = ["--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"]
USAGE_QUERY = ["--query-gpu=index,utilization.gpu,memory.used", "--format=csv,noheader,nounits"]


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    memory_mb: int


def parse_gpus(text: str) -> list[Gpu]:
    """Rows of `nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader[,nounits]`."""
    gpus = []
    for line in text.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 3 or not fields[0].isdigit():
            continue
        memory = fields[2].split()[0] if fields[2] else "0"  # "16384 MiB" without nounits
        gpus.append(Gpu(int(fields[0]), fields[1], int(memory) if memory.isdigit() else 0))
    return gpus


def _nvidia_smi(args: list[str]) -> str | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        done = subprocess.run([exe, *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def detect_gpus() -> list[Gpu]:
    """This machine's NVIDIA GPUs; none where nvidia-smi is absent or fails."""
    out = _nvidia_smi(QUERY)
    return parse_gpus(out) if out else []


def gpu_usage() -> dict[int, tuple[float, float]]:
    """index -> (utilization %, memory used MB), for telemetry; empty without nvidia-smi."""
    out = _nvidia_smi(USAGE_QUERY) or ""
    usage = {}
    for line in out.splitlines():
        fields = [f.strip() for f in line.split(",")]
        try:
            usage[int(fields[0])] = (float(fields[1]), float(fields[2]))
        except (ValueError, IndexError):
            continue
    return usage


def gpus_needed(itype: InstanceType, count: int, machine_gpus: int) -> int:
    """GPUs a job holds while it runs: the catalog's share per instance, where GPUs exist."""
    return itype.gpus * count if itype.is_gpu and machine_gpus else 0


def assign_gpus(
    itype: InstanceType, count: int, free: list[int], machine: list[int]
) -> list[list[int]] | None:
    """The GPU indices each instance gets, or None if they do not fit in `free` now.

    A CPU type gets none. With no GPUs on the machine a GPU type gets none too (it runs on the
    CPU). A job asking for more GPUs than the machine has runs alone (the scheduler sees to that,
    passing free == machine) and its instances share the machine's GPUs round robin."""
    per = itype.gpus if itype.is_gpu else 0
    if per == 0 or not machine:
        return [[] for _ in range(count)]
    if per * count <= len(free):
        return [free[i * per : (i + 1) * per] for i in range(count)]
    if per * count > len(machine) and sorted(free) == sorted(machine):
        share = min(per, len(machine))
        return [
            [machine[(i * share + k) % len(machine)] for k in range(share)] for i in range(count)
        ]
    return None


def cuda_visible_devices(
    itype: InstanceType, assigned: list[int], machine: list[int]
) -> str | None:
    """CUDA_VISIBLE_DEVICES for one instance: its GPUs; "" hides GPUs from a CPU instance type
    (as on a CPU instance in the cloud); None leaves it unset (no GPUs here at all)."""
    if not machine:
        return None
    if not itype.is_gpu:
        return ""
    return ",".join(str(i) for i in assigned)
