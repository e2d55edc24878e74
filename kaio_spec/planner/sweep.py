"""Sweeps: W&B's parameter forms, drawn the same way on every machine and Python version.

One generator per sweep (per matrix cell when the job has a matrix too), `random.Random(seed)`, of
which only `.random()` is used: CPython's Mersenne Twister seeded with an int and its 53-bit
`random()` are stable across versions and platforms, while `uniform`, `gauss`, `choice` and
friends are not promised to be. Everything else is derived here from those draws:

    categorical          index = first i with r < p_0 + ... + p_i  (equal p when none are given)
    int_uniform          min + floor(r * (max - min + 1))          (max included)
    uniform              min + (max - min) * r
    q_uniform            round(uniform / q) * q                    (round half to even, as numpy)
    log_uniform_values   exp(ln min + (ln max - ln min) * r)
    normal               mu + sigma * z, z by Marsaglia's polar method (two draws per try)
    log_normal           exp(mu + sigma * z)
    constant             the value; draws nothing

`exp`, `ln` and `sqrt` are computed with `decimal` in a fixed context (correctly rounded, pure
software), never with the platform's libm, whose last bits may differ from one machine to the next.
Parameters are drawn in the order they are declared, one full set per draw, so the first N draws
stay the same when `count` grows.
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

from kaio_spec.manifest import Sweep, SweepParameter
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


def _uniform(p: SweepParameter, rng: Callable[[], float]) -> float:
    return p.min + (p.max - p.min) * rng()


def _int_uniform(p: SweepParameter, rng: Callable[[], float]) -> int:
    lo, hi = int(p.min), int(p.max)
    return min(lo + int(rng() * (hi - lo + 1)), hi)


def _q_uniform(p: SweepParameter, rng: Callable[[], float]) -> int | float:
    k = round(_uniform(p, rng) / p.q)
    if isinstance(p.q, int) and not isinstance(p.q, bool):
        return k * p.q
    # k * q in decimal from q's shortest repr: 3 * 0.1 is 0.3, not 0.30000000000000004.
    return _to_float(_CTX.multiply(Decimal(k), Decimal(repr(p.q))), p.name)


def _log_uniform_values(p: SweepParameter, rng: Callable[[], float]) -> float:
    lo, hi = _ln(Decimal(p.min)), _ln(Decimal(p.max))
    x = _CTX.add(lo, _CTX.multiply(_CTX.subtract(hi, lo), Decimal(rng())))
    return min(max(_to_float(_exp(x), p.name), p.min), p.max)


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
    return _CTX.add(Decimal(p.mu), _CTX.multiply(Decimal(p.sigma), _standard_normal(rng)))


def _normal(p: SweepParameter, rng: Callable[[], float]) -> float:
    return _to_float(_gaussian(p, rng), p.name)


def _log_normal(p: SweepParameter, rng: Callable[[], float]) -> float:
    return _to_float(_exp(_gaussian(p, rng)), p.name)


_NUMERIC: dict[str, Callable[[SweepParameter, Callable[[], float]], Any]] = {
    "uniform": _uniform,
    "int_uniform": _int_uniform,
    "q_uniform": _q_uniform,
    "log_uniform_values": _log_uniform_values,
    "normal": _normal,
    "log_normal": _log_normal,
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
