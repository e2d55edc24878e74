"""`kaio.yaml` → a validated, typed `Manifest`, or a `ManifestError` listing every problem with its
file, line and column.

Three passes, each reporting all it finds: YAML loading with positions (yamlpos.py), the JSON Schema
(schema.py: types, bounds, names, unknown keys), then the checks a schema cannot express (this
module: matrix exclude keys, sweep parameter shapes, folders and entrypoints on disk). Values stay
as written: templates are left for the planner, which renders them and calls
`Manifest.check_rendered` so that errors in rendered values point at the template's line.
"""

from __future__ import annotations

import difflib
import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

from kaio_spec import catalog
from kaio_spec.diagnostics import (
    Diagnostic,
    Path,
    format_path,
    in_file_order,
    one_of_words,
    show,
)
from kaio_spec.errors import ManifestError
from kaio_spec.schema import (
    Problem,
    is_template,
    problems,
    rendered_job_validator,
    suggest,
    validator,
)
from kaio_spec.stages import find_cycle
from kaio_spec.validation import FieldError, check_env
from kaio_spec.yamlpos import MAX_BYTES, Document, LoadError, load_text

__all__ = [
    "JOB_DEFAULTS",
    "JobDef",
    "Manifest",
    "Matrix",
    "Metric",
    "Settings",
    "Sweep",
    "SweepParameter",
    "infer_distribution",
    "load_manifest",
    "validate_file",
]

# A job's fields when neither the job nor `defaults` sets them: the seed client's defaults.
# framework, framework_version and max_runtime_hours have none (detected or left to the
# platform); env and params are absent unless given (the planner adds the cell to params).
JOB_DEFAULTS: Mapping[str, Any] = {
    "directory": ".",
    "entrypoint": "train.py",
    "instance_type": catalog.DEFAULT_INSTANCE_TYPE,
    "instance_count": 1,
    "volume_size_gb": 5,
    "retries": 0,
}
MERGED_FIELDS = ("env", "params", "inputs")  # merged key by key between defaults and a job
IDENTITY_FIELDS = ("name", "needs", "matrix", "sweep")  # a job's own, never from defaults
NOT_SPEC_FIELDS = ("metric",)  # how results are ranked: neither in the spec nor in the identity

_BOUNDS = frozenset({"min", "max"})
_NORMAL = frozenset({"mu", "sigma"})
_BETA = frozenset({"a", "b"})
_Q = frozenset({"q"})
DISTRIBUTIONS: Mapping[str, tuple[frozenset[str], frozenset[str]]] = {
    # distribution: (required keys, optional keys), W&B's parameter forms (its sweeps engine's
    # names and defaults); an optional key left out takes its value in PARAMETER_DEFAULTS.
    "constant": (frozenset({"value"}), frozenset()),
    "categorical": (frozenset({"values"}), frozenset({"probabilities"})),
    "int_uniform": (_BOUNDS, frozenset()),
    "uniform": (_BOUNDS, frozenset()),
    "q_uniform": (_BOUNDS, _Q),
    "log_uniform_values": (_BOUNDS, frozenset()),
    "q_log_uniform_values": (_BOUNDS, _Q),
    "inv_log_uniform_values": (_BOUNDS, frozenset()),
    # W&B's older forms: min and max are natural-log exponents, not values.
    "log_uniform": (_BOUNDS, frozenset()),
    "q_log_uniform": (_BOUNDS, _Q),
    "inv_log_uniform": (_BOUNDS, frozenset()),
    "normal": (frozenset(), _NORMAL),
    "q_normal": (frozenset(), _NORMAL | _Q),
    "log_normal": (frozenset(), _NORMAL),
    "q_log_normal": (frozenset(), _NORMAL | _Q),
    "beta": (frozenset(), _BETA),
    "q_beta": (frozenset(), _BETA | _Q),
}
# W&B's defaults; q is the float 1.0 there (so a q_ form without q draws floats such as 32.0).
PARAMETER_DEFAULTS: Mapping[str, float] = {"q": 1.0, "mu": 0.0, "sigma": 1.0, "a": 1.0, "b": 1.0}
# Forms whose min and max are values whose logarithms are drawn (so both must be above 0).
LOG_OF_VALUES = ("log_uniform_values", "q_log_uniform_values", "inv_log_uniform_values")
_PARAMETER_KEYS = ("values", "probabilities", "value", "min", "max", "mu", "sigma", "a", "b", "q")


