"""Where a job's instances run: the runner interface the scheduler drives, and its backends.

The scheduler keeps the queue, the tenants' turns and the capacity; a backend only turns one job
into a run. A run has JobRun's public face (runner.py): `start(on_release, on_end)`, `stop(reason,
grace_s)`, `samples()`, and `unique`, `job`, `instances` (each with its `gpus`), `listing` and
`thread`. Two backends: "local" (each instance a process on this machine, runner.JobRun) and "ray"
(each job a Ray job on a Ray cluster, backends/ray.py, imported only when chosen). A third one
(Kubernetes Jobs, SageMaker) is one more module with a class like RayBackend, and one more line
in `make`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from kaio_spec.errors import PlatformError
from kaio_spec.server import gpu, storage
from kaio_spec.server.config import ServerConfig
from kaio_spec.server.runner import JobRun
from kaio_spec.server.sandbox import Sandbox
from kaio_spec.server.store import Store

BACKENDS = ("local", "ray")


class BackendUnavailable(PlatformError):
    """The backend chosen cannot be used: not installed, or its cluster does not answer."""


class Run(Protocol):
    """One job's run, from its start to its final status (runner.JobRun is one)."""

    unique: str
    job: dict
    instances: list  # each with `.gpus`, the machine GPUs the scheduler handed it
    listing: list | None  # its outputs' listing, once it ended
    thread: threading.Thread

    def start(self, on_release: Callable, on_end: Callable) -> None:
        """Run it; `on_release(run)` once its capacity is free, `on_end(run)` once it ended."""

    def stop(self, reason: str, grace_s: float | None = None) -> None:
        """From any thread: "user", runner.MAX_RUNTIME_REASON or runner.SHUTDOWN_REASON."""

    def samples(self) -> dict[str, list[list]]:
        """Each instance's use over time so far."""


class Backend(Protocol):
    name: str
    # The GPUs of this machine the scheduler hands out itself; none where the backend places
    # GPUs (Ray does), so the scheduler's GPU accounting leaves those jobs alone.
    machine_gpus: list[int]

    def run(self, job: dict, gpus: list[list[int]], alone: bool) -> Run:
        """A run of `job` (not started), its instances holding `gpus`."""

    def reattach(self, job: dict) -> Run | None:
        """After a restart, a run following a job that is still running where it runs (not
        started); None where nothing of it can be running any more (the job then fails)."""

    def close(self) -> None:
        """At the platform's shutdown, after its runs were stopped."""


@dataclass(frozen=True)
class Parts:
    """What every backend is made with: the platform's settings, store, storage and sandbox."""

    config: ServerConfig
    store: Store
    layout: storage.Layout
    sandbox: Sandbox
    platform: str  # leftovers.platform_id: the mark of this platform's processes

    def job_run(self, job: dict, gpus: list[list[int]], machine_gpus: list[int], alone: bool):
        """runner.JobRun's arguments for `job`, in order."""
        files = self.layout.job(job["unique_job_name"])
        return (
            job,
            self.config,
            self.store,
            files,
            self.layout.envs,
            gpus,
            machine_gpus,
            alone,
            self.sandbox,
            self.platform,
        )


class LocalBackend:
    """Each instance a process on this machine (runner.JobRun)."""

    name = "local"

    def __init__(self, parts: Parts):
        self.parts = parts
        self.machine_gpus = [g.index for g in gpu.detect_gpus()]

    def run(self, job: dict, gpus: list[list[int]], alone: bool) -> JobRun:
        return JobRun(*self.parts.job_run(job, gpus, self.machine_gpus, alone))

    def reattach(self, job: dict) -> None:
        return None  # its processes were this platform's: they died with it (or were killed)

    def close(self) -> None:
        pass


def make(parts: Parts) -> Backend:
    """The backend `parts.config.backend` names."""
    if parts.config.backend == "ray":
        try:
            from kaio_spec.server.backends.ray import RayBackend  # imports ray: only when chosen
        except ImportError as e:
            raise BackendUnavailable(
                f"--backend ray needs Ray: pip install 'kaio-spec[ray]' ({e})"
            ) from None

        return RayBackend(parts)
    return LocalBackend(parts)
