/*
 * Form widgets for scheduling: a date-time in a chosen IANA zone, the
 * activation choice (immediately or a timer) and the store-local
 * maintenance window.
 */
import { h, setOptions } from "./dom.js";
import { t } from "./i18n.js";
import { cache } from "./data.js";
import {
  browserZone, zoneFormat, zoneOffset, wallOf, zoneInstants, zoneInstant, zoneRfc3339, zoneToRfc3339, nextNight, wallTime,
} from "./zones.js";

/** Days of the week as the API spells them, each with its label. */
export const DAYS = { mon: "schedule.day.mon", tue: "schedule.day.tue", wed: "schedule.day.wed", thu: "schedule.day.thu",
  fri: "schedule.day.fri", sat: "schedule.day.sat", sun: "schedule.day.sun" };

/** A maintenance window in words: "01:00–05:00 store-local, every day". */
export function windowText(w) {
  if (!w) return t("schedule.window.none");
  const days = w.days && w.days.length
    ? w.days.map((d) => (Object.hasOwn(DAYS, d) ? t(DAYS[d]) : d)).join(" ") : t("schedule.window.every_day");
  return t(w.crosses_midnight ? "schedule.window.text_next_day" : "schedule.window.text", { start: w.start, end: w.end, days });
}

/** The stores' IANA zones that this browser knows, each with its store count
 *  (stores without a zone are left out). */
function storeZones() {
  const n = new Map();
  for (const s of cache.stores) {
    if (s.time_zone && zoneFormat(s.time_zone)) n.set(s.time_zone, (n.get(s.time_zone) || 0) + 1);
  }
  return n;
}

/** A date-time input with its IANA zone (the stores' zones, UTC and this
 *  browser's; default: the stores' zone when they share one, else the
 *  browser's) and, under them, a line telling what will be sent.
 *  at and zone go in the caller's row, info under it. instant() gives the ms
 *  and get() the RFC 3339 value (the zone's offset at that instant); both throw
 *  when invalid. reload() refreshes the zones from cache.stores. */
export function zonedTimeInput() {
  let touched = false, edited = false; // the operator chose a zone / typed a time
  let blank = false; // cleared by reset(): stays empty until seed()
  const zone = h("select", { title: t("schedule.zone.title"), onchange: () => { touched = true; rezone(); } });
  const at = h("input", { type: "datetime-local", oninput: () => { edited = true; blank = false; show(); } });
  const line = h("div", { class: "small" }), hint = h("div", { class: "hint" });
  const info = h("div", null, line, hint);

  /** The next night in the zone, unless a time was typed (that is kept, and read in the zone). */
  function rezone() {
    if (!edited && !blank) at.value = nextNight(zone.value);
    show();
  }

  function show() {
    const z = zone.value;
    let ms;
    try { ms = zoneInstant(at.value, z); } catch (e) { line.className = "small err"; line.textContent = e.message; return; }
    const rfc = zoneRfc3339(ms, z), mine = browserZone();
    const utc = new Date(ms).toISOString();
    const notes = [];
    if (rfc.slice(0, 16) !== at.value.slice(0, 16)) notes.push(t("schedule.zone.skipped", { time: at.value.slice(11, 16) }));
    else if (zoneInstants(wallOf(at.value), z).length > 1) notes.push(t("schedule.zone.twice"));
    if (ms < Date.now()) notes.push(t("schedule.zone.past"));
    line.className = "small" + (ms < Date.now() ? " err" : "");
    line.textContent = `= ${rfc.slice(0, 10)} ${rfc.slice(11, 16)} ${z}` +
      (z === "UTC" ? "" : ` (${rfc.slice(19)}) = ${utc.slice(0, 10)} ${utc.slice(11, 16)} UTC`) +
      (mine === z || mine === "UTC" ? "" : " = " + t("schedule.zone.in_browser", { time: wallTime(zoneRfc3339(ms, mine)).slice(0, 16), zone: mine })) +
      (notes.length ? " · " + notes.join(" · ") : "");
  }

  function reload() {
    const counts = storeZones(), mine = browserZone(), now = Date.now();
    const zones = [...counts.keys()].sort((a, b) => zoneOffset(now, a) - zoneOffset(now, b) || a.localeCompare(b));
    const here = t("schedule.zone.this_browser");
    const pairs = zones.map((z) => [z, [z, t("schedule.zone.stores", { n: counts.get(z) }), z === mine ? here : null]
      .filter(Boolean).join(" · ")]);
    for (const [z, label] of [["UTC", "UTC"], [mine, mine + " · " + here]]) {
      if (!pairs.some((p) => p[0] === z)) pairs.push([z, label]);
    }
    setOptions(zone, pairs);
    if (!touched) zone.value = zones.length === 1 ? zones[0] : mine;
    hint.textContent = zones.length > 1 ? t("schedule.zone.many_zones", { n: zones.length }) : "";
    rezone();
  }

  /** Back to the start: the time cleared (re-seeded by seed()), the zone the default. */
  function reset() {
    touched = false;
    edited = false;
    blank = true;
    at.value = "";
    reload();
  }

  /** Puts the next night in when the time is empty (the timer was chosen). */
  function seed() {
    blank = false;
    if (!at.value) { at.value = nextNight(zone.value); edited = false; }
    show();
  }

  reload();
  return {
    at, zone, info, reload, reset, seed,
    instant: () => zoneInstant(at.value, zone.value),
    get: () => zoneToRfc3339(at.value, zone.value),
  };
}

