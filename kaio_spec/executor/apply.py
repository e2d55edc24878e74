"""`apply(path, client=...)`: the Python API of `kaio apply`, in two steps the CLI uses apart.

prepared = prepare("kaio.yaml", client, only="train-*")   # plan + ONE GET /jobs
print(render_table(prepared.comparison.plan))                # what would happen
result = execute(prepared, client)                           # submit, follow, download
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import requests

from kaio_spec import downloads
from kaio_spec.errors import InvalidInput, KaioError
from kaio_spec.executor.observe import (
    Comparison,
    compare,
    list_jobs,
    manifest_prefix,
    request,
    status_of,
)
from kaio_spec.executor.report import QuietReporter, Reporter
from kaio_spec.executor.results import ApplyResult
from kaio_spec.executor.run import Engine
from kaio_spec.executor.state import State, StateLock, state_path
from kaio_spec.executor.submit import PackageCache, Submitter
from kaio_spec.executor.versions import Versions
from kaio_spec.planner import Plan, PlannedJob
from kaio_spec.planner import plan as make_plan
from kaio_spec.secrets import read_secrets

__all__ = ["Prepared", "apply", "execute", "next_round", "prepare", "select"]


@dataclass(frozen=True)
class Prepared:
    """A plan compared with the API (`comparison`, the whole manifest: orphans are judged against
    all of it), the jobs this apply covers (`selected`, --only applied), and the listing it was
    compared with (the run starts from it: no second GET /jobs)."""

    comparison: Comparison
    selected: tuple[PlannedJob, ...]
    listing: tuple[dict[str, Any], ...]
    only: str | None = None

    @property
    def plan(self) -> Plan:
        """The plan of the selected jobs, actions set."""
        return replace(self.comparison.plan, jobs=self.selected)


def select(jobs: tuple[PlannedJob, ...], only: str | None) -> tuple[PlannedJob, ...]:
    """The jobs whose key or name matches the fnmatch pattern `only` (all when None), and the
    jobs they need, transitively (as make does): a completed need is unchanged, and its outputs
    are what the selected job gets."""
    if not only:
        return jobs
    chosen = {
        j.job_name
        for j in jobs
        if fnmatch.fnmatchcase(j.key, only) or fnmatch.fnmatchcase(j.name, only)
    }
    for job in reversed(jobs):  # planned stage by stage: a job's needs come before it
        if job.job_name in chosen:
            chosen.update(n.job_name for n in job.needs)
    return tuple(j for j in jobs if j.job_name in chosen)


def prepare(
    path_or_plan: str | os.PathLike | Plan,
    client,
    *,
    only: str | None = None,
    rerun_failed: bool = False,
    replace: str | None = None,
) -> Prepared:
    """Plan (unless given a Plan) and compare with the API in one GET /jobs; `rerun_failed` and
    `replace` (an fnmatch pattern) ask for new attempts (observe.request). Raises ManifestError
    for an invalid manifest, InvalidInput when `only` or `replace` matches no job."""
    plan = path_or_plan if isinstance(path_or_plan, Plan) else make_plan(path_or_plan)
    listing = list_jobs(client)
    comparison = compare(client, plan, listing)
    if rerun_failed or replace:
        comparison = request(comparison, rerun_failed=rerun_failed, replace=replace)
    selected = select(comparison.plan.jobs, only)
    if only and not selected:
        raise InvalidInput(
            f"--only {only!r} matches no job of {plan.manifest.name} (it is matched against each "
            "job's key and name, e.g. 'train' or 'train-lr*')"
        )
    return Prepared(comparison, selected, tuple(listing), only)


def next_round(
    prepared: Prepared, result: ApplyResult, replan: Callable[[], Plan], client
) -> Prepared | None:
    """The next round of a pipeline whose templates read the outputs of jobs they need
    (planner/needs.py): once a round has completed, the manifest is planned again (those
    outputs are now on disk), and the jobs that waited are applied. None when no job waits,
    the round did not complete (or was detached), or planning again planned none of them."""
    waiting = {w.key for w in prepared.comparison.plan.waiting}
    if not waiting or not result.ok or result.detached or result.interrupted:
        return None
    plan = replan()
    if {w.key for w in plan.waiting} >= waiting:
        return None
    return prepare(plan, client, only=prepared.only)


def execute(
    prepared: Prepared,
    client,
    *,
    detach: bool = False,
    prune: bool = False,
    reporter: Reporter | None = None,
    state_file: str | os.PathLike | None = None,
    unreachable_timeout_s: float = 900.0,
    uploads: int | None = None,
    secrets: Mapping[str, str] | None = None,
) -> ApplyResult:
    """Run what `prepared` plans until every selected job has ended and its outputs are on disk
    (with `detach`: until everything is submitted). `prune` stops the live orphans first.
    `uploads`: submissions at once (default: 1 against a platform on this machine, 8 otherwise:
    run.upload_workers). `secrets`: the values of the secrets the jobs name (read_secrets;
    default: read from the environment, ManifestError when one is missing). The first run
    writes a .gitignore of `*` into .kaio/ and the outputs root; `prune` also moves the outputs
    of cells the manifest no longer defines into `.pruned/` beside them."""
    if secrets is None:
        secrets = read_secrets(prepared.comparison.plan.manifest, prepared.selected)
    manifest = prepared.comparison.plan.manifest
    reporter = reporter or QuietReporter()
    path = Path(state_file) if state_file else state_path(manifest.path)
    lock = StateLock(path)
    if not lock.acquire():
        pid = lock.holder()
        raise KaioError(
            f"another kaio apply{f' (pid {pid})' if pid else ''} is applying {manifest.file} "
            f"({lock.path} is locked); wait for it to end, or stop it. Other manifests of "
            "this folder can be applied meanwhile"
        )
    # Packages being built, per manifest: a run cleans its own folder at start (_clean_packages)
    # while another manifest of the folder may be applied at once.
    packages = PackageCache(path.parent / "packages" / path.stem)
    try:
        _clean_packages(packages.tmp_dir)
        state = State.load(path)
        if state.problem:
            reporter.note(state.problem)
        state.set_manifest(manifest.name, manifest.file)
        state.save()  # compacted on open: what a killed run left in the journal folded in
        downloads.ignore_in_git(path.parent)
        stopped = _prune(client, prepared, reporter) if prune else ()
        moved = _prune_outputs(prepared.comparison.plan, reporter) if prune else ()
        submitter = Submitter(
            client,
            state,
            packages,
            on_bytes=reporter.uploaded,
            secrets=secrets,
            on_note=reporter.note,  # the image's notices: plain lines, each once
        )
        settings = manifest.settings
        engine = Engine(
            client,
            list(prepared.selected),
            list(prepared.listing),
            state=state,
            submitter=submitter,
            reporter=reporter,
            max_parallel=settings.max_parallel,
            fail_fast=settings.fail_fast,
            poll_seconds=settings.poll_seconds,
            detach=detach,
            unreachable_timeout_s=unreachable_timeout_s,
            uploads=uploads,
            retry_delay_s=settings.retry_delay_seconds,
            retry_on=settings.retry_on,
            versions=Versions.for_state(path),
        )
        result = engine.run()
        _ignore_outputs_in_git(prepared.comparison.plan)
        if not (detach or result.interrupted):
            _write_results(prepared, client, reporter)
    finally:
        packages.close()
        lock.release()
    return replace(
        result, manifest=manifest.name, stopped_orphans=tuple(stopped), pruned_outputs=moved
    )


def _ignore_outputs_in_git(plan: Plan) -> None:
    """The outputs root is never committed by a `git add -A` after a sweep (nor is .kaio/).
    Written once outputs are there (a --detach run downloads nothing: no folder is made)."""
    root = outputs_root(plan)
    if root is not None and root.is_dir():
        downloads.ignore_in_git(root)


def outputs_root(plan: Plan) -> Path | None:
    """The folder of the manifest's folder that holds every job's outputs folder, below it
    (`outputs` for the default `outputs/<manifest>/<job>`); None when there is no such folder,
    or it holds a job's code or the manifest (it must not be ignored by git)."""
    folder = str(plan.manifest.folder)
    tops = set()
    for job in plan.jobs:
        rel = os.path.relpath(job.outputs, folder).split(os.sep)
        if len(rel) < 2 or rel[0] in ("..", "."):
            return None
        tops.add(rel[0])
    if len(tops) != 1:
        return None
    root = os.path.join(folder, tops.pop())
    inside = [str(job.directory) for job in plan.jobs] + [folder]
    if any(p == root or p.startswith(root + os.sep) for p in inside):
        return None
    return Path(root)


