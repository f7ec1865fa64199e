//! The node's durable state, in SQLite under the data folder: what it runs, what
//! it was asked to do, how far it got, and what the cashier said. Every change is
//! committed before the node acts on it, so a power cut at any point resumes
//! from the last committed step.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use tillswarm_protocol::api::{Assignment, MAX_STORE_PEERS, TargetState, TaskKind};
use tillswarm_protocol::{DeviceId, PackageId, TaskId, Version};

use crate::error::{Error, Result};

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

/// Handle to the state database (one connection; short transactions).
#[derive(Clone)]
pub struct State {
    conn: Arc<Mutex<Connection>>,
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

impl State {
    /// Opens (creating) the state database in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut conn = Connection::open(dir.join("node.sqlite3"))?;
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
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> Result<T> {
        let mut conn = self
            .conn
            .lock()
            .map_err(|_| Error::Install("state lock poisoned".into()))?;
        Ok(f(&mut conn)?)
    }

    fn get_kv(&self, key: &str) -> Result<Option<String>> {
        self.with(|c| {
            c.query_row("SELECT value FROM kv WHERE key = ?1", [key], |r| r.get(0))
                .optional()
        })
    }

    fn set_kv(&self, key: &str, value: &str) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO kv (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = ?2",
                params![key, value],
            )
            .map(|_| ())
        })
    }

    /// Counts a start of the node and returns the new boot number (a decline is
    /// asked again once this number has moved on).
    pub fn next_boot(&self) -> Result<u64> {
        let boot = self
            .get_kv("boot")?
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            + 1;
        self.set_kv("boot", &boot.to_string())?;
        Ok(boot)
    }

    /// The next sequence number for a progress report (strictly increasing across restarts).
    pub fn next_seq(&self) -> Result<u64> {
        self.with(|c| {
            let tx = c.transaction()?;
            let seq = tx
                .query_row("SELECT value FROM kv WHERE key = 'seq'", [], |r| r.get::<_, String>(0))
                .optional()?
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
                + 1;
            tx.execute(
                "INSERT INTO kv (key, value) VALUES ('seq', ?1) ON CONFLICT(key) DO UPDATE SET value = ?1",
                [seq.to_string()],
            )?;
            tx.commit()?;
            Ok(seq)
        })
    }

    /// What the node has accepted of the coordinator's chain of trust
    /// (current root, online key, revision acted on, freshness), or `None`
    /// before the first accepted answer.
    pub fn trust(&self) -> Result<Option<tillswarm_protocol::trust::TrustState>> {
        Ok(self
            .get_kv("trust")?
            .and_then(|v| serde_json::from_str(&v).ok()))
    }

    /// Records the trust state (after what it vouches for was applied).
    pub fn set_trust(&self, trust: &tillswarm_protocol::trust::TrustState) -> Result<()> {
        let text = serde_json::to_string(trust).map_err(|e| Error::Io(std::io::Error::other(e)))?;
        self.set_kv("trust", &text)
    }

    /// The till type's settings from the last accepted instructions.
    pub fn settings(&self) -> Result<tillswarm_protocol::api::TillSettings> {
        Ok(self
            .get_kv("settings")?
            .and_then(|v| serde_json::from_str(&v).ok())
            .unwrap_or_default())
    }

    /// Records the settings from accepted instructions.
    pub fn set_settings(&self, settings: &tillswarm_protocol::api::TillSettings) -> Result<()> {
        let text =
            serde_json::to_string(settings).map_err(|e| Error::Io(std::io::Error::other(e)))?;
        self.set_kv("settings", &text)
    }

    /// The store's member list from the last accepted instructions.
    pub fn store_members(&self) -> Result<Vec<tillswarm_protocol::trust::StoreMember>> {
        Ok(self
            .get_kv("store_members")?
            .and_then(|v| serde_json::from_str(&v).ok())
            .unwrap_or_default())
    }

    /// Records the store's member list from accepted instructions.
    pub fn set_store_members(
        &self,
        members: &[tillswarm_protocol::trust::StoreMember],
    ) -> Result<()> {
        let text =
            serde_json::to_string(members).map_err(|e| Error::Io(std::io::Error::other(e)))?;
        self.set_kv("store_members", &text)
    }

    /// The version the till runs (as installed by tillswarm), if known.
    pub fn installed_version(&self) -> Result<Option<Version>> {
        Ok(self
            .get_kv("installed_version")?
            .and_then(|v| v.parse().ok()))
    }

    /// The version that ran before the last install.
    pub fn previous_version(&self) -> Result<Option<Version>> {
        Ok(self
            .get_kv("previous_version")?
            .and_then(|v| v.parse().ok()))
    }

    /// Records a completed install: `version` runs now, the old one is kept as previous.
    pub fn set_installed(&self, version: &Version) -> Result<()> {
        if let Some(old) = self.installed_version()? {
            if old != *version {
                self.set_kv("previous_version", old.as_str())?;
            }
        }
        self.set_kv("installed_version", version.as_str())
    }

    /// Sets the installed version only if none is recorded (first start).
    pub fn init_version(&self, version: Option<&Version>) -> Result<()> {
        if let (None, Some(v)) = (self.installed_version()?, version) {
            self.set_kv("installed_version", v.as_str())?;
        }
        Ok(())
    }

    /// Adds new assignments (state pending) and refreshes changed attempts.
    /// Returns the ids of tasks the coordinator no longer lists (paused,
    /// deleted) and of tasks whose id now names another package, version or
    /// kind: those are replaced, never mistaken for the old task (a
    /// coordinator that reused an id must not make the till act on stale work).
    pub fn sync_assignments(
        &self,
        assignments: &[Assignment],
    ) -> Result<(Vec<TaskId>, Vec<TaskId>)> {
        self.with(|c| {
            let tx = c.transaction()?;
            let mut replaced = Vec::new();
            for a in assignments {
                let existing: Option<(u32, String, String, String, bool)> = tx
                    .query_row(
                        "SELECT attempt, package_id, kind, version, rollback FROM tasks WHERE task_id = ?1",
                        [a.task_id.0 as i64],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                    )
                    .optional()?;
                let existing = match existing {
                    Some((_, package, kind, version, rollback))
                        if package != a.package_id.to_hex()
                            || kind != kind_str(a.kind)
                            || version != a.version.as_str()
                            || rollback != a.rollback =>
                    {
                        tx.execute("DELETE FROM tasks WHERE task_id = ?1", [a.task_id.0 as i64])?;
                        replaced.push(a.task_id);
                        None
                    }
                    other => other.map(|(attempt, ..)| attempt),
                };
                match existing {
                    Some(attempt) if attempt == a.attempt => {
                        tx.execute(
                            "UPDATE tasks SET hold_install = ?2, install_until = ?3 WHERE task_id = ?1",
                            params![
                                a.task_id.0 as i64,
                                a.hold_install,
                                a.install_until_unix.map(|t| t as i64)
                            ],
                        )?;
                    }
                    Some(_) => {
                        // A restart of the task: try again from the top (chunks already held stay).
                        tx.execute(
                            "UPDATE tasks SET attempt = ?2, state = 'pending', error = NULL, log_tail = NULL,
                                 declined_boot = NULL, asked_ms = NULL, install_at = ?3, unreported = 1, change = change + 1,
                                 join_by = ?4, store_peers = ?5, store_holders = ?6,
                                 hold_install = ?7, install_until = ?8
                             WHERE task_id = ?1",
                            params![
                                a.task_id.0 as i64,
                                a.attempt,
                                a.install_at_unix.map(|t| t as i64),
                                a.join_by_unix_ms.map(|t| t as i64),
                                peers_json(&a.store_peers),
                                peers_json(&a.store_holders),
                                a.hold_install,
                                a.install_until_unix.map(|t| t as i64)
                            ],
                        )?;
                    }
                    None => {
                        tx.execute(
                            "INSERT INTO tasks (task_id, attempt, kind, package_id, name, version, size,
                                                install_at, rollback, state, join_by, store_peers,
                                                store_holders, hold_install, install_until)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'pending', ?10, ?11, ?12, ?13, ?14)",
                            params![
                                a.task_id.0 as i64,
                                a.attempt,
                                kind_str(a.kind),
                                a.package_id.to_hex(),
                                a.package_name,
                                a.version.as_str(),
                                a.size as i64,
                                a.install_at_unix.map(|t| t as i64),
                                a.rollback,
                                a.join_by_unix_ms.map(|t| t as i64),
                                peers_json(&a.store_peers),
                                peers_json(&a.store_holders),
                                a.hold_install,
                                a.install_until_unix.map(|t| t as i64)
                            ],
                        )?;
                    }
                }
            }
            let listed: Vec<i64> = assignments.iter().map(|a| a.task_id.0 as i64).collect();
            // Task 0 is the local drop-in offer: the coordinator never lists it.
            let mut stmt = tx.prepare("SELECT task_id FROM tasks WHERE task_id <> 0")?;
            let all: Vec<i64> = stmt.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
            drop(stmt);
            let gone: Vec<TaskId> =
                all.into_iter().filter(|id| !listed.contains(id)).map(|id| TaskId(id as u64)).collect();
            tx.commit()?;
            Ok((gone, replaced))
        })
    }

    /// Offers a package dropped into `update/` by hand, as the local task
    /// [`DROP_IN_TASK`] (replacing an older offer not being installed).
    /// Returns false when that version, or a newer one, is already on offer.
    pub fn offer_drop_in(&self, version: &Version, package_id: &PackageId) -> Result<bool> {
        self.with(|c| {
            let tx = c.transaction()?;
            let current: Option<(String, String)> = tx
                .query_row("SELECT version, state FROM tasks WHERE task_id = 0", [], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            if let Some((v, state)) = &current {
                let newer = v.parse::<Version>().is_ok_and(|v| v >= *version);
                if newer || state == "installing" {
                    return Ok(false);
                }
            }
            tx.execute("DELETE FROM tasks WHERE task_id = 0", [])?;
            tx.execute(
                "INSERT INTO tasks (task_id, attempt, kind, package_id, name, version, size, rollback, state, unreported)
                 VALUES (0, 1, 'update', ?1, 'manual', ?2, 0, 0, 'downloaded', 0)",
                params![package_id.to_hex(), version.as_str()],
            )?;
            tx.commit()?;
            Ok(true)
        })
    }

    /// Forgets a task the coordinator dropped (its chunks and staging stay).
    pub fn remove_task(&self, id: TaskId) -> Result<()> {
        self.with(|c| {
            c.execute("DELETE FROM tasks WHERE task_id = ?1", [id.0 as i64])
                .map(|_| ())
        })
    }

    /// Every tracked task, oldest first.
    pub fn tasks(&self) -> Result<Vec<LocalTask>> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT task_id, attempt, kind, package_id, name, version, size, install_at, rollback, state,
                        bytes_done, wan_bytes, lan_bytes, error, log_tail, declined_boot, asked_ms, unreported,
                        join_by, change, store_peers, store_holders, hold_install, install_until
                 FROM tasks ORDER BY task_id",
            )?;
            let rows = stmt.query_map([], |r| {
                let pid: String = r.get(3)?;
                let version: String = r.get(5)?;
                Ok(LocalTask {
                    assignment: Assignment {
                        task_id: TaskId(r.get::<_, i64>(0)? as u64),
                        attempt: r.get(1)?,
                        kind: parse_enum(&r.get::<_, String>(2)?)?,
                        package_id: pid.parse::<PackageId>().map_err(|e| {
                            rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, Box::new(e))
                        })?,
                        package_name: r.get(4)?,
                        version: version.parse().map_err(|e| {
                            rusqlite::Error::FromSqlConversionFailure(5, rusqlite::types::Type::Text, Box::new(e))
                        })?,
                        size: r.get::<_, i64>(6)? as u64,
                        install_at_unix: r.get::<_, Option<i64>>(7)?.map(|t| t as u64),
                        rollback: r.get(8)?,
                        join_by_unix_ms: r.get::<_, Option<i64>>(18)?.map(|t| t as u64),
                        // Written by this node from a checked list; unreadable means none.
                        store_peers: serde_json::from_str(&r.get::<_, String>(20)?).unwrap_or_default(),
                        store_holders: serde_json::from_str(&r.get::<_, String>(21)?).unwrap_or_default(),
                        hold_install: r.get(22)?,
                        install_until_unix: r.get::<_, Option<i64>>(23)?.map(|t| t as u64),
                    },
                    state: parse_enum(&r.get::<_, String>(9)?)?,
                    bytes_done: r.get::<_, i64>(10)? as u64,
                    wan_bytes: r.get::<_, i64>(11)? as u64,
                    lan_bytes: r.get::<_, i64>(12)? as u64,
                    error: r.get(13)?,
                    log_tail: r.get(14)?,
                    declined_boot: r.get::<_, Option<i64>>(15)?.map(|b| b as u64),
                    asked_ms: r.get(16)?,
                    unreported: r.get(17)?,
                    change: r.get::<_, i64>(19)? as u64,
                })
            })?;
            rows.collect()
        })
    }

    /// One task.
    pub fn task(&self, id: TaskId) -> Result<Option<LocalTask>> {
        Ok(self
            .tasks()?
            .into_iter()
            .find(|t| t.assignment.task_id == id))
    }

    /// Moves a task to `state` (with optional error/log) and marks it unreported.
    pub fn set_state(
        &self,
        id: TaskId,
        state: TargetState,
        error: Option<&str>,
        log_tail: Option<&str>,
    ) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE tasks SET state = ?2, error = ?3, log_tail = coalesce(?4, log_tail), unreported = 1, change = change + 1
                 WHERE task_id = ?1",
                params![id.0 as i64, state.as_str(), error, log_tail],
            )
            .map(|_| ())
        })
    }

    /// Records download progress.
    pub fn set_progress(
        &self,
        id: TaskId,
        bytes_done: u64,
        wan_bytes: u64,
        lan_bytes: u64,
    ) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE tasks SET bytes_done = ?2, wan_bytes = ?3, lan_bytes = ?4, unreported = 1, change = change + 1 WHERE task_id = ?1",
                params![id.0 as i64, bytes_done as i64, wan_bytes as i64, lan_bytes as i64],
            )
            .map(|_| ())
        })
    }

    /// Records that the cashier was asked (first time only).
    pub fn set_asked(&self, id: TaskId, now_ms: i64) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE tasks SET asked_ms = coalesce(asked_ms, ?2) WHERE task_id = ?1",
                params![id.0 as i64, now_ms],
            )
            .map(|_| ())
        })
    }

    /// Records a decline at boot `boot`.
    pub fn set_declined(&self, id: TaskId, boot: u64) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE tasks SET state = 'declined', declined_boot = ?2, asked_ms = NULL, unreported = 1, change = change + 1
                 WHERE task_id = ?1",
                params![id.0 as i64, boot as i64],
            )
            .map(|_| ())
        })
    }

    /// Marks a task as reported, unless it changed again after the report's
    /// snapshot (`change`): then the newer state is still owed.
    pub fn mark_reported(&self, id: TaskId, change: u64) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE tasks SET unreported = 0 WHERE task_id = ?1 AND change = ?2",
                params![id.0 as i64, change as i64],
            )
            .map(|_| ())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment(id: u64, attempt: u32) -> Assignment {
        Assignment {
            task_id: TaskId(id),
            kind: TaskKind::Update,
            package_id: PackageId::of(b"p"),
            package_name: "demo".into(),
            version: "1.0".parse().expect("version"),
            size: 10,
            install_at_unix: None,
            rollback: false,
            attempt,
            join_by_unix_ms: None,
            store_peers: Vec::new(),
            store_holders: Vec::new(),
            hold_install: false,
            install_until_unix: None,
        }
    }

    #[test]
    fn survives_reopen_and_tracks_assignments() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = State::open(dir.path()).expect("open");
        assert_eq!(s.next_boot().expect("boot"), 1);
        assert_eq!(s.next_seq().expect("seq"), 1);
        s.init_version(Some(&"0.9".parse().expect("v")))
            .expect("init");
        assert_eq!(
            s.sync_assignments(&[assignment(1, 1), assignment(2, 1)])
                .expect("sync"),
            (vec![], vec![])
        );
        s.set_declined(TaskId(1), 1).expect("decline");
        drop(s);
        let s = State::open(dir.path()).expect("reopen");
        assert_eq!(s.next_boot().expect("boot"), 2);
        assert_eq!(s.next_seq().expect("seq"), 2);
        let t = s.task(TaskId(1)).expect("task").expect("present");
        assert_eq!(t.state, TargetState::Declined);
        assert_eq!(t.declined_boot, Some(1));
        // Task 2 dropped by the coordinator; task 1 restarted (attempt 2).
        let (gone, replaced) = s.sync_assignments(&[assignment(1, 2)]).expect("sync");
        assert_eq!((gone, replaced), (vec![TaskId(2)], vec![]));
        let t = s.task(TaskId(1)).expect("task").expect("present");
        assert_eq!(
            (t.state, t.assignment.attempt, t.declined_boot),
            (TargetState::Pending, 2, None)
        );
        s.set_installed(&"1.0".parse().expect("v"))
            .expect("installed");
        assert_eq!(
            s.previous_version().expect("prev").map(|v| v.to_string()),
            Some("0.9".into())
        );
    }

    #[test]
    fn a_reused_task_id_with_another_package_is_a_new_task() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = State::open(dir.path()).expect("open");
        // Task 19: an Update of 60.0.0, staged and declined by the cashier.
        let mut old = assignment(19, 1);
        old.kind = TaskKind::Update;
        old.version = "60.0.0".parse().expect("v");
        s.sync_assignments(&[old]).expect("sync");
        s.set_state(TaskId(19), TargetState::Downloaded, None, None)
            .expect("state");
        s.set_declined(TaskId(19), 1).expect("decline");
        // The coordinator hands id 19 to a Download of 61.0.0.
        let mut new = assignment(19, 1);
        new.kind = TaskKind::Download;
        new.version = "61.0.0".parse().expect("v");
        new.package_id = PackageId::of(b"61.0.0");
        let (gone, replaced) = s.sync_assignments(&[new.clone()]).expect("sync");
        assert_eq!((gone, replaced), (vec![], vec![TaskId(19)]));
        let t = s.task(TaskId(19)).expect("task").expect("present");
        assert_eq!(t.assignment, new, "the new task, not the old one");
        assert_eq!((t.state, t.declined_boot), (TargetState::Pending, None));
        // The same assignment again changes nothing.
        assert_eq!(s.sync_assignments(&[new]).expect("sync"), (vec![], vec![]));
    }

    #[test]
    fn a_database_from_before_migrations_is_upgraded_in_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            // The first release's schema, at user_version 0, with a task in it.
            let c = Connection::open(dir.path().join("node.sqlite3")).expect("open");
            c.execute_batch(MIGRATIONS[0]).expect("schema 1");
            c.execute(
                "INSERT INTO tasks (task_id, attempt, kind, package_id, name, version, size, rollback, state, wan_start)
                 VALUES (7, 1, 'download', ?1, 'demo', '1.0', 10, 0, 'downloading', 1234)",
                [PackageId::of(b"p").to_hex()],
            )
            .expect("row");
        }
        let s = State::open(dir.path()).expect("migrate");
        let t = s.task(TaskId(7)).expect("task").expect("kept");
        assert_eq!(t.state, TargetState::Downloading);
        assert_eq!(t.assignment.join_by_unix_ms, Some(1234));
        assert!(t.assignment.store_peers.is_empty());
        // Store peers round-trip, and reopening applies nothing twice.
        let mut a = assignment(8, 1);
        a.store_holders = vec![DeviceId::from_bytes([9; 16])];
        a.store_peers = vec![
            "6f1c2d3e-0000-4000-8000-000000000001"
                .parse()
                .expect("guid"),
        ];
        s.sync_assignments(&[a.clone()]).expect("sync");
        drop(s);
        let s = State::open(dir.path()).expect("reopen");
        let t = s.task(TaskId(8)).expect("task").expect("present");
        assert_eq!(t.assignment.store_peers, a.store_peers);
        assert_eq!(t.assignment.store_holders, a.store_holders);
    }

    #[test]
    fn a_database_from_a_newer_node_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let c = Connection::open(dir.path().join("node.sqlite3")).expect("open");
            c.pragma_update(None, "user_version", 99).expect("pragma");
        }
        let err = State::open(dir.path()).err().expect("refused").to_string();
        assert!(err.contains("newer node"), "{err}");
    }
}
