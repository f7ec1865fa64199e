//! Packages: ingestion ([`ingest`]: decompress, check, chunk, store, sign),
//! listing, and deletion with chunk garbage collection.

mod ingest;

pub use ingest::{IngestLimits, Received, ingest_file, open_content};

use std::collections::HashSet;

use crate::db::sql::{Connection, OptionalExtension, Transaction, params};
use tillswarm_protocol::archive::UploadFormat;
use tillswarm_protocol::manifest::{self, Manifest, SignedManifest};
use tillswarm_protocol::{ChunkHash, PackageId, Version};

use crate::clock::rfc3339;
use crate::error::{Error, Result};

pub use tillswarm_protocol::operator::packages::{Package, PackageDetail};

fn is_unique_violation(e: &crate::db::sql::Error) -> bool {
    e.is_constraint_violation()
}

/// Refuses a name and version that are already uploaded (checked before the
/// upload is read, and again at insert).
pub fn ensure_new(conn: &Connection, name: &str, version: &Version) -> Result<()> {
    let exists = conn
        .prepare_cached("SELECT 1 FROM packages WHERE name = ?1 AND version_key = ?2")?
        .exists(params![name, version.sort_key()])?;
    if exists {
        return Err(Error::conflict(
            "package_exists",
            format!("{name} {version} is already uploaded"),
        ));
    }
    Ok(())
}

/// Records an ingested package.
pub fn insert(
    tx: &Transaction<'_>,
    m: &Manifest,
    signed: &SignedManifest,
    uploaded_by: &str,
    now_ms: i64,
) -> Result<()> {
    ensure_new(tx, &m.name, &m.version)?;
    let id = m.package_id.to_hex();
    if let Some((name, version)) = tx
        .query_row(
            "SELECT name, version FROM packages WHERE package_id = ?1",
            [&id],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
        )
        .optional()?
    {
        return Err(Error::conflict(
            "package_exists",
            format!("this content is already uploaded as {name} {version}"),
        ));
    }
    tx.execute(
        "INSERT INTO packages (package_id, name, version, version_key, size, chunk_count, manifest, created_ms,
                               upload_id, upload_size, upload_format, wire_size, uploaded_by)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        params![
            id,
            m.name,
            m.version.as_str(),
            m.version.sort_key(),
            m.size as i64,
            m.chunks.len() as i64,
            signed.to_bytes(),
            now_ms,
            m.upload.map(|u| u.id.to_hex()),
            m.upload.map(|u| u.size as i64),
            m.upload.map(|u| format_name(u.format)),
            m.wire_size() as i64,
            uploaded_by,
        ],
    )
    .map_err(|e| {
        if is_unique_violation(&e) {
            Error::conflict("package_exists", format!("{} {} is already uploaded", m.name, m.version))
        } else {
            e.into()
        }
    })?;
    let mut stmt = tx.prepare_cached(
        "INSERT INTO package_chunks (package_id, idx, hash, length, zstd_len) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for (i, c) in m.chunks.iter().enumerate() {
        stmt.execute(params![id, i as i64, c.hash.to_hex(), c.length, c.zstd_len])?;
    }
    Ok(())
}

const PACKAGE_SELECT: &str =
    "SELECT p.package_id, p.name, p.version, p.size, p.chunk_count, p.created_ms,
        (SELECT count(*) FROM tasks t WHERE t.package_id = p.package_id
             AND t.status NOT IN ('completed', 'completed_with_failures')),
        p.version_key = (SELECT max(q.version_key) FROM packages q WHERE q.name = p.name),
        coalesce(p.upload_id, p.package_id), coalesce(p.upload_size, p.size), p.upload_format,
        coalesce(p.wire_size, p.size), p.uploaded_by
     FROM packages p";

