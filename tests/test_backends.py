"""One conformance suite, run against each backend of `kaio server`: the local runner, and Ray
(--backend ray) on a real 3-node Ray cluster on 127.0.0.1. The same cases, the same expected
results: every example applied with `kaio apply`, what instances see and keep, stop, one failing
instance, retries, the runtime limit, a restart while a job runs, tenants' outputs kept apart.

The Ray cases are marked `ray` and skipped where Ray is not installed (pip install -e '.[ray]').
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import uuid
from pathlib import Path

import pytest
import ray_cluster
from conftest import ServerProcess
from server_support import (
    CLEANS_UP_ON_SIGTERM,
    FAILS_ON_ALGO_2,
    WAIT_FOR_GO,
    Api,
    make_wheel,
)
from support import run_kaio
from test_examples import EXAMPLES, RESULTS, TRACKER_API_KEY, check_applied_example

BACKENDS = ["local", pytest.param("ray", marks=pytest.mark.ray)]
RAY_SCALE = 0.25  # an ml.m5.large asks Ray for 0.5 CPU and 2 GiB: two per tiny node


@pytest.fixture(scope="session")
def loopback_ray():
    """A real 3-node Ray cluster on 127.0.0.1, its job API answering; nothing of it listens
    beyond loopback."""
    pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[ray]'")
    cluster = ray_cluster.start(nodes=3)
    try:
        assert ray_cluster.listening_beyond_loopback(cluster.pids()) == []
        yield cluster
    finally:
        cluster.shutdown()


@pytest.fixture(scope="module", params=BACKENDS)
def platform(request, tmp_path_factory) -> ServerProcess:
    """A kaio server on the backend under test."""
    flags = {"max_instances": 8}
    if request.param == "ray":
        cluster = request.getfixturevalue("loopback_ray")
        flags.update(backend="ray", ray_address=cluster.address, ray_scale=RAY_SCALE)
    server = ServerProcess(
        tmp_path_factory.mktemp("backend") / "data", env=ray_cluster.LOOPBACK_ENV, **flags
    )
    server.backend = request.param
    server.start()
    yield server
    server.stop()


@pytest.fixture
def api(platform) -> Api:
    return Api(platform.url, platform.add_user())


def test_every_example_applies_with_the_same_results(platform, tmp_path):
    """`kaio apply` of every example, all at once (each in its own copy of examples/, as one
    tenant), then each one's outputs checked as tests/test_examples.py checks them."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("KAIO_")},
        "KAIO_API_KEY": platform.add_user(),
        "KAIO_API_BASE": platform.url,
        "TRACKER_API_KEY": TRACKER_API_KEY,
    }
    applies = {}
    for name in sorted(RESULTS):
        root = tmp_path / name / "examples"
        shutil.copytree(EXAMPLES, root, ignore=shutil.ignore_patterns("outputs", ".kaio"))
        command = [sys.executable, "-m", "kaio_spec.cli", "apply", f"specs/{name}.yaml", "--yes"]
        applies[name] = (
            root,
            subprocess.Popen(
                command,
                cwd=root,
                env=env,
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            ),
        )
    for name, (root, proc) in applies.items():
        stdout, stderr = proc.communicate(timeout=300)
        done = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
        check_applied_example(root, name, done)


