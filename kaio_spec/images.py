"""Which SageMaker container image a job runs in.

    resolve_image(instance_type, framework=None, framework_version=None) -> ResolvedImage
    resolve_job_image(instance_type, framework, framework_version, requirements=path)

For a job (resolve_job_image), what its own requirements.txt pins comes first: `torch==2.3.0`
there means the PyTorch 2.3.0 image, whatever the manifest or this machine says, since that is
what the job installs. Then (resolve_image) the framework and its version come from, in order:
the caller (`framework`, `framework_version`: the manifest's),
else what is installed locally, read from package metadata (torch, then tensorflow, then
scikit-learn; never imported: importing torch to read its version takes seconds). With nothing
installed, a CPU instance gets the newest scikit-learn image (the seed's fallback for general ML
work) and a GPU instance the newest PyTorch image built for the local Python, else the newest.

CPU or GPU comes from the instance type (families starting with g or p carry GPUs). A version the
tables (catalog.py) lack resolves to the nearest one they have, with a warning: the same
major.minor if there is one, else the newest below it, else the oldest. scikit-learn has CPU
images only: asking for it on a GPU instance is an error; scikit-learn merely found installed
on a GPU instance yields the PyTorch image, with a warning.
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from kaio_spec import catalog
from kaio_spec.validation import FieldError, check_instance_type

# Other distributions that install the same framework (its import name and version).
ALTERNATIVE_DISTRIBUTIONS = {
    "pytorch": ("torch",),
    "tensorflow": (
        "tensorflow",
        "tensorflow-cpu",
        "tensorflow-gpu",
        "tensorflow-macos",
        "tensorflow-intel",
    ),
    "sklearn": ("scikit-learn",),
}
# Spellings accepted for `framework`, besides the canonical ones in catalog.FRAMEWORKS.
FRAMEWORK_ALIASES = {"torch": "pytorch", "tf": "tensorflow", "scikit-learn": "sklearn"}
# Detection order when several frameworks are installed: the most specific first.
DETECTION_ORDER = ("pytorch", "tensorflow", "sklearn")


@dataclass(frozen=True)
class ResolvedImage:
    uri: str
    framework: str  # "pytorch" | "tensorflow" | "sklearn"
    framework_version: str  # as the image names it: "2.1.0", "1.2-1"
    gpu: bool
    python: str  # the image's Python: "py310", or "py3" for scikit-learn
    source: str  # "argument" | "local" | "default" | "requirements"
    requested_version: str | None = None  # what was asked for or found installed
    warnings: tuple[str, ...] = field(default=())


def local_python() -> str:
    """The running interpreter as DLC tags spell it: 'py311'."""
    return f"py{sys.version_info.major}{sys.version_info.minor}"


def installed_version(framework: str) -> str | None:
    """The locally installed version of a framework, from package metadata, or None."""
    names = dict.fromkeys(
        (catalog.FRAMEWORK_DISTRIBUTIONS[framework], *ALTERNATIVE_DISTRIBUTIONS.get(framework, ()))
    )
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def detect_local_framework() -> tuple[str, str] | None:
    """(framework, version) of the first of torch, tensorflow, scikit-learn installed, or None."""
    for framework in DETECTION_ORDER:
        version = installed_version(framework)
        if version:
            return framework, version
    return None


def normalize_framework(framework: str) -> str:
    name = framework.strip().lower() if isinstance(framework, str) else framework
    name = FRAMEWORK_ALIASES.get(name, name)
    if name not in catalog.FRAMEWORKS:
        raise FieldError(
            "framework", f"must be one of {', '.join(catalog.FRAMEWORKS)}, got {framework!r}"
        )
    return name


def _parse(version: str, field_name: str = "framework_version") -> Version:
    # Local builds carry suffixes: torch 2.1.0+cu121, scikit-learn's image tags 1.2-1.
    text = str(version).split("+", 1)[0].split("-", 1)[0]
    try:
        return Version(text)
    except InvalidVersion:
        raise FieldError(
            field_name, f"{version!r} is not a version number such as '2.1.0'"
        ) from None


def _nearest(requested: Version, available: list[tuple[Version, str]]) -> tuple[str, bool]:
    """(chosen tag, exact?) by the module's rule: exact, same major.minor, newest below, oldest."""
    for v, tag in available:
        if v == requested:
            return tag, True
    same_minor = [(v, t) for v, t in available if v.release[:2] == requested.release[:2]]
    if same_minor:
        return max(same_minor)[1], len(requested.release) <= 2
    below = [(v, t) for v, t in available if v < requested]
    if below:
        return max(below)[1], False
    return min(available)[1], False


def _dlc_choice(
    framework: str, requested: str | None, gpu: bool
) -> tuple[catalog.DlcVersion, bool]:
    rows = catalog.DLC_VERSIONS[framework]
    if requested is None:
        # The newest image built for the local Python, else the newest.
        py = local_python()
        matching = [r for r in rows if r.python == py]
        return max(matching or rows, key=lambda r: Version(r.version)), True
    tag, exact = _nearest(_parse(requested), [(Version(r.version), r.version) for r in rows])
    return next(r for r in rows if r.version == tag), exact


def _sklearn_choice(requested: str | None) -> tuple[str, bool]:
    tags = catalog.SKLEARN_VERSIONS
    available = [(_parse(t), t) for t in tags]
    if requested is None:
        return max(available)[1], True
    if requested in tags:
        return requested, True
    # Images are per major.minor (1.2-1 is scikit-learn 1.2.x): 1.2.2 is an exact match.
    wanted = _parse(requested)
    return _nearest(Version(".".join(map(str, wanted.release[:2]))), available)


