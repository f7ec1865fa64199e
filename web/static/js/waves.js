/*
 * Rollout pieces shared by the rollout list and the rollout page: states,
 * and waves in words. Rollouts run on the coordinator: ordered waves, each an
 * ordinary task, with a gate between waves (success threshold, error
 * threshold, soak time, approval).
 */
import { h, segment } from "./dom.js";
import { t, fmtTime, fmtNumber } from "./i18n.js";
import { cache } from "./data.js";
import { labelBadge } from "./widgets.js";

/** Rollout states (its keys in display order). */
export const ROLLOUT_LABEL = {
  draft: "rollouts.state.draft", running: "rollouts.state.running", waiting_for_approval: "rollouts.state.waiting_for_approval",
  paused: "rollouts.state.paused", completed: "rollouts.state.completed",
  completed_with_failures: "rollouts.state.completed_with_failures", cancelled: "rollouts.state.cancelled",
};
const ROLLOUT_BADGE = { draft: "b-gray", running: "b-blue", waiting_for_approval: "b-purple", paused: "b-amber",
  completed: "b-green", completed_with_failures: "b-red", cancelled: "b-gray" };
const WAVE_LABEL = {
  waiting: "rollouts.wave_state.waiting", running: "rollouts.wave_state.running", soaking: "rollouts.wave_state.soaking",
  waiting_for_approval: "rollouts.wave_state.waiting_for_approval", passed: "rollouts.wave_state.passed",
};
const WAVE_BADGE = { waiting: "b-gray", running: "b-blue", soaking: "b-amber", waiting_for_approval: "b-purple", passed: "b-green" };

/** The states in which a rollout is over. */
export const FINAL_ROLLOUT = ["completed", "completed_with_failures", "cancelled"];

/** A rollout state as a badge. */
export function rolloutBadge(s) { return labelBadge(s, ROLLOUT_LABEL, ROLLOUT_BADGE); }

/** A wave state as a badge. */
export function waveBadge(s) { return labelBadge(s, WAVE_LABEL, WAVE_BADGE); }

/** A wave's tills in words. */
export function targetsText(tg) {
  if (tg.type === "group") {
    const g = cache.groups.find((x) => x.id === tg.group_id);
    return t("rollouts.targets.group", { name: g ? g.name : "#" + tg.group_id });
  }
  if (tg.type === "till_number") return t("rollouts.targets.till_number", { number: tg.till_number });
  if (tg.type === "stores_percent") return t("rollouts.targets.stores_percent", { percent: tg.percent });
  return tg.type;
}

/** A wave's activation in words. */
export function activationText(a, first) {
  if (a.type === "at") return t("rollouts.activation.at", { time: fmtTime(a.at) });
  if (a.type === "in_window") return t("rollouts.activation.in_window");
  return t(first ? "rollouts.activation.at_once" : "rollouts.activation.after_gate");
}

/** A gate in words: "≥95% installed, pause at >5% failed, soak 60 min, then approval". */
export function gateText(g, kind) {
  const parts = [t(kind === "download" ? "rollouts.gate.downloaded" : "rollouts.gate.installed", { percent: g.success_percent })];
  if (g.max_failed != null) parts.push(t("rollouts.gate.max_failed", { n: g.max_failed }));
  if (g.max_failed_percent != null) parts.push(t("rollouts.gate.max_failed_percent", { percent: g.max_failed_percent }));
  if (g.soak_minutes) parts.push(t("rollouts.gate.soak", { minutes: g.soak_minutes }));
  if (g.approval) parts.push(t("rollouts.gate.approval"));
  return parts.join(", ");
}

/** A wave's bar (installed green, skipped grey, failed red) and counts. */
export function waveProgress(w) {
  if (w.task_id == null) return h("span", { class: "muted small" }, t("rollouts.wave.not_started"));
  const n = Math.max(1, w.targets);
  return h("div", { class: "row", style: "gap: 8px; align-items: center; flex-wrap: nowrap" },
    h("div", { class: "bar", style: "width: 110px" }, segment(w.installed, n, "g"), segment(w.skipped, n, "s"), segment(w.failed, n, "r")),
    h("span", { class: "small nowrap" }, `${w.installed}/${w.targets} · ${fmtNumber(w.success_percent)}%`,
      w.failed ? h("span", { class: "err" }, " · " + t("rollouts.wave.failed", { n: w.failed })) : null,
      w.skipped ? " · " + t("rollouts.wave.skipped", { n: w.skipped }) : null));
}