def test_instances_see_the_sm_variables_and_keep_their_outputs_apart(platform, api):
    code = textwrap.dedent(
        """
        import json, os
        seen = {k: os.environ.get(k) for k in ("SM_CURRENT_HOST", "SM_HOSTS", "LR")}
        seen["cuda"] = os.environ.get("CUDA_VISIBLE_DEVICES")
        seen["resource_config"] = json.load(open(os.environ["SM_RESOURCE_CONFIG"]))
        json.dump(seen, open("seen.json", "w"))
        print("hello from", seen["SM_CURRENT_HOST"])
        """
    )
    unique = api.submit(
        {"train.py": code, "data.txt": "input\n"},
        job_name="sm-vars",
        instance_count=3,
        env={"LR": "0.1"},
        labels={"team": "vision"},
    )
    job = api.wait(unique)
    assert job["status"] == "Completed", job
    outputs = api.outputs(unique)
    hosts = ["algo-1", "algo-2", "algo-3"]
    assert {rel for rel in outputs if not rel.startswith("logs/")} == {
        f"{h}/seen.json" for h in hosts
    }
    for host in hosts:
        seen = json.loads(outputs[f"{host}/seen.json"])
        assert seen["SM_CURRENT_HOST"] == host and seen["LR"] == "0.1"
        assert seen["SM_HOSTS"] == "algo-1,algo-2,algo-3"
        assert seen["resource_config"] == {"current_host": host, "hosts": hosts}
        assert seen["cuda"] in (None, "")  # a CPU instance type sees no GPU
        assert f"hello from {host}\n".encode() in outputs[f"logs/{host}/stdout.log"]
    if platform.backend == "ray":
        # Ray's instances run in the platform's namespaces on their nodes, as local ones.
        assert api.get("/healthz").json()["jobs_confined"] is True
        # The job's name and labels on the Ray side: its placement group's name.
        from ray.util.state import list_placement_groups

        groups = list_placement_groups(address=platform.flags["ray_address"], limit=10_000)
        names = [json.loads(g.name) for g in groups if g.name.startswith("{")]
        assert {"kaio_job": unique, "team": "vision"} in names


def test_stop_ends_the_job_stopped_after_its_sigterm_handler_ran(api):
    unique = api.submit({"train.py": CLEANS_UP_ON_SIGTERM}, job_name="stop-me")
    api.wait_for_log(unique, "ready")
    assert api.post(f"/jobs/{unique}/stop").status_code == 200
    job = api.wait(unique)
    assert job["status"] == "Stopped" and job["failure_reason"] is None
    assert api.outputs(unique)["cleanup.txt"] == b"got SIGTERM"


def test_one_failing_instance_fails_the_job_and_stops_the_others(api, tmp_path):
    unique = api.submit(
        {"train.py": FAILS_ON_ALGO_2},
        job_name="fails",
        instance_count=2,
        env={"GO_FILE": str(tmp_path / "never"), "WROTE_SOCKET": f"kaio-test-{uuid.uuid4().hex}"},
    )
    job = api.wait(unique)
    assert job["status"] == "Failed"
    reason = job["failure_reason"]
    assert "algo-2" in reason and "code 3" in reason and "cannot read shard 2" in reason
    outputs = api.outputs(unique)
    assert "algo-1/partial.txt" in outputs, {k: v[-2000:] for k, v in outputs.items()}
    assert outputs["algo-1/partial.txt"] == b"written before the stop"


def test_a_failed_attempt_is_retried_by_apply(platform, tmp_path):
    """A job that fails on its first attempt (a local server tells it so) and `retries: 1`."""
    attempts: list[int] = []
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def answer() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            attempts.append(1)
            conn.sendall(b"fail" if len(attempts) == 1 else b"ok")
            conn.close()

    threading.Thread(target=answer, daemon=True).start()
    code = tmp_path / "code"
    code.mkdir()
    (code / "train.py").write_text(
        "import os, socket, sys\n"
        "said = socket.create_connection(('127.0.0.1', int(os.environ['PORT']))).recv(10)\n"
        "open('said.txt', 'wb').write(said)\n"
        "sys.exit(1 if said == b'fail' else 0)\n"
    )
    (tmp_path / "kaio.yaml").write_text(
        "version: 1\nname: flaky\nsettings: {poll_seconds: 0.3, retry_delay_seconds: 0}\n"
        f"jobs:\n  flaky:\n    directory: ./code\n    entrypoint: train.py\n    retries: 1\n"
        f"    env: {{PORT: '{port}'}}\n"
    )
    env = {"KAIO_API_KEY": platform.add_user(), "KAIO_API_BASE": platform.url}
    try:
        result = run_kaio("apply", "kaio.yaml", "--yes", env=env, cwd=tmp_path, timeout=300)
    finally:
        listener.close()
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(attempts) == 2, result.stdout + result.stderr
    assert (tmp_path / "outputs" / "flaky" / "flaky" / "said.txt").read_bytes() == b"ok"


