"""`kaio results FILE`: the manifest's jobs side by side, parameters and metrics (results.py)."""

from __future__ import annotations

import sys
from typing import Any

import click

from kaio_spec.cli.common import api_option, connect, write_json
from kaio_spec.cli.plan import Inputs, input_options


@click.command("results")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--sort",
    "sort_by",
    metavar="COLUMN",
    help="sort by this column (a metric, a parameter, name...); -COLUMN for descending "
    "[default: the declared metric, best first; else plan order]",
)
@click.option("--only", metavar="PATTERN", help="only the jobs whose key or name matches")
@click.option(
    "--only-changed", is_flag=True, help="hide parameters whose value is the same in every row"
)
@click.option(
    "--columns",
    metavar="A,B,...",
    help="only these columns, in this order (fnmatch patterns allowed: 'name,lr,eval.*')",
)
@click.option("--top", type=int, metavar="N", help="only the first N rows (after sorting)")
@click.option(
    "--no-download",
    is_flag=True,
    help="don't download ended jobs' outputs first; show what is on disk",
)
@click.option(
    "--offline", is_flag=True, help="don't ask the API: statuses and metrics from disk only"
)
@api_option
@input_options
@click.option(
    "-o",
    "--output",
    type=click.Choice(["table", "csv", "json", "md"]),
    default="table",
    show_default=True,
    help="table for people; csv and json for tools; md: a Markdown table for a pull request",
)
def results_command(
    file: str,
    sort_by: str | None,
    only: str | None,
    only_changed: bool,
    columns: str | None,
    top: int | None,
    no_download: bool,
    offline: bool,
    api: str | None,
    inputs: Inputs,
    output: str,
) -> None:
    """Compare the jobs FILE defines: one row per job (every cell, failed and not yet run
    ones too) with its status, attempts, run time, parameters (params.json as the job receives
    it) and every metric of the metrics.json it wrote (nested keys joined with dots; a
    metrics.jsonl of step records adds its last record and each metric's .min and .max).

    Ended jobs whose outputs are not on disk yet are downloaded first, to their `outputs`
    folders, as `kaio download` does. With a `metric: {name, goal}` declared (in the job, its
    sweep or `defaults`), rows are sorted best first and the best completed job is named.

    Exits 0 whatever the jobs' statuses (read them from -o json in scripts); 2 for an invalid
    FILE or option (an unknown --sort or --columns column names the columns there are).

    \b
    -o json prints
      {"manifest", "metric": {"name", "goal"} | null, "best": NAME | null,
       "params": [...], "metrics": [...], "columns": [...], "rows": [ROW, ...]}
    ROW: {"key", "name", "status", "attempts", "run_time" (seconds), <param>..., <metric>...}"""
    from kaio_spec.results_table import results

    # an invalid manifest (or --var) fails before anything is started
    planned = inputs.plan(file, reuse=True)
    client = None if offline else connect(api)
    table = results(planned, client, download=not no_download, offline=offline)
    table = table.sorted(sort_by) if sort_by else table
    if only:
        table = table.only(only)
    if columns:
        table = table.select(c.strip() for c in columns.split(",") if c.strip())
    if only_changed:  # after --columns: among the columns asked for
        table = table.only_changed()
    if top is not None:
        table = table.top(top)
    for problem in table.problems:
        click.echo(f"warning: {problem}", err=True)
    if output == "json":
        write_json(table.to_json())
    elif output == "csv":
        sys.stdout.write(table.to_csv())
    elif output == "md":
        sys.stdout.write(table.to_markdown())
    else:
        render_table(table)


PARAM_MIN = 8  # a parameter column is never wrapped narrower than this
STYLES: dict[str, dict[str, Any]] = {"param": {"fg": "cyan"}, "metric": {"fg": "green"}, "job": {}}


def render_table(table) -> None:
    """An aligned table: numbers right-aligned, parameters (cyan) and metrics (green) told
    apart by colour on a terminal. On a narrow terminal only the parameter columns wrap, widest
    first: the job columns and the metrics keep their width (lines grow longer than the
    terminal rather than lose a column). Piped, nothing wraps and there is no colour.

    Written by hand rather than with rich's Table, which took seconds to lay out a 1,000-cell
    sweep (benchmarks/results.py)."""
    import shutil

    from kaio_spec.results_table import format_value

    columns = list(table.columns)
    texts = {c: [format_value(r.get(c), c) for r in table.rows] for c in columns}
    widths = {c: max([len(c), *(len(t) for t in texts[c])]) for c in columns}
    if sys.stdout.isatty():
        _fit(widths, [c for c in columns if c in table.params], shutil.get_terminal_size()[0])
    kinds = {
        c: "param" if c in table.params else "metric" if c in table.metrics else "job"
        for c in columns
    }
    right = {c for c in columns if table.is_numeric(c)}
    best = table.best
    lines = [_line(" ", [[c] for c in columns], columns, widths, right, kinds, bold=True)]
    for i, row in enumerate(table.rows):
        cells = [_wrap(texts[c][i], widths[c]) for c in columns]
        mark = "*" if best is not None and row is best else " "
        lines.append(_line(mark, cells, columns, widths, right, kinds))
    click.echo("\n".join(lines))
    click.echo(_summary_line(table))
    if (table.metrics or table.params) and sys.stdout.isatty():  # the colours' key
        legend = click.style("parameters", fg="cyan") + " · " + click.style("metrics", fg="green")
        click.echo(click.style(legend, dim=True))


def _fit(widths: dict[str, int], params: list[str], room: int) -> None:
    """Narrow the widest parameter columns, one character at a time, until the line fits in
    `room` or none can be narrowed further."""

    def total() -> int:
        return 1 + sum(w + 2 for w in widths.values())

    while total() > room:
        wide = [c for c in params if widths[c] > PARAM_MIN]
        if not wide:
            return
        widest = max(wide, key=lambda c: widths[c])
        widths[widest] -= 1


def _wrap(text: str, width: int) -> list[str]:
    if len(text) <= width:
        return [text]
    import textwrap

    return textwrap.wrap(text, width, break_long_words=True, break_on_hyphens=False) or [""]


def _line(mark, cells, columns, widths, right, kinds, bold: bool = False) -> str:
    """One table row (several terminal lines when a cell wraps)."""
    height = max(len(c) for c in cells)
    out = []
    for n in range(height):
        parts = [mark if n == 0 else " "]
        for c, cell in zip(columns, cells, strict=True):
            text = cell[n] if n < len(cell) else ""
            text = text.rjust(widths[c]) if c in right else text.ljust(widths[c])
            style = {**STYLES[kinds[c]], **({"bold": True} if bold else {})}
            parts.append(click.style(text, **style) if style else text)
        out.append("  ".join(parts).rstrip())
    return "\n".join(out)


def _summary_line(table) -> str:
    """'svc: 6 jobs (5 Completed, 1 Failed); best: svc-3 (accuracy 0.9933)'"""
    counts: dict[str, int] = {}
    for r in table.rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    said = ", ".join(f"{n} {status}" for status, n in counts.items())
    total = len(table.rows)
    line = f"{table.manifest}: {total} job{'s' if total != 1 else ''} ({said})"
    return line + (f"; {table.summary()}" if table.summary() else "")


def register(main: click.Group) -> None:
    main.add_command(results_command)
