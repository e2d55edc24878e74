"""A manifest's jobs side by side: one row per planned job with its parameters and metrics.

    table = results("kaio.yaml", client)     # ONE GET /jobs; ended jobs' outputs fetched first
    table = results("kaio.yaml", offline=True)   # only what is on disk
    table.best                               # the best completed row by the declared metric
    table.sorted("-accuracy").top(3).to_csv("best.csv")

A row: `key`, `name`, `status` (SageMaker's spelling; "NotSubmitted"; "Unknown" offline for a
job whose outputs are not on disk), `attempts`, `run_time` (seconds), then the job's parameters
(params.json as the job receives it, with its matrix and sweep values) and its metrics: every
value of the `metrics.json` the job wrote (nested objects flattened with dots), and of a
`metrics.jsonl` of step records its last record plus `<metric>.min` and `<metric>.max`. A
multi-instance job's are the first instance's (`algo-1/metrics.json`), as the dashboard reads.

Works from what `kaio apply` downloads, so it is the same against the hosted API and the local
platform. Sorting is by number for numbers and natural for text (`lr0.05` before `lr0.1`);
missing values sort last either way.
"""

from __future__ import annotations

import csv
import fnmatch
import io
import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

from kaio_spec.errors import InvalidInput
from kaio_spec.files import write_atomic
from kaio_spec.manifest import Metric
from kaio_spec.statuses import JobStatus
from kaio_spec.times import elapsed, format_duration

__all__ = ["JOB_COLUMNS", "Results", "collect", "read_metrics", "results"]

JOB_COLUMNS = ("key", "name", "status", "attempts", "run_time")
METRICS_FILE = "metrics.json"
STEPS_FILE = "metrics.jsonl"
NOT_SUBMITTED = "NotSubmitted"
UNKNOWN = "Unknown"  # offline, for a job whose outputs are not on disk


# ---- values ------------------------------------------------------------------------------------


def flatten(value: Any, prefix: str = "", out: dict[str, Any] | None = None) -> dict[str, Any]:
    """Nested objects flattened with dots ({"eval": {"acc": 1}} → {"eval.acc": 1}); lists become
    their compact JSON text; numbers, strings, booleans and null stay as they are."""
    out = {} if out is None else out
    if isinstance(value, dict):
        for k, v in value.items():
            flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(value, list):
        out[prefix] = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    else:
        out[prefix] = value
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_NUMBER_IN_TEXT = re.compile(r"(\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)")


def natural_key(text: str) -> tuple:
    """Text with its numbers compared as numbers: "lr0.05" < "lr0.1" < "lr1e-1x"."""
    parts = _NUMBER_IN_TEXT.split(text)
    return tuple(
        (0, float(p), "") if i % 2 else (1, 0.0, p.casefold()) for i, p in enumerate(parts)
    )


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


# ---- reading a job's outputs --------------------------------------------------------------------


def _first_host_file(folder: Path, name: str) -> Path | None:
    """FOLDER/NAME (one instance), else the lowest algo-N/NAME (several)."""
    direct = folder / name
    if direct.is_file():
        return direct
    hosts = sorted(folder.glob(f"algo-*/{name}"), key=lambda p: natural_key(p.parent.name))
    return hosts[0] if hosts else None


