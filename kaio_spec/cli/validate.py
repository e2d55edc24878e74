"""`kaio validate FILE...`: check manifests; exit 0 when all are valid, 2 otherwise."""

from __future__ import annotations

import json
import sys

import click

from kaio_spec.errors import EXIT_INVALID, EXIT_OK


@click.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=True))
@click.option(
    "-o",
    "--output",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text: one line per error on stderr; json: a report on stdout.",
)
def validate(files: tuple[str, ...], output: str) -> None:
    """Check kaio.yaml manifests: everything `kaio plan --offline` checks but the folders'
    contents (schema, rules, job count, every template rendered for every cell, names).

    Every error is reported as FILE:LINE:COLUMN: PATH: MESSAGE. Usable as a pre-commit hook and
    in CI."""
    from kaio_spec.planner import check  # not loaded for `kaio --help`

    results = [(file, check(file)) for file in files]
    bad = [(file, errors) for file, errors in results if errors]
    if output == "json":
        report = {
            "files": [
                {"file": file, "valid": not errors, "errors": [e.to_json() for e in errors]}
                for file, errors in results
            ]
        }
        click.echo(json.dumps(report, indent=2))
    else:
        for _, errors in bad:
            for e in errors:
                click.echo(str(e), err=True)
        click.echo(_summary(results), err=True)
    sys.exit(EXIT_INVALID if bad else EXIT_OK)


def _summary(results: list) -> str:
    n_files = len(results)
    n_bad = sum(1 for _, errors in results if errors)
    n_errors = sum(len(errors) for _, errors in results)
    files = "1 file" if n_files == 1 else f"{n_files} files"
    if not n_bad:
        return f"{files} valid" if n_files > 1 else f"{results[0][0]}: valid"
    errs = "1 error" if n_errors == 1 else f"{n_errors} errors"
    return f"{errs} in {n_bad} of {files}" if n_files > 1 else f"{errs} in {results[0][0]}"


def register(main: click.Group) -> None:
    main.add_command(validate)
