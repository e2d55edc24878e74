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


# ---- everything plan --offline finds, validate finds (issue 13) ----------------------------


def plan_offline_errors(folder: Path) -> list[str]:
    r = kaio("plan", "--offline", "kaio.yaml", cwd=folder)
    assert r.returncode == 2, r.stdout
    return r.stderr.splitlines()


def test_validate_reports_what_only_planning_finds_with_the_same_positions(tmp_path):
    (tmp_path / "train.py").write_text("")
    (tmp_path / "kaio.yaml").write_text(
        "version: 1\n"
        "name: static\n"
        "vars: {dataset: cifar}\n"
        "jobs:\n"
        "  syntax:\n"
        '    params: {x: "{{ matrix.a + }}"}\n'
        "    matrix: {a: [1]}\n"
        "  undefined_key:\n"
        '    env: {LR: "{{ matrix.lr }}"}\n'
        "    matrix: {learning_rate: [0.1]}\n"
        "  undefined_var:\n"
        '    env: {DATA: "{{ vars.datset }}"}\n'
        "  same_a:\n"
        "    name: twin\n"
        "  same_b:\n"
        "    name: twin\n"
        "  nothing_left:\n"
        "    matrix:\n"
        "      a: [1, 2]\n"
        "      exclude: [{a: 1}, {a: 2}]\n"
    )
    r = kaio("validate", "kaio.yaml", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    lines = r.stderr.splitlines()
    assert lines[-1] == "5 errors in kaio.yaml"
    assert lines[:-1] == [
        "kaio.yaml:6:32: jobs.syntax.params.x: template syntax error: unexpected 'end of print "
        "statement'",
        "kaio.yaml:9:15: jobs.undefined_key.env.LR: matrix has no 'lr'; it has 'learning_rate' "
        "(in '{{ matrix.lr }}' for learning_rate=0.1)",
        "kaio.yaml:12:17: jobs.undefined_var.env.DATA: vars has no 'datset'; did you mean "
        "'dataset'? (in '{{ vars.datset }}')",
        "kaio.yaml:16:11: jobs.same_b.name: two jobs are named 'twin': jobs.same_a and "
        "jobs.same_b; give each job its own name",
        "kaio.yaml:18:5: jobs.nothing_left.matrix: exclude removes every combination and "
        "include adds none, so this job makes no jobs",
    ]
    # the very lines kaio plan --offline prints
    assert plan_offline_errors(tmp_path) == lines


def test_validate_says_how_many_jobs_a_matrix_makes_over_max_jobs(tmp_path):
    (tmp_path / "train.py").write_text("")
    values = list(range(50))
    (tmp_path / "kaio.yaml").write_text(
        "version: 1\n"
        "name: big\n"
        "jobs:\n"
        f"  grid:\n    matrix: {{a: {values}, b: {values[:20]}, c: [x, y, z, w, v]}}\n"
    )
    r = kaio("validate", "kaio.yaml", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.splitlines()[0] == (
        "kaio.yaml:4:3: jobs.grid: this job makes 5000 jobs; settings.max_jobs is 1000 "
        "(the default); raise max_jobs or make fewer combinations"
    )
    assert plan_offline_errors(tmp_path)[0] == r.stderr.splitlines()[0]


def test_a_sweep_with_exclude_and_include_is_valid(tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "train.py").write_text("")
    (tmp_path / "kaio.yaml").write_text(
        "version: 1\nname: fine\ndefaults: {directory: code}\njobs:\n"
        "  t:\n    matrix:\n      a: [1, 2, 3]\n      exclude: [{a: 2}]\n"
        "      include: [{a: 2, b: 1}]\n"
    )
    r = kaio("validate", "kaio.yaml", cwd=tmp_path)
    assert (r.returncode, r.stderr) == (0, "kaio.yaml: valid\n")
