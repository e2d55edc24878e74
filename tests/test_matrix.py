"""Matrices expand exactly as GitHub Actions' strategy.matrix: product, exclude, include."""

from __future__ import annotations

import itertools
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kaio_spec import ManifestError, plan
from kaio_spec.manifest import Matrix
from kaio_spec.planner.matrix import TooManyCells, count_cells, expand_matrix
from kaio_spec.planner.values import json_equal


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "train.py").write_text("print('hi')\n")
    path = tmp_path / "kaio.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def cells(matrix: Matrix) -> list[dict]:
    return [c.values for c in expand_matrix(matrix)]


# ---- the issue's worked example, as is -------------------------------------------------------


WORKED_EXAMPLE = """\
    version: 1
    name: worked
    jobs:
      t:
        matrix:
          fruit: [apple, pear]
          animal: [cat, dog]
          include:
            - color: green
            - color: pink
              animal: cat
            - fruit: apple
              shape: circle
            - fruit: banana
            - fruit: banana
              animal: cat
    """


def test_the_issue_worked_example_as_is(tmp_path):
    jobs = plan(write(tmp_path, WORKED_EXAMPLE)).jobs
    assert [job.matrix for job in jobs] == [
        {"fruit": "apple", "animal": "cat", "color": "pink", "shape": "circle"},
        {"fruit": "apple", "animal": "dog", "color": "green", "shape": "circle"},
        {"fruit": "pear", "animal": "cat", "color": "pink"},
        {"fruit": "pear", "animal": "dog", "color": "green"},
        {"fruit": "banana"},
        {"fruit": "banana", "animal": "cat"},
    ]
    # Keys in the order they were added (an overwritten value keeps its place).
    assert list(jobs[0].matrix) == ["fruit", "animal", "color", "shape"]
    assert [job.name for job in jobs] == [
        "t-fruitapple-animalcat-colorpink-shapecircle",
        "t-fruitapple-animaldog-colorgreen-shapecircle",
        "t-fruitpear-animalcat-colorpink",
        "t-fruitpear-animaldog-colorgreen",
        "t-fruitbanana",
        "t-fruitbanana-animalcat",
    ]
    assert [job.index for job in jobs] == [0, 1, 2, 3, 4, 5]


# ---- GitHub's documented examples --------------------------------------------------------------


def test_single_dimension():
    assert cells(Matrix({"version": [10, 12, 14]}, [], [])) == [
        {"version": 10},
        {"version": 12},
        {"version": 14},
    ]


def test_multiple_dimensions_first_key_varies_slowest():
    m = Matrix({"os": ["ubuntu-22.04", "ubuntu-20.04"], "version": [10, 12, 14]}, [], [])
    assert cells(m) == [
        {"os": "ubuntu-22.04", "version": 10},
        {"os": "ubuntu-22.04", "version": 12},
        {"os": "ubuntu-22.04", "version": 14},
        {"os": "ubuntu-20.04", "version": 10},
        {"os": "ubuntu-20.04", "version": 12},
        {"os": "ubuntu-20.04", "version": 14},
    ]


def test_excluding_with_partial_matches():
    # GitHub's exclude example: 12 combinations, one full and two partial matches removed.
    m = Matrix(
        {
            "os": ["macos-latest", "windows-latest"],
            "version": [12, 14, 16],
            "environment": ["staging", "production"],
        },
        include=[],
        exclude=[
            {"os": "macos-latest", "version": 12, "environment": "production"},
            {"os": "windows-latest", "version": 16},
        ],
    )
    out = cells(m)
    assert len(out) == 9
    assert {"os": "macos-latest", "version": 12, "environment": "production"} not in out
    assert not [c for c in out if c["os"] == "windows-latest" and c["version"] == 16]
    assert {"os": "macos-latest", "version": 12, "environment": "staging"} in out


def test_expanding_a_combination_with_include():
    m = Matrix(
        {"os": ["windows-latest", "ubuntu-latest"], "node": [14, 16]},
        include=[{"os": "windows-latest", "node": 16, "npm": 6}],
        exclude=[],
    )
    assert cells(m) == [
        {"os": "windows-latest", "node": 14},
        {"os": "windows-latest", "node": 16, "npm": 6},
        {"os": "ubuntu-latest", "node": 14},
        {"os": "ubuntu-latest", "node": 16},
    ]


