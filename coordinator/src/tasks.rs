//! Tasks: what operators ask tills to do, and where each till stands.
//!
//! Life of a task: `scheduled` (waiting for its time) -> `running` (targets taken
//! from the group at activation) -> `completed` (every target final), with
//! `paused` beside running/scheduled. Per target: pending -> downloading ->
//! downloaded -> awaiting_cashier -> installing -> rebooting -> installed, or
//! failed / declined / skipped. A target counts as installed only once the till
//! reports the new version after its reboot.

use crate::db::sql::{Connection, OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};
use tillswarm_protocol::api::{ProgressReport, TargetState, TaskKind};
use tillswarm_protocol::{DeviceId, PackageId, Version};

use crate::clock::parse_rfc3339;
use crate::error::{Error, Result};
use crate::groups;
use crate::windows::{Window, WindowRule};

mod assign;
pub mod permits;
pub mod stagger;
mod view;

pub use assign::assignments;
pub use tillswarm_protocol::operator::tasks::{
    AttemptLog, NewTask, StateCounts, StoreTraffic, StoreWindow, TargetDetail, TaskDetail,
    TaskGroupInput, TaskStatus, TaskSummary,
};
pub use view::{DETAILS_IN_CREATE, TaskFilter, annotate, get, list, summary_only};

fn final_states(kind: TaskKind) -> &'static str {
    if kind.installs() {
        "('installed','failed','skipped')"
    } else {
        "('downloaded','installed','failed','skipped')"
    }
}

pub(crate) fn parse_kind(s: &str) -> crate::db::sql::Result<TaskKind> {
    s.parse().map_err(|e| {
        crate::db::sql::Error::FromSqlConversionFailure(
            0,
            crate::db::sql::types::Type::Text,
            Box::new(e),
        )
    })
}

pub(crate) fn parse_state(s: &str) -> crate::db::sql::Result<TargetState> {
    s.parse().map_err(|e| {
        crate::db::sql::Error::FromSqlConversionFailure(
            0,
            crate::db::sql::types::Type::Text,
            Box::new(e),
        )
    })
}

/// Most automatic retries of a failed install a task may ask for.
pub const MAX_INSTALL_RETRIES: u32 = 10;

/// Where a new task's tills come from and how it runs; shared by operator
/// tasks and rollout waves.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub kind: TaskKind,
    pub package_id: PackageId,
    /// The group the targets are taken from at activation; `None`: the
    /// targets are listed at creation (a rollout wave).
    pub group_id: Option<i64>,
    /// Shown as the task's group.
    pub label: String,
    pub activate_at: Option<i64>,
    pub rollback: bool,
    pub window: Option<Window>,
    pub store_limit: Option<u32>,
    pub install_retries: u32,
    /// The rollout and wave index it belongs to.
    pub rollout: Option<(i64, u32)>,
}

/// Creates a task; an immediate one is activated at once. Returns its id.
pub fn create(tx: &Transaction<'_>, input: &NewTask, now_ms: i64) -> Result<i64> {
    let group_name: String = tx
        .query_row(
            "SELECT name FROM groups WHERE id = ?1",
            [input.group_id.0],
            |r| r.get(0),
        )
        .optional()?
        .ok_or_else(|| Error::bad("unknown_group", format!("no group {}", input.group_id)))?;
    let activate_at = match input.activate_at.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => Some(future_time("activate_at", text, now_ms)?),
    };
    if let Some(w) = &input.window {
        w.rule()?;
    }
    if input.max_installing_per_store == Some(0) {
        return Err(Error::bad(
            "invalid_limit",
            "max_installing_per_store must be at least 1",
        ));
    }
    let install_retries = input.install_retries.unwrap_or(0);
    if install_retries > MAX_INSTALL_RETRIES {
        return Err(Error::bad(
            "invalid_limit",
            format!("install_retries must be 0 to {MAX_INSTALL_RETRIES}"),
        ));
    }
    let plan = Plan {
        kind: input.kind,
        package_id: input.package_id,
        group_id: Some(input.group_id.0),
        label: group_name,
        activate_at,
        rollback: input.rollback,
        window: input.window.clone(),
        store_limit: input.max_installing_per_store,
        install_retries,
        rollout: None,
    };
    create_planned(tx, &plan, &[], now_ms)
}

