"""JobSpec (kaio_spec/jobspec.py): a job's fields checked once, written as a presign body and read
back from one (the server's side) with the same rules."""

from __future__ import annotations

import pytest

from kaio_spec.images import ResolvedImage
from kaio_spec.jobspec import JobSpec
from kaio_spec.validation import FieldError

IMAGE = ResolvedImage("local", "pytorch", "2.3.0", gpu=False, python="py311", source="argument")


def test_a_presign_body_reads_back_as_the_spec_that_wrote_it():
    spec = JobSpec(
        job_name="train",
        instance_type="ml.g4dn.xlarge",
        instance_count=2,
        volume_size_gb=8,
        entrypoint="run.ipynb",
        env={"LR": "0.1"},
        max_runtime_hours=2.5,
        labels={"team": "a"},
    )
    body = spec.presign_body(IMAGE, base_package="a" * 64)
    assert body["job_spec"]["image_uri"] == "local" and body["base_package"] == "a" * 64
    assert JobSpec.from_presign_body(body) == spec
    plain = JobSpec.from_presign_body(JobSpec().presign_body(IMAGE))
    assert plain == JobSpec() and plain.env == {} and plain.labels == {}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"job_spec": {"instance_type": "ml.m5.large", "entrypoint": "t.py"}},
            "job_name: is required",
        ),
        ({"job_name": "j"}, "job_spec: is required"),
        ({"job_name": "j", "job_spec": []}, "job_spec: must be an object"),
        ({"job_name": "j", "job_spec": {"entrypoint": "t.py"}}, "instance_type: is required"),
        (
            {
                "job_name": "j",
                "job_spec": {"instance_type": "ml.m5.large", "entrypoint": "t.py"},
                "env": "",
            },
            "env: must be a mapping",
        ),
    ],
)
def test_a_presign_body_missing_or_wrong_names_the_field(body, message):
    with pytest.raises(FieldError, match=message):
        JobSpec.from_presign_body(body)


def test_the_server_default_runtime_applies_where_the_body_has_none():
    body = JobSpec().presign_body(IMAGE)
    del body["job_spec"]["max_runtime_hours"]
    assert JobSpec.from_presign_body(body, max_runtime_hours=24).max_runtime_hours == 24.0
