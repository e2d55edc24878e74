"""On a machine with an NVIDIA GPU: a GPU job on the Ray backend gets the GPU, a CPU job does not.

    .venv/bin/python benchmarks/ray_gpu_check.py

Needs the `ray` extra and torch in the platform's Python. Starts `kaio server --backend ray` with
no --ray-address (a single-node Ray of its own, which finds the GPU), runs an ml.g5.xlarge job and
an ml.m5.large job that each print what torch sees, and exits 1 unless the GPU job sees a GPU
(its CUDA_VISIBLE_DEVICES Ray's assignment) and the CPU job none (CUDA_VISIBLE_DEVICES empty).
A check, not a benchmark: it prints what each job saw.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]  # ray.py beside us
sys.path.insert(0, str(HERE.parent / "tests"))
import conftest  # noqa: E402
import ray_cluster  # noqa: E402
from server_support import Api  # noqa: E402

SEES = """
import json, os, torch
json.dump({"cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "available": torch.cuda.is_available(),
           "count": torch.cuda.device_count()}, open("sees.json", "w"))
"""


def main() -> int:
    conftest.START_TIMEOUT_S = 300.0  # Ray starts first
    data = Path(tempfile.mkdtemp(prefix="kaio-ray-gpu-")) / "data"
    server = conftest.ServerProcess(data, env=ray_cluster.LOOPBACK_ENV, backend="ray")
    server.start()
    try:
        api = Api(server.url, server.add_user())
        seen = {}
        for itype in ("ml.g5.xlarge", "ml.m5.large"):
            unique = api.submit(
                {"train.py": SEES}, job_name=itype.replace(".", "-"), instance_type=itype
            )
            job = api.wait(unique)
            seen[itype] = (
                json.loads(api.outputs(unique)["sees.json"])
                if job["status"] == "Completed"
                else job
            )
            print(itype, seen[itype])
    finally:
        server.stop()
    gpu, cpu = seen["ml.g5.xlarge"], seen["ml.m5.large"]
    ok = (
        gpu.get("available") is True and gpu.get("count") == 1 and gpu.get("cuda") not in ("", None)
    )
    ok = ok and cpu.get("available") is False and cpu.get("cuda") == ""
    print("GPU check:", "passed" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
