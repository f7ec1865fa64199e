/*
 * The tillswarm operator panel: boot, hash router, navigation, login and
 * logout, the language switch and the connection banner. Plain JavaScript
 * modules, no framework, no build step.
 *
 * Rules kept throughout the panel:
 *  - Data from the API (device names, store addresses, error messages, logs...)
 *    only ever reaches the page through textContent / text nodes / attribute
 *    values (the h() helper of dom.js); never through HTML parsing.
 *  - Every API call goes through api() (or the upload's XMLHttpRequest), whose
 *    first argument is the method and second a literal /api/v1 path; a Rust test
 *    (coordinator/tests/web_panel.rs) checks those paths against openapi.json.
 *  - A view updates only its data areas on refresh, in place (morph.js), so
 *    forms keep their input and a focused control keeps its focus.
 *  - While the live stream (live.js) is up, a view refreshes when a change
 *    concerns it (its wants(change)) and otherwise only slowly; without it,
 *    at its own interval.
 *  - Every text the panel shows comes from the catalogues through t().
 */
import { h, fill, dot } from "./dom.js";
import { t, lang, setLang, applyDocumentLang } from "./i18n.js";
import { api, onNeedLogin, onConnection, isOnline } from "./api.js";
import { session, isAdmin, mount, refreshNow, retrySoon, setRerun, currentView, mountedRole } from "./app.js";
import { startLive, stopLive, connectionBadge, concerns } from "./live.js";
import { ROLE_LABEL, labelOf } from "./widgets.js";
import { overviewView } from "./views/overview.js";
import { deviceDetailView } from "./views/device.js";
import { storesView, storeDetailView } from "./views/stores.js";
import { groupsView } from "./views/groups.js";
import { packagesView } from "./views/packages.js";
import { tasksView } from "./views/tasks.js";
import { taskDetailView } from "./views/task.js";
import { rolloutsView } from "./views/rollouts.js";
import { rolloutDetailView } from "./views/rollout.js";
import { tillTypesView } from "./views/tilltypes.js";
import { auditView } from "./views/audit.js";

/** Route name (the hash before "/") -> view factory (root, arg) -> { interval, refresh }. */
export const VIEWS = {
  overview: overviewView,
  device: deviceDetailView,
  stores: storesView,
  store: storeDetailView,
  groups: groupsView,
  packages: packagesView,
  tasks: tasksView,
  task: taskDetailView,
  rollout: (root, arg) => (arg === undefined ? rolloutsView(root) : rolloutDetailView(root, arg)),
  "till-types": tillTypesView,
  audit: auditView,
};

/** Detail routes and the nav entry they belong to. */
const NAV_PARENT = { device: "overview", task: "tasks", store: "stores" };

const byId = (id) => document.getElementById(id);

// ---------------------------------------------------------------- router

