"""kaio_spec's public surface: __all__ is true, and Client keeps the seed's API method for method
(shared/seed/kaio-client-README.md), with the parameters and defaults it documents."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

import kaio_spec
from kaio_spec import Client


def test_all_names_exist_once_and_sorted():
    assert len(kaio_spec.__all__) == len(set(kaio_spec.__all__))
    assert list(kaio_spec.__all__) == sorted(kaio_spec.__all__)
    for name in kaio_spec.__all__:
        assert hasattr(kaio_spec, name), name


def test_star_import_gives_exactly_all():
    ns: dict = {}
    exec("from kaio_spec import *", ns)
    assert {k for k in ns if k != "__builtins__"} == set(kaio_spec.__all__)


def test_every_public_name_is_in_all():
    """A public (no underscore) class or function defined in kaio_spec and re-exported at the top
    is listed in __all__; submodules are not part of the surface."""
    public = {
        name
        for name, value in vars(kaio_spec).items()
        if not name.startswith("_")
        and not inspect.ismodule(value)
        and getattr(value, "__module__", "").startswith("kaio_spec")
    }
    assert public <= set(kaio_spec.__all__)


def test_client_is_exported():
    assert "Client" in kaio_spec.__all__
    assert kaio_spec.Client.__module__ == "kaio_spec.client"


def params(fn) -> list[tuple[str, object]]:
    return [
        (p.name, p.default)
        for p in inspect.signature(fn).parameters.values()
        if p.name != "self" and p.kind is not p.KEYWORD_ONLY
    ]


def test_constructor_is_the_seeds():
    assert params(Client.__init__) == [("api_base", inspect.Parameter.empty), ("verbose", False)]


def test_submit_job_has_every_seed_parameter_and_default_in_order():
    assert params(Client.submit_job) == [
        ("directory", "."),
        ("job_name", "job"),
        ("instance_type", "ml.m5.large"),
        ("instance_count", 1),
        ("volume_size_gb", 5),
        ("entrypoint", "train.py"),
        ("input_data", None),
        ("framework", None),
        ("framework_version", None),
        # docs/protocol.md's, after the seed's
        ("env", None),
        ("max_runtime_hours", 1),
        ("labels", None),
    ]


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("login", [("api_key", inspect.Parameter.empty)]),
        ("get_jobs", [("include_archived", False)]),
        ("get_job", [("unique_job_name", inspect.Parameter.empty)]),
        ("download_output", [("unique_job_name", inspect.Parameter.empty), ("output_dir", ".")]),
        ("stop_job", [("unique_job_name", inspect.Parameter.empty)]),
    ],
)
def test_seed_methods(method, expected):
    assert params(getattr(Client, method)) == expected


def test_public_methods_have_docstrings():
    for name, fn in inspect.getmembers(Client, inspect.isfunction):
        if not name.startswith("_"):
            assert fn.__doc__, name


def test_importing_does_not_load_heavy_modules():
    """`import kaio_spec` stays light: no server stack, no progress-bar library, no framework."""
    code = (
        "import sys, kaio_spec\n"
        "heavy = [m for m in ('fastapi', 'uvicorn', 'rich', 'torch', 'tensorflow', 'sklearn') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
