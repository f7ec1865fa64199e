//! What a till must do now: its assignments, with the store's other tills in
//! the task and those that already hold the package.

use crate::db::sql::{Connection, OptionalExtension, params};
use tillswarm_protocol::DeviceId;
use tillswarm_protocol::api::{Assignment, MAX_STORE_PEERS, TaskKind};

use super::{parse_kind, parse_state};
use crate::error::Result;

/// The tasks a till must carry out now: running tasks where it is not final
/// (a staggered task once its store's turn came, see [`super::stagger`]).
/// Every till of a store knows a task `settle_ms` after the store learned of
/// it (see [`Assignment::join_by_unix_ms`]); each assignment names the task's
/// other unfinished tills in the same store.
pub fn assignments(
    conn: &Connection,
    device: &DeviceId,
    settle_ms: i64,
    spread_ms: i64,
) -> Result<Vec<Assignment>> {
    let store: Option<String> = conn
        .prepare_cached("SELECT store_id FROM devices WHERE guid = ?1")?
        .query_row([device.to_string()], |r| r.get(0))
        .optional()?
        .flatten();
    let mut stmt = conn.prepare_cached(
        "SELECT t.id, t.kind, t.package_id, t.package_name, t.package_version, t.package_size,
                t.activate_at_ms, t.activated_ms, t.rollback, tt.attempt, tt.state,
                tt.permit_ms IS NULL, tt.permit_until_ms, t.staggered,
                coalesce(t.notified_ms - t.activated_ms, 0)
         FROM task_targets tt JOIN tasks t ON t.id = tt.task_id
         WHERE tt.device = ?1 AND t.status = 'running'
         ORDER BY t.id",
    )?;
    let rows = stmt.query_map([device.to_string()], |r| {
        let kind = parse_kind(&r.get::<_, String>(1)?)?;
        let state = parse_state(&r.get::<_, String>(10)?)?;
        let id: String = r.get(2)?;
        let version: String = r.get(4)?;
        let task_id: i64 = r.get(0)?;
        // A staggered task reaches this store at its offset, once the
        // announcement (which bumped the store's revisions) got that far:
        // decided by the database's state, never by when this job runs.
        let (offset, announced) = if r.get::<_, bool>(13)? {
            let o = super::stagger::offset_ms(task_id, store.as_deref(), spread_ms);
            (o, store.is_none() || o < r.get::<_, i64>(14)?)
        } else {
            (0, true)
        };
        let activated: Option<i64> = r.get::<_, Option<i64>>(7)?.map(|a| a + offset);
        let at: Option<i64> = r.get(6)?;
        Ok((
            state,
            announced,
            Assignment {
                task_id: tillswarm_protocol::TaskId(task_id as u64),
                kind,
                package_id: id
                    .parse()
                    .map_err(|e| crate::db::sql::Error::ToSqlConversionFailure(Box::new(e)))?,
                package_name: r.get(3)?,
                version: version
                    .parse()
                    .map_err(|e| crate::db::sql::Error::ToSqlConversionFailure(Box::new(e)))?,
                size: r.get::<_, i64>(5)? as u64,
                install_at_unix: (kind == TaskKind::ForcedUpdate)
                    .then(|| (at.or(activated).unwrap_or(0) / 1000).max(0) as u64),
                rollback: r.get(8)?,
                attempt: r.get(9)?,
                join_by_unix_ms: activated.map(|a| (a + settle_ms).max(0) as u64),
                store_peers: Vec::new(),
                store_holders: Vec::new(),
                hold_install: kind.installs() && r.get::<_, bool>(11)?,
                install_until_unix: r
                    .get::<_, Option<i64>>(12)?
                    .map(|ms| (ms.max(0) / 1000) as u64),
            },
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (state, announced, a) = row?;
        if !state.is_final_for(a.kind) && announced {
            out.push(a);
        }
    }
    drop(stmt);
    // Driven by the store's tills, each looked up in the task: a plan that
    // scales with the store, not the task (PostgreSQL otherwise scans all
    // of a fleet-wide task's targets to join them with the store).
    let mut peers = conn.prepare_cached(
        "SELECT guid, state FROM (
             SELECT d.guid, (SELECT tt.state FROM task_targets tt
                             WHERE tt.task_id = ?1 AND tt.device = d.guid) AS state
             FROM devices d
             WHERE d.store_id = (SELECT store_id FROM devices WHERE guid = ?2) AND d.guid <> ?2
         ) AS store_tills
         WHERE state IS NOT NULL
         ORDER BY guid LIMIT ?3",
    )?;
    let mut holders = conn.prepare_cached(
        "SELECT DISTINCT tt.device FROM devices d
             CROSS JOIN task_targets tt
             CROSS JOIN tasks t
         WHERE tt.device = d.guid AND t.id = tt.task_id
           AND t.package_id = ?1 AND d.guid <> ?2
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
