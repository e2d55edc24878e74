"""`kaio schema`: print the manifest JSON Schema (for editors, CI, other tools)."""

from __future__ import annotations

import click


@click.command("schema")
def schema() -> None:
    """Print the JSON Schema of kaio.yaml (JSON Schema 2020-12).

    Editors that read `# yaml-language-server: $schema=<file>` use it for completion and checks:
    `kaio schema > kaio.schema.json`."""
    from kaio_spec.schema import schema_text  # jsonschema loads only for this command

    click.echo(schema_text(), nl=False)


def register(main: click.Group) -> None:
    main.add_command(schema)
