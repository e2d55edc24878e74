// One job: its facts, status history, labels, the jobs it needs and those that need it, env names (never values), failure reason, its
// parameters and metrics, its telemetry over time, logs per host and stream (followed live while
// it runs), outputs, and Stop / Archive / Delete data.

import { api } from "./api.js";
import {
  clear,
  duration,
  formatTime,
  h,
  instancesText,
  isFinal,
  jobHref,
  poll,
  safeUrl,
  statusBadge,
  sweepHref,
  timeEl,
} from "./dom.js";
import { formatNumber, keyOf } from "./chart.js";
import { telemetryView } from "./results.js";
import { metricsOf, sweepOf } from "./sweeps.js";
import { confirmAction, errorText, notice } from "./ui.js";

const JOB_POLL_MS = 2000;
const TELEMETRY_MS = 4000; // a running job's telemetry is read again at most this often
const LOG_POLL_MS = 1000;
// The jobs that need this one are submitted after it ends (kaio apply waits for it): its
// "Needed by" is read again this often while the page is open.
const LINKS_POLL_MS = 5000;
const LOG_KEEP_CHARS = 1_000_000; // what the page keeps of a log: its most recent part
// Terminal escape sequences (colours, cursor moves, titles), removed rather than shown raw: CSI
// (ESC [ or its one-byte form), OSC (ESC ] to BEL or ESC backslash), other ESC sequences
// (ESC ( B ...), and one cut off at the end of what has arrived so far (its rest comes next).
const ANSI =
  /(?:\x1b\[|\x9b)[0-?]*[ -\/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|(?:\x1b\[|\x9b)[0-?]*[ -\/]*$|\x1b\][^\x07\x1b]*$|\x1b[ -\/]*[0-~]|\x1b$/g;

export function stripAnsi(text) {
  return text.replace(ANSI, "");
}

// The most recent part of a log, from the start of a line.
function keepEnd(text) {
  const from = text.indexOf("\n", text.length - LOG_KEEP_CHARS);
  return text.slice(from < 0 ? text.length - LOG_KEEP_CHARS : from + 1);
}

// The whole log of one host and stream, read from the API into a file to save.
async function downloadLog(unique, host, stream) {
  const parts = [];
  for (let offset = 0; ; ) {
    const { bytes, next } = await api.logs(unique, host, stream, offset);
    if (!bytes.length) break;
    parts.push(bytes);
    offset = next;
  }
  const url = URL.createObjectURL(new Blob(parts, { type: "text/plain" }));
  const a = h("a", { href: url, download: `${unique}-${host}-${stream}.log`, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

function facts(job) {
  const rows = [
    ["Unique name", job.unique_job_name],
    ["Instances", instancesText(job)],
    ["Volume", `${job.volume_size_gb} GB`],
    ["Entrypoint", job.entrypoint],
    ["Image", job.image_uri || "—"],
    ["Workflow", job.workflow || "—"],
    ["Submitted", timeEl(job.timestamp)],
    ["Started", timeEl(job.start_time)],
    ["Ended", timeEl(job.end_time)],
    ["Duration", duration(job) || "—"],
  ];
  return h(
    "dl",
    { class: "facts", id: "job-facts" },
    rows.map(([term, value]) => [h("dt", { text: term }), h("dd", {}, value)]),
  );
}

function labelsSection(job) {
  const labels = Object.entries(job.labels || {});
  if (!labels.length) return null;
  const { manifest, key } = job.labels;
  const sweep = sweepOf(job);
  const swept = sweep && sweep.cell.size > 0; // a job of a matrix or sweep, not a plain one
  return h(
    "section",
    { class: "card", "aria-labelledby": "labels-title" },
    h("h2", { id: "labels-title", text: "Labels" }),
    h(
      "dl",
      { class: "facts", id: "job-labels" },
      labels.map(([k, v]) => [h("dt", { text: k }), h("dd", { text: v })]),
    ),
    manifest && key && swept
      ? h("p", {}, h("a", { href: sweepHref(manifest, key), text: `Sweep ${manifest} / ${key}` }))
      : null,
  );
}

// "Needs" and "Needed by": links to the pages of the jobs of a pipeline before and after this one
// (the caller's own jobs only: the server matches nothing else). Nothing when it has neither.
function linksSection({ needs, needed_by: neededBy }) {
  if (!needs.length && !neededBy.length) return null;
  const row = (term, id, jobs) => [
    h("dt", { text: term }),
    h(
      "dd",
      { id },
      jobs.length
        ? jobs.map((j, i) => [
            i ? ", " : "",
            h("a", { href: jobHref(j.unique_job_name), text: j.job_name }),
            " ",
            statusBadge(j.status),
          ])
        : "—",
    ),
  ];
  return h(
    "section",
    { class: "card", "aria-labelledby": "links-title" },
    h("h2", { id: "links-title", text: "Pipeline" }),
    h(
      "dl",
      { class: "facts", id: "job-links" },
      row("Needs", "job-needs", needs),
      row("Needed by", "job-needed-by", neededBy),
    ),
  );
}

// Its cell's parameters (the matrix and sweep values kaio apply sent) and, once it completed,
// the metrics of its metrics.json: what the sweep's table shows, for this one job.
function resultsSection() {
  const paramsBox = h("dl", { class: "facts", id: "job-params" });
  const metricsBox = h("div", { id: "job-metrics" });
  const section = h(
    "section",
    { class: "card", "aria-labelledby": "results-title", hidden: true },
    h("h2", { id: "results-title", text: "Parameters and metrics" }),
    paramsBox,
    metricsBox,
  );
  let asked = null;
  function update(job) {
    const sweep = sweepOf(job);
    const cell = sweep ? [...sweep.cell.entries()] : [];
    paramsBox.replaceChildren(...cell.flatMap(([k, v]) => [h("dt", { text: k }), h("dd", { class: "num", text: typeof v === "number" ? formatNumber(v) : keyOf(v) })]));
    const pending = asked === job.unique_job_name ? null : metricsOf(job);
    section.hidden = !cell.length && !pending && !metricsBox.childElementCount;
    if (!pending) return;
    asked = job.unique_job_name;
    pending.then((m) => {
      if (!m || m.error || !m.values || !m.values.size) return;
      const metric = sweep && sweep.metric;
      metricsBox.replaceChildren(
        h("h3", { text: "Metrics (metrics.json)" }),
        h(
          "dl",
          { class: "facts" },
          [...m.values.entries()].flatMap(([k, v]) => [
            h("dt", { text: metric && metric.name === k ? `${k} (${metric.goal})` : k }),
            h("dd", { class: "num", text: formatNumber(v), title: String(v) }),
          ]),
        ),
      );
      section.hidden = false;
    });
  }
  return { section, update };
}

// CPU, memory (and GPU) over time per instance, from GET /jobs/<unique>/telemetry: read again
// every few seconds while the job runs, once more when it has ended.
function telemetrySection(unique) {
  const box = h("div", { id: "telemetry-box" });
  const section = h(
    "section",
    { class: "card", "aria-labelledby": "telemetry-title" },
    h("h2", { id: "telemetry-title", text: "Telemetry" }),
    box,
  );
  let last = 0;
  let ended = false;
  async function update(job) {
    const final = isFinal(job.status);
    if (ended || (!final && Date.now() - last < TELEMETRY_MS)) return;
    last = Date.now();
    try {
      box.replaceChildren(telemetryView(await api.telemetry(unique)));
      ended = final;
    } catch (e) {
      box.replaceChildren(h("p", { class: "muted", text: `Telemetry unavailable: ${errorText(e)}` }));
    }
  }
  return { section, update };
}

function historySection(job) {
  return h(
    "section",
    { class: "card", "aria-labelledby": "history-title" },
    h("h2", { id: "history-title", text: "Status history" }),
    h(
      "ol",
      { class: "history", id: "job-history" },
      (job.status_history || []).map((item) =>
        h("li", {}, statusBadge(item.status), " ", h("time", { datetime: item.at, text: formatTime(item.at) })),
      ),
    ),
  );
}

function envSection(job) {
  const names = job.env_names || [];
  return h(
    "section",
    { class: "card", "aria-labelledby": "env-title" },
    h("h2", { id: "env-title", text: "Environment" }),
    names.length
      ? h("ul", { class: "env", id: "job-env" }, names.map((n) => h("li", {}, h("code", { text: n }))))
      : h("p", { class: "muted", text: "No variables." }),
    h("p", { class: "hint", text: "Names only: the API never returns the values." }),
  );
}

// The log pane of one host and stream: follows with offsets while the job runs, then reads
// what is left and stops.
function logPane(unique, getJob) {
  const hostSelect = h("select", { id: "log-host" });
  const streamSelect = h(
    "select",
    { id: "log-stream" },
    h("option", { value: "stdout", text: "stdout" }),
    h("option", { value: "stderr", text: "stderr" }),
  );
  const follow = h("input", { type: "checkbox", id: "log-follow", checked: true });
  const pre = h("pre", { id: "log", class: "log", tabindex: "0", "aria-label": "Log" });
  const state = h("p", { id: "log-state", class: "muted", role: "status" });
  const fullLink = h("a", { href: "#", id: "log-full", text: "download the full log" });
  const omitted = h("p", { id: "log-omitted", class: "hint log-omitted", hidden: true }, "Earlier output omitted — ", fullLink);
  fullLink.addEventListener("click", (event) => {
    event.preventDefault();
    downloadLog(unique, hostSelect.value || "algo-1", streamSelect.value).catch((e) => {
      state.textContent = `Could not download the log: ${errorText(e)}`;
    });
  });
  let poller = null;
  let generation = 0;
  let deleted = false;

  function setHosts(count) {
    if (hostSelect.options.length === count) return;
    const chosen = hostSelect.value || "algo-1";
    clear(hostSelect);
    for (let i = 1; i <= count; i++) {
      hostSelect.append(h("option", { value: `algo-${i}`, text: `algo-${i}` }));
    }
    hostSelect.value = chosen;
    if (!hostSelect.value) hostSelect.value = "algo-1";
  }

  function start() {
    if (poller) poller.stop();
    const mine = ++generation;
    const host = hostSelect.value || "algo-1";
    const stream = streamSelect.value;
    const decoder = new TextDecoder("utf-8");
    let offset = 0;
    let text = "";
    pre.textContent = "";
    state.textContent = "";
    omitted.hidden = true;
    const read = async () => {
      const job = getJob();
      if (job.data_deleted) {
        state.textContent = "The job's data was deleted.";
        return false;
      }
      const endedBefore = isFinal(job.status);
      for (;;) {
        const { bytes, next } = await api.logs(unique, host, stream, offset);
        if (mine !== generation) return false;
        offset = next;
        if (!bytes.length) break;
        text += decoder.decode(bytes, { stream: true });
        if (text.length > LOG_KEEP_CHARS) {
          text = keepEnd(text);
          omitted.hidden = false;
        }
        const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
        pre.textContent = stripAnsi(text);
        if (follow.checked && atBottom) pre.scrollTop = pre.scrollHeight;
      }
      // A job that had ended before this read started has nothing more to write.
      if (endedBefore) {
        text += decoder.decode();
        pre.textContent = stripAnsi(text);
        state.textContent = text ? `${host} ${stream}: end of log` : `${host} ${stream}: empty`;
        return false;
      }
      state.textContent = `${host} ${stream}: following…`;
      return true;
    };
    poller = poll(read, LOG_POLL_MS, (e) => {
      if (e.status === 401 || e.status === 404) return false;
      state.textContent = `Could not read the log: ${errorText(e)}; retrying.`;
      return true;
    });
  }

  hostSelect.addEventListener("change", start);
  streamSelect.addEventListener("change", start);
  const section = h(
    "section",
    { class: "card", "aria-labelledby": "logs-title" },
    h("h2", { id: "logs-title", text: "Logs" }),
    h(
      "div",
      { class: "filters" },
      h("label", { for: "log-host" }, "Host ", hostSelect),
      h("label", { for: "log-stream" }, "Stream ", streamSelect),
      h("label", { for: "log-follow", class: "check" }, follow, " Follow"),
    ),
    omitted,
    pre,
    state,
  );
  return {
    section,
    update(job) {
      setHosts(job.instance_count);
      // The loop reads until it sees the job final, so only a deletion needs a fresh start.
      if (job.data_deleted && !deleted) {
        deleted = true;
        start();
      }
    },
    start,
    stop: () => {
      generation++;
      if (poller) poller.stop();
    },
  };
}

function outputsSection() {
  const body = h("div", { id: "outputs" });
  const section = h(
    "section",
    { class: "card", "aria-labelledby": "outputs-title" },
    h("h2", { id: "outputs-title", text: "Outputs" }),
    body,
  );
  let loadedFor = null;
  return {
    section,
    async update(job) {
      const state = `${job.status}/${job.data_deleted}`;
      if (loadedFor === state) return;
      loadedFor = state;
      if (job.data_deleted) {
        body.replaceChildren(h("p", { class: "muted", text: "The job's data was deleted." }));
        return;
      }
      if (!isFinal(job.status)) {
        body.replaceChildren(
          h("p", { class: "muted", text: "Outputs can be downloaded once the job ends." }),
        );
        return;
      }
      try {
        const { output_files: files } = await api.downloads(job.unique_job_name);
        body.replaceChildren(outputList(files));
      } catch (e) {
        loadedFor = null;
        body.replaceChildren(h("p", { class: "error", text: `Could not list outputs: ${errorText(e)}` }));
      }
    },
  };
}

function outputList(files) {
  if (!files.length) return h("p", { class: "muted", text: "No outputs." });
  return h(
    "ul",
    { class: "outputs", id: "output-list" },
    files.map(([path, modified, url]) => {
      const href = safeUrl(url);
      const base = path.split("/").pop();
      return h(
        "li",
        {},
        href
          ? h("a", { href, download: base, class: "output-link", dataset: { path }, text: path })
          : h("span", { text: path }),
        " ",
        h("span", { class: "muted" }, timeEl(modified)),
      );
    }),
  );
}

function actions(job, act) {
  const final = isFinal(job.status);
  const buttons = [
    h("button", {
      type: "button",
      id: "action-stop",
      class: "danger",
      disabled: final || job.status === "Stopping",
      text: "Stop",
      onclick: () => act("stop"),
    }),
    job.archived
      ? h("button", {
          type: "button",
          id: "action-restore",
          class: "secondary",
          text: "Restore",
          onclick: () => act("restore"),
        })
      : h("button", {
          type: "button",
          id: "action-archive",
          class: "secondary",
          text: "Archive",
          onclick: () => act("archive"),
        }),
    h("button", {
      type: "button",
      id: "action-delete",
      class: "danger",
      disabled: !final || job.data_deleted,
      title: final ? null : "Stop the job first",
      text: "Delete data",
      onclick: () => act("delete"),
    }),
  ];
  return h("div", { class: "actions", id: "job-actions" }, buttons);
}

const ACTIONS = {
  stop: {
    title: "Stop this job?",
    text: "Every instance gets SIGTERM, then SIGKILL after a grace period. The job ends Stopped.",
    ok: "Stop job",
    call: api.stop,
    done: "Stop requested.",
  },
  archive: {
    title: "Archive this job?",
    text: "It disappears from the jobs list (Show archived brings it back). Nothing is deleted.",
    ok: "Archive",
    call: api.archive,
    done: "Archived.",
  },
  restore: {
    title: "Restore this job?",
    text: "It shows in the jobs list again.",
    ok: "Restore",
    call: api.restore,
    done: "Restored.",
  },
  delete: {
    title: "Delete this job's data?",
    text: "Its package, logs and outputs are deleted now, for good. The job's record stays.",
    ok: "Delete data",
    call: api.deleteData,
    done: "Data deleted.",
  },
};

export function jobView(main, unique) {
  let job = null;
  let stopped = false;
  const header = h("div", { class: "job-head" });
  const failure = h("div", { id: "failure" });
  const factsBox = h("section", { class: "card", "aria-labelledby": "facts-title" });
  const labelsBox = h("div");
  const linksBox = h("div");
  const historyBox = h("div");
  const envBox = h("div");
  const logs = logPane(unique, () => job);
  const outputs = outputsSection();
  const results = resultsSection();
  const telemetry = telemetrySection(unique);
  const message = h("p", { id: "action-message", class: "muted", role: "status" });

  async function act(name) {
    const spec = ACTIONS[name];
    if (!(await confirmAction(spec.title, `${job.job_name}: ${spec.text}`, spec.ok))) return;
    try {
      show(await spec.call(unique));
      message.textContent = spec.done;
      if (name === "stop") jobPoller.now();
    } catch (e) {
      message.textContent = errorText(e);
    }
  }

  function show(next) {
    const first = job === null;
    job = next;
    const focusedId = document.activeElement && document.activeElement.id;
    header.replaceChildren(
      h("p", { class: "crumbs" }, h("a", { href: "#/jobs", text: "Jobs" }), " / "),
      h("h1", { id: "job-title" }, h("span", { text: job.job_name }), " ", statusBadge(job.status)),
      actions(job, act),
    );
    if (focusedId && focusedId.startsWith("action-")) {
      const again = document.getElementById(focusedId);
      if (again && !again.disabled) again.focus();
    }
    failure.replaceChildren(
      job.failure_reason
        ? h(
            "section",
            { class: "card failure", "aria-labelledby": "failure-title" },
            h("h2", { id: "failure-title", text: "Failure reason" }),
            h("pre", { id: "failure-reason", text: job.failure_reason }),
          )
        : "",
    );
    factsBox.replaceChildren(h("h2", { id: "facts-title", text: "Job" }), facts(job));
    labelsBox.replaceChildren(labelsSection(job) || "");
    historyBox.replaceChildren(historySection(job));
    envBox.replaceChildren(envSection(job));
    logs.update(job);
    outputs.update(job);
    results.update(job);
    telemetry.update(job);
    if (first) logs.start();
  }

  main.append(
    header,
    message,
    failure,
    h("div", { class: "grid" }, factsBox, historyBox, labelsBox, linksBox, envBox),
    results.section,
    telemetry.section,
    logs.section,
    outputs.section,
  );

  const jobPoller = poll(
    async () => {
      show(await api.job(unique));
      return !isFinal(job.status);
    },
    JOB_POLL_MS,
    (e) => {
      if (e.status === 401) return false;
      if (e.status === 404) {
        main.replaceChildren(
          h("h1", { text: "No such job" }),
          h("p", {}, "It does not exist or is not yours. ", h("a", { href: "#/jobs", text: "Back to the jobs" })),
        );
        return false;
      }
      notice(`Could not refresh the job: ${errorText(e)}; retrying.`, "error");
      return !stopped;
    },
  );
  const linksPoller = poll(
    async () => linksBox.replaceChildren(linksSection(await api.links(unique)) || ""),
    LINKS_POLL_MS,
    // 401 and 404 end it (the job poller tells the user); any other failure: the next tick.
    (e) => e.status !== 401 && e.status !== 404,
  );
  return {
    stop() {
      stopped = true;
      jobPoller.stop();
      linksPoller.stop();
      logs.stop();
    },
  };
}
