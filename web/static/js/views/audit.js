/**
 * The audit log (route #audit, admins only): filters, a page of records, a
 * pager and a CSV download of the same filters. The filters are built once;
 * a refresh rebuilds only the table rows (keyed by record id), so typing in a
 * filter is never disturbed. #audit/<target> opens it filtered to a target
 * (e.g. #audit/task:12).
 */
import { api } from "../api.js";
import { h, append, badge, headRow, fillRows } from "../dom.js";
import { t, fmtNumber, fmtAgo } from "../i18n.js";
import { heading, refreshNow } from "../app.js";
import { ROLE_LABEL, labelOf, timeEl } from "../widgets.js";
import { syncRows } from "../morph.js";
import { liveThrottle } from "../live.js";

const OUTCOMES = ["ok", "failed", "denied"];
// Outcome colours: a failure or refusal never looks like success; an unknown
// outcome is grey.
const OUTCOME_BADGE = { ok: "b-green", failed: "b-red", denied: "b-amber" };
const FAMILIES = ["audit", "device", "enroll_token", "group", "package", "registry", "rollout", "session", "store",
  "task", "till_type", "token", "user"];
const KINDS = ["user", "token", "cli", "system", "anonymous", "device"];
const PER_PAGE = [50, 100, 200, 500, 1000];
const COLUMNS = 8;
// Targets that have a page of their own in the panel.
const TARGET_ROUTES = { task: "task", device: "device", rollout: "rollout", store: "store" };

/** A datetime-local value ("2026-12-03T02:00") read in the browser's time zone,
 *  as RFC 3339 with the zone's offset at that time; "" for ""; throws when invalid. */
