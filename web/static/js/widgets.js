/*
 * Widgets shared by several views: translated state labels and badges, times,
 * links, task progress and task actions, option lists, pagers.
 *
 * State labels are looked up through maps of value -> catalogue key (every
 * key written out, so the tests can check them); a value the panel does not
 * know (a newer coordinator) is shown as the API sent it.
 */
import { h, badge, segment } from "./dom.js";
import { t, fmtTime, fmtShort, fmtBytes } from "./i18n.js";
import { api } from "./api.js";
import { act, toast, canOperate } from "./app.js";
import { cache } from "./data.js";
import { morph } from "./morph.js";

/** Task kinds. */
export const KIND_LABEL = { download: "tasks.kind.download", update: "tasks.kind.update", forced_update: "tasks.kind.forced_update" };
/** Task statuses. */
export const STATUS_LABEL = {
  scheduled: "tasks.status.scheduled", running: "tasks.status.running", paused: "tasks.status.paused",
  completed: "tasks.status.completed", completed_with_failures: "tasks.status.completed_with_failures",
};
const STATUS_BADGE = { scheduled: "b-gray", running: "b-blue", paused: "b-amber", completed: "b-green", completed_with_failures: "b-red" };
/** A till's state within a task. */
export const TARGET_LABEL = {
  pending: "tasks.target.pending", downloading: "tasks.target.downloading", downloaded: "tasks.target.downloaded",
  awaiting_cashier: "tasks.target.awaiting_cashier", installing: "tasks.target.installing", rebooting: "tasks.target.rebooting",
  installed: "tasks.target.installed", failed: "tasks.target.failed", declined: "tasks.target.declined", skipped: "tasks.target.skipped",
};
const TARGET_BADGE = {
  pending: "b-gray", downloading: "b-blue", downloaded: "b-blue", awaiting_cashier: "b-purple",
  installing: "b-blue", rebooting: "b-blue", installed: "b-green", failed: "b-red",
  declined: "b-amber", skipped: "b-gray",
};
/** A device's own reported state. */
export const DEVICE_STATE_LABEL = {
  ready: "devices.state.ready", downloading: "devices.state.downloading", awaiting_cashier: "devices.state.awaiting_cashier",
  waiting_for_sale_end: "devices.state.waiting_for_sale_end", installing: "devices.state.installing",
  rebooting: "devices.state.rebooting", error: "devices.state.error", install_failed: "devices.state.install_failed",
};
/** Colours of the device states (its keys are the states, in display order). */
export const DEVICE_STATE_BADGE = { ready: "b-green", downloading: "b-blue", awaiting_cashier: "b-purple",
  waiting_for_sale_end: "b-purple", installing: "b-blue", rebooting: "b-blue", error: "b-red", install_failed: "b-red" };
/** Operator roles. */
export const ROLE_LABEL = { viewer: "core.role.viewer", operator: "core.role.operator", approver: "core.role.approver", admin: "core.role.admin" };

/** The translated label of an API value through a value -> key map; unknown values as sent. */
export function labelOf(labels, value) {
  if (value == null || value === "") return "?";
  return Object.hasOwn(labels, value) ? t(labels[value]) : String(value).replace(/_/g, " ");
}

/** A value as a badge: its label (labels map) in its colour (colours map). */
export function labelBadge(value, labels, colours) { return badge(labelOf(labels, value), colours[value]); }

/** A task kind as a badge. */
export function kindBadge(kind) {
  return badge(labelOf(KIND_LABEL, kind), kind === "forced_update" ? "b-red" : kind === "update" ? "b-purple" : "b-blue");
}
/** A task status as a badge. Given the task (a summary with its target
 *  counts), its outcome never reads as a plain success while tills failed or
 *  declined: "completed" with failures shows as Completed with failures
 *  (red), with declines only as Completed, N declined (amber). */
export function statusBadge(s, task) {
  if (task && s === "completed") {
    const c = taskCounts(task);
    if (c.failed) s = "completed_with_failures";
    else if (c.declined) return badge(t("tasks.status.completed_declined", { n: c.declined }), "b-amber");
  }
  const el = labelBadge(s, STATUS_LABEL, STATUS_BADGE);
  el.setAttribute("data-test", "task-status");
  el.setAttribute("data-status", s);
  return el;
}
/** A till's state in a task as a badge. */
export function targetBadge(s) { return labelBadge(s, TARGET_LABEL, TARGET_BADGE); }
/** A device state as a badge. */
export function deviceStateBadge(s) { return labelBadge(s, DEVICE_STATE_LABEL, DEVICE_STATE_BADGE); }

/** A time: local (compact when short is set), full local and UTC on hover. */
export function timeEl(s, short) {
  return h("span", { class: "nowrap", title: s ? t("core.time.title", { local: fmtTime(s), utc: s }) : null },
    short ? fmtShort(s) : fmtTime(s));
}

