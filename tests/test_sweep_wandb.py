"""W&B's other random-search forms (log_uniform, q_log_uniform, q_log_uniform_values, q_normal,
q_log_normal, beta, q_beta, inv_log_uniform, inv_log_uniform_values): what a W&B user's sweep
plans and runs to, golden draws, and each form's draws against the distribution W&B defines."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest
from apply_support import list_jobs, run_apply
from hypothesis import given, settings
from hypothesis import strategies as st

from kaio_spec import ManifestError, load_manifest, plan
from kaio_spec.manifest import Sweep
from kaio_spec.manifest import SweepParameter as P
from kaio_spec.planner.sweep import draw, random_draws

KAIO = str(Path(sys.executable).parent / "kaio")

# A W&B user's random search, as they would bring it: every form we did not take before.
WANDB_SWEEP = """\
    version: 1
    name: wb
    jobs:
      search:
        sweep:
          count: {count}
          seed: 3
          parameters:
            lr: {{distribution: log_uniform, min: -9.2, max: -2.3}}
            batch: {{distribution: q_log_uniform, min: 2, max: 6, q: 8}}
            width: {{distribution: q_log_uniform_values, min: 16, max: 512, q: 16}}
            layers: {{distribution: q_log_uniform_values, min: 1, max: 32}}
            momentum: {{distribution: inv_log_uniform, min: 0, max: 3}}
            decay: {{distribution: inv_log_uniform_values, min: 0.9, max: 0.999}}
            shift: {{distribution: q_normal, mu: 0, sigma: 2, q: 0.5}}
            steps: {{distribution: q_log_normal, mu: 7, sigma: 0.5, q: 100}}
            mix: {{distribution: beta, a: 2, b: 5}}
            frac: {{distribution: q_beta, a: 2, b: 2, q: 0.05}}
            noise: {{distribution: beta}}
    """


def project(folder: Path, count: int, code: str = "print('hi')\n") -> Path:
    (folder / "train.py").write_text(code)
    manifest = folder / "kaio.yaml"
    manifest.write_text(textwrap.dedent(WANDB_SWEEP.format(count=count)))
    return manifest


def kaio(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [KAIO, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def multiple_of(value: float, q: float) -> bool:
    k = round(value / q)
    return value == float(Decimal(k) * Decimal(repr(q)))


def check_in_range(values: dict) -> None:
    """What a W&B user expects of each parameter's values."""
    assert math.exp(-9.2) <= values["lr"] <= math.exp(-2.3)
    assert type(values["batch"]) is int and values["batch"] % 8 == 0
    assert 0 <= values["batch"] <= round(math.exp(6) / 8) * 8
    assert type(values["width"]) is int and values["width"] % 16 == 0
    assert 16 <= values["width"] <= 512
    # q left out: W&B's q of 1.0, so whole numbers as floats.
    assert type(values["layers"]) is float and values["layers"].is_integer()
    assert 1 <= values["layers"] <= 32
    assert math.exp(-3) <= values["momentum"] <= 1
    assert 0.9 <= values["decay"] <= 0.999
    assert type(values["shift"]) is float and multiple_of(values["shift"], 0.5)
    assert type(values["steps"]) is int and values["steps"] % 100 == 0 and values["steps"] >= 0
    assert 0 <= values["mix"] <= 1 and 0 <= values["noise"] <= 1
    assert 0 <= values["frac"] <= 1 and multiple_of(values["frac"], 0.05)


# ---- the user's scenario -----------------------------------------------------------------------


def test_a_wandb_random_search_plans_with_every_value_in_range(tmp_path):
    project(tmp_path, count=40)
    r = kaio("plan", "kaio.yaml", "--offline", "-o", "json", cwd=tmp_path)
    assert (r.returncode, r.stderr) == (0, "")
    jobs = json.loads(r.stdout)["jobs"]
    assert [job["name"] for job in jobs] == [f"search-{i}" for i in range(1, 41)]
    for job in jobs:
        check_in_range(job["matrix"])
        assert job["spec"]["params"] == job["matrix"]  # the job receives its draws
    # Draws vary (40 identical draws would mean a form ignores its generator).
    assert all(len({json.dumps(job["matrix"][k]) for job in jobs}) > 2 for k in jobs[0]["matrix"])
    # The same seed plans the same draws: pinned, so a change in any form's algorithm shows here.
    assert jobs[0]["matrix"] == {
        "lr": 0.0005218950347969498,
        "batch": 64,
        "width": 64,
        "layers": 8.0,
        "momentum": 0.32535477141158947,
        "decay": 0.9061758263914224,
        "shift": -1.5,
        "steps": 1200,
        "mix": 0.5781034127900057,
        "frac": 0.4,
        "noise": 0.6028341738360684,
    }


