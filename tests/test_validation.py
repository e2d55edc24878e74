"""validation.py: each check's exact message (the client raises these before anything is
uploaded, the server answers them as 400s)."""

from __future__ import annotations

import pytest

from kaio_spec import validation
from kaio_spec.errors import InvalidInput
from kaio_spec.validation import FieldError


def message(fn, *args) -> str:
    with pytest.raises(FieldError) as e:
        fn(*args)
    assert isinstance(e.value, ValueError) and isinstance(e.value, InvalidInput)
    return str(e.value)


def test_field_error_names_its_field():
    e = FieldError("volume_size_gb", "must be between 1 and 50, got 80")
    assert e.field == "volume_size_gb"
    assert str(e) == "volume_size_gb: must be between 1 and 50, got 80"
    assert e.path == ("volume_size_gb",) and e.reason == "must be between 1 and 50, got 80"


def test_field_error_carries_its_path_and_reason_apart():
    # A name with a dot in it stays one part: callers place the error by `path`, not by
    # splitting the message back apart.
    with pytest.raises(FieldError) as e:
        validation.check_env({"my.var": "x"})
    assert e.value.path == ("env", "my.var") and e.value.field == "env.my.var"
    assert e.value.reason == "names must match [A-Za-z_][A-Za-z0-9_]*"
    assert str(e.value) == "env.my.var: names must match [A-Za-z_][A-Za-z0-9_]*"


@pytest.mark.parametrize(
    ("name", "closest"),
    [
        ("ml.g4dn.xlarg", "ml.g4dn.xlarge"),
        ("ml.m5.larg", "ml.m5.large"),
        ("ml.p3.2xlarg", "ml.p3.2xlarge"),
    ],
)
def test_unknown_instance_type_names_the_closest(name, closest):
    text = message(validation.check_instance_type, name)
    assert text.startswith(f"instance_type: unknown instance type {name!r}; closest supported: ")
    assert closest in text.split("closest supported: ")[1].split(", ")


def test_unknown_family_suggests_the_same_size_elsewhere():
    assert "ml.p3.16xlarge" in validation.closest_instance_types("ml.zz9.16xlarge")


def test_nothing_alike_suggests_the_default():
    assert message(validation.check_instance_type, "big") == (
        "instance_type: unknown instance type 'big'; closest supported: ml.m5.large"
    )


def test_instance_type_must_be_a_string():
    assert message(validation.check_instance_type, 5) == (
        "instance_type: must be a string such as 'ml.m5.large'"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, "volume_size_gb: must be between 1 and 50, got 0"),
        (51, "volume_size_gb: must be between 1 and 50, got 51"),
        (True, "volume_size_gb: must be a whole number, got True"),
        (5.5, "volume_size_gb: must be a whole number, got 5.5"),
    ],
)
def test_volume_size(value, expected):
    assert message(validation.check_volume_size, value) == expected


@pytest.mark.parametrize("value", [1, 5, 50])
def test_volume_sizes_accepted(value):
    assert validation.check_volume_size(value) == value


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, "instance_count: must be at least 1, got 0"),
        (-3, "instance_count: must be at least 1, got -3"),
        (101, "instance_count: must be at most 100 (SageMaker Processing's limit), got 101"),
        ("2", "instance_count: must be a whole number, got '2'"),
    ],
)
def test_instance_count(value, expected):
    assert message(validation.check_instance_count, value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            "src/train.py",
            "entrypoint: 'src/train.py' must be a file at the top of the directory, with no folder part",
        ),
        ("train.sh", "entrypoint: 'train.sh' must be a .py or .ipynb file"),
        ("", "entrypoint: must be a file name such as 'train.py'"),
        ("..", "entrypoint: '..' must be a file at the top of the directory, with no folder part"),
    ],
)
def test_entrypoint_name(value, expected):
    assert message(validation.check_entrypoint_name, value) == expected


@pytest.mark.parametrize("value", ["train.py", "analysis.ipynb"])
def test_entrypoint_names_accepted(value):
    assert validation.check_entrypoint_name(value) == value


