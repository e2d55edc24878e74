"""Start-up stays cheap (issue 14): each entry point loads only what it uses. `kaio --help` lists
every command without the planner, the client or jsonschema; `kaio validate`, which pre-commit
runs on every commit, loads no HTTP, executor or server; the server loads no templating or executor.
Timings are measured by benchmarks/imports.py, never asserted here; what is loaded is."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import kaio_spec
from kaio_spec import cli

ROOT = Path(__file__).resolve().parent.parent
SWEEP = ROOT / "examples" / "specs" / "sweep.yaml"

# Run an entry point in a fresh interpreter, then print which of the named modules it loaded.
CHILD = """
import json, sys
{body}
print(json.dumps(sorted(m for m in json.loads(sys.argv[1]) if m in sys.modules)))
"""
RUN_KAIO = """
from kaio_spec.cli import main
try:
    main({argv!r}, prog_name="kaio")
except SystemExit as e:
    assert not e.code, e.code
"""

HTTP_AND_JOBS = ["requests", "urllib3", "kaio_spec.client", "kaio_spec.executor", "rich"]
SERVER_STACK = ["fastapi", "uvicorn", "starlette", "kaio_spec.server"]
MANIFEST_STACK = ["jsonschema", "yaml", "jinja2", "kaio_spec.manifest", "kaio_spec.planner"]


def loaded(body: str, watched: list[str]) -> list[str]:
    code = CHILD.format(body=body)
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(watched)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_kaio_help_lists_every_command_without_loading_the_library():
    watched = HTTP_AND_JOBS + SERVER_STACK + MANIFEST_STACK + ["webbrowser", "ray"]
    assert loaded(RUN_KAIO.format(argv=["--help"]), watched) == []


def test_kaio_validate_loads_no_http_or_job_machinery():
    body = RUN_KAIO.format(argv=["validate", str(SWEEP)])
    packaging = ["kaio_spec.packaging", "pathspec", "tarfile"]  # no folder is hashed
    assert loaded(body, HTTP_AND_JOBS + SERVER_STACK + packaging) == []


def test_the_server_app_loads_no_templating_client_or_executor():
    body = "import kaio_spec.server.app"
    watched = ["jinja2", "ray", *HTTP_AND_JOBS, "kaio_spec.manifest", "kaio_spec.planner"]
    assert loaded(body, watched) == []


def test_the_upload_rules_load_no_web_framework():
    """server/uploads.py holds the rules a package is held to, apart from HTTP (issue 14)."""
    body = "import kaio_spec.server.uploads"
    assert loaded(body, ["fastapi", "starlette", "pydantic", "uvicorn"]) == []


def test_import_kaio_spec_loads_only_its_version():
    body = "import kaio_spec"
    watched = ["kaio_spec.client", "kaio_spec.errors", "kaio_spec.manifest", "click", "requests"]
    assert loaded(body, watched) == []


def test_every_lazy_public_name_is_in_all_and_back():
    assert set(kaio_spec._PUBLIC) | {"__version__"} == set(kaio_spec.__all__)


def test_type_checkers_see_every_lazy_name_from_its_module():
    """The TYPE_CHECKING imports (what type checkers and IDEs read) are _PUBLIC's, name for name."""
    tree = ast.parse(Path(kaio_spec.__file__).read_text())
    guard = next(
        node
        for node in tree.body
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
    )
    seen = {
        alias.name: node.module
        for node in guard.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert seen == kaio_spec._PUBLIC


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'Clinet'"):
        kaio_spec.Clinet  # noqa: B018


@pytest.mark.parametrize("name", cli.COMMAND_MODULES)
def test_each_command_module_defines_the_command_of_its_name(name):
    """The lazy group finds a command by its module's name: `kaio NAME` loads cli/NAME.py."""
    import click

    with click.Context(cli.main) as ctx:
        command = cli.main.get_command(ctx, name)
    assert command is not None and command.name == name
    assert name in cli.main.list_commands(ctx)
