"""Jinja2 templates in a sandbox: what a manifest's strings may compute, and how results are typed.

Two sandboxed, immutable environments (jinja2.sandbox: no private attributes, no mutating the
context, ranges capped) with undefined names as errors:

- *text*: renders to a string, as Jinja always does. Used for fields that are strings by nature
  (name, directory, entrypoint, instance_type, framework, framework_version, env values, outputs):
  `LR: "{{ matrix.lr }}"` gives the string "0.1" an environment variable needs.
- *native*: a template that is one expression and nothing else (`"{{ matrix.n }}"`) keeps the type
  of what it computes (an int for instance_count, a list for a param); anything with text around it
  is a string. Unlike jinja2.nativetypes, nothing is re-parsed: a string stays a string even when
  it looks like a number, so "007" from the matrix stays "007".

The context wraps mappings in `Namespace` (attribute access reaches the data first, so a matrix key
named `values` or `items` works; undefined names get a message naming what exists) and floats in
`WrittenFloat` (a float that prints as the user wrote it: `lr{{ matrix.lr }}` gives `lr0.00001`,
not `lr1e-05`).
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Mapping
from itertools import islice
from typing import Any

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError
from jinja2.lexer import Token, TokenStream
from jinja2.nativetypes import NativeCodeGenerator
from jinja2.parser import Parser
from jinja2.runtime import Context, Undefined, missing
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from kaio_spec.schema import suggest

__all__ = [
    "CONTEXT_NAMES",
    "Namespace",
    "RenderError",
    "Template",
    "WrittenFloat",
    "compile_template",
    "make_context",
    "plain",
]

CONTEXT_NAMES = ("matrix", "vars", "manifest", "job")
MAX_REPEAT = 100_000  # the longest string or list `*` may build in a template
MAX_EXPONENT = 10_000


class RenderError(Exception):
    """A template failed to compile or render; the message says why, in the user's terms.
    `offset`: for a syntax error, where in the template's source the parser stopped."""

    def __init__(self, message: str, offset: int | None = None):
        super().__init__(message)
        self.offset = offset


class WrittenFloat(float):
    """A float that prints as written in the manifest (`0.00001`); arithmetic gives plain floats."""

    __slots__ = ("text",)
    text: str

    def __new__(cls, value: float, text: str) -> WrittenFloat:
        self = super().__new__(cls, value)
        self.text = text
        return self

    def __str__(self) -> str:
        return self.text

    def __format__(self, spec: str) -> str:
        return self.text if not spec else float.__format__(self, spec)


class Namespace:
    """A read-only mapping for templates: `ns.key` and `ns["key"]` reach the data (before any
    method of the same name); `items`, `keys`, `values` and `get` work when no key shadows them."""

    __slots__ = ("_data", "_label")
    _METHODS = frozenset({"items", "keys", "values", "get"})

    def __init__(self, label: str, data: Mapping[str, Any]):
        self._label = label
        self._data = data

    def __getattr__(self, name: str) -> Any:
        data = object.__getattribute__(self, "_data")
        if name in data:
            return data[name]
        if name in Namespace._METHODS:
            return getattr(data, name)
        raise AttributeError(name)

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return repr(self._data)

    def __str__(self) -> str:
        return str(plain(self))


