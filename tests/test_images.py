"""images.py: framework detection from package metadata, and the image each case resolves to.

Locally installed frameworks are real distributions: a folder on sys.path with a
`<name>-<version>.dist-info/METADATA`, and next to it an importable package that raises if
anything imports it (detection must read metadata, never import a framework).
"""

from __future__ import annotations

import sys
import warnings

import pytest

from kaio_spec import images
from kaio_spec.validation import FieldError

DLC = "763104351884.dkr.ecr.us-east-1.amazonaws.com"
SKL = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn"
PY = images.local_python()


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """installed("torch", "2.5.0"): makes that distribution visible to importlib.metadata."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))

    def install(dist: str, version: str, module: str | None = None) -> None:
        info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        pkg = site / (module or dist.replace("-", "_"))
        pkg.mkdir(exist_ok=True)
        (pkg / "__init__.py").write_text("raise ImportError('a framework was imported')\n")

    return install


def resolve(*args, **kwargs) -> images.ResolvedImage:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return images.resolve_image(*args, **kwargs)


def test_nothing_installed_cpu_gets_the_newest_sklearn():
    r = resolve("ml.m5.large")
    assert r.uri == f"{SKL}:1.4-2-cpu-py3"
    assert (r.framework, r.framework_version, r.gpu, r.source) == (
        "sklearn",
        "1.4-2",
        False,
        "default",
    )


def test_nothing_installed_gpu_gets_pytorch_for_the_local_python():
    r = resolve("ml.g4dn.xlarge")
    assert r.framework == "pytorch" and r.gpu
    same_python = [v for v in images.catalog.DLC_VERSIONS["pytorch"] if v.python == PY]
    if same_python:
        assert r.python == PY
        assert r.framework_version == same_python[-1].version
    assert "-gpu-" in r.uri and r.uri.endswith("-sagemaker")


@pytest.mark.parametrize(
    ("instance_type", "device"),
    [
        ("ml.g4dn.xlarge", "gpu"),
        ("ml.p3.2xlarge", "gpu"),
        ("ml.g5.8xlarge", "gpu"),
        ("ml.m5.large", "cpu"),
        ("ml.c5.4xlarge", "cpu"),
    ],
)
def test_cpu_or_gpu_from_the_instance_family(instance_type, device):
    r = resolve(instance_type, "pytorch", "2.1.0")
    suffix = (
        "gpu-py310-cu121-ubuntu20.04-sagemaker"
        if device == "gpu"
        else "cpu-py310-ubuntu20.04-sagemaker"
    )
    assert r.uri == f"{DLC}/pytorch-training:2.1.0-{suffix}"


def test_seed_tensorflow_example():
    r = resolve("ml.p3.2xlarge", "tensorflow", "2.13.0")
    assert r.uri == f"{DLC}/tensorflow-training:2.13.0-gpu-py310-cu118-ubuntu20.04-sagemaker"
    assert r.warnings == ()


def test_detects_torch_from_metadata_without_importing_it(installed):
    installed("torch", "2.4.0")
    r = resolve("ml.g5.xlarge")
    assert r.uri == f"{DLC}/pytorch-training:2.4.0-gpu-py311-cu124-ubuntu22.04-sagemaker"
    assert (r.source, r.requested_version) == ("local", "2.4.0")
    assert "torch" not in sys.modules


def test_local_build_suffix_is_ignored(installed):
    installed("torch", "2.6.0+cu126")
    r = resolve("ml.m5.large")
    assert r.framework_version == "2.6.0" and r.warnings == ()


def test_torch_wins_over_tensorflow_and_sklearn(installed):
    installed("scikit-learn", "1.2.2", module="sklearn")
    installed("tensorflow", "2.16.2")
    installed("torch", "2.2.0")
    assert resolve("ml.m5.large").framework == "pytorch"


def test_tensorflow_variant_distribution(installed):
    installed("tensorflow-cpu", "2.18.0", module="tensorflow")
    r = resolve("ml.m5.xlarge")
    assert r.uri == f"{DLC}/tensorflow-training:2.18.0-cpu-py310-ubuntu22.04-sagemaker"


def test_sklearn_detected_uses_its_major_minor_image(installed):
    installed("scikit-learn", "1.2.2", module="sklearn")
    r = resolve("ml.m5.large")
    assert r.uri == f"{SKL}:1.2-1-cpu-py3"
    assert r.warnings == ()


def test_local_version_missing_from_the_table_resolves_to_the_nearest_with_a_warning(installed):
    installed("torch", "2.5.0")
    with pytest.warns(
        UserWarning,
        match=r"pytorch 2\.5\.0 \(installed here\) has no SageMaker image; using the nearest, 2\.5\.1",
    ):
        r = images.resolve_image("ml.m5.large")
    assert r.framework_version == "2.5.1"


@pytest.mark.parametrize(
    ("framework", "asked", "chosen"),
    [
        ("pytorch", "2.9.0", "2.8.0"),  # newer than any: the newest
        ("pytorch", "2.0.1", "2.1.0"),  # older than any: the oldest
        ("pytorch", "2.4.1", "2.4.0"),  # same major.minor
        ("tensorflow", "2.15.0", "2.14.1"),  # the newest below
        ("tensorflow", "2.17", "2.16.2"),
        ("sklearn", "1.3.0", "1.2-1"),
        ("sklearn", "1.6.1", "1.4-2"),
        ("sklearn", "0.20.0", "0.23-1"),
    ],
)
def test_nearest_version(framework, asked, chosen):
    with pytest.warns(UserWarning, match="has no SageMaker image; using the nearest"):
        r = images.resolve_image("ml.m5.large", framework, asked)
    assert r.framework_version == chosen


@pytest.mark.parametrize(
    ("asked", "chosen"), [("2.5", "2.5.1"), ("1.2", "1.2-1"), ("1.2-1", "1.2-1")]
)
def test_major_minor_asked_is_exact(asked, chosen):
    framework = "sklearn" if asked.startswith("1.") else "pytorch"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert images.resolve_image("ml.m5.large", framework, asked).framework_version == chosen


def test_explicit_framework_wins_over_the_local_one(installed):
    installed("torch", "2.4.0")
    r = resolve("ml.m5.large", "tensorflow", "2.19.0")
    assert r.uri == f"{DLC}/tensorflow-training:2.19.0-cpu-py312-ubuntu22.04-sagemaker"
    assert r.source == "argument"


def test_explicit_framework_takes_the_local_version(installed):
    installed("tensorflow", "2.14.1")
    r = resolve("ml.m5.large", "tensorflow")
    assert (r.framework_version, r.source) == ("2.14.1", "local")


def test_explicit_framework_without_a_local_version_takes_the_newest_for_this_python():
    r = resolve("ml.m5.large", "pytorch")
    assert r.framework == "pytorch" and r.source == "argument"


def test_version_without_framework_applies_to_the_local_one(installed):
    installed("torch", "2.4.0")
    assert resolve("ml.m5.large", framework_version="2.7.1").framework_version == "2.7.1"


def test_version_without_any_framework_is_an_error():
    with pytest.raises(FieldError) as e:
        images.resolve_image("ml.m5.large", framework_version="2.1.0")
    assert str(e.value) == (
        "framework_version: '2.1.0' given without a framework, and none is installed here to "
        "apply it to; pass framework= too (one of pytorch, tensorflow, sklearn)"
    )


@pytest.mark.parametrize(
    ("alias", "canonical"),
    [
        ("torch", "pytorch"),
        ("PyTorch", "pytorch"),
        ("tf", "tensorflow"),
        ("scikit-learn", "sklearn"),
    ],
)
def test_framework_aliases(alias, canonical):
    assert resolve("ml.m5.large", alias).framework == canonical


def test_unknown_framework():
    with pytest.raises(FieldError) as e:
        images.resolve_image("ml.m5.large", "jax")
    assert str(e.value) == "framework: must be one of pytorch, tensorflow, sklearn, got 'jax'"


def test_not_a_version():
    with pytest.raises(FieldError) as e:
        images.resolve_image("ml.m5.large", "pytorch", "latest")
    assert str(e.value) == "framework_version: 'latest' is not a version number such as '2.1.0'"


def test_sklearn_asked_for_on_a_gpu_is_an_error_that_says_why():
    with pytest.raises(FieldError) as e:
        images.resolve_image("ml.g4dn.xlarge", "sklearn")
    assert str(e.value) == (
        "framework: scikit-learn images are CPU-only, and ml.g4dn.xlarge is a GPU instance; pick "
        "a CPU instance type (ml.m5.*, ml.c5.*) or framework='pytorch' or 'tensorflow'"
    )


def test_sklearn_merely_installed_on_a_gpu_falls_back_to_pytorch_with_a_warning(installed):
    installed("scikit-learn", "1.4.2", module="sklearn")
    with pytest.warns(UserWarning, match="scikit-learn is installed here but has CPU images only"):
        r = images.resolve_image("ml.g4dn.xlarge")
    assert r.framework == "pytorch" and r.gpu


def test_unknown_instance_type():
    with pytest.raises(FieldError, match=r"^instance_type: unknown instance type 'ml\.m5\.huge'"):
        images.resolve_image("ml.m5.huge")


def test_region_override():
    assert resolve("ml.m5.large", "pytorch", "2.1.0", region="eu-west-1").uri.startswith(
        "763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch-training:2.1.0-cpu"
    )
    assert resolve("ml.m5.large", "sklearn", "1.0-1", region="us-west-2").uri == (
        "246618743249.dkr.ecr.us-west-2.amazonaws.com/sagemaker-scikit-learn:1.0-1-cpu-py3"
    )


def test_sklearn_in_an_unknown_region():
    with pytest.raises(FieldError, match=r"^region: no scikit-learn images known for 'ap-south-1'"):
        images.resolve_image("ml.m5.large", "sklearn", region="ap-south-1")


# ---- a job's requirements.txt pins first (issue 13) -------------------------------------------


@pytest.mark.parametrize(
    ("text", "pinned"),
    [
        ("torch==2.3.0\n", ("pytorch", "2.3.0")),
        ("numpy\nTorch == 2.3.0  # cuda build\n", ("pytorch", "2.3.0")),
        ("tensorflow-cpu==2.16.2\n", ("tensorflow", "2.16.2")),
        ("-r base.txt\nscikit_learn==1.2.2\n", ("sklearn", "1.2.2")),
        ("scikit-learn==1.2.2\ntorch==2.5.0\n", ("pytorch", "2.5.0")),
        ("torch>=2.3\n", None),
        ("torch==2.*\n", None),
        ("torch==2.3.0,<3\n", None),
        ("not a requirement ===\n", None),
        ("", None),
    ],
)
def test_the_framework_a_requirements_file_pins(tmp_path, text, pinned):
    path = tmp_path / "requirements.txt"
    path.write_text(text)
    assert images.pinned_framework(path) == pinned


def test_a_job_pinning_torch_gets_that_pytorch_image_whatever_else_is_said(tmp_path, installed):
    installed("scikit-learn", "1.2.2", module="sklearn")
    (tmp_path / "requirements.txt").write_text("torch==2.3.0\n")
    r = images.resolve_job_image(
        "ml.m5.large", "tensorflow", None, requirements=tmp_path / "requirements.txt"
    )
    assert r.uri == f"{DLC}/pytorch-training:2.3.0-cpu-py311-ubuntu20.04-sagemaker"
    assert (r.source, r.warnings) == ("requirements", ())
    # Without the file: the manifest's framework, then what is installed here.
    assert resolve("ml.m5.large", "tensorflow", "2.16.2").framework == "tensorflow"
    assert images.resolve_job_image("ml.m5.large", requirements=tmp_path / "none.txt").uri == (
        f"{SKL}:1.2-1-cpu-py3"
    )


def test_a_scikit_learn_pin_on_a_gpu_instance_is_left_out(tmp_path):
    (tmp_path / "requirements.txt").write_text("scikit-learn==1.2.2\n")
    r = images.resolve_job_image(
        "ml.g4dn.xlarge", "pytorch", "2.1.0", requirements=tmp_path / "requirements.txt"
    )
    assert (r.framework, r.framework_version) == ("pytorch", "2.1.0")


def test_notices_are_not_warnings_when_asked_not_to_warn(installed):
    installed("torch", "2.5.0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = images.resolve_image("ml.m5.large", warn=False)
    assert r.warnings == (
        "pytorch 2.5.0 (installed here) has no SageMaker image; using the nearest, 2.5.1",
    )
