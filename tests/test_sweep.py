"""Sweeps: W&B's parameter forms, drawn identically everywhere from one seeded generator."""

from __future__ import annotations

import math
import random
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kaio_spec import ManifestError, plan
from kaio_spec.manifest import Sweep
from kaio_spec.manifest import SweepParameter as P
from kaio_spec.planner.sweep import cell_seed, draw, grid, grid_size, random_draws


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "train.py").write_text("print('hi')\n")
    path = tmp_path / "kaio.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def values(draws: list[dict]) -> list[dict]:
    return [{k: d.value for k, d in one.items()} for one in draws]


EVERY_FORM = Sweep(
    "random",
    3,
    7,
    {
        "lr": P("lr", "log_uniform_values", min=0.00001, max=0.1),
        "dropout": P("dropout", "uniform", min=0.0, max=0.5),
        "layers": P("layers", "categorical", values=[2, 4, 8]),
        "opt": P("opt", "categorical", values=["adam", "sgd"], probabilities=[0.9, 0.1]),
        "bs": P("bs", "int_uniform", min=16, max=128),
        "wd": P("wd", "q_uniform", min=0.0, max=1.0, q=0.1),
        "steps": P("steps", "q_uniform", min=0, max=1000, q=50),
        "mom": P("mom", "normal", mu=0.9, sigma=0.05),
        "scale": P("scale", "log_normal", mu=0.0, sigma=1.0),
        "const": P("const", "constant", value="x"),
    },
)


# ---- golden draws: a change in the algorithm (or in CPython's generator) fails here ------------


def test_the_generator_underneath_is_cpythons_seeded_mersenne_twister():
    r = random.Random(7)
    assert [r.random() for _ in range(4)] == [
        0.32383276483316237,
        0.15084917392450192,
        0.6509344730398537,
        0.07243628666754276,
    ]


def test_golden_draws_of_every_form():
    assert values(random_draws(EVERY_FORM, 3, 7)) == [
        {
            "lr": 0.0001973926871970626,
            "dropout": 0.07542458696225096,
            "layers": 4,
            "opt": "adam",
            "bs": 76,
            "wd": 0.4,
            "steps": 50,
            "mom": 0.9004484413646523,
            "scale": 0.8926425790888547,
            "const": "x",
        },
        {
            "lr": 2.305961506765406e-05,
            "dropout": 0.21225959457125698,
            "layers": 8,
            "opt": "adam",
            "bs": 41,
            "wd": 0.6,
            "steps": 950,
            "mom": 0.9696301494692333,
            "scale": 2.098924570606086,
            "const": "x",
        },
        {
            "lr": 3.7758986906241035e-05,
            "dropout": 0.05889611903918418,
            "layers": 2,
            "opt": "adam",
            "bs": 36,
            "wd": 0.6,
            "steps": 650,
            "mom": 0.7932056264568261,
            "scale": 0.35396406555973114,
            "const": "x",
        },
    ]


def test_golden_first_draws_follow_the_documented_formulas():
    r = 0.32383276483316237  # Random(7)'s first draw
    [first] = values(random_draws(EVERY_FORM, 1, 7))
    assert first["lr"] == pytest.approx(
        math.exp(math.log(1e-5) + (math.log(0.1) - math.log(1e-5)) * r)
    )
    # The second draw feeds dropout: 0 + 0.5 * r2.
    assert first["dropout"] == 0.5 * 0.15084917392450192
    # r3 = 0.65 picks the second of three values.
    assert first["layers"] == 4


def test_golden_cell_seed():
    assert cell_seed(7, {"lr": 0.1, "batch_size": 32}) == 11742382734526901533
    # From the values, not their order in the cell.
    assert cell_seed(7, {"batch_size": 32, "lr": 0.1}) == 11742382734526901533


def test_golden_sweep_in_a_manifest(tmp_path):
    # The example sweep: seed 7 gives these three first jobs, here and everywhere.
    path = write(
        tmp_path,
        """\
        version: 1
        name: cifar
        jobs:
          search:
            sweep:
              method: random
              count: 20
              seed: 7
              parameters:
                lr: {distribution: log_uniform_values, min: 0.00001, max: 0.1}
                dropout: {distribution: uniform, min: 0.0, max: 0.5}
                layers: {values: [2, 4, 8]}
        """,
    )
    jobs = plan(path).jobs
    assert len(jobs) == 20
    assert [job.matrix for job in jobs[:3]] == [
        {"lr": 0.0001973926871970626, "dropout": 0.07542458696225096, "layers": 4},
        {"lr": 1.9487007247258693e-05, "dropout": 0.2679410021533446, "layers": 4},
        {"lr": 1.7060654934271484e-05, "dropout": 0.25371786659471013, "layers": 2},
    ]
    assert [job.name for job in jobs[:3]] == ["search-1", "search-2", "search-3"]
    # params default to the draws.
    assert jobs[0].params == jobs[0].matrix


