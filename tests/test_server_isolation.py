"""Jobs in namespaces of their own (bubblewrap), on a real server running real job processes:
what one hostile tenant's job tried against the others on a shared platform fails, and what
ordinary jobs do (temp files, caches in HOME, notebooks, several instances) still works."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
from pathlib import Path

import pytest
from conftest import ServerProcess
from server_support import Api
from test_server_sandbox import EXAMPLES, build_backend_probe, run_probes

from kaio_spec.server import auth, leftovers, namespaces, storage
from kaio_spec.server.store import DB_FILE, Store

WHY_NOT = namespaces.unavailable()
needs_namespaces = pytest.mark.skipif(WHY_NOT is not None, reason=f"no namespaces: {WHY_NOT}")


@pytest.fixture
def platform(tmp_path):
    """A server whose own HOME is a folder of the test's: what a job plants there is seen."""
    home = tmp_path / "server-home"
    home.mkdir()
    server = ServerProcess(tmp_path / "data", env={"HOME": str(home)}, max_instances=4)
    server.start()
    server.home = home
    yield server
    server.stop()


# Ordinary things a job does that a read-only, shared file system used to refuse.
ORDINARY = textwrap.dedent(
    """
    import json, os, pathlib, tempfile
    report = {}
    def attempt(name, action):
        try:
            report[name] = action()
        except OSError as e:
            report[name] = type(e).__name__ + ": " + str(e)
    def write(path, text):
        path = pathlib.Path(path).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path.read_text()
    attempt("/tmp/x", lambda: write("/tmp/x", "tmp"))
    attempt("tempfile", lambda: tempfile.mkstemp()[1].startswith("/tmp/"))
    attempt("/dev/shm", lambda: write("/dev/shm/x", "shm"))
    attempt("cache", lambda: write("~/.cache/kaio-test/model.bin", "cached"))
    attempt("~/.mylib", lambda: write("~/.mylib", os.environ["TENANT"]))
    attempt("work", lambda: write("result.txt", "result"))
    attempt("home seen before", lambda: sorted(os.listdir(os.path.expanduser("~"))))
    json.dump(report, open("report.json", "w"))
    """
)


def ordinary_job(api: Api, tenant: str) -> dict:
    unique = api.submit({"train.py": ORDINARY}, env={"TENANT": tenant})
    job = api.wait(unique)
    assert job["status"] == "Completed", job
    outputs = api.outputs(unique)
    assert outputs["result.txt"] == b"result"
    return json.loads(outputs["report.json"])


@needs_namespaces
def test_ordinary_jobs_write_tmp_home_and_their_folder_with_a_home_per_tenant(platform):
    alice = Api(platform.url, platform.add_user())
    bob = Api(platform.url, platform.add_user())
    health = alice.get("/healthz").json()
    assert health["isolation"] == "namespaces" and health["jobs_confined"] is True
    assert "namespaces of their own" in platform.log_path.read_text()

    first = ordinary_job(alice, "alice")
    assert first == {
        "/tmp/x": "tmp",
        "tempfile": True,
        "/dev/shm": "shm",
        "cache": "cached",
        "~/.mylib": "alice",
        "work": "result",
        "home seen before": [".cache", ".mylib"],
    }
    # Her HOME is kept for her next job; bob's is another, empty; neither is the server's.
    assert ordinary_job(alice, "alice")["home seen before"] == [".cache", ".mylib"]
    assert ordinary_job(bob, "bob")["home seen before"] == [".cache", ".mylib"]
    assert not (platform.home / ".mylib").exists()


@needs_namespaces
def test_a_notebook_and_a_two_instance_job_run_in_namespaces(platform):
    api = Api(platform.url, platform.add_user())
    notebook = (EXAMPLES / "notebook" / "analysis.ipynb").read_text()
    nb = api.submit({"analysis.ipynb": notebook}, entrypoint="analysis.ipynb")
    pair = api.submit(
        {"train.py": "import os; open(os.environ['SM_CURRENT_HOST'], 'w').write('done')"},
        instance_count=2,
    )
    assert api.wait(nb)["status"] == "Completed", api.get(f"/jobs/{nb}/logs").text
    assert api.wait(pair)["status"] == "Completed"
    outputs = {rel for rel in api.outputs(pair) if not rel.startswith("logs/")}
    assert outputs == {"algo-1/algo-1", "algo-2/algo-2"}


