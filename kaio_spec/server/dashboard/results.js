// Comparing a sweep's cells and reading one job's use of its machine, as `kaio results` does in
// the terminal: natural ordering, the declared metric's best cell, a CSV of the table, a
// parallel-coordinates view, and a job's telemetry over time. Plain SVG, no library.

import { formatNumber, keyOf } from "./chart.js";
import { h, svg } from "./dom.js";

// ---- ordering ----------------------------------------------------------------------------------

const NUMBER_IN_TEXT = /(\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)/;

// Text with its numbers compared as numbers, decimals included: "lr0.05" < "lr0.1" < "lr1".
export function naturalCompare(a, b) {
  const pa = String(a).split(NUMBER_IN_TEXT);
  const pb = String(b).split(NUMBER_IN_TEXT);
  for (let i = 0; i < Math.min(pa.length, pb.length); i++) {
    const c = i % 2 ? Number(pa[i]) - Number(pb[i]) : pa[i].localeCompare(pb[i]);
    if (c) return c;
  }
  return pa.length - pb.length;
}

export function isMissing(v) {
  return v === undefined || v === null || v === "" || (typeof v === "number" && Number.isNaN(v));
}

// Numbers by value, then text naturally; missing values last whichever the direction.
export function compareValues(a, b, descending = false) {
  const ma = isMissing(a);
  const mb = isMissing(b);
  if (ma || mb) return ma === mb ? 0 : ma ? 1 : -1;
  const na = typeof a === "number";
  const nb = typeof b === "number";
  if (na !== nb) return na ? -1 : 1;
  const c = na ? a - b : naturalCompare(keyOf(a), keyOf(b));
  return descending ? -c : c;
}

// The declared metric of a job's labels ({name, goal}), or null.
export function metricOf(labels) {
  try {
    const m = JSON.parse((labels && labels.metric) || "null");
    if (m && typeof m.name === "string" && m.name) {
      return { name: m.name, goal: m.goal === "maximize" ? "maximize" : "minimize" };
    }
  } catch {
    // not ours: no metric
  }
  return null;
}

// The best Completed row by the metric (the first of equals in name order), or null.
export function bestRow(rows, metric, valueOf) {
  if (!metric) return null;
  let best = null;
  for (const row of rows) {
    const v = valueOf(row, metric.name);
    if (row.job.status !== "Completed" || typeof v !== "number" || !Number.isFinite(v)) continue;
    if (best === null) best = { row, v };
    else if (metric.goal === "maximize" ? v > best.v : v < best.v) best = { row, v };
  }
  return best && best.row;
}

// ---- CSV ---------------------------------------------------------------------------------------

