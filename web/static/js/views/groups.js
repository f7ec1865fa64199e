/*
 * Groups: the built-in and custom groups (rows updated in place), and the
 * create/edit form with a member picker (operators; Escape closes it).
 * #groups/<id> opens the editor of that group.
 */
import { h, append, fill, setOptions, badge, headRow, emptyRow, fillRows, rowKey } from "../dom.js";
import { t } from "../i18n.js";
import { api } from "../api.js";
import { act, toast, refreshNow, heading, canOperate } from "../app.js";
import { cache, loadGroups, loadStores, fetchAllDevices } from "../data.js";
import { labelOf } from "../widgets.js";
import { liveThrottle } from "../live.js";

/** The kinds of built-in groups. */
const BUILTIN_LABEL = { all: "groups.kind.all", even: "groups.kind.even", odd: "groups.kind.odd" };

/** The Groups page; arg: a group id whose editor opens at once. */
export function groupsView(root, arg) {
  const operator = canOperate();
  const body = h("tbody", { "data-test": "groups-rows" });
  const editor = h("div", { class: "card", hidden: true, "data-dialog": "group-editor", "data-test": "group-editor" });
  const live = liveThrottle(2000, body);
  let byId = new Map(), pending = arg && /^\d+$/.test(arg) ? Number(arg) : null;
  append(root,
    heading(t("groups.title"), operator ? h("button", { class: "primary", "data-test": "group-create", onclick: () => openEditor(null) },
      t("groups.btn.create")) : null),
    h("div", { class: "card" },
      h("div", { class: "tablewrap" }, h("table", null,
        headRow(t("groups.col.name"), t("groups.col.description"), t("groups.col.kind"), [t("groups.col.members"), { class: "num" }], operator ? "" : null),
        body)),
      h("p", { class: "hint" }, t("groups.hint"))),
    editor);

  /** Deletes the group of the row (looked up at click time), after asking. */
  function remove(e) {
    const g = byId.get(Number(rowKey(e)));
    if (!g || !confirm(t("groups.confirm.delete_n", { name: g.name, n: g.member_count }))) return;
    act(e.currentTarget, t("groups.action.delete"), async () => {
      await api("DELETE", `/api/v1/groups/${g.id}`);
      toast("ok", t("groups.toast.deleted", { name: g.name }));
      refreshNow();
    });
  }

  function render() {
    byId = new Map(cache.groups.map((g) => [g.id, g]));
    fillRows(body, cache.groups, (g) => g.id, (g) => h("tr", { "data-test": "group-row" },
      h("td", null, h("b", null, g.name)),
      h("td", { class: "small wrap-any" }, g.description || h("span", { class: "muted" }, "–")),
      h("td", null, g.builtin ? badge(t("groups.kind.builtin", { kind: labelOf(BUILTIN_LABEL, g.kind) }), "b-gray")
        : badge(t("groups.kind.custom"), "b-blue")),
      h("td", { class: "num" }, g.member_count),
      operator ? h("td", null, g.builtin ? h("span", { class: "muted small" }, t("groups.protected")) : h("div", { class: "actions" },
        h("button", { class: "small", "data-test": "group-edit", onclick: (e) => openEditor(byId.get(Number(rowKey(e)))) }, t("core.btn.edit")),
        h("button", { class: "small danger", "data-test": "group-delete", onclick: remove }, t("core.btn.delete")))) : null),
    operator ? 5 : 4, t("groups.empty"));
    if (pending != null) {
      const g = byId.get(pending);
      pending = null;
      if (g && operator && !g.builtin) openEditor(g);
    }
  }

  function closeEditor() {
    editor.hidden = true;
    editor.replaceChildren();
  }

  /** Shows the create/edit form; group null creates a new one. */
  async function openEditor(group) {
    if (!group && group !== null) return;
    editor.hidden = false;
    fill(editor, h("div", { class: "muted" }, t("groups.editor.loading")));
    let devices, members = new Set();
    try {
      const loads = [fetchAllDevices({}), loadStores()];
      if (group) loads.push(api("GET", `/api/v1/groups/${group.id}`));
      const res = await Promise.all(loads);
      devices = res[0];
      if (group) members = new Set(res[2].members || []);
    } catch (e) {
      fill(editor, h("div", { class: "err" }, t("groups.editor.load_failed", { message: e.message })));
      return;
    }
    buildEditor(editor, group, devices, members, () => { closeEditor(); refreshNow(); }, closeEditor);
    editor.scrollIntoView({ behavior: "smooth", block: "start" });
    const first = editor.querySelector("input");
    if (first) first.focus({ preventScroll: true });
  }

  return {
    interval: 15000,
    /** Groups made, changed or deleted. */
    wants: (c) => c.kind === "group" && live.wants(),
    async refresh() { live.started(); await loadGroups(); render(); },
  };
}

/** The group form with a member picker (filter by store and text, tick
 *  tills); Enter in the name saves, Escape or Cancel closes (cancel()). */