@pytest.mark.parametrize("value", ["-job", "a" * 64, "has space", "", "job_1"])
def test_job_name(value):
    assert message(validation.check_job_name, value) == (
        f"job_name: {value!r} must be 1-63 letters, digits and '-', starting with a letter or digit"
    )


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"1X": "v"}, "env.1X: names must match [A-Za-z_][A-Za-z0-9_]*"),
        ({"A-B": "v"}, "env.A-B: names must match [A-Za-z_][A-Za-z0-9_]*"),
        (
            {"SM_HOSTS": "v"},
            "env.SM_HOSTS: names starting with SM_, SAGEMAKER_, KAIO_ are reserved",
        ),
        (
            {"SAGEMAKER_X": "v"},
            "env.SAGEMAKER_X: names starting with SM_, SAGEMAKER_, KAIO_ are reserved",
        ),
        (
            {"KAIO_TOKEN": "v"},
            "env.KAIO_TOKEN: names starting with SM_, SAGEMAKER_, KAIO_ are reserved",
        ),
        ({"PATH": "v"}, "env.PATH: is reserved by the platform; choose another name"),
        ({"LD_PRELOAD": "v"}, "env.LD_PRELOAD: is reserved by the platform; choose another name"),
        ({"LR": 0.1}, "env.LR: value must be a string, got float"),
        ({f"V{i}": "x" for i in range(51)}, "env: at most 50 variables, got 51"),
        ({"BIG": "x" * 4094}, "env: at most 4096 bytes in all, got 4097"),
        (["LR"], "env: must be a mapping of variable names to string values"),
    ],
)
def test_env(env, expected):
    assert message(validation.check_env, env) == expected


def test_env_messages_never_contain_values():
    secret = "s3cr3t-value-do-not-print"
    text = message(validation.check_env, {"SM_TOKEN": secret})
    assert secret not in text


def test_env_accepted():
    assert validation.check_env(None) == {}
    assert validation.check_env({"LR": "0.1", "_X": ""}) == {"LR": "0.1", "_X": ""}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, "max_runtime_hours: must be a number of hours above 0, got 0"),
        (float("inf"), "max_runtime_hours: must be a number of hours above 0, got inf"),
        (
            1e308,
            "max_runtime_hours: must be at most 216 hours (SageMaker Processing's limit), "
            "got 1e+308",
        ),
        ("1", "max_runtime_hours: must be a number of hours above 0, got '1'"),
    ],
)
def test_max_runtime_hours(value, expected):
    assert message(validation.check_max_runtime_hours, value) == expected


def test_labels():
    assert validation.check_labels({"cell": "lr=0.1"}) == {"cell": "lr=0.1"}
    assert message(validation.check_labels, {"a": 1}) == "labels.a: keys and values must be strings"
    assert message(validation.check_labels, {str(i): "x" for i in range(21)}) == (
        "labels: at most 20 labels, got 21"
    )


@pytest.mark.parametrize(
    ("package_bytes", "volume"),
    [
        (0, 1),
        (512 * 1024**2, 1),
        (512 * 1024**2 + 1, 2),
        (2 * 1024**3, 4),
        (int(2.5 * 1024**3), 5),
        (int(2.5 * 1024**3) + 1, 6),
        (25 * 1024**3, 50),
    ],
)
def test_smallest_volume_for(package_bytes, volume):
    assert validation.smallest_volume_for(package_bytes) == volume


def test_no_volume_fits_a_huge_package():
    assert validation.smallest_volume_for(25 * 1024**3 + 1) is None


def test_a_package_fits_in_half_its_volume_and_not_a_byte_more():
    """One rule for the client (before it uploads) and the server (before it unpacks)."""
    half = 1024**3 // 2
    assert validation.package_fits_volume(half, 1)
    assert not validation.package_fits_volume(half + 1, 1)
    assert validation.package_fits_volume(half + 1, 2)
    # The smallest volume it names is one the package fits in.
    assert validation.package_fits_volume(half + 1, validation.smallest_volume_for(half + 1))
