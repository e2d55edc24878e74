"""What the platform is: GET /healthz (its version, the protocol extensions it offers, how jobs
are isolated) and GET /instances (the instance types it runs)."""

# No `from __future__ import annotations` in the route modules: FastAPI reads the routes'
# annotations (the dependencies) as they are written.
from fastapi import APIRouter

from kaio_spec import catalog
from kaio_spec._version import __version__
from kaio_spec.server.deps import SchedulerDep, User
from kaio_spec.server.openapi import ERRORS, HealthOut, InstancesOut
from kaio_spec.server.responses import ok

# Protocol extensions this server offers, listed in GET /healthz so that a client asks for them
# only where they exist (docs/base-packages.md). streamed-upload: a package PUT may come chunked,
# of unknown length, as the client compresses it (bodies.receive_body streams and counts it
# either way). inputs, needs-links: docs/inputs.md. jobs-submit: routes/submit.py.
FEATURES = (
    "base-packages",
    "inputs",
    "jobs-filters",
    "jobs-stop",
    "jobs-submit",
    "needs-links",
    "streamed-upload",
)

router = APIRouter()


@router.get("/healthz", response_model=HealthOut, tags=["local"])
async def healthz(scheduler: SchedulerDep):
    return ok(
        {
            "status": "ok",
            "version": __version__,
            "features": list(FEATURES),
            "jobs_confined": _jobs_confined(scheduler),
            "isolation": scheduler.sandbox.mode,  # "namespaces", "landlock" or "none"
        }
    )


def _jobs_confined(scheduler) -> bool:
    """On Ray, instances run in the platform's namespaces on each node; Landlock confines only
    processes this platform starts itself."""
    if scheduler.backend.name == "local":
        return scheduler.sandbox.mode != "none"
    return scheduler.sandbox.namespaced


@router.get("/instances", response_model=InstancesOut, responses=ERRORS)
async def instances(user: User):
    return ok(
        {
            "jobs": [
                {
                    "instance_type": t.name,
                    "vcpus": t.vcpus,
                    "memory_gb": t.memory_gb,
                    "gpus": t.gpus,
                    "gpu_memory_gb": t.gpu_memory_gb,
                    "on_your_plan": True,  # the local platform runs every type
                }
                for t in catalog.INSTANCE_TYPES.values()
            ]
        }
    )
