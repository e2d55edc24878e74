"""The platform's settings, one object passed to everything that needs them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from kaio_spec import catalog

DEFAULT_PORT = 8421


@dataclass(frozen=True)
class ServerConfig:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    max_instances: int = os.cpu_count() or 1
    max_instances_per_user: int | None = None  # None: a tenant may fill the platform
    retention_days: float = catalog.RETENTION_DAYS
    sandbox: bool = True  # jobs isolated (namespaces.py), else confined with Landlock (sandbox.py)
    job_network: str = "host"  # "none": each job in a network namespace of its own
    isolation: str = "auto"  # "landlock": Landlock even where namespaces work (for tests)
    # The address clients reach this server at, for the presigned URLs it hands out: never the
    # request's Host header, which the client (or anyone between) chooses. None: host and port.
    public_url: str | None = None
    backend: str = "local"  # where instances run: "local" processes, or "ray" (backends/)
    ray_address: str | None = None  # the Ray cluster's job API (http://HEAD:8265); None: start one
    # Below: not user-facing flags' business, but tests shrink them to exercise the limits.
    max_upload_bytes: int = catalog.MAX_UPLOAD_BYTES
    token_ttl_s: int = 3600
    url_ttl_s: int = 3600
    stop_grace_s: float = 10.0
    sweep_interval_s: float | None = None  # None: derived from retention_days
    log_cap_bytes: int = 100 * 1024**2  # per stream and instance; the rest is dropped
    max_processes: int = 4096  # per instance
    limits_scale: float = 1.0  # times the memory and volume an instance type promises
    ray_scale: float = 1.0  # times the vCPUs and memory a job asks of Ray per instance
    upload_stall_s: float = 60.0  # a request body with no byte for this long is given up
    header_timeout_s: float = 10.0  # a request's headers are due this long after it begins

    @property
    def base_url(self) -> str:
        """Where presigned URLs point: --public-url, else the address the server listens on."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def retention_s(self) -> float:
        return self.retention_days * 86400

    @property
    def effective_sweep_interval_s(self) -> float:
        if self.sweep_interval_s is not None:
            return self.sweep_interval_s
        # Often enough that data outlives its retention by at most a quarter of it (1 h cap).
        return min(max(self.retention_s / 4, 0.2), 3600.0)
