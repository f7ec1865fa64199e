//! Groups of tills that tasks target. `All`, `Even` and `Odd` are built in and
//! computed from the registry at the moment they are read (always current);
//! custom groups list their members.

use std::collections::BTreeSet;

use crate::db::sql::{Connection, OptionalExtension, Transaction, params};
use tillswarm_protocol::DeviceId;

use crate::error::{Error, Result};

/// Longest group name.
pub const MAX_NAME: usize = 64;
/// Longest group description.
pub const MAX_DESCRIPTION: usize = 1024;
/// Most members a custom group may list.
pub const MAX_MEMBERS: usize = 100_000;

pub use tillswarm_protocol::operator::groups::{Group, GroupId, GroupInput, GroupKind};

/// The query listing a group's members (one column; a custom group's id is `?1`).
pub(crate) fn membership_sql(kind: &str) -> &'static str {
    match kind {
        "all" => "SELECT guid FROM devices WHERE approved = 1 ORDER BY guid",
        "even" => {
            "SELECT guid FROM devices WHERE approved = 1 AND number IS NOT NULL AND number % 2 = 0 ORDER BY guid"
        }
        "odd" => {
            "SELECT guid FROM devices WHERE approved = 1 AND number IS NOT NULL AND number % 2 = 1 ORDER BY guid"
        }
        _ => {
            "SELECT m.device FROM group_members m JOIN devices d ON d.guid = m.device
              WHERE m.group_id = ?1 ORDER BY m.device"
        }
    }
}

pub(crate) fn kind_of(conn: &Connection, id: i64) -> Result<String> {
    conn.query_row("SELECT kind FROM groups WHERE id = ?1", [id], |r| r.get(0))
        .optional()?
        .ok_or_else(|| Error::NotFound(format!("no group {id}")))
}

/// The group's members now.
pub fn members(conn: &Connection, id: i64) -> Result<Vec<DeviceId>> {
    let kind = kind_of(conn, id)?;
    let sql = membership_sql(&kind);
    let mut stmt = conn.prepare_cached(sql)?;
    let guids: Vec<String> = if kind == "custom" {
        stmt.query_map([id], |r| r.get(0))?
            .collect::<crate::db::sql::Result<_>>()?
    } else {
        stmt.query_map([], |r| r.get(0))?
            .collect::<crate::db::sql::Result<_>>()?
    };
    Ok(guids.iter().filter_map(|g| g.parse().ok()).collect())
}

fn count(conn: &Connection, id: i64, kind: &str) -> Result<u64> {
    let sql = format!("SELECT count(*) FROM ({}) m", membership_sql(kind));
    let n: i64 = if kind == "custom" {
        conn.query_row(&sql, [id], |r| r.get(0))?
    } else {
        conn.query_row(&sql, [], |r| r.get(0))?
    };
    Ok(n as u64)
}

