"""What a sweep leaves in the repository, as a user meets it: `git add -A` after an apply commits
neither outputs nor state; `kaio apply --prune` moves the outputs of cells taken out of the
matrix into .pruned/ (never deletes them) and `kaio status` lists them as stale until then;
`kaio forget` archives orphaned jobs so plans stop mentioning them. Real `kaio` subprocesses
against a real local platform, and a real git repository."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from apply_support import list_jobs, run_apply, run_kaio, write_project


def kaio(manifest, url, api_key, *args):
    return run_kaio(manifest, api_key, *args)


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_add_after_an_apply_commits_neither_outputs_nor_state(tmp_path, kaio_server, api_key):
    manifest = write_project(tmp_path, cells=2)
    (tmp_path / "home").mkdir()
    (tmp_path / ".gitignore").write_text("home/\n")  # the test's own HOME, not the user's
    assert run_apply(manifest, kaio_server.url, api_key, "--yes").returncode == 0
    assert (tmp_path / "outputs" / ".gitignore").read_text().splitlines()[-1] == "*"
    assert (tmp_path / ".kaio" / ".gitignore").read_text().splitlines()[-1] == "*"
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    staged = subprocess.run(
        [*git, "diff", "--cached", "--name-only"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert sorted(staged) == [".gitignore", "code/train.py", "kaio.yaml"]


def test_a_users_own_gitignore_is_left_alone(tmp_path, kaio_server, api_key):
    manifest = write_project(tmp_path, cells=1)
    (tmp_path / "outputs").mkdir()
    (tmp_path / "outputs" / ".gitignore").write_text("*.bin\n")
    assert run_apply(manifest, kaio_server.url, api_key, "--yes").returncode == 0
    assert (tmp_path / "outputs" / ".gitignore").read_text() == "*.bin\n"


def test_prune_moves_outputs_of_cells_no_longer_defined_and_status_lists_them_as_stale(
    tmp_path, kaio_server, api_key
):
    manifest = write_project(tmp_path, cells=3)
    url = kaio_server.url
    assert run_apply(manifest, url, api_key, "--yes").returncode == 0
    manifest.write_text(manifest.read_text().replace("i: [0, 1, 2]", "i: [0, 1]"))
    root = tmp_path / "outputs" / "sweep"
    (root / "mine").mkdir()  # not kaio's: never touched
    (root / "mine" / "notes.txt").write_text("keep\n")

    status = kaio(manifest, url, api_key, "status", "kaio.yaml", "--api", url)
    assert status.returncode == 0, status.stderr
    assert "stale outputs (cells kaio.yaml no longer defines" in status.stdout
    assert "  outputs/sweep/train-2" in status.stdout.splitlines()
    doc = json.loads(
        kaio(manifest, url, api_key, "status", "kaio.yaml", "--api", url, "-o", "json").stdout
    )
    assert doc["stale_outputs"] == [str(root / "train-2")]

    # Without --prune nothing moves; with it, the folder moves whole, the others stay.
    assert run_apply(manifest, url, api_key, "--yes").returncode == 0
    assert (root / "train-2" / "result.json").exists()
    r = run_apply(manifest, url, api_key, "--yes", "--prune")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "moved the outputs of 1 cell(s) no longer defined to outputs/sweep/.pruned" in r.stdout
    assert json.loads((root / ".pruned" / "train-2" / "result.json").read_text()) == {"i": 2}
    assert not (root / "train-2").exists()
    assert (root / "mine" / "notes.txt").read_text() == "keep\n"
    assert sorted(p.name for p in root.iterdir()) == [".pruned", "mine", "train-0", "train-1"]
    doc = json.loads(
        kaio(manifest, url, api_key, "status", "kaio.yaml", "--api", url, "-o", "json").stdout
    )
    assert doc["stale_outputs"] == []


def test_forget_archives_orphans_and_plans_stop_mentioning_them(tmp_path, kaio_server, api_key):
    manifest = write_project(tmp_path, cells=3)
    url = kaio_server.url
    assert run_apply(manifest, url, api_key, "--yes").returncode == 0
    manifest.write_text(manifest.read_text().replace("i: [0, 1, 2]", "i: [0]"))
    plan = kaio(manifest, url, api_key, "plan", "kaio.yaml", "--api", url)
    assert "2 orphaned jobs (of sweep, no longer in kaio.yaml)" in plan.stdout
    assert "`kaio forget kaio.yaml` archives them" in plan.stdout

    bad = kaio(manifest, url, api_key, "forget", "kaio.yaml", "--api", url, "--only", "nothing*")
    assert bad.returncode == 2 and "matches no orphaned job" in bad.stderr
    one = kaio(manifest, url, api_key, "forget", "kaio.yaml", "--api", url, "--only", "*train-1-*")
    assert one.returncode == 0, one.stderr
    assert "sweep: 1 orphaned job archived" in one.stdout
    plan = kaio(manifest, url, api_key, "plan", "kaio.yaml", "--api", url)
    assert "1 orphaned job (of sweep, no longer in kaio.yaml)" in plan.stdout

    rest = kaio(manifest, url, api_key, "forget", "kaio.yaml", "--api", url, "-o", "json")
    assert rest.returncode == 0 and len(json.loads(rest.stdout)["archived"]) == 1
    plan = kaio(manifest, url, api_key, "plan", "kaio.yaml", "--api", url)
    assert "orphaned" not in plan.stdout
    # Archived, not gone: the API still holds every job (and its job_name).
    jobs = list_jobs(url, api_key)
    assert len(jobs) == 3 and sum(1 for j in jobs if j["archived"]) == 2
    # Defined again, a forgotten cell is found, not submitted twice.
    manifest.write_text(manifest.read_text().replace("i: [0]", "i: [0, 1, 2]"))
    again = run_apply(manifest, url, api_key, "--yes")
    assert again.returncode == 0 and "submitted" not in again.stdout