def test_requirements_are_installed_once_for_every_instance(api, tmp_path):
    """A requirement the platform lacks (a local wheel: tests have no network) is installed into
    the platform's cached environment, which every instance runs in, on each node."""
    wheel = make_wheel(tmp_path)
    code = "import kaiotestpkg, sys\nprint('value', kaiotestpkg.VALUE, sys.prefix)\n"
    unique = api.submit(
        {"train.py": code, "requirements.txt": f"{wheel}\n"}, job_name="reqs", instance_count=2
    )
    job = api.wait(unique)
    outputs = api.outputs(unique)
    assert job["status"] == "Completed", (job, outputs["logs/algo-1/stderr.log"])
    for host in ("algo-1", "algo-2"):
        assert b"value 1.0" in outputs[f"logs/{host}/stdout.log"]


def test_a_job_past_its_runtime_limit_is_stopped(api, tmp_path):
    unique = api.submit(
        {"train.py": WAIT_FOR_GO},
        job_name="too-long",
        max_runtime_hours=0.5 / 3600,
        env={"GO_FILE": str(tmp_path / "never")},
    )
    job = api.wait(unique)
    assert job["status"] == "Stopped" and job["failure_reason"] == "MaxRuntimeExceeded"


def test_a_restart_while_a_job_runs(platform, tmp_path):
    """Ray: the restarted platform follows the Ray job it submitted, which completes. Local: the
    job's processes went with the platform, so it fails saying so."""
    api = Api(platform.url, platform.add_user())
    go = tmp_path / "go"
    unique = api.submit({"train.py": WAIT_FOR_GO}, job_name="survives", env={"GO_FILE": str(go)})
    api.wait_for_log(unique, "ready")
    platform.restart()
    go.write_text("go")
    api = Api(platform.url, api.api_key)
    job = api.wait(unique)
    if platform.backend == "ray":
        assert job["status"] == "Completed", job["failure_reason"]
        assert b"done" in api.outputs(unique)["logs/algo-1/stdout.log"]
    else:
        assert job["status"] == "Failed" and "shut down" in job["failure_reason"]


@pytest.mark.ray
def test_a_job_fails_saying_so_when_the_platforms_ray_driver_ends(platform, api, tmp_path):
    """The Ray job that runs the platform's jobs stopped on the Ray cluster under a running job:
    that job fails naming it, and the next job runs on a new one."""
    if platform.backend != "ray":
        pytest.skip("the driver is Ray's")
    from ray.job_submission import JobSubmissionClient

    unique = api.submit(
        {"train.py": WAIT_FOR_GO}, job_name="orphan", env={"GO_FILE": str(tmp_path / "never")}
    )
    api.wait_for_log(unique, "ready")
    ray_jobs = JobSubmissionClient(platform.flags["ray_address"])
    queue = str(platform.data_dir / "ray-queue")
    (driver,) = [
        j.submission_id
        for j in ray_jobs.list_jobs()
        if (j.metadata or {}).get("kaio_queue") == queue and not j.status.is_terminal()
    ]
    ray_jobs.stop_job(driver)
    job = api.wait(unique)
    assert job["status"] == "Failed"
    assert f"the platform's Ray driver (Ray job {driver}) ended" in job["failure_reason"]
    after = api.submit({"train.py": "print('on a new driver')"}, job_name="after")
    assert api.wait(after)["status"] == "Completed"


