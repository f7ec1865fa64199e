/*
 * Tasks: the New task form and the task list.
 */
import { h, append, setOptions, badge, headRow, fillRows } from "../dom.js";
import { t, fmtTime } from "../i18n.js";
import { api } from "../api.js";
import { act, toast, refreshNow, heading, canOperate } from "../app.js";
import { cache, loadPackages, loadGroups, loadStores, prefill } from "../data.js";
import {
  STATUS_LABEL, KIND_LABEL, labelOf, kindBadge, statusBadge, timeEl, progressEl, taskActions, packageOptions, groupOptions, intOf, pager,
} from "../widgets.js";
import { activationPicker, windowPicker } from "../pickers.js";
import { liveThrottle } from "../live.js";

/** The question asked before an Update or Forced update task: what, on how
 *  many tills of which group, and when it starts. */
function createQuestion(input, p, g) {
  const params = {
    package: p ? p.name + " " + p.version : t("tasks.confirm.the_package"), group: g.name, n: g.member_count,
    when: input.activate_at ? t("tasks.confirm.starts_at", { time: fmtTime(input.activate_at) }) : t("tasks.confirm.starts_now"),
  };
  return t(input.kind === "forced_update" ? "tasks.confirm.create_forced" : "tasks.confirm.create_update", params) +
    (input.rollback ? "\n" + t("tasks.confirm.create_rollback") : "");
}

