"""`needs:` between jobs, as a user runs a pipeline: prep writes stats.json, a 2-cell train grid
needs prep and reads inputs/prep/stats.json, eval needs train and reads each cell's metrics.json
under inputs/train/<cell>/ to pick the best. `kaio` subprocesses against a real local platform,
with real job processes; the values each job saw are checked in its outputs."""

from __future__ import annotations

import json
import re
import textwrap

from apply_support import list_jobs, run_apply, run_kaio
from faultproxy import FaultProxy

# prep fails while the file named by PREP_NEEDS is missing (outside the package: the test makes
# it appear), else writes stats.json from its params.
PREP = textwrap.dedent(
    """\
    import json, os, sys
    p = json.load(open("params.json"))
    need = os.environ.get("PREP_NEEDS")
    if need and not os.path.exists(need):
        print(f"{need} is missing", file=sys.stderr, flush=True)
        sys.exit(7)
    json.dump({"rows": p["rows"], "mean": p["rows"] / 2}, open("stats.json", "w"))
    """
)
# Each train cell: the stats it found, and a loss that is lowest for lr=0.1.
TRAIN = textwrap.dedent(
    """\
    import json, os
    p = json.load(open("params.json"))
    stats = json.load(open("inputs/prep/stats.json"))
    json.dump({"stats": stats, "files": sorted(os.listdir("inputs/prep"))}, open("seen.json", "w"))
    json.dump(p, open("params_seen.json", "w"))
    json.dump({"loss": abs(p["lr"] - 0.1) + stats["mean"]}, open("metrics.json", "w"))
    """
)
# eval: every train cell's metrics, through needs.json; the best cell by loss.
EVAL = textwrap.dedent(
    """\
    import json
    needs = json.load(open("needs.json"))
    seen = {}
    for cell in needs["train"]:
        seen[cell["name"]] = json.load(open(cell["path"] + "/metrics.json"))["loss"]
    best = min(needs["train"], key=lambda c: seen[c["name"]])
    json.dump({"best": best["name"], "lr": best["matrix"]["lr"], "seen": seen}, open("best.json", "w"))
    """
)


def write_pipeline(folder, *, rows=10, prep_needs=None):
    """A pipeline with each job's code in its own folder, so a change to prep changes no other
    job's folder: only its job_name reaches them, through needs."""
    for key, code in (("prep", PREP), ("train", TRAIN), ("eval", EVAL)):
        (folder / key).mkdir(parents=True, exist_ok=True)
        (folder / key / f"{key}.py").write_text(code)
    env = f"\n    env: {{PREP_NEEDS: {json.dumps(str(prep_needs))}}}" if prep_needs else ""
    manifest = folder / "kaio.yaml"
    manifest.write_text(
        textwrap.dedent(
            """\
            version: 1
            name: pipe
            settings:
              poll_seconds: 0.3
            jobs:
              prep:
                directory: ./prep
                entrypoint: prep.py
                params: {rows: ROWS}ENV
              train:
                directory: ./train
                entrypoint: train.py
                needs: prep
                matrix:
                  lr: [0.1, 0.5]
              eval:
                directory: ./eval
                entrypoint: eval.py
                needs: [train]
            """
        )
        .replace("ROWS", str(rows))
        .replace("ENV", env)
    )
    return manifest


def outputs(folder, name):
    return folder / "outputs" / "pipe" / name


def read(folder, name, file):
    return json.loads((outputs(folder, name) / file).read_text())


def counts(url, api_key):
    """Submissions per job key."""
    return {key: len(jobs) for key, jobs in by_key(url, api_key).items()}


def by_key(url, api_key):
    found: dict[str, list[dict]] = {}
    for job in list_jobs(url, api_key):
        found.setdefault(job["labels"]["key"], []).append(job)
    return found


def plan_actions(manifest, url, api_key, *args):
    r = run_kaio(manifest, api_key, "plan", str(manifest), "--api", url, "-o", "json", *args)
    assert r.returncode == 0, r.stderr
    return {j["name"]: j["action"] for j in json.loads(r.stdout)["jobs"]}


