//! WAN diagnostics: the log of chunks the coordinator served to tills, and
//! ([`report`]) a task's per-store account of it: which chunks crossed a
//! store's link more than once, to which tills, and which tills of the
//! store were not connected to the others.
//!
//! The log is one row per chunk response to a device token (an operator's
//! download is not a till's WAN traffic). Chunks are ~1 MiB, so a row per
//! response is cheap; rows share the heartbeats' group commit. The log is
//! bounded: rows older than [`RETENTION_MS`] go, and beyond [`MAX_ROWS`]
//! the oldest go, both in slices of [`PRUNE_SLICE`] rows per transaction.

use crate::db::sql::{Transaction, params};
use tillswarm_protocol::{ChunkHash, DeviceId};

use crate::error::Result;

pub mod report;
pub mod store;

/// Rows are kept this long (30 days).
pub const RETENTION_MS: i64 = 30 * 86_400_000;
/// Most rows kept (about 175 bytes each with the index: some 350 MB). A
/// 1 GiB package (~1,000 chunks) fetched once in each of 1,000 stores
/// writes 1,000,000 rows.
pub const MAX_ROWS: i64 = 2_000_000;
/// Most rows one pruning transaction deletes, so heartbeats run between.
pub const PRUNE_SLICE: i64 = 10_000;

/// One chunk response to a till.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkServed {
    /// The chunk.
    pub hash: ChunkHash,
    /// The response's first byte within the chunk (past 0: a resumed fetch).
    pub offset: u64,
    /// Bytes in the response.
    pub bytes: u64,
}

/// Records that `device` was served `served` at `now_ms`.
pub fn record(
    tx: &Transaction<'_>,
    device: &DeviceId,
    served: &ChunkServed,
    now_ms: i64,
) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO chunk_fetches (device, hash, bytes, resumed, at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        device.to_string(),
        served.hash.to_hex(),
        served.bytes.min(i64::MAX as u64) as i64,
        served.offset > 0,
        now_ms
    ])?;
    Ok(())
}

/// Deletes up to [`PRUNE_SLICE`] of the oldest rows that are older than
/// `before_ms` or beyond the newest `max_rows`; returns how many it deleted
/// (fewer than a slice: nothing more to prune now). Looks only at the
/// oldest rows by id (ids grow with time), never scanning the table.
pub fn prune_slice(tx: &Transaction<'_>, before_ms: i64, max_rows: i64) -> Result<usize> {
    // Two queries: SQLite reads a lone min() or max() off the rowid's ends,
    // but scans the table for both at once.
    let end = |sql: &str| -> Result<Option<i64>> {
        Ok(tx.prepare_cached(sql)?.query_row([], |r| r.get(0))?)
    };
    let (Some(oldest), Some(newest)) = (
        end("SELECT min(id) FROM chunk_fetches")?,
        end("SELECT max(id) FROM chunk_fetches")?,
    ) else {
        return Ok(0);
    };
    // Beyond the cap: every id up to `newest - max_rows` (ids are dense but
    // for deleted devices' rows, so this keeps at most `max_rows`).
    let over_cap = tx
        .prepare_cached("DELETE FROM chunk_fetches WHERE id <= ?1")?
        .execute([(newest - max_rows).min(oldest + PRUNE_SLICE - 1)])?;
    // Past retention: among the oldest rows left, the rest of the slice.
    let old = tx
        .prepare_cached(
            "DELETE FROM chunk_fetches WHERE id IN
                 (SELECT id FROM chunk_fetches ORDER BY id LIMIT ?1) AND at_ms < ?2",
        )?
        .execute(params![PRUNE_SLICE - over_cap as i64, before_ms])?;
    Ok(over_cap + old)
}

#[cfg(test)]
mod tests {
    use crate::db::sql::Connection;

    use super::*;

    /// Rows in the log.
    fn rows(conn: &Connection) -> Result<u64> {
        Ok(
            conn.query_row("SELECT count(*) FROM chunk_fetches", [], |r| {
                r.get::<_, i64>(0)
            })? as u64,
        )
    }

    const A: &str = "71110000-0000-0000-0000-000000000001";

    fn log(conn: &mut Connection, n: i64, at_ms: i64) {
        let tx = conn.transaction().expect("tx");
        let served = ChunkServed {
            hash: ChunkHash([1; 32]),
            offset: 0,
            bytes: 1 << 20,
        };
        for _ in 0..n {
            record(&tx, &A.parse().expect("guid"), &served, at_ms).expect("record");
        }
        tx.commit().expect("commit");
    }

    fn prune_all(conn: &mut Connection, before_ms: i64, max_rows: i64) -> usize {
        let mut total = 0;
        loop {
            let tx = conn.transaction().expect("tx");
            let n = prune_slice(&tx, before_ms, max_rows).expect("prune");
            tx.commit().expect("commit");
            total += n;
            if n < PRUNE_SLICE as usize {
                return total;
            }
        }
    }

    #[test]
    fn old_rows_and_rows_beyond_the_cap_are_pruned_in_slices() {
        let mut conn = crate::db::test_connection();
        conn.execute("INSERT INTO devices (guid) VALUES (?1)", [A])
            .expect("device");
        log(&mut conn, PRUNE_SLICE + 5, 1_000);
        log(&mut conn, 7, 5_000);
        assert_eq!(
            prune_all(&mut conn, 2_000, MAX_ROWS),
            PRUNE_SLICE as usize + 5
        );
        assert_eq!(rows(&conn).expect("rows"), 7, "the recent rows stay");
        log(&mut conn, 10, 6_000);
        assert_eq!(prune_all(&mut conn, 0, 12), 5, "the oldest beyond 12 go");
        assert_eq!(rows(&conn).expect("rows"), 12);
        let oldest: i64 = conn
            .query_row("SELECT min(at_ms) FROM chunk_fetches", [], |r| r.get(0))
            .expect("oldest");
        assert_eq!(oldest, 5_000);
    }

    #[test]
    fn a_removed_till_takes_its_rows_along() {
        let mut conn = crate::db::test_connection();
        conn.execute("INSERT INTO devices (guid) VALUES (?1)", [A])
            .expect("device");
        log(&mut conn, 3, 1_000);
        conn.execute("DELETE FROM devices WHERE guid = ?1", [A])
            .expect("delete");
        assert_eq!(rows(&conn).expect("rows"), 0);
    }
}
