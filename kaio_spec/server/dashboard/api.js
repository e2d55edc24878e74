// The public API of docs/protocol.md, called with the tab's token: the dashboard can do nothing the
// API does not let the same user do. The token lives in sessionStorage only (one tab, gone
// when the tab closes); the API key is never stored.

const TOKEN = "kaio.token";
const EXP = "kaio.exp";
const PROJECT = "kaio.project";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

const listeners = new Set();

export const session = {
  get token() {
    return sessionStorage.getItem(TOKEN);
  },
  get project() {
    try {
      return JSON.parse(sessionStorage.getItem(PROJECT) || "null");
    } catch {
      return null;
    }
  },
  save(login) {
    sessionStorage.setItem(TOKEN, login.access_token);
    sessionStorage.setItem(EXP, String(login.exp));
    sessionStorage.setItem(PROJECT, JSON.stringify(login.project || null));
  },
  clear(reason) {
    const had = sessionStorage.getItem(TOKEN) !== null;
    sessionStorage.removeItem(TOKEN);
    sessionStorage.removeItem(EXP);
    sessionStorage.removeItem(PROJECT);
    if (had) for (const fn of listeners) fn(reason);
  },
  onSignOut(fn) {
    listeners.add(fn);
  },
};

async function request(path, { method = "GET", body, auth = true, signal, token = session.token } = {}) {
  const headers = {};
  if (auth) {
    if (!token) throw new ApiError(401, "not signed in");
    headers.Authorization = `Bearer ${token}`;
  }
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
      signal,
    });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, "cannot reach the Kaio server");
  }
  if (!response.ok) {
    let message = response.statusText;
    try {
      message = (await response.json()).error || message;
    } catch {
      // not JSON: keep the status text
    }
    if (response.status === 401 && auth && token === session.token) {
      session.clear("Your session ended; sign in again.");
    }
    throw new ApiError(response.status, message);
  }
  return response;
}

const json = async (promise) => (await promise).json();

export const api = {
  login: (apiKey) =>
    json(request("/login", { method: "POST", body: { api_key: apiKey }, auth: false })),
  loginWithLink: (code) =>
    json(request("/login/link", { method: "POST", body: { code }, auth: false })),
  // Signs a token out on the server (it is refused from then on), whether or not it is the
  // tab's current one.
  logout: (token) => request("/logout", { method: "POST", token }),
  jobs: (includeArchived) =>
    json(request(`/jobs${includeArchived ? "?include_archived=true" : ""}`)),
  job: (unique) => json(request(`/jobs/status/${encodeURIComponent(unique)}`)),
  stop: (unique) => json(request(`/jobs/${encodeURIComponent(unique)}/stop`, { method: "POST" })),
  archive: (unique) =>
    json(request(`/jobs/${encodeURIComponent(unique)}/archive`, { method: "POST" })),
  restore: (unique) =>
    json(request(`/jobs/${encodeURIComponent(unique)}/restore`, { method: "POST" })),
  deleteData: (unique) =>
    json(request(`/jobs/${encodeURIComponent(unique)}/data`, { method: "DELETE" })),
  downloads: (unique) => json(request(`/jobs/download/${encodeURIComponent(unique)}`)),
  // The caller's jobs this one needs and those that need it (issue 16's `needs`).
  links: (unique) => json(request(`/jobs/${encodeURIComponent(unique)}/links`)),
  telemetry: (unique) => json(request(`/jobs/${encodeURIComponent(unique)}/telemetry`)),
  // Log bytes from `offset`: {bytes: Uint8Array, next: offset after them}.
  async logs(unique, host, stream, offset, signal) {
    const query = new URLSearchParams({ host, stream, offset: String(offset) });
    const r = await request(`/jobs/${encodeURIComponent(unique)}/logs?${query}`, { signal });
    const bytes = new Uint8Array(await r.arrayBuffer());
    const next = Number(r.headers.get("X-Next-Offset"));
    return { bytes, next: Number.isFinite(next) ? next : offset + bytes.length };
  },
};

// A presigned GET URL (from GET /jobs/download): the URL is the credential, so no token is sent.
export async function fetchPresigned(url, maxBytes) {
  let r;
  try {
    r = await fetch(url, { credentials: "omit", cache: "no-store" });
  } catch {
    throw new ApiError(0, "cannot reach the Kaio server");
  }
  if (!r.ok) throw new ApiError(r.status, `download failed (${r.status})`);
  const declared = Number(r.headers.get("Content-Length"));
  if (maxBytes && declared > maxBytes) throw new ApiError(413, "file too large to show");
  const text = await r.text();
  if (maxBytes && text.length > maxBytes) throw new ApiError(413, "file too large to show");
  return text;
}
