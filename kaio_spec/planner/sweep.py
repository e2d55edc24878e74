"""Sweeps: W&B's parameter forms, drawn the same way on every machine and Python version.

One generator per sweep (per matrix cell when the job has a matrix too), `random.Random(seed)`, of
which only `.random()` is used: CPython's Mersenne Twister seeded with an int and its 53-bit
`random()` are stable across versions and platforms, while `uniform`, `gauss`, `choice` and
friends are not promised to be. Everything else is derived here from those draws (r), with the
formulas of W&B's sweeps engine (its inverse CDFs at r; normal and beta by the methods below, which
draw from the same distributions):

    categorical             index = first i with r < p_0 + ... + p_i  (equal p when none are given)
    int_uniform             min + floor(r * (max - min + 1))          (max included)
    uniform                 min + (max - min) * r
    log_uniform_values      exp(ln min + (ln max - ln min) * r)
    inv_log_uniform_values  exp(-(-ln max + (ln max - ln min) * (1 - r)))   (= log_uniform_values)
    log_uniform             exp(min + (max - min) * r)                (min, max: exponents)
    inv_log_uniform         exp(-(min + (max - min) * (1 - r)))       (min, max: exponents of 1/x)
    normal                  mu + sigma * z, z by Marsaglia's polar method (two draws per try)
    log_normal              exp(mu + sigma * z)
    beta                    X / (X + Y), X ~ Gamma(a), Y ~ Gamma(b) by Marsaglia and Tsang's method
    q_<form>                round(<form> / q) * q  (round half to even, as numpy; an int when q is)
    constant                the value; draws nothing

Parameters a form leaves out take W&B's defaults (manifest.PARAMETER_DEFAULTS: q 1.0, mu 0,
sigma 1, a and b 1). `exp`, `ln` and `sqrt` are computed with `decimal` in a fixed context
(correctly rounded, pure software), never with the platform's libm, whose last bits may differ from
one machine to the next. Parameters are drawn in the order they are declared, one full set per
draw, so the first N draws stay the same when `count` grows.
"""

from __future__ import annotations

import decimal
import hashlib
import itertools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from kaio_spec.manifest import PARAMETER_DEFAULTS, Sweep, SweepParameter
from kaio_spec.planner.values import canonical_json

__all__ = ["Draw", "DrawError", "cell_seed", "draw", "grid", "grid_size", "random_draws"]

# Fixed: the user's (thread-local) decimal context must not change our draws.
_CTX = decimal.Context(prec=40, rounding=decimal.ROUND_HALF_EVEN, Emax=999999, Emin=-999999)


@dataclass(frozen=True)
class Draw:
    """One drawn value; `index` is the position in `values` it came from (categorical draws and
    grid values), so the planner can show it as the user wrote it."""

    value: Any
    index: int | None = None


class DrawError(ValueError):
    """A draw that is not a usable number; `parameter` names the sweep parameter."""

    def __init__(self, parameter: str, message: str):
        self.parameter = parameter
        super().__init__(message)


def _ln(x: Decimal) -> Decimal:
    return _CTX.ln(x)


def _exp(x: Decimal) -> Decimal:
    return _CTX.exp(x)


def _to_float(x: Decimal, name: str) -> float:
    value = float(x)
    if not math.isfinite(value):
        raise DrawError(name, f"drew {x:.6E}, too large for a number; narrow the distribution")
    return value


def _categorical(p: SweepParameter, rng: Callable[[], float]) -> Draw:
    values = p.values or []
    r = rng()
    if not p.probabilities:
        i = min(int(r * len(values)), len(values) - 1)
        return Draw(values[i], i)
    total = 0.0
    last = 0
    for i, prob in enumerate(p.probabilities):
        if prob > 0:
            last = i
        total += prob
        if r < total:
            return Draw(values[i], i)
    return Draw(values[last], last)  # r at or past a sum a hair under 1


def _arg(p: SweepParameter, key: str) -> Any:
    """The parameter's `key`, or W&B's default for it when the manifest left it out."""
    value = getattr(p, key)
    return PARAMETER_DEFAULTS[key] if value is None else value


def _bounds(p: SweepParameter) -> tuple[float, float]:
    """min and max, which the manifest requires of every distribution drawn between them."""
    assert p.min is not None and p.max is not None
    return p.min, p.max


def _uniform(p: SweepParameter, rng: Callable[[], float]) -> float:
    lo, hi = _bounds(p)
    return lo + (hi - lo) * rng()


