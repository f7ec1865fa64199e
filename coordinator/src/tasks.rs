//! Tasks: what operators ask tills to do, and where each till stands.
//!
//! Life of a task: `scheduled` (waiting for its time) -> `running` (targets taken
//! from the group at activation) -> `completed` (every target final), with
//! `paused` beside running/scheduled. Per target: pending -> downloading ->
//! downloaded -> awaiting_cashier -> installing -> rebooting -> installed, or
//! failed / declined / skipped. A target counts as installed only once the till
//! reports the new version after its reboot.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};
use tillswarm_protocol::api::{Assignment, MAX_STORE_PEERS, ProgressReport, TargetState, TaskKind};
use tillswarm_protocol::{DeviceId, PackageId, Version};

use crate::clock::{parse_rfc3339, rfc3339};
use crate::error::{Error, Result};
use crate::groups;

/// A new task as an operator submits it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTask {
    /// Download, update or forced_update.
    pub kind: TaskKind,
    /// The package to deliver.
    pub package_id: PackageId,
    /// The group of tills, taken at activation.
    pub group_id: i64,
    /// RFC 3339 time to activate (the seed's Timer); absent: immediately.
    #[serde(default)]
    pub activate_at: Option<String>,
    /// Allow installing a version older than the till runs.
    #[serde(default)]
    pub rollback: bool,
}

/// Counts of targets per state.
pub type StateCounts = BTreeMap<String, u64>;

/// A task as listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSummary {
    /// Task id.
    pub id: i64,
    /// Task type.
    pub kind: TaskKind,
    /// One of [`STATUSES`].
    pub status: String,
    /// Package id.
    pub package_id: PackageId,
    /// Package name.
    pub package_name: String,
    /// Package version.
    pub package_version: String,
    /// Package size in bytes.
    pub package_size: u64,
    /// Group id (absent once the group is deleted).
    pub group_id: Option<i64>,
    /// Group name at creation.
    pub group_name: String,
    /// When it activates (absent: immediately).
    pub activate_at: Option<String>,
    /// When it activated.
    pub activated: Option<String>,
    /// When it completed.
    pub completed: Option<String>,
    /// When it was created.
    pub created: String,
    /// Explicit rollback.
    pub rollback: bool,
    /// Bumped by each restart.
    pub attempt: u32,
    /// Targets.
    pub targets: u64,
    /// Targets per state.
    pub states: StateCounts,
    /// Bytes fetched from the coordinator by all targets.
    pub wan_bytes: u64,
    /// Bytes fetched from peers by all targets.
    pub lan_bytes: u64,
}

/// One till in a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetDetail {
    /// Till GUID.
    pub device: DeviceId,
    /// Till name.
    pub name: Option<String>,
    /// Till number.
    pub number: Option<u32>,
    /// Store id.
    pub store_id: Option<String>,
    /// State in the task.
    pub state: TargetState,
    /// Verified bytes so far.
    pub bytes_done: u64,
    /// Fraction done, 0..=1.
    pub progress: f64,
    /// Bytes from the coordinator.
    pub wan_bytes: u64,
    /// Bytes from peers.
    pub lan_bytes: u64,
    /// Failure reason.
    pub error: Option<String>,
    /// End of the install log.
    pub log_tail: Option<String>,
    /// First activity.
    pub started: Option<String>,
    /// Last report.
    pub updated: String,
    /// Reached a final state.
    pub finished: Option<String>,
}

/// WAN use of one store in one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreTraffic {
    /// Store id (`-` for tills without a store).
    pub store_id: String,
    /// Targets in the store.
    pub tills: u64,
    /// Bytes the store's tills fetched over the WAN.
    pub wan_bytes: u64,
    /// Bytes they fetched from each other.
    pub lan_bytes: u64,
    /// WAN bytes / package size: 1.0 means the package crossed the link once.
    pub wan_ratio: f64,
}

/// A task with its per-till and per-store details.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskDetail {
    /// The summary.
    #[serde(flatten)]
    pub summary: TaskSummary,
    /// Each till.
    pub target_details: Vec<TargetDetail>,
    /// Each store's traffic.
    pub stores: Vec<StoreTraffic>,
}

fn final_states(kind: TaskKind) -> &'static str {
    if kind.installs() {
        "('installed','failed','skipped')"
    } else {
        "('downloaded','installed','failed','skipped')"
    }
}

