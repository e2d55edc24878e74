"""`kaio server --backend ray` with no --ray-address: a single-node Ray of the platform's own.

Its own module, named to run before tests/test_backends.py: that Ray's job agent takes Ray's
default port (52365), which the session's 3-node cluster holds once started.
"""

from __future__ import annotations

import socket

import pytest
import ray_cluster
from conftest import ServerProcess
from server_support import FINAL, Api
from support import poll

RAY_SCALE = 0.25  # an ml.m5.large asks Ray for 0.5 CPU and 2 GiB: two on this machine's 2 cores
RAY_AGENT_PORT = 52365


def agent_port_taken() -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", RAY_AGENT_PORT)) == 0


@pytest.mark.ray
def test_without_an_address_the_platform_runs_a_ray_of_its_own(tmp_path, monkeypatch):
    """`kaio server --backend ray` alone: a single-node Ray for a quick try, gone with it."""
    pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[ray]'")
    if agent_port_taken():
        pytest.skip(f"another Ray's job agent holds port {RAY_AGENT_PORT} on this machine")
    import conftest
    import psutil

    monkeypatch.setattr(conftest, "START_TIMEOUT_S", 180.0)  # Ray starts first
    flags = {"backend": "ray", "ray_scale": RAY_SCALE}  # this machine's 2 cores: 2 instances
    server = ServerProcess(tmp_path / "data", env=ray_cluster.LOOPBACK_ENV, **flags)
    server.start()
    try:
        api = Api(server.url, server.add_user())
        code = "import os\nprint('on', os.environ['SM_CURRENT_HOST'])\n"
        unique = api.submit({"train.py": code}, job_name="solo", instance_count=2)
        # A hang detector, longer than Api.wait's: a Ray just started takes its time.
        job = poll(lambda: api.job(unique), lambda j: j["status"] in FINAL, unique, 240)
        assert job["status"] == "Completed", job["failure_reason"]
        assert b"on algo-2\n" in api.outputs(unique)["logs/algo-2/stdout.log"]
        ray_processes = psutil.Process(server.proc.pid).children(recursive=True)
        assert ray_processes
    finally:
        server.stop()
    _, alive = psutil.wait_procs(ray_processes, timeout=30)
    assert alive == [], alive