def read_metrics(folder: str | os.PathLike) -> tuple[dict[str, Any], str | None]:
    """The metrics of a downloaded job folder (see the module's docstring), and a problem found
    reading them (an unreadable metrics.json is reported, not fatal)."""
    folder = Path(folder)
    metrics: dict[str, Any] = {}
    problem = None
    steps_file = _first_host_file(folder, STEPS_FILE)
    if steps_file is not None:
        problem = _read_steps(steps_file, metrics)
    summary_file = _first_host_file(folder, METRICS_FILE)
    if summary_file is not None:
        try:
            doc = json.loads(summary_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            return metrics, f"{summary_file}: not JSON ({e})"
        if isinstance(doc, dict):
            metrics.update(flatten(doc))  # the job's final word wins over its last step
        else:
            problem = f"{summary_file}: holds a {type(doc).__name__}, not an object"
    return metrics, problem


def _read_steps(path: Path, metrics: dict[str, Any]) -> str | None:
    """The last record of a metrics.jsonl, plus each numeric metric's min and max over all."""
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError as e:
        return f"{path}: {e}"
    records, bad = _json_lines(lines)
    if not records:
        return f"{path}: {bad} line(s) that are not JSON objects skipped" if bad else None
    flat = [
        flatten(r) if any(isinstance(v, dict | list) for v in r.values()) else r for r in records
    ]
    metrics.update(flat[-1])
    for key in _union(flat):
        # type() rather than _is_number(): a bool is no number, NaN (v != v) no value; this
        # loop sees every step of every job
        values = [v for r in flat if type(v := r.get(key)) in (int, float) and v == v]
        if values:
            numbers = cast("list[float]", values)  # type() above let only numbers through
            metrics[f"{key}.min"] = min(numbers)
            metrics[f"{key}.max"] = max(numbers)
    return f"{path}: {bad} line(s) that are not JSON objects skipped" if bad else None


def _json_lines(lines: list[str]) -> tuple[list[dict[str, Any]], int]:
    """The JSON objects among `lines`, and how many lines were not one (a line cut by a job
    killed mid-write, say). One decode of the whole file when every line is fine."""
    try:
        parsed = json.loads("[" + ",".join(lines) + "]")
    except ValueError:
        parsed = None
    if parsed is None or len(parsed) != len(lines):  # a line that is not exactly one value
        parsed = []
        for line in lines:
            try:
                parsed.append(json.loads(line))
            except ValueError:
                parsed.append(None)
    records = [r for r in parsed if isinstance(r, dict)]
    return records, len(parsed) - len(records)


# ---- the table ----------------------------------------------------------------------------------


class Results(Sequence[dict[str, Any]]):
    """Rows (dicts, every column present, None where a value is missing) in display order.

    `params` and `metrics` name the parameter and metric columns; `metric` is the declared one
    (a job's `metric:`), if any; `problems`: what could not be read (file: why)."""

    def __init__(
        self,
        manifest: str,
        rows: list[dict[str, Any]],
        params: Sequence[str],
        metrics: Sequence[str],
        metric: Metric | None = None,
        problems: Sequence[str] = (),
        columns: Sequence[str] | None = None,
    ):
        self.manifest = manifest
        self.rows = rows
        self.params = tuple(params)
        self.metrics = tuple(metrics)
        self.metric = metric
        self.problems = tuple(problems)
        self.columns = tuple(columns) if columns else (*JOB_COLUMNS, *self.params, *self.metrics)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows)

    def __repr__(self) -> str:
        return f"<Results {self.manifest}: {len(self.rows)} rows, columns {list(self.columns)}>"

    def _with(self, rows: list[dict[str, Any]], columns: Sequence[str] | None = None) -> Results:
        kept = self.columns if columns is None else tuple(columns)
        return Results(
            self.manifest,
            rows,
            [c for c in self.params if c in kept],
            [c for c in self.metrics if c in kept],
            self.metric,
            self.problems,
            kept,
        )

    # ---- the best row ----

    @property
    def best(self) -> dict[str, Any] | None:
        """The best Completed row by the declared metric (the first of equals, in plan order);
        None without a declared metric or a completed row that has it as a number."""
        tied = self.best_rows
        return tied[0] if tied else None

    @property
    def best_rows(self) -> list[dict[str, Any]]:
        """Every Completed row that shares the best value of the declared metric."""
        if self.metric is None:
            return []
        name = self.metric.name
        scored = [
            r
            for r in self.rows
            if r["status"] == JobStatus.COMPLETED
            and _is_number(r.get(name))
            and not _missing(r[name])
        ]
        if not scored:
            return []
        pick = max if self.metric.maximize else min
        top = pick(r[name] for r in scored)
        return [r for r in scored if r[name] == top]

    def summary(self) -> str:
        """'best: svc-3 (accuracy 0.9933)', or why there is none."""
        if self.metric is None:
            return ""
        tied = self.best_rows
        name = self.metric.name
        if not tied:
            return f"best: none yet (no completed job has a number for {name})"
        more = f", tied with {', '.join(r['name'] for r in tied[1:])}" if len(tied) > 1 else ""
        return f"best: {tied[0]['name']} ({name} {format_value(tied[0][name])}{more})"

    # ---- choosing rows and columns ----

    def sorted(self, by: str | None = None) -> Results:
        """Sorted by column `by` ("-name": descending), or by the declared metric (best first)
        when None; rows without a value last, ties in plan order."""
        if by is None:
            if self.metric is None or self.metric.name not in self.columns:
                return self  # nothing declared, or no job wrote it yet: plan order
            by = ("-" if self.metric.maximize else "") + self.metric.name
        descending = by.startswith("-")
        column = by[1:] if descending else by
        self._check_columns([column], "--sort")
        groups: tuple[list, list, list] = ([], [], [])  # numbers, text, missing
        for r in self.rows:
            value = r.get(column)
            groups[2 if _missing(value) else 0 if _is_number(value) else 1].append(r)
        numbers, texts, absent = groups
        # numbers, then text, then missing values, whichever the direction; reverse=True keeps
        # equal rows in their order too, so ties stay in plan order
        numbers.sort(key=lambda r: float(r[column]), reverse=descending)
        texts.sort(key=lambda r: natural_key(str(r[column])), reverse=descending)
        return self._with(numbers + texts + absent)

    def only(self, pattern: str) -> Results:
        """The rows whose key or name matches the fnmatch pattern (a plain key or name too)."""
        rows = [
            r
            for r in self.rows
            if fnmatch.fnmatchcase(r["key"], pattern) or fnmatch.fnmatchcase(r["name"], pattern)
        ]
        if not rows:
            names = ", ".join(r["name"] for r in self.rows[:5])
            raise InvalidInput(
                f"--only {pattern!r}: matches no job of {self.manifest} (matched against each "
                f"job's key and name: {names}{'…' if len(self.rows) > 5 else ''})"
            )
        return self._with(rows)

    def top(self, n: int) -> Results:
        if n < 1:
            raise InvalidInput(f"--top {n}: give a number of rows, 1 or more")
        return self._with(self.rows[:n])

    def only_changed(self) -> Results:
        """Without the parameter columns whose value is the same in every row."""
        same = {c for c in self.params if len({json.dumps(r.get(c)) for r in self.rows}) <= 1}
        return self._with(self.rows, [c for c in self.columns if c not in same])

    def select(self, columns: Iterable[str]) -> Results:
        """Only these columns, in this order; each may be an fnmatch pattern ("eval.*")."""
        chosen: list[str] = []
        for wanted in columns:
            found = [c for c in self.columns if fnmatch.fnmatchcase(c, wanted)]
            if not found:
                self._check_columns([wanted], "--columns")
            chosen.extend(c for c in found if c not in chosen)
        return self._with(self.rows, chosen)

    def _check_columns(self, names: Iterable[str], option: str) -> None:
        for name in names:
            if name not in self.columns:
                raise InvalidInput(
                    f"{option} {name!r}: no such column; the columns are {', '.join(self.columns)}"
                )

    # ---- writing ----

    def to_records(self) -> list[dict[str, Any]]:
        """The rows with only the shown columns, in order."""
        return [{c: r.get(c) for c in self.columns} for r in self.rows]

    def to_json(self) -> dict[str, Any]:
        """{"manifest", "metric": {name, goal} | null, "best": NAME | null, "params",
        "metrics", "columns", "rows"}; NaN and infinities as the strings "nan", "inf"."""
        best = self.best
        return {
            "manifest": self.manifest,
            "metric": {"name": self.metric.name, "goal": self.metric.goal} if self.metric else None,
            "best": best["name"] if best else None,
            "params": list(self.params),
            "metrics": list(self.metrics),
            "columns": list(self.columns),
            "rows": [{c: _json_safe(v) for c, v in r.items()} for r in self.to_records()],
        }

    def to_csv(self, path: str | os.PathLike | None = None) -> str:
        """The shown columns as CSV (missing values empty); written to `path` when given."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(self.columns)
        for record in self.to_records():
            writer.writerow(["" if v is None else _csv_text(v) for v in record.values()])
        text = buffer.getvalue()
        if path is not None:
            _write_shared(Path(path), text)
        return text

    def to_markdown(self) -> str:
        """A Markdown table (numbers right-aligned, the best row's name in bold) and the
        summary line, to paste into a pull request."""
        best = {id(r) for r in self.best_rows[:1]}
        numeric = {c for c in self.columns if self.is_numeric(c)}
        lines = [
            "| " + " | ".join(_md(c) for c in self.columns) + " |",
            "| " + " | ".join("---:" if c in numeric else "---" for c in self.columns) + " |",
        ]
        for row in self.rows:
            cells = []
            for c in self.columns:
                text = _md(format_value(row.get(c), c))
                cells.append(f"**{text}**" if c == "name" and id(row) in best else text)
            lines.append("| " + " | ".join(cells) + " |")
        if self.summary():
            lines += ["", self.summary()]
        return "\n".join(lines) + "\n"

    def to_pandas(self):
        """A pandas DataFrame of the shown columns (pandas is imported only now)."""
        try:
            import pandas
        except ImportError:
            raise InvalidInput(
                "Results.to_pandas() needs pandas, which kaio-spec does not install by "
                "itself: pip install 'kaio-spec[pandas]' (or pip install pandas)"
            ) from None
        return pandas.DataFrame(self.to_records(), columns=list(self.columns))

    def is_numeric(self, column: str) -> bool:
        """Whether every value present in the column is a number."""
        if column == "run_time":
            return True
        values = [r.get(column) for r in self.rows if r.get(column) is not None]
        return bool(values) and all(_is_number(v) for v in values)


def format_value(value: Any, column: str = "") -> str:
    """A value for people: numbers to 6 significant digits, run time as 1m05s, '-' if missing."""
    if value is None:
        return "-"
    if column == "run_time":
        return _duration(float(value))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _duration(seconds: float) -> str:
    # tenths under 10 s: a sweep of quick jobs is not a column of 0s
    return f"{seconds:.1f}s" if seconds < 10 else format_duration(seconds)


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _csv_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _write_shared(path: Path, text: str) -> None:
    """A results file for people and their tools: mode as the umask says, no sync needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text, mode=None, fsync=False)


