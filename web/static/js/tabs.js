/*
 * In-page tabs: a sticky bar of tab buttons (ARIA tabs pattern) showing one
 * panel at a time. Tab moves into the bar (to the selected tab) and on into
 * its panel; arrow keys, Home and End move between the tabs.
 */
import { h } from "./dom.js";

/**
 * Builds a tab bar for existing panel elements. id: a prefix for the
 * elements' ids; label: the bar's accessible name; tabs: [{ key, label,
 * panel }], the first one selected. Returns { bar, select(key),
 * show(key, visible), count(key, n) }: count() shows a number after a tab's
 * label, show() hides or shows a tab (a hidden selected tab gives way to the
 * first visible one).
 */
export function tabBar(id, label, tabs) {
  const items = tabs.map((x) => {
    const count = h("span", { class: "count" });
    const button = h("button", { role: "tab", id: `${id}-${x.key}`, "aria-controls": `${id}-${x.key}-panel`,
      "data-test": "tab-" + x.key, onclick: () => select(x.key) }, x.label, count);
    x.panel.id = `${id}-${x.key}-panel`;
    x.panel.setAttribute("role", "tabpanel");
    x.panel.setAttribute("aria-labelledby", button.id);
    return { ...x, button, count, visible: true };
  });
  const bar = h("div", { class: "tabs", role: "tablist", "aria-label": label, "data-test": id, onkeydown: keys },
    items.map((x) => x.button));
  let current = null;

  function select(key, focus) {
    const it = items.find((x) => x.key === key && x.visible) || items.find((x) => x.visible);
    current = it.key;
    for (const x of items) {
      const on = x === it;
      x.button.setAttribute("aria-selected", on ? "true" : "false");
      x.button.tabIndex = on ? 0 : -1;
      x.panel.hidden = !on;
    }
    if (focus) it.button.focus();
  }

  function keys(ev) {
    const shown = items.filter((x) => x.visible);
    const i = shown.findIndex((x) => x.key === current);
    const to = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: shown.length - 1 }[ev.key];
    if (to === undefined) return;
    ev.preventDefault();
    select(shown[(to + shown.length) % shown.length].key, true);
  }

  function show(key, visible) {
    const it = items.find((x) => x.key === key);
    if (!it || it.visible === visible) return;
    it.visible = visible;
    it.button.hidden = !visible;
    if (!visible) it.panel.hidden = true;
    if (current === key && !visible) select(null);
  }

  function count(key, n) {
    const it = items.find((x) => x.key === key);
    if (it) it.count.textContent = n == null ? "" : String(n);
  }

  select(items[0].key);
  return { bar, select, show, count };
}
