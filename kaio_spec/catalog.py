"""The one source of the platform's facts: instance types, frameworks, images and limits.

Everything else (client validation, the server, the JSON schema's enums, image resolution) reads
these tables; a test keeps the schema's enums equal to them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kaio_spec import statuses
from kaio_spec.statuses import JobStatus


@dataclass(frozen=True)
class InstanceType:
    name: str
    vcpus: int
    memory_gb: int
    gpus: int = 0
    gpu_model: str | None = None
    gpu_memory_gb_each: int = 0

    @property
    def family(self) -> str:
        """`g4dn` for `ml.g4dn.xlarge`."""
        return self.name.split(".")[1]

    @property
    def is_gpu(self) -> bool:
        # The seed's rule: families starting with g or p carry NVIDIA GPUs.
        return self.family[0] in "gp"

    @property
    def gpu_memory_gb(self) -> int:
        return self.gpus * self.gpu_memory_gb_each


def _family(prefix: str, sizes: list[tuple[str, int, int, int]], gpu: str | None = None, gmem=0):
    return [
        InstanceType(f"ml.{prefix}.{size}", vcpus, mem, gpus, gpu if gpus else None, gmem)
        for size, vcpus, mem, gpus in sizes
    ]


INSTANCE_TYPES: dict[str, InstanceType] = {
    t.name: t
    for t in [
        *_family("m5", [("large", 2, 8, 0), ("xlarge", 4, 16, 0), ("2xlarge", 8, 32, 0)]),
        *_family("m5", [("4xlarge", 16, 64, 0)]),
        *_family("c5", [("large", 2, 4, 0), ("xlarge", 4, 8, 0), ("2xlarge", 8, 16, 0)]),
        *_family("c5", [("4xlarge", 16, 32, 0)]),
        *_family(
            "g4dn",
            [
                ("xlarge", 4, 16, 1),
                ("2xlarge", 8, 32, 1),
                ("4xlarge", 16, 64, 1),
                ("8xlarge", 32, 128, 1),
            ],
            "NVIDIA T4",
            16,
        ),
        *_family(
            "p3",
            [("2xlarge", 8, 61, 1), ("8xlarge", 32, 244, 4), ("16xlarge", 64, 488, 8)],
            "NVIDIA V100",
            16,
        ),
        *_family(
            "g5",
            [
                ("xlarge", 4, 16, 1),
                ("2xlarge", 8, 32, 1),
                ("4xlarge", 16, 64, 1),
                ("8xlarge", 32, 128, 1),
            ],
            "NVIDIA A10G",
            24,
        ),
    ]
}

# In the seed's list, but not a SageMaker Processing instance type: kept, with a warning.
NOT_ON_HOSTED_PROCESSING = frozenset({"ml.c5.large"})

DEFAULT_INSTANCE_TYPE = "ml.m5.large"

# ---- limits (docs/protocol.md) --------------------------------------------------------------

MIN_VOLUME_GB = 1
MAX_VOLUME_GB = 50
MIN_INSTANCE_COUNT = 1
# SageMaker Processing's own limit on InstanceCount.
MAX_INSTANCE_COUNT = 100
# SageMaker Processing's own limit on MaxRuntimeInSeconds (777,600 s: 9 days).
MAX_RUNTIME_HOURS = 216
# How many times the executor submits a failed job again, at most.
MAX_RETRIES = 100
ENTRYPOINT_SUFFIXES = (".py", ".ipynb")
JOB_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$")
JOB_NAME_MAX = 63

ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
ENV_RESERVED_PREFIXES = ("SM_", "SAGEMAKER_", "KAIO_")
ENV_RESERVED_NAMES = frozenset(
    {"PATH", "PYTHONPATH", "PYTHONHOME", "LD_PRELOAD", "LD_LIBRARY_PATH"}
)
ENV_MAX_VARS = 50
ENV_MAX_BYTES = 4096

LABELS_MAX = 20
LABELS_MAX_BYTES = 4096
# The label kaio apply gives a job that needs others: a JSON list of the needed jobs' job_names
# (or keys, when those would not fit); the platform links them on the job's page (docs/protocol.md)
NEEDS_LABEL = "needs"

MAX_UPLOAD_BYTES = 5 * 1024**3
# POST /jobs/submit (a local extension): jobs in one request, and the overlay each may carry
# (a sweep cell's params.json is far less; a larger one goes by presign and PUT, streamed).
MAX_SUBMIT_JOBS = 100
MAX_SUBMIT_OVERLAY_BYTES = 64 * 1024
RETENTION_DAYS = 7

# The seed client adds these to every package's requirements.txt.
AUTOMATIC_REQUIREMENTS = ("nbconvert", "psutil", "GPUtil")

# ---- statuses (SageMaker's, plus the hosted API's upper-case spellings) -----------------------

FINAL_STATUSES = frozenset(s.value.lower() for s in statuses.FINAL_STATUSES)
HOSTED_STATUS_ALIASES = {
    "queued": JobStatus.PENDING,
    "provisioning": JobStatus.PENDING,
    "pending": JobStatus.PENDING,
    "running": JobStatus.IN_PROGRESS,
    "inprogress": JobStatus.IN_PROGRESS,
    "stopping": JobStatus.STOPPING,
    "completed": JobStatus.COMPLETED,
    "failed": JobStatus.FAILED,
    "timed_out": JobStatus.FAILED,
    "stopped": JobStatus.STOPPED,
}


def normalize_status(status: str) -> str:
    """Map any spelling the hosted or local API uses to SageMaker's (`RUNNING` -> `InProgress`):
    a JobStatus, or `status` itself when it is none of them."""
    return HOSTED_STATUS_ALIASES.get(status.strip().lower().replace("-", "_"), status)


def is_final(status: str) -> bool:
    return normalize_status(status) in statuses.FINAL_STATUSES


# ---- frameworks and images --------------------------------------------------------------------

FRAMEWORKS = ("pytorch", "tensorflow", "sklearn")
DEFAULT_REGION = "us-east-1"
DLC_ACCOUNT = "763104351884"


@dataclass(frozen=True)
class DlcVersion:
    version: str
    python: str  # "py310"
    cuda: str  # "cu121"
    os: str  # "ubuntu20.04"


DLC_VERSIONS: dict[str, tuple[DlcVersion, ...]] = {
    "pytorch": tuple(
        DlcVersion(*row)
        for row in [
            ("2.1.0", "py310", "cu121", "ubuntu20.04"),
            ("2.2.0", "py310", "cu121", "ubuntu20.04"),
            ("2.3.0", "py311", "cu121", "ubuntu20.04"),
            ("2.4.0", "py311", "cu124", "ubuntu22.04"),
            ("2.5.1", "py311", "cu124", "ubuntu22.04"),
            ("2.6.0", "py312", "cu126", "ubuntu22.04"),
            ("2.7.1", "py312", "cu128", "ubuntu22.04"),
            ("2.8.0", "py312", "cu129", "ubuntu22.04"),
        ]
    ),
    "tensorflow": tuple(
        DlcVersion(*row)
        for row in [
            ("2.13.0", "py310", "cu118", "ubuntu20.04"),
            ("2.14.1", "py310", "cu118", "ubuntu20.04"),
            ("2.16.2", "py310", "cu123", "ubuntu20.04"),
            ("2.18.0", "py310", "cu125", "ubuntu22.04"),
            ("2.19.0", "py312", "cu125", "ubuntu22.04"),
        ]
    ),
}

SKLEARN_VERSIONS = ("0.23-1", "1.0-1", "1.2-1", "1.4-2")
SKLEARN_ACCOUNTS = {
    "us-east-1": "683313688378",
    "us-east-2": "257758044811",
    "us-west-2": "246618743249",
    "eu-west-1": "141502667606",
    "eu-central-1": "492215442770",
}

# The distribution whose installed version tells which framework the user works with.
FRAMEWORK_DISTRIBUTIONS = {
    "pytorch": "torch",
    "tensorflow": "tensorflow",
    "sklearn": "scikit-learn",
}


def dlc_image(framework: str, v: DlcVersion, gpu: bool, region: str = DEFAULT_REGION) -> str:
    repo = f"{framework}-training"
    device = f"gpu-{v.python}-{v.cuda}" if gpu else f"cpu-{v.python}"
    return (
        f"{DLC_ACCOUNT}.dkr.ecr.{region}.amazonaws.com/{repo}:{v.version}-{device}-{v.os}-sagemaker"
    )


def sklearn_image(version: str, region: str = DEFAULT_REGION) -> str:
    account = SKLEARN_ACCOUNTS[region]
    return f"{account}.dkr.ecr.{region}.amazonaws.com/sagemaker-scikit-learn:{version}-cpu-py3"