def test_a_pipeline_runs_in_order_and_each_job_sees_what_it_needs(tmp_path, kaio_server, api_key):
    manifest = write_pipeline(tmp_path, rows=10)
    url = kaio_server.url
    result = run_apply(manifest, url, api_key, "--yes")
    assert result.returncode == 0, result.stdout + result.stderr

    # Each train cell read the stats prep wrote, under inputs/prep/ (outputs only: no logs).
    for cell in ("train-lr0.1", "train-lr0.5"):
        seen = read(tmp_path, cell, "seen.json")
        assert seen == {"stats": {"rows": 10, "mean": 5.0}, "files": ["stats.json"]}
    # eval read both cells' metrics through needs.json and picked lr=0.1.
    best = read(tmp_path, "eval", "best.json")
    assert best["best"] == "train-lr0.1" and best["lr"] == 0.1
    assert best["seen"] == {"train-lr0.1": 5.0, "train-lr0.5": 5.4}

    # Each stage started after every cell of the stage before it had ended.
    jobs = by_key(url, api_key)
    assert [len(jobs[k]) for k in ("prep", "train", "eval")] == [1, 2, 1]
    prep_end = jobs["prep"][0]["end_time"]
    assert all(t["start_time"] >= prep_end for t in jobs["train"])
    assert jobs["eval"][0]["start_time"] >= max(t["end_time"] for t in jobs["train"])


def test_identity_follows_needs_unchanged_chain_then_a_changed_prep(tmp_path, kaio_server, api_key):
    manifest = write_pipeline(tmp_path, rows=10)
    url = kaio_server.url
    assert run_apply(manifest, url, api_key, "--yes").returncode == 0

    # Applied again unchanged: every job is unchanged, nothing is submitted.
    again = run_apply(manifest, url, api_key, "--yes")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "4 unchanged" in again.stdout and "submitted" not in again.stdout

    # A change to prep alone (its params; the other jobs' folders are untouched) replaces the
    # jobs that need it, transitively.
    write_pipeline(tmp_path, rows=40)
    actions = plan_actions(manifest, url, api_key)
    assert set(actions.values()) == {"replace"}, actions
    replaced = run_apply(manifest, url, api_key, "--yes")
    assert replaced.returncode == 0, replaced.stdout + replaced.stderr
    assert read(tmp_path, "train-lr0.5", "seen.json")["stats"] == {"rows": 40, "mean": 20.0}
    assert read(tmp_path, "eval", "best.json")["seen"] == {"train-lr0.1": 20.0, "train-lr0.5": 20.4}
    assert counts(url, api_key) == {"prep": 2, "train": 4, "eval": 2}


def test_jobs_whose_need_failed_are_skipped_then_run_once_it_succeeds(
    tmp_path, kaio_server, api_key
):
    needed = tmp_path / "prep-input.txt"
    manifest = write_pipeline(tmp_path, prep_needs=needed)
    url = kaio_server.url

    first = run_apply(manifest, url, api_key, "--yes")
    assert first.returncode == 1, first.stdout + first.stderr
    summary = first.stdout + first.stderr
    assert "1 failed, 3 skipped" in summary
    assert re.search(
        r"train-lr0\.1, train-lr0\.5 \(2 jobs\): skipped: needs prep, which failed", summary
    )
    assert "eval (pipe-eval-" in summary and "skipped: needs train, which was skipped" in summary
    assert counts(url, api_key) == {"prep": 1}  # nothing that needs it was submitted

    # Fixed, and the failed need re-run: the jobs that need it run this time.
    needed.write_text("here\n")
    rerun = run_apply(manifest, url, api_key, "--yes", "--rerun-failed")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert read(tmp_path, "eval", "best.json")["best"] == "train-lr0.1"
    assert counts(url, api_key) == {"prep": 2, "train": 2, "eval": 1}


def test_only_a_dependent_job_brings_what_it_needs(tmp_path, kaio_server, api_key):
    manifest = write_pipeline(tmp_path, rows=6)
    result = run_apply(manifest, kaio_server.url, api_key, "--yes", "--only", "train")
    assert result.returncode == 0, result.stdout + result.stderr
    assert read(tmp_path, "train-lr0.1", "seen.json")["stats"]["rows"] == 6
    assert counts(kaio_server.url, api_key) == {"prep": 1, "train": 2}


def validate(folder, text):
    (folder / "train.py").write_text("")
    (folder / "kaio.yaml").write_text(textwrap.dedent(text))
    r = run_kaio(folder / "kaio.yaml", "unused", "validate", "kaio.yaml")
    return r.returncode, r.stderr.splitlines()[:-1]  # the last line counts them


def test_unknown_and_own_needs_are_errors_at_their_line(tmp_path):
    code, errors = validate(
        tmp_path,
        """\
        version: 1
        name: pipe
        jobs:
          prep: {}
          train:
            needs: [prepp, train]
          eval:
            needs: trian
        """,
    )
    assert code == 2
    assert errors == [
        "kaio.yaml:6:13: jobs.train.needs[0]: 'prepp' is not a job of this manifest; "
        "did you mean 'prep'?",
        "kaio.yaml:6:20: jobs.train.needs[1]: a job cannot need itself",
        "kaio.yaml:8:12: jobs.eval.needs: 'trian' is not a job of this manifest; "
        "did you mean 'train'?",
    ]


