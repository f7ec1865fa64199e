/*
 * Tasks: the New task form and the task list.
 */
import { h, append, fill, setOptions, badge, headRow, emptyRow } from "../dom.js";
import { t, fmtTime } from "../i18n.js";
import { api } from "../api.js";
import { act, toast, refreshNow, heading, go } from "../app.js";
import { cache, loadPackages, loadGroups, loadStores, prefill } from "../data.js";
import {
  STATUS_LABEL, labelOf, kindBadge, statusBadge, timeEl, progressEl, taskActions, packageOptions, groupOptions, intOf, pager,
} from "../widgets.js";
import { activationPicker, windowPicker } from "../pickers.js";

/** Creates a task after confirming the dangerous cases; resolves with it or undefined. */
async function createTask(button, input) {
  const g = cache.groups.find((x) => x.id === input.group_id);
  const p = cache.packages.find((x) => x.package_id === input.package_id);
  if (input.kind === "forced_update") {
    const when = input.activate_at ? t("tasks.confirm.forced_at", { time: fmtTime(input.activate_at) }) : t("tasks.confirm.forced_now");
    if (!confirm(t("tasks.confirm.forced", { package: p ? p.name + " " + p.version : t("tasks.confirm.the_package"),
      group: g ? g.name : input.group_id, n: g ? g.member_count : "?", when }))) return undefined;
  }
  return act(button, t("tasks.action.create"), async () => {
    const task = await api("POST", "/api/v1/tasks", { body: input });
    toast("ok", t("tasks.toast.created", { id: task.id, status: labelOf(STATUS_LABEL, task.status) }));
    return task;
  });
}

