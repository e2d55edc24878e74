"""Checks of a job's fields, shared by the client (before anything is uploaded) and the server
(before anything is accepted). Each check raises `FieldError` naming the field and saying what
would be right; the rules themselves live in catalog.py."""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Mapping

from kaio_spec import catalog
from kaio_spec.errors import InvalidInput


class FieldError(InvalidInput):
    """One invalid field. `path` names it part by part (`("env", "MY VAR")`), `field` as one
    dotted string (`env.MY VAR`), `reason` says what would be right; str() is `field: reason`.
    Callers that place the error elsewhere (a manifest's line) read `path` and `reason`."""

    def __init__(self, field: str | tuple[str, ...], reason: str):
        self.path = (field,) if isinstance(field, str) else tuple(field)
        self.field = ".".join(self.path)
        self.reason = reason
        super().__init__(f"{self.field}: {reason}")


def closest_instance_types(name: str, n: int = 3) -> list[str]:
    """The supported instance types most like `name` (for "did you mean ...?")."""
    names = list(catalog.INSTANCE_TYPES)
    close = difflib.get_close_matches(name, names, n=n, cutoff=0.5)
    if close:
        return close
    # No near spelling: suggest the same size in other families, else the default.
    size = name.rsplit(".", 1)[-1]
    return [t for t in names if t.endswith("." + size)][:n] or [catalog.DEFAULT_INSTANCE_TYPE]


def check_instance_type(name: object) -> catalog.InstanceType:
    if not isinstance(name, str):
        raise FieldError(
            "instance_type", f"must be a string such as {catalog.DEFAULT_INSTANCE_TYPE!r}"
        )
    if name not in catalog.INSTANCE_TYPES:
        closest = ", ".join(closest_instance_types(name))
        raise FieldError(
            "instance_type", f"unknown instance type {name!r}; closest supported: {closest}"
        )
    return catalog.INSTANCE_TYPES[name]


def _check_int(field: str, value: object, low: int, high: int | None = None) -> int:
    # bool is an int in Python; True instances or volumes are always a mistake.
    if not isinstance(value, int) or isinstance(value, bool):
        raise FieldError(field, f"must be a whole number, got {value!r}")
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise FieldError(field, f"must be {bounds}, got {value}")
    return value


def check_instance_count(value: object) -> int:
    count = _check_int("instance_count", value, catalog.MIN_INSTANCE_COUNT)
    if count > catalog.MAX_INSTANCE_COUNT:
        raise FieldError(
            "instance_count",
            f"must be at most {catalog.MAX_INSTANCE_COUNT} (SageMaker Processing's limit), got {count}",
        )
    return count


def check_volume_size(value: object) -> int:
    return _check_int("volume_size_gb", value, catalog.MIN_VOLUME_GB, catalog.MAX_VOLUME_GB)


def check_max_runtime_hours(value: object) -> float:
    if isinstance(value, bool) or not (
        isinstance(value, int | float) and math.isfinite(value) and value > 0
    ):
        raise FieldError("max_runtime_hours", f"must be a number of hours above 0, got {value!r}")
    if value > catalog.MAX_RUNTIME_HOURS:
        raise FieldError(
            "max_runtime_hours",
            f"must be at most {catalog.MAX_RUNTIME_HOURS} hours (SageMaker Processing's "
            f"limit), got {value!r}",
        )
    return float(value)


def check_entrypoint_name(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise FieldError("entrypoint", "must be a file name such as 'train.py'")
    if "/" in value or "\\" in value or value in (".", ".."):
        raise FieldError(
            "entrypoint",
            f"{value!r} must be a file at the top of the directory, with no folder part",
        )
    if not value.endswith(catalog.ENTRYPOINT_SUFFIXES):
        raise FieldError("entrypoint", f"{value!r} must be a .py or .ipynb file")
    return value


def check_job_name(value: object) -> str:
    if not isinstance(value, str) or not catalog.JOB_NAME_RE.match(value):
        raise FieldError(
            "job_name",
            f"{value!r} must be 1-{catalog.JOB_NAME_MAX} letters, digits and '-', "
            "starting with a letter or digit",
        )
    return value


def check_env_name(name: object) -> str:
    if not isinstance(name, str) or not catalog.ENV_NAME_RE.match(name):
        raise FieldError(("env", str(name)), "names must match [A-Za-z_][A-Za-z0-9_]*")
    if name.startswith(catalog.ENV_RESERVED_PREFIXES):
        prefixes = ", ".join(catalog.ENV_RESERVED_PREFIXES)
        raise FieldError(("env", name), f"names starting with {prefixes} are reserved")
    if name in catalog.ENV_RESERVED_NAMES:
        raise FieldError(("env", name), "is reserved by the platform; choose another name")
    return name


def check_env(env: object) -> dict[str, str]:
    """Names by docs/protocol.md's rules; values must be strings. Values never appear in messages."""
    if env is None:
        return {}
    if not isinstance(env, Mapping):
        raise FieldError("env", "must be a mapping of variable names to string values")
    if len(env) > catalog.ENV_MAX_VARS:
        raise FieldError("env", f"at most {catalog.ENV_MAX_VARS} variables, got {len(env)}")
    for name, value in env.items():
        check_env_name(name)
        if not isinstance(value, str):
            raise FieldError(("env", name), f"value must be a string, got {type(value).__name__}")
    size = sum(len(k.encode()) + len(v.encode()) for k, v in env.items())
    if size > catalog.ENV_MAX_BYTES:
        raise FieldError("env", f"at most {catalog.ENV_MAX_BYTES} bytes in all, got {size}")
    return dict(env)


def check_labels(labels: object) -> dict[str, str]:
    if labels is None:
        return {}
    if not isinstance(labels, Mapping):
        raise FieldError("labels", "must be a mapping of strings to strings")
    if len(labels) > catalog.LABELS_MAX:
        raise FieldError("labels", f"at most {catalog.LABELS_MAX} labels, got {len(labels)}")
    for key, value in labels.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise FieldError(("labels", str(key)), "keys and values must be strings")
    size = len(json.dumps(labels).encode())
    if size > catalog.LABELS_MAX_BYTES:
        raise FieldError("labels", f"at most {catalog.LABELS_MAX_BYTES} bytes in all, got {size}")
    return dict(labels)


_SHA256 = re.compile(r"[0-9a-f]{64}")


def is_sha256(value: object) -> bool:
    """A base package's name (docs/base-packages.md): 64 lower-case hex digits."""
    return isinstance(value, str) and _SHA256.fullmatch(value) is not None


def package_fits_volume(package_bytes: int, volume_size_gb: int) -> bool:
    """The seed's rule, checked by the client before it uploads and by the server before it
    unpacks: a package may take at most half the volume (it is unpacked beside itself)."""
    return package_bytes * 2 <= volume_size_gb * 1024**3


def smallest_volume_for(package_bytes: int) -> int | None:
    """The smallest volume (GB) whose half holds the package, or None if even the largest can't."""
    needed = math.ceil(2 * package_bytes / 1024**3)
    needed = max(needed, catalog.MIN_VOLUME_GB)
    return needed if needed <= catalog.MAX_VOLUME_GB else None
