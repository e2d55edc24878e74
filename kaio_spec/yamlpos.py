"""YAML → plain data that remembers where every value was written.

PyYAML composes the node graph (which keeps start marks); we construct the values ourselves so that
each mapping key, mapping value and list item gets its position, keyed by its path from the root.

Scalars follow YAML 1.2's core schema, which is what users mean: `1e-5` and `.5` are floats (YAML
1.1 reads the first as a string), `yes`/`no`/`on`/`off`/`y`/`n` are strings (YAML 1.1 makes them
booleans), `0123` is 123, and dates stay strings. Only plain data is allowed: explicit tags beyond
the core ones (`!!python/...`, `!!binary`, `!custom`) are refused, so nothing executes on load.

Duplicate keys are errors (PyYAML keeps the last silently). Anchors, aliases and `<<` merge keys
work; a file over MAX_BYTES, or whose aliases expand past MAX_NODES values (an "alias bomb"), is
refused before it can use much memory or time.

Speed: a 10,000-cell sweep's manifest is 10,000 scalars, and PyYAML's Python scanner takes most
of a second over them. libyaml's scanner (PyYAML's CParser) reads the events when PyYAML was built
with it; our composer and builder stay the same. Its marks differ from the Python scanner's for
some values (empty ones), so positions are never taken from them: a document loaded that way is
read again by the Python scanner the first time a position is asked for, which only a message
does. A document libyaml refuses, or that has any error, is loaded by the Python scanner alone.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import BaseResolver
from yaml.scanner import Scanner

from kaio_spec.diagnostics import Diagnostic, Path, in_file_order, show

CParser: type | None
try:  # libyaml's scanner and parser, when PyYAML was built with it
    from yaml._yaml import CParser as _LibYaml

    CParser = _LibYaml
except ImportError:  # pragma: no cover (PyPI's wheels for our platforms have it)
    CParser = None

MAX_BYTES = 1_000_000
MAX_NODES = 100_000
MAX_DEPTH = 64

_CORE = "tag:yaml.org,2002:"
STR, INT, FLOAT, BOOL, NULL = (_CORE + t for t in ("str", "int", "float", "bool", "null"))
MAP, SEQ, MERGE = _CORE + "map", _CORE + "seq", _CORE + "merge"


class _Resolver(BaseResolver):
    """YAML 1.2 core schema resolution (https://yaml.org/spec/1.2.2/#1032-tag-resolution)."""

    yaml_implicit_resolvers: dict = {}  # noqa: RUF012 (PyYAML's class-level registry)


_NULL_RE = re.compile(r"^(?:~|null|Null|NULL|)$")
_BOOL_RE = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_INT_RE = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_FLOAT_RE = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)
_PATTERNS = {NULL: _NULL_RE, BOOL: _BOOL_RE, INT: _INT_RE, FLOAT: _FLOAT_RE}

# Order matters: the first matching resolver wins, so integers are tried before floats.
_Resolver.add_implicit_resolver(NULL, _NULL_RE, [*"~nN", ""])
_Resolver.add_implicit_resolver(BOOL, _BOOL_RE, list("tTfF"))
_Resolver.add_implicit_resolver(INT, _INT_RE, list("-+0123456789"))
_Resolver.add_implicit_resolver(FLOAT, _FLOAT_RE, list("-+.0123456789"))
_Resolver.add_implicit_resolver(MERGE, re.compile(r"^<<$"), ["<"])


class _Composing(Composer):
    def compose_node(self, parent, index):
        # YAML 1.2 lets an anchor be redefined (an alias means the latest); PyYAML refuses.
        event = self.peek_event()
        if not isinstance(event, AliasEvent) and event.anchor is not None:
            self.anchors.pop(event.anchor, None)
        return super().compose_node(parent, index)


class _Composer(Reader, Scanner, Parser, _Composing, _Resolver):
    def __init__(self, stream: str):
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        _Resolver.__init__(self)


if CParser is not None:

    class _FastComposer(_Composing, _LibYaml, _Resolver):
        """libyaml's events, composed by our (Python) composer: the same nodes and values as
        _Composer, only the marks may differ. _Composing comes first so that its compose_node
        (which recurses within Python's recursion limit) is the one used, not CParser's own."""

        def __init__(self, stream: str):
            _LibYaml.__init__(self, stream)
            Composer.__init__(self)
            _Resolver.__init__(self)