def plain(value: Any) -> Any:
    """Namespaces made dicts again, inside lists and dicts too; anything else as it is."""
    if isinstance(value, Namespace):
        return {k: plain(v) for k, v in object.__getattribute__(value, "_data").items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


class _Undefined(StrictUndefined):
    """StrictUndefined whose message names what does exist, and the likely typo."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        if self._undefined_hint:
            return self._undefined_hint
        name, obj = self._undefined_name, self._undefined_obj
        if obj is missing:
            names = _all_of(list(CONTEXT_NAMES))
            close = suggest(str(name), list(CONTEXT_NAMES))
            hint = f"; did you mean {close!r}?" if close else ""
            return f"{name!r} is undefined (templates can use {names}){hint}"
        if isinstance(obj, Namespace):
            keys = list(obj)
            label = object.__getattribute__(obj, "_label")
            if not keys:
                return f"{label} has no {name!r}: it is empty"
            close = suggest(str(name), keys)
            hint = f"did you mean {close!r}?" if close else f"it has {_all_of(keys)}"
            return f"{label} has no {name!r}; {hint}"
        return super()._undefined_message


def _all_of(words: list[str]) -> str:
    shown = [repr(w) for w in words]
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " and " + shown[-1]


def _json_default(value: Any) -> Any:
    if isinstance(value, Namespace):
        return plain(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _repeat_guard(left: Any, right: Any) -> Any:
    for seq, n in ((left, right), (right, left)):
        if isinstance(seq, str | list | tuple) and isinstance(n, int) and len(seq) * n > MAX_REPEAT:
            raise SecurityError(f"the result would be longer than {MAX_REPEAT:,}")
    return operator.mul(left, right)


def _power_guard(left: Any, right: Any) -> Any:
    if isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
        raise SecurityError(f"exponents above {MAX_EXPONENT:,} are not allowed")
    return operator.pow(left, right)


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def __init__(self) -> None:
        super().__init__(undefined=_Undefined, autoescape=False, keep_trailing_newline=True)
        self.policies["json.dumps_kwargs"] = {"sort_keys": False, "default": _json_default}

    # Namespaces hold only our own data: reach it without the sandbox's generic attribute checks,
    # which cost more than the rest of a render (measured in benchmarks/plan.py).
    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is Namespace:
            data = object.__getattribute__(obj, "_data")
            if attribute in data:
                return data[attribute]
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        if type(obj) is Namespace:
            data = object.__getattribute__(obj, "_data")
            if argument in data:
                return data[argument]
        return super().getitem(obj, argument)

    def call_binop(self, context: Any, op: str, left: Any, right: Any) -> Any:
        if op == "*":
            return _repeat_guard(left, right)
        if op == "**":
            return _power_guard(left, right)
        return super().call_binop(context, op, left, right)  # pragma: no cover


def _fail_if_undefined(value: Any) -> Any:
    # Native mode hands values over without str(), which is where StrictUndefined would fail.
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    elif isinstance(value, list | tuple):
        for v in value:
            _fail_if_undefined(v)
    elif isinstance(value, dict):
        for v in value.values():
            _fail_if_undefined(v)
    return value


def _native_concat(values: Any) -> Any:
    head = list(islice(values, 2))
    if not head:
        return ""
    if len(head) == 1:
        return _fail_if_undefined(head[0])
    return "".join(str(v) for v in (*head, *values))


class _NativeCodeGenerator(NativeCodeGenerator):
    # Jinja folds constant output ("{{ none }}", "{{ 1 + 2 }}") into a string and relies on
    # native_concat's literal_eval to get the value back; we never re-parse, so keep a lone
    # constant as itself (its repr is safe: the base class checked has_safe_repr).
    def _output_const_repr(self, group: Any) -> str:
        if len(group) == 1:
            return repr(group[0])
        return super()._output_const_repr(group)


class _NativeSandbox(_Sandbox):
    code_generator_class = _NativeCodeGenerator
    concat = staticmethod(_native_concat)


_TEXT = _Sandbox()
_NATIVE = _NativeSandbox()
_GLOBALS = dict(_TEXT.globals)  # range (the sandbox's capped one), dict, lipsum, cycler, ...


def make_context(**names: Any) -> dict[str, Any]:
    """A render context: Jinja's globals plus `names` (matrix, vars, manifest, job)."""
    context = dict(_GLOBALS)
    context.update(names)
    return context


class Template:
    """One compiled template. `render(context)` gives its value (a str in text mode, the native
    value of a lone expression in native mode) or raises RenderError."""

    __slots__ = ("_compiled", "native", "source")

    def __init__(self, source: str, native: bool):
        self.source = source
        self.native = native
        env = _NATIVE if native else _TEXT
        try:
            self._compiled = env.from_string(source)
        except TemplateSyntaxError as e:
            raise RenderError(_describe(e), _syntax_error_offset(env, source)) from None
        except TemplateError as e:
            raise RenderError(_describe(e)) from None

    def render(self, context: dict[str, Any]) -> Any:
        """Render with `context`, a dict made by make_context() (it holds Jinja's globals, so
        each render skips merging them: that merge cost more than the render itself)."""
        compiled = self._compiled
        try:
            ctx = Context(compiled.environment, context, compiled.name, compiled.blocks)
            value = compiled.environment.concat(compiled.root_render_func(ctx))
            return plain(value) if self.native else value
        except SecurityError as e:
            raise RenderError(f"not allowed in a template: {e}") from None
        except RenderError:  # raised by the context's own objects (planner/needs.py)
            raise
        except TemplateError as e:
            raise RenderError(_describe(e)) from None
        except Exception as e:  # a template's own arithmetic (1/0), a bad filter argument
            raise RenderError(f"{type(e).__name__}: {e}") from None


def _describe(e: TemplateError) -> str:
    kind = type(e).__name__
    if kind == "TemplateSyntaxError":
        return f"template syntax error: {e.message}"
    return str(e.message or e)


def _syntax_error_offset(env: _Sandbox, source: str) -> int:
    """Where in `source` Jinja stopped on a syntax error (its errors give only a line): the
    start of the token the parser refused, or where the lexer stopped. Parses `source` again
    with each token's offset recorded (the lexer yields tokens without them)."""
    lexer = env.lexer
    where = {"start": 0, "end": 0, "lexer_failed": False}
    starts: dict[int, int] = {}
    tokens: list[Token] = []  # kept alive, so that no other token takes one's id

    def raw() -> Iterator[tuple[int, str, str]]:
        try:
            for lineno, kind, value in lexer.tokeniter(source, None):
                found = source.find(value, where["end"]) if value else -1
                where["start"] = found if found >= 0 else where["end"]
                where["end"] = found + len(value) if found >= 0 else where["end"]
                yield lineno, kind, value
        except TemplateSyntaxError:
            where["lexer_failed"] = True  # at where["end"], the first character it refused
            raise

    def located() -> Iterator[Token]:
        for token in lexer.wrap(raw()):
            starts[id(token)] = where["start"]
            tokens.append(token)
            yield token

    parser = Parser(env, source)
    try:
        parser.stream = TokenStream(located(), None, None)
        parser.parse()
    except TemplateSyntaxError:
        if where["lexer_failed"]:
            return where["end"]
        return starts.get(id(parser.stream.current), where["end"])
    return where["end"]  # pragma: no cover (called only for a source that failed to parse)


_CACHE: dict[tuple[str, bool], Template] = {}
_CACHE_MAX = 10_000  # distinct templates kept; a long-lived process planning many manifests


def compile_template(source: str, native: bool) -> Template:
    """The compiled template for `source` (compiled once, whatever the number of jobs that
    render it). Raises RenderError for a syntax error."""
    key = (source, native)
    template = _CACHE.get(key)
    if template is None:
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.clear()
        template = _CACHE[key] = Template(source, native)
    return template
