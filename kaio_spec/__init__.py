"""kaio-spec: run ML jobs from git on Kaio (SageMaker Processing) or on the local platform."""

from __future__ import annotations

__version__ = "0.1.0"

from kaio_spec.client import Client
from kaio_spec.errors import InvalidInput, JobFailure, KaioError, ManifestError, PlatformError
from kaio_spec.executor import ApplyResult, JobResult, apply
from kaio_spec.journey import connect, download, status
from kaio_spec.manifest import Manifest, load_manifest
from kaio_spec.planner import Action, Plan, PlannedJob, plan
from kaio_spec.results_table import Results, results

__all__ = [
    "Action",
    "ApplyResult",
    "Client",
    "InvalidInput",
    "JobFailure",
    "JobResult",
    "KaioError",
    "Manifest",
    "ManifestError",
    "Plan",
    "PlannedJob",
    "PlatformError",
    "Results",
    "__version__",
    "apply",
    "connect",
    "download",
    "load_manifest",
    "plan",
    "results",
    "status",
]