REPORT_PARAMS = "import json, shutil\nshutil.copy('params.json', 'result.json')\n"


def test_a_wandb_random_search_runs_and_each_job_gets_its_draws(tmp_path, kaio_server, api_key):
    manifest = project(tmp_path, count=3, code=REPORT_PARAMS)
    planned = {job.name: job.params for job in plan(manifest).jobs}
    r = run_apply(manifest, kaio_server.url, api_key, "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "wb: 3 jobs: 3 completed" in r.stdout
    for name, params in planned.items():
        received = json.loads((tmp_path / "outputs" / "wb" / name / "result.json").read_text())
        assert received == params
        check_in_range(received)
    assert sorted(j["status"] for j in list_jobs(kaio_server.url, api_key)) == ["Completed"] * 3


def test_kaio_validate_points_at_each_bad_parameter(tmp_path):
    (tmp_path / "train.py").write_text("print('hi')\n")
    (tmp_path / "kaio.yaml").write_text(
        textwrap.dedent(
            """\
            version: 1
            name: bad
            jobs:
              search:
                sweep:
                  count: 3
                  parameters:
                    lr: {distribution: log_uniform_values, min: 0, max: 0.1}
                    c: {distribution: log_uniform, min: 0.0001, max: 1000}
                    m: {distribution: inv_log_uniform_values, min: -1, max: 0.99}
            """
        )
    )
    r = kaio("validate", "kaio.yaml", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    p = "jobs.search.sweep.parameters"
    assert r.stderr.splitlines()[:3] == [
        f"kaio.yaml:8:53: {p}.lr.min: min (0) must be greater than 0 for log_uniform_values",
        f"kaio.yaml:9:58: {p}.c.max: max (1000) is a natural-log exponent: log_uniform draws "
        "between exp(min) and exp(max), and exp(1000) is too large for a number; to give the "
        "bounds as values, use log_uniform_values",
        f"kaio.yaml:10:56: {p}.m.min: min (-1) must be greater than 0 for inv_log_uniform_values",
    ]


# ---- bad parameters: each refused where it is written ------------------------------------------


def one_parameter(folder: Path, parameter: str) -> Path:
    """A manifest whose one job sweeps parameter x (on line 8) as written."""
    (folder / "train.py").write_text("print('hi')\n")
    path = folder / "kaio.yaml"
    path.write_text(
        "version: 1\nname: one\njobs:\n  s:\n    sweep:\n      count: 1\n      parameters:\n"
        f"        x: {parameter}\n"
    )
    return path


def errors(tmp_path: Path, parameter: str) -> list[str]:
    with pytest.raises(ManifestError) as caught:
        load_manifest(one_parameter(tmp_path, parameter))
    return [f"{d.line}:{d.column}: {d.dotted_path}: {d.message}" for d in caught.value.errors]


X = "jobs.s.sweep.parameters.x"


@pytest.mark.parametrize(
    ("parameter", "expected"),
    [
        ("{distribution: beta, a: 0, b: 2}", f"8:36: {X}.a: 0 must be greater than 0"),
        ("{distribution: q_beta, b: -1}", f"8:38: {X}.b: -1 must be greater than 0"),
        ("{distribution: beta, a: two}", f"8:36: {X}.a: expected a number, got 'two'"),
        ("{distribution: q_normal, q: 0}", f"8:40: {X}.q: 0 must be greater than 0"),
        ("{distribution: q_log_normal, sigma: 0}", f"8:48: {X}.sigma: 0 must be greater than 0"),
        (
            "{distribution: q_log_uniform_values, min: 0, max: 8}",
            f"8:54: {X}.min: min (0) must be greater than 0 for q_log_uniform_values",
        ),
        (
            "{distribution: q_log_uniform, min: 1, max: 800, q: 2}",
            f"8:55: {X}.max: max (800) is a natural-log exponent: q_log_uniform draws between "
            "exp(min) and exp(max), and exp(800) is too large for a number; to give the bounds as "
            "values, use q_log_uniform_values",
        ),
        (
            "{distribution: inv_log_uniform, min: -800, max: 1}",
            f"8:49: {X}.min: min (-800) is a natural-log exponent: inv_log_uniform draws between "
            "exp(-max) and exp(-min), and exp(800) is too large for a number; to give the bounds "
            "as values, use inv_log_uniform_values",
        ),
        (
            "{distribution: log_uniform, min: -2, max: -5}",
            f"8:54: {X}.max: max (-5) must be greater than min (-2)",
        ),
        (
            "{distribution: q_log_uniform, min: 1}",
            f"8:9: {X}: missing required key 'max' (distribution q_log_uniform needs 'min' and "
            "'max')",
        ),
        ("{distribution: beta, mu: 1}", f"8:33: {X}.mu: 'mu' does not apply to distribution beta"),
        ("{distribution: normal, a: 1}", f"8:35: {X}.a: 'a' does not apply to distribution normal"),
        (
            "{distribution: log_uniform, min: 1, max: 2, q: 1}",
            f"8:56: {X}.q: 'q' does not apply to distribution log_uniform",
        ),
        (
            "{a: 2, b: 3}",
            f"8:9: {X}: give 'values', 'value', or a distribution with its bounds (mu and sigma "
            "need a distribution such as normal; a and b need beta or q_beta)",
        ),
    ],
)
def test_a_bad_parameter_is_refused_at_its_key(tmp_path, parameter, expected):
    assert errors(tmp_path, parameter) == [expected]


@pytest.mark.parametrize(
    ("parameter", "message"),
    [
        ("{distribution: q_log_normal, mu: 1000}", "too large for a number"),
        # A finite draw, but too many steps of q: x / q is no number.
        ("{distribution: q_normal, sigma: 1e300, q: 1e-300}", "too many steps of q (1e-300)"),
    ],
)
def test_a_draw_too_large_for_a_number_is_refused_at_the_parameter(tmp_path, parameter, message):
    with pytest.raises(ManifestError) as caught:
        plan(one_parameter(tmp_path, parameter))
    [d] = caught.value.errors
    assert (d.line, d.dotted_path) == (8, X)
    assert message in d.message


# ---- golden draws --------------------------------------------------------------------------------

EVERY_NEW_FORM = Sweep(
    "random",
    3,
    7,
    {
        "lr": P("lr", "log_uniform", min=-9.2, max=-2.3),
        "bs": P("bs", "q_log_uniform", min=2.0, max=6.0, q=8),
        "width": P("width", "q_log_uniform_values", min=16, max=512, q=16),
        "eps": P("eps", "q_log_uniform_values", min=1e-8, max=1e-3, q=1e-8),
        "mom": P("mom", "inv_log_uniform", min=0.0, max=3.0),
        "decay": P("decay", "inv_log_uniform_values", min=0.9, max=0.999),
        "shift": P("shift", "q_normal", mu=0.0, sigma=2.0, q=0.5),
        "steps": P("steps", "q_log_normal", mu=7.0, sigma=0.5, q=100),
        "mix": P("mix", "beta", a=2.0, b=5.0),
        "sparse": P("sparse", "beta", a=0.3, b=0.4),
        "frac": P("frac", "q_beta", a=2.0, b=2.0, q=0.05),
    },
)


def values(draws: list[dict]) -> list[dict]:
    return [{k: d.value for k, d in one.items()} for one in draws]


def test_golden_draws_of_every_new_form():
    assert values(random_draws(EVERY_NEW_FORM, 3, 7)) == [
        {
            "lr": 0.0009438399764590544,
            "bs": 16,
            "width": 160,
            "eps": 2e-08,
            "mom": 0.2484896741363721,
            "decay": 0.9350107852951768,
            "shift": -1.5,
            "steps": 800,
            "mix": 0.3545543196638747,
            "sparse": 0.9101374472117649,
            "frac": 0.25,
        },
        {
            "lr": 0.004424654040112806,
            "bs": 8,
            "width": 16,
            "eps": 1.1e-07,
            "mom": 0.38335260238896857,
            "decay": 0.9410707313339297,
            "shift": -3.5,
            "steps": 900,
            "mix": 0.20351441530777978,
            "sparse": 0.005327425573431105,
            "frac": 0.9,
        },
        {
            "lr": 0.005523613073836876,
            "bs": 48,
            "width": 288,
            "eps": 0.00052894,
            "mom": 0.20644835643929937,
            "decay": 0.9645924665327477,
            "shift": -0.5,
            "steps": 1700,
            "mix": 0.1274477246685792,
            "sparse": 0.987810835411719,
            "frac": 0.75,
        },
    ]


def test_golden_first_draws_follow_wandbs_formulas():
    rng = random.Random(7)
    r1, r2, r3 = rng.random(), rng.random(), rng.random()
    [first] = values(random_draws(EVERY_NEW_FORM, 1, 7))
    # log_uniform: min and max are exponents.
    assert first["lr"] == pytest.approx(math.exp(-9.2 + (-2.3 + 9.2) * r1), rel=1e-15)
    # q_log_uniform: round(exp(uniform(min, max)) / q) * q, an int as q is.
    assert first["bs"] == round(math.exp(2.0 + 4.0 * r2) / 8) * 8
    # q_log_uniform_values: the same from ln min and ln max.
    assert first["width"] == round(math.exp(math.log(16) + math.log(512 / 16) * r3) / 16) * 16


# ---- defaults and reproducibility ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("short", "full"),
    [
        (P("x", "q_uniform", min=0, max=10), P("x", "q_uniform", min=0, max=10, q=1.0)),
        (P("x", "normal"), P("x", "normal", mu=0, sigma=1)),
        (P("x", "q_log_normal"), P("x", "q_log_normal", mu=0, sigma=1, q=1.0)),
        (P("x", "beta"), P("x", "beta", a=1, b=1)),
        (P("x", "q_beta", a=3), P("x", "q_beta", a=3, b=1, q=1.0)),
    ],
)
def test_left_out_parameters_take_wandbs_defaults(short, full):
    a, b = random.Random(5).random, random.Random(5).random
    drawn = [draw(short, a).value for _ in range(50)]
    assert drawn == [draw(full, b).value for _ in range(50)]
    assert all(type(v) is float for v in drawn)  # q 1.0 is a float in W&B: 3.0, not 3


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=0, max_value=2**63), st.integers(min_value=1, max_value=6))
def test_the_same_seed_reproduces_the_new_forms_and_more_draws_extend_them(seed, n):
    first = values(random_draws(EVERY_NEW_FORM, n, seed))
    assert values(random_draws(EVERY_NEW_FORM, n + 2, seed))[:n] == first
    assert values(random_draws(EVERY_NEW_FORM, n, seed + 1)) != first


