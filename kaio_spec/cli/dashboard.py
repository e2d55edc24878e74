"""`kaio dashboard`: open the local platform's dashboard in a browser, already signed in.

The API key never goes into a URL: the command logs in with it, asks the server for a one-time
sign-in code (POST /dashboard/links, valid about a minute, usable once) and opens
`<api>/#signin=<code>`. The fragment never reaches a server, and the page removes it from the
address bar and the history entry before exchanging the code for a token (POST /login/link).
"""

from __future__ import annotations

import contextlib

import click

from kaio_spec.errors import InvalidInput, KaioError, PlatformError

TIMEOUT_S = 10.0


def _error(response) -> str:
    try:
        return str(response.json()["error"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}"


def signin_link(api_base: str, api_key: str) -> str:
    """A one-time link that opens the dashboard at `api_base` signed in with `api_key`'s user."""
    import requests  # the CLI's start-up (`kaio --help`) does not pay for it

    from kaio_spec.transport import platform_errors

    def unreachable(e: Exception) -> str:
        return f"cannot reach {api_base} ({type(e).__name__}); is `kaio server` running?"

    try:
        with platform_errors(api_base, unreachable=unreachable), requests.Session() as http:
            r = http.post(f"{api_base}/login", json={"api_key": api_key}, timeout=TIMEOUT_S)
            if r.status_code == 403:
                raise InvalidInput(f"KAIO_API_KEY: {api_base} does not know this key ({_error(r)})")
            if r.status_code != 200:
                raise PlatformError(f"{api_base}/login answered {_error(r)}")
            token = r.json()["access_token"]
            r = http.post(
                f"{api_base}/dashboard/links",
                headers={"Authorization": f"Bearer {token}"},
                timeout=TIMEOUT_S,
            )
            if r.status_code == 404:
                raise PlatformError(
                    f"{api_base} has no dashboard sign-in links: the dashboard is served by the "
                    "local platform (`kaio server`)"
                )
            if r.status_code != 200:
                raise PlatformError(f"{api_base}/dashboard/links answered {_error(r)}")
            code = r.json()["code"]
            # The command's own token has done its job; the tab's, from the link, is another.
            # Best effort: an older server has no /logout, and the token expires anyway.
            with contextlib.suppress(requests.RequestException):
                http.post(
                    f"{api_base}/logout",
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=TIMEOUT_S,
                )
    except KaioError:
        raise
    except (ValueError, KeyError, TypeError):
        raise PlatformError(f"{api_base} answered something that is not the Kaio API") from None
    return f"{api_base}/#signin={code}"


@click.command("dashboard")
@click.option(
    "--api",
    "api",
    metavar="URL",
    help="the platform's address [default: $KAIO_API_BASE, else `kaio login`'s, else the "
    "local platform, started if need be]",
)
@click.option(
    "--no-browser",
    is_flag=True,
    help="print the sign-in link instead of opening a browser (it works once, within a minute)",
)
def dashboard(api: str | None, no_browser: bool) -> None:
    """Open the local platform's web dashboard, signed in with your key's user ($KAIO_API_KEY,
    `kaio login`'s, or the local platform's own)."""
    from kaio_spec import targets

    target = targets.ready(api, echo=lambda line: click.echo(line, err=True))
    base, key = target.api_base, target.api_key or ""
    link = signin_link(base, key)
    if no_browser:
        click.echo(link)
        return
    import webbrowser  # it loads subprocess and more: only for this command, not `kaio --help`

    if webbrowser.open(link):
        click.echo(f"opened the dashboard of {base} in your browser", err=True)
    else:
        click.echo("no browser could be opened; open this link (once, within a minute):", err=True)
        click.echo(link)


def register(main: click.Group) -> None:
    main.add_command(dashboard)