function buildEditor(editor, group, devices, members, done, cancel) {
  const name = h("input", { type: "text", value: group ? group.name : "", maxlength: 64, size: 30, placeholder: t("groups.editor.name_placeholder") });
  const desc = h("textarea", { maxlength: 1024, cols: 50, placeholder: t("groups.editor.description_placeholder") });
  desc.value = group ? group.description : "";
  const store = h("select", { onchange: () => renderPicker() });
  setOptions(store, cache.stores.map((s) => [s.id, s.name + " (" + s.id + ")"]), t("core.all_stores"));
  const text = h("input", { type: "search", placeholder: t("groups.editor.filter_placeholder"), oninput: () => renderPicker(),
    onkeydown: (e) => { if (e.key === "Enter") e.preventDefault(); } }); // Enter filters, it does not save
  const onlySel = h("input", { type: "checkbox", onchange: () => renderPicker() });
  const count = h("b");
  const pickBody = h("tbody");
  const msg = h("div", { class: "err small" });
  const LIST_MAX = 2000;
  let visible = [];

  function renderPicker() {
    const q = text.value.trim().toLowerCase();
    visible = devices.filter((d) => (!store.value || d.store_id === store.value) &&
      (!onlySel.checked || members.has(d.guid)) &&
      (!q || [d.name, d.guid, d.number, d.store_name].some((f) => f != null && String(f).toLowerCase().includes(q))));
    count.textContent = String(members.size);
    const items = visible.slice(0, LIST_MAX);
    if (visible.length > LIST_MAX) items.push(null); // the "more not listed" line
    fillRows(pickBody, items, (d) => (d ? d.guid : "more"), (d) => {
      if (!d) return emptyRow(6, t("groups.editor.more", { hidden: visible.length - LIST_MAX, n: visible.length }), "muted small");
      const ticked = members.has(d.guid);
      // The box's stamp follows its state, so that Select/Unselect shown
      // replaces a box the user ticked (morph leaves a changed box alone).
      const box = h("input", { type: "checkbox", checked: ticked, "data-h": ticked ? "1" : "0",
        "aria-label": t("tasks.targets.tick_label", { name: d.name || d.guid }),
        onchange: (e) => {
          const b = e.currentTarget;
          if (b.checked) members.add(d.guid); else members.delete(d.guid);
          b.setAttribute("data-h", b.checked ? "1" : "0");
          count.textContent = String(members.size);
        } });
      return h("tr", null, h("td", null, box), h("td", null, d.store_name || d.store_id || "–"),
        h("td", { class: "num" }, d.number == null ? "–" : d.number), h("td", null, d.name || "–"),
        h("td", { class: "guid guid-full" }, d.guid), h("td", null, d.status === "pending" ? badge(t("devices.approval.pending"), "b-amber") : ""));
    }, 6, t("devices.list.no_match"));
  }

  const save = h("button", { type: "submit", class: "primary", "data-test": "group-save" }, t(group ? "groups.btn.save" : "groups.btn.create_submit"));
  const submit = () => act(save, t(group ? "groups.action.save" : "groups.action.create"), async () => {
    msg.textContent = "";
    const body = { name: name.value.trim(), description: desc.value, members: [...members] };
    if (!body.name) { msg.textContent = t("groups.editor.name_required"); return; }
    try {
      if (group) await api("PATCH", `/api/v1/groups/${group.id}`, { body });
      else await api("POST", "/api/v1/groups", { body });
    } catch (e) {
      msg.textContent = e.message + " (" + e.code + ")";
      throw e;
    }
    toast("ok", t(group ? "groups.toast.saved" : "groups.toast.created", { name: body.name, n: body.members.length }));
    done();
  });

  fill(editor, h("form", { novalidate: true, onsubmit: (e) => { e.preventDefault(); submit(); } },
    h("h2", null, group ? t("groups.editor.edit_title", { name: group.name }) : t("groups.editor.new_title")),
    h("div", { class: "row" }, h("label", { class: "f" }, t("groups.col.name"), name), h("label", { class: "f" }, t("groups.col.description"), desc)),
    h("div", { class: "row" },
      h("label", { class: "f" }, t("devices.col.store"), store), h("label", { class: "f" }, t("groups.editor.filter"), text),
      h("label", { class: "inline" }, onlySel, t("groups.editor.only_selected")),
      h("button", { onclick: () => { visible.forEach((d) => members.add(d.guid)); renderPicker(); } }, t("groups.editor.select_shown")),
      h("button", { onclick: () => { visible.forEach((d) => members.delete(d.guid)); renderPicker(); } }, t("groups.editor.unselect_shown")),
      h("span", { class: "small" }, t("groups.editor.selected"), " ", count)),
    h("div", { class: "picker" }, h("table", null,
      headRow("", t("devices.col.store"), [t("devices.col.number"), { class: "num" }], t("devices.col.name"), t("devices.col.guid"), ""),
      pickBody)),
    h("div", { class: "row", style: "margin-top: 12px" }, save,
      h("button", { "data-close": true, "data-test": "group-cancel", title: t("core.btn.cancel_title"), onclick: cancel }, t("core.btn.cancel")), msg)));
  renderPicker();
}