# ---- building it -------------------------------------------------------------------------------


def results(path_or_plan, client=None, *, download: bool = True, offline: bool = False) -> Results:
    """The manifest's jobs (a path, or a planner.Plan) side by side, sorted by the declared
    metric (best first) if there is one, else in plan order.

    Statuses come from ONE GET /jobs through `client` (default: kaio_spec.connect(), the
    platform the `kaio` commands would use), and ended jobs whose outputs are not on disk yet
    are downloaded first, as `kaio download` does (not with `download=False`). `offline=True`
    asks no API: only what is on disk (each outputs folder's download marker; a job with
    nothing there is "Unknown")."""
    from kaio_spec.planner import Plan
    from kaio_spec.planner import plan as make_plan

    plan = path_or_plan if isinstance(path_or_plan, Plan) else make_plan(path_or_plan)
    if offline:
        from kaio_spec.executor.state import State, state_path

        state = State.load(state_path(plan.manifest.path))
        facts = [_offline_facts(job, state) for job in plan.jobs]
    else:
        from kaio_spec import journey

        client = client or journey.connect()
        comparison = journey.manifest_status(client, plan)
        not_downloaded = []
        if download:
            with journey.api_errors(client.api_base):
                not_downloaded = _download_ended(client, comparison.observed)
        facts = [_api_facts(o) for o in comparison.observed]
        return collect(plan, facts, not_downloaded)
    return collect(plan, facts)


