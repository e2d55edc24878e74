"""catalog.py holds the platform's facts as issue 2 states them; these tests restate them."""

from __future__ import annotations

import pytest

from kaio_spec import catalog

# (vCPUs, memory GiB, GPUs, GPU model, GPU memory GiB each), from issue 2's catalog section.
EXPECTED_TYPES = {
    "ml.m5.large": (2, 8, 0, None, 0),
    "ml.m5.xlarge": (4, 16, 0, None, 0),
    "ml.m5.2xlarge": (8, 32, 0, None, 0),
    "ml.m5.4xlarge": (16, 64, 0, None, 0),
    "ml.c5.large": (2, 4, 0, None, 0),
    "ml.c5.xlarge": (4, 8, 0, None, 0),
    "ml.c5.2xlarge": (8, 16, 0, None, 0),
    "ml.c5.4xlarge": (16, 32, 0, None, 0),
    "ml.g4dn.xlarge": (4, 16, 1, "NVIDIA T4", 16),
    "ml.g4dn.2xlarge": (8, 32, 1, "NVIDIA T4", 16),
    "ml.g4dn.4xlarge": (16, 64, 1, "NVIDIA T4", 16),
    "ml.g4dn.8xlarge": (32, 128, 1, "NVIDIA T4", 16),
    "ml.p3.2xlarge": (8, 61, 1, "NVIDIA V100", 16),
    "ml.p3.8xlarge": (32, 244, 4, "NVIDIA V100", 16),
    "ml.p3.16xlarge": (64, 488, 8, "NVIDIA V100", 16),
    "ml.g5.xlarge": (4, 16, 1, "NVIDIA A10G", 24),
    "ml.g5.2xlarge": (8, 32, 1, "NVIDIA A10G", 24),
    "ml.g5.4xlarge": (16, 64, 1, "NVIDIA A10G", 24),
    "ml.g5.8xlarge": (32, 128, 1, "NVIDIA A10G", 24),
}

# The seed README's "Supported Instance Types" lists, CPU then GPU.
SEED_CPU = "ml.m5.large ml.m5.xlarge ml.m5.2xlarge ml.m5.4xlarge ml.c5.large ml.c5.xlarge ml.c5.2xlarge ml.c5.4xlarge"
SEED_GPU = (
    "ml.g4dn.xlarge ml.g4dn.2xlarge ml.g4dn.4xlarge ml.g4dn.8xlarge ml.p3.2xlarge ml.p3.8xlarge "
    "ml.p3.16xlarge ml.g5.xlarge ml.g5.2xlarge ml.g5.4xlarge ml.g5.8xlarge"
)


def test_instance_types_are_the_seeds_with_the_issues_figures():
    assert set(catalog.INSTANCE_TYPES) == set(SEED_CPU.split()) | set(SEED_GPU.split())
    for name, (vcpus, mem, gpus, model, gmem) in EXPECTED_TYPES.items():
        t = catalog.INSTANCE_TYPES[name]
        assert (t.vcpus, t.memory_gb, t.gpus, t.gpu_model, t.gpu_memory_gb_each) == (
            vcpus,
            mem,
            gpus,
            model,
            gmem,
        ), name


@pytest.mark.parametrize("name", SEED_GPU.split())
def test_gpu_families_are_gpu(name):
    assert catalog.INSTANCE_TYPES[name].is_gpu


@pytest.mark.parametrize("name", SEED_CPU.split())
def test_cpu_families_are_cpu(name):
    assert not catalog.INSTANCE_TYPES[name].is_gpu


def test_c5_large_is_flagged_as_not_a_processing_type():
    assert {"ml.c5.large"} == catalog.NOT_ON_HOSTED_PROCESSING


def test_p3_8xlarge_gpu_memory_is_the_sum_of_its_gpus():
    assert catalog.INSTANCE_TYPES["ml.p3.8xlarge"].gpu_memory_gb == 64


