/*
 * One task (#task/ID): summary and actions, windows per store, WAN per store
 * (with the coordinator's diagnostics), tills to a new group, and every till
 * with its progress and logs.
 */
import { h, append, fill, setOptions, badge, segment, headRow, emptyRow, kv, none } from "../dom.js";
import { t, fmtBytes, fmtAgo, fmtFixed } from "../i18n.js";
import { api, ApiError } from "../api.js";
import { act, toast, refreshNow, heading, go } from "../app.js";
import { loadStores, storeLabel } from "../data.js";
import {
  TARGET_LABEL, labelOf, kindBadge, statusBadge, targetBadge, timeEl, deviceLink, taskCounts, progressEl, taskActions,
} from "../widgets.js";
import { windowText } from "../pickers.js";
import { wallTime } from "../zones.js";

/** The task page; arg: the task id. */
export function taskDetailView(root, arg) {
  const id = Number(arg);
  const head = h("div");
  const summary = h("div", { class: "card" });
  const storesBody = h("tbody");
  const windowsBody = h("tbody");
  const windowsNote = h("p", { class: "hint" });
  const windowsCard = h("div", { class: "card", style: "display: none" },
    h("h2", null, t("tasks.windows.title")),
    h("div", { class: "tablewrap", style: "max-height: 260px; overflow-y: auto" }, h("table", null,
      headRow(t("tasks.col.store"), t("tasks.col.time_zone"), t("tasks.windows.next"), t("tasks.windows.utc"), t("tasks.windows.open_now")),
      windowsBody)),
    windowsNote);
  const stateF = h("select", { onchange: () => renderTargets() });
  const storeF = h("select", { onchange: () => renderTargets() });
  const textF = h("input", { type: "search", placeholder: t("tasks.targets.search_placeholder"), oninput: () => renderTargets() });
  const targetsBody = h("tbody");
  const targetsNote = h("div", { class: "hint" });
  const groupName = h("input", { type: "text", size: 24, maxlength: 64 });
  const withDeclined = h("input", { type: "checkbox" });
  const groupMsg = h("div", { class: "small" });
  const selCount = h("b", null, "0");
  const selected = new Set(); // GUIDs ticked in the table (kept across refreshes)
  const openLogs = new Set(); // GUIDs whose log tail is expanded
  let task = null, limit = 500, storesTick = 0;
  // The coordinator's own account of each store's WAN, loaded on demand.
  const wanBody = h("tbody");
  const wanNote = h("p", { class: "hint" });
  const wanWrap = h("div", { style: "display: none" },
    h("div", { class: "tablewrap", style: "max-height: 260px; overflow-y: auto; margin-top: 8px" }, h("table", null,
      headRow(t("tasks.col.store"), [t("tasks.wan.served"), { class: "num" }], t("tasks.wan.duplicates"), t("tasks.wan.unconnected")),
      wanBody)),
    wanNote);
  const wanBtn = h("button", { class: "small", onclick: () => act(wanBtn, t("tasks.wan.action"), loadWan) }, t("tasks.wan.why"));

  async function loadWan() {
    const r = await api("GET", `/api/v1/tasks/${id}/wan`, { query: { per_page: 100 } });
    wanWrap.style.display = "";
    const notInTask = " (" + t("tasks.wan.not_in_task") + ")";
    const who = (x) => (x.name || x.device.slice(0, 8)) + (x.fetches > 1 ? ` ×${x.fetches}` : "") + (x.in_task ? "" : notInTask);
    const nothing = () => h("span", { class: "muted" }, t("tasks.wan.none"));
    fill(wanBody, r.stores.length === 0 ? emptyRow(4, t("tasks.wan.no_stores"))
      : r.stores.map((s) => h("tr", null,
        h("td", { title: s.store_id }, storeLabel(s.store_id)),
        h("td", { class: "num nowrap" }, `${fmtBytes(s.wan_bytes)} · ${fmtFixed(Number(s.wan_ratio || 0), 2)}×`),
        h("td", { class: "small", title: s.duplicate_chunks.map((c) => `${c.hash.slice(0, 12)}… ×${c.fetches}: ${c.tills.map(who).join(", ")}`).join("\n") || null },
          s.duplicate_chunks_total === 0 ? nothing()
            : [`${s.duplicate_chunks_total}: `, s.duplicate_chunks.slice(0, 3).map((c) => c.tills.map(who).join(" + ")).join("; "),
              s.duplicate_chunks_total > 3 ? " …" : ""]),
        h("td", { class: "small" }, s.unconnected_tills_total === 0 ? nothing()
          : s.unconnected_tills.map((x, i) => [i ? ", " : "", deviceLink(x.device, x.name || x.device.slice(0, 8)),
            x.connected_peers == null ? h("span", { class: "muted" }, " (" + t("tasks.wan.no_count") + ")") : ""])))));
    fill(wanNote, t("tasks.wan.note"),
      r.stores_total > r.stores.length ? " " + t("tasks.wan.first", { shown: r.stores.length, total: r.stores_total }) : "");
  }

  if (!Number.isInteger(id) || id < 0) {
    append(root, heading(t("tasks.detail.title")), h("div", { class: "card err" }, t("tasks.detail.bad_id")));
    return { interval: 0, async refresh() {} };
  }
  groupName.value = `task-${id}-failed`;

  /** Reports a group made from the task's tills. */
  function made(g) {
    const text = t("groups.toast.created", { name: g.name, n: g.member_count });
    groupMsg.textContent = text;
    toast("ok", text);
  }

  const failedBtn = h("button", { onclick: () => act(failedBtn, t("groups.action.create"), async () => {
    groupMsg.textContent = "";
    const states = withDeclined.checked ? ["failed", "declined"] : ["failed"];
    const description = t("tasks.to_group.failed_description", { states: states.map((s) => labelOf(TARGET_LABEL, s)).join("/"), id });
    made(await api("POST", `/api/v1/tasks/${id}/group`, { body: { name: groupName.value.trim(), description, states } }));
  }) }, t("tasks.to_group.failed"));
  const selectedBtn = h("button", { onclick: () => act(selectedBtn, t("groups.action.create"), async () => {
    groupMsg.textContent = "";
    if (selected.size === 0) throw new ApiError(0, "nothing_selected", t("tasks.to_group.nothing_ticked"));
    made(await api("POST", "/api/v1/groups", { body: {
      name: groupName.value.trim(), description: t("tasks.to_group.picked_description", { id }), members: [...selected] } }));
    selected.clear();
    renderTargets();
  }) }, t("tasks.to_group.ticked"));

  append(root,
    head, summary, windowsCard,
    h("div", { class: "grid2" },
      h("div", { class: "card" },
        h("h2", null, t("tasks.wan.title")),
        h("div", { class: "tablewrap", style: "max-height: 260px; overflow-y: auto" }, h("table", null,
          headRow(t("tasks.col.store"), [t("tasks.col.tills"), { class: "num" }], [t("tasks.col.wan"), { class: "num" }],
            [t("tasks.col.lan"), { class: "num" }], [t("tasks.wan.ratio"), { class: "num" }]),
          storesBody)),
        h("p", { class: "hint" }, t("tasks.wan.hint"), " ", wanBtn),
        wanWrap),
      h("div", { class: "card" },
        h("h2", null, t("tasks.to_group.title")),
        h("div", { class: "row" }, h("label", { class: "f" }, t("tasks.to_group.name"), groupName)),
        h("div", { class: "row" }, failedBtn, h("label", { class: "inline" }, withDeclined, t("tasks.to_group.also_declined"))),
        h("div", { class: "row" }, selectedBtn, h("span", { class: "small" }, t("tasks.to_group.ticked_count"), " ", selCount)),
        groupMsg,
        h("p", { class: "hint" }, t("tasks.to_group.hint")))),
    h("div", { class: "card" },
      h("h2", null, t("tasks.targets.title")),
      h("div", { class: "row" }, h("label", { class: "f" }, t("tasks.col.state"), stateF), h("label", { class: "f" }, t("tasks.col.store"), storeF),
        h("label", { class: "f" }, t("tasks.targets.search"), textF),
        h("button", { class: "small", onclick: () => { visibleTargets().forEach((x) => selected.add(x.device)); renderTargets(); } },
          t("tasks.targets.tick_shown")),
        h("button", { class: "small", onclick: () => { selected.clear(); renderTargets(); } }, t("tasks.targets.untick_all"))),
      h("div", { class: "tablewrap", style: "margin-top: 10px" }, h("table", { class: "dense" },
        headRow("", t("tasks.col.device"), t("tasks.col.store"), t("tasks.col.state"), t("tasks.col.progress"),
          [t("tasks.col.wan"), { class: "num" }], [t("tasks.col.lan"), { class: "num" }], t("tasks.col.error"), t("tasks.col.log"),
          t("tasks.col.started"), t("tasks.col.updated"), t("tasks.col.finished")),
        targetsBody)),
      targetsNote));

  function renderHead() {
    const x = task;
    fill(head, heading(t("tasks.detail.title_id", { id: x.id }), kindBadge(x.kind), statusBadge(x.status),
      h("button", { class: "small", onclick: () => go("tasks") }, t("tasks.detail.back"))));
    const c = taskCounts(x);
    fill(summary,
      h("div", { class: "row", style: "gap: 28px; align-items: flex-start" },
        kv(t("tasks.col.package"), h("b", null, x.package_name), " ", h("span", { class: "mono" }, x.package_version),
          h("div", { class: "small muted" }, fmtBytes(x.package_size))),
        kv(t("tasks.col.group"), x.group_name, x.group_id == null ? " " + t("tasks.group_deleted") : ""),
        kv(t("tasks.col.progress"), progressEl(x)),
        kv(t("tasks.col.created"), timeEl(x.created)),
        kv(t("tasks.col.activation"), x.activate_at ? timeEl(x.activate_at) : t("tasks.list.immediately")),
        kv(t("tasks.detail.started"), timeEl(x.activated)),
        kv(t("tasks.detail.completed"), timeEl(x.completed)),
        kv(t("tasks.detail.traffic"), t("tasks.detail.traffic_value", { wan: fmtBytes(x.wan_bytes), lan: fmtBytes(x.lan_bytes) })),
        kv(t("tasks.detail.attempt"), String(x.attempt), x.rollback ? [" ", badge(t("tasks.rollback"), "b-amber")] : null),
        x.rollout_id != null ? kv(t("tasks.detail.rollout"),
          h("a", { href: "#rollout/" + x.rollout_id }, t("tasks.detail.rollout_link", { id: x.rollout_id }))) : null,
        x.window ? kv(t("tasks.detail.window"), windowText(x.window)) : null,
        x.kind !== "download" ? kv(t("tasks.detail.at_once"), x.max_installing_per_store
          ? t("tasks.detail.at_most", { n: x.max_installing_per_store }) : t("tasks.detail.at_most_half")) : null,
        x.install_retries ? kv(t("tasks.detail.retries"), String(x.install_retries)) : null,
        x.unreachable ? kv(t("tasks.detail.unreachable"), badge(t("tasks.detail.unreachable_n", { n: x.unreachable }), "b-gray")) : null),
      h("div", { class: "row", style: "margin-top: 12px" }, taskActions(x, (verb) => {
        if (verb === "delete") go("tasks"); else refreshNow();
      })),
      c.failed ? h("p", { class: "hint err" }, t("tasks.detail.failed_hint", { n: c.failed })) : null,
      x.unreachable ? h("p", { class: "hint" }, t("tasks.detail.unreachable_hint", { n: x.unreachable })) : null);
  }

  /** Each store's current or next window, for a task with a window. */
  function renderWindows() {
    const ws = task.windows || [];
    windowsCard.style.display = ws.length ? "" : "none";
    if (!ws.length) return;
    fill(windowsBody, ws.map((w) => h("tr", null,
      h("td", { title: w.store_id }, storeLabel(w.store_id)),
      h("td", { class: "small" }, w.time_zone),
      h("td", { class: "nowrap" }, wallTime(w.start_local)),
      h("td", { class: "nowrap small" }, w.start ? `${wallTime(w.start)} – ${wallTime(w.end).slice(11)}` : "–"),
      h("td", null, w.open ? badge(t("tasks.windows.open"), "b-green") : badge(t("tasks.windows.closed"), "b-gray")))));
    fill(windowsNote, t("tasks.windows.note", { window: windowText(task.window) }));
  }

  function renderStores() {
    fill(storesBody, task.stores.length === 0 ? emptyRow(5, t("tasks.wan.no_tills"))
      : task.stores.map((s) => {
        const ratio = Number(s.wan_ratio || 0);
        const colour = ratio <= 1.05 ? "b-green" : ratio <= 1.5 ? "b-amber" : "b-red";
        return h("tr", null, h("td", { title: s.store_id }, storeLabel(s.store_id)), h("td", { class: "num" }, s.tills),
          h("td", { class: "num nowrap" }, fmtBytes(s.wan_bytes)), h("td", { class: "num nowrap" }, fmtBytes(s.lan_bytes)),
          h("td", { class: "num" }, s.wan_bytes ? badge(fmtFixed(ratio, 2) + "×", colour) : none()));
      }));
  }

  function visibleTargets() {
    const st = stateF.value, so = storeF.value, tx = textF.value.trim().toLowerCase();
    return task.target_details.filter((x) => (!st || x.state === st) && (!so || (x.store_id || "-") === so) &&
      (!tx || [x.name, x.device, x.error, x.number, storeLabel(x.store_id)].some((f) => f != null && String(f).toLowerCase().includes(tx))));
  }

  function renderTargets() {
    if (!task) return;
    const counts = {};
    for (const x of task.target_details) counts[x.state] = (counts[x.state] || 0) + 1;
    setOptions(stateF, Object.keys(counts).sort().map((s) => [s, `${labelOf(TARGET_LABEL, s)} (${counts[s]})`]), t("tasks.targets.all_states"));
    const storeIds = [...new Set(task.target_details.map((x) => x.store_id || "-"))].sort();
    setOptions(storeF, storeIds.map((s) => [s, storeLabel(s)]), t("core.all_stores"));
    const shown = visibleTargets();
    const rows = [];
    for (const x of shown.slice(0, limit)) {
      rows.push(targetRow(x));
      if (openLogs.has(x.device)) rows.push(logRow(x));
    }
    fill(targetsBody, rows.length ? rows : emptyRow(12, t(task.target_details.length ? "tasks.targets.no_match"
      : task.status === "scheduled" ? "tasks.targets.at_start" : "tasks.targets.none")));
    const more = shown.length > limit;
    fill(targetsNote, t(more ? "tasks.targets.shown_first" : "tasks.targets.shown", { shown: shown.length, total: task.target_details.length, limit }),
      more ? [" ", h("button", { class: "link", onclick: () => { limit += 1000; renderTargets(); } }, t("core.btn.show_more"))] : null);
    selCount.textContent = String(selected.size);
  }

  /** The expanded logs of a till: earlier attempts first, then the current one. */
  function logRow(x) {
    const earlier = (x.attempts || []).map((a) => h("div", { style: "margin-bottom: 8px" },
      h("div", { class: "small" }, t("tasks.log.attempt", { n: a.attempt }), " ", targetBadge(a.state), " ", timeEl(a.finished, true),
        a.error ? h("span", { class: "err" }, " " + a.error) : null),
      a.log_tail ? h("pre", { class: "log" }, a.log_tail) : null));
    return h("tr", null, h("td", { colspan: 12 }, earlier,
      earlier.length ? h("div", { class: "small" }, t("tasks.log.current")) : null,
      h("pre", { class: "log" }, x.log_tail || t("tasks.log.none"))));
  }

  function targetRow(x) {
    const size = Number(task.package_size || 0);
    const frac = size > 0 ? Math.min(1, x.bytes_done / size) : Number(x.progress || 0);
    const box = h("input", { type: "checkbox", checked: selected.has(x.device), onchange: () => {
      if (box.checked) selected.add(x.device); else selected.delete(x.device);
      selCount.textContent = String(selected.size);
    } });
    const logBtn = x.log_tail || (x.attempts && x.attempts.length)
      ? h("button", { class: "small", onclick: () => {
          if (openLogs.has(x.device)) openLogs.delete(x.device); else openLogs.add(x.device);
          renderTargets();
        } }, t(openLogs.has(x.device) ? "tasks.log.hide" : "tasks.log.show"))
      : none();
    return h("tr", null,
      h("td", null, box),
      h("td", { class: "nowrap" }, h("div", null, deviceLink(x.device, x.name || "–"), x.number != null ? h("span", { class: "muted" }, " #" + x.number) : null),
        h("div", { class: "mono muted", title: x.device }, x.device.slice(0, 8) + "…")),
      h("td", { title: x.store_id || null }, storeLabel(x.store_id)),
      h("td", null, targetBadge(x.state),
        x.unreachable ? [" ", h("span", { class: "badge b-gray", title: t("tasks.targets.last_heard", { ago: fmtAgo(x.last_seen) }) },
          t("tasks.targets.unreachable"))] : null,
        task.kind !== "download" && !x.install_permit && ["pending", "downloading", "downloaded"].includes(x.state)
          ? h("div", { class: "small muted nowrap" }, t("tasks.targets.waiting_permit")) : null,
        x.retries ? h("div", { class: "small muted nowrap" }, t("tasks.targets.retry", { n: x.retries, max: task.install_retries }),
          x.retry_at ? [", ", t("tasks.targets.next_retry"), " ", timeEl(x.retry_at, true)] : null) : null),
      h("td", null, h("div", { class: "bar", style: "width: 90px", title: t("tasks.targets.bytes_of", { done: fmtBytes(x.bytes_done), size: fmtBytes(size) }) },
        segment(frac, 1, x.state === "failed" ? "r" : frac >= 1 ? "g" : "b")),
      h("div", { class: "small muted nowrap" }, `${(frac * 100).toFixed(0)}% · ${fmtBytes(x.bytes_done)}`)),
      h("td", { class: "num nowrap" }, fmtBytes(x.wan_bytes)),
      h("td", { class: "num nowrap" }, fmtBytes(x.lan_bytes)),
      h("td", { class: "small err", style: "min-width: 160px; max-width: 320px; word-break: break-word" }, x.error || ""),
      h("td", null, logBtn),
      h("td", { class: "small" }, timeEl(x.started, true)),
      h("td", { class: "small" }, timeEl(x.updated, true)),
      h("td", { class: "small" }, timeEl(x.finished, true)));
  }

  const self = {
    interval: 2000,
    async refresh() {
      // Store names for the tables; reloaded every 15th refresh.
      if (storesTick++ % 15 === 0) await loadStores();
      try {
        task = await api("GET", `/api/v1/tasks/${id}`);
      } catch (e) {
        if (e.status !== 404) throw e;
        self.interval = 0; // deleted: stop polling
        fill(root, heading(t("tasks.detail.title_id", { id })), h("div", { class: "card err" }, t("tasks.detail.gone", { message: e.message })),
          h("button", { onclick: () => go("tasks") }, t("tasks.detail.back")));
        return;
      }
      renderHead();
      renderWindows();
      renderStores();
      renderTargets();
    },
  };
  return self;
}