BOUNDS = st.floats(min_value=-50, max_value=50)


@settings(max_examples=200, deadline=None)
@given(BOUNDS, st.floats(min_value=1e-3, max_value=50), st.integers(min_value=0, max_value=2**32))
def test_exponent_forms_stay_between_their_bounds(lo, width, seed):
    rng = random.Random(seed).random
    for _ in range(10):
        x = draw(P("x", "log_uniform", min=lo, max=lo + width), rng).value
        assert math.exp(lo) * (1 - 1e-15) <= x <= math.exp(lo + width) * (1 + 1e-15)
        y = draw(P("x", "inv_log_uniform", min=lo, max=lo + width), rng).value
        assert math.exp(-lo - width) * (1 - 1e-15) <= y <= math.exp(-lo) * (1 + 1e-15)


@settings(max_examples=60, deadline=None)
@given(
    st.floats(min_value=0.01, max_value=50),
    st.floats(min_value=0.01, max_value=50),
    st.integers(min_value=0, max_value=2**32),
)
def test_beta_draws_are_between_0_and_1(a, b, seed):
    rng = random.Random(seed).random
    assert all(0 <= draw(P("x", "beta", a=a, b=b), rng).value <= 1 for _ in range(5))


def test_a_tiny_shape_does_not_break_beta():
    # Gamma(0.001) draws are below 1e-300: in logs they neither underflow nor make 0 / 0.
    rng = random.Random(2).random
    drawn = [draw(P("x", "beta", a=0.001, b=0.001), rng).value for _ in range(200)]
    assert all(0 <= v <= 1 for v in drawn)
    assert 70 < sum(v > 0.5 for v in drawn) < 130  # symmetric: about half at 1, half at 0