/// The name of an upload format in the database and the API.
fn format_name(f: UploadFormat) -> String {
    serde_json::to_value(f)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn package_from_row(r: &crate::db::sql::Row<'_>) -> crate::db::sql::Result<Package> {
    let id: String = r.get(0)?;
    let parse = |text: String| {
        text.parse()
            .map_err(|e| crate::db::sql::Error::ToSqlConversionFailure(Box::new(e)))
    };
    let format: Option<String> = r.get(10)?;
    Ok(Package {
        package_id: parse(id)?,
        upload_id: parse(r.get(8)?)?,
        upload_size: r.get::<_, i64>(9)? as u64,
        upload_format: format
            .and_then(|f| serde_json::from_value(serde_json::Value::String(f)).ok()),
        wire_size: r.get::<_, i64>(11)? as u64,
        name: r.get(1)?,
        version: r.get(2)?,
        size: r.get::<_, i64>(3)? as u64,
        chunk_count: r.get::<_, i64>(4)? as u64,
        created: rfc3339(r.get(5)?),
        active_tasks: r.get::<_, i64>(6)? as u64,
        newest: r.get(7)?,
        uploaded_by: r.get(12)?,
    })
}

/// Every package, newest versions first within each name.
pub fn list(conn: &Connection, offset: u64, limit: u64) -> Result<(Vec<Package>, u64)> {
    let total: i64 = conn.query_row("SELECT count(*) FROM packages", [], |r| r.get(0))?;
    let mut stmt = conn.prepare_cached(&format!(
        "{PACKAGE_SELECT} ORDER BY p.name, p.version_key DESC LIMIT ?1 OFFSET ?2"
    ))?;
    let rows = stmt
        .query_map(params![limit as i64, offset as i64], package_from_row)?
        .collect::<crate::db::sql::Result<Vec<_>>>()?;
    Ok((rows, total as u64))
}

/// One package.
pub fn get(conn: &Connection, id: &PackageId) -> Result<Package> {
    conn.query_row(
        &format!("{PACKAGE_SELECT} WHERE p.package_id = ?1"),
        [id.to_hex()],
        package_from_row,
    )
    .optional()?
    .ok_or_else(|| Error::NotFound(format!("no package {id}")))
}

/// The signed manifest bytes, as stored.
pub fn signed_manifest(conn: &Connection, id: &PackageId) -> Result<Vec<u8>> {
    conn.prepare_cached("SELECT manifest FROM packages WHERE package_id = ?1")?
        .query_row([id.to_hex()], |r| r.get(0))
        .optional()?
        .ok_or_else(|| Error::NotFound(format!("no package {id}")))
}

/// Whether some package lists this chunk (only such chunks are served).
pub fn chunk_is_published(conn: &Connection, hash: &ChunkHash) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM package_chunks WHERE hash = ?1 LIMIT 1")?
        .exists([hash.to_hex()])?)
}

/// Deletes a package unless an unfinished task uses it; returns the chunks no
/// other package references any more (the caller removes their files).
pub fn delete(tx: &Transaction<'_>, id: &PackageId) -> Result<Vec<ChunkHash>> {
    let pkg = get(tx, id)?;
    let rollouts: i64 = tx.query_row(
        "SELECT count(*) FROM rollouts WHERE package_id = ?1
           AND state NOT IN ('completed', 'completed_with_failures', 'cancelled')",
        [id.to_hex()],
        |r| r.get(0),
    )?;
    if rollouts > 0 {
        return Err(Error::conflict(
            "package_in_use",
            format!(
                "{} {} is delivered by {rollouts} rollout(s) not yet over; cancel them first",
                pkg.name, pkg.version
            ),
        ));
    }
    if pkg.active_tasks > 0 {
        return Err(Error::conflict(
            "package_in_use",
            format!(
                "{} {} is used by {} unfinished task(s)",
                pkg.name, pkg.version, pkg.active_tasks
            ),
        ));
    }
    let hashes: Vec<String> = tx
        .prepare_cached("SELECT DISTINCT hash FROM package_chunks WHERE package_id = ?1")?
        .query_map([id.to_hex()], |r| r.get(0))?
        .collect::<crate::db::sql::Result<_>>()?;
    tx.execute("DELETE FROM packages WHERE package_id = ?1", [id.to_hex()])?;
    let mut still_used =
        tx.prepare_cached("SELECT 1 FROM package_chunks WHERE hash = ?1 LIMIT 1")?;
    let mut orphans = Vec::new();
    for h in hashes {
        if !still_used.exists([&h])? {
            if let Ok(hash) = h.parse() {
                orphans.push(hash);
            }
        }
    }
    Ok(orphans)
}

/// Every chunk hash some package references (for start-up garbage collection).
pub fn referenced_chunks(conn: &Connection) -> Result<HashSet<ChunkHash>> {
    let mut stmt = conn.prepare("SELECT DISTINCT hash FROM package_chunks")?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    let mut out = HashSet::new();
    for h in rows {
        if let Ok(hash) = h?.parse() {
            out.insert(hash);
        }
    }
    Ok(out)
}

/// Every stored package's id (for start-up garbage collection).
pub fn ids(conn: &Connection) -> Result<HashSet<PackageId>> {
    let mut stmt = conn.prepare("SELECT package_id FROM packages")?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    let mut out = HashSet::new();
    for id in rows {
        if let Ok(id) = id?.parse() {
            out.insert(id);
        }
    }
    Ok(out)
}

/// The manifest (decoded) of a stored package, for the details view.
pub fn manifest(conn: &Connection, id: &PackageId, key: &manifest::PublicKey) -> Result<Manifest> {
    let bytes = signed_manifest(conn, id)?;
    SignedManifest::from_bytes(&bytes)
        .and_then(|s| s.verify(key))
        .map_err(|e| Error::Internal(format!("stored manifest of {id} does not verify: {e}")))
}