# ---- forms and inference ---------------------------------------------------------------------


def test_distributions_are_inferred_as_wandb_does(tmp_path):
    path = write(
        tmp_path,
        """\
        version: 1
        name: infer
        jobs:
          s:
            sweep:
              count: 50
              parameters:
                opt: {values: [adam, sgd]}
                fixed: {value: 3}
                epochs: {min: 1, max: 3}
                lr: {min: 0.1, max: 0.2}
        """,
    )
    jobs = plan(path).jobs
    assert {job.matrix["opt"] for job in jobs} == {"adam", "sgd"}
    assert {job.matrix["fixed"] for job in jobs} == {3}
    epochs = {job.matrix["epochs"] for job in jobs}
    assert epochs == {1, 2, 3} and all(type(e) is int for e in epochs)
    assert all(type(job.matrix["lr"]) is float and 0.1 <= job.matrix["lr"] < 0.2 for job in jobs)


def test_a_constant_draws_nothing_so_adding_one_keeps_the_other_draws():
    base = Sweep("random", 5, 3, {"a": P("a", "uniform", min=0.0, max=1.0)})
    more = Sweep(
        "random",
        5,
        3,
        {"c": P("c", "constant", value=1), "a": P("a", "uniform", min=0.0, max=1.0)},
    )
    assert [d["a"] for d in values(random_draws(base, 5, 3))] == [
        d["a"] for d in values(random_draws(more, 5, 3))
    ]


def test_probabilities_are_respected_and_zero_is_never_drawn():
    p = P("x", "categorical", values=["a", "b", "c"], probabilities=[0.0, 1.0, 0.0])
    rng = random.Random(1).random
    assert {draw(p, rng).value for _ in range(200)} == {"b"}


def test_categorical_draws_remember_which_value_they_were():
    p = P("x", "categorical", values=[0.00001, 0.001])
    d = draw(p, random.Random(0).random)
    assert d.value == p.values[d.index]


def test_q_uniform_with_a_float_step_gives_clean_multiples():
    p = P("x", "q_uniform", min=0.0, max=1.0, q=0.1)
    rng = random.Random(5).random
    for _ in range(200):
        value = draw(p, rng).value
        assert value == round(value, 1)  # 0.3, never 0.30000000000000004


def test_log_normal_too_large_for_a_float_is_an_error_at_the_parameter(tmp_path):
    path = write(
        tmp_path,
        """\
        version: 1
        name: huge
        jobs:
          s:
            sweep:
              count: 1
              parameters:
                x: {distribution: log_normal, mu: 1000, sigma: 1}
        """,
    )
    with pytest.raises(ManifestError) as caught:
        plan(path)
    [d] = caught.value.errors
    assert (d.line, d.dotted_path) == (8, "jobs.s.sweep.parameters.x")
    assert "too large for a number" in d.message


# ---- grid ------------------------------------------------------------------------------------------


def test_grid_sweeps_run_every_combination_first_parameter_slowest(tmp_path):
    path = write(
        tmp_path,
        """\
        version: 1
        name: grid
        jobs:
          g:
            sweep:
              method: grid
              parameters:
                lr: {values: [0.00001, 0.1]}
                bs: {values: [16, 32]}
                opt: {value: adam}
        """,
    )
    jobs = plan(path).jobs
    assert [job.matrix for job in jobs] == [
        {"lr": 0.00001, "bs": 16, "opt": "adam"},
        {"lr": 0.00001, "bs": 32, "opt": "adam"},
        {"lr": 0.1, "bs": 16, "opt": "adam"},
        {"lr": 0.1, "bs": 32, "opt": "adam"},
    ]
    # Grid values were written, so default names show them as written.
    assert jobs[0].name == "g-lr0.00001-bs16-optadam"


def test_grid_size():
    s = Sweep(
        "grid",
        None,
        0,
        {"a": P("a", "categorical", values=[1, 2, 3]), "b": P("b", "constant", value=0)},
    )
    assert grid_size(s) == 3 == len(grid(s))


# ---- matrix × sweep ----------------------------------------------------------------------------


MATRIX_SWEEP = """\
    version: 1
    name: ms
    jobs:
      t:
        matrix:
          model: [{models}]
        sweep:
          count: 3
          seed: 11
          parameters:
            lr: {{min: 0.0, max: 1.0}}
    """


