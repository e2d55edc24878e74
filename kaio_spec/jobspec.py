"""A job's fields, checked once: what a submission asks the API for.

    spec = JobSpec(job_name="train", instance_type="ml.g4dn.xlarge", entrypoint="train.py")
    client.submit_package(package, spec)

Making a JobSpec checks every field by validation.py's rules, in the order the seed lists them,
and normalizes it (FieldError, a ValueError, names the first field that is wrong): a JobSpec that
exists is valid, so the client, the planner's jobs and the executor pass it along without
checking it again, as httpx builds a Request once and sends it. `presign_body` is the one place
that writes it as POST /jobs/presign's body (docs/protocol.md).

What a job runs on is not here: the package (its folder) and the container image, resolved from
`framework`/`framework_version` where the client knows the local installation (images.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kaio_spec import catalog, validation

if TYPE_CHECKING:
    from kaio_spec.images import ResolvedImage


@dataclass(frozen=True, kw_only=True)
class JobSpec:
    """The job's fields (the seed's submit_job keywords but `directory` and `input_data`).
    `env` and `labels` are plain dicts, copied when it is made; treat them as read-only."""

    job_name: str = "job"
    instance_type: str = catalog.DEFAULT_INSTANCE_TYPE
    instance_count: int = 1
    volume_size_gb: int = 5
    entrypoint: str = "train.py"
    framework: str | None = None
    framework_version: str | None = None
    # Left out of repr(): its values may be secrets (kaio_spec.secrets), never shown.
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    max_runtime_hours: float = 1
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # The seed's order: instance_type first, then the rest as its README lists them.
        checked = {
            "instance_type": validation.check_instance_type(self.instance_type).name,
            "job_name": validation.check_job_name(self.job_name),
            "instance_count": validation.check_instance_count(self.instance_count),
            "volume_size_gb": validation.check_volume_size(self.volume_size_gb),
            "entrypoint": validation.check_entrypoint_name(self.entrypoint),
            "env": validation.check_env(self.env),
            "max_runtime_hours": validation.check_max_runtime_hours(self.max_runtime_hours),
            "labels": validation.check_labels(self.labels),
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    def presign_body(self, image: ResolvedImage, base_package: str | None = None) -> dict:
        """POST /jobs/presign's body for this job, run in `image`."""
        job_spec = {
            "instance_type": self.instance_type,
            "instance_count": self.instance_count,
            "volume_size_gb": self.volume_size_gb,
            "entrypoint": self.entrypoint,
            "image_uri": image.uri,
            "framework": image.framework,
            "framework_version": image.framework_version,
            "max_runtime_hours": _hours(self.max_runtime_hours),
            "workflow": "processing",
        }
        body: dict[str, Any] = {"job_name": self.job_name, "job_spec": job_spec}
        if self.env:
            body["env"] = dict(self.env)
        if self.labels:
            body["labels"] = dict(self.labels)
        if base_package:
            body["base_package"] = base_package
        return body

    @classmethod
    def from_presign_body(cls, body: Mapping, *, max_runtime_hours: float = 1) -> JobSpec:
        """The JobSpec a presign body asks for: presign_body's other side, for the server.
        FieldError names what is missing or wrong. `max_runtime_hours`: where the body has none
        (the server's default differs from the client's). The image's fields are not a JobSpec's;
        the caller reads them from body["job_spec"]."""
        spec = _required(body, "job_spec")
        if not isinstance(spec, Mapping):
            raise validation.FieldError("job_spec", "must be an object")
        return cls(
            job_name=_required(body, "job_name"),
            instance_type=_required(spec, "instance_type"),
            instance_count=spec.get("instance_count", 1),
            volume_size_gb=spec.get("volume_size_gb", 5),
            entrypoint=_required(spec, "entrypoint"),
            # None (or absent) is none; anything but a mapping is refused by the checks.
            env=body.get("env"),  # type: ignore[arg-type]
            max_runtime_hours=spec.get("max_runtime_hours", max_runtime_hours),
            labels=body.get("labels"),  # type: ignore[arg-type]
        )


def _required(obj: Mapping, name: str) -> Any:
    if obj.get(name) is None:
        raise validation.FieldError(name, "is required")
    return obj[name]


def _hours(value: float) -> int | float:
    # 1, not 1.0, where it is whole: the seed sends what the user wrote.
    return int(value) if float(value).is_integer() else value


__all__ = ["JobSpec"]
