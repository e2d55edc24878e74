"""`kaio results FILE` and kaio_spec.results(): a sweep's cells side by side, on a real platform.

One sweep is applied once for the module (6 cells of an SVC-like grid, one failing, one writing
no metrics.json) and read back in every way a user would: the table, each output format, the
options, Python, and results.csv after apply."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest
from apply_support import KAIO, kaio_env

import kaio_spec
from kaio_spec.errors import InvalidInput

# accuracy per (kernel, C): None writes no metrics.json, "fail" exits 1
TRAIN = textwrap.dedent(
    """\
    import json, sys
    p = json.load(open("params.json"))
    acc = {("linear", 0.05): None, ("linear", 0.1): 0.93, ("linear", 1): 0.95,
           ("rbf", 0.05): 0.92, ("rbf", 0.1): 0.9933, ("rbf", 1): "fail"}[(p["kernel"], p["C"])]
    if acc == "fail":
        sys.exit("diverged")
    with open("metrics.jsonl", "w") as f:
        for step, loss in enumerate([0.9, 0.3, 0.5]):
            f.write(json.dumps({"step": step, "loss": loss * p["C"]}) + "\\n")
    if acc is not None:
        json.dump({"accuracy": acc, "eval": {"f1": round(acc - 0.01, 4), "split": "test"}},
                  open("metrics.json", "w"))
    """
)

MANIFEST = textwrap.dedent(
    """\
    version: 1
    name: svc
    settings: {max_parallel: 6, poll_seconds: 0.3}
    defaults:
      directory: ./code
      params: {seed: 7}
    jobs:
      svc:
        name: "svc-{{ matrix.kernel }}-C{{ matrix.C }}"
        sweep:
          method: grid
          metric: {name: accuracy, goal: maximize}
          parameters:
            C: {values: [1, 0.1, 0.05]}
            kernel: {values: [linear, rbf]}
    """
)


class Project:
    def __init__(self, folder: Path, url: str, key: str):
        self.folder, self.url, self.key = folder, url, key
        self.manifest = folder / "kaio.yaml"
        self.outputs = folder / "outputs" / "svc"

    def kaio(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [KAIO, *args],
            cwd=self.folder,
            env=kaio_env(self.folder / "home", self.key),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def results(self, *args: str, offline: bool = False) -> subprocess.CompletedProcess:
        where = ("--offline",) if offline else ("--api", self.url)
        return self.kaio("results", "kaio.yaml", *where, *args)

    def json(self, *args: str) -> dict:
        r = self.results("-o", "json", *args)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)


@pytest.fixture(scope="module")
def project(tmp_path_factory, kaio_server) -> Project:
    folder = tmp_path_factory.mktemp("svc")
    (folder / "code").mkdir()
    (folder / "code" / "train.py").write_text(TRAIN)
    (folder / "kaio.yaml").write_text(MANIFEST)
    (folder / "home").mkdir()
    p = Project(folder, kaio_server.url, kaio_server.add_user())
    applied = p.kaio("apply", "kaio.yaml", "--api", p.url, "--yes")
    assert applied.returncode == 1, applied.stdout + applied.stderr  # one cell fails
    assert "best: svc-rbf-C0.1 (accuracy 0.9933)" in applied.stdout
    return p


def by_name(doc: dict) -> dict[str, dict]:
    return {r["name"]: r for r in doc["rows"]}


def test_the_best_cell_of_an_applied_sweep_and_its_values(project):
    """The user's question after a sweep: which cell was best, and with what."""
    doc = project.json()
    assert doc["best"] == "svc-rbf-C0.1"
    assert doc["metric"] == {"name": "accuracy", "goal": "maximize"}
    # Every cell, best first, then by accuracy; the ones without it last, in plan order.
    assert [r["name"] for r in doc["rows"]] == [
        "svc-rbf-C0.1",
        "svc-linear-C1",
        "svc-linear-C0.1",
        "svc-rbf-C0.05",
        "svc-rbf-C1",
        "svc-linear-C0.05",
    ]
    best = doc["rows"][0]
    assert best["status"] == "Completed" and best["attempts"] == 1
    assert best["run_time"] is not None and best["run_time"] >= 0
    # The parameters as the job received them in params.json: defaults' and the cell's.
    assert (best["C"], best["kernel"], best["seed"]) == (0.1, "rbf", 7)
    # metrics.json, nested keys flattened; metrics.jsonl's last step, min and max.
    assert (best["accuracy"], best["eval.f1"], best["eval.split"]) == (0.9933, 0.9833, "test")
    assert best["step"] == 2 and best["loss"] == pytest.approx(0.05)
    assert best["loss.min"] == pytest.approx(0.03) and best["loss.max"] == pytest.approx(0.09)
    assert doc["params"] == ["C", "kernel", "seed"]

    rows = by_name(doc)
    failed = rows["svc-rbf-C1"]
    assert failed["status"] == "Failed" and failed["attempts"] == 1
    assert failed["accuracy"] is None and failed["loss"] is None  # nothing written
    assert (failed["C"], failed["kernel"]) == (1, "rbf")
    no_summary = rows["svc-linear-C0.05"]
    assert no_summary["status"] == "Completed"
    assert no_summary["accuracy"] is None and no_summary["loss.max"] == pytest.approx(0.045)

    table = project.results()
    assert table.returncode == 0, table.stderr
    assert "best: svc-rbf-C0.1 (accuracy 0.9933)" in table.stdout
    assert "svc: 6 jobs (5 Completed, 1 Failed)" in table.stdout
    first = next(line for line in table.stdout.splitlines() if "svc-" in line)
    assert first.startswith("*") and "svc-rbf-C0.1" in first  # the best row is marked


