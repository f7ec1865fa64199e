//! The database: SQLite (embedded, the default) or PostgreSQL, behind one
//! handle. Table modules write their queries once against [`sql::Connection`]
//! and run them through [`Db`], never across an await.
//!
//! SQLite: one connection owned by one thread, fed through a bounded queue,
//! so writes never contend and a transaction is never held across an
//! await. WAL checkpoints run on a second connection on their own thread
//! (copying the log and its fsync never stall the queries); a third,
//! read-only connection answers hot reads (unchanged polls) beside the
//! writer.
//!
//! PostgreSQL ([`pg`]): a pool; each job runs on a blocking thread in one
//! transaction that first takes the writers' advisory lock, so writers, from
//! any number of coordinators, run one at a time as SQLite's do.

use std::path::Path;

use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};

mod batch;
pub mod copy;
mod database;
pub mod pg;
mod pg_schema;
mod pg_tls;
mod pg_writer;
mod schema;
pub mod sql;

pub use database::{Database, SQLITE_FILE, TEST_BACKEND_ENV, TEST_POSTGRES_ENV, test_postgres};
use sql::Connection;

/// Reads text column `idx` as a typed id or one of the protocol's closed sets
/// of names (a [`tillswarm_protocol::StoreId`], a task status) through its
/// `FromStr`: a value it refuses (the database holds something this build
/// does not know) is an error of the read, never a panic.
pub(crate) fn get_parsed<T>(row: &sql::Row<'_>, idx: usize) -> sql::Result<T>
where
    T: std::str::FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let text: String = row.get(idx)?;
    text.parse()
        .map_err(|e| sql::Error::FromSqlConversionFailure(idx, sql::types::Type::Text, Box::new(e)))
}

/// As [`get_parsed`], for a column that may be NULL.
pub(crate) fn get_parsed_opt<T>(row: &sql::Row<'_>, idx: usize) -> sql::Result<Option<T>>
where
    T: std::str::FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let text: Option<String> = row.get(idx)?;
    text.map(|t| {
        t.parse().map_err(|e| {
            sql::Error::FromSqlConversionFailure(idx, sql::types::Type::Text, Box::new(e))
        })
    })
    .transpose()
}

