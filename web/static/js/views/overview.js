/*
 * Overview: the stores with their till counts, and every device with
 * filters, approval and removal (admins). Rows update in place.
 */
import { h, append, setOptions, badge, dot, headRow, fillRows, none, rowKey } from "../dom.js";
import { t, fmtTime, fmtAgo, fmtNumber } from "../i18n.js";
import { api } from "../api.js";
import { act, toast, refreshNow, heading, isAdmin } from "../app.js";
import { cache, loadStores, fetchAllDevices } from "../data.js";
import { DEVICE_STATE_BADGE, DEVICE_STATE_LABEL, deviceStateBadge, deviceLink, guidEl } from "../widgets.js";
import { morph } from "../morph.js";
import { liveThrottle } from "../live.js";

/** The Overview page. */
export function overviewView(root) {
  const admin = isAdmin();
  const stats = h("div", { class: "stats" });
  const storeBody = h("tbody", { "data-test": "overview-stores" });
  const storeFilter = h("select", { onchange: () => { limit = 500; refreshNow(); } });
  const stateFilter = h("select", { onchange: () => { limit = 500; renderDevices(); } },
    h("option", { value: "" }, t("devices.filter.all")),
    h("option", { value: "pending" }, t("devices.filter.pending")),
    h("option", { value: "online" }, t("devices.filter.online")),
    h("option", { value: "offline" }, t("devices.filter.offline")),
    Object.keys(DEVICE_STATE_BADGE).map((s) => h("option", { value: "state:" + s },
      t("devices.filter.state", { state: t(DEVICE_STATE_LABEL[s]) }))));
  const search = h("input", { type: "search", placeholder: t("devices.filter.search_placeholder"), size: 34,
    oninput: () => { limit = 500; renderDevices(); } });
  const deviceBody = h("tbody", { "data-test": "overview-devices" });
  const deviceNote = h("div", { class: "hint" });
  const live = liveThrottle(3000, stats);
  let devices = [], byGuid = new Map();
  let limit = 500; // rows rendered; thousands of rows at once make the page sluggish

  append(root,
    heading(t("devices.overview.title")),
    stats,
    h("div", { class: "card" },
      h("h2", null, t("devices.stores.title")),
      h("div", { class: "tablewrap", style: "max-height: 300px; overflow-y: auto" },
        h("table", null,
          headRow(t("devices.col.store"), [t("devices.col.address"), { class: "hide-narrow" }], t("devices.col.id"),
            [t("devices.col.time_zone"), { class: "hide-narrow" }],
            [t("devices.col.tills"), { class: "num" }], [t("devices.col.online"), { class: "num" }]),
          storeBody)),
      h("p", { class: "hint" }, t("devices.stores.hint"))),
    h("div", { class: "card" },
      h("h2", null, t("devices.list.title")),
      h("div", { class: "row" },
        h("label", { class: "f" }, t("devices.filter.store"), storeFilter),
        h("label", { class: "f" }, t("devices.filter.show"), stateFilter),
        h("label", { class: "f" }, t("devices.filter.search"), search)),
      h("div", { class: "tablewrap", style: "margin-top: 10px" },
        h("table", { "data-test": "devices-table" },
          headRow(t("devices.col.guid"), t("devices.col.name"), [t("devices.col.number"), { class: "num hide-narrow" }], t("devices.col.store"),
            [t("devices.col.type"), { class: "hide-narrow" }], t("devices.col.version"), t("devices.col.state"), t("devices.col.connection"),
            t("devices.col.approval"), admin ? "" : null),
          deviceBody)),
      deviceNote));

  function renderStats() {
    const tills = cache.stores.reduce((a, s) => a + s.tills, 0);
    const on = cache.stores.reduce((a, s) => a + s.online, 0);
    const pending = devices.filter((d) => d.status === "pending").length;
    const versions = new Map();
    for (const d of devices) if (d.version) versions.set(d.version, (versions.get(d.version) || 0) + 1);
    const top = [...versions.entries()].sort((a, b) => b[1] - a[1]).slice(0, 4)
      .map(([v, n]) => v + " × " + fmtNumber(n)).join(", ");
    const one = !!storeFilter.value;
    const stat = (v, k, title) => h("div", { class: "stat", title }, h("div", { class: "v" }, fmtNumber(v)), h("div", { class: "k" }, k));
    morph(stats, h("div", { class: "stats" },
      stat(cache.stores.length, t("devices.stats.stores", { n: cache.stores.length })),
      stat(tills, t("devices.stats.tills", { n: tills })),
      stat(on, t("devices.stats.online"), t("devices.stats.online_title")),
      stat(pending, t(one ? "devices.stats.pending_store" : "devices.stats.pending")),
      h("div", { class: "stat" }, h("div", { class: "k" }, t(one ? "devices.stats.versions_store" : "devices.stats.versions")),
        h("div", { class: "small", style: "margin-top: 4px" }, top || t("devices.stats.no_versions")))));
  }

  function renderStores() {
    setOptions(storeFilter, [["-", t("core.no_store")], ...cache.stores.map((s) => [s.id, s.name + " (" + s.id + ")"])], t("core.all_stores"));
    // The store's name is a button that filters the devices below by it.
    fillRows(storeBody, cache.stores, (s) => s.id, (s) => h("tr", { class: storeFilter.value === s.id ? "sel" : null },
      h("td", null, h("button", { class: "linklike", "aria-pressed": storeFilter.value === s.id ? "true" : "false",
        title: t("devices.stores.filter_title"), onclick: (e) => { storeFilter.value = rowKey(e); limit = 500; refreshNow(); } }, s.name)),
      h("td", { class: "hide-narrow" }, s.address || "–"), h("td", { class: "mono" }, s.id),
      h("td", { class: "small hide-narrow" }, s.time_zone || "–"), h("td", { class: "num" }, s.tills),
      h("td", { class: "num" }, s.online)), 6, t("devices.stores.empty"));
  }

  function matches(d, text, show) {
    if (show === "pending" && d.status !== "pending") return false;
    if (show === "online" && !d.online) return false;
    if (show === "offline" && d.online) return false;
    if (show.startsWith("state:") && d.state !== show.slice(6)) return false;
    if (storeFilter.value === "-" && d.store_id != null) return false;
    if (!text) return true;
    return [d.guid, d.name, d.store_name, d.store_id, d.version, d.ip, d.till_type, d.number]
      .some((f) => f != null && String(f).toLowerCase().includes(text));
  }

  function renderDevices() {
    const text = search.value.trim().toLowerCase();
    const shown = devices.filter((d) => matches(d, text, stateFilter.value));
    fillRows(deviceBody, shown.slice(0, limit), (d) => d.guid, deviceRow, admin ? 10 : 9, t("devices.list.no_match"));
    const more = shown.length > limit;
    morph(deviceNote, h("div", { class: "hint" },
      t(more ? "devices.list.shown_first" : "devices.list.shown", { shown: shown.length, total: devices.length, limit }),
      more ? [" ", h("button", { class: "link", onclick: () => { limit += 1000; renderDevices(); } }, t("core.btn.show_more"))] : null));
  }

  /** Approves the device of the row (looked up at click time). */
  function approve(e) {
    const d = byGuid.get(rowKey(e));
    if (!d) return;
    act(e.currentTarget, t("devices.action.approve"), async () => {
      await api("POST", `/api/v1/devices/${encodeURIComponent(d.guid)}/approve`);
      toast("ok", t("devices.toast.approved", { name: d.name || d.guid }));
      refreshNow();
    });
  }

  /** Removes the device of the row (looked up at click time), after asking. */
  function remove(e) {
    const d = byGuid.get(rowKey(e));
    if (!d || !confirm(t("devices.confirm.remove", { name: d.name || "", guid: d.guid }))) return;
    act(e.currentTarget, t("devices.action.remove"), async () => {
      await api("DELETE", `/api/v1/devices/${encodeURIComponent(d.guid)}`);
      toast("ok", t("devices.toast.removed", { guid: d.guid }));
      refreshNow();
    });
  }

  function deviceRow(d) {
    const approval = d.status === "pending"
      ? (admin ? h("button", { class: "small primary", "data-test": "device-approve", onclick: approve }, t("devices.btn.approve"))
        : badge(t("devices.approval.pending"), "b-amber"))
      : badge(t("devices.approval.approved"), "b-green");
    return h("tr", { "data-test": "device-row" },
      h("td", { class: "guid" }, guidEl(d.guid, true)),
      h("td", null, d.name ? deviceLink(d.guid, d.name) : h("span", { class: "muted" }, d.in_registry ? "–" : t("devices.not_in_registry"))),
      h("td", { class: "num hide-narrow" }, d.number == null ? "–" : d.number),
      h("td", { title: d.store_address || null }, d.store_name || d.store_id || none()),
      h("td", { class: "small hide-narrow" }, d.till_type || "–"),
      h("td", { class: "mono" }, d.version || "–"),
      h("td", null, d.state ? deviceStateBadge(d.state) : none()),
      h("td", { class: "nowrap", title: d.last_seen ? t("devices.last_seen_title", { ago: fmtAgo(d.last_seen), time: fmtTime(d.last_seen) }) : null },
        dot(d.online), t(d.online ? "devices.online" : "devices.offline"), h("div", { class: "small muted" }, fmtAgo(d.last_seen))),
      h("td", null, approval),
      admin ? h("td", null, h("button", { class: "small danger", title: t("devices.btn.remove_title"), "data-test": "device-remove",
        onclick: remove }, t("devices.btn.remove"))) : null);
  }

  return {
    interval: 15000,
    /** Devices came, went, changed state or version: counts and rows may have. */
    wants: (c) => c.kind === "device" && live.wants(),
    async refresh() {
      live.started();
      const store = storeFilter.value;
      // With a store chosen only its tills are fetched; "(no store)" needs all.
      const [, list] = await Promise.all([loadStores(), fetchAllDevices(store && store !== "-" ? { store } : {})]);
      devices = list;
      byGuid = new Map(list.map((d) => [d.guid, d]));
      renderStores();
      renderStats();
      renderDevices();
    },
  };
}
