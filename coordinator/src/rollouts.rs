//! Rollouts: one package delivered in ordered waves (pilot tills, then Even,
//! then Odd, say), each wave an ordinary task linked to the rollout, and a
//! gate between waves: a success threshold (then on automatically, or once an
//! approver approves), an error threshold that pauses the rollout with its
//! reason, a soak time, and per store: the first K failed tills of a store
//! stop that store's part of the rest. The scheduler drives rollouts
//! ([`drive`]); everything lives in the database, so a restarted coordinator
//! carries on where it stopped.
//!
//! States: `draft` -> `running` <-> `waiting_for_approval`, `paused` (with a
//! reason), then `completed`, `completed_with_failures` or `cancelled`.

use crate::db::sql::{Connection, OptionalExtension, Transaction, params};
use tillswarm_protocol::api::TaskKind;

use crate::clock::rfc3339;
use crate::error::{Error, Result};
use crate::groups::GroupId;
use crate::tasks::{self, MAX_INSTALL_RETRIES};
use crate::windows::WindowRule;

pub mod drive;
mod view;

pub use view::{PausedStore, Rollout, WaveView, get, list};

pub use tillswarm_protocol::operator::rollouts::{
    Activation, Gate, NewRollout, RolloutId, RolloutState, TEMPLATE_PILOT_EVEN_ODD,
    TemplateOptions, WaveSpec, WaveState, WaveTargets,
};

/// Most waves in one rollout.
pub const MAX_WAVES: usize = 20;
const MAX_NAME: usize = 64;
const MAX_SOAK_MINUTES: u32 = 30 * 24 * 60;

/// Whether a rollout in `state` (as stored) is over.
pub fn is_final(state: &str) -> bool {
    state
        .parse::<RolloutState>()
        .is_ok_and(RolloutState::is_final)
}

fn bad(code: &'static str, message: impl Into<String>) -> Error {
    Error::bad(code, message)
}

/// The waves of the recommended rollout: Download to All (pre-stage), the
/// pilot tills Update, Even Update, Odd Forced update; every install wave in
/// the window when there is one.
pub fn pilot_even_odd(options: &TemplateOptions, has_window: bool) -> Vec<WaveSpec> {
    let soak = options.soak_minutes.unwrap_or(60);
    let activation = if has_window {
        Activation::InWindow
    } else {
        Activation::Immediately
    };
    let wave = |name: &str, kind, targets, gate| WaveSpec {
        name: name.to_owned(),
        kind,
        targets,
        activation: if kind == TaskKind::Download {
            Activation::Immediately
        } else {
            activation.clone()
        },
        gate,
        max_installing_per_store: None,
        install_retries: None,
    };
    vec![
        wave(
            "Pre-stage",
            TaskKind::Download,
            WaveTargets::Group {
                group_id: GroupId(1),
            },
            Gate {
                success_percent: 90,
                max_failed_percent: Some(10),
                ..Gate::default()
            },
        ),
        wave(
            "Pilot",
            TaskKind::Update,
            WaveTargets::TillNumber {
                till_number: options.pilot_till_number.unwrap_or(1),
            },
            Gate {
                success_percent: 100,
                approval: options.approval_after_pilot.unwrap_or(true),
                max_failed: Some(1),
                soak_minutes: soak,
                ..Gate::default()
            },
        ),
        wave(
            "Even",
            TaskKind::Update,
            WaveTargets::Group {
                group_id: GroupId(2),
            },
            Gate {
                success_percent: 95,
                max_failed_percent: Some(5),
                soak_minutes: soak,
                ..Gate::default()
            },
        ),
        wave(
            "Odd",
            TaskKind::ForcedUpdate,
            WaveTargets::Group {
                group_id: GroupId(3),
            },
            Gate {
                success_percent: 95,
                max_failed_percent: Some(5),
                ..Gate::default()
            },
        ),
    ]
}

