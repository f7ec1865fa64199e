//! The scheduler's part of rollouts: start each wave when its turn and
//! activation come, watch its tills, and pass, hold or close the gate.
//!
//! For the current wave of a running rollout, every step:
//! 1. not started: once its activation allows, create its task with the
//!    wave's tills less the stores the rollout stopped;
//! 2. a store with `store_failure_limit` failed tills in the rollout is
//!    stopped (its waiting tills get no install permit, later waves skip it);
//! 3. failures beyond the error threshold pause the rollout with the reason;
//! 4. success at the threshold starts the soak; after it the gate waits for
//!    an approver or opens, and the next wave begins (after the last one the
//!    rollout is completed, with failures if any till failed);
//! 5. a wave whose task ended below the threshold pauses the rollout.

use crate::db::sql::{Connection, OptionalExtension, Transaction, params};
use tillswarm_protocol::{DeviceId, PackageId};

use super::{Activation, WaveSpec, WaveTargets};
use crate::clock::parse_rfc3339;
use crate::error::{Error, Result};
use crate::tasks::{self, Plan};
use crate::windows::Window;

/// Where a wave's tills stand.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Tills in the wave's task.
    pub targets: u64,
    /// Installed (for a Download wave: downloaded or installed).
    pub done: u64,
    /// Failed with no automatic retry left.
    pub failed: u64,
    /// Skipped (already at the version).
    pub skipped: u64,
}

impl Counts {
    /// Done as a share of the targets that were not skipped (100 with none).
    pub fn success_percent(&self) -> f64 {
        let eligible = self.targets.saturating_sub(self.skipped);
        if eligible == 0 {
            100.0
        } else {
            self.done as f64 * 100.0 / eligible as f64
        }
    }
}

/// A task's counts as a wave sees them.
pub fn counts(conn: &Connection, task: i64) -> Result<Counts> {
    let installs: bool = conn.query_row(
        "SELECT kind <> 'download' FROM tasks WHERE id = ?1",
        [task],
        |r| r.get(0),
    )?;
    let mut c = Counts::default();
    let mut stmt = conn.prepare_cached(
        "SELECT state, retry_at_ms IS NOT NULL, count(*) FROM task_targets WHERE task_id = ?1 GROUP BY 1, 2",
    )?;
    for row in stmt.query_map([task], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, bool>(1)?,
            r.get::<_, i64>(2)? as u64,
        ))
    })? {
        let (state, retrying, n) = row?;
        c.targets += n;
        match state.as_str() {
            "installed" => c.done += n,
            "downloaded" if !installs => c.done += n,
            "failed" if !retrying => c.failed += n,
            "skipped" => c.skipped += n,
            _ => {}
        }
    }
    Ok(c)
}

struct Current {
    rollout: i64,
    package_id: String,
    index: u32,
    waves: u32,
    window: Option<String>,
    store_failure_limit: i64,
    spec: WaveSpec,
    task: Option<i64>,
    passed_ms: Option<i64>,
    failed_base: u64,
    approved: bool,
}

fn current(tx: &Connection, id: i64) -> Result<Option<Current>> {
    Ok(tx
        .query_row(
            "SELECT r.id, r.package_id, r.current_wave,
                    (SELECT count(*) FROM rollout_waves x WHERE x.rollout_id = r.id),
                    r.window_json, r.store_failure_limit, w.spec_json, w.task_id, w.passed_ms,
                    w.failed_base, w.approved_ms IS NOT NULL
             FROM rollouts r JOIN rollout_waves w ON w.rollout_id = r.id AND w.idx = r.current_wave
             WHERE r.id = ?1",
            [id],
            |r| {
                let spec: String = r.get(6)?;
                Ok(Current {
                    rollout: r.get(0)?,
                    package_id: r.get(1)?,
                    index: r.get(2)?,
                    waves: r.get(3)?,
                    window: r.get(4)?,
                    store_failure_limit: r.get(5)?,
                    spec: serde_json::from_str(&spec).map_err(|e| {
                        crate::db::sql::Error::FromSqlConversionFailure(
                            6,
                            crate::db::sql::types::Type::Text,
                            Box::new(e),
                        )
                    })?,
                    task: r.get(7)?,
                    passed_ms: r.get(8)?,
                    failed_base: r.get::<_, i64>(9)? as u64,
                    approved: r.get(10)?,
                })
            },
        )
        .optional()?)
}

