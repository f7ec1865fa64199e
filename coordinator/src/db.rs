//! The SQLite database: one connection owned by one thread, fed through a bounded
//! queue. Every query runs off the async executor, writes never contend, and a
//! transaction is never held across an await. WAL checkpoints run on a
//! second connection on their own thread, so copying the log into the
//! database file (and its fsync) never stalls the queries.

use std::path::Path;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};

mod schema;

/// A migrated in-memory connection, for unit tests of the table modules.
#[cfg(test)]
pub(crate) fn test_connection() -> Connection {
    let mut conn = Connection::open_in_memory().expect("in-memory database");
    schema::migrate(&mut conn).expect("migrate");
    conn
}

/// Most database jobs waiting for the owner thread; callers wait beyond that.
const QUEUE_DEPTH: usize = 1024;

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// Opens the database file with the coordinator's settings and migrations. The
/// coordinator keeps one such connection on its thread; the command line opens
/// its own (another process may hold the file: SQLite's locks and the busy
/// timeout keep the two apart).
pub(crate) fn open_connection(path: &Path) -> Result<Connection> {
    let mut conn = Connection::open(path)?;
    configure(&mut conn)?;
    Ok(conn)
}

fn configure(conn: &mut Connection) -> Result<()> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    set_durability(conn, Durability::Full)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // Plans never depend on bound values. Without this, SQLite re-prepares
    // a cached join each time its parameters change (a sixth of the
    // database thread's time at 100,000 tills); with no statistics gathered
    // there is nothing such a plan could gain.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    schema::migrate(conn)?;
    Ok(())
}

/// How hard a commit holds on to the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=FULL`: the WAL is synced at each commit, so an answered
    /// change (an operator action, a till's progress report) survives a power
    /// cut. Also syncs every relaxed commit before it.
    Full,
    /// `synchronous=NORMAL`: synced at checkpoints only; a power cut may lose
    /// the last such commits, never corrupt. For heartbeats, which repeat.
    Relaxed,
}

/// Sets the connection's durability for its next transactions.
pub(crate) fn set_durability(conn: &Connection, durability: Durability) -> rusqlite::Result<()> {
    let level = match durability {
        Durability::Full => "FULL",
        Durability::Relaxed => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", level)
}

/// How often the checkpoint thread copies the WAL into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// A cloneable handle to the database thread.
/// The thread ends when the last handle is dropped; every job commits before it
/// answers, so nothing acknowledged is lost when it does.
#[derive(Clone)]
pub struct Db {
    jobs: mpsc::Sender<Job>,
    /// Held by every handle; the checkpoint thread stops once none is left.
    _alive: std::sync::Arc<()>,
}

impl Db {
    /// Opens (creating if needed) the database at `path`, applies pending
    /// migrations and starts the owner thread.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = open_connection(path)?;
        // Checkpoints are the checkpoint thread's, not the committing query's.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let checkpoints = open_connection(path)?;
        let db = Self::start(conn)?;
        let alive = std::sync::Arc::downgrade(&db._alive);
        std::thread::Builder::new()
            .name("tillswarm-db-checkpoint".into())
            .spawn(move || {
                while alive.strong_count() > 0 {
                    std::thread::sleep(CHECKPOINT_EVERY);
                    // PASSIVE: copies what it can without blocking writers or
                    // readers; the next writer rewinds a fully copied log.
                    if let Err(e) =
                        checkpoints.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::warn!(error = %e, "WAL checkpoint failed");
                    }
                }
                let _ = checkpoints.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
            })?;
        Ok(db)
    }

    /// An in-memory database, for tests.
    pub fn open_in_memory() -> Result<Self> {
        let mut conn = Connection::open_in_memory()?;
        configure(&mut conn)?;
        Self::start(conn)
    }

    fn start(conn: Connection) -> Result<Self> {
        let mut conn = conn;
        let (jobs, mut inbox) = mpsc::channel::<Job>(QUEUE_DEPTH);
        std::thread::Builder::new()
            .name("tillswarm-db".into())
            .spawn(move || {
                while let Some(job) = inbox.blocking_recv() {
                    job(&mut conn);
                }
            })?;
        Ok(Self {
            jobs,
            _alive: std::sync::Arc::new(()),
        })
    }

    /// Runs `f` on the database thread and returns its result. Cancel-safe: if
    /// the caller goes away, the job still runs to completion (or not at all).
    pub async fn call<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let _ = reply.send(f(conn));
        });
        self.jobs
            .send(job)
            .await
            .map_err(|_| Error::Internal("database thread stopped".into()))?;
        answer
            .await
            .map_err(|_| Error::Internal("database job dropped".into()))?
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::OptionalExtension;

    use super::*;

    #[test]
    fn cached_joins_are_not_prepared_again_for_new_parameters() {
        let dir = tempfile::tempdir().expect("tempdir");
        let conn = open_connection(&dir.path().join("db.sqlite3")).expect("open");
        let sql = "SELECT t.device FROM device_tokens t JOIN devices d ON d.guid = t.device
                   WHERE t.hash = ?1 AND t.expires_ms > ?2";
        for i in 0..5_i64 {
            let mut stmt = conn.prepare_cached(sql).expect("prepare");
            let found: Option<String> = stmt
                .query_row(rusqlite::params![format!("h{i}"), i], |r| r.get(0))
                .optional()
                .expect("query");
            assert_eq!(found, None);
            assert_eq!(
                stmt.get_status(rusqlite::StatementStatus::RePrepare),
                0,
                "re-prepared after new parameters"
            );
        }
    }

    #[test]
    fn commits_are_synced_unless_relaxed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let conn = open_connection(&dir.path().join("db.sqlite3")).expect("open");
        let level = |c: &Connection| -> i64 {
            c.pragma_query_value(None, "synchronous", |r| r.get(0))
                .expect("pragma")
        };
        assert_eq!(level(&conn), 2, "FULL by default");
        set_durability(&conn, Durability::Relaxed).expect("relax");
        assert_eq!(level(&conn), 1, "NORMAL for heartbeats");
        set_durability(&conn, Durability::Full).expect("full");
        assert_eq!(level(&conn), 2);
    }
}