def test_a_cycle_of_needs_is_an_error_that_names_it(tmp_path):
    code, errors = validate(
        tmp_path,
        """\
        version: 1
        name: pipe
        jobs:
          prep:
            needs: eval
          train:
            needs: [prep]
          eval:
            needs: [train]
        """,
    )
    assert code == 2
    assert errors == [
        "kaio.yaml:5:12: jobs.prep.needs: these needs go round in a cycle: "
        "prep → eval → train → prep; a job can only need jobs that can run before it"
    ]


def test_needs_is_a_job_field_not_a_default(tmp_path):
    code, errors = validate(
        tmp_path,
        """\
        version: 1
        name: pipe
        defaults:
          needs: prep
        jobs:
          prep: {}
          train:
            needs: []
        """,
    )
    assert code == 2
    assert len(errors) == 2
    assert errors[0].startswith("kaio.yaml:4:3: defaults.needs: unknown key 'needs'")
    assert errors[1] == "kaio.yaml:8:5: jobs.train.needs: must not be an empty list"


def test_plan_shows_the_stages_in_order_and_json_carries_needs(tmp_path):
    manifest = write_pipeline(tmp_path)
    text = manifest.read_text()  # eval written first: the plan still shows it last
    eval_block = text[text.index("  eval:") :]
    manifest.write_text(text.replace(eval_block, "").replace("jobs:\n", "jobs:\n" + eval_block))
    table = run_kaio(manifest, "unused", "plan", "--offline", str(manifest))
    assert table.returncode == 0, table.stderr
    rows = [re.sub(r"\s+", " ", line.strip()) for line in table.stdout.splitlines()[1:7]]
    assert rows == [
        "stage 1:",
        "prep prep ml.m5.large × 1 - create",
        "stage 2, after prep:",
        "train train-lr0.1 ml.m5.large × 1 lr=0.1 create",
        "train train-lr0.5 ml.m5.large × 1 lr=0.5 create",
        "stage 3, after train:",
    ]
    as_json = run_kaio(manifest, "unused", "plan", "--offline", "-o", "json", str(manifest))
    jobs = json.loads(as_json.stdout)["jobs"]
    assert [(j["name"], j.get("needs")) for j in jobs] == [
        ("prep", None),
        ("train-lr0.1", ["prep"]),
        ("train-lr0.5", ["prep"]),
        ("eval", ["train"]),
    ]


def test_a_need_whose_download_is_cut_skips_what_needs_it_until_it_comes(
    tmp_path, kaio_server, api_key
):
    manifest = write_pipeline(tmp_path, rows=12)
    url = kaio_server.url
    with FaultProxy(url) as proxy:
        # Every download of prep's outputs is cut after 10 bytes.
        proxy.on("GET", "/objects/.*-prep-.*/outputs/.*").truncate(10, times=None)
        cut = run_apply(manifest, proxy.url, api_key, "--yes")
    assert cut.returncode == 1, cut.stdout + cut.stderr
    assert "skipped: needs prep, which completed, but its outputs could not be downloaded" in (
        cut.stdout
    )
    assert counts(url, api_key) == {"prep": 1}
    assert not (outputs(tmp_path, "prep") / "stats.json").exists()  # nothing half-written

    # Once the line holds, the next apply downloads prep's outputs (prep itself is unchanged)
    # and runs what needs it.
    again = run_apply(manifest, url, api_key, "--yes")
    assert again.returncode == 0, again.stdout + again.stderr
    assert read(tmp_path, "train-lr0.5", "seen.json")["stats"] == {"rows": 12, "mean": 6.0}
    assert counts(url, api_key) == {"prep": 1, "train": 2, "eval": 1}


def test_detach_submits_what_can_start_and_leaves_the_rest_for_the_next_apply(
    tmp_path, kaio_server, api_key
):
    manifest = write_pipeline(tmp_path, rows=8)
    url = kaio_server.url
    detached = run_apply(manifest, url, api_key, "--yes", "--detach")
    assert detached.returncode == 0, detached.stdout + detached.stderr
    assert "not submitted: waits for prep (--detach does not wait for it)" in detached.stdout
    assert counts(url, api_key) == {"prep": 1}
    followed = run_apply(manifest, url, api_key, "--yes")
    assert followed.returncode == 0, followed.stdout + followed.stderr
    assert read(tmp_path, "eval", "best.json")["best"] == "train-lr0.1"


