"""The sweep chart's axis code (kaio_spec/server/dashboard/ticks.js) run under node on hostile
values: a table of pairs a tenant's metrics.json can hold, and random pairs (hypothesis). Each
answer must come back (a loop that never ends is the bug this guards against), with a bounded
number of finite, increasing ticks and positions inside the plot. The same file runs in the
browser (test_dashboard_browser.py::test_a_sweep_with_hostile_values_renders)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kaio_spec.server.routes.dashboard import DASHBOARD_DIR

NODE = shutil.which("node")
HANG_S = 60  # a hang detector, never a timing assertion

pytestmark = pytest.mark.skipif(
    NODE is None, reason="node is not installed (apt-get install nodejs)"
)

RUNNER = """
import { pathToFileURL } from "node:url";
import { readFileSync } from "node:fs";
const [module, input] = process.argv.slice(1);
const { niceTicks, logTicks, position, MAX_TICKS } = await import(pathToFileURL(module));
const num = (s) => Number(s);
const out = [];
for (const [a, b] of JSON.parse(readFileSync(input, "utf8"))) {
  const min = num(a), max = num(b);
  const { lo, hi, ticks } = niceTicks(min, max);
  const logs = logTicks(Math.log10(Math.abs(min)), Math.log10(Math.abs(max)));
  out.push({
    lo: String(lo), hi: String(hi), ticks: ticks.map(String), logs: logs.map(String),
    at: [position(min, lo, hi), position(max, lo, hi)].map(String),
  });
}
console.log(JSON.stringify({ MAX_TICKS, out }));
"""

HOSTILE_PAIRS = [
    (1e16, 10000000000000002.0),  # the step is below the values' resolution
    (10000000000000002.0, 1e16),  # the other way round
    (2**53, 2**53 + 2),
    (-1e16, -1e16 + 2),
    (1e308, 1.7976931348623157e308),
    (-1.7976931348623157e308, 1.7976931348623157e308),  # the span overflows
    (0.0, 1.7976931348623157e308),
    (5e-324, 1e-323),  # subnormal
    (0.0, 5e-324),
    (-0.0, 0.0),
    (0.0, 0.0),
    (3.5, 3.5),  # identical
    (1e300, 1e300),
    (math.nan, 1.0),
    (1.0, math.nan),
    (math.nan, math.nan),
    (math.inf, 1.0),
    (-math.inf, math.inf),
    (0.1, 0.30000000000000004),
    (1e-300, 2e-300),
    (123456789.123, 123456789.12300001),
]


def as_text(v: float) -> str:
    """A float as JavaScript's Number() reads it (JSON has no NaN or Infinity)."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "Infinity" if v > 0 else "-Infinity"
    return repr(v)


def run_ticks(pairs: list[tuple[float, float]], tmp: Path) -> tuple[int, list[dict]]:
    module = tmp / "ticks.mjs"  # .mjs: node loads the browser's ES module as one
    shutil.copyfile(DASHBOARD_DIR / "ticks.js", module)
    data = tmp / "pairs.json"
    data.write_text(json.dumps([[as_text(a), as_text(b)] for a, b in pairs]))
    result = subprocess.run(
        [NODE, "--input-type=module", "-e", RUNNER, str(module), str(data)],
        capture_output=True,
        text=True,
        timeout=HANG_S,
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    return answer["MAX_TICKS"], answer["out"]


def check(pair: tuple[float, float], got: dict, max_ticks: int) -> None:
    ticks = [float(t) for t in got["ticks"]]
    assert len(ticks) <= max_ticks + 1, (pair, ticks)
    assert all(math.isfinite(t) for t in ticks), (pair, ticks)
    assert ticks == sorted(set(ticks)), (pair, ticks)  # increasing, each a new value
    assert len(got["logs"]) <= max_ticks, (pair, got["logs"])
    lo, hi = float(got["lo"]), float(got["hi"])
    assert math.isfinite(lo) and math.isfinite(hi) and lo < hi, (pair, got)
    for at in got["at"]:
        assert 0 - 1e-9 <= float(at) <= 1 + 1e-9, (pair, got)  # inside the plot
    if all(math.isfinite(v) for v in pair):
        assert ticks, (pair, got)


def test_hostile_pairs_give_bounded_finite_ticks(tmp_path):
    max_ticks, out = run_ticks(HOSTILE_PAIRS, tmp_path)
    assert len(out) == len(HOSTILE_PAIRS)
    for pair, got in zip(HOSTILE_PAIRS, out, strict=True):
        check(pair, got, max_ticks)


def test_ordinary_ranges_get_round_ticks(tmp_path):
    _, out = run_ticks([(0.002, 0.4), (1.0, 4.0), (-3.0, 7.0)], tmp_path)
    assert out[0]["ticks"] == ["0", "0.1", "0.2", "0.3", "0.4"]
    assert out[1]["ticks"] == ["1", "2", "3", "4"]
    assert out[2]["ticks"] == ["-4", "-2", "0", "2", "4", "6", "8"]


@settings(max_examples=15, deadline=None)
@given(st.lists(st.tuples(st.floats(), st.floats()), min_size=1, max_size=300))
def test_any_pair_of_floats_gives_bounded_finite_ticks(tmp_path_factory, pairs):
    max_ticks, out = run_ticks(pairs, tmp_path_factory.mktemp("ticks"))
    for pair, got in zip(pairs, out, strict=True):
        check(pair, got, max_ticks)
