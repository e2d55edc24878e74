// Sweeps: jobs whose labels carry `manifest` and `key` (what the planner sends: manifest, key,
// name, cell = the matrix cell as compact JSON) grouped by manifest and job key. A group shows
// the latest attempt of each cell, with one column per matrix parameter and one per numeric
// value of the job's metrics.json (read through the presigned URL of GET /jobs/download, once
// per completed job), sortable, and a chart of a chosen metric against a chosen parameter.

import { api, fetchPresigned } from "./api.js";
import { chart, formatNumber, keyOf } from "./chart.js";
import { h, jobHref, poll, safeUrl, statusBadge, sweepHref, timeEl } from "./dom.js";
import { POLL_MS } from "./jobs.js";
import { bestRow, compareValues, csvLink, metricOf, parallelCoordinates, toCsv } from "./results.js";
import { errorText, notice } from "./ui.js";

const METRICS_FILE = "metrics.json";
const METRICS_MAX_BYTES = 1_000_000;
const MAX_METRICS = 100; // columns per job, so a metrics.json full of numbers stays readable
const FETCH_PARALLEL = 4;

export function sweepOf(job) {
  const labels = job.labels || {};
  if (typeof labels.manifest !== "string" || typeof labels.key !== "string") return null;
  // A Map: a parameter named `constructor` or `__proto__` is a name like any other.
  let cell = new Map();
  try {
    const parsed = JSON.parse(labels.cell || "{}");
    if (parsed && typeof parsed === "object" && !Array.isArray(parsed)) {
      cell = new Map(Object.entries(parsed));
    }
  } catch {
    // a cell too large for labels is named by its hash: no parameters to show
  }
  return {
    manifest: labels.manifest,
    key: labels.key,
    name: labels.name || job.job_name,
    cellId: labels.cell !== undefined ? labels.cell : job.unique_job_name,
    cell,
    metric: metricOf(labels), // {name, goal} when the job declares one
  };
}

function groupJobs(jobs) {
  const groups = new Map();
  for (const job of jobs) {
    const s = sweepOf(job);
    if (!s) continue;
    const id = JSON.stringify([s.manifest, s.key]);
    if (!groups.has(id)) groups.set(id, { manifest: s.manifest, key: s.key, jobs: [] });
    groups.get(id).jobs.push(job);
  }
  return [...groups.values()];
}

// ---- metrics.json, cached per job (an ended job's outputs never change) --------------------

const metricsCache = new Map(); // unique_job_name -> Promise<{values} | {error}>
const queue = [];
let running = 0;

function pump() {
  while (running < FETCH_PARALLEL && queue.length) {
    const task = queue.shift();
    running++;
    task().finally(() => {
      running--;
      pump();
    });
  }
}

function limited(fn) {
  return new Promise((resolve) => {
    queue.push(() => fn().then(resolve, (e) => resolve({ error: errorText(e) })));
    pump();
  });
}

function parseMetrics(text) {
  try {
    return JSON.parse(text);
  } catch {
    // Python's json.dump writes NaN and Infinity, which JSON.parse refuses.
    return JSON.parse(text.replace(/\b(?:NaN|-?Infinity)\b/g, "null"));
  }
}

// The finite numbers of metrics.json by dotted name, in a Map (a metric may be named __proto__).
export function numericValues(value, prefix = "", out = new Map(), depth = 0) {
  if (!value || typeof value !== "object" || Array.isArray(value) || depth > 4) return out;
  for (const [k, v] of Object.entries(value)) {
    if (out.size >= MAX_METRICS) break;
    const name = prefix ? `${prefix}.${k}` : k;
    if (typeof v === "number" && Number.isFinite(v)) out.set(name, v);
    else if (v && typeof v === "object") numericValues(v, name, out, depth + 1);
  }
  return out;
}

