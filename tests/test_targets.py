"""Targets: which API a command talks to, with which key, the local platform started on demand
(real `kaio` subprocesses, a real background server on a free port, HOME and the config folder
in tmp), `kaio login`, and the errors that say what to do."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import socket
import stat
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest
import requests

from kaio_spec import targets
from kaio_spec.errors import InvalidInput

STARTED = "started the local Kaio platform at http://127.0.0.1:{port} (data in ~/.kaio/server; stop it with `kaio server stop`)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Home:
    """A user's machine in tmp: HOME, XDG_CONFIG_HOME and a free KAIO_LOCAL_PORT, no KAIO_
    variable of the test runner's."""

    def __init__(self, root: Path):
        self.root = root
        self.home = root / "home"
        self.home.mkdir()
        self.config_home = root / "config"
        self.port = free_port()
        self.data_dir = self.home / ".kaio" / "server"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KAIO_")}
        env.update(
            HOME=str(self.home),
            XDG_CONFIG_HOME=str(self.config_home),
            KAIO_LOCAL_PORT=str(self.port),
        )
        env.update(extra)
        return env

    def kaio(self, *args: str, input: str | None = None, **extra: str):
        return subprocess.run(
            [sys.executable, "-m", "kaio_spec.cli", *args],
            capture_output=True,
            text=True,
            env=self.env(**extra),
            input=input if input is not None else "",
            timeout=120,
        )

    def server_pid(self) -> int | None:
        try:
            return json.loads((self.data_dir / "server.json").read_text())["pid"]
        except (OSError, ValueError, KeyError):
            return None

    def server_processes(self) -> list[psutil.Process]:
        """Every `kaio server` process serving this home's data dir."""
        found = []
        for p in psutil.process_iter(["cmdline"]):
            cmd = p.info.get("cmdline") or []
            if "server" in cmd and str(self.data_dir) in cmd:
                found.append(p)
        return found


@pytest.fixture
def home(tmp_path):
    h = Home(tmp_path)
    yield h
    # Whatever happened, no background server of this test outlives it.
    for p in h.server_processes():
        with contextlib.suppress(psutil.Error):
            p.kill()
            p.wait(10)


def answers(url: str) -> bool:
    try:
        return requests.get(url + "/healthz", timeout=2).ok
    except requests.RequestException:
        return False


# ---- the local platform, started on demand ------------------------------------------------------


def test_first_command_starts_the_local_platform_and_the_next_reuse_it(home):
    first = home.kaio("jobs")
    assert first.returncode == 0, first.stderr
    assert first.stderr.splitlines()[0] == STARTED.format(port=home.port)
    assert "Traceback" not in first.stderr
    pid = home.server_pid()
    assert pid is not None and answers(home.url)
    # Detached: its own session, so the terminal's Ctrl-C and hang-up never reach it.
    assert os.getsid(pid) != os.getsid(0)

    key_file = home.data_dir / targets.KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(home.data_dir.stat().st_mode) == 0o700
    key = key_file.read_text().strip()
    assert key and key not in first.stdout + first.stderr

    second = home.kaio("jobs", "-o", "json")
    assert second.returncode == 0, second.stderr
    assert "started" not in second.stderr
    assert json.loads(second.stdout) == {"jobs": [], "count": 0}
    assert home.server_pid() == pid
    assert key_file.read_text().strip() == key
    assert len(home.server_processes()) == 1

    stop = home.kaio("server", "stop")
    assert stop.returncode == 0, stop.stderr
    assert f"stopped the local Kaio platform at {home.url}" in stop.stderr
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not answers(home.url)
    assert not (home.data_dir / "server.json").exists()

    again = home.kaio("server", "stop")
    assert again.returncode == 0
    assert "no local Kaio platform is running" in again.stderr

    # Started again later: same data, same key.
    third = home.kaio("jobs")
    assert third.returncode == 0, third.stderr
    assert STARTED.format(port=home.port) in third.stderr
    assert key_file.read_text().strip() == key


