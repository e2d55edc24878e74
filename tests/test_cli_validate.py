"""`kaio validate` and `kaio schema`, run as the installed `kaio` command in a subprocess."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).parent.parent
KAIO = str(Path(sys.executable).parent / "kaio")
VALID = ROOT / "tests" / "manifests" / "valid"


def kaio(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [KAIO, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def project(tmp_path: Path) -> Path:
    (tmp_path / "train.py").write_text("")
    (tmp_path / "good.yaml").write_text("version: 1\nname: good\njobs:\n  train: {}\n")
    (tmp_path / "bad.yaml").write_text(
        "version: 1\nname: bad\njobs:\n  train:\n    volume_size_gb: 80\n    instnace_type: x\n"
    )
    return tmp_path


def test_valid_files_exit_0(tmp_path):
    project(tmp_path)
    r = kaio("validate", "good.yaml", cwd=tmp_path)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "good.yaml: valid\n")
    r = kaio("validate", str(VALID / "cifar" / "kaio.yaml"), str(VALID / "minimal" / "kaio.yaml"))
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "2 files valid\n")


def test_invalid_files_exit_2_with_one_line_per_error(tmp_path):
    project(tmp_path)
    r = kaio("validate", "good.yaml", "bad.yaml", "missing.yaml", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stdout == ""
    assert r.stderr.splitlines() == [
        "bad.yaml:5:21: jobs.train.volume_size_gb: 80 is greater than the maximum of 50",
        "bad.yaml:6:5: jobs.train.instnace_type: unknown key 'instnace_type'; "
        "did you mean 'instance_type'?",
        "missing.yaml: no such file",
        "3 errors in 2 of 3 files",
    ]


def test_json_report(tmp_path):
    project(tmp_path)
    r = kaio("validate", "-o", "json", "good.yaml", "bad.yaml", "missing.yaml", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr == ""
    assert json.loads(r.stdout) == {
        "files": [
            {"file": "good.yaml", "valid": True, "errors": []},
            {
                "file": "bad.yaml",
                "valid": False,
                "errors": [
                    {
                        "line": 5,
                        "column": 21,
                        "path": "jobs.train.volume_size_gb",
                        "message": "80 is greater than the maximum of 50",
                    },
                    {
                        "line": 6,
                        "column": 5,
                        "path": "jobs.train.instnace_type",
                        "message": "unknown key 'instnace_type'; did you mean 'instance_type'?",
                    },
                ],
            },
            {
                "file": "missing.yaml",
                "valid": False,
                "errors": [{"line": None, "column": None, "path": "", "message": "no such file"}],
            },
        ]
    }
    r = kaio("validate", "--output", "json", "good.yaml", cwd=tmp_path)
    assert r.returncode == 0
    assert json.loads(r.stdout) == {"files": [{"file": "good.yaml", "valid": True, "errors": []}]}


def test_no_traceback_for_anything_a_file_can_hold(tmp_path):
    (tmp_path / "binary.yaml").write_bytes(bytes(range(256)))
    (tmp_path / "python.yaml").write_text("!!python/object/apply:os.system ['echo pwned']\n")
    (tmp_path / "deep.yaml").write_text("[" * 20000)
    (tmp_path / "folder.yaml").mkdir()
    r = kaio("validate", "binary.yaml", "python.yaml", "deep.yaml", "folder.yaml", cwd=tmp_path)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "pwned" not in r.stdout + r.stderr
    assert r.stderr.splitlines()[-1] == "4 errors in 4 of 4 files"


def test_usage_errors_exit_2():
    r = kaio("validate")
    assert r.returncode == 2
    assert "Missing argument 'FILES...'" in r.stderr
    r = kaio("validate", "-o", "yaml", "x.yaml")
    assert r.returncode == 2


def test_schema_prints_the_shipped_schema():
    r = kaio("schema")
    assert r.returncode == 0
    assert r.stdout == (ROOT / "kaio_spec" / "schemas" / "kaio.schema.json").read_text()
    assert json.loads(r.stdout)["title"] == "kaio.yaml"


def test_pre_commit_hook_runs_kaio_validate_on_manifests():
    (hook,) = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert hook["id"] == "kaio-validate"
    assert hook["entry"] == "kaio validate"
    assert hook["language"] == "python"
    files = re.compile(hook["files"])
    assert files.search("kaio.yaml") and files.search("jobs/cifar/kaio.yml")
    assert not files.search("other.yaml") and not files.search("notkaio.yaml")
