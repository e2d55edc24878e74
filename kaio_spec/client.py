"""The Kaio API client: the seed client's API (shared/seed/kaio-client-README.md), method for
method, over the wire protocol of docs/protocol.md.

    client = Client("https://api.kaion5.com").login(api_key)
    result = client.submit_job(directory="./my_code", job_name="train", entrypoint="train.py")
    client.get_job(result["unique_job_name"])["status"]

Exceptions are the seed's: ValueError for anything invalid (kaio_spec's FieldError and
InvalidInput are ValueErrors whose message names the field and says what would be right),
FileNotFoundError for a missing directory or entrypoint, RuntimeError from download_output when the
job has not ended, requests.HTTPError when the API refuses (its message carries the API's reason).
Everything is checked before anything is uploaded.

`submit_job` is `build_package` + `submit_package`; the executor calls those two itself so that
many jobs over one folder compress it once (packaging.Package.with_files). Against a server that
takes uploads of unknown length ("streamed-upload" in /healthz's features) submit_job presigns
first and uploads the package while it is being compressed (packaging.start_package), so that it
takes about as long as the longer of the two, not both.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import math
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import IO, Any, cast
from urllib.parse import quote

import requests

from kaio_spec import catalog, validation
from kaio_spec.errors import PlatformError
from kaio_spec.images import ResolvedImage, resolve_image
from kaio_spec.jobspec import JobSpec
from kaio_spec.packaging import Package, PackageBuild, build_package, start_package
from kaio_spec.statuses import JobStatus
from kaio_spec.transport import (
    DEFAULT_BACKOFF,
    DEFAULT_RETRIES,
    Transport,
    raise_for_status,
    read_timed_out,
    show_progress,
)
from kaio_spec.validation import FieldError

# Every client logs to "kaio_spec.client" (configure logging to see it); a verbose one to its
# child "kaio_spec.client.verbose", which prints to stderr itself.
LOGGER = "kaio_spec.client"
VERBOSE_LOGGER = LOGGER + ".verbose"

BASE_PACKAGES = "base-packages"  # the feature named in GET /healthz (docs/base-packages.md)
# The feature of a server that takes a package PUT of unknown length (chunked), as it is made.
STREAMED_UPLOAD = "streamed-upload"
# A package whose size bound (PackageBuild.size_bound: its files' bytes, generous headers and
# 64 KiB of slack) is at most this is made in milliseconds: it is finished, then sent with its
# size, which the local platform takes whole and unpacks in one go when it is small (cheaper for
# it than a body of unknown length, which it unpacks as it arrives: server/ingest.py).
SMALL_PACKAGE_BOUND = 256 * 1024
INPUTS = "inputs"  # the feature named in GET /healthz (docs/inputs.md)
NEEDS_LINKS = "needs-links"  # presign's `needs`: the platform links needed outputs itself
MAX_HASHES_ASKED = 10_000  # in one POST /files/missing
JOBS_STOP = "jobs-stop"  # the feature named in GET /healthz: POST /jobs/stop stops many jobs
JOBS_SUBMIT = "jobs-submit"  # the feature named in GET /healthz: POST /jobs/submit
FEATURES_TIMEOUT = (10, 10)  # seconds to connect, and to wait for /healthz's answer
RENEW_BEFORE_S = 60  # log in again when the token has less than this left (docs/protocol.md)


def refuse_input_data(input_data: object) -> None:
    """The seed documents input_data as "not implemented yet"; silently ignoring it would run
    the job without the data its author meant it to have."""
    if input_data is not None:
        raise FieldError(
            "input_data",
            "is not implemented yet; put the data in the job's directory, which is packaged "
            "with the code (leave large files out of it with .kaioignore)",
        )


def check_package(package: Package, spec: JobSpec) -> None:
    """What a package must be for `spec`: hold its entrypoint, and fit its volume."""
    if spec.entrypoint not in package.paths():
        raise FieldError("entrypoint", f"{spec.entrypoint!r} is not in the package")
    check_package_fits(package.size, spec.volume_size_gb)


def check_package_fits(package_bytes: int, volume_size_gb: int) -> None:
    """The seed's rule: a package may take at most half the volume (it is unpacked beside itself),
    and the upload limit is 5 GB. Raises FieldError naming the smallest volume that fits."""
    if package_bytes > catalog.MAX_UPLOAD_BYTES:
        raise FieldError(
            "directory",
            f"the package is {_size(package_bytes)}, over the {_size(catalog.MAX_UPLOAD_BYTES)} "
            "upload limit; leave data out of it with .kaioignore",
        )
    if validation.package_fits_volume(package_bytes, volume_size_gb):
        return
    needed = validation.smallest_volume_for(package_bytes)
    advice = (
        f"use volume_size_gb={needed} or more"
        if needed
        else f"no volume (at most {catalog.MAX_VOLUME_GB} GB) is large enough; leave data out "
        "of the package with .kaioignore"
    )
    raise FieldError(
        "volume_size_gb",
        f"the package is {_size(package_bytes)}, more than half of a {volume_size_gb} GB volume "
        f"(the job unpacks it on the volume); {advice}",
    )


def _size(n: int) -> str:
    if n >= 1024**3:
        return f"{n / 1024**3:.2f} GB"
    return f"{n / 1024**2:.1f} MB"


def _check_directory(directory: str | os.PathLike, entrypoint: str) -> None:
    path = Path(directory)
    if not path.exists():
        raise FileNotFoundError(f"directory {str(directory)!r} does not exist")
    if not path.is_dir():
        raise FileNotFoundError(f"directory {str(directory)!r} is not a directory")
    if not (path / entrypoint).is_file():
        raise FileNotFoundError(
            f"entrypoint {entrypoint!r} not found in {str(directory)!r}: it must be a file at "
            "the top of the directory"
        )


def _jwt_exp(token: str) -> float | None:
    """The `exp` claim of a JWT, read without verifying it (only to know when to renew)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"])
    except (IndexError, KeyError, TypeError, ValueError):
        return None


