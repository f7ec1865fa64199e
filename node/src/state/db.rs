//! The state's SQL, run on the state's own thread (see [`super::State`]):
//! plain functions over the one connection, each one short transaction.

use rusqlite::{Connection, OptionalExtension, params};
use tillswarm_protocol::api::{Assignment, TargetState, TillSettings};
use tillswarm_protocol::trust::{StoreMember, TrustState};
use tillswarm_protocol::{PackageId, TaskId, Version};

use super::{LocalTask, kind_str, parse_enum, peers_json};
use crate::error::{Error, Result};

fn get_kv(c: &Connection, key: &str) -> Result<Option<String>> {
    Ok(
        c.query_row("SELECT value FROM kv WHERE key = ?1", [key], |r| r.get(0))
            .optional()?,
    )
}

fn set_kv(c: &Connection, key: &str, value: &str) -> Result<()> {
    c.execute(
        "INSERT INTO kv (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = ?2",
        params![key, value],
    )?;
    Ok(())
}

fn get_json<T: serde::de::DeserializeOwned>(c: &Connection, key: &str) -> Result<Option<T>> {
    Ok(get_kv(c, key)?.and_then(|v| serde_json::from_str(&v).ok()))
}

fn set_json<T: serde::Serialize + ?Sized>(c: &Connection, key: &str, value: &T) -> Result<()> {
    let text = serde_json::to_string(value).map_err(|e| Error::Io(std::io::Error::other(e)))?;
    set_kv(c, key, &text)
}

pub(super) fn next_boot(c: &mut Connection) -> Result<u64> {
    let tx = c.transaction()?;
    let boot = get_kv(&tx, "boot")?
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        + 1;
    set_kv(&tx, "boot", &boot.to_string())?;
    tx.commit()?;
    Ok(boot)
}

pub(super) fn next_seq(c: &mut Connection) -> Result<u64> {
    let tx = c.transaction()?;
    let seq = tx
        .query_row("SELECT value FROM kv WHERE key = 'seq'", [], |r| {
            r.get::<_, String>(0)
        })
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
}

pub(super) fn trust(c: &mut Connection) -> Result<Option<TrustState>> {
    get_json(c, "trust")
}

pub(super) fn set_trust(c: &mut Connection, trust: &TrustState) -> Result<()> {
    set_json(c, "trust", trust)
}

pub(super) fn settings(c: &mut Connection) -> Result<TillSettings> {
    Ok(get_json(c, "settings")?.unwrap_or_default())
}

pub(super) fn set_settings(c: &mut Connection, settings: &TillSettings) -> Result<()> {
    set_json(c, "settings", settings)
}

pub(super) fn store_members(c: &mut Connection) -> Result<Vec<StoreMember>> {
    Ok(get_json(c, "store_members")?.unwrap_or_default())
}

pub(super) fn set_store_members(c: &mut Connection, members: &[StoreMember]) -> Result<()> {
    set_json(c, "store_members", members)
}

pub(super) fn chunk_base_url(c: &mut Connection) -> Result<Option<String>> {
    Ok(get_json::<Option<String>>(c, "chunk_base_url")?.flatten())
}

pub(super) fn set_chunk_base_url(c: &mut Connection, url: Option<&str>) -> Result<()> {
    set_json(c, "chunk_base_url", &url)
}

pub(super) fn installed_version(c: &mut Connection) -> Result<Option<Version>> {
    Ok(get_kv(c, "installed_version")?.and_then(|v| v.parse().ok()))
}

pub(super) fn previous_version(c: &mut Connection) -> Result<Option<Version>> {
    Ok(get_kv(c, "previous_version")?.and_then(|v| v.parse().ok()))
}

pub(super) fn set_installed(c: &mut Connection, version: &Version) -> Result<()> {
    let tx = c.transaction()?;
    let old: Option<Version> = get_kv(&tx, "installed_version")?.and_then(|v| v.parse().ok());
    if let Some(old) = old.filter(|old| old != version) {
        set_kv(&tx, "previous_version", old.as_str())?;
    }
    set_kv(&tx, "installed_version", version.as_str())?;
    tx.commit()?;
    Ok(())
}

