"""Job names: the display name a user reads, and the API job_name that identifies a job.

`job_name` is `<manifest>-<name>`, slugged to docs/protocol.md's rule (letters, digits and '-', at
most 63 characters, starting with a letter or digit; we also lowercase), ending in 8 hex digits of
a sha256 over everything that defines the job (identity_digest). When the slug is too long, its
middle is cut: the head keeps the manifest's name (the executor finds a manifest's jobs by that
prefix) and the tail keeps the end of the name, where the values that tell cells apart usually are.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from kaio_spec import catalog
from kaio_spec.planner.values import canonical_json

__all__ = ["HASH_CHARS", "identity_digest", "job_name", "slug"]

HASH_CHARS = 8
_BODY_MAX = catalog.JOB_NAME_MAX - HASH_CHARS - 1  # room for "-" and the hash
_HEAD = 26  # "<manifest (≤ 24)>-" and a little of the name
_NOT_SLUG = re.compile(r"[^a-z0-9]+")


def slug(text: str) -> str:
    """Lowercase letters and digits, every other run of characters one '-', none at the ends."""
    return _NOT_SLUG.sub("-", text.lower()).strip("-")


def job_name(manifest: str, name: str, digest: str) -> str:
    """`<manifest>-<name>` slugged, cut in the middle to fit, then `-<digest[:8]>`."""
    body = slug(f"{manifest}-{name}")
    if len(body) > _BODY_MAX:
        head = body[:_HEAD].rstrip("-")
        tail = body[-(_BODY_MAX - len(head) - 1) :].lstrip("-")
        body = f"{head}-{tail}"
    return f"{body}-{digest[:HASH_CHARS]}"


def identity_digest(identity: dict[str, Any]) -> str:
    """sha256 (hex) of the identity's canonical JSON: the same on every machine and Python."""
    return hashlib.sha256(canonical_json(identity).encode("utf-8")).hexdigest()
