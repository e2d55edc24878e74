"""`s3://bucket/prefix` inputs (docs/inputs.md), through boto3 (the `s3` extra).

boto3 finds the applying user's credentials, region and endpoint as every AWS tool does (the
environment, ~/.aws, AWS_ENDPOINT_URL); they stay on the user's machine: the objects are fetched
here and uploaded like local files, so the platform never holds an AWS credential. Objects are
cached by ETag under $XDG_CACHE_HOME/kaio/s3 (~/.cache/kaio/s3): an unchanged object is fetched once.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from kaio_spec.errors import InvalidInput


def _client():
    try:
        import boto3  # type: ignore[import-untyped]  # (boto3 ships no type hints)
    except ImportError:
        raise InvalidInput(
            "s3:// inputs need boto3: pip install 'kaio-spec[s3]' (or pip install boto3)"
        ) from None
    return boto3.client("s3")


def split(uri: str) -> tuple[str, str]:
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    if not bucket:
        raise InvalidInput(f"{uri!r} names no bucket: write s3://<bucket>/<prefix>")
    return bucket, prefix


def list_files(uri: str) -> tuple:
    """The objects under the URI's prefix as InputFiles (path relative to the prefix, ETag)."""
    from botocore.exceptions import (  # type: ignore[import-untyped]
        BotoCoreError,
        ClientError,
    )

    from kaio_spec.datasets import InputFile

    bucket, prefix = split(uri)
    found = []
    try:
        pages = _client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            for obj in page.get("Contents", []):
                key = obj["Key"]
                rel = key[len(prefix) :].lstrip("/") if prefix else key
                if rel and not key.endswith("/"):
                    etag = obj["ETag"].strip('"')
                    found.append(InputFile(rel, obj["Size"], None, s3_key=key, etag=etag))
    except (BotoCoreError, ClientError) as e:
        raise InvalidInput(f"cannot list {uri}: {e}") from None
    if not found:
        raise InvalidInput(f"{uri} holds no objects")
    return tuple(sorted(found, key=lambda f: f.path))


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "kaio" / "s3"


def fetch(uri: str, f) -> str:
    """A local path holding the object `f` (an InputFile) as its ETag says: fetched unless cached."""
    bucket, _ = split(uri)
    name = hashlib.sha256(f"{bucket}\0{f.s3_key}\0{f.etag}".encode()).hexdigest()
    path = cache_dir() / name
    if path.is_file() and path.stat().st_size == f.size:
        return str(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f"{name}.part-{os.getpid()}")
    try:
        # IfMatch: the bytes of the version listed (identity), never a newer one.
        obj = _client().get_object(Bucket=bucket, Key=f.s3_key, IfMatch=f'"{f.etag}"')
        with open(part, "wb") as out:
            for chunk in obj["Body"].iter_chunks(1024 * 1024):
                out.write(chunk)
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)
    return str(path)
