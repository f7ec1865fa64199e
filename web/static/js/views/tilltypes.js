/*
 * Till types: each type's autoUpdateTimeout (how long a till waits for the
 * cashier before installing an Update). Rows update in place: minutes being
 * typed stay until saved. Operators change them; viewers read them.
 */
import { h, append, headRow, fillRows } from "../dom.js";
import { t } from "../i18n.js";
import { api } from "../api.js";
import { act, toast, heading, canOperate } from "../app.js";
import { liveThrottle } from "../live.js";

const MAX_MINUTES = 10080; // one week

/** What a timeout means for the till, in words. */
function meaning(m) {
  return m == null ? t("tilltypes.meaning.never") : m === 0 ? t("tilltypes.meaning.at_once") : t("tilltypes.meaning.after", { n: m });
}

/** Reads a minutes input: "" -> null (never ask), else a whole number 0..MAX_MINUTES; throws otherwise. */
function minutesOf(input) {
  const v = input.value.trim();
  if (v === "") return null;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > MAX_MINUTES) throw new Error(t("tilltypes.error.minutes", { max: MAX_MINUTES }));
  return n;
}

/** The Till types page. */
export function tillTypesView(root) {
  const operator = canOperate();
  const body = h("tbody", { "data-test": "tilltypes-rows" });
  const live = liveThrottle(2000, body);
  const minutesInput = (value, label) => h("input", { type: "number", min: 0, max: MAX_MINUTES, step: 1, placeholder: t("tilltypes.never_placeholder"),
    style: "width: 110px", value, disabled: !operator, "aria-label": label });
  const newName = h("input", { type: "text", size: 18, maxlength: 64, placeholder: t("tilltypes.name_placeholder") });
  const newMin = minutesInput(null);
  const addBtn = h("button", { type: "submit", "data-test": "tilltype-set" }, t("tilltypes.btn.set"));

  append(root, heading(t("tilltypes.title")),
    h("div", { class: "card" },
      h("div", { class: "tablewrap" }, h("table", null,
        headRow(t("tilltypes.col.type"), [t("tilltypes.col.tills"), { class: "num" }],
          [t("tilltypes.col.timeout"), { style: "text-transform: none" }], t("tilltypes.col.meaning"), operator ? "" : null),
        body)),
      h("p", { class: "hint" }, t("tilltypes.hint"))),
    operator ? h("form", { class: "card", novalidate: true, onsubmit: (e) => { e.preventDefault(); save(addBtn, newName.value.trim(), newMin); } },
      h("h2", null, t("tilltypes.add.title")),
      h("div", { class: "row" }, h("label", { class: "f" }, t("tilltypes.add.type"), newName),
        h("label", { class: "f" }, t("tilltypes.add.minutes"), newMin), addBtn)) : null);

  async function save(button, name, input) {
    let minutes;
    try {
      if (!name) throw new Error(t("tilltypes.error.name"));
      minutes = minutesOf(input);
    } catch (e) { toast("error", e.message); return; }
    const list = await act(button, t("tilltypes.action.save"), () =>
      api("PUT", `/api/v1/till-types/${encodeURIComponent(name)}`, { body: { auto_update_timeout_minutes: minutes } }));
    if (list) { toast("ok", t("tilltypes.toast.saved", { name, meaning: meaning(minutes) })); render(list); }
  }

  function render(list) {
    // A row's controls are its own: morph keeps the live ones (and their
    // listeners, which refer to themselves), so a minutes value being typed stays.
    fillRows(body, list, (x) => x.name, (x) => {
      const input = minutesInput(x.auto_update_timeout_minutes == null ? "" : x.auto_update_timeout_minutes,
        t("tilltypes.minutes_label", { name: x.name }));
      const btn = operator ? h("button", { class: "small", "data-test": "tilltype-save", onclick: () => save(btn, x.name, input) }, t("core.btn.save")) : null;
      if (operator) input.addEventListener("keydown", (e) => { if (e.key === "Enter") save(btn, x.name, input); });
      return h("tr", { "data-test": "tilltype-row" },
        h("td", null, x.name === "*" ? [h("b", { class: "mono" }, "*"), h("span", { class: "muted" }, " " + t("tilltypes.default"))]
          : h("b", null, x.name)),
        h("td", { class: "num" }, x.tills),
        h("td", null, input),
        h("td", { class: "small" }, meaning(x.auto_update_timeout_minutes)),
        operator ? h("td", null, btn) : null);
    }, operator ? 5 : 4, t("tilltypes.empty"));
  }

  return {
    interval: 30000,
    /** A type's settings changed (here or elsewhere). */
    wants: (c) => c.kind === "till_type" && live.wants(),
    async refresh() { live.started(); render(await api("GET", "/api/v1/till-types")); },
  };
}
