// Checks of the operator panel's translations (run: node --test web/tests/).
//
//  1. the English and Russian catalogues have exactly the same keys;
//  2. each key has the same {placeholders} in both, and plural values have the
//     forms their language needs (ru: one, few, many; en: one, other);
//  3. every key the code uses (t("key"), key literals in label maps, dynamic
//     prefixes listed in DYNAMIC_KEYS, data-i18n attributes) exists;
//  4. no Russian text is a copy of the English one (short allow-list);
//  5. no English text is left in the code: string literals with two English
//     words in a row are flagged, unless they are CSS class lists or
//     selectors, or their line says `// i18n-ok` (with a reason); so are
//     literals of one capitalised word ("Save") other than key/header names.
// Each checker is a plain function; the last tests feed it bad input, so a
// checker that stops catching its problem fails the run.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const STATIC = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../static");
const JS = path.join(STATIC, "js");
const I18N_DIR = path.join(JS, "i18n");

const en = (await import(pathToFileURL(path.join(I18N_DIR, "en.js")))).default;
const ru = (await import(pathToFileURL(path.join(I18N_DIR, "ru.js")))).default;

/** Plural forms each language must give (Intl.PluralRules categories for whole numbers). */
const PLURAL_FORMS = { en: ["one", "other"], ru: ["one", "few", "many"] };
const ALL_FORMS = ["zero", "one", "two", "few", "many", "other"];

/** Words that read the same in both languages: a Russian text made only of
 *  these (and placeholders, digits, punctuation) may equal the English one. */
const SAME_WORDS = new Set(["tillswarm", "GUID", "IP", "ID", "API", "WAN", "LAN", "UTC", "OK"]);

/** Capitalised words that are names in code, not texts: keyboard keys, HTTP headers. */
const CODE_WORDS = new Set(["Enter", "Escape", "Tab", "Backspace", "Delete", "Accept", "Authorization"]);

/** Keys the code builds from a prefix at run time, with every value it can
 *  append. Prefer a map object of whole keys in the code instead. */
const DYNAMIC_KEYS = {
  "live.title.": ["live", "connecting", "polling"], // live.js: the connection state
  "audit.outcome.": ["ok", "failed", "denied"], // views/audit.js: OUTCOMES
  "audit.kind.": ["user", "token", "cli", "system", "anonymous", "device"], // views/audit.js: KINDS
};

// ---------------------------------------------------------------- helpers

/** Every file under dir (recursive) whose name ends with ext. */
function filesUnder(dir, ext) {
  return fs.readdirSync(dir, { recursive: true }).filter((f) => f.endsWith(ext)).map((f) => path.join(dir, f)).sort();
}

/** The panel's code modules: every .js under js/ except the catalogues. */
function codeFiles() {
  return filesUnder(JS, ".js").filter((f) => !f.startsWith(I18N_DIR + path.sep));
}

const rel = (f) => path.relative(STATIC, f);

/** The {placeholders} of a catalogue value (a plural value: of all its forms). */
function placeholders(v) {
  const texts = typeof v === "string" ? [v] : Object.values(v);
  const out = new Set();
  for (const s of texts) for (const m of String(s).matchAll(/\{(\w+)\}/g)) out.add(m[1]);
  return out;
}

const sorted = (set) => [...set].sort().join(", ");

// ---------------------------------------------------------------- checkers

/** Keys one catalogue has and the other lacks. */
export function checkSameKeys(a, b) {
  const problems = [];
  for (const k of Object.keys(a)) if (!Object.hasOwn(b, k)) problems.push(`ru lacks ${k}`);
  for (const k of Object.keys(b)) if (!Object.hasOwn(a, k)) problems.push(`en lacks ${k}`);
  return problems;
}

