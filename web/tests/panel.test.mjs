// Static checks of the operator panel's behaviour rules (run: node --test web/tests/).
//
//  1. every view says which live changes concern it (wants) and updates its
//     tables in place (morph.js), not by rebuilding them;
//  2. setOptions keeps its cache out of data-key (morph's row key);
//  3. nothing clickable is a div, span or table row: buttons and links only;
//  4. the shell has the hooks the browser tests use, and the stylesheet a
//     focus ring and the narrow (tablet) layout.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const STATIC = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../static");
const JS = path.join(STATIC, "js");
const read = (...p) => fs.readFileSync(path.join(...p), "utf8");
const views = () => fs.readdirSync(path.join(JS, "views")).filter((f) => f.endsWith(".js")).sort();

test("every view answers wants(change) and updates rows in place", () => {
  const problems = [];
  for (const f of views()) {
    const src = read(JS, "views", f);
    if (!/\bwants\b/.test(src)) problems.push(`${f}: no wants(change)`);
    if (!/\b(?:syncRows|fillRows|morph)\(/.test(src)) problems.push(`${f}: no in-place update (syncRows, fillRows or morph)`);
    // A table body rebuilt with fill() loses the focus in it.
    for (const m of src.matchAll(/\bfill\((\w*(?:Body|body))\b/g)) problems.push(`${f}: fill(${m[1]}) rebuilds a table body`);
  }
  assert.deepEqual(problems, [], problems.join("\n"));
});

test("setOptions caches in data-options, not in morph's data-key", () => {
  const dom = read(JS, "dom.js");
  const body = dom.slice(dom.indexOf("export function setOptions"), dom.indexOf("}\n", dom.indexOf("export function setOptions")));
  assert.match(body, /dataset\.options/);
  assert.doesNotMatch(body, /dataset\.key/);
});

test("nothing clickable but buttons and links", () => {
  const problems = [];
  const files = [...views().map((f) => path.join("views", f)), "widgets.js", "pickers.js", "waves.js", "main.js", "tabs.js"];
  for (const f of files) {
    const src = read(JS, f);
    for (const m of src.matchAll(/h\("(div|span|tr|td|li|b)",\s*\{[^}]*\bonclick\b/g)) problems.push(`${f}: a clickable <${m[1]}>`);
    if (/["' ]clickable["' ]/.test(src)) problems.push(`${f}: class "clickable"`);
  }
  assert.deepEqual(problems, [], problems.join("\n"));
});

test("the shell's hooks, the focus ring and the narrow layout", () => {
  const html = read(STATIC, "index.html");
  for (const hook of ['data-test="conn-state"', 'data-test="lang-ru"', 'data-test="lang-en"', 'id="login-user"', 'id="login-submit"']) {
    assert.ok(html.includes(hook), `index.html lacks ${hook}`);
  }
  const css = read(STATIC, "panel.css");
  assert.match(css, /:focus-visible\s*\{[^}]*outline/);
  const narrow = css.slice(css.indexOf("@media (max-width: 900px)"));
  assert.ok(narrow.length > 30, "no @media (max-width: 900px) block");
  assert.match(narrow, /\.hide-narrow\s*\{\s*display:\s*none/);
  assert.match(css, /overflow-wrap:\s*anywhere/);
});
