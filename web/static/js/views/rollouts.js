/*
 * Rollouts: the list and the New rollout form (the recommended template or
 * custom waves). One rollout's page is js/views/rollout.js.
 */
import { h, append, setOptions, headRow, fillRows } from "../dom.js";
import { t } from "../i18n.js";
import { api } from "../api.js";
import { act, toast, refreshNow, heading, go, canOperate } from "../app.js";
import { cache, loadPackages, loadGroups, loadStores } from "../data.js";
import { KIND_LABEL, labelOf, timeEl, packageOptions, groupOptions, intOf, pager } from "../widgets.js";
import { zonedTimeInput, windowPicker } from "../pickers.js";
import { ROLLOUT_LABEL, rolloutBadge, waveProgress } from "../waves.js";
import { liveThrottle } from "../live.js";

/** The rollout list and the New rollout form. */
export function rolloutsView(root) {
  const stateF = h("select", { onchange: () => { page = 1; refreshNow(); } }, h("option", { value: "" }, t("rollouts.filter.all_states")),
    Object.keys(ROLLOUT_LABEL).map((s) => h("option", { value: s }, t(ROLLOUT_LABEL[s]))));
  const body = h("tbody", { "data-test": "rollouts-rows" });
  const pagerEl = h("div", { class: "pager" });
  const form = canOperate() ? newRolloutForm() : null;
  const live = liveThrottle(2000, body);
  let page = 1, ticks = 0;
  const PER_PAGE = 20;

  append(root, heading(t("rollouts.title")),
    h("div", { class: "card" },
      h("div", { class: "row" }, h("label", { class: "f" }, t("rollouts.col.state"), stateF)),
      h("div", { class: "tablewrap", style: "margin-top: 10px" }, h("table", { "data-test": "rollouts-table" },
        headRow(["#", { class: "num" }], t("rollouts.col.rollout"), t("rollouts.col.state"), t("rollouts.col.waves"),
          [t("rollouts.col.created"), { class: "hide-narrow" }]),
        body)),
      pagerEl),
    form ? form.el : null);

  function render(p) {
    fillRows(body, p.items, (r) => r.id, (r) => h("tr", { class: r.state === "waiting_for_approval" ? "attention" : null, "data-test": "rollout-row" },
      h("td", { class: "num" }, h("a", { href: "#rollout/" + r.id }, "#" + r.id)),
      h("td", null, h("a", { href: "#rollout/" + r.id }, h("b", { class: "wrap-any" }, r.name)),
        h("div", { class: "small muted" }, r.package_name + " " + r.package_version)),
      h("td", null, rolloutBadge(r.state),
        r.reason ? h("div", { class: "small wrap-any" + (r.state === "paused" ? " err" : ""), style: "max-width: 300px" }, r.reason) : null),
      h("td", null, r.waves.map((w) => h("div", { class: "row", style: "gap: 4px 8px; align-items: center" },
        h("span", { class: "small", style: "min-width: 80px" + (w.index === r.current_wave ? "; font-weight: 600" : "") }, w.name),
        waveProgress(w)))),
      h("td", { class: "small hide-narrow" }, r.created_by, h("div", null, timeEl(r.created, true)))),
    5, t("rollouts.list.empty"));
    const pages = Math.max(1, Math.ceil(p.total / PER_PAGE));
    pager(pagerEl, page, pages, t("rollouts.count", { n: p.total }), (to) => { page = to; refreshNow(); });
  }

  return {
    interval: 3000,
    /** Rollouts and the tasks of their waves; the form's lists on package and group changes. */
    wants(c) {
      if (c.kind === "package" || c.kind === "group") { ticks = 0; return true; }
      return (c.kind === "rollout" || c.kind === "task") && live.wants();
    },
    async refresh() {
      live.started();
      if (ticks++ % 10 === 0) { await Promise.all([loadPackages(), loadGroups(), loadStores()]); if (form) form.reload(); }
      const p = await api("GET", "/api/v1/rollouts", { query: { state: stateF.value, page, per_page: PER_PAGE } });
      if (p.items.length === 0 && page > 1 && p.total > 0) { page = Math.ceil(p.total / PER_PAGE); return; }
      render(p);
    },
  };
}

/** The New rollout card: the recommended template or custom waves.
 *  reload() refreshes its package, group and time zone lists from the cache. */
