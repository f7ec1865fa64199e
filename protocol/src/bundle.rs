//! The manual-path bundle: one file support hands out for a till that cannot
//! reach the coordinator (`tillswarm package export`), dropped into the till's
//! `update/` folder.
//!
//! A bundle is a tar of exactly four regular files, in this order:
//!
//! 1. [`HEADER_FILE`]: a small [`BundleHeader`] (format, name, version);
//! 2. [`TRUST_FILE`]: the coordinator's key chain ([`BundleTrust`]): root
//!    rotations and the online key's certificate;
//! 3. [`MANIFEST_FILE`]: the package's signed manifest;
//! 4. [`PACKAGE_FILE`]: the package's content, byte for byte: the uncompressed
//!    tar its chunks make up (for a format 1 or 2 manifest, the uploaded file).
//!
//! [`read`] checks it the way a till checks the coordinator's answers: the
//! key chain from the till's pinned root, the manifest with the certified
//! online key, then every chunk of the package against the manifest while it
//! streams, before a byte of it is kept. Nothing in the bundle is trusted
//! because of where it came from.

use std::io::{self, Read};

use serde::{Deserialize, Serialize};

use crate::id::{ChunkHash, PackageId};
use crate::manifest::{ChunkRef, MAX_SIGNED_MANIFEST_BYTES, Manifest, SignedManifest};
use crate::trust::{Signed, TrustState};
use crate::version::Version;

/// The bundle's header entry.
pub const HEADER_FILE: &str = "tillswarm-bundle.json";
/// The key chain entry.
pub const TRUST_FILE: &str = "trust.json";
/// The signed manifest entry.
pub const MANIFEST_FILE: &str = "manifest.signed";
/// The package archive entry.
pub const PACKAGE_FILE: &str = "package";
/// The file name ending a till looks for in its `update/` folder.
pub const EXTENSION: &str = "tsb";
/// The bundle format this code writes and reads.
pub const FORMAT: u32 = 1;
/// Largest header or key chain entry.
pub const MAX_META_BYTES: u64 = 256 << 10;

/// What the header says (for people and tools; the manifest is what counts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleHeader {
    /// [`FORMAT`].
    pub format: u32,
    /// Package name.
    pub name: String,
    /// Package version.
    pub version: Version,
}

/// The coordinator's key chain, as a till needs it to trust the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleTrust {
    /// Root rotations since version 1, oldest first.
    pub rotations: Vec<Signed>,
    /// The online key's certificate by the current root.
    pub online_key: Signed,
}

/// Why a bundle was refused.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// Not laid out as a bundle.
    #[error("not a tillswarm bundle: {0}")]
    Malformed(String),
    /// The key chain or the manifest does not verify from the pinned root.
    #[error("the bundle does not verify: {0}")]
    Untrusted(String),
    /// The package differs from its signed manifest.
    #[error("the package does not match its signed manifest: {0}")]
    Mismatch(String),
    /// Reading (or keeping a chunk) failed.
    #[error("reading the bundle: {0}")]
    Io(#[from] io::Error),
}

