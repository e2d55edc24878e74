"""Helpers shared by test modules: following a job to a state, and running the `kaio` command."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from kaio_spec import catalog

WAIT_S = 90.0  # a hang detector, never a timing assertion


def ended(job: dict) -> bool:
    return catalog.is_final(job["status"])


def wait_for_job(client, unique: str, until=ended, wait_s: float = WAIT_S) -> dict:
    """Poll `client.get_job(unique)` until `until(job)`; AssertionError with the last job seen."""
    deadline = time.monotonic() + wait_s
    job: dict = {}
    while time.monotonic() < deadline:
        job = client.get_job(unique)
        if until(job):
            return job
        time.sleep(0.05)
    raise AssertionError(f"{unique} never got there; last seen {job}")


def run_kaio(
    *args: str,
    env: dict | None = None,
    cwd: Path | None = None,
    input: str = "",
    timeout: float = 120,
) -> subprocess.CompletedProcess:
    """`kaio ARGS` as a subprocess, with none of the runner's KAIO_ variables but `env`'s, so
    that only what the test gives decides which platform and key it uses."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("KAIO_")}
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "kaio_spec.cli", *args],
        capture_output=True,
        text=True,
        env=full,
        cwd=cwd,
        input=input,
        timeout=timeout,
    )
