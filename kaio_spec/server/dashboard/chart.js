// A plain SVG chart of one metric (y) against one parameter (x), one line per combination of
// the other parameters. Numeric x gets a linear or (when it spans 100× or more) a log axis;
// anything else is categorical. Colours and sizes come from style.css classes.

import { svg } from "./dom.js";
import { logTicks, niceTicks, position } from "./ticks.js";

const WIDTH = 640;
const HEIGHT = 360;
const MARGIN = { top: 16, right: 20, bottom: 48, left: 68 };
const LEGEND_WIDTH = 150; // room on the right for the series' names
const INSET = 16; // keeps points off the axes
const MAX_SERIES = 8;

export function formatNumber(v) {
  if (!Number.isFinite(v)) return String(v);
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a < 1e-3 || a >= 1e6) return v.toExponential(2).replace("e+", "e");
  return String(Number(v.toPrecision(4)));
}

// [min, max] without spreading the values into arguments (the stack has a limit).
function extent(values) {
  return values.reduce(([lo, hi], v) => [Math.min(lo, v), Math.max(hi, v)], [Infinity, -Infinity]);
}

function xScale(values, plotRight) {
  const numeric = values.every((v) => typeof v === "number" && Number.isFinite(v));
  const left = MARGIN.left + INSET;
  const right = plotRight - INSET;
  if (numeric) {
    const [min, max] = extent(values);
    if (min > 0 && max / min >= 100) {
      const lo = Math.log10(min);
      const hi = Math.log10(max);
      const at = (v) => left + position(Math.log10(v), lo, hi) * (right - left);
      return { kind: "log", at, ticks: logTicks(lo, hi), label: formatNumber };
    }
    const { lo, hi, ticks } = niceTicks(min, max);
    const at = (v) => left + position(v, lo, hi) * (right - left);
    return { kind: "linear", at, ticks, label: formatNumber };
  }
  const keys = [...new Set(values.map((v) => keyOf(v)))].sort((a, b) =>
    a.localeCompare(b, undefined, { numeric: true }),
  );
  const step = (right - left) / keys.length;
  const at = (v) => left + step * (keys.indexOf(keyOf(v)) + 0.5);
  return { kind: "category", at, ticks: keys, label: (k) => k, tickAt: (k) => left + step * (keys.indexOf(k) + 0.5) };
}

export function keyOf(v) {
  return typeof v === "string" ? v : JSON.stringify(v);
}

// points: [{x, y, series, title}]; returns an <svg>.
export function chart(points, xName, yName) {
  const root = svg("svg", {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    class: "chart",
    id: "sweep-chart",
    role: "img",
    "aria-label": `${yName} against ${xName}: ${points.length} point${points.length === 1 ? "" : "s"}`,
  });
  if (!points.length) {
    root.append(svg("text", { x: WIDTH / 2, y: HEIGHT / 2, class: "chart-empty", "text-anchor": "middle", text: "No completed job has this metric yet." }));
    return root;
  }
  const series = [...new Set(points.map((p) => p.series))].sort();
  const lined = series.length <= MAX_SERIES;
  const withLegend = lined && series.some((name) => name);
  const plotRight = WIDTH - MARGIN.right - (withLegend ? LEGEND_WIDTH : 0);
  const x = xScale(
    points.map((p) => p.x),
    plotRight,
  );
  const ys = points.map((p) => p.y);
  const { lo, hi, ticks } = niceTicks(...extent(ys));
  const top = MARGIN.top;
  const bottom = HEIGHT - MARGIN.bottom;
  const y = (v) => bottom - position(v, lo, hi) * (bottom - top);

  const axes = svg("g", { class: "axes" });
  axes.append(svg("line", { x1: MARGIN.left, y1: bottom, x2: plotRight, y2: bottom }));
  axes.append(svg("line", { x1: MARGIN.left, y1: top, x2: MARGIN.left, y2: bottom }));
  for (const t of ticks) {
    axes.append(svg("line", { class: "grid", x1: MARGIN.left, y1: y(t), x2: plotRight, y2: y(t) }));
    axes.append(svg("text", { x: MARGIN.left - 6, y: y(t) + 4, "text-anchor": "end", text: formatNumber(t) }));
  }
  for (const t of x.ticks) {
    const at = x.tickAt ? x.tickAt(t) : x.at(t);
    axes.append(svg("line", { x1: at, y1: bottom, x2: at, y2: bottom + 4 }));
    axes.append(svg("text", { x: at, y: bottom + 18, "text-anchor": "middle", text: x.label(t) }));
  }
  axes.append(svg("text", { class: "axis-title", x: (MARGIN.left + plotRight) / 2, y: HEIGHT - 8, "text-anchor": "middle", text: x.kind === "log" ? `${xName} (log scale)` : xName }));
  axes.append(svg("text", { class: "axis-title", x: 14, y: (top + bottom) / 2, "text-anchor": "middle", transform: `rotate(-90 14 ${(top + bottom) / 2})`, text: yName }));
  root.append(axes);

  const legend = svg("g", { class: "legend" });
  series.forEach((name, i) => {
    const mine = points.filter((p) => p.series === name);
    const css = lined ? `series series-${i}` : "series";
    const g = svg("g", { class: css });
    if (lined && x.kind !== "category" && mine.length > 1) {
      const sorted = [...mine].sort((a, b) => a.x - b.x);
      g.append(svg("polyline", { points: sorted.map((p) => `${x.at(p.x)},${y(p.y)}`).join(" ") }));
    }
    for (const p of mine) {
      g.append(svg("circle", { cx: x.at(p.x), cy: y(p.y), r: 4, class: "point" }, svg("title", { text: p.title })));
    }
    root.append(g);
    if (lined && name) {
      const row = svg("g", { class: css, transform: `translate(${plotRight + 20}, ${top + 6 + i * 22})` });
      row.append(svg("circle", { cx: 0, cy: 0, r: 4, class: "point" }));
      row.append(svg("text", { x: 10, y: 4, text: name }));
      legend.append(row);
    }
  });
  root.append(legend);
  return root;
}