def test_adding_a_combination_with_include():
    m = Matrix(
        {"os": ["windows-latest", "ubuntu-latest"], "node": [14, 16]},
        include=[{"os": "windows-latest", "node": 17}],
        exclude=[],
    )
    out = cells(m)
    assert len(out) == 5
    assert out[-1] == {"os": "windows-latest", "node": 17}


def test_include_without_keys_makes_one_job_per_entry():
    m = Matrix(
        {},
        include=[
            {"site": "production", "datacenter": "site-a"},
            {"site": "staging", "datacenter": "site-b"},
        ],
        exclude=[],
    )
    assert cells(m) == [
        {"site": "production", "datacenter": "site-a"},
        {"site": "staging", "datacenter": "site-b"},
    ]


def test_values_may_be_objects(tmp_path):
    path = write(
        tmp_path,
        """\
        version: 1
        name: nodes
        jobs:
          t:
            name: "t-{{ matrix.os }}-node{{ matrix.node.version }}"
            env: {NODE: "{{ matrix.node.version }}", OPTS: "{{ matrix.node.env | default('') }}"}
            matrix:
              os: [ubuntu, macos]
              node:
                - version: 14
                - version: 20
                  env: NODE_OPTIONS=--openssl-legacy-provider
        """,
    )
    jobs = plan(path).jobs
    assert [job.name for job in jobs] == [
        "t-ubuntu-node14",
        "t-ubuntu-node20",
        "t-macos-node14",
        "t-macos-node20",
    ]
    assert jobs[1].matrix == {
        "os": "ubuntu",
        "node": {"version": 20, "env": "NODE_OPTIONS=--openssl-legacy-provider"},
    }
    assert jobs[1].env == {"NODE": "20", "OPTS": "NODE_OPTIONS=--openssl-legacy-provider"}
    assert jobs[0].env == {"NODE": "14", "OPTS": ""}
    # The matrix is the params when none are given, objects and all.
    assert jobs[1].params == jobs[1].matrix


def test_exclude_and_include_compare_objects_as_json_values():
    m = Matrix(
        {"node": [{"v": 14}, {"v": 20}], "n": [1, 2]},
        include=[{"n": 1.0, "extra": True}],  # 1.0 is 1 as JSON
        exclude=[{"node": {"v": 20}, "n": 2}],
    )
    assert cells(m) == [
        {"node": {"v": 14}, "n": 1, "extra": True},
        {"node": {"v": 14}, "n": 2},
        {"node": {"v": 20}, "n": 1, "extra": True},
    ]


def test_true_is_not_one():
    m = Matrix({"flag": [True, 1]}, include=[{"flag": 1, "x": "one"}], exclude=[])
    assert cells(m) == [{"flag": True}, {"flag": 1, "x": "one"}]


def test_an_include_may_overwrite_what_an_earlier_include_added_but_never_an_original():
    m = Matrix(
        {"a": [1, 2]},
        include=[{"b": "first"}, {"b": "second"}, {"a": 3, "b": "own"}],
        exclude=[],
    )
    assert cells(m) == [{"a": 1, "b": "second"}, {"a": 2, "b": "second"}, {"a": 3, "b": "own"}]


def test_appended_combinations_are_never_extended():
    m = Matrix({"a": [1]}, include=[{"a": 2}, {"a": 2, "b": "x"}, {"c": "y"}], exclude=[])
    assert cells(m) == [{"a": 1, "c": "y"}, {"a": 2}, {"a": 2, "b": "x"}]


def test_when_exclude_removes_everything_includes_are_appended():
    m = Matrix({"a": [1, 2]}, include=[{"a": 1, "b": 2}], exclude=[{"a": 1}, {"a": 2}])
    assert cells(m) == [{"a": 1, "b": 2}]


def test_a_matrix_that_makes_no_jobs_is_an_error(tmp_path):
    path = write(
        tmp_path,
        """\
        version: 1
        name: empty
        jobs:
          t:
            matrix:
              a: [1, 2]
              exclude: [{a: 1}, {a: 2}]
        """,
    )
    with pytest.raises(ManifestError) as caught:
        plan(path)
    [d] = caught.value.errors
    assert (d.line, d.dotted_path) == (5, "jobs.t.matrix")
    assert "makes no jobs" in d.message


