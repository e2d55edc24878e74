"""The platform around the jobs: capacity and queueing, requirements and their cache, restart
after SIGKILL, the retention sweep and telemetry. Each test runs its own server."""

from __future__ import annotations

import os
import sys
import textwrap
from datetime import datetime

import psutil
import pytest
import requests
from server_support import LEAVES_HELPERS, WAIT_FOR_GO, Api, helpers_of, make_package, make_wheel
from support import poll, wait_for

from kaio_spec.server.store import Store


def _at(job: dict, status: str) -> datetime:
    return datetime.fromisoformat(
        next(h["at"] for h in job["status_history"] if h["status"] == status)
    )


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# ---- capacity -----------------------------------------------------------------------------------


# Each instance notes, in a folder shared by all jobs, when it starts (and how many instances run
# at that moment, itself included) and when it ends.
CAPACITY_JOB = textwrap.dedent(
    """
    import os, time
    shared, me = os.environ["SHARED"], os.environ["JOB"] + "/" + os.environ["SM_CURRENT_HOST"]
    marker = os.path.join(shared, "running", me.replace("/", "-"))
    open(marker, "w").close()
    running = len(os.listdir(os.path.join(shared, "running")))
    with open(os.path.join(shared, "events"), "a") as f:
        f.write(f"start {me} {running}\\n")
    print("ready", flush=True)
    while not os.path.exists(os.environ["GO_FILE"]):
        time.sleep(0.02)
    with open(os.path.join(shared, "events"), "a") as f:
        f.write(f"end {me}\\n")
    os.remove(marker)
    """
)


def test_jobs_wait_for_capacity_first_come_first_served(server_factory, tmp_path):
    server = server_factory(max_instances=2)
    api = Api(server.url, server.add_user())
    (tmp_path / "running").mkdir()
    go_a = tmp_path / "go-a"
    released = tmp_path / "go-now"
    released.touch()

    def submit(name: str, count: int, go) -> str:
        env = {"GO_FILE": str(go), "SHARED": str(tmp_path), "JOB": name}
        return api.submit({"train.py": CAPACITY_JOB}, job_name=name, instance_count=count, env=env)

    a = submit("a", 2, go_a)  # fills the platform until the test lets it go
    api.wait_for_log(a, "ready", host="algo-1")
    api.wait_for_log(a, "ready", host="algo-2")
    b = submit("b", 2, released)  # must wait for a
    c = submit("c", 1, released)  # would fit nowhere before b: first come, first served
    assert api.job(b)["status"] == "Pending" and api.job(c)["status"] == "Pending"
    go_a.touch()
    jobs = {name: api.wait(u) for name, u in {"a": a, "b": b, "c": c}.items()}
    assert all(j["status"] == "Completed" for j in jobs.values())

    events = (tmp_path / "events").read_text().split("\n")[:-1]
    starts = [e.split() for e in events if e.startswith("start")]
    assert max(int(running) for _, _, running in starts) <= 2  # never more than the capacity
    order = [e.split()[0] + " " + e.split()[1].split("/")[0] for e in events]
    last = {e: i for i, e in enumerate(order)}
    first = {e: order.index(e) for e in order}
    assert first["start b"] > last["end a"]  # b waited for a's instances to end
    assert first["start c"] > last["end b"]  # c waited for b, although it was smaller
    assert _at(jobs["c"], "InProgress") >= _at(jobs["b"], "InProgress")


# Two GPUs, as nvidia-smi lists them and their use: a stand-in for the hardware on machines
# without it (the server runs it as it would the real one; test_server_jobs has the real one).
FAKE_NVIDIA_SMI = textwrap.dedent(
    """\
    #!/bin/sh
    case "$*" in
      *memory.total*) printf '0, Tesla T4, 15360\\n1, Tesla T4, 15360\\n' ;;
      *utilization.gpu*) printf '0, 37, 1024\\n1, 0, 0\\n' ;;
      *) exit 2 ;;
    esac
    """
)
PRINTS_ITS_GPUS = textwrap.dedent(
    """
    import os, time
    print("cuda", repr(os.environ.get("CUDA_VISIBLE_DEVICES")), flush=True)
    while not os.path.exists(os.environ["GO_FILE"]):
        time.sleep(0.02)
    """
)


