"""Submitting one planned job: its folder packaged once per run, its params.json added, the intent
written before the presign, the upload streamed.

    package (once per folder) → base package (once per folder, where the server has them)
        → intent saved → POST /jobs/presign → unique + URL saved → PUT

Where the server offers base packages (docs/base-packages.md, a local-platform extension), each
folder's package is uploaded once per run as a base package and each job's PUT carries only its
params.json (the overlay): a 100-cell sweep over a 20 MB folder sends the 20 MB once, not 100
times. Where it does not, or for a job whose presign answer does not echo the base, the whole
package is uploaded as before.

The presign is never sent blindly twice: when its outcome is uncertain (the connection dropped,
a timeout, a 502/503/504: the server may have created the job), `submit` returns `uncertain` and
the executor settles it from a GET /jobs made afterwards (recover.py). An upload that fails after
the transport's own retries leaves the intent (with its URL) for recover.py too.

This reaches into the Client's presign and upload steps (Client.submit_package runs them back to
back) because the executor must record what the presign answered before uploading.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import requests

from kaio_spec import catalog
from kaio_spec.client import INPUTS, JOBS_SUBMIT, NEEDS_LINKS, Submission, check_package
from kaio_spec.errors import InvalidInput
from kaio_spec.executor.inputs import StoredInputs, packaged_inputs
from kaio_spec.executor.needs import InputFiles, linked_needs
from kaio_spec.executor.state import State
from kaio_spec.images import ResolvedImage, resolve_job_image
from kaio_spec.jobspec import JobSpec
from kaio_spec.packaging import Package, build_package
from kaio_spec.planner import PlannedJob
from kaio_spec.validation import FieldError

UNCERTAIN_STATUSES = frozenset({502, 503, 504})


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class _Prepared(NamedTuple):
    package: Package
    spec: JobSpec
    image: ResolvedImage
    base: str | None
    inputs: dict | None
    needs: dict | None


@dataclass
class Outcome:
    """What one submission came to.

    kind: "uploaded" (the job has its package), "uncertain" (the presign may have created a job;
    settle from a listing made after `since`), "unuploaded" (presigned, the upload failed; the
    intent holds the URL), "invalid" (the job can never be submitted: `error` says why),
    "cancelled" (the run was interrupted before the presign)."""

    kind: str
    unique_job_name: str | None = None
    error: str | None = None
    since: float = 0.0
    code: int = 0  # the HTTP status that refused an upload, if one did


class PackageCache:
    """Each distinct (folder, entrypoint) compressed once per run; per-job files are added with
    Package.with_files, which reuses the folder's compressed bytes. The folder's content hash must
    still be the one planned: the job_name was derived from it."""

    def __init__(self, tmp_dir: Path | None = None):
        self.tmp_dir = tmp_dir
        self._packages: dict[tuple, Package] = {}
        self._locks: dict[tuple, threading.Lock] = {}
        self._lock = threading.Lock()
        self.built = 0  # how many folders were compressed (benchmarks and tests read it)
        self.inputs = InputFiles()  # needs: the needed jobs' outputs, read once per run
        # `inputs:` stored by the platform (its "inputs" feature), not packaged: Submitter says.
        self.inputs_on_server = False
        self.needs_linked = False  # needed outputs linked by the platform (needs-links)

    def folder_package(self, job: PlannedJob) -> Package:
        key = (str(job.directory), job.entrypoint, job.package_exclude)
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            package = self._packages.get(key)
            if package is None:
                if self.tmp_dir is not None:
                    self.tmp_dir.mkdir(parents=True, exist_ok=True)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # `kaio validate`/`plan` report skipped files
                    package = build_package(
                        job.directory,
                        job.entrypoint,
                        tmp_dir=self.tmp_dir,
                        exclude=job.package_exclude,
                    )
                self._packages[key] = package
                self.built += 1
        if package.content_hash != job.content_hash:
            raise InvalidInput(
                f"{job.directory} changed since it was planned (its job names depend on its "
                "content); run kaio apply again to plan it anew"
            )
        return package

    def job_package(self, job: PlannedJob) -> Package:
        return self.folder_package(job).with_files(self._job_files(job))

    def job_overlay(self, job: PlannedJob) -> Package:
        """What job_package adds to the folder, alone: the upload over a base package."""
        return self.folder_package(job).overlay(self._job_files(job))

    def _job_files(self, job: PlannedJob) -> dict[str, bytes | str]:
        files = {"params.json": job.params_json(), **self.inputs.files(job, self.needs_linked)}
        if job.inputs and not self.inputs_on_server:  # docs/inputs.md: the hosted fallback
            files.update(packaged_inputs(job))
        return files

    def close(self) -> None:
        with self._lock:
            for package in self._packages.values():
                package.close()
            self._packages.clear()


class Submitter:
    """Presign and upload for the executor's workers (thread-safe)."""

    def __init__(
        self,
        client,
        state: State,
        packages: PackageCache,
        on_bytes: Callable[[int], None] = lambda n: None,
        secrets: Mapping[str, str] | None = None,
        on_note: Callable[[str], None] = lambda text: None,
    ):
        self.client = client
        self.state = state
        self.packages = packages
        self.on_bytes = on_bytes
        # Secret name -> value (kaio_spec.secrets.Secrets): added to a job's env in _fields, on
        # its way to the presign, and nowhere else (the state records no env).
        self.secrets = secrets or {}
        self._images: dict[tuple, ResolvedImage] = {}
        self._images_lock = threading.Lock()
        self.on_note = on_note
        self._notes: set[str] = set()
        self._bases: dict[str, str | None] = {}  # folder's content hash -> its base's sha256
        self._bases_lock = threading.Lock()
        self.stored_inputs = StoredInputs(client, on_bytes)

    def _image(self, job: PlannedJob) -> ResolvedImage:
        spec = job.spec
        key = (spec["instance_type"], spec["framework"], spec["framework_version"], job.directory)
        with self._images_lock:
            if key not in self._images:
                image = resolve_job_image(
                    *key[:3],
                    self.client.region,
                    requirements=job.directory / "requirements.txt",
                    warn=False,
                )
                self._images[key] = image
                for note in image.warnings:  # a nearest version: said once per apply
                    if note not in self._notes:
                        self._notes.add(note)
                        self.on_note(note)
            return self._images[key]

    def _base(self, job: PlannedJob) -> str | None:
        """The job's folder package as a base package on the server, uploaded once per run;
        None where the server has no base packages or refused this one (the jobs then upload
        their whole packages, which reports any problem with the folder job by job)."""
        folder = self.packages.folder_package(job)
        # By content: folders with the same files may share one base. (Not by sha256, which
        # reads the whole package, for nothing where the server has no base packages.)
        key = folder.content_hash
        with self._bases_lock:
            if key not in self._bases:
                try:
                    # Our progress, not the client's own bar, which would fight the live table.
                    self._bases[key] = self.client.upload_base(
                        folder, progress=False, on_bytes=self.on_bytes
                    )
                except (requests.RequestException, OSError):
                    self._bases[key] = None
            return self._bases[key]

    def _learn_features(self, job: PlannedJob) -> None:
        """Whether the platform stores inputs and links needs, before a package is made: the
        package holds what the platform will not provide (a re-upload after a crash too)."""
        if job.inputs or job.needs:
            features = self.client.features()
            self.packages.inputs_on_server = INPUTS in features
            self.packages.needs_linked = NEEDS_LINKS in features

    def _spec(self, job: PlannedJob, package: Package) -> JobSpec:
        """The job's spec with its secrets' values in its env, checked with its package."""
        env = dict(job.env)
        for variable, secret in job.secrets.items():
            if secret not in self.secrets:  # read_secrets checked them all before any submit
                raise FieldError(("env", variable), f"secret {secret} was not read")
            env[variable] = self.secrets[secret]
        spec = job.job_spec(env)
        check_package(package, spec)
        return spec

    def _prepare(self, job: PlannedJob, cancelled: Callable[[], bool]) -> Outcome | _Prepared:
        """Everything a submission needs before its intent is recorded, or why it cannot be."""
        try:
            self._learn_features(job)
            package = self.packages.job_package(job)
            spec = self._spec(job, package)
            image = self._image(job)
        except (ValueError, OSError) as e:  # FieldError and InvalidInput are ValueErrors
            return Outcome("invalid", error=str(e))
        if cancelled():
            return Outcome("cancelled")
        base = self._base(job)
        try:
            inputs = self.stored_inputs.send(job) if self.packages.inputs_on_server else None
            needs = linked_needs(job) if self.packages.needs_linked else None
        except (ValueError, OSError) as e:  # an S3 object or a file that cannot be read or sent
            return Outcome("invalid", error=f"inputs: {_short(e)}")
        if cancelled():
            return Outcome("cancelled")
        return _Prepared(package, spec, image, base, inputs, needs)

    def _record_intent(self, job: PlannedJob, known: list[str], **more: Any) -> None:
        intent = {"at": now_iso(), "known": sorted(known), "unique_job_name": None}
        self.state.set_intent(job.job_name, {**intent, "upload_url": None, **more})

    def submit(self, job: PlannedJob, known: list[str], cancelled: Callable[[], bool]) -> Outcome:
        """Package, record the intent, presign, record its answer, upload."""
        prepared = self._prepare(job, cancelled)
        if isinstance(prepared, Outcome):
            return prepared
        return self._submit_prepared(job, known, prepared)

    def _submit_prepared(self, job: PlannedJob, known: list[str], prepared: _Prepared) -> Outcome:
        package, spec, image, base, inputs, needs = prepared
        self._record_intent(job, known)
        self.state.commit()
        since = time.monotonic()
        try:
            presign = self.client.presign(
                package, spec, image=image, base_package=base, inputs=inputs, needs=needs
            )
        except (requests.ConnectionError, requests.Timeout) as e:
            return Outcome("uncertain", error=_short(e), since=since)
        except requests.HTTPError as e:
            code = e.response.status_code if e.response is not None else 0
            if code in UNCERTAIN_STATUSES:
                return Outcome("uncertain", error=_short(e), since=since)
            self.state.clear_intent(job.job_name)
            self.state.commit()
            if code in (401, 403):
                raise  # the key no longer works: nothing else will either
            return Outcome("invalid", error=str(e))
        except Exception as e:  # PlatformError (env not taken, answer unusable): it exists
            return Outcome("uncertain", error=_short(e), since=since)
        unique = presign["unique_job_name"]
        # Recorded with the URL: a re-upload (recover.py) must send what this answer asked for.
        on_base = base is not None and presign.get("base_package") == base
        self.state.update_intent(
            job.job_name,
            unique_job_name=unique,
            upload_url=presign["upload_url"],
            base_package=base if on_base else None,
        )
        self.state.commit()
        body = self.packages.job_overlay(job) if on_base else package
        return self.upload(job, unique, presign["upload_url"], body)

    def upload(
        self, job: PlannedJob, unique: str, url: str, body: Package | None = None
    ) -> Outcome:
        """PUT `body`: the job's package, or its overlay when its presign answer took a base
        package (None: made again, as the job's intent recorded). Safe to send again: the server
        takes the same bytes twice, and a 409 means it already has a package for the job, or the
        job moved on: either way nothing to upload."""
        since = time.monotonic()
        try:
            if body is None:
                self._learn_features(job)
                on_base = (self.state.intent(job.job_name) or {}).get("base_package")
                body = self.packages.job_overlay(job) if on_base else self.packages.job_package(job)
            self._put(url, body, unique)
        except requests.HTTPError as e:
            code = e.response.status_code if e.response is not None else 0
            if code != 409:
                return Outcome("unuploaded", unique, error=str(e), since=since, code=code)
        except (requests.RequestException, OSError) as e:
            return Outcome("unuploaded", unique, error=_short(e), since=since)
        except ValueError as e:
            return Outcome("invalid", unique, error=str(e))
        # Not committed here (one fsync per job fewer): the next job's commit before its presign
        # carries it, or the compaction at the end of the run. A run killed first leaves the
        # intent with its URL, and recover.py finds the job past Pending or uploads it again
        # (the server answers 409: it has its package): never a second job.
        self.state.add_attempt(job.job_name, unique)
        self.state.clear_intent(job.job_name)
        return Outcome("uploaded", unique)

    def bulk(self) -> bool:
        """Whether jobs go several to a request: the server offers POST /jobs/submit."""
        return self.client.offers(JOBS_SUBMIT)

    def submit_many(
        self, jobs: list[tuple[PlannedJob, list[str]]], cancelled: Callable[[], bool]
    ) -> list[Outcome]:
        """Submit several jobs (each with the unique_job_names it had before) in one POST
        /jobs/submit, where the server offers it (bulk() says): each job's overlay on its
        folder's base package goes with its presign fields. Every intent is recorded (one fsync
        for all) before the request, marked `bulk`: a job made by a request whose answer was
        lost already has its package (recover.py). A job that cannot go this way (no base
        package, a large overlay) is submitted alone, as submit() does; so is every job of a
        request the server refused as a whole. One Outcome per job, in order."""
        outcomes: list[Outcome | None] = [None] * len(jobs)
        batch: list[tuple[int, Submission]] = []
        for i, (job, known) in enumerate(jobs):
            prepared = self._prepare(job, cancelled)
            if isinstance(prepared, Outcome):
                outcomes[i] = prepared
                continue
            overlay = self._overlay_bytes(job, prepared.base)
            if overlay is None:
                outcomes[i] = self._submit_prepared(job, known, prepared)
                continue
            package, spec, image, base, inputs, needs = prepared
            assert base is not None  # _overlay_bytes: no overlay without a base
            batch.append((i, Submission(package, spec, image, base, overlay, inputs, needs)))
        if batch and cancelled():  # interrupted while the request was being made: nothing sent
            batch = []
        for i, _ in batch:
            self._record_intent(*jobs[i], bulk=True)
        if batch:
            self.state.commit()
            for (i, _), outcome in zip(batch, self._send_many(jobs, batch, cancelled), strict=True):
                outcomes[i] = outcome
        return [o if o is not None else Outcome("cancelled") for o in outcomes]

    def _overlay_bytes(self, job: PlannedJob, base: str | None) -> bytes | None:
        """The job's overlay, read whole, where it can go in a bulk request."""
        if base is None:
            return None
        overlay = self.packages.job_overlay(job)
        if overlay.size > catalog.MAX_SUBMIT_OVERLAY_BYTES:
            return None
        with overlay.open() as reader:
            return reader.read()

    def _send_many(
        self,
        jobs: list[tuple[PlannedJob, list[str]]],
        batch: list[tuple[int, Submission]],
        cancelled: Callable[[], bool],
    ) -> list[Outcome]:
        since = time.monotonic()
        try:
            answers = self.client.submit_overlays([sub for _, sub in batch])
        except (requests.ConnectionError, requests.Timeout) as e:
            return [Outcome("uncertain", error=_short(e), since=since) for _ in batch]
        except requests.HTTPError as e:
            code = e.response.status_code if e.response is not None else 0
            if code in UNCERTAIN_STATUSES or code >= 500:  # some jobs may have been made
                return [Outcome("uncertain", error=_short(e), since=since) for _ in batch]
            if code in (401, 403):
                raise  # the key no longer works: nothing else will either
            # Refused whole (nothing was made): each job alone says what is wrong with it.
            return [self.submit(*jobs[i], cancelled) for i, _ in batch]
        except Exception as e:  # PlatformError (an answer unusable): they may exist
            return [Outcome("uncertain", error=_short(e), since=since) for _ in batch]
        return [
            self._made(jobs[i][0], answer, jobs[i][1], cancelled)
            for (i, _), answer in zip(batch, answers, strict=True)
        ]

    def _made(
        self, job: PlannedJob, answer: dict, known: list[str], cancelled: Callable[[], bool]
    ) -> Outcome:
        """What one job of a bulk request came to. A job made, even one failed for its package
        (then its failure is the attempt's), is an attempt; one refused before it was made is
        invalid, or submitted alone where its base package was gone (409); one the platform
        could not make (5xx) is settled from the listing, as a lost answer is."""
        unique = answer.get("unique_job_name")
        if isinstance(unique, str):
            self.state.add_attempt(job.job_name, unique)
            self.state.clear_intent(job.job_name)
            return Outcome("uploaded", unique)
        error = answer.get("error")
        error = error if isinstance(error, dict) else {}
        status, message = error.get("status"), str(error.get("message") or "the API refused it")
        if isinstance(status, int) and status >= 500:  # the platform's trouble (a full disk):
            # the job may have been made and failed: the listing says (recover.py).
            return Outcome("uncertain", error=message, since=time.monotonic())
        self.state.clear_intent(job.job_name)
        if status == 409:
            return self.submit(job, known, cancelled)
        return Outcome("invalid", error=message)

    def _put(self, url: str, package: Package, unique: str) -> None:
        # Client.upload: retried on drops and 502/503/504, a body re-opened each try; our
        # progress (not the client's own bar, which would fight the live table).
        self.client.upload(unique, url, package, progress=False, on_bytes=self.on_bytes)


def _short(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."


__all__ = ["Outcome", "PackageCache", "Submitter", "now_iso"]
