/*
 * The panel's shared runtime: who is logged in, toasts, running actions from
 * buttons, and the refresh loop of the current view.
 *
 * A view is a function (root element, argument) -> { interval, refresh }.
 * interval: ms between automatic refreshes (0: none; a view may change it,
 * e.g. to stop polling a deleted task). refresh() rebuilds only the view's
 * data areas, so forms keep their input. When the coordinator is unreachable,
 * every view retries every RETRY_MS.
 */
import { h } from "./dom.js";
import { t, fmtClock } from "./i18n.js";
import { isOnline } from "./api.js";

/** The logged-in user: { username, role, auth } or null. */
export const session = { me: null };

/** Whether the logged-in user may start, resume and approve rollouts. */
export function canApprove() { return !!session.me && (session.me.role === "approver" || session.me.role === "admin"); }

/** Whether the logged-in user is an admin. */
export function isAdmin() { return !!session.me && session.me.role === "admin"; }

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
  const msg = (what ? what + ": " : "") + (err && err.message ? err.message : String(err));
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
let current = null; // { gen, view, timer, busy, again, failed, lastError }
let gen = 0;
let rerun = () => {};

/** Registers the router's "run the current route again" function (for go()). */
export function setRerun(fn) { rerun = fn; }

/** Shows a view in root (emptied first) and refreshes it at once. */
export function mount(root, factory, arg) {
  if (current) clearTimeout(current.timer);
  const g = ++gen;
  root.replaceChildren();
  current = { gen: g, timer: null, busy: false, again: false, failed: false, lastError: null, view: null };
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
    cur.lastError = null;
    const u = document.getElementById("updated");
    if (u && cur.gen === gen) u.textContent = t("core.updated", { time: fmtClock(new Date()) });
  } catch (e) {
    cur.failed = true;
    // Network failures show in the banner; others as a toast, not repeated
    // on every retry while the same error persists.
    const text = e && e.message;
    if (e && e.code !== "network" && text !== cur.lastError) toastError(e, t("core.loading_failed"));
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
  const ms = (!isOnline() || cur.failed) ? RETRY_MS : cur.view.interval;
  if (ms) cur.timer = setTimeout(refreshNow, ms);
}

/** Keeps retrying while offline, even on a view without automatic refresh. */
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