def _prune_outputs(plan: Plan, reporter: Reporter) -> tuple[str, ...]:
    moved = []
    prefix = manifest_prefix(plan.manifest.name)
    for folder in downloads.stale_outputs([j.outputs for j in plan.jobs], prefix):
        dest = downloads.move_to_pruned(folder)
        moved.append(str(dest))
        reporter.note(f"outputs of {folder.name}, a cell no longer defined, moved to {dest}")
    return tuple(moved)


def _write_results(prepared: Prepared, client, reporter: Reporter) -> None:
    """outputs/<manifest>/results.csv and results.json: every job of the manifest side by side
    (kaio_spec.results), next to the outputs. Not writing them never fails the apply."""
    from kaio_spec.results_table import results, results_folder, write_files

    plan = prepared.comparison.plan
    try:
        table = results(plan, client, download=False)
        csv_path, _ = write_files(table, results_folder(plan))
    except (OSError, KaioError, requests.RequestException) as e:
        reporter.note(f"results.csv not written: {e}")
        return
    reporter.note(
        f"results: {csv_path} (and results.json){'; ' + table.summary() if table.summary() else ''}"
    )


def _clean_packages(folder: Path | None) -> None:
    """Package files a killed run left behind (only this manifest's runs use it, and the lock
    says none is running)."""
    if folder is None or not folder.is_dir():
        return
    for entry in folder.iterdir():
        if entry.is_file():
            entry.unlink(missing_ok=True)


