//! Reading tasks: summaries with per-state counts, and one task's per-till
//! and per-store details.

use std::collections::BTreeMap;

use crate::db::sql::{Connection, OptionalExtension, params};
use serde::Deserialize;
use tillswarm_protocol::operator::groups::GroupId;
use tillswarm_protocol::operator::rollouts::RolloutId;
use tillswarm_protocol::{StoreId, TaskId};

use super::{parse_kind, parse_state};
use crate::clock::rfc3339;
use crate::db::{get_parsed, get_parsed_opt};
use crate::error::{Error, Result};
use crate::windows::WindowRule;
use jiff::tz::TimeZone;

pub use tillswarm_protocol::operator::tasks::{
    AttemptLog, StateCounts, StoreTraffic, StoreWindow, TargetDetail, TaskDetail, TaskStatus,
    TaskSummary,
};

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

fn summary_from_row(r: &crate::db::sql::Row<'_>) -> crate::db::sql::Result<TaskSummary> {
    let pid: String = r.get(3)?;
    Ok(TaskSummary {
        id: TaskId(r.get::<_, i64>(0)? as u64),
        kind: parse_kind(&r.get::<_, String>(1)?)?,
        status: get_parsed(r, 2)?,
        package_id: pid
            .parse()
            .map_err(|e| crate::db::sql::Error::ToSqlConversionFailure(Box::new(e)))?,
        package_name: r.get(4)?,
        package_version: r.get(5)?,
        package_size: r.get::<_, i64>(6)? as u64,
        group_id: r.get::<_, Option<i64>>(7)?.map(GroupId),
        group_name: r.get(8)?,
        activate_at: r.get::<_, Option<i64>>(9)?.map(rfc3339),
        activated: r.get::<_, Option<i64>>(10)?.map(rfc3339),
        completed: r.get::<_, Option<i64>>(11)?.map(rfc3339),
        created: rfc3339(r.get(12)?),
        rollback: r.get(13)?,
        attempt: r.get(14)?,
        rollout_id: r.get::<_, Option<i64>>(15)?.map(RolloutId),
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
    for row in stmt.query_map([s.id.0 as i64], |r| {
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
        if s.parse::<TaskStatus>().is_err() {
            let names: Vec<&str> = TaskStatus::ALL.iter().map(|s| s.as_str()).collect();
            return Err(Error::bad(
                "invalid_filter",
                format!("status must be one of {}, not {s:?}", names.join(", ")),
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
        "SELECT count(*) FROM tasks WHERE status = ?1 OR ?1 IS NULL",
        [&filter.status],
        |r| r.get(0),
    )?;
    let mut stmt = conn.prepare_cached(&format!(
        "{SUMMARY_SELECT} WHERE t.status = ?1 OR ?1 IS NULL ORDER BY {order} LIMIT ?2 OFFSET ?3"
    ))?;
    let mut rows = stmt
        .query_map(
            params![filter.status, limit as i64, offset as i64],
            summary_from_row,
        )?
        .collect::<crate::db::sql::Result<Vec<_>>>()?;
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
                    .map_err(|e| crate::db::sql::Error::ToSqlConversionFailure(Box::new(e)))?,
                name: r.get(1)?,
                number: r.get(2)?,
                store_id: get_parsed_opt(r, 3)?,
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
        .collect::<crate::db::sql::Result<Vec<_>>>()?;
    let mut stores: BTreeMap<String, StoreTraffic> = BTreeMap::new();
    for t in &targets {
        let key = t
            .store_id
            .as_ref()
            .map_or_else(|| "-".to_owned(), |s| s.as_str().to_owned());
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
                state: parse_state(&r.get::<_, String>(2)?)?,
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
    let running = !task.summary.status.is_finished();
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
        .collect::<crate::db::sql::Result<_>>()?;
    for s in &task.stores {
        let name = zones.get(&s.store_id).cloned().unwrap_or_default();
        let zone = crate::windows::zone(&name, default_zone).unwrap_or(default_zone.clone());
        let span = rule.current_or_next(&zone, now_ms);
        let store_id = StoreId::new(s.store_id.as_str())
            .map_err(|e| Error::Internal(format!("store of task {}: {e}", task.summary.id)))?;
        task.windows.push(StoreWindow {
            store_id,
            time_zone: zone.iana_name().unwrap_or("UTC").to_owned(),
            open: span.is_some_and(|x| x.contains(now_ms)),
            start: span.map(|x| rfc3339(x.start_ms)),
            start_local: span.map(|x| crate::windows::local_text(&zone, x.start_ms)),
            end: span.map(|x| rfc3339(x.end_ms)),
        });
    }
    Ok(())
}