# ---- the typed manifest -------------------------------------------------------------------
# Frozen dataclasses; container fields hold the values as loaded (plain dicts and lists, JSON-
# ready, in the order written). Treat them as read-only.


@dataclass(frozen=True)
class Settings:
    max_parallel: int = 4
    fail_fast: bool = False
    max_jobs: int = 1000
    outputs: str = "outputs/{{ manifest.name }}/{{ job.name }}"
    poll_seconds: float = 10
    retry_delay_seconds: float = 10  # a retry's first wait; doubled each time (executor/run.py)
    retry_on: str = "any"  # "any" failure, or only the "platform"'s (executor/observe.py)


@dataclass(frozen=True)
class Matrix:
    """`dimensions`: key → its list of values, in the order written (first key varies slowest)."""

    dimensions: dict[str, list[Any]]
    include: list[dict[str, Any]]
    exclude: list[dict[str, Any]]


@dataclass(frozen=True)
class SweepParameter:
    """One sweep parameter; `distribution` is always set (inferred as W&B does when omitted).
    Only the fields its distribution uses are meaningful (`value` for constant, and so on); one
    left out is None, and its draws use W&B's default for it (PARAMETER_DEFAULTS)."""

    name: str
    distribution: str
    values: list[Any] | None = None
    probabilities: list[float] | None = None
    value: Any = None
    min: float | None = None
    max: float | None = None
    mu: float | None = None
    sigma: float | None = None
    a: float | None = None
    b: float | None = None
    q: float | None = None


@dataclass(frozen=True)
class Metric:
    """The metric that ranks a job's cells (`metric:` of a job, its sweep or `defaults`): a key
    of the metrics.json the job writes, and whether higher ("maximize") or lower is better."""

    name: str
    goal: str = "minimize"  # W&B's default

    @property
    def maximize(self) -> bool:
        return self.goal == "maximize"


@dataclass(frozen=True)
class Sweep:
    method: str  # "random" or "grid"
    count: int | None  # draws for random; None for grid
    seed: int
    parameters: dict[str, SweepParameter]  # in declared order
    metric: Metric | None = None


@dataclass(frozen=True)
class JobDef:
    """One entry of `jobs`, unrendered.

    `fields` are the job's own spec fields as written; `spec` merges JOB_DEFAULTS, the manifest's
    `defaults` and `fields` (a job's own fields win; env and params merge key by key). `name` is
    the display-name template (None: the planner's default). `source_path` says where in the
    document any spec value was written, for errors about what it rendered to."""

    key: str
    index: int
    name: str | None
    fields: dict[str, Any]
    spec: dict[str, Any]
    matrix: Matrix | None
    sweep: Sweep | None
    needs: tuple[str, ...] = ()  # keys of the jobs this one runs after (`needs:`)
    origins: dict[Path, Path] = field(repr=False, compare=False, default_factory=dict)
    # env variable -> the name of the secret that sets it (`{secret: NAME}` in env, or the
    # top-level `secrets`); their values are read when the job is submitted, never planned.
    secrets: dict[str, str] = field(default_factory=dict)
    metric: Metric | None = None  # the job's, else its sweep's, else defaults'

    @property
    def path(self) -> Path:
        return ("jobs", self.key)

    def source_path(self, *subpath: str | int) -> Path | None:
        """The document path of `spec[subpath...]` (`("defaults", "env", "LR")` when the job
        inherits it), or None for a built-in default or a value no one wrote."""
        for n in range(len(subpath), 0, -1):
            origin = self.origins.get(tuple(subpath[:n]))
            if origin is not None:
                return (*origin, *subpath[n:])
        return None


