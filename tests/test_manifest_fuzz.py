"""No traceback, ever, for a bad manifest: whatever a file holds, loading either gives a Manifest or
raises ManifestError whose every error has a position inside the file."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kaio_spec import Manifest, ManifestError, load_manifest

CIFAR = Path(__file__).parent / "manifests" / "valid" / "cifar" / "kaio.yaml"
BASE = yaml.safe_load(CIFAR.read_text())

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(["{{ matrix.lr }}", "ml.m5.large", "train.py", "./train", "PATH", "SM_X"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=8), inner, max_size=4),
    ),
    max_leaves=12,
)


def paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from paths(v, (*prefix, i))


ALL_PATHS = list(paths(BASE))[1:]


def replaced(path, value):
    data = copy.deepcopy(BASE)
    node = data
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return data


def check(file: Path) -> None:
    lines = file.read_text(errors="replace").count("\n") + 1
    try:
        manifest = load_manifest(file)
    except ManifestError as e:
        assert e.errors
        for d in e.errors:
            assert d.line is None or 1 <= d.line <= lines, d
            assert str(d).startswith(str(file))
        return
    assert isinstance(manifest, Manifest)


fuzz = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def cifar_copy(tmp_path_factory):
    # A copy of the example's folder, so that its folders and entrypoints resolve.
    folder = tmp_path_factory.mktemp("cifar")
    shutil.copytree(CIFAR.parent, folder, dirs_exist_ok=True)
    return folder


@fuzz
@given(path=st.sampled_from(ALL_PATHS), value=values)
def test_any_value_anywhere_in_a_real_manifest(cifar_copy, path, value):
    file = cifar_copy / "kaio.yaml"
    file.write_text(yaml.safe_dump(replaced(path, value), sort_keys=False))
    check(file)


@fuzz
@given(data=values)
def test_any_document(tmp_path_factory, data):
    file = tmp_path_factory.mktemp("fuzz") / "kaio.yaml"
    file.write_text(yaml.safe_dump(data))
    check(file)


@fuzz
@given(text=st.text(alphabet=st.sampled_from(list("ab:-[]{}&*!|>'\"#\n\t ,?%@`<")), max_size=60))
def test_any_text(tmp_path_factory, text):
    file = tmp_path_factory.mktemp("fuzz") / "kaio.yaml"
    file.write_text(text)
    check(file)