def test_a_matrix_with_a_sweep_gets_count_draws_per_cell(tmp_path):
    jobs = plan(write(tmp_path, MATRIX_SWEEP.format(models="small, large"))).jobs
    assert len(jobs) == 6
    assert [job.matrix["model"] for job in jobs] == ["small"] * 3 + ["large"] * 3
    assert [job.name for job in jobs] == [
        "t-modelsmall-1",
        "t-modelsmall-2",
        "t-modelsmall-3",
        "t-modellarge-1",
        "t-modellarge-2",
        "t-modellarge-3",
    ]
    small = [job.matrix["lr"] for job in jobs[:3]]
    large = [job.matrix["lr"] for job in jobs[3:]]
    assert small != large  # each cell draws from its own seed
    expected = values(
        random_draws(
            Sweep("random", 3, 11, {"lr": P("lr", "uniform", min=0.0, max=1.0)}),
            3,
            cell_seed(11, {"model": "small"}),
        )
    )
    assert small == [d["lr"] for d in expected]


def test_adding_a_matrix_cell_leaves_the_other_cells_draws_alone(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    two = plan(write(tmp_path / "a", MATRIX_SWEEP.format(models="small, large"))).jobs
    three = plan(write(tmp_path / "b", MATRIX_SWEEP.format(models="tiny, small, large"))).jobs
    assert [j.matrix for j in two] == [j.matrix for j in three[3:]]


def test_counting_includes_the_sweep_factor(tmp_path):
    text = MATRIX_SWEEP.format(models="a, b, c").replace(
        "name: ms", "name: ms\n    settings: {max_jobs: 8}"
    )
    with pytest.raises(ManifestError) as caught:
        plan(write(tmp_path, text))
    [d] = caught.value.errors
    assert d.message == (
        "this job makes 9 jobs; settings.max_jobs is 8; raise max_jobs or make fewer combinations"
    )


# ---- properties ------------------------------------------------------------------------------------

NUMBERS = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@st.composite
def bounded(draw_):
    lo = draw_(NUMBERS)
    hi = draw_(NUMBERS.filter(lambda x: x > lo))
    return lo, hi


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=2**63), st.integers(min_value=1, max_value=20))
def test_the_same_seed_reproduces_the_draws_and_more_draws_extend_them(seed, n):
    first = values(random_draws(EVERY_FORM, n, seed))
    assert values(random_draws(EVERY_FORM, n, seed)) == first
    assert values(random_draws(EVERY_FORM, n + 3, seed))[:n] == first


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=2**32))
def test_different_seeds_give_different_draws(seed):
    assert values(random_draws(EVERY_FORM, 2, seed)) != values(
        random_draws(EVERY_FORM, 2, seed + 1)
    )


@settings(max_examples=300, deadline=None)
@given(bounded(), st.integers(min_value=0, max_value=2**32))
def test_uniform_draws_stay_in_bounds(bounds, seed):
    lo, hi = bounds
    rng = random.Random(seed).random
    for _ in range(20):
        assert lo <= draw(P("x", "uniform", min=lo, max=hi), rng).value <= hi


@settings(max_examples=300, deadline=None)
@given(
    st.integers(min_value=-1000, max_value=1000),
    st.integers(min_value=0, max_value=50),
    st.integers(min_value=0, max_value=2**32),
)
def test_int_uniform_includes_max_and_stays_in_bounds(lo, width, seed):
    p = P("x", "int_uniform", min=lo, max=lo + width)
    rng = random.Random(seed).random
    seen = {draw(p, rng).value for _ in range(300)}
    assert all(type(v) is int and lo <= v <= lo + width for v in seen)
    if width <= 3:
        assert seen == set(range(lo, lo + width + 1))


@pytest.mark.parametrize("form", ["log_uniform_values", "inv_log_uniform_values"])
@settings(max_examples=300, deadline=None)
@given(
    st.floats(min_value=1e-12, max_value=1e3),
    st.floats(min_value=1.001, max_value=1e6),
    st.integers(min_value=0, max_value=2**32),
)
def test_log_uniform_values_stay_in_bounds(form, lo, factor, seed):
    p = P("x", form, min=lo, max=lo * factor)
    rng = random.Random(seed).random
    for _ in range(20):
        assert lo <= draw(p, rng).value <= lo * factor


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(), min_size=1, max_size=6),
    st.integers(min_value=0, max_value=2**32),
)
def test_categorical_draws_come_from_the_values(options, seed):
    p = P("x", "categorical", values=options)
    rng = random.Random(seed).random
    for _ in range(20):
        d = draw(p, rng)
        assert d.value in options and options[d.index] == d.value


@settings(max_examples=200, deadline=None)
@given(
    st.floats(min_value=-100, max_value=100),
    st.floats(min_value=0.001, max_value=10),
    st.integers(min_value=0, max_value=2**32),
)
def test_normal_draws_are_finite_and_centred(mu, sigma, seed):
    p = P("x", "normal", mu=mu, sigma=sigma)
    rng = random.Random(seed).random
    drawn = [draw(p, rng).value for _ in range(50)]
    assert all(math.isfinite(v) for v in drawn)
    # 50 draws: the mean is within 6 standard errors of mu (fails about once in 10^9).
    assert abs(sum(drawn) / 50 - mu) < 6 * sigma / math.sqrt(50)
