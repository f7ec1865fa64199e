/**
 * Stores (route #stores) and one store (route #store/<id>): its tills, the
 * versions they run, what each recent task cost the store's WAN link against
 * the package size (the saving of the store swarm), and a task's progress over
 * time in the store. Charts are inline SVG (viewBox, width 100%), drawn from
 * real data only; each has a text alternative and a data table.
 */
import { api } from "../api.js";
import { h, append, fill, badge, dot, none, kv, headRow, fillRows, setOptions } from "../dom.js";
import { t, fmtNumber, fmtBytes, fmtTime, fmtAgo } from "../i18n.js";
import { heading, refreshNow } from "../app.js";
import { fetchAllDevices, loadStores } from "../data.js";
import { KIND_LABEL, STATUS_LABEL, labelOf, kindBadge, statusBadge, targetBadge, deviceStateBadge, timeEl, deviceLink } from "../widgets.js";
import { morph, syncRows } from "../morph.js";
import { liveThrottle } from "../live.js";

const COLOUR = { pkg: "#d5dae1", ok: "#2fa360", warn: "#e0a33b", bad: "#d2463d", blue: "#4c82e6", grid: "#e4e7ec",
  axis: "#9aa1ad", text: "#1c2330", muted: "#636b7a" };
const SVG_NS = "http://www.w3.org/2000/svg"; // the SVG namespace name, not a resource
const WAN_ROWS = 15; // tasks in the WAN chart until "show all"
let uid = 0;

// ---------------------------------------------------------------- helpers

