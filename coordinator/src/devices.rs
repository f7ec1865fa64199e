//! Devices (tills) and stores: the registry imported from the stores' till servers,
//! and what each till reports about itself.
//!
//! A till the registry does not list appears as *pending* on its first heartbeat
//! and gets no assignments until an operator approves it (or a registry import
//! lists it).

use std::collections::HashSet;

use crate::db::sql::{Connection, OptionalExtension, Row, Transaction, params};
use serde::Deserialize;
use tillswarm_protocol::DeviceId;
use tillswarm_protocol::api::HeartbeatRequest;
use tillswarm_protocol::trust::{MAX_STORE_MEMBERS, StoreMember};

use crate::clock::rfc3339;
use crate::db::{get_parsed, get_parsed_opt};
use crate::error::{Error, Result};

pub mod history;
pub mod quiet;
pub mod refresh;

/// Most rows in one registry import.
pub const MAX_IMPORT_ROWS: usize = 100_000;
/// Longest free-text registry field (names, addresses).
const MAX_TEXT: usize = 256;

pub use tillswarm_protocol::operator::devices::{
    Device, DeviceStatus, ImportSummary, RegistryEntry, ShownState, Store, VersionFlag,
};

/// A till not heard from for this long shows as offline.
pub const ONLINE_WINDOW_MS: i64 = 120_000;

/// Parses a registry file: JSON (an array of entries) or CSV with a header row
/// naming the [`RegistryEntry`] fields.
pub fn parse_registry(bytes: &[u8], is_json: bool) -> Result<Vec<RegistryEntry>> {
    let entries: Vec<RegistryEntry> = if is_json {
        let rows: Vec<serde_json::Value> = serde_json::from_slice(bytes).map_err(|e| {
            Error::bad(
                "invalid_registry",
                format!("registry JSON must be an array of objects: {e}"),
            )
        })?;
        if rows.len() > MAX_IMPORT_ROWS {
            return Err(too_many());
        }
        rows.into_iter()
            .enumerate()
            .map(|(i, row)| {
                // serde would also take a row's fields as a positional array.
                if !row.is_object() {
                    return Err(Error::bad(
                        "invalid_registry",
                        format!("registry entry {} is not an object", i + 1),
                    ));
                }
                serde_json::from_value(row).map_err(|e| {
                    Error::bad("invalid_registry", format!("registry entry {}: {e}", i + 1))
                })
            })
            .collect::<Result<_>>()?
    } else {
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_reader(bytes);
        // The header names the columns even when no till follows it.
        let header = reader
            .headers()
            .map_err(|e| Error::bad("invalid_registry", format!("registry CSV header: {e}")))?;
        let missing: Vec<&str> = REQUIRED_CSV_COLUMNS
            .iter()
            .copied()
            .filter(|c| !header.iter().any(|h| h == *c))
            .collect();
        if !missing.is_empty() {
            return Err(Error::bad(
                "invalid_registry",
                format!(
                    "the registry CSV's header row lacks {}; it must name {}",
                    missing.join(", "),
                    REQUIRED_CSV_COLUMNS.join(", ")
                ),
            ));
        }
        let mut out = Vec::new();
        for (i, row) in reader.deserialize().enumerate() {
            if out.len() == MAX_IMPORT_ROWS {
                return Err(too_many());
            }
            out.push(row.map_err(|e| {
                Error::bad(
                    "invalid_registry",
                    format!("registry CSV row {}: {e}", i + 2),
                )
            })?);
        }
        out
    };
    if entries.len() > MAX_IMPORT_ROWS {
        return Err(too_many());
    }
    validate_entries(&entries)?;
    Ok(entries)
}

/// Columns a registry CSV must have (the others have defaults).
const REQUIRED_CSV_COLUMNS: [&str; 5] =
    ["guid", "till_name", "till_number", "store_id", "store_name"];

