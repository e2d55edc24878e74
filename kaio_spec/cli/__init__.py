"""The `kaio` command. Only this package imports click; each command module is a thin shell over
the library and maps what it returns or raises to an exit code (errors.py)."""

from __future__ import annotations

import importlib
import sys

import click

from kaio_spec._version import __version__
from kaio_spec.errors import EXIT_INTERRUPTED, KaioError, ManifestError

# One module per command (or command group), named as the command; each exposes `register(main)`.
# A module is imported only when its command runs (or `kaio --help` lists them), so that a
# command pays for its own imports only; a command module imports its heavy parts (planner,
# manifest, client) inside its functions, as `kaio --help` loads every module to show its help.
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
    "results",
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
    """Loads each command's module on first use (click's "lazily loading subcommands"), and
    turns expected errors into one clear line and the right exit code, never a traceback."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMAND_MODULES, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMAND_MODULES:
            importlib.import_module(f"kaio_spec.cli.{cmd_name}").register(self)
        return self.commands.get(cmd_name)

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