/// What one step did to a rollout; the scheduler writes each to the audit
/// log as the `scheduler`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The rollout.
    pub rollout: i64,
    /// `rollout.wave_started`, `rollout.store_stopped`, `rollout.paused`,
    /// `rollout.awaiting_approval` or `rollout.finished`.
    pub action: &'static str,
    /// What happened, in words.
    pub detail: String,
}

/// Moves every running rollout on by one step. Returns what happened.
pub fn step_all(tx: &Transaction<'_>, now_ms: i64) -> Result<Vec<Event>> {
    let running: Vec<i64> = tx
        .prepare_cached("SELECT id FROM rollouts WHERE state = 'running'")?
        .query_map([], |r| r.get(0))?
        .collect::<crate::db::sql::Result<_>>()?;
    let mut events = Vec::new();
    for id in running {
        step(tx, id, now_ms, &mut events)?;
    }
    Ok(events)
}

/// Moves one rollout on by one step (when it is running).
pub fn step_one(tx: &Transaction<'_>, id: i64, now_ms: i64) -> Result<Vec<Event>> {
    let mut events = Vec::new();
    let state: String = tx.query_row("SELECT state FROM rollouts WHERE id = ?1", [id], |r| {
        r.get(0)
    })?;
    if state == "running" {
        step(tx, id, now_ms, &mut events)?;
    }
    Ok(events)
}

fn step(tx: &Transaction<'_>, id: i64, now_ms: i64, events: &mut Vec<Event>) -> Result<()> {
    let Some(c) = current(tx, id)? else {
        return Ok(());
    };
    let Some(task) = c.task else {
        return start_wave(tx, &c, now_ms, events);
    };
    stop_failing_stores(tx, &c, now_ms, events)?;
    let counts = counts(tx, task)?;
    let gate = &c.spec.gate;
    let failed = counts.failed.saturating_sub(c.failed_base);
    let eligible = counts.targets.saturating_sub(counts.skipped).max(1);
    let over_count = gate.max_failed.is_some_and(|m| failed >= u64::from(m));
    let over_share = gate
        .max_failed_percent
        .is_some_and(|p| failed > 0 && failed as f64 * 100.0 / eligible as f64 > f64::from(p));
    if over_count || over_share {
        let reason = format!(
            "wave {} ({}): {failed} of {} tills failed, over its error threshold ({})",
            c.index + 1,
            c.spec.name,
            eligible,
            match (gate.max_failed, gate.max_failed_percent) {
                (Some(m), Some(p)) => format!("{m} failed or more than {p}%"),
                (Some(m), None) => format!("{m} failed"),
                (None, Some(p)) => format!("more than {p}% failed"),
                (None, None) => String::new(),
            }
        );
        super::pause(tx, id, &reason)?;
        events.push(Event {
            rollout: id,
            action: "rollout.paused",
            detail: reason,
        });
        return Ok(());
    }
    let success = counts.success_percent();
    if success + 1e-9 < f64::from(gate.success_percent) {
        let status: String =
            tx.query_row("SELECT status FROM tasks WHERE id = ?1", [task], |r| {
                r.get(0)
            })?;
        if tasks::is_finished(&status) {
            let reason = format!(
                "wave {} ({}) ended with {success:.0}% done, below its success threshold of {}%",
                c.index + 1,
                c.spec.name,
                gate.success_percent
            );
            super::pause(tx, id, &reason)?;
            events.push(Event {
                rollout: id,
                action: "rollout.paused",
                detail: reason,
            });
        }
        return Ok(());
    }
    let passed = match c.passed_ms {
        Some(p) => p,
        None => {
            tx.execute(
                "UPDATE rollout_waves SET passed_ms = ?3 WHERE rollout_id = ?1 AND idx = ?2",
                params![id, c.index, now_ms],
            )?;
            now_ms
        }
    };
    let last = c.index + 1 >= c.waves;
    if !last && now_ms < passed + i64::from(gate.soak_minutes) * 60_000 {
        return Ok(());
    }
    if !last && gate.approval && !c.approved {
        tx.execute(
            "UPDATE rollouts SET state = 'waiting_for_approval', reason = ?2 WHERE id = ?1",
            params![
                id,
                format!(
                    "wave {} ({}) passed its gate; an approver must approve the next wave",
                    c.index + 1,
                    c.spec.name
                )
            ],
        )?;
        events.push(Event {
            rollout: id,
            action: "rollout.awaiting_approval",
            detail: format!("wave {} passed", c.spec.name),
        });
        return Ok(());
    }
    tx.execute(
        "UPDATE rollout_waves SET finished_ms = ?3 WHERE rollout_id = ?1 AND idx = ?2",
        params![id, c.index, now_ms],
    )?;
    if last {
        let any_failed: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM tasks t JOIN task_targets tt ON tt.task_id = t.id
                            WHERE t.rollout_id = ?1 AND tt.state = 'failed')",
            [id],
            |r| r.get(0),
        )?;
        let state = if any_failed {
            "completed_with_failures"
        } else {
            "completed"
        };
        tx.execute(
            "UPDATE rollouts SET state = ?2, reason = NULL, finished_ms = ?3 WHERE id = ?1",
            params![id, state, now_ms],
        )?;
        events.push(Event {
            rollout: id,
            action: "rollout.finished",
            detail: state.to_owned(),
        });
    } else {
        tx.execute(
            "UPDATE rollouts SET current_wave = current_wave + 1 WHERE id = ?1",
            [id],
        )?;
        // The next wave starts on this same step when it can.
        step(tx, id, now_ms, events)?;
    }
    Ok(())
}

