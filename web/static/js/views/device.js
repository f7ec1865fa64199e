/*
 * One till (#device/GUID): its fields, last error, actions, the versions it
 * ran and its recent tasks.
 */
import { h, append, fill, badge, dot, headRow, emptyRow, kv, none } from "../dom.js";
import { t, fmtTime, fmtAgo, fmtBytes } from "../i18n.js";
import { api } from "../api.js";
import { act, toast, refreshNow, heading, go } from "../app.js";
import { deviceStateBadge, kindBadge, targetBadge, timeEl } from "../widgets.js";

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
  const head = h("div"), errorBox = h("div"), summary = h("div", { class: "card" });
  const versionsBody = h("tbody"), tasksBody = h("tbody");
  append(root, head, errorBox, summary,
    h("div", { class: "card" }, h("h2", null, t("devices.versions.title")),
      h("div", { class: "tablewrap", style: "max-height: 300px; overflow-y: auto" }, h("table", { class: "dense" },
        headRow(t("devices.col.version"), t("devices.versions.since"), t("devices.versions.brought_by")),
        versionsBody))),
    h("div", { class: "card" }, h("h2", null, t("devices.tasks.title")),
      h("div", { class: "tablewrap" }, h("table", { class: "dense" },
        headRow(t("devices.tasks.task"), t("devices.tasks.kind"), t("devices.tasks.package"), t("devices.col.state"),
          [t("devices.tasks.attempt"), { class: "num" }], t("devices.tasks.error"), t("devices.tasks.rollout"),
          t("devices.tasks.updated"), t("devices.tasks.finished")),
        tasksBody))));

  /** Runs a device action from a button, then refreshes (or leaves, after a removal). */
  function action(what, question, call, after) {
    return (e) => {
      if (question && !confirm(question)) return;
      act(e.target, what, async () => { await call(); toast("ok", `${what}: ${guid}`); after ? after() : refreshNow(); });
    };
  }

  function buttons(d) {
    const path = encodeURIComponent(d.guid), label = d.name || d.guid;
    return h("div", { class: "actions" },
      d.status === "pending" ? h("button", { class: "primary",
        onclick: action(t("devices.action.approve"), null, () => api("POST", `/api/v1/devices/${path}/approve`)) },
      t("devices.btn.approve")) : null,
      h("button", { title: t("devices.btn.reset_key_title"),
        onclick: action(t("devices.action.reset_key"), t("devices.confirm.reset_key", { label }),
          () => api("POST", `/api/v1/devices/${path}/reset-key`)) }, t("devices.btn.reset_key")),
      h("button", { class: "danger", title: t("devices.btn.remove_title"),
        onclick: action(t("devices.action.remove"), t("devices.confirm.remove", { name: d.name || "", guid: d.guid }),
          () => api("DELETE", `/api/v1/devices/${path}`), () => go("overview")) }, t("devices.btn.remove")));
  }

  function render(d) {
    fill(head, heading(d.name ? t("devices.detail.title_named", { name: d.name }) : t("devices.detail.title"),
      d.number != null ? h("span", { class: "muted" }, "#" + d.number) : null,
      d.state ? deviceStateBadge(d.state) : null,
      d.status === "pending" ? badge(t("devices.filter.pending"), "b-amber") : null,
      h("button", { class: "small", onclick: () => go("overview") }, t("devices.detail.back"))));
    const bad = d.state === "error" || d.state === "install_failed";
    fill(errorBox, d.last_error ? h("div", { class: "card " + (bad ? "alert" : "warn") },
      h("b", null, t("devices.detail.last_error")), " ",
      h("span", { class: "muted small" }, timeEl(d.last_error_at), " (", fmtAgo(d.last_error_at), ")"),
      h("div", { class: "err", style: "margin-top: 4px; word-break: break-word" }, d.last_error)) : null);
    const or = (v) => (v == null || v === "" ? none() : v);
    fill(summary,
      h("div", { class: "row", style: "gap: 28px; align-items: flex-start" },
        kv(t("devices.col.guid"), h("span", { class: "mono" }, d.guid)),
        kv(t("devices.col.version"), h("span", { class: "mono" }, or(d.version)),
          d.version_flag ? [" ", h("span", { class: "badge b-amber", title: t("devices.flag.title") },
            codeText(VERSION_FLAG_LABEL, d.version_flag))] : null),
        kv(t("devices.col.connection"), dot(d.online), t(d.online ? "devices.online" : "devices.offline"),
          h("div", { class: "small muted", title: d.last_seen ? fmtTime(d.last_seen) : null },
            t("devices.detail.last_seen", { ago: fmtAgo(d.last_seen) }))),
        kv(t("devices.detail.ip"), h("span", { class: "mono" }, or(d.ip))),
        kv(t("devices.detail.free_disk"), fmtBytes(d.free_disk_bytes)),
        kv(t("devices.detail.peers"), d.connected_peers == null ? none(t("devices.detail.peers_unknown"))
          : d.connected_peers === 0 ? h("span", { class: "badge b-amber", title: t("devices.detail.peers_none") }, "0")
          : String(d.connected_peers)),
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
          d.warnings.map((w) => badge(codeText(WARNING_LABEL, w), "b-amber")))) : null),
      h("div", { class: "row", style: "margin-top: 12px" }, buttons(d)));
    const vs = d.versions || [];
    fill(versionsBody, vs.length === 0 ? emptyRow(3, t("devices.versions.empty"))
      : vs.map((v, i) => h("tr", null,
        h("td", { class: "mono" }, v.version),
        h("td", { class: "small" }, timeEl(v.at, true)),
        h("td", null, v.task_id != null ? h("a", { href: "#task/" + v.task_id }, t("devices.versions.by_task", { id: v.task_id }))
          : h("span", { class: "muted" }, t(i === vs.length - 1 ? "devices.versions.first" : "devices.versions.not_by_task"))))));
    const ts = d.recent_tasks || [];
    fill(tasksBody, ts.length === 0 ? emptyRow(9, t("devices.tasks.empty"))
      : ts.map((x) => h("tr", null,
        h("td", null, h("a", { href: "#task/" + x.task_id }, "#" + x.task_id)),
        h("td", null, kindBadge(x.kind)),
        h("td", { class: "nowrap" }, h("b", null, x.package_name), " ", h("span", { class: "mono" }, x.package_version)),
        h("td", null, targetBadge(x.state)),
        h("td", { class: "num" }, x.attempt),
        h("td", { class: "small err", style: "min-width: 140px; max-width: 320px; word-break: break-word" }, x.error || ""),
        h("td", null, x.rollout_id != null ? h("a", { href: "#rollout/" + x.rollout_id }, "#" + x.rollout_id) : none()),
        h("td", { class: "small" }, timeEl(x.updated, true)),
        h("td", { class: "small" }, timeEl(x.finished, true)))));
  }

  const self = {
    interval: 5000,
    async refresh() {
      let d;
      try {
        d = await api("GET", `/api/v1/devices/${encodeURIComponent(guid)}`);
      } catch (e) {
        if (e.status !== 404 && e.status !== 400) throw e;
        self.interval = 0; // unknown or removed: stop polling
        fill(root, heading(t("devices.detail.title")), h("div", { class: "card err" }, `${e.message} (${guid})`),
          h("button", { onclick: () => go("overview") }, t("devices.detail.back")));
        return;
      }
      render(d);
    },
  };
  return self;
}
