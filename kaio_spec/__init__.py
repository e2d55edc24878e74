"""kaio-spec: run ML jobs from git on Kaio (SageMaker Processing) or on the local platform."""

from __future__ import annotations

__version__ = "0.1.0"

from kaio_spec.errors import InvalidInput, JobFailure, KaioError, ManifestError, PlatformError

__all__ = [
    "InvalidInput",
    "JobFailure",
    "KaioError",
    "ManifestError",
    "PlatformError",
    "__version__",
]