/** The activation choice: Immediately or a date-time in a chosen zone. get()
 *  gives the activate_at value to send (undefined for immediately) or throws.
 *  reload() refreshes the zones from cache.stores. */
export function activationPicker() {
  const name = "act" + Math.random().toString(36).slice(2);
  const now = h("input", { type: "radio", name, checked: true, onchange: sync });
  const later = h("input", { type: "radio", name, onchange: sync });
  const when = zonedTimeInput();
  function sync() {
    when.at.disabled = when.zone.disabled = !later.checked;
    when.info.style.display = later.checked ? "" : "none";
    if (later.checked) when.seed();
  }
  const el = h("div", { class: "f" },
    h("span", { class: "small muted" }, t("schedule.activation.label")),
    h("div", { class: "row", style: "gap: 14px; align-items: center" },
      h("label", { class: "inline" }, now, t("schedule.activation.now")),
      h("label", { class: "inline" }, later, t("schedule.activation.timer")), when.at, when.zone),
    when.info);
  sync();
  return {
    el,
    isNow: () => now.checked,
    reload: when.reload,
    /** Back to Immediately, the time cleared. */
    reset() { now.checked = true; when.reset(); sync(); },
    get() {
      if (now.checked) return undefined;
      const v = when.get();
      if (when.instant() < Date.now() - 60000) throw new Error(t("schedule.activation.past"));
      return v;
    },
  };
}

/** The optional store-local maintenance window inputs. get() gives a Window
 *  (undefined when both times are empty) or throws. */
export function windowPicker() {
  const start = h("input", { type: "time" });
  const end = h("input", { type: "time" });
  const days = Object.keys(DAYS).map((d) => h("input", { type: "checkbox", value: d }));
  const el = h("div", { class: "f" },
    h("span", { class: "small muted" }, t("schedule.window.label")),
    h("div", { class: "row", style: "gap: 8px; align-items: center" }, start, "–", end,
      days.map((b) => h("label", { class: "inline small" }, b, t(DAYS[b.value])))),
    h("span", { class: "small muted" }, t("schedule.window.hint")));
  return {
    el,
    /** Clears the window. */
    reset() { start.value = ""; end.value = ""; for (const b of days) b.checked = false; },
    get() {
      const s = start.value.slice(0, 5), e = end.value.slice(0, 5); // "HH:MM"
      if (!s && !e) return undefined;
      if (!s || !e) throw new Error(t("schedule.window.need_both"));
      if (s === e) throw new Error(t("schedule.window.same"));
      const w = { start: s, end: e };
      const picked = days.filter((b) => b.checked).map((b) => b.value);
      if (picked.length) w.days = picked;
      if (e < s) w.crosses_midnight = true;
      return w;
    },
  };
}
