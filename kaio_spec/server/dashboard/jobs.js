// The jobs list: newest first, filtered by status and text, archived jobs on request; it polls
// GET /jobs every 2 s while the tab is visible and updates rows in place (focus stays put).

import { api } from "./api.js";
import { duration, h, instancesText, jobHref, poll, statusBadge, timeEl } from "./dom.js";
import { errorText, notice } from "./ui.js";

export const POLL_MS = 2000;
const STATUSES = ["Pending", "InProgress", "Stopping", "Completed", "Failed", "Stopped"];
const ACTIVE = new Set(["pending", "inprogress", "stopping"]);
const COLUMNS = ["Job", "Status", "Instances", "Submitted", "Started", "Ended", "Duration"];

// Kept across visits to the list within the tab.
const filters = { status: "", text: "", archived: false };

function matches(job) {
  const status = job.status.toLowerCase();
  if (filters.status === "active" && !ACTIVE.has(status)) return false;
  if (filters.status && filters.status !== "active" && status !== filters.status.toLowerCase()) {
    return false;
  }
  const text = filters.text.trim().toLowerCase();
  if (!text) return true;
  const haystack = [
    job.job_name,
    job.unique_job_name,
    job.status,
    job.instance_type,
    ...Object.values(job.labels || {}),
  ];
  return haystack.some((value) => String(value).toLowerCase().includes(text));
}

function controls(onChange) {
  const status = h(
    "select",
    { id: "filter-status", name: "status" },
    h("option", { value: "", text: "All" }),
    h("option", { value: "active", text: "Active" }),
    STATUSES.map((s) => h("option", { value: s, text: s })),
  );
  status.value = filters.status;
  status.addEventListener("change", () => {
    filters.status = status.value;
    onChange(false);
  });
  const text = h("input", {
    id: "filter-text",
    type: "search",
    placeholder: "name, label…",
    autocomplete: "off",
    value: filters.text,
  });
  text.addEventListener("input", () => {
    filters.text = text.value;
    onChange(false);
  });
  const archived = h("input", { id: "filter-archived", type: "checkbox" });
  archived.checked = filters.archived;
  archived.addEventListener("change", () => {
    filters.archived = archived.checked;
    onChange(true);
  });
  return h(
    "div",
    { class: "filters" },
    h("label", { for: "filter-status" }, "Status ", status),
    h("label", { for: "filter-text" }, "Search ", text),
    h("label", { for: "filter-archived", class: "check" }, archived, " Show archived"),
  );
}

function cell(label, ...content) {
  // One child, so the narrow layout's label column and value column stay two.
  return h("td", { dataset: { label } }, h("div", { class: "cell" }, ...content));
}

// One row per job, rebuilt cell by cell only when its content changed.
function fillRow(tr, job) {
  const signature = JSON.stringify([job, job.end_time ? "" : duration(job)]);
  if (tr.dataset.signature === signature) return;
  tr.dataset.signature = signature;
  const hadFocus = tr.contains(document.activeElement);
  // The manifest's readable name for it (labels.name, as kaio apply sends it), else its job_name.
  const labels = job.labels || {};
  const readable = typeof labels.name === "string" && labels.name ? labels.name : job.job_name;
  const name = h("a", { href: jobHref(job.unique_job_name), class: "job-link", text: readable });
  tr.replaceChildren(
    cell(
      "Job",
      name,
      h("div", { class: "unique muted", text: job.unique_job_name }),
      job.archived ? h("span", { class: "tag", text: "archived" }) : null,
      job.data_deleted ? h("span", { class: "tag", text: "data deleted" }) : null,
    ),
    cell("Status", statusBadge(job.status)),
    cell("Instances", instancesText(job)),
    cell("Submitted", timeEl(job.timestamp)),
    cell("Started", timeEl(job.start_time)),
    cell("Ended", timeEl(job.end_time)),
    cell("Duration", duration(job)),
  );
  tr.dataset.status = job.status;
  if (hadFocus) name.focus();
}

// Jobs grouped by their manifest (labels.manifest), groups in the order of their newest job;
// jobs of no manifest last, under no heading when no job has one.
function byManifest(jobs) {
  const groups = new Map();
  for (const job of jobs) {
    const m = (job.labels || {}).manifest;
    const key = typeof m === "string" && m ? m : null;
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(job);
  }
  const named = [...groups].filter(([key]) => key !== null);
  const other = groups.get(null);
  if (other && named.length) return [...named, ["", other]];
  return named.length ? named : [[null, other || []]];
}

export function jobsView(main) {
  const rows = new Map(); // unique_job_name -> <tr>
  const groups = new Map(); // manifest -> its heading <tr>

  function groupRow(manifest, n) {
    let tr = groups.get(manifest);
    if (!tr) {
      tr = h("tr", { class: "group" });
      groups.set(manifest, tr);
    }
    const title = manifest ? `manifest ${manifest}` : "jobs of no manifest";
    const text = `${title} · ${n} job${n === 1 ? "" : "s"}`;
    if (tr.textContent !== text) {
      tr.replaceChildren(h("th", { scope: "colgroup", colspan: COLUMNS.length, text }));
    }
    return tr;
  }
  let jobs = [];
  const count = h("p", { id: "jobs-count", class: "muted", role: "status" });
  const tbody = h("tbody");
  const table = h(
    "table",
    { id: "jobs", class: "jobs responsive" },
    h("thead", {}, h("tr", {}, COLUMNS.map((c) => h("th", { scope: "col", text: c })))),
    tbody,
  );
  const empty = h(
    "p",
    { id: "jobs-empty", class: "empty", hidden: true },
    "No jobs to show. Submit one with ",
    h("code", { text: "kaio apply kaio.yaml" }),
    ".",
  );

  function render() {
    const shown = jobs.filter(matches);
    const keep = new Set(shown.map((j) => j.unique_job_name));
    for (const [unique, tr] of rows) {
      if (!keep.has(unique)) {
        tr.remove();
        rows.delete(unique);
      }
    }
    const order = [];
    for (const [manifest, members] of byManifest(shown)) {
      if (manifest !== null) order.push(groupRow(manifest, members.length));
      for (const job of members) {
        let tr = rows.get(job.unique_job_name);
        if (!tr) {
          tr = h("tr", { dataset: { unique: job.unique_job_name } });
          rows.set(job.unique_job_name, tr);
        }
        fillRow(tr, job);
        order.push(tr);
      }
    }
    for (const [manifest, tr] of groups) {
      if (!order.includes(tr)) {
        tr.remove();
        groups.delete(manifest);
      }
    }
    let previous = null;
    for (const tr of order) {
      const expected = previous ? previous.nextSibling : tbody.firstChild;
      if (expected !== tr) tbody.insertBefore(tr, expected);
      previous = tr;
    }
    count.textContent = `${jobs.length} job${jobs.length === 1 ? "" : "s"}, ${shown.length} shown`;
    empty.hidden = shown.length > 0;
    table.hidden = shown.length === 0;
  }

  async function refresh() {
    const data = await api.jobs(filters.archived);
    jobs = data.jobs;
    notice("");
    render();
  }

  main.append(
    h("h1", { text: "Jobs" }),
    controls((refetch) => (refetch ? poller.now() : render())),
    count,
    table,
    empty,
  );
  const poller = poll(refresh, POLL_MS, (e) => {
    if (e.status === 401) return false;
    notice(`Could not refresh the jobs: ${errorText(e)}; retrying.`, "error");
    return true;
  });
  return { stop: () => poller.stop() };
}