# ---- each form against its definition: Kolmogorov-Smirnov on a few thousand draws --------------

N = 3000
# The KS statistic's bound at significance 0.001 (asymptotic Kolmogorov): the draws are seeded,
# so each check gives the same answer every run; a wrong distribution lands far above it.
KS_BOUND = math.sqrt(math.log(2 / 0.001) / 2) / math.sqrt(N)


def ks_statistic(drawn: list[float], cdf) -> float:
    xs = sorted(drawn)
    n = len(xs)
    return max(max(cdf(x) - i / n, (i + 1) / n - cdf(x)) for i, x in enumerate(xs))


def draws(p: P, seed: int = 11, n: int = N) -> list:
    rng = random.Random(seed).random
    return [draw(p, rng).value for _ in range(n)]


def phi(z: float) -> float:
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def clipped(f):
    return lambda x: min(max(f(x), 0.0), 1.0)


# Each CDF is written from W&B's definition of the form, not from our code.
DEFINITIONS = [
    # log_uniform: ln x ~ U(min, max).
    (P("x", "log_uniform", min=-9.2, max=-2.3), lambda x: (math.log(x) + 9.2) / 6.9),
    # log_uniform_values: ln x ~ U(ln min, ln max).
    (
        P("x", "log_uniform_values", min=1e-5, max=0.1),
        lambda x: (math.log(x) - math.log(1e-5)) / (math.log(0.1) - math.log(1e-5)),
    ),
    # inv_log_uniform: ln(1/x) ~ U(min, max), so P(X <= x) = P(ln(1/X) >= ln(1/x)).
    (P("x", "inv_log_uniform", min=0.5, max=3.0), lambda x: (3.0 - math.log(1 / x)) / 2.5),
    # inv_log_uniform_values: ln(1/x) ~ U(ln(1/max), ln(1/min)).
    (
        P("x", "inv_log_uniform_values", min=0.9, max=0.999),
        lambda x: (math.log(1 / 0.9) - math.log(1 / x)) / (math.log(1 / 0.9) - math.log(1 / 0.999)),
    ),
    (P("x", "normal", mu=3.0, sigma=2.0), lambda x: phi((x - 3.0) / 2.0)),
    (P("x", "log_normal", mu=1.0, sigma=0.5), lambda x: phi((math.log(x) - 1.0) / 0.5)),
    # beta: density x^(a-1) (1-x)^(b-1) / B(a, b); for integer a, b its CDF is a binomial tail.
    (
        P("x", "beta", a=2, b=5),
        lambda x: sum(math.comb(6, j) * x**j * (1 - x) ** (6 - j) for j in range(2, 7)),
    ),
    # Beta(1/2, 1/2) is the arcsine law: both shapes below 1.
    (P("x", "beta", a=0.5, b=0.5), lambda x: 2 / math.pi * math.asin(math.sqrt(x))),
    # Beta(a, 1): x^a; a shape below 1 against one of 1.
    (P("x", "beta", a=0.3, b=1), lambda x: x**0.3),
    # Beta(1, b): 1 - (1 - x)^b.
    (P("x", "beta", a=1, b=4.5), lambda x: 1 - (1 - x) ** 4.5),
    (P("x", "uniform", min=-1.0, max=3.0), lambda x: (x + 1) / 4),
]