/// Parses an operator's RFC 3339 time that must not be in the past.
pub(crate) fn future_time(field: &str, text: &str, now_ms: i64) -> Result<i64> {
    let at = parse_rfc3339(text).ok_or_else(|| {
        Error::bad(
            "invalid_time",
            format!("{field} must be RFC 3339 like 2026-11-25T02:00:00Z, got {text:?}"),
        )
    })?;
    // A little slack for clock skew between the operator's machine and ours.
    if at < now_ms - 60_000 {
        return Err(Error::bad(
            "time_in_past",
            format!("{field} {text} is in the past"),
        ));
    }
    Ok(at)
}

/// Inserts a task (with `targets` listed when the plan has no group) and
/// activates it when due. Returns its id.
pub(crate) fn create_planned(
    tx: &Transaction<'_>,
    plan: &Plan,
    targets: &[DeviceId],
    now_ms: i64,
) -> Result<i64> {
    let pkg = tx
        .query_row(
            "SELECT name, version, version_key, size FROM packages WHERE package_id = ?1",
            [plan.package_id.to_hex()],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            },
        )
        .optional()?
        .ok_or_else(|| Error::bad("unknown_package", format!("no package {}", plan.package_id)))?;
    let window = plan
        .window
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| Error::Internal(e.to_string()))?;
    let id: i64 = tx.query_row(
        "INSERT INTO tasks (kind, package_id, package_name, package_version, package_version_key, package_size,
                            group_id, group_name, status, activate_at_ms, rollback, created_ms,
                            rollout_id, rollout_wave, window_json, store_limit, install_retries)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'scheduled', ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16) RETURNING id",
        params![
            plan.kind.as_str(),
            plan.package_id.to_hex(),
            pkg.0,
            pkg.1,
            pkg.2,
            pkg.3,
            plan.group_id,
            plan.label,
            plan.activate_at,
            plan.rollback,
            now_ms,
            plan.rollout.map(|r| r.0),
            plan.rollout.map(|r| r.1),
            window,
            plan.store_limit,
            plan.install_retries,
        ],
        |r| r.get(0),
    )?;
    if plan.group_id.is_none() {
        let mut insert = tx.prepare_cached(
            "INSERT INTO task_targets (task_id, device, state, updated_ms) VALUES (?1, ?2, 'pending', ?3)
             ON CONFLICT DO NOTHING",
        )?;
        for d in targets {
            insert.execute(params![id, d.to_string(), now_ms])?;
        }
    }
    if plan.activate_at.is_none_or(|at| at <= now_ms) {
        activate(tx, id, now_ms)?;
    }
    Ok(id)
}

/// Tasks with at least this many targets are announced store by store
/// (see [`stagger`]).
pub const STAGGER_MIN_TARGETS: i64 = 2_000;

/// Takes the targets (the group's members, or those listed at creation) and
/// starts the task. Tills already at the package's version or newer are
/// skipped (for a rollback: at that version). Set-based: one statement per
/// step, whatever the number of tills.
pub fn activate(tx: &Transaction<'_>, id: i64, now_ms: i64) -> Result<()> {
    let (group_id, version_key, rollback): (Option<i64>, String, bool) = tx.query_row(
        "SELECT group_id, package_version_key, rollback FROM tasks WHERE id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    if let Some(g) = group_id {
        let members = groups::membership_sql(&groups::kind_of(tx, g)?);
        // `?1` is the group's id in a custom group's query.
        tx.execute(
            &format!(
                "INSERT INTO task_targets (device, task_id, state, attempt, updated_ms)
                 SELECT *, ?2, 'pending', (SELECT attempt FROM tasks WHERE id = ?2), ?3 FROM ({members}) m
                 WHERE true ON CONFLICT DO NOTHING"
            ),
            params![g, id, now_ms],
        )?;
    }
    // A flagged version (above every published package) is not trusted to
    // skip a till: it gets the task and decides on its own.
    tx.execute(
        "UPDATE task_targets SET state = 'skipped', finished_ms = ?2, updated_ms = ?2
         WHERE task_id = ?1 AND state = 'pending' AND device IN (
             SELECT guid FROM devices
             WHERE version_flag IS NULL AND version_key IS NOT NULL
               AND CASE WHEN ?4 THEN version_key = ?3 ELSE version_key >= ?3 END)",
        params![id, now_ms, version_key, rollback],
    )?;
    let targets: i64 = tx.query_row(
        "SELECT count(*) FROM task_targets WHERE task_id = ?1",
        [id],
        |r| r.get(0),
    )?;
    let staggered = targets >= STAGGER_MIN_TARGETS;
    tx.execute(
        "UPDATE tasks SET status = 'running', activated_ms = ?2, permits_due_ms = 0,
                          staggered = ?3, notified_ms = ?2
         WHERE id = ?1",
        params![id, now_ms, staggered],
    )?;
    if staggered {
        // Tills of no store learn at once; stores in turn (see `stagger`).
        tx.execute(
            "UPDATE devices SET assign_rev = assign_rev + 1
             WHERE store_id IS NULL AND guid IN (SELECT device FROM task_targets WHERE task_id = ?1)",
            [id],
        )?;
    } else {
        bump_targets(tx, id)?;
    }
    complete_if_done(tx, id, now_ms)?;
    Ok(())
}

