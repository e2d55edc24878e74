"""From a manifest to the exact list of jobs it means: `plan(path_or_manifest) -> Plan`.

Three passes, so that a mistake costs little:

1. count: expand every job's matrix (matrix.py) and size its sweep, refusing more jobs than
   `settings.max_jobs` before anything else is built;
2. render: draw the sweeps (sweep.py), render every template of every job (templates.py) and
   check what they rendered, collecting every error with its position in the manifest;
3. identify: hash each distinct folder once (packaging.folder_content_hash: nothing is
   compressed), give each job its job_name (identity.py), and refuse two jobs with one name,
   one job_name or one outputs folder.

Errors are raised together as one ManifestError, each pointing at the line that caused it (the
template's line for what a template rendered), each said once however many cells repeat it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kaio_spec import catalog, datasets
from kaio_spec.diagnostics import Diagnostic, in_file_order
from kaio_spec.errors import InvalidInput, ManifestError
from kaio_spec.manifest import JobDef, Manifest, load_manifest
from kaio_spec.planner.identity import identity_digest
from kaio_spec.planner.identity import job_name as make_job_name
from kaio_spec.planner.jobs import SPEC_KEYS, Plan, PlannedJob
from kaio_spec.planner.matrix import Cell, TooManyCells, count_cells, expand_matrix
from kaio_spec.planner.needs import (
    NeededJob,
    NotReady,
    Waiting,
    identity_part,
    needed_jobs,
    needs_namespace,
)
from kaio_spec.planner.sweep import DrawError, cell_seed, grid, grid_size, random_draws
from kaio_spec.planner.templates import (
    Namespace,
    RenderError,
    Template,
    WrittenFloat,
    compile_template,
    make_context,
)
from kaio_spec.planner.values import NotJSON, canonical_json, to_json_value, written
from kaio_spec.schema import is_template
from kaio_spec.stages import stage_of
from kaio_spec.validation import FieldError, check_env
from kaio_spec.yamlpos import Location

__all__ = ["check", "plan"]

# Fields that are strings by nature: a template there renders to text, whatever it computes.
_TEXT_FIELDS = frozenset(
    {"directory", "entrypoint", "instance_type", "framework", "framework_version"}
)
# Spec keys hashed separately (directory relative, env values hashed) or not at all: retries say
# how to run a job, not what it is, so raising them must not resubmit completed jobs.
_NOT_IN_IDENTITY_SPEC = frozenset({"directory", "env", "params", "retries"})
_NAME_MAX_BYTES = 200  # a name is also a folder name under outputs/
_NOT_IN_NAMES = re.compile(r"[\x00-\x1f\x7f/\\]")  # control characters and path separators
_FAILED = object()  # what _render returns after recording an error


def plan(
    source: str | os.PathLike[str] | Manifest,
    *,
    variables: Mapping[str, Any] | None = None,
    never_packaged: Iterable[str | os.PathLike[str]] = (),
) -> Plan:
    """Expand a manifest (a path, or one already loaded) into its jobs, offline.

    `variables` override the manifest's `vars` (--var, --var-file: variables.read_variables).
    `never_packaged`: more files kept out of every job's package and hash (an --env-file).
    Raises ManifestError listing every problem, each positioned in the manifest: an invalid
    manifest, more jobs than settings.max_jobs, a template that fails or renders an invalid
    value, two jobs with one name, job_name or outputs folder."""
    manifest = source if isinstance(source, Manifest) else load_manifest(source)
    return _Planner(manifest, variables=variables, never_packaged=never_packaged).run()


def check(source: str | os.PathLike[str]) -> list[Diagnostic]:
    """Every error `plan` would raise, without reading the jobs' folders (nothing is hashed):
    the schema and the manifest's rules, the job count against max_jobs, every template
    compiled and rendered for every cell (names checked against the context), rendered values
    validated, duplicate names and outputs folders. Empty when the manifest is valid. This is
    what `kaio validate` runs."""
    try:
        _Planner(load_manifest(source), hash_folders=False).run()
    except ManifestError as e:
        return e.errors
    return []


# ---- the planner ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Rendered:
    job: JobDef
    index: int
    cell: Cell
    name: str
    spec: dict[str, Any]
    outputs: str


def _sweep_factor(job: JobDef) -> int:
    sweep = job.sweep
    if sweep is None:
        return 1
    return (sweep.count or 0) if sweep.method == "random" else grid_size(sweep)


def _template_sites(value: Any, path: tuple) -> Iterator[tuple[tuple, str]]:
    """(path in the spec, template) for every template string inside `value`."""
    if isinstance(value, str):
        if is_template(value):
            yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _template_sites(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _template_sites(v, (*path, i))


def _copy_containers(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy_containers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_containers(v) for v in value]
    return value


def _set(root: dict, path: tuple, value: Any) -> None:
    node = root
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value


def _name_problem(name: Any) -> str | None:
    if not isinstance(name, str) or not name.strip():
        return "renders to an empty name"
    bad = _NOT_IN_NAMES.search(name)
    if bad is not None and bad.group() not in "/\\":
        return f"{name!r} cannot be a job name: it holds control characters"
    if bad is not None or name in (".", ".."):
        return (
            f"{name!r} cannot be a job name: it names the job's outputs folder, so no '/' or '\\'"
        )
    if len(name.encode()) > _NAME_MAX_BYTES:
        return f"the name is {len(name.encode())} bytes long; at most {_NAME_MAX_BYTES}"
    return None


def _plain_name(text: str) -> str:
    """A default name's text, made fit to name a folder."""
    return _NOT_IN_NAMES.sub("_", text)


