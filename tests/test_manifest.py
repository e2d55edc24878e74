"""Valid manifests load to exactly the values they mean, and the Manifest gives the planner what it
needs: merged specs, where each value was written, source text, and positioned errors for rendered
values."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import kaio_spec
from kaio_spec import ManifestError, load_manifest
from kaio_spec.diagnostics import Diagnostic
from kaio_spec.errors import EXIT_INVALID, InvalidInput
from kaio_spec.manifest import (
    JobDef,
    Matrix,
    Settings,
    Sweep,
    SweepParameter,
    infer_distribution,
    validate_file,
)

VALID = Path(__file__).parent / "manifests" / "valid"


def test_the_issue_example_loads_to_exactly_its_values():
    m = load_manifest(VALID / "cifar" / "kaio.yaml")
    assert (m.version, m.name) == (1, "cifar")
    assert m.path == (VALID / "cifar" / "kaio.yaml").absolute()
    assert m.folder == VALID / "cifar"
    assert m.vars == {"dataset": "cifar10"}
    assert m.defaults == {"directory": "./train", "instance_type": "ml.m5.large"}
    assert m.settings == Settings(
        max_parallel=4,
        fail_fast=False,
        max_jobs=1000,
        outputs="outputs/{{ manifest.name }}/{{ job.name }}",
        poll_seconds=10,
    )
    assert list(m.jobs) == ["prep", "train", "search"]
    assert m.jobs["prep"] == JobDef(
        key="prep",
        index=0,
        name=None,
        fields={"entrypoint": "prep.py", "instance_type": "ml.m5.2xlarge", "instance_count": 4},
        spec={
            "directory": "./train",
            "entrypoint": "prep.py",
            "instance_type": "ml.m5.2xlarge",
            "instance_count": 4,
            "volume_size_gb": 5,
            "retries": 0,
        },
        matrix=None,
        sweep=None,
    )
    train = m.jobs["train"]
    assert train.name == "train-lr{{ matrix.lr }}-bs{{ matrix.batch_size }}"
    assert train.spec == {
        "directory": "./train",
        "entrypoint": "train.py",
        "instance_type": "ml.g4dn.xlarge",
        "instance_count": 1,
        "volume_size_gb": 10,
        "framework": "pytorch",
        "framework_version": "2.1.0",
        "max_runtime_hours": 2,
        "retries": 1,
        "env": {"DATASET": "{{ vars.dataset }}"},
        "params": {"lr": "{{ matrix.lr }}"},
    }
    assert train.matrix == Matrix(
        dimensions={"lr": [0.1, 0.01], "batch_size": [32, 64]},
        include=[{"lr": 0.001, "batch_size": 128}],
        exclude=[{"lr": 0.1, "batch_size": 64}],
    )
    assert list(train.matrix.dimensions) == ["lr", "batch_size"]  # written order, kept
    assert train.sweep is None
    search = m.jobs["search"]
    assert search.fields == {}
    assert search.spec["entrypoint"] == "train.py"  # the built-in default
    assert search.sweep == Sweep(
        method="random",
        count=20,
        seed=7,
        parameters={
            "lr": SweepParameter("lr", "log_uniform_values", min=0.00001, max=0.1),
            "dropout": SweepParameter("dropout", "uniform", min=0.0, max=0.5),
            "layers": SweepParameter("layers", "categorical", values=[2, 4, 8]),
        },
    )
    assert list(search.sweep.parameters) == ["lr", "dropout", "layers"]


def test_the_least_manifest_gets_every_default():
    m = load_manifest(VALID / "minimal" / "kaio.yaml")
    assert (m.name, m.vars, m.defaults, m.settings) == ("hello", {}, {}, Settings())
    assert m.jobs["train"].spec == {
        "directory": ".",
        "entrypoint": "train.py",
        "instance_type": "ml.m5.large",
        "instance_count": 1,
        "volume_size_gb": 5,
        "retries": 0,
    }
    assert m.resolve(m.jobs["train"].spec["directory"]) == (VALID / "minimal").resolve()


def test_yaml_features_load_as_users_mean_them():
    m = load_manifest(VALID / "anchors" / "kaio.yaml")
    assert m.vars == {
        "small": 1e-05,
        "tiny": 0.0005,
        "answer": "yes",
        "switch": "off",
        "country": "NO",
        "octal": 15,
        "leading_zero": 123,
        "date": "2024-01-31",
        "nothing": None,
        "quoted": "0.10",
        "lrs": [0.1, 0.00001],
    }
    assert type(m.vars["small"]) is float
    # `<<: *gpu` merges; the job's own volume_size_gb wins.
    assert m.jobs["train"].spec["instance_type"] == "ml.g5.xlarge"
    assert m.jobs["train"].spec["volume_size_gb"] == 30
    assert m.jobs["eval"].spec["volume_size_gb"] == 20
    assert m.jobs["train"].matrix.dimensions == {"lr": [0.1, 0.00001]}
    # A value reached through an alias keeps its text and points where it was written.
    assert m.source_text(("jobs", "train", "matrix", "lr", 1)) == "0.00001"
    d = m.diagnostic(("jobs", "train", "matrix", "lr", 1), "bad")
    assert (d.line, d.column) == (19, 19)


def test_defaults_merge_env_and_params_key_by_key(tmp_path):
    (tmp_path / "train.py").write_text("")
    (tmp_path / "kaio.yaml").write_text(
        "version: 1\nname: merge\n"
        "defaults:\n"
        "  retries: 2\n"
        "  env: {A: a, B: b}\n"
        "  params: {x: 1}\n"
        "jobs:\n"
        "  one:\n"
        "    env: {B: own, C: c}\n"
        "    params: {y: 2}\n"
        "  two:\n"
        "    retries: 0\n"
    )
    m = load_manifest(tmp_path / "kaio.yaml")
    one, two = m.jobs["one"], m.jobs["two"]
    assert one.spec["env"] == {"A": "a", "B": "own", "C": "c"}
    assert one.spec["params"] == {"x": 1, "y": 2}
    assert one.spec["retries"] == 2
    assert two.spec["retries"] == 0
    assert two.spec["env"] == {"A": "a", "B": "b"}
    # Where each value was written, for errors about what a template rendered to.
    assert one.source_path("env", "A") == ("defaults", "env", "A")
    assert one.source_path("env", "B") == ("jobs", "one", "env", "B")
    assert one.source_path("retries") == ("defaults", "retries")
    assert two.source_path("retries") == ("jobs", "two", "retries")
    assert two.source_path("instance_type") is None  # a built-in default
    assert one.source_path("params") == ("jobs", "one", "params")
    assert two.source_path("params", "x") == ("defaults", "params", "x")


def test_params_are_absent_unless_given_so_the_planner_can_default_them_to_the_cell(tmp_path):
    (tmp_path / "train.py").write_text("")
    (tmp_path / "kaio.yaml").write_text(
        "version: 1\nname: p\njobs:\n  t:\n    matrix: {lr: [1, 2]}\n"
    )
    job = load_manifest(tmp_path / "kaio.yaml").jobs["t"]
    assert "params" not in job.spec and "env" not in job.spec
    assert job.source_path("params") is None


def test_templates_are_accepted_wherever_a_value_may_depend_on_the_matrix(tmp_path):
    (tmp_path / "train.py").write_text("")
    fields = {
        "directory": "'{{ matrix.d }}'",
        "entrypoint": "'{{ matrix.e }}.py'",
        "instance_type": "'{{ matrix.t }}'",
        "instance_count": "'{{ matrix.n }}'",
        "volume_size_gb": "'{{ matrix.v }}'",
        "framework": "'{{ matrix.f }}'",
        "framework_version": "'{{ matrix.fv }}'",
        "max_runtime_hours": "'{{ matrix.h }}'",
        "retries": "'{% if matrix.n > 1 %}1{% else %}0{% endif %}'",
        "name": "'run-{{ matrix.n }}'",
    }
    body = "".join(f"    {k}: {v}\n" for k, v in fields.items())
    (tmp_path / "kaio.yaml").write_text(
        f"version: 1\nname: t\njobs:\n  t:\n{body}    matrix: {{n: [1, 2]}}\n"
    )
    job = load_manifest(tmp_path / "kaio.yaml").jobs["t"]
    assert job.spec["instance_count"] == "{{ matrix.n }}"
    assert job.name == "run-{{ matrix.n }}"


def test_sweep_defaults_and_inferred_distributions(tmp_path):
    (tmp_path / "train.py").write_text("")
    (tmp_path / "kaio.yaml").write_text(
        "version: 1\nname: s\njobs:\n  s:\n    sweep:\n      count: 3\n      parameters:\n"
        "        a: {values: [x, y], probabilities: [0.25, 0.75]}\n"
        "        b: {value: 5}\n"
        "        c: {min: 1, max: 8}\n"
        "        d: {min: 1, max: 8.5}\n"
        "        e: {distribution: q_uniform, min: 8, max: 64, q: 8}\n"
        "        f: {distribution: log_normal, mu: 0, sigma: 1}\n"
        "  g:\n    sweep:\n      method: grid\n      parameters:\n        a: {values: [1, 2]}\n"
    )
    m = load_manifest(tmp_path / "kaio.yaml")
    s = m.jobs["s"].sweep
    assert (s.method, s.count, s.seed) == ("random", 3, 0)
    assert s.parameters == {
        "a": SweepParameter("a", "categorical", values=["x", "y"], probabilities=[0.25, 0.75]),
        "b": SweepParameter("b", "constant", value=5),
        "c": SweepParameter("c", "int_uniform", min=1, max=8),
        "d": SweepParameter("d", "uniform", min=1, max=8.5),
        "e": SweepParameter("e", "q_uniform", min=8, max=64, q=8),
        "f": SweepParameter("f", "log_normal", mu=0, sigma=1),
    }
    assert m.jobs["g"].sweep == Sweep(
        "grid", None, 0, {"a": SweepParameter("a", "categorical", values=[1, 2])}
    )


def test_infer_distribution_follows_wandb():
    assert infer_distribution({"values": [1]}) == "categorical"
    assert infer_distribution({"value": 1}) == "constant"
    assert infer_distribution({"min": 1, "max": 2}) == "int_uniform"
    assert infer_distribution({"min": 1.0, "max": 2}) == "uniform"
    assert infer_distribution({"min": True, "max": 2}) == "uniform"
    assert infer_distribution({"distribution": "normal", "mu": 0}) == "normal"
    assert infer_distribution({"mu": 0, "sigma": 1}) is None


def test_matrix_with_only_include_entries(tmp_path):
    (tmp_path / "train.py").write_text("")
    (tmp_path / "kaio.yaml").write_text(
        "version: 1\nname: i\njobs:\n  t:\n    matrix:\n"
        "      include:\n        - {node: {version: 18}}\n        - {node: {version: 20}}\n"
    )
    matrix = load_manifest(tmp_path / "kaio.yaml").jobs["t"].matrix
    assert matrix == Matrix({}, [{"node": {"version": 18}}, {"node": {"version": 20}}], [])


# ---- what the planner uses ---------------------------------------------------------------------


@pytest.fixture
def cifar():
    return load_manifest(VALID / "cifar" / "kaio.yaml")


def test_check_rendered_points_at_the_template_line(cifar):
    rendered = dict(cifar.jobs["train"].spec)
    rendered["env"] = {"DATASET": "cifar10"}
    assert cifar.check_rendered("train", rendered) == []
    cifar_file = str(VALID / "cifar" / "kaio.yaml")
    rendered["instance_count"] = "two"
    rendered["env"] = {"DATASET": 3}
    assert [str(d) for d in cifar.check_rendered("train", rendered, "for lr=0.1")] == [
        f"{cifar_file}:26:21: jobs.train.instance_count: expected an integer, got 'two' (for lr=0.1)",
        f'{cifar_file}:32:20: jobs.train.env.DATASET: expected a string, got 3; quote it: "3" '
        "(rendered from '{{ vars.dataset }}' for lr=0.1)",
    ]


def test_check_rendered_refuses_what_only_a_template_could_hide(cifar):
    rendered = dict(cifar.jobs["prep"].spec)
    rendered.update(
        instance_type="ml.g4dn.xlarg",
        volume_size_gb=99,
        entrypoint="missing.py",
        directory="./nowhere",
        max_runtime_hours=0,
    )
    found = cifar.check_rendered("prep", rendered)
    assert [(d.line, d.column) for d in found] == sorted((d.line, d.column) for d in found)
    messages = [(d.dotted_path, d.message) for d in found]
    assert messages == [
        (
            "defaults.directory",
            "'./nowhere' is not an existing folder (relative to the manifest's folder)",
        ),
        # Nothing wrote these two for prep: the job's key (line 18), naming the field.
        ("jobs.prep", "volume_size_gb: 99 is greater than the maximum of 50"),
        ("jobs.prep", "max_runtime_hours: 0 must be greater than 0"),
        (
            "jobs.prep.instance_type",
            "unknown instance type 'ml.g4dn.xlarg'; did you mean 'ml.g4dn.xlarge'?",
        ),
    ]


def test_check_rendered_reports_a_missing_entrypoint_and_oversized_env(cifar):
    rendered = dict(cifar.jobs["train"].spec)
    rendered["entrypoint"] = "nope.py"
    rendered["env"] = {"DATASET": "x" * 5000}
    assert [(d.dotted_path, d.message) for d in cifar.check_rendered("train", rendered)] == [
        ("jobs.train.entrypoint", "'nope.py' is not in folder './train'"),
        ("jobs.train.env", "at most 4096 bytes in all, got 5007"),
    ]


def test_diagnostic_positions_for_planner_errors(cifar):
    # A template's own line: where the planner reports an undefined name in it.
    d = cifar.diagnostic(cifar.jobs["train"].source_path("name"), "'matrix' has no attribute 'lrr'")
    assert d == Diagnostic(
        str(VALID / "cifar" / "kaio.yaml"),
        22,
        11,
        ("jobs", "train", "name"),
        "'matrix' has no attribute 'lrr'",
    )
    # A job as a whole (two jobs with one name): its key.
    d = cifar.diagnostic(("jobs", "search"), "same name as jobs.train")
    assert (d.line, d.column) == (39, 3)
    assert cifar.source_text(("jobs", "search", "sweep", "parameters", "lr", "min")) == "0.00001"


# ---- errors as values ----------------------------------------------------------------------------


def test_manifest_error_is_invalid_input_with_every_error(tmp_path):
    (tmp_path / "kaio.yaml").write_text("version: 3\nname: X\njobs: {}\n")
    with pytest.raises(ManifestError) as caught:
        load_manifest(tmp_path / "kaio.yaml")
    e = caught.value
    assert isinstance(e, InvalidInput) and isinstance(e, ValueError)
    assert e.exit_code == EXIT_INVALID
    assert len(e.errors) == 3
    assert str(e) == "\n".join(str(d) for d in e.errors)
    assert e.errors[0].to_json() == {
        "line": 1,
        "column": 10,
        "path": "version",
        "message": "3 is not a supported version: this kaio reads version 1",
    }


def test_validate_file_returns_the_errors_or_nothing(tmp_path):
    assert validate_file(VALID / "minimal" / "kaio.yaml") == []
    missing = tmp_path / "missing.yaml"
    assert validate_file(missing) == [Diagnostic(str(missing), None, None, (), "no such file")]


def test_the_file_name_is_shown_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.mkdir("sub")
    Path("sub/kaio.yaml").write_text("version: 1\n")
    assert str(validate_file("sub/kaio.yaml")[0]).startswith("sub/kaio.yaml:1:1: ")


def test_public_api_exports_loading():
    assert kaio_spec.load_manifest is load_manifest
    assert "load_manifest" in kaio_spec.__all__ and "Manifest" in kaio_spec.__all__
