"""A job's identity changes only when the job changes (issue 13, section 3): the manifest being
applied, and every other kaio.yaml / *.kaio.yaml beside it, are never part of a job's package
or hash, so editing a manifest (a comment) re-runs nothing; on a real platform."""

from __future__ import annotations

import json
import subprocess
import textwrap

from apply_support import KAIO, kaio_env, run_apply

MANIFEST = textwrap.dedent(
    """\
    version: 1
    name: beside
    settings: {poll_seconds: 0.3}
    jobs:
      a:
        matrix: {n: [1, 2]}
    """
)


def plan_actions(folder, url, api_key) -> list[str]:
    r = subprocess.run(
        [KAIO, "plan", "kaio.yaml", "--api", url, "-o", "json"],
        cwd=folder,
        env=kaio_env(folder / "home", api_key),
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    return [job["action"] for job in json.loads(r.stdout)["jobs"]]


def test_editing_the_manifests_beside_the_code_changes_no_job(tmp_path, kaio_server, api_key):
    # The job lists what its package held.
    (tmp_path / "train.py").write_text(
        "import json, os; json.dump(sorted(os.listdir('.')), open('listing.json', 'w'))\n"
    )
    manifest = tmp_path / "kaio.yaml"
    manifest.write_text(MANIFEST)
    (tmp_path / "eval.kaio.yaml").write_text(MANIFEST.replace("beside", "other"))
    first = run_apply(manifest, kaio_server.url, api_key, "--yes")
    assert first.returncode == 0, first.stdout + first.stderr
    listing = json.loads((tmp_path / "outputs/beside/a-n1/listing.json").read_text())
    assert "train.py" in listing and "params.json" in listing  # the job's folder...
    assert "kaio.yaml" not in listing and "eval.kaio.yaml" not in listing  # ...not its manifests

    manifest.write_text("# tuned the sweep's comments\n" + MANIFEST)
    (tmp_path / "eval.kaio.yaml").write_text(MANIFEST.replace("beside", "other") + "# more\n")
    assert plan_actions(tmp_path, kaio_server.url, api_key) == ["unchanged", "unchanged"]
    again = run_apply(manifest, kaio_server.url, api_key, "--yes")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "submitted" not in again.stdout

    (tmp_path / "train.py").write_text("print('the code changed')\n")
    assert plan_actions(tmp_path, kaio_server.url, api_key) == ["replace", "replace"]
