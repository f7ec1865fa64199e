/**
 * In-place DOM updates that keep focus, selection and scroll.
 *
 * A view builds fresh nodes with h() as usual and hands them to morph() or
 * syncRows() instead of fill(): the live nodes are changed only where they
 * differ, so a focused button, a half-typed input or an open drop-down in a
 * refreshed area stays as it is.
 *
 * THE RULE FOR EVENT HANDLERS (read this before using morph):
 *
 *   morph never copies event listeners (addEventListener cannot be read back).
 *   A live element that morph keeps keeps ITS OLD listeners; the fresh
 *   element's listeners are thrown away. Therefore:
 *
 *   1. A handler must not close over data that can change between refreshes.
 *      It looks its data up at event time by the element's key, e.g.
 *        onclick: (e) => approve(byGuid.get(e.currentTarget.closest("[data-key]").dataset.key))
 *      where byGuid is a Map the view refills on every refresh. A handler
 *      that closes over nothing but the key (which never changes for a keyed
 *      row) is fine as it is.
 *   2. Escape hatch: give the element a `data-h` attribute (a "stamp": any
 *      string that changes whenever the handler's captured data changes,
 *      e.g. `${d.status}/${d.version}`). When the stamps of the live and the
 *      fresh element differ, morph REPLACES the element (fresh listeners, but
 *      focus inside it is lost); when they are equal it is kept and morphed.
 *
 *   Elements of a different tag (or input type), or with a different
 *   `data-test` name (the button that was "Cancel" is now "Approve": a list
 *   of actions changes by position), are always replaced, so their new
 *   listeners apply.
 *
 * Form controls: morph never writes the value/checked state of a control that
 * has focus, or whose value the user changed (an input/change event seen on it)
 * until the view renders that same value again (e.g. after a save).
 */

/** Controls the user edited since morph last saw their value match the view's. */
const edited = new WeakSet();
if (typeof document !== "undefined") {
  const mark = (e) => { if (e.isTrusted && e.target instanceof Element) edited.add(e.target); };
  document.addEventListener("input", mark, true);
  document.addEventListener("change", mark, true);
}

const ELEMENT = 1;

/** The key of a node: its data-key attribute (elements only), else null. */
function keyOf(node) {
  return node.nodeType === ELEMENT ? node.getAttribute("data-key") : null;
}

/** Whether two nodes can be morphed into each other (else: replace). */
function sameKind(a, b) {
  if (a.nodeType !== b.nodeType) return false;
  if (a.nodeType !== ELEMENT) return true;
  return a.namespaceURI === b.namespaceURI && a.tagName === b.tagName &&
    a.getAttribute("data-h") === b.getAttribute("data-h") &&
    a.getAttribute("data-test") === b.getAttribute("data-test") &&
    (a.tagName !== "INPUT" || a.type === b.type);
}

function syncAttributes(target, source) {
  for (const { name } of [...target.attributes]) {
    if (!source.hasAttribute(name)) target.removeAttribute(name);
  }
  for (const { name, value } of source.attributes) {
    if (target.getAttribute(name) !== value) target.setAttribute(name, value);
  }
}

/** Copies value/checked (properties, not attributes) unless the user owns them. */
function syncFormState(target, source) {
  const tag = target.tagName;
  if (tag !== "INPUT" && tag !== "SELECT" && tag !== "TEXTAREA") return;
  const checkable = tag === "INPUT" && (target.type === "checkbox" || target.type === "radio");
  const same = checkable ? target.checked === source.checked : target.value === source.value;
  if (same) { edited.delete(target); return; } // the view caught up with the user
  if (target === document.activeElement || edited.has(target)) return;
  if (checkable) target.checked = source.checked;
  else target.value = source.value;
}

/** Makes target's children look like source's (keyed by data-key, else by position). */
function syncChildren(target, source) {
  const want = [...source.childNodes];
  const wanted = new Set(want.map(keyOf).filter((k) => k != null));
  // Drop keyed children that are gone first, so that removing a row above
  // never makes the rows below move (moving a node loses its focus).
  const keyed = new Map();
  for (const c of [...target.childNodes]) {
    const k = keyOf(c);
    if (k == null) continue;
    if (!wanted.has(k)) c.remove();
    else if (!keyed.has(k)) keyed.set(k, c);
  }
  let cur = target.firstChild;
  for (const s of want) {
    const k = keyOf(s);
    let t = null;
    if (k != null) {
      t = keyed.get(k) || null;
      keyed.delete(k);
    } else if (cur && keyOf(cur) == null) {
      t = cur;
    }
    if (!t) { target.insertBefore(s, cur); continue; }
    if (t === cur) cur = cur.nextSibling;
    else target.insertBefore(t, cur);
    morphNode(t, s);
  }
  while (cur) { const next = cur.nextSibling; cur.remove(); cur = next; }
}

function morphNode(target, source) {
  if (!sameKind(target, source)) { target.replaceWith(source); return source; }
  if (target.nodeType !== ELEMENT) {
    if (target.nodeValue !== source.nodeValue) target.nodeValue = source.nodeValue;
    return target;
  }
  syncAttributes(target, source);
  syncChildren(target, source);
  syncFormState(target, source); // after the children: a <select>'s options first
  return target;
}

/** Runs fn, then gives focus back to the element that had it when a move lost it. */
function keepingFocus(fn) {
  const active = document.activeElement;
  const result = fn();
  if (active && active !== document.activeElement && active.isConnected && typeof active.focus === "function") {
    active.focus({ preventScroll: true });
  }
  return result;
}

/**
 * Makes the live node `target` look like the freshly built, detached node
 * `source` (which is consumed: parts of it may move into the page). Same tag:
 * attributes and children are updated in place (children with data-key are
 * matched by key, others by position); different tag, node type, input type
 * or data-h stamp: target is replaced by source. Returns the node now in the
 * page. See the module comment for the rule about event handlers.
 */
export function morph(target, source) {
  return keepingFocus(() => morphNode(target, source));
}

/**
 * Updates a table body (or any list container) to show `items`, one row per
 * item: renderRow(item) builds a fresh row, keyOf(item) gives its key (set as
 * the row's data-key). Rows are reused by key and morphed; unchanged rows are
 * left untouched, new ones inserted, gone ones removed, moved ones reordered.
 * Children without a data-key (an "empty" placeholder row) are removed.
 */
export function syncRows(tbody, items, keyOf, renderRow) {
  const fresh = document.createElement(tbody.tagName);
  for (const item of items) {
    const row = renderRow(item);
    row.setAttribute("data-key", String(keyOf(item)));
    fresh.appendChild(row);
  }
  keepingFocus(() => syncChildren(tbody, fresh));
  return tbody;
}