/** A link to a device's page. */
export function deviceLink(guid, text) { return h("a", { href: "#device/" + encodeURIComponent(guid) }, text); }

/** Copies text to the clipboard from a copy button's click; when the
 *  clipboard cannot be written, selects the text next to the button
 *  (.guid-full) so that Ctrl+C copies it. */
export function copyFromButton(ev, text) {
  const holder = ev.currentTarget.parentElement.querySelector(".guid-full");
  const fallback = () => {
    if (holder) {
      const range = document.createRange();
      range.selectNodeContents(holder);
      const sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      let copied = false;
      try { copied = document.execCommand("copy"); } catch (_) { copied = false; }
      toast(copied ? "ok" : "", t(copied ? "core.copy.done" : "core.copy.selected"));
    }
  };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(() => toast("ok", t("core.copy.done")), fallback);
  } else fallback();
}

/** A device GUID in full (monospace, wrapping anywhere), optionally a link
 *  to its page, with a copy button. */
export function guidEl(guid, link) {
  const text = h("span", { class: "guid-full" }, guid);
  return h("span", { class: "copyable" }, link ? deviceLink(guid, text) : text,
    h("button", { class: "small copy", title: t("core.copy.title"), "aria-label": t("core.copy.label", { text: guid }),
      "data-test": "copy-guid", onclick: (e) => copyFromButton(e, guid) }, copyIcon()));
}

/** Two overlapping sheets: the copy icon (drawn, so it needs no font). */
function copyIcon() {
  const NS = "http://www.w3.org/2000/svg"; // the SVG namespace name, not a resource
  const svg = document.createElementNS(NS, "svg");
  for (const [k, v] of Object.entries({ viewBox: "0 0 16 16", width: "12", height: "12", "aria-hidden": "true", fill: "none",
    stroke: "currentColor", "stroke-width": "1.5" })) svg.setAttribute(k, v);
  // The back sheet first; the front one, filled, is drawn over it.
  for (const [x, fill] of [[2, "none"], [5, "#fff"]]) {
    const r = document.createElementNS(NS, "rect");
    for (const [k, v] of Object.entries({ x, y: x, width: 9, height: 9, rx: 1.5, fill })) r.setAttribute(k, String(v));
    svg.appendChild(r);
  }
  return svg;
}

/** Previous / "page N of M · what" / Next, into the pager element, updated
 *  in place (the buttons keep focus; they read the page at click time). */
export function pager(el, page, pages, what, go) {
  el.dataset.page = String(page);
  const step = (d) => () => go(Number(el.dataset.page) + d);
  morph(el, h("div", { class: el.className },
    h("button", { class: "small", disabled: page <= 1, "data-test": "pager-prev", onclick: step(-1) }, t("core.pager.previous")),
    h("span", { class: "small" }, t("core.pager.page", { page, pages }), " · ", what),
    h("button", { class: "small", disabled: page >= pages, "data-test": "pager-next", onclick: step(1) }, t("core.pager.next"))));
  el.dataset.page = String(page);
}

/** A whole number from an input: undefined when empty, else min..max or throws
 *  (what: the translated name of the field, for the message). */
export function intOf(input, what, min, max) {
  const v = input.value.trim();
  if (v === "") return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) throw new Error(t("core.error.int_range", { what, min, max }));
  return n;
}

/** [value, label] pairs of the cached packages, for setOptions. */
export function packageOptions() {
  return cache.packages.map((p) => [p.package_id,
    t(p.newest ? "packages.option_newest" : "packages.option", { name: p.name, version: p.version, size: fmtBytes(p.size) })]);
}

/** [value, label] pairs of the cached groups (optionally filtered), for setOptions. */
export function groupOptions(filter) {
  return cache.groups.filter(filter || (() => true)).map((g) => [String(g.id), t("groups.option", { name: g.name, n: g.member_count })]);
}

// ---------------------------------------------------------------- task progress and actions

/** Target counts of a task summary. "done" depends on the kind: a Download
 *  task is done for a till once it is downloaded. */
export function taskCounts(task) {
  const s = task.states || {};
  const n = (k) => Number(s[k] || 0);
  const total = Number(task.targets || 0);
  const done = n("installed") + n("skipped") + (task.kind === "download" ? n("downloaded") : 0);
  const failed = n("failed"), declined = n("declined"), pending = n("pending");
  return { total, done, failed, declined, pending, installed: n("installed"), downloaded: n("downloaded"),
    skipped: n("skipped"), active: Math.max(0, total - done - failed - declined - pending) };
}

