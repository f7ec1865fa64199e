/*
 * Translation and formatting for the current language.
 *
 * Catalogues (js/i18n/en.js, js/i18n/ru.js) map a key "area.thing" to plain
 * text with {placeholders} (never HTML), or to a plural object
 * { one, few, many, other } chosen by the number in params.n.
 * This module also loads in node (tests): browser objects are looked up
 * only when present.
 */
import en from "./i18n/en.js";
import ru from "./i18n/ru.js";

/** The catalogues by language code. */
export const CATALOGUES = { en, ru };
/** The languages the panel speaks, in the order the switch shows them. */
export const LANGS = ["ru", "en"];
const LOCALES = { en: "en-GB", ru: "ru-RU" };
const STORAGE_KEY = "tillswarm.lang";

const warned = new Set(); // keys already reported missing
let current = initialLang();
let formats = {}; // cached Intl formatters of the current language, by name

/** The stored language; else the first of the browser's languages that the
 *  panel speaks (so a Russian locale listed before any English one gives
 *  "ru"); else "en". */
function initialLang() {
  try {
    const stored = globalThis.localStorage && globalThis.localStorage.getItem(STORAGE_KEY);
    if (stored && CATALOGUES[stored]) return stored;
  } catch (_) { /* storage disabled: fall through */ }
  const nav = globalThis.navigator;
  const prefs = nav ? (nav.languages && nav.languages.length ? nav.languages : [nav.language]) : [];
  for (const p of prefs) {
    const l = String(p || "").toLowerCase();
    if (l.startsWith("ru")) return "ru";
    if (l.startsWith("en")) return "en";
  }
  return "en";
}

/** The current language code ("en" or "ru"). */
export function lang() { return current; }

/** The BCP 47 locale used for formatting in the current language. */
export function locale() { return LOCALES[current]; }

/** Switches the language: remembers it (localStorage "tillswarm.lang") and
 *  sets the document's lang attribute. Unknown codes are ignored. */
export function setLang(l) {
  if (!CATALOGUES[l]) return;
  current = l;
  formats = {};
  try { if (globalThis.localStorage) globalThis.localStorage.setItem(STORAGE_KEY, l); } catch (_) { /* not remembered */ }
  applyDocumentLang();
}

/** Sets <html lang> to the current language (at start and on a switch). */
export function applyDocumentLang() {
  if (globalThis.document) globalThis.document.documentElement.lang = current;
}

/** The text of a key in the current language, with {name} placeholders taken
 *  from params. A plural value picks its form by params.n (Intl.PluralRules)
 *  and shows {n} formatted as a number. A missing key gives the key itself
 *  and is reported once with console.warn. */
export function t(key, params) {
  let v = CATALOGUES[current][key];
  if (v === undefined) {
    if (!warned.has(key)) {
      warned.add(key);
      console.warn("i18n: missing key " + JSON.stringify(key) + " in " + current); // i18n-ok: developer message
    }
    return key;
  }
  if (typeof v === "object") {
    const n = params ? Number(params.n) : NaN;
    v = pluralForm(v, n);
    if (!isNaN(n)) params = { ...params, n: fmtNumber(n) };
  }
  if (!params) return v;
  return v.replace(/\{(\w+)\}/g, (m, name) => (Object.hasOwn(params, name) && params[name] != null ? String(params[name]) : m));
}

/** The form of a plural object for n in the current language. */
function pluralForm(forms, n) {
  const rules = formats.plural || (formats.plural = new Intl.PluralRules(locale()));
  const cat = isNaN(n) ? "other" : rules.select(n);
  return forms[cat] ?? forms.other ?? forms.many ?? Object.values(forms)[0];
}

/** Whether the current catalogue has a key (for texts that exist for some values only). */
export function has(key) { return Object.hasOwn(CATALOGUES[current], key); }

// ---------------------------------------------------------------- numbers

/** A number in the current language ("12 345,5" in Russian); opts: Intl.NumberFormat options. */
export function fmtNumber(n, opts) {
  if (n == null || n === "" || isNaN(n)) return "–";
  const key = "num" + (opts ? JSON.stringify(opts) : "");
  const f = formats[key] || (formats[key] = new Intl.NumberFormat(locale(), opts));
  return f.format(Number(n));
}

/** A number with exactly `digits` decimals ("1.05", "1,05"). */
export function fmtFixed(n, digits) {
  return fmtNumber(n, { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

const UNITS = ["core.unit.b", "core.unit.kib", "core.unit.mib", "core.unit.gib", "core.unit.tib"];

/** A size in binary units, translated: "1.50 MiB", "1,50 МиБ". */
export function fmtBytes(n) {
  if (n == null || isNaN(n)) return "–";
  let v = Number(n), i = 0;
  while (v >= 1024 && i < UNITS.length - 1) { v /= 1024; i++; }
  return (i === 0 ? fmtNumber(v) : fmtFixed(v, v < 10 ? 2 : 1)) + "\u00a0" + t(UNITS[i]);
}

// ---------------------------------------------------------------- dates and times

/** A Date from an RFC 3339 string, a Date or ms; null when invalid or empty. */
function dateOf(s) {
  if (s == null || s === "") return null;
  const d = s instanceof Date ? s : new Date(s);
  return isNaN(d.getTime()) ? null : d;
}

function dateFormat(name, opts) {
  return formats[name] || (formats[name] = new Intl.DateTimeFormat(locale(), { hourCycle: "h23", ...opts }));
}

const DAY = { year: "numeric", month: "2-digit", day: "2-digit" };
const CLOCK = { hour: "2-digit", minute: "2-digit", second: "2-digit" };

/** Local date and time: "24.11.2025, 23:34:15" (ru), "24/11/2025, 23:34:15" (en). */
export function fmtTime(s) {
  const d = dateOf(s);
  return d ? dateFormat("time", { ...DAY, ...CLOCK }).format(d) : s ? String(s) : "–";
}

/** Local date only. */
export function fmtDate(s) {
  const d = dateOf(s);
  return d ? dateFormat("date", DAY).format(d) : s ? String(s) : "–";
}

/** Local time of day only: "23:34:15". */
export function fmtClock(s) {
  const d = dateOf(s);
  return d ? dateFormat("clock", CLOCK).format(d) : s ? String(s) : "–";
}

/** Compact local time for tables: "23:34:15" today, "24 Nov, 23:34" this year, else with the year. */
export function fmtShort(s) {
  const d = dateOf(s);
  if (!d) return s ? String(s) : "–";
  const now = new Date();
  if (d.toDateString() === now.toDateString()) return fmtClock(d);
  const base = { day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" };
  return d.getFullYear() === now.getFullYear()
    ? dateFormat("short", base).format(d)
    : dateFormat("shortYear", { ...base, year: "numeric" }).format(d);
}

/** How long ago: "5 min ago" / "5 мин назад"; "never" when empty. */
export function fmtAgo(s) {
  if (!s) return t("core.ago.never");
  const d = dateOf(s);
  if (!d) return String(s);
  const sec = Math.round((Date.now() - d.getTime()) / 1000);
  if (sec < 0) return t("core.ago.just_now");
  if (sec < 90) return t("core.ago.seconds", { n: sec });
  if (sec < 5400) return t("core.ago.minutes", { n: Math.round(sec / 60) });
  if (sec < 172800) return t("core.ago.hours", { n: Math.round(sec / 3600) });
  return t("core.ago.days", { n: Math.round(sec / 86400) });
}
