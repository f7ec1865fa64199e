//! One store's WAN history: for each recent task with a till in the store,
//! the bytes of its package that crossed the store's link (from the chunk
//! log, as in [`super::report`]) against the package's size — the saving
//! the store swarm makes, per task.

use crate::db::sql::{Connection, OptionalExtension, params};
use serde::Deserialize;
pub use tillswarm_protocol::operator::wan::{StoreTaskWan, StoreWanHistory};
use tillswarm_protocol::{StoreId, TaskId};

use crate::clock::rfc3339;
use crate::error::{Error, Result};

/// Tasks listed at most.
pub const MAX_TASKS: u32 = 50;

/// Query of `GET /api/v1/stores/{id}/wan`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreWanQuery {
    /// Tasks to list, newest first (default 20, at most [`MAX_TASKS`]).
    pub limit: Option<u32>,
}

/// The store's WAN history; `NotFound` for an unknown store.
pub fn store_history(
    conn: &Connection,
    store_id: &str,
    query: &StoreWanQuery,
) -> Result<StoreWanHistory> {
    let limit = query.limit.unwrap_or(20);
    if !(1..=MAX_TASKS).contains(&limit) {
        return Err(Error::bad(
            "invalid_paging",
            format!("limit must be 1..={MAX_TASKS}"),
        ));
    }
    let store_name: Option<Option<String>> = conn
        .prepare_cached("SELECT name FROM stores WHERE id = ?1")?
        .query_row([store_id], |r| r.get(0))
        .optional()?;
    let known = store_name.is_some()
        || conn
            .prepare_cached("SELECT 1 FROM devices WHERE store_id = ?1 LIMIT 1")?
            .exists([store_id])?;
    if !known {
        return Err(Error::NotFound(format!("store {store_id}")));
    }
    let mut tasks = conn.prepare_cached(
        "SELECT t.id, t.kind, t.status, t.package_id, t.package_name, t.package_version,
                t.package_size, p.wire_size, t.created_ms,
                (SELECT count(*) FROM devices d CROSS JOIN task_targets tt
                  WHERE d.store_id = ?1 AND tt.task_id = t.id AND tt.device = d.guid)
         FROM tasks t LEFT JOIN packages p ON p.package_id = t.package_id
         WHERE EXISTS (SELECT 1 FROM devices d CROSS JOIN task_targets tt
                        WHERE d.store_id = ?1 AND tt.task_id = t.id AND tt.device = d.guid)
         ORDER BY t.id DESC LIMIT ?2",
    )?;
    let mut wan = conn.prepare_cached(
        "SELECT coalesce(sum(f.bytes), 0)
         FROM devices d CROSS JOIN chunk_fetches f
         WHERE d.store_id = ?1 AND f.device = d.guid AND f.at_ms >= ?2
           AND f.hash IN (SELECT hash FROM package_chunks WHERE package_id = ?3)",
    )?;
    let rows = tasks
        .query_map(params![store_id, limit], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                crate::db::get_parsed(r, 1)?,
                crate::db::get_parsed(r, 2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, i64>(6)?,
                r.get::<_, Option<i64>>(7)?,
                r.get::<_, i64>(8)?,
                r.get::<_, i64>(9)?,
            ))
        })?
        .collect::<crate::db::sql::Result<Vec<_>>>()?;
    let mut out = Vec::with_capacity(rows.len());
    for (task_id, kind, status, package, name, version, size, wire, created_ms, tills) in rows {
        let wan_bytes: i64 = wan.query_row(params![store_id, created_ms, package], |r| r.get(0))?;
        let (size, wan_bytes) = (size.max(0) as u64, wan_bytes.max(0) as u64);
        out.push(StoreTaskWan {
            task_id: TaskId(task_id as u64),
            kind,
            status,
            package_id: package
                .parse()
                .map_err(|e| Error::Internal(format!("task {task_id}: package id: {e}")))?,
            package_name: name,
            package_version: version,
            package_size: size,
            wire_size: wire.map(|w| w.max(0) as u64),
            wan_bytes,
            wan_ratio: (size > 0).then(|| wan_bytes as f64 / size as f64),
            tills: tills.max(0) as u64,
            created: rfc3339(created_ms),
        });
    }
    Ok(StoreWanHistory {
        store_id: store_id
            .parse::<StoreId>()
            .map_err(|e| Error::bad("invalid_id", format!("store id: {e}")))?,
        store_name: store_name.flatten(),
        tasks: out,
    })
}
