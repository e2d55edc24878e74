"""`kaio results FILE`: the manifest's jobs side by side, parameters and metrics (results.py)."""

from __future__ import annotations

import sys

import click

from kaio_spec.cli.common import api_option, connect, write_json


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
    output: str,
) -> None:
    """Compare the jobs FILE defines: one row per job (every cell, failed and not yet run
    ones too) with its status, attempts, run time, parameters (params.json as the job receives
    it) and every metric of the metrics.json it wrote (nested keys joined with dots; a
    metrics.jsonl of step records adds its last record and each metric's .min and .max).

    Ended jobs whose outputs are not on disk yet are downloaded first, to their `outputs`
    folders, as `kaio download` does. With a `metric: {name, goal}` declared (in the job, its
    sweep or `defaults`), rows are sorted best first and the best completed job is named.

    \b
    -o json prints
      {"manifest", "metric": {"name", "goal"} | null, "best": NAME | null,
       "params": [...], "metrics": [...], "columns": [...], "rows": [ROW, ...]}
    ROW: {"key", "name", "status", "attempts", "run_time" (seconds), <param>..., <metric>...}"""
    from kaio_spec.planner import plan
    from kaio_spec.results_table import results

    planned = plan(file)  # an invalid manifest fails before anything is started
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


PARAM_MIN = 8


def render_table(table) -> None:
    """A rich table: numbers right-aligned, parameters and metrics told apart by colour. On a
    narrow terminal only the parameter columns wrap: the job columns and the metrics keep their
    width (the lines grow longer than the terminal rather than lose a column). Piped, nothing
    wraps."""
    from rich.console import Console
    from rich.table import Table

    from kaio_spec.results_table import format_value

    texts = {c: [format_value(r.get(c), c) for r in table.rows] for c in table.columns}
    natural = {c: max([len(c), *(len(t) for t in texts[c])]) for c in table.columns}
    # a parameter wraps only past PARAM_MIN characters; the other columns never
    least = {c: min(natural[c], PARAM_MIN) if c in table.params else natural[c] for c in natural}
    console = Console()
    if console.is_terminal:
        console = Console(width=max(console.width, sum(least.values()) + 2 * len(least) + 3))
    else:
        console = Console(width=sum(natural.values()) + 2 * len(table.columns) + 3)
    best = table.best
    grid = Table(box=None, header_style="bold", pad_edge=False, show_edge=False)
    grid.add_column("", no_wrap=True, width=1)  # the best row's mark
    for c in table.columns:
        kind = "param" if c in table.params else "metric" if c in table.metrics else "job"
        grid.add_column(
            c,
            justify="right" if table.is_numeric(c) else "left",
            style={"param": "cyan", "metric": "green"}.get(kind),
            header_style={"param": "bold cyan", "metric": "bold green"}.get(kind, "bold"),
            no_wrap=kind != "param",
            overflow="fold",
            min_width=least[c],
        )
    for i, row in enumerate(table.rows):
        mark = "*" if best is not None and row is best else ""
        grid.add_row(mark, *(texts[c][i] for c in table.columns))
    console.print(grid)
    console.print(_summary_line(table), highlight=False)
    if table.metrics or table.params:
        console.print("[cyan]parameters[/] · [green]metrics[/]", style="dim")


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
