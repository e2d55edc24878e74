"""`kaio login`: check an API key against a Kaio API and save both for the next commands."""

from __future__ import annotations

import os
import sys

import click

from kaio_spec.errors import InvalidInput

HOSTED_API = "https://api.kaion5.com"


@click.command("login")
@click.option(
    "--api",
    "api",
    metavar="URL",
    help=f"the Kaio API to log in to [default: $KAIO_API_BASE, else {HOSTED_API}]",
)
@click.option(
    "--api-key-stdin",
    is_flag=True,
    help="read the key from the first line of stdin (for scripts: `kaio login --api-key-stdin "
    "< key.txt`) instead of asking for it",
)
def login_command(api: str | None, api_key_stdin: bool) -> None:
    """Save an API key for the Kaio API at URL, after checking it there (POST /login).

    The key is asked for without echoing it (or read from stdin with --api-key-stdin), never
    taken from the command line, where other users and the shell history would see it. It is
    saved with the address in $XDG_CONFIG_HOME/kaio/config.json (default ~/.config/kaio/),
    readable by you only; later commands use it for that address ($KAIO_API_BASE, --api and
    $KAIO_API_KEY still win)."""
    from kaio_spec import targets

    base = targets.check_url(
        api or os.environ.get("KAIO_API_BASE", "").strip() or HOSTED_API,
        "--api" if api else "KAIO_API_BASE" if os.environ.get("KAIO_API_BASE") else "api",
    )
    key = _read_key(api_key_stdin, base)
    client = targets.login(targets.Target(base, key, "--api", "the key given"))
    path = targets.save_config(base, key)
    project = (client.project or {}).get("name")
    who = f" as {project}" if project else ""
    click.echo(f"logged in to {base}{who}; saved to {path}", err=True)


def _read_key(from_stdin: bool, base: str) -> str:
    if from_stdin:
        key = sys.stdin.readline().strip()
        if not key:
            raise InvalidInput("--api-key-stdin: stdin gave no key (an empty first line)")
        return key
    if not sys.stdin.isatty():
        raise InvalidInput(
            "no terminal to ask for the API key on; pipe it in with --api-key-stdin "
            "(never put a key on the command line)"
        )
    key = click.prompt(f"API key for {base}", hide_input=True, err=True).strip()
    if not key:
        raise InvalidInput("the API key is empty")
    return key


def register(main: click.Group) -> None:
    main.add_command(login_command)
