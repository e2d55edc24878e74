"""Re-running what failed, on request: `kaio apply --rerun-failed` and `--replace PATTERN`, and
retries that wait (retry_delay_seconds) or retry only the platform's failures (retry_on), as a
user runs them: `kaio` subprocesses against a real local platform, with real job processes."""

from __future__ import annotations

import json
import re
import textwrap
from datetime import datetime

from apply_support import list_jobs, run_apply, run_kaio

# The job needs a file the test creates: it fails until the file exists.
CHECK = textwrap.dedent(
    """\
    import os, sys
    need = os.environ["NEEDED_FILE"]
    if not os.path.exists(need):
        print(f"{need} is missing", file=sys.stderr, flush=True)
        sys.exit(5)
    open("result.txt", "w").write(open(need).read())
    """
)


def write_check_project(folder, *, retries=1, delay=0.0, retry_on=None):
    (folder / "code").mkdir(parents=True, exist_ok=True)
    (folder / "code" / "check.py").write_text(CHECK)
    needed = folder / "needed.txt"
    manifest = folder / "kaio.yaml"
    # Only the settings a test is about (each test then fails on a kaio without its feature for
    # the reason it tests, not for an unknown setting).
    delay_line = f"  retry_delay_seconds: {delay}\n" if delay else ""
    retry_on_line = f"  retry_on: {retry_on}\n" if retry_on else ""
    manifest.write_text(
        textwrap.dedent(
            f"""\
            version: 1
            name: rerun
            settings:
              poll_seconds: 0.3
            {{settings}}jobs:
              check:
                directory: ./code
                entrypoint: check.py
                retries: {retries}
                env: {{NEEDED_FILE: "{needed}"}}
              other:
                directory: ./code
                entrypoint: check.py
                env: {{NEEDED_FILE: "{folder / "code" / "check.py"}"}}
            """
        ).replace("{settings}", delay_line + retry_on_line)
    )
    return manifest, needed


def plan_json(manifest, url, api_key, *args):
    r = run_kaio(manifest, api_key, "plan", str(manifest), "--api", url, "-o", "json", *args)
    assert r.returncode == 0, r.stderr
    return {j["key"]: j for j in json.loads(r.stdout)["jobs"]}


def attempts_of(url, api_key, key):
    """(unique_job_name, status) of the key's attempts, oldest first, and their job_names."""
    jobs = [j for j in list_jobs(url, api_key) if j["labels"]["key"] == key]
    jobs.sort(key=lambda j: j["unique_job_name"])
    return [j["status"] for j in jobs], {j["job_name"] for j in jobs}


def test_a_failed_job_stays_failed_until_rerun_failed_gives_it_attempt_n_plus_1(
    tmp_path, kaio_server, api_key
):
    manifest, needed = write_check_project(tmp_path, retries=1, delay=0.2)
    url = kaio_server.url

    # It fails on purpose and uses up its retries (1 + 1 attempts), after a back-off.
    first = run_apply(manifest, url, api_key, "--yes")
    assert first.returncode == 1, first.stdout + first.stderr
    assert re.search(r"check: retrying( in \d+ s)? \(attempt 2 of 2\)", first.stdout)
    statuses, job_names = attempts_of(url, api_key, "check")
    assert statuses == ["Failed", "Failed"] and len(job_names) == 1

    # A re-apply leaves it failed: nothing submitted, the plan says unchanged.
    again = run_apply(manifest, url, api_key, "--yes")
    assert again.returncode == 1 and "submitted" not in again.stdout
    assert "2 unchanged" in again.stdout and "to unchanged" not in again.stdout
    assert attempts_of(url, api_key, "check")[0] == ["Failed", "Failed"]

    # The user fixes what was wrong; the plan shows the rerun as an action of its own.
    needed.write_text("fixed\n")
    planned = plan_json(manifest, url, api_key, "--rerun-failed")
    assert planned["check"]["action"] == "rerun" and planned["other"]["action"] == "unchanged"
    rerun = run_apply(manifest, url, api_key, "--yes", "--rerun-failed")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert re.search(r"^check\s.*\srerun$", rerun.stdout, re.M)
    assert "1 to rerun (--rerun-failed), 1 unchanged" in rerun.stdout
    assert re.search(r"check: submitted \S+ \(attempt 3\)", rerun.stdout)
    statuses, after = attempts_of(url, api_key, "check")
    assert statuses == ["Failed", "Failed", "Completed"] and after == job_names
    assert (tmp_path / "outputs" / "rerun" / "check" / "result.txt").read_text() == "fixed\n"
    # Nothing failed any more: --rerun-failed again does nothing.
    assert "submitted" not in run_apply(manifest, url, api_key, "--yes", "--rerun-failed").stdout


def test_replace_reruns_a_completed_job_and_only_the_ones_it_matches(
    tmp_path, kaio_server, api_key
):
    manifest, needed = write_check_project(tmp_path, retries=0)
    needed.write_text("one\n")
    url = kaio_server.url
    assert run_apply(manifest, url, api_key, "--yes").returncode == 0
    needed.write_text("two\n")  # outside the package: the job is unchanged
    assert plan_json(manifest, url, api_key)["check"]["action"] == "unchanged"
    planned = plan_json(manifest, url, api_key, "--replace", "che*")
    assert planned["check"]["action"] == "replace-requested"
    assert planned["other"]["action"] == "unchanged"

    r = run_apply(manifest, url, api_key, "--yes", "--replace", "che*")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 to rerun (--replace)" in r.stdout
    assert attempts_of(url, api_key, "check")[0] == ["Completed", "Completed"]
    assert attempts_of(url, api_key, "other")[0] == ["Completed"]
    assert (tmp_path / "outputs" / "rerun" / "check" / "result.txt").read_text() == "two\n"

    bad = run_apply(manifest, url, api_key, "--yes", "--replace", "nothing*")
    assert bad.returncode == 2 and "--replace 'nothing*' matches no job" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_retry_on_platform_does_not_retry_the_jobs_own_failure(tmp_path, kaio_server, api_key):
    manifest, _ = write_check_project(tmp_path, retries=2, retry_on="platform")
    r = run_apply(manifest, kaio_server.url, api_key, "--yes")
    assert r.returncode == 1
    assert attempts_of(kaio_server.url, api_key, "check")[0] == ["Failed"]
    assert "retrying" not in r.stdout


def test_retries_back_off_before_the_next_attempt(tmp_path, kaio_server, api_key):
    """retry_delay_seconds: 2 → the second attempt starts at least 1 s (half, the jitter's
    least) after the first ended, as the platform's own times say."""
    manifest, _ = write_check_project(tmp_path, retries=1, delay=2)
    r = run_apply(manifest, kaio_server.url, api_key, "--yes")
    assert r.returncode == 1
    jobs = sorted(
        (j for j in list_jobs(kaio_server.url, api_key) if j["labels"]["key"] == "check"),
        key=lambda j: j["unique_job_name"],
    )
    assert len(jobs) == 2
    ended = datetime.fromisoformat(jobs[0]["end_time"].replace("Z", "+00:00"))
    created = datetime.fromisoformat(jobs[1]["timestamp"].replace("Z", "+00:00"))
    assert (created - ended).total_seconds() >= 1.0
