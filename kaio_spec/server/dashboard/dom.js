// Small DOM helpers. Text from the server only ever becomes text nodes or attribute values set
// here by name: nothing is parsed as HTML, so a job's labels, logs or file names stay text.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

const SVG_NS = "http://www.w3.org/2000/svg";

export function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") el.setAttribute("class", value);
    else if (name === "text") el.textContent = String(value);
    else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(el) {
  el.replaceChildren();
  return el;
}

// Only a same-origin http(s) URL becomes a link (presigned URLs are this server's own). The
// server names itself by its configured address (--public-url), which may not be the name this
// tab used (localhost, 127.0.0.1): a presigned /objects/ URL keeps its signed path and query on
// this tab's origin.
export function safeUrl(url) {
  try {
    const u = new URL(url, location.href);
    if (u.protocol !== "http:" && u.protocol !== "https:") return null;
    if (u.origin === location.origin) return u.href;
    if (u.pathname.startsWith("/objects/")) return new URL(u.pathname + u.search, location.origin).href;
  } catch {
    // not a URL
  }
  return null;
}

const pad = (n, width = 2) => String(n).padStart(width, "0");

// "2026-11-28 14:22:33" in the viewer's time zone; "" for none.
export function formatTime(iso) {
  if (!iso) return "";
  const t = new Date(iso);
  if (Number.isNaN(t.getTime())) return String(iso);
  return (
    `${t.getFullYear()}-${pad(t.getMonth() + 1)}-${pad(t.getDate())} ` +
    `${pad(t.getHours())}:${pad(t.getMinutes())}:${pad(t.getSeconds())}`
  );
}

export function timeEl(iso) {
  if (!iso) return h("span", { class: "muted", text: "—" });
  return h("time", { datetime: iso, title: iso, text: formatTime(iso) });
}

// Run time: from start to end, or to now while running.
export function duration(job, nowMs = Date.now()) {
  if (!job.start_time) return "";
  const start = Date.parse(job.start_time);
  const end = job.end_time ? Date.parse(job.end_time) : nowMs;
  if (Number.isNaN(start) || Number.isNaN(end)) return "";
  return formatSeconds(Math.max(0, Math.round((end - start) / 1000)));
}

export function formatSeconds(total) {
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const seconds = total % 60;
  if (hours) return `${hours} h ${pad(minutes)} min`;
  if (minutes) return `${minutes} min ${pad(seconds)} s`;
  return `${seconds} s`;
}

const STATUS_CLASSES = {
  pending: "pending",
  queued: "pending",
  provisioning: "pending",
  inprogress: "running",
  running: "running",
  stopping: "stopping",
  completed: "completed",
  failed: "failed",
  timed_out: "failed",
  stopped: "stopped",
};

export const FINAL = new Set(["completed", "failed", "stopped", "timed_out"]);

export function isFinal(status) {
  return FINAL.has(String(status).toLowerCase());
}

export function statusBadge(status) {
  const kind = STATUS_CLASSES[String(status).toLowerCase()] || "unknown";
  return h("span", { class: `badge badge-${kind}`, text: status });
}

export function instancesText(job) {
  return `${job.instance_type} × ${job.instance_count}`;
}

export function jobHref(unique) {
  return `#/job/${encodeURIComponent(unique)}`;
}

export function sweepHref(manifest, key) {
  return `#/sweep/${encodeURIComponent(manifest)}/${encodeURIComponent(key)}`;
}

// Calls fn now and every `ms` while the tab is visible, never two calls at once; fn returning
// false ends the loop. Returns {stop, now}.
export function poll(fn, ms, onError) {
  let timer = 0;
  let stopped = false;
  let busy = false;
  const tick = async () => {
    clearTimeout(timer);
    timer = 0;
    if (stopped || busy || document.visibilityState !== "visible") return;
    busy = true;
    let again = true;
    try {
      again = (await fn()) !== false;
    } catch (e) {
      if (onError) again = onError(e) !== false;
    } finally {
      busy = false;
    }
    if (!stopped && again) timer = setTimeout(tick, ms);
  };
  const onVisible = () => {
    if (document.visibilityState === "visible" && !timer && !busy) tick();
  };
  document.addEventListener("visibilitychange", onVisible);
  tick();
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
      document.removeEventListener("visibilitychange", onVisible);
    },
    now: tick,
  };
}
