"""Many jobs submitted in one request (issue 18): POST /jobs/submit makes each of a sweep's cells
with its overlay on the folder's base package, and `kaio apply` sends a large sweep that way, so
a 1,000-cell sweep is 20 requests, not 2,000. Each job is made as its presign and PUT would make
it and is answered on its own; a request whose answer is lost, or an apply killed while one is
in flight, still leaves exactly one job per cell. Real servers, real `kaio apply` processes,
requests counted and faults made by tests/faultproxy.py."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import tarfile
import time
from pathlib import Path

import pytest
import requests
from apply_support import (
    check_exactly_once,
    check_outputs,
    check_state_valid,
    list_jobs,
    names,
    run_apply,
    start_apply,
    wait_for,
    write_project,
)
from faultproxy import FaultProxy
from support import poll

from kaio_spec import Client
from kaio_spec.client import JOBS_SUBMIT, Submission
from kaio_spec.images import resolve_image
from kaio_spec.jobspec import JobSpec
from kaio_spec.packaging import build_package

SUBMIT = ("POST", "/jobs/submit")
CODE = (
    "import json, os\nprint('lr', json.load(open('params.json'))['lr'], os.environ.get('TOKEN'))\n"
)


def folder(tmp_path: Path) -> Path:
    code = tmp_path / "code"
    code.mkdir(exist_ok=True)
    (code / "train.py").write_text(CODE)
    return code


def item(name: str, base: str, overlay: bytes, **spec) -> dict:
    """One presign body of POST /jobs/submit, as a client other than ours might write it."""
    job_spec = {"instance_type": "ml.m5.large", "entrypoint": "train.py", **spec}
    return {
        "job_name": name,
        "job_spec": job_spec,
        "base_package": base,
        "package": base64.b64encode(overlay).decode(),
    }


def overlay_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def post(client: Client, body: object) -> requests.Response:
    return requests.post(
        client.api_base + "/jobs/submit", json=body, headers=client._bearer(), timeout=60
    )


def ended(client: Client, unique: str) -> dict:
    return poll(
        lambda: client.get_job(unique),
        lambda j: j["status"] in ("Completed", "Failed", "Stopped"),
        f"{unique} ended",
    )


def stdout(client: Client, unique: str) -> str:
    return client.get_logs(unique)[0].decode()


# ---- the route, through Client.submit_overlays ---------------------------------------------------


def test_three_cells_in_one_request_each_run_with_their_own_params_and_env(client, tmp_path):
    assert JOBS_SUBMIT in client.features()
    with build_package(folder(tmp_path), "train.py") as package:
        base = client.upload_base(package, progress=False)
        assert base is not None
        subs = []
        for lr in ("0.1", "0.2", "0.3"):
            files = {"params.json": json.dumps({"lr": lr})}
            spec = JobSpec(job_name=f"lr-{lr.replace('.', '-')}", env={"TOKEN": f"t{lr}"})
            image = resolve_image(spec.instance_type, None, None, client.region)
            with package.overlay(files).open() as reader:
                overlay = reader.read()
            subs.append(Submission(package.with_files(files), spec, image, base, overlay))
        answers = client.submit_overlays(subs)
    assert [a.get("error") for a in answers] == [None, None, None]
    assert all(a["base_package"] == base and a["etag"] for a in answers)
    for lr, answer in zip(("0.1", "0.2", "0.3"), answers, strict=True):
        job = ended(client, answer["unique_job_name"])
        assert job["status"] == "Completed", job
        assert f"lr {lr} t{lr}" in stdout(client, answer["unique_job_name"])


def test_each_item_is_answered_on_its_own_and_a_refused_one_makes_nothing(client, tmp_path):
    with build_package(folder(tmp_path), "train.py") as package:
        base = client.upload_base(package, progress=False)
    good = overlay_of({"params.json": b'{"lr": 0.5}'})
    body = {
        "jobs": [
            item("good", base, good),
            item("bad-type", base, good, instance_type="ml.nope.large"),
            {**item("bad-b64", base, good), "package": "not base64!"},
            {**item("non-ascii-b64", base, good), "package": "H4sI\u00e9\u00e9=="},
            item("no-base", "0" * 64, good),
            {**item("whole", base, good), "base_package": None},
        ]
    }
    resp = post(client, body)
    assert resp.status_code == 200, resp.text
    answers = resp.json()["jobs"]
    assert "error" not in answers[0] and answers[0]["unique_job_name"].endswith("-good")
    assert answers[1]["error"]["status"] == 400
    assert "instance_type: unknown instance type" in answers[1]["error"]["message"]
    assert answers[2]["error"] == {"status": 400, "message": "package: not valid base64"}
    assert answers[3]["error"] == {"status": 400, "message": "package: not valid base64"}
    assert answers[4]["error"]["status"] == 409
    assert "base_package" in answers[4]["error"]["message"]
    assert answers[5]["error"]["status"] == 400
    assert [a.get("unique_job_name") for a in answers[1:]] == [None] * 5
    made = {j["job_name"] for j in client.get_jobs()["jobs"]}
    refused = {"bad-type", "bad-b64", "non-ascii-b64", "no-base", "whole"}
    assert "good" in made and not made & refused
    assert ended(client, answers[0]["unique_job_name"])["status"] == "Completed"


def test_an_overlay_that_escapes_its_folder_fails_its_job_and_writes_nothing(
    client, tmp_path, kaio_server
):
    with build_package(folder(tmp_path), "train.py") as package:
        base = client.upload_base(package, progress=False)
    evil = overlay_of({"../../escaped.txt": b"x", "params.json": b"{}"})
    resp = post(client, {"jobs": [item("evil", base, evil), item("fine", base, overlay_of({}))]})
    assert resp.status_code == 200, resp.text
    evil_answer, fine_answer = resp.json()["jobs"]
    assert evil_answer["error"]["status"] == 400, evil_answer
    job = client.get_job(evil_answer["unique_job_name"])
    assert job["status"] == "Failed" and "escaped.txt" in job["failure_reason"], job
    assert not list(kaio_server.data_dir.rglob("escaped.txt"))
    assert "error" not in fine_answer


def test_another_tenants_base_package_cannot_be_used(kaio_server, client, tmp_path):
    with build_package(folder(tmp_path), "train.py") as package:
        base = client.upload_base(package, progress=False)
    other = Client(kaio_server.url).login(kaio_server.add_user())
    resp = post(other, {"jobs": [item("stolen", base, overlay_of({"params.json": b"{}"}))]})
    assert resp.status_code == 200, resp.text
    (answer,) = resp.json()["jobs"]
    assert answer["error"]["status"] == 409 and "unique_job_name" not in answer
    assert other.get_jobs()["count"] == 0


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"jobs": []}, 400, "jobs: must be a non-empty list"),
        ({"jobs": "x"}, 400, "jobs: must be a non-empty list"),
        ({"jobs": [1]}, 400, "jobs[0]: must be an object"),
        ({"jobs": [{}] * 101}, 400, "at most 100"),
        ([], 400, "body: must be a JSON object"),
    ],
)
def test_a_malformed_request_is_refused_whole_with_a_reason(client, body, status, says):
    resp = post(client, body)
    assert resp.status_code == status, resp.text
    assert says in resp.json()["error"]
    assert client.get_jobs()["count"] == 0


def test_without_a_token_nothing_is_made(kaio_server):
    resp = requests.post(kaio_server.url + "/jobs/submit", json={"jobs": [{}]}, timeout=30)
    assert resp.status_code == 401


def test_the_answers_upload_url_takes_the_same_bytes_again_and_refuses_others(client, tmp_path):
    with build_package(folder(tmp_path), "train.py") as package:
        base = client.upload_base(package, progress=False)
    overlay = overlay_of({"params.json": b'{"lr": 1}'})
    (answer,) = post(client, {"jobs": [item("again", base, overlay)]}).json()["jobs"]
    same = requests.put(answer["upload_url"], data=overlay, timeout=30)
    assert same.status_code == 200, same.text
    other = requests.put(answer["upload_url"], data=overlay_of({"x": b"y"}), timeout=30)
    assert other.status_code == 409, other.text


# ---- kaio apply ------------------------------------------------------------------------------


def each_cell_ran_once(manifest: Path, url: str, api_key: str, cells: int) -> list[dict]:
    """Exactly `cells` jobs on the platform, not one abandoned copy among them: each cell ran
    once and completed, and its outputs (result.json saying its own i) are on disk."""
    jobs = list_jobs(url, api_key)
    assert len(jobs) == cells, sorted((j["job_name"], j["status"]) for j in jobs)
    check_exactly_once(jobs, names(manifest))
    check_outputs(manifest, cells)
    return jobs


def test_apply_of_a_12_cell_sweep_sends_its_cells_in_bulk_and_each_gets_its_own(
    tmp_path, kaio_server, api_key
):
    manifest = write_project(tmp_path, cells=12, max_parallel=12)
    with FaultProxy(kaio_server.url) as proxy:
        r = run_apply(manifest, proxy.url, api_key, "--yes")
        assert r.returncode == 0, r.stdout + r.stderr
        # 4 submit workers: 12 cells are 4 requests of 3, no presign and no upload of its own.
        assert proxy.count(*SUBMIT) == 4
        assert proxy.count("POST", "/jobs/presign") == 0
        assert proxy.count("PUT", "/objects/.*") == 0
    each_cell_ran_once(manifest, kaio_server.url, api_key, 12)  # result.json of cell i says i


def test_a_request_refused_whole_is_sent_again_job_by_job(tmp_path, kaio_server, api_key):
    manifest = write_project(tmp_path, cells=8, max_parallel=8)
    with FaultProxy(kaio_server.url) as proxy:
        proxy.on(*SUBMIT).status(413, "body: too large", times=1)
        r = run_apply(manifest, proxy.url, api_key, "--yes")
        assert r.returncode == 0, r.stdout + r.stderr
        # 4 requests of 2: one refused (nothing made), its 2 jobs presigned and PUT instead.
        assert proxy.count(*SUBMIT) == 4
        assert proxy.count("POST", "/jobs/presign") == 2
        assert proxy.count("PUT", "/objects/.*") == 2
    each_cell_ran_once(manifest, kaio_server.url, api_key, 8)


@pytest.mark.parametrize("made", [True, False], ids=["after-making-the-jobs", "before"])
def test_a_500_for_a_bulk_request_is_settled_from_the_listing_not_sent_again_blindly(
    tmp_path, kaio_server, api_key, made
):
    """A server in trouble answers 500 to a request, having made its jobs or not: the apply
    looks for them by job_name, keeps those made, and submits again only those that were not."""
    manifest = write_project(tmp_path, cells=8, max_parallel=8)
    error = b'{"error": "internal error (logged by the server)"}'
    with FaultProxy(kaio_server.url) as proxy:
        if made:
            proxy.on(*SUBMIT).rewrite(lambda status, headers, body: (500, headers, error))
        else:
            proxy.on(*SUBMIT).status(500, "internal error (logged by the server)")
        r = run_apply(manifest, proxy.url, api_key, "--yes")
        assert r.returncode == 0, r.stdout + r.stderr
    each_cell_ran_once(manifest, kaio_server.url, api_key, 8)


def test_a_lost_answer_keeps_the_jobs_it_made(tmp_path, kaio_server, api_key):
    # Jobs of 4 s: still running when the apply settles the lost answer by job_name.
    manifest = write_project(tmp_path, cells=8, max_parallel=8, sleep=4)
    with FaultProxy(kaio_server.url) as proxy:
        proxy.on(*SUBMIT).drop_response(times=1)  # the server made the jobs; the client never hears
        r = run_apply(manifest, proxy.url, api_key, "--yes")
        assert r.returncode == 0, r.stdout + r.stderr
    # Not one abandoned copy: the jobs of the lost answer are the cells' attempts.
    each_cell_ran_once(manifest, kaio_server.url, api_key, 8)


def _bulk_intents(manifest) -> dict:
    state = check_state_valid(manifest) or {"jobs": {}}
    intents = {name: rec.get("intent") for name, rec in state["jobs"].items()}
    return {name: i for name, i in intents.items() if i and i.get("bulk")}


@pytest.mark.parametrize(
    "moment", ["before the request reaches the server", "after the server made the jobs"]
)
def test_apply_killed_with_a_bulk_request_in_flight_runs_each_cell_once(
    tmp_path, kaio_server, api_key, moment
):
    manifest = write_project(tmp_path, cells=8, max_parallel=8, sleep=4)
    with FaultProxy(kaio_server.url) as proxy:
        if moment.startswith("before"):
            proxy.on(*SUBMIT).delay(30, times=None)
        else:  # answered only after 30 s: the jobs exist, their answer is not recorded
            proxy.on(*SUBMIT).rewrite(lambda *answer: (time.sleep(30), answer)[1], times=None)
        proc = start_apply(manifest, proxy.url, api_key)
        try:
            wait_for(lambda: len(_bulk_intents(manifest)) == 8, "8 bulk intents in the journal")
            if moment.startswith("after"):
                wait_for(lambda: len(list_jobs(kaio_server.url, api_key)) == 8, "the 8 jobs made")
            proc.kill()
            proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
        made = list_jobs(kaio_server.url, api_key)
        assert len(made) == (0 if moment.startswith("before") else 8), moment
        proxy.rules.clear()
        r = run_apply(manifest, proxy.url, api_key, "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    jobs = each_cell_ran_once(manifest, kaio_server.url, api_key, 8)
    if made:  # the jobs the killed run's request made are the cells' attempts
        assert {j["unique_job_name"] for j in jobs} == {j["unique_job_name"] for j in made}


# ---- the server ------------------------------------------------------------------------------


def test_a_job_whose_unpacking_a_crash_cut_short_fails_at_restart(server_factory, tmp_path):
    """Made with its package, its package not unpacked yet when the server died: failed when
    the server starts again, never left Pending waiting for an upload nobody will send."""
    server = server_factory(max_instances=1)
    client = Client(server.url).login(server.add_user())
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "train.py").write_text(
        "import os, time\nwhile not os.path.exists('/nonexistent'):\n    time.sleep(0.05)\n"
    )
    with build_package(tmp_path / "code", "train.py") as package:
        base = client.upload_base(package, progress=False)
    blocker, queued = post(
        client,
        {"jobs": [item("blocker", base, overlay_of({})), item("queued", base, overlay_of({}))]},
    ).json()["jobs"]
    poll(
        lambda: client.get_job(blocker["unique_job_name"])["status"],
        lambda s: s == "InProgress",
        "the blocker running",
    )
    assert client.get_job(queued["unique_job_name"])["status"] == "Pending"
    server.kill()
    # What a crash between the job's row and its unpacking leaves: the row, no pkg/.
    pkg = server.data_dir / "jobs" / queued["unique_job_name"] / "pkg"
    assert pkg.is_dir()
    for path in sorted(pkg.rglob("*"), reverse=True):
        path.unlink() if not path.is_dir() else path.rmdir()
    pkg.rmdir()
    server.start()
    client = Client(server.url).login(client._api_key)
    job = client.get_job(queued["unique_job_name"])
    assert job["status"] == "Failed", job
    assert "before the job's package was unpacked" in job["failure_reason"]


# Reads its data, says what it read, then changes the file in place (as a job may).
WRITES_IN_PLACE = (
    "import hashlib, json\n"
    "p = json.load(open('params.json'))\n"
    "print('read', p['i'], hashlib.sha256(open('data.bin', 'rb').read()).hexdigest())\n"
    "with open('data.bin', 'r+b') as f:\n"
    "    f.write(b'changed by cell %d' % p['i'])\n"
)


def test_queued_cells_hold_no_copy_of_their_folders_data_and_each_run_gets_its_own(
    server_factory, tmp_path
):
    """A sweep of 5 cells over a folder with 2 MB of data, queued behind a job that holds the
    only slot: the data folder holds the data once (the base package's), not once per queued
    job. Then each cell, run in turn, reads the data as uploaded, though the cells before it
    changed their copy in place, and the base package is unchanged."""
    server = server_factory(max_instances=1)
    client = Client(server.url).login(server.add_user())
    code = tmp_path / "code"
    code.mkdir()
    (code / "train.py").write_text(WRITES_IN_PLACE)
    data = os.urandom(2 * 1024 * 1024)
    (code / "data.bin").write_bytes(data)
    (tmp_path / "wait").mkdir()
    (tmp_path / "wait" / "wait.py").write_text(
        f"import os, time\nwhile not os.path.exists({str(tmp_path / 'go')!r}):\n"
        "    time.sleep(0.05)\n"
    )
    with build_package(tmp_path / "wait", "wait.py") as waiter:
        blocker = client.submit_package(waiter, job_name="blocker", entrypoint="wait.py")
    with build_package(code, "train.py") as package:
        base = client.upload_base(package, progress=False)
    cells = [overlay_of({"params.json": json.dumps({"i": i}).encode()}) for i in range(5)]
    answers = post(client, {"jobs": [item(f"cell-{i}", base, o) for i, o in enumerate(cells)]})
    uniques = [a["unique_job_name"] for a in answers.json()["jobs"]]
    assert all(client.get_job(u)["status"] == "Pending" for u in uniques)

    tree = next((server.data_dir / "packages").glob(f"*/{base}/tree"))
    copies = {(server.data_dir / "jobs" / u / "pkg" / "data.bin").stat().st_ino for u in uniques}
    assert copies == {(tree / "data.bin").stat().st_ino}, "one copy of the data, the base's"

    (tmp_path / "go").touch()  # the blocker ends; the cells run one by one
    expected = hashlib.sha256(data).hexdigest()
    for i, unique in enumerate(uniques):
        assert ended(client, unique)["status"] == "Completed", client.get_job(unique)
        assert f"read {i} {expected}" in stdout(client, unique)
    assert (tree / "data.bin").read_bytes() == data  # no job reached the base package
    assert ended(client, blocker["unique_job_name"])["status"] == "Completed"