@dataclass(frozen=True)
class Manifest:
    """A validated manifest. `file` is the path as given (messages show it); `path` is absolute.
    `document` holds the loaded YAML with every value's position."""

    file: str
    path: FsPath
    version: int
    name: str
    vars: dict[str, Any]
    defaults: dict[str, Any]
    settings: Settings
    jobs: dict[str, JobDef]
    document: Document = field(repr=False, compare=False)
    secrets: list[str] = field(default_factory=list)  # exported to every job

    @property
    def folder(self) -> FsPath:
        """The folder that relative paths in the manifest start from."""
        return self.path.parent

    def resolve(self, relative: str) -> FsPath:
        """A (rendered) directory or outputs path, made absolute against the manifest's folder."""
        return (self.folder / relative).resolve()

    def diagnostic(self, path: Path, message: str, *, key: bool = False) -> Diagnostic:
        """A positioned error about the value at `path` (its key with `key=True`)."""
        return self.document.diagnostic(path, message, key=key)

    def source_text(self, path: Path) -> str | None:
        """A scalar as the user wrote it (`0.00001`, where Python prints `1e-05`)."""
        return self.document.source_text(path)

    def check_rendered(
        self, job_key: str, rendered: Mapping[str, Any], context: str = ""
    ) -> list[Diagnostic]:
        """Errors in one job's fields after its templates were rendered (`rendered` has the keys
        of `JobDef.spec`, plus `name`), each pointing at where the template was written. The
        message says what the template was and, when given, `context` (e.g. "for lr=0.1")."""
        job = self.jobs[job_key]
        found = problems(rendered_job_validator(), dict(rendered))
        found += _rendered_file_problems(self, rendered)
        out = []
        for p in found:
            doc_path = job.source_path(*p.path)
            message = p.message
            if doc_path is None:  # a value no one wrote (the planner's or a built-in default)
                doc_path = job.path
                message = f"{format_path(p.path)}: {message}" if p.path else message
            written = self.document.value(doc_path)
            if is_template(written):
                message += f" (rendered from {show(written)}{' ' + context if context else ''})"
            elif context:
                message += f" ({context})"
            use_key = p.key or doc_path == job.path
            out.append(self.document.diagnostic(doc_path, message, key=use_key))
        return in_file_order(out)


# ---- loading ------------------------------------------------------------------------------


def load_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read, validate and type one manifest. Raises ManifestError whose `errors` list every
    Diagnostic in file order; never anything else for a bad or unreadable file."""
    file = os.fspath(path)
    doc = _load_document(file)
    folder = FsPath(os.path.abspath(file)).parent
    found = problems(validator(), doc.data, describe=doc.show)
    found += _semantic_problems(doc.data, folder)
    if found:
        raise ManifestError(
            in_file_order(doc.diagnostic(p.path, p.message, key=p.key) for p in found)
        )
    return _build(doc, file)


def validate_file(path: str | os.PathLike[str]) -> list[Diagnostic]:
    """The errors of one manifest file; empty when it is valid."""
    try:
        load_manifest(path)
    except ManifestError as e:
        return e.errors
    return []


def _fail(file: str, message: str, line: int | None = None, column: int | None = None):
    return ManifestError([Diagnostic(file, line, column, (), message)])


def _load_document(file: str) -> Document:
    try:
        size = os.stat(file).st_size
        if os.path.isdir(file):
            raise _fail(file, "is a folder, not a manifest file")
        if size > MAX_BYTES:
            raise _fail(file, f"the file is {size:,} bytes; manifests are limited to {MAX_BYTES:,}")
        with open(file, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise _fail(file, "no such file") from None
    except OSError as e:
        raise _fail(file, f"cannot read the file: {e.strerror or e}") from None
    if len(raw) > MAX_BYTES:  # it grew after stat
        raise _fail(file, f"the file is larger than {MAX_BYTES:,} bytes")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise _fail(
            file, f"the file is not UTF-8 text (byte 0x{raw[e.start]:02x})", line, column
        ) from None
    try:
        doc = load_text(text, file)
    except LoadError as e:
        raise ManifestError(e.diagnostics) from None
    if doc.data is None:
        raise _fail(file, "the file is empty; a manifest needs version, name and jobs", 1, 1)
    return doc


# ---- checks beyond the schema ---------------------------------------------------------------


def _semantic_problems(data: Any, folder: FsPath) -> list[Problem]:
    """Defensive: the schema has already reported wrong types, so skip anything malformed."""
    if not isinstance(data, dict):
        return []
    out: list[Problem] = []
    defaults = data.get("defaults")
    defaults = defaults if isinstance(defaults, dict) else {}
    out += _directory_problems(defaults.get("directory"), ("defaults", "directory"), folder)
    jobs = data.get("jobs")
    jobs = jobs if isinstance(jobs, dict) else {}
    out += _secrets_problems(data.get("secrets"), defaults, jobs)
    out += _needs_problems(jobs)
    for key, job in jobs.items():
        if not isinstance(job, dict):
            continue
        path = ("jobs", key)
        out += _directory_problems(job.get("directory"), (*path, "directory"), folder)
        out += _entrypoint_problems(key, job, defaults, folder)
        dims: list[str] = []
        if isinstance(job.get("matrix"), dict):
            dims = _matrix_dimensions(job["matrix"])
            out += _matrix_problems(job["matrix"], (*path, "matrix"))
        if isinstance(job.get("sweep"), dict):
            out += _sweep_problems(job["sweep"], (*path, "sweep"), dims)
    return out


def _secrets_problems(exported: Any, defaults: dict, jobs: dict) -> list[Problem]:
    """A variable both exported by the top-level `secrets` and set in an env: say which wins."""
    if not isinstance(exported, list):
        return []
    places = [(("defaults",), defaults)] + [(("jobs", k), j) for k, j in jobs.items()]
    out = []
    for path, fields in places:
        env = fields.get("env") if isinstance(fields, dict) else None
        for name in env if isinstance(env, dict) else ():
            if name in exported:
                message = (
                    f"{name!r} is also in the top-level secrets, which set it for every job; "
                    "keep one of the two"
                )
                out.append(Problem((*path, "env", name), message, key=True))
    return out


def needed_keys(job: Any) -> list[str]:
    """The keys a job's `needs` names, as written (a key or a list of keys; [] for none)."""
    needs = job.get("needs") if isinstance(job, dict) else None
    if isinstance(needs, str):
        return [needs]
    return [n for n in needs if isinstance(n, str)] if isinstance(needs, list) else []