fn too_many() -> Error {
    Error::bad(
        "invalid_registry",
        format!("a registry import holds at most {MAX_IMPORT_ROWS} tills"),
    )
}

fn validate_entries(entries: &[RegistryEntry]) -> Result<()> {
    let mut guids = HashSet::new();
    let mut numbers = HashSet::new();
    for (i, e) in entries.iter().enumerate() {
        let row = i + 1;
        if !guids.insert(e.guid) {
            return Err(Error::bad(
                "invalid_registry",
                format!("entry {row}: GUID {} is listed twice", e.guid),
            ));
        }
        if !numbers.insert((e.store_id.clone(), e.till_number)) {
            return Err(Error::bad(
                "invalid_registry",
                format!(
                    "entry {row}: store {} has two tills numbered {}",
                    e.store_id, e.till_number
                ),
            ));
        }
        for (field, value) in [
            ("till_name", &e.till_name),
            ("store_name", &e.store_name),
            ("store_address", &e.store_address),
            ("till_type", &e.till_type),
            ("time_zone", &e.time_zone),
        ] {
            if value.len() > MAX_TEXT {
                return Err(Error::bad(
                    "invalid_registry",
                    format!("entry {row}: {field} is over {MAX_TEXT} bytes"),
                ));
            }
        }
        if e.till_name.is_empty() || e.store_name.is_empty() || e.till_type.is_empty() {
            return Err(Error::bad(
                "invalid_registry",
                format!("entry {row}: till_name, store_name and till_type are required"),
            ));
        }
        // Maintenance windows are evaluated in this zone: it must be a real one.
        if !e.time_zone.trim().is_empty() && jiff::tz::TimeZone::get(e.time_zone.trim()).is_err() {
            return Err(Error::bad(
                "invalid_registry",
                format!(
                    "entry {row}: time_zone {:?} is not an IANA time zone (like Europe/Moscow; empty: the coordinator's default)",
                    e.time_zone
                ),
            ));
        }
    }
    Ok(())
}

/// Writes registry entries: stores upserted, tills added or updated and approved.
pub fn import(
    tx: &Transaction<'_>,
    entries: &[RegistryEntry],
    now_ms: i64,
) -> Result<ImportSummary> {
    let mut summary = ImportSummary {
        rows: entries.len(),
        ..Default::default()
    };
    let mut stores = HashSet::new();
    for e in entries {
        if stores.insert(e.store_id.clone()) {
            tx.execute(
                "INSERT INTO stores (id, name, address, time_zone) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(id) DO UPDATE SET name = ?2, address = ?3, time_zone = ?4",
                params![
                    e.store_id.as_str(),
                    e.store_name,
                    e.store_address,
                    e.time_zone
                ],
            )?;
        }
        // Another till may hold this number in this store from an older import.
        tx.execute(
            "UPDATE devices SET number = NULL WHERE store_id = ?1 AND number = ?2 AND guid <> ?3",
            params![e.store_id.as_str(), e.till_number, e.guid.to_string()],
        )?;
        let existed: bool = tx
            .query_row(
                "SELECT 1 FROM devices WHERE guid = ?1",
                [e.guid.to_string()],
                |_| Ok(true),
            )
            .optional()?
            .is_some();
        tx.execute(
            "INSERT INTO devices (guid, name, number, store_id, till_type, in_registry, approved, first_seen_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, 1, 1, NULL)
             ON CONFLICT(guid) DO UPDATE SET name = ?2, number = ?3, store_id = ?4, till_type = ?5,
                 in_registry = 1, approved = 1, assign_rev = devices.assign_rev + 1",
            params![e.guid.to_string(), e.till_name, e.till_number, e.store_id.as_str(), e.till_type],
        )?;
        if existed {
            summary.devices_updated += 1;
        } else {
            summary.devices_added += 1;
        }
    }
    summary.stores = stores.len();
    // Tills may have moved between stores: every store's member list changes.
    for store in &stores {
        tx.execute(
            "UPDATE devices SET assign_rev = assign_rev + 1 WHERE store_id = ?1",
            [store.as_str()],
        )?;
    }
    let _ = now_ms;
    Ok(summary)
}

