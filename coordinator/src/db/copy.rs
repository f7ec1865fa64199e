//! `tillswarm coordinator migrate-to-postgres`: copies a SQLite coordinator's
//! tables into an empty PostgreSQL database, in one transaction, and checks
//! every table's row count after. Ids keep their values (tasks and tokens
//! are named by id in tills' state and the audit log), and each identity
//! column continues after the largest id copied.

use std::path::Path;

use super::sql::{Connection, Value, params_from_iter};
use super::{Database, open_connection_for, open_sqlite};
use crate::error::{Error, Result};

/// Tables in an order that satisfies their foreign keys, each with whether
/// it has an `id` identity column.
const TABLES: &[(&str, bool)] = &[
    ("stores", false),
    ("till_types", false),
    ("devices", false),
    ("groups", true),
    ("group_members", false),
    ("packages", false),
    ("package_chunks", false),
    ("tasks", true),
    ("task_targets", false),
    ("users", true),
    ("sessions", false),
    ("api_tokens", true),
    ("audit", true),
    ("device_tokens", false),
    ("enroll_tokens", true),
    ("rollouts", true),
    ("rollout_waves", false),
    ("rollout_paused_stores", false),
    ("target_attempts", false),
    ("device_versions", true),
    ("chunk_fetches", true),
    ("settings", false),
];

/// Rows inserted per statement.
const ROWS_PER_INSERT: usize = 200;

/// How many rows each table held, as copied.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Copied {
    /// `(table, rows)`, in copy order.
    pub tables: Vec<(&'static str, u64)>,
}

/// Copies the SQLite database in `from` (a data folder) into `to`, which
/// must be a PostgreSQL database holding no coordinator data yet.
pub fn sqlite_to_postgres(from: &Path, to: &Database) -> Result<Copied> {
    let file = from.join(super::SQLITE_FILE);
    if !file.is_file() {
        return Err(Error::NotFound(format!(
            "no coordinator database at {}",
            file.display()
        )));
    }
    if !matches!(to, Database::Postgres(_)) {
        return Err(Error::bad(
            "invalid_database",
            "the target is not a postgres:// URL",
        ));
    }
    // Opening migrates the source to this build's schema first.
    let source = Connection::sqlite(open_sqlite(&file)?);
    let mut target = open_connection_for(to, from)?;
    let tx = target.transaction()?;
    for (table, _) in TABLES {
        let mut rows: i64 =
            tx.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?;
        rows -= match *table {
            "groups" => 3,     // All, Even, Odd
            "till_types" => 1, // the '*' defaults
            _ => 0,
        };
        if rows > 0 {
            return Err(Error::conflict(
                "database_not_empty",
                format!("the PostgreSQL database already holds coordinator data ({table})"),
            ));
        }
    }
    tx.execute_batch("DELETE FROM groups; DELETE FROM till_types")?;
    let mut copied = Copied::default();
    for &(table, identity) in TABLES {
        let columns: Vec<String> = {
            let mut stmt =
                source.prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))?;
            stmt.query_map([], |r| r.get(0))?
                .collect::<super::sql::Result<_>>()?
        };
        let list = columns.join(", ");
        let mut read = source.prepare(&format!("SELECT {list} FROM {table}"))?;
        let mut batch: Vec<Value> = Vec::new();
        let mut count = 0u64;
        let width = columns.len();
        let flush = |batch: &mut Vec<Value>| -> Result<()> {
            if batch.is_empty() {
                return Ok(());
            }
            let rows = batch.len() / width;
            let mut sql = format!("INSERT INTO {table} ({list}) VALUES ");
            for r in 0..rows {
                sql.push_str(if r == 0 { "(" } else { ", (" });
                for c in 0..width {
                    if c > 0 {
                        sql.push_str(", ");
                    }
                    sql.push_str(&format!("?{}", r * width + c + 1));
                }
                sql.push(')');
            }
            tx.execute(&sql, params_from_iter(batch.drain(..)))?;
            Ok(())
        };
        let rows = read.query_map([], |r| {
            (0..width)
                .map(|i| r.get::<_, Value>(i))
                .collect::<super::sql::Result<Vec<_>>>()
        })?;
        for row in rows {
            batch.extend(row?);
            count += 1;
            if batch.len() >= ROWS_PER_INSERT * width {
                flush(&mut batch)?;
            }
        }
        flush(&mut batch)?;
        if identity {
            // SQLite's AUTOINCREMENT never hands out an id it once did, even
            // one since deleted: continue after the larger of the two.
            let last: i64 = source.query_row(
                &format!(
                    "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = '{table}'), 0),
                                coalesce((SELECT max(id) FROM {table}), 0))"
                ),
                [],
                |r| r.get(0),
            )?;
            tx.execute_batch(&format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'), {}, false)",
                last + 1
            ))?;
        }
        let there: i64 =
            tx.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?;
        if u64::try_from(there).ok() != Some(count) {
            return Err(Error::Internal(format!(
                "{table}: copied {count} rows but PostgreSQL holds {there}"
            )));
        }
        copied.tables.push((table, count));
    }
    tx.commit()?;
    Ok(copied)
}
