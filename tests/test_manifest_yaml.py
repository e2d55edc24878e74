"""YAML loading with positions (kaio_spec/yamlpos.py): YAML 1.2 scalars, positions of keys, values
and items, source text, anchors and merge keys, and refusals with their positions."""

from __future__ import annotations

import math

import pytest

from kaio_spec.yamlpos import MAX_NODES, LoadError, Location, load_text


def load(text: str):
    return load_text(text, "k.yaml")


def errors(text: str) -> list[str]:
    with pytest.raises(LoadError) as caught:
        load(text)
    return [str(d) for d in caught.value.diagnostics]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1e-5", 1e-05),
        ("1.0e-5", 1e-05),
        ("1E5", 100000.0),
        (".5", 0.5),
        ("-.5", -0.5),
        ("+1.5", 1.5),
        ("3.", 3.0),
        ("10", 10),
        ("-3", -3),
        ("0123", 123),
        ("0o17", 15),
        ("0x1F", 31),
        ("true", True),
        ("False", False),
        ("TRUE", True),
        ("yes", "yes"),
        ("no", "no"),
        ("on", "on"),
        ("off", "off"),
        ("y", "y"),
        ("n", "n"),
        ("NO", "NO"),
        ("~", None),
        ("null", None),
        ("", None),
        ("2024-01-31", "2024-01-31"),
        ("1_000", "1_000"),
        ("0b101", "0b101"),
        ("'1e-5'", "1e-5"),
        ('"true"', "true"),
        ("!!str 12", "12"),
        ("!!int '12'", 12),
        ("!!float 3", 3.0),
        ("!!bool true", True),
        ("!!null ''", None),
        ("1.2.3", "1.2.3"),
        ("v1", "v1"),
    ],
)
def test_yaml_1_2_core_scalars(text, value):
    loaded = load(f"x: {text}\n").data["x"]
    assert loaded == value
    assert type(loaded) is type(value)


def test_non_finite_floats_are_refused():
    assert errors("a: .inf\nb: -.Inf\nc: .nan\n") == [
        "k.yaml:1:4: a: '.inf' is not a finite number",
        "k.yaml:2:4: b: '-.Inf' is not a finite number",
        "k.yaml:3:4: c: '.nan' is not a finite number",
    ]


def test_explicit_core_tags_must_fit_their_value():
    assert errors("a: !!int x\nb: !!bool yes\nc: !!str [1]\nd: !!map [1]\n") == [
        "k.yaml:1:4: a: 'x' is not a valid !!int",
        "k.yaml:2:4: b: 'yes' is not a valid !!bool",
        "k.yaml:3:4: c: tag !!str does not fit a list",
        "k.yaml:4:4: d: tag !!map does not fit a list",
    ]


def test_positions_of_keys_values_and_items():
    doc = load("top:\n  key: value\n  list:\n    - 1\n    - {a: b}\n  flow: [x, y]\n  empty:\n")
    loc = doc.locations
    assert loc[("top",)] == Location(2, 3, 1, 1, None, True)
    assert loc[("top", "key")] == Location(2, 8, 2, 3, "value")
    assert loc[("top", "list", 0)] == Location(4, 7, None, None, "1")
    assert loc[("top", "list", 1, "a")] == Location(5, 11, 5, 8, "b")
    assert loc[("top", "flow", 1)] == Location(6, 13, None, None, "y")
    assert loc[("top", "empty")] == Location(7, 9, 7, 3, "", empty=True)
    # Errors about a value point at it; about a mapping, a list or nothing, at its key.
    assert doc.position(("top", "key")) == (2, 8)
    assert doc.position(("top", "key"), key=True) == (2, 3)
    assert doc.position(("top", "list")) == (3, 3)
    assert doc.position(("top", "empty")) == (7, 3)
    assert doc.position(("top", "list", 1)) == (5, 7)
    # A path not in the document (a missing key) falls back to its nearest ancestor.
    assert doc.position(("top", "list", 1, "missing")) == (5, 7)
    assert doc.position(()) == (1, 1)


def test_source_text_keeps_numbers_as_written():
    doc = load("lr: [0.00001, 1e-5, 1.50, 0x10]\n")
    assert doc.data == {"lr": [1e-05, 1e-05, 1.5, 16]}
    assert [doc.source_text(("lr", i)) for i in range(4)] == ["0.00001", "1e-5", "1.50", "0x10"]
    assert doc.show(("lr", 0)) == "0.00001"
    assert doc.source_text(("lr",)) is None


def test_keys_are_names_as_written():
    assert load("10: a\ntrue: b\n1.50: c\nnull: d\n'q': e\n").data == {
        "10": "a",
        "true": "b",
        "1.50": "c",
        "null": "d",
        "q": "e",
    }


def test_duplicate_keys_are_errors_with_both_positions():
    assert errors("a: 1\nb:\n  c: 1\n  c: 2\na: 3\n") == [
        "k.yaml:4:3: b.c: duplicate key 'c' (first at line 3, column 3)",
        "k.yaml:5:1: a: duplicate key 'a' (first at line 1, column 1)",
    ]
    # Keys are compared as written: 1 and '1' are the same key.
    assert errors("1: a\n'1': b\n") == [
        "k.yaml:2:1: 1: duplicate key '1' (first at line 1, column 1)"
    ]