def _safe_output_path(root: Path, real_root: str, name: object) -> Path:
    """Where an output file named `name` goes under `root`, or PlatformError if it would land
    anywhere else: absolute paths, drive letters, backslashes, `..`, empty or `.` parts, and
    parents that resolve (through links already in output_dir) outside it."""
    bad = (
        not isinstance(name, str)
        or not name
        or "\0" in name
        or "\\" in name
        or name.startswith("/")
        or (len(name) > 1 and name[1] == ":")
        or any(part in ("", ".", "..") for part in name.split("/"))
    )
    if not bad and isinstance(name, str):  # (isinstance again: for the type checker)
        target = root.joinpath(*name.split("/"))
        parent = os.path.realpath(target.parent)
        bad = os.path.commonpath([parent, real_root]) != real_root
    if bad:
        raise PlatformError(
            f"the server listed an output file {name!r} that would land outside the output "
            "directory; nothing was downloaded"
        )
    return target


class Client:
    """The Kaio API client.

    Args:
        api_base: base URL of the Kaio API, e.g. "https://api.kaion5.com" or a `kaio server`'s URL.
        verbose: log each request (method, path, status, time; never a key, token, presigned URL
            or environment value) to stderr, and show a progress bar for large uploads.
        region: the AWS region whose container images jobs use (default us-east-1).
        retries, backoff: how often and how patiently to retry what is safe to retry
            (transport.py says what that is).
    """

    def __init__(
        self,
        api_base: str,
        verbose: bool = False,
        *,
        region: str | None = None,
        retries: int = DEFAULT_RETRIES,
        backoff: float = DEFAULT_BACKOFF,
    ):
        self.api_base = api_base.rstrip("/")
        self.verbose = verbose
        self.region = region or catalog.DEFAULT_REGION
        self.project: dict | None = None
        self._log = _verbose_logger() if verbose else logging.getLogger(LOGGER)
        self._transport = Transport(self.api_base, retries=retries, backoff=backoff, log=self._log)
        self._api_key: str | None = None
        self._jwt: str | None = None
        self._jwt_exp = 0.0
        self._clock_skew = 0.0  # server clock minus ours, from the Date header at login
        self._login_lock = threading.Lock()
        self._features: frozenset[str] | None = None

    def __repr__(self) -> str:  # never the key or the token
        state = "logged in" if self._jwt else "not logged in"
        return f"Client({self.api_base!r}, {state})"

    @property
    def session(self) -> requests.Session:
        """The one requests.Session every call goes through."""
        return self._transport.session

    # ---- authentication ---------------------------------------------------------------------

    def login(self, api_key: str) -> Client:
        """Exchange the API key for an access token (JWT). Returns self, for chaining.

        The token is renewed by logging in again when less than 60 s of it remain, and once after
        a 401. Raises requests.HTTPError if the key is refused (403)."""
        resp = self._transport.request("POST", "/login", json={"api_key": api_key})
        raise_for_status(resp)
        data = resp.json()
        token = data["access_token"]
        exp = data.get("exp") or _jwt_exp(token) or 0
        self._api_key, self._jwt, self._jwt_exp = api_key, token, float(exp)
        self.project = data.get("project")
        self._clock_skew = _clock_skew(resp)
        self._log.debug("logged in; token valid for %.0f s", self._token_left())
        return self

    def _token_left(self) -> float:
        return self._jwt_exp - (time.time() + self._clock_skew)

    def _bearer(self) -> dict[str, str]:
        if self._api_key is None:
            raise RuntimeError("not logged in: call client.login(api_key) first")
        if self._token_left() < RENEW_BEFORE_S:
            self._relogin(self._jwt)
        return {"Authorization": f"Bearer {self._jwt}"}

    def _relogin(self, stale: str | None) -> None:
        # Threads sharing a client renew once: whoever gets the lock second finds a new token.
        with self._login_lock:
            if self._jwt == stale:
                self._log.debug("renewing the access token")
                assert self._api_key is not None
                self.login(self._api_key)

    def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
        allow: tuple[int, ...] = (),
    ) -> requests.Response:
        """An authenticated API call, sent again once after a fresh login if the token was refused
        (a 401 means the request was not acted on). Raises HTTPError unless the status is < 400
        or in `allow`."""
        headers = self._bearer()
        resp = self._transport.request(method, path, headers=headers, json=json, params=params)
        if resp.status_code == 401:
            resp.close()
            self._relogin(headers["Authorization"].removeprefix("Bearer "))
            resp = self._transport.request(
                method, path, headers=self._bearer(), json=json, params=params
            )
        if resp.status_code not in allow:
            raise_for_status(resp)
        return resp

    # ---- submitting ---------------------------------------------------------------------------

    def submit_job(
        self,
        directory: str | os.PathLike = ".",
        job_name: str = "job",
        instance_type: str = catalog.DEFAULT_INSTANCE_TYPE,
        instance_count: int = 1,
        volume_size_gb: int = 5,
        entrypoint: str = "train.py",
        input_data: str | None = None,
        framework: str | None = None,
        framework_version: str | None = None,
        env: Mapping[str, str] | None = None,
        max_runtime_hours: float = 1,
        labels: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Package `directory`, upload it and start a job running `entrypoint` there.

        The container image is resolved from `framework`/`framework_version`, else from what is
        installed locally (images.py). `env` sets environment variables (names by docs/protocol.md's
        rules; values are never logged or echoed), `labels` tags the job (local platform).
        `input_data` is not implemented yet (as in the seed): anything but None is refused.

        Returns a dict with status ("uploaded"), job_name, unique_job_name, entrypoint, image_uri,
        framework, framework_version, env_names, content_hash and package_bytes.

        Raises ValueError (bad field, package over half the volume), FileNotFoundError (missing
        directory or entrypoint), requests.HTTPError (the API refused).
        """
        spec = JobSpec(
            job_name=job_name,
            instance_type=instance_type,
            instance_count=instance_count,
            volume_size_gb=volume_size_gb,
            entrypoint=entrypoint,
            framework=framework,
            framework_version=framework_version,
            env=env if env is not None else {},
            max_runtime_hours=max_runtime_hours,
            labels=labels if labels is not None else {},
        )
        refuse_input_data(input_data)
        _check_directory(directory, spec.entrypoint)
        image = self._image(spec)
        if self.offers(STREAMED_UPLOAD):
            with start_package(directory, spec.entrypoint) as building:
                return self._submit_streamed(building, image, spec)
        with build_package(directory, spec.entrypoint) as package:
            return self.submit_package(package, spec, image=image)

    def offers(self, feature: str) -> bool:
        """Whether the server lists `feature` in GET /healthz; False while it cannot be reached
        (the request that would use it then says what is wrong, as it would have)."""
        try:
            return feature in self.features()
        except requests.RequestException:
            return False

    def _submit_streamed(
        self, building: PackageBuild, image: ResolvedImage, spec: JobSpec
    ) -> dict[str, Any]:
        """submit_job's presign and upload while the package is being compressed. The volume
        check uses a bound on the package's size known from the scan; where only the compressed
        size could pass it, or the package is small (SMALL_PACKAGE_BOUND), it is finished first,
        as without streaming."""
        try:
            check_package_fits(building.size_bound, spec.volume_size_gb)
            finish_first = building.size_bound <= SMALL_PACKAGE_BOUND
        except FieldError:
            finish_first = True  # only the compressed size could pass the check
        if finish_first:
            return self.submit_package(building.result(), spec, image=image)
        self._warn_instance_type(spec.instance_type)
        presign = self._presign(spec, image)
        unique = presign["unique_job_name"]
        size_shown = show_progress(building.size_bound, self.verbose)
        try:
            self._put_package(unique, presign["upload_url"], building.open, None, size_shown)
        except Exception:
            failure = building.failed()
            if failure is None:
                raise
            # Nothing whole was uploaded: the job would wait for its package for ever.
            with contextlib.suppress(requests.RequestException):
                self.stop_job(unique)
            raise failure from None
        return self._submitted(spec, image, presign, building.result())

    def submit_package(
        self,
        package: Package,
        spec: JobSpec | None = None,
        *,
        image: ResolvedImage | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Submit an already built package (packaging.build_package, perhaps .with_files(...)):
        presign, then upload. The job's fields are `spec` (a JobSpec), or keywords that make one
        (job_name=, instance_type=, ... as submit_job's; `entrypoint` defaults to the package's).
        `image` (images.resolve_image) wins over framework/framework_version. Returns what
        submit_job returns.

        Recovering from a lost presign answer: this method never retries POST /jobs/presign (a
        retry could create a second job). If it raises requests.ConnectionError, or an HTTPError
        with 502/503/504, the job may or may not exist: look for it by job_name (and labels) in
        get_jobs(); one still Pending was never uploaded and never starts.
        """
        spec, image = self._check_submission(package, spec, fields, image)
        self._warn_instance_type(spec.instance_type)
        presign = self._presign(spec, image)
        self.upload(presign["unique_job_name"], presign["upload_url"], package)
        return self._submitted(spec, image, presign, package)

    @staticmethod
    def _warn_instance_type(instance_type: str) -> None:
        if instance_type in catalog.NOT_ON_HOSTED_PROCESSING:
            warnings.warn(
                f"{instance_type} is not a SageMaker Processing instance type: the local "
                "platform runs it, the hosted platform may refuse it (ml.c5.xlarge is the "
                "smallest c5 it offers)",
                UserWarning,
                stacklevel=3,
            )

    @staticmethod
    def _submitted(
        spec: JobSpec, image: ResolvedImage, presign: dict[str, Any], package: Package
    ) -> dict[str, Any]:
        """submit_package's and submit_job's answer."""
        return {
            "status": "uploaded",
            "job_name": spec.job_name,
            "unique_job_name": presign["unique_job_name"],
            "entrypoint": spec.entrypoint,
            "image_uri": image.uri,
            "framework": image.framework,
            "framework_version": image.framework_version,
            "env_names": sorted(presign.get("env_names") or []),
            "content_hash": package.content_hash,
            "package_bytes": package.size,
        }

    def presign(
        self,
        package: Package,
        spec: JobSpec | None = None,
        *,
        image: ResolvedImage | None = None,
        base_package: str | None = None,
        inputs: Mapping[str, Mapping[str, str]] | None = None,
        needs: Mapping[str, str] | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """The first half of submit_package, for a caller that must record the answer before it
        uploads (the executor's state file): checks everything exactly as submit_package does
        (the same arguments, the same exceptions, before anything is sent), then asks the API for
        a job and where to upload its package. Nothing is uploaded; `upload` does that.

        Returns the API's presign answer: unique_job_name, upload_url (a presigned URL: a
        credential, never log it), s3_uri and env_names. The job stays Pending, and never starts,
        until its package is uploaded. Unlike submit_package it does not warn about instance types
        the hosted platform may refuse.

        `base_package`: the SHA-256 of a base package the server holds (upload_base), of which
        `package` is the folder plus per-job files. Only when the answer carries the same
        `base_package` does the upload take those per-job files alone (Package.overlay); without
        it, upload the whole `package` (docs/base-packages.md).

        `inputs`: {name: {path: sha256}}, files the server holds already (upload_input_files),
        which the job sees read-only at inputs/<name>/<path> (docs/inputs.md; a server with the
        "inputs" feature only). `needs`: {path under inputs/: unique_job_name}, completed jobs
        of the caller's whose outputs the platform links there (the "needs-links" feature).

        Never retried, as submit_package's docstring says: after requests.ConnectionError, or an
        HTTPError with 502/503/504, the job may or may not exist (look for it by job_name in
        get_jobs()). PlatformError: the API's answer is unusable, or it did not take the job's
        environment variables (the job exists but should not be uploaded).
        """
        spec, image = self._check_submission(package, spec, fields, image)
        if base_package is not None and not validation.is_sha256(base_package):
            raise FieldError("base_package", "must be a SHA-256: 64 lower-case hex digits")
        return self._presign(spec, image, base_package, inputs, needs)

    def features(self) -> frozenset[str]:
        """The protocol extensions the server lists in GET /healthz (a local-platform route; the
        hosted API has none, so: nothing). Asked once per client. A server that takes the request
        but does not answer within FEATURES_TIMEOUT (each try) lists nothing. Raises
        requests.ConnectionError when the server cannot be reached (nothing is remembered then)."""
        if self._features is None:
            # A short read timeout: a server that never answers a route it lacks must not hold
            # the first submission for the usual five minutes.
            try:
                resp = self._transport.request("GET", "/healthz", timeout=FEATURES_TIMEOUT)
                listed = resp.json().get("features") if resp.status_code == 200 else None
            except (ValueError, AttributeError):
                listed = None  # an answer, but not one listing features
            except requests.ConnectionError as e:
                if not read_timed_out(e):
                    raise
                listed = None  # reached, but silent on this route: no extensions
            self._features = frozenset(
                f for f in (listed if isinstance(listed, list) else []) if isinstance(f, str)
            )
        return self._features

    def upload_base(
        self,
        package: Package,
        *,
        progress: bool | None = None,
        on_bytes: Callable[[int], None] | None = None,
    ) -> str | None:
        """Makes `package` a base package on the server (docs/base-packages.md, a local-platform
        extension), so that jobs over the same folder upload only their own files: presign with
        `base_package=` the returned SHA-256, then upload `package.overlay(...)` when the answer
        echoes it. Uploads nothing when the server already holds it.

        Returns the package's SHA-256, or None when the server does not offer base packages (it
        answers 404 to both routes). `progress` and `on_bytes` as for upload. Raises
        requests.HTTPError if the server refuses the package, requests.ConnectionError or Timeout
        once the retries are spent."""
        if BASE_PACKAGES not in self.features():
            return None
        sha = package.sha256()
        path = f"/packages/{sha}"
        if self._call("GET", path, allow=(404,)).status_code == 200:
            return sha
        self._log.debug("uploading base package %s (%d bytes)", sha[:12], package.size)

        try:
            self._transport.put_stream(
                self._transport.url(path),
                _body_opener(package, on_bytes),
                package.size,
                progress=show_progress(package.size, self.verbose)
                if progress is None
                else progress,
                description="base package",
                headers=self._bearer(),  # renewed first when it is about to expire
            )
        except requests.HTTPError as e:
            if e.response is not None and e.response.status_code == 404:
                return None  # no such route: the server has no base packages
            raise
        return sha

    def upload_input_files(
        self,
        files: Mapping[str, tuple[str, int]],
        *,
        on_bytes: Callable[[int], None] | None = None,
    ) -> int:
        """Sends the server the input files it lacks (docs/inputs.md, a local-platform extension):
        `files` maps each SHA-256 to (a local path holding those bytes, their size). Asks which
        are missing, then PUTs those alone, each retried as upload is. Returns the bytes sent.
        Raises requests.HTTPError when refused (404: the server has no "inputs" feature)."""
        hashes = sorted(files)
        missing: list[str] = []
        for i in range(0, len(hashes), MAX_HASHES_ASKED):
            asked = hashes[i : i + MAX_HASHES_ASKED]
            answer = self._call("POST", "/files/missing", json={"sha256": asked}).json()
            missing += [h for h in answer.get("missing", []) if h in files]
        sent = 0
        for sha in missing:
            path, size = files[sha]
            self._log.debug("uploading input file %s (%d bytes)", sha[:12], size)
            self._transport.put_stream(
                self._transport.url(f"/files/{sha}"),
                _file_opener(path, on_bytes),
                size,
                description="input file",
                headers=self._bearer(),
            )
            sent += size
        return sent

    def upload(
        self,
        unique_job_name: str,
        upload_url: str,
        package: Package,
        *,
        progress: bool | None = None,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        """The second half of submit_package: PUT `package` to the `upload_url` that presign
        answered for `unique_job_name`, which starts the job.

        Safe to send again (after a crash, or with the URL read back from a state file): the
        stream is re-opened and re-sent on a dropped connection, a timeout or a 502/503/504, and a
        409 to a re-sent try counts as success when the job has moved past Pending (the try whose
        answer was lost went through). `progress`: show a progress bar (default: when verbose and
        the package is large); `on_bytes(n)` is called as each n bytes are read for sending.

        Raises requests.HTTPError if the upload is refused (a 409 to a first try: the server
        already has a package for this job, or it has moved on), requests.ConnectionError or
        Timeout once the retries are spent.
        """
        size = package.size
        self._log.debug("uploading %d bytes (content %s)", size, package.content_hash[:12])
        show = show_progress(size, self.verbose) if progress is None else progress
        self._put_package(unique_job_name, upload_url, _body_opener(package, on_bytes), size, show)

    def _put_package(
        self,
        unique_job_name: str,
        upload_url: str,
        open_body: Callable[[], IO[bytes]],
        size: int | None,
        progress: bool,
    ) -> None:
        """upload's PUT of a package of `size` bytes (None: not known yet, sent as it is made)."""

        def went_through(resp: requests.Response) -> bool:
            # A retried PUT refused with 409: the try whose answer was lost may have been taken
            # (the URL is ours alone, so nobody else uploads). A job past Pending has its package.
            if resp.status_code != 409:
                return False
            status = catalog.normalize_status(str(self.get_job(unique_job_name).get("status")))
            return status != JobStatus.PENDING

        self._transport.put_stream(
            upload_url, open_body, size, progress=progress, accept_after_retry=went_through
        )

    def _check_submission(
        self,
        package: Package,
        spec: JobSpec | None,
        fields: dict[str, Any],
        image: ResolvedImage | None,
    ) -> tuple[JobSpec, ResolvedImage]:
        """presign's and submit_package's checks, before anything is sent: the job's spec (made
        from `fields` when not given) and its image."""
        if spec is None:
            if fields.get("entrypoint") is None:
                fields["entrypoint"] = package.entrypoint or "train.py"
            spec = JobSpec(**fields)
        elif fields:
            raise TypeError(
                f"give the job's fields as a JobSpec or as keywords, not both: {fields}"
            )
        check_package(package, spec)
        return spec, image or self._image(spec)

    def _image(self, spec: JobSpec) -> ResolvedImage:
        return resolve_image(
            spec.instance_type, spec.framework, spec.framework_version, self.region
        )

    def _presign(
        self,
        spec: JobSpec,
        image: ResolvedImage,
        base_package: str | None = None,
        inputs: Mapping[str, Mapping[str, str]] | None = None,
        needs: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        self._log.debug(
            "presign %s: %s x%d, image %s, env names %s",
            spec.job_name,
            spec.instance_type,
            spec.instance_count,
            image.uri,
            sorted(spec.env),
        )
        body = _presign_body(spec, image, base_package, inputs, needs)
        # Not retried by the transport (a POST): see submit_package's docstring.
        presign = self._call("POST", "/jobs/presign", json=body).json()
        _check_presign_answer(presign, spec)
        return presign

    def submit_overlays(self, submissions: list[Submission]) -> list[dict[str, Any]]:
        """(local, feature `jobs-submit`: check features() first) Many jobs made in one request,
        each with its package: its `overlay` on a base package the server holds (upload_base),
        as presign then upload would make it (docs/protocol.md). For a sweep's cells, whose
        overlays are a few hundred bytes each, this is one request for up to 100 jobs instead of
        two per job.

        Returns one answer per submission, in order: the presign answer (unique_job_name,
        upload_url, s3_uri, env_names, base_package) and `etag` for a job made with its
        package; for one refused, `error` ({"status", "message"}), with unique_job_name where
        the job was made and then failed for its package. Checks each submission as presign
        does, before anything is sent. Never retried: after requests.ConnectionError, or an
        HTTPError with 502/503/504, any of the jobs may or may not exist (look for them by
        job_name in get_jobs()). PlatformError: the answer is unusable."""
        items = []
        for sub in submissions:
            spec, image = self._check_submission(sub.package, sub.spec, {}, sub.image)
            if not validation.is_sha256(sub.base_package):
                raise FieldError("base_package", "must be a SHA-256: 64 lower-case hex digits")
            body = _presign_body(spec, image, sub.base_package, sub.inputs, sub.needs)
            body["package"] = base64.b64encode(sub.overlay).decode("ascii")
            items.append(body)
        answer = self._call("POST", "/jobs/submit", json={"jobs": items}).json()
        made = answer.get("jobs") if isinstance(answer, dict) else None
        if not isinstance(made, list) or len(made) != len(items):
            raise PlatformError("the API's answer to POST /jobs/submit is not one per job")
        for sub, one in zip(submissions, made, strict=True):
            if not isinstance(one, dict):
                raise PlatformError("the API's answer to POST /jobs/submit is not one per job")
            if "error" not in one:
                _check_presign_answer(one, sub.spec)
        return made

    # ---- jobs -----------------------------------------------------------------------------------

    def get_jobs(self, include_archived: bool = False) -> dict[str, Any]:
        """Your jobs, newest first: {"jobs": [...], "count": N} (the seed's signature, kept)."""
        return self.query_jobs(include_archived=include_archived)

    def query_jobs(
        self,
        *,
        include_archived: bool = False,
        job_name: str | None = None,
        labels: list[str] | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> dict[str, Any]:
        """get_jobs() narrowed on a server with the `jobs-filters` feature (GET /healthz; a
        server without it ignores them and lists everything): one `job_name`, `labels` as
        "key=value" strings that must all match, at most `limit` jobs after the unique name
        `after` (paging)."""
        query = {"job_name": job_name, "label": labels, "limit": limit, "after": after}
        params: dict[str, Any] = {"include_archived": "true"} if include_archived else {}
        params.update((k, v) for k, v in query.items() if v is not None)
        return self._call("GET", "/jobs", params=params or None).json()

    def get_job(self, unique_job_name: str) -> dict[str, Any]:
        """One job: status, timestamp, start_time, end_time, failure_reason, status_history, and
        what it was submitted with. Raises requests.HTTPError (404) if there is no such job of
        yours."""
        return self._call("GET", f"/jobs/status/{_seg(unique_job_name)}").json()

    def stop_job(self, unique_job_name: str) -> dict[str, Any]:
        """Ask a job to stop; returns the job, now Stopping. HTTPError 409 if it already ended."""
        return self._call("POST", f"/jobs/{_seg(unique_job_name)}/stop").json()

    def stop_jobs(
        self, unique_job_names: list[str] | None = None, *, labels: list[str] | None = None
    ) -> dict[str, Any]:
        """Stop many jobs with one request, where the server lists the `jobs-stop` feature
        (GET /healthz; the hosted API has none: use stop_job): at most 500 `unique_job_names`,
        or every running job of yours with all the `labels` ("key=value" strings). Returns
        {"jobs": [{"unique_job_name", "job_name", "status", "outcome"}, ...], "unknown": [names
        that are no job of yours], "count": N}; outcome is "stopping" or "ended" (it had ended
        already). Stopping a job twice is harmless."""
        body = (
            {"labels": labels}
            if unique_job_names is None
            else {"unique_job_names": unique_job_names}
        )
        return self._call("POST", "/jobs/stop", json=body).json()

    def delete_job_data(self, unique_job_name: str) -> dict[str, Any]:
        """Delete a job's package, logs and outputs now rather than after the retention period."""
        return self._call("DELETE", f"/jobs/{_seg(unique_job_name)}/data").json()

    def archive_job(self, unique_job_name: str) -> dict[str, Any]:
        """Hide a job from get_jobs() (get_jobs(include_archived=True) still lists it)."""
        return self._call("POST", f"/jobs/{_seg(unique_job_name)}/archive").json()

    def restore_job(self, unique_job_name: str) -> dict[str, Any]:
        """Show an archived job in get_jobs() again."""
        return self._call("POST", f"/jobs/{_seg(unique_job_name)}/restore").json()

    def get_logs(
        self,
        unique_job_name: str,
        host: str = "algo-1",
        offset: int = 0,
        stream: str = "stdout",
    ) -> tuple[bytes, int]:
        """A running or ended job's log bytes for one instance (`host`: algo-1, algo-2, ...) and
        `stream` ("stdout" or "stderr"), from byte `offset`; returns them and the offset to ask
        from next (X-Next-Offset). No bytes: nothing new yet, or, once the job has ended, the end.
        Served in pieces: ask again from the next offset until no bytes come.

        A local platform's route (docs/protocol.md). Raises requests.HTTPError: 404 if there is no such
        job of yours, or if the server has no logs route (the hosted API: a job's logs come with
        its outputs, download_output), 400 if the job has no such host or stream."""
        resp = self._call(
            "GET",
            f"/jobs/{_seg(unique_job_name)}/logs",
            params={"host": host, "offset": str(offset), "stream": stream},
        )
        data = resp.content
        try:
            next_offset = int(resp.headers.get("X-Next-Offset", offset + len(data)))
        except ValueError:
            next_offset = offset + len(data)
        return data, next_offset

    def download_output(
        self, unique_job_name: str, output_dir: str | os.PathLike = "."
    ) -> list[Path]:
        """Download an ended job's output files and logs into `output_dir`, keeping their
        relative paths. Returns the paths written.

        Each file is streamed to a temporary name and renamed into place. A listed path that
        would land outside output_dir (absolute, `..`, through a link) makes it refuse the whole
        listing (PlatformError) before writing anything. Raises RuntimeError if the job has not
        ended, requests.HTTPError if the API refuses.
        """
        resp = self._call("GET", f"/jobs/download/{_seg(unique_job_name)}", allow=(400, 409))
        if resp.status_code in (400, 409):
            status = catalog.normalize_status(str(self.get_job(unique_job_name).get("status")))
            if not catalog.is_final(status):
                raise RuntimeError(
                    f"job {unique_job_name} has not ended (status {status}); its outputs can be "
                    "downloaded once it is Completed, Failed or Stopped"
                )
            raise_for_status(resp)
        listing = resp.json().get("output_files") or []
        root = Path(output_dir)
        root.mkdir(parents=True, exist_ok=True)
        real_root = os.path.realpath(root)
        plan = []
        for item in listing:
            if not isinstance(item, list | tuple) or len(item) < 3 or not isinstance(item[2], str):
                raise PlatformError(f"the server's output listing has an unusable entry: {item!r}")
            plan.append((_safe_output_path(root, real_root, item[0]), item[2]))
        written = []
        for target, url in plan:
            target.parent.mkdir(parents=True, exist_ok=True)
            # Checked again now that folders exist: a file listed earlier cannot have made one a
            # link, but a concurrent writer could have.
            _safe_output_path(root, real_root, target.relative_to(root).as_posix())
            size = self._transport.download(url, target)
            self._log.debug("downloaded %s (%d bytes)", target, size)
            written.append(target)
        return written


def _body_opener(
    package: Package, on_bytes: Callable[[int], None] | None
) -> Callable[[], IO[bytes]]:
    """Opens the package afresh for each try of an upload, counting bytes if asked."""

    def open_body() -> IO[bytes]:
        # A RawIOBase and a wrapper of it: file objects, which typeshed keeps apart from IO[bytes]
        body = cast("IO[bytes]", package.open())
        return body if on_bytes is None else cast("IO[bytes]", _Counting(body, on_bytes))

    return open_body


def _file_opener(path: str, on_bytes: Callable[[int], None] | None) -> Callable[[], IO[bytes]]:
    def open_body() -> IO[bytes]:
        body = open(path, "rb")  # noqa: SIM115 (put_stream closes it, as it does a package's)
        return body if on_bytes is None else cast("IO[bytes]", _Counting(body, on_bytes))

    return open_body


class _Counting:
    """A package stream that reports the bytes read (upload's on_bytes)."""

    def __init__(self, stream: IO[bytes], advance: Callable[[int], None]):
        self._stream = stream
        self._advance = advance

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._stream.close()

    def read(self, n: int = -1) -> bytes:
        data = self._stream.read(n)
        if data:
            self._advance(len(data))
        return data


def _seg(name: str) -> str:
    """A job name as one URL path segment (a hostile or mistaken name cannot change the route)."""
    return quote(str(name), safe="")


def _clock_skew(resp: requests.Response) -> float:
    date = resp.headers.get("Date")
    if not date:
        return 0.0
    try:
        skew = parsedate_to_datetime(date).timestamp() - time.time()
    except (TypeError, ValueError):
        return 0.0
    # The Date header has one-second resolution; only a real difference is worth correcting.
    return skew if math.fabs(skew) > 5 else 0.0


def _verbose_logger() -> logging.Logger:
    """verbose=True: a logger that prints this client's debug lines to stderr (set up once)."""
    log = logging.getLogger(VERBOSE_LOGGER)
    if not log.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("kaio: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.DEBUG)
        log.propagate = False  # printed here; not again by whatever the application configured
    return log


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (it may have been replaced since the handler
    was made, by a test runner or an application), as logging's own last-resort handler does."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


@dataclass(frozen=True)
class Submission:
    """One job of Client.submit_overlays: its whole `package` (checked as presign checks it),
    the SHA-256 of the base package it extends and the `overlay` bytes it adds to that base
    (Package.overlay, read whole: a few hundred bytes for a sweep's cell)."""

    package: Package
    spec: JobSpec
    image: ResolvedImage
    base_package: str
    overlay: bytes
    inputs: Mapping[str, Mapping[str, str]] | None = None
    needs: Mapping[str, str] | None = None


def _presign_body(
    spec: JobSpec,
    image: ResolvedImage,
    base_package: str | None,
    inputs: Mapping[str, Mapping[str, str]] | None,
    needs: Mapping[str, str] | None,
) -> dict[str, Any]:
    body = spec.presign_body(image, base_package)
    if inputs:  # docs/inputs.md
        body["inputs"] = {name: dict(files) for name, files in inputs.items()}
    if needs:
        body["needs"] = dict(needs)
    return body


def _check_presign_answer(presign: dict[str, Any], spec: JobSpec) -> None:
    for key in ("unique_job_name", "upload_url"):
        if not isinstance(presign.get(key), str):
            raise PlatformError(f"the API's presign answer lacks {key!r}")
    taken = set(presign.get("env_names") or [])
    if spec.env and taken != set(spec.env):
        # Uploading would start a job without the variables its code expects.
        raise PlatformError(
            f"the API did not take the job's environment variables (it took "
            f"{sorted(taken)}), so {presign['unique_job_name']} was not uploaded and will "
            "not start"
        )