/// What a heartbeat needs to know about the till after recording it.
#[derive(Debug, Clone)]
pub struct HeartbeatOutcome {
    /// Current assignment revision.
    pub assign_rev: u64,
    /// Till type, for settings.
    pub till_type: Option<String>,
    /// Whether the till's state or version changed (or it was never seen
    /// before): the panel's live stream hears of it.
    pub changed: bool,
}

/// Records a heartbeat of a known till (its device token was checked).
pub fn record_heartbeat(
    tx: &Transaction<'_>,
    req: &HeartbeatRequest,
    seen_ip: Option<String>,
    now_ms: i64,
) -> Result<HeartbeatOutcome> {
    let refresh::Columns {
        version,
        version_key,
        state,
        ip,
        free_disk,
        warnings,
        swarm_addrs,
    } = refresh::Columns::of(req, seen_ip);
    // Above every published package: a till cannot run what was never
    // published, so the claim is flagged and not used to skip the till.
    let newest: Option<String> = tx
        .prepare_cached("SELECT max(version_key) FROM packages")?
        .query_row([], |r| r.get(0))?;
    let flag = match (&version_key, newest) {
        (Some(v), Some(newest)) if *v > newest => Some("unknown_version"),
        _ => None,
    };
    type Known = (Option<String>, Option<String>, Option<String>);
    let mut seen_state: Option<(Option<String>, Option<i64>)> = None;
    let known: Option<Known> = tx
        .prepare_cached(
            "SELECT peer_id, version, swarm_addrs, state, last_seen_ms FROM devices WHERE guid = ?1",
        )?
        .query_row([req.device_id.to_string()], |r| {
            seen_state = Some((r.get(3)?, r.get(4)?));
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    let changed = match (&known, &seen_state) {
        (Some((_, before, _)), Some((before_state, last_seen))) => {
            *before != version || *before_state != state || last_seen.is_none()
        }
        _ => true,
    };
    if let (Some((_, before, _)), Some(now)) = (&known, &version) {
        if before.as_ref() != Some(now) {
            history::note_version(tx, &req.device_id, now, now_ms)?;
        }
    }
    if known.is_some_and(|(p, _, a)| p != req.peer_id || a != swarm_addrs) {
        // The till's peer id or swarm addresses join (or change in) its
        // store's signed member list: every till of the store gets new
        // instructions.
        bump_store_of(tx, &req.device_id)?;
    }
    let (assign_rev, till_type) = tx
        .prepare_cached(
            "UPDATE devices SET version = ?2, version_key = ?3, state = ?4, ip = ?5,
                 peer_id = ?6, free_disk = ?7, last_seen_ms = ?8,
                 first_seen_ms = coalesce(first_seen_ms, ?8), version_flag = ?9, warnings = ?10,
                 swarm_addrs = ?11, connected_peers = ?12
             WHERE guid = ?1
             RETURNING assign_rev, till_type",
        )?
        .query_row(
            params![
                req.device_id.to_string(),
                version,
                version_key,
                state,
                ip,
                req.peer_id,
                free_disk,
                now_ms,
                flag,
                warnings,
                swarm_addrs,
                req.connected_peers
            ],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Option<String>>(1)?)),
        )
        .optional()?
        .ok_or_else(|| Error::NotFound(format!("no device {}", req.device_id)))?;
    Ok(HeartbeatOutcome {
        assign_rev: assign_rev as u64,
        till_type,
        changed,
    })
}

/// Approves a pending till.
pub fn approve(tx: &Transaction<'_>, guid: &DeviceId) -> Result<()> {
    let n = tx.execute(
        "UPDATE devices SET approved = 1, assign_rev = assign_rev + 1 WHERE guid = ?1",
        [guid.to_string()],
    )?;
    if n == 0 {
        return Err(Error::NotFound(format!("no device {guid}")));
    }
    Ok(())
}

