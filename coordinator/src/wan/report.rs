//! A task's WAN report per store, from the chunk log: the bytes of the task's
//! package served to the store's tills since the task was created, against
//! the package's size; the chunks served more than once and to which tills;
//! and the store's tills in the task whose swarm reported no store peer.
//!
//! "The store's tills" are every till now registered in the store, in the
//! task or not (two tasks of one package in one store both cross its link);
//! each till listed says whether it is in the task. Tills without a store
//! have no store link to share and are left out. The peer counts are the
//! latest heartbeat's, not those at the time of each fetch.

use std::collections::{BTreeMap, HashSet};

use crate::db::sql::{Connection, OptionalExtension, params};
use serde::Deserialize;
use tillswarm_protocol::{DeviceId, StoreId, TaskId};

use crate::clock::rfc3339;
use crate::error::{Error, Result};

/// Stores in one answer by default.
pub const DEFAULT_STORES: u64 = 20;
/// Most stores in one answer.
pub const MAX_STORES: u64 = 100;
/// Most duplicate chunks (and most unconnected tills) listed per store; the
/// totals count them all.
pub const MAX_LISTED: usize = 100;

/// Which stores to answer for (`?store=` or a page of the task's stores).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct WanQuery {
    /// Only this store.
    pub store: Option<String>,
    /// 1-based page of the task's stores (by store id), default 1.
    pub page: Option<u64>,
    /// Stores per page, default [`DEFAULT_STORES`], at most [`MAX_STORES`].
    pub per_page: Option<u64>,
}

pub use tillswarm_protocol::operator::wan::{
    ChunkFetcher, DuplicateChunk, StoreWan, TaskWan, UnconnectedTill,
};

/// The task's package, size and creation time.
struct TaskFacts {
    package_id: String,
    package_size: u64,
    created_ms: i64,
}

/// The WAN report of task `id` for the stores `query` names.
pub fn task_wan(conn: &Connection, id: i64, query: &WanQuery) -> Result<TaskWan> {
    let page = query.page.unwrap_or(1);
    let per_page = query.per_page.unwrap_or(DEFAULT_STORES);
    if page == 0 || page > 1_000_000 || per_page == 0 || per_page > MAX_STORES {
        return Err(Error::bad(
            "invalid_paging",
            format!("page starts at 1 and per_page is 1 to {MAX_STORES}"),
        ));
    }
    let task = conn
        .query_row(
            "SELECT package_id, package_size, created_ms FROM tasks WHERE id = ?1",
            [id],
            |r| {
                Ok(TaskFacts {
                    package_id: r.get(0)?,
                    package_size: r.get::<_, i64>(1)?.max(0) as u64,
                    created_ms: r.get(2)?,
                })
            },
        )
        .optional()?
        .ok_or_else(|| Error::NotFound(format!("no task {id}")))?;
    let lengths: BTreeMap<String, u64> = conn
        .prepare_cached(
            "SELECT hash, max(length) FROM package_chunks WHERE package_id = ?1 GROUP BY hash",
        )?
        .query_map([&task.package_id], |r| {
            Ok((r.get(0)?, r.get::<_, i64>(1)?.max(0) as u64))
        })?
        .collect::<crate::db::sql::Result<_>>()?;
    if lengths.is_empty() {
        return Err(Error::conflict(
            "package_deleted",
            format!("the package of task {id} was deleted, and with it the list of its chunks"),
        ));
    }
    let mut stores = task_stores(conn, id)?;
    if let Some(only) = &query.store {
        stores.retain(|(s, _, _)| s == only);
        if stores.is_empty() {
            return Err(Error::NotFound(format!(
                "task {id} has no tills in store {only:?}"
            )));
        }
    }
    let stores_total = stores.len() as u64;
    let skip = ((page - 1) * per_page) as usize;
    let mut out = Vec::new();
    for (store_id, store_name, tills) in stores.into_iter().skip(skip).take(per_page as usize) {
        out.push(store_wan(
            conn, id, &task, &lengths, store_id, store_name, tills,
        )?);
    }
    Ok(TaskWan {
        task_id: TaskId(id as u64),
        package_id: task
            .package_id
            .parse()
            .map_err(|e| Error::Internal(format!("stored package id: {e}")))?,
        package_size: task.package_size,
        package_chunks: lengths.len() as u64,
        since: rfc3339(task.created_ms),
        stores_total,
        page,
        per_page,
        stores: out,
    })
}

/// Each store with tills in task `id`: id, name and the task's tills there.
fn task_stores(conn: &Connection, id: i64) -> Result<Vec<(String, Option<String>, u64)>> {
    Ok(conn
        .prepare_cached(
            "SELECT d.store_id, s.name, count(*)
             FROM task_targets tt JOIN devices d ON d.guid = tt.device
                  LEFT JOIN stores s ON s.id = d.store_id
             WHERE tt.task_id = ?1 AND d.store_id IS NOT NULL
             GROUP BY d.store_id, s.name ORDER BY d.store_id",
        )?
        .query_map([id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64))
        })?
        .collect::<crate::db::sql::Result<_>>()?)
}

