/*
 * Access to the operator API.
 *
 * Every API call goes through api() (or the package upload's XMLHttpRequest),
 * whose first argument is the method and second a literal /api/v1 path: a
 * Rust test (coordinator/tests/web_panel.rs) scans the panel's modules for
 * those calls and checks the paths against openapi.json. So keep calls in the
 * form api("METHOD", "/api/v1...") or with a template literal, never with a
 * path built elsewhere.
 */
import { t } from "./i18n.js";

/** An API failure: HTTP status (0: no answer), the coordinator's error code
 *  ("network" when it cannot be reached) and its message. */
export class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

let online = true, known = false;
let connectionHandler = () => {};
let loginHandler = () => {};

/** Registers fn(ok, changed) to hear whether the coordinator answers; called
 *  after every request (changed: the state differs from the last report). */
export function onConnection(fn) { connectionHandler = fn; }

/** Registers fn(bodyText) called when a request is refused with 401: the
 *  session ended or never was. */
export function onNeedLogin(fn) { loginHandler = fn; }

/** Whether the last request got an answer. */
export function isOnline() { return online; }

/** Records whether the coordinator answered (also used by the upload). */
export function reportOnline(ok) {
  const changed = ok !== online || !known;
  online = ok;
  known = true;
  connectionHandler(ok, changed);
}

/** Calls the operator API. opts: { body (sent as JSON), query (object),
 *  login (true: a 401 does not open the login form) }.
 *  Resolves with the parsed JSON (null for 204); rejects with an ApiError whose
 *  code/message come from the coordinator's {code, message} body, or code
 *  "network" when the coordinator cannot be reached. */
export async function api(method, path, opts) {
  opts = opts || {};
  let url = path;
  if (opts.query) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(opts.query)) if (v != null && v !== "") q.set(k, String(v));
    const s = q.toString();
    if (s) url += "?" + s;
  }
  const init = { method, headers: { Accept: "application/json" }, cache: "no-store" };
  // Every change is sent as JSON, with or without a body: the coordinator
  // refuses other content types on changes made with a session (CSRF defence).
  if (method !== "GET") init.headers["Content-Type"] = "application/json";
  if (opts.body !== undefined) init.body = JSON.stringify(opts.body);
  let res;
  try {
    res = await fetch(url, init);
  } catch (e) {
    reportOnline(false);
    throw new ApiError(0, "network", t("core.error.network", { detail: (e && e.message) || String(e) }));
  }
  reportOnline(true);
  const text = await res.text();
  if (res.status === 401 && !opts.login) loginHandler(text);
  return parseResponse(res.status, res.statusText, text);
}

/** Turns a status and body text into a value or an ApiError (shared with the upload). */
export function parseResponse(status, statusText, text) {
  let data = null;
  if (text) { try { data = JSON.parse(text); } catch (_) { data = null; } }
  if (status >= 200 && status < 300) return data;
  const code = data && typeof data.code === "string" ? data.code : "http_" + status;
  const message = data && typeof data.message === "string" ? data.message
    : (text ? text.slice(0, 300) : statusText || t("core.error.request_failed"));
  throw new ApiError(status, code, message);
}

/** The result of a finished XMLHttpRequest (the upload), as api() would give
 *  it: opens the login form on a 401, returns the parsed value or throws. */
export function xhrResult(x) {
  reportOnline(true);
  if (x.status === 401) loginHandler(x.responseText);
  return parseResponse(x.status, x.statusText, x.responseText);
}