/// Remembers `base` as the chunk base URL tills are told; when it differs
/// from the one remembered, moves every till's instructions on, so each
/// learns it at its next poll. Returns whether it changed.
pub fn note_chunk_base_url(tx: &Transaction<'_>, base: Option<&str>) -> Result<bool> {
    let before: Option<Option<String>> = tx
        .query_row(
            "SELECT value FROM settings WHERE key = 'chunk_base_url'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if before.as_ref().map(|b| b.as_deref()) == Some(base) {
        return Ok(false);
    }
    tx.execute(
        "INSERT INTO settings (key, value) VALUES ('chunk_base_url', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [base],
    )?;
    // A fresh database (nothing remembered, no base) has nothing to announce.
    if before.is_none() && base.is_none() {
        return Ok(false);
    }
    tx.execute("UPDATE devices SET assign_rev = assign_rev + 1", [])?;
    Ok(true)
}

/// Moves the instructions of every till in `guid`'s store on, so each gets
/// the store's new member list.
pub fn bump_store_of(tx: &Transaction<'_>, guid: &DeviceId) -> Result<()> {
    tx.prepare_cached(
        "UPDATE devices SET assign_rev = assign_rev + 1
         WHERE store_id = (SELECT store_id FROM devices WHERE guid = ?1)",
    )?
    .execute([guid.to_string()])?;
    Ok(())
}

/// The tills of `guid`'s store that may share chunks with it: approved, with
/// a peer id reported over their own authenticated heartbeats.
pub fn store_members(tx: &Transaction<'_>, guid: &DeviceId) -> Result<Vec<StoreMember>> {
    let mut stmt = tx.prepare_cached(
        "SELECT guid, peer_id, swarm_addrs FROM devices
         WHERE store_id = (SELECT store_id FROM devices WHERE guid = ?1)
           AND approved = 1 AND peer_id IS NOT NULL
         ORDER BY guid LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![guid.to_string(), MAX_STORE_MEMBERS as i64], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<String>>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (device, peer_id, addrs) = row?;
        // Checked when reported; an unreadable value names no address.
        let addrs = addrs
            .and_then(|a| serde_json::from_str(&a).ok())
            .unwrap_or_default();
        if let Ok(device) = device.parse() {
            out.push(StoreMember {
                device,
                peer_id,
                addrs,
            });
        }
    }
    Ok(out)
}

/// Removes a till (decommissioned); its task targets go with it.
pub fn delete(tx: &Transaction<'_>, guid: &DeviceId) -> Result<()> {
    bump_store_of(tx, guid)?;
    let n = tx.execute("DELETE FROM devices WHERE guid = ?1", [guid.to_string()])?;
    if n == 0 {
        return Err(Error::NotFound(format!("no device {guid}")));
    }
    Ok(())
}

/// A device's state as shown: what its heartbeat said, except that an idle
/// till whose last install failed reads `install_failed` until an install
/// succeeds.
macro_rules! state_sql {
    () => {
        "CASE WHEN d.install_failed_ms IS NOT NULL AND coalesce(d.state, 'ready') = 'ready'
            THEN 'install_failed' ELSE d.state END"
    };
}

const DEVICE_SELECT: &str = concat!(
    "SELECT d.guid, d.name, d.number, d.store_id, s.name, s.address, d.till_type,
        d.approved, d.in_registry, d.version, ",
    state_sql!(),
    ", d.ip, d.peer_id, d.free_disk, d.last_seen_ms,
        d.version_flag, d.warnings, d.public_key, d.key_bound_ms, d.swarm_addrs,
        d.connected_peers
     FROM devices d LEFT JOIN stores s ON s.id = d.store_id"
);

