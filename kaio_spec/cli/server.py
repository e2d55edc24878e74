"""`kaio server`: serve the local platform, and manage its users and API keys."""

from __future__ import annotations

import os
from pathlib import Path

import click

from kaio_spec import catalog

# Imports of the server package stay inside the commands: `kaio --help` must not pay for FastAPI.

DATA_DIR_HELP = (
    "where the platform keeps its database, packages, logs and outputs "
    "[default: $KAIO_SERVER_DATA_DIR, else $KAIO_HOME/server, else ~/.kaio/server]"
)


def _data_dir(ctx: click.Context, value: Path | None) -> Path:
    from kaio_spec import targets

    # A subcommand's own --data-dir wins over the group's (`kaio server --data-dir D user add`);
    # without either, the same folder the auto-started platform and `kaio server stop` use.
    chosen = value or (ctx.obj or {}).get("data_dir") or targets.local_data_dir()
    return Path(chosen).expanduser()


def _public_url(value: str | None) -> str | None:
    """--public-url checked: an absolute http(s) URL with a host, no query or fragment."""
    if value is None:
        return None
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError as e:
        raise click.BadParameter(f"{value!r} is not a URL ({e})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise click.BadParameter(f"{value!r}: must be http:// or https:// and name a host")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise click.BadParameter(f"{value!r}: no query, fragment or user name")
    return value.rstrip("/")


def _data_dir_option(f):
    return click.option(
        "--data-dir", type=click.Path(file_okay=False, path_type=Path), help=DATA_DIR_HELP
    )(f)


@click.group("server", invoke_without_command=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8421,
    show_default=True,
    help="port to listen on; 0 picks a free one (written to DATA_DIR/server.json)",
)
@_data_dir_option
@click.option(
    "--max-instances",
    type=click.IntRange(min=1),
    default=None,
    help="instance processes run at once [default: the number of CPU cores]",
)
@click.option(
    "--max-instances-per-user",
    type=click.IntRange(min=1),
    default=None,
    help="instance processes one user runs at once [default: as many as the platform runs]",
)
@click.option(
    "--retention-days",
    type=click.FloatRange(min=0, min_open=True),
    default=float(catalog.RETENTION_DAYS),
    show_default=True,
    help="delete a job's package, logs and outputs this long after it ends",
)
@click.option(
    "--public-url",
    metavar="URL",
    callback=lambda ctx, param, value: _public_url(value),
    help="the address clients reach this server at (http[s]://host[:port][/prefix]), used in "
    "the presigned upload and download URLs it hands out [default: http://HOST:PORT]",
)
@click.option(
    "--sandbox/--no-sandbox",
    default=True,
    show_default=True,
    help="run each job in namespaces of its own with bubblewrap (else, where it cannot, "
    "confined with Landlock): it sees none of this platform's data folder (its secret, its "
    "database, other jobs' files) but its own folders, and writes nothing shared",
)
@click.option(
    "--job-network",
    type=click.Choice(["host", "none"]),
    default="host",
    show_default=True,
    help="none: jobs in namespaces get no network (a loopback of their own)",
)
@click.option(
    "--backend",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="where jobs' instances run: local processes, or a Ray cluster (pip install "
    "'kaio-spec[ray]'; each job a Ray job, its instances spread over the nodes)",
)
@click.option(
    "--ray-address",
    metavar="URL",
    help="with --backend ray: the Ray cluster's job API, http://HEAD:8265 (the data folder "
    "must be at the same path on every node) [default: start a single-node Ray here]",
)
# For tests: shrink the limits so they can be reached quickly.
@click.option("--max-upload-bytes", type=click.IntRange(min=1), default=None, hidden=True)
@click.option("--token-ttl", type=click.IntRange(min=1), default=None, hidden=True)
@click.option("--url-ttl", type=click.IntRange(min=1), default=None, hidden=True)
@click.option("--stop-grace", type=click.FloatRange(min=0), default=None, hidden=True)
@click.option("--sweep-interval", type=click.FloatRange(min=0.05), default=None, hidden=True)
@click.option("--isolation", type=click.Choice(["auto", "landlock"]), default=None, hidden=True)
@click.option("--log-cap-bytes", type=click.IntRange(min=1), default=None, hidden=True)
@click.option("--max-processes", type=click.IntRange(min=1), default=None, hidden=True)
@click.option(
    "--limits-scale", type=click.FloatRange(min=0, min_open=True), default=None, hidden=True
)
@click.option("--ray-scale", type=click.FloatRange(min=0, min_open=True), default=None, hidden=True)
@click.option("--upload-stall-timeout", type=click.FloatRange(min=0.1), default=None, hidden=True)
@click.option("--header-timeout", type=click.FloatRange(min=0.1), default=None, hidden=True)
@click.pass_context
def server(ctx: click.Context, data_dir: Path | None, **options) -> None:
    """Run the local Kaio platform (the API of docs/protocol.md, jobs as local processes)."""
    ctx.obj = {"data_dir": data_dir}
    if ctx.invoked_subcommand is not None:
        return
    from kaio_spec.server import serve
    from kaio_spec.server.config import ServerConfig

    renamed = {
        "max_upload_bytes": "max_upload_bytes",
        "token_ttl": "token_ttl_s",
        "url_ttl": "url_ttl_s",
        "stop_grace": "stop_grace_s",
        "sweep_interval": "sweep_interval_s",
        "upload_stall_timeout": "upload_stall_s",
        "header_timeout": "header_timeout_s",
    }
    settings = {renamed.get(k, k): v for k, v in options.items() if v is not None}
    settings.setdefault("max_instances", os.cpu_count() or 1)
    if settings.get("ray_address") and settings["backend"] != "ray":
        raise click.BadParameter("only with --backend ray", param_hint="--ray-address")
    serve(ServerConfig(data_dir=_data_dir(ctx, data_dir), **settings))


@server.group("user")
def user() -> None:
    """Users (tenants) of this platform."""


@user.command("add")
@click.argument("name")
@_data_dir_option
@click.pass_context
def user_add(ctx: click.Context, name: str, data_dir: Path | None) -> None:
    """Create user NAME and print its first API key, alone on stdout (shown only this once)."""
    from kaio_spec.server.store import Store

    _, key = Store(_data_dir(ctx, data_dir)).add_user(name)
    click.echo(key)


@user.command("list")
@_data_dir_option
@click.pass_context
def user_list(ctx: click.Context, data_dir: Path | None) -> None:
    """List users and the display prefixes of their keys."""
    from kaio_spec.server.store import Store

    for u in Store(_data_dir(ctx, data_dir)).list_users():
        keys = [k["prefix"] + ("(revoked)" if k["revoked_at"] else "") for k in u["keys"]]
        click.echo(f"{u['name']}\t{u['id']}\t{u['created_at']}\t{' '.join(keys) or '-'}")


@server.group("key")
def key() -> None:
    """API keys: each belongs to one user."""


@key.command("create")
@click.argument("user_name", metavar="NAME")
@_data_dir_option
@click.pass_context
def key_create(ctx: click.Context, user_name: str, data_dir: Path | None) -> None:
    """Create another API key for user NAME and print it, alone on stdout."""
    from kaio_spec.server.store import Store

    click.echo(Store(_data_dir(ctx, data_dir)).create_key(user_name))


@key.command("revoke")
@click.argument("prefix")
@_data_dir_option
@click.pass_context
def key_revoke(ctx: click.Context, prefix: str, data_dir: Path | None) -> None:
    """Revoke the key whose display prefix starts with PREFIX; its tokens stop working too."""
    from kaio_spec.server.store import Store

    revoked = Store(_data_dir(ctx, data_dir)).revoke_key(prefix)
    click.echo(f"revoked {revoked['prefix']} of user {revoked['user']}", err=True)


@server.command("stop")
@_data_dir_option
@click.pass_context
def server_stop(ctx: click.Context, data_dir: Path | None) -> None:
    """Stop the local platform running in the background (the one `kaio` commands start on
    their own): SIGTERM to the pid in DATA_DIR/server.json, then wait for it to end. Says so,
    and exits 0, when none runs. DATA_DIR defaults to $KAIO_SERVER_DATA_DIR, else
    $KAIO_HOME/server, else ~/.kaio/server."""
    from kaio_spec import targets

    chosen = _data_dir(ctx, data_dir)
    url = targets.stop_local(chosen)
    if url is None:
        click.echo(f"no local Kaio platform is running (data dir {chosen})", err=True)
    else:
        click.echo(f"stopped the local Kaio platform at {url}", err=True)


def register(main: click.Group) -> None:
    main.add_command(server)
