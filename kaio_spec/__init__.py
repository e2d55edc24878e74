"""kaio-spec: run ML jobs from git on Kaio (SageMaker Processing) or on the local platform."""

from __future__ import annotations

__version__ = "0.1.0"

from kaio_spec.client import Client
from kaio_spec.errors import InvalidInput, JobFailure, KaioError, ManifestError, PlatformError
from kaio_spec.manifest import Manifest, load_manifest

__all__ = [
    "Client",
    "InvalidInput",
    "JobFailure",
    "KaioError",
    "Manifest",
    "ManifestError",
    "PlatformError",
    "__version__",
    "load_manifest",
]