fn parse_kind(s: &str) -> rusqlite::Result<TaskKind> {
    serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn parse_state(s: &str) -> rusqlite::Result<TargetState> {
    serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// Creates a task; an immediate one is activated at once. Returns its id.
pub fn create(tx: &Transaction<'_>, input: &NewTask, now_ms: i64) -> Result<i64> {
    let pkg = tx
        .query_row(
            "SELECT name, version, version_key, size FROM packages WHERE package_id = ?1",
            [input.package_id.to_hex()],
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
        .ok_or_else(|| {
            Error::bad(
                "unknown_package",
                format!("no package {}", input.package_id),
            )
        })?;
    let group_name: String = tx
        .query_row(
            "SELECT name FROM groups WHERE id = ?1",
            [input.group_id],
            |r| r.get(0),
        )
        .optional()?
        .ok_or_else(|| Error::bad("unknown_group", format!("no group {}", input.group_id)))?;
    let activate_at = match input.activate_at.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => {
            let at = parse_rfc3339(text).ok_or_else(|| {
                Error::bad(
                    "invalid_time",
                    format!("activate_at must be RFC 3339 like 2026-11-25T02:00:00Z, got {text:?}"),
                )
            })?;
            // A little slack for clock skew between the operator's machine and ours.
            if at < now_ms - 60_000 {
                return Err(Error::bad(
                    "time_in_past",
                    format!("activate_at {text} is in the past"),
                ));
            }
            Some(at)
        }
    };
    tx.execute(
        "INSERT INTO tasks (kind, package_id, package_name, package_version, package_version_key, package_size,
                            group_id, group_name, status, activate_at_ms, rollback, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'scheduled', ?9, ?10, ?11)",
        params![
            input.kind.as_str(),
            input.package_id.to_hex(),
            pkg.0,
            pkg.1,
            pkg.2,
            pkg.3,
            input.group_id,
            group_name,
            activate_at,
            input.rollback,
            now_ms
        ],
    )?;
    let id = tx.last_insert_rowid();
    if activate_at.is_none_or(|at| at <= now_ms) {
        activate(tx, id, now_ms)?;
    }
    Ok(id)
}

/// Takes the group's members as targets and starts the task. Tills already at
/// the package's version or newer are skipped (for a rollback: at that version).
pub fn activate(tx: &Transaction<'_>, id: i64, now_ms: i64) -> Result<()> {
    let (group_id, version_key, rollback): (Option<i64>, String, bool) = tx.query_row(
        "SELECT group_id, package_version_key, rollback FROM tasks WHERE id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let members = match group_id {
        Some(g) => groups::members(tx, g)?,
        None => Vec::new(),
    };
    // A flagged version (above every published package) is not trusted to
    // skip a till: it gets the task and decides on its own.
    let mut version_of = tx.prepare_cached(
        "SELECT version_key FROM devices WHERE guid = ?1 AND version_flag IS NULL",
    )?;
    let mut insert = tx.prepare_cached(
        "INSERT OR IGNORE INTO task_targets (task_id, device, state, attempt, updated_ms, finished_ms)
         VALUES (?1, ?2, ?3, (SELECT attempt FROM tasks WHERE id = ?1), ?4, ?5)",
    )?;
    for device in &members {
        let guid = device.to_string();
        let running: Option<String> = version_of
            .query_row([&guid], |r| r.get(0))
            .optional()?
            .flatten();
        let skip = match running {
            Some(v) if rollback => v == version_key,
            Some(v) => v >= version_key,
            None => false,
        };
        let (state, finished) = if skip {
            ("skipped", Some(now_ms))
        } else {
            ("pending", None)
        };
        insert.execute(params![id, guid, state, now_ms, finished])?;
    }
    tx.execute(
        "UPDATE tasks SET status = 'running', activated_ms = ?2 WHERE id = ?1",
        params![id, now_ms],
    )?;
    bump_targets(tx, id)?;
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
            "SELECT count(*) FROM task_targets WHERE task_id = ?1 AND state NOT IN {}",
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
        .collect::<rusqlite::Result<_>>()?;
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
        return activate(tx, id, now_ms);
    }
    let done = if kind.installs() {
        "('installed','skipped')"
    } else {
        "('downloaded','installed','skipped')"
    };
    tx.execute(
        &format!(
            "UPDATE task_targets SET state = 'pending', attempt = (SELECT attempt FROM tasks WHERE id = ?1),
                 seq = 0, error = NULL, log_tail = NULL, finished_ms = NULL, updated_ms = ?2
             WHERE task_id = ?1 AND state NOT IN {done}"
        ),
        params![id, now_ms],
    )?;
    tx.execute("UPDATE tasks SET status = 'running' WHERE id = ?1", [id])?;
    bump_targets(tx, id)?;
    complete_if_done(tx, id, now_ms)?;
    Ok(())
}

