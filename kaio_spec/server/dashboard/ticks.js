// Axis ticks and positions: pure functions of numbers (no DOM), so that node runs the same file
// in the tests. Every loop here is bounded by MAX_TICKS whatever the values: a sweep whose
// metrics are 1e16 and 1e16 + 2 (a step below the values' float resolution), 1e308 and -1e308
// (a span that overflows) or NaN yields a degenerate axis, never a loop that does not end.

export const MAX_TICKS = 12;
const RESOLUTION = 1e-9; // a span this small relative to the values is drawn as one value

// A degenerate axis: one value in the middle, padded by a tenth of it (or by 1 around 0).
function around(value) {
  if (!Number.isFinite(value)) return { lo: -1, hi: 1, ticks: [] };
  const pad = value === 0 ? 1 : Math.abs(value) * 0.1;
  return evenTicks(value - pad, value + pad, 4);
}

// Ticks from lo to hi in `count` equal steps, each one a new value (never more than MAX_TICKS).
function evenTicks(lo, hi, count) {
  const ticks = [];
  for (let i = 0; i <= Math.min(count, MAX_TICKS); i++) {
    const v = Number((lo + (hi / count - lo / count) * i).toPrecision(12));
    if (Number.isFinite(v) && v !== ticks[ticks.length - 1]) ticks.push(v);
  }
  return { lo, hi, ticks };
}

// Round numbers (1, 2 or 5 times a power of ten) spanning [min, max]: {lo, hi, ticks}.
export function niceTicks(min, max, count = 5) {
  if (!Number.isFinite(min) || !Number.isFinite(max)) {
    const finite = [min, max].filter(Number.isFinite);
    return around(finite.length ? finite[0] : NaN);
  }
  if (min > max) [min, max] = [max, min];
  const span = max - min;
  const scale = Math.max(Math.abs(min), Math.abs(max));
  if (!Number.isFinite(span)) return evenTicks(min, max, 4); // beyond round numbers: 4 even steps
  if (span <= scale * RESOLUTION) return around(min / 2 + max / 2);
  const raw = span / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) || 10 * mag;
  const lo = Math.floor(min / step) * step;
  const hi = Math.ceil(max / step) * step;
  const steps = Math.round((hi - lo) / step);
  if (!Number.isFinite(lo) || !Number.isFinite(hi) || !(steps >= 1) || steps > MAX_TICKS) {
    return evenTicks(min, max, 4);
  }
  const ticks = [];
  for (let i = 0; i <= steps; i++) {
    const v = Number((lo + i * step).toPrecision(12));
    if (v === ticks[ticks.length - 1]) break; // the step no longer changes the value
    ticks.push(v);
  }
  return { lo, hi, ticks };
}

// Powers of ten from 10^lo to 10^hi (logarithms), every k-th so that at most MAX_TICKS show.
export function logTicks(lo, hi) {
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) return [];
  const first = Math.ceil(lo);
  const last = Math.floor(hi);
  const every = Math.max(1, Math.ceil((last - first + 1) / MAX_TICKS));
  const ticks = [];
  for (let p = first, n = 0; p <= last && n < MAX_TICKS; p += every, n++) ticks.push(10 ** p);
  return ticks;
}

// Where v lies between lo and hi, from 0 to 1; halves keep a span near 1e308 from overflowing.
export function position(v, lo, hi) {
  const at = (v / 2 - lo / 2) / (hi / 2 - lo / 2);
  return Number.isFinite(at) ? at : 0.5;
}