/// Bumps the assignment revision of every till in the task, so their next poll
/// fetches the new assignment list.
fn bump_targets(tx: &Transaction<'_>, id: i64) -> Result<()> {
    tx.execute(
        "UPDATE devices SET assign_rev = assign_rev + 1 WHERE guid IN (SELECT device FROM task_targets WHERE task_id = ?1)",
        [id],
    )?;
    Ok(())
}

/// Marks the task `completed` (or `completed_with_failures` when a target
/// failed) once every target is final. Returns whether it did.
pub fn complete_if_done(tx: &Transaction<'_>, id: i64, now_ms: i64) -> Result<bool> {
    let (kind, status): (String, String) =
        tx.query_row("SELECT kind, status FROM tasks WHERE id = ?1", [id], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    if status != "running" {
        return Ok(false);
    }
    let kind = parse_kind(&kind)?;
    let open: i64 = tx.query_row(
        &format!(
            "SELECT count(*) FROM task_targets
             WHERE task_id = ?1 AND (state NOT IN {} OR retry_at_ms IS NOT NULL)",
            final_states(kind)
        ),
        [id],
        |r| r.get(0),
    )?;
    if open == 0 {
        let failed: i64 = tx.query_row(
            "SELECT count(*) FROM task_targets WHERE task_id = ?1 AND state = 'failed'",
            [id],
            |r| r.get(0),
        )?;
        let status = if failed > 0 {
            "completed_with_failures"
        } else {
            "completed"
        };
        tx.execute(
            "UPDATE tasks SET status = ?3, completed_ms = ?2 WHERE id = ?1",
            params![id, now_ms, status],
        )?;
        tracing::info!(task = id, failed, "task {status}");
        return Ok(true);
    }
    Ok(false)
}

/// Activates every scheduled task whose time has come; returns their ids.
pub fn activate_due(tx: &Transaction<'_>, now_ms: i64) -> Result<Vec<i64>> {
    let due: Vec<i64> = tx
        .prepare_cached(
            "SELECT id FROM tasks WHERE status = 'scheduled' AND coalesce(activate_at_ms, 0) <= ?1",
        )?
        .query_map([now_ms], |r| r.get(0))?
        .collect::<crate::db::sql::Result<_>>()?;
    for id in &due {
        activate(tx, *id, now_ms)?;
        tracing::info!(task = id, "task activated");
    }
    Ok(due)
}

fn status_of(tx: &Connection, id: i64) -> Result<String> {
    tx.query_row("SELECT status FROM tasks WHERE id = ?1", [id], |r| r.get(0))
        .optional()?
        .ok_or_else(|| Error::NotFound(format!("no task {id}")))
}

/// Pauses a scheduled or running task: tills stop receiving it.
pub fn pause(tx: &Transaction<'_>, id: i64) -> Result<()> {
    match status_of(tx, id)?.as_str() {
        "scheduled" | "running" => {
            tx.execute("UPDATE tasks SET status = 'paused' WHERE id = ?1", [id])?;
            bump_targets(tx, id)
        }
        "paused" => Ok(()),
        other => Err(Error::conflict(
            "invalid_transition",
            format!("a {other} task cannot be paused"),
        )),
    }
}

/// Resumes a paused task where it was.
pub fn resume(tx: &Transaction<'_>, id: i64, now_ms: i64) -> Result<()> {
    match status_of(tx, id)?.as_str() {
        "paused" => {
            let activated: Option<i64> =
                tx.query_row("SELECT activated_ms FROM tasks WHERE id = ?1", [id], |r| {
                    r.get(0)
                })?;
            let status = if activated.is_some() {
                "running"
            } else {
                "scheduled"
            };
            tx.execute(
                "UPDATE tasks SET status = ?2 WHERE id = ?1",
                params![id, status],
            )?;
            bump_targets(tx, id)?;
            if status == "running" {
                complete_if_done(tx, id, now_ms)?;
            } else {
                activate_due(tx, now_ms)?;
            }
            Ok(())
        }
        "scheduled" | "running" => Ok(()),
        other => Err(Error::conflict(
            "invalid_transition",
            format!("a {other} task cannot be resumed"),
        )),
    }
}

/// Runs the task again now for the tills not yet done (a task not yet activated
/// is activated now). Failed and declined tills get a fresh attempt.
pub fn restart(tx: &Transaction<'_>, id: i64, now_ms: i64) -> Result<()> {
    let (kind, activated, published): (String, Option<i64>, bool) = tx
        .query_row(
            "SELECT kind, activated_ms,
                    EXISTS (SELECT 1 FROM packages p WHERE p.package_id = t.package_id)
             FROM tasks t WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?
        .ok_or_else(|| Error::NotFound(format!("no task {id}")))?;
    if !published {
        // Every till would only fail to fetch it.
        return Err(Error::conflict(
            "package_deleted",
            format!("task {id}'s package was deleted; upload it again and create a new task"),
        ));
    }
    let kind = parse_kind(&kind)?;
    tx.execute(
        "UPDATE tasks SET attempt = attempt + 1, completed_ms = NULL WHERE id = ?1",
        [id],
    )?;
    if activated.is_none() {
        // "Start now" on a timed task: it starts, and a Forced update
        // installs, now rather than at the time it was waiting for.
        tx.execute(
            "UPDATE tasks SET activate_at_ms = ?2 WHERE id = ?1 AND activate_at_ms > ?2",
            params![id, now_ms],
        )?;
        return activate(tx, id, now_ms);
    }
    let done = if kind.installs() {
        "('installed','skipped')"
    } else {
        "('downloaded','installed','skipped')"
    };
    tx.execute(
        &format!(
            "INSERT INTO target_attempts (task_id, device, attempt, state, error, log_tail, finished_ms)
             SELECT task_id, device, attempt, state, error, log_tail, coalesce(finished_ms, updated_ms)
             FROM task_targets WHERE task_id = ?1 AND state IN ('failed', 'declined') AND state NOT IN {done}
             ON CONFLICT DO NOTHING"
        ),
        [id],
    )?;
    tx.execute(
        &format!(
            "UPDATE task_targets SET state = 'pending', attempt = (SELECT attempt FROM tasks WHERE id = ?1),
                 seq = 0, error = NULL, log_tail = NULL, finished_ms = NULL, updated_ms = ?2,
                 permit_ms = NULL, permit_until_ms = NULL, retries = 0, retry_at_ms = NULL,
                 install_started_ms = NULL
             WHERE task_id = ?1 AND state NOT IN {done}"
        ),
        params![id, now_ms],
    )?;
    tx.execute("UPDATE tasks SET permits_due_ms = 0 WHERE id = ?1", [id])?;
    tx.execute("UPDATE tasks SET status = 'running' WHERE id = ?1", [id])?;
    bump_targets(tx, id)?;
    complete_if_done(tx, id, now_ms)?;
    Ok(())
}

/// Deletes a task; its tills drop it on their next poll. A task of a rollout
/// that is still going is refused (cancel the rollout first).
pub fn delete(tx: &Transaction<'_>, id: i64) -> Result<()> {
    status_of(tx, id)?;
    refuse_if_rollout_active(tx, id, "deleted")?;
    bump_targets(tx, id)?;
    tx.execute("DELETE FROM tasks WHERE id = ?1", [id])?;
    Ok(())
}

/// Refuses a direct change to a task that a rollout still drives.
pub(crate) fn refuse_if_rollout_active(tx: &Connection, id: i64, what: &str) -> Result<()> {
    let rollout: Option<(i64, String)> = tx
        .query_row(
            "SELECT r.id, r.state FROM tasks t JOIN rollouts r ON r.id = t.rollout_id WHERE t.id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    match rollout {
        Some((r, state)) if !crate::rollouts::is_final(&state) => Err(Error::conflict(
            "rollout_task",
            format!(
                "task {id} belongs to rollout {r}, which is {state}; it cannot be {what} on its own (pause, resume or cancel the rollout)"
            ),
        )),
        _ => Ok(()),
    }
}

/// How long a failed install waits before its next automatic attempt: one
/// minute, doubling per attempt, at most an hour.
pub fn retry_backoff_ms(attempt: u32) -> i64 {
    60_000i64
        .saturating_mul(1 << attempt.saturating_sub(1).min(6))
        .min(3_600_000)
}

/// Starts the automatic retries whose backoff has passed: each attempt's
/// outcome and log is kept in `target_attempts`, the target goes back to
/// pending with the next attempt number. Returns how many.
pub fn retry_due(tx: &Transaction<'_>, now_ms: i64) -> Result<usize> {
    let due: Vec<(i64, String)> = tx
        .prepare_cached(
            "SELECT tt.task_id, tt.device FROM task_targets tt JOIN tasks t ON t.id = tt.task_id
             WHERE tt.retry_at_ms <= ?1 AND t.status = 'running'",
        )?
        .query_map([now_ms], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<crate::db::sql::Result<_>>()?;
    for (task, device) in &due {
        tx.execute(
            "INSERT INTO target_attempts (task_id, device, attempt, state, error, log_tail, finished_ms)
             SELECT task_id, device, attempt, state, error, log_tail, coalesce(finished_ms, updated_ms)
             FROM task_targets WHERE task_id = ?1 AND device = ?2
             ON CONFLICT DO NOTHING",
            params![task, device],
        )?;
        tx.execute(
            "UPDATE task_targets SET state = 'pending', attempt = attempt + 1, retries = retries + 1,
                 retry_at_ms = NULL, seq = 0, error = NULL, log_tail = NULL, finished_ms = NULL,
                 permit_ms = NULL, permit_until_ms = NULL, install_started_ms = NULL, updated_ms = ?3
             WHERE task_id = ?1 AND device = ?2",
            params![task, device, now_ms],
        )?;
        tx.execute(
            "UPDATE devices SET assign_rev = assign_rev + 1 WHERE guid = ?1",
            [device],
        )?;
        permits::soon(tx, *task, now_ms)?;
        tracing::info!(task, device = %device, "install retried automatically");
    }
    Ok(due.len())
}

/// What happened to a progress report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportOutcome {
    /// False when the report was stale (older seq or attempt) and ignored.
    pub accepted: bool,
}

/// Applies a progress report. Idempotent: a report with a sequence number at or
/// below the stored one, or of an older attempt, changes nothing.
pub fn apply_report(
    tx: &Transaction<'_>,
    r: &ProgressReport,
    now_ms: i64,
) -> Result<ReportOutcome> {
    let task = r.task_id.0 as i64;
    let row = tx
        .query_row(
            "SELECT tt.attempt, tt.seq, tt.state, t.kind, t.package_version_key, t.rollback, t.status,
                    t.install_retries - tt.retries
             FROM task_targets tt JOIN tasks t ON t.id = tt.task_id
             WHERE tt.task_id = ?1 AND tt.device = ?2",
            params![task, r.device_id.to_string()],
            |row| {
                Ok((
                    row.get::<_, u32>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, String>(4)?,
                    row.get::<_, bool>(5)?,
                    row.get::<_, String>(6)?,
                    row.get::<_, i64>(7)?,
                ))
            },
        )
        .optional()?
        .ok_or_else(|| Error::NotFound(format!("device {} is not a target of task {}", r.device_id, r.task_id)))?;
    let (attempt, seq, current, kind, version_key, rollback, status, retries_left) = row;
    if r.attempt != attempt || (r.seq as i64) <= seq || is_finished(&status) {
        return Ok(ReportOutcome { accepted: false });
    }
    let kind = parse_kind(&kind)?;
    let mut state = r.state;
    // Installed counts only once the till runs the new version (seen in its heartbeat).
    if state == TargetState::Installed && kind.installs() {
        let running: Option<String> = tx.query_row(
            "SELECT version_key FROM devices WHERE guid = ?1",
            [r.device_id.to_string()],
            |x| x.get(0),
        )?;
        if !reached(running.as_deref(), &version_key, rollback) {
            state = TargetState::Rebooting;
        }
    }
    if parse_state(&current)?.is_final_for(kind) {
        // A final state is not reopened by a late report; counters still update.
        state = parse_state(&current)?;
    }
    let finished = state.is_final_for(kind).then_some(now_ms);
    if kind.installs() && state == TargetState::Failed && current != "failed" {
        // The till's state reads install_failed until a later install succeeds.
        tx.execute(
            "UPDATE devices SET install_failed_ms = ?2 WHERE guid = ?1",
            params![r.device_id.to_string(), now_ms],
        )?;
    }
    let newly_failed = state == TargetState::Failed && current != "failed";
    // A failed install with retries left is tried again after a backoff.
    let retry_at = (kind.installs() && newly_failed && retries_left > 0)
        .then(|| now_ms + retry_backoff_ms(attempt));
    tx.execute(
        "UPDATE task_targets SET state = ?3, seq = ?4, bytes_done = ?5, wan_bytes = ?6, lan_bytes = ?7,
             error = ?8, log_tail = coalesce(?9, log_tail), updated_ms = ?10,
             started_ms = coalesce(started_ms, CASE WHEN ?3 <> 'pending' THEN CAST(?10 AS BIGINT) END),
             finished_ms = coalesce(finished_ms, ?11),
             retry_at_ms = coalesce(?12, retry_at_ms),
             install_started_ms = coalesce(install_started_ms, CASE WHEN ?3 = 'installing' THEN CAST(?10 AS BIGINT) END)
         WHERE task_id = ?1 AND device = ?2",
        params![
            task,
            r.device_id.to_string(),
            state.as_str(),
            r.seq as i64,
            r.bytes_done.min(i64::MAX as u64) as i64,
            r.wan_bytes.min(i64::MAX as u64) as i64,
            r.lan_bytes.min(i64::MAX as u64) as i64,
            r.error,
            r.log_tail,
            now_ms,
            finished,
            retry_at
        ],
    )?;
    if kind.installs() && state.as_str() != current {
        // A slot of the store may have come free, or a till may need one.
        permits::soon(tx, task, now_ms)?;
    }
    complete_if_done(tx, task, now_ms)?;
    Ok(ReportOutcome { accepted: true })
}

fn reached(running: Option<&str>, target: &str, rollback: bool) -> bool {
    match running {
        Some(v) if rollback => v == target,
        Some(v) => v >= target,
        None => false,
    }
}

/// After a heartbeat: targets of install tasks whose till now runs the package's
/// version become installed.
pub fn promote_installed(
    tx: &Transaction<'_>,
    device: &DeviceId,
    version: Option<&Version>,
    now_ms: i64,
) -> Result<()> {
    let Some(version) = version else {
        return Ok(());
    };
    let key = version.sort_key();
    let candidates: Vec<(i64, String, bool)> = tx
        .prepare_cached(
            "SELECT t.id, t.package_version_key, t.rollback FROM task_targets tt JOIN tasks t ON t.id = tt.task_id
             WHERE tt.device = ?1 AND t.kind <> 'download' AND t.status = 'running'
               AND tt.state IN ('installing', 'rebooting')",
        )?
        .query_map([device.to_string()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<crate::db::sql::Result<_>>()?;
    for (task, target_key, rollback) in candidates {
        if reached(Some(&key), &target_key, rollback) {
            tx.execute(
                "UPDATE task_targets SET state = 'installed', finished_ms = ?3, updated_ms = ?3
                 WHERE task_id = ?1 AND device = ?2",
                params![task, device.to_string(), now_ms],
            )?;
            tx.prepare_cached("UPDATE devices SET install_failed_ms = NULL WHERE guid = ?1")?
                .execute([device.to_string()])?;
            // Its store's install slot is free again.
            permits::soon(tx, task, now_ms)?;
            complete_if_done(tx, task, now_ms)?;
        }
    }
    Ok(())
}

/// Whether a status as stored is one of the two final ones.
pub fn is_finished(status: &str) -> bool {
    status
        .parse::<TaskStatus>()
        .is_ok_and(TaskStatus::is_finished)
}
