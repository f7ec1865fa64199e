//! Install permits: a till of an Update or Forced update task downloads at
//! once but may ask its cashier or install only once it holds a permit. Per
//! store, at most K targets hold one at a time (the task's
//! `max_installing_per_store`, else half the store's tills, at least one), so
//! a store never has all its tills down; with a maintenance window, permits
//! are granted only while the store's own local window is open and unused ones
//! are taken back when it closes; stores a rollout paused get none; a till not
//! heard from for the unreachable time gives its unused permit back.
//!
//! The K slots of a store are shared by every install task: a till holding a
//! permit, asking its cashier or installing in one task counts against the
//! others too, and is not given a second permit elsewhere meanwhile.
//!
//! A task's permits are looked at again when a report frees a slot (within a
//! second), and at least every [`RECHECK_MS`].

use std::collections::HashMap;

use crate::db::sql::{Transaction, params};
use jiff::tz::TimeZone;

use crate::error::Result;
use crate::windows::WindowRule;
use crate::windows::{Rule, Window};

/// Permits are looked at again this often even when nothing was reported
/// (windows opening and closing, tills going quiet).
pub const RECHECK_MS: i64 = 15_000;

/// Target states that may be given a permit (not yet asking or installing).
const WAITING: [&str; 3] = ["pending", "downloading", "downloaded"];
/// States that use a slot whether or not a permit was recorded (a till that
/// was installing before permits existed, or one a manual install started).
const BUSY: [&str; 3] = ["awaiting_cashier", "installing", "rebooting"];

/// What the permit pass needs besides the database.
pub struct Context<'a> {
    /// The zone of stores whose registry entry names none.
    pub default_zone: &'a TimeZone,
    /// A till silent since before this is unreachable.
    pub unreachable_before_ms: i64,
}

struct Target {
    device: String,
    state: String,
    permit: bool,
    last_seen_ms: i64,
}

/// Looks at the permits of every install task that is due. Returns how many
/// targets gained or lost one.
pub fn refresh_due(tx: &Transaction<'_>, now_ms: i64, cx: &Context<'_>) -> Result<usize> {
    let due: Vec<i64> = tx
        .prepare_cached(
            "SELECT id FROM tasks WHERE status = 'running' AND kind <> 'download' AND permits_due_ms <= ?1",
        )?
        .query_map([now_ms], |r| r.get(0))?
        .collect::<crate::db::sql::Result<_>>()?;
    let mut changed = 0;
    for id in due {
        changed += refresh(tx, id, now_ms, cx)?;
    }
    Ok(changed)
}

/// Asks for a task's permits to be looked at within a second, and those of
/// the other running install tasks, which share its stores' slots.
pub fn soon(tx: &Transaction<'_>, task: i64, now_ms: i64) -> Result<()> {
    tx.prepare_cached(
        "UPDATE tasks SET permits_due_ms = min(permits_due_ms, ?2)
         WHERE id = ?1 OR (status = 'running' AND kind <> 'download')",
    )?
    .execute(params![task, now_ms + 1000])?;
    Ok(())
}