@pytest.mark.slow
def test_jobs_submitted_to_the_local_platform_are_there_next_time(home):
    """The local key works for the client too, and a restarted platform keeps its jobs."""
    assert home.kaio("jobs").returncode == 0
    key = (home.data_dir / targets.KEY_FILE).read_text().strip()
    from kaio_spec import Client

    client = Client(home.url).login(key)
    code = home.root / "code"
    code.mkdir()
    (code / "train.py").write_text("print('hi')\n")
    unique = client.submit_job(directory=code, job_name="kept")["unique_job_name"]
    assert home.kaio("server", "stop").returncode == 0
    listed = home.kaio("jobs", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    assert [j["unique_job_name"] for j in json.loads(listed.stdout)["jobs"]] == [unique]


def test_concurrent_first_commands_start_one_server(home):
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "kaio_spec.cli", "jobs"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=home.env(),
        )
        for _ in range(3)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], results
    started = [err for _, err in results if "started the local Kaio platform" in err]
    assert len(started) == 1, results
    assert len(home.server_processes()) == 1
    key = (home.data_dir / targets.KEY_FILE).read_text().strip()
    assert requests.post(home.url + "/login", json={"api_key": key}, timeout=10).ok


def test_something_else_on_the_local_port_is_named(home):
    class NotKaio(BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"<html>hello</html>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), NotKaio)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = home.kaio("jobs", KAIO_LOCAL_PORT=str(server.server_address[1]))
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 1
    assert "something that is not a Kaio server answers at" in result.stderr
    assert "KAIO_LOCAL_PORT" in result.stderr
    assert "Traceback" not in result.stderr
    assert not home.server_processes()


def test_a_server_that_cannot_start_says_why(home):
    """The data dir is held by another server (on another port): the start fails, and the
    message carries the server's own reason and where its log is."""
    from conftest import ServerProcess

    other = ServerProcess(home.data_dir).start()  # a free port of its own, same data dir
    try:
        result = home.kaio("jobs")
    finally:
        other.stop()
    assert result.returncode == 1
    assert "the local Kaio platform did not start" in result.stderr
    assert "another kaio server is using it" in result.stderr
    assert "server.log" in result.stderr


def test_api_and_key_never_start_anything(home, kaio_server, api_key):
    result = home.kaio("jobs", "--api", kaio_server.url, KAIO_API_KEY=api_key)
    assert result.returncode == 0, result.stderr
    assert "started" not in result.stderr
    assert not home.data_dir.exists()
    assert not answers(home.url)


def test_server_stop_with_a_stale_server_file(home):
    home.data_dir.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (home.data_dir / "server.json").write_text(
        json.dumps({"url": home.url, "pid": dead.pid, "port": home.port})
    )
    result = home.kaio("server", "stop")
    assert result.returncode == 0
    assert "no local Kaio platform is running" in result.stderr
    assert not (home.data_dir / "server.json").exists()


# ---- errors that say what to do ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "code", "message"),
    [
        (
            ["--api", "http://127.0.0.1:9"],
            {},
            2,
            "no API key for http://127.0.0.1:9: export KAIO_API_KEY",
        ),
        (["--api", "ftp://x"], {"KAIO_API_KEY": "k"}, 2, "--api: 'ftp://x' is not an http(s) URL"),
        (["--api", "localhost:8421"], {"KAIO_API_KEY": "k"}, 2, "is not an http(s) URL"),
        ([], {"KAIO_API_BASE": "nope", "KAIO_API_KEY": "k"}, 2, "KAIO_API_BASE: 'nope'"),
        (["--api", "{url}"], {"KAIO_API_KEY": "kaio_wrong"}, 2, "refused the key in $KAIO_API_KEY"),
        (["--api", "{closed}"], {"KAIO_API_KEY": "k"}, 1, "cannot reach http://127.0.0.1:"),
        ([], {"KAIO_LOCAL_PORT": "eighty"}, 2, "KAIO_LOCAL_PORT: 'eighty' is not a port number"),
    ],
)
def test_target_errors_are_one_line(home, kaio_server, args, env, code, message):
    args = [
        a.replace("{url}", kaio_server.url).replace("{closed}", f"http://127.0.0.1:{free_port()}")
        for a in args
    ]
    result = home.kaio("jobs", *args, **env)
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert not home.data_dir.exists()  # nothing was started for any of these


