/**
 * The live connection: a server-sent event stream of changes, so views refresh
 * when something happens instead of polling fast.
 *
 * States:
 *  - "connecting": the stream is being opened (views poll at their interval);
 *  - "live": the stream is open (the app polls only every SAFETY_NET_MS);
 *  - "polling": the stream failed; views poll at their interval while it is
 *    retried after 2 s, 4 s, 8 s, ... at most 60 s.
 *
 * The stream sends `hello` when it opens, `change` events (one JSON change
 * each, naming what changed: {kind: "task", task_id}, {kind: "target",
 * task_id, guid, state}, {kind: "device", guid}, {kind: "rollout",
 * rollout_id}, {kind: "package"}, {kind: "group"}, {kind: "till_type"}) and
 * `resync` when the server dropped events for this client. A stream ends
 * after a few minutes and the browser reopens it by itself (the server asks
 * for 2 s); events in such a gap are not replayed, so every hello after the
 * first one also asks the views to reload (onResync).
 *
 * Failures: an error that leaves the EventSource CLOSED (a 401, 403 or 503
 * answer, a wrong content type), or a reconnection that brings no hello within
 * GIVE_UP_MS, closes the stream, switches to "polling" and probes the session
 * once with api(): a 401 there shows the login form (api() does that). Call
 * reconnectLive() after a login to retry at once.
 *
 * Wiring (app.js / main.js; app.js keeps the current view):
 *   app.js   schedule(): a live stream slows polling: pollDelay(cur.view.interval)
 *            instead of cur.view.interval; export the current view.
 *   main.js  startLive({ onChange: (ch) => { if (concerns(view, ch)) refreshNow(); },
 *                        onResync: refreshNow, onState: () => retrySoon() });  // reschedule
 *            after each mount: setPollInterval(view.interval);
 *            nav: append connectionBadge(); after a login: reconnectLive();
 *            on logout: stopLive().
 * Views: wants(change) says whether a change concerns them (see concerns());
 * liveThrottle() keeps floods of changes from reloading a view back to back.
 */
import { api } from "./api.js";
import { h } from "./dom.js";
import { t } from "./i18n.js";
import { refreshNow } from "./app.js";

/** Milliseconds between safety-net refreshes while the stream is live. */
export const SAFETY_NET_MS = 60000;
const DEBOUNCE_MS = 300;
const BACKOFF_MIN_MS = 2000;
const BACKOFF_MAX_MS = 60000;
const GRACE_MS = 5000;     // a reconnection this quick stays "live" (the stream's planned end)
const GIVE_UP_MS = 10000;  // no hello this long after "connecting": the stream failed

let state = "connecting";
let handlers = {};
let source = null;        // the open EventSource
let gen = 0;              // bumped by every (re)connect and stop: late callbacks of old streams compare it
let retryTimer = null;
let backoff = BACKOFF_MIN_MS;
let watchdog = null;      // waits for a hello while (re)connecting
let wasLive = false;      // a hello was seen before (a later one is a reconnect)
let batch = [];           // changes waiting for the debounce
let batchTimer = null;
let pollMs = 0;           // the current view's interval, for the badge text
let stopped = true;
let listening = false;
const badges = new Set(); // update functions of connectionBadge() elements

/** The current state: "connecting", "live" or "polling". */
export function liveState() { return state; }

/**
 * Opens the stream. onChange(changes): a batch of change objects (those that
 * arrived within 300 ms of the first); onResync(): the view must reload, events
 * were lost; onState(state): called now and on every transition.
 * Calling it again replaces the handlers and reconnects.
 */
export function startLive({ onChange, onResync, onState } = {}) {
  handlers = { onChange, onResync, onState };
  stopped = false;
  if (!listening && typeof window !== "undefined") {
    listening = true;
    window.addEventListener("online", () => { if (!stopped && state !== "live") reconnectLive(); });
  }
  if (onState) onState(state);
  connect();
}

/** Reconnects at once with the backoff reset (after a login, or when the network is back). */
export function reconnectLive() {
  if (stopped) return;
  backoff = BACKOFF_MIN_MS;
  connect();
}

/** Closes the stream and stops retrying (on logout); startLive or reconnectLive resumes. */
export function stopLive() {
  stopped = true;
  gen++;
  clearTimeout(retryTimer);
  clearTimeout(watchdog);
  watchdog = null;
  dropBatch();
  if (source) { source.close(); source = null; }
  setState("polling");
}

/** The delay (ms) before a view's next automatic refresh: its own interval
 *  unless the stream is live, then the slow safety net (0 stays 0: no refresh). */
export function pollDelay(viewMs) {
  if (!viewMs) return 0;
  return state === "live" ? Math.max(viewMs, SAFETY_NET_MS) : viewMs;
}

/** Whether a batch of changes concerns a view: its wants(change) for any of
 *  them; a view without wants() is concerned by every change. */
export function concerns(view, changes) {
  if (!view || typeof view.wants !== "function") return true;
  return changes.some((c) => { try { return !!view.wants(c); } catch (_) { return true; } });
}

