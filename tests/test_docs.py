"""The documentation in docs/ stays true to the code: docs/manifest.md documents every property of
kaio.yaml's JSON Schema, and nothing that is not one (issue 14)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "kaio_spec" / "schemas" / "kaio.schema.json"
MANIFEST_DOC = ROOT / "docs" / "manifest.md"

# A key's path names any job key, parameter or matrix key with `*`: jobs.*.sweep.parameters.*.min
ANY = "*"


def schema_paths(node: dict, root: dict, path: str = "") -> Iterator[str]:
    """Every property the schema allows, as a dotted path, following $ref, anyOf and allOf."""
    while "$ref" in node:
        node = root["$defs"][node["$ref"].removeprefix("#/$defs/")]
    for branch in node.get("anyOf", []) + node.get("allOf", []):
        yield from schema_paths(branch, root, path)
    prefix = f"{path}." if path else ""
    for key, sub in node.get("properties", {}).items():
        yield prefix + key
        yield from schema_paths(sub, root, prefix + key)
    for pattern in node.get("patternProperties", {}):
        yield prefix + pattern.lstrip("^") + ANY
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        yield from schema_paths(extra, root, prefix + ANY)


def documented_paths(text: str) -> set[str]:
    """The keys docs/manifest.md documents: every `code` span of a heading."""
    return {
        span
        for line in text.splitlines()
        if line.startswith("#")
        for span in re.findall(r"`([^`]+)`", line)
    }


def test_every_schema_property_is_documented_and_every_documented_key_exists():
    schema = json.loads(SCHEMA.read_text())
    in_schema = set(schema_paths(schema, schema))
    in_doc = documented_paths(MANIFEST_DOC.read_text())
    missing = sorted(in_schema - in_doc)
    extra = sorted(in_doc - in_schema)
    assert not missing and not extra, (
        "docs/manifest.md and kaio.schema.json disagree:\n"
        + (
            f"  in the schema, no heading in docs/manifest.md: {', '.join(missing)}\n"
            if missing
            else ""
        )
        + (
            f"  a heading in docs/manifest.md, not in the schema: {', '.join(extra)}\n"
            if extra
            else ""
        )
        + "each key is a heading such as ### `jobs.*.retries`, `defaults.retries`"
    )


def test_the_schema_walk_finds_nested_and_referenced_keys():
    """The check sees keys behind $ref and additionalProperties, so it cannot pass vacuously."""
    schema = json.loads(SCHEMA.read_text())
    found = set(schema_paths(schema, schema))
    for path in ("version", "settings.outputs", "defaults.env", "jobs.*.matrix.include", "x-*"):
        assert path in found
    assert "jobs.*.sweep.parameters.*.q" in found


def repository_texts() -> Iterator[Path]:
    for folder in ("kaio_spec", "docs", "benchmarks", "examples"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in (".py", ".md", ".js", ".html", ".yaml", ".toml"):
                yield path
    yield ROOT / "README.md"
    yield ROOT / "pyproject.toml"


def test_nothing_cites_documents_outside_the_repository():
    """Someone who clones the repository can read every document the code points at."""
    outside = re.compile(r"\.\./shared|\bPROTOCOL\.md|\bDESIGN\.md")
    citing = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in repository_texts()
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if outside.search(line)
    ]
    assert citing == [], f"cite docs/protocol.md or docs/architecture.md instead: {citing}"


def test_relative_links_in_the_docs_lead_to_files():
    broken = []
    for doc in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", doc.read_text()):
            if not (doc.parent / target).exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target}")
    assert broken == []


def test_the_whole_manifests_in_the_manifest_reference_are_valid(tmp_path):
    """A reader copies them: each one that is a whole manifest validates and plans."""
    import shutil

    from kaio_spec.manifest import validate_file
    from kaio_spec.planner import plan

    shutil.copytree(ROOT / "examples" / "specs" / "linefit", tmp_path / "linefit")
    blocks = re.findall(r"```yaml\n(.*?)```", MANIFEST_DOC.read_text(), re.S)
    whole = [b for b in blocks if re.search(r"^version: 1$", b, re.M)]
    assert len(whole) >= 2
    for n, text in enumerate(whole):
        path = tmp_path / f"example-{n}.yaml"
        path.write_text(text)
        assert validate_file(str(path)) == [], text
        assert plan(str(path)).jobs
