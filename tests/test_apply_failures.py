"""How a failed sweep reads, and applying two manifests of one folder, as a user meets them:
`kaio apply` and `kaio status` subprocesses against a real local platform, real job processes."""

from __future__ import annotations

import re
import signal
import subprocess
import textwrap

from apply_support import (
    KAIO,
    kaio_env,
    list_jobs,
    run_apply,
    start_apply,
    wait_for,
    write_project,
)

from kaio_spec import Client

# Every cell fails the same way, with a traceback through a helper module.
BROKEN = {
    "train.py": "import json\nfrom helper import check\ncheck(json.load(open('params.json')))\n",
    "helper.py": "def check(p):\n    raise ValueError('learning_rate is missing: ' + 'x' * 150)\n",
}


def write_broken(folder, cells=3):
    (folder / "code").mkdir(parents=True, exist_ok=True)
    for name, text in BROKEN.items():
        (folder / "code" / name).write_text(text)
    values = ", ".join(str(i) for i in range(cells))
    manifest = folder / "kaio.yaml"
    manifest.write_text(
        textwrap.dedent(
            f"""\
            version: 1
            name: broken
            settings: {{poll_seconds: 0.3}}
            jobs:
              train:
                directory: ./code
                name: "train-{{{{ matrix.i }}}}"
                matrix: {{i: [{values}]}}
            """
        )
    )
    return manifest


def test_a_failed_sweep_shows_each_distinct_failure_once_with_paths_of_the_job(
    tmp_path, kaio_server, api_key
):
    manifest = write_broken(tmp_path)
    r = run_apply(manifest, kaio_server.url, api_key, "--yes")
    assert r.returncode == 1
    summary = r.stdout[r.stdout.index("broken: 3 jobs: 3 failed") :]
    assert summary.count("Traceback (most recent call last)") == 1, summary
    assert re.search(
        r"^  train-0, train-1, train-2 \(3 jobs\): Failed: algo-1 exited", summary, re.M
    )
    # The traceback names the files as the user's folder has them, not the platform's paths.
    assert '        File "helper.py", line 2, in check' in summary.splitlines()
    assert str(kaio_server.data_dir) not in r.stdout
    reason = list_jobs(kaio_server.url, api_key)[0]["failure_reason"]
    assert 'File "train.py", line 3, in <module>' in reason

    # kaio status shows the whole reason (every line, long ones wrapped), not its first line.
    status = subprocess.run(
        [KAIO, "status", "kaio.yaml", "--api", kaio_server.url],
        cwd=tmp_path,
        env={**kaio_env(tmp_path / "home", api_key), "COLUMNS": "80"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    out = status.stdout.splitlines()
    assert '        File "helper.py", line 2, in check' in out
    assert all(len(line) <= 80 for line in out if line.startswith("      ")), out
    wrapped = "".join(
        line[6:] for line in out if line.startswith("      ValueError") or "xxx" in line
    )
    assert "learning_rate is missing: " + "x" * 150 in wrapped.replace("train-", "")


def test_two_manifests_of_one_folder_apply_at_once_and_the_lock_names_its_holder(
    tmp_path, kaio_server, api_key
):
    manifest = write_project(tmp_path, cells=1, sleep=60)
    other = tmp_path / "prep.kaio.yaml"
    other.write_text(
        manifest.read_text().replace("name: sweep", "name: prep").replace("sleep: 60", "sleep: 0")
    )
    url = kaio_server.url
    first = start_apply(manifest, url, api_key)
    try:
        wait_for(
            lambda: any(j["status"] == "InProgress" for j in list_jobs(url, api_key)),
            "the first manifest's job running",
        )
        # The same manifest: refused, naming it and the apply that holds it.
        again = run_apply(manifest, url, api_key, "--yes")
        assert again.returncode == 1
        assert f"another kaio apply (pid {first.pid}) is applying {manifest}" in again.stderr
        assert "Traceback" not in again.stderr
        # Another manifest of the folder: not blocked.
        r = run_apply(other, url, api_key, "--yes")
        assert r.returncode == 0, r.stdout + r.stderr
        assert first.poll() is None  # still applying the first one meanwhile
    finally:
        first.send_signal(signal.SIGINT)
        assert first.wait(60) == 130
        client = Client(url).login(api_key)
        for job in client.get_jobs()["jobs"]:
            if job["status"] in ("Pending", "InProgress"):
                client.stop_job(job["unique_job_name"])