def test_anchors_aliases_and_redefinition():
    doc = load("a: &x [1, 2]\nb: *x\nc: &x 3\nd: *x\n")
    assert doc.data == {"a": [1, 2], "b": [1, 2], "c": 3, "d": 3}
    assert doc.data["a"] is not doc.data["b"]  # copies: nothing downstream shares a value
    # An aliased value points where it was written; the alias's key, where it is used.
    assert doc.position(("b", 1)) == (1, 11)
    assert doc.position(("b",)) == (2, 1)


def test_merge_keys():
    doc = load(
        "base: &b {x: 1, y: 2}\nmore: &m {z: 3}\n"
        "one:\n  <<: *b\n  y: 20\n"
        "two:\n  <<: [*b, *m]\n  w: 4\n"
    )
    assert doc.data["one"] == {"x": 1, "y": 20}
    assert doc.data["two"] == {"x": 1, "y": 2, "z": 3, "w": 4}
    assert doc.position(("one", "y")) == (5, 6)
    assert doc.position(("one", "x")) == (1, 14)
    assert errors("a:\n  <<: [1]\n") == [
        "k.yaml:2:8: a: '<<' merges a mapping or a list of mappings"
    ]


def test_unsafe_and_unknown_tags_are_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran"
    text = (
        f"a: !!python/object/apply:os.system ['touch {marker}']\n"
        "b: !!python/name:os.system\n"
        "c: !!set {x}\n"
        "d: !custom 1\n"
    )
    assert errors(text) == [
        "k.yaml:1:4: a: tag !!python/object/apply:os.system is not allowed: "
        "manifests are loaded as plain data only (safe loading)",
        "k.yaml:2:4: b: tag !!python/name:os.system is not allowed: "
        "manifests are loaded as plain data only (safe loading)",
        "k.yaml:3:4: c: tag !!set is not allowed: "
        "manifests hold plain values: strings, numbers, true/false, lists and mappings",
        "k.yaml:4:4: d: tag !custom is not allowed: "
        "manifests hold plain values: strings, numbers, true/false, lists and mappings",
    ]
    assert not marker.exists()


def test_a_self_referencing_alias_is_an_error():
    assert errors("a: &a\n  b: *a\n") == [
        "k.yaml:2:3: a.b: an alias refers to a value that contains it (a cycle)"
    ]


def test_expansion_is_bounded():
    # Ten aliases of a list of ten: 111 values, fine; the cap counts values as they expand.
    ok = load("a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\nb: [" + ", ".join(["*a"] * 10) + "]\n")
    assert len(ok.data["b"]) == 10
    items = ", ".join(["1"] * 1000)
    text = f"a: &a [{items}]\nb: [" + ", ".join(["*a"] * (MAX_NODES // 1000)) + "]\n"
    assert errors(text) == [
        "k.yaml:2:1: b: the document expands to more than 100,000 values "
        "(aliases nested too many times?)"
    ]


def test_syntax_errors_use_the_parser_mark():
    assert errors("a: [1, 2\n") == [
        "k.yaml:2:1: invalid YAML: expected ',' or ']', but got '<stream end>' "
        "(while parsing a flow sequence at line 1, column 4)"
    ]
    assert errors("a: b: c\n") == ["k.yaml:1:5: invalid YAML: mapping values are not allowed here"]


def test_empty_documents_load_as_none():
    assert load("").data is None
    assert load("# comment\n\n").data is None
    assert load("---\n...\n").data is None


def test_infinity_check_does_not_affect_finite_floats():
    assert math.isclose(load("a: 1.7976931348623157e308\n").data["a"], 1.7976931348623157e308)


@pytest.mark.parametrize(
    ("text", "path", "where"),
    [
        # libyaml's scanner (the fast one) marks these empty values otherwise
        ("c: {a, b: }\n", ("c", "b"), Location(2, 10, 2, 8, "", empty=True)),
        ("c:\n  ?\n", ("c", ""), Location(4, 1, 3, 4, "", empty=True)),
        ("jobs:\n  train:\n    entrypoint:\n", ("jobs", "train", "entrypoint"), None),
    ],
)
def test_positions_are_the_python_scanners_whichever_read_the_values(text, path, where):
    doc = load("m: [" + ", ".join(map(str, range(2000))) + "]\n" + text)
    assert doc.value(("m", 1999)) == 1999
    assert doc.locations[path] == (where or Location(4, 16, 4, 5, "", empty=True))
    # An empty value is pointed at by its key.
    assert doc.position(path) == (doc.locations[path].key_line, doc.locations[path].key_column)


def test_a_manifest_error_names_the_line_of_an_empty_value(tmp_path):
    from kaio_spec import ManifestError, load_manifest

    (tmp_path / "train.py").write_text("pass\n")
    file = tmp_path / "kaio.yaml"
    values = ", ".join(map(str, range(5000)))
    file.write_text(
        f"version: 1\nname: big\njobs:\n  train:\n    matrix: {{i: [{values}]}}\n    entrypoint:\n"
    )
    with pytest.raises(ManifestError) as caught:
        load_manifest(file)
    assert [(d.line, d.column) for d in caught.value.errors] == [(6, 5)], caught.value