def test_apply_wrote_results_csv_and_json_next_to_the_outputs(project):
    with open(project.outputs / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6
    assert rows[0]["name"] == "svc-rbf-C0.1" and rows[0]["accuracy"] == "0.9933"
    assert {r["name"]: r["status"] for r in rows}["svc-rbf-C1"] == "Failed"
    saved = json.loads((project.outputs / "results.json").read_text())
    assert saved["best"] == "svc-rbf-C0.1" and len(saved["rows"]) == 6
    assert not list(project.outputs.glob(".*tmp"))  # written atomically


def test_sort_numbers_as_numbers_and_names_naturally(project):
    doc = project.json("--sort", "C", "--columns", "name,C")
    assert [r["C"] for r in doc["rows"]] == [0.05, 0.05, 0.1, 0.1, 1, 1]
    doc = project.json("--sort", "name")
    # lr0.05 before lr0.1 before lr1: the numbers inside names compare as numbers
    assert [r["name"] for r in doc["rows"]] == [
        "svc-linear-C0.05",
        "svc-linear-C0.1",
        "svc-linear-C1",
        "svc-rbf-C0.05",
        "svc-rbf-C0.1",
        "svc-rbf-C1",
    ]
    doc = project.json("--sort", "-accuracy")
    assert [r["accuracy"] for r in doc["rows"]] == [0.9933, 0.95, 0.93, 0.92, None, None]
    doc = project.json("--sort", "accuracy")  # ascending: missing values still last
    assert [r["accuracy"] for r in doc["rows"]] == [0.92, 0.93, 0.95, 0.9933, None, None]


def test_only_top_columns_and_only_changed(project):
    doc = project.json("--only", "svc-rbf-*", "--top", "2")
    assert [r["name"] for r in doc["rows"]] == ["svc-rbf-C0.1", "svc-rbf-C0.05"]
    doc = project.json("--only-changed")
    assert doc["params"] == ["C", "kernel"]  # seed is 7 everywhere
    assert "seed" not in doc["rows"][0]
    doc = project.json("--columns", "name,eval.*")
    assert doc["columns"] == ["name", "eval.f1", "eval.split"]


def test_csv_and_markdown(project):
    r = project.results("-o", "csv", "--columns", "name,C,accuracy")
    assert r.returncode == 0, r.stderr
    rows = list(csv.reader(io.StringIO(r.stdout)))
    assert rows[0] == ["name", "C", "accuracy"]
    assert rows[1] == ["svc-rbf-C0.1", "0.1", "0.9933"]
    assert rows[-1] == ["svc-linear-C0.05", "0.05", ""]  # a missing value is empty

    md = project.results("-o", "md", "--columns", "name,C,accuracy").stdout
    lines = md.splitlines()
    assert lines[0] == "| name | C | accuracy |"
    assert lines[1] == "| --- | ---: | ---: |"
    assert lines[2] == "| **svc-rbf-C0.1** | 0.1 | 0.9933 |"
    assert lines[-1] == "best: svc-rbf-C0.1 (accuracy 0.9933)"


def test_bad_options_are_one_clear_line(project):
    r = project.results("--sort", "acuracy")
    assert r.returncode == 2
    assert "--sort 'acuracy': no such column" in r.stderr and "accuracy" in r.stderr
    assert "Traceback" not in r.stderr
    r = project.results("--only", "nope*")
    assert r.returncode == 2 and "--only 'nope*': matches no job of svc" in r.stderr
    r = project.results("--top", "0")
    assert r.returncode == 2 and "--top 0" in r.stderr


def test_outputs_not_on_disk_are_downloaded_first(project):
    folder = project.outputs / "svc-linear-C1"
    shutil.rmtree(folder)
    doc = project.json("--no-download")
    assert by_name(doc)["svc-linear-C1"]["accuracy"] is None
    assert not folder.exists()
    doc = project.json()
    assert by_name(doc)["svc-linear-C1"]["accuracy"] == 0.95
    assert (folder / "metrics.json").is_file()


def test_a_folder_holding_other_files_is_left_alone_and_named(project):
    folder = project.outputs / "svc-linear-C0.1"
    shutil.rmtree(folder)
    folder.mkdir()
    (folder / "mine.txt").write_text("my notes")
    r = project.results("-o", "json")
    assert r.returncode == 0, r.stderr
    assert by_name(json.loads(r.stdout))["svc-linear-C0.1"]["accuracy"] is None
    assert "warning: svc-linear-C0.1: outputs not downloaded:" in r.stderr
    assert (folder / "mine.txt").read_text() == "my notes"  # untouched
    shutil.rmtree(folder)
    assert by_name(project.json())["svc-linear-C0.1"]["accuracy"] == 0.93  # fetched again


def test_offline_reads_what_is_on_disk(project):
    r = project.kaio("results", "kaio.yaml", "--offline", "-o", "json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["best"] == "svc-rbf-C0.1"
    rows = by_name(doc)
    assert rows["svc-rbf-C0.1"]["attempts"] == 1  # from .kaio/state.json
    assert rows["svc-rbf-C1"]["status"] == "Failed"  # its logs were downloaded


def test_python_results(project, tmp_path):
    client = kaio_spec.Client(project.url).login(project.key)
    table = kaio_spec.results(project.manifest, client)
    assert isinstance(table, kaio_spec.Results) and len(table) == 6
    assert table.best["name"] == "svc-rbf-C0.1" and table.best["accuracy"] == 0.9933
    assert table.summary() == "best: svc-rbf-C0.1 (accuracy 0.9933)"
    assert [r["name"] for r in table.sorted("-C").top(2)] == ["svc-linear-C1", "svc-rbf-C1"]
    status = kaio_spec.status(project.manifest, client)
    assert {j["name"]: j["status"] for j in status["jobs"]}["svc-rbf-C1"] == "Failed"
    (got,) = kaio_spec.download(project.manifest, client, only="svc-rbf-C0.1")
    assert got["outcome"] == "already" and "metrics.json" in got["files"]
    table.to_csv(tmp_path / "r.csv")
    assert (tmp_path / "r.csv").read_text().splitlines()[1].startswith("svc,svc-rbf-C0.1,")
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(InvalidInput, match=r"pip install 'kaio-spec\[pandas\]'"):
            table.to_pandas()
    else:
        frame = table.to_pandas()
        assert frame["name"].iloc[0] == "svc-rbf-C0.1"
        assert frame["accuracy"].max() == 0.9933


# ---- what is on disk, read offline: edge cases of the metrics files and of ranking ------------


def synthetic(folder: Path, metric: str, values: dict[str, dict[str, str]]) -> Path:
    """A grid sweep over `x` whose jobs' outputs are already downloaded: values[x] maps a file
    name to its text. The markers are what `kaio download` writes."""
    xs = ", ".join(json.dumps(x) for x in values)
    (folder / "code").mkdir(exist_ok=True)
    (folder / "code" / "train.py").write_text("")
    manifest = folder / "kaio.yaml"
    manifest.write_text(
        "version: 1\nname: edge\ndefaults: {directory: ./code}\njobs:\n  t:\n"
        '    name: "t-{{ matrix.x }}"\n'
        f"    metric: {metric}\n"
        f"    sweep: {{method: grid, parameters: {{x: {{values: [{xs}]}}}}}}\n"
    )
    for job in kaio_spec.plan(manifest):
        files = values[str(job.matrix["x"])]
        job.outputs.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            path = job.outputs / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        marker = {"unique_job_name": f"u-{job.name}", "status": "Completed", "files": list(files)}
        (job.outputs / ".kaio-download.json").write_text(json.dumps(marker))
    return manifest


def test_ties_keep_plan_order_and_name_the_others_and_nan_is_never_best(tmp_path):
    manifest = synthetic(
        tmp_path,
        "{name: acc, goal: maximize}",
        {
            "a": {"metrics.json": '{"acc": 0.8}'},
            "b": {"metrics.json": '{"acc": 0.9}'},
            "c": {"metrics.json": '{"acc": NaN}'},
            "d": {"metrics.json": '{"acc": 0.9}'},
            "e": {"metrics.json": '{"acc": "n/a"}'},
        },
    )
    table = kaio_spec.results(manifest, offline=True)
    assert [r["name"] for r in table] == ["t-b", "t-d", "t-a", "t-e", "t-c"]
    assert table.best["name"] == "t-b"
    assert table.summary() == "best: t-b (acc 0.9, tied with t-d)"
    assert json.loads(json.dumps(table.to_json()))["rows"][-1]["acc"] == "nan"


def test_minimize_and_no_value_anywhere(tmp_path):
    manifest = synthetic(
        tmp_path,
        "{name: loss}",  # W&B's default goal: minimize
        {"1": {"metrics.json": '{"loss": 0.5}'}, "2": {"metrics.json": '{"loss": 0.25}'}},
    )
    assert kaio_spec.results(manifest, offline=True).best["name"] == "t-2"
    other = tmp_path / "none"
    other.mkdir()
    manifest = synthetic(other, "{name: loss}", {"1": {"other.txt": "x"}})
    table = kaio_spec.results(manifest, offline=True)
    assert table.best is None
    assert table.summary() == "best: none yet (no completed job has a number for loss)"


def test_jsonl_cut_lines_bad_files_and_several_instances(tmp_path):
    manifest = synthetic(
        tmp_path,
        "{name: loss}",
        {
            # a job killed mid-write: the cut last line is skipped, the rest counts
            "cut": {"metrics.jsonl": '{"loss": 3}\n\n{"loss": 1, "lr": 0.1}\n{"loss": 0.'},
            "bad": {"metrics.json": "{not json"},
            "list": {"metrics.json": "[1, 2]"},
            # several instances: the first host's, as the dashboard reads them
            "multi": {"algo-2/metrics.json": '{"loss": 9}', "algo-1/metrics.json": '{"loss": 2}'},
        },
    )
    table = kaio_spec.results(manifest, offline=True)
    rows = {r["name"]: r for r in table}
    assert (rows["t-cut"]["loss"], rows["t-cut"]["loss.min"], rows["t-cut"]["loss.max"]) == (
        1,
        1,
        3,
    )
    assert rows["t-cut"]["lr"] == 0.1
    assert rows["t-multi"]["loss"] == 2
    assert rows["t-bad"]["loss"] is None and rows["t-bad"]["status"] == "Completed"
    problems = "\n".join(table.problems)
    assert "t-cut:" in problems and "1 line(s) that are not JSON objects skipped" in problems
    assert "t-bad:" in problems and "not JSON" in problems
    assert "t-list:" in problems and "holds a list, not an object" in problems


def test_a_metric_named_like_a_parameter_gets_its_own_column(tmp_path):
    manifest = synthetic(
        tmp_path,
        "{name: x, goal: maximize}",
        {"1": {"metrics.json": '{"x": 5}'}, "2": {"metrics.json": '{"x": 7}'}},
    )
    table = kaio_spec.results(manifest, offline=True)
    assert table.params == ("x",) and table.metrics == ("metrics.x",)
    assert table.best["name"] == "t-2" and table.best["x"] == "2" and table.best["metrics.x"] == 7


def test_offline_without_downloads_says_not_submitted(tmp_path):
    manifest = synthetic(tmp_path, "{name: x}", {"1": {}})
    for job in kaio_spec.plan(manifest):
        shutil.rmtree(job.outputs)
    (row,) = kaio_spec.results(manifest, offline=True)
    assert (row["status"], row["attempts"], row["x"]) == ("NotSubmitted", 0, "1")


def test_metric_is_checked_by_validate_and_is_not_part_of_identity(tmp_path):
    manifest = synthetic(tmp_path, "{name: acc, goal: maximize}", {"1": {}})
    before = [j.job_name for j in kaio_spec.plan(manifest)]
    text = manifest.read_text()
    manifest.write_text(text.replace("goal: maximize", "goal: minimize"))
    assert [j.job_name for j in kaio_spec.plan(manifest)] == before
    manifest.write_text(text.replace("goal: maximize", "goal: highest"))
    r = subprocess.run(
        [KAIO, "validate", str(manifest)], capture_output=True, text=True, check=False
    )
    assert r.returncode == 2
    assert "kaio.yaml:7:31: jobs.t.metric.goal:" in r.stderr
    assert "maximize" in r.stderr and "Traceback" not in r.stderr


def test_on_a_narrow_terminal_parameters_wrap_and_metrics_stay_whole(project):
    """Run in a pseudo-terminal 60 columns wide: a long parameter value wraps onto more lines,
    while every metric is shown whole on its row's first line."""
    import os
    import pty
    import re

    long_value = "a-rather-long-parameter-value-that-cannot-fit"
    main, secondary = pty.openpty()
    env = kaio_env(project.folder / "home", project.key) | {"COLUMNS": "60", "NO_COLOR": "1"}
    # the same jobs' outputs (same manifest name and job names), one more parameter
    manifest = project.folder / "wide.yaml"
    manifest.write_text(
        MANIFEST.replace("params: {seed: 7}", f"params: {{seed: 7, note: {long_value}}}")
    )
    done = subprocess.run(
        [KAIO, "results", "wide.yaml", "--offline", "--columns", "name,note,accuracy,eval.f1"],
        cwd=project.folder,
        env=env,
        stdout=secondary,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
        check=False,
    )
    os.close(secondary)
    out = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.close(main)
    assert done.returncode == 0, done.stderr
    text = re.sub(r"\x1b\[[0-9;]*m", "", out.decode()).replace("\r", "")
    lines = text.splitlines()
    assert lines[0].split() == ["name", "note", "accuracy", "eval.f1"]
    assert all(len(line) <= 60 for line in lines[:-2]), lines  # fits: the note wrapped
    assert long_value not in text  # not on one line...
    assert long_value.replace("-", "") in "".join(lines).replace("-", "").replace(" ", "")


def test_the_dashboard_learns_the_metric_and_the_attempts_from_labels(tmp_path):
    manifest = synthetic(tmp_path, "{name: acc, goal: maximize}\n    retries: 2", {"1": {}})
    (job,) = kaio_spec.plan(manifest)
    assert json.loads(job.labels["metric"]) == {"name": "acc", "goal": "maximize"}
    assert job.labels["retries"] == "2"
    plain = tmp_path / "plain"
    plain.mkdir()
    (job,) = kaio_spec.plan(synthetic(plain, "{name: acc}", {"1": {}}))
    assert "retries" not in job.labels  # nothing to say: one attempt
