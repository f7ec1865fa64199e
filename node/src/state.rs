//! The node's durable state, in SQLite under the data folder: what it runs, what
//! it was asked to do, how far it got, and what the cashier said. Every change is
//! committed before the node acts on it, so a power cut at any point resumes
//! from the last committed step.
//!
//! The database is an actor: one thread owns the connection and runs the
//! calls of a bounded inbox in order ([`State`] is the async handle), so no
//! async worker blocks on SQLite or on a lock. [`Opening`] is the start-up
//! before the thread runs (migrations, the boot count).

use std::path::Path;

use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use tillswarm_protocol::api::{Assignment, MAX_STORE_PEERS, TargetState, TaskKind, TillSettings};
use tillswarm_protocol::trust::{StoreMember, TrustState};
use tillswarm_protocol::{DeviceId, PackageId, TaskId, Version};
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};

mod db;

/// Calls waiting for the state's thread.
const INBOX: usize = 64;

/// Schema migrations, applied in order; `PRAGMA user_version` counts those applied.
/// Append only: a released step is never edited.
const MIGRATIONS: &[&str] = &[
    // 1: the first schema (databases created before migrations existed have it
    // at user_version 0, hence IF NOT EXISTS).
    r#"
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (
    task_id     INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    package_id  TEXT NOT NULL,
    name        TEXT NOT NULL,
    version     TEXT NOT NULL,
    size        INTEGER NOT NULL,
    install_at  INTEGER,
    rollback    INTEGER NOT NULL,
    state       TEXT NOT NULL,
    bytes_done  INTEGER NOT NULL DEFAULT 0,
    wan_bytes   INTEGER NOT NULL DEFAULT 0,
    lan_bytes   INTEGER NOT NULL DEFAULT 0,
    error       TEXT,
    log_tail    TEXT,
    -- Boot number at which the cashier declined; asked again after a restart.
    declined_boot INTEGER,
    -- When the cashier was first asked (ms), for the autoUpdateTimeout deadline.
    asked_ms    INTEGER,
    -- A report of the current state is still owed to the coordinator.
    unreported  INTEGER NOT NULL DEFAULT 1,
    -- Unix ms before which chunks are not fetched over the WAN (see migration 2).
    wan_start   INTEGER,
    -- Bumped by every change that needs reporting; a report clears `unreported`
    -- only if no change came after the one it carried.
    change      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (task_id)
);
"#,
    // 2: WAN work is split over the store's tills from the first chunk: the
    // assignment names them and says by when they all know the task.
    r#"
ALTER TABLE tasks RENAME COLUMN wan_start TO join_by;
ALTER TABLE tasks ADD COLUMN store_peers TEXT NOT NULL DEFAULT '[]';
"#,
    // 3: the store's tills that already hold the package, waited for a moment
    // before its chunks are fetched over the WAN.
    r#"
ALTER TABLE tasks ADD COLUMN store_holders TEXT NOT NULL DEFAULT '[]';
"#,
    // 4: the coordinator's install permit (a few tills of a store at a time,
    // inside the store's window), updated with every instructions change.
    r#"
ALTER TABLE tasks ADD COLUMN hold_install INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN install_until INTEGER;
"#,
];

/// Brings the database to the latest schema, one transaction per step.
fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let current: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (i, step) in MIGRATIONS.iter().enumerate().skip(current.max(0) as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(step)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

/// The id of the local task that offers a package dropped in by hand.
pub const DROP_IN_TASK: TaskId = TaskId(0);

/// A task as the node tracks it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalTask {
    /// The coordinator's assignment.
    pub assignment: Assignment,
    /// Where this till stands.
    pub state: TargetState,
    /// Verified bytes.
    pub bytes_done: u64,
    /// Bytes from the coordinator.
    pub wan_bytes: u64,
    /// Bytes from peers.
    pub lan_bytes: u64,
    /// Failure reason.
    pub error: Option<String>,
    /// End of the install log.
    pub log_tail: Option<String>,
    /// Boot number when the cashier declined.
    pub declined_boot: Option<u64>,
    /// When the cashier was first asked.
    pub asked_ms: Option<i64>,
    /// Whether the coordinator still has to hear about the current state.
    pub unreported: bool,
    /// Counts reportable changes (see [`State::mark_reported`]).
    pub change: u64,
}

/// A call for the state's thread.
type Call = Box<dyn FnOnce(&mut Connection) + Send>;