class _Planner:
    def __init__(
        self,
        manifest: Manifest,
        *,
        hash_folders: bool = True,
        variables: Mapping[str, Any] | None = None,
        never_packaged: Iterable[str | os.PathLike[str]] = (),
    ):
        self.m = manifest
        self.hash_folders = hash_folders  # False: check only (job_names are then not real)
        self.never_packaged = _never_packaged(manifest, never_packaged)
        self._inputs_read: dict[tuple[str, str], datasets.Dataset] = {}
        self.doc = manifest.document
        self.folder = str(manifest.folder)
        self.errors: list[Diagnostic] = []
        self._reported: set[tuple] = set()
        self._template_values: dict[tuple, Any] = {}
        self._checked: dict[tuple[str, str], list[Diagnostic]] = {}
        self._hashes: dict[tuple[str, str, tuple[str, ...]], str | None] = {}
        self._directories: dict[str, tuple[str, str]] = {}
        # needs: each key's rendered cells; the keys whose templates wait for a need's outputs
        # (key -> the needs); the job_names of the outputs each key's templates read.
        self._rendered_by_key: dict[str, list[_Rendered]] = {}
        self._waiting: dict[str, set[str]] = {}
        self._read_from: dict[str, dict[str, str]] = {}
        self._has_cells = {
            k: j.matrix is not None or j.sweep is not None for k, j in manifest.jobs.items()
        }
        self.vars = self._vars(variables or {})
        self.manifest_ns = Namespace("manifest", {"name": manifest.name})

    def _vars(self, overrides: Mapping[str, Any]) -> Namespace:
        """`vars` as templates see them: the manifest's, each overridden one as given."""
        values = {**self.m.vars, **overrides}
        return Namespace(
            "vars",
            {
                k: self._wrap(f"vars.{k}", v, None if k in overrides else ("vars", k))
                for k, v in values.items()
            },
        )

    # -- errors --

    def error(
        self,
        path: tuple,
        message: str,
        *,
        key: bool = False,
        once: Any = None,
        at: tuple[int, int] | None = None,
    ) -> None:
        """Record an error at `path` (at line and column `at` when given), once per (path,
        `once` or message)."""
        mark = (path, message if once is None else once)
        if mark in self._reported:
            return
        self._reported.add(mark)
        if at is None:
            self.errors.append(self.m.diagnostic(path, message, key=key))
        else:
            self.errors.append(Diagnostic(self.doc.file, at[0], at[1], tuple(path), message))

    def fail_if_errors(self) -> None:
        if self.errors:
            raise ManifestError(in_file_order(self.errors))

    # -- the passes --

    def run(self) -> Plan:
        cells = self._count()
        rendered: list[_Rendered] = []
        # Stage by stage (stages.py): a job's identity holds the job_names of those it needs.
        for key, job in self._in_stage_order():
            if self._waits_for(job):
                continue
            cells_rendered = self._render_job(job, self._with_sweep(job, cells[key]))
            self._rendered_by_key[key] = cells_rendered
            rendered.extend(cells_rendered)
        # Names are checked whatever failed to render (the cells that did), so that one run
        # reports both; folders are hashed only for a plan that can still succeed.
        jobs = self._identify(rendered, hash_folders=self.hash_folders and not self.errors)
        self.fail_if_errors()
        waiting = tuple(
            Waiting(key, tuple(sorted(self._waiting[key])))
            for key in self.m.jobs
            if key in self._waiting
        )
        return Plan(self.m, tuple(jobs), waiting)

    # -- needs whose outputs templates read (planner/needs.py) --

    def _waits_for(self, job: JobDef, planned: dict[str, list[PlannedJob]] | None = None) -> bool:
        """Whether `job` waits (recorded in _waiting): a job it needs waits, or (given the jobs
        `planned` so far) its templates read outputs of another version of a job it needs."""
        waits = {key for key in job.needs if key in self._waiting}
        for key, read in self._read_from.get(job.key, {}).items():
            if planned is not None and [j.job_name for j in planned.get(key, [])] != [read]:
                waits.add(key)
        if waits:
            self._waiting.setdefault(job.key, set()).update(waits)
        return bool(waits)

    def _needs_context(self, job: JobDef) -> dict[str, Any]:
        """`needs` for the job's templates: the outputs of each needed job without cells (read
        only when planning for real: `kaio validate` reads none)."""
        has_cells = self._has_cells
        folders = {}
        for key in job.needs:
            cells = self._rendered_by_key.get(key, [])
            if len(cells) == 1 and not has_cells[key]:
                outputs = os.path.normpath(os.path.join(self.folder, cells[0].outputs))
                folders[key] = Path(outputs) if self.hash_folders else None
        read = self._read_from.setdefault(job.key, {})
        return {"needs": needs_namespace(has_cells, job.needs, folders, read, self._wrap_read)}

    def _wrap_read(self, label: str, value: Any) -> Any:
        return self._wrap(label, value, None)

    def _in_stage_order(self) -> list[tuple[str, JobDef]]:
        """The jobs, those of the first stage first (each stage in manifest order)."""
        stages = stage_of({key: job.needs for key, job in self.m.jobs.items()})
        return sorted(self.m.jobs.items(), key=lambda item: (stages[item[0]], item[1].index))

    def _count(self) -> dict[str, list[Cell]]:
        max_jobs = self.m.settings.max_jobs
        total = 0
        out: dict[str, list[Cell]] = {}
        for key, job in self.m.jobs.items():
            factor = _sweep_factor(job)
            allowed = (max_jobs - total) // factor
            try:
                if job.matrix is not None:
                    cells = expand_matrix(job.matrix, allowed)
                elif allowed < 1:
                    raise TooManyCells(allowed)
                else:
                    cells = [Cell({}, {})]
            except TooManyCells:
                self._too_many(job, total, max_jobs, factor)
                self.fail_if_errors()
            if not cells:
                self.error(
                    (*job.path, "matrix"),
                    "exclude removes every combination and include adds none, so this job "
                    "makes no jobs",
                )
            total += len(cells) * factor
            out[key] = cells
        return out

    def _too_many(self, job: JobDef, before: int, max_jobs: int, factor: int) -> None:
        written_limit = self.doc.source_text(("settings", "max_jobs")) is not None
        limit = f"settings.max_jobs is {max_jobs}{'' if written_limit else ' (the default)'}"
        cells = 1 if job.matrix is None else count_cells(job.matrix)
        if cells is None:
            makes = "makes more jobs than can be counted"
        else:
            makes = f"makes {cells * factor} job{'s' if cells * factor != 1 else ''}"
            if before:
                makes += f", {before + cells * factor} with the {before} before it"
        message = f"this job {makes}; {limit}; raise max_jobs or make fewer combinations"
        self.error(job.path, message, key=True)

    def _with_sweep(self, job: JobDef, cells: list[Cell]) -> list[Cell]:
        sweep = job.sweep
        if sweep is None:
            return cells
        params = ("sweep", "parameters")
        fixed = grid(sweep) if sweep.method == "grid" else None
        out: list[Cell] = []
        for cell in cells:
            if fixed is not None:
                combos = fixed
            else:
                seed = sweep.seed if job.matrix is None else cell_seed(sweep.seed, cell.values)
                try:
                    combos = random_draws(sweep, sweep.count or 0, seed)
                except DrawError as e:
                    self.error((*job.path, *params, e.parameter), str(e))
                    continue
            for n, combo in enumerate(combos, 1):
                values = dict(cell.values)
                sources = dict(cell.sources)
                for name, d in combo.items():
                    values[name] = d.value
                    if d.index is not None:
                        sources[name] = (*params, name, "values", d.index)
                    elif sweep.parameters[name].distribution == "constant":
                        sources[name] = (*params, name, "value")
                    else:
                        sources[name] = None
                out.append(Cell(values, sources, n if fixed is None else None))
        return out

    # -- rendering --

    def _wrap(self, label: str, value: Any, path: tuple | None) -> Any:
        """A value as templates see it: mappings as Namespaces, floats printing as written."""
        if isinstance(value, dict):
            return Namespace(
                label,
                {
                    k: self._wrap(f"{label}.{k}", v, None if path is None else (*path, k))
                    for k, v in value.items()
                },
            )
        if isinstance(value, list):
            return [
                self._wrap(f"{label}[{i}]", v, None if path is None else (*path, i))
                for i, v in enumerate(value)
            ]
        if isinstance(value, float) and path is not None:
            text = self.doc.source_text(path)
            if text and text != repr(value):
                return WrittenFloat(value, text)
        return value

    def _matrix_namespace(self, job: JobDef, cell: Cell) -> Namespace:
        data = {}
        for k, v in cell.values.items():
            source = cell.sources.get(k)
            if source is None:
                data[k] = self._wrap(f"matrix.{k}", v, None)
                continue
            path = (*job.path, *source)
            wrapped = self._template_values.get(path, self)
            if wrapped is self:
                wrapped = self._template_values[path] = self._wrap(f"matrix.{k}", v, path)
            data[k] = wrapped
        return Namespace("matrix", data)

    def _describe(self, job: JobDef, cell: Cell, sep: str = ", ") -> str:
        parts = []
        for k, v in cell.values.items():
            source = cell.sources.get(k)
            parts.append(
                f"{k}={written(self.doc, None if source is None else (*job.path, *source), v)}"
            )
        if cell.draw is not None:
            parts.append(f"draw={cell.draw}")
        return sep.join(parts)

    def _default_name(self, job: JobDef, cell: Cell) -> str:
        drawn = job.sweep.parameters if job.sweep and job.sweep.method == "random" else {}
        parts = [job.key]
        for k, v in cell.values.items():
            if k in drawn:
                continue
            source = cell.sources.get(k)
            parts.append(k + written(self.doc, None if source is None else (*job.path, *source), v))
        if cell.draw is not None:
            parts.append(str(cell.draw))
        return _plain_name("-".join(parts))

    def _compile(self, where: tuple, source: str, native: bool) -> Template | None:
        try:
            return compile_template(source, native)
        except RenderError as e:
            at = None
            if e.offset is not None and self.doc.value(where) == source:
                at = _inside_scalar(self.m.path, self.doc.locations.get(where), source, e.offset)
            self.error(where, str(e), at=at)
            return None

    def _site_path(self, job: JobDef, spec_path: tuple) -> tuple:
        return job.source_path(*spec_path) or job.path

    def _render_job(self, job: JobDef, cells: list[Cell]) -> list[_Rendered]:
        """Every cell of one job rendered and checked; cells with errors are left out (the
        errors are recorded), and every template of a cell is tried, to report all at once."""
        name_path = (*job.path, "name")
        compiled_ok = True
        name_tpl = None
        if job.name is not None:
            name_tpl = self._compile(name_path, job.name, native=False)
            compiled_ok = name_tpl is not None
        sites: list[tuple[tuple, tuple, Template]] = []  # (spec path, document path, template)
        for spec_path, source in _template_sites(job.spec, ()):
            native = spec_path[0] not in _TEXT_FIELDS and spec_path[0] != "env"
            where = self._site_path(job, spec_path)
            tpl = self._compile(where, source, native)
            if tpl is None:
                compiled_ok = False
            else:
                sites.append((spec_path, where, tpl))
        outputs_tpl = self._compile(("settings", "outputs"), self.m.settings.outputs, False)
        if not compiled_ok or outputs_tpl is None:
            return []
        own_params = frozenset(job.fields.get("params") or ())
        copy_env = any(p[0] == "env" for p, _, _ in sites)
        copy_params = any(p[0] == "params" for p, _, _ in sites)
        out = []
        needs = self._needs_context(job)
        for index, cell in enumerate(cells):
            context = make_context(
                matrix=self._matrix_namespace(job, cell),
                vars=self.vars,
                manifest=self.manifest_ns,
                job=Namespace("job", {"key": job.key, "index": index}),
                **needs,
            )
            ok = True
            if name_tpl is not None:
                name = self._render(job, cell, name_path, name_tpl, context)
            else:
                name = self._default_name(job, cell)
            if name is _FAILED:
                ok, name = False, f"{job.key}-{index}"  # only so the other templates can run
            elif (problem := _name_problem(name)) is not None:
                self.error(name_path if job.name else job.path, problem, key=not job.name)
                ok = False
            context["job"] = Namespace("job", {"key": job.key, "index": index, "name": name})
            spec = dict(job.spec)
            if copy_env:
                spec["env"] = dict(spec["env"])
            if copy_params:
                spec["params"] = _copy_containers(spec["params"])
            failed: set[str] = set()
            for spec_path, where, tpl in sites:
                value = self._render(job, cell, where, tpl, context)
                if value is _FAILED:
                    failed.add(spec_path[0])
                else:
                    _set(spec, spec_path, value)
            ok = self._check(job, cell, spec, sites, failed) and ok and not failed
            outputs = self._render(job, cell, ("settings", "outputs"), outputs_tpl, context)
            if not ok or outputs is _FAILED:
                continue
            spec["params"] = _merged_params(spec.get("params") or {}, cell.values, own_params)
            spec["env"] = spec.get("env") or {}
            out.append(_Rendered(job, index, cell, name, spec, outputs))
        return out

    def _render(self, job: JobDef, cell: Cell, where: tuple, tpl: Template, context: dict) -> Any:
        """The template's value (JSON data in native mode), or _FAILED after recording why."""
        try:
            value = tpl.render(context)
            return to_json_value(value) if tpl.native else value
        except NotReady as e:  # not an error: the job waits (planner/needs.py)
            self._waiting.setdefault(job.key, set()).add(e.key)
            return _FAILED
        except RenderError as e:
            base = str(e)
        except NotJSON as e:
            base = f"renders to {e}"
        context_text = self._describe(job, cell)
        message = f"{base} (in {tpl.source!r}{' for ' + context_text if context_text else ''})"
        self.error(where, message, once=base)
        return _FAILED

    def _check(self, job: JobDef, cell: Cell, spec: dict, sites: list, failed: set[str]) -> bool:
        """Rendered values checked again: the schema and files for templated fields (cached by
        what they rendered to), the env rules for templated env values. Fields whose template
        failed are not checked (their error is already said)."""
        ok = True
        templated = {p[0] for p, _, _ in sites}
        fields = templated - {"env", "params"}
        if fields and not fields & failed:
            rendered = {k: v for k, v in spec.items() if k not in ("env", "params")}
            cache_key = (job.key, canonical_json(rendered))
            found = self._checked.get(cache_key)
            if found is None:
                context_text = self._describe(job, cell)
                found = self.m.check_rendered(
                    job.key, rendered, f"for {context_text}" if context_text else ""
                )
                self._checked[cache_key] = found
            for d in found:
                if (d.path, "rendered") not in self._reported:
                    self._reported.add((d.path, "rendered"))
                    self.errors.append(d)
            ok = not found
        if "env" in templated and "env" not in failed:
            try:
                check_env(spec["env"])
            except FieldError as e:
                where = job.source_path(*e.path) or job.source_path("env") or job.path
                context_text = self._describe(job, cell)
                message = e.reason
                suffix = f" (for {context_text})" if context_text else ""
                self.error(where, message + suffix, once=message)
                ok = False
        return ok

    # -- identity --

    def _content_hash(
        self, job: JobDef, directory: str, entrypoint: str, exclude: tuple[str, ...] = ()
    ) -> str | None:
        cache_key = (directory, entrypoint, exclude)
        if cache_key in self._hashes:
            return self._hashes[cache_key]
        # Imported here: `kaio validate` plans without hashing folders, so it never loads
        # packaging's dependencies (pathspec, tarfile, a thread pool).
        from kaio_spec import packaging

        digest = None
        try:
            digest = packaging.folder_content_hash(directory, entrypoint, exclude=exclude)
        except FieldError as e:
            self.error(self._site_path(job, ("entrypoint",)), e.reason)
        except (FileNotFoundError, NotADirectoryError) as e:
            self.error(self._site_path(job, ("directory",)), str(e))
        except OSError as e:
            self.error(self._site_path(job, ("directory",)), f"cannot read the folder: {e}")
        self._hashes[cache_key] = digest
        return digest

    def _identify(self, rendered: list[_Rendered], hash_folders: bool) -> list[PlannedJob]:
        jobs: list[PlannedJob] = []
        by_key: dict[str, list[PlannedJob]] = {}  # for the jobs that need them
        has_cells = self._has_cells
        by_name: dict[str, _Rendered] = {}
        by_job_name: dict[str, _Rendered] = {}
        by_outputs: dict[str, _Rendered] = {}
        manifest = self.m.name
        downloads = self._download_folders(rendered) + self._local_inputs(rendered)
        excludes: dict[str, tuple[str, ...]] = {}  # per distinct directory, not per job
        for r in rendered:
            job = r.job
            directory, relative = self._directory(r.spec["directory"])
            exclude = excludes.get(directory)
            if exclude is None:
                never = [*downloads, *self.never_packaged, os.path.join(directory, ".env")]
                exclude = excludes[directory] = _inside(directory, never)
            content = (
                self._content_hash(job, directory, r.spec["entrypoint"], exclude)
                if hash_folders
                else ""
            )
            first = by_name.setdefault(r.name, r)
            if first is not r:
                self._duplicate(
                    first, r, f"two jobs are named {r.name!r}", "give each job its own name"
                )
                continue
            outputs = os.path.normpath(os.path.join(self.folder, r.outputs))
            first = by_outputs.setdefault(outputs, r)
            if first is not r:
                self._duplicate(
                    first,
                    r,
                    f"two jobs would download their outputs to {outputs!r}",
                    "settings.outputs must tell jobs apart (use {{ job.name }})",
                    where=("settings", "outputs"),
                )
                continue
            if content is None or self._waits_for(job, by_key):
                continue
            spec = {k: r.spec.get(k) for k in SPEC_KEYS}
            spec["directory"] = directory
            needs = needed_jobs(job.needs, by_key, has_cells)
            identity = self._identity(r, spec, relative, content)
            if needs:
                identity["needs"] = identity_part(needs)
            inputs = self._datasets(job, r.spec.get("inputs") or {}) if hash_folders else ()
            if inputs is None:
                continue
            if inputs:  # by content: changed data, new jobs (docs/inputs.md)
                identity["inputs"] = {d.name: d.digest for d in inputs}
            digest = identity_digest(identity)
            name = make_job_name(manifest, r.name, digest)
            first = by_job_name.setdefault(name, r)
            if first is not r:
                self._duplicate(
                    first,
                    r,
                    f"two jobs would have the job_name {name!r}",
                    "make their names differ in letters or digits, not only in punctuation",
                )
                continue
            cell_json = json.dumps(r.cell.values, separators=(",", ":"), ensure_ascii=False)
            jobs.append(
                PlannedJob(
                    key=job.key,
                    index=r.index,
                    name=r.name,
                    job_name=name,
                    matrix=r.cell.values,
                    matrix_text=self._describe(job, r.cell, " "),
                    spec=spec,
                    content_hash=content,
                    outputs=Path(outputs),
                    labels=_labels(
                        manifest, job.key, r.name, cell_json, job.metric, spec["retries"], needs
                    ),
                    package_exclude=exclude,
                    secrets=dict(job.secrets),
                    needs=needs,
                    inputs=inputs,
                )
            )
            by_key.setdefault(job.key, []).append(jobs[-1])
        return jobs

    def _local_inputs(self, rendered: list[_Rendered]) -> list[str]:
        """Every local input's path: never packaged with the code (they travel on their own)."""
        found = set()
        for r in rendered:
            for source in (r.spec.get("inputs") or {}).values():
                if isinstance(source, str) and not source.startswith(datasets.S3):
                    found.add(os.path.normpath(os.path.join(self.folder, source)))
        return sorted(found)

    def _datasets(self, job: JobDef, written: dict) -> tuple[datasets.Dataset, ...] | None:
        """The job's inputs read (each once per plan), or None after reporting one that cannot be."""
        found = []
        for name, source in sorted(written.items()):
            where = self._site_path(job, ("inputs", name))
            problem = datasets.check_name(name)
            if problem is None and name in job.needs:  # both would be inputs/<name>/
                problem = f"{name!r} is also a job this one needs: give the input another name"
            if problem is None and (not isinstance(source, str) or not source):
                problem = "must be a path (a file or a folder) or an s3://bucket/prefix URI"
            if problem is None:
                try:
                    key = (name, source)
                    if key not in self._inputs_read:
                        self._inputs_read[key] = datasets.read(name, source, self.folder)
                    found.append(self._inputs_read[key])
                    continue
                except InvalidInput as e:
                    problem = str(e)
            self.error(where, problem)
            return None
        return tuple(found)

    def _download_folders(self, rendered: list[_Rendered]) -> list[str]:
        """Where apply downloads outputs: the outputs template's fixed leading folders (all of
        a manifest's outputs go under it, whichever cells it has today), and every job's own
        folder that is not under that root (for templates that start with a variable)."""
        root = _fixed_root(self.m.settings.outputs)
        folders = {os.path.normpath(os.path.join(self.folder, root))} if root else set()
        # With a fixed root, listing each job's folder under it too would make every job's
        # exclusions as long as the sweep (a 10,000-cell plan would compare 10^8 paths).
        under = tuple(f + os.sep for f in folders)
        for r in rendered:
            folder = os.path.normpath(os.path.join(self.folder, r.outputs))
            if not (under and folder.startswith(under)):
                folders.add(folder)
        return sorted(folders)

    def _directory(self, written_dir: str) -> tuple[str, str]:
        """A job's directory, absolute and relative to the manifest's folder (the relative one
        is what identifies it: a clone elsewhere gives the same job_names)."""
        found = self._directories.get(written_dir)
        if found is None:
            absolute = os.path.normpath(os.path.join(self.folder, written_dir))
            try:
                relative = os.path.relpath(absolute, self.folder).replace(os.sep, "/")
            except ValueError:  # another drive (Windows)
                relative = absolute
            found = self._directories[written_dir] = (absolute, relative)
        return found

    def _identity(self, r: _Rendered, spec: dict, relative: str, content: str) -> dict:
        env = spec["env"]
        return {
            "manifest": self.m.name,
            "key": r.job.key,
            "name": r.name,
            "matrix": r.cell.values,
            "spec": {k: v for k, v in spec.items() if k not in _NOT_IN_IDENTITY_SPEC},
            "directory": relative,
            "params": spec["params"],
            "env_names": sorted(env),
            "env_values": hashlib.sha256(canonical_json(env).encode()).hexdigest(),
            "content_hash": content,
            # Which secrets a job gets is part of what it is; their values never are.
            **({"secrets": sorted(r.job.secrets.items())} if r.job.secrets else {}),
        }

    def _duplicate(
        self, first: _Rendered, second: _Rendered, what: str, fix: str, where: tuple | None = None
    ) -> None:
        if where is None:
            named = second.job.name is not None
            where = (*second.job.path, "name") if named else second.job.path
            key = not named
        else:
            key = False
        message = f"{what}: {self._which(first)} and {self._which(second)}; {fix}"
        self.error(where, message, key=key)

    def _which(self, r: _Rendered) -> str:
        label = f"jobs.{r.job.key}"
        if r.job.matrix is None and r.job.sweep is None:
            return label
        return f"{label}[{r.index}] ({self._describe(r.job, r.cell)})"