fn device_from_row(r: &Row<'_>, now_ms: i64) -> crate::db::sql::Result<Device> {
    let guid: String = r.get(0)?;
    let last_seen: Option<i64> = r.get(14)?;
    Ok(Device {
        guid: guid
            .parse()
            .map_err(|e| crate::db::sql::Error::ToSqlConversionFailure(Box::new(e)))?,
        name: r.get(1)?,
        number: r.get(2)?,
        store_id: get_parsed_opt(r, 3)?,
        store_name: r.get(4)?,
        store_address: r.get(5)?,
        till_type: r.get(6)?,
        status: if r.get::<_, bool>(7)? {
            DeviceStatus::Approved
        } else {
            DeviceStatus::Pending
        },
        in_registry: r.get(8)?,
        version: r.get(9)?,
        version_flag: get_parsed_opt(r, 15)?,
        warnings: serde_json::from_str(&r.get::<_, String>(16)?).unwrap_or_default(),
        state: get_parsed_opt(r, 10)?,
        ip: r.get(11)?,
        peer_id: r.get(12)?,
        swarm_addrs: r
            .get::<_, Option<String>>(19)?
            .and_then(|a| serde_json::from_str(&a).ok())
            .unwrap_or_default(),
        connected_peers: r.get(20)?,
        free_disk_bytes: r.get::<_, Option<i64>>(13)?.map(|b| b.max(0) as u64),
        online: last_seen.is_some_and(|t| now_ms - t <= ONLINE_WINDOW_MS),
        last_seen: last_seen.map(rfc3339),
        public_key: r.get(17)?,
        key_bound_at: r.get::<_, Option<i64>>(18)?.map(rfc3339),
    })
}

/// Filters for listing devices.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DeviceFilter {
    /// Only this store.
    pub store: Option<String>,
    /// `approved` or `pending`.
    pub status: Option<String>,
    /// Only online (true) or offline (false) tills.
    pub online: Option<bool>,
    /// Only tills in this state (as shown: `install_failed` included).
    pub state: Option<String>,
}