/// Grants and takes back one task's permits; returns how many changed.
pub fn refresh(tx: &Transaction<'_>, task: i64, now_ms: i64, cx: &Context<'_>) -> Result<usize> {
    let (window, limit, rollout, installs): (Option<String>, Option<u32>, Option<i64>, bool) = tx
        .query_row(
        "SELECT window_json, store_limit, rollout_id, kind <> 'download' FROM tasks WHERE id = ?1",
        [task],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?;
    if !installs {
        // A Download task installs nothing: no permits, no revision bumps.
        return Ok(0);
    }
    let rule: Option<Rule> = window
        .and_then(|w| serde_json::from_str::<Window>(&w).ok())
        .and_then(|w| w.rule().ok());
    let zones: HashMap<String, String> = tx
        .prepare_cached("SELECT id, time_zone FROM stores")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<crate::db::sql::Result<_>>()?;
    let sizes: HashMap<String, u32> = tx
        .prepare_cached(
            "SELECT coalesce(store_id, ''), count(*) FROM devices WHERE approved = 1 GROUP BY 1",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<crate::db::sql::Result<_>>()?;
    let paused: Vec<String> = match rollout {
        Some(r) => tx
            .prepare_cached("SELECT store_id FROM rollout_paused_stores WHERE rollout_id = ?1")?
            .query_map([r], |r| r.get(0))?
            .collect::<crate::db::sql::Result<_>>()?,
        None => Vec::new(),
    };
    let elsewhere = busy_elsewhere(tx, task)?;
    let mut stores: HashMap<String, Vec<Target>> = HashMap::new();
    let mut stmt = tx.prepare_cached(
        "SELECT tt.device, coalesce(d.store_id, ''), tt.state, tt.permit_ms IS NOT NULL,
                coalesce(d.last_seen_ms, 0)
         FROM task_targets tt JOIN devices d ON d.guid = tt.device
         WHERE tt.task_id = ?1 AND tt.state NOT IN ('installed', 'failed', 'skipped')
         ORDER BY d.store_id, d.number, tt.device",
    )?;
    for row in stmt.query_map([task], |r| {
        Ok((
            r.get::<_, String>(1)?,
            Target {
                device: r.get(0)?,
                state: r.get(2)?,
                permit: r.get(3)?,
                last_seen_ms: r.get(4)?,
            },
        ))
    })? {
        let (store, t) = row?;
        stores.entry(store).or_default().push(t);
    }
    drop(stmt);
    let mut grant = tx.prepare_cached(
        "UPDATE task_targets SET permit_ms = ?3, permit_until_ms = ?4 WHERE task_id = ?1 AND device = ?2",
    )?;
    let mut revoke = tx.prepare_cached(
        "UPDATE task_targets SET permit_ms = NULL, permit_until_ms = NULL WHERE task_id = ?1 AND device = ?2",
    )?;
    let mut bump =
        tx.prepare_cached("UPDATE devices SET assign_rev = assign_rev + 1 WHERE guid = ?1")?;
    let mut changed = 0;
    for (store, targets) in &stores {
        let open_until: Option<Option<i64>> = match &rule {
            None => Some(None),
            Some(rule) => {
                let zone = crate::windows::zone(
                    zones.get(store).map_or("", String::as_str),
                    cx.default_zone,
                )
                .unwrap_or_else(|_| cx.default_zone.clone());
                rule.current_or_next(&zone, now_ms)
                    .filter(|s| s.contains(now_ms))
                    .map(|s| Some(s.end_ms))
            }
        };
        let stopped = paused.contains(store);
        let k = limit
            .unwrap_or_else(|| sizes.get(store).copied().unwrap_or(1) / 2)
            .max(1) as usize;
        let mut holding = elsewhere.get(store).map_or(0, Vec::len);
        for t in targets {
            let waiting = WAITING.contains(&t.state.as_str());
            let reachable = t.last_seen_ms >= cx.unreachable_before_ms;
            let give_back = t.permit
                && ((waiting && (open_until.is_none() || stopped || !reachable))
                    || t.state == "declined");
            if give_back {
                revoke.execute(params![task, t.device])?;
                bump.execute([&t.device])?;
                changed += 1;
            } else if t.permit || BUSY.contains(&t.state.as_str()) {
                holding += 1;
            }
        }
        let Some(until) = open_until else { continue };
        if stopped {
            continue;
        }
        for t in targets {
            if holding >= k {
                break;
            }
            let waiting = WAITING.contains(&t.state.as_str());
            let busy = elsewhere.get(store).is_some_and(|d| d.contains(&t.device));
            if !t.permit && !busy && waiting && t.last_seen_ms >= cx.unreachable_before_ms {
                grant.execute(params![task, t.device, now_ms, until])?;
                bump.execute([&t.device])?;
                holding += 1;
                changed += 1;
            }
        }
    }
    tx.prepare_cached("UPDATE tasks SET permits_due_ms = ?2 WHERE id = ?1")?
        .execute(params![task, now_ms + RECHECK_MS])?;
    Ok(changed)
}

/// Per store, the tills using an install slot in another task (holding its
/// permit, asking the cashier or installing), paused tasks included: their
/// started installs go on.
fn busy_elsewhere(tx: &Transaction<'_>, task: i64) -> Result<HashMap<String, Vec<String>>> {
    let mut stmt = tx.prepare_cached(
        "SELECT DISTINCT coalesce(d.store_id, ''), tt.device
         FROM tasks t JOIN task_targets tt ON tt.task_id = t.id JOIN devices d ON d.guid = tt.device
         WHERE t.id <> ?1 AND t.kind <> 'download' AND t.status IN ('running', 'paused')
           AND tt.state NOT IN ('installed', 'failed', 'skipped')
           AND (tt.permit_ms IS NOT NULL OR tt.state IN ('awaiting_cashier', 'installing', 'rebooting'))",
    )?;
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for row in stmt.query_map([task], |r| Ok((r.get::<_, String>(0)?, r.get(1)?)))? {
        let (store, device) = row?;
        out.entry(store).or_default().push(device);
    }
    Ok(out)
}