/** Shows the view of the current hash ("#task/12": view task, argument "12"). */
function route() {
  const hash = location.hash.replace(/^#/, "") || "overview";
  const [name, arg] = hash.split("/");
  const factory = Object.hasOwn(VIEWS, name) ? VIEWS[name] : VIEWS.overview;
  const active = Object.hasOwn(VIEWS, name) ? NAV_PARENT[name] || name : "overview";
  for (const a of document.querySelectorAll("nav a[data-view]")) {
    a.classList.toggle("active", a.dataset.view === active);
    if (a.dataset.view === active) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  mount(byId("view"), factory, arg ? decodeURIComponent(arg) : undefined);
}

// ---------------------------------------------------------------- shell texts and language

/** Translates the shell: elements with data-i18n (text) and data-i18n-title
 *  (title), the page title, the language switch and the parts drawn by code. */
function translateShell() {
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of document.querySelectorAll("[data-i18n-title]")) el.title = t(el.dataset.i18nTitle);
  document.title = t("core.title");
  for (const b of document.querySelectorAll("#lang button[data-lang]")) {
    const on = b.dataset.lang === lang();
    b.classList.toggle("active", on);
    b.setAttribute("aria-pressed", on ? "true" : "false");
  }
  byId("login-why").textContent = loginWhy.key ? t(loginWhy.key) : loginWhy.text;
  showWho();
  if (connKnown) showConnection(isOnline());
}

/** Switches the language and shows the current view again in it. */
function switchLang(l) {
  if (l === lang()) return;
  setLang(l);
  translateShell();
  route();
}

// ---------------------------------------------------------------- connection

let connKnown = false; // whether a request has reported the connection yet

/** Shows whether the coordinator answers: the nav line and the banner. */
function showConnection(ok, changed) {
  if (connKnown && changed === false) return;
  connKnown = true;
  fill(byId("conn"), dot(ok), t(ok ? "core.conn.connected" : "core.conn.offline"));
  const banner = byId("banner");
  banner.classList.toggle("show", !ok);
  fill(banner, ok ? "" : t("core.banner.offline"));
  // Keep retrying even on a view without automatic refresh.
  if (!ok) retrySoon();
}

// ---------------------------------------------------------------- live updates

/** What the live stream does to the current view. */
const LIVE = {
  onChange: (changes) => { if (concerns(currentView(), changes)) refreshNow(); },
  onResync: () => refreshNow(),
  onState: () => retrySoon(), // the polling delay depends on the state
};

// ---------------------------------------------------------------- login

/** Why the login form shows: a catalogue key, or a text from the coordinator. */
let loginWhy = { key: "core.login.why", text: "" };

/** The coordinator's login refusals the panel words itself. */
const LOGIN_ERRORS = {
  invalid_credentials: "core.login.bad",
  too_many_attempts: "core.login.too_many",
  no_operators: "core.login.no_operators",
};

/** Shows who is logged in, with a button to log out; the admin-only nav entries. */
function showWho() {
  const who = byId("who");
  const me = session.me;
  for (const a of document.querySelectorAll('nav a[data-view="audit"]')) a.hidden = !isAdmin();
  if (!me) { who.replaceChildren(); return; }
  fill(who, h("div", null, me.username + " · " + labelOf(ROLE_LABEL, me.role)),
    me.auth === "session" ? h("button", { class: "small", type: "button", "data-test": "logout", onclick: logout }, t("core.logout")) : null);
}

/** The session ended or never was: shows the login form over the page, so
 *  whatever was typed in a form stays where it is. */
function needLogin(text) {
  const box = byId("login");
  // Requests refused together: the first one tells why (the session ended).
  if (!box.hidden && !session.me) return;
  loginWhy = { key: "core.login.why", text: "" };
  try {
    const e = JSON.parse(text);
    if (e && e.code === "no_operators") loginWhy = { key: LOGIN_ERRORS.no_operators, text: "" };
    else if (session.me) loginWhy = { key: "core.login.expired", text: "" };
  } catch (_) { /* keep the default */ }
  session.me = null;
  stopLive();
  showWho();
  byId("login-why").textContent = t(loginWhy.key);
  if (box.hidden) {
    box.hidden = false;
    byId(byId("login-user").value ? "login-password" : "login-user").focus();
  }
}

async function submitLogin(ev) {
  ev.preventDefault();
  const err = byId("login-error");
  const button = byId("login-submit");
  err.textContent = "";
  button.disabled = true;
  try {
    session.me = await api("POST", "/api/v1/session", { login: true, body: {
      username: byId("login-user").value.trim(),
      password: byId("login-password").value,
    } });
    byId("login-password").value = "";
    byId("login").hidden = true;
    showWho();
    startLive(LIVE);
    // The same role as the page was built for (a session that ended): carry
    // on where it was, typed input kept. Another role: build it again, its
    // buttons depend on the role.
    if (mountedRole() === session.me.role) refreshNow(); else route();
  } catch (e) {
    err.textContent = Object.hasOwn(LOGIN_ERRORS, e.code) ? t(LOGIN_ERRORS[e.code]) : e.message;
  } finally {
    button.disabled = false;
  }
}

/** Escape closes the innermost open dialog or editor of the view (an element
 *  with data-dialog holding a [data-close] button); the login form stays. */
function closeOnEscape(ev) {
  if (ev.key !== "Escape" || ev.defaultPrevented || !byId("login").hidden) return;
  const open = [...document.querySelectorAll("#view [data-dialog]")].filter((d) => !d.hidden && d.offsetParent !== null);
  const last = open[open.length - 1];
  const close = last && last.querySelector("[data-close]");
  if (!close) return;
  ev.preventDefault();
  close.click();
}

async function logout() {
  try { await api("DELETE", "/api/v1/session"); } catch (_) { /* the session may be gone already */ }
  session.me = null;
  showWho();
  needLogin("");
}

/** Who is logged in, if anyone (shows the login form otherwise); resolves
 *  with whether it is known. While the coordinator cannot be reached it asks
 *  again every few seconds, and builds the page again for the role it learns. */
async function whoAmI() {
  try {
    session.me = await api("GET", "/api/v1/session");
    showWho();
    startLive(LIVE);
    return true;
  } catch (e) {
    // A 401: needLogin has run. Unreachable: shown as offline; ask again.
    if (e && e.code === "network") {
      setTimeout(() => whoAmI().then((ok) => { if (ok && mountedRole() !== session.me.role) route(); }), 3000);
    }
    return false;
  }
}

// ---------------------------------------------------------------- start

applyDocumentLang();
translateShell();
onNeedLogin(needLogin);
onConnection(showConnection);
byId("live-state").appendChild(connectionBadge());
document.addEventListener("keydown", closeOnEscape);
setRerun(route);
window.addEventListener("hashchange", route);
byId("login-form").addEventListener("submit", submitLogin);
for (const b of document.querySelectorAll("#lang button[data-lang]")) b.addEventListener("click", () => switchLang(b.dataset.lang));
whoAmI().then(route);
