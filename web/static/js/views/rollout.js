/*
 * One rollout (#rollout/ID): its reason, actions (pause and cancel for
 * operators; start, resume and approve for approvers), waves as steps and
 * the stores it stopped. Everything updates in place.
 */
import { h, append, fill, headRow, kv, fillRows } from "../dom.js";
import { t } from "../i18n.js";
import { api } from "../api.js";
import { act, toast, heading, canApprove, canOperate } from "../app.js";
import { cache, loadGroups, loadStores, storeLabel } from "../data.js";
import { KIND_LABEL, labelOf, kindBadge, timeEl } from "../widgets.js";
import { windowText } from "../pickers.js";
import {
  ROLLOUT_LABEL, FINAL_ROLLOUT, rolloutBadge, waveBadge, targetsText, activationText, gateText, waveProgress,
} from "../waves.js";
import { morph } from "../morph.js";
import { liveThrottle } from "../live.js";

/** The question before cancelling a rollout: how many tills of its started
 *  waves have not finished, and how many waves (and tills, when known) will
 *  not run. */
function cancelQuestion(r) {
  let unfinished = 0, waiting = 0, waitingTills = 0, known = true;
  for (const w of r.waves) {
    if (w.task_id != null) unfinished += Math.max(0, w.targets - w.installed - w.failed - w.skipped);
    else {
      waiting++;
      const g = w.spec.targets.type === "group" ? cache.groups.find((x) => x.id === w.spec.targets.group_id) : null;
      if (g) waitingTills += g.member_count; else known = false;
    }
  }
  return [t("rollouts.confirm.cancel", { name: r.name }), t("rollouts.confirm.cancel_unfinished", { n: unfinished }),
    waiting ? t(known ? "rollouts.confirm.cancel_waiting_tills" : "rollouts.confirm.cancel_waiting", { n: waiting, tills: waitingTills }) : null]
    .filter(Boolean).join("\n");
}

/** Rollout actions: the action's name (for errors) and the done toast. */
const ACTIONS = {
  pause: { what: "rollouts.action.pause", done: "rollouts.toast.paused" },
  start: { what: "rollouts.action.start", done: "rollouts.toast.started" },
  resume: { what: "rollouts.action.resume", done: "rollouts.toast.resumed" },
  approve: { what: "rollouts.action.approve", done: "rollouts.toast.approved" },
  cancel: { what: "rollouts.action.cancel", done: "rollouts.toast.cancelled" },
};