fn check_wave(conn: &Connection, w: &WaveSpec, has_window: bool, now_ms: i64) -> Result<()> {
    if w.name.trim().is_empty() || w.name.chars().count() > MAX_NAME {
        return Err(bad(
            "invalid_name",
            format!("a wave name must be 1 to {MAX_NAME} characters"),
        ));
    }
    match &w.targets {
        WaveTargets::Group { group_id } => {
            let known: bool = conn.query_row(
                "SELECT EXISTS (SELECT 1 FROM groups WHERE id = ?1)",
                [group_id.0],
                |r| r.get(0),
            )?;
            if !known {
                return Err(bad("unknown_group", format!("no group {group_id}")));
            }
        }
        WaveTargets::TillNumber { till_number } if *till_number == 0 => {
            return Err(bad("invalid_targets", "till_number counts from 1"));
        }
        WaveTargets::StoresPercent { percent } if !(1..=100).contains(percent) => {
            return Err(bad(
                "invalid_targets",
                format!("percent must be 1 to 100, not {percent}"),
            ));
        }
        _ => {}
    }
    match &w.activation {
        Activation::At { at } => {
            tasks::future_time("activation.at", at, now_ms)?;
        }
        Activation::InWindow if !has_window => {
            return Err(bad(
                "no_window",
                format!(
                    "wave {:?} is activated in_window but the rollout has no window",
                    w.name
                ),
            ));
        }
        _ => {}
    }
    let g = &w.gate;
    if g.success_percent > 100 || g.max_failed_percent.is_some_and(|p| p > 100) {
        return Err(bad(
            "invalid_threshold",
            format!("wave {:?}: thresholds are percentages, 0 to 100", w.name),
        ));
    }
    if g.max_failed == Some(0) {
        return Err(bad(
            "invalid_threshold",
            "max_failed counts failed tills and must be at least 1 (use max_failed_percent 0 to pause on any failure)",
        ));
    }
    if g.soak_minutes > MAX_SOAK_MINUTES {
        return Err(bad(
            "invalid_threshold",
            format!("soak_minutes is at most {MAX_SOAK_MINUTES}"),
        ));
    }
    if w.max_installing_per_store == Some(0) {
        return Err(bad(
            "invalid_limit",
            "max_installing_per_store must be at least 1",
        ));
    }
    if w.install_retries.is_some_and(|n| n > MAX_INSTALL_RETRIES) {
        return Err(bad(
            "invalid_limit",
            format!("install_retries must be 0 to {MAX_INSTALL_RETRIES}"),
        ));
    }
    Ok(())
}

/// Checks and stores a rollout; unless a draft, it starts at once (its first
/// wave begins on this call). Returns its id.
pub fn create(
    tx: &Transaction<'_>,
    input: &NewRollout,
    created_by: &str,
    now_ms: i64,
) -> Result<i64> {
    let (pkg_name, pkg_version): (String, String) = tx
        .query_row(
            "SELECT name, version FROM packages WHERE package_id = ?1",
            [input.package_id.to_hex()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?
        .ok_or_else(|| {
            bad(
                "unknown_package",
                format!("no package {}", input.package_id),
            )
        })?;
    if let Some(w) = &input.window {
        w.rule()?;
    }
    let has_window = input.window.is_some();
    let waves = match input.template.as_deref() {
        None => input.waves.clone(),
        Some(TEMPLATE_PILOT_EVEN_ODD) if input.waves.is_empty() => {
            pilot_even_odd(&input.template_options, has_window)
        }
        Some(TEMPLATE_PILOT_EVEN_ODD) => {
            return Err(bad(
                "template_with_waves",
                "give either a template or waves, not both",
            ));
        }
        Some(other) => {
            return Err(bad(
                "unknown_template",
                format!("no template {other:?} (known: {TEMPLATE_PILOT_EVEN_ODD})"),
            ));
        }
    };
    if waves.is_empty() || waves.len() > MAX_WAVES {
        return Err(bad(
            "invalid_waves",
            format!("a rollout has 1 to {MAX_WAVES} waves"),
        ));
    }
    for w in &waves {
        check_wave(tx, w, has_window, now_ms)?;
    }
    let name = match input.name.as_deref().map(str::trim) {
        None | Some("") => format!("{pkg_name} {pkg_version}"),
        Some(n) if n.chars().count() > MAX_NAME => {
            return Err(bad(
                "invalid_name",
                format!("a rollout name is at most {MAX_NAME} characters"),
            ));
        }
        Some(n) => n.to_owned(),
    };
    let limit = input.store_failure_limit.unwrap_or(1);
    if !(1..=10_000).contains(&limit) {
        return Err(bad(
            "invalid_threshold",
            "store_failure_limit must be 1 to 10000",
        ));
    }
    let window = input
        .window
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| Error::Internal(e.to_string()))?;
    let id: i64 = tx.query_row(
        "INSERT INTO rollouts (name, package_id, package_name, package_version, state, window_json,
                               store_failure_limit, created_by, created_ms)
         VALUES (?1, ?2, ?3, ?4, 'draft', ?5, ?6, ?7, ?8) RETURNING id",
        params![
            name,
            input.package_id.to_hex(),
            pkg_name,
            pkg_version,
            window,
            limit,
            created_by,
            now_ms
        ],
        |r| r.get(0),
    )?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO rollout_waves (rollout_id, idx, name, kind, spec_json) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for (i, w) in waves.iter().enumerate() {
        let spec = serde_json::to_string(w).map_err(|e| Error::Internal(e.to_string()))?;
        insert.execute(params![id, i as i64, w.name.trim(), w.kind.as_str(), spec])?;
    }
    if !input.draft {
        start(tx, id, now_ms)?;
    }
    Ok(id)
}

