"""Stopping many jobs at once (issue 18): `kaio stop FILE` of a large sweep is one POST /jobs/stop
per 500 jobs where the server lists the `jobs-stop` feature, one request per job elsewhere; the
route is tenant-scoped (named or labelled, another tenant's job is never stopped) and idempotent.
Real servers, real `kaio` subprocesses; requests counted by tests/faultproxy.py."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import requests
from faultproxy import FaultProxy
from support import poll, run_kaio

from kaio_spec import Client, journey
from kaio_spec.errors import InvalidInput
from kaio_spec.packaging import build_package
from kaio_spec.planner import plan

WAITS = "import os, time\nwhile not os.path.exists(os.environ.get('GO', '/nonexistent')):\n    time.sleep(0.05)\n"


def sweep(root: Path, name: str, cells: int) -> Path:
    """A manifest of `cells` jobs whose code waits (for a file that never comes) until stopped."""
    (root / "code").mkdir(parents=True, exist_ok=True)
    (root / "code" / "job.py").write_text(WAITS)
    values = ", ".join(str(i) for i in range(cells))
    manifest = root / "kaio.yaml"
    manifest.write_text(
        textwrap.dedent(
            f"""\
            version: 1
            name: {name}
            settings: {{max_parallel: {cells}, max_jobs: {cells}}}
            defaults: {{directory: ./code, entrypoint: job.py}}
            jobs:
              cell:
                name: "cell-{{{{ matrix.i }}}}"
                params: {{i: "{{{{ matrix.i }}}}"}}
                matrix: {{i: [{values}]}}
            """
        )
    )
    return manifest


def presign_all(client, manifest: Path) -> list[str]:
    """Each planned job presigned and never uploaded: Pending, and never started (cheap jobs to
    stop, no process behind them)."""
    names = []
    for job in plan(manifest).jobs:
        with build_package(job.directory, job.entrypoint) as package:
            package = package.with_files({"params.json": job.params_json()})
            names.append(client.presign(package, **job.submit_arguments())["unique_job_name"])
    return names


def statuses(client) -> dict[str, str]:
    return {j["unique_job_name"]: j["status"] for j in client.get_jobs()["jobs"]}


def env_for(url: str, key: str, tmp_path: Path) -> dict[str, str]:
    return {"KAIO_API_BASE": url, "KAIO_API_KEY": key, "KAIO_HOME": str(tmp_path / "home")}


def test_kaio_stop_file_stops_a_300_job_sweep_with_one_request(server_factory, tmp_path):
    server = server_factory(max_instances=2)  # 2 jobs run, 298 wait in the queue
    key = server.add_user()
    manifest = sweep(tmp_path / "project", "big", 300)
    applied = run_kaio(
        "apply", str(manifest), "--yes", "--detach", env=env_for(server.url, key, tmp_path)
    )
    assert applied.returncode == 0, applied.stderr
    client = Client(server.url).login(key)
    poll(
        lambda: statuses(client),
        lambda s: len(s) == 300 and list(s.values()).count("InProgress") == 2,
        "300 jobs submitted, 2 of them running",
    )

    with FaultProxy(server.url) as proxy:
        env = env_for(proxy.url, key, tmp_path)
        stopped = run_kaio("stop", str(manifest), "--yes", "-o", "json", env=env)
        assert stopped.returncode == 0, stopped.stderr
        assert proxy.count("POST", "/jobs/stop") == 1
        assert proxy.count("POST", "/jobs/.+/stop") == 0  # no request per job
        assert len(proxy.seen) <= 5, proxy.seen  # login, healthz, one listing, the stop

    answer = json.loads(stopped.stdout)["stopped"]
    assert len(answer) == 300
    assert {s["outcome"] for s in answer} == {"stopping"}
    final = poll(
        lambda: statuses(client),
        lambda s: set(s.values()) == {"Stopped"},
        "every job of the sweep Stopped",
    )
    assert sorted(final) == sorted(s["unique_job_name"] for s in answer)


def test_without_the_feature_each_job_is_stopped_by_its_own_request(kaio_server, api_key, tmp_path):
    client = Client(kaio_server.url).login(api_key)
    manifest = sweep(tmp_path / "project", "hosted", 3)
    names = presign_all(client, manifest)
    with FaultProxy(kaio_server.url) as proxy:  # a server as the hosted API: no jobs-stop
        proxy.on("GET", "/healthz").rewrite_json(
            lambda body: {**body, "features": [f for f in body["features"] if f != "jobs-stop"]},
            times=None,
        )
        stopped = run_kaio(
            "stop", str(manifest), "--yes", env=env_for(proxy.url, api_key, tmp_path)
        )
        assert stopped.returncode == 0, stopped.stderr
        assert proxy.count("POST", "/jobs/stop") == 0
        assert proxy.count("POST", "/jobs/.+/stop") == 3
    assert statuses(client) == dict.fromkeys(names, "Stopped")


def test_a_tenant_never_stops_another_tenants_jobs(kaio_server, tmp_path):
    mine = Client(kaio_server.url).login(kaio_server.add_user())
    theirs = Client(kaio_server.url).login(kaio_server.add_user())
    manifest = sweep(tmp_path / "project", "shared", 2)  # the same manifest name and labels
    my_jobs, their_jobs = presign_all(mine, manifest), presign_all(theirs, manifest)

    crafted = [
        "manifest=shared' OR '1'='1",
        "manifest=%",
        "manifest=*",
        "$.manifest=shared",
        "manifest=shared\x00",
    ]
    for selector in crafted:
        assert mine.stop_jobs(labels=[selector])["jobs"] == [], selector
    by_name = mine.stop_jobs(their_jobs)
    assert by_name == {"jobs": [], "unknown": their_jobs, "count": 0}
    assert statuses(theirs) == dict.fromkeys(their_jobs, "Pending")

    answer = mine.stop_jobs(labels=["manifest=shared"])
    assert sorted(j["unique_job_name"] for j in answer["jobs"]) == sorted(my_jobs)
    assert statuses(mine) == dict.fromkeys(my_jobs, "Stopped")
    assert statuses(theirs) == dict.fromkeys(their_jobs, "Pending")  # same labels, untouched


def test_stopping_twice_and_unknown_names_are_reported(kaio_server, api_key, tmp_path):
    client = Client(kaio_server.url).login(api_key)
    first, second = presign_all(client, sweep(tmp_path / "project", "twice", 2))
    unknown = "20260101-000000000-nothing"

    answer = client.stop_jobs([first, unknown, first])
    assert answer["unknown"] == [unknown]
    assert [(j["unique_job_name"], j["outcome"]) for j in answer["jobs"]] == [(first, "stopping")]
    assert answer["jobs"][0]["status"] == "Stopped"  # never uploaded: nothing ran, ended at once

    again = client.stop_jobs([first, second])
    assert [(j["unique_job_name"], j["outcome"], j["status"]) for j in again["jobs"]] == [
        (first, "ended", "Stopped"),
        (second, "stopping", "Stopped"),
    ]
    with pytest.raises(InvalidInput, match=f"{unknown}: no such job of yours"):
        journey.stop_jobs(client, [first, unknown])


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({}, "body: give exactly one of unique_job_names and labels"),
        ({"unique_job_names": ["a"], "labels": ["a=b"]}, "exactly one of"),
        ({"unique_job_names": []}, "unique_job_names: must be a non-empty list"),
        ({"unique_job_names": "a"}, "unique_job_names: must be a non-empty list"),
        ({"unique_job_names": ["a", 3]}, "unique_job_names[1]: must be a non-empty string"),
        ({"unique_job_names": ["x"] * 501}, "unique_job_names: at most 500 in one request"),
        ({"labels": ["manifest"]}, "label: 'manifest' must be key=value"),
        ({"labels": [None]}, "labels[0]: must be a non-empty string"),
    ],
)
def test_a_bad_stop_request_is_a_400_naming_the_field(client, body, error):
    resp = requests.post(
        client.api_base + "/jobs/stop", json=body, headers=client._bearer(), timeout=30
    )
    assert resp.status_code == 400
    assert error in resp.json()["error"]


def test_the_stop_route_needs_a_token_and_is_listed_as_a_feature(kaio_server):
    resp = requests.post(kaio_server.url + "/jobs/stop", json={"labels": ["a=b"]}, timeout=30)
    assert resp.status_code == 401
    assert "jobs-stop" in requests.get(kaio_server.url + "/healthz", timeout=30).json()["features"]