def _merged_params(
    rendered: dict[str, Any], cell: dict[str, Any], own: frozenset[str]
) -> dict[str, Any]:
    """params.json: defaults.params <- the cell's values <- the job's own params, later winning
    (`rendered` holds defaults.params and the job's params already merged and rendered; `own`
    names the job's keys). A cell value is always there unless the job sets that key itself."""
    if not cell:
        return rendered
    merged = {k: v for k, v in rendered.items() if k not in own}
    merged.update(cell)
    merged.update((k, rendered[k]) for k in rendered if k in own)
    return merged


def _inside_scalar(file: Path, loc: Location | None, value: str, offset: int) -> tuple | None:
    """The line and column in `file` of `value[offset]`, for a string scalar written at `loc`
    plain, quoted (with nothing escaped before `offset`) or as a literal block (`|`); None
    when it cannot be told (the error then points at the value's start)."""
    if loc is None:
        return None
    try:
        lines = file.read_text(encoding="utf-8-sig").split("\n")
    except (OSError, UnicodeDecodeError):
        return None
    before = value[:offset]
    if loc.line > len(lines):
        return None
    first = lines[loc.line - 1]
    if "\n" not in before:  # on the value's first line
        for quote in (0, 1):
            start = loc.column - 1 + quote
            if first[start : start + len(before)] == before:
                return loc.line, start + len(before) + 1
    if not first[loc.column - 1 :].startswith("|"):
        return None
    n = before.count("\n")
    template_line, tail = value.split("\n")[n], before.rsplit("\n", 1)[-1]
    index = loc.line + n  # a literal block's text starts on the line after its `|`
    if index < len(lines):
        line = lines[index]
        column = line.find(template_line) if template_line else -1
        if column >= 0 and not line[:column].strip():
            return index + 1, column + len(tail) + 1
    return None