def _download_ended(client, observed) -> list[str]:
    """Download the ended jobs' outputs missing from disk; why any could not be (a folder that
    holds something else is left alone, and that job shows no metrics)."""
    from kaio_spec.catalog import is_final
    from kaio_spec.downloads import download_planned, is_complete

    problems = []
    for o in observed:
        unique = o.unique_job_name
        if (
            unique
            and is_final(o.status or JobStatus.PENDING)
            and not is_complete(o.job.outputs, unique)
        ):
            result = download_planned(client, o.job, unique)
            if not result.ok:
                problems.append(f"{o.job.name}: outputs not downloaded: {result.message}")
    return problems


def _api_facts(o) -> dict[str, Any]:
    latest = o.latest
    return {
        "status": o.status or NOT_SUBMITTED,
        "attempts": o.attempts_used,
        "run_time": elapsed(latest) if latest else None,
        "unique_job_name": o.unique_job_name,
    }


def _offline_facts(job, state) -> dict[str, Any]:
    """What disk says: the download marker (status, times) and this machine's state file
    (attempts it submitted; none: never submitted from here)."""
    from kaio_spec.downloads import is_complete, read_marker

    attempts = len(state.unique_job_names(job.job_name))
    marker = read_marker(job.outputs) or {}
    unique = marker.get("unique_job_name")
    if not isinstance(unique, str) or not is_complete(job.outputs, unique):
        status = UNKNOWN if attempts else NOT_SUBMITTED
        return {"status": status, "attempts": attempts, "run_time": None, "unique_job_name": None}
    # the marker's job and every file it lists are there: collect() need not check again
    times = {"start_time": marker.get("start_time"), "end_time": marker.get("end_time")}
    return {
        "status": str(marker.get("status") or UNKNOWN),
        "attempts": attempts or None,
        "run_time": elapsed(times) if times["end_time"] else None,
        "unique_job_name": unique,
        "on_disk": True,
    }


