"""A sweep cell's values reach its job: params.json = defaults.params <- the cell <- the job's own
params (issue 13, section 1), end to end on a real platform, and what plan -o json says."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

from apply_support import KAIO, run_apply

# The job reads params.json as a user's script would and writes it back to its outputs.
ECHO_PARAMS = textwrap.dedent(
    """\
    import json
    params = json.load(open("params.json"))
    json.dump(params, open("received.json", "w"))
    """
)


def write(folder: Path, manifest: str) -> Path:
    (folder / "train.py").write_text(ECHO_PARAMS)
    path = folder / "kaio.yaml"
    path.write_text(textwrap.dedent(manifest))
    return path


def plan_json(manifest: Path) -> dict:
    r = subprocess.run(
        [KAIO, "plan", "--offline", "-o", "json", str(manifest)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_a_job_with_its_own_params_and_a_matrix_gets_both_in_params_json(
    tmp_path, kaio_server, api_key
):
    manifest = write(
        tmp_path,
        """\
        version: 1
        name: cells
        settings: {poll_seconds: 0.3}
        jobs:
          a:
            params: {fixed: 2}
            matrix:
              lr: [0.1, 0.2]
        """,
    )
    r = run_apply(manifest, kaio_server.url, api_key, "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    received = {
        folder.name: json.loads((folder / "received.json").read_text())
        for folder in (tmp_path / "outputs" / "cells").iterdir()
    }
    assert received == {"a-lr0.1": {"fixed": 2, "lr": 0.1}, "a-lr0.2": {"fixed": 2, "lr": 0.2}}


def test_defaults_then_the_cell_then_the_job_later_winning(tmp_path):
    manifest = write(
        tmp_path,
        """\
        version: 1
        name: merged
        defaults:
          params: {lr: 9, epochs: 3, seed: 1}
        jobs:
          a:
            params:
              seed: 7
              learning_rate: "{{ matrix.lr * 10 }}"
            matrix:
              lr: [0.1, 0.2]
              batch: [32]
          b:
            params: {lr: 5}
            sweep:
              method: grid
              parameters:
                lr: {values: [0.5]}
                depth: {values: [2, 3]}
        """,
    )
    jobs = plan_json(manifest)["jobs"]
    params = [j["spec"]["params"] for j in jobs]
    assert params == [
        # defaults.params' lr is overridden by the cell; the job's own keys win over both
        {"epochs": 3, "lr": 0.1, "batch": 32, "seed": 7, "learning_rate": 1.0},
        {"epochs": 3, "lr": 0.2, "batch": 32, "seed": 7, "learning_rate": 2.0},
        # a job's own key overrides the cell's value of the same name
        {"epochs": 3, "seed": 1, "depth": 2, "lr": 5},
        {"epochs": 3, "seed": 1, "depth": 3, "lr": 5},
    ]
    assert len({j["job_name"] for j in jobs}) == 4


def test_identity_follows_the_merged_values(tmp_path):
    manifest = write(
        tmp_path,
        """\
        version: 1
        name: ident
        jobs:
          a:
            params: {fixed: 2}
            matrix: {lr: [0.1]}
        """,
    )
    before = plan_json(manifest)["jobs"][0]["job_name"]
    manifest.write_text(manifest.read_text().replace("fixed: 2", "fixed: 3"))
    after = plan_json(manifest)["jobs"][0]["job_name"]
    assert before != after