/// `WITH v AS (...)`: the JSON array of objects bound as parameter 1, as
/// the rows `v` with `columns` (each a key of the objects and its
/// PostgreSQL type), read by each engine's own JSON function. Many rows in
/// one parameter keep a statement's text, and so its prepared plan, the
/// same whatever their number.
pub(crate) fn json_rows(conn: &Connection, columns: &[(&str, &str)]) -> String {
    let list = |f: &dyn Fn(&str, &str) -> String| {
        columns
            .iter()
            .map(|(name, ty)| f(name, ty))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if conn.is_postgres() {
        format!(
            "WITH v AS (SELECT * FROM jsonb_to_recordset(CAST(CAST(?1 AS text) AS jsonb)) AS x({}))",
            list(&|name, ty| format!("{name} {ty}"))
        )
    } else {
        format!(
            "WITH v AS (SELECT {} FROM json_each(?1))",
            list(&|name, _| format!("value ->> '{name}' AS {name}"))
        )
    }
}

pub use batch::Stats as BatchStats;

/// A migrated connection for unit tests of the table modules: in memory, or
/// a fresh schema on the test server when `TILLSWARM_TEST_BACKEND=postgres`.
#[cfg(test)]
pub(crate) fn test_connection() -> Connection {
    let dir = tempfile::tempdir().expect("tempdir");
    if std::env::var(TEST_BACKEND_ENV).as_deref() == Ok("postgres") {
        let db = test_postgres(dir.path()).expect("a PostgreSQL test server");
        return open_connection_for(&db, dir.path()).expect("PostgreSQL test schema");
    }
    let mut conn = rusqlite::Connection::open_in_memory().expect("in-memory database");
    schema::migrate(&mut conn).expect("migrate");
    Connection::sqlite(conn)
}

/// Most database jobs waiting for the owner thread; callers wait beyond that.
const QUEUE_DEPTH: usize = 1024;

/// Work for the reader thread: a read on its own read-only connection.
type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

/// Work for the database thread.
enum Job {
    /// Runs on its own (and opens its own transaction, if any).
    Alone(Box<dyn FnOnce(&mut Connection) + Send>),
    /// May share one relaxed transaction with the batched jobs queued behind
    /// it (see [`batch`]).
    Batched(batch::BatchedJob),
}

/// Opens the SQLite file with the coordinator's settings and migrations. The
/// coordinator keeps one such connection on its thread; the command line opens
/// its own (another process may hold the file: SQLite's locks and the busy
/// timeout keep the two apart).
pub(crate) fn open_sqlite(path: &Path) -> Result<rusqlite::Connection> {
    let mut conn = rusqlite::Connection::open(path)?;
    configure(&mut conn)?;
    Ok(conn)
}

/// Opens one connection to `database` (a data folder's SQLite file, or
/// PostgreSQL), migrated: for the command line.
pub(crate) fn open_connection_for(database: &Database, data_dir: &Path) -> Result<Connection> {
    match database.resolve(data_dir)? {
        database::Resolved::Sqlite(path) => Ok(Connection::sqlite(open_sqlite(&path)?)),
        database::Resolved::Postgres(server) => {
            let conn = Connection::postgres(pg::Client::connect_blocking(&server)?);
            database::prepare_schema(&conn, &server.config)?;
            pg_schema::migrate(&conn)?;
            Ok(conn)
        }
    }
}

fn configure(conn: &mut rusqlite::Connection) -> Result<()> {
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
    /// (PostgreSQL: `synchronous_commit = off` for the transaction.)
    Relaxed,
}

/// Sets a SQLite connection's durability for its next transactions.
pub(crate) fn set_durability(
    conn: &rusqlite::Connection,
    durability: Durability,
) -> rusqlite::Result<()> {
    let level = match durability {
        Durability::Full => "FULL",
        Durability::Relaxed => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", level)
}

/// How often the checkpoint thread copies the WAL into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// The chunk store's lock across coordinators (see [`Db::lock_chunks`]).
pub struct ChunksLock {
    _held: Option<pg::ChunksLock>,
}

/// A cloneable handle to the database.
/// SQLite: the thread ends when the last handle is dropped; every job commits
/// before it answers, so nothing acknowledged is lost when it does.
#[derive(Clone)]
pub struct Db {
    backend: Backend,
    batches: std::sync::Arc<batch::Stats>,
}

#[derive(Clone)]
enum Backend {
    Sqlite {
        jobs: mpsc::Sender<Job>,
        /// The reader thread's queue (a file database only): reads that may
        /// run beside the writer, on the last committed state.
        reads: Option<mpsc::Sender<ReadJob>>,
        /// Held by every handle; the checkpoint thread stops once none is left.
        _alive: std::sync::Arc<()>,
    },
    Postgres {
        pool: Box<pg::Pool>,
        /// The group-commit thread's queue (see [`pg_writer`]).
        batched: mpsc::Sender<Job>,
    },
}

impl Db {
    /// Opens `database` (for the default and SQLite: the file in `data_dir`),
    /// applies pending migrations and starts serving queries.
    pub async fn connect(database: &Database, data_dir: &Path) -> Result<Self> {
        match database.resolve(data_dir)? {
            database::Resolved::Sqlite(path) => Self::open(&path),
            database::Resolved::Postgres(server) => {
                if server.uses_tls() {
                    tracing::info!("connecting to PostgreSQL over TLS");
                }
                let pool = pg::Pool::new((*server).clone())?;
                let batches = std::sync::Arc::new(batch::Stats::default());
                let batched = pg_writer::start((*server).clone(), batches.clone())?;
                let client = pool.get().await?;
                tokio::task::spawn_blocking(move || -> Result<()> {
                    let conn = Connection::postgres(client);
                    database::prepare_schema(&conn, &server.config)?;
                    pg_schema::migrate(&conn)?;
                    Ok(())
                })
                .await
                .map_err(|e| Error::Internal(format!("migration: {e}")))??;
                Ok(Self {
                    backend: Backend::Postgres {
                        pool: Box::new(pool),
                        batched,
                    },
                    batches,
                })
            }
        }
    }

    /// Whether this coordinator runs the scheduler: always on SQLite (one
    /// coordinator per file); on PostgreSQL the one holding the leader lock
    /// (see [`pg::Pool::lead`]), so two coordinators on one database never
    /// both activate tasks or drive rollouts.
    pub async fn lead(&self) -> Result<bool> {
        match &self.backend {
            Backend::Sqlite { .. } => Ok(true),
            Backend::Postgres { pool, .. } => Ok(pool.lead().await?),
        }
    }

    /// Waits for the chunk store's lock, held while the guard lives. On
    /// PostgreSQL coordinators share the chunk store, so ingestion,
    /// deletion and collection take it across all of them; a SQLite
    /// database has one coordinator, whose own mutex suffices.
    pub async fn lock_chunks(&self) -> Result<ChunksLock> {
        match &self.backend {
            Backend::Sqlite { .. } => Ok(ChunksLock { _held: None }),
            Backend::Postgres { pool, .. } => Ok(ChunksLock {
                _held: Some(pool.lock_chunks().await?),
            }),
        }
    }

    /// Whether this database is PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        matches!(self.backend, Backend::Postgres { .. })
    }

    /// Opens (creating if needed) the SQLite database at `path`, applies
    /// pending migrations and starts the owner thread.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = open_sqlite(path)?;
        // Checkpoints are the checkpoint thread's, not the committing query's.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let checkpoints = open_sqlite(path)?;
        let reader = open_sqlite(path)?;
        reader.pragma_update(None, "query_only", "ON")?;
        let reader = Connection::sqlite(reader);
        let mut db = Self::start(conn)?;
        let (reads, mut inbox) = mpsc::channel::<ReadJob>(QUEUE_DEPTH);
        std::thread::Builder::new()
            .name("tillswarm-db-read".into())
            .spawn(move || {
                while let Some(job) = inbox.blocking_recv() {
                    job(&reader);
                }
            })?;
        let Backend::Sqlite {
            reads: slot,
            _alive,
            ..
        } = &mut db.backend
        else {
            unreachable!("started on SQLite");
        };
        *slot = Some(reads);
        let alive = std::sync::Arc::downgrade(_alive);
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

    /// An in-memory SQLite database, for tests.
    pub fn open_in_memory() -> Result<Self> {
        let mut conn = rusqlite::Connection::open_in_memory()?;
        configure(&mut conn)?;
        Self::start(conn)
    }

    fn start(conn: rusqlite::Connection) -> Result<Self> {
        let mut conn = Connection::sqlite(conn);
        let (jobs, mut inbox) = mpsc::channel::<Job>(QUEUE_DEPTH);
        let batches = std::sync::Arc::new(batch::Stats::default());
        let stats = batches.clone();
        std::thread::Builder::new()
            .name("tillswarm-db".into())
            .spawn(move || {
                let mut next = None;
                while let Some(job) = next.take().or_else(|| inbox.blocking_recv()) {
                    match job {
                        Job::Alone(f) => f(&mut conn),
                        Job::Batched(f) => next = batch::run(&mut conn, f, &mut inbox, &stats),
                    }
                }
            })?;
        Ok(Self {
            backend: Backend::Sqlite {
                jobs,
                reads: None,
                _alive: std::sync::Arc::new(()),
            },
            batches,
        })
    }

    /// Runs the read `f` beside the writer, on the last committed state: on
    /// SQLite's reader thread (WAL readers never wait for the writer; an
    /// in-memory database runs it on the database thread), on PostgreSQL
    /// outside any transaction and without the writers' lock. For hot reads
    /// that must not queue behind writes (a till's unchanged poll).
    pub async fn call_read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let reads = match &self.backend {
            Backend::Sqlite { reads: Some(r), .. } => r,
            Backend::Sqlite { reads: None, .. } => return self.call(move |conn| f(conn)).await,
            Backend::Postgres { pool, .. } => {
                let client = pool.get().await?;
                return blocking(move || f(&Connection::postgres(client))).await;
            }
        };
        let (reply, answer) = oneshot::channel();
        reads
            .send(Box::new(move |conn| {
                let _ = reply.send(f(conn));
            }))
            .await
            .map_err(|_| Error::Internal("database reader stopped".into()))?;
        answer
            .await
            .map_err(|_| Error::Internal("database read dropped".into()))?
    }

    /// Runs the read-only `f` on one consistent state: on SQLite's
    /// database thread, as [`Db::call`]; on PostgreSQL in a read-only
    /// snapshot without the writers' lock, so operator views and other
    /// reads run beside writes, from any coordinator.
    pub async fn call_snapshot<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        if let Backend::Postgres { pool, .. } = &self.backend {
            let client = pool.get().await?;
            return blocking(move || Connection::postgres(client).snapshot(f)).await;
        }
        self.call(move |conn| f(conn)).await
    }

    /// Runs `f` on the database (SQLite: its thread) and returns its result.
    /// Cancel-safe: if the caller goes away, the job still runs to completion
    /// (or not at all). On PostgreSQL the job holds the writers' lock
    /// throughout, its statements in autocommit as on SQLite's thread.
    pub async fn call<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        if let Backend::Postgres { pool, .. } = &self.backend {
            let client = pool.get().await?;
            return blocking(move || {
                let mut conn = Connection::postgres(client);
                conn.lock_writers()?;
                let out = f(&mut conn);
                conn.unlock_writers()?;
                out
            })
            .await;
        }
        let (reply, answer) = oneshot::channel();
        self.submit(
            Job::Alone(Box::new(move |conn| {
                let _ = reply.send(f(conn));
            })),
            answer,
        )
        .await
    }

    /// Runs `f` in a relaxed transaction ([`Durability::Relaxed`]). It may
    /// share it with other such jobs waiting in the queue (SQLite's database
    /// thread; PostgreSQL's group-commit thread, see [`pg_writer`]), inside a
    /// savepoint of its own: a failing `f` undoes only its own writes. Its
    /// answer comes once the shared transaction committed, so an `Ok` is as
    /// committed as a relaxed [`Db::call`]'s.
    pub async fn call_batched<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&sql::Transaction<'_>) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: batch::BatchedJob = Box::new(move |tx| {
            let (out, poisoned) = match tx {
                Some(tx) => batch::in_savepoint(tx, f),
                None => (Err(Error::Internal("no transaction".into())), false),
            };
            batch::Ran {
                settle: Box::new(move |committed| {
                    let _ = reply.send(match committed {
                        Ok(()) => out,
                        Err(why) => Err(Error::Internal(format!("not committed: {why}"))),
                    });
                }),
                poisoned,
            }
        });
        self.submit(Job::Batched(job), answer).await
    }

    /// How many shared transactions ran and how many jobs they carried.
    pub fn batch_stats(&self) -> &BatchStats {
        &self.batches
    }

    async fn submit<T>(&self, job: Job, answer: oneshot::Receiver<Result<T>>) -> Result<T> {
        let jobs = match (&self.backend, &job) {
            (Backend::Sqlite { jobs, .. }, _) => jobs,
            (Backend::Postgres { batched, .. }, Job::Batched(_)) => batched,
            (Backend::Postgres { .. }, Job::Alone(_)) => {
                return Err(Error::Internal(
                    "PostgreSQL runs single jobs on the pool".into(),
                ));
            }
        };
        jobs.send(job)
            .await
            .map_err(|_| Error::Internal("database thread stopped".into()))?;
        answer
            .await
            .map_err(|_| Error::Internal("database job dropped".into()))?
    }
}

