"""The JSON Schema: valid 2020-12, its facts equal catalog.py's, documented for editors, shipped in
the package, and at the path the docs name."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest

from kaio_spec import catalog
from kaio_spec.schema import rendered_job_validator, schema, schema_text

ROOT = Path(__file__).parent.parent
SCHEMA_FILE = ROOT / "kaio_spec" / "schemas" / "kaio.schema.json"
S = json.loads(SCHEMA_FILE.read_text())
DEFS = S["$defs"]


def test_is_a_valid_2020_12_schema():
    assert S["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(S)


def test_the_package_reads_the_file_it_ships():
    assert schema_text() == SCHEMA_FILE.read_text()
    assert schema() == S


def test_shipped_as_package_data_and_at_the_documented_path():
    # (tomllib is 3.11+; the project supports 3.10.)
    pyproject = (ROOT / "pyproject.toml").read_text()
    package_data = re.search(
        r"\[tool\.setuptools\.package-data\]\s*kaio_spec = \[(.*?)\]", pyproject
    )
    assert '"schemas/*.json"' in package_data.group(1)
    # schemas/ at the repository root is a link to the package's copy: one file, two paths.
    assert (ROOT / "schemas").is_symlink()
    assert (ROOT / "schemas" / "kaio.schema.json").resolve() == SCHEMA_FILE.resolve()


def enum_of(defn: dict) -> list:
    (real,) = [b for b in defn["anyOf"] if b != {"$ref": "#/$defs/template"}]
    return real["enum"]


def test_instance_types_and_frameworks_equal_the_catalog():
    assert enum_of(DEFS["instance_type"]) == list(catalog.INSTANCE_TYPES)
    assert enum_of(DEFS["framework"]) == list(catalog.FRAMEWORKS)
    assert DEFS["instance_type"]["default"] == catalog.DEFAULT_INSTANCE_TYPE


def real_branch(defn: dict) -> dict:
    (real,) = [b for b in defn["anyOf"] if b != {"$ref": "#/$defs/template"}]
    return real


def test_bounds_equal_the_catalog():
    assert real_branch(DEFS["instance_count"])["minimum"] == catalog.MIN_INSTANCE_COUNT
    volume = real_branch(DEFS["volume_size_gb"])
    assert (volume["minimum"], volume["maximum"]) == (catalog.MIN_VOLUME_GB, catalog.MAX_VOLUME_GB)
    assert DEFS["env"]["maxProperties"] == catalog.ENV_MAX_VARS


def test_env_name_rules_equal_the_catalog():
    pattern, prefixes, names = DEFS["env_name"]["allOf"]
    assert pattern["pattern"] == catalog.ENV_NAME_RE.pattern
    assert prefixes["not"]["pattern"] == "^(" + "|".join(catalog.ENV_RESERVED_PREFIXES) + ")"
    assert set(names["not"]["enum"]) == catalog.ENV_RESERVED_NAMES


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("LR", True),
        ("_private", True),
        ("lr_2", True),
        ("SM", True),
        ("SMX_A", True),
        ("PATHS", True),
        ("1LR", False),
        ("LR-2", False),
        ("SM_HOSTS", False),
        ("SAGEMAKER_X", False),
        ("KAIO_TOKEN", False),
        ("PATH", False),
        ("LD_PRELOAD", False),
        ("PYTHONPATH", False),
    ],
)
def test_env_names_through_the_schema_agree_with_validation(name, ok):
    from kaio_spec.validation import FieldError, check_env_name

    v = jsonschema.Draft202012Validator({"$ref": "#/$defs/env", "$defs": DEFS})
    assert v.is_valid({name: "x"}) is ok
    try:
        check_env_name(name)
        assert ok
    except FieldError:
        assert not ok


def test_job_and_manifest_names():
    jobs = S["properties"]["jobs"]["propertyNames"]["pattern"]
    assert jobs == "^[a-z0-9][a-z0-9_-]*$"
    name = S["properties"]["name"]
    assert name["maxLength"] == 24
    assert re.match(name["pattern"], "cifar-10") and not re.match(name["pattern"], "-x")


def test_defaults_hold_the_same_fields_as_a_job_less_its_identity():
    job = set(DEFS["job"]["properties"])
    assert set(DEFS["defaults"]["properties"]) == job - {"name", "needs", "matrix", "sweep"}
    assert DEFS["job"]["properties"]["env"] == DEFS["defaults"]["properties"]["env"]


def walk(node, path=()):
    if isinstance(node, dict):
        yield path, node
        for k, v in node.items():
            yield from walk(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, (*path, i))


def test_objects_refuse_unknown_keys_where_typos_hide():
    # Free values (vars, params, matrix entries) and the matrix, whose keys are the user's.
    open_objects = {
        ("properties", "vars"),
        ("$defs", "params"),
        ("$defs", "matrix"),
        ("$defs", "matrix_entry"),
    }
    for path, node in walk(S):
        if node.get("type") == "object" and path not in open_objects:
            assert "additionalProperties" in node, path
            if node["additionalProperties"] is not False:
                # A mapping of user-chosen names: its keys are checked instead.
                assert "propertyNames" in node or path[-1] in ("parameters", "env"), path


def test_every_field_has_a_description():
    fields = [
        (path, node)
        for path, node in walk(S)
        if len(path) >= 2 and path[-2] == "properties" and "$ref" not in node
    ]
    fields += [(("$defs", k), v) for k, v in DEFS.items()]
    assert len(fields) > 30
    for path, node in fields:
        assert node.get("description"), path


def test_templates_are_allowed_where_values_depend_on_the_matrix():
    templated = {k for k, v in DEFS.items() if {"$ref": "#/$defs/template"} in v.get("anyOf", [])}
    assert templated == {
        "entrypoint",
        "instance_type",
        "instance_count",
        "volume_size_gb",
        "framework",
        "max_runtime_hours",
        "retries",
    }
    # The other job fields are strings (a template is a string) or free values.
    for name in ("directory", "framework_version", "name"):
        assert DEFS[name]["type"] == "string"


def test_rendered_values_are_validated_without_the_template_escape():
    v = rendered_job_validator()
    assert v.is_valid({"instance_count": 2, "instance_type": "ml.m5.large"})
    assert not v.is_valid({"instance_count": "{{ matrix.n }}"})
    assert not v.is_valid({"instance_type": "{{ matrix.t }}"})
    assert "template" not in json.dumps(v.schema["properties"])


def test_examples_point_editors_at_this_schema():
    examples = sorted((ROOT / "tests" / "manifests" / "valid").glob("*/kaio.yaml"))
    assert examples
    for example in examples:
        first = example.read_text().splitlines()[0]
        m = re.fullmatch(r"# yaml-language-server: \$schema=(\S+)", first)
        assert m, example
        assert (example.parent / m.group(1)).resolve() == SCHEMA_FILE.resolve()


def test_defaults_shown_to_editors_are_the_ones_loading_fills_in():
    from dataclasses import asdict

    from kaio_spec.manifest import JOB_DEFAULTS, Settings

    assert {k: DEFS[k]["default"] for k in JOB_DEFAULTS} == dict(JOB_DEFAULTS)
    settings = S["properties"]["settings"]["properties"]
    assert {k: v["default"] for k, v in settings.items()} == asdict(Settings())