export function metricsOf(job) {
  if (job.status !== "Completed" || job.data_deleted) return null;
  let found = metricsCache.get(job.unique_job_name);
  if (!found) {
    found = limited(async () => {
      const { output_files: files } = await api.downloads(job.unique_job_name);
      // One instance: metrics.json; several: algo-N/metrics.json, the first host's.
      const hit =
        files.find(([path]) => path === METRICS_FILE) ||
        files
          .filter(([path]) => /^algo-\d+\/metrics\.json$/.test(path))
          .sort((a, b) => a[0].localeCompare(b[0], undefined, { numeric: true }))[0];
      if (!hit) return { values: new Map(), missing: true };
      const url = safeUrl(hit[2]);
      if (!url) return { error: "metrics.json: the server gave a link to elsewhere" };
      return { values: numericValues(parseMetrics(await fetchPresigned(url, METRICS_MAX_BYTES))) };
    });
    metricsCache.set(job.unique_job_name, found);
    found.then((r) => {
      if (r.error) metricsCache.delete(job.unique_job_name); // try again next round
    });
  }
  return found;
}

// ---- the list of sweeps ----------------------------------------------------------------------

function counts(jobs) {
  const by = new Map();
  for (const job of jobs) by.set(job.status, (by.get(job.status) || 0) + 1);
  return h(
    "span",
    { class: "counts" },
    [...by.entries()].map(([status, n]) => h("span", { class: "count" }, statusBadge(status), ` ${n}`)),
  );
}

export function sweepsView(main) {
  const body = h("div", { id: "sweeps" });
  main.append(
    h("h1", { text: "Sweeps" }),
    h(
      "p",
      { class: "muted" },
      "Jobs submitted by ",
      h("code", { text: "kaio apply" }),
      ", grouped by manifest and job key.",
    ),
    body,
  );
  let signature = "";
  const poller = poll(
    async () => {
      const { jobs } = await api.jobs(false);
      notice("");
      const groups = groupJobs(jobs);
      const next = JSON.stringify(groups.map((g) => [g.manifest, g.key, g.jobs.map((j) => j.status)]));
      if (next === signature) return;
      signature = next;
      if (!groups.length) {
        body.replaceChildren(h("p", { class: "empty", text: "No sweeps yet: no job carries manifest labels." }));
        return;
      }
      body.replaceChildren(
        h(
          "table",
          { class: "responsive", id: "sweep-list" },
          h("thead", {}, h("tr", {}, ["Manifest", "Job key", "Jobs", "Statuses", "Latest"].map((c) => h("th", { scope: "col", text: c })))),
          h(
            "tbody",
            {},
            groups.map((g) =>
              h(
                "tr",
                {},
                h("td", { dataset: { label: "Manifest" } }, h("a", { href: sweepHref(g.manifest, g.key), class: "sweep-link", text: g.manifest })),
                h("td", { dataset: { label: "Job key" }, text: g.key }),
                h("td", { dataset: { label: "Jobs" }, text: String(g.jobs.length) }),
                h("td", { dataset: { label: "Statuses" } }, counts(g.jobs)),
                h("td", { dataset: { label: "Latest" } }, timeEl(g.jobs[0].timestamp)),
              ),
            ),
          ),
        ),
      );
    },
    POLL_MS,
    (e) => {
      if (e.status === 401) return false;
      notice(`Could not refresh the sweeps: ${errorText(e)}; retrying.`, "error");
      return true;
    },
  );
  return { stop: () => poller.stop() };
}

// ---- one sweep -------------------------------------------------------------------------------

function cellText(v) {
  if (v === undefined) return "";
  if (typeof v === "number") return formatNumber(v);
  return keyOf(v);
}

// The latest attempt of each cell (GET /jobs lists newest first) and how many there were.
function latestPerCell(jobs) {
  const rows = new Map();
  for (const job of jobs) {
    const s = sweepOf(job);
    const row = rows.get(s.cellId);
    if (row) row.attempts++;
    else rows.set(s.cellId, { job, sweep: s, attempts: 1, metrics: undefined });
  }
  return [...rows.values()];
}

// "2/3" when the job may take several attempts (its retries label), else the count.
function attemptsText(row) {
  const retries = Number.parseInt((row.job.labels || {}).retries, 10);
  const most = Number.isInteger(retries) && retries > 0 ? retries + 1 : 1;
  return most > 1 && row.attempts <= most ? `${row.attempts}/${most}` : String(row.attempts);
}