pub(super) fn init_version(c: &mut Connection, version: Option<&Version>) -> Result<()> {
    if let (None, Some(v)) = (installed_version(c)?, version) {
        set_kv(c, "installed_version", v.as_str())?;
    }
    Ok(())
}

pub(super) fn sync_assignments(
    c: &mut Connection,
    assignments: &[Assignment],
) -> Result<(Vec<TaskId>, Vec<TaskId>)> {
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
    let all: Vec<i64> = stmt
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    drop(stmt);
    let gone: Vec<TaskId> = all
        .into_iter()
        .filter(|id| !listed.contains(id))
        .map(|id| TaskId(id as u64))
        .collect();
    tx.commit()?;
    Ok((gone, replaced))
}

pub(super) fn offer_drop_in(
    c: &mut Connection,
    version: &Version,
    package_id: &PackageId,
) -> Result<bool> {
    let tx = c.transaction()?;
    let current: Option<(String, String)> = tx
        .query_row(
            "SELECT version, state FROM tasks WHERE task_id = 0",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
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
}

pub(super) fn remove_task(c: &mut Connection, id: TaskId) -> Result<()> {
    c.execute("DELETE FROM tasks WHERE task_id = ?1", [id.0 as i64])?;
    Ok(())
}

pub(super) fn tasks(c: &mut Connection) -> Result<Vec<LocalTask>> {
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
                    rusqlite::Error::FromSqlConversionFailure(
                        3,
                        rusqlite::types::Type::Text,
                        Box::new(e),
                    )
                })?,
                package_name: r.get(4)?,
                version: version.parse().map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(
                        5,
                        rusqlite::types::Type::Text,
                        Box::new(e),
                    )
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
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub(super) fn set_state(
    c: &mut Connection,
    id: TaskId,
    state: TargetState,
    error: Option<&str>,
    log_tail: Option<&str>,
) -> Result<()> {
    c.execute(
        "UPDATE tasks SET state = ?2, error = ?3, log_tail = coalesce(?4, log_tail), unreported = 1, change = change + 1
         WHERE task_id = ?1",
        params![id.0 as i64, state.as_str(), error, log_tail],
    )?;
    Ok(())
}

pub(super) fn set_progress(
    c: &mut Connection,
    id: TaskId,
    bytes_done: u64,
    wan_bytes: u64,
    lan_bytes: u64,
) -> Result<()> {
    c.execute(
        "UPDATE tasks SET bytes_done = ?2, wan_bytes = ?3, lan_bytes = ?4, unreported = 1, change = change + 1 WHERE task_id = ?1",
        params![id.0 as i64, bytes_done as i64, wan_bytes as i64, lan_bytes as i64],
    )?;
    Ok(())
}

pub(super) fn set_asked(c: &mut Connection, id: TaskId, now_ms: i64) -> Result<()> {
    c.execute(
        "UPDATE tasks SET asked_ms = coalesce(asked_ms, ?2) WHERE task_id = ?1",
        params![id.0 as i64, now_ms],
    )?;
    Ok(())
}

pub(super) fn set_declined(c: &mut Connection, id: TaskId, boot: u64) -> Result<()> {
    c.execute(
        "UPDATE tasks SET state = 'declined', declined_boot = ?2, asked_ms = NULL, unreported = 1, change = change + 1
         WHERE task_id = ?1",
        params![id.0 as i64, boot as i64],
    )?;
    Ok(())
}

pub(super) fn mark_reported(c: &mut Connection, id: TaskId, change: u64) -> Result<()> {
    c.execute(
        "UPDATE tasks SET unreported = 0 WHERE task_id = ?1 AND change = ?2",
        params![id.0 as i64, change as i64],
    )?;
    Ok(())
}