/// Deletes a task; its tills drop it on their next poll.
pub fn delete(tx: &Transaction<'_>, id: i64) -> Result<()> {
    status_of(tx, id)?;
    bump_targets(tx, id)?;
    tx.execute("DELETE FROM tasks WHERE id = ?1", [id])?;
    Ok(())
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
            "SELECT tt.attempt, tt.seq, tt.state, t.kind, t.package_version_key, t.rollback, t.status
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
                ))
            },
        )
        .optional()?
        .ok_or_else(|| Error::NotFound(format!("device {} is not a target of task {}", r.device_id, r.task_id)))?;
    let (attempt, seq, current, kind, version_key, rollback, status) = row;
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
    tx.execute(
        "UPDATE task_targets SET state = ?3, seq = ?4, bytes_done = ?5, wan_bytes = ?6, lan_bytes = ?7,
             error = ?8, log_tail = coalesce(?9, log_tail), updated_ms = ?10,
             started_ms = coalesce(started_ms, CASE WHEN ?3 <> 'pending' THEN ?10 END),
             finished_ms = coalesce(finished_ms, ?11)
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
            finished
        ],
    )?;
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
        .collect::<rusqlite::Result<_>>()?;
    for (task, target_key, rollback) in candidates {
        if reached(Some(&key), &target_key, rollback) {
            tx.execute(
                "UPDATE task_targets SET state = 'installed', finished_ms = ?3, updated_ms = ?3
                 WHERE task_id = ?1 AND device = ?2",
                params![task, device.to_string(), now_ms],
            )?;
            tx.prepare_cached("UPDATE devices SET install_failed_ms = NULL WHERE guid = ?1")?
                .execute([device.to_string()])?;
            complete_if_done(tx, task, now_ms)?;
        }
    }
    Ok(())
}