def test_counting_stops_at_the_limit_without_building_a_huge_product():
    # 10^12 combinations: only building them all could make this slow or exhaust memory.
    m = Matrix({k: list(range(100)) for k in "abcdef"}, include=[], exclude=[])
    with pytest.raises(TooManyCells):
        expand_matrix(m, limit=1000)


def test_the_limit_counts_appended_includes():
    m = Matrix({"a": [1, 2]}, include=[{"a": 3}], exclude=[])
    assert len(expand_matrix(m, limit=3)) == 3
    with pytest.raises(TooManyCells):
        expand_matrix(m, limit=2)


def test_sources_say_where_each_value_was_written():
    m = Matrix({"a": [1, 2]}, include=[{"a": 2, "b": "x"}, {"c": 9}], exclude=[])
    out = expand_matrix(m)
    assert out[1].sources == {
        "a": ("matrix", "a", 1),
        "b": ("matrix", "include", 0, "b"),
        "c": ("matrix", "include", 1, "c"),
    }


# ---- properties ----------------------------------------------------------------------------------

KEYS = ["a", "b", "c"]
EXTRA = ["x", "y"]
VALUES = st.integers(min_value=0, max_value=3)


@st.composite
def matrices(draw):
    keys = draw(st.lists(st.sampled_from(KEYS), unique=True, max_size=3))
    dims = {k: draw(st.lists(VALUES, min_size=1, max_size=3, unique=True)) for k in keys}
    entry_keys = st.sampled_from(keys + EXTRA)
    excludes = (
        draw(
            st.lists(
                st.dictionaries(st.sampled_from(keys), VALUES, min_size=1, max_size=3),
                max_size=3,
            )
        )
        if keys
        else []
    )
    includes = draw(
        st.lists(st.dictionaries(entry_keys, VALUES, min_size=1, max_size=3), max_size=4)
    )
    return Matrix(dims, includes, excludes)


def _fits(original: dict, entry: dict, dims: dict) -> bool:
    return all(k not in dims or original[k] == v for k, v in entry.items())


@settings(max_examples=300, deadline=None)
@given(matrices())
def test_count_is_product_minus_excluded_plus_appended_includes(m):
    product = (
        [
            dict(zip(m.dimensions, combo, strict=True))
            for combo in itertools.product(*m.dimensions.values())
        ]
        if m.dimensions
        else []
    )
    kept = [
        c for c in product if not any(all(c.get(k) == v for k, v in e.items()) for e in m.exclude)
    ]
    excluded = len(product) - len(kept)
    appended = sum(1 for e in m.include if not any(_fits(c, e, m.dimensions) for c in kept))
    out = cells(m)
    assert len(out) == len(product) - excluded + appended
    # Originals come first, in product order, their matrix values never overwritten.
    for original, cell in zip(kept, out, strict=False):
        assert {k: cell[k] for k in m.dimensions} == original
    # Appended combinations are their include entries, exactly.
    assert out[len(kept) :] == [
        e for e in m.include if not any(_fits(c, e, m.dimensions) for c in kept)
    ]


@settings(max_examples=200, deadline=None)
@given(matrices())
def test_expansion_is_deterministic_and_leaves_the_matrix_as_it_was(m):
    before = (dict(m.dimensions), [dict(e) for e in m.include], [dict(e) for e in m.exclude])
    assert cells(m) == cells(m)
    assert (m.dimensions, m.include, m.exclude) == before


@settings(max_examples=200, deadline=None)
@given(matrices())
def test_no_kept_combination_matches_an_exclude(m):
    n_original = len(cells(Matrix(m.dimensions, [], m.exclude)))
    for cell in cells(m)[:n_original]:
        assert not any(
            all(k in cell and json_equal(cell[k], v) for k, v in e.items()) for e in m.exclude
        )


@settings(max_examples=300, deadline=None)
@given(matrices(), st.integers(min_value=1, max_value=6))
def test_counting_without_expanding_agrees_with_expanding(m, more):
    """count_cells (for "makes 5000 jobs") enumerates only the keys entries name."""
    assert count_cells(m) == len(expand_matrix(m))
    wider = Matrix({**m.dimensions, "free": list(range(more))}, m.include, m.exclude)
    assert count_cells(wider) == len(expand_matrix(wider))


def test_counting_gives_up_beyond_its_budget():
    m = Matrix({"a": list(range(100)), "b": list(range(100))}, [], [{"a": 1, "b": 1}])
    assert count_cells(m, budget=9999) is None
    assert count_cells(m) == 9999