@dataclass(frozen=True)
class Location:
    """Where one value was written. `key_*` is set for mapping entries (the key's position)."""

    line: int
    column: int
    key_line: int | None = None
    key_column: int | None = None
    text: str | None = None  # a scalar's source text
    container: bool = False
    empty: bool = False  # written as nothing (`key:` with no value)


@dataclass
class Document:
    """Loaded YAML: `data` (plain dicts, lists, str, int, float, bool, None) and where each value
    is, by path. `file` is the name messages show."""

    file: str
    data: Any
    written: dict[Path, Location] = field(default_factory=dict, repr=False)  # as composed
    # The text, while `written`'s marks are libyaml's (not to be shown): see `locations`.
    unplaced: str | None = field(default=None, repr=False)

    @property
    def locations(self) -> dict[Path, Location]:
        """Each value's location by path, as the Python scanner marks it (read again the first
        time it is asked for, when libyaml loaded the document)."""
        if self.unplaced is not None:
            text, self.unplaced = self.unplaced, None
            # libyaml reads a few texts PyYAML refuses (a tab after `|`): its marks are then the
            # best there are
            with contextlib.suppress(LoadError):
                self.written = _load_text(text, self.file, Parser).written
        return self.written

    def location(self, path: Path) -> Location | None:
        """The location of `path`, or of its nearest written ancestor."""
        path = tuple(path)
        while path not in self.locations and path:
            path = path[:-1]
        return self.locations.get(path)

    def position(self, path: Path, *, key: bool = False) -> tuple[int, int] | None:
        """Where to point for an error at `path`: its key when `key` (an unknown or misspelt
        key), else its value, except that a mapping, list or empty value is pointed at by its key
        (a block mapping's own start is its first child's line, which would mislead)."""
        path = tuple(path)
        loc = self.locations.get(path)
        if loc is None:
            loc = self.location(path)
            return (loc.line, loc.column) if loc else None
        use_key = key or loc.container or loc.empty
        if use_key and loc.key_line is not None:
            return (loc.key_line, loc.key_column or 0)
        return (loc.line, loc.column)

    def source_text(self, path: Path) -> str | None:
        """A scalar as written in the file (`0.00001`, not `1e-05`), or None."""
        loc = self.written.get(tuple(path))  # the text is the same whichever scanner read it
        return loc.text if loc else None

    def value(self, path: Path, default: Any = None) -> Any:
        node = self.data
        for part in path:
            try:
                node = node[part]
            except (KeyError, IndexError, TypeError):
                return default
        return node

    def show(self, path: Path, value: Any = ...) -> str:
        """The value at `path` as a message shows it, using its source text for numbers."""
        if value is ...:
            value = self.value(path)
        return show(value, self.source_text(path))

    def diagnostic(self, path: Path, message: str, *, key: bool = False) -> Diagnostic:
        """A Diagnostic for `message` about the value at `path` (or its key, with `key=True`)."""
        path = tuple(path)
        pos = self.position(path, key=key) or (1, 1)
        return Diagnostic(self.file, pos[0], pos[1], path, message)


class LoadError(Exception):
    """The text is not a loadable document; `diagnostics` say where and why."""

    def __init__(self, diagnostics: list[Diagnostic]):
        self.diagnostics = in_file_order(diagnostics)
        super().__init__("\n".join(str(d) for d in self.diagnostics))