# Alice plants code where Python (a .pth file in site-packages) and IPython (a startup file)
# run it at start: the server's site-packages and her HOME, as the shared server's user.
PLANT = textwrap.dedent(
    """
    import json, os, pathlib
    payload = "import os; p = os.environ.get('PLANTED_MARK'); "
    payload += "p and open(p, 'a').write(os.environ.get('BOBS_SECRET', 'ran'))\\n"
    report = {}
    for name, path in [
        ("site-packages", os.environ["SITE_PACKAGES"] + "/zz_kaio_planted.pth"),
        ("ipython startup", "~/.ipython/profile_default/startup/00-planted.py"),
    ]:
        path = pathlib.Path(path).expanduser()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(payload)
            report[name] = "written"
        except OSError as e:
            report[name] = type(e).__name__
    json.dump(report, open("report.json", "w"))
    """
)
BOBS_NOTEBOOK = {
    "cells": [
        {
            "cell_type": "code",
            "execution_count": None,
            "metadata": {},
            "outputs": [],
            "source": ["open('notebook-ran.txt', 'w').write('ok')"],
        }
    ],
    "metadata": {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
    },
    "nbformat": 4,
    "nbformat_minor": 5,
}


@needs_namespaces
def test_code_one_tenant_plants_for_python_or_ipython_never_runs_in_anothers_job(platform):
    site_packages = Path(sysconfig.get_paths()["purelib"])  # the server's: it runs our Python
    planted = site_packages / "zz_kaio_planted.pth"
    alice = Api(platform.url, platform.add_user())
    bob = Api(platform.url, platform.add_user())
    try:
        unique = alice.submit({"train.py": PLANT}, env={"SITE_PACKAGES": str(site_packages)})
        assert alice.wait(unique)["status"] == "Completed"
        report = json.loads(alice.outputs(unique)["report.json"])
        # Her own HOME takes the startup file; the server's Python is read-only to her.
        assert report == {"site-packages": "OSError", "ipython startup": "written"}
        assert not planted.exists()

        secret_env = {"PLANTED_MARK": "planted-ran.txt", "BOBS_SECRET": "bob's secret"}
        script = bob.submit({"train.py": "open('ran.txt', 'w').write('ok')"}, env=secret_env)
        notebook = bob.submit(
            {"nb.ipynb": json.dumps(BOBS_NOTEBOOK)}, entrypoint="nb.ipynb", env=secret_env
        )
        for job in (script, notebook):
            assert bob.wait(job)["status"] == "Completed", bob.get(f"/jobs/{job}/logs").text
        assert "planted-ran.txt" not in bob.outputs(script)
        assert "planted-ran.txt" not in bob.outputs(notebook)
        assert "notebook-ran.txt" in bob.outputs(notebook)
        assert not (platform.home / ".ipython").exists()  # the server's home: untouched
    finally:
        planted.unlink(missing_ok=True)  # on a platform without isolation, it got there


# A job of bob's that holds a secret in its environment until it is
# stopped, and alice's job that looks for it in every /proc/<pid>/environ it can read.
HOLD = "print('holding', flush=True); import time; time.sleep(60)"
PEEK = textwrap.dedent(
    """
    import json, os
    found, seen = [], 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            seen += 1
            # Not written whole here: this job's own environment would match.
            wanted = (os.environ["NAME"] + "=" + os.environ["VALUE_START"]).encode()
            if wanted in open(f"/proc/{pid}/environ", "rb").read():
                found.append(pid)
        except OSError:
            pass
    json.dump({"found": found, "processes": seen}, open("report.json", "w"))
    """
)


@needs_namespaces
def test_a_job_reads_no_concurrent_tenants_environment_in_proc(platform):
    alice = Api(platform.url, platform.add_user())
    bob = Api(platform.url, platform.add_user())
    secret = "bob-" + "7" * 24
    holding = bob.submit({"train.py": HOLD}, env={"API_TOKEN": secret})
    try:
        bob.wait_for_log(holding, "holding")
        peek = alice.submit(
            {"train.py": PEEK}, env={"NAME": "API_TOKEN", "VALUE_START": secret[:8]}
        )
        assert alice.wait(peek)["status"] == "Completed"
        report = json.loads(alice.outputs(peek)["report.json"])
    finally:
        bob.post(f"/jobs/{holding}/stop")
    assert report["found"] == []
    assert report["processes"] <= 3  # bwrap's init, python, and nothing of anyone else's
    assert bob.wait(holding)["status"] == "Stopped"


