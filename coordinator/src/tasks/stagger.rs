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

use crate::db::sql::{Transaction, params};

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

/// Most stores one [`step`] announces. A step is one transaction and every
/// heartbeat waits behind it: about 20 tills' rows each, so a step stays a
/// few milliseconds (52 stores per tick at 100,000 tills took up to 38 ms).
pub const STORES_PER_STEP: usize = 8;

/// What one [`step`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Announced {
    /// Stores whose tills' revisions were bumped.
    pub stores: usize,
    /// Stores whose turn came are still waiting: run another step now.
    pub more: bool,
}

/// Bumps the revisions of the stores whose turn came since the last step,
/// for every staggered task still announcing, at most about `max_stores` of
/// them (stores sharing an offset go together). Stores are taken in offset
/// order and `notified_ms` moves only past those done, so a till never sees
/// a new revision without the task (see [`super::assign::assignments`]).
pub fn step(
    tx: &Transaction<'_>,
    now_ms: i64,
    spread_ms: i64,
    max_stores: usize,
) -> Result<Announced> {
    let tasks: Vec<(i64, i64, i64)> = tx
        .prepare_cached(
            "SELECT id, activated_ms, notified_ms FROM tasks
             WHERE staggered = 1 AND status = 'running' AND notified_ms < activated_ms + ?1",
        )?
        .query_map([spread_ms], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<crate::db::sql::Result<_>>()?;
    let mut done = Announced::default();
    if tasks.is_empty() {
        return Ok(done);
    }
    let stores: Vec<String> = tx
        .prepare_cached("SELECT id FROM stores")?
        .query_map([], |r| r.get(0))?
        .collect::<crate::db::sql::Result<_>>()?;
    let mut bump = tx.prepare_cached(
        "UPDATE devices SET assign_rev = assign_rev + 1
         WHERE store_id = ?1
           AND EXISTS (SELECT 1 FROM task_targets tt WHERE tt.task_id = ?2 AND tt.device = devices.guid)",
    )?;
    for (task, activated, notified) in tasks {
        // Stores whose offset falls in [from, to) learn now, in offset order.
        let (from, to) = (notified - activated, (now_ms - activated).min(spread_ms));
        if to <= from {
            continue;
        }
        if done.stores >= max_stores {
            done.more = true;
            break;
        }
        let mut due: Vec<(i64, &str)> = stores
            .iter()
            .map(|s| (offset_ms(task, Some(s), spread_ms), s.as_str()))
            .filter(|(o, _)| (from..to).contains(o))
            .collect();
        due.sort_unstable();
        let mut reached = to;
        let mut last = None;
        for (offset, store) in due {
            if done.stores >= max_stores && last != Some(offset) {
                // Every store before this offset is done; this one is next.
                reached = offset;
                done.more = true;
                break;
            }
            bump.execute(params![store, task])?;
            done.stores += 1;
            last = Some(offset);
        }
        tx.prepare_cached("UPDATE tasks SET notified_ms = ?2 WHERE id = ?1")?
            .execute(params![task, activated + reached])?;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const SPREAD: i64 = 10_000;

    /// 40 stores of two tills, one staggered task for all, activated at 0.
    fn chain() -> crate::db::sql::Connection {
        let conn = crate::db::test_connection();
        conn.execute_batch(
            "INSERT INTO tasks (id, kind, package_id, package_name, package_version,
                 package_version_key, package_size, group_name, status, activated_ms,
                 created_ms, staggered, notified_ms)
             VALUES (7, 'download', 'p', 'pos', '2.0', 'k', 1, 'All', 'running', 0, 0, 1, 0);",
        )
        .expect("task");
        for s in 0..40 {
            conn.execute(
                "INSERT INTO stores (id, name) VALUES (?1, ?1)",
                [format!("s{s:02}")],
            )
            .expect("store");
            for n in 0..2 {
                let guid = format!("d{s:02}-{n}");
                conn.execute(
                    "INSERT INTO devices (guid, store_id) VALUES (?1, ?2)",
                    [&guid, &format!("s{s:02}")],
                )
                .expect("device");
                conn.execute(
                    "INSERT INTO task_targets (task_id, device, state, updated_ms)
                     VALUES (7, ?1, 'pending', 0)",
                    [&guid],
                )
                .expect("target");
            }
        }
        conn
    }

    /// Bumps per store (both tills agree) and the task's `notified_ms`.
    fn seen(conn: &crate::db::sql::Connection) -> (HashMap<String, i64>, i64) {
        let mut stmt = conn
            .prepare(
                "SELECT store_id, min(assign_rev), max(assign_rev) FROM devices GROUP BY store_id",
            )
            .expect("prepare");
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
            })
            .expect("query");
        let mut bumps = HashMap::new();
        for row in rows {
            let (store, low, high): (String, i64, i64) = row.expect("row");
            assert_eq!(low, high, "both tills of {store} move together");
            bumps.insert(store, low - 1);
        }
        let notified = conn
            .query_row("SELECT notified_ms FROM tasks WHERE id = 7", [], |r| {
                r.get(0)
            })
            .expect("notified");
        (bumps, notified)
    }

    #[test]
    fn stores_are_announced_a_few_per_step_in_offset_order() {
        let mut conn = chain();
        let mut steps = 0;
        loop {
            let tx = conn.transaction().expect("tx");
            let done = step(&tx, SPREAD, SPREAD, 3).expect("step");
            tx.commit().expect("commit");
            steps += 1;
            let (bumps, notified) = seen(&conn);
            let bumped = bumps.values().filter(|b| **b > 0).count();
            assert!(done.stores <= 4, "a step took {} stores", done.stores);
            for (store, b) in &bumps {
                let offset = offset_ms(7, Some(store), SPREAD);
                // Announced exactly when its offset is behind notified_ms.
                assert_eq!(
                    *b,
                    i64::from(offset < notified),
                    "store {store} at {offset}"
                );
            }
            if !done.more {
                assert_eq!(bumped, 40, "every store was announced once");
                assert_eq!(notified, SPREAD);
                break;
            }
            assert!(steps < 40, "the steps catch up");
        }
        assert!(steps >= 14, "40 stores at most 3 a step took {steps} steps");
        let tx = conn.transaction().expect("tx");
        assert_eq!(
            step(&tx, SPREAD, SPREAD, 3).expect("step"),
            Announced::default()
        );
    }

    #[test]
    fn only_stores_whose_turn_came_are_announced() {
        let mut conn = chain();
        let tx = conn.transaction().expect("tx");
        let done = step(&tx, SPREAD / 2, SPREAD, usize::MAX).expect("step");
        tx.commit().expect("commit");
        assert!(!done.more);
        let (bumps, notified) = seen(&conn);
        assert_eq!(notified, SPREAD / 2);
        for (store, b) in bumps {
            let offset = offset_ms(7, Some(&store), SPREAD);
            assert_eq!(
                b,
                i64::from(offset < SPREAD / 2),
                "store {store} at {offset}"
            );
        }
    }
}