export function sweepView(main, manifest, key) {
  // sort: null until a header is clicked: by the declared metric, best first, else by name
  const state = { sort: null, x: null, y: null };
  let rows = [];
  let signature = "";
  let stopped = false;
  const loaded = new Map(); // unique_job_name -> its metrics, once read
  const waiting = new Set(); // unique_job_names whose metrics are being read
  const summary = h("p", { id: "sweep-summary", class: "muted", role: "status" });
  const parallelBox = h("div", { id: "sweep-parallel-box" });
  const parallelSection = h(
    "section",
    { class: "card", "aria-labelledby": "parallel-title" },
    h("h2", { id: "parallel-title", text: "Parallel coordinates" }),
    h("p", { class: "muted", text: "One axis per parameter and metric; each line a cell, coloured by the chart's metric (blue low, orange high)." }),
    parallelBox,
  );
  const tableBox = h("div", { class: "scroll", id: "sweep-table-box" });
  const chartBox = h("div", { id: "sweep-chart-box" });
  const xSelect = h("select", { id: "chart-x" });
  const ySelect = h("select", { id: "chart-y" });
  xSelect.addEventListener("change", () => {
    state.x = xSelect.value;
    drawChart();
  });
  ySelect.addEventListener("change", () => {
    state.y = ySelect.value;
    drawChart();
    drawParallel();
  });

  main.append(
    h("p", { class: "crumbs" }, h("a", { href: "#/sweeps", text: "Sweeps" }), " / "),
    h("h1", { id: "sweep-title" }, h("span", { text: manifest }), " / ", h("span", { text: key })),
    h("div", { class: "sweep-head" }, summary, csvLink(`${manifest}-${key}.csv`, () => csvText())),
    tableBox,
    h(
      "section",
      { class: "card", "aria-labelledby": "chart-title" },
      h("h2", { id: "chart-title", text: "Chart" }),
      h(
        "div",
        { class: "filters" },
        h("label", { for: "chart-y" }, "Metric ", ySelect),
        h("label", { for: "chart-x" }, "against ", xSelect),
      ),
      chartBox,
    ),
    parallelSection,
  );

  function declared() {
    const row = rows.find((r) => r.sweep.metric);
    return row ? row.sweep.metric : null;
  }

  function metricValue(row, name) {
    return row.metrics && row.metrics.values ? row.metrics.values.get(name) : undefined;
  }

  function currentSort() {
    if (state.sort) return state.sort;
    const metric = declared();
    if (metric && columns().metrics.includes(metric.name)) {
      return { column: JSON.stringify(["metric", metric.name]), descending: metric.goal === "maximize" };
    }
    return { column: JSON.stringify(["name"]), descending: false };
  }

  function sortedRows() {
    const sort = currentSort();
    const column = JSON.parse(sort.column);
    return [...rows].sort(
      (a, b) =>
        compareValues(valueOf(a, column), valueOf(b, column), sort.descending) ||
        compareValues(a.sweep.name, b.sweep.name),
    );
  }

  function csvText() {
    const { params, metrics } = columns();
    const header = ["name", "status", "attempts", ...params, ...metrics];
    const records = sortedRows().map((row) => [
      row.sweep.name,
      row.job.status,
      row.attempts,
      ...params.map((p) => row.sweep.cell.get(p)),
      ...metrics.map((m) => metricValue(row, m)),
    ]);
    return toCsv(header, records);
  }

  function columns() {
    const params = [];
    const metrics = [];
    for (const row of rows) {
      for (const p of row.sweep.cell.keys()) if (!params.includes(p)) params.push(p);
      for (const m of row.metrics && row.metrics.values ? row.metrics.values.keys() : []) {
        if (!metrics.includes(m)) metrics.push(m);
      }
    }
    return { params, metrics };
  }

  function valueOf(row, column) {
    const [kind, name] = column;
    if (kind === "name") return row.sweep.name;
    if (kind === "status") return row.job.status;
    if (kind === "attempts") return row.attempts;
    if (kind === "param") return row.sweep.cell.get(name);
    return row.metrics && row.metrics.values ? row.metrics.values.get(name) : undefined;
  }

  function sortButton(column, label) {
    const id = JSON.stringify(column);
    const sort = currentSort();
    const active = sort.column === id;
    const th = h(
      "th",
      {
        scope: "col",
        "aria-sort": active ? (sort.descending ? "descending" : "ascending") : "none",
        class: column[0] === "metric" ? "metric" : column[0] === "param" ? "param" : null,
      },
      h(
        "button",
        {
          type: "button",
          class: "sort",
          dataset: { column: id },
          onclick: () => {
            state.sort = { column: id, descending: active ? !sort.descending : false };
            drawTable();
            const again = tableBox.querySelector(`button[data-column="${CSS.escape(id)}"]`);
            if (again) again.focus();
          },
        },
        label,
        h("span", { class: "arrow", "aria-hidden": "true", text: active ? (sort.descending ? " ▼" : " ▲") : "" }),
      ),
    );
    return th;
  }

  function drawTable() {
    const { params, metrics } = columns();
    const sorted = sortedRows();
    const best = bestRow(rows, declared(), metricValue);
    const fixed = [
      [["name"], "Job"],
      [["status"], "Status"],
      [["attempts"], "Attempts"],
    ];
    const headRow = h(
      "tr",
      {},
      fixed.map(([c, label]) => sortButton(c, label)),
      params.map((p) => sortButton(["param", p], p)),
      metrics.map((m) => sortButton(["metric", m], m)),
    );
    const groupRow = h(
      "tr",
      { class: "groups" },
      h("td", { colspan: fixed.length }),
      params.length ? h("th", { scope: "colgroup", colspan: params.length, class: "param", text: "Parameters" }) : null,
      metrics.length ? h("th", { scope: "colgroup", colspan: metrics.length, class: "metric", text: "Metrics (metrics.json)" }) : null,
    );
    const body = h(
      "tbody",
      {},
      sorted.map((row) =>
        h(
          "tr",
          { dataset: { unique: row.job.unique_job_name }, class: row === best ? "best" : null },
          h(
            "td",
            {},
            h("a", { href: jobHref(row.job.unique_job_name), text: row.sweep.name }),
            row === best ? h("span", { class: "best-mark", title: `best ${declared().name}`, text: " ★ best" }) : null,
          ),
          h("td", {}, statusBadge(row.job.status)),
          h("td", { class: "num", text: attemptsText(row), title: `${row.attempts} attempt${row.attempts === 1 ? "" : "s"} of this cell; the latest is shown` }),
          params.map((p) => h("td", { class: "param", text: cellText(row.sweep.cell.get(p)) })),
          metrics.map((m) => {
            const v = valueOf(row, ["metric", m]);
            return h("td", { class: "metric num", text: v === undefined ? "" : formatNumber(v), title: v === undefined ? null : String(v) });
          }),
        ),
      ),
    );
    const focused = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.column : null;
    tableBox.replaceChildren(h("table", { id: "sweep-table", class: "sweep" }, h("thead", {}, groupRow, headRow), body));
    if (focused) {
      const again = tableBox.querySelector(`button[data-column="${CSS.escape(focused)}"]`);
      if (again) again.focus();
    }
  }

  function fillSelect(select, names, chosen) {
    const current = [...select.options].map((o) => o.value);
    if (JSON.stringify(current) !== JSON.stringify(names)) {
      select.replaceChildren(...names.map((n) => h("option", { value: n, text: n })));
    }
    if (chosen !== null && names.includes(chosen)) select.value = chosen;
    return select.value || null;
  }

  function drawChart() {
    const { params, metrics } = columns();
    const varying = params.filter((p) => new Set(rows.map((r) => keyOf(r.sweep.cell.get(p)))).size > 1);
    state.x = fillSelect(xSelect, params, state.x ?? varying[0] ?? params[0] ?? null);
    const metric = declared();
    const preferred = metric && metrics.includes(metric.name) ? metric.name : metrics[0];
    state.y = fillSelect(ySelect, metrics, state.y ?? preferred ?? null);
    if (!state.x || !state.y) {
      chartBox.replaceChildren(
        h("p", { class: "muted", text: metrics.length ? "This sweep has no parameters." : "No metrics yet: completed jobs that write metrics.json show here." }),
      );
      return;
    }
    const others = varying.filter((p) => p !== state.x);
    const points = [];
    for (const row of rows) {
      const yv = valueOf(row, ["metric", state.y]);
      const xv = row.sweep.cell.get(state.x);
      if (typeof yv !== "number" || xv === undefined) continue;
      points.push({
        x: xv,
        y: yv,
        series: others.map((p) => `${p}=${cellText(row.sweep.cell.get(p))}`).join(", "),
        title: `${row.sweep.name}: ${state.x}=${cellText(xv)}, ${state.y}=${formatNumber(yv)}`,
      });
    }
    chartBox.replaceChildren(chart(points, state.x, state.y));
  }

  function drawParallel() {
    const { params, metrics } = columns();
    if (params.length < 2) {
      parallelSection.hidden = true;
      return;
    }
    parallelSection.hidden = false;
    const axes = [
      ...params.map((p) => ({ id: `param:${p}`, label: p, value: (row) => row.sweep.cell.get(p) })),
      ...metrics.map((m) => ({ id: `metric:${m}`, label: m, value: (row) => metricValue(row, m) })),
    ];
    const lines = rows.map((row) => ({ row, name: row.sweep.name, values: new Map(axes.map((a) => [a.id, a.value(row)])) }));
    const best = bestRow(rows, declared(), metricValue);
    const bestLine = lines.find((l) => l.row === best) || null;
    parallelBox.replaceChildren(parallelCoordinates(lines, axes, state.y ? `metric:${state.y}` : null, bestLine));
  }

  function draw() {
    const done = rows.filter((r) => r.job.status === "Completed").length;
    const metric = declared();
    const best = bestRow(rows, metric, metricValue);
    const bestText = best ? `; best: ${best.sweep.name} (${metric.name} ${formatNumber(metricValue(best, metric.name))})` : "";
    summary.textContent = `${rows.length} cell${rows.length === 1 ? "" : "s"}, ${done} completed${bestText}`;
    if (!rows.length) {
      tableBox.replaceChildren(h("p", { class: "empty", text: "No job of this sweep is listed (archived jobs are not shown)." }));
      chartBox.replaceChildren();
      return;
    }
    drawTable();
    drawChart();
    drawParallel();
  }

  async function refresh() {
    const { jobs } = await api.jobs(false);
    notice("");
    const mine = jobs.filter((j) => {
      const s = sweepOf(j);
      return s && s.manifest === manifest && s.key === key;
    });
    const next = latestPerCell(mine);
    const nextSignature = JSON.stringify(next.map((r) => [r.job.unique_job_name, r.job.status, r.attempts]));
    for (const row of next) row.metrics = loaded.get(row.job.unique_job_name);
    rows = next;
    if (nextSignature !== signature) {
      signature = nextSignature;
      draw();
    }
    // Metrics arrive one by one (each fetched once, see metricsOf); each redraws once.
    for (const row of rows) {
      const unique = row.job.unique_job_name;
      if (row.metrics !== undefined || waiting.has(unique)) continue;
      const pending = metricsOf(row.job);
      if (!pending) continue;
      waiting.add(unique);
      pending.then((m) => {
        waiting.delete(unique);
        if (stopped || m.error) return; // an error is tried again at the next refresh
        loaded.set(unique, m);
        for (const r of rows) if (r.job.unique_job_name === unique) r.metrics = m;
        draw();
      });
    }
  }

  const poller = poll(refresh, POLL_MS, (e) => {
    if (e.status === 401) return false;
    notice(`Could not refresh the sweep: ${errorText(e)}; retrying.`, "error");
    return true;
  });
  return {
    stop() {
      stopped = true;
      poller.stop();
    },
  };
}