/// A till of the store in the task.
struct Target {
    device: String,
    name: Option<String>,
    connected_peers: Option<u32>,
    last_seen_ms: Option<i64>,
}

fn store_wan(
    conn: &Connection,
    id: i64,
    task: &TaskFacts,
    lengths: &BTreeMap<String, u64>,
    store_id: String,
    store_name: Option<String>,
    tills: u64,
) -> Result<StoreWan> {
    // CROSS JOIN fixes the order: the store's tills by their index, then
    // each one's rows, never a scan of all the task's targets or fetches.
    let targets: Vec<Target> = conn
        .prepare_cached(
            "SELECT d.guid, d.name, d.connected_peers, d.last_seen_ms
             FROM devices d CROSS JOIN task_targets tt
             WHERE d.store_id = ?1 AND tt.task_id = ?2 AND tt.device = d.guid
             ORDER BY d.number IS NULL, d.number, d.guid",
        )?
        .query_map(params![store_id, id], |r| {
            Ok(Target {
                device: r.get(0)?,
                name: r.get(1)?,
                connected_peers: r.get(2)?,
                last_seen_ms: r.get(3)?,
            })
        })?
        .collect::<crate::db::sql::Result<_>>()?;
    let in_task: HashSet<&str> = targets.iter().map(|t| t.device.as_str()).collect();
    let mut fetched = conn.prepare_cached(
        "SELECT f.device, d.name, f.hash, count(*) FILTER (WHERE f.resumed = 0), sum(f.bytes)
         FROM devices d CROSS JOIN chunk_fetches f
         WHERE d.store_id = ?1 AND f.device = d.guid AND f.at_ms >= ?2
           AND f.hash IN (SELECT hash FROM package_chunks WHERE package_id = ?3)
         GROUP BY f.device, d.name, f.hash",
    )?;
    let rows = fetched.query_map(params![store_id, task.created_ms, task.package_id], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, Option<String>>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, i64>(3)?.max(0) as u64,
            r.get::<_, i64>(4)?.max(0) as u64,
        ))
    })?;
    let (mut wan_bytes, mut fetches) = (0u64, 0u64);
    let mut by_chunk: BTreeMap<String, (u64, Vec<ChunkFetcher>)> = BTreeMap::new();
    for row in rows {
        let (device, name, hash, n, bytes) = row?;
        wan_bytes += bytes;
        fetches += n;
        if n == 0 {
            continue;
        }
        let entry = by_chunk.entry(hash).or_default();
        entry.0 += n;
        entry.1.push(ChunkFetcher {
            in_task: in_task.contains(device.as_str()),
            device: parse_guid(&device)?,
            name,
            fetches: n,
        });
    }
    let mut duplicates: Vec<(String, u64, Vec<ChunkFetcher>)> = by_chunk
        .into_iter()
        .filter(|(_, (n, _))| *n > 1)
        .map(|(hash, (n, tills))| (hash, n, tills))
        .collect();
    duplicates.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let duplicate_chunks_total = duplicates.len() as u64;
    let duplicate_chunks = duplicates
        .into_iter()
        .take(MAX_LISTED)
        .map(|(hash, n, mut tills)| {
            tills.sort_by(|a, b| b.fetches.cmp(&a.fetches).then(a.device.cmp(&b.device)));
            Ok(DuplicateChunk {
                length: lengths.get(&hash).copied().unwrap_or(0),
                hash: hash
                    .parse()
                    .map_err(|e| Error::Internal(format!("stored chunk hash: {e}")))?,
                fetches: n,
                tills,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let unconnected = unconnected(conn, &store_id, &targets)?;
    Ok(StoreWan {
        store_id: StoreId::new(store_id)
            .map_err(|e| Error::Internal(format!("stored store id: {e}")))?,
        store_name,
        tills,
        package_size: task.package_size,
        wan_bytes,
        wan_ratio: wan_bytes as f64 / task.package_size.max(1) as f64,
        fetches,
        duplicate_chunks_total,
        duplicate_chunks,
        unconnected_tills_total: unconnected.len() as u64,
        unconnected_tills: unconnected.into_iter().take(MAX_LISTED).collect(),
    })
}

/// The targets whose last heartbeat reported no store peer (or no count),
/// unless the store has only one approved till (no one to connect to).
fn unconnected(
    conn: &Connection,
    store_id: &str,
    targets: &[Target],
) -> Result<Vec<UnconnectedTill>> {
    let approved: i64 = conn
        .prepare_cached("SELECT count(*) FROM devices WHERE store_id = ?1 AND approved = 1")?
        .query_row([store_id], |r| r.get(0))?;
    if approved < 2 {
        return Ok(Vec::new());
    }
    targets
        .iter()
        .filter(|t| t.connected_peers.unwrap_or(0) == 0)
        .map(|t| {
            Ok(UnconnectedTill {
                device: parse_guid(&t.device)?,
                name: t.name.clone(),
                connected_peers: t.connected_peers,
                last_seen: t.last_seen_ms.map(rfc3339),
            })
        })
        .collect()
}

fn parse_guid(text: &str) -> Result<DeviceId> {
    text.parse()
        .map_err(|e| Error::Internal(format!("stored device GUID {text:?}: {e}")))
}