def test_a_key_for_the_local_platform_it_does_not_know(home):
    """$KAIO_API_KEY set for another server, with the local platform as the target."""
    result = home.kaio("jobs", KAIO_API_KEY="kaio_from_elsewhere")
    assert result.returncode == 2
    assert "unset KAIO_API_KEY to use the local platform's own key" in result.stderr


# ---- kaio login ----------------------------------------------------------------------------------


def test_login_checks_the_key_and_saves_it_privately(home, kaio_server, api_key, client):
    code = home.root / "code"
    code.mkdir()
    (code / "train.py").write_text("print('hi')\n")
    unique = client.submit_job(directory=code, job_name="mine")["unique_job_name"]

    result = home.kaio(
        "login", "--api", kaio_server.url + "/", "--api-key-stdin", input=api_key + "\n"
    )
    assert result.returncode == 0, result.stderr
    assert f"logged in to {kaio_server.url}" in result.stderr
    assert api_key not in result.stdout + result.stderr
    config = home.config_home / "kaio" / "config.json"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert stat.S_IMODE(config.parent.stat().st_mode) == 0o700
    assert json.loads(config.read_text()) == {"api_base": kaio_server.url, "api_key": api_key}
    assert not list(config.parent.glob(".*tmp*"))  # written atomically: no leftovers

    # Later commands go there with that key, and start nothing.
    listed = home.kaio("jobs", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    assert [j["unique_job_name"] for j in json.loads(listed.stdout)["jobs"]] == [unique]
    assert not home.data_dir.exists()

    # The saved key is never sent to another address.
    other = home.kaio("jobs", "--api", f"http://127.0.0.1:{free_port()}")
    assert other.returncode == 2
    assert "no API key for" in other.stderr


def test_login_refuses_a_wrong_key_and_saves_nothing(home, kaio_server):
    result = home.kaio("login", "--api", kaio_server.url, "--api-key-stdin", input="kaio_wrong\n")
    assert result.returncode == 2
    assert f"{kaio_server.url} refused the key given" in result.stderr
    assert not (home.config_home / "kaio" / "config.json").exists()


@pytest.mark.slow
def test_login_unreachable_and_without_a_terminal(home):
    closed = f"http://127.0.0.1:{free_port()}"
    unreachable = home.kaio("login", "--api", closed, "--api-key-stdin", input="k\n")
    assert unreachable.returncode == 1
    assert f"cannot reach {closed}" in unreachable.stderr
    no_tty = home.kaio("login", "--api", closed)
    assert no_tty.returncode == 2
    assert "--api-key-stdin" in no_tty.stderr
    empty = home.kaio("login", "--api", closed, "--api-key-stdin", input="\n")
    assert empty.returncode == 2
    # A key is never taken from the command line.
    flag = home.kaio("login", "--api", closed, "--api-key", "k")
    assert flag.returncode == 2
    assert "No such option" in flag.stderr


def test_login_prompt_does_not_echo_the_key(home, kaio_server, api_key):
    """On a terminal (a pty here), the key is asked for with echo off."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: becomes `kaio login` on the pty
        env = home.env()
        os.execve(
            sys.executable,
            [sys.executable, "-m", "kaio_spec.cli", "login", "--api", kaio_server.url],
            env,
        )
    seen = b""
    sent = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        if not sent and b"API key for" in seen:
            os.write(fd, api_key.encode() + b"\n")
            sent = True
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert sent, seen
    assert os.waitstatus_to_exitcode(status) == 0, seen
    assert api_key.encode() not in seen
    assert b"logged in to" in seen
    assert json.loads((home.config_home / "kaio" / "config.json").read_text())["api_key"] == api_key


def test_an_unreadable_config_is_named(home):
    config = home.config_home / "kaio" / "config.json"
    config.parent.mkdir(parents=True)
    config.write_text("{not json")
    result = home.kaio("jobs")
    assert result.returncode == 2
    assert str(config) in result.stderr
    assert "kaio login" in result.stderr


# ---- resolve(): the order, in process --------------------------------------------------------------


def test_resolve_order(home, monkeypatch):
    for name, value in home.env().items():
        monkeypatch.setenv(name, value)
    for name in ("KAIO_API_BASE", "KAIO_API_KEY", "KAIO_SERVER_DATA_DIR", "KAIO_HOME"):
        monkeypatch.delenv(name, raising=False)

    t = targets.resolve()
    assert (t.api_base, t.api_key, t.source) == (home.url, None, "local")
    assert t.api_key is None and "key=none" in repr(t)

    home.data_dir.mkdir(parents=True)
    (home.data_dir / targets.KEY_FILE).write_text("kaio_local\n")
    t = targets.resolve()
    assert (t.api_base, t.api_key, t.key_source) == (home.url, "kaio_local", "local key file")

    targets.save_config("https://saved.example/", "kaio_saved")
    t = targets.resolve()
    assert (t.api_base, t.api_key, t.source) == ("https://saved.example", "kaio_saved", "config")

    monkeypatch.setenv("KAIO_API_BASE", "https://env.example")
    t = targets.resolve()
    assert (t.api_base, t.api_key, t.source) == ("https://env.example", None, "KAIO_API_BASE")

    t = targets.resolve("https://saved.example")
    assert (t.api_base, t.api_key, t.source) == ("https://saved.example", "kaio_saved", "--api")

    monkeypatch.setenv("KAIO_API_KEY", "kaio_env")
    t = targets.resolve("https://flag.example/")
    assert (t.api_base, t.api_key, t.key_source) == (
        "https://flag.example",
        "kaio_env",
        "KAIO_API_KEY",
    )
    assert "kaio_env" not in repr(t)

    # KAIO_HOME moves the data dir; KAIO_SERVER_DATA_DIR (kaio server's own) wins over it.
    monkeypatch.setenv("KAIO_HOME", str(home.root / "kh"))
    assert targets.local_data_dir() == home.root / "kh" / "server"
    monkeypatch.setenv("KAIO_SERVER_DATA_DIR", str(home.root / "sd"))
    assert targets.local_data_dir() == home.root / "sd"

    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/path")  # ignored, as the XDG spec says
    assert targets.config_path() == home.home / ".config" / "kaio" / "config.json"


def test_check_url():
    assert targets.check_url(" https://api.kaion5.com/ ", "x") == "https://api.kaion5.com"
    for bad in ("api.kaion5.com", "file:///etc", "http://", "https://a?b=1"):
        with pytest.raises(InvalidInput, match="is not an http"):
            targets.check_url(bad, "--api")


def test_the_readme_first_command_on_a_fresh_machine(home):
    """`kaio apply examples/specs/quickstart.yaml --yes` with no server started by hand, no key
    and no login: the local platform starts, the job runs, its outputs are on disk."""
    import shutil

    examples = home.root / "examples"
    repo_examples = Path(__file__).resolve().parent.parent / "examples"
    shutil.copytree(repo_examples, examples, ignore=shutil.ignore_patterns("outputs", ".kaio"))
    result = subprocess.run(
        [sys.executable, "-m", "kaio_spec.cli", "apply", "specs/quickstart.yaml", "--yes"],
        capture_output=True,
        text=True,
        env=home.env(),
        cwd=examples,
        stdin=subprocess.DEVNULL,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert STARTED.format(port=home.port) in result.stderr
    out = examples / "specs" / "outputs" / "quickstart" / "train"
    assert json.loads((out / "metrics.json").read_text())["loss"] < 0.01
    assert (out / "model.json").is_file()


def test_a_stale_local_key_file_says_how_to_recover(home):
    assert home.kaio("jobs").returncode == 0
    key_file = home.data_dir / targets.KEY_FILE
    key_file.write_text("kaio_not_a_key_of_this_platform\n")
    refused = home.kaio("jobs")
    assert refused.returncode == 2
    assert "refused the local platform's key" in refused.stderr
    assert "delete that file and run the command again" in refused.stderr
    key_file.unlink()
    again = home.kaio("jobs")
    assert again.returncode == 0, again.stderr
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_text().strip() != "kaio_not_a_key_of_this_platform"


def test_server_commands_by_hand_use_the_same_data_dir_as_the_auto_started_platform(home):
    kaio_home = home.root / "kaio-home"
    added = home.kaio("server", "user", "add", "alice", KAIO_HOME=str(kaio_home))
    assert added.returncode == 0, added.stderr
    assert (kaio_home / "server").is_dir()
    listed = home.kaio("server", "user", "list", KAIO_HOME=str(kaio_home))
    assert "alice" in listed.stdout
    # Elsewhere (the default home) there is no such user.
    assert "alice" not in home.kaio("server", "user", "list").stdout


# ---- kaio_spec.connect(): the same choice from Python --------------------------------------------

CONNECT = (
    "import json, sys, kaio_spec\n"
    "c = kaio_spec.connect(*sys.argv[1:])\n"
    "jobs = c.get_jobs()['jobs']\n"
    "print(json.dumps({'api_base': c.api_base, 'jobs': [j['unique_job_name'] for j in jobs]}))\n"
)


def python_connect(home, *args: str, **env: str) -> dict:
    r = subprocess.run(
        [sys.executable, "-c", CONNECT, *args],
        capture_output=True,
        text=True,
        env=home.env(**env),
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    return {**json.loads(r.stdout), "stderr": r.stderr}


def test_connect_on_a_fresh_machine_starts_the_local_platform_the_cli_then_reuses(home):
    got = python_connect(home)
    assert got["api_base"] == home.url and got["jobs"] == []
    assert got["stderr"].splitlines()[0] == STARTED.format(port=home.port)
    pid = home.server_pid()
    assert pid is not None
    listed = home.kaio("jobs", "-o", "json")  # the CLI finds the same platform and key
    assert listed.returncode == 0, listed.stderr
    assert "started" not in listed.stderr and home.server_pid() == pid
    assert "started" not in python_connect(home)["stderr"]  # and so does the next connect()
    assert home.kaio("server", "stop").returncode == 0


def test_connect_uses_the_saved_login_kaio_api_base_and_api(home, kaio_server, api_key, client):
    code = home.root / "code"
    code.mkdir()
    (code / "train.py").write_text("print('hi')\n")
    unique = client.submit_job(directory=code, job_name="mine")["unique_job_name"]
    login = home.kaio("login", "--api", kaio_server.url, "--api-key-stdin", input=api_key + "\n")
    assert login.returncode == 0, login.stderr

    got = python_connect(home)
    assert (got["api_base"], got["jobs"]) == (kaio_server.url, [unique])
    assert not home.data_dir.exists()  # nothing started

    other_key = kaio_server.add_user()
    got = python_connect(home, KAIO_API_BASE=kaio_server.url, KAIO_API_KEY=other_key)
    assert got["jobs"] == []  # another tenant: the environment wins over the saved login
    got = python_connect(home, kaio_server.url, KAIO_API_KEY=other_key)
    assert (got["api_base"], got["jobs"]) == (kaio_server.url, [])
    assert not home.data_dir.exists()
