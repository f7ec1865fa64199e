//! Reading tasks: summaries with per-state counts, and one task's per-till
//! and per-store details.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use tillswarm_protocol::api::{TargetState, TaskKind};
use tillswarm_protocol::{DeviceId, PackageId};

use super::{STATUSES, parse_kind, parse_state};
use crate::clock::rfc3339;
use crate::error::{Error, Result};
use crate::windows::Window;
use jiff::tz::TimeZone;

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
    /// The rollout this task is a wave of.
    pub rollout_id: Option<i64>,
    /// The store-local maintenance window installs wait for.
    pub window: Option<Window>,
    /// At most this many tills of a store install at once (absent: half the
    /// store's tills, at least one).
    pub max_installing_per_store: Option<u32>,
    /// Automatic retries of a failed install.
    pub install_retries: u32,
    /// Unfinished targets not heard from for the unreachable time (task
    /// details only; counted apart from failed).
    #[serde(default)]
    pub unreachable: u64,
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
    /// Automatic retries used so far.
    pub retries: u32,
    /// When the next automatic retry starts.
    pub retry_at: Option<String>,
    /// When the till reported that its install started (this attempt).
    pub install_started: Option<String>,
    /// Holds an install permit (may ask or install now).
    pub install_permit: bool,
    /// Not final and not heard from for the unreachable time.
    #[serde(default)]
    pub unreachable: bool,
    /// When the till was last heard from.
    pub last_seen: Option<String>,
    /// Earlier attempts (automatic retries, restarts), oldest first.
    #[serde(default)]
    pub attempts: Vec<AttemptLog>,
}

/// One earlier attempt of a target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptLog {
    /// Attempt number.
    pub attempt: u32,
    /// How it ended.
    pub state: String,
    /// Why it failed.
    pub error: Option<String>,
    /// End of its install log.
    pub log_tail: Option<String>,
    /// When it ended.
    pub finished: String,
}

/// A store's next maintenance window for a windowed task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreWindow {
    /// Store id.
    pub store_id: String,
    /// The store's IANA zone (the default zone when it names none).
    pub time_zone: String,
    /// Whether the window is open now.
    pub open: bool,
    /// Start of the current or next occurrence, UTC.
    pub start: Option<String>,
    /// The same, in the store's local time with its offset.
    pub start_local: Option<String>,
    /// End of that occurrence, UTC.
    pub end: Option<String>,
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
    /// Each store's current or next window (tasks with a window).
    #[serde(default)]
    pub windows: Vec<StoreWindow>,
    /// True when `target_details` and `stores` were left out (the answer to
    /// creating a task for more than [`DETAILS_IN_CREATE`] tills; read them
    /// with the task's GET).
    #[serde(default)]
    pub details_omitted: bool,
}

/// Most targets whose details the answer to a task's creation carries.
pub const DETAILS_IN_CREATE: u64 = 1_000;

/// The summary alone, as a detail without its per-till and per-store lists.
pub fn summary_only(conn: &Connection, id: i64) -> Result<TaskDetail> {
    let mut summary = conn
        .query_row(
            &format!("{SUMMARY_SELECT} WHERE t.id = ?1"),
            [id],
            summary_from_row,
        )
        .optional()?
        .ok_or_else(|| Error::NotFound(format!("no task {id}")))?;
    fill_states(conn, &mut summary)?;
    Ok(TaskDetail {
        summary,
        target_details: Vec::new(),
        stores: Vec::new(),
        windows: Vec::new(),
        details_omitted: true,
    })
}

const SUMMARY_SELECT: &str =
    "SELECT t.id, t.kind, t.status, t.package_id, t.package_name, t.package_version,
        t.package_size, t.group_id, t.group_name, t.activate_at_ms, t.activated_ms, t.completed_ms,
        t.created_ms, t.rollback, t.attempt, t.rollout_id, t.window_json, t.store_limit, t.install_retries,
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
        rollout_id: r.get(15)?,
        window: r
            .get::<_, Option<String>>(16)?
            .and_then(|w| serde_json::from_str(&w).ok()),
        max_installing_per_store: r.get(17)?,
        install_retries: r.get(18)?,
        unreachable: 0,
        targets: r.get::<_, i64>(19)? as u64,
        wan_bytes: r.get::<_, i64>(20)? as u64,
        lan_bytes: r.get::<_, i64>(21)? as u64,
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
                tt.error, tt.log_tail, tt.started_ms, tt.updated_ms, tt.finished_ms,
                tt.retries, tt.retry_at_ms, tt.permit_ms IS NOT NULL, d.last_seen_ms,
                tt.install_started_ms
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
                retries: r.get(13)?,
                retry_at: r.get::<_, Option<i64>>(14)?.map(rfc3339),
                install_permit: r.get(15)?,
                install_started: r.get::<_, Option<i64>>(17)?.map(rfc3339),
                unreachable: false,
                last_seen: r.get::<_, Option<i64>>(16)?.map(rfc3339),
                attempts: Vec::new(),
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
    let mut targets = targets;
    let mut attempts = conn.prepare_cached(
        "SELECT device, attempt, state, error, log_tail, finished_ms FROM target_attempts
         WHERE task_id = ?1 ORDER BY device, attempt",
    )?;
    for row in attempts.query_map([id], |r| {
        Ok((
            r.get::<_, String>(0)?,
            AttemptLog {
                attempt: r.get(1)?,
                state: r.get(2)?,
                error: r.get(3)?,
                log_tail: r.get(4)?,
                finished: rfc3339(r.get(5)?),
            },
        ))
    })? {
        let (device, log) = row?;
        if let Some(t) = targets.iter_mut().find(|t| t.device.to_string() == device) {
            t.attempts.push(log);
        }
    }
    Ok(TaskDetail {
        summary,
        target_details: targets,
        stores,
        windows: Vec::new(),
        details_omitted: false,
    })
}

/// Adds what depends on the time: which targets are unreachable (silent
/// since `unreachable_before_ms`, not final) and, for a windowed task, each
/// store's current or next window.
pub fn annotate(
    conn: &Connection,
    task: &mut TaskDetail,
    default_zone: &TimeZone,
    now_ms: i64,
    unreachable_before_ms: i64,
) -> Result<()> {
    let kind = task.summary.kind;
    let running = !super::is_finished(&task.summary.status);
    let mut n = 0;
    for t in &mut task.target_details {
        let heard = t
            .last_seen
            .as_deref()
            .and_then(crate::clock::parse_rfc3339)
            .unwrap_or(0);
        t.unreachable = running && !t.state.is_final_for(kind) && heard < unreachable_before_ms;
        n += u64::from(t.unreachable);
    }
    task.summary.unreachable = n;
    let Some(rule) = task.summary.window.as_ref().and_then(|w| w.rule().ok()) else {
        return Ok(());
    };
    let zones: BTreeMap<String, String> = conn
        .prepare_cached("SELECT id, time_zone FROM stores")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for s in &task.stores {
        let name = zones.get(&s.store_id).cloned().unwrap_or_default();
        let zone = crate::windows::zone(&name, default_zone).unwrap_or(default_zone.clone());
        let span = rule.current_or_next(&zone, now_ms);
        task.windows.push(StoreWindow {
            store_id: s.store_id.clone(),
            time_zone: zone.iana_name().unwrap_or("UTC").to_owned(),
            open: span.is_some_and(|x| x.contains(now_ms)),
            start: span.map(|x| rfc3339(x.start_ms)),
            start_local: span.map(|x| crate::windows::local_text(&zone, x.start_ms)),
            end: span.map(|x| rfc3339(x.end_ms)),
        });
    }
    Ok(())
}