/// One page of devices, ordered by store and till number, and the total count.
pub fn list(
    conn: &Connection,
    filter: &DeviceFilter,
    offset: u64,
    limit: u64,
    now_ms: i64,
) -> Result<(Vec<Device>, u64)> {
    let approved = match filter.status.as_deref() {
        None => None,
        Some("approved") => Some(true),
        Some("pending") => Some(false),
        Some(other) => {
            return Err(Error::bad(
                "invalid_filter",
                format!("status must be approved or pending, not {other:?}"),
            ));
        }
    };
    let cutoff = now_ms - ONLINE_WINDOW_MS;
    if let Some(state) = filter.state.as_deref() {
        if state.parse::<ShownState>().is_err() {
            let names: Vec<&str> = ShownState::ALL.iter().map(|s| s.as_str()).collect();
            return Err(Error::bad(
                "invalid_filter",
                format!("state must be one of {}", names.join(", ")),
            ));
        }
    }
    let cond = concat!(
        "WHERE (d.store_id = ?1 OR ?1 IS NULL) AND (d.approved = ?2 OR ?2 IS NULL)
        AND ((coalesce(d.last_seen_ms, -1) >= ?4) = ?3 OR ?3 IS NULL)
        AND ((",
        state_sql!(),
        ") = ?5 OR ?5 IS NULL)"
    );
    let args = params![filter.store, approved, filter.online, cutoff, filter.state];
    let total: i64 = conn.query_row(
        &format!("SELECT count(*) FROM devices d {cond}"),
        args,
        |r| r.get(0),
    )?;
    let sql = format!(
        "{DEVICE_SELECT} {cond} ORDER BY d.store_id IS NULL, d.store_id, d.number, d.guid LIMIT ?6 OFFSET ?7"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt
        .query_map(
            params![
                filter.store,
                approved,
                filter.online,
                cutoff,
                filter.state,
                limit as i64,
                offset as i64
            ],
            |r| device_from_row(r, now_ms),
        )?
        .collect::<crate::db::sql::Result<Vec<_>>>()?;
    Ok((rows, total as u64))
}

/// One device.
pub fn get(conn: &Connection, guid: &DeviceId, now_ms: i64) -> Result<Device> {
    conn.query_row(
        &format!("{DEVICE_SELECT} WHERE d.guid = ?1"),
        [guid.to_string()],
        |r| device_from_row(r, now_ms),
    )
    .optional()?
    .ok_or_else(|| Error::NotFound(format!("no device {guid}")))
}

/// Every store with its till counts.
pub fn stores(conn: &Connection, now_ms: i64) -> Result<Vec<Store>> {
    let mut stmt = conn.prepare_cached(
        "SELECT s.id, s.name, s.address, s.time_zone,
                count(d.guid), count(d.guid) FILTER (WHERE d.last_seen_ms >= ?1)
         FROM stores s LEFT JOIN devices d ON d.store_id = s.id
         GROUP BY s.id ORDER BY s.id",
    )?;
    let rows = stmt
        .query_map([now_ms - ONLINE_WINDOW_MS], |r| {
            Ok(Store {
                id: get_parsed(r, 0)?,
                name: r.get(1)?,
                address: r.get(2)?,
                time_zone: r.get(3)?,
                tills: r.get(4)?,
                online: r.get(5)?,
            })
        })?
        .collect::<crate::db::sql::Result<Vec<_>>>()?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use tillswarm_protocol::api::DeviceState;

    use super::*;

    const A: &str = "71110000-0000-0000-0000-000000000001";
    const B: &str = "71110000-0000-0000-0000-000000000002";

    fn beat(conn: &mut Connection, guid: &str, addrs: &[&str]) {
        let req = HeartbeatRequest {
            device_id: guid.parse().expect("guid"),
            version: None,
            state: DeviceState::Ready,
            ip: None,
            peer_id: Some(format!("peer-{guid}")),
            free_disk_bytes: None,
            known_revision: None,
            warnings: Vec::new(),
            swarm_addrs: addrs.iter().map(|a| a.parse().expect("addr")).collect(),
            connected_peers: None,
        };
        let tx = conn.transaction().expect("tx");
        record_heartbeat(&tx, &req, None, 0).expect("heartbeat");
        tx.commit().expect("commit");
    }

    fn revision(conn: &Connection, guid: &str) -> i64 {
        conn.query_row(
            "SELECT assign_rev FROM devices WHERE guid = ?1",
            [guid],
            |r| r.get(0),
        )
        .expect("revision")
    }

    #[test]
    fn a_tills_swarm_addresses_reach_its_store_and_a_change_renews_their_lists() {
        let mut conn = crate::db::test_connection();
        conn.execute_batch(&format!(
            "INSERT INTO stores (id, name) VALUES ('s', 'S');
             INSERT INTO devices (guid, store_id, approved) VALUES ('{A}', 's', 1), ('{B}', 's', 1);"
        ))
        .expect("store");
        beat(&mut conn, A, &["10.0.0.1:4001"]);
        beat(&mut conn, B, &[]);
        let tx = conn.transaction().expect("tx");
        let members = store_members(&tx, &B.parse().expect("guid")).expect("members");
        drop(tx);
        let a = members
            .iter()
            .find(|m| m.device.to_string() == A)
            .expect("a listed");
        assert_eq!(a.addrs, vec!["10.0.0.1:4001".parse().expect("addr")]);
        let b = members
            .iter()
            .find(|m| m.device.to_string() == B)
            .expect("b listed");
        assert!(b.addrs.is_empty());
        let before = revision(&conn, B);
        beat(&mut conn, A, &["10.0.0.1:4001"]);
        assert_eq!(revision(&conn, B), before, "nothing changed");
        beat(&mut conn, A, &["10.0.0.7:4001"]);
        assert_eq!(
            revision(&conn, B),
            before + 1,
            "a moved till renews its store's lists"
        );
    }
}
