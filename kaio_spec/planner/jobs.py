"""What the planner produces: a `Plan` of `PlannedJob`s, typed and resolved, ready to submit.

The executor consumes these as they are: `job_spec()` for the client, `params_json()` for
the package, `labels` for the server, `job_name` as the identity to look up before submitting, and
`action`, which it replaces (dataclasses.replace) once it has compared with what the API has.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from kaio_spec.datasets import Dataset
from kaio_spec.jobspec import JobSpec
from kaio_spec.manifest import Manifest
from kaio_spec.planner.needs import NeededJob, Waiting

__all__ = ["SPEC_KEYS", "Action", "Plan", "PlannedJob"]

# A planned job's spec, in this order (the shape `kaio plan -o json` prints).
SPEC_KEYS = (
    "directory",
    "entrypoint",
    "instance_type",
    "instance_count",
    "volume_size_gb",
    "framework",
    "framework_version",
    "max_runtime_hours",
    "env",
    "params",
    "retries",
)


class Action(str, Enum):
    """What apply would do with a planned job. Offline, every job is `create`; the executor
    compares with what the API has and sets the others (`rerun` and `replace-requested` only
    when asked: executor/observe.py's `request`)."""

    CREATE = "create"
    UNCHANGED = "unchanged"
    RETRY = "retry"
    REPLACE = "replace"
    RERUN = "rerun"  # kaio apply --rerun-failed: a new attempt of a job that failed for good
    REPLACE_REQUESTED = "replace-requested"  # kaio apply --replace: a new attempt, as asked

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class PlannedJob:
    """One job of a plan, resolved: nothing in it is a template any more.

    `key` and `index`: the manifest's job key and this job's position among that key's jobs
    (`job.index` in templates). `name`: the display name; `job_name`: the API's job name (its
    identity: same manifest and code, same job_name). `matrix`: the cell (matrix values and
    sweep draws; `{}` for a plain job), `matrix_text` the same as written (`lr=0.00001`).
    `spec`: SPEC_KEYS in order, `directory` absolute; framework, framework_version and
    max_runtime_hours are None when not given. `content_hash`: the packaged folder's, as
    packaging.build_package(directory, entrypoint, exclude=package_exclude) reports it (without
    params.json).
    `outputs`: where the results go. `labels`: for the server (manifest, key, name, cell).
    `package_exclude`: paths inside `directory` never packaged: where the manifest downloads
    outputs (its outputs root and every job's outputs folder that lie inside it), so a download
    never changes the folder's content hash, and the manifests and `.env` file beside the
    manifest, so editing them changes no job; pass it to build_package(exclude=...).
    `secrets`: env variable -> the secret that sets it; the values are read when the job is
    submitted (kaio_spec.secrets) and never held here: submit_arguments() leaves them out.
    `needs`: the jobs (every cell) it runs after, and where their outputs go in its working
    folder (planner/needs.py); their job_names are part of its identity.
    Containers are plain JSON data; treat them as read-only.
    """

    key: str
    index: int
    name: str
    job_name: str
    matrix: dict[str, Any]
    matrix_text: str
    spec: dict[str, Any]
    content_hash: str
    outputs: Path
    labels: dict[str, str]
    action: Action = Action.CREATE
    package_exclude: tuple[str, ...] = ()
    secrets: dict[str, str] = field(default_factory=dict)
    needs: tuple[NeededJob, ...] = ()
    inputs: tuple[Dataset, ...] = ()  # `inputs:`, read (kaio_spec.datasets); digests in identity

    @property
    def needed_keys(self) -> list[str]:
        """The keys of the jobs it needs, in the order written."""
        return list(dict.fromkeys(n.key for n in self.needs))

    @property
    def directory(self) -> Path:
        return Path(self.spec["directory"])

    @property
    def entrypoint(self) -> str:
        return self.spec["entrypoint"]

    @property
    def env(self) -> dict[str, str]:
        return self.spec["env"]

    @property
    def params(self) -> dict[str, Any]:
        return self.spec["params"]

    @property
    def retries(self) -> int:
        return self.spec["retries"]

    def described_spec(self) -> dict[str, Any]:
        """The spec with each input's content in short (what `kaio plan` compares to say why a
        job is replaced: changed data shows as `~ inputs.<name>`)."""
        if not self.inputs:
            return dict(self.spec)
        inputs = {
            d.name: f"{d.digest[:12]} ({len(d.files)} files, {d.size} bytes)" for d in self.inputs
        }
        return {**self.spec, "inputs": inputs}

    def params_json(self) -> str:
        """The params.json the executor adds to this job's package."""
        return json.dumps(self.params, indent=2, ensure_ascii=False, allow_nan=False) + "\n"

    def submit_arguments(self) -> dict[str, Any]:
        """Keyword arguments for Client.submit_package (or submit_job, with directory=...):
        everything but the package. max_runtime_hours is left out when the manifest has none."""
        s = self.spec
        args: dict[str, Any] = {
            "job_name": self.job_name,
            "instance_type": s["instance_type"],
            "instance_count": s["instance_count"],
            "volume_size_gb": s["volume_size_gb"],
            "entrypoint": s["entrypoint"],
            "framework": s["framework"],
            "framework_version": s["framework_version"],
            "env": dict(s["env"]),
            "labels": dict(self.labels),
        }
        if s["max_runtime_hours"] is not None:
            args["max_runtime_hours"] = s["max_runtime_hours"]
        return args

    def job_spec(self, env: Mapping[str, str] | None = None) -> JobSpec:
        """What the client submits, checked (FieldError if anything is wrong). `env`: the job's
        variables with its secrets' values added (the executor reads them at submit time)."""
        args = self.submit_arguments()
        if env is not None:
            args["env"] = env
        return JobSpec(**args)

    def to_json(self) -> dict[str, Any]:
        """The job as `kaio plan -o json` prints it."""
        return {
            "key": self.key,
            "name": self.name,
            "job_name": self.job_name,
            "matrix": self.matrix,
            "spec": self.spec,
            "action": self.action.value,
            **({"secrets": dict(self.secrets)} if self.secrets else {}),
            **({"needs": self.needed_keys} if self.needs else {}),
            **({"inputs": {d.name: d.source for d in self.inputs}} if self.inputs else {}),
        }


@dataclass(frozen=True)
class Plan:
    """What a manifest means: its jobs stage by stage (a job after those it needs; each stage
    in manifest order, each key's cells in order). `waiting`: jobs whose templates read the
    outputs of jobs they need, planned once those have completed (planner/needs.py)."""

    manifest: Manifest
    jobs: tuple[PlannedJob, ...]
    waiting: tuple[Waiting, ...] = ()

    def __iter__(self) -> Iterator[PlannedJob]:
        return iter(self.jobs)

    def __len__(self) -> int:
        return len(self.jobs)

    def to_json(self) -> dict[str, Any]:
        """`{"manifest", "file", "jobs": [...]}`, the shape `kaio plan -o json` prints."""
        return {
            "manifest": self.manifest.name,
            "file": self.manifest.file,
            "jobs": [job.to_json() for job in self.jobs],
            **({"waiting": [w.to_json() for w in self.waiting]} if self.waiting else {}),
        }