function csvField(v) {
  const text = isMissing(v) ? "" : typeof v === "number" ? String(v) : keyOf(v);
  return /[",\n\r]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

export function toCsv(header, records) {
  return [header, ...records].map((r) => r.map(csvField).join(",")).join("\n") + "\n";
}

// A link that downloads the CSV made by `make()` when clicked (made then: always current).
export function csvLink(filename, make) {
  const link = h("a", { href: "#", id: "sweep-csv", class: "button", download: filename, text: "Export CSV" });
  link.addEventListener("click", () => {
    const url = URL.createObjectURL(new Blob([make()], { type: "text/csv" }));
    link.href = url;
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  });
  return link;
}

// ---- parallel coordinates ----------------------------------------------------------------------

const PC = { width: 720, height: 320, top: 36, bottom: 28, side: 60 };
const LOW = [31, 78, 140]; // the dashboard's blue
const HIGH = [194, 65, 12]; // the chart's orange

function mix(a, b, f) {
  return `rgb(${a.map((v, i) => Math.round(v + (b[i] - v) * f)).join(",")})`;
}

function axisOf(name, values) {
  const present = values.filter((v) => !isMissing(v));
  if (present.length && present.every((v) => typeof v === "number" && Number.isFinite(v))) {
    const lo = present.reduce((a, v) => Math.min(a, v), Infinity);
    const hi = present.reduce((a, v) => Math.max(a, v), -Infinity);
    const span = hi - lo;
    // one value, or a span too small or too large for a double: every line through the middle
    const at = span > 0 && Number.isFinite(span) ? (v) => (v - lo) / span : () => 0.5;
    return { name, at, ticks: (span > 0 ? [lo, hi] : [lo]).map((t) => [formatNumber(t), at(t)]) };
  }
  const keys = [...new Set(present.map(keyOf))].sort(naturalCompare);
  const step = keys.length > 1 ? 1 / (keys.length - 1) : 0;
  const at = (v) => (keys.length > 1 ? keys.indexOf(keyOf(v)) * step : 0.5);
  return { name, at, ticks: keys.slice(0, 12).map((k) => [k, at(k)]) };
}

// One vertical axis per parameter and metric, one line per row, coloured by `colourBy` (low
// values blue, high orange); the best row drawn last and thick. rows: [{name, values: Map}],
// values keyed by axis id; axes: [{id, label}] (a parameter and a metric may share a name).
export function parallelCoordinates(rows, columns, colourBy, best) {
  const names = columns.map((c) => c.label);
  const { width, height, top, bottom, side } = PC;
  const root = svg("svg", {
    viewBox: `0 0 ${width} ${height}`,
    class: "chart parallel",
    id: "sweep-parallel",
    role: "img",
    "aria-label": `parallel coordinates of ${rows.length} cells over ${names.join(", ")}`,
  });
  const axes = columns.map((c) => ({ ...axisOf(c.label, rows.map((r) => r.values.get(c.id))), id: c.id }));
  const gap = names.length > 1 ? (width - 2 * side) / (names.length - 1) : 0;
  const xOf = (i) => side + i * gap;
  const yOf = (f) => height - bottom - f * (height - top - bottom);
  const colour = axisOf("", rows.map((r) => r.values.get(colourBy)));
  const ordered = [...rows].sort((a, b) => (a === best) - (b === best));
  for (const row of ordered) {
    const points = [];
    axes.forEach((axis, i) => {
      const v = row.values.get(axis.id);
      const y = isMissing(v) ? NaN : yOf(axis.at(v));
      if (Number.isFinite(y)) points.push(`${xOf(i).toFixed(1)},${y.toFixed(1)}`);
    });
    const c = row.values.get(colourBy);
    const f = typeof c === "number" && Number.isFinite(c) ? colour.at(c) : null;
    if (points.length < 2) continue;
    const stroke = f === null ? "#9aa0a6" : mix(LOW, HIGH, f);
    root.append(
      svg(
        "polyline",
        { points: points.join(" "), class: row === best ? "pc-line best" : "pc-line", stroke, fill: "none" },
        svg("title", { text: row.name }),
      ),
    );
  }
  axes.forEach((axis, i) => {
    const g = svg("g", { class: "axes" });
    g.append(svg("line", { x1: xOf(i), y1: yOf(0), x2: xOf(i), y2: yOf(1) }));
    g.append(svg("text", { class: "axis-title", x: xOf(i), y: top - 14, "text-anchor": "middle", text: axis.name }));
    for (const [label, f] of axis.ticks) {
      g.append(svg("text", { x: xOf(i) + 5, y: yOf(f) + 4, text: label }));
    }
    root.append(g);
  });
  return root;
}

// ---- telemetry ---------------------------------------------------------------------------------

const TL = { width: 640, height: 180, left: 56, right: 16, top: 14, bottom: 30 };
// sample fields (GET /jobs/<unique>/telemetry's sample_fields): seconds, cpu %, rss, gpu %, gpu MB
const SERIES = [
  { field: 1, title: "CPU %" },
  { field: 2, title: "Memory (MB)", scale: 1 / 1048576 },
  { field: 3, title: "GPU %" },
  { field: 4, title: "GPU memory (MB)" },
];

function lineChart(instances, series) {
  const { width, height, left, right, top, bottom } = TL;
  const scale = series.scale || 1;
  const all = instances.flatMap((inst) => inst.samples.filter((s) => typeof s[series.field] === "number"));
  const root = svg("svg", {
    viewBox: `0 0 ${width} ${height}`,
    class: "chart telemetry",
    role: "img",
    "aria-label": `${series.title} over time, ${instances.length} instance${instances.length === 1 ? "" : "s"}`,
  });
  const tMax = Math.max(1, ...all.map((s) => s[0]));
  const vMax = Math.max(series.field === 1 ? 100 : 1, ...all.map((s) => s[series.field] * scale));
  const x = (t) => left + (t / tMax) * (width - left - right);
  const y = (v) => height - bottom - (v / vMax) * (height - top - bottom);
  const axes = svg("g", { class: "axes" });
  axes.append(svg("line", { x1: left, y1: y(0), x2: width - right, y2: y(0) }));
  axes.append(svg("line", { x1: left, y1: top, x2: left, y2: y(0) }));
  for (const v of [0, vMax / 2, vMax]) {
    axes.append(svg("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end", text: formatNumber(Number(v.toPrecision(3))) }));
  }
  axes.append(svg("text", { x: width - right, y: height - 8, "text-anchor": "end", text: `${formatNumber(tMax)} s` }));
  axes.append(svg("text", { class: "axis-title", x: left, y: height - 8, text: series.title }));
  root.append(axes);
  instances.forEach((inst, i) => {
    const pts = inst.samples.filter((s) => typeof s[series.field] === "number");
    const g = svg("g", { class: `series series-${i % 8}` });
    if (pts.length) {
      g.append(svg("polyline", { points: pts.map((s) => `${x(s[0]).toFixed(1)},${y(s[series.field] * scale).toFixed(1)}`).join(" ") }, svg("title", { text: inst.host })));
    }
    root.append(g);
  });
  return root;
}

// CPU and memory over time (GPU too when an instance had one), a line per instance.
export function telemetryView(doc) {
  const instances = doc.instances || [];
  const sampled = instances.some((inst) => inst.samples && inst.samples.length);
  if (!sampled) return h("p", { class: "muted", text: "No samples yet: they come every half second while the job runs." });
  const charts = SERIES.filter((s) => instances.some((inst) => inst.samples.some((p) => typeof p[s.field] === "number")));
  const legend =
    instances.length > 1
      ? h("p", { class: "legend-row" }, instances.map((inst, i) => h("span", { class: `swatch series-${i % 8}`, text: inst.host })))
      : null;
  const peaks = instances
    .filter((inst) => inst.peak_rss_bytes !== null && inst.peak_rss_bytes !== undefined)
    .map((inst) => `${inst.host}: peak CPU ${formatNumber(inst.peak_cpu_percent)}%, peak memory ${formatNumber(inst.peak_rss_bytes / 1048576)} MB`);
  return h(
    "div",
    { id: "job-telemetry" },
    legend,
    charts.map((s) => lineChart(instances, s)),
    peaks.length ? h("p", { class: "muted", text: peaks.join(" · ") }) : null,
  );
}
