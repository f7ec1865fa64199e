//! Announcing a large task store by store. When a task for thousands of
//! tills starts, telling every till at once would make all of them fetch a
//! new signed assignment list in the same poll interval, far more full lists
//! per second than the steady polling the coordinator is sized for. Instead
//! each store gets an offset within the first [`spread_ms`] after the
//! activation (from a hash of the task and store, so it needs no storage):
//! its tills' revisions are bumped then, the task stays out of their
//! assignment lists until then, and their `join_by` time is counted from it,
//! so the tills of one store still start together. Every till holds the task
//! within the spread plus one poll.

use rusqlite::{Transaction, params};

use crate::error::Result;

/// The spread for a poll interval: 80% of it, so the last store's tills
/// hold the task within two intervals (with up to 20% poll jitter).
pub fn spread_ms(poll_interval_ms: u64) -> i64 {
    (poll_interval_ms as i64).saturating_mul(4) / 5
}

/// When (ms after the activation) the tills of `store` learn of `task`.
pub fn offset_ms(task: i64, store: Option<&str>, spread_ms: i64) -> i64 {
    let Some(store) = store else { return 0 };
    if spread_ms <= 0 {
        return 0;
    }
    let mut h = blake3::Hasher::new();
    h.update(&task.to_le_bytes());
    h.update(store.as_bytes());
    let n = u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().unwrap_or_default());
    (n % spread_ms as u64) as i64
}

/// Bumps the revisions of the stores whose turn came since the last step,
/// for every staggered task still announcing. Returns how many stores.
pub fn step(tx: &Transaction<'_>, now_ms: i64, spread_ms: i64) -> Result<usize> {
    let tasks: Vec<(i64, i64, i64)> = tx
        .prepare_cached(
            "SELECT id, activated_ms, notified_ms FROM tasks
             WHERE staggered = 1 AND status = 'running' AND notified_ms < activated_ms + ?1",
        )?
        .query_map([spread_ms], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    if tasks.is_empty() {
        return Ok(0);
    }
    let stores: Vec<String> = tx
        .prepare_cached("SELECT id FROM stores")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut bump = tx.prepare_cached(
        "UPDATE devices SET assign_rev = assign_rev + 1
         WHERE store_id = ?1
           AND EXISTS (SELECT 1 FROM task_targets tt WHERE tt.task_id = ?2 AND tt.device = devices.guid)",
    )?;
    let mut n = 0;
    for (task, activated, notified) in tasks {
        // Stores whose offset falls in [from, to) learn now.
        let (from, to) = (notified - activated, (now_ms - activated).min(spread_ms));
        if to <= from {
            continue;
        }
        for store in &stores {
            if (from..to).contains(&offset_ms(task, Some(store), spread_ms)) {
                bump.execute(params![store, task])?;
                n += 1;
            }
        }
        tx.prepare_cached("UPDATE tasks SET notified_ms = ?2 WHERE id = ?1")?
            .execute(params![task, activated + to])?;
    }
    Ok(n)
}