/** Placeholder mismatches, malformed values and missing plural forms. */
export function checkValues(enCat, ruCat) {
  const problems = [];
  for (const [lang, cat] of [["en", enCat], ["ru", ruCat]]) {
    for (const [k, v] of Object.entries(cat)) {
      if (typeof v === "string") {
        if (/<[a-z!/]/i.test(v)) problems.push(`${lang} ${k}: looks like HTML`);
        continue;
      }
      if (!v || typeof v !== "object") { problems.push(`${lang} ${k}: neither text nor plural forms`); continue; }
      for (const f of Object.keys(v)) if (!ALL_FORMS.includes(f) || typeof v[f] !== "string") problems.push(`${lang} ${k}: bad plural form ${f}`);
      for (const f of PLURAL_FORMS[lang]) if (typeof v[f] !== "string") problems.push(`${lang} ${k}: plural form "${f}" missing`);
      // Every form shows the same values (Russian "one" also covers 21, 31...).
      const forms = Object.entries(v).map(([f, s]) => [f, sorted(placeholders(String(s)))]);
      for (const [f, p] of forms) if (p !== forms[0][1]) problems.push(`${lang} ${k}: form ${f} has {${p}}, form ${forms[0][0]} {${forms[0][1]}}`);
    }
  }
  for (const k of Object.keys(enCat)) {
    if (!Object.hasOwn(ruCat, k)) continue;
    const a = placeholders(enCat[k]), b = placeholders(ruCat[k]);
    if (sorted(a) !== sorted(b)) problems.push(`${k}: placeholders en {${sorted(a)}} ru {${sorted(b)}}`);
  }
  return problems;
}

/** Russian texts identical to the English ones (allowed: only SAME_WORDS in them). */
export function checkTranslated(enCat, ruCat) {
  const problems = [];
  const texts = (v) => (typeof v === "string" ? [v] : [v.other ?? v.many ?? ""]);
  for (const k of Object.keys(enCat)) {
    if (!Object.hasOwn(ruCat, k)) continue;
    const [a] = texts(enCat[k]), [b] = texts(ruCat[k]);
    if (a !== b) continue;
    const words = a.replace(/\{\w+\}/g, " ").match(/[A-Za-z]{2,}/g) || [];
    if (words.some((w) => !SAME_WORDS.has(w))) problems.push(`${k}: Russian text is the English one: ${JSON.stringify(a)}`);
  }
  return problems;
}

/** The string literals of JavaScript source: { text, line, before } where
 *  text is the literal's content (a template's ${...} parts replaced by
 *  "\u0000") and before the code just before it. Skips comments and regular
 *  expression literals. */
export function stringLiterals(src) {
  const out = [];
  let i = 0, line = 1, last = ""; // last: the previous significant character
  const REGEX_AFTER = "(,=:[!&|?{};+-*%<>~^";
  const KEYWORDS = /(?:^|[^\w$])(?:return|typeof|case|do|else|in|of|new|delete|void|throw|yield|await)$/;

  function code(stopAtBrace) {
    let depth = 0;
    while (i < src.length) {
      const c = src[i];
      if (c === "\n") { line++; i++; continue; }
      if (c === "/" && src[i + 1] === "/") { while (i < src.length && src[i] !== "\n") i++; continue; }
      if (c === "/" && src[i + 1] === "*") {
        const end = src.indexOf("*/", i + 2);
        const stop = end < 0 ? src.length : end + 2;
        line += (src.slice(i, stop).match(/\n/g) || []).length;
        i = stop;
        continue;
      }
      if (c === '"' || c === "'") { quoted(c); last = c; continue; }
      if (c === "`") { template(); last = "`"; continue; }
      if (c === "/" && (last === "" || REGEX_AFTER.includes(last) || KEYWORDS.test(src.slice(Math.max(0, i - 12), i).trimEnd()))) {
        regex(); last = "/"; continue;
      }
      if (c === "{") depth++;
      if (c === "}") {
        if (stopAtBrace && depth === 0) { i++; return; }
        depth--;
      }
      if (!/\s/.test(c)) last = c;
      i++;
    }
  }

  function quoted(q) {
    const start = line, before = src.slice(Math.max(0, i - 40), i);
    let text = "";
    i++;
    while (i < src.length && src[i] !== q) {
      if (src[i] === "\\") { text += src[i + 1]; i += 2; continue; }
      if (src[i] === "\n") line++;
      text += src[i++];
    }
    i++;
    out.push({ text, line: start, before });
  }

  function template() {
    const start = line, before = src.slice(Math.max(0, i - 40), i);
    let text = "";
    i++;
    while (i < src.length && src[i] !== "`") {
      if (src[i] === "\\") { text += src[i + 1]; i += 2; continue; }
      if (src[i] === "$" && src[i + 1] === "{") { i += 2; text += "\u0000"; code(true); continue; }
      if (src[i] === "\n") line++;
      text += src[i++];
    }
    i++;
    out.push({ text, line: start, before });
  }

  function regex() {
    let inClass = false;
    i++;
    while (i < src.length && src[i] !== "\n") {
      const c = src[i];
      if (c === "\\") { i += 2; continue; }
      if (c === "[") inClass = true;
      else if (c === "]") inClass = false;
      else if (c === "/" && !inClass) break;
      i++;
    }
    i++;
    while (/[a-z]/i.test(src[i] || "")) i++;
  }

  code(false);
  return out;
}

