/*
 * The panel's shared runtime: who is logged in, toasts, running actions from
 * buttons, and the refresh loop of the current view.
 *
 * A view is a function (root element, argument) -> { interval, refresh,
 * wants? }. interval: ms between automatic refreshes (0: none; a view may
 * change it, e.g. to stop polling a deleted task); while the live stream is
 * up the loop only refreshes every SAFETY_NET_MS (live.js pollDelay) and the
 * view's wants(change) says which live changes make it refresh. refresh()
 * updates only the view's data areas in place (morph.js), so forms keep their
 * input and focus stays. When the coordinator is unreachable, every view
 * retries every RETRY_MS; after a 401 the loop waits for the login.
 */
import { h } from "./dom.js";
import { t, fmtClock } from "./i18n.js";
import { isOnline } from "./api.js";
import { pollDelay, setPollInterval } from "./live.js";

/** The logged-in user: { username, role, auth } or null. */
export const session = { me: null };

const ROLES = ["viewer", "operator", "approver", "admin"];

/** Whether the logged-in user has at least `role` (viewer < operator < approver < admin). */
export function can(role) {
  return !!session.me && ROLES.indexOf(session.me.role) >= ROLES.indexOf(role);
}

/** Whether the logged-in user may change groups, packages, tasks, till types and rollouts. */
export function canOperate() { return can("operator"); }

/** Whether the logged-in user may start, resume and approve rollouts. */
export function canApprove() { return can("approver"); }

/** Whether the logged-in user is an admin (devices, audit log, users). */
export function isAdmin() { return can("admin"); }

// ---------------------------------------------------------------- toasts and actions

/** Shows a short message in the corner; kind "ok", "error" or "" (neutral). */
export function toast(kind, text, code) {
  const el = h("div", { class: "toast " + kind, role: kind === "error" ? "alert" : "status" }, text,
    code ? h("span", { class: "code" }, code) : null);
  document.getElementById("toasts").appendChild(el);
  setTimeout(() => el.remove(), kind === "error" ? 9000 : 4000);
}

/** Reports a failure as an error toast, prefixed with what was being done. */
export function toastError(err, what) {
  const text = err && err.status === 401 ? t("core.error.login_needed") : err && err.message ? err.message : String(err);
  const msg = (what ? what + ": " : "") + text;
  toast("error", msg, err && err.code ? err.code : null);
}

/** Runs an action from a button: disables it meanwhile, reports failures
 *  (what: the translated name of the action). Returns the action's result,
 *  or undefined when it failed. */
export async function act(button, what, fn) {
  if (button) button.disabled = true;
  try {
    return await fn();
  } catch (e) {
    toastError(e, what);
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}

// ---------------------------------------------------------------- refresh loop

const RETRY_MS = 3000;
let current = null; // { gen, view, timer, busy, again, failed, lastError, needLogin, role }
let gen = 0;
let rerun = () => {};

/** Registers the router's "run the current route again" function (for go()). */
export function setRerun(fn) { rerun = fn; }

/** The current view object ({ interval, refresh, wants? }), or null. */
export function currentView() { return current ? current.view : null; }

/** The role the current view was built for (its buttons depend on it). */
export function mountedRole() { return current ? current.role : null; }

/** Shows a view in root (emptied first) and refreshes it at once. */
export function mount(root, factory, arg) {
  if (current) clearTimeout(current.timer);
  const g = ++gen;
  root.replaceChildren();
  current = { gen: g, timer: null, busy: false, again: false, failed: false, lastError: null, needLogin: false,
    view: null, role: session.me ? session.me.role : null };
  current.view = factory(root, arg);
  refreshNow();
}

/** Refreshes the current view at once (also after an action). */
export async function refreshNow() {
  const cur = current;
  if (!cur) return;
  // A refresh asked for while one runs (a filter changed) runs right after it.
  if (cur.busy) { cur.again = true; return; }
  clearTimeout(cur.timer);
  cur.busy = true;
  try {
    await cur.view.refresh();
    cur.failed = false;
    cur.needLogin = false;
    cur.lastError = null;
    const u = document.getElementById("updated");
    if (u && cur.gen === gen) u.textContent = t("core.updated", { time: fmtClock(new Date()) });
  } catch (e) {
    cur.failed = true;
    // A 401 shows the login form (api() did that): no toast, and no retry
    // until the login (which refreshes). Network failures show in the
    // banner; others as a toast, not repeated while the same error persists.
    cur.needLogin = !!e && e.status === 401;
    const text = e && e.message;
    if (e && e.code !== "network" && !cur.needLogin && text !== cur.lastError) toastError(e, t("core.loading_failed"));
    cur.lastError = text;
  } finally {
    cur.busy = false;
    if (cur.gen === gen) {
      if (cur.again) { cur.again = false; cur.timer = setTimeout(refreshNow, 0); } else schedule(cur);
    }
  }
}

function schedule(cur) {
  clearTimeout(cur.timer);
  setPollInterval(cur.view.interval);
  if (cur.needLogin) return; // the login form is up; logging in refreshes
  const ms = (!isOnline() || cur.failed) ? RETRY_MS : pollDelay(cur.view.interval);
  if (ms) cur.timer = setTimeout(refreshNow, ms);
}

/** Reschedules the next refresh (the live state changed, or the coordinator
 *  is unreachable: keeps retrying even on a view without automatic refresh). */
export function retrySoon() {
  if (current && !current.busy) schedule(current);
}

/** Goes to a hash route ("task/12"); runs it again when it is the current one. */
export function go(hash) {
  if (location.hash === "#" + hash) rerun(); else location.hash = hash;
}

/** The page heading (a translated text) with the "updated" time at its right. */
export function heading(text, ...extra) {
  return h("h1", null, text, ...extra, h("span", { class: "updated", id: "updated" }));
}