/** The Tasks page. */
export function tasksView(root) {
  const kind = h("select", null, h("option", { value: "download" }, t("tasks.new.kind_download")),
    h("option", { value: "update", selected: true }, t("tasks.new.kind_update")),
    h("option", { value: "forced_update" }, t("tasks.new.kind_forced")));
  const pkg = h("select");
  const group = h("select");
  const rollback = h("input", { type: "checkbox" });
  const when = activationPicker();
  const win = windowPicker();
  const perStore = h("input", { type: "number", min: 1, step: 1, placeholder: t("tasks.new.per_store_placeholder"), style: "width: 130px" });
  const retries = h("input", { type: "number", min: 0, max: 10, step: 1, placeholder: "0", style: "width: 90px" });
  const formMsg = h("div", { class: "small err" });
  const run = h("button", { class: "primary", onclick: submit }, t("tasks.new.run"));
  const statusFilter = h("select", { onchange: () => { page = 1; refreshNow(); } },
    h("option", { value: "" }, t("tasks.filter.all_statuses")),
    Object.keys(STATUS_LABEL).map((s) => h("option", { value: s }, t(STATUS_LABEL[s]))));
  const sort = h("select", { onchange: () => { page = 1; refreshNow(); } },
    h("option", { value: "created" }, t("tasks.sort.created")), h("option", { value: "status" }, t("tasks.sort.status")),
    h("option", { value: "activate_at" }, t("tasks.sort.activate_at")), h("option", { value: "id" }, t("tasks.sort.id")));
  const body = h("tbody");
  const pagerEl = h("div", { class: "pager" });
  let page = 1, ticks = 0;
  const PER_PAGE = 50;

  append(root,
    heading(t("tasks.title")),
    h("div", { class: "card" },
      h("h2", null, t("tasks.new.title")),
      h("div", { class: "row" },
        h("label", { class: "f" }, t("tasks.col.kind"), kind),
        h("label", { class: "f" }, t("tasks.col.package"), pkg),
        h("label", { class: "f" }, t("tasks.col.group"), group)),
      h("div", { class: "row" }, when.el,
        h("label", { class: "inline", title: t("tasks.new.rollback_title") }, rollback, t("tasks.rollback")),
        run, formMsg),
      h("div", { class: "row" }, win.el,
        h("label", { class: "f", title: t("tasks.new.per_store_title") }, t("tasks.new.per_store"), perStore),
        h("label", { class: "f" }, t("tasks.new.retries"), retries)),
      h("p", { class: "hint" }, t("tasks.new.hint"))),
    h("div", { class: "card" },
      h("div", { class: "row" }, h("label", { class: "f" }, t("tasks.col.status"), statusFilter),
        h("label", { class: "f" }, t("tasks.filter.sort"), sort),
        h("span", { class: "hint right" }, t("tasks.list.refresh_note"))),
      h("div", { class: "tablewrap", style: "margin-top: 10px" }, h("table", null,
        headRow(["#", { class: "num" }], t("tasks.col.kind"), t("tasks.col.package"), t("tasks.col.group"), t("tasks.col.status"),
          t("tasks.col.progress"), t("tasks.col.created"), t("tasks.col.activation"), ""),
        body)),
      pagerEl));

  async function submit() {
    formMsg.textContent = "";
    const input = { kind: kind.value, package_id: pkg.value, group_id: Number(group.value) };
    try {
      if (!pkg.value) throw new Error(t("tasks.new.need_package"));
      if (!group.value) throw new Error(t("tasks.new.need_group"));
      const activate_at = when.get(), w = win.get();
      const most = intOf(perStore, t("tasks.new.per_store_what"), 1, 100000), tries = intOf(retries, t("tasks.new.retries_what"), 0, 10);
      if (activate_at) input.activate_at = activate_at;
      if (w) input.window = w;
      if (most !== undefined) input.max_installing_per_store = most;
      if (tries !== undefined) input.install_retries = tries;
    } catch (e) { formMsg.textContent = e.message; return; }
    if (rollback.checked) input.rollback = true;
    const task = await createTask(run, input);
    if (task) { page = 1; refreshNow(); }
  }

  async function loadFormData() {
    await Promise.all([loadPackages(), loadGroups(), loadStores()]);
    when.reload();
    // Placeholders: nothing is preselected, so "Run task" never targets All by accident.
    setOptions(pkg, packageOptions(), t(cache.packages.length ? "tasks.new.choose_package" : "tasks.new.no_packages"));
    setOptions(group, groupOptions(), t("tasks.new.choose_group"));
    if (prefill.package_id) { pkg.value = prefill.package_id; prefill.package_id = null; }
  }

  function activation(x) {
    return [x.activated ? [t("tasks.list.started"), " ", timeEl(x.activated, true)]
      : x.activate_at ? [t("tasks.list.at"), " ", timeEl(x.activate_at, true)] : t("tasks.list.immediately"),
    x.completed ? h("div", null, t("tasks.list.done"), " ", timeEl(x.completed, true)) : null];
  }

  function render(p) {
    const rows = p.items.map((x) => h("tr", null,
      h("td", { class: "num" }, h("a", { href: "#task/" + x.id }, "#" + x.id)),
      h("td", null, kindBadge(x.kind), x.rollback ? [" ", badge(t("tasks.rollback"), "b-amber")] : null),
      h("td", null, h("b", null, x.package_name), " ", h("span", { class: "mono" }, x.package_version)),
      h("td", null, x.group_name, x.group_id == null ? h("span", { class: "muted small" }, " " + t("tasks.group_deleted")) : null),
      h("td", null, statusBadge(x.status), x.attempt > 1 ? h("div", { class: "small muted" }, t("tasks.list.attempt", { n: x.attempt })) : null),
      h("td", null, progressEl(x)),
      h("td", { class: "small" }, timeEl(x.created, true)),
      h("td", { class: "small" }, activation(x)),
      h("td", null, h("div", { class: "actions" }, h("button", { class: "small", onclick: () => go("task/" + x.id) }, t("tasks.btn.details")),
        taskActions(x, refreshNow)))));
    fill(body, rows.length ? rows : emptyRow(9, t("tasks.list.empty")));
    const pages = Math.max(1, Math.ceil(p.total / PER_PAGE));
    pager(pagerEl, page, pages, t("tasks.count", { n: p.total }), (to) => { page = to; refreshNow(); });
  }

  return {
    interval: 2000,
    async refresh() {
      // The form's lists change rarely: reload them every 5th refresh.
      if (ticks++ % 5 === 0) await loadFormData();
      const p = await api("GET", "/api/v1/tasks", { query: { status: statusFilter.value, sort: sort.value, page, per_page: PER_PAGE } });
      if (p.items.length === 0 && page > 1 && p.total > 0) { page = Math.ceil(p.total / PER_PAGE); return; }
      render(p);
    },
  };
}