/** The rollout page; arg: the rollout id. */
export function rolloutDetailView(root, arg) {
  const id = Number(arg);
  const head = h("div"), reasonBox = h("div"), summary = h("div", { class: "card", "data-test": "rollout-summary" });
  const wavesBox = h("div", { class: "steps" });
  const pausedBody = h("tbody"), pausedNote = h("p", { class: "hint" });
  const live = liveThrottle(1000, summary);
  let taskIds = new Set(), current = null;
  const pausedCard = h("div", { class: "card", hidden: true }, h("h2", null, t("rollouts.detail.stopped_stores")),
    h("div", { class: "tablewrap" }, h("table", null,
      headRow(t("tasks.col.store"), t("rollouts.detail.reason"), t("rollouts.detail.since")), pausedBody)),
    pausedNote);
  let ticks = 0;

  if (!Number.isInteger(id) || id < 0) {
    append(root, heading(t("rollouts.detail.title")), h("div", { class: "card err" }, t("rollouts.detail.bad_id")));
    return { interval: 0, wants: () => false, async refresh() {} };
  }
  append(root, head, reasonBox, summary, h("div", { class: "card" }, h("h2", null, t("rollouts.detail.waves")), wavesBox), pausedCard);

  /** A button's handler running an action that answers with the rollout;
   *  question(r): what to ask first, from the rollout as shown at click time. */
  function action(verb, call, question) {
    return (e) => {
      const q = question && current ? question(current) : null;
      if (q && !confirm(q)) return;
      act(e.currentTarget, t(ACTIONS[verb].what), async () => {
        const r = await call();
        toast("ok", t(ACTIONS[verb].done, { id, state: labelOf(ROLLOUT_LABEL, r.state) }));
        render(r);
      });
    };
  }

  // Handlers read the rollout as shown (current) at click time, so morph may keep the buttons.
  const nextWave = (r) => r.waves[r.current_wave + 1];
  const onPause = action("pause", () => api("POST", `/api/v1/rollouts/${id}/pause`, { body: {} }));
  const onStart = action("start", () => api("POST", `/api/v1/rollouts/${id}/resume`, { body: {} }),
    (r) => t("rollouts.confirm.start", { name: r.name }));
  const onResume = action("resume", () => api("POST", `/api/v1/rollouts/${id}/resume`, { body: {} }),
    (r) => t("rollouts.confirm.resume", { name: r.name }));
  const onApprove = action("approve", () => api("POST", `/api/v1/rollouts/${id}/approve`, { body: {} }), (r) => {
    const next = nextWave(r);
    return next ? t("rollouts.confirm.approve", { name: next.name, kind: labelOf(KIND_LABEL, next.kind), targets: targetsText(next.spec.targets) }) : null;
  });
  const onCancel = action("cancel", () => api("POST", `/api/v1/rollouts/${id}/cancel`, { body: {} }), cancelQuestion);

  function buttons(r) {
    const out = [], approver = canApprove(), operator = canOperate(), next = nextWave(r);
    if (operator && (r.state === "running" || r.state === "waiting_for_approval")) {
      out.push(h("button", { "data-test": "rollout-pause", title: t("rollouts.btn.pause_title"), onclick: onPause }, t("rollouts.btn.pause")));
    }
    if (approver && r.state === "draft") {
      out.push(h("button", { class: "primary", "data-test": "rollout-start", onclick: onStart }, t("rollouts.btn.start")));
    }
    if (approver && r.state === "paused") {
      out.push(h("button", { class: "primary", "data-test": "rollout-resume", onclick: onResume }, t("rollouts.btn.resume")));
    }
    if (approver && r.state === "waiting_for_approval") {
      out.push(h("button", { class: "primary", "data-test": "rollout-approve", onclick: onApprove },
        next ? t("rollouts.btn.approve_named", { name: next.name }) : t("rollouts.btn.approve")));
    }
    if (operator && !FINAL_ROLLOUT.includes(r.state)) {
      out.push(h("button", { class: "danger", "data-test": "rollout-cancel", onclick: onCancel }, t("rollouts.btn.cancel")));
    }
    if (!approver && ["draft", "paused", "waiting_for_approval"].includes(r.state)) {
      out.push(h("span", { class: "hint" }, t("rollouts.detail.need_role")));
    }
    return h("div", { class: "actions" }, out);
  }

  function waveBox(r, w) {
    const s = w.spec, g = s.gate;
    const line = (k, ...v) => h("div", { class: "small", style: "margin-top: 3px" }, h("span", { class: "muted" }, k + ": "), v);
    const limits = [s.max_installing_per_store != null ? t("rollouts.wave.limit_per_store", { n: s.max_installing_per_store }) : null,
      s.install_retries ? t("rollouts.wave.limit_retries", { n: s.install_retries }) : null].filter(Boolean);
    const current = w.index === r.current_wave && !FINAL_ROLLOUT.includes(r.state) && r.state !== "draft";
    return h("div", { class: "step" + (current ? " current" : ""), "data-key": "wave-" + w.index, "data-test": "rollout-wave" },
      h("h3", null, `${w.index + 1}. ${w.name} `, kindBadge(w.kind), " ", waveBadge(w.state)),
      line(t("rollouts.wave.tills"), targetsText(s.targets)),
      line(t("rollouts.wave.activation"), activationText(s.activation, w.index === 0)),
      line(t("rollouts.wave.gate"), gateText(g, w.kind)),
      limits.length ? line(t("rollouts.wave.limits"), limits.join(", ")) : null,
      h("div", { style: "margin: 8px 0 4px" }, waveProgress(w)),
      w.task_id != null ? line(t("rollouts.wave.task"), h("a", { href: "#task/" + w.task_id }, t("tasks.detail.title_id", { id: w.task_id }))) : null,
      w.started_at ? line(t("rollouts.wave.started"), timeEl(w.started_at, true)) : null,
      w.passed_at ? line(t("rollouts.wave.threshold_met"), timeEl(w.passed_at, true)) : null,
      w.state === "soaking" && g.soak_minutes
        ? line(t("rollouts.wave.soak_until"), timeEl(new Date(Date.parse(w.passed_at) + g.soak_minutes * 60000).toISOString(), true)) : null,
      w.finished_at ? line(t("rollouts.wave.gate_opened"), timeEl(w.finished_at, true)) : null,
      w.approved_by ? line(t("rollouts.wave.approved"), w.approved_by + " ", timeEl(w.approved_at, true)) : null);
  }

  function render(r) {
    current = r;
    taskIds = new Set(r.waves.map((w) => w.task_id).filter((x) => x != null));
    morph(head, h("div", null, heading(t("rollouts.detail.title_id", { id: r.id }), rolloutBadge(r.state),
      h("a", { href: "#rollout", class: "small" }, t("rollouts.detail.back")))));
    const prefix = r.state === "paused" ? t("rollouts.detail.paused_prefix") + " "
      : r.state === "waiting_for_approval" ? t("rollouts.detail.waiting_prefix") + " " : "";
    morph(reasonBox, h("div", null, r.reason ? h("div", { class: "card wrap-any " + (r.state === "paused" || r.state === "completed_with_failures" ? "alert" : "warn") },
      h("b", null, prefix), r.reason) : null));
    morph(summary, h("div", { class: "card", "data-test": "rollout-summary" },
      h("div", { class: "row", style: "gap: 28px; align-items: flex-start" },
        kv(t("rollouts.detail.name"), h("b", null, r.name)),
        kv(t("tasks.col.package"), h("b", null, r.package_name), " ", h("span", { class: "mono" }, r.package_version)),
        kv(t("tasks.detail.window"), r.window ? windowText(r.window) : t("rollouts.detail.no_window")),
        kv(t("rollouts.form.store_limit"), t("rollouts.detail.store_limit", { n: r.store_failure_limit })),
        kv(t("rollouts.col.created"), r.created_by, " ", timeEl(r.created, true)),
        kv(t("rollouts.detail.started"), timeEl(r.started, true)),
        kv(t("rollouts.detail.finished"), timeEl(r.finished, true))),
      h("div", { class: "row", style: "margin-top: 12px" }, buttons(r))));
    morph(wavesBox, h("div", { class: "steps" }, r.waves.map((w) => waveBox(r, w))));
    pausedCard.hidden = r.paused_stores.length === 0;
    fillRows(pausedBody, r.paused_stores, (p) => p.store_id, (p) => h("tr", null, h("td", { title: p.store_id }, storeLabel(p.store_id)),
      h("td", { class: "small wrap-any" }, p.reason), h("td", { class: "small" }, timeEl(p.at, true))), 3, "");
    fill(pausedNote, t("rollouts.detail.stopped_note", { n: r.store_failure_limit }));
  }

  const self = {
    interval: 3000,
    /** This rollout's changes and its waves' tasks. */
    wants(c) {
      const mine = c.kind === "rollout" ? c.rollout_id === id : c.kind === "task" || c.kind === "target" ? taskIds.has(c.task_id) : false;
      return mine && live.wants();
    },
    async refresh() {
      live.started();
      // Group and store names for the steps; reloaded every 10th refresh.
      if (ticks++ % 10 === 0) await Promise.all([loadGroups(), loadStores()]);
      let r;
      try {
        r = await api("GET", `/api/v1/rollouts/${id}`);
      } catch (e) {
        if (e.status !== 404) throw e;
        self.interval = 0;
        fill(root, heading(t("rollouts.detail.title_id", { id })), h("div", { class: "card err" }, e.message),
          h("a", { href: "#rollout" }, t("rollouts.detail.back")));
        return;
      }
      render(r);
    },
  };
  return self;
}