/** Stacked bar and counts: done (green), in progress (blue), declined (amber), failed (red). */
export function progressEl(task) {
  const c = taskCounts(task);
  if (c.total === 0) {
    return h("span", { class: "muted small" }, t(task.status === "scheduled" ? "tasks.progress.at_activation" : "tasks.progress.no_tills"));
  }
  const chips = [];
  if (c.installed) chips.push(badge(t("tasks.progress.installed", { n: c.installed }), "b-green"));
  if (c.downloaded) chips.push(badge(t("tasks.progress.downloaded", { n: c.downloaded }), "b-blue"));
  if (c.skipped) chips.push(badge(t("tasks.progress.skipped", { n: c.skipped }), "b-gray"));
  if (c.failed) chips.push(badge(t("tasks.progress.failed", { n: c.failed }), "b-red"));
  if (c.declined) chips.push(badge(t("tasks.progress.declined", { n: c.declined }), "b-amber"));
  return h("div", null,
    h("div", { class: "row", style: "gap: 2px 8px; align-items: center" },
      h("div", { class: "bar", title: t("tasks.progress.title", c) },
        segment(c.done, c.total, "g"), segment(c.active, c.total, "b"), segment(c.declined, c.total, "a"), segment(c.failed, c.total, "r")),
      h("span", { class: "small nowrap" }, `${c.done}/${c.total}`)),
    h("div", { class: "chips" }, chips));
}

/** A till skipped by a task: why. The coordinator skips a till only when,
 *  at activation, it already ran the package's version or newer (a rollback
 *  task: exactly that version). */
export function skipReason(task) {
  return t(task.rollback ? "tasks.skip.rollback" : "tasks.skip.newer", { version: task.package_version });
}

/** How many tills a task concerns, in words: its targets; for a task not
 *  started yet, its group's current size (from cache.groups). */
export function taskTills(task) {
  if (task.targets || task.activated) return t("tasks.tills", { n: task.targets || 0 });
  const g = cache.groups.find((x) => x.id === task.group_id);
  return g ? t("tasks.tills_group_now", { n: g.member_count, group: g.name }) : t("tasks.tills_at_start");
}

/** Task actions: each with its button, the action's name, the done toast. */
const TASK_ACTIONS = {
  pause: { what: "tasks.action.pause", done: "tasks.action.paused" },
  resume: { what: "tasks.action.resume", done: "tasks.action.resumed" },
  restart: { what: "tasks.action.restart", done: "tasks.action.restarted" },
  delete: { what: "tasks.action.delete", done: "tasks.action.deleted" },
};

/** Pause / Resume / Restart / Delete buttons for a task (none for a viewer);
 *  each asks first, naming how many tills it affects. after(verb) is called
 *  once one succeeded (verb: "pause", "resume", "restart", "delete"). The
 *  buttons carry a data-h stamp of the data they captured (morph.js). */
export function taskActions(task, after) {
  if (!canOperate()) return null;
  const label = `#${task.id} (${labelOf(KIND_LABEL, task.kind)} ${task.package_name} ${task.package_version} → ${task.group_name})`;
  const tills = taskTills(task);
  const stamp = `${task.status}|${tills}|${label}`;
  const run = (verb, question, fn) => (e) => {
    if (question && !confirm(question)) return;
    act(e.currentTarget, t(TASK_ACTIONS[verb].what), async () => {
      await fn();
      toast("ok", t(TASK_ACTIONS[verb].done, { label }));
      after(verb);
    });
  };
  const button = (verb, text, props, question, fn) =>
    h("button", { class: "small", "data-h": stamp, "data-test": "task-" + verb, ...props, onclick: run(verb, question, fn) }, text);
  const out = [];
  if (task.status === "scheduled" || task.status === "running") {
    out.push(button("pause", t("tasks.btn.pause"), { title: t("tasks.btn.pause_title") },
      t("tasks.confirm.pause", { label, tills }), () => api("POST", `/api/v1/tasks/${task.id}/pause`)));
  }
  if (task.status === "paused") {
    out.push(button("resume", t("tasks.btn.resume"), { title: t("tasks.btn.resume_title") },
      t("tasks.confirm.resume", { label, tills }), () => api("POST", `/api/v1/tasks/${task.id}/resume`)));
  }
  const forced = task.kind === "forced_update" ? "\n" + t("tasks.confirm.restart_forced") : "";
  out.push(button("restart", t(task.status === "scheduled" ? "tasks.btn.start_now" : "tasks.btn.restart"),
    { title: t("tasks.btn.restart_title") }, t("tasks.confirm.restart", { label, tills }) + forced,
    () => api("POST", `/api/v1/tasks/${task.id}/restart`)));
  out.push(button("delete", t("core.btn.delete"), { class: "small danger" }, t("tasks.confirm.delete", { label, tills }),
    () => api("DELETE", `/api/v1/tasks/${task.id}`)));
  return h("div", { class: "actions" }, out);
}
