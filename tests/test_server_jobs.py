"""Jobs on a real `kaio server`: what instances see, notebooks, failure, stop, runtime limit, logs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid

import psutil
import pytest
import requests
from server_support import (
    CLEANS_UP_ON_SIGTERM,
    FAILS_ON_ALGO_2,
    LEAVES_HELPERS,
    WAIT_FOR_GO,
    Api,
    helpers_of,
)
from support import wait_for

from kaio_spec.server import leftovers


@pytest.fixture
def api(kaio_server, api_key) -> Api:
    return Api(kaio_server.url, api_key)


def test_three_instances_see_sm_variables_and_keep_their_outputs_apart(api):
    code = textwrap.dedent(
        """
        import json, os
        seen = {k: os.environ[k] for k in ("SM_CURRENT_HOST", "SM_HOSTS", "LR")}
        seen["resource_config"] = json.load(open(os.environ["SM_RESOURCE_CONFIG"]))
        seen["jupyter"] = os.environ.get("JUPYTER_RUNTIME_DIR")
        json.dump(seen, open("seen.json", "w"))
        open("data.txt", "a").write("changed by " + seen["SM_CURRENT_HOST"])
        print("hello from", seen["SM_CURRENT_HOST"])
        """
    )
    unique = api.submit(
        {"train.py": code, "data.txt": "input\n", "unchanged.txt": "same"},
        job_name="sm-vars",
        instance_count=3,
        env={"LR": "0.1"},
    )
    job = api.wait(unique)
    assert job["status"] == "Completed", job
    assert [h["status"] for h in job["status_history"]] == ["Pending", "InProgress", "Completed"]
    assert job["start_time"] and job["end_time"] and job["failure_reason"] is None

    outputs = api.outputs(unique)
    hosts = ["algo-1", "algo-2", "algo-3"]
    expected = {f"{h}/{name}" for h in hosts for name in ("seen.json", "data.txt")}
    expected |= {f"logs/{h}/{s}.log" for h in hosts for s in ("stdout", "stderr")}
    assert set(outputs) == expected  # unchanged.txt and train.py are not outputs
    for host in hosts:
        seen = json.loads(outputs[f"{host}/seen.json"])
        assert seen["SM_CURRENT_HOST"] == host
        assert seen["SM_HOSTS"] == "algo-1,algo-2,algo-3"
        assert seen["LR"] == "0.1"
        assert seen["resource_config"] == {"current_host": host, "hosts": hosts}
        assert seen["jupyter"] is None  # a Jupyter folder is a notebook's alone
        assert outputs[f"{host}/data.txt"] == f"input\nchanged by {host}".encode()
        assert outputs[f"logs/{host}/stdout.log"] == f"hello from {host}\n".encode()


def test_single_instance_outputs_keep_their_relative_paths(api):
    code = "import os\nos.makedirs('out/sub')\nopen('out/sub/r.txt', 'w').write('r')\n"
    unique = api.submit({"train.py": code}, job_name="paths")
    assert api.wait(unique)["status"] == "Completed"
    outputs = api.outputs(unique)
    assert outputs["out/sub/r.txt"] == b"r"
    assert "logs/algo-1/stdout.log" in outputs


def test_a_notebook_runs_and_the_executed_notebook_is_an_output(api):
    notebook = {
        "cells": [
            {
                "cell_type": "code",
                "metadata": {},
                "execution_count": None,
                "outputs": [],
                "source": [
                    "import os\n",
                    "open('from_notebook.txt', 'w').write(os.environ['SM_CURRENT_HOST'])\n",
                    "open('runtime.txt', 'w').write(os.environ['JUPYTER_RUNTIME_DIR'])\n",
                    "print(6 * 7)",
                ],
            }
        ],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    unique = api.submit(
        {"analysis.ipynb": json.dumps(notebook)}, job_name="notebook", entrypoint="analysis.ipynb"
    )
    job = api.wait(unique)
    assert job["status"] == "Completed", job
    outputs = api.outputs(unique)
    assert outputs["from_notebook.txt"] == b"algo-1"
    # The kernel's connection files go to the job's own Jupyter folder, not among the outputs.
    assert outputs["runtime.txt"].decode().endswith(f"/jobs/{unique}/jupyter/algo-1")
    assert not any(name.endswith(".json") and "kernel" in name for name in outputs)
    executed = json.loads(outputs["analysis.ipynb"])
    cell_outputs = executed["cells"][0]["outputs"]
    assert any("42" in "".join(o.get("text", "")) for o in cell_outputs), cell_outputs


def test_the_first_failing_instance_fails_the_job_and_stops_the_others(api, tmp_path):
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
    outputs = api.outputs(unique)  # a failed job's logs and partial outputs are downloadable
    assert "algo-1/partial.txt" in outputs, sorted(outputs)
    assert outputs["algo-1/partial.txt"] == b"written before the stop"
    assert b"cannot read shard 2" in outputs["logs/algo-2/stderr.log"]


def test_stop_sends_sigterm_then_the_job_ends_stopped(api, tmp_path):
    unique = api.submit({"train.py": CLEANS_UP_ON_SIGTERM}, job_name="stop-me")
    api.wait_for_log(unique, "ready")
    r = api.post(f"/jobs/{unique}/stop")
    assert r.status_code == 200, r.text
    assert r.json()["status"] in ("Stopping", "Stopped")
    job = api.wait(unique)
    assert job["status"] == "Stopped" and job["failure_reason"] is None
    assert "Stopping" in [h["status"] for h in job["status_history"]]
    assert api.outputs(unique)["cleanup.txt"] == b"got SIGTERM"
    again = api.post(f"/jobs/{unique}/stop")
    assert again.status_code == 409 and "error" in again.json()


def test_stop_kills_the_whole_process_group_after_the_grace_period(server_factory, tmp_path):
    server = server_factory(stop_grace=0.3)
    api = Api(server.url, server.add_user())
    code = textwrap.dedent(
        """
        import signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen([sys.executable, "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
        print("child", child.pid, flush=True)
        time.sleep(600)
        """
    )
    unique = api.submit({"train.py": code}, job_name="stubborn")
    api.wait_for_log(unique, "child ")
    assert api.post(f"/jobs/{unique}/stop").status_code == 200
    job = api.wait(unique)
    assert job["status"] == "Stopped"
    # Gone at once, not by the later look for leftovers (and in namespaces its pid inside
    # means nothing here): found by the mark every process of the job carries.
    platform = leftovers.platform_id(server.data_dir)
    assert unique not in leftovers.marked_processes(platform).values()


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_what_a_job_leaves_behind_is_killed_once_it_has_ended(server_factory, tmp_path):
    # Landlock's fallback, where nothing dies with the job's namespaces: its processes' pids
    # are the host's, and those it leaves behind are found by their mark.
    server = server_factory(isolation="landlock")
    api = Api(server.url, server.add_user())
    completes = api.submit({"train.py": LEAVES_HELPERS}, job_name="leaves-helpers")
    go = tmp_path / "never"
    runs_on = api.submit({"train.py": LEAVES_HELPERS}, job_name="runs-on", env={"GO_FILE": str(go)})
    # The same job name under another platform's mark (another data folder's server).
    sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
    foreign = subprocess.Popen(
        sleeper, env={**os.environ, "KAIO_JOB_RUN": f"{'0' * 16}:{completes}"}
    )
    try:
        left, running = helpers_of(api, completes)[1], helpers_of(api, runs_on)[1]
        assert api.wait(completes)["status"] == "Completed"
        wait_for(lambda: not any(map(_alive, left)), f"{left}, left behind, were killed")
        # The scan that killed them left alone the helpers of a job still running, and what
        # another platform's job started.
        assert all(map(_alive, running)) and foreign.poll() is None

        assert api.post(f"/jobs/{runs_on}/stop").status_code == 200
        assert api.wait(runs_on)["status"] == "Stopped"
        wait_for(lambda: not any(map(_alive, running)), f"{running}, left behind, were killed")
    finally:
        foreign.kill()
        foreign.wait()


def test_a_job_that_reaches_its_runtime_limit_is_stopped(api, tmp_path):
    unique = api.submit(
        {"train.py": WAIT_FOR_GO},
        job_name="too-long",
        max_runtime_hours=0.5 / 3600,  # half a second
        env={"GO_FILE": str(tmp_path / "never")},
    )
    job = api.wait(unique)
    assert job["status"] == "Stopped"
    assert job["failure_reason"] == "MaxRuntimeExceeded"
    assert [h["status"] for h in job["status_history"]][-2:] == ["Stopping", "Stopped"]


def test_logs_can_be_followed_while_the_job_runs(api, tmp_path):
    go = tmp_path / "go"
    unique = api.submit({"train.py": WAIT_FOR_GO}, job_name="follow", env={"GO_FILE": str(go)})
    first = api.wait_for_log(unique, "ready")
    assert api.job(unique)["status"] == "InProgress"  # followed while it runs
    go.touch()
    assert api.wait(unique)["status"] == "Completed"
    r = api.get(f"/jobs/{unique}/logs", params={"host": "algo-1", "offset": len(first)})
    assert r.status_code == 200 and r.text == "done\n"
    whole = api.get(f"/jobs/{unique}/logs").text
    assert whole == first + "done\n"
    assert int(r.headers["X-Next-Offset"]) == len(whole.encode())
    err = api.get(f"/jobs/{unique}/logs", params={"stream": "stderr"})
    assert err.status_code == 200 and err.text == ""


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has a GPU")
def test_a_gpu_job_without_a_gpu_runs_on_the_cpu_and_its_log_says_so_first(api):
    code = "import os\nprint('cuda', os.environ.get('CUDA_VISIBLE_DEVICES'))\n"
    unique = api.submit({"train.py": code}, job_name="gpu", instance_type="ml.g4dn.xlarge")
    assert api.wait(unique)["status"] == "Completed"
    log = api.outputs(unique)["logs/algo-1/stdout.log"].decode()
    first, rest = log.split("\n", 1)
    assert "no NVIDIA GPU" in first and "CPU" in first
    assert "cuda None" in rest


@pytest.mark.skipif(shutil.which("nvidia-smi") is None, reason="needs an NVIDIA GPU")
def test_gpu_instances_get_their_share_and_cpu_instances_none(kaio_server, api):
    from kaio_spec.server import gpu

    machine = [g.index for g in gpu.detect_gpus()]
    assert machine, "nvidia-smi is here but lists no GPU"
    code = textwrap.dedent(
        """
        import os, time
        print("cuda", repr(os.environ.get("CUDA_VISIBLE_DEVICES")))
        time.sleep(2.5)  # long enough for a GPU telemetry sample
        """
    )
    unique = api.submit({"train.py": code}, job_name="gpu", instance_type="ml.g4dn.xlarge")
    cpu = api.submit({"train.py": code}, job_name="cpu", instance_type="ml.m5.large")
    assert api.wait(unique)["status"] == "Completed"
    assert api.wait(cpu)["status"] == "Completed"
    log = api.outputs(unique)["logs/algo-1/stdout.log"].decode()
    assert "no NVIDIA GPU" not in log
    visible = log.split("cuda ")[1].split()[0].strip("'")
    assert visible.isdigit() and int(visible) in machine
    assert "cuda ''" in api.outputs(cpu)["logs/algo-1/stdout.log"].decode()
    from kaio_spec.server.store import Store

    store = Store(kaio_server.data_dir)
    try:
        (row,) = store.telemetry(unique)
    finally:
        store.close()
    assert row["peak_gpu_memory_mb"] is not None


def test_the_job_listing_archive_and_restore(api):
    first = api.submit({"train.py": "pass"}, job_name="first", labels={"manifest": "kaio.yaml"})
    second = api.submit({"train.py": "pass"}, job_name="second")
    listed = api.get("/jobs").json()
    names = [j["unique_job_name"] for j in listed["jobs"]]
    assert names == [second, first] and listed["count"] == 2  # newest first, only mine
    assert listed["jobs"][1]["labels"] == {"manifest": "kaio.yaml"}

    archived = api.post(f"/jobs/{first}/archive")
    assert archived.status_code == 200 and archived.json()["archived"] is True
    assert [j["unique_job_name"] for j in api.get("/jobs").json()["jobs"]] == [second]
    everything = api.get("/jobs", params={"include_archived": "true"}).json()
    assert {j["unique_job_name"] for j in everything["jobs"]} == {first, second}
    assert api.post(f"/jobs/{first}/restore").json()["archived"] is False
    assert api.get("/jobs").json()["count"] == 2


def test_an_unchanged_listing_is_answered_304_and_a_change_gets_the_new_list(api, tmp_path):
    go = tmp_path / "go"
    unique = api.submit({"train.py": WAIT_FOR_GO}, job_name="etag", env={"GO_FILE": str(go)})
    api.wait_for_log(unique, "ready")
    listed = api.get("/jobs")
    etag = listed.headers["ETag"]
    again = api.get("/jobs", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["ETag"] == etag
    # Weak and listed forms of the same tag match too (RFC 9110's comparison for If-None-Match).
    assert api.get("/jobs", headers={"If-None-Match": f'"other", W/{etag}'}).status_code == 304

    go.touch()
    api.wait(unique)
    ended = api.get("/jobs", headers={"If-None-Match": etag})
    assert ended.status_code == 200 and ended.headers["ETag"] != etag
    assert ended.json()["jobs"][0]["status"] == "Completed"
    assert ended.json() == listed.json() | {"jobs": [api.job(unique)]}
    # The archived-included listing is another list, with a tag of its own.
    everything = api.get("/jobs", params={"include_archived": "true"})
    assert everything.json() == ended.json()
    api.post(f"/jobs/{unique}/archive")
    assert api.get("/jobs", headers={"If-None-Match": ended.headers["ETag"]}).json()["count"] == 0
    archived = api.get(
        "/jobs",
        params={"include_archived": "true"},
        headers={"If-None-Match": everything.headers["ETag"]},
    )
    assert archived.status_code == 200 and archived.json()["jobs"][0]["archived"] is True


def test_a_long_listing_agrees_with_each_jobs_own_view_after_changes(api):
    # More jobs than the server reads on its event loop at once (app.LIST_READS_ON_LOOP).
    names = [api.presign(job_name=f"many-{i}")["unique_job_name"] for i in range(70)]

    def listed(**params) -> list[dict]:
        return api.get("/jobs", params=params).json()["jobs"]

    assert listed() == [api.job(u) for u in reversed(names)]  # newest first
    api.post(f"/jobs/{names[0]}/stop")
    api.post(f"/jobs/{names[1]}/archive")
    everything = [api.job(u) for u in reversed(names)]
    assert everything[-1]["status"] == "Stopped" and everything[-2]["archived"] is True
    assert listed(include_archived="true") == everything
    assert listed() == [job for job in everything if not job["archived"]]


def test_deleting_a_jobs_data_keeps_its_row(api, kaio_server, tmp_path):
    go = tmp_path / "go"
    unique = api.submit({"train.py": WAIT_FOR_GO}, job_name="delete", env={"GO_FILE": str(go)})
    api.wait_for_log(unique, "ready")
    running = api.delete(f"/jobs/{unique}/data")
    assert running.status_code == 409  # not while it runs
    go.touch()
    api.wait(unique)
    assert api.get(f"/jobs/download/{unique}").json()["output_files"]
    r = api.delete(f"/jobs/{unique}/data")
    assert r.status_code == 200 and r.json()["data_deleted"] is True
    assert not (kaio_server.data_dir / "jobs" / unique).exists()
    assert api.get(f"/jobs/download/{unique}").json() == {"output_files": []}
    assert api.job(unique)["status"] == "Completed"


def test_a_job_with_many_outputs_lists_and_serves_them_all(api):
    # More URLs than the server signs on its event loop (app.SIGNED_ON_LOOP).
    code = "for i in range(70):\n    open(f'o{i}.txt', 'w').write(str(i))\n"
    unique = api.submit({"train.py": code}, job_name="many-outputs")
    assert api.wait(unique)["status"] == "Completed"
    outputs = api.outputs(unique)
    assert set(outputs) == {f"o{i}.txt" for i in range(70)} | {
        "logs/algo-1/stdout.log",
        "logs/algo-1/stderr.log",
    }
    assert outputs["o69.txt"] == b"69"


def test_download_is_refused_until_the_job_ends(api, tmp_path):
    go = tmp_path / "go"
    unique = api.submit({"train.py": WAIT_FOR_GO}, job_name="early", env={"GO_FILE": str(go)})
    api.wait_for_log(unique, "ready")
    r = api.get(f"/jobs/download/{unique}")
    assert r.status_code == 409 and "InProgress" in r.json()["error"]
    go.touch()
    api.wait(unique)
    files = api.get(f"/jobs/download/{unique}").json()["output_files"]
    rel, modified, url = files[0]
    assert rel == "logs/algo-1/stderr.log" and modified.endswith("+00:00")
    assert requests.get(url, timeout=10).status_code == 200
    assert os.path.basename(rel) == "stderr.log"


def test_same_name_same_millisecond_gets_distinct_unique_names(api):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        names = list(pool.map(lambda _: api.presign(job_name="twin")["unique_job_name"], range(24)))
    assert len(set(names)) == 24
    for name in names:
        stamp, _, rest = name.partition("-twin")
        assert rest == "" and len(stamp) == len("20261128-142233123")
        assert stamp[:8].isdigit() and stamp[8] == "-" and stamp[9:].isdigit()