def test_tenants_see_only_their_own_outputs(platform):
    alice = Api(platform.url, platform.add_user())
    bob = Api(platform.url, platform.add_user())
    code = "import os\nopen('secret.txt', 'w').write(os.environ['WHO'])\n"
    hers = alice.submit({"train.py": code}, job_name="same-name", env={"WHO": "alice"})
    his = bob.submit({"train.py": code}, job_name="same-name", env={"WHO": "bob"})
    assert alice.wait(hers)["status"] == "Completed"
    assert bob.wait(his)["status"] == "Completed"
    assert alice.outputs(hers)["secret.txt"] == b"alice"
    assert bob.outputs(his)["secret.txt"] == b"bob"
    assert bob.get(f"/jobs/download/{hers}").status_code == 404
    assert bob.get(f"/jobs/{hers}/logs", params={"host": "algo-1"}).status_code == 404


ATTACKER = textwrap.dedent(
    """
    import json, os
    report = {}
    for name in ("SECRET", "DATABASE", "OTHER_OUTPUT"):
        try:
            report[name] = open(os.environ[name], "rb").read().decode("latin-1")
        except OSError as e:
            report[name] = type(e).__name__
    for name in ("PLANT_DATA", "PLANT_OTHER", "PLANT_INSTALL"):
        try:
            open(os.environ[name], "w").write("planted")
            report[name] = "written"
        except OSError as e:
            report[name] = type(e).__name__
    json.dump(report, open("report.json", "w"))
    """
)


def test_a_job_reads_nothing_of_the_platform_and_writes_only_its_own_folders(platform):
    """A hostile tenant's job, on either backend, reaches for the server's secret, its database
    and another tenant's output, and plants files in the data folder, in the other tenant's
    outputs and in the platform's install: none of it works (on Ray: bwrap on the node)."""
    from kaio_spec.server import auth
    from kaio_spec.server.store import DB_FILE

    bob = Api(platform.url, platform.add_user())
    mallory = Api(platform.url, platform.add_user())
    his = bob.submit({"train.py": "open('secret.txt', 'w').write('bob-secret')"}, job_name="b")
    assert bob.wait(his)["status"] == "Completed"
    data = platform.data_dir
    other_output = data / "jobs" / his / "outputs" / "secret.txt"  # one instance: no algo-1/
    install = Path(auth.__file__).parent
    targets = {
        "SECRET": data / auth.SECRET_FILE,
        "DATABASE": data / DB_FILE,
        "OTHER_OUTPUT": other_output,
        "PLANT_DATA": data / "planted.txt",
        "PLANT_OTHER": other_output.with_name("planted.txt"),
        "PLANT_INSTALL": install / "planted.txt",
    }
    for name in ("SECRET", "DATABASE", "OTHER_OUTPUT"):  # there to be stolen
        assert targets[name].exists(), name
    env = {name: str(path) for name, path in targets.items()}
    unique = mallory.submit({"train.py": ATTACKER}, job_name="attacker", env=env)
    job = mallory.wait(unique)
    assert job["status"] == "Completed", job
    report = json.loads(mallory.outputs(unique)["report.json"])
    for name in ("SECRET", "DATABASE", "OTHER_OUTPUT"):
        assert report[name] in ("FileNotFoundError", "PermissionError"), (name, report[name])
    for name in ("PLANT_DATA", "PLANT_OTHER", "PLANT_INSTALL"):
        assert report[name] != "written", name
        assert not targets[name].exists(), name


@pytest.mark.ray
def test_a_job_no_ray_node_can_hold_fails_saying_why(platform, api):
    if platform.backend != "ray":
        pytest.skip("placement is Ray's")
    unique = api.submit(
        {"train.py": "print(1)"}, job_name="too-big", instance_type="ml.p3.16xlarge"
    )
    job = api.wait(unique)
    assert job["status"] == "Failed"
    assert "cannot be placed" in job["failure_reason"] and "8 GPU" in job["failure_reason"]
    # 8 of 0.5 CPU and 2 GiB each, on 3 nodes of 1 CPU and 4 GiB: 6 at most.
    unique = api.submit({"train.py": "print(1)"}, job_name="too-many", instance_count=8)
    job = api.wait(unique)
    assert job["status"] == "Failed"
    assert "holds at most 6 of the 8 instances of ml.m5.large" in job["failure_reason"]


