"""Helpers shared by test modules: waiting for something (a job's state, say), and running the
`kaio` command."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from kaio_spec import catalog

WAIT_S = 90.0  # a hang detector, never a timing assertion
T = TypeVar("T")


def ended(job: dict) -> bool:
    return catalog.is_final(job["status"])


def poll(
    read: Callable[[], T], until: Callable[[T], object], what: str, wait_s: float = WAIT_S
) -> T:
    """read()'s first value that `until` accepts, read again every 50 ms; AssertionError naming
    `what` and the last value read after `wait_s`."""
    deadline = time.monotonic() + wait_s
    while True:
        value = read()
        if until(value):
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"never happened: {what}; last seen: {value!r}")
        time.sleep(0.05)


def wait_for(predicate: Callable[[], T], what: str, wait_s: float = WAIT_S) -> T:
    """predicate()'s first truthy value, polled; AssertionError naming `what` after `wait_s`."""
    return poll(predicate, bool, what, wait_s)


def wait_for_job(client, unique: str, until=ended, wait_s: float = WAIT_S) -> dict:
    """`client.get_job(unique)` polled until `until(job)`."""
    return poll(lambda: client.get_job(unique), until, f"{unique} got there", wait_s)


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