# Manifests beside the one applied: never part of a job's package or hash, so that editing
# one (a comment) changes no job whose folder holds it.
_MANIFEST_NAMES = ("kaio.yaml", "kaio.yml", "*.kaio.yaml", "*.kaio.yml")


def _never_packaged(manifest: Manifest, extra: Iterable[str | os.PathLike[str]]) -> list[str]:
    """Files kept out of every job's package and hash: the manifest itself, every kaio.yaml and
    *.kaio.yaml beside it, its folder's `.env` (dotenv: secrets) and `extra` (an --env-file).
    (The `.env` at the top of each job's own folder is kept out too: _identify.)"""
    folder = manifest.folder
    found = {str(manifest.path), str(folder / ".env")}
    for pattern in _MANIFEST_NAMES:
        found.update(str(p) for p in folder.glob(pattern))
    found.update(os.path.abspath(e) for e in extra)
    return sorted(found)


def _fixed_root(template: str) -> str:
    """The folders of a path template before its first template tag: "outputs/{{ x }}/y" →
    "outputs"; "" when it starts with one."""
    starts = [i for i in (template.find("{{"), template.find("{%"), template.find("{#")) if i >= 0]
    if not starts:
        return template
    head = template[: min(starts)]
    return head[: head.rfind("/")] if "/" in head else ""