@pytest.mark.ray
def test_a_lost_node_fails_a_one_instance_job_naming_it(platform, api, loopback_ray):
    """A one-instance job runs in its Ray job's driver, placed by Ray: its node killed, the
    job fails naming the instance and the node. Three such jobs, two fit a node: one at least
    runs on a worker node (the head cannot be lost here)."""
    if platform.backend != "ray":
        pytest.skip("nodes are Ray's")
    code = "import time\nprint('started', flush=True)\ntime.sleep(600)\n"
    uniques = [api.submit({"train.py": code}, job_name=f"alone-{i}") for i in range(3)]
    drivers = {
        unique: int(api.wait_for_log(unique, "(worker ").split("(worker ")[1].split(")")[0])
        for unique in uniques
    }
    unique, node = next(
        (u, n) for u, pid in drivers.items() if (n := loopback_ray.worker_node_of(pid))
    )
    loopback_ray.replace_node(node)
    try:
        job = api.wait(unique)
        assert job["status"] == "Failed"
        assert "algo-1 was lost with its Ray node 127.0.0.1" in job["failure_reason"]
    finally:
        for other in uniques:
            api.post(f"/jobs/{other}/stop")


@pytest.mark.ray
def test_a_lost_node_fails_the_job_naming_it(platform, api, loopback_ray):
    """A worker node killed mid-run (a machine lost): the job fails, naming the instance and its
    node. Last in this module: the session's cluster gets a new node in the lost one's place."""
    if platform.backend != "ray":
        pytest.skip("nodes are Ray's")
    code = "import time\nprint('started', flush=True)\ntime.sleep(600)\n"
    unique = api.submit({"train.py": code}, job_name="loses-a-node", instance_count=3)
    # The driver's line names the Ray worker running the instance (in namespaces, the
    # instance's own parent is their PID 1).
    workers = {
        host: int(api.wait_for_log(unique, "(worker ", host).split("(worker ")[1].split(")")[0])
        for host in ("algo-1", "algo-2", "algo-3")
    }
    host, node = next(
        (h, n) for h, pid in workers.items() if (n := loopback_ray.worker_node_of(pid))
    )
    loopback_ray.replace_node(node)
    job = api.wait(unique)
    assert job["status"] == "Failed"
    assert f"{host} was lost with its Ray node 127.0.0.1" in job["failure_reason"]


@pytest.mark.ray
def test_a_node_without_bubblewrap_refuses_the_instance_rather_than_run_it_unconfined(
    monkeypatch,
):
    """The driver on a node where neither the platform's bwrap nor one on PATH exists: the
    instance is not started, and the reason says why and what would do (one loopback machine
    cannot have a node without bwrap, so the node's side is asked directly)."""
    pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[ray]'")
    import importlib.util

    from kaio_spec.server.backends import ray as ray_backend

    spec = importlib.util.spec_from_file_location("ray_driver", ray_backend.DRIVER)
    driver = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(driver)
    argv = ["/nowhere/bwrap", "--unshare-pid", "--", "/bin/sh", "-c", "true"]
    bwrap = shutil.which("bwrap")
    monkeypatch.setenv("PATH", "/nowhere")
    refused = driver.confined_argv({"host": "algo-2", "argv": argv}, [])
    assert isinstance(refused, str) and refused.startswith("algo-2 cannot start on Ray node")
    assert "bubblewrap (bwrap) is not installed there" in refused and "--no-sandbox" in refused
    if bwrap:  # the node's own bwrap, wherever it lies there
        monkeypatch.setenv("PATH", os.path.dirname(bwrap))
        assert driver.confined_argv({"host": "algo-2", "argv": argv}, []) == [bwrap, *argv[1:]]
