//! Reading rollouts: each with its waves' progress and gate state, and the
//! stores it stopped.

use crate::db::sql::{Connection, OptionalExtension, params};

use super::drive::counts;
use super::{RolloutId, RolloutState, WaveSpec, time};
use crate::db::get_parsed;
use crate::error::{Error, Result};
use tillswarm_protocol::TaskId;

pub use tillswarm_protocol::operator::rollouts::{PausedStore, Rollout, WaveState, WaveView};

const SELECT: &str = "SELECT id, name, package_id, package_name, package_version, state, reason,
        current_wave, window_json, store_failure_limit, created_by, created_ms, started_ms,
        finished_ms FROM rollouts";

fn from_row(r: &crate::db::sql::Row<'_>) -> crate::db::sql::Result<Rollout> {
    let window: Option<String> = r.get(8)?;
    Ok(Rollout {
        id: RolloutId(r.get(0)?),
        name: r.get(1)?,
        package_id: get_parsed(r, 2)?,
        package_name: r.get(3)?,
        package_version: r.get(4)?,
        state: get_parsed(r, 5)?,
        reason: r.get(6)?,
        current_wave: r.get(7)?,
        window: window.and_then(|w| serde_json::from_str(&w).ok()),
        store_failure_limit: r.get(9)?,
        created_by: r.get(10)?,
        created: crate::clock::rfc3339(r.get(11)?),
        started: time(r.get(12)?),
        finished: time(r.get(13)?),
        waves: Vec::new(),
        paused_stores: Vec::new(),
    })
}

fn fill(conn: &Connection, r: &mut Rollout) -> Result<()> {
    let mut stmt = conn.prepare_cached(
        "SELECT idx, name, kind, spec_json, task_id, started_ms, passed_ms, finished_ms,
                approved_by, approved_ms
         FROM rollout_waves WHERE rollout_id = ?1 ORDER BY idx",
    )?;
    let rows: Vec<_> = stmt
        .query_map([r.id.0], |row| {
            Ok((
                row.get::<_, u32>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, Option<i64>>(4)?,
                row.get::<_, Option<i64>>(5)?,
                row.get::<_, Option<i64>>(6)?,
                row.get::<_, Option<i64>>(7)?,
                row.get::<_, Option<String>>(8)?,
                row.get::<_, Option<i64>>(9)?,
            ))
        })?
        .collect::<crate::db::sql::Result<_>>()?;
    for (index, name, kind, spec, task, started, passed, finished, by, approved) in rows {
        let spec: WaveSpec = serde_json::from_str(&spec)
            .map_err(|e| Error::Internal(format!("rollout {} wave {index}: {e}", r.id)))?;
        let c = match task {
            Some(t) => counts(conn, t)?,
            None => Default::default(),
        };
        let state = if finished.is_some() {
            WaveState::Passed
        } else if index == r.current_wave && r.state == RolloutState::WaitingForApproval {
            WaveState::WaitingForApproval
        } else if passed.is_some() {
            WaveState::Soaking
        } else if started.is_some() {
            WaveState::Running
        } else {
            WaveState::Waiting
        };
        r.waves.push(WaveView {
            index,
            name,
            kind: crate::tasks::parse_kind(&kind)?,
            state,
            spec,
            task_id: task.map(|t| TaskId(t as u64)),
            targets: c.targets,
            installed: c.done,
            failed: c.failed,
            skipped: c.skipped,
            success_percent: (c.success_percent() * 10.0).round() / 10.0,
            started_at: time(started),
            passed_at: time(passed),
            finished_at: time(finished),
            approved_by: by,
            approved_at: time(approved),
        });
    }
    r.paused_stores = conn
        .prepare_cached(
            "SELECT store_id, reason, at_ms FROM rollout_paused_stores WHERE rollout_id = ?1
             ORDER BY at_ms, store_id",
        )?
        .query_map([r.id.0], |row| {
            Ok(PausedStore {
                store_id: get_parsed(row, 0)?,
                reason: row.get(1)?,
                at: crate::clock::rfc3339(row.get(2)?),
            })
        })?
        .collect::<crate::db::sql::Result<_>>()?;
    Ok(())
}

/// One rollout with its waves.
pub fn get(conn: &Connection, id: i64) -> Result<Rollout> {
    let mut r = conn
        .query_row(&format!("{SELECT} WHERE id = ?1"), [id], from_row)
        .optional()?
        .ok_or_else(|| Error::NotFound(format!("no rollout {id}")))?;
    fill(conn, &mut r)?;
    Ok(r)
}

/// A page of rollouts, newest first, optionally in one state; and the total.
pub fn list(
    conn: &Connection,
    state: Option<&str>,
    offset: u64,
    limit: u64,
) -> Result<(Vec<Rollout>, u64)> {
    if let Some(s) = state {
        if s.parse::<RolloutState>().is_err() {
            let names: Vec<&str> = RolloutState::ALL.iter().map(|s| s.as_str()).collect();
            return Err(Error::bad(
                "invalid_filter",
                format!("state must be one of {}, not {s:?}", names.join(", ")),
            ));
        }
    }
    let total: i64 = conn.query_row(
        "SELECT count(*) FROM rollouts WHERE state = ?1 OR ?1 IS NULL",
        [state],
        |r| r.get(0),
    )?;
    let mut rows = conn
        .prepare_cached(&format!(
            "{SELECT} WHERE state = ?1 OR ?1 IS NULL ORDER BY id DESC LIMIT ?2 OFFSET ?3"
        ))?
        .query_map(params![state, limit as i64, offset as i64], from_row)?
        .collect::<crate::db::sql::Result<Vec<_>>>()?;
    for r in &mut rows {
        fill(conn, r)?;
    }
    Ok((rows, total as u64))
}