fn start_wave(
    tx: &Transaction<'_>,
    c: &Current,
    now_ms: i64,
    events: &mut Vec<Event>,
) -> Result<()> {
    let activate_at = match &c.spec.activation {
        Activation::At { at } => parse_rfc3339(at).filter(|t| *t > now_ms),
        _ => None,
    };
    let window: Option<Window> = match (&c.spec.activation, &c.window) {
        (Activation::InWindow, Some(w)) => serde_json::from_str(w).ok(),
        _ => None,
    };
    let targets = wave_tills(tx, c.rollout, &c.spec.targets)?;
    let package_id: PackageId = c
        .package_id
        .parse()
        .map_err(|_| Error::Internal(format!("rollout {} has a bad package id", c.rollout)))?;
    let plan = Plan {
        kind: c.spec.kind,
        package_id,
        group_id: None,
        label: format!("rollout {} · {}", c.rollout, c.spec.name),
        activate_at,
        rollback: false,
        window,
        store_limit: c.spec.max_installing_per_store,
        install_retries: c.spec.install_retries.unwrap_or(0),
        rollout: Some((c.rollout, c.index)),
    };
    let task = tasks::create_planned(tx, &plan, &targets, now_ms)?;
    tx.execute(
        "UPDATE rollout_waves SET task_id = ?3, started_ms = ?4 WHERE rollout_id = ?1 AND idx = ?2",
        params![c.rollout, c.index, task, now_ms],
    )?;
    tracing::info!(rollout = c.rollout, wave = %c.spec.name, task, tills = targets.len(), "wave started");
    events.push(Event {
        rollout: c.rollout,
        action: "rollout.wave_started",
        detail: format!("wave {}: task {task}, {} tills", c.spec.name, targets.len()),
    });
    Ok(())
}