def test_gpu_instances_get_a_gpu_each_and_wait_for_one(server_factory, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text(FAKE_NVIDIA_SMI)
    (bin_dir / "nvidia-smi").chmod(0o755)
    path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    server = server_factory(env={"PATH": path}, max_instances=4)
    api = Api(server.url, server.add_user())
    go = tmp_path / "go"

    def submit(name: str, instance_type: str, count: int = 1) -> str:
        return api.submit(
            {"train.py": PRINTS_ITS_GPUS},
            job_name=name,
            instance_type=instance_type,
            instance_count=count,
            env={"GO_FILE": str(go)},
        )

    def cuda(unique: str, host: str = "algo-1") -> str:
        return api.wait_for_log(unique, "cuda ", host).split("cuda ")[1].split()[0]

    pair = submit("pair", "ml.g4dn.xlarge", 2)  # one GPU each: both of the machine's
    cpu = submit("cpu", "ml.m5.large")
    third = submit("third", "ml.g4dn.xlarge")  # room for its instance, but no GPU left
    assert {cuda(pair, "algo-1"), cuda(pair, "algo-2")} == {"'0'", "'1'"}
    assert cuda(cpu) == "''"  # a CPU instance sees no GPU
    assert api.job(third)["status"] == "Pending"

    def gpu_samples() -> dict[str, list]:
        doc = api.get(f"/jobs/{pair}/telemetry").json()
        return {
            i["host"]: [s[3:] for s in i["samples"] if s[3] is not None] for i in doc["instances"]
        }

    # Its use over time, GPU included, while it runs (GET /jobs/<unique>/telemetry).
    seen = poll(gpu_samples, lambda d: any([37, 1024] in v for v in d.values()), "GPU samples")
    assert all(v in ([37, 1024], [0, 0]) for samples in seen.values() for v in samples)
    go.touch()
    assert all(api.wait(u)["status"] == "Completed" for u in (pair, cpu, third))
    assert cuda(third) in {"'0'", "'1'"}
    log = api.outputs(pair)["logs/algo-1/stdout.log"].decode()
    assert "no NVIDIA GPU" not in log

    store = Store(server.data_dir)
    try:
        rows = {row["host"]: row for row in store.telemetry(pair)}
    finally:
        store.close()
    on_gpu0 = "algo-1" if cuda(pair, "algo-1") == "'0'" else "algo-2"
    assert rows[on_gpu0]["peak_gpu_util_percent"] == 37
    assert rows[on_gpu0]["peak_gpu_memory_mb"] == 1024


def test_a_queued_job_can_be_stopped_before_it_starts(server_factory, tmp_path):
    server = server_factory(max_instances=1)
    api = Api(server.url, server.add_user())
    go = tmp_path / "go"
    running = api.submit({"train.py": WAIT_FOR_GO}, job_name="holds", env={"GO_FILE": str(go)})
    api.wait_for_log(running, "ready")
    queued = api.submit({"train.py": "open('ran.txt', 'w')"}, job_name="queued")
    r = api.post(f"/jobs/{queued}/stop")
    assert r.status_code == 200
    go.touch()
    assert api.wait(running)["status"] == "Completed"
    job = api.wait(queued)
    assert job["status"] == "Stopped" and job["start_time"] is None
    assert [h["status"] for h in job["status_history"]] == ["Pending", "Stopping", "Stopped"]
    assert "ran.txt" not in api.outputs(queued)


def test_a_job_larger_than_the_platform_runs_alone_and_says_so(server_factory):
    server = server_factory(max_instances=2)
    api = Api(server.url, server.add_user())
    code = "import os\nopen('who', 'w').write(os.environ['SM_CURRENT_HOST'])\n"
    unique = api.submit({"train.py": code}, job_name="big", instance_count=3)
    job = api.wait(unique)
    assert job["status"] == "Completed"
    outputs = api.outputs(unique)
    assert {outputs[f"algo-{i}/who"] for i in (1, 2, 3)} == {b"algo-1", b"algo-2", b"algo-3"}
    assert b"runs alone" in outputs["logs/algo-1/stdout.log"].splitlines()[0]


# ---- requirements -------------------------------------------------------------------------------

SHOW_PYTHON = "import sys\nprint(sys.executable)\nprint(sys.prefix)\n"


def test_requirements_the_platform_satisfies_install_nothing(server_factory):
    server = server_factory()
    api = Api(server.url, server.add_user())
    reqs = "nbconvert\npsutil>=5\nGPUtil\npackaging; python_version >= '3'\n"
    unique = api.submit({"train.py": SHOW_PYTHON, "requirements.txt": reqs}, job_name="reqs")
    assert api.wait(unique)["status"] == "Completed"
    log = api.outputs(unique)["logs/algo-1/stdout.log"].decode()
    assert "satisfied by the platform" in log
    assert sys.executable in log  # the server's own interpreter (the test runs it)
    assert not (server.data_dir / "envs").exists() or not any((server.data_dir / "envs").iterdir())


@pytest.mark.slow
def test_missing_requirements_are_installed_once_into_a_cached_environment(
    server_factory, tmp_path
):
    server = server_factory()
    api = Api(server.url, server.add_user())
    wheel = make_wheel(tmp_path)
    reqs = f"psutil\n{wheel}\n"
    code = "import kaiotestpkg, psutil, sys\nprint('value', kaiotestpkg.VALUE)\nprint(sys.prefix)\n"
    first = api.submit({"train.py": code, "requirements.txt": reqs}, job_name="install")
    job = api.wait(first)
    first_log = api.outputs(first)["logs/algo-1/stdout.log"].decode()
    assert job["status"] == "Completed", (job, first_log)
    assert "value 1.0" in first_log and "into a new environment" in first_log

    second = api.submit({"train.py": code, "requirements.txt": reqs}, job_name="cached")
    assert api.wait(second)["status"] == "Completed"
    second_log = api.outputs(second)["logs/algo-1/stdout.log"].decode()
    assert "reusing the cached environment" in second_log and "value 1.0" in second_log
    envs = [p for p in (server.data_dir / "envs").iterdir() if p.is_dir()]
    assert len(envs) == 1
    assert str(envs[0]) in first_log and str(envs[0]) in second_log  # sys.prefix, both times


def test_an_install_failure_fails_the_job_with_pips_message(server_factory):
    server = server_factory()
    api = Api(server.url, server.add_user())
    reqs = "--no-index\nkaio-no-such-package-anywhere==1.0\n"
    unique = api.submit(
        {"train.py": "open('ran.txt', 'w')", "requirements.txt": reqs},
        job_name="badreqs",
        instance_count=2,
    )
    job = api.wait(unique)
    assert job["status"] == "Failed"
    assert (
        "No matching distribution found for kaio-no-such-package-anywhere"
        in (job["failure_reason"])
    )
    outputs = api.outputs(unique)
    assert "ran.txt" not in outputs and "algo-1/ran.txt" not in outputs
    for host in ("algo-1", "algo-2"):
        assert b"kaio-no-such-package-anywhere" in outputs[f"logs/{host}/stdout.log"]
    envs = server.data_dir / "envs"
    assert not any(p.is_dir() for p in envs.iterdir())  # no half-made environment left to reuse


# ---- restart ------------------------------------------------------------------------------------


def test_after_sigkill_and_restart_jobs_and_keys_survive(server_factory, tmp_path):
    server = server_factory(max_instances=1)
    key = server.add_user()
    api = Api(server.url, key)
    finished = api.submit({"train.py": "open('done.txt', 'w').write('ok')"}, job_name="before")
    assert api.wait(finished)["status"] == "Completed"
    listed = api.get(f"/jobs/download/{finished}").json()["output_files"]
    running = api.submit(
        {"train.py": LEAVES_HELPERS}, job_name="running", env={"GO_FILE": str(tmp_path / "never")}
    )
    pid, helpers = helpers_of(api, running)
    queued = api.submit({"train.py": "open('after.txt', 'w').write('ran')"}, job_name="queued")
    assert api.job(queued)["status"] == "Pending"
    waiting_upload = api.presign(job_name="upload-later")

    server.kill()
    # The instance and what it left outlived the server, as a container would.
    assert _alive(pid) and all(map(_alive, helpers))
    server.start()

    api = Api(server.url, key)  # the key survived
    assert api.job(finished)["status"] == "Completed"
    # Listed again from the folder (the server that ran it kept the listing in memory).
    relisted = api.get(f"/jobs/download/{finished}").json()["output_files"]
    assert [row[:2] for row in relisted] == [row[:2] for row in listed]
    assert api.outputs(finished)["done.txt"] == b"ok"
    crashed = api.wait(running)
    assert crashed["status"] == "Failed" and "platform restarted" in crashed["failure_reason"]
    assert not _alive(pid)  # and the leftover process was killed
    # What it left out of its process group too: the restarted server knows its predecessor's.
    wait_for(lambda: not any(map(_alive, helpers)), f"{helpers}, left behind, were killed")
    requeued = api.wait(queued)
    assert requeued["status"] == "Completed"
    assert api.outputs(queued)["after.txt"] == b"ran"
    assert not list((server.data_dir / "jobs").glob("*/env.json.tmp"))
    late = waiting_upload["unique_job_name"]
    assert api.job(late)["status"] == "Pending"
    requests.put(waiting_upload["upload_url"], data=make_package({"train.py": "pass"}))
    assert api.wait(late)["status"] == "Completed"


def test_a_clean_shutdown_fails_the_running_jobs_and_kills_them(server_factory, tmp_path):
    server = server_factory()
    key = server.add_user()
    api = Api(server.url, key)
    unique = api.submit(
        {"train.py": LEAVES_HELPERS}, job_name="cut-short", env={"GO_FILE": str(tmp_path / "no")}
    )
    pid, helpers = helpers_of(api, unique)
    server.stop()  # SIGTERM
    assert not _alive(pid)
    wait_for(lambda: not any(map(_alive, helpers)), f"{helpers}, left behind, were killed")
    server.start()
    job = Api(server.url, key).job(unique)
    assert job["status"] == "Failed" and "shut down" in job["failure_reason"]


def test_one_data_dir_serves_one_server(server_factory):
    import subprocess

    server = server_factory()
    cli = [sys.executable, "-m", "kaio_spec.cli", "server", "--port", "0"]
    second = subprocess.run(
        [*cli, "--data-dir", str(server.data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 2 and "another kaio server" in second.stderr
    assert requests.get(server.url + "/healthz").ok


# ---- retention and telemetry --------------------------------------------------------------------


def test_the_retention_sweep_deletes_data_but_keeps_telemetry(server_factory):
    server = server_factory(retention_days=2 / 86400, sweep_interval=0.2)  # two seconds
    api = Api(server.url, server.add_user())
    code = textwrap.dedent(
        """
        block = bytearray(64 * 1024 * 1024)
        for i in range(0, len(block), 4096):
            block[i] = 1
        open("out.txt", "w").write("x")
        """
    )
    never_uploaded = api.presign(job_name="no-upload")["unique_job_name"]
    unique = api.submit({"train.py": code}, job_name="retained", instance_count=2)
    assert api.wait(unique)["status"] == "Completed"
    job = api.wait(unique, until=lambda j: j["data_deleted"])
    assert job["status"] == "Completed"
    assert not (server.data_dir / "jobs" / unique).exists()
    assert api.get(f"/jobs/download/{unique}").json() == {"output_files": []}
    abandoned = api.wait(never_uploaded)
    assert abandoned["status"] == "Failed" and "no package" in abandoned["failure_reason"]
    store = Store(server.data_dir)
    try:
        rows = store.telemetry(unique)
    finally:
        store.close()
    assert [r["host"] for r in rows] == ["algo-1", "algo-2"]
    for row in rows:
        assert row["exit_code"] == 0 and row["runtime_s"] > 0
        assert row["peak_rss_bytes"] >= 64 * 1024 * 1024
        assert row["cpu_seconds"] >= 0 and row["peak_cpu_percent"] >= 0


@pytest.mark.parametrize("flag", [{"max_instances": 0}, {"retention_days": -1}])
def test_the_server_refuses_bad_flags(server_factory, flag):
    with pytest.raises(RuntimeError, match="exited at start"):
        server_factory(**flag)
