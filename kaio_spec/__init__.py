"""kaio-spec: run ML jobs from git on Kaio (SageMaker Processing) or on the local platform.

The public names load on first use (PEP 562), so that `import kaio_spec`, and the `kaio` command
and server that import its submodules, pay only for what they use. At run time a public name is one line in
_PUBLIC; it is also listed in __all__ and imported under TYPE_CHECKING, for linters, type checkers
and IDEs (tests/test_imports.py checks that the three agree).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from kaio_spec._version import __version__

# public name -> the module that defines it (the public API: tests/test_public_api.py)
_PUBLIC: dict[str, str] = {
    "Action": "kaio_spec.planner",
    "ApplyResult": "kaio_spec.executor",
    "Client": "kaio_spec.client",
    "InvalidInput": "kaio_spec.errors",
    "JobResult": "kaio_spec.executor",
    "KaioError": "kaio_spec.errors",
    "Manifest": "kaio_spec.manifest",
    "ManifestError": "kaio_spec.errors",
    "Plan": "kaio_spec.planner",
    "PlannedJob": "kaio_spec.planner",
    "PlatformError": "kaio_spec.errors",
    "Results": "kaio_spec.results_table",
    "apply": "kaio_spec.executor",
    "connect": "kaio_spec.journey",
    "download": "kaio_spec.journey",
    "load_manifest": "kaio_spec.manifest",
    "plan": "kaio_spec.planner",
    "results": "kaio_spec.results_table",
    "status": "kaio_spec.journey",
}

__all__ = [
    "Action",
    "ApplyResult",
    "Client",
    "InvalidInput",
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

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ loads them
    from kaio_spec.client import Client
    from kaio_spec.errors import InvalidInput, KaioError, ManifestError, PlatformError

    # apply: the function, which executor/__init__ puts over its submodule of that name
    from kaio_spec.executor import ApplyResult, JobResult, apply  # type: ignore[no-redef]
    from kaio_spec.journey import connect, download, status
    from kaio_spec.manifest import Manifest, load_manifest
    from kaio_spec.planner import Action, Plan, PlannedJob, plan
    from kaio_spec.results_table import Results, results


def __getattr__(name: str) -> object:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'kaio_spec' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
