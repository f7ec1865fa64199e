//! Fetching a package's chunks and staging it under `<update_root>/update/<version>/`.
//!
//! Order of trust: the manifest is verified against the pinned coordinator key
//! and must describe the package the task names; each chunk is verified by the
//! chunk store before it is kept; the whole file's blake3 is checked while the
//! package is unpacked into a hidden folder, which is renamed into place only if
//! it matches. A staged folder is therefore always complete and verified.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::future::BoxFuture;
use tillswarm_protocol::api::Assignment;
use tillswarm_protocol::manifest::{ChunkRef, Manifest, PublicKey, SignedManifest};
use tillswarm_protocol::{ChunkHash, PackageId};

use crate::chunks::ChunkStore;
use crate::client::CoordinatorClient;
use crate::error::{Error, Result};

/// Name of the marker file in a staged folder, holding the package id.
pub const STAGED_MARKER: &str = ".tillswarm-package";

/// Where a fetched chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The coordinator, over the store's WAN link.
    Wan,
    /// Another till of the store, over the LAN.
    Lan,
}

/// Somewhere chunks can be fetched from. The coordinator is one; the store
/// swarm adds peers.
pub trait ChunkSource: Send + Sync {
    /// Fetches the bytes of a chunk of `len` bytes. The caller verifies them.
    fn fetch<'a>(
        &'a self,
        hash: &'a ChunkHash,
        len: u32,
    ) -> BoxFuture<'a, Result<(Vec<u8>, Origin)>>;
}

impl ChunkSource for CoordinatorClient {
    fn fetch<'a>(
        &'a self,
        hash: &'a ChunkHash,
        len: u32,
    ) -> BoxFuture<'a, Result<(Vec<u8>, Origin)>> {
        Box::pin(async move { Ok((self.chunk(hash, len).await?, Origin::Wan)) })
    }
}

/// Loads the verified manifest of `assignment`'s package, from the local copy or
/// the coordinator, and checks it describes that package.
pub async fn manifest_for(
    assignment: &Assignment,
    key: &PublicKey,
    client: &CoordinatorClient,
    manifests_dir: &Path,
) -> Result<Manifest> {
    let path = manifests_dir.join(assignment.package_id.to_hex());
    let bytes = match tokio::fs::read(&path).await {
        Ok(b) => b,
        Err(_) => client.manifest(&assignment.package_id).await?,
    };
    let manifest = SignedManifest::from_bytes(&bytes)
        .and_then(|s| s.verify(key))
        .map_err(|e| Error::Verify(format!("manifest of {}: {e}", assignment.package_id)))?;
    if manifest.package_id != assignment.package_id
        || manifest.version != assignment.version
        || manifest.name != assignment.package_name
    {
        return Err(Error::Verify(format!(
            "manifest describes {} {} ({}), the task names {} {} ({})",
            manifest.name,
            manifest.version,
            manifest.package_id,
            assignment.package_name,
            assignment.version,
            assignment.package_id
        )));
    }
    tokio::fs::create_dir_all(manifests_dir).await?;
    let tmp = path.with_extension("tmp");
    tokio::fs::write(&tmp, &bytes).await?;
    tokio::fs::rename(&tmp, &path).await?;
    Ok(manifest)
}

/// Running totals of a download.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of the package held (verified).
    pub bytes_done: u64,
    /// Bytes fetched from the coordinator.
    pub wan_bytes: u64,
    /// Bytes fetched from peers.
    pub lan_bytes: u64,
}

/// Fetches every chunk of `manifest` the store lacks, `parallel` at a time,
/// verifying each; calls `on_progress` after each chunk lands. Chunks already
/// held (from an earlier run or another package) are not fetched again.
pub async fn fetch_missing(
    manifest: &Manifest,
    store: &Arc<ChunkStore>,
    source: &dyn ChunkSource,
    parallel: usize,
    mut progress: Progress,
    mut on_progress: impl FnMut(Progress),
) -> Result<Progress> {
    use futures_util::StreamExt;

    let mut missing: Vec<ChunkRef> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    progress.bytes_done = 0;
    for c in &manifest.chunks {
        if store.contains(&c.hash) {
            progress.bytes_done += u64::from(c.length);
        } else if seen.insert(c.hash) {
            missing.push(*c);
        } else {
            // A repeated chunk counts when its first copy lands.
        }
    }
    let repeats =
        |hash: &ChunkHash| manifest.chunks.iter().filter(|c| c.hash == *hash).count() as u64;
    on_progress(progress);
    let mut fetches = futures_util::stream::iter(missing.into_iter().map(|c| async move {
        let (data, origin) = source.fetch(&c.hash, c.length).await?;
        let store = store.clone();
        let n = data.len() as u64;
        tokio::task::spawn_blocking(move || store.put(&c.hash, &data))
            .await
            .map_err(|e| Error::Io(io::Error::other(e)))??;
        Ok::<_, Error>((c, origin, n))
    }))
    .buffer_unordered(parallel.max(1));
    while let Some(done) = fetches.next().await {
        let (c, origin, n) = done?;
        match origin {
            Origin::Wan => progress.wan_bytes += n,
            Origin::Lan => progress.lan_bytes += n,
        }
        progress.bytes_done += u64::from(c.length) * repeats(&c.hash);
        on_progress(progress);
    }
    Ok(progress)
}