/// Runs `f` on a blocking thread of this runtime (PostgreSQL jobs wait on
/// their client there).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("database job: {e}")))?
}

#[cfg(test)]
mod tests {
    use rusqlite::OptionalExtension;

    use super::*;

    fn queue(db: &Db) -> &mpsc::Sender<Job> {
        match &db.backend {
            Backend::Sqlite { jobs, .. } => jobs,
            Backend::Postgres { batched, .. } => batched,
        }
    }

    #[test]
    fn cached_joins_are_not_prepared_again_for_new_parameters() {
        let dir = tempfile::tempdir().expect("tempdir");
        let conn = open_sqlite(&dir.path().join("db.sqlite3")).expect("open");
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

    /// Holds the database thread until the returned sender is used (or
    /// dropped), so that jobs sent meanwhile wait in the queue together.
    async fn hold(db: &Db) -> std::sync::mpsc::Sender<()> {
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (started, running) = oneshot::channel();
        let db2 = db.clone();
        tokio::spawn(async move {
            db2.call(move |_| {
                let _ = started.send(());
                let _ = held.recv();
                Ok(())
            })
            .await
        });
        running.await.expect("holding");
        release
    }

    /// Waits until `n` jobs are queued behind the held one.
    async fn queued(db: &Db, n: usize) {
        while QUEUE_DEPTH - queue(db).capacity() < n {
            tokio::task::yield_now().await;
        }
    }

    /// Holds the thread that runs batched jobs (SQLite's database thread,
    /// PostgreSQL's group-commit thread) with a batched job of its own.
    async fn hold_batches(db: &Db) -> std::sync::mpsc::Sender<()> {
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (started, running) = oneshot::channel();
        let db2 = db.clone();
        tokio::spawn(async move {
            db2.call_batched(move |_| {
                let _ = started.send(());
                let _ = held.recv();
                Ok(())
            })
            .await
        });
        running.await.expect("holding");
        release
    }

    /// Ten heartbeat-like writes queued together share a few transactions;
    /// the fifth writes its row, then a statement of it fails
    /// on the server: only its own row is undone.
    async fn queued_writes_share_commits_and_a_failure_undoes_only_itself(db: Db) {
        db.call(|c| Ok(c.execute_batch("CREATE TABLE t (n BIGINT)")?))
            .await
            .expect("table");
        let release = hold_batches(&db).await;
        let (batches, jobs) = (db.batch_stats().batches(), db.batch_stats().jobs());
        let mut queued_jobs = Vec::new();
        for n in 0..10_i64 {
            let db = db.clone();
            queued_jobs.push(tokio::spawn(async move {
                db.call_batched(move |tx| {
                    tx.execute("INSERT INTO t (n) VALUES (?1)", [n])?;
                    if n == 5 {
                        tx.execute("INSERT INTO no_such_table (n) VALUES (?1)", [n])?;
                    }
                    Ok(n)
                })
                .await
            }));
        }
        queued(&db, 10).await;
        release.send(()).expect("release");
        let mut failed = Vec::new();
        for job in queued_jobs {
            if let Err(e) = job.await.expect("join") {
                failed.push(e.to_string());
            }
        }
        assert_eq!(failed.len(), 1, "only job 5 fails: {failed:?}");
        assert!(failed[0].contains("no_such_table"), "{failed:?}");
        let rows: Vec<i64> = db
            .call(|c| {
                let mut stmt = c.prepare("SELECT n FROM t ORDER BY n")?;
                let rows = stmt.query_map([], |r| r.get(0))?;
                Ok(rows.collect::<sql::Result<_>>()?)
            })
            .await
            .expect("rows");
        assert_eq!(
            rows,
            vec![0, 1, 2, 3, 4, 6, 7, 8, 9],
            "job 5's row is undone"
        );
        let stats = db.batch_stats();
        assert_eq!(stats.jobs() - jobs, 11, "the holder and the ten");
        // Usually two (the holder's, then the ten); a batch stops taking
        // jobs after `batch::MAX_SPAN`, which a slow or busy machine reaches
        // sooner. Without sharing it would be eleven.
        assert!(
            stats.batches() - batches <= 5,
            "the holder and ten queued writes took {} commits",
            stats.batches() - batches
        );
    }

    #[tokio::test]
    async fn queued_heartbeat_writes_share_one_commit_and_a_failure_undoes_only_itself() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("db.sqlite3")).expect("open");
        queued_writes_share_commits_and_a_failure_undoes_only_itself(db).await;
    }

    #[tokio::test]
    async fn on_postgres_queued_heartbeat_writes_share_one_commit_too() {
        let dir = tempfile::tempdir().expect("tempdir");
        let Some(database) = test_postgres(dir.path()) else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "group commit on PostgreSQL needs {TEST_POSTGRES_ENV}"
            );
            eprintln!("skipping: no PostgreSQL test server ({TEST_POSTGRES_ENV} is not set)");
            return;
        };
        let db = Db::connect(&database, dir.path()).await.expect("connect");
        queued_writes_share_commits_and_a_failure_undoes_only_itself(db).await;
    }

    #[tokio::test]
    async fn the_group_commit_session_is_opened_again_after_the_server_ended_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let Some(database) = test_postgres(dir.path()) else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "group commit on PostgreSQL needs {TEST_POSTGRES_ENV}"
            );
            eprintln!("skipping: no PostgreSQL test server ({TEST_POSTGRES_ENV} is not set)");
            return;
        };
        let db = Db::connect(&database, dir.path()).await.expect("connect");
        let write = |db: Db| async move {
            db.call_batched(|tx| Ok(tx.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?))
                .await
        };
        assert_eq!(write(db.clone()).await.expect("first write"), 1);
        let database::Resolved::Postgres(server) = database.resolve(dir.path()).expect("resolve")
        else {
            unreachable!("a PostgreSQL database");
        };
        let name = pg_writer::application_name(&server.config);
        let ended: i64 = db
            .call(move |c| {
                Ok(c.query_row(
                    "SELECT count(*) FROM (SELECT pg_terminate_backend(pid)
                     FROM pg_stat_activity WHERE application_name = ?1) AS x",
                    [name],
                    |r| r.get(0),
                )?)
            })
            .await
            .expect("terminate");
        assert_eq!(ended, 1, "the group-commit session was found and ended");
        // The job that meets the dead session may fail; the next ones run.
        let _ = write(db.clone()).await;
        for _ in 0..2 {
            assert_eq!(
                write(db.clone()).await.expect("write after reconnecting"),
                1
            );
        }
    }

    #[tokio::test]
    async fn a_job_queued_between_heartbeats_sees_the_ones_before_it_committed() {
        let db = Db::open_in_memory().expect("open");
        db.call(|c| Ok(c.execute_batch("CREATE TABLE t (n INTEGER)")?))
            .await
            .expect("table");
        let release = hold(&db).await;
        let insert = |n: i64| {
            let db = db.clone();
            tokio::spawn(async move {
                db.call_batched(move |tx| Ok(tx.execute("INSERT INTO t (n) VALUES (?1)", [n])?))
                    .await
            })
        };
        let first = insert(1);
        queued(&db, 1).await;
        let db2 = db.clone();
        let count = tokio::spawn(async move {
            db2.call(|c| {
                // Outside any transaction: sees only what was committed.
                assert!(c.is_autocommit());
                Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))?)
            })
            .await
        });
        queued(&db, 2).await;
        let last = insert(2);
        queued(&db, 3).await;
        release.send(()).expect("release");
        first.await.expect("join").expect("first");
        last.await.expect("join").expect("last");
        assert_eq!(count.await.expect("join").expect("count"), 1);
        assert_eq!(db.batch_stats().batches(), 2, "the read split the batch");
    }

    #[test]
    fn commits_are_synced_unless_relaxed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let conn = open_sqlite(&dir.path().join("db.sqlite3")).expect("open");
        let level = |c: &rusqlite::Connection| -> i64 {
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