/// Handle to the state database: calls go to its thread through a bounded
/// inbox (one connection; short transactions). Cheap to clone.
#[derive(Clone)]
pub struct State {
    inbox: mpsc::Sender<Call>,
}

/// The state database at start-up, before its thread runs.
pub struct Opening {
    conn: Connection,
}

fn kind_str(k: TaskKind) -> &'static str {
    k.as_str()
}

/// A list of the assignment's store tills as stored (capped, as the protocol says).
fn peers_json(peers: &[DeviceId]) -> String {
    let peers = &peers[..peers.len().min(MAX_STORE_PEERS)];
    serde_json::to_string(peers).unwrap_or_else(|_| "[]".into())
}

fn parse_enum<T: serde::de::DeserializeOwned>(s: &str) -> rusqlite::Result<T> {
    serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

impl Opening {
    /// Opens (creating) the state database in `dir` and brings it to the
    /// latest schema; a database a newer node wrote is refused.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut conn = Connection::open(dir.join("node.sqlite3"))?;
        // A node restarted at once (or the CLI reading the state) may find the
        // previous holder's last transaction still open: wait, don't fail.
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a till loses power without warning; a committed step must survive.
        conn.pragma_update(None, "synchronous", "FULL")?;
        let current: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if current > MIGRATIONS.len() as i64 {
            return Err(Error::Install(format!(
                "state database has schema {current}, this node knows up to {}: a newer node wrote it",
                MIGRATIONS.len()
            )));
        }
        migrate(&mut conn)?;
        Ok(Self { conn })
    }

    /// Sets the installed version only if none is recorded (first start).
    pub fn init_version(&mut self, version: Option<&Version>) -> Result<()> {
        db::init_version(&mut self.conn, version)
    }

    /// Counts a start of the node and returns the new boot number (a decline is
    /// asked again once this number has moved on).
    pub fn next_boot(&mut self) -> Result<u64> {
        db::next_boot(&mut self.conn)
    }

    /// Starts the state's thread; the handle to it.
    pub fn start(self) -> Result<State> {
        let (inbox, mut calls) = mpsc::channel::<Call>(INBOX);
        let mut conn = self.conn;
        std::thread::Builder::new()
            .name("node-state".into())
            .spawn(move || {
                // Ends when every handle is gone.
                while let Some(call) = calls.blocking_recv() {
                    call(&mut conn);
                }
            })?;
        Ok(State { inbox })
    }
}

fn stopped() -> Error {
    Error::Io(std::io::Error::other("the state database's thread stopped"))
}

impl State {
    /// Opens the state database in `dir` and starts its thread.
    pub fn open(dir: &Path) -> Result<Self> {
        Opening::open(dir)?.start()
    }