STAT = textwrap.dedent(
    """
    import json, os, pathlib
    jobs = pathlib.Path.cwd().parents[2]  # <data>/jobs/<own job>/work/algo-1
    report = {}
    for name, path in [
        ("other job", jobs / os.environ["OTHER"]),
        ("other output", jobs / os.environ["OTHER"] / "outputs" / "algo-1" / "secret.txt"),
        ("jobs", jobs),
        ("data folder", jobs.parent),
    ]:
        try:
            st = os.stat(path)
            report[name] = sorted(os.listdir(path)) if os.path.isdir(path) else st.st_size
        except OSError as e:
            report[name] = type(e).__name__
    json.dump(report, open("report.json", "w"))
    """
)


@needs_namespaces
def test_a_job_cannot_tell_which_jobs_and_outputs_of_others_exist(platform):
    alice = Api(platform.url, platform.add_user())
    bob = Api(platform.url, platform.add_user())
    other = bob.submit({"train.py": "open('secret.txt', 'w').write('x' * 1234)"})
    assert bob.wait(other)["status"] == "Completed"
    unique = alice.submit({"train.py": STAT}, env={"OTHER": other})
    assert alice.wait(unique)["status"] == "Completed"
    report = json.loads(alice.outputs(unique)["report.json"])
    seen_of_data = report.pop("data folder")
    assert report == {
        "other job": "FileNotFoundError",
        "other output": "FileNotFoundError",
        "jobs": [unique],
    }
    assert set(seen_of_data) <= {"jobs", "envs", "homes"}  # no secret, no database


DAEMON = textwrap.dedent(
    """
    import subprocess, sys
    # A background process in a session of its own: it would outlive an unconfined job.
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                     start_new_session=True)
    print("left one behind", flush=True)
    """
)


@needs_namespaces
def test_what_a_job_leaves_running_dies_with_it(platform):
    api = Api(platform.url, platform.add_user())
    unique = api.submit({"train.py": DAEMON})
    assert api.wait(unique)["status"] == "Completed"
    # At once: not after the platform's next look for leftovers (leftovers.SCAN_INTERVAL_S).
    platform_id = leftovers.platform_id(platform.data_dir)
    assert unique not in leftovers.marked_processes(platform_id).values()


@needs_namespaces
def test_pip_builds_in_namespaces_too(platform):
    assert build_backend_probe(platform) == "ENOENT"  # the secret is not even there


CONNECT = textwrap.dedent(
    """
    import json, os, socket
    try:
        socket.create_connection(("127.0.0.1", int(os.environ["PORT"])), timeout=5).close()
        result = "connected"
    except OSError as e:
        result = type(e).__name__
    json.dump(result, open("report.json", "w"))
    """
)


def _connects(server) -> str:
    api = Api(server.url, server.add_user())
    unique = api.submit({"train.py": CONNECT}, env={"PORT": str(server.port)})
    assert api.wait(unique)["status"] == "Completed"
    return json.loads(api.outputs(unique)["report.json"])


@needs_namespaces
def test_jobs_reach_the_network_unless_the_platform_says_none(platform, server_factory):
    assert _connects(platform) == "connected"
    assert _connects(server_factory(job_network="none")) == "ConnectionRefusedError"


@needs_namespaces
def test_a_job_killed_by_a_signal_says_so_in_namespaces(platform):
    api = Api(platform.url, platform.add_user())
    unique = api.submit({"train.py": "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"})
    job = api.wait(unique)
    assert job["status"] == "Failed"
    assert job["failure_reason"].startswith("algo-1 was killed by signal SIGKILL")


@needs_namespaces
def test_probes_of_the_data_folder_find_nothing(platform):
    api = Api(platform.url, platform.add_user())
    data = platform.data_dir
    _, report = run_probes(
        api,
        {
            "secret": ["read", str(data / auth.SECRET_FILE)],
            "database": ["read", str(data / DB_FILE)],
            "own log": ["write", f"../../logs/algo-1/{storage.LOG_NAMES[0]}"],
            "/tmp": ["list", "/tmp"],
        },
    )
    assert report["secret"] == report["database"] == "ENOENT"
    assert report["own log"] == "ENOENT"
    # A /tmp of its own: nothing of the host's, but the way to the job's own folders if the
    # data folder is in /tmp, and the platform's own Python if it lies there (read-only).
    shown = [data, *map(Path, namespaces.platform_under_private_mounts())]
    expected = {p.relative_to("/tmp").parts[0] for p in shown if p.is_relative_to("/tmp")}
    assert report["/tmp"] == "ok:" + ",".join(sorted(expected))


