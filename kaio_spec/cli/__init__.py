"""The `kaio` command. Only this package imports click; each command module is a thin shell over
the library and maps what it returns or raises to an exit code (errors.py)."""

from __future__ import annotations

import importlib
import sys

import click

from kaio_spec import __version__
from kaio_spec.errors import EXIT_INTERRUPTED, KaioError, ManifestError

# One module per command (or command group); each exposes `register(main)`.
COMMAND_MODULES: tuple[str, ...] = (
    "server",
    "schema",
    "validate",
    "plan",
    "apply",
    "dashboard",
    "login",
    "jobs",
    "status",
    "download",
    "stop",
    "forget",
    "logs",
)


def report_manifest_errors(e: ManifestError) -> None:
    """Every positioned error on its own line (FILE:LINE:COLUMN: PATH: MESSAGE), then a count
    per file."""
    counts: dict[str, int] = {}
    for d in e.errors:
        click.echo(str(d), err=True)
        file = getattr(d, "file", None) or "the manifest"
        counts[file] = counts.get(file, 0) + 1
    for file, n in counts.items():
        click.echo(f"{n} error{'s' if n != 1 else ''} in {file}", err=True)


class KaioGroup(click.Group):
    """Turns expected errors into one clear line and the right exit code, never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ManifestError as e:
            report_manifest_errors(e)
            sys.exit(e.exit_code)
        except KaioError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)


@click.group(cls=KaioGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kaio")
def main() -> None:
    """Run ML jobs from git: kaio.yaml manifests on Kaio or on the local platform."""


for _name in COMMAND_MODULES:
    importlib.import_module(f"kaio_spec.cli.{_name}").register(main)