/// The staging folder of a version.
pub fn staged_dir(update_dir: &Path, manifest: &Manifest) -> PathBuf {
    update_dir.join(manifest.version.as_str())
}

/// Whether `dir` holds the verified staging of `id`.
pub fn is_staged(dir: &Path, id: &PackageId) -> bool {
    fs::read_to_string(dir.join(STAGED_MARKER)).is_ok_and(|t| t.trim() == id.to_hex())
}

/// Reads the chunks of a manifest in order as one stream, hashing as it goes.
struct Assembled<'a> {
    store: &'a ChunkStore,
    chunks: std::slice::Iter<'a, ChunkRef>,
    current: Option<File>,
    hasher: blake3::Hasher,
}

impl Read for Assembled<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(f) = &mut self.current {
                let n = f.read(buf)?;
                if n > 0 {
                    self.hasher.update(&buf[..n]);
                    return Ok(n);
                }
                self.current = None;
            }
            match self.chunks.next() {
                Some(c) => self.current = Some(self.store.open_chunk(&c.hash)?),
                None => return Ok(0),
            }
        }
    }
}

/// Unpacks the package from the chunk store into `<update_dir>/<version>/`,
/// checking the whole file's blake3. Blocking: run it off the executor.
pub fn stage(manifest: &Manifest, store: &ChunkStore, update_dir: &Path) -> Result<PathBuf> {
    let dest = staged_dir(update_dir, manifest);
    if is_staged(&dest, &manifest.package_id) {
        return Ok(dest);
    }
    fs::create_dir_all(update_dir)?;
    let partial = update_dir.join(format!(".{}.partial", manifest.version));
    if partial.exists() {
        fs::remove_dir_all(&partial)?;
    }
    fs::create_dir_all(&partial)?;
    let mut assembled = Assembled {
        store,
        chunks: manifest.chunks.iter(),
        current: None,
        hasher: blake3::Hasher::new(),
    };
    let unpacked = unpack(&mut assembled, &partial);
    // Drain whatever the tar reader left unread so the hash covers every byte.
    io::copy(&mut assembled, &mut io::sink())?;
    let actual = PackageId::from(assembled.hasher.finalize());
    if let Err(e) = unpacked {
        let _ = fs::remove_dir_all(&partial);
        return Err(e);
    }
    if actual != manifest.package_id {
        let _ = fs::remove_dir_all(&partial);
        return Err(Error::Verify(format!(
            "package hashes to {actual}, the manifest says {}",
            manifest.package_id
        )));
    }
    if !partial.join("up.sh").is_file() {
        let _ = fs::remove_dir_all(&partial);
        return Err(Error::Verify("the package has no up.sh".into()));
    }
    fs::write(
        partial.join(STAGED_MARKER),
        format!("{}\n", manifest.package_id),
    )?;
    if dest.exists() {
        // An older, unverified or foreign folder of the same version: set it aside.
        let aside = update_dir.join(format!(".{}.replaced", manifest.version));
        let _ = fs::remove_dir_all(&aside);
        fs::rename(&dest, &aside)?;
    }
    fs::rename(&partial, &dest)?;
    Ok(dest)
}

/// Unpacks a tar or tar.gz stream into `dir`; entries escaping `dir` are refused
/// by the tar reader.
fn unpack(reader: &mut dyn Read, dir: &Path) -> Result<()> {
    let mut head = [0u8; 2];
    let n = read_full(reader, &mut head)?;
    let chained = (&head[..n]).chain(reader);
    let boxed: Box<dyn Read + '_> = if n == 2 && head == [0x1f, 0x8b] {
        Box::new(flate2::read::GzDecoder::new(chained))
    } else {
        Box::new(chained)
    };
    let mut archive = tar::Archive::new(boxed);
    archive.set_preserve_permissions(true);
    archive.set_overwrite(true);
    archive
        .unpack(dir)
        .map_err(|e| Error::Verify(format!("cannot unpack the package: {e}")))
}

fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}