def test_dlc_table_is_the_issues():
    rows = {
        (fw, v.version, v.python, v.cuda, v.os)
        for fw, vs in catalog.DLC_VERSIONS.items()
        for v in vs
    }
    assert rows == {
        ("pytorch", "2.1.0", "py310", "cu121", "ubuntu20.04"),
        ("pytorch", "2.2.0", "py310", "cu121", "ubuntu20.04"),
        ("pytorch", "2.3.0", "py311", "cu121", "ubuntu20.04"),
        ("pytorch", "2.4.0", "py311", "cu124", "ubuntu22.04"),
        ("pytorch", "2.5.1", "py311", "cu124", "ubuntu22.04"),
        ("pytorch", "2.6.0", "py312", "cu126", "ubuntu22.04"),
        ("pytorch", "2.7.1", "py312", "cu128", "ubuntu22.04"),
        ("pytorch", "2.8.0", "py312", "cu129", "ubuntu22.04"),
        ("tensorflow", "2.13.0", "py310", "cu118", "ubuntu20.04"),
        ("tensorflow", "2.14.1", "py310", "cu118", "ubuntu20.04"),
        ("tensorflow", "2.16.2", "py310", "cu123", "ubuntu20.04"),
        ("tensorflow", "2.18.0", "py310", "cu125", "ubuntu22.04"),
        ("tensorflow", "2.19.0", "py312", "cu125", "ubuntu22.04"),
    }


def test_dlc_image_uri_shapes():
    v = catalog.DLC_VERSIONS["pytorch"][0]
    assert catalog.dlc_image("pytorch", v, gpu=True) == (
        "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:"
        "2.1.0-gpu-py310-cu121-ubuntu20.04-sagemaker"
    )
    assert catalog.dlc_image("pytorch", v, gpu=False, region="eu-west-1") == (
        "763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch-training:"
        "2.1.0-cpu-py310-ubuntu20.04-sagemaker"
    )


def test_sklearn_images():
    assert catalog.SKLEARN_VERSIONS == ("0.23-1", "1.0-1", "1.2-1", "1.4-2")
    assert catalog.SKLEARN_ACCOUNTS == {
        "us-east-1": "683313688378",
        "us-east-2": "257758044811",
        "us-west-2": "246618743249",
        "eu-west-1": "141502667606",
        "eu-central-1": "492215442770",
    }
    assert catalog.sklearn_image("1.2-1") == (
        "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"
    )
    assert catalog.sklearn_image("1.0-1", "eu-central-1").startswith(
        "492215442770.dkr.ecr.eu-central-1."
    )


def test_limits_are_the_protocols():
    assert (catalog.MIN_VOLUME_GB, catalog.MAX_VOLUME_GB) == (1, 50)
    assert catalog.MIN_INSTANCE_COUNT == 1
    assert catalog.ENV_MAX_VARS == 50 and catalog.ENV_MAX_BYTES == 4096
    assert catalog.MAX_UPLOAD_BYTES == 5 * 1024**3
    assert catalog.AUTOMATIC_REQUIREMENTS == ("nbconvert", "psutil", "GPUtil")


@pytest.mark.parametrize(
    ("spelling", "expected"),
    [
        ("Pending", "Pending"),
        ("QUEUED", "Pending"),
        ("PROVISIONING", "Pending"),
        ("RUNNING", "InProgress"),
        ("InProgress", "InProgress"),
        ("inprogress", "InProgress"),
        ("STOPPING", "Stopping"),
        ("COMPLETED", "Completed"),
        ("completed", "Completed"),
        ("FAILED", "Failed"),
        ("TIMED_OUT", "Failed"),
        ("timed-out", "Failed"),
        ("STOPPED", "Stopped"),
    ],
)
def test_statuses_normalize_case_insensitively(spelling, expected):
    assert catalog.normalize_status(spelling) == expected


@pytest.mark.parametrize("status", ["Completed", "FAILED", "stopped", "TIMED_OUT"])
def test_final_statuses(status):
    assert catalog.is_final(status)


@pytest.mark.parametrize("status", ["Pending", "QUEUED", "RUNNING", "InProgress", "Stopping"])
def test_statuses_that_are_not_final(status):
    assert not catalog.is_final(status)