/** The CSS class names panel.css defines. */
function cssClasses() {
  const css = fs.readFileSync(path.join(STATIC, "panel.css"), "utf8").replace(/\/\*[\s\S]*?\*\//g, "");
  return new Set([...css.matchAll(/\.([A-Za-z_][\w-]*)/g)].map((m) => m[1]));
}

/** Literals that look like English text left in code: { file, line, text }. */
export function checkNoEnglish(sources, classes) {
  const problems = [];
  for (const [file, src] of sources) {
    const lines = src.split("\n");
    for (const lit of stringLiterals(src)) {
      const words = /\b[A-Za-z]{2,}\s+[A-Za-z]{2,}\b/.test(lit.text);
      // A lone capitalised word is a button label ("Save") unless it is a key or header name.
      const label = /^[A-Z][a-z]{2,}[.:…]?$/.test(lit.text.trim()) && !CODE_WORDS.has(lit.text);
      if (!words && !label) continue;
      const lastLine = lit.line + (lit.text.match(/\n/g) || []).length;
      if (lines.slice(lit.line - 1, lastLine).some((l) => l.includes("// i18n-ok"))) continue;
      // A class list: every word a class the stylesheet defines or a
      // hyphenated hook name ("live-state"), which prose does not consist of.
      if (lit.text.trim().split(/\s+/).every((w) => classes.has(w) || /^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)+$/.test(w))) continue;
      // A CSS selector handed to the DOM.
      if (/(?:querySelector(?:All)?|closest|matches)\(\s*$/.test(lit.before)) continue;
      problems.push(`${file}:${lit.line}: ${JSON.stringify(lit.text.replace(/\u0000/g, "${…}"))}`);
    }
  }
  return problems;
}

/** Keys the code uses that a catalogue lacks, and dynamic keys not in DYNAMIC_KEYS. */
export function checkUsedKeys(sources, cat, areas, dynamic) {
  const problems = [];
  const keyLike = new RegExp(`^(?:${areas.join("|")})\\.[A-Za-z0-9_]+(?:\\.[A-Za-z0-9_]+)*$`);
  for (const [file, src] of sources) {
    const at = (i) => `${file}:${src.slice(0, i).split("\n").length}`;
    for (const m of src.matchAll(/\bt\(\s*(["'`])((?:(?!\1)[^\\$])*)\1\s*([+,)])/g)) {
      if (m[3] === "+") {
        if (!Object.hasOwn(dynamic, m[2])) problems.push(`${at(m.index)}: dynamic key ${m[2]}… is not listed in DYNAMIC_KEYS`);
      } else if (!Object.hasOwn(cat, m[2])) {
        problems.push(`${at(m.index)}: t(${JSON.stringify(m[2])}) is not in the catalogue`);
      }
    }
    for (const m of src.matchAll(/\bt\(\s*`([^`]*?)\$\{/g)) {
      if (!Object.hasOwn(dynamic, m[1])) problems.push(`${at(m.index)}: dynamic key ${m[1]}… is not listed in DYNAMIC_KEYS`);
    }
    // Whole keys in label maps and the like: every key-like literal.
    for (const lit of stringLiterals(src)) {
      if (/\bt\(\s*$/.test(lit.before)) continue; // checked above
      if (keyLike.test(lit.text) && !Object.hasOwn(cat, lit.text)) problems.push(`${file}:${lit.line}: key ${lit.text} is not in the catalogue`);
    }
  }
  for (const [prefix, tails] of Object.entries(dynamic)) {
    for (const tail of tails) if (!Object.hasOwn(cat, prefix + tail)) problems.push(`dynamic key ${prefix + tail} is not in the catalogue`);
  }
  return problems;
}

/** The catalogue areas: the part files of js/i18n/en. */
function areas() {
  return fs.readdirSync(path.join(I18N_DIR, "en")).filter((f) => f.endsWith(".js")).map((f) => f.slice(0, -3)).sort();
}

const sources = () => codeFiles().map((f) => [rel(f), fs.readFileSync(f, "utf8")]);
const report = (problems) => (problems.length ? `${problems.length} problem(s):\n  ${problems.join("\n  ")}` : "");

// ---------------------------------------------------------------- the panel's catalogues and code

test("1. both catalogues have the same keys", () => {
  assert.ok(Object.keys(en).length > 100, "the catalogues look empty");
  const problems = checkSameKeys(en, ru);
  assert.deepEqual(problems, [], report(problems));
});

test("1b. each area file holds only its own keys, none twice, and both languages have the same areas", async () => {
  const problems = [];
  const ruAreas = fs.readdirSync(path.join(I18N_DIR, "ru")).filter((f) => f.endsWith(".js")).map((f) => f.slice(0, -3)).sort();
  if (areas().join() !== ruAreas.join()) problems.push(`areas differ: en ${areas()} ru ${ruAreas}`);
  for (const lang of ["en", "ru"]) {
    const seen = new Map();
    const merged = lang === "en" ? en : ru;
    let total = 0;
    for (const area of areas()) {
      const file = path.join(I18N_DIR, lang, area + ".js");
      if (!fs.existsSync(file)) continue;
      const part = (await import(pathToFileURL(file))).default;
      for (const k of Object.keys(part)) {
        total++;
        if (!k.startsWith(area + ".")) problems.push(`${lang}/${area}.js: key ${k} is outside its area`);
        if (seen.has(k)) problems.push(`${lang}: ${k} in both ${seen.get(k)} and ${area}`);
        seen.set(k, area);
      }
    }
    if (total !== Object.keys(merged).length) problems.push(`${lang}.js merges ${Object.keys(merged).length} keys, the area files hold ${total}`);
  }
  assert.deepEqual(problems, [], report(problems));
});

test("2. placeholders match and plural values have their forms", () => {
  const problems = checkValues(en, ru);
  assert.deepEqual(problems, [], report(problems));
});

test("3. every key the code uses exists", () => {
  const problems = checkUsedKeys(sources(), en, areas(), DYNAMIC_KEYS);
  const html = fs.readFileSync(path.join(STATIC, "index.html"), "utf8");
  for (const m of html.matchAll(/data-i18n(?:-title)?="([^"]*)"/g)) {
    if (!Object.hasOwn(en, m[1])) problems.push(`index.html: ${m[0]} is not in the catalogue`);
  }
  assert.deepEqual(problems, [], report(problems));
});

test("4. Russian texts are translated", () => {
  const problems = checkTranslated(en, ru);
  assert.deepEqual(problems, [], report(problems));
});

test("5. no English text left in the code", () => {
  const problems = checkNoEnglish(sources(), cssClasses());
  assert.deepEqual(problems, [], report(problems));
});

test("structure: index.html is the shell only, and no view imports another view", () => {
  const html = fs.readFileSync(path.join(STATIC, "index.html"), "utf8");
  assert.doesNotMatch(html, /<script(?![^>]*\bsrc=)[^>]*>/i, "an inline script (the CSP allows only script-src 'self')");
  assert.doesNotMatch(html, /<style|\son[a-z]+=/i, "inline style element or event handler attribute");
  const problems = [];
  for (const f of filesUnder(path.join(JS, "views"), ".js")) {
    for (const m of fs.readFileSync(f, "utf8").matchAll(/^import[^;]*?from\s*["']\.\/[^"']+["']/gm)) problems.push(`${rel(f)}: ${m[0]}`);
  }
  assert.deepEqual(problems, [], report(problems));
});

test("t(): placeholders, plurals, missing keys", async () => {
  const i18n = await import(pathToFileURL(path.join(JS, "i18n.js")));
  const warned = [];
  const warn = console.warn;
  console.warn = (...a) => warned.push(a.join(" "));
  try {
    i18n.setLang("ru");
    assert.equal(i18n.lang(), "ru");
    assert.equal(i18n.t("groups.option", { name: "A", n: 1 }), "A (1 касса)");
    assert.equal(i18n.t("groups.option", { name: "A", n: 3 }), "A (3 кассы)");
    assert.equal(i18n.t("groups.option", { name: "A", n: 5 }), "A (5 касс)");
    assert.equal(i18n.t("groups.option", { name: "A", n: 21 }), "A (21 касса)");
    assert.equal(i18n.t("groups.option", { name: "A", n: 11 }), "A (11 касс)");
    assert.match(i18n.fmtBytes(3 * 1024 * 1024), /^3,00\sМиБ$/);
    i18n.setLang("en");
    assert.equal(i18n.t("groups.option", { name: "A", n: 1 }), "A (1 till)");
    assert.equal(i18n.t("groups.option", { name: "A", n: 2 }), "A (2 tills)");
    assert.equal(i18n.t("devices.detail.title_named", { name: "T1" }), "Device T1");
    assert.match(i18n.fmtBytes(3 * 1024 * 1024), /^3\.00\sMiB$/);
    assert.equal(i18n.t("no.such.key"), "no.such.key");
    assert.equal(i18n.t("no.such.key"), "no.such.key");
    assert.equal(warned.filter((w) => w.includes("no.such.key")).length, 1, "a missing key is reported once");
    i18n.setLang("xx");
    assert.equal(i18n.lang(), "en", "an unknown language is ignored");
  } finally {
    console.warn = warn;
  }
});

// ---------------------------------------------------------------- the checkers catch what they should

test("the checkers catch missing keys, placeholders, plural forms and copies", () => {
  assert.deepEqual(checkSameKeys({ "a.x": "1", "a.y": "2" }, { "a.x": "1" }), ["ru lacks a.y"]);
  assert.equal(checkValues({ "a.x": "{n} tills" }, { "a.x": "кассы" }).length, 1);
  assert.equal(checkValues({ "a.x": { one: "{n} till", other: "{n} tills" } }, { "a.x": { one: "{n} касса", many: "{n} касс" } }).length, 1);
  assert.ok(checkValues({ "a.x": { one: "{n} till", other: "{n} tills" } }, { "a.x": { one: "касса", few: "{n} кассы", many: "{n} касс" } }).length > 0);
  assert.equal(checkValues({ "a.x": "<b>x</b>" }, { "a.x": "х" }).length, 1);
  assert.equal(checkTranslated({ "a.x": "Save changes" }, { "a.x": "Save changes" }).length, 1);
  assert.equal(checkTranslated({ "a.x": "WAN {wan} · LAN {lan}" }, { "a.x": "WAN {wan} · LAN {lan}" }).length, 0);
});

test("the checkers catch unknown and dynamic keys and English left in code", () => {
  const cat = { "tasks.title": "Tasks" };
  const src = [["x.js", 't("tasks.title"); t("tasks.nope"); const M = { a: "tasks.gone" }; t("tasks.status." + s); t(`tasks.kind.${k}`);']];
  assert.equal(checkUsedKeys(src, cat, ["tasks"], {}).length, 4);
  const english = [["y.js", [
    'h("button", null, "Run task");',
    "const a = `${n} tills shown`;",
    'h("span", { class: "small muted" }, x);',
    'document.querySelector("nav a[data-view]");',
    "const re = /it's a regex/; const b = 'Not a task id.';",
    'throw new Error("bad input here"); // i18n-ok: a test',
    'h("button", null, "Save"); if (e.key === "Enter") go();',
    "// a comment with plain words",
  ].join("\n")]];
  const found = checkNoEnglish(english, new Set(["small", "muted"]));
  assert.deepEqual(found.map((p) => p.split(":")[1]), ["1", "2", "5", "7"], found.join("\n"));
});