/** The Tasks page. */
export function tasksView(root) {
  const operator = canOperate();
  const kind = h("select", { "data-test": "new-task-kind" }, Object.keys(KIND_LABEL).map((k) => h("option", { value: k },
    t(k === "download" ? "tasks.new.kind_download" : k === "update" ? "tasks.new.kind_update" : "tasks.new.kind_forced"))));
  const pkg = h("select", { "data-test": "new-task-package" });
  const group = h("select", { "data-test": "new-task-group" });
  const rollback = h("input", { type: "checkbox", "data-test": "new-task-rollback" });
  const when = activationPicker();
  const win = windowPicker();
  const perStore = h("input", { type: "number", min: 1, step: 1, placeholder: t("tasks.new.per_store_placeholder"), style: "width: 130px" });
  const retries = h("input", { type: "number", min: 0, max: 10, step: 1, placeholder: "0", style: "width: 90px" });
  const formMsg = h("div", { class: "small err", role: "alert", "data-test": "new-task-message" });
  const run = h("button", { type: "submit", class: "primary", id: "new-task-submit", "data-test": "new-task-submit" }, t("tasks.new.run"));
  const statusFilter = h("select", { "data-test": "tasks-status-filter", onchange: () => { page = 1; refreshNow(); } },
    h("option", { value: "" }, t("tasks.filter.all_statuses")),
    Object.keys(STATUS_LABEL).map((s) => h("option", { value: s }, t(STATUS_LABEL[s]))));
  const sort = h("select", { onchange: () => { page = 1; refreshNow(); } },
    h("option", { value: "created" }, t("tasks.sort.created")), h("option", { value: "status" }, t("tasks.sort.status")),
    h("option", { value: "activate_at" }, t("tasks.sort.activate_at")), h("option", { value: "id" }, t("tasks.sort.id")));
  const body = h("tbody", { "data-test": "tasks-rows" });
  const pagerEl = h("div", { class: "pager" });
  const live = liveThrottle(1500, body);
  let page = 1, ticks = 0, formStale = true;
  const PER_PAGE = 50;

  const form = operator ? h("form", { class: "card", id: "new-task", "data-test": "new-task-form", novalidate: true,
    onsubmit: (e) => { e.preventDefault(); submit(); } },
  h("h2", null, t("tasks.new.title")),
  h("div", { class: "row" },
    h("label", { class: "f" }, t("tasks.col.kind"), kind),
    h("label", { class: "f" }, t("tasks.col.package"), pkg),
    h("label", { class: "f" }, t("tasks.col.group"), group)),
  h("div", { class: "row" }, when.el,
    h("label", { class: "inline", title: t("tasks.new.rollback_title") }, rollback, t("tasks.rollback"))),
  h("div", { class: "row" }, win.el,
    h("label", { class: "f", title: t("tasks.new.per_store_title") }, t("tasks.new.per_store"), perStore),
    h("label", { class: "f" }, t("tasks.new.retries"), retries)),
  h("div", { class: "row" }, run, formMsg),
  h("p", { class: "hint" }, t("tasks.new.hint"))) : null;

  append(root,
    heading(t("tasks.title")),
    form,
    h("div", { class: "card" },
      h("div", { class: "row" }, h("label", { class: "f" }, t("tasks.col.status"), statusFilter),
        h("label", { class: "f" }, t("tasks.filter.sort"), sort)),
      h("div", { class: "tablewrap", style: "margin-top: 10px" }, h("table", { "data-test": "tasks-table" },
        headRow(["#", { class: "num" }], t("tasks.col.kind"), t("tasks.col.package"), t("tasks.col.group"), t("tasks.col.status"),
          t("tasks.col.progress"), [t("tasks.col.created"), { class: "hide-narrow" }], [t("tasks.col.activation"), { class: "hide-narrow" }], ""),
        body)),
      pagerEl));

  /** Back to a blank form after a task was created. */
  function resetForm() {
    kind.value = "download";
    pkg.value = "";
    group.value = "";
    rollback.checked = false;
    perStore.value = "";
    retries.value = "";
    when.reset();
    win.reset();
  }

  async function submit() {
    formMsg.replaceChildren();
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
    // The group's size now (the cached list may be a little old).
    const g = await act(run, t("tasks.action.create"), () => api("GET", `/api/v1/groups/${input.group_id}`));
    if (!g) return;
    if (!g.member_count) {
      // A task for no till does nothing: refused, with the way to fill the group.
      formMsg.append(t("tasks.new.empty_group", { group: g.name }), " ",
        h("a", { href: "#groups/" + g.id, "data-test": "new-task-edit-group" },
          t(g.builtin ? "tasks.new.open_groups" : "tasks.new.edit_group", { group: g.name })));
      return;
    }
    const p = cache.packages.find((x) => x.package_id === input.package_id);
    if (input.kind !== "download" && !confirm(createQuestion(input, p, g))) return;
    const task = await act(run, t("tasks.action.create"), async () => {
      const made = await api("POST", "/api/v1/tasks", { body: input });
      toast("ok", t("tasks.toast.created", { id: made.id, status: labelOf(STATUS_LABEL, made.status) }));
      return made;
    });
    if (task) { resetForm(); page = 1; refreshNow(); }
  }

  async function loadFormData() {
    await Promise.all([loadPackages(), loadGroups(), loadStores()]);
    if (!operator) return;
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

  function row(x) {
    return h("tr", { "data-test": "task-row" },
      h("td", { class: "num" }, h("a", { href: "#task/" + x.id }, "#" + x.id)),
      h("td", null, kindBadge(x.kind), x.rollback ? [" ", badge(t("tasks.rollback"), "b-amber")] : null),
      h("td", null, h("b", null, x.package_name), " ", h("span", { class: "mono" }, x.package_version)),
      h("td", null, x.group_name, x.group_id == null ? h("span", { class: "muted small" }, " " + t("tasks.group_deleted")) : null),
      h("td", null, statusBadge(x.status, x), x.attempt > 1 ? h("div", { class: "small muted" }, t("tasks.list.attempt", { n: x.attempt })) : null),
      h("td", null, progressEl(x)),
      h("td", { class: "small hide-narrow" }, timeEl(x.created, true)),
      h("td", { class: "small hide-narrow" }, activation(x)),
      h("td", null, h("div", { class: "actions" },
        h("a", { href: "#task/" + x.id, class: "small", "data-test": "task-details" }, t("tasks.btn.details")),
        taskActions(x, refreshNow))));
  }

  function render(p) {
    fillRows(body, p.items, (x) => x.id, row, 9, t("tasks.list.empty"));
    const pages = Math.max(1, Math.ceil(p.total / PER_PAGE));
    pager(pagerEl, page, pages, t("tasks.count", { n: p.total }), (to) => { page = to; refreshNow(); });
  }

  return {
    interval: 2000,
    /** Tasks and their tills' progress; the form's lists on group and package changes. */
    wants(c) {
      if (c.kind === "group" || c.kind === "package") { formStale = true; return true; }
      return (c.kind === "task" || c.kind === "target") && live.wants();
    },
    async refresh() {
      live.started();
      // The form's lists change rarely: reloaded every 5th refresh or after a change.
      if (formStale || ticks++ % 5 === 0) { formStale = false; await loadFormData(); }
      const p = await api("GET", "/api/v1/tasks", { query: { status: statusFilter.value, sort: sort.value, page, per_page: PER_PAGE } });
      if (p.items.length === 0 && page > 1 && p.total > 0) { page = Math.ceil(p.total / PER_PAGE); return; }
      render(p);
    },
  };
}
