/*
 * Pure DOM helpers, with no texts of their own.
 *
 * The rule they keep: data from the API (device names, store addresses, error
 * messages, logs...) only ever reaches the page through textContent, text
 * nodes or attribute values; never through HTML parsing.
 */
import { syncRows } from "./morph.js";

/** Builds an element. props: class, text, on<event> (functions), value,
 *  checked/disabled/selected (properties), anything else as an attribute.
 *  Children: nodes, strings (as text), arrays, null/false (skipped).
 *  A <button> is type="button" unless props say otherwise (so that a button
 *  inside a form never submits it by accident). */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  if (tag === "button" && !(props && props.type)) el.type = "button";
  if (props) {
    for (const [k, v] of Object.entries(props)) {
      if (v == null || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "text") el.textContent = String(v);
      else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
      else if (k === "value") el.value = String(v);
      else if (k === "checked" || k === "disabled" || k === "selected") el[k] = true;
      else if (k.startsWith("on")) throw new Error("event handler must be a function: " + k); // i18n-ok: a programming error, never shown
      else el.setAttribute(k, v === true ? "" : String(v));
    }
  }
  append(el, children);
  return el;
}

/** Appends children (nodes, strings, nested arrays; null/false skipped). */
export function append(el, ...children) {
  for (const c of children.flat(Infinity)) {
    if (c == null || c === false) continue;
    el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** Replaces an element's content. */
export function fill(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** The first element matching a CSS selector. */
export const $ = (sel) => document.querySelector(sel);

/** A class name fragment from an API value (keeps only [a-z0-9_-]). */
export function cls(s) { return String(s == null ? "" : s).toLowerCase().replace(/[^a-z0-9_-]/g, ""); }

/** A badge: text (already translated, or API data) in a colour class. */
export function badge(text, colour) { return h("span", { class: "badge " + (colour || "b-gray") }, text); }

/** An online/offline dot. */
export function dot(on) { return h("span", { class: "dot" + (on ? " on" : "") }); }

/** A stacked bar segment of n out of total, with a colour class (g, b, a, r, s). */
export function segment(n, total, colour) {
  const s = h("span", { class: colour });
  s.style.width = (total > 0 ? 100 * n / total : 0) + "%";
  return s;
}

/** Fills a <select> with [value, label] pairs, keeping the current choice when
 *  it still exists; does nothing when the options did not change (so an open
 *  drop-down is not disturbed by a refresh). placeholder: the label of an
 *  empty-valued first option, if any. */
export function setOptions(select, pairs, placeholder) {
  const key = JSON.stringify([placeholder || null, pairs]);
  if (select.dataset.options === key) return;
  const keep = select.value;
  select.replaceChildren();
  if (placeholder) select.appendChild(h("option", { value: "" }, placeholder));
  for (const [v, label] of pairs) select.appendChild(h("option", { value: v }, label));
  if ([...select.options].some((o) => o.value === keep)) select.value = keep;
  select.dataset.options = key;
}

/** A table head row: each cell a text, or [text, props] for a cell with
 *  attributes (class "num", a title...). */
export function headRow(...cells) {
  return h("thead", null, h("tr", null, cells.map((c) => Array.isArray(c) ? h("th", c[1], c[0]) : h("th", null, c))));
}

/** A table body row with one cell spanning `span` columns, for empty states. */
export function emptyRow(span, text, klass) {
  return h("tr", null, h("td", { colspan: span, class: klass || "empty" }, text));
}

/** Updates a table body in place (morph.js syncRows): one row per item, keyed
 *  by keyOf(item); with no items, one row spanning `span` columns saying
 *  emptyText (klass: its class, default "empty"). */
export function fillRows(tbody, items, keyOf, renderRow, span, emptyText, klass) {
  if (items.length) return syncRows(tbody, items, keyOf, renderRow);
  return syncRows(tbody, [emptyText], () => "empty", () => emptyRow(span, emptyText, klass));
}

/** A label above a value, for the summary cards. */
export function kv(k, ...v) { return h("div", null, h("div", { class: "small muted" }, k), h("div", null, v)); }

/** The data-key of the row (or other keyed element) an event happened in;
 *  handlers of rows that morph keeps look their data up by it. */
export function rowKey(ev) {
  const el = ev.currentTarget.closest("[data-key]");
  return el ? el.getAttribute("data-key") : null;
}

/** A muted dash: no value. */
export function none(title) { return h("span", { class: "muted", title: title || null }, "–"); }
