/*
 * Till types: each type's autoUpdateTimeout (how long a till waits for the
 * cashier before installing an Update).
 */
import { h, append, fill, headRow } from "../dom.js";
import { t } from "../i18n.js";
import { api } from "../api.js";
import { act, toast, heading } from "../app.js";

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
  const body = h("tbody");
  const minutesInput = (value) => h("input", { type: "number", min: 0, max: MAX_MINUTES, step: 1, placeholder: t("tilltypes.never_placeholder"),
    style: "width: 110px", value });
  const newName = h("input", { type: "text", size: 18, maxlength: 64, placeholder: t("tilltypes.name_placeholder") });
  const newMin = minutesInput(null);
  const addBtn = h("button", { onclick: () => save(addBtn, newName.value.trim(), newMin) }, t("tilltypes.btn.set"));

  append(root, heading(t("tilltypes.title")),
    h("div", { class: "card" },
      h("div", { class: "tablewrap" }, h("table", null,
        headRow(t("tilltypes.col.type"), [t("tilltypes.col.tills"), { class: "num" }],
          [t("tilltypes.col.timeout"), { style: "text-transform: none" }], t("tilltypes.col.meaning"), ""),
        body)),
      h("p", { class: "hint" }, t("tilltypes.hint"))),
    h("div", { class: "card" }, h("h2", null, t("tilltypes.add.title")),
      h("div", { class: "row" }, h("label", { class: "f" }, t("tilltypes.add.type"), newName),
        h("label", { class: "f" }, t("tilltypes.add.minutes"), newMin), addBtn)));

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
    fill(body, list.map((x) => {
      const input = minutesInput(x.auto_update_timeout_minutes == null ? "" : x.auto_update_timeout_minutes);
      const btn = h("button", { class: "small", onclick: () => save(btn, x.name, input) }, t("core.btn.save"));
      input.addEventListener("keydown", (e) => { if (e.key === "Enter") save(btn, x.name, input); });
      return h("tr", null,
        h("td", null, x.name === "*" ? [h("b", { class: "mono" }, "*"), h("span", { class: "muted" }, " " + t("tilltypes.default"))]
          : h("b", null, x.name)),
        h("td", { class: "num" }, x.tills),
        h("td", null, input),
        h("td", { class: "small" }, meaning(x.auto_update_timeout_minutes)),
        h("td", null, btn));
    }));
  }

  // No automatic refresh: it would overwrite minutes being typed.
  return { interval: 0, async refresh() { render(await api("GET", "/api/v1/till-types")); } };
}
