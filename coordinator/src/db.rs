//! The SQLite database: one connection owned by one thread, fed through a bounded
//! queue. Every query runs off the async executor, writes never contend, and a
//! transaction is never held across an await.

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
    // NORMAL in WAL mode: a power cut can lose the last commits but never
    // corrupts; every acknowledged operator action is committed first.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    schema::migrate(conn)?;
    Ok(())
}

/// A cloneable handle to the database thread.
/// The thread ends when the last handle is dropped; every job commits before it
/// answers, so nothing acknowledged is lost when it does.
#[derive(Clone)]
pub struct Db {
    jobs: mpsc::Sender<Job>,
}

impl Db {
    /// Opens (creating if needed) the database at `path`, applies pending
    /// migrations and starts the owner thread.
    pub fn open(path: &Path) -> Result<Self> {
        Self::start(open_connection(path)?)
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
        Ok(Self { jobs })
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