    /// Runs `f` on the state's thread.
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        let call: Call = Box::new(move |c| {
            let _ = reply.send(f(c));
        });
        self.inbox.send(call).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// [`State::call`] from a thread that may block (never an async worker).
    fn call_blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        let call: Call = Box::new(move |c| {
            let _ = reply.send(f(c));
        });
        self.inbox.blocking_send(call).map_err(|_| stopped())?;
        answer.blocking_recv().map_err(|_| stopped())?
    }

    /// The next sequence number for a progress report (strictly increasing across restarts).
    pub async fn next_seq(&self) -> Result<u64> {
        self.call(db::next_seq).await
    }

    /// What the node has accepted of the coordinator's chain of trust
    /// (current root, online key, revision acted on, freshness), or `None`
    /// before the first accepted answer.
    pub async fn trust(&self) -> Result<Option<TrustState>> {
        self.call(db::trust).await
    }

    /// Records the trust state (after what it vouches for was applied).
    pub async fn set_trust(&self, trust: &TrustState) -> Result<()> {
        let trust = trust.clone();
        self.call(move |c| db::set_trust(c, &trust)).await
    }

    /// The till type's settings from the last accepted instructions.
    pub async fn settings(&self) -> Result<TillSettings> {
        self.call(db::settings).await
    }

    /// Records the settings from accepted instructions.
    pub async fn set_settings(&self, settings: &TillSettings) -> Result<()> {
        let settings = settings.clone();
        self.call(move |c| db::set_settings(c, &settings)).await
    }

    /// The store's member list from the last accepted instructions.
    pub async fn store_members(&self) -> Result<Vec<StoreMember>> {
        self.call(db::store_members).await
    }

    /// Records the store's member list from accepted instructions.
    pub async fn set_store_members(&self, members: &[StoreMember]) -> Result<()> {
        let members = members.to_vec();
        self.call(move |c| db::set_store_members(c, &members)).await
    }

    /// The chunk base URL from the last accepted instructions.
    pub async fn chunk_base_url(&self) -> Result<Option<String>> {
        self.call(db::chunk_base_url).await
    }

    /// Records the chunk base URL from accepted instructions.
    pub async fn set_chunk_base_url(&self, url: Option<&str>) -> Result<()> {
        let url = url.map(str::to_owned);
        self.call(move |c| db::set_chunk_base_url(c, url.as_deref()))
            .await
    }

    /// The version the till runs (as installed by tillswarm), if known.
    pub async fn installed_version(&self) -> Result<Option<Version>> {
        self.call(db::installed_version).await
    }

    /// The version that ran before the last install.
    pub async fn previous_version(&self) -> Result<Option<Version>> {
        self.call(db::previous_version).await
    }

    /// Records a completed install: `version` runs now, the old one is kept as previous.
    pub async fn set_installed(&self, version: &Version) -> Result<()> {
        let version = version.clone();
        self.call(move |c| db::set_installed(c, &version)).await
    }

    /// Adds new assignments (state pending) and refreshes changed attempts.
    /// Returns the ids of tasks the coordinator no longer lists (paused,
    /// deleted) and of tasks whose id now names another package, version or
    /// kind: those are replaced, never mistaken for the old task (a
    /// coordinator that reused an id must not make the till act on stale work).
    pub async fn sync_assignments(
        &self,
        assignments: &[Assignment],
    ) -> Result<(Vec<TaskId>, Vec<TaskId>)> {
        let assignments = assignments.to_vec();
        self.call(move |c| db::sync_assignments(c, &assignments))
            .await
    }

    /// Offers a package dropped into `update/` by hand, as the local task
    /// [`DROP_IN_TASK`] (replacing an older offer not being installed).
    /// Returns false when that version, or a newer one, is already on offer.
    /// Blocking: for the drop-in scan's thread.
    pub fn offer_drop_in_blocking(
        &self,
        version: &Version,
        package_id: &PackageId,
    ) -> Result<bool> {
        let (version, package_id) = (version.clone(), *package_id);
        self.call_blocking(move |c| db::offer_drop_in(c, &version, &package_id))
    }

    /// Forgets a task the coordinator dropped (its chunks and staging stay).
    pub async fn remove_task(&self, id: TaskId) -> Result<()> {
        self.call(move |c| db::remove_task(c, id)).await
    }

    /// Every tracked task, oldest first.
    pub async fn tasks(&self) -> Result<Vec<LocalTask>> {
        self.call(db::tasks).await
    }

    /// One task.
    pub async fn task(&self, id: TaskId) -> Result<Option<LocalTask>> {
        Ok(self
            .tasks()
            .await?
            .into_iter()
            .find(|t| t.assignment.task_id == id))
    }

    /// Moves a task to `state` (with optional error/log) and marks it unreported.
    pub async fn set_state(
        &self,
        id: TaskId,
        state: TargetState,
        error: Option<&str>,
        log_tail: Option<&str>,
    ) -> Result<()> {
        let (error, log_tail) = (error.map(str::to_owned), log_tail.map(str::to_owned));
        self.call(move |c| db::set_state(c, id, state, error.as_deref(), log_tail.as_deref()))
            .await
    }

    /// Records download progress.
    pub async fn set_progress(
        &self,
        id: TaskId,
        bytes_done: u64,
        wan_bytes: u64,
        lan_bytes: u64,
    ) -> Result<()> {
        self.call(move |c| db::set_progress(c, id, bytes_done, wan_bytes, lan_bytes))
            .await
    }

    /// Records that the cashier was asked (first time only).
    pub async fn set_asked(&self, id: TaskId, now_ms: i64) -> Result<()> {
        self.call(move |c| db::set_asked(c, id, now_ms)).await
    }

    /// Records a decline at boot `boot`.
    pub async fn set_declined(&self, id: TaskId, boot: u64) -> Result<()> {
        self.call(move |c| db::set_declined(c, id, boot)).await
    }

    /// Marks a task as reported, unless it changed again after the report's
    /// snapshot (`change`): then the newer state is still owed.
    pub async fn mark_reported(&self, id: TaskId, change: u64) -> Result<()> {
        self.call(move |c| db::mark_reported(c, id, change)).await
    }
}

#[cfg(test)]
mod tests;