def _int_uniform(p: SweepParameter, rng: Callable[[], float]) -> int:
    lo, hi = (int(b) for b in _bounds(p))
    return min(lo + int(rng() * (hi - lo + 1)), hi)


def _between(lo: Decimal, hi: Decimal, r: Decimal) -> Decimal:
    """lo + (hi - lo) * r: W&B's uniform inverse CDF, in decimal."""
    return _CTX.add(lo, _CTX.multiply(_CTX.subtract(hi, lo), r))


def _log_uniform_values(p: SweepParameter, rng: Callable[[], float]) -> float:
    lo, hi = _bounds(p)
    x = _exp(_between(_ln(Decimal(lo)), _ln(Decimal(hi)), Decimal(rng())))
    return min(max(_to_float(x, p.name), lo), hi)


def _inv_log_uniform_values(p: SweepParameter, rng: Callable[[], float]) -> float:
    # W&B: ln(1/x) uniform between ln(1/max) and ln(1/min), at 1 - r (so x grows with r).
    low, high = _bounds(p)
    lo, hi = _CTX.minus(_ln(Decimal(high))), _CTX.minus(_ln(Decimal(low)))
    x = _exp(_CTX.minus(_between(lo, hi, 1 - Decimal(rng()))))
    return min(max(_to_float(x, p.name), low), high)


def _log_uniform(p: SweepParameter, rng: Callable[[], float]) -> float:
    # min and max are exponents: ln x is uniform between them.
    lo, hi = _bounds(p)
    return _to_float(_exp(_between(Decimal(lo), Decimal(hi), Decimal(rng()))), p.name)


def _inv_log_uniform(p: SweepParameter, rng: Callable[[], float]) -> float:
    # min and max are exponents of 1/x: ln(1/x) is uniform between them, at 1 - r.
    lo, hi = _bounds(p)
    u = _between(Decimal(lo), Decimal(hi), 1 - Decimal(rng()))
    return _to_float(_exp(_CTX.minus(u)), p.name)


def _standard_normal(rng: Callable[[], float]) -> Decimal:
    # Marsaglia's polar method: no sine or cosine, only ln and sqrt (correctly rounded here).
    while True:
        u = _CTX.subtract(_CTX.multiply(Decimal(rng()), 2), 1)
        v = _CTX.subtract(_CTX.multiply(Decimal(rng()), 2), 1)
        s = _CTX.add(_CTX.multiply(u, u), _CTX.multiply(v, v))
        if 0 < s < 1:
            factor = _CTX.sqrt(_CTX.divide(_CTX.multiply(-2, _ln(s)), s))
            return _CTX.multiply(u, factor)


def _gaussian(p: SweepParameter, rng: Callable[[], float]) -> Decimal:
    mu, sigma = Decimal(_arg(p, "mu")), Decimal(_arg(p, "sigma"))
    return _CTX.add(mu, _CTX.multiply(sigma, _standard_normal(rng)))


def _normal(p: SweepParameter, rng: Callable[[], float]) -> float:
    return _to_float(_gaussian(p, rng), p.name)


def _log_normal(p: SweepParameter, rng: Callable[[], float]) -> float:
    return _to_float(_exp(_gaussian(p, rng)), p.name)


def _ln_gamma_variate(shape: Decimal, rng: Callable[[], float]) -> Decimal:
    """ln of a Gamma(shape, 1) draw, by Marsaglia and Tsang's method (2000). In logs so that the
    tiny draws of a small shape neither underflow nor make 0 / 0 in beta's ratio."""
    boost = Decimal(0)
    if shape < 1:  # Gamma(a) = Gamma(a + 1) * U^(1/a)
        boost = _CTX.divide(_ln(1 - Decimal(rng())), shape)  # 1 - r: never ln 0
        shape = _CTX.add(shape, 1)
    d = _CTX.subtract(shape, _CTX.divide(1, 3))
    c = _CTX.divide(1, _CTX.sqrt(_CTX.multiply(9, d)))
    while True:
        z = _standard_normal(rng)
        v = _CTX.add(1, _CTX.multiply(c, z))
        if v <= 0:
            continue
        v3 = _CTX.multiply(_CTX.multiply(v, v), v)
        ln_v3 = _ln(v3)
        # Accept when ln u < z^2 / 2 + d - d v^3 + d ln v^3; the draw is then d v^3.
        bound = _CTX.multiply(d, _CTX.add(_CTX.subtract(1, v3), ln_v3))
        if _ln(1 - Decimal(rng())) < _CTX.add(_CTX.divide(_CTX.multiply(z, z), 2), bound):
            return _CTX.add(_CTX.add(_ln(d), ln_v3), boost)