def _needs_problems(jobs: dict) -> list[Problem]:
    """Needs that name no job of the manifest, or that go round in a cycle."""
    out = []
    graph: dict[str, list[str]] = {}
    for key, job in jobs.items():
        graph[key] = needed_keys(job)
        for i, need in enumerate(graph[key]):
            if need in jobs and need != key:
                continue
            if need == key:
                message = "a job cannot need itself"
            else:
                close = suggest(need, list(jobs))
                hint = f"did you mean {close!r}?" if close else f"it has {one_of_words(list(jobs))}"
                message = f"{need!r} is not a job of this manifest; {hint}"
            out.append(Problem(_need_path(job, key, i), message))
    graph = {k: [n for n in v if n in jobs and n != k] for k, v in graph.items()}
    cycle = find_cycle(graph)
    if cycle:
        first, second = cycle[0], cycle[1]
        where = _need_path(jobs[first], first, needed_keys(jobs[first]).index(second))
        message = (
            f"these needs go round in a cycle: {' → '.join(cycle)}; a job can only need jobs "
            "that can run before it"
        )
        out.append(Problem(where, message))
    return out


def _need_path(job: dict, key: str, i: int) -> Path:
    path: Path = ("jobs", key, "needs")
    return (*path, i) if isinstance(job.get("needs"), list) else path


def _is(kind: str, where: FsPath) -> bool:
    # A NUL byte or an over-long name raises rather than answering False: either way, not there.
    try:
        return (
            where.is_dir()
            if kind == "dir"
            else where.is_file()
            if kind == "file"
            else where.exists()
        )
    except (OSError, ValueError):
        return False


def _directory_problems(value: Any, path: Path, folder: FsPath) -> list[Problem]:
    if not isinstance(value, str) or not value or is_template(value):
        return []
    where = folder / value
    if _is("dir", where):
        return []
    if _is("any", where):
        return [Problem(path, f"{show(value)} is a file; directory must be a folder")]
    return [
        Problem(
            path, f"{show(value)} is not an existing folder (relative to the manifest's folder)"
        )
    ]


def _effective(job: dict, defaults: dict, name: str) -> tuple[Any, Path | None]:
    if name in job:
        return job[name], None
    if name in defaults:
        return defaults[name], ("defaults", name)
    return JOB_DEFAULTS[name], ()


def _entrypoint_problems(key: str, job: dict, defaults: dict, folder: FsPath) -> list[Problem]:
    directory, _ = _effective(job, defaults, "directory")
    entry, origin = _effective(job, defaults, "entrypoint")
    if not isinstance(directory, str) or not isinstance(entry, str):
        return []
    if is_template(directory) or is_template(entry) or not _plain_file_name(entry):
        return []
    where = folder / directory
    if not _is("dir", where) or _is("file", where / entry):
        return []
    return [_missing_entrypoint(key, entry, directory, where, origin)]


