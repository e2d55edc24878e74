// The dashboard's entry point: sign-in, the header, and hash routes
//   #/jobs   #/job/<unique_job_name>   #/sweeps   #/sweep/<manifest>/<key>
// `kaio dashboard` opens `/#signin=<one-time code>`: the code is read, removed from the address
// bar and the history entry at once, and exchanged for a token (POST /login/link). A link that
// arrives in a tab signed in as another account asks before switching, naming both.
// Sign out signs the token out on the server too (POST /logout), not only in this tab.

import { api, session } from "./api.js";
import { clear, h } from "./dom.js";
import { confirmAction, errorText, notice } from "./ui.js";
import { jobsView } from "./jobs.js";
import { jobView } from "./job.js";
import { sweepsView, sweepView } from "./sweeps.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const who = document.getElementById("who");
let view = null; // the current view: {stop()}
let signOutReason = "";

function parseRoute() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  switch (parts[0]) {
    case "job":
      return parts[1] ? { name: "job", unique: parts.slice(1).join("/") } : { name: "jobs" };
    case "sweeps":
      return { name: "sweeps" };
    case "sweep":
      return parts.length >= 3
        ? { name: "sweep", manifest: parts[1], key: parts.slice(2).join("/") }
        : { name: "sweeps" };
    default:
      return { name: "jobs" };
  }
}

function showHeader(signedIn) {
  nav.hidden = !signedIn;
  who.hidden = !signedIn;
  const project = session.project;
  document.getElementById("project").textContent = signedIn && project ? project.name : "";
}

function route() {
  if (view) view.stop();
  view = null;
  if (!session.token) {
    showHeader(false);
    signInView();
    return;
  }
  showHeader(true);
  const r = parseRoute();
  const section = r.name === "sweep" || r.name === "sweeps" ? "sweeps" : "jobs";
  for (const a of nav.querySelectorAll("a")) {
    if (a.dataset.section === section) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  clear(main);
  if (r.name === "job") view = jobView(main, r.unique);
  else if (r.name === "sweeps") view = sweepsView(main);
  else if (r.name === "sweep") view = sweepView(main, r.manifest, r.key);
  else view = jobsView(main);
}

function signInView() {
  clear(main);
  const input = h("input", {
    id: "api-key",
    name: "api_key",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
  });
  const error = h("p", { id: "signin-error", class: "error", role: "alert" });
  const button = h("button", { type: "submit", id: "signin-submit", text: "Sign in" });
  const form = h(
    "form",
    { id: "signin", class: "card signin" },
    h("h1", { text: "Sign in" }),
    h("label", { for: "api-key", text: "API key" }),
    input,
    button,
    error,
    h(
      "p",
      { class: "hint", id: "signin-hint" },
      "No key at hand? Run ",
      h("code", { text: "kaio dashboard" }),
      " in a terminal: it opens this page already signed in, through a link that works once. ",
      "A session lasts an hour and belongs to one tab, so a new tab starts signed out. ",
      "A key is exchanged for a session and not kept.",
    ),
  );
  error.textContent = signOutReason;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = input.value.trim();
    if (!key) return;
    button.disabled = true;
    error.textContent = "";
    try {
      const login = await api.login(key);
      input.value = "";
      signedIn(login);
    } catch (e) {
      error.textContent =
        e.status === 403 ? "That API key is unknown or revoked." : errorText(e);
      input.focus();
    } finally {
      button.disabled = false;
    }
  });
  main.append(form);
  input.focus();
}

function showSignInError(text) {
  const error = document.getElementById("signin-error");
  if (error) error.textContent = text;
}

function signedIn(login) {
  session.save(login);
  signOutReason = "";
  notice("");
  if (!location.hash || location.hash === "#") location.hash = "#/jobs";
  route();
  main.focus();
}

async function signInWithLink(code) {
  let login;
  try {
    login = await api.loginWithLink(code);
  } catch (e) {
    const reason =
      e.status === 403
        ? "This sign-in link was already used or has expired. Run kaio dashboard again, or sign in with an API key."
        : errorText(e);
    route();
    if (session.token) notice(reason, "error");
    else showSignInError(reason);
    return;
  }
  const before = session.token ? { token: session.token, project: session.project } : null;
  if (before && !(await mayReplace(before.project, login.project))) {
    signOutOnServer(login.access_token); // the tab stays as it was
    return;
  }
  if (before) signOutOnServer(before.token);
  signedIn(login);
}

const nameOf = (project) => (project && project.name) || "an unknown project";

// A link for the account this tab is signed in as replaces the session; one for another account
// does only if the user says so, seeing both names.
async function mayReplace(current, next) {
  if (current && next && current.id === next.id) return true;
  return confirmAction(
    "Switch accounts?",
    `This tab is signed in as ${nameOf(current)}. The sign-in link is for ${nameOf(next)}. ` +
      `Sign out of ${nameOf(current)} and in as ${nameOf(next)}?`,
    `Switch to ${nameOf(next)}`,
  );
}

// Best effort: the tab forgets the token whatever the server answers.
function signOutOnServer(token) {
  api.logout(token).catch(() => {});
}

session.onSignOut((reason) => {
  signOutReason = reason || "";
  route();
});

document.getElementById("signout").addEventListener("click", () => {
  const token = session.token;
  session.clear("");
  if (token) signOutOnServer(token);
  signOutReason = "";
  notice("");
  history.replaceState(null, "", `${location.pathname}${location.search}`);
  route();
});

// A sign-in link pasted into an open tab arrives as a hash change, not as a page load; the tab
// then keeps showing what it showed (`back`, the previous address) while the link is used.
function takeSignInLink(back = "#/jobs") {
  const link = /^#signin=([A-Za-z0-9_-]{1,512})$/.exec(location.hash);
  if (!link) return false;
  // Out of the address bar and of this history entry before anything else happens.
  const to = session.token && back && !back.startsWith("#signin=") ? back : "#/jobs";
  history.replaceState(null, "", `${location.pathname}${location.search}${to}`);
  signInWithLink(link[1]);
  return true;
}

window.addEventListener("hashchange", (event) => {
  notice("");
  if (takeSignInLink(new URL(event.oldURL).hash)) return;
  route();
  main.focus();
});

if (!takeSignInLink()) route();