def _beta(p: SweepParameter, rng: Callable[[], float]) -> float:
    ln_x = _ln_gamma_variate(Decimal(_arg(p, "a")), rng)
    ln_y = _ln_gamma_variate(Decimal(_arg(p, "b")), rng)
    # X / (X + Y) = 1 / (1 + exp(ln Y - ln X)), written so that exp never overflows.
    t = _CTX.subtract(ln_y, ln_x)
    if t > 0:
        e = _exp(_CTX.minus(t))
        return float(_CTX.divide(e, _CTX.add(1, e)))
    return float(_CTX.divide(1, _CTX.add(1, _exp(t))))


def _quantized(form: Callable[[SweepParameter, Callable[[], float]], Any]):
    """The q_ form of `form`: its draw rounded to a multiple of q, as W&B does (round half to even
    as numpy's round; an int when q is one)."""

    def q_form(p: SweepParameter, rng: Callable[[], float]) -> int | float:
        q = _arg(p, "q")
        x = form(p, rng)
        if not math.isfinite(x / q):
            raise DrawError(p.name, f"drew {x:.6E}, too many steps of q ({q}) for a number")
        k = round(x / q)
        if isinstance(q, int) and not isinstance(q, bool):
            return k * q
        # k * q in decimal from q's shortest repr: 3 * 0.1 is 0.3, not 0.30000000000000004.
        return _to_float(_CTX.multiply(Decimal(k), Decimal(repr(q))), p.name)

    return q_form


_NUMERIC: dict[str, Callable[[SweepParameter, Callable[[], float]], Any]] = {
    "uniform": _uniform,
    "int_uniform": _int_uniform,
    "q_uniform": _quantized(_uniform),
    "log_uniform_values": _log_uniform_values,
    "q_log_uniform_values": _quantized(_log_uniform_values),
    "inv_log_uniform_values": _inv_log_uniform_values,
    "log_uniform": _log_uniform,
    "q_log_uniform": _quantized(_log_uniform),
    "inv_log_uniform": _inv_log_uniform,
    "normal": _normal,
    "q_normal": _quantized(_normal),
    "log_normal": _log_normal,
    "q_log_normal": _quantized(_log_normal),
    "beta": _beta,
    "q_beta": _quantized(_beta),
}


def draw(p: SweepParameter, rng: Callable[[], float]) -> Draw:
    """One value of `p` from `rng` (a `random.Random(...).random`). Raises DrawError when a draw
    is not a finite number (a log_normal with a huge mu or sigma)."""
    if p.distribution == "constant":
        return Draw(p.value)
    if p.distribution == "categorical":
        return _categorical(p, rng)
    return Draw(_NUMERIC[p.distribution](p, rng))


def random_draws(sweep: Sweep, count: int, seed: int) -> list[dict[str, Draw]]:
    """`count` draws of every parameter, in declared order, from `random.Random(seed)`."""
    rng = random.Random(seed).random
    parameters = list(sweep.parameters.values())
    return [{p.name: draw(p, rng) for p in parameters} for _ in range(count)]


def cell_seed(seed: int, cell: dict[str, Any]) -> int:
    """The seed of a sweep inside one matrix cell: derived from the sweep's seed and the cell's
    values (not its position), so cells differ, and adding or removing a cell leaves the others'
    draws as they were. sha256, never hash(): the same on every run and machine."""
    digest = hashlib.sha256(f"kaio-sweep\0{seed}\0{canonical_json(cell)}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def grid_size(sweep: Sweep) -> int:
    """How many combinations a grid sweep makes (a constant counts once)."""
    n = 1
    for p in sweep.parameters.values():
        n *= len(p.values or []) if p.distribution == "categorical" else 1
    return n


def grid(sweep: Sweep) -> list[dict[str, Draw]]:
    """Every combination of the parameters' values, first parameter varying slowest."""
    axes = []
    for p in sweep.parameters.values():
        if p.distribution == "categorical":
            axes.append([(p.name, Draw(v, i)) for i, v in enumerate(p.values or [])])
        else:  # constant: the only other form a grid sweep accepts
            axes.append([(p.name, Draw(p.value))])
    return [dict(combo) for combo in itertools.product(*axes)]