def resolve_image(
    instance_type: str,
    framework: str | None = None,
    framework_version: str | None = None,
    region: str | None = None,
    *,
    warn: bool = True,
    asked_by: str = "asked for",
) -> ResolvedImage:
    """The container image for a job on `instance_type` (see the module's docstring for the rules).
    Notices (a nearest version) are in `.warnings`, and also issued as UserWarnings unless
    `warn` is False (`kaio apply` prints each once, as a line of its own). `asked_by` says
    where a requested version came from, in those notices.

    Raises FieldError (a ValueError) for an unknown instance type, framework or region, a version
    that is not a version number, `framework_version` without a framework to apply it to, and
    scikit-learn asked for on a GPU instance.
    """
    itype = check_instance_type(instance_type)
    gpu = itype.is_gpu
    region = region or catalog.DEFAULT_REGION
    notes: list[str] = []
    explicit = framework is not None
    if framework is not None:
        framework, source = normalize_framework(framework), "argument"
        requested = framework_version
        if requested is None:
            local = installed_version(framework)
            requested, source = (local, "local") if local else (None, "argument")
    else:
        found = detect_local_framework()
        if framework_version is not None and found is None:
            raise FieldError(
                "framework_version",
                f"{framework_version!r} given without a framework, and none is installed here to "
                f"apply it to; pass framework= too (one of {', '.join(catalog.FRAMEWORKS)})",
            )
        if found is None:
            framework, requested, source = ("pytorch" if gpu else "sklearn"), None, "default"
        else:
            framework, requested = found[0], framework_version or found[1]
            source = "argument" if framework_version else "local"
    if framework == "sklearn" and gpu:
        if explicit:
            raise FieldError(
                "framework",
                f"scikit-learn images are CPU-only, and {instance_type} is a GPU instance; pick a "
                "CPU instance type (ml.m5.*, ml.c5.*) or framework='pytorch' or 'tensorflow'",
            )
        notes.append(
            f"scikit-learn is installed here but has CPU images only; {instance_type} is a GPU "
            "instance, so the job runs in the PyTorch GPU image (pass framework= to choose)"
        )
        framework, requested, source = "pytorch", None, "default"

    if framework == "sklearn":
        if region not in catalog.SKLEARN_ACCOUNTS:
            raise FieldError(
                "region",
                f"no scikit-learn images known for {region!r}; known: {', '.join(catalog.SKLEARN_ACCOUNTS)}",
            )
        tag, exact = _sklearn_choice(requested)
        uri, version, python = catalog.sklearn_image(tag, region), tag, "py3"
    else:
        row, exact = _dlc_choice(framework, requested, gpu)
        uri, version, python = (
            catalog.dlc_image(framework, row, gpu, region),
            row.version,
            row.python,
        )
    if not exact:
        origin = "installed here" if source == "local" else asked_by
        notes.append(
            f"{framework} {requested} ({origin}) has no SageMaker image; using the nearest, {version}"
        )
    for note in notes if warn else ():
        warnings.warn(note, UserWarning, stacklevel=2)
    return ResolvedImage(uri, framework, version, gpu, python, source, requested, tuple(notes))


def pinned_framework(requirements: str | os.PathLike) -> tuple[str, str] | None:
    """(framework, version) that a requirements.txt pins exactly (`torch==2.3.0`), the first in
    DETECTION_ORDER when it pins several; None when it pins none or cannot be read. Options
    (-r, --index-url), URLs and unpinned or wildcard requirements say nothing."""
    try:
        text = Path(requirements).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError):
        return None
    pins: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-")):
            continue
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        framework = _DISTRIBUTION_FRAMEWORKS.get(canonicalize_name(req.name))
        specs = list(req.specifier)
        exact = len(specs) == 1 and specs[0].operator in ("==", "===")
        if framework and exact and "*" not in specs[0].version:
            pins.setdefault(framework, specs[0].version)
    return next(((f, pins[f]) for f in DETECTION_ORDER if f in pins), None)


def resolve_job_image(
    instance_type: str,
    framework: str | None = None,
    framework_version: str | None = None,
    region: str | None = None,
    *,
    requirements: str | os.PathLike | None = None,
    warn: bool = True,
) -> ResolvedImage:
    """A job's image: the framework its `requirements` file pins first, then resolve_image's
    order (`framework`/`framework_version`, what is installed here, the default). A pin of
    scikit-learn on a GPU instance is left out (its images are CPU-only)."""
    pinned = pinned_framework(requirements) if requirements is not None else None
    if pinned is not None and not (
        pinned[0] == "sklearn" and check_instance_type(instance_type).is_gpu
    ):
        image = resolve_image(
            instance_type, *pinned, region, warn=warn, asked_by="pinned in requirements.txt"
        )
        return replace(image, source="requirements")
    return resolve_image(instance_type, framework, framework_version, region, warn=warn)


_DISTRIBUTION_FRAMEWORKS = {
    canonicalize_name(dist): framework
    for framework in catalog.FRAMEWORKS
    for dist in (
        catalog.FRAMEWORK_DISTRIBUTIONS[framework],
        *ALTERNATIVE_DISTRIBUTIONS.get(framework, ()),
    )
}