def collect(plan, facts: Sequence[dict[str, Any]], problems: Sequence[str] = ()) -> Results:
    """The table of `plan`'s jobs, given each job's facts (status, attempts, run_time,
    unique_job_name: the attempt whose outputs count; on_disk: True when they are known to be
    downloaded) in plan order."""
    from kaio_spec.downloads import is_complete

    params_of = [_params(job) for job in plan.jobs]
    param_names = _union(params_of)
    rows, metric_names, problems = [], [], list(problems)
    for job, params, fact in zip(plan.jobs, params_of, facts, strict=True):
        unique = fact["unique_job_name"]
        metrics: dict[str, Any] = {}
        if unique and (fact.get("on_disk") or is_complete(job.outputs, unique)):
            metrics, problem = read_metrics(job.outputs)
            if problem:
                problems.append(f"{job.name}: {problem}")
        metrics = {_metric_column(k, param_names): v for k, v in metrics.items()}
        for k in metrics:
            if k not in metric_names:
                metric_names.append(k)
        row = {"key": job.key, "name": job.name}
        row |= {c: fact[c] for c in ("status", "attempts", "run_time")}
        rows.append((row, params, metrics))
    table = [
        {**row, **{c: params.get(c) for c in param_names}, **{c: m.get(c) for c in metric_names}}
        for row, params, m in rows
    ]
    metric = _declared_metric(plan, param_names)
    return Results(plan.manifest.name, table, param_names, metric_names, metric, problems).sorted()


def _params(job) -> dict[str, Any]:
    """params.json as the job receives it, with its cell's matrix and sweep values (the job's
    own params win: they are what it reads), flattened; a name taken by a job column is
    prefixed with `params.`."""
    merged = {**job.matrix, **job.params}
    flat = flatten(merged)
    return {(f"params.{k}" if k in JOB_COLUMNS else k): v for k, v in flat.items()}


def _metric_column(name: str, param_names: Sequence[str]) -> str:
    return f"metrics.{name}" if name in JOB_COLUMNS or name in param_names else name


def _union(dicts: Iterable[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for d in dicts:
        seen.update(dict.fromkeys(d))
    return list(seen)


def _declared_metric(plan, param_names: Sequence[str]) -> Metric | None:
    """The first `metric:` declared by a job of the plan (its own, its sweep's or defaults')."""
    for job in plan.jobs:
        declared = plan.manifest.jobs[job.key].metric
        if declared is not None:
            return Metric(_metric_column(declared.name, param_names), declared.goal)
    return None


def results_folder(plan) -> Path:
    """Where `kaio apply` writes results.csv and results.json: the folder that holds every
    job's outputs folder (outputs/<manifest> by default)."""
    folders = [str(job.outputs) for job in plan.jobs]
    common = Path(os.path.commonpath(folders))
    return common.parent if str(common) in folders else common


def write_files(table: Results, folder: str | os.PathLike) -> tuple[Path, Path]:
    """results.csv and results.json into `folder`, each written atomically."""
    folder = Path(folder)
    csv_path, json_path = folder / "results.csv", folder / "results.json"
    table.to_csv(csv_path)
    text = json.dumps(table.to_json(), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    _write_shared(json_path, text)
    return csv_path, json_path