def _prune(client, prepared: Prepared, reporter: Reporter) -> tuple[str, ...]:
    stopped = []
    for orphan in prepared.comparison.live_orphans():
        unique = str(orphan.get("unique_job_name"))
        try:
            client.stop_job(unique)
        except requests.HTTPError as e:
            if e.response is None or e.response.status_code != 409:
                raise
            continue  # it ended meanwhile
        stopped.append(unique)
        reporter.event(str(orphan.get("job_name")), f"orphan {unique} stopped (--prune)")
    return tuple(stopped)


def apply(
    path: str | os.PathLike | Plan,
    *,
    client,
    yes: bool = True,
    confirm: Callable[[Prepared], bool] | None = None,
    detach: bool = False,
    prune: bool = False,
    only: str | None = None,
    rerun_failed: bool = False,
    replace: str | None = None,
    reporter: Reporter | None = None,
    state_file: str | os.PathLike | None = None,
    uploads: int | None = None,
) -> ApplyResult:
    """Apply the manifest at `path` through `client` (a logged-in kaio_spec.Client): submit every
    job the API does not already have (by job_name), at most settings.max_parallel in flight;
    follow them with one GET /jobs per round; retry failures up to each job's `retries`; download
    every ended job's outputs (and failed ones' logs) to its `outputs` folder, once. Returns an
    ApplyResult (`.ok`, `.exit_code`, `.jobs`).

    With `yes=False`, `confirm(prepared)` is asked first and nothing happens unless it returns
    True (the result then lists every job as it stands). `only`: an fnmatch pattern over job keys
    and names. `rerun_failed`: a new attempt of every job that failed or was stopped for good;
    `replace`: of every ended job matching this pattern, even completed ones (same job_name,
    attempts go on counting, then its retries again). `prune`: stop live jobs of this manifest that it no longer defines. `detach`:
    return once everything is submitted. Raises ManifestError (invalid manifest), InvalidInput,
    PlatformError (the API could not be reached for long), KaioError (another apply is running
    on this manifest's folder)."""
    prepared = prepare(path, client, only=only, rerun_failed=rerun_failed, replace=replace)
    if not yes:
        if confirm is None:
            raise InvalidInput("apply(yes=False) needs a confirm callback")
        if not confirm(prepared):
            return declined(prepared)

    def replan() -> Plan:
        return make_plan(path.manifest if isinstance(path, Plan) else path)

    while True:
        result = execute(
            prepared,
            client,
            detach=detach,
            prune=prune,
            reporter=reporter,
            state_file=state_file,
            uploads=uploads,
        )
        following = next_round(prepared, result, replan, client)
        if following is None:
            return result
        prepared = following


def declined(prepared: Prepared) -> ApplyResult:
    """The result of an apply the user did not confirm: every job as the API has it."""
    from kaio_spec.executor.results import NOT_SUBMITTED, JobResult

    by_job = {o.job.job_name: o for o in prepared.comparison.observed}
    jobs = []
    for job in prepared.selected:
        o = by_job[job.job_name]
        jobs.append(
            JobResult(
                job.key,
                job.name,
                job.job_name,
                status_of(o.latest) if o.latest else NOT_SUBMITTED,
                o.attempts_used,
                tuple(o.unique_job_names),
            )
        )
    return ApplyResult(prepared.comparison.plan.manifest.name, tuple(jobs), declined=True)