def _plain_file_name(name: str) -> bool:
    return "/" not in name and "\\" not in name and name.endswith(catalog.ENTRYPOINT_SUFFIXES)


def _missing_entrypoint(
    key: str, entry: str, directory: str, where: FsPath, origin: Path | None
) -> Problem:
    try:
        names = [p.name for p in where.iterdir() if _is("file", p)]
    except OSError:
        names = []
    candidates = sorted(n for n in names if n.endswith(catalog.ENTRYPOINT_SUFFIXES))
    close = difflib.get_close_matches(entry, candidates, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    if origin == ():  # the built-in default
        message = f"no entrypoint given, and the default {show(entry)} is not in folder {show(directory)}{hint}"
        return Problem(("jobs", key), message, key=True)
    if origin is None:
        return Problem(
            ("jobs", key, "entrypoint"), f"{show(entry)} is not in folder {show(directory)}{hint}"
        )
    message = f"{show(entry)} is not in folder {show(directory)} (for job {key!r}){hint}"
    return Problem(origin, message)


def _matrix_dimensions(matrix: dict) -> list[str]:
    return [k for k in matrix if k not in ("include", "exclude")]


def _matrix_problems(matrix: dict, path: Path) -> list[Problem]:
    out = []
    dims = _matrix_dimensions(matrix)
    excludes = matrix.get("exclude")
    for i, entry in enumerate(excludes if isinstance(excludes, list) else []):
        if not isinstance(entry, dict):
            continue
        for name in entry:
            if name in dims:
                continue
            if dims:
                close = suggest(name, dims)
                hint = f"did you mean {close!r}?" if close else f"it has {one_of_words(dims)}"
                message = f"{name!r} is not a key of the matrix; {hint}"
            else:
                message = f"{name!r} is not a key of the matrix, which has only include entries"
            out.append(Problem((*path, "exclude", i, name), message, key=True))
    includes = matrix.get("include")
    # An empty matrix is the schema's to report; this is one with only include/exclude keys.
    if matrix and not dims and not (isinstance(includes, list) and includes):
        out.append(
            Problem(path, "the matrix has no keys and no include entries, so it makes no jobs")
        )
    return out


def infer_distribution(parameter: Mapping[str, Any]) -> str | None:
    """The distribution a sweep parameter means, inferred as W&B does when it is not given:
    categorical for `values`, constant for `value`, int_uniform when min and max are integers,
    uniform for other min/max. None when nothing says (mu/sigma need an explicit distribution)."""
    if "distribution" in parameter:
        return parameter["distribution"]
    if "value" in parameter:
        return "constant"
    if "values" in parameter:
        return "categorical"
    bounds = [parameter[k] for k in ("min", "max") if k in parameter]
    if bounds:
        ints = all(isinstance(b, int) and not isinstance(b, bool) for b in bounds)
        return "int_uniform" if ints else "uniform"
    return None


def _sweep_problems(sweep: dict, path: Path, matrix_keys: list[str]) -> list[Problem]:
    out = []
    method = sweep.get("method", "random")
    if method == "random" and "count" not in sweep:
        out.append(Problem(path, "missing required key 'count' (how many random draws to make)"))
    if method == "grid" and "count" in sweep:
        out.append(
            Problem(
                (*path, "count"),
                "'count' applies to random sweeps; a grid sweep runs every combination",
                key=True,
            )
        )
    parameters = sweep.get("parameters")
    for name, parameter in (parameters if isinstance(parameters, dict) else {}).items():
        p_path = (*path, "parameters", name)
        if name in matrix_keys:
            out.append(
                Problem(
                    p_path, f"{name!r} is also a matrix key; give each value one name", key=True
                )
            )
        if isinstance(parameter, dict) and parameter:
            out += _parameter_problems(name, parameter, p_path, method)
    return out


def _parameter_problems(name: str, p: dict, path: Path, method: str) -> list[Problem]:
    if any(k not in _PARAMETER_KEYS and k != "distribution" for k in p):
        return []  # an unknown key (the schema has reported it) makes its shape a guess
    dist = infer_distribution(p)
    if dist is None:
        return [
            Problem(
                path,
                "give 'values', 'value', or a distribution with its bounds "
                "(mu and sigma need a distribution such as normal; a and b need beta or q_beta)",
            )
        ]
    if not isinstance(dist, str) or dist not in DISTRIBUTIONS:
        return []  # the schema's enum has reported it
    required, optional = DISTRIBUTIONS[dist]
    out = []
    for k in sorted(required - p.keys()):
        needs = one_of_words([k for k in _PARAMETER_KEYS if k in required]).replace(" or ", " and ")
        out.append(Problem(path, f"missing required key {k!r} (distribution {dist} needs {needs})"))
    for k in p:
        if k in _PARAMETER_KEYS and k not in required and k not in optional:
            out.append(
                Problem((*path, k), f"{k!r} does not apply to distribution {dist}", key=True)
            )
    if method == "grid" and dist not in ("categorical", "constant"):
        out.append(
            Problem(
                path, f"a grid sweep needs 'values' or 'value'; {name!r} has distribution {dist}"
            )
        )
    if method == "grid" and "probabilities" in p:
        out.append(
            Problem((*path, "probabilities"), "probabilities apply to random sweeps", key=True)
        )
    out += _bounds_problems(dist, p, path)
    if dist == "categorical":
        out += _probabilities_problems(p, path)
    return out


def _num(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _bounds_problems(dist: str, p: dict, path: Path) -> list[Problem]:
    if not ({"min", "max"} <= DISTRIBUTIONS[dist][0]) or not (
        _num(p.get("min")) and _num(p.get("max"))
    ):
        return []
    lo, hi = p["min"], p["max"]
    out = []
    if dist == "int_uniform":
        for k in ("min", "max"):
            if not isinstance(p[k], int):
                out.append(
                    Problem((*path, k), f"expected an integer for int_uniform, got {show(p[k])}")
                )
        if hi < lo:
            out.append(Problem((*path, "max"), f"max ({hi}) is less than min ({lo})"))
    elif hi <= lo:
        out.append(Problem((*path, "max"), f"max ({hi}) must be greater than min ({lo})"))
    if dist in LOG_OF_VALUES and lo <= 0:
        out.append(Problem((*path, "min"), f"min ({lo}) must be greater than 0 for {dist}"))
    return out + _exponent_problems(dist, lo, hi, path)


# The largest x with exp(x) a finite float (exp(709.79) overflows).
_MAX_EXPONENT = math.log(sys.float_info.max)


def _exponent_problems(dist: str, lo: float, hi: float, path: Path) -> list[Problem]:
    """W&B's older log forms take min and max as natural-log exponents; a bound written as the
    value itself (max: 1000 meaning 1000) overflows, so say what the form means and what to use."""
    if dist in ("log_uniform", "q_log_uniform") and hi > _MAX_EXPONENT:
        key, value, exponent, meaning = "max", hi, hi, "between exp(min) and exp(max)"
    elif dist == "inv_log_uniform" and -lo > _MAX_EXPONENT:
        key, value, exponent, meaning = "min", lo, -lo, "between exp(-max) and exp(-min)"
    else:
        return []
    message = (
        f"{key} ({value}) is a natural-log exponent: {dist} draws {meaning}, and "
        f"exp({exponent:g}) is too large for a number; to give the bounds as values, "
        f"use {dist}_values"
    )
    return [Problem((*path, key), message)]


def _probabilities_problems(p: dict, path: Path) -> list[Problem]:
    probs, values = p.get("probabilities"), p.get("values")
    if not isinstance(probs, list) or not isinstance(values, list):
        return []
    if len(probs) != len(values):
        return [
            Problem(
                (*path, "probabilities"),
                f"{_count(len(probs), 'probability', 'probabilities')} for "
                f"{_count(len(values), 'value', 'values')}; give one per value",
            )
        ]
    if all(_num(x) for x in probs) and not math.isclose(sum(probs), 1.0, abs_tol=1e-9):
        return [
            Problem((*path, "probabilities"), f"the probabilities sum to {sum(probs):g}, not 1")
        ]
    return []


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _rendered_file_problems(manifest: Manifest, rendered: Mapping[str, Any]) -> list[Problem]:
    """Folder, entrypoint and env checks on rendered values (the schema cannot see files)."""
    out: list[Problem] = []
    directory = rendered.get("directory", JOB_DEFAULTS["directory"])
    entry = rendered.get("entrypoint", JOB_DEFAULTS["entrypoint"])
    if isinstance(directory, str) and directory:
        out += _directory_problems(directory, ("directory",), manifest.folder)
        where = manifest.folder / directory
        usable = isinstance(entry, str) and _plain_file_name(entry) and _is("dir", where)
        if usable and not _is("file", where / entry):
            out.append(
                Problem(("entrypoint",), f"{show(entry)} is not in folder {show(directory)}")
            )
    env = rendered.get("env")
    if isinstance(env, dict) and all(isinstance(v, str) for v in env.values()):
        try:
            check_env(env)
        except FieldError as e:
            out.append(Problem(e.path, e.reason))
    return out


# ---- building the typed manifest --------------------------------------------------------------


def _build(doc: Document, file: str) -> Manifest:
    data = doc.data
    defaults = data.get("defaults", {})
    exported = data.get("secrets", [])
    jobs = {
        key: _job(key, i, job, defaults, exported)
        for i, (key, job) in enumerate(data["jobs"].items())
    }
    return Manifest(
        file=file,
        path=FsPath(os.path.abspath(file)),
        version=data["version"],
        name=data["name"],
        vars=data.get("vars", {}),
        defaults=defaults,
        settings=Settings(**data.get("settings", {})),
        jobs=jobs,
        document=doc,
        secrets=list(exported),
    )


def _job(key: str, index: int, job: dict, defaults: dict, exported: list[str]) -> JobDef:
    own = {k: v for k, v in job.items() if k not in IDENTITY_FIELDS}
    spec: dict[str, Any] = dict(JOB_DEFAULTS)
    origins: dict[Path, Path] = {}
    for source, values in ((("defaults",), defaults), (("jobs", key), own)):
        for name, value in values.items():
            if name in NOT_SPEC_FIELDS:
                continue
            if name in MERGED_FIELDS:
                spec[name] = {**spec.get(name, {}), **value}
                for sub in value:
                    origins[(name, sub)] = (*source, name, sub)
            else:
                spec[name] = value
            origins[(name,)] = (*source, name)
    if "name" in job:
        origins[("name",)] = ("jobs", key, "name")
    secrets = _split_secrets(spec, exported, origins)
    return JobDef(
        key=key,
        index=index,
        name=job.get("name"),
        fields=own,
        spec=spec,
        matrix=_matrix(job["matrix"]) if "matrix" in job else None,
        sweep=_sweep(job["sweep"]) if "sweep" in job else None,
        needs=tuple(needed_keys(job)),
        origins=origins,
        secrets=secrets,
        metric=_metric(job, defaults),
    )


def _metric(job: dict, defaults: dict) -> Metric | None:
    """The job's `metric`, else its sweep's, else defaults'."""
    sweep = job.get("sweep") or {}
    for found in (job.get("metric"), sweep.get("metric"), defaults.get("metric")):
        if isinstance(found, dict) and found.get("name"):
            return Metric(str(found["name"]), str(found.get("goal", "minimize")))
    return None


def _split_secrets(spec: dict, exported: list[str], origins: dict[Path, Path]) -> dict[str, str]:
    """The job's secrets (env variable -> secret name), taken out of spec["env"], which keeps
    the plain values only; the top-level ones are found at ("secrets", i)."""
    env = spec.get("env") or {}
    secrets = {name: value["secret"] for name, value in env.items() if isinstance(value, dict)}
    if secrets:
        spec["env"] = {name: value for name, value in env.items() if name not in secrets}
    for i, name in enumerate(exported):
        secrets.setdefault(name, name)  # one also set in env is refused (_secrets_problems)
        origins.setdefault(("env", name), ("secrets", i))
    return secrets


def _matrix(m: dict) -> Matrix:
    return Matrix(
        dimensions={k: v for k, v in m.items() if k not in ("include", "exclude")},
        include=m.get("include", []),
        exclude=m.get("exclude", []),
    )


def _sweep(s: dict) -> Sweep:
    method = s.get("method", "random")
    parameters = {}
    for name, p in s["parameters"].items():
        fields = {k: p[k] for k in _PARAMETER_KEYS if k in p}
        distribution = infer_distribution(p)
        assert distribution is not None  # checked: a parameter must say or imply its distribution
        parameters[name] = SweepParameter(name=name, distribution=distribution, **fields)
    return Sweep(
        method=method,
        count=s.get("count") if method == "random" else None,
        seed=s.get("seed", 0),
        parameters=parameters,
        metric=_metric({}, {"metric": s["metric"]}) if "metric" in s else None,
    )
