//! Per till type update settings (the seed's `update.conf` on the till server):
//! `autoUpdateTimeout` in minutes, or unset for "never ask, manual install only".
//! The row named `*` is the default for types without their own row.

use crate::db::sql::{Connection, OptionalExtension, Transaction, params};
use tillswarm_protocol::api::TillSettings;

use crate::error::{Error, Result};

/// Longest wait accepted: one week.
pub const MAX_TIMEOUT_MINUTES: u32 = 7 * 24 * 60;

pub use tillswarm_protocol::operator::till_types::{TillType, TillTypeInput};

/// Every till type, with the default first.
pub fn list(conn: &Connection) -> Result<Vec<TillType>> {
    let mut stmt = conn.prepare_cached(
        "SELECT name, auto_update_timeout_minutes,
                (SELECT count(*) FROM devices d WHERE d.till_type = t.name)
         FROM (SELECT name, auto_update_timeout_minutes FROM till_types
               UNION SELECT DISTINCT till_type, CAST(NULL AS BIGINT) FROM devices
               WHERE till_type IS NOT NULL AND till_type NOT IN (SELECT name FROM till_types)) t
         ORDER BY name <> '*', name",
    )?;
    let explicit: Vec<String> = conn
        .prepare_cached("SELECT name FROM till_types")?
        .query_map([], |r| r.get(0))?
        .collect::<crate::db::sql::Result<_>>()?;
    let default = settings_for(conn, None)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<u32>>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?
        .collect::<crate::db::sql::Result<Vec<_>>>()?;
    Ok(rows
        .into_iter()
        .map(|(name, minutes, tills)| TillType {
            // A type without its own row inherits the default.
            auto_update_timeout_minutes: if explicit.contains(&name) {
                minutes
            } else {
                default.auto_update_timeout_minutes
            },
            name,
            tills: tills as u64,
        })
        .collect())
}

/// Sets one type's settings and tells its tills.
pub fn set(tx: &Transaction<'_>, name: &str, input: &TillTypeInput) -> Result<()> {
    if name.is_empty() || name.len() > 64 {
        return Err(Error::bad(
            "invalid_till_type",
            "a till type name is 1 to 64 characters",
        ));
    }
    if input
        .auto_update_timeout_minutes
        .is_some_and(|m| m > MAX_TIMEOUT_MINUTES)
    {
        return Err(Error::bad(
            "invalid_till_type",
            format!(
                "auto_update_timeout_minutes is at most {MAX_TIMEOUT_MINUTES} (one week), or null for never"
            ),
        ));
    }
    tx.execute(
        "INSERT INTO till_types (name, auto_update_timeout_minutes) VALUES (?1, ?2)
         ON CONFLICT(name) DO UPDATE SET auto_update_timeout_minutes = ?2",
        params![name, input.auto_update_timeout_minutes],
    )?;
    if name == "*" {
        tx.execute("UPDATE devices SET assign_rev = assign_rev + 1", [])?;
    } else {
        tx.execute(
            "UPDATE devices SET assign_rev = assign_rev + 1 WHERE till_type = ?1",
            [name],
        )?;
    }
    Ok(())
}

/// The settings a till of `till_type` gets.
pub fn settings_for(conn: &Connection, till_type: Option<&str>) -> Result<TillSettings> {
    let mut stmt =
        conn.prepare_cached("SELECT auto_update_timeout_minutes FROM till_types WHERE name = ?1")?;
    if let Some(t) = till_type {
        if let Some(minutes) = stmt
            .query_row([t], |r| r.get::<_, Option<u32>>(0))
            .optional()?
        {
            return Ok(TillSettings {
                auto_update_timeout_minutes: minutes,
            });
        }
    }
    let minutes = stmt
        .query_row(["*"], |r| r.get::<_, Option<u32>>(0))
        .optional()?
        .flatten();
    Ok(TillSettings {
        auto_update_timeout_minutes: minutes,
    })
}