/// Every group, built-ins first, with member counts.
pub fn list(conn: &Connection) -> Result<Vec<Group>> {
    let mut stmt =
        conn.prepare_cached("SELECT id, name, description, kind FROM groups ORDER BY id")?;
    let rows: Vec<(i64, String, String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<crate::db::sql::Result<_>>()?;
    rows.into_iter()
        .map(|(id, name, description, kind)| {
            let member_count = count(conn, id, &kind)?;
            let kind: GroupKind = kind.parse()?;
            Ok(Group {
                member_count,
                builtin: kind.is_builtin(),
                id: GroupId(id),
                name,
                description,
                kind,
                members: None,
            })
        })
        .collect()
}

/// One group with its members.
pub fn get(conn: &Connection, id: i64) -> Result<Group> {
    let (name, description, kind): (String, String, String) = conn
        .query_row(
            "SELECT name, description, kind FROM groups WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?
        .ok_or_else(|| Error::NotFound(format!("no group {id}")))?;
    let members = members(conn, id)?;
    let kind: GroupKind = kind.parse()?;
    Ok(Group {
        id: GroupId(id),
        name,
        description,
        builtin: kind.is_builtin(),
        kind,
        member_count: members.len() as u64,
        members: Some(members),
    })
}

fn check_name(name: &str) -> Result<()> {
    let trimmed = name.trim();
    if trimmed.is_empty()
        || trimmed.len() > MAX_NAME
        || trimmed.len() != name.len()
        || name.chars().any(char::is_control)
    {
        return Err(Error::bad(
            "invalid_group",
            format!(
                "a group name is 1 to {MAX_NAME} characters without leading or trailing spaces"
            ),
        ));
    }
    Ok(())
}

fn check_members(tx: &Transaction<'_>, members: &[DeviceId]) -> Result<BTreeSet<DeviceId>> {
    if members.len() > MAX_MEMBERS {
        return Err(Error::bad(
            "invalid_group",
            format!("a group holds at most {MAX_MEMBERS} tills"),
        ));
    }
    let unique: BTreeSet<DeviceId> = members.iter().copied().collect();
    let mut stmt = tx.prepare_cached("SELECT 1 FROM devices WHERE guid = ?1")?;
    let unknown: Vec<String> = unique
        .iter()
        .filter(|g| !stmt.exists([g.to_string()]).unwrap_or(false))
        .take(10)
        .map(|g| g.to_string())
        .collect();
    if !unknown.is_empty() {
        return Err(Error::bad(
            "unknown_device",
            format!("unknown devices: {}", unknown.join(", ")),
        ));
    }
    Ok(unique)
}

fn insert_members(tx: &Transaction<'_>, id: i64, members: &BTreeSet<DeviceId>) -> Result<()> {
    tx.execute("DELETE FROM group_members WHERE group_id = ?1", [id])?;
    let mut stmt =
        tx.prepare_cached("INSERT INTO group_members (group_id, device) VALUES (?1, ?2)")?;
    for m in members {
        stmt.execute(params![id, m.to_string()])?;
    }
    Ok(())
}

fn name_taken(e: crate::db::sql::Error, name: &str) -> Error {
    match e {
        e if e.is_constraint_violation() => Error::conflict(
            "group_exists",
            format!("a group named {name:?} already exists"),
        ),
        other => other.into(),
    }
}

/// Creates a custom group and returns its id.
pub fn create(tx: &Transaction<'_>, input: &GroupInput, now_ms: i64) -> Result<i64> {
    let name = input
        .name
        .as_deref()
        .ok_or_else(|| Error::bad("invalid_group", "a group needs a name"))?;
    check_name(name)?;
    let description = input.description.clone().unwrap_or_default();
    if description.len() > MAX_DESCRIPTION {
        return Err(Error::bad(
            "invalid_group",
            format!("a description is at most {MAX_DESCRIPTION} bytes"),
        ));
    }
    let members = check_members(tx, input.members.as_deref().unwrap_or(&[]))?;
    let id: i64 = tx
        .query_row(
            "INSERT INTO groups (name, description, kind, created_ms) VALUES (?1, ?2, 'custom', ?3)
             RETURNING id",
            params![name, description, now_ms],
            |r| r.get(0),
        )
        .map_err(|e| name_taken(e, name))?;
    insert_members(tx, id, &members)?;
    Ok(id)
}

fn require_custom(tx: &Transaction<'_>, id: i64) -> Result<()> {
    let kind = kind_of(tx, id)?;
    if kind != "custom" {
        return Err(Error::conflict(
            "builtin_group",
            "built-in groups (All, Even, Odd) cannot be edited or deleted",
        ));
    }
    Ok(())
}

/// Edits a custom group.
pub fn update(tx: &Transaction<'_>, id: i64, input: &GroupInput) -> Result<()> {
    require_custom(tx, id)?;
    if let Some(name) = &input.name {
        check_name(name)?;
        tx.execute(
            "UPDATE groups SET name = ?1 WHERE id = ?2",
            params![name, id],
        )
        .map_err(|e| name_taken(e, name))?;
    }
    if let Some(description) = &input.description {
        if description.len() > MAX_DESCRIPTION {
            return Err(Error::bad(
                "invalid_group",
                format!("a description is at most {MAX_DESCRIPTION} bytes"),
            ));
        }
        tx.execute(
            "UPDATE groups SET description = ?1 WHERE id = ?2",
            params![description, id],
        )?;
    }
    if let Some(members) = &input.members {
        let members = check_members(tx, members)?;
        insert_members(tx, id, &members)?;
    }
    Ok(())
}

/// Deletes a custom group (tasks that used it keep its name for display).
pub fn delete(tx: &Transaction<'_>, id: i64) -> Result<()> {
    require_custom(tx, id)?;
    tx.execute("DELETE FROM groups WHERE id = ?1", [id])?;
    Ok(())
}

/// Creates a custom group from the tills of task `task_id` in one of `states`
/// (by default the failed ones) and returns its id.
pub fn from_task(
    tx: &Transaction<'_>,
    task_id: i64,
    states: &[String],
    input: &GroupInput,
    now_ms: i64,
) -> Result<i64> {
    for state in states {
        let known = serde_json::from_value::<tillswarm_protocol::api::TargetState>(
            serde_json::Value::String(state.clone()),
        )
        .is_ok();
        if !known {
            return Err(Error::bad(
                "invalid_state",
                format!("{state:?} is not a target state (e.g. failed, declined, pending)"),
            ));
        }
    }
    let exists = tx
        .prepare_cached("SELECT 1 FROM tasks WHERE id = ?1")?
        .exists([task_id])?;
    if !exists {
        return Err(Error::NotFound(format!("no task {task_id}")));
    }
    let mut members = Vec::new();
    let mut stmt =
        tx.prepare_cached("SELECT device, state FROM task_targets WHERE task_id = ?1")?;
    let rows = stmt.query_map([task_id], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    for row in rows {
        let (device, state) = row?;
        if states.iter().any(|s| s == &state) {
            if let Ok(d) = device.parse() {
                members.push(d);
            }
        }
    }
    if members.is_empty() {
        return Err(Error::conflict(
            "no_matching_tills",
            format!(
                "task {task_id} has no tills in state {}",
                states.join(" or ")
            ),
        ));
    }
    let input = GroupInput {
        members: Some(members),
        ..input.clone()
    };
    create(tx, &input, now_ms)
}