/// The tasks a till must carry out now: running tasks where it is not final.
/// Every till of a store knows a task `settle_ms` after its activation (see
/// [`Assignment::join_by_unix_ms`]); each assignment names the task's other
/// unfinished tills in the same store.
pub fn assignments(
    conn: &Connection,
    device: &DeviceId,
    settle_ms: i64,
) -> Result<Vec<Assignment>> {
    let mut stmt = conn.prepare_cached(
        "SELECT t.id, t.kind, t.package_id, t.package_name, t.package_version, t.package_size,
                t.activate_at_ms, t.activated_ms, t.rollback, tt.attempt, tt.state
         FROM task_targets tt JOIN tasks t ON t.id = tt.task_id
         WHERE tt.device = ?1 AND t.status = 'running'
         ORDER BY t.id",
    )?;
    let rows = stmt.query_map([device.to_string()], |r| {
        let kind = parse_kind(&r.get::<_, String>(1)?)?;
        let state = parse_state(&r.get::<_, String>(10)?)?;
        let id: String = r.get(2)?;
        let version: String = r.get(4)?;
        let activated: Option<i64> = r.get(7)?;
        let at: Option<i64> = r.get(6)?;
        Ok((
            state,
            Assignment {
                task_id: tillswarm_protocol::TaskId(r.get::<_, i64>(0)? as u64),
                kind,
                package_id: id
                    .parse()
                    .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?,
                package_name: r.get(3)?,
                version: version
                    .parse()
                    .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?,
                size: r.get::<_, i64>(5)? as u64,
                install_at_unix: (kind == TaskKind::ForcedUpdate)
                    .then(|| (at.or(activated).unwrap_or(0) / 1000) as u64),
                rollback: r.get(8)?,
                attempt: r.get(9)?,
                join_by_unix_ms: activated.map(|a| (a + settle_ms).max(0) as u64),
                store_peers: Vec::new(),
                store_holders: Vec::new(),
            },
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (state, a) = row?;
        if !state.is_final_for(a.kind) {
            out.push(a);
        }
    }
    drop(stmt);
    let mut peers = conn.prepare_cached(
        "SELECT tt.device, tt.state FROM task_targets tt JOIN devices d ON d.guid = tt.device
         WHERE tt.task_id = ?1 AND tt.device <> ?2
           AND d.store_id = (SELECT store_id FROM devices WHERE guid = ?2)
         ORDER BY tt.device LIMIT ?3",
    )?;
    let mut holders = conn.prepare_cached(
        "SELECT DISTINCT tt.device FROM task_targets tt
             JOIN tasks t ON t.id = tt.task_id JOIN devices d ON d.guid = tt.device
         WHERE t.package_id = ?1 AND tt.device <> ?2
           AND d.store_id = (SELECT store_id FROM devices WHERE guid = ?2)
           AND tt.state IN ('downloaded', 'awaiting_cashier', 'declined', 'installing',
                            'rebooting', 'installed')
         ORDER BY tt.device LIMIT ?3",
    )?;
    for a in &mut out {
        let rows = holders.query_map(
            params![
                a.package_id.to_hex(),
                device.to_string(),
                MAX_STORE_PEERS as i64
            ],
            |r| r.get::<_, String>(0),
        )?;
        for row in rows {
            if let Ok(d) = row?.parse() {
                a.store_holders.push(d);
            }
        }
        let rows = peers.query_map(
            params![
                a.task_id.0 as i64,
                device.to_string(),
                // Some may be final and dropped below; the cap is on what is sent.
                (MAX_STORE_PEERS * 2) as i64
            ],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
        )?;
        for row in rows {
            let (guid, state) = row?;
            let final_state = parse_state(&state)?.is_final_for(a.kind);
            if let (false, Ok(d)) = (final_state, guid.parse()) {
                if a.store_peers.len() < MAX_STORE_PEERS {
                    a.store_peers.push(d);
                }
            }
        }
    }
    Ok(out)
}

const SUMMARY_SELECT: &str =
    "SELECT t.id, t.kind, t.status, t.package_id, t.package_name, t.package_version,
        t.package_size, t.group_id, t.group_name, t.activate_at_ms, t.activated_ms, t.completed_ms,
        t.created_ms, t.rollback, t.attempt,
        (SELECT count(*) FROM task_targets x WHERE x.task_id = t.id),
        (SELECT coalesce(sum(wan_bytes), 0) FROM task_targets x WHERE x.task_id = t.id),
        (SELECT coalesce(sum(lan_bytes), 0) FROM task_targets x WHERE x.task_id = t.id)
     FROM tasks t";

fn summary_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TaskSummary> {
    let pid: String = r.get(3)?;
    Ok(TaskSummary {
        id: r.get(0)?,
        kind: parse_kind(&r.get::<_, String>(1)?)?,
        status: r.get(2)?,
        package_id: pid
            .parse()
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?,
        package_name: r.get(4)?,
        package_version: r.get(5)?,
        package_size: r.get::<_, i64>(6)? as u64,
        group_id: r.get(7)?,
        group_name: r.get(8)?,
        activate_at: r.get::<_, Option<i64>>(9)?.map(rfc3339),
        activated: r.get::<_, Option<i64>>(10)?.map(rfc3339),
        completed: r.get::<_, Option<i64>>(11)?.map(rfc3339),
        created: rfc3339(r.get(12)?),
        rollback: r.get(13)?,
        attempt: r.get(14)?,
        targets: r.get::<_, i64>(15)? as u64,
        wan_bytes: r.get::<_, i64>(16)? as u64,
        lan_bytes: r.get::<_, i64>(17)? as u64,
        states: StateCounts::new(),
    })
}

fn fill_states(conn: &Connection, s: &mut TaskSummary) -> Result<()> {
    let mut stmt = conn.prepare_cached(
        "SELECT state, count(*) FROM task_targets WHERE task_id = ?1 GROUP BY state",
    )?;
    for row in stmt.query_map([s.id], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
    })? {
        let (state, n) = row?;
        s.states.insert(state, n as u64);
    }
    Ok(())
}

/// Every task status: `scheduled`, `running`, `paused`, then `completed` or
/// `completed_with_failures` once every target is final.
pub const STATUSES: [&str; 5] = [
    "scheduled",
    "running",
    "paused",
    "completed",
    "completed_with_failures",
];

/// Whether a status is one of the two final ones.
pub fn is_finished(status: &str) -> bool {
    status == "completed" || status == "completed_with_failures"
}

/// Listing filters and order.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TaskFilter {
    /// Only this status.
    pub status: Option<String>,
    /// `created` (default, newest first), `status`, `activate_at`, `id`.
    pub sort: Option<String>,
}

/// One page of tasks and the total.
pub fn list(
    conn: &Connection,
    filter: &TaskFilter,
    offset: u64,
    limit: u64,
) -> Result<(Vec<TaskSummary>, u64)> {
    if let Some(s) = &filter.status {
        if !STATUSES.contains(&s.as_str()) {
            return Err(Error::bad(
                "invalid_filter",
                format!("status must be one of {}, not {s:?}", STATUSES.join(", ")),
            ));
        }
    }
    let order = match filter.sort.as_deref().unwrap_or("created") {
        "created" | "-created" => "t.created_ms DESC, t.id DESC",
        "id" => "t.id",
        "status" => {
            "CASE t.status WHEN 'running' THEN 0 WHEN 'paused' THEN 1 WHEN 'scheduled' THEN 2 ELSE 3 END, t.id DESC"
        }
        "activate_at" => "coalesce(t.activate_at_ms, t.created_ms), t.id",
        other => {
            return Err(Error::bad(
                "invalid_filter",
                format!("sort must be created, id, status or activate_at, not {other:?}"),
            ));
        }
    };
    let total: i64 = conn.query_row(
        "SELECT count(*) FROM tasks WHERE ?1 IS NULL OR status = ?1",
        [&filter.status],
        |r| r.get(0),
    )?;
    let mut stmt = conn.prepare_cached(&format!(
        "{SUMMARY_SELECT} WHERE ?1 IS NULL OR t.status = ?1 ORDER BY {order} LIMIT ?2 OFFSET ?3"
    ))?;
    let mut rows = stmt
        .query_map(
            params![filter.status, limit as i64, offset as i64],
            summary_from_row,
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for s in &mut rows {
        fill_states(conn, s)?;
    }
    Ok((rows, total as u64))
}

/// One task with its per-till and per-store details.
pub fn get(conn: &Connection, id: i64) -> Result<TaskDetail> {
    let mut summary = conn
        .query_row(
            &format!("{SUMMARY_SELECT} WHERE t.id = ?1"),
            [id],
            summary_from_row,
        )
        .optional()?
        .ok_or_else(|| Error::NotFound(format!("no task {id}")))?;
    fill_states(conn, &mut summary)?;
    let size = summary.package_size.max(1) as f64;
    let mut stmt = conn.prepare_cached(
        "SELECT tt.device, d.name, d.number, d.store_id, tt.state, tt.bytes_done, tt.wan_bytes, tt.lan_bytes,
                tt.error, tt.log_tail, tt.started_ms, tt.updated_ms, tt.finished_ms
         FROM task_targets tt LEFT JOIN devices d ON d.guid = tt.device
         WHERE tt.task_id = ?1 ORDER BY d.store_id, d.number, tt.device",
    )?;
    let targets = stmt
        .query_map([id], |r| {
            let guid: String = r.get(0)?;
            let bytes_done = r.get::<_, i64>(5)? as u64;
            Ok(TargetDetail {
                device: guid
                    .parse()
                    .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?,
                name: r.get(1)?,
                number: r.get(2)?,
                store_id: r.get(3)?,
                state: parse_state(&r.get::<_, String>(4)?)?,
                bytes_done,
                progress: (bytes_done as f64 / size).min(1.0),
                wan_bytes: r.get::<_, i64>(6)? as u64,
                lan_bytes: r.get::<_, i64>(7)? as u64,
                error: r.get(8)?,
                log_tail: r.get(9)?,
                started: r.get::<_, Option<i64>>(10)?.map(rfc3339),
                updated: rfc3339(r.get(11)?),
                finished: r.get::<_, Option<i64>>(12)?.map(rfc3339),
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut stores: BTreeMap<String, StoreTraffic> = BTreeMap::new();
    for t in &targets {
        let key = t.store_id.clone().unwrap_or_else(|| "-".into());
        let s = stores.entry(key.clone()).or_insert(StoreTraffic {
            store_id: key,
            tills: 0,
            wan_bytes: 0,
            lan_bytes: 0,
            wan_ratio: 0.0,
        });
        s.tills += 1;
        s.wan_bytes += t.wan_bytes;
        s.lan_bytes += t.lan_bytes;
    }
    let stores = stores
        .into_values()
        .map(|mut s| {
            s.wan_ratio = s.wan_bytes as f64 / size;
            s
        })
        .collect();
    Ok(TaskDetail {
        summary,
        target_details: targets,
        stores,
    })
}
