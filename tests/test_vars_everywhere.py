"""--var on every command that plans a manifest FILE (issue 13, section 5): vars are part of
each job's identity, so after `kaio apply kaio.yaml --var lr=0.2` the jobs of the manifest are
those planned with lr=0.2; status, logs, download, results, forget and stop given the same --var find them,
and without it status says the job (of lr=0.1) was never submitted. Real `kaio` subprocesses
against the fixture server, with real job processes and files."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from support import run_kaio, wait_for_job

JOB = textwrap.dedent(
    """
    import json, os, time
    params = json.load(open("params.json"))
    while params["go"] and not os.path.exists(params["go"]):
        time.sleep(0.05)
    print(f"trained with lr={params['lr']}", flush=True)
    json.dump({"loss": 1 - params["lr"]}, open("metrics.json", "w"))
    """
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A manifest whose one job takes its lr from a var (0.1 as written) and, with the var go
    set to a path, runs until that file exists."""
    root = tmp_path / "project"
    (root / "code").mkdir(parents=True)
    (root / "code" / "train.py").write_text(JOB)
    (root / "kaio.yaml").write_text(
        textwrap.dedent(
            """\
            version: 1
            name: varied
            vars: {lr: 0.1, go: ""}
            jobs:
              train:
                directory: ./code
                entrypoint: train.py
                params: {lr: "{{ vars.lr }}", go: "{{ vars.go }}"}
            """
        )
    )
    return root


@pytest.fixture
def kaio(project, kaio_server, api_key, tmp_path):
    """`kaio ARGS` in the project, at the fixture server with this test's tenant."""
    env = {
        "KAIO_API_BASE": kaio_server.url,
        "KAIO_API_KEY": api_key,
        "HOME": str(tmp_path / "home"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
    }

    def run(*args: str, ok: bool = True):
        r = run_kaio(*args, env=env, cwd=project, timeout=300)
        if ok:
            assert r.returncode == 0, r.stdout + r.stderr
        return r

    return run


def test_status_download_results_and_stop_find_the_jobs_applied_with_a_var(kaio, project, client):
    applied = kaio("apply", "kaio.yaml", "--yes", "--var", "lr=0.2")
    assert "Completed" in applied.stdout + applied.stderr

    [job] = json.loads(kaio("status", "kaio.yaml", "--var", "lr=0.2", "-o", "json").stdout)["jobs"]
    assert (job["name"], job["status"], job["attempts"]) == ("train", "Completed", 1)
    assert "Completed" in kaio("status", "kaio.yaml", "--var", "lr=0.2").stdout
    # Without --var the manifest means lr=0.1: another job, never submitted.
    [as_written] = json.loads(kaio("status", "kaio.yaml", "-o", "json").stdout)["jobs"]
    assert as_written["status"] is None
    assert as_written["job_name"] != job["job_name"]
    assert "not submitted" in kaio("status", "kaio.yaml").stdout

    got = json.loads(kaio("download", "kaio.yaml", "--var", "lr=0.2", "-o", "json").stdout)
    [download] = got["downloads"]
    assert download["unique_job_name"] == job["unique_job_name"]
    assert download["outcome"] in ("downloaded", "already")  # apply may have fetched them
    metrics = Path(download["dest"]) / "metrics.json"
    assert json.loads(metrics.read_text()) == {"loss": 0.8}

    table = json.loads(kaio("results", "kaio.yaml", "--var", "lr=0.2", "-o", "json").stdout)
    [row] = table["rows"]
    assert (row["name"], row["status"], row["lr"], row["loss"]) == ("train", "Completed", 0.2, 0.8)

    logs = kaio("logs", "kaio.yaml", "--var", "lr=0.2")
    assert "trained with lr=0.2" in logs.stdout.splitlines()
    # Given the var, the applied job is the manifest's own, not an orphan to archive.
    forget = kaio("forget", "kaio.yaml", "--var", "lr=0.2", "-o", "json")
    assert json.loads(forget.stdout) == {"archived": [], "running": []}

    # A run that waits for GO, applied with two vars; stop given both finds it among the
    # manifest's jobs (--only keeps the planned jobs, not the orphans).
    go = project / "GO"
    kaio("apply", "kaio.yaml", "--yes", "--detach", "--var", "lr=0.3", "--var", f"go={go}")
    running = ("--var", "lr=0.3", "--var", f"go={go}")
    [waiting] = json.loads(kaio("status", "kaio.yaml", *running, "-o", "json").stdout)["jobs"]
    assert waiting["status"] in ("Pending", "InProgress")
    stop = kaio("stop", "kaio.yaml", *running, "--only", "train", "--yes", "-o", "json")
    [stopped] = json.loads(stop.stdout)["stopped"]
    assert (stopped["unique_job_name"], stopped["outcome"]) == (
        waiting["unique_job_name"],
        "stopping",
    )
    assert wait_for_job(client, waiting["unique_job_name"])["status"] == "Stopped"