fn state_of(conn: &Connection, id: i64) -> Result<String> {
    conn.query_row("SELECT state FROM rollouts WHERE id = ?1", [id], |r| {
        r.get(0)
    })
    .optional()?
    .ok_or_else(|| Error::NotFound(format!("no rollout {id}")))
}

fn start(tx: &Transaction<'_>, id: i64, now_ms: i64) -> Result<()> {
    tx.execute(
        "UPDATE rollouts SET state = 'running', reason = NULL, started_ms = ?2 WHERE id = ?1",
        params![id, now_ms],
    )?;
    Ok(())
}

/// The rollout's tasks not yet finished.
fn open_tasks(tx: &Connection, id: i64) -> Result<Vec<i64>> {
    Ok(tx
        .prepare_cached(
            "SELECT id FROM tasks WHERE rollout_id = ?1
               AND status IN ('scheduled', 'running', 'paused')",
        )?
        .query_map([id], |r| r.get(0))?
        .collect::<crate::db::sql::Result<_>>()?)
}

/// Pauses a rollout with `reason`: its tasks stop reaching tills, so no
/// install starts after this (ones already running finish).
pub fn pause(tx: &Transaction<'_>, id: i64, reason: &str) -> Result<()> {
    match state_of(tx, id)?.as_str() {
        "running" | "waiting_for_approval" => {
            tx.execute(
                "UPDATE rollouts SET state = 'paused', reason = ?2 WHERE id = ?1",
                params![id, reason],
            )?;
            for task in open_tasks(tx, id)? {
                tasks::pause(tx, task)?;
            }
            tracing::warn!(rollout = id, reason, "rollout paused");
            Ok(())
        }
        "paused" => Ok(()),
        other => Err(Error::conflict(
            "invalid_transition",
            format!("a {other} rollout cannot be paused"),
        )),
    }
}

/// Starts a draft, or resumes a paused rollout: its tasks run again and the
/// failures so far are accepted (the current wave's error threshold counts
/// only failures after this).
pub fn resume(tx: &Transaction<'_>, id: i64, now_ms: i64) -> Result<()> {
    match state_of(tx, id)?.as_str() {
        "draft" => start(tx, id, now_ms),
        "paused" => {
            tx.execute(
                "UPDATE rollouts SET state = 'running', reason = NULL WHERE id = ?1",
                [id],
            )?;
            for task in open_tasks(tx, id)? {
                tasks::resume(tx, task, now_ms)?;
            }
            tx.execute(
                "UPDATE rollout_waves SET failed_base = (
                     SELECT count(*) FROM task_targets tt
                     WHERE tt.task_id = rollout_waves.task_id AND tt.state = 'failed' AND tt.retry_at_ms IS NULL)
                 WHERE rollout_id = ?1 AND idx = (SELECT current_wave FROM rollouts WHERE id = ?1)
                   AND task_id IS NOT NULL",
                [id],
            )?;
            Ok(())
        }
        "running" | "waiting_for_approval" => Ok(()),
        other => Err(Error::conflict(
            "invalid_transition",
            format!("a {other} rollout cannot be resumed"),
        )),
    }
}

/// Cancels a rollout: its unfinished tasks are paused and stay for the record.
pub fn cancel(tx: &Transaction<'_>, id: i64, now_ms: i64) -> Result<()> {
    let state = state_of(tx, id)?;
    if is_final(&state) {
        return Err(Error::conflict(
            "invalid_transition",
            format!("a {state} rollout cannot be cancelled"),
        ));
    }
    for task in open_tasks(tx, id)? {
        tasks::pause(tx, task)?;
    }
    tx.execute(
        "UPDATE rollouts SET state = 'cancelled', finished_ms = ?2 WHERE id = ?1",
        params![id, now_ms],
    )?;
    Ok(())
}

/// An approver lets the next wave start. Returns the approved wave's name.
pub fn approve(tx: &Transaction<'_>, id: i64, by: &str, now_ms: i64) -> Result<String> {
    let state = state_of(tx, id)?;
    if state != "waiting_for_approval" {
        return Err(Error::conflict(
            "not_waiting",
            format!("rollout {id} is {state}, not waiting for approval"),
        ));
    }
    let name: String = tx.query_row(
        "UPDATE rollout_waves SET approved_by = ?2, approved_ms = ?3
         WHERE rollout_id = ?1 AND idx = (SELECT current_wave FROM rollouts WHERE id = ?1)
         RETURNING name",
        params![id, by, now_ms],
        |r| r.get(0),
    )?;
    tx.execute(
        "UPDATE rollouts SET state = 'running', reason = NULL WHERE id = ?1",
        [id],
    )?;
    Ok(name)
}

/// Text time for an optional millisecond column.
fn time(ms: Option<i64>) -> Option<String> {
    ms.map(rfc3339)
}