def test_templates_read_what_a_needed_job_wrote_once_it_has_completed(
    tmp_path, kaio_server, api_key
):
    manifest = write_pipeline(tmp_path, rows=10)
    scaled = "    params: {scaled: \"{{ needs.prep.outputs['stats.json'].rows * 2 }}\"}\n"
    manifest.write_text(
        manifest.read_text().replace("    needs: prep\n", "    needs: prep\n" + scaled)
    )
    url = kaio_server.url

    # Before prep has run, the jobs after it wait: the plan says so.
    planned = run_kaio(manifest, api_key, "plan", str(manifest), "--api", url)
    assert planned.returncode == 0, planned.stderr
    assert "train  waits for prep: planned once it has completed" in planned.stdout
    assert "eval  waits for train: planned once it has completed" in planned.stdout
    as_json = run_kaio(manifest, api_key, "plan", str(manifest), "--offline", "-o", "json")
    assert json.loads(as_json.stdout)["waiting"] == [
        {"key": "train", "waits_for": ["prep"]},
        {"key": "eval", "waits_for": ["train"]},
    ]
    assert run_kaio(manifest, api_key, "validate", str(manifest)).returncode == 0

    # One apply runs prep, then plans and runs the rest with what prep wrote.
    result = run_apply(manifest, url, api_key, "--yes")
    assert result.returncode == 0, result.stdout + result.stderr
    for cell, lr in (("train-lr0.1", 0.1), ("train-lr0.5", 0.5)):
        assert read(tmp_path, cell, "params_seen.json") == {"lr": lr, "scaled": 20}
    assert read(tmp_path, "eval", "best.json")["best"] == "train-lr0.1"
    assert counts(url, api_key) == {"prep": 1, "train": 2, "eval": 1}

    again = run_apply(manifest, url, api_key, "--yes")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "4 unchanged" in again.stdout and "submitted" not in again.stdout


def test_a_pipeline_runs_on_a_server_without_the_local_extensions(tmp_path, kaio_server, api_key):
    """As against the hosted API: no /healthz features, so no base packages; each job's whole
    package carries what it needs."""
    manifest = write_pipeline(tmp_path, rows=4)
    with FaultProxy(kaio_server.url) as proxy:
        proxy.on("GET", "/healthz").status(404, "no route GET /healthz", times=None)
        result = run_apply(manifest, proxy.url, api_key, "--yes")
        assert proxy.count("PUT", "/packages/.*") + proxy.count("GET", "/packages/.*") == 0
        assert proxy.count("PUT", "/objects/.*") == 4  # each job's whole package
    assert result.returncode == 0, result.stdout + result.stderr
    assert read(tmp_path, "train-lr0.1", "seen.json")["stats"] == {"rows": 4, "mean": 2.0}
    assert read(tmp_path, "eval", "best.json")["seen"] == {"train-lr0.1": 2.0, "train-lr0.5": 2.4}


def test_a_template_may_read_only_the_outputs_of_a_needed_job_without_cells(tmp_path):
    read = "\"{{ needs.prep.outputs['stats.json'].rows }}\""
    code, errors = validate(
        tmp_path,
        f"""\
        version: 1
        name: pipe
        jobs:
          prep:
            matrix: {{x: [1, 2]}}
          train:
            needs: prep
            params: {{rows: {read}}}
          other:
            params: {{rows: {read}}}
        """,
    )
    assert code == 2
    assert errors == [
        "kaio.yaml:8:20: jobs.train.params.rows: prep has cells (a matrix or a sweep); "
        "needs.prep.outputs reads the outputs of a job without cells "
        f"(in {read})",
        "kaio.yaml:10:20: jobs.other.params.rows: prep is not among the jobs this job needs; "
        f"add it: needs: [prep] (in {read})",
    ]


def test_stages_of_a_diamond_and_the_cycle_found_first():
    from kaio_spec.stages import find_cycle, stage_of

    diamond = {"eval": ["a", "b"], "a": ["prep"], "b": ["prep"], "prep": [], "alone": []}
    assert find_cycle(diamond) is None
    assert stage_of(diamond) == {"eval": 2, "a": 1, "b": 1, "prep": 0, "alone": 0}
    # Keys it does not know are the unknown-key check's to report, not a cycle.
    assert find_cycle({"a": ["missing"]}) is None
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["b"], "d": ["d"]}) == ["b", "c", "b"]
    long = {f"j{i}": [f"j{i + 1}"] for i in range(5000)} | {"j5000": []}
    assert stage_of(long)["j0"] == 5000  # no recursion limit on a long chain
    assert find_cycle({**long, "j5000": ["j0"]})[0] == "j0"
