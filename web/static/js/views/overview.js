/*
 * Overview: the stores with their till counts, and every device with
 * filters, approval and removal.
 */
import { h, append, fill, setOptions, badge, dot, headRow, emptyRow, none } from "../dom.js";
import { t, fmtTime, fmtAgo, fmtNumber } from "../i18n.js";
import { api } from "../api.js";
import { act, toast, refreshNow, heading } from "../app.js";
import { cache, loadStores, fetchAllDevices } from "../data.js";
import { DEVICE_STATE_BADGE, DEVICE_STATE_LABEL, deviceStateBadge, deviceLink } from "../widgets.js";

/** The Overview page. */
export function overviewView(root) {
  const stats = h("div", { class: "stats" });
  const storeBody = h("tbody");
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
  const deviceBody = h("tbody");
  const deviceNote = h("div", { class: "hint" });
  let devices = [];
  let limit = 500; // rows rendered; thousands of rows at once make the page sluggish

  append(root,
    heading(t("devices.overview.title")),
    stats,
    h("div", { class: "card" },
      h("h2", null, t("devices.stores.title")),
      h("div", { class: "tablewrap", style: "max-height: 300px; overflow-y: auto" },
        h("table", null,
          headRow(t("devices.col.store"), t("devices.col.address"), t("devices.col.id"), t("devices.col.time_zone"),
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
        h("table", null,
          headRow(t("devices.col.guid"), t("devices.col.name"), [t("devices.col.number"), { class: "num" }], t("devices.col.store"),
            t("devices.col.type"), t("devices.col.version"), t("devices.col.state"), t("devices.col.connection"),
            t("devices.col.last_seen"), t("devices.col.approval"), ""),
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
    fill(stats,
      stat(cache.stores.length, t("devices.stats.stores", { n: cache.stores.length })),
      stat(tills, t("devices.stats.tills", { n: tills })),
      stat(on, t("devices.stats.online"), t("devices.stats.online_title")),
      stat(pending, t(one ? "devices.stats.pending_store" : "devices.stats.pending")),
      h("div", { class: "stat" }, h("div", { class: "k" }, t(one ? "devices.stats.versions_store" : "devices.stats.versions")),
        h("div", { class: "small", style: "margin-top: 4px" }, top || t("devices.stats.no_versions"))));
  }

  function renderStores() {
    setOptions(storeFilter, [["-", t("core.no_store")], ...cache.stores.map((s) => [s.id, s.name + " (" + s.id + ")"])], t("core.all_stores"));
    fill(storeBody, cache.stores.length === 0
      ? emptyRow(6, t("devices.stores.empty"))
      : cache.stores.map((s) => h("tr", {
          class: "clickable" + (storeFilter.value === s.id ? " sel" : ""),
          onclick: () => { storeFilter.value = s.id; limit = 500; refreshNow(); },
        },
        h("td", null, h("b", null, s.name)), h("td", null, s.address || "–"), h("td", { class: "mono" }, s.id),
        h("td", { class: "small" }, s.time_zone || "–"), h("td", { class: "num" }, s.tills),
        h("td", { class: "num" }, s.online))));
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
    const rows = shown.slice(0, limit).map(deviceRow);
    fill(deviceBody, rows.length ? rows : emptyRow(11, t("devices.list.no_match")));
    const more = shown.length > limit;
    fill(deviceNote, t(more ? "devices.list.shown_first" : "devices.list.shown", { shown: shown.length, total: devices.length, limit }),
      more ? [" ", h("button", { class: "link", onclick: () => { limit += 1000; renderDevices(); } }, t("core.btn.show_more"))] : null);
  }

  function deviceRow(d) {
    const approve = d.status === "pending"
      ? h("button", { class: "small primary", onclick: (e) => act(e.target, t("devices.action.approve"), async () => {
          await api("POST", `/api/v1/devices/${encodeURIComponent(d.guid)}/approve`);
          toast("ok", t("devices.toast.approved", { name: d.name || d.guid }));
          refreshNow();
        }) }, t("devices.btn.approve"))
      : badge(t("devices.approval.approved"), "b-green");
    const remove = h("button", { class: "small danger", title: t("devices.btn.remove_title"),
      onclick: (e) => {
        if (!confirm(t("devices.confirm.remove", { name: d.name || "", guid: d.guid }))) return;
        act(e.target, t("devices.action.remove"), async () => {
          await api("DELETE", `/api/v1/devices/${encodeURIComponent(d.guid)}`);
          toast("ok", t("devices.toast.removed", { guid: d.guid }));
          refreshNow();
        });
      } }, t("devices.btn.remove"));
    return h("tr", null,
      h("td", { class: "mono guid" }, deviceLink(d.guid, d.guid)),
      h("td", null, d.name ? deviceLink(d.guid, d.name) : h("span", { class: "muted" }, d.in_registry ? "–" : t("devices.not_in_registry"))),
      h("td", { class: "num" }, d.number == null ? "–" : d.number),
      h("td", { title: d.store_address || null }, d.store_name || d.store_id || none()),
      h("td", { class: "small" }, d.till_type || "–"),
      h("td", { class: "mono" }, d.version || "–"),
      h("td", null, d.state ? deviceStateBadge(d.state) : none()),
      h("td", { class: "nowrap" }, dot(d.online), t(d.online ? "devices.online" : "devices.offline")),
      h("td", { class: "nowrap", title: d.last_seen ? fmtTime(d.last_seen) : null }, fmtAgo(d.last_seen)),
      h("td", null, approve),
      h("td", null, remove));
  }

  return {
    interval: 15000,
    async refresh() {
      const store = storeFilter.value;
      // With a store chosen only its tills are fetched; "(no store)" needs all.
      const [, list] = await Promise.all([loadStores(), fetchAllDevices(store && store !== "-" ? { store } : {})]);
      devices = list;
      renderStores();
      renderStats();
      renderDevices();
    },
  };
}
