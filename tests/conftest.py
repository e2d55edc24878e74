"""Shared fixtures: a real `kaio server` subprocess on loopback, its users and a logged-in client.

kaio_server     session-scoped server (.url, .data_dir, .add_user(name), .stop(), .kill(),
                .restart())
server_factory  callable(**flags) -> another such server with extra CLI flags
                (max_instances=2, retention_days=0.0001, ...); all stopped at teardown
api_key         a fresh user's key on kaio_server: each test is its own tenant
client          kaio_spec.Client(kaio_server.url).login(api_key)
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parent.parent
# Jobs run in namespaces with a /tmp of their own, and see the rest of the file system
# read-only: the files tests make for jobs to wait for ($GO_FILE) are made outside /tmp, where
# jobs see them. pytest reads this when a test first asks for a temporary folder.
if Path("/var/tmp").is_dir() and os.access("/var/tmp", os.W_OK):
    os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", "/var/tmp")
START_TIMEOUT_S = 30.0
# A suite started in the background of a non-interactive shell (`pytest &`) has SIGINT ignored,
# and every process it starts inherits that: the Ctrl-C tests' `kaio` would never see theirs.
# Handled here, it is the default again in each child (a handler is reset by exec, SIG_IGN not).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


class ServerProcess:
    """A `kaio server` started as `python -m kaio_spec.cli server`, on a port it picked itself
    (--port 0, read back from the data dir's server.json), kept across restarts."""

    def __init__(
        self,
        data_dir: Path,
        env: dict[str, str] | None = None,
        python: str = sys.executable,  # the interpreter the server (and so its jobs) runs
        **flags,
    ):
        self.python = python
        self.data_dir = Path(data_dir)
        self.env = env or {}  # set for the server (and so its jobs) over the tests' own
        self.flags = flags
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}-server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        cmd = [self.python, "-m", "kaio_spec.cli", "server", "--host", "127.0.0.1"]
        cmd += ["--port", str(self.port), "--data-dir", str(self.data_dir)]
        for name, value in self.flags.items():
            flag = name.replace("_", "-")
            if isinstance(value, bool):  # an on/off switch: --sandbox, --no-sandbox
                cmd.append(f"--{flag}" if value else f"--no-{flag}")
            else:
                cmd += [f"--{flag}", str(value)]
        return cmd

    def start(self) -> ServerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        server_file = self.data_dir / "server.json"
        server_file.unlink(missing_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self._command(), stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kaio server exited at start:\n{self.log_path.read_text()}")
            try:
                info = json.loads(server_file.read_text())
            except (OSError, ValueError):
                time.sleep(0.05)
                continue
            if info.get("pid") == self.proc.pid:
                self.port = info["port"]
                try:
                    if requests.get(self.url + "/healthz", timeout=2).ok:
                        return self
                except requests.ConnectionError:
                    pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"kaio server did not start:\n{self.log_path.read_text()}")

    def add_user(self, name: str | None = None) -> str:
        """A new user (through the store library, as `kaio server user add` does); its key."""
        from kaio_spec.server.store import Store

        store = Store(self.data_dir)
        try:
            _, key = store.add_user(name or f"user-{uuid.uuid4().hex[:12]}")
        finally:
            store.close()
        return key

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> ServerProcess:
        """Stop (if running) and start again on the same port and data dir."""
        self.stop()
        return self.start()

    def __repr__(self) -> str:
        return f"<kaio server {self.url} data_dir={self.data_dir}>"


@pytest.fixture(scope="session", autouse=True)
def _no_real_home(tmp_path_factory):
    """No test may read the developer's saved login or start a platform in their home: every
    command the tests run sees a home, a config folder and a local port of the test session's."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        for name in ("KAIO_API_BASE", "KAIO_API_KEY", "KAIO_SERVER_DATA_DIR"):
            mp.delenv(name, raising=False)
        mp.setenv("KAIO_HOME", str(root / ".kaio"))
        mp.setenv("XDG_CONFIG_HOME", str(root / "config"))
        mp.setenv("KAIO_LOCAL_PORT", str(port))
        yield root


@pytest.fixture(scope="session")
def kaio_server(tmp_path_factory):
    # Plenty of capacity: tests share this server and must not queue behind one another.
    server = ServerProcess(tmp_path_factory.mktemp("kaio-server") / "data", max_instances=16)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def server_factory(tmp_path_factory):
    started: list[ServerProcess] = []

    def make(**flags) -> ServerProcess:
        server = ServerProcess(tmp_path_factory.mktemp("kaio-server") / "data", **flags)
        started.append(server)
        return server.start()

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def api_key(kaio_server) -> str:
    return kaio_server.add_user()


@pytest.fixture
def client(kaio_server, api_key):
    from kaio_spec import Client  # written by the client issue; imported only when asked for

    return Client(kaio_server.url).login(api_key)
