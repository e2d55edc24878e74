"""`kaio status` of a large manifest (issue 18): a table of 10,000 rows helps no one, so past
TABLE_ROWS jobs it shows those that most need a look (failed, stopped, running, waiting, the most
recent first) and counts the others; `--all` and `-o json` still give every job."""

from __future__ import annotations

import json

from apply_support import run_kaio, write_project
from support import wait_for_job

from kaio_spec.cli.status import TABLE_ROWS
from kaio_spec.planner import plan


def test_a_large_manifests_table_shows_what_needs_a_look(tmp_path, kaio_server, api_key, client):
    cells = TABLE_ROWS + 5
    manifest = write_project(tmp_path, name="big", cells=cells)
    jobs = {j.name: j for j in plan(manifest).jobs}
    for folder, code in (("ok", "print('done')\n"), ("bad", "raise SystemExit('cell broke')\n")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "train.py").write_text(code)
    submitted = {}
    for name, folder in ((f"train-{cells - 2}", "ok"), (f"train-{cells - 1}", "bad")):
        job = jobs[name]
        submitted[name] = client.submit_job(
            directory=str(tmp_path / folder),
            job_name=job.job_name,
            entrypoint="train.py",
            labels=job.labels,
        )["unique_job_name"]
        wait_for_job(client, submitted[name])

    result = run_kaio(manifest, api_key, "status", str(manifest), "--api", kaio_server.url)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    rows = [line.split()[0] for line in lines[1:] if line.startswith("train-")]
    # The failed cell, last in the manifest, is shown; the completed one is counted.
    assert len(rows) == TABLE_ROWS
    assert rows == [f"train-{i}" for i in range(TABLE_ROWS - 1)] + [f"train-{cells - 1}"]
    failed = next(line for line in lines if line.startswith(f"train-{cells - 1} "))
    assert "Failed" in failed and submitted[f"train-{cells - 1}"] in failed
    assert "cell broke" in result.stdout  # its failure reason, under the table
    assert (
        f"… and 5 more (4 not submitted, 1 Completed): `kaio status {manifest} --all` lists "
        "every job" in result.stdout
    )
    assert f"big: {cells} jobs (" in result.stdout

    every = run_kaio(manifest, api_key, "status", str(manifest), "--api", kaio_server.url, "--all")
    assert every.returncode == 0, every.stderr
    assert sum(line.startswith("train-") for line in every.stdout.splitlines()) == cells
    assert "more (" not in every.stdout
    doc = run_kaio(
        manifest, api_key, "status", str(manifest), "--api", kaio_server.url, "-o", "json"
    )
    assert len(json.loads(doc.stdout)["jobs"]) == cells
