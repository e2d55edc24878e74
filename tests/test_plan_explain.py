"""`kaio plan` says why each job is retried, rerun or replaced, in words and as a field-level
diff (Terraform's plan), and `-o json` carries the same: a user changes a sweep after applying
it and reads the plan, against a real local platform."""

from __future__ import annotations

import json
import shutil

from apply_support import run_apply, run_kaio, write_project


def plan(manifest, url, api_key, *args):
    r = run_kaio(manifest, api_key, "plan", "kaio.yaml", "--api", url, *args)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_a_replace_names_the_changed_fields_and_files(tmp_path, kaio_server, api_key):
    manifest = write_project(tmp_path, cells=2, env={"LR": "0.1", "GONE": "x"})
    assert run_apply(manifest, kaio_server.url, api_key, "--yes").returncode == 0
    text = manifest.read_text()
    manifest.write_text(
        text.replace('{"LR": "0.1", "GONE": "x"}', '{"LR": "0.2", "NEW": "y"}').replace(
            "entrypoint: train.py", "entrypoint: train.py\n    instance_type: ml.m5.xlarge"
        )
    )
    code = tmp_path / "code"
    (code / "train.py").write_text((code / "train.py").read_text() + "\n# tuned\n")
    (code / "helper.py").write_text("X = 1\n")

    out = plan(manifest, kaio_server.url, api_key)
    # One paragraph for the two cells, which changed the same way.
    assert "train-0, train-1 (replace): changed since it was last submitted" in out.splitlines()
    for line in (
        '    ~ instance_type: "ml.m5.large" -> "ml.m5.xlarge"',
        '    ~ env.LR: "0.1" -> "0.2"',
        '    - env.GONE: "x"',
        '    + env.NEW: "y"',
        "    ~ files of code: 1 modified (train.py), 1 added (helper.py)",
    ):
        assert line in out.splitlines(), (line, out)
    assert "sweep: 2 jobs (2 to replace)" in out

    doc = json.loads(plan(manifest, kaio_server.url, api_key, "-o", "json"))
    why = doc["jobs"][1]["why"]
    assert why["action"] == "replace" and why["previous"].startswith("sweep-train-1-")
    assert {"field": "env.LR", "change": "changed", "from": "0.1", "to": "0.2"} in why["changes"]
    assert why["files"]["modified"] == ["train.py"] and why["files"]["added"] == ["helper.py"]
    assert why["files"]["removed"] == [] and why["files"]["folder"] == "code"

    # What plans compare with stays small: each job's newest version, each folder's files once.
    versions = tmp_path / ".kaio" / "state.versions.json"
    before = json.loads(versions.read_text())
    assert len(before["jobs"]) == 2 and len(before["folders"]) == 1
    assert run_apply(manifest, kaio_server.url, api_key, "--yes").returncode == 0
    after = json.loads(versions.read_text())
    assert len(after["jobs"]) == 2 and len(after["folders"]) == 1
    assert set(after["jobs"]).isdisjoint(before["jobs"])
    assert "replace" not in plan(manifest, kaio_server.url, api_key)

    # A clone without .kaio/ (or jobs another machine submitted): what the API shows of them.
    shutil.rmtree(tmp_path / ".kaio")
    manifest.write_text(
        manifest.read_text()
        .replace('"NEW": "y"', '"OTHER": "z"')
        .replace("instance_type: ml.m5.xlarge", "instance_type: ml.m5.2xlarge")
    )
    out = plan(manifest, kaio_server.url, api_key).splitlines()
    assert (
        "train-0, train-1 (replace): changed since it was last submitted (from another machine, "
        "or before kaio recorded what it submitted in .kaio/): what the API shows of it" in out
    )
    assert '    ~ instance_type: "ml.m5.xlarge" -> "ml.m5.2xlarge"' in out
    assert '    + env.OTHER: "z"' in out and '    - env.NEW: "(value not recorded)"' in out


def test_a_retry_says_how_many_attempts_failed(tmp_path, kaio_server, api_key):
    manifest = write_project(tmp_path, cells=2, env={"FAIL_CELLS": "1"})
    r = run_apply(manifest, kaio_server.url, api_key, "--yes")
    assert r.returncode == 1
    # retries is not part of a job's identity: raising it retries the failed cell.
    manifest.write_text(manifest.read_text().replace("retries: 0", "retries: 2"))
    out = plan(manifest, kaio_server.url, api_key)
    assert "train-1 (retry): failed 1 of 3 attempts; attempt 2 is submitted" in out
    assert "    last: algo-1 exited with code 4; last lines of its stderr:" in out
    assert "sweep: 2 jobs (1 unchanged, 1 to retry)" in out
    doc = json.loads(plan(manifest, kaio_server.url, api_key, "-o", "json"))
    assert doc["jobs"][0]["why"] is None
    assert doc["jobs"][1]["why"]["attempts"] == {"failed": 1, "used": 1, "allowed": 3}