def load_text(text: str, file: str) -> Document:
    """Compose and construct one YAML document, raising LoadError with every error found.

    An empty document (nothing but comments) loads as `data=None`."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise LoadError([_at(file, 1, 1, f"the file is larger than {MAX_BYTES:,} bytes")])
    if CParser is not None:
        try:
            doc = _load_text(text, file, CParser)
        except Exception:  # whatever it is, the Python scanner says it below, positioned
            pass
        else:
            doc.unplaced = text
            return doc
    return _load_text(text, file, Parser)


def _load_text(text: str, file: str, parser: type) -> Document:
    """load_text with the Python scanner (`parser` Parser) or libyaml's (CParser), whose errors
    are not positioned here: load_text reads the text again with the Python one."""
    composer = _Composer if parser is Parser else _FastComposer
    try:
        node = composer(text).get_single_node()
    except yaml.MarkedYAMLError as e:
        if parser is not Parser:
            raise
        raise LoadError([_syntax_error(file, e)]) from None
    except yaml.reader.ReaderError as e:
        line, col = _line_col(text, e.position)
        char = f"U+{e.character:04X}" if isinstance(e.character, int) else repr(e.character)
        message = f"invalid YAML: the character {char} is not allowed"
        raise LoadError([_at(file, line, col, message)]) from None
    except yaml.YAMLError as e:
        if parser is not Parser:
            raise
        raise LoadError([_at(file, 1, 1, f"invalid YAML: {e}")]) from None  # pragma: no cover
    except RecursionError:
        raise LoadError([_at(file, 1, 1, "the document is nested too deeply")]) from None
    doc = Document(file, None)
    if node is None:
        return doc
    builder = _Builder(doc)
    try:
        doc.data = builder.build(node, (), None)
    except _TooBig as e:
        raise LoadError([doc.diagnostic(e.path, e.message)]) from None
    if builder.errors:
        raise LoadError(builder.errors)
    return doc


def _at(file: str, line: int, column: int, message: str, path: Path = ()) -> Diagnostic:
    return Diagnostic(file, line, column, path, message)


def _line_col(text: str, index: int) -> tuple[int, int]:
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def _syntax_error(file: str, e: yaml.MarkedYAMLError) -> Diagnostic:
    mark = e.problem_mark or e.context_mark
    m = e.context_mark
    at = f" at line {m.line + 1}, column {m.column + 1}" if m is not None else ""
    if e.context and e.problem and e.problem.startswith("but "):
        # ComposerError reads "expected a single document..., but found another document".
        message = f"invalid YAML: {e.context}, {e.problem} (the first starts{at})"
    elif e.context and e.problem:
        message = f"invalid YAML: {e.problem} ({e.context}{at})"
    else:
        message = f"invalid YAML: {e.problem or e.context}"
    if "<block end>" in message:
        message += "; check the indentation"
    if "'\\t'" in message:
        message += "; indent with spaces, not tabs"
    if mark is None:  # PyYAML marks its errors; should one come without, point at the start
        return _at(file, 1, 1, message)
    return _at(file, mark.line + 1, mark.column + 1, message)


class _TooBig(Exception):
    def __init__(self, path: Path, message: str):
        # Point at the top-level entry that holds it: the full path of the value that crossed
        # the limit is long and arbitrary.
        head: list = []
        for part in path[:2]:
            if not isinstance(part, str):
                break
            head.append(part)
        self.path = tuple(head)
        self.message = message


def _mark(node: Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _tag_name(tag: str) -> str:
    return "!!" + tag[len(_CORE) :] if tag.startswith(_CORE) else tag


class _Builder:
    """Walks the node graph into plain values, recording locations and collecting errors.

    Aliases make the graph a DAG (or, with a self-referencing anchor, a cycle), so values are
    counted as they are expanded: MAX_NODES bounds the work however the aliases nest."""

    def __init__(self, doc: Document):
        self.doc = doc
        self.errors: list[Diagnostic] = []
        self.count = 0
        self.stack: set[int] = set()

    def error(self, node: Node, message: str, path: Path) -> None:
        line, col = _mark(node)
        self.errors.append(_at(self.doc.file, line, col, message, path))

    def build(self, node: Node, path: Path, key_node: Node | None) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise _TooBig(
                path,
                f"the document expands to more than {MAX_NODES:,} values "
                "(aliases nested too many times?)",
            )
        if len(path) > MAX_DEPTH:
            raise _TooBig(path, f"nested more than {MAX_DEPTH} levels deep")
        if id(node) in self.stack:
            self.error(
                key_node or node, "an alias refers to a value that contains it (a cycle)", path
            )
            return None
        line, col = _mark(node)
        kline, kcol = _mark(key_node) if key_node is not None else (None, None)
        if isinstance(node, ScalarNode):
            value = self.scalar(node, path)
            empty = node.value == "" and node.style is None
            self.doc.written[path] = Location(line, col, kline, kcol, node.value, False, empty)
            return value
        self.doc.written[path] = Location(line, col, kline, kcol, None, True)
        self.stack.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                if node.tag != SEQ:
                    self.error(node, _tag_error(node.tag, "a list"), path)
                return [self.build(item, (*path, i), None) for i, item in enumerate(node.value)]
            if node.tag != MAP:
                self.error(node, _tag_error(node.tag, "a mapping"), path)
            assert isinstance(node, MappingNode)  # the composer makes no other kind of node
            return self.mapping(node, path)
        finally:
            self.stack.discard(id(node))

    def mapping(self, node: MappingNode, path: Path) -> dict:
        out: dict[str, Any] = {}
        first_seen: dict[str, Node] = {}
        merged: list[tuple[str, Node, Node]] = []
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode) and key_node.tag == MERGE:
                merged.extend(self.merge_sources(value_node, path))
                continue
            key = self.key(key_node, path)
            if key is None:
                continue
            if key in first_seen:
                fl, fc = _mark(first_seen[key])
                self.error(
                    key_node,
                    f"duplicate key {key!r} (first at line {fl}, column {fc})",
                    (*path, key),
                )
                continue
            first_seen[key] = key_node
            out[key] = (key_node, value_node)
        # `<<` merges: explicit keys win; among merged mappings, the first listed wins. Merged
        # keys come first in order, as PyYAML orders them.
        result: dict[str, Any] = {}
        for key, key_node, value_node in merged:
            if key not in result and key not in out:
                result[key] = self.build(value_node, (*path, key), key_node)
        for key, (key_node, value_node) in out.items():
            result[key] = self.build(value_node, (*path, key), key_node)
        return result

    def merge_sources(self, value_node: Node, path: Path) -> Iterator[tuple[str, Node, Node]]:
        sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
        for source in sources:
            if not isinstance(source, MappingNode):
                self.error(source, "'<<' merges a mapping or a list of mappings", path)
                continue
            for key_node, sub_value in source.value:
                if isinstance(key_node, ScalarNode) and key_node.tag == MERGE:
                    yield from self.merge_sources(sub_value, path)
                    continue
                key = self.key(key_node, path)
                if key is not None:
                    yield key, key_node, sub_value

    def key(self, key_node: Node, path: Path) -> str | None:
        if not isinstance(key_node, ScalarNode):
            kind = "mapping" if isinstance(key_node, MappingNode) else "list"
            self.error(key_node, f"a key must be a plain value, not a {kind}", path)
            return None
        if key_node.tag not in (STR, INT, FLOAT, BOOL, NULL):
            self.error(key_node, _tag_error(key_node.tag, "a key"), path)
            return None
        # Keys are names: `10:` is the key "10" and `true:` the key "true", as written.
        return key_node.value

    def scalar(self, node: ScalarNode, path: Path) -> Any:
        tag, text = node.tag, node.value
        try:
            if tag == STR:
                return text
            if tag == NULL and _matches(NULL, text):
                return None
            if tag == BOOL and _matches(BOOL, text):
                return text.lower() == "true"
            if tag == INT and _matches(INT, text):
                return _to_int(text)
            if tag == FLOAT and (_matches(FLOAT, text) or _matches(INT, text)):
                value = _to_float(text)
                if not math.isfinite(value):
                    self.error(node, f"{text!r} is not a finite number", path)
                return value
        except ValueError:  # pragma: no cover (the patterns only let valid numbers through)
            pass
        if tag in (NULL, BOOL, INT, FLOAT):
            self.error(node, f"{show(text)} is not a valid {_tag_name(tag)}", path)
            return text
        self.error(node, _tag_error(tag, "a plain value"), path)
        return text


def _tag_error(tag: str, where: str) -> str:
    if tag in (STR, INT, FLOAT, BOOL, NULL, MAP, SEQ):
        return f"tag {_tag_name(tag)} does not fit {where}"
    if tag.startswith(_CORE + "python/"):
        why = "manifests are loaded as plain data only (safe loading)"
    else:
        why = "manifests hold plain values: strings, numbers, true/false, lists and mappings"
    return f"tag {_tag_name(tag)} is not allowed: {why}"


def _matches(tag: str, text: str) -> bool:
    return bool(_PATTERNS[tag].match(text))


def _to_int(text: str) -> int:
    if text.startswith("0o"):
        return int(text[2:], 8)
    if text.startswith("0x"):
        return int(text[2:], 16)
    return int(text, 10)


def _to_float(text: str) -> float:
    lowered = text.lower()
    if lowered.endswith(".inf"):
        return -math.inf if lowered.startswith("-") else math.inf
    if lowered == ".nan":
        return math.nan
    return float(text)