/** An SVG element: attributes as given (null skipped), children as for h(). */
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v != null) el.setAttribute(k, String(v));
  for (const c of children.flat(Infinity)) {
    if (c != null && c !== false) el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** "0.08" / "0,08"; small ratios keep two significant digits. */
function fmtRatio(r) {
  return fmtNumber(r, r > 0 && r < 0.1 ? { maximumSignificantDigits: 2 } : { minimumFractionDigits: 2, maximumFractionDigits: 2 });
}

/** A duration on the time axis: "45 s", "12 min", "3 h", "2 d". */
function fmtDuration(ms) {
  const sec = Math.round(ms / 1000), one = { maximumFractionDigits: 1 };
  if (sec < 120) return t("stores.dur.s", { v: fmtNumber(sec) });
  if (sec < 7200) return t("stores.dur.min", { v: fmtNumber(Math.round(sec / 60)) });
  if (sec < 172800) return t("stores.dur.h", { v: fmtNumber(sec / 3600, one) });
  return t("stores.dur.d", { v: fmtNumber(sec / 86400, one) });
}

/** Version -> number of tills ("" for none reported), most common first. */
function versionCounts(devices) {
  const m = new Map();
  for (const d of devices) m.set(d.version || "", (m.get(d.version || "") || 0) + 1);
  return [...m.entries()].sort((a, b) => (a[0] === "") - (b[0] === "") || b[1] - a[1] || a[0].localeCompare(b[0]));
}

function versionChips(devices) {
  const vs = versionCounts(devices);
  if (!vs.length) return h("span", { class: "muted small" }, t("stores.versions.none"));
  return h("div", { class: "chips" }, vs.map(([v, n]) =>
    badge(t("stores.versions.chip", { version: v || t("stores.version.unknown"), count: fmtNumber(n) }), v ? "b-gray" : "b-amber")));
}

// ---------------------------------------------------------------- list

/** Every store with its tills, online count and the versions its tills run. */
export function storesView(root) {
  const stats = h("div", { class: "stats" });
  const body = h("tbody");
  const live = liveThrottle(10000, stats);

  append(root, heading(t("stores.title")), stats,
    h("div", { class: "card" }, h("div", { class: "tablewrap" }, h("table", null,
      headRow(t("stores.col.store"), [t("stores.col.address"), { class: "hide-narrow" }], t("stores.col.id"), [t("stores.col.zone"), { class: "hide-narrow" }],
        [t("stores.col.tills"), { class: "num" }], [t("stores.col.online"), { class: "num" }], t("stores.col.versions")),
      body))));

  function render(stores, devices) {
    const byStore = new Map();
    for (const d of devices) {
      if (!byStore.has(d.store_id)) byStore.set(d.store_id, []);
      byStore.get(d.store_id).push(d);
    }
    const stat = (v, k) => h("div", { class: "stat" }, h("div", { class: "v" }, fmtNumber(v)), h("div", { class: "k" }, k));
    const tills = stores.reduce((a, x) => a + x.tills, 0), online = stores.reduce((a, x) => a + x.online, 0);
    morph(stats, h("div", { class: "stats" }, stat(stores.length, t("stores.stat.stores", { n: stores.length })),
      stat(tills, t("stores.stat.tills", { n: tills })), stat(online, t("stores.stat.online"))));
    fillRows(body, stores, (x) => x.id, (x) => h("tr", { "data-test": "store-row" },
      h("td", null, h("a", { href: "#store/" + encodeURIComponent(x.id) }, h("b", null, x.name || x.id))),
      h("td", { class: "small hide-narrow" }, x.address || "–"),
      h("td", { class: "mono wrap-any" }, x.id),
      h("td", { class: "small hide-narrow" }, x.time_zone || "–"),
      h("td", { class: "num" }, fmtNumber(x.tills)),
      h("td", { class: "num" }, fmtNumber(x.online)),
      h("td", null, versionChips(byStore.get(x.id) || []))), 7, t("stores.empty"));
  }

  return {
    interval: 15000,
    /** A till's state, version or approval changed: counts and versions may have. */
    wants: (c) => c.kind === "device" && live.wants(),
    async refresh() {
      live.started();
      const [stores, devices] = await Promise.all([loadStores(), fetchAllDevices()]);
      render(stores, devices);
    },
  };
}

// ---------------------------------------------------------------- charts

/** One row per task: the package size (grey) and the WAN bytes into the store
 *  (coloured by the ratio), each row on its own scale; each row links to its task. */
function wanChart(tasks) {
  const W = 800, ROW = 28, TOP = 6, X0 = 222, BAR = 270, X1 = X0 + BAR + 12;
  const id = "wan-title-" + ++uid;
  const rows = tasks.map((k, i) => {
    const y = TOP + i * ROW;
    const pkg = Number(k.package_size) || 0, wan = Number(k.wan_bytes) || 0;
    const scale = Math.max(pkg, wan) || 1, r = k.wan_ratio;
    const colour = r == null ? COLOUR.blue : r <= 1.05 ? COLOUR.ok : r <= 1.5 ? COLOUR.warn : COLOUR.bad;
    const ratio = r == null ? t("stores.wan.no_ratio") : t("stores.wan.ratio", { ratio: fmtRatio(r) });
    const name = `#${k.task_id} ${k.package_name} ${k.package_version}`;
    const mark = X0 + BAR * pkg / scale;
    return s("a", { href: "#task/" + k.task_id },
      s("title", null, t("stores.wan.row", { task: k.task_id, wan: fmtBytes(wan), size: fmtBytes(pkg), ratio, n: k.tills })),
      s("text", { x: 0, y: y + 18, fill: COLOUR.text, "font-size": 12 }, name.length > 34 ? name.slice(0, 33) + "…" : name),
      pkg ? s("rect", { x: X0, y: y + 4, width: (mark - X0).toFixed(1), height: 20, rx: 3, fill: COLOUR.pkg }) : null,
      s("rect", { x: X0, y: y + 9, width: (wan ? Math.max(1, BAR * wan / scale) : 0).toFixed(1), height: 10, rx: 2, fill: colour }),
      pkg && wan > pkg ? s("line", { x1: mark, x2: mark, y1: y + 2, y2: y + 26, stroke: COLOUR.text, "stroke-width": 2 }) : null,
      s("text", { x: X1, y: y + 18, fill: r != null && r > 1.05 ? COLOUR.bad : COLOUR.text, "font-size": 12, "font-weight": 600 }, ratio),
      s("text", { x: W, y: y + 18, fill: COLOUR.muted, "font-size": 11, "text-anchor": "end" }, `${fmtBytes(wan)} / ${fmtBytes(pkg)}`));
  });
  return s("svg", { viewBox: `0 0 ${W} ${TOP + tasks.length * ROW + 4}`, width: "100%", "aria-labelledby": id,
    style: "display: block; max-width: 1000px", "font-family": "system-ui, sans-serif" },
  s("title", { id }, t("stores.wan.chart_title", { n: tasks.length })), rows);
}

/** A round step (ms) for a time axis spanning `span` ms: at most about 6 ticks. */
function timeStep(span) {
  for (const sec of [10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800]) {
    if (span / (sec * 1000) <= 6) return sec * 1000;
  }
  return Math.ceil(span / 6 / 86400000) * 86400000;
}

/** Step lines (series: { times (sorted ms), colour, dash }) of tills over time
 *  from t0 to t1, y from 0 to total; label: the text alternative. */
function progressChart(series, total, t0, t1, label) {
  const W = 800, H = 250, L = 46, R = 14, T = 12, B = 32;
  const pw = W - L - R, ph = H - T - B, span = Math.max(60000, t1 - t0), N = Math.max(1, total);
  const x = (ms) => (L + Math.min(1, Math.max(0, (ms - t0) / span)) * pw).toFixed(1);
  const y = (n) => (T + ph - (n / N) * ph).toFixed(1);
  const parts = [s("title", null, label)];
  const yStep = Math.max(1, Math.ceil(N / 5)), yTicks = [];
  for (let n = 0; n < N; n += yStep) yTicks.push(n);
  yTicks.push(N);
  for (const n of yTicks) {
    parts.push(s("line", { x1: L, x2: W - R, y1: y(n), y2: y(n), stroke: COLOUR.grid }),
      s("text", { x: L - 6, y: +y(n) + 4, "text-anchor": "end", "font-size": 11, fill: COLOUR.muted }, fmtNumber(n)));
  }
  const xStep = timeStep(span);
  for (let d = 0; d <= span; d += xStep) {
    const edge = +x(t0 + d) > W - R - 24; // the last label stays inside the chart
    parts.push(s("line", { x1: x(t0 + d), x2: x(t0 + d), y1: T + ph, y2: T + ph + 4, stroke: COLOUR.axis }),
      s("text", { x: edge ? W - R : x(t0 + d), y: H - B + 18, "text-anchor": edge ? "end" : "middle", "font-size": 11, fill: COLOUR.muted },
        d === 0 ? "0" : fmtDuration(d)));
  }
  parts.push(s("line", { x1: L, x2: W - R, y1: T + ph, y2: T + ph, stroke: COLOUR.axis }),
    s("line", { x1: L, x2: L, y1: T, y2: T + ph, stroke: COLOUR.axis }));
  for (const { times, colour, dash } of series) {
    let d = `M${x(t0)},${y(0)}`;
    times.forEach((ms, i) => { d += ` H${x(ms)} V${y(i + 1)}`; });
    parts.push(s("path", { d: d + ` H${x(t1)}`, fill: "none", stroke: colour, "stroke-width": 2.5,
      "stroke-dasharray": dash || null, "stroke-linejoin": "round" }));
  }
  return s("svg", { viewBox: `0 0 ${W} ${H}`, width: "100%", role: "img", "aria-label": label,
    style: "display: block; max-width: 1000px", "font-family": "system-ui, sans-serif" }, parts);
}

/** A legend: [colour, text] pairs as coloured dots. */
function legend(items) {
  return h("div", { class: "row small", style: "gap: 14px; margin: 4px 0 6px" }, items.map(([colour, text]) =>
    h("span", { class: "nowrap" }, h("span", { class: "dot", style: `background: ${colour}` }), text)));
}

// ---------------------------------------------------------------- detail

/** One store: tills, versions, WAN per task and a task's progress over time. */
export function storeDetailView(root, arg) {
  const id = arg || "";
  const title = h("span", null, t("stores.store"));
  const summary = h("div", { class: "card" }), versionsBody = h("tbody", { "data-test": "store-versions" });
  const tillsBody = h("tbody", { "data-test": "store-tills" });
  const wanBox = h("div"), wanBody = h("tbody");
  const wanMore = h("button", { type: "button", class: "link", onclick: () => { showAll = !showAll; renderWan(); } });
  const wanHint = h("p", { class: "hint" }, t("stores.wan.hint"), " ", wanMore);
  const picker = h("select", { onchange: () => { picked = picker.value; refreshNow(); } });
  const progBox = h("div"), progBody = h("tbody"), progText = h("p", { class: "small" });
  const table = (head, body) => h("div", { class: "tablewrap" }, h("table", { class: "dense" }, head, body));
  const num = (k) => [t(k), { class: "num" }];
  const live = liveThrottle(3000, summary);

  let store = null, devices = [], guids = new Set(), wan = null, wanError = null, task = null, taskError = null;
  let picked = "", showAll = false;

  append(root,
    heading(title, " ", h("span", { class: "muted mono small" }, id), " ", h("a", { href: "#stores", class: "small" }, t("stores.back"))),
    summary,
    h("div", { class: "card" }, h("h2", null, t("stores.wan.title")),
      legend([[COLOUR.pkg, t("stores.wan.legend_pkg")], [COLOUR.ok, t("stores.wan.legend_wan")],
        [COLOUR.warn, t("stores.wan.legend_more")], [COLOUR.bad, t("stores.wan.legend_much")]]),
      wanBox, wanHint,
      h("details", null, h("summary", { class: "small muted" }, t("stores.as_table")),
        table(headRow(t("stores.col.task"), [t("stores.col.kind"), { class: "hide-narrow" }], t("stores.col.status"), t("stores.col.package"),
          num("stores.col.tills"), num("stores.col.size"), num("stores.col.wan"), num("stores.col.ratio"),
          [t("stores.col.created"), { class: "hide-narrow" }]),
        wanBody))),
    h("div", { class: "card" }, h("h2", null, t("stores.progress.title")),
      h("div", { class: "row" }, h("label", { class: "f" }, t("stores.progress.task"), picker)),
      progBox, progText,
      h("details", null, h("summary", { class: "small muted" }, t("stores.as_table")),
        table(headRow(t("stores.col.till"), t("stores.col.state"), t("stores.col.started"), t("stores.col.finished")), progBody))),
    h("div", { class: "card" }, h("h2", null, t("stores.tills.title")),
      table(headRow(num("stores.col.number"), t("stores.col.name"), t("stores.col.version"), t("stores.col.state"),
        t("stores.col.online"), [t("stores.col.ip"), { class: "hide-narrow" }], [t("stores.col.disk"), { class: "num hide-narrow" }],
        num("stores.col.peers"), t("stores.col.seen")), tillsBody)),
    h("div", { class: "card" }, h("h2", null, t("stores.versions.title")),
      table(headRow(t("stores.col.version"), num("stores.col.tills"), t("stores.col.share")), versionsBody)));

  function renderSummary() {
    title.textContent = store ? store.name : t("stores.store");
    morph(summary, h("div", { class: "card" }, !store ? h("div", { class: "err" }, t("stores.not_found", { id }))
      : h("div", { class: "row", style: "gap: 28px; align-items: flex-start" },
        kv(t("stores.col.address"), store.address || "–"), kv(t("stores.col.zone"), store.time_zone || "–"),
        kv(t("stores.col.tills"), fmtNumber(store.tills)), kv(t("stores.col.online"), fmtNumber(store.online)),
        kv(t("stores.col.versions"), versionChips(devices)))));
  }

  function renderTills() {
    const total = devices.length;
    fillRows(versionsBody, versionCounts(devices), ([v]) => "v:" + v, ([v, n]) => {
      const bar = h("span", { class: "g" });
      bar.style.width = (100 * n / total).toFixed(1) + "%";
      return h("tr", null, h("td", { class: "mono" }, v || h("span", { class: "muted" }, t("stores.version.unknown"))),
        h("td", { class: "num" }, fmtNumber(n)),
        h("td", null, h("div", { class: "bar", title: fmtNumber(n / total, { style: "percent" }) }, bar)));
    }, 3, t("stores.tills.empty"));
    fillRows(tillsBody, devices, (d) => d.guid, (d) => h("tr", null,
      h("td", { class: "num" }, d.number == null ? "–" : String(d.number)),
      h("td", null, deviceLink(d.guid, d.name || d.guid.slice(0, 8) + "…"),
        d.status === "pending" ? [" ", badge(t("stores.pending"), "b-amber")] : null),
      h("td", { class: "mono" }, d.version || "–"),
      h("td", null, d.state ? deviceStateBadge(d.state) : none()),
      h("td", { class: "nowrap" }, dot(d.online), t(d.online ? "stores.online" : "stores.offline")),
      h("td", { class: "mono small hide-narrow" }, d.ip || "–"),
      h("td", { class: "num nowrap hide-narrow" }, d.free_disk_bytes == null ? "–" : fmtBytes(d.free_disk_bytes)),
      h("td", { class: "num" }, d.connected_peers == null ? none()
        : d.connected_peers === 0 && total > 1 ? badge("0", "b-amber") : fmtNumber(d.connected_peers)),
      h("td", { class: "small nowrap", title: d.last_seen ? fmtTime(d.last_seen) : null }, fmtAgo(d.last_seen))), 9, t("stores.tills.empty"));
  }

  function renderWan() {
    const tasks = wan ? wan.tasks || [] : [];
    wanMore.hidden = tasks.length <= WAN_ROWS;
    wanMore.textContent = showAll ? t("stores.wan.fewer") : t("stores.wan.all", { n: tasks.length });
    wanHint.hidden = tasks.length === 0;
    morph(wanBox, h("div", null, wanError ? h("p", { class: "err" }, t("stores.wan.error", { message: wanError }))
      : tasks.length ? wanChart(showAll ? tasks : tasks.slice(0, WAN_ROWS)) : h("p", { class: "empty" }, t("stores.wan.empty"))));
    syncRows(wanBody, tasks, (k) => k.task_id, (k) => h("tr", null,
      h("td", null, h("a", { href: "#task/" + k.task_id }, "#" + k.task_id)),
      h("td", { class: "hide-narrow" }, kindBadge(k.kind)), h("td", null, statusBadge(k.status)),
      h("td", null, k.package_name, " ", h("span", { class: "mono" }, k.package_version)),
      h("td", { class: "num" }, fmtNumber(k.tills)),
      h("td", { class: "num nowrap" }, fmtBytes(k.package_size)),
      h("td", { class: "num nowrap", title: k.wire_size == null ? null : t("stores.wan.wire", { size: fmtBytes(k.wire_size) }) },
        fmtBytes(k.wan_bytes)),
      h("td", { class: "num nowrap" }, k.wan_ratio == null ? "–" : t("stores.wan.ratio", { ratio: fmtRatio(k.wan_ratio) })),
      h("td", { class: "small hide-narrow" }, timeEl(k.created, true))));
  }

  /** The task to chart: the user's pick, else the newest running one, else the newest. */
  function chosenTask() {
    const tasks = wan ? wan.tasks || [] : [];
    setOptions(picker, tasks.map((k) => [String(k.task_id),
      `#${k.task_id} · ${labelOf(KIND_LABEL, k.kind)} · ${k.package_name} ${k.package_version} · ${labelOf(STATUS_LABEL, k.status)}`]));
    const pick = tasks.find((k) => String(k.task_id) === picked) || tasks.find((k) => k.status === "running") || tasks[0];
    picker.value = pick ? String(pick.task_id) : "";
    picker.disabled = tasks.length === 0;
    return pick ? pick.task_id : null;
  }

  function renderProgress() {
    const empty = (text) => {
      morph(progBox, h("div", null, h("p", { class: "empty" }, text)));
      syncRows(progBody, [], null, null);
      progText.textContent = "";
    };
    if (taskError) return empty(taskError);
    if (!task) return empty(t(wanError ? "stores.progress.no_list" : "stores.progress.none"));
    const mine = (task.target_details || []).filter((x) => x.store_id === id);
    if (!mine.length) return empty(t(task.status === "scheduled" ? "stores.progress.scheduled" : "stores.progress.no_tills"));
    if (!task.activated) return empty(t("stores.progress.not_started"));
    // Done as the task counts it; failed apart, never as done.
    const doneStates = task.kind === "download" ? ["downloaded", "installed", "skipped"] : ["installed", "skipped"];
    const times = (pick) => mine.map(pick).filter((v) => v != null).map(Date.parse).filter((v) => !isNaN(v)).sort((a, b) => a - b);
    const started = times((x) => x.started);
    const done = times((x) => doneStates.includes(x.state) ? x.finished : null);
    const failed = times((x) => x.state === "failed" ? x.finished : null);
    const t0 = Date.parse(task.activated);
    const last = Math.max(t0, ...started, ...done, ...failed);
    const t1 = task.completed ? Math.max(last, Date.parse(task.completed) || last) : Math.max(last, Date.now());
    const text = t("stores.progress.summary", { task: task.id, done: fmtNumber(done.length), n: mine.length,
      started: fmtNumber(started.length), time: fmtDuration(t1 - t0) }) +
      (failed.length ? " " + t("stores.progress.failed_n", { count: fmtNumber(failed.length) }) : "");
    const series = [{ times: started, colour: COLOUR.blue, dash: "6 4" }, { times: done, colour: COLOUR.ok }];
    if (failed.length) series.push({ times: failed, colour: COLOUR.bad });
    morph(progBox, h("div", null,
      legend([[COLOUR.blue, t("stores.progress.started")], [COLOUR.ok, t("stores.progress.done")],
        failed.length ? [COLOUR.bad, t("stores.progress.failed")] : null].filter(Boolean)),
      progressChart(series, mine.length, t0, t1, text)));
    progText.textContent = text;
    const at = (v) => v ? [timeEl(v, true), h("span", { class: "muted" }, " (+" + fmtDuration(Math.max(0, Date.parse(v) - t0)) + ")")] : "–";
    syncRows(progBody, mine, (x) => x.device, (x) => h("tr", null,
      h("td", null, deviceLink(x.device, x.name || x.device.slice(0, 8) + "…"), x.number != null ? h("span", { class: "muted" }, " #" + x.number) : null),
      h("td", null, targetBadge(x.state)),
      h("td", { class: "small nowrap" }, at(x.started)),
      h("td", { class: "small nowrap" }, at(x.finished))));
  }

  const self = {
    interval: 15000,
    /** This store's tills, their progress, or a task listed here changed. */
    wants(c) {
      const mine = c.kind === "device" || c.kind === "target" ? guids.has(c.guid)
        : c.kind === "task" && !!wan && (wan.tasks || []).some((k) => k.task_id === c.task_id);
      return mine && live.wants();
    },
    async refresh() {
      live.started();
      const [stores, devs, w] = await Promise.all([
        loadStores(),
        fetchAllDevices({ store: id }),
        api("GET", `/api/v1/stores/${encodeURIComponent(id)}/wan`, { query: { limit: 50 } }).catch((e) => {
          if (e.code === "network") throw e;
          return { error: e.message || String(e) };
        }),
      ]);
      store = stores.find((x) => x.id === id) || null;
      devices = devs.sort((a, b) => (a.number ?? 1e9) - (b.number ?? 1e9) || String(a.name || a.guid).localeCompare(String(b.name || b.guid)));
      guids = new Set(devs.map((d) => d.guid));
      wan = w.error ? null : w;
      wanError = w.error || null;
      const taskId = chosenTask();
      task = null;
      taskError = null;
      if (taskId != null) {
        try {
          task = await api("GET", `/api/v1/tasks/${taskId}`);
        } catch (e) {
          if (e.code === "network") throw e;
          taskError = e.message || String(e);
        }
      }
      self.interval = task && task.status === "running" ? 5000 : 15000;
      renderSummary();
      renderTills();
      renderWan();
      renderProgress();
    },
  };
  return self;
}