/// The wave's tills now, less those of stores the rollout stopped.
fn wave_tills(tx: &Connection, rollout: i64, targets: &WaveTargets) -> Result<Vec<DeviceId>> {
    let stopped: Vec<String> = tx
        .prepare_cached("SELECT store_id FROM rollout_paused_stores WHERE rollout_id = ?1")?
        .query_map([rollout], |r| r.get(0))?
        .collect::<crate::db::sql::Result<_>>()?;
    let store_of = |conn: &Connection, d: &DeviceId| -> Result<Option<String>> {
        Ok(conn
            .query_row(
                "SELECT store_id FROM devices WHERE guid = ?1",
                [d.to_string()],
                |r| r.get(0),
            )
            .optional()?
            .flatten())
    };
    let tills: Vec<DeviceId> = match targets {
        WaveTargets::Group { group_id } => crate::groups::members(tx, group_id.0)?,
        WaveTargets::TillNumber { till_number } => guids(
            tx,
            "SELECT guid FROM devices WHERE approved = 1 AND number = ?1 AND store_id IS NOT NULL
             ORDER BY store_id",
            *till_number,
        )?,
        WaveTargets::StoresPercent { percent } => {
            let mut out = Vec::new();
            for store in spread_stores(tx, *percent)? {
                out.extend(guids(
                    tx,
                    "SELECT guid FROM devices WHERE approved = 1 AND store_id = ?1 ORDER BY number",
                    store,
                )?);
            }
            out
        }
    };
    if stopped.is_empty() {
        return Ok(tills);
    }
    let mut kept = Vec::with_capacity(tills.len());
    for d in tills {
        if !store_of(tx, &d)?.is_some_and(|s| stopped.contains(&s)) {
            kept.push(d);
        }
    }
    Ok(kept)
}

fn guids(tx: &Connection, sql: &str, arg: impl crate::db::sql::ToSql) -> Result<Vec<DeviceId>> {
    let rows: Vec<String> = tx
        .prepare_cached(sql)?
        .query_map([arg], |r| r.get(0))?
        .collect::<crate::db::sql::Result<_>>()?;
    Ok(rows.iter().filter_map(|g| g.parse().ok()).collect())
}

/// `percent` of the stores (at least one), taken in turn from each time zone
/// so the share is spread across the chain's regions.
pub fn spread_stores(tx: &Connection, percent: u32) -> Result<Vec<String>> {
    let all: Vec<(String, String)> = tx
        .prepare_cached("SELECT id, time_zone FROM stores ORDER BY time_zone, id")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<crate::db::sql::Result<_>>()?;
    let want = (all.len() * percent as usize).div_ceil(100).max(1);
    let mut zones: Vec<(String, std::collections::VecDeque<String>)> = Vec::new();
    for (id, zone) in all {
        match zones.last_mut() {
            Some((z, ids)) if *z == zone => ids.push_back(id),
            _ => zones.push((zone, [id].into())),
        }
    }
    let mut picked = Vec::new();
    while picked.len() < want && zones.iter().any(|(_, ids)| !ids.is_empty()) {
        for (_, ids) in &mut zones {
            if picked.len() < want {
                if let Some(id) = ids.pop_front() {
                    picked.push(id);
                }
            }
        }
    }
    Ok(picked)
}

fn stop_failing_stores(
    tx: &Transaction<'_>,
    c: &Current,
    now_ms: i64,
    events: &mut Vec<Event>,
) -> Result<()> {
    let failing: Vec<(String, i64)> = tx
        .prepare_cached(
            "SELECT d.store_id, count(*) FROM tasks t
                 JOIN task_targets tt ON tt.task_id = t.id
                 JOIN devices d ON d.guid = tt.device
             WHERE t.rollout_id = ?1 AND tt.state = 'failed' AND tt.retry_at_ms IS NULL
               AND d.store_id IS NOT NULL
               AND d.store_id NOT IN (SELECT store_id FROM rollout_paused_stores WHERE rollout_id = ?1)
             GROUP BY d.store_id HAVING count(*) >= ?2",
        )?
        .query_map(params![c.rollout, c.store_failure_limit], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<crate::db::sql::Result<_>>()?;
    for (store, n) in failing {
        let reason = format!(
            "{n} till(s) of store {store} failed (limit {}); its remaining tills are left out of this rollout",
            c.store_failure_limit
        );
        tx.execute(
            "INSERT INTO rollout_paused_stores (rollout_id, store_id, reason, at_ms)
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
            params![c.rollout, store, reason, now_ms],
        )?;
        if let Some(task) = c.task {
            // Its waiting tills lose their install permits at once.
            tx.execute(
                "UPDATE tasks SET permits_due_ms = 0 WHERE rollout_id = ?1 AND status = 'running'",
                [c.rollout],
            )?;
            tracing::warn!(rollout = c.rollout, task, store = %store, "store stopped in rollout");
        }
        events.push(Event {
            rollout: c.rollout,
            action: "rollout.store_stopped",
            detail: format!("store {store}: {reason}"),
        });
    }
    Ok(())
}