function newRolloutForm() {
  const num = (value, placeholder, width) => h("input", { type: "number", step: 1, value, placeholder, style: `width: ${width || 80}px` });
  const pkg = h("select");
  const name = h("input", { type: "text", size: 30, maxlength: 64, placeholder: t("rollouts.form.name_placeholder") });
  const useTpl = h("input", { type: "radio", name: "rollout-mode", checked: true, onchange: sync });
  const useCustom = h("input", { type: "radio", name: "rollout-mode", onchange: sync });
  const pilotNo = num(1), soak = num(60), approval = h("input", { type: "checkbox", checked: true });
  const win = windowPicker();
  const limit = num(1), draft = h("input", { type: "checkbox", onchange: sync });
  const msg = h("div", { class: "small err" });
  const create = h("button", { type: "submit", class: "primary", "data-test": "new-rollout-submit" });
  const waves = []; // the custom wave rows: { el, group, reloadZones, get }
  const wavesBox = h("div", { class: "steps" });
  const tplBox = h("div", null,
    h("div", { class: "row" }, h("label", { class: "f" }, t("rollouts.form.pilot_number"), pilotNo),
      h("label", { class: "f" }, t("rollouts.form.soak"), soak),
      h("label", { class: "inline" }, approval, t("rollouts.form.pilot_approval"))),
    h("p", { class: "hint" }, t("rollouts.form.template_hint")));
  const customBox = h("div", null, wavesBox,
    h("div", { class: "row" }, h("button", { onclick: () => addWave() }, t("rollouts.form.add_wave")),
      h("span", { class: "hint" }, t("rollouts.form.thresholds_hint"))));

  const el = h("form", { class: "card", novalidate: true, "data-test": "new-rollout-form", onsubmit: (e) => { e.preventDefault(); submit(); } },
    h("h2", null, t("rollouts.form.title")),
    h("div", { class: "row" }, h("label", { class: "f" }, t("tasks.col.package"), pkg), h("label", { class: "f" }, t("rollouts.form.name"), name)),
    h("div", { class: "row", style: "gap: 18px" }, h("label", { class: "inline" }, useTpl, h("b", null, t("rollouts.form.template"))),
      h("label", { class: "inline" }, useCustom, t("rollouts.form.custom"))),
    h("div", { style: "margin-top: 8px" }, tplBox, customBox),
    h("div", { class: "row" }, win.el),
    h("div", { class: "row" },
      h("label", { class: "f", title: t("rollouts.form.store_limit_title") }, t("rollouts.form.store_limit"), limit),
      h("label", { class: "inline" }, draft, t("rollouts.form.draft")), create, msg));
  addWave();
  sync();

  function sync() {
    tplBox.style.display = useTpl.checked ? "" : "none";
    customBox.style.display = useTpl.checked ? "none" : "";
    create.textContent = t(draft.checked ? "rollouts.form.save_draft" : "rollouts.form.create_start");
  }

  /** Adds a custom wave row; its get() gives a WaveSpec or throws. */
  function addWave() {
    const wname = h("input", { type: "text", size: 14, maxlength: 64, value: t("rollouts.form.wave_default", { n: waves.length + 1 }) });
    const kind = h("select", null, Object.keys(KIND_LABEL).map((k) => h("option", { value: k, selected: k === "update" }, t(KIND_LABEL[k]))));
    const ttype = h("select", { onchange: syncRow }, h("option", { value: "group" }, t("rollouts.form.targets_group")),
      h("option", { value: "till_number" }, t("rollouts.form.targets_till_number")),
      h("option", { value: "stores_percent" }, t("rollouts.form.targets_stores_percent")));
    const group = h("select"), tval = num(1);
    const atype = h("select", { onchange: syncRow }, h("option", { value: "immediately" }, t("schedule.activation.now")),
      h("option", { value: "at" }, t("rollouts.form.activation_at")), h("option", { value: "in_window" }, t("rollouts.form.activation_window")));
    const when = zonedTimeInput();
    const none = t("rollouts.form.none_placeholder");
    const success = num(100), maxFailed = num("", none), maxPct = num("", none), soakMin = num(0);
    const appr = h("input", { type: "checkbox" }), perStore = num("", t("rollouts.form.half_placeholder"), 90), retries = num("", "0");
    when.info.style.flexBasis = "100%"; // its own line in the row
    const row = { group, reloadZones: when.reload };
    setOptions(group, groupOptions(), t("tasks.new.choose_group"));
    function syncRow() {
      group.style.display = ttype.value === "group" ? "" : "none";
      tval.style.display = ttype.value === "group" ? "none" : "";
      for (const x of [when.at, when.zone, when.info]) x.style.display = atype.value === "at" ? "" : "none";
    }
    row.el = h("div", { class: "step" },
      h("div", { class: "row" }, h("label", { class: "f" }, t("rollouts.form.wave_name"), wname), h("label", { class: "f" }, t("tasks.col.kind"), kind),
        h("button", { class: "small danger right", onclick: () => { waves.splice(waves.indexOf(row), 1); row.el.remove(); } },
          t("rollouts.form.remove_wave"))),
      h("div", { class: "row" }, h("label", { class: "f" }, t("rollouts.wave.tills"), ttype), group, tval),
      h("div", { class: "row" }, h("label", { class: "f" }, t("rollouts.wave.activation"), atype), when.at, when.zone, when.info),
      h("div", { class: "row" }, h("label", { class: "f" }, t("rollouts.form.success"), success),
        h("label", { class: "f" }, t("rollouts.form.max_failed"), maxFailed),
        h("label", { class: "f" }, t("rollouts.form.max_failed_percent"), maxPct), h("label", { class: "f" }, t("rollouts.form.soak_short"), soakMin),
        h("label", { class: "inline" }, appr, t("rollouts.gate.approval"))),
      h("div", { class: "row" }, h("label", { class: "f" }, t("rollouts.form.per_store"), perStore),
        h("label", { class: "f" }, t("rollouts.form.retries"), retries)));
    row.get = () => {
      const n = wname.value.trim();
      if (!n) throw new Error(t("rollouts.form.need_wave_name"));
      const what = (x) => t("rollouts.form.wave_error", { name: n, error: x });
      const spec = { name: n, kind: kind.value };
      if (ttype.value === "group") {
        if (!group.value) throw new Error(what(t("tasks.new.need_group")));
        spec.targets = { type: "group", group_id: Number(group.value) };
      } else {
        const pct = ttype.value === "stores_percent";
        const v = intOf(tval, what(t(pct ? "rollouts.form.share_what" : "rollouts.form.till_number_what")), 1, pct ? 100 : 100000);
        if (v === undefined) throw new Error(what(t(pct ? "rollouts.form.need_share" : "rollouts.form.need_till_number")));
        spec.targets = pct ? { type: "stores_percent", percent: v } : { type: "till_number", till_number: v };
      }
      if (atype.value === "at") {
        let ms;
        try { ms = when.instant(); } catch (e) { throw new Error(what(t("rollouts.form.bad_time"))); }
        if (ms < Date.now()) throw new Error(what(t("schedule.activation.past")));
        spec.activation = { type: "at", at: when.get() };
      } else spec.activation = { type: atype.value };
      spec.gate = { success_percent: intOf(success, what(t("rollouts.form.success_what")), 0, 100) ?? 100, approval: appr.checked,
        soak_minutes: intOf(soakMin, what(t("rollouts.form.soak_what")), 0, 43200) ?? 0 };
      const mf = intOf(maxFailed, what(t("rollouts.form.max_failed_what")), 1, 1000000);
      const mp = intOf(maxPct, what(t("rollouts.form.max_failed_percent_what")), 0, 100);
      if (mf !== undefined) spec.gate.max_failed = mf;
      if (mp !== undefined) spec.gate.max_failed_percent = mp;
      const most = intOf(perStore, what(t("rollouts.form.per_store_what")), 1, 100000);
      const tries = intOf(retries, what(t("rollouts.form.retries_what")), 0, 10);
      if (most !== undefined) spec.max_installing_per_store = most;
      if (tries !== undefined) spec.install_retries = tries;
      return spec;
    };
    syncRow();
    waves.push(row);
    wavesBox.appendChild(row.el);
  }

  async function submit() {
    msg.textContent = "";
    const body = { package_id: pkg.value };
    try {
      if (!pkg.value) throw new Error(t("tasks.new.need_package"));
      if (name.value.trim()) body.name = name.value.trim();
      const w = win.get(), lim = intOf(limit, t("rollouts.form.store_limit_what"), 1, 10000);
      if (w) body.window = w;
      if (lim !== undefined) body.store_failure_limit = lim;
      if (draft.checked) body.draft = true;
      if (useTpl.checked) {
        body.template = "pilot-even-odd";
        const o = { approval_after_pilot: approval.checked };
        const p = intOf(pilotNo, t("rollouts.form.pilot_number_what"), 1, 100000), s = intOf(soak, t("rollouts.form.soak_what"), 0, 43200);
        if (p !== undefined) o.pilot_till_number = p;
        if (s !== undefined) o.soak_minutes = s;
        body.template_options = o;
      } else {
        if (waves.length === 0) throw new Error(t("rollouts.form.need_wave"));
        body.waves = waves.map((r) => r.get());
        if (!w && body.waves.some((x) => x.activation.type === "in_window")) throw new Error(t("rollouts.form.need_window"));
      }
    } catch (e) { msg.textContent = e.message; return; }
    const p = cache.packages.find((x) => x.package_id === body.package_id);
    const forced = body.template || body.waves.some((x) => x.kind === "forced_update");
    if (!body.draft && !confirm(t("rollouts.confirm.create", { package: p ? p.name + " " + p.version : t("tasks.confirm.the_package") }) +
      (forced ? "\n" + t("rollouts.confirm.create_forced") : ""))) return;
    const r = await act(create, t("rollouts.action.create"), async () => {
      try { return await api("POST", "/api/v1/rollouts", { body }); } catch (e) { msg.textContent = e.message; throw e; }
    });
    if (r) { toast("ok", t("rollouts.toast.created", { id: r.id, state: labelOf(ROLLOUT_LABEL, r.state) })); go("rollout/" + r.id); }
  }

  return {
    el,
    reload() {
      setOptions(pkg, packageOptions(), t(cache.packages.length ? "tasks.new.choose_package" : "tasks.new.no_packages"));
      for (const w of waves) { setOptions(w.group, groupOptions(), t("tasks.new.choose_group")); w.reloadZones(); }
    },
  };
}