/// Reads and checks a bundle: verifies its key chain against `trust` (the
/// till's, not changed), its manifest with the certified online key, then
/// streams the package, handing each chunk to `keep` only once it matches the
/// manifest's. Returns the verified manifest.
pub fn read<R: Read>(
    reader: R,
    trust: &TrustState,
    now_unix: u64,
    mut keep: impl FnMut(&ChunkRef, &[u8]) -> io::Result<()>,
) -> Result<Manifest, BundleError> {
    let malformed = |m: &str| BundleError::Malformed(m.to_owned());
    let mut archive = tar::Archive::new(reader);
    let mut entries = archive.entries()?;
    let mut next = |name: &str| -> Result<tar::Entry<'_, R>, BundleError> {
        let entry = entries
            .next()
            .ok_or_else(|| BundleError::Malformed(format!("{name} is missing")))??;
        let path = entry.path_bytes();
        if path.as_ref() != name.as_bytes() {
            return Err(BundleError::Malformed(format!(
                "expected {name} next, found another entry"
            )));
        }
        if !entry.header().entry_type().is_file() {
            return Err(BundleError::Malformed(format!(
                "{name} is not a regular file"
            )));
        }
        Ok(entry)
    };
    let header: BundleHeader = serde_json::from_slice(&small(next(HEADER_FILE)?, MAX_META_BYTES)?)
        .map_err(|e| BundleError::Malformed(format!("{HEADER_FILE}: {e}")))?;
    if header.format != FORMAT {
        return Err(BundleError::Malformed(format!(
            "format {} (this till reads format {FORMAT})",
            header.format
        )));
    }
    let chain: BundleTrust = serde_json::from_slice(&small(next(TRUST_FILE)?, MAX_META_BYTES)?)
        .map_err(|e| BundleError::Malformed(format!("{TRUST_FILE}: {e}")))?;
    let mut trust = trust.clone();
    trust
        .rotate_root(&chain.rotations)
        .and_then(|_| trust.accept_online_key(&chain.online_key, now_unix))
        .map_err(|e| BundleError::Untrusted(e.to_string()))?;
    let online = trust
        .online_key(now_unix)
        .ok_or_else(|| malformed("no current online key"))?;
    let signed = small(next(MANIFEST_FILE)?, MAX_SIGNED_MANIFEST_BYTES as u64)?;
    let manifest = SignedManifest::from_bytes(&signed)
        .and_then(|m| m.verify(&online))
        .map_err(|e| BundleError::Untrusted(format!("manifest: {e}")))?;
    if manifest.name != header.name || manifest.version != header.version {
        return Err(BundleError::Mismatch(
            "the header names another package than the manifest".into(),
        ));
    }
    let package = next(PACKAGE_FILE)?;
    if package.size() != manifest.size {
        return Err(BundleError::Mismatch(format!(
            "{} bytes, the manifest says {}",
            package.size(),
            manifest.size
        )));
    }
    // Slice the package by the manifest's own lengths (whichever chunker cut
    // it), so nothing here depends on the chunker this build would use.
    let mut package = package;
    let mut whole = blake3::Hasher::new();
    let mut buf = Vec::new();
    for (index, chunk) in manifest.chunks.iter().enumerate() {
        buf.clear();
        (&mut package)
            .take(u64::from(chunk.length))
            .read_to_end(&mut buf)?;
        if buf.len() != chunk.length as usize || ChunkHash::of(&buf) != chunk.hash {
            return Err(BundleError::Mismatch(format!(
                "chunk {index} differs from the manifest's"
            )));
        }
        whole.update(&buf);
        keep(chunk, &buf)?;
    }
    if PackageId::from(whole.finalize()) != manifest.package_id {
        return Err(BundleError::Mismatch(
            "the package hashes differently from the manifest".into(),
        ));
    }
    Ok(manifest)
}

/// A small entry's bytes, refused past `cap`.
fn small(entry: impl Read, cap: u64) -> Result<Vec<u8>, BundleError> {
    let mut out = Vec::new();
    entry.take(cap + 1).read_to_end(&mut out)?;
    if out.len() as u64 > cap {
        return Err(BundleError::Malformed(format!(
            "an entry is over {cap} bytes"
        )));
    }
    Ok(out)
}

/// The tar header of one bundle entry of `size` bytes (mode 0644, at `mtime`).
pub fn entry_header(name: &str, size: u64, mtime: u64) -> io::Result<tar::Header> {
    let mut h = tar::Header::new_ustar();
    h.set_path(name)?;
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(mtime);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    Ok(h)
}

/// Zero bytes that pad an entry of `size` bytes to the tar block size.
pub fn padding(size: u64) -> usize {
    ((512 - size % 512) % 512) as usize
}

#[cfg(test)]
mod tests;
