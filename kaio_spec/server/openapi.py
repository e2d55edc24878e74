"""The shapes /openapi.json documents: pydantic models of the answers (never used to validate
or encode them: routes answer with JSON made as is, responses.ok) and the request bodies, which
bodies.read_json reads by hand so that each rejection names the field in words."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from kaio_spec import catalog


class ErrorOut(BaseModel):
    error: str


class HistoryOut(BaseModel):
    status: str
    at: str


class JobOut(BaseModel):
    unique_job_name: str
    job_name: str
    status: str
    timestamp: str
    start_time: str | None
    end_time: str | None
    failure_reason: str | None
    status_history: list[HistoryOut]
    instance_type: str
    instance_count: int
    volume_size_gb: int
    entrypoint: str
    image_uri: str | None
    workflow: str | None
    env_names: list[str]
    labels: dict[str, str]
    archived: bool
    data_deleted: bool


class JobListOut(BaseModel):
    jobs: list[JobOut]
    count: int


class ProjectOut(BaseModel):
    id: str
    name: str


class LoginOut(BaseModel):
    access_token: str
    exp: int
    project: ProjectOut


class PresignOut(BaseModel):
    unique_job_name: str
    upload_url: str
    s3_uri: str
    env_names: list[str]
    base_package: str | None = None  # only when the upload takes an overlay on it


class PackageOut(BaseModel):
    sha256: str
    size: int


class DownloadOut(BaseModel):
    output_files: list[tuple[str, str, str]]


class InstanceOut(BaseModel):
    instance_type: str
    vcpus: int
    memory_gb: int
    gpus: int
    gpu_memory_gb: int
    on_your_plan: bool


class InstancesOut(BaseModel):
    jobs: list[InstanceOut]


class InstanceTelemetryOut(BaseModel):
    host: str
    runtime_s: float | None = None
    exit_code: int | None = None
    cpu_seconds: float | None = None
    peak_cpu_percent: float | None = None
    peak_rss_bytes: int | None = None
    peak_gpu_util_percent: float | None = None
    peak_gpu_memory_mb: float | None = None
    samples: list[list[float | None]]


class TelemetryOut(BaseModel):
    unique_job_name: str
    status: str
    sample_fields: list[str]
    instances: list[InstanceTelemetryOut]


class HealthOut(BaseModel):
    status: str
    version: str
    features: list[str]
    jobs_confined: bool
    isolation: str


class SignInLinkOut(BaseModel):
    code: str
    expires_in: int


# Typed as FastAPI's `responses=` takes them (keys int or str, values any mapping).
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (400, 401, 403, 404, 409, 413)
}

LOGIN_BODY = {
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["api_key"],
                "properties": {"api_key": {"type": "string"}},
            }
        }
    },
    "required": True,
}
PRESIGN_BODY = {
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["job_name", "job_spec"],
                "properties": {
                    "job_name": {"type": "string", "pattern": catalog.JOB_NAME_RE.pattern},
                    "job_spec": {
                        "type": "object",
                        "required": ["instance_type", "entrypoint"],
                        "properties": {
                            "instance_type": {"enum": list(catalog.INSTANCE_TYPES)},
                            "instance_count": {
                                "type": "integer",
                                "minimum": catalog.MIN_INSTANCE_COUNT,
                                "maximum": catalog.MAX_INSTANCE_COUNT,
                            },
                            "volume_size_gb": {
                                "type": "integer",
                                "minimum": catalog.MIN_VOLUME_GB,
                                "maximum": catalog.MAX_VOLUME_GB,
                            },
                            "entrypoint": {"type": "string"},
                            "image_uri": {"type": "string"},
                            "framework": {"type": "string"},
                            "framework_version": {"type": "string"},
                            "max_runtime_hours": {
                                "type": "number",
                                "exclusiveMinimum": 0,
                                "maximum": catalog.MAX_RUNTIME_HOURS,
                            },
                            "workflow": {"type": "string"},
                        },
                    },
                    "env": {"type": "object", "additionalProperties": {"type": "string"}},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "base_package": {
                        "type": "string",
                        "description": "SHA-256 of a base package (docs/base-packages.md)",
                    },
                },
            }
        }
    },
    "required": True,
}
LINK_LOGIN_BODY = {
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["code"],
                "properties": {"code": {"type": "string"}},
            }
        }
    },
    "required": True,
}