/**
 * A rate limit for a view's wants(). Changes name what changed, not its
 * contents, so a concerned view reloads; during a rollout they come in floods.
 * wants() answers true at most every `ms` (counted from the last started());
 * within that time it answers false and runs one refreshNow() when the time is
 * up, unless `alive` (an element of the view) has left the page meanwhile.
 * Call started() at the start of the view's refresh().
 */
export function liveThrottle(ms, alive) {
  let last = 0, timer = null;
  return {
    started() { last = Date.now(); },
    wants() {
      const wait = last + ms - Date.now();
      if (wait <= 0) return true;
      if (!timer) timer = setTimeout(() => { timer = null; if (alive.isConnected) refreshNow(); }, wait);
      return false;
    },
  };
}

/** Tells the badge the current view's interval (ms; 0: no automatic refresh). */
export function setPollInterval(ms) {
  pollMs = Number(ms) || 0;
  updateBadges();
}

/** A small nav element showing the connection state; it updates itself. */
export function connectionBadge() {
  const dot = h("span", { class: "dot" });
  const text = h("span");
  const el = h("span", { class: "live-state small", role: "status" }, dot, text);
  let seen = false;
  const update = () => {
    if (el.isConnected) seen = true;
    else if (seen) return false; // taken out of the page: forget it
    dot.className = "dot" + (state === "live" ? " on" : "");
    dot.style.background = state === "polling" ? "var(--amber)" : "";
    const secs = Math.max(1, Math.round(pollMs / 1000));
    text.textContent = state === "live" ? t("live.live")
      : state === "connecting" ? t("live.connecting")
      : pollMs ? t("live.polling", { n: secs }) : t("live.unavailable");
    el.title = t("live.title." + state);
    return true;
  };
  badges.add(update);
  update();
  return el;
}

function updateBadges() {
  for (const update of [...badges]) if (!update()) badges.delete(update);
}

function setState(next) {
  if (next === state) return;
  state = next;
  updateBadges();
  if (handlers.onState) handlers.onState(state);
}

function parse(data) {
  try { return JSON.parse(data); } catch (_) { return null; }
}

/** Fails the stream unless a hello comes within GIVE_UP_MS (after `grace` ms
 *  more in the current state). */
function expectHello(my, grace) {
  clearTimeout(watchdog);
  watchdog = setTimeout(() => {
    if (my !== gen) return;
    setState("connecting");
    watchdog = setTimeout(() => { if (my === gen) failed(); }, GIVE_UP_MS);
  }, grace);
}

function connect() {
  clearTimeout(retryTimer);
  retryTimer = null;
  if (source) { source.close(); source = null; }
  const my = ++gen;
  setState("connecting");
  let es;
  try {
    es = new EventSource("/api/v1/events");
  } catch (_) {
    failed();
    return;
  }
  source = es;
  expectHello(my, 0);
  es.addEventListener("hello", () => {
    if (my !== gen) return;
    clearTimeout(watchdog);
    watchdog = null;
    const reconnected = wasLive;
    wasLive = true;
    backoff = BACKOFF_MIN_MS;
    setState("live");
    if (reconnected) resync(); // changes in the gap are not replayed
  });
  es.addEventListener("change", (ev) => {
    if (my !== gen) return;
    const c = parse(ev.data);
    if (c && typeof c.kind === "string") queue(c);
  });
  es.addEventListener("resync", () => { if (my === gen) resync(); });
  es.onerror = () => {
    if (my !== gen) return;
    // CLOSED: refused (401/403/503...) or not a stream; the browser gives up.
    if (es.readyState === EventSource.CLOSED) { failed(); return; }
    // CONNECTING: the browser reopens it by itself (the stream's lifetime
    // ended, or the network blinked); stay "live" for a short grace. Its
    // further failed attempts do not restart the clock.
    if (!watchdog) expectHello(my, state === "live" ? GRACE_MS : 0);
  };
}

/** The stream failed: close it, poll, probe the session, retry with backoff. */
async function failed() {
  if (source) { source.close(); source = null; }
  clearTimeout(watchdog);
  watchdog = null;
  const my = ++gen;
  setState("polling");
  try {
    await api("GET", "/api/v1/session");
  } catch (_) {
    // 401: api() has shown the login form; network errors show as offline.
  }
  if (my !== gen || stopped) return; // reconnected or stopped meanwhile
  const delay = backoff;
  backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
  retryTimer = setTimeout(connect, delay);
}

function queue(change) {
  batch.push(change);
  if (batchTimer) return;
  batchTimer = setTimeout(() => {
    const changes = batch;
    batch = [];
    batchTimer = null;
    if (handlers.onChange) handlers.onChange(changes);
  }, DEBOUNCE_MS);
}

function dropBatch() {
  clearTimeout(batchTimer);
  batchTimer = null;
  batch = [];
}

function resync() {
  dropBatch(); // a full reload covers them
  if (handlers.onResync) handlers.onResync();
}
