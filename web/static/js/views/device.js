/*
 * One till (#device/GUID): its fields (IP, free disk, store peers, last
 * seen...), its last error with the failing task's log, actions (admins), the
 * versions it ran and its recent tasks. Everything updates in place.
 */
import { h, append, fill, badge, dot, headRow, fillRows, kv, none } from "../dom.js";
import { t, fmtTime, fmtAgo, fmtBytes } from "../i18n.js";
import { api } from "../api.js";
import { act, toast, refreshNow, heading, go, isAdmin } from "../app.js";
import { deviceStateBadge, kindBadge, targetBadge, timeEl, guidEl } from "../widgets.js";
import { morph } from "../morph.js";
import { liveThrottle } from "../live.js";

/** Flags a till's version may carry. */
const VERSION_FLAG_LABEL = { unknown_version: "devices.flag.unknown_version" };
/** Warnings a till may report (others are shown as sent). */
const WARNING_LABEL = { stale_instructions: "devices.warning.stale_instructions" };

/** A code from the till as words: its label when known, else the code with spaces. */
function codeText(labels, code) {
  return Object.hasOwn(labels, code) ? t(labels[code]) : String(code).replace(/_/g, " ");
}

/** The device page; arg: the GUID. */
export function deviceDetailView(root, arg) {
  const guid = arg || "";
  const admin = isAdmin();
  const head = h("div"), errorBox = h("div", { "data-test": "device-error" });
  const FIELDS = { class: "row", style: "gap: 20px 28px; align-items: flex-start" };
  const fields = h("div", FIELDS);
  const summary = h("div", { class: "card", "data-test": "device-summary" }, fields);
  const versionsBody = h("tbody", { "data-test": "device-versions" }), tasksBody = h("tbody", { "data-test": "device-tasks" });
  const live = liveThrottle(1000, summary);
  // The failing targets' logs, by "task/updated": read from the task (the
  // device's own record does not carry them), once per change of the target.
  const logs = new Map();
  const openLogs = new Set(); // task ids whose log row is expanded
  let dev = null, taskIds = new Set();
  append(root, head, errorBox, summary,
    h("div", { class: "card" }, h("h2", null, t("devices.versions.title")),
      h("div", { class: "tablewrap", style: "max-height: 300px; overflow-y: auto" }, h("table", { class: "dense" },
        headRow(t("devices.col.version"), t("devices.versions.since"), t("devices.versions.brought_by")),
        versionsBody))),
    h("div", { class: "card" }, h("h2", null, t("devices.tasks.title")),
      h("div", { class: "tablewrap" }, h("table", { class: "dense" },
        headRow(t("devices.tasks.task"), t("devices.tasks.kind"), t("devices.tasks.package"), t("devices.tasks.outcome"),
          [t("devices.tasks.attempt"), { class: "num hide-narrow" }], t("devices.tasks.error"), [t("devices.tasks.rollout"), { class: "hide-narrow" }],
          [t("devices.tasks.updated"), { class: "hide-narrow" }], t("devices.tasks.finished")),
        tasksBody))));

  /** Runs a device action from a button, then refreshes (or leaves, after a removal). */
  function action(what, question, call, after) {
    return (e) => {
      if (question && !confirm(question())) return;
      act(e.currentTarget, what, async () => { await call(); toast("ok", `${what}: ${guid}`); after ? after() : refreshNow(); });
    };
  }
  const path = encodeURIComponent(guid);
  const label = () => (dev && dev.name) || guid;
  const approveBtn = h("button", { class: "primary", "data-test": "device-approve",
    onclick: action(t("devices.action.approve"), null, () => api("POST", `/api/v1/devices/${path}/approve`)) }, t("devices.btn.approve"));
  const resetBtn = h("button", { title: t("devices.btn.reset_key_title"), "data-test": "device-reset-key",
    onclick: action(t("devices.action.reset_key"), () => t("devices.confirm.reset_key", { label: label() }),
      () => api("POST", `/api/v1/devices/${path}/reset-key`)) }, t("devices.btn.reset_key"));
  const removeBtn = h("button", { class: "danger", title: t("devices.btn.remove_title"), "data-test": "device-remove",
    onclick: action(t("devices.action.remove"), () => t("devices.confirm.remove", { name: (dev && dev.name) || "", guid }),
      () => api("DELETE", `/api/v1/devices/${path}`), () => go("overview")) }, t("devices.btn.remove"));
  if (admin) summary.appendChild(h("div", { class: "row", style: "margin-top: 12px" }, h("div", { class: "actions" }, approveBtn, resetBtn, removeBtn)));

  /** The log of this till in a task, from the task's details (cached per change). */
  async function loadLog(x) {
    const key = `${x.task_id}/${x.updated}`;
    if (logs.has(key)) return logs.get(key);
    const task = await api("GET", `/api/v1/tasks/${x.task_id}`);
    const target = (task.target_details || []).find((y) => y.device === guid);
    const log = target ? { log_tail: target.log_tail, attempts: target.attempts || [] } : { log_tail: null, attempts: [] };
    logs.set(key, log);
    return log;
  }

  /** A till's log in a task as <pre> blocks: earlier attempts, then the last one. */
  function logBlocks(log) {
    if (!log) return h("div", { class: "small muted" }, t("devices.log.loading"));
    return [(log.attempts || []).filter((a) => a.log_tail).map((a) => [
      h("div", { class: "small" }, t("tasks.log.attempt", { n: a.attempt }), " ", targetBadge(a.state)),
      h("pre", { class: "log" }, a.log_tail)]),
    h("pre", { class: "log", "data-test": "device-log" }, log.log_tail || t("tasks.log.none"))];
  }

  /** The task the last error came from: the newest failed one in the history. */
  const failing = (d) => (d.recent_tasks || []).find((x) => x.state === "failed" && x.error) || null;

  function renderError(d) {
    const bad = d.state === "error" || d.state === "install_failed";
    const f = failing(d);
    const log = f ? logs.get(`${f.task_id}/${f.updated}`) : null;
    morph(errorBox, h("div", { "data-test": "device-error" }, d.last_error ? h("div", { class: "card " + (bad ? "alert" : "warn") },
      h("b", null, t("devices.detail.last_error")), " ",
      h("span", { class: "muted small" }, timeEl(d.last_error_at), " (", fmtAgo(d.last_error_at), ")"),
      h("div", { class: "err wrap-any", style: "margin-top: 4px" }, d.last_error),
      f ? h("div", { style: "margin-top: 8px" },
        h("div", { class: "small" }, t("devices.log.of_task", { id: f.task_id }), " ",
          h("a", { href: "#task/" + f.task_id }, t("tasks.detail.title_id", { id: f.task_id }))),
        logBlocks(log)) : h("div", { class: "small muted" }, t("devices.log.no_task"))) : null));
    if (f && !log) {
      loadLog(f).then(() => { if (dev) renderError(dev); }, (e) => {
        if (e.code === "network" || e.status === 401) return;
        logs.set(`${f.task_id}/${f.updated}`, { log_tail: t("devices.log.unavailable", { message: e.message }), attempts: [] });
        if (dev) renderError(dev);
      });
    }
  }

  function render(d) {
    morph(head, h("div", null, heading(d.name ? t("devices.detail.title_named", { name: d.name }) : t("devices.detail.title"),
      d.number != null ? h("span", { class: "muted" }, "#" + d.number) : null,
      d.state ? deviceStateBadge(d.state) : null,
      d.status === "pending" ? badge(t("devices.filter.pending"), "b-amber") : null,
      h("a", { href: "#overview", class: "small" }, t("devices.detail.back")))));
    renderError(d);
    const or = (v) => (v == null || v === "" ? none() : v);
    approveBtn.hidden = d.status !== "pending";
    morph(fields, h("div", FIELDS,
        kv(t("devices.col.guid"), guidEl(d.guid)),
        kv(t("devices.col.version"), h("span", { class: "mono" }, or(d.version)),
          d.version_flag ? [" ", h("span", { class: "badge b-amber", title: t("devices.flag.title") },
            codeText(VERSION_FLAG_LABEL, d.version_flag))] : null),
        kv(t("devices.col.connection"), dot(d.online), t(d.online ? "devices.online" : "devices.offline")),
        kv(t("devices.col.last_seen"), h("span", { "data-test": "device-last-seen", title: d.last_seen ? fmtTime(d.last_seen) : null },
          d.last_seen ? [fmtAgo(d.last_seen), h("div", { class: "small muted" }, fmtTime(d.last_seen))] : t("core.ago.never"))),
        kv(t("devices.detail.ip"), h("span", { class: "mono", "data-test": "device-ip" }, or(d.ip))),
        kv(t("devices.detail.free_disk"), h("span", { "data-test": "device-free-disk" }, d.free_disk_bytes == null ? none() : fmtBytes(d.free_disk_bytes))),
        kv(t("devices.detail.peers"), h("span", { "data-test": "device-peers" }, d.connected_peers == null ? none(t("devices.detail.peers_unknown"))
          : d.connected_peers === 0 ? h("span", { class: "badge b-amber", title: t("devices.detail.peers_none") }, "0")
            : String(d.connected_peers))),
        kv(t("devices.col.store"), d.store_name || d.store_id || none(), d.store_id ? h("span", { class: "muted mono small" }, " " + d.store_id) : null,
          d.store_address ? h("div", { class: "small muted" }, d.store_address) : null),
        kv(t("devices.detail.till_type"), or(d.till_type)),
        kv(t("devices.col.approval"), d.status === "pending" ? badge(t("devices.approval.pending"), "b-amber")
          : badge(t("devices.approval.approved"), "b-green"),
        d.in_registry ? null : h("div", { class: "small muted" }, t("devices.not_in_registry"))),
        kv(t("devices.detail.key_bound"), d.key_bound_at ? timeEl(d.key_bound_at) : h("span", { class: "muted" }, t("devices.detail.no_key")),
          d.public_key ? h("div", { class: "mono muted small", title: d.public_key }, d.public_key.slice(0, 16) + "…") : null),
        d.peer_id ? kv(t("devices.detail.peer_id"), h("span", { class: "mono small", title: d.peer_id }, d.peer_id.slice(0, 16) + "…")) : null,
        d.warnings && d.warnings.length ? kv(t("devices.detail.warnings"), h("div", { class: "chips" },
          d.warnings.map((w) => badge(codeText(WARNING_LABEL, w), "b-amber")))) : null));
    const vs = d.versions || [];
    fillRows(versionsBody, vs, (v) => `${v.version}@${v.at}`, (v) => h("tr", null,
      h("td", { class: "mono" }, v.version),
      h("td", { class: "small" }, timeEl(v.at, true)),
      h("td", null, v.task_id != null ? h("a", { href: "#task/" + v.task_id }, t("devices.versions.by_task", { id: v.task_id }))
        : h("span", { class: "muted" }, t(v === vs[vs.length - 1] ? "devices.versions.first" : "devices.versions.not_by_task")))),
    3, t("devices.versions.empty"));
    renderTasks(d);
  }

  function renderTasks(d) {
    const rows = [];
    for (const x of d.recent_tasks || []) {
      rows.push({ key: String(x.task_id), x });
      if (openLogs.has(x.task_id)) rows.push({ key: x.task_id + "/log", x, log: true });
    }
    fillRows(tasksBody, rows, (r) => r.key, (r) => (r.log ? logRow(r.x) : taskRow(r.x)), 9, t("devices.tasks.empty"));
  }

  function logRow(x) {
    return h("tr", null, h("td", { colspan: 9 }, logBlocks(logs.get(`${x.task_id}/${x.updated}`))));
  }

  function toggleLog(x) {
    if (openLogs.has(x.task_id)) { openLogs.delete(x.task_id); renderTasks(dev); return; }
    openLogs.add(x.task_id);
    renderTasks(dev);
    loadLog(x).then(() => renderTasks(dev), (e) => {
      logs.set(`${x.task_id}/${x.updated}`, { log_tail: t("devices.log.unavailable", { message: e.message }), attempts: [] });
      renderTasks(dev);
    });
  }

  function taskRow(x) {
    const open = openLogs.has(x.task_id);
    return h("tr", { "data-test": "device-task-row" },
      h("td", null, h("a", { href: "#task/" + x.task_id }, "#" + x.task_id)),
      h("td", null, kindBadge(x.kind)),
      h("td", null, h("b", null, x.package_name), " ", h("span", { class: "mono" }, x.package_version)),
      h("td", null, targetBadge(x.state)),
      h("td", { class: "num hide-narrow" }, x.attempt),
      h("td", { class: "small", style: "min-width: 120px; max-width: 320px" },
        x.error ? h("div", { class: "err wrap-any" }, x.error) : null,
        x.error || x.state === "failed" ? h("button", { class: "small", "aria-expanded": open ? "true" : "false", "data-test": "device-task-log",
          onclick: () => { const y = (dev.recent_tasks || []).find((z) => z.task_id === x.task_id); if (y) toggleLog(y); } },
        t(open ? "tasks.log.hide" : "devices.log.show")) : null),
      h("td", { class: "hide-narrow" }, x.rollout_id != null ? h("a", { href: "#rollout/" + x.rollout_id }, "#" + x.rollout_id) : none()),
      h("td", { class: "small hide-narrow" }, timeEl(x.updated, true)),
      h("td", { class: "small" }, timeEl(x.finished, true)));
  }

  const self = {
    interval: 5000,
    /** This till's own changes, its progress in tasks, and its tasks' changes. */
    wants(c) {
      const mine = c.kind === "device" || c.kind === "target" ? c.guid === guid : c.kind === "task" ? taskIds.has(c.task_id) : false;
      return mine && live.wants();
    },
    async refresh() {
      live.started();
      let d;
      try {
        d = await api("GET", `/api/v1/devices/${encodeURIComponent(guid)}`);
      } catch (e) {
        if (e.status !== 404 && e.status !== 400) throw e;
        self.interval = 0; // unknown or removed: stop polling
        fill(root, heading(t("devices.detail.title")), h("div", { class: "card err wrap-any" }, `${e.message} (${guid})`),
          h("a", { href: "#overview" }, t("devices.detail.back")));
        return;
      }
      dev = d;
      taskIds = new Set((d.recent_tasks || []).map((x) => x.task_id));
      render(d);
    },
  };
  return self;
}
