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
    retention_days: float = catalog.RETENTION_DAYS
    sandbox: bool = True  # jobs confined with Landlock where the kernel has it (sandbox.py)
    # The address clients reach this server at, for the presigned URLs it hands out: never the
    # request's Host header, which the client (or anyone between) chooses. None: host and port.
    public_url: str | None = None
    # Below: not user-facing flags' business, but tests shrink them to exercise the limits.
    max_upload_bytes: int = catalog.MAX_UPLOAD_BYTES
    token_ttl_s: int = 3600
    url_ttl_s: int = 3600
    stop_grace_s: float = 10.0
    sweep_interval_s: float | None = None  # None: derived from retention_days
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
