/*
 * One task (#task/ID): summary and actions, then a sticky tab bar: Tills
 * (every till with its progress and logs, and tills to a new group), Stores
 * (WAN per store, with the coordinator's diagnostics) and Windows (per store,
 * for a task with a maintenance window). Everything updates in place.
 */
import { h, append, fill, setOptions, badge, segment, headRow, fillRows, kv, none } from "../dom.js";
import { t, fmtBytes, fmtAgo, fmtFixed } from "../i18n.js";
import { api, ApiError } from "../api.js";
import { act, toast, refreshNow, heading, go, canOperate } from "../app.js";
import { loadStores, loadGroups, storeLabel } from "../data.js";
import {
  TARGET_LABEL, labelOf, kindBadge, statusBadge, targetBadge, timeEl, deviceLink, guidEl, taskCounts, progressEl, taskActions,
  skipReason,
} from "../widgets.js";
import { windowText } from "../pickers.js";
import { wallTime } from "../zones.js";
import { morph } from "../morph.js";
import { liveThrottle } from "../live.js";
import { tabBar } from "../tabs.js";

/** The task page; arg: the task id. */
export function taskDetailView(root, arg) {
  const id = Number(arg);
  if (!Number.isInteger(id) || id < 0) {
    append(root, heading(t("tasks.detail.title")), h("div", { class: "card err" }, t("tasks.detail.bad_id")));
    return { interval: 0, wants: () => false, async refresh() {} };
  }
  const operator = canOperate();
  const head = h("div");
  const summary = h("div", { class: "card", "data-test": "task-summary" });
  const storesBody = h("tbody");
  const windowsBody = h("tbody");
  const windowsNote = h("p", { class: "hint" });
  const stateF = h("select", { "data-test": "targets-state-filter", onchange: () => renderTargets() });
  const storeF = h("select", { onchange: () => renderTargets() });
  const textF = h("input", { type: "search", placeholder: t("tasks.targets.search_placeholder"), oninput: () => renderTargets() });
  const targetsBody = h("tbody", { "data-test": "targets-rows" });
  const targetsNote = h("div", { class: "hint" });
  const groupName = h("input", { type: "text", size: 24, maxlength: 64, value: `task-${id}-failed` });
  const withDeclined = h("input", { type: "checkbox" });
  const groupMsg = h("div", { class: "small", role: "status" });
  const selCount = h("b", null, "0");
  const selected = new Set(); // GUIDs ticked in the table (kept across refreshes)
  const openLogs = new Set(); // GUIDs whose log tail is expanded
  const live = liveThrottle(1000, summary);
  const COLS = operator ? 9 : 8;
  let task = null, limit = 500, storesTick = 0, guids = new Set();
  // The coordinator's own account of each store's WAN, loaded on demand.
  const wanBody = h("tbody");
  const wanNote = h("p", { class: "hint" });
  const wanWrap = h("div", { hidden: true },
    h("div", { class: "tablewrap", style: "max-height: 260px; overflow-y: auto; margin-top: 8px" }, h("table", null,
      headRow(t("tasks.col.store"), [t("tasks.wan.served"), { class: "num" }], t("tasks.wan.duplicates"), t("tasks.wan.unconnected")),
      wanBody)),
    wanNote);
  const wanBtn = h("button", { class: "small", onclick: () => act(wanBtn, t("tasks.wan.action"), loadWan) }, t("tasks.wan.why"));

  async function loadWan() {
    const r = await api("GET", `/api/v1/tasks/${id}/wan`, { query: { per_page: 100 } });
    wanWrap.hidden = false;
    const notInTask = " (" + t("tasks.wan.not_in_task") + ")";
    const who = (x) => (x.name || x.device.slice(0, 8)) + (x.fetches > 1 ? ` ×${x.fetches}` : "") + (x.in_task ? "" : notInTask);
    const nothing = () => h("span", { class: "muted" }, t("tasks.wan.none"));
    fillRows(wanBody, r.stores, (s) => s.store_id, (s) => h("tr", null,
      h("td", { title: s.store_id }, storeLabel(s.store_id)),
      h("td", { class: "num nowrap" }, `${fmtBytes(s.wan_bytes)} · ${fmtFixed(Number(s.wan_ratio || 0), 2)}×`),
      h("td", { class: "small wrap-any", title: s.duplicate_chunks.map((c) => `${c.hash.slice(0, 12)}… ×${c.fetches}: ${c.tills.map(who).join(", ")}`).join("\n") || null },
        s.duplicate_chunks_total === 0 ? nothing()
          : [`${s.duplicate_chunks_total}: `, s.duplicate_chunks.slice(0, 3).map((c) => c.tills.map(who).join(" + ")).join("; "),
            s.duplicate_chunks_total > 3 ? " …" : ""]),
      h("td", { class: "small" }, s.unconnected_tills_total === 0 ? nothing()
        : s.unconnected_tills.map((x, i) => [i ? ", " : "", deviceLink(x.device, x.name || x.device.slice(0, 8)),
          x.connected_peers == null ? h("span", { class: "muted" }, " (" + t("tasks.wan.no_count") + ")") : ""]))),
    4, t("tasks.wan.no_stores"));
    fill(wanNote, t("tasks.wan.note"),
      r.stores_total > r.stores.length ? " " + t("tasks.wan.first", { shown: r.stores.length, total: r.stores_total }) : "");
  }

  /** Reports a group made from the task's tills. */
  function made(g) {
    const text = t("groups.toast.created", { name: g.name, n: g.member_count });
    groupMsg.textContent = text;
    toast("ok", text);
  }

  const failedBtn = h("button", { "data-test": "failed-to-group", onclick: () => act(failedBtn, t("groups.action.create"), async () => {
    groupMsg.textContent = "";
    const states = withDeclined.checked ? ["failed", "declined"] : ["failed"];
    const description = t("tasks.to_group.failed_description", { states: states.map((s) => labelOf(TARGET_LABEL, s)).join("/"), id });
    made(await api("POST", `/api/v1/tasks/${id}/group`, { body: { name: groupName.value.trim(), description, states } }));
  }) }, t("tasks.to_group.failed"));
  const selectedBtn = h("button", { "data-test": "ticked-to-group", onclick: () => act(selectedBtn, t("groups.action.create"), async () => {
    groupMsg.textContent = "";
    if (selected.size === 0) throw new ApiError(0, "nothing_selected", t("tasks.to_group.nothing_ticked"));
    made(await api("POST", "/api/v1/groups", { body: {
      name: groupName.value.trim(), description: t("tasks.to_group.picked_description", { id }), members: [...selected] } }));
    selected.clear();
    renderTargets();
  }) }, t("tasks.to_group.ticked"));

  const windowsPanel = h("div", { class: "card" },
    h("h2", null, t("tasks.windows.title")),
    h("div", { class: "tablewrap" }, h("table", null,
      headRow(t("tasks.col.store"), [t("tasks.col.time_zone"), { class: "hide-narrow" }], t("tasks.windows.next"), t("tasks.windows.utc"),
        t("tasks.windows.open_now")),
      windowsBody)),
    windowsNote);
  const storesPanel = h("div", { class: "card" },
    h("h2", null, t("tasks.wan.title")),
    h("div", { class: "tablewrap" }, h("table", null,
      headRow(t("tasks.col.store"), [t("tasks.col.tills"), { class: "num" }], [t("tasks.col.wan"), { class: "num" }],
        [t("tasks.col.lan"), { class: "num" }], [t("tasks.wan.ratio"), { class: "num" }]),
      storesBody)),
    h("p", { class: "hint" }, t("tasks.wan.hint"), " ", wanBtn),
    wanWrap);
  const tillsPanel = h("div", null,
    h("div", { class: "card" },
      h("div", { class: "row" }, h("label", { class: "f" }, t("tasks.col.state"), stateF), h("label", { class: "f" }, t("tasks.col.store"), storeF),
        h("label", { class: "f" }, t("tasks.targets.search"), textF),
        operator ? [
          h("button", { class: "small", onclick: () => { visibleTargets().forEach((x) => selected.add(x.device)); renderTargets(); } },
            t("tasks.targets.tick_shown")),
          h("button", { class: "small", onclick: () => { selected.clear(); renderTargets(); } }, t("tasks.targets.untick_all"))] : null),
      h("div", { class: "tablewrap", style: "margin-top: 10px" }, h("table", { class: "dense", "data-test": "targets-table" },
        headRow(operator ? h("span", { class: "muted", title: t("tasks.targets.tick_title") }, "✓") : null, t("tasks.col.device"),
          t("tasks.col.store"), t("tasks.col.state"), t("tasks.col.progress"),
          [t("tasks.col.traffic"), { class: "num hide-narrow" }], [t("tasks.col.error"), { class: "errcol" }], t("tasks.col.log"), t("tasks.col.time")),
        targetsBody)),
      targetsNote),
    operator ? h("div", { class: "card" },
      h("h2", null, t("tasks.to_group.title")),
      h("div", { class: "row" }, h("label", { class: "f" }, t("tasks.to_group.name"), groupName)),
      h("div", { class: "row" }, failedBtn, h("label", { class: "inline" }, withDeclined, t("tasks.to_group.also_declined"))),
      h("div", { class: "row" }, selectedBtn, h("span", { class: "small" }, t("tasks.to_group.ticked_count"), " ", selCount)),
      groupMsg,
      h("p", { class: "hint" }, t("tasks.to_group.hint"))) : null);
  const tabs = tabBar("task-tabs", t("tasks.tab.label"), [
    { key: "tills", label: t("tasks.tab.tills"), panel: tillsPanel },
    { key: "stores", label: t("tasks.tab.stores"), panel: storesPanel },
    { key: "windows", label: t("tasks.tab.windows"), panel: windowsPanel },
  ]);

  append(root, head, summary, tabs.bar, tillsPanel, storesPanel, windowsPanel);

  function renderHead() {
    const x = task;
    morph(head, h("div", null, heading(t("tasks.detail.title_id", { id: x.id }), kindBadge(x.kind), statusBadge(x.status, x),
      h("a", { href: "#tasks", class: "small" }, t("tasks.detail.back")))));
    const c = taskCounts(x);
    morph(summary, h("div", { class: "card", "data-test": "task-summary" },
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
      operator ? h("div", { class: "row", style: "margin-top: 12px" }, taskActions(x, (verb) => {
        if (verb === "delete") go("tasks"); else refreshNow();
      })) : null,
      c.failed ? h("p", { class: "hint err" }, t("tasks.detail.failed_hint", { n: c.failed })) : null,
      c.skipped ? h("p", { class: "hint" }, t("tasks.detail.skipped_hint", { n: c.skipped, reason: skipReason(x) })) : null,
      x.unreachable ? h("p", { class: "hint" }, t("tasks.detail.unreachable_hint", { n: x.unreachable })) : null));
    tabs.count("tills", x.target_details.length);
    tabs.count("stores", x.stores.length);
    tabs.show("windows", (x.windows || []).length > 0);
  }

  /** Each store's current or next window, for a task with a window. */
  function renderWindows() {
    const ws = task.windows || [];
    if (!ws.length) return;
    fillRows(windowsBody, ws, (w) => w.store_id, (w) => h("tr", null,
      h("td", { title: w.store_id }, storeLabel(w.store_id)),
      h("td", { class: "small hide-narrow" }, w.time_zone),
      h("td", { class: "nowrap" }, wallTime(w.start_local)),
      h("td", { class: "small" }, w.start ? `${wallTime(w.start)} – ${wallTime(w.end).slice(11)}` : "–"),
      h("td", null, w.open ? badge(t("tasks.windows.open"), "b-green") : badge(t("tasks.windows.closed"), "b-gray"))), 5, "");
    fill(windowsNote, t("tasks.windows.note", { window: windowText(task.window) }));
  }

  function renderStores() {
    fillRows(storesBody, task.stores, (s) => s.store_id, (s) => {
      const ratio = Number(s.wan_ratio || 0);
      const colour = ratio <= 1.05 ? "b-green" : ratio <= 1.5 ? "b-amber" : "b-red";
      return h("tr", null, h("td", { title: s.store_id }, storeLabel(s.store_id)), h("td", { class: "num" }, s.tills),
        h("td", { class: "num nowrap" }, fmtBytes(s.wan_bytes)), h("td", { class: "num nowrap" }, fmtBytes(s.lan_bytes)),
        h("td", { class: "num" }, s.wan_bytes ? badge(fmtFixed(ratio, 2) + "×", colour) : none()));
    }, 5, t("tasks.wan.no_tills"));
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
    // The Error column only while a listed till has an error.
    targetsBody.parentElement.classList.toggle("has-errors", shown.slice(0, limit).some((x) => x.error));
    const rows = [];
    for (const x of shown.slice(0, limit)) {
      rows.push({ key: x.device, x });
      if (openLogs.has(x.device)) rows.push({ key: x.device + "/log", x, log: true });
    }
    fillRows(targetsBody, rows, (r) => r.key, (r) => (r.log ? logRow(r.x) : targetRow(r.x)), COLS,
      t(task.target_details.length ? "tasks.targets.no_match" : task.status === "scheduled" ? "tasks.targets.at_start" : "tasks.targets.none"));
    const more = shown.length > limit;
    morph(targetsNote, h("div", { class: "hint" },
      t(more ? "tasks.targets.shown_first" : "tasks.targets.shown", { shown: shown.length, total: task.target_details.length, limit }),
      more ? [" ", h("button", { class: "link", onclick: () => { limit += 1000; renderTargets(); } }, t("core.btn.show_more"))] : null));
    selCount.textContent = String(selected.size);
  }

  /** The expanded logs of a till: earlier attempts first, then the current one. */
  function logRow(x) {
    const earlier = (x.attempts || []).map((a) => h("div", { style: "margin-bottom: 8px" },
      h("div", { class: "small" }, t("tasks.log.attempt", { n: a.attempt }), " ", targetBadge(a.state), " ", timeEl(a.finished, true),
        a.error ? h("span", { class: "err" }, " " + a.error) : null),
      a.log_tail ? h("pre", { class: "log" }, a.log_tail) : null));
    return h("tr", { "data-test": "target-log" }, h("td", { colspan: COLS }, earlier,
      earlier.length ? h("div", { class: "small" }, t("tasks.log.current")) : null,
      h("pre", { class: "log" }, x.log_tail || t("tasks.log.none"))));
  }

  function targetRow(x) {
    const size = Number(task.package_size || 0);
    const frac = size > 0 ? Math.min(1, x.bytes_done / size) : Number(x.progress || 0);
    const ticked = selected.has(x.device);
    // The box's stamp follows its state, so that "Untick all" replaces a box
    // the user ticked (morph leaves a box the user changed alone).
    const box = operator ? h("input", { type: "checkbox", checked: ticked, "data-h": ticked ? "1" : "0",
      "aria-label": t("tasks.targets.tick_label", { name: x.name || x.device }),
      onchange: (e) => {
        const b = e.currentTarget;
        if (b.checked) selected.add(x.device); else selected.delete(x.device);
        b.setAttribute("data-h", b.checked ? "1" : "0");
        selCount.textContent = String(selected.size);
      } }) : null;
    const logBtn = x.log_tail || (x.attempts && x.attempts.length)
      ? h("button", { class: "small", "aria-expanded": openLogs.has(x.device) ? "true" : "false", "data-test": "target-log-toggle",
        onclick: () => {
          if (openLogs.has(x.device)) openLogs.delete(x.device); else openLogs.add(x.device);
          renderTargets();
        } }, t(openLogs.has(x.device) ? "tasks.log.hide" : "tasks.log.show"))
      : none();
    return h("tr", { "data-test": "target-row", "data-state": x.state },
      operator ? h("td", null, box) : null,
      h("td", { class: "devcell" },
        h("div", null, deviceLink(x.device, x.name || "–"), x.number != null ? h("span", { class: "muted" }, " #" + x.number) : null),
        h("div", { class: "small" }, guidEl(x.device))),
      h("td", { title: x.store_id || null }, storeLabel(x.store_id)),
      h("td", null, targetBadge(x.state),
        x.state === "skipped" ? h("div", { class: "skip-note", "data-test": "skip-reason" }, skipReason(task)) : null,
        x.unreachable ? [" ", h("span", { class: "badge b-gray", title: t("tasks.targets.last_heard", { ago: fmtAgo(x.last_seen) }) },
          t("tasks.targets.unreachable"))] : null,
        task.kind !== "download" && !x.install_permit && ["pending", "downloading", "downloaded"].includes(x.state)
          ? h("div", { class: "small muted nowrap" }, t("tasks.targets.waiting_permit")) : null,
        x.retries ? h("div", { class: "small muted nowrap" }, t("tasks.targets.retry", { n: x.retries, max: task.install_retries }),
          x.retry_at ? [", ", t("tasks.targets.next_retry"), " ", timeEl(x.retry_at, true)] : null) : null),
      h("td", null, h("div", { class: "bar", style: "width: 90px", title: t("tasks.targets.bytes_of", { done: fmtBytes(x.bytes_done), size: fmtBytes(size) }) },
        segment(frac, 1, x.state === "failed" ? "r" : frac >= 1 ? "g" : "b")),
      h("div", { class: "small muted nowrap" }, `${(frac * 100).toFixed(0)}% · ${fmtBytes(x.bytes_done)}`)),
      h("td", { class: "num nowrap hide-narrow small" }, h("div", { title: t("tasks.col.wan") }, t("tasks.targets.wan", { size: fmtBytes(x.wan_bytes) })),
        h("div", { class: "muted", title: t("tasks.col.lan") }, t("tasks.targets.lan", { size: fmtBytes(x.lan_bytes) }))),
      h("td", { class: "small err wrap-any errcell errcol" }, x.error || ""),
      h("td", null, logBtn),
      h("td", { class: "small nowrap" },
        x.started ? h("div", null, t("tasks.targets.started_at"), " ", timeEl(x.started, true)) : null,
        x.finished ? h("div", null, t("tasks.targets.finished_at"), " ", timeEl(x.finished, true))
          : h("div", { class: "muted" }, t("tasks.targets.updated_at"), " ", timeEl(x.updated, true))));
  }

  const self = {
    interval: 2000,
    /** This task's own changes and its tills' progress, and its tills' device changes. */
    wants(c) {
      const mine = c.kind === "task" || c.kind === "target" ? c.task_id === id : c.kind === "device" ? guids.has(c.guid) : false;
      return mine && live.wants();
    },
    async refresh() {
      live.started();
      // Store and group names; reloaded every 15th refresh.
      if (storesTick++ % 15 === 0) await Promise.all([loadStores(), loadGroups()]);
      try {
        task = await api("GET", `/api/v1/tasks/${id}`);
      } catch (e) {
        if (e.status !== 404) throw e;
        self.interval = 0; // deleted: stop polling
        fill(root, heading(t("tasks.detail.title_id", { id })), h("div", { class: "card err" }, t("tasks.detail.gone", { message: e.message })),
          h("a", { href: "#tasks" }, t("tasks.detail.back")));
        return;
      }
      guids = new Set(task.target_details.map((x) => x.device));
      renderHead();
      renderWindows();
      renderStores();
      renderTargets();
    },
  };
  return self;
}