def _inside(directory: str, folders: list[str]) -> tuple[str, ...]:
    """`folders` that lie strictly inside `directory`, relative to it (forward slashes)."""
    found = set()
    for folder in folders:
        rel = os.path.relpath(folder, directory)
        if (
            rel != "."
            and not rel.startswith(".." + os.sep)
            and rel != ".."
            and not os.path.isabs(rel)
        ):
            found.add(rel.replace(os.sep, "/"))
    return tuple(sorted(found))


def _labels(
    manifest: str,
    key: str,
    name: str,
    cell_json: str,
    metric=None,
    retries: int | None = 0,
    needs: Sequence[NeededJob] = (),
) -> dict[str, str]:
    labels = {"manifest": manifest, "key": key, "name": name, "cell": cell_json}
    # For the dashboard, neither part of identity: how it ranks a sweep's cells, how many
    # attempts a job has ("attempt 2/3"), and the jobs it needs (its page links them)
    if metric is not None:
        labels["metric"] = json.dumps({"name": metric.name, "goal": metric.goal})
    if retries:
        labels["retries"] = str(retries)
    if needs:
        labels[catalog.NEEDS_LABEL] = _needs_label(labels, needs)
    if len(json.dumps(labels).encode()) > catalog.LABELS_MAX_BYTES:
        # Labels are a convenience for the dashboard: a huge cell is named by its hash.
        labels["cell"] = "sha256:" + hashlib.sha256(cell_json.encode()).hexdigest()[:16]
    return labels


def _needs_label(labels: dict[str, str], needs: Sequence[NeededJob]) -> str:
    """The `needs` label: a JSON list of the job_names of the cells it needs, or, when they
    would not fit the labels' size (a job after a sweep of hundreds), of the needed keys: the
    server then matches those keys' jobs of the same manifest (docs/protocol.md)."""
    names = json.dumps(sorted({n.job_name for n in needs}))
    if len(json.dumps({**labels, catalog.NEEDS_LABEL: names}).encode()) <= catalog.LABELS_MAX_BYTES:
        return names
    return json.dumps(sorted({n.key for n in needs}))