def test_without_bubblewrap_jobs_fall_back_to_landlock_and_the_server_says_what_is_open(
    tmp_path,
):
    (tmp_path / "bin").mkdir()  # a PATH with no bwrap on it
    server = ServerProcess(tmp_path / "data", env={"PATH": str(tmp_path / "bin")})
    try:
        api = Api(server.start().url, server.add_user())
        health = api.get("/healthz").json()
        unique = api.submit({"train.py": "open('out.txt', 'w').write('ran')"})
        assert api.wait(unique)["status"] == "Completed"
    finally:
        server.stop()
    assert health["isolation"] in ("landlock", "none")
    log = server.log_path.read_text()
    assert "WARNING: jobs cannot run in namespaces (bubblewrap (bwrap) is not installed)" in log
    assert "see other jobs' processes and their environments in /proc" in log


@needs_namespaces
def test_telemetry_counts_the_cpu_and_memory_of_an_isolated_job(platform):
    api = Api(platform.url, platform.add_user())
    busy = "b = b'x' * (64 * 1024 * 1024)\nsum(range(20_000_000))\n"
    unique = api.submit({"train.py": busy})
    job = api.wait(unique)
    assert job["status"] == "Completed"
    store = Store(platform.data_dir)
    try:
        (row,) = store.telemetry(unique)
    finally:
        store.close()
    # From wait4's resource usage of the job's whole namespace, not of bwrap alone.
    assert row["cpu_seconds"] >= 0.1, row
    assert row["peak_rss_bytes"] >= 64 * 1024 * 1024, row


@needs_namespaces
def test_a_platform_whose_python_lies_in_tmp_runs_its_jobs(tmp_path):
    """A checkout and its venv in /tmp (as a CI clone may be): the job's private /tmp must not
    hide the interpreter every instance runs (it did: each job exited 127)."""
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="kaio-python-") as place:
        venv = Path(place) / "venv"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        # This venv sees the test run's packages (kaio_spec's editable install among them).
        site = sysconfig.get_paths()["purelib"]
        (next(venv.glob("lib/python*/site-packages")) / "kaio-tests.pth").write_text(
            f"import site; site.addsitedir({site!r})\n"
        )
        server = ServerProcess(tmp_path / "data", python=str(venv / "bin" / "python"))
        try:
            api = Api(server.start().url, server.add_user())
            assert api.get("/healthz").json()["isolation"] == "namespaces"
            code = "import sys; open('out.txt', 'w').write(sys.executable)"
            unique = api.submit({"train.py": code})
            job = api.wait(unique)
            assert job["status"] == "Completed", job.get("failure_reason")
            assert api.outputs(unique)["out.txt"].decode().startswith(place)
        finally:
            server.stop()


def test_a_job_sees_none_of_the_servers_own_secrets_in_its_environment(server_factory):
    """The server's process holds credentials of its own (a cloud key, its settings): a job
    gets the variables a program needs (PATH, the locale, the time zone), the SageMaker ones
    and its own env, and none of the server's others, in any isolation mode."""
    secrets = {
        "AWS_SECRET_ACCESS_KEY": "aws-secret-of-the-server",
        "KAIO_SERVER_SECRET": "kaio-secret-of-the-server",
        "DATABASE_URL": "postgres://admin:hunter2@db/prod",
    }
    printenv = "import json, os; json.dump(dict(os.environ), open('env.json', 'w'))"
    for flags in ({}, {"sandbox": False}):
        server = server_factory(env={**secrets, "LC_TIME": "C.UTF-8", "TZ": "UTC"}, **flags)
        api = Api(server.url, server.add_user())
        # Taken as it is, however the platform starts the job (no shell reads it).
        mine = "the job's own: $(id) `id` ; exit 3\nline 2 \\ \" '"
        unique = api.submit({"train.py": printenv}, env={"MINE": mine})
        assert api.wait(unique)["status"] == "Completed"
        seen = json.loads(api.outputs(unique)["env.json"])
        leaked = [name for name, value in seen.items() if value in secrets.values()]
        assert leaked == [], flags
        assert not set(secrets) & set(seen), flags
        assert seen["MINE"] == mine
        assert seen["SM_CURRENT_HOST"] == "algo-1"
        assert seen["PATH"] and seen["TZ"] == "UTC" and seen["LC_TIME"] == "C.UTF-8"
