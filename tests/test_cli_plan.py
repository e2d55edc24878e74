"""`kaio plan FILE`, run as the installed `kaio` command in a subprocess."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from kaio_spec import plan

ROOT = Path(__file__).parent.parent
KAIO = str(Path(sys.executable).parent / "kaio")
CIFAR = ROOT / "tests" / "manifests" / "valid" / "cifar"


def kaio(
    *args: str, cwd: Path | None = None, env: dict | None = None
) -> subprocess.CompletedProcess:
    """`kaio plan` runs offline here (planning against the API: tests/test_apply_cli.py)."""
    if args[:1] == ("plan",) and "--help" not in args and "--offline" not in args:
        args = (*args, "--offline")
    return subprocess.run(
        [KAIO, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False, env=env
    )


def project(tmp_path: Path) -> Path:
    (tmp_path / "train.py").write_text("print('hi')\n")
    (tmp_path / "kaio.yaml").write_text(
        textwrap.dedent(
            """\
            version: 1
            name: demo
            jobs:
              prep:
                instance_type: ml.m5.2xlarge
                instance_count: 4
              train:
                name: "train-lr{{ matrix.lr }}"
                instance_type: ml.g4dn.xlarge
                matrix:
                  lr: [0.00001, 0.1]
            """
        )
    )
    return tmp_path


def test_json_is_exactly_the_documented_shape(tmp_path):
    project(tmp_path)
    r = kaio("plan", "kaio.yaml", "-o", "json", cwd=tmp_path)
    assert (r.returncode, r.stderr) == (0, "")
    doc = json.loads(r.stdout)
    assert list(doc) == ["manifest", "file", "jobs"]
    assert (doc["manifest"], doc["file"]) == ("demo", "kaio.yaml")
    assert [list(job) for job in doc["jobs"]] == [
        ["key", "name", "job_name", "matrix", "spec", "action"]
    ] * 3
    prep, first, second = doc["jobs"]
    assert second["name"] == "train-lr0.1"
    assert prep["matrix"] == {} and prep["name"] == "prep"
    assert first["name"] == "train-lr0.00001" and first["matrix"] == {"lr": 1e-05}
    assert re.fullmatch(r"demo-train-lr0-00001-[0-9a-f]{8}", first["job_name"])
    assert first["spec"] == {
        "directory": str(tmp_path.resolve()),
        "entrypoint": "train.py",
        "instance_type": "ml.g4dn.xlarge",
        "instance_count": 1,
        "volume_size_gb": 5,
        "framework": None,
        "framework_version": None,
        "max_runtime_hours": None,
        "env": {},
        "params": {"lr": 1e-05},
        "retries": 0,
    }
    assert {job["action"] for job in doc["jobs"]} == {"create"}
    # What the CLI prints is what the library plans.
    library = json.loads(json.dumps(plan(tmp_path / "kaio.yaml").to_json()))
    assert doc == {**library, "file": "kaio.yaml"}


def test_the_issue_example_through_the_cli():
    r = kaio("plan", str(CIFAR / "kaio.yaml"), "-o", "json", "--offline")
    assert r.returncode == 0, r.stderr
    train = json.loads(r.stdout)["jobs"][1]
    assert (train["name"], train["matrix"]) == ("train-lr0.1-bs32", {"lr": 0.1, "batch_size": 32})
    assert train["spec"]["env"] == {"DATASET": "cifar10"}
    assert train["spec"]["params"] == {"lr": 0.1, "batch_size": 32}


def test_the_table_shows_key_name_instances_values_and_action(tmp_path):
    project(tmp_path)
    r = kaio("plan", "kaio.yaml", cwd=tmp_path)
    assert (r.returncode, r.stderr) == (0, "")
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["KEY", "NAME", "INSTANCES", "VALUES", "ACTION"]
    assert lines[1].split() == ["prep", "prep", "ml.m5.2xlarge", "×", "4", "-", "create"]
    assert lines[2].split() == [
        "train",
        "train-lr0.00001",
        "ml.g4dn.xlarge",
        "×",
        "1",
        "lr=0.00001",
        "create",
    ]
    assert lines[-1] == "demo: 3 jobs (3 to create)"
    # Columns line up: every row's NAME starts where the header's does.
    start = lines[0].index("NAME")
    assert all(line[start - 2 : start] == "  " and line[start] != " " for line in lines[1:4])


def test_offline_never_asks_the_api(tmp_path):
    """--offline plans with no API at all (the address points at a closed port)."""
    project(tmp_path)
    env = {**os.environ, "KAIO_API_BASE": "http://127.0.0.1:9", "KAIO_API_KEY": "k"}
    r = kaio("plan", "kaio.yaml", "-o", "json", "--offline", cwd=tmp_path, env=env)
    assert (r.returncode, r.stderr) == (0, "")
    assert [job["action"] for job in json.loads(r.stdout)["jobs"]] == ["create"] * 3


def test_an_invalid_manifest_exits_2_with_positioned_errors_and_no_traceback(tmp_path):
    (tmp_path / "train.py").write_text("")
    (tmp_path / "kaio.yaml").write_text(
        "version: 1\nname: bad\njobs:\n  t:\n    volume_size_gb: 80\n    instnace_type: x\n"
    )
    r = kaio("plan", "kaio.yaml", cwd=tmp_path)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.splitlines() == [
        "kaio.yaml:5:21: jobs.t.volume_size_gb: 80 is greater than the maximum of 50",
        "kaio.yaml:6:5: jobs.t.instnace_type: unknown key 'instnace_type'; did you mean "
        "'instance_type'?",
        "2 errors in kaio.yaml",
    ]


def test_a_planning_error_exits_2_pointing_at_the_template(tmp_path):
    (tmp_path / "train.py").write_text("")
    (tmp_path / "kaio.yaml").write_text(
        "version: 1\nname: bad\njobs:\n  t:\n"
        '    instance_count: "{{ matrix.n }}"\n    matrix: {n: [2, 0]}\n'
    )
    r = kaio("plan", "kaio.yaml", "-o", "json", cwd=tmp_path)
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr.splitlines() == [
        "kaio.yaml:5:21: jobs.t.instance_count: 0 is less than the minimum of 1 "
        "(rendered from '{{ matrix.n }}' for n=0)",
        "1 error in kaio.yaml",
    ]
    assert "Traceback" not in r.stderr


def test_a_missing_file_exits_2(tmp_path):
    r = kaio("plan", "nope.yaml", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.splitlines()[0] == "nope.yaml: no such file"
    assert "Traceback" not in r.stderr


def test_plan_is_listed_in_the_help():
    r = kaio("--help")
    assert r.returncode == 0 and re.search(r"^\s+plan\s", r.stdout, re.MULTILINE)
    r = kaio("plan", "--help")
    assert r.returncode == 0 and "--offline" in r.stdout and "-o, --output" in r.stdout