@pytest.mark.parametrize(
    ("p", "cdf"), DEFINITIONS, ids=[f"{p.distribution}-{i}" for i, (p, _) in enumerate(DEFINITIONS)]
)
def test_each_form_draws_the_distribution_wandb_defines(p, cdf):
    assert ks_statistic(draws(p), clipped(cdf)) < KS_BOUND


def test_the_ks_check_tells_exponents_from_values():
    # The check has teeth: log_uniform's draws are not those of log_uniform_values with the same
    # bounds (the confusion W&B's docs warn of), nor a plain uniform between exp(min), exp(max).
    drawn = draws(P("x", "log_uniform", min=-9.2, max=-2.3))
    lo, hi = math.exp(-9.2), math.exp(-2.3)
    assert ks_statistic(drawn, clipped(lambda x: (x - lo) / (hi - lo))) > 10 * KS_BOUND
    beta = draws(P("x", "beta", a=2, b=5))
    assert ks_statistic(beta, clipped(lambda x: 1 - (1 - x) ** 5)) > 3 * KS_BOUND  # Beta(1, 5)


# q_<form>: round(<form> / q) * q. Each with the parameters of <form>'s definition above.
QUANTIZED = [
    ("q_log_uniform", 0, 0.0005),
    ("q_log_uniform_values", 1, 1e-4),
    ("q_normal", 4, 0.25),
    ("q_log_normal", 5, None),  # q left out: 1.0
    ("q_beta", 6, 0.1),
    ("q_beta", 9, 1),  # an integer q: integer draws, 0 or 1
    ("q_uniform", 10, 0.3),
]


@pytest.mark.parametrize(("form", "definition", "q"), QUANTIZED)
def test_each_q_form_is_its_plain_draw_rounded_to_a_multiple_of_q(form, definition, q):
    """A q_ form draws its plain form's value from the same generator, then rounds it to a
    multiple of q (half to even, an int when q is one); the plain draws follow the definition."""
    plain, cdf = DEFINITIONS[definition]
    fields = {k: getattr(plain, k) for k in ("min", "max", "mu", "sigma", "a", "b")}
    quantized = P("x", form, **fields, q=q)
    got, unquantized = draws(quantized), draws(plain)
    assert ks_statistic(unquantized, clipped(cdf)) < KS_BOUND
    step = 1.0 if q is None else q
    for value, x in zip(got, unquantized, strict=True):
        assert type(value) is type(step) and multiple_of(value, step)
        assert value == pytest.approx(round(x / step) * step, rel=1e-15)
    assert len(set(got)) > 1