function localRfc3339(value) {
  if (!value) return "";
  const m = /^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d)(?::(\d\d))?/.exec(value);
  const d = m ? new Date(+m[1], m[2] - 1, +m[3], +m[4], +m[5], +(m[6] || 0)) : new Date(NaN);
  if (isNaN(d.getTime())) throw new Error(t("audit.error.time"));
  const p = (n) => String(n).padStart(2, "0");
  const off = -d.getTimezoneOffset(), a = Math.abs(off);
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}` +
    `${off < 0 ? "-" : "+"}${p(Math.floor(a / 60))}:${p(a % 60)}`;
}

/** The audit log view. */
export function auditView(root, arg) {
  const apply = () => applyFilters();
  const onEnter = (e) => { if (e.key === "Enter") { e.preventDefault(); apply(); } };
  const text = (placeholder, size, listId) => h("input", { type: "search", placeholder, size, list: listId,
    onchange: apply, onkeydown: onEnter, autocomplete: "off", spellcheck: "false" });

  const user = text(t("audit.filter.user_hint"), 14);
  const action = text(t("audit.filter.action_hint"), 16, "audit-families");
  const target = text(t("audit.filter.target_hint"), 14);
  const outcome = h("select", { onchange: apply }, h("option", { value: "" }, t("audit.filter.any_outcome")),
    OUTCOMES.map((o) => h("option", { value: o }, t("audit.outcome." + o))));
  const since = h("input", { type: "datetime-local", onchange: apply, onkeydown: onEnter });
  const until = h("input", { type: "datetime-local", onchange: apply, onkeydown: onEnter });
  const perPage = h("select", { onchange: () => { page = 1; reload(); } },
    PER_PAGE.map((n) => h("option", { value: n, selected: n === 100 }, fmtNumber(n))));
  const clear = h("button", { type: "button", onclick: () => {
    for (const el of [user, action, target, since, until]) el.value = "";
    outcome.value = "";
    apply();
  } }, t("audit.filter.clear"));
  const csv = h("a", { download: "tillswarm-audit.csv", class: "small" }, t("audit.csv"));
  const message = h("div", { class: "small err", role: "alert" });
  const body = h("tbody");
  const prev = h("button", { type: "button", class: "small", onclick: () => { if (page > 1) { page--; reload(); } } }, t("audit.pager.prev"));
  const next = h("button", { type: "button", class: "small", onclick: () => { if (page < pages) { page++; reload(); } } }, t("audit.pager.next"));
  const pageInfo = h("span", { class: "small muted" });
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  const live = liveThrottle(5000, body);

  let page = 1, pages = 1;
  let filters = {}; // the filters the table shows (as sent)
  if (arg) target.value = arg;

  append(root,
    heading(t("audit.title")),
    h("div", { class: "card" },
      h("div", { class: "row" },
        h("label", { class: "f" }, t("audit.filter.user"), user),
        h("label", { class: "f" }, t("audit.filter.action"), action),
        h("label", { class: "f" }, t("audit.filter.target"), target),
        h("label", { class: "f" }, t("audit.filter.outcome"), outcome),
        h("label", { class: "f" }, t("audit.filter.since"), since),
        h("label", { class: "f" }, t("audit.filter.until"), until),
        clear),
      h("datalist", { id: "audit-families" }, FAMILIES.map((f) => h("option", { value: f }))),
      h("p", { class: "hint" }, t("audit.filter.help", { zone })),
      message),
    h("div", { class: "card" },
      h("div", { class: "tablewrap" }, h("table", { class: "dense" },
        headRow(t("audit.col.time"), t("audit.col.actor"), [t("audit.col.client"), { class: "hide-narrow" }], t("audit.col.action"),
          t("audit.col.target"), t("audit.col.outcome"), [t("audit.col.status"), { class: "num hide-narrow" }], t("audit.col.detail")),
        body)),
      h("div", { class: "pager" }, prev, next, pageInfo,
        h("label", { class: "inline small right" }, t("audit.pager.per_page"), perPage), csv)));

  /** Reads the filter inputs; throws (with a message for the user) when a time is invalid. */
  function readFilters() {
    return {
      user: user.value.trim(),
      action: action.value.trim(),
      target: target.value.trim(),
      outcome: outcome.value,
      since: localRfc3339(since.value),
      until: localRfc3339(until.value),
    };
  }

  function applyFilters() {
    let f;
    try { f = readFilters(); } catch (e) { message.textContent = e.message; return; }
    message.textContent = "";
    if (JSON.stringify(f) === JSON.stringify(filters)) return;
    filters = f;
    page = 1;
    reload();
  }

  /** The filters as query parameters, empty ones left out. */
  function filterQuery() {
    const q = {};
    for (const [k, v] of Object.entries(filters)) if (v) q[k] = v;
    return q;
  }

  function updateCsvLink() {
    const query = new URLSearchParams(filterQuery()).toString();
    // Written as href="..." so the panel's API check reads it as a GET link.
    csv.href="/api/v1/audit?format=csv&" + query;
  }

  /** A refresh asked for by this view (a filter or the page changed). */
  function reload() { refreshNow(); }

  function outcomeBadge(o) {
    const known = OUTCOMES.includes(o);
    return badge(known ? t("audit.outcome." + o) : String(o), OUTCOME_BADGE[o] || "b-gray");
  }

  function targetCell(tg) {
    if (!tg) return h("span", { class: "muted" }, "–");
    const i = tg.indexOf(":");
    const route = i > 0 ? TARGET_ROUTES[tg.slice(0, i)] : null;
    const id = i > 0 ? tg.slice(i + 1) : "";
    return route && id ? h("a", { href: `#${route}/${encodeURIComponent(id)}`, class: "mono" }, tg) : h("span", { class: "mono" }, tg);
  }

  function row(r) {
    const role = r.role ? labelOf(ROLE_LABEL, r.role) : null;
    const kind = KINDS.includes(r.actor_kind) ? t("audit.kind." + r.actor_kind) : r.actor_kind;
    return h("tr", null,
      h("td", { class: "small" }, timeEl(r.at), h("div", { class: "muted nowrap" }, fmtAgo(r.at))),
      h("td", null, h("b", null, r.actor || "–"),
        h("div", { class: "small muted" }, [role, kind].filter(Boolean).join(" · "))),
      h("td", { class: "mono small hide-narrow" }, r.client || "–"),
      h("td", null, h("span", { class: "mono" }, r.action),
        h("div", { class: "small muted mono wrap-any", title: t("audit.route") }, `${r.method || ""} ${r.route || ""}`.trim())),
      h("td", { class: "wrap-any" }, targetCell(r.target)),
      h("td", null, outcomeBadge(r.outcome)),
      h("td", { class: "num hide-narrow" }, r.status ? String(r.status) : h("span", { class: "muted", title: t("audit.status_cli") }, "–")),
      h("td", { class: "small wrap-any", style: "min-width: 120px" }, r.detail || ""));
  }

  /** No records: one row saying why (err: as an error). */
  const noRows = (text, err) => fillRows(body, [], null, null, COLUMNS, text, err ? "empty err" : "empty");

  function render(p) {
    const items = p.items || p.records || [];
    if (items.length) syncRows(body, items, (r) => r.id, row);
    else noRows(t(Object.keys(filterQuery()).length ? "audit.empty_filtered" : "audit.empty"));
    const per = Number(p.per_page) || Number(perPage.value);
    const total = p.total == null ? null : Number(p.total);
    pages = total == null ? (items.length < per ? page : page + 1) : Math.max(1, Math.ceil(total / per));
    const from = items.length ? (page - 1) * per + 1 : 0;
    pageInfo.textContent = total == null
      ? t("audit.pager.page", { page: fmtNumber(page) })
      : t("audit.pager.range", { from: fmtNumber(from), to: fmtNumber(from ? from + items.length - 1 : 0), n: total, total: fmtNumber(total) });
    prev.disabled = page <= 1;
    next.disabled = page >= pages;
  }

  try { filters = readFilters(); } catch (_) { filters = {}; }
  updateCsvLink();

  const self = {
    /** Page 1 follows new records; an older page stays still while being read. */
    get interval() { return page === 1 ? 30000 : 0; },
    /** Operators' changes are audited: page 1 reloads after them (a till's own
     *  state changes are not audited and come in floods: not those). */
    wants(c) { return page === 1 && ["task", "rollout", "package", "group", "till_type"].includes(c.kind) && live.wants(); },
    async refresh() {
      live.started();
      updateCsvLink();
      let p;
      try {
        p = await api("GET", "/api/v1/audit", { query: { ...filterQuery(), page, per_page: perPage.value } });
      } catch (e) {
        // Answers about this request show in the table; others (network,
        // login) go to the app's usual handling.
        if (e.status === 403 || e.code === "forbidden") { noRows(t("audit.denied"), true); return; }
        if (e.status === 400 || /^invalid_/.test(e.code || "")) { noRows(e.message, true); return; }
        throw e;
      }
      if (p && p.total != null && page > 1 && (page - 1) * Number(p.per_page || perPage.value) >= Number(p.total)) {
        page = 1; // the filters shrank the result below this page
        return self.refresh();
      }
      render(p || {});
    },
  };
  return self;
}
