"""Secrets and variables from outside the manifest (issue 13, section 5), end to end: the
tracking example applied on a real platform with its API key in the environment or an
--env-file and its project set with --var; the job gets the key, and nothing on disk, on the
screen or in the job's identity holds it."""

from __future__ import annotations

import hashlib
import json
import shutil
import textwrap
from pathlib import Path

import pytest
from apply_support import list_jobs
from support import run_kaio

from kaio_spec.executor.state import state_path

REPO = Path(__file__).resolve().parent.parent
KEY = "trk-s3cr3t-" + "9f8e7d6c5b4a"  # what the test exports; nowhere in the repository


def fingerprint(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


@pytest.fixture
def project(tmp_path, kaio_server):
    """The examples copied to tmp, and a tenant of the shared server."""
    root = tmp_path / "examples"
    shutil.copytree(REPO / "examples", root, ignore=shutil.ignore_patterns("outputs", ".kaio"))
    env = {"KAIO_API_KEY": kaio_server.add_user(), "KAIO_API_BASE": kaio_server.url}
    return root, env


def kaio(root: Path, env: dict, *args: str) -> object:
    return run_kaio(*args, env=env, cwd=root, timeout=300)


def files_holding(root: Path, secret: str, but: tuple[Path, ...] = ()) -> list[Path]:
    """Every file under root whose bytes hold `secret` (state, outputs, logs, code, manifests)."""
    needle = secret.encode()
    return [p for p in root.rglob("*") if p.is_file() and p not in but and needle in p.read_bytes()]


def run_json(root: Path) -> dict:
    return json.loads((root / "specs/outputs/tracking/train/run.json").read_text())


def test_the_job_gets_its_secret_from_the_environment_and_nothing_keeps_it(project):
    root, env = project
    r = kaio(
        root,
        {**env, "TRACKER_API_KEY": KEY},
        "apply",
        "specs/tracking.yaml",
        "--yes",
        "--var",
        "project=trial-7",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "secret TRACKER_API_KEY (from environment)" in r.stdout
    assert run_json(root) == {"project": "trial-7", "key_sha256_16": fingerprint(KEY)}
    assert KEY not in r.stdout + r.stderr
    assert state_path(root / "specs/tracking.yaml").is_file()
    assert files_holding(root, KEY) == []
    # The platform has the variable (the job ran with it) but lists its name only.
    [job] = list_jobs(env["KAIO_API_BASE"], env["KAIO_API_KEY"])
    assert KEY not in json.dumps(job)


def test_a_new_key_does_not_rerun_the_job_and_plan_never_shows_it(project):
    root, env = project
    first = kaio(root, {**env, "TRACKER_API_KEY": KEY}, "apply", "specs/tracking.yaml", "--yes")
    assert first.returncode == 0, first.stderr
    rotated = "trk-rotated-" + "0a1b2c3d"
    plan = kaio(root, {**env, "TRACKER_API_KEY": rotated}, "plan", "specs/tracking.yaml")
    assert plan.returncode == 0, plan.stderr
    assert "secret TRACKER_API_KEY (from environment)" in plan.stdout
    assert rotated not in plan.stdout + plan.stderr
    as_json = kaio(
        root, {**env, "TRACKER_API_KEY": rotated}, "plan", "specs/tracking.yaml", "-o", "json"
    )
    [job] = json.loads(as_json.stdout)["jobs"]
    assert job["action"] == "unchanged"
    assert job["secrets"] == {"TRACKER_API_KEY": "TRACKER_API_KEY"}
    assert rotated not in as_json.stdout


def test_an_env_file_supplies_the_secret_and_is_never_packaged(project):
    root, env = project
    env_file = root / "specs/tracking/.env"  # in the job's own folder
    env_file.write_text(f'# the tracker\nexport TRACKER_API_KEY="{KEY}"\n')
    r = kaio(
        root, env, "apply", "specs/tracking.yaml", "--yes", "--env-file", "specs/tracking/.env"
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "secret TRACKER_API_KEY (from specs/tracking/.env)" in r.stdout
    assert run_json(root)["key_sha256_16"] == fingerprint(KEY)
    # The env file lies in the job's folder, yet the job never had it: not in its outputs.
    assert not (root / "specs/outputs/tracking/train/.env").exists()
    assert files_holding(root, KEY) == [env_file]


def test_a_missing_secret_names_the_job_and_line_before_anything_is_submitted(project):
    root, env = project
    r = kaio(root, env, "apply", "specs/tracking.yaml", "--yes")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert r.stderr.splitlines()[0] == (
        "specs/tracking.yaml:21:7: jobs.train.env.TRACKER_API_KEY: secret TRACKER_API_KEY "
        "(for job 'train') is not set in the environment; export TRACKER_API_KEY before kaio "
        "apply, or put it in an --env-file"
    )
    assert list_jobs(env["KAIO_API_BASE"], env["KAIO_API_KEY"]) == []


def write(folder: Path, text: str) -> Path:
    (folder / "train.py").write_text("")
    path = folder / "kaio.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def plan_json(path: Path, *args: str, **env: str) -> dict:
    r = run_kaio("plan", "--offline", "-o", "json", str(path), *args, env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_top_level_secrets_go_to_every_job_by_name_and_only_names_are_identity(tmp_path):
    path = write(
        tmp_path,
        """\
        version: 1
        name: exported
        secrets: [WANDB_API_KEY]
        defaults:
          env: {HF_TOKEN: {secret: HUGGING_FACE}}
        jobs:
          a: {}
          b: {env: {HF_TOKEN: plain}}
        """,
    )
    a, b = plan_json(path, WANDB_API_KEY="one")["jobs"]
    assert a["secrets"] == {"HF_TOKEN": "HUGGING_FACE", "WANDB_API_KEY": "WANDB_API_KEY"}
    assert a["spec"]["env"] == {}
    assert b["secrets"] == {"WANDB_API_KEY": "WANDB_API_KEY"}  # its own plain value wins
    assert b["spec"]["env"] == {"HF_TOKEN": "plain"}
    again = plan_json(path, WANDB_API_KEY="two")["jobs"]
    assert [j["job_name"] for j in again] == [a["job_name"], b["job_name"]]


def test_an_exported_secret_also_set_in_env_is_refused(tmp_path):
    path = write(
        tmp_path,
        """\
        version: 1
        name: both
        secrets: [TOKEN]
        jobs:
          a: {env: {TOKEN: x}}
        """,
    )
    r = run_kaio("validate", str(path))
    assert r.returncode == 2
    assert r.stderr.splitlines()[0] == (
        f"{path}:5:13: jobs.a.env.TOKEN: 'TOKEN' is also in the top-level secrets, which set it "
        "for every job; keep one of the two"
    )


def test_var_and_var_file_override_vars_and_change_identity(tmp_path):
    path = write(
        tmp_path,
        """\
        version: 1
        name: vars
        vars: {lr: 0.1, tag: "007", layers: [1, 2]}
        jobs:
          a:
            env: {TAG: "{{ vars.tag }}"}
            params: {lr: "{{ vars.lr }}", layers: "{{ vars.layers }}"}
        """,
    )
    [plain] = plan_json(path)["jobs"]
    [overridden] = plan_json(path, "--var", "lr=0.3", "--var", "tag=008")["jobs"]
    assert overridden["spec"]["params"] == {"lr": 0.3, "layers": [1, 2]}  # typed as declared
    assert overridden["spec"]["env"] == {"TAG": "008"}
    assert overridden["job_name"] != plain["job_name"]
    (tmp_path / "vars.yaml").write_text("lr: 0.5\nlayers: [3]\n")
    [from_file] = plan_json(path, "--var-file", str(tmp_path / "vars.yaml"), "--var", "lr=0.7")[
        "jobs"
    ]
    assert from_file["spec"]["params"] == {"lr": 0.7, "layers": [3]}  # --var after the file


def test_an_undeclared_var_is_refused_with_its_likely_name(tmp_path):
    path = write(tmp_path, "version: 1\nname: v\nvars: {lr: 0.1}\njobs: {a: {}}\n")
    r = run_kaio("plan", "--offline", str(path), "--var", "lrr=1")
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == f"error: --var lrr: {path} declares no var 'lrr'; did you mean 'lr'?\n"
    (tmp_path / "v.yaml").write_text("lr: 1\nepochs: 2\n")
    r = run_kaio("plan", "--offline", str(path), "--var-file", str(tmp_path / "v.yaml"))
    assert r.returncode == 2
    assert r.stderr.splitlines()[0] == (
        f"{tmp_path / 'v.yaml'}:2:1: epochs: {path} declares no var 'epochs'; it has 'lr'"
    )
