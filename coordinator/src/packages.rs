//! Packages: ingestion (check the format, chunk, store, sign), listing, and
//! deletion with chunk garbage collection.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};
use tillswarm_protocol::manifest::{self, Manifest, SecretKey, SignedManifest};
use tillswarm_protocol::{ChunkHash, PackageId, Version};

use crate::chunks::ChunkStore;
use crate::clock::rfc3339;
use crate::error::{Error, Result};

/// A package as operators see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    /// blake3 of the file (what `b3sum` prints).
    pub package_id: PackageId,
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Size in bytes.
    pub size: u64,
    /// Number of chunks.
    pub chunk_count: u64,
    /// When it was uploaded (RFC 3339).
    pub created: String,
    /// Unfinished tasks that use it (it cannot be deleted while > 0).
    pub active_tasks: u64,
    /// Whether it is the newest version of its name.
    pub newest: bool,
}

/// Checks that `path` is a package: a tar (optionally gzip-compressed) whose
/// every entry passes [`tillswarm_protocol::archive`]'s rules, with a regular
/// `up.sh` at its top, unpacking to at most `max_unpacked` bytes. Reads the
/// whole archive; returns the unpacked size.
pub fn check_format(path: &Path, max_unpacked: u64) -> Result<u64> {
    let mut head = [0u8; 2];
    let mut f = File::open(path)?;
    let n = f.read(&mut head)?;
    let f = BufReader::with_capacity(1 << 20, File::open(path)?);
    let gz = n == 2 && head == [0x1f, 0x8b];
    let reader: Box<dyn Read> = if gz {
        Box::new(flate2::read::GzDecoder::new(f))
    } else {
        Box::new(f)
    };
    tillswarm_protocol::archive::scan(reader, max_unpacked)
        .map_err(|e| Error::bad("invalid_package", format!("not a package: {e}")))
}

/// Chunks the file at `path` into the store and returns its signed manifest
/// and the chunks this call newly wrote (to remove if the package is refused).
/// Blocking: run it off the async executor.
pub fn ingest_file(
    path: &Path,
    name: &str,
    version: Version,
    store: &ChunkStore,
    key: &SecretKey,
    now_ms: i64,
    max_unpacked: u64,
) -> Result<(Manifest, SignedManifest, Vec<ChunkHash>)> {
    let unpacked = check_format(path, max_unpacked)?;
    let file = BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut written = Vec::new();
    let outcome = tillswarm_protocol::chunking::chunk_reader_with(file, |info, data| {
        if store.put(&info.hash, data)? {
            written.push(info.hash);
        }
        Ok(())
    })
    .map_err(Error::from)
    .and_then(|chunked| {
        Manifest::new(name, version, &chunked, (now_ms / 1000) as u64, unpacked)
            .map_err(|e| Error::bad("invalid_package", e.to_string()))
    });
    match outcome {
        Ok(manifest) => {
            let signed = key.sign_manifest(&manifest);
            Ok((manifest, signed, written))
        }
        Err(e) => {
            for h in written {
                let _ = store.remove(&h);
            }
            Err(e)
        }
    }
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation)
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
            format!("this file is already uploaded as {name} {version}"),
        ));
    }
    tx.execute(
        "INSERT INTO packages (package_id, name, version, version_key, size, chunk_count, manifest, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            id,
            m.name,
            m.version.as_str(),
            m.version.sort_key(),
            m.size as i64,
            m.chunks.len() as i64,
            signed.to_bytes(),
            now_ms
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
        "INSERT INTO package_chunks (package_id, idx, hash, length) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for (i, c) in m.chunks.iter().enumerate() {
        stmt.execute(params![id, i as i64, c.hash.to_hex(), c.length])?;
    }
    Ok(())
}

const PACKAGE_SELECT: &str =
    "SELECT p.package_id, p.name, p.version, p.size, p.chunk_count, p.created_ms,
        (SELECT count(*) FROM tasks t WHERE t.package_id = p.package_id
             AND t.status NOT IN ('completed', 'completed_with_failures')),
        p.version_key = (SELECT max(q.version_key) FROM packages q WHERE q.name = p.name)
     FROM packages p";

fn package_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Package> {
    let id: String = r.get(0)?;
    Ok(Package {
        package_id: id
            .parse()
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?,
        name: r.get(1)?,
        version: r.get(2)?,
        size: r.get::<_, i64>(3)? as u64,
        chunk_count: r.get::<_, i64>(4)? as u64,
        created: rfc3339(r.get(5)?),
        active_tasks: r.get::<_, i64>(6)? as u64,
        newest: r.get(7)?,
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
        .collect::<rusqlite::Result<Vec<_>>>()?;
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
        .collect::<rusqlite::Result<_>>()?;
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

/// The manifest (decoded) of a stored package, for the details view.
pub fn manifest(conn: &Connection, id: &PackageId, key: &manifest::PublicKey) -> Result<Manifest> {
    let bytes = signed_manifest(conn, id)?;
    SignedManifest::from_bytes(&bytes)
        .and_then(|s| s.verify(key))
        .map_err(|e| Error::Internal(format!("stored manifest of {id} does not verify: {e}")))
}
