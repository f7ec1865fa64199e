//! Fetching a package's chunks and staging it under `<update_root>/update/<version>/`.
//!
//! Order of trust: the manifest is verified against the pinned coordinator key
//! and must describe the package the task names; each chunk is verified by the
//! chunk store before it is kept, and again (blake3 of its content) as the
//! package is unpacked from it into a hidden folder, which is flushed to disk
//! and renamed into place only if every chunk matched. A staged folder is therefore always
//! complete and verified, also after a power loss.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use futures_util::future::BoxFuture;
use tillswarm_protocol::api::Assignment;
use tillswarm_protocol::chunk_codec::Decoder;
use tillswarm_protocol::manifest::{ChunkRef, Manifest, PublicKey, SignedManifest};
use tillswarm_protocol::{ChunkHash, PackageId};

use crate::chunks::{ChunkStore, Wire};
use crate::client::CoordinatorClient;
use crate::error::{Error, Result};

mod reuse;

pub use reuse::ReuseStats;

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
    /// Fetches a chunk of a manifest, raw or as its listed zstd frame. The
    /// caller verifies it.
    fn fetch<'a>(&'a self, chunk: &'a ChunkRef) -> BoxFuture<'a, Result<(Wire, Origin)>>;
}

impl ChunkSource for CoordinatorClient {
    fn fetch<'a>(&'a self, chunk: &'a ChunkRef) -> BoxFuture<'a, Result<(Wire, Origin)>> {
        Box::pin(async move { Ok((self.chunk(chunk).await?, Origin::Wan)) })
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
    let verify = |bytes: &[u8]| SignedManifest::from_bytes(bytes).and_then(|s| s.verify(key));
    // A cached copy signed by an online key since rotated is fetched again.
    let cached = tokio::fs::read(&path)
        .await
        .ok()
        .and_then(|b| verify(&b).ok().map(|m| (b, m)));
    let (bytes, manifest) = match cached {
        Some(pair) => pair,
        None => {
            let bytes = client.manifest(&assignment.package_id).await?;
            let manifest = verify(&bytes).map_err(|e| {
                Error::Verify(format!("manifest of {}: {e}", assignment.package_id))
            })?;
            (bytes, manifest)
        }
    };
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
    /// Bytes fetched from the coordinator, as sent (compressed chunks count
    /// their frames).
    pub wan_bytes: u64,
    /// Bytes fetched from peers, as sent.
    pub lan_bytes: u64,
}

/// The staging folder of a version.
pub fn staged_dir(update_dir: &Path, manifest: &Manifest) -> PathBuf {
    update_dir.join(manifest.version.as_str())
}

/// Whether `dir` holds the verified staging of `id`.
pub fn is_staged(dir: &Path, id: &PackageId) -> bool {
    fs::read_to_string(dir.join(STAGED_MARKER)).is_ok_and(|t| t.trim() == id.to_hex())
}

/// Bytes read from a chunk file (and hashed) at a time while staging: large
/// enough for blake3's SIMD paths, whatever size the unpacker asks for.
const ASSEMBLY_PIECE: usize = 128 * 1024;

/// Reads the chunks of a manifest in order as one stream (the package's
/// content), checking each against the signed manifest as it goes: a raw
/// chunk is streamed from its file and hashed, a compressed one decoded whole
/// (under its manifest length) and hashed. Every byte read is thus verified
/// once, and the stream fails at the first chunk that does not match.
struct Assembled<'a> {
    store: &'a ChunkStore,
    /// Set while the download is still running: a chunk not held yet is
    /// waited for (until the flag says the download gave up).
    follow: Option<&'a Following>,
    chunks: std::slice::Iter<'a, ChunkRef>,
    current: Option<File>,
    decoder: Option<Decoder>,
    /// A compressed chunk's frame, then its content in `decoded`.
    frame: Vec<u8>,
    decoded: Vec<u8>,
    /// Whether `at..end` indexes `decoded` (else `piece`).
    from_decoded: bool,
    /// The raw chunk being streamed, its hash so far and bytes read.
    raw: Option<&'a ChunkRef>,
    raw_hasher: blake3::Hasher,
    raw_read: u64,
    /// Why a chunk was refused (the stream then fails).
    corrupt: Option<String>,
    /// Whether every chunk was read and matched.
    complete: bool,
    piece: Vec<u8>,
    at: usize,
    end: usize,
}

impl<'a> Assembled<'a> {
    fn new(store: &'a ChunkStore, manifest: &'a Manifest, follow: Option<&'a Following>) -> Self {
        Self {
            store,
            follow,
            chunks: manifest.chunks.iter(),
            current: None,
            decoder: None,
            frame: Vec::new(),
            decoded: Vec::new(),
            from_decoded: false,
            raw: None,
            raw_hasher: blake3::Hasher::new(),
            raw_read: 0,
            corrupt: None,
            complete: false,
            piece: vec![0; ASSEMBLY_PIECE],
            at: 0,
            end: 0,
        }
    }

    /// Records why a held chunk was refused and fails the stream.
    fn refuse(&mut self, why: String) -> io::Error {
        self.corrupt = Some(why.clone());
        io::Error::new(io::ErrorKind::InvalidData, why)
    }

    /// Reads and verifies the next piece; false at the end of the package.
    fn refill(&mut self) -> io::Result<bool> {
        loop {
            if let (Some(f), Some(c)) = (&mut self.current, self.raw) {
                let n = f.read(&mut self.piece)?;
                if n > 0 {
                    self.raw_read += n as u64;
                    if self.raw_read > u64::from(c.length) {
                        let why =
                            format!("held chunk {} is longer than its manifest lists", c.hash);
                        return Err(self.refuse(why));
                    }
                    self.raw_hasher.update(&self.piece[..n]);
                    (self.at, self.end, self.from_decoded) = (0, n, false);
                    return Ok(true);
                }
                self.current = None;
                let whole = self.raw_read == u64::from(c.length);
                if !whole || ChunkHash::from(self.raw_hasher.finalize()) != c.hash {
                    let why = format!("held chunk {} does not match its manifest", c.hash);
                    return Err(self.refuse(why));
                }
            }
            let Some(c) = self.chunks.next() else {
                self.complete = true;
                return Ok(false);
            };
            if let Some(follow) = self.follow {
                follow.wait_for(self.store, &c.hash)?;
            }
            let (mut file, compressed, len) = self.store.open_chunk(&c.hash)?;
            if !compressed {
                self.current = Some(file);
                self.raw = Some(c);
                self.raw_hasher.reset();
                self.raw_read = 0;
                continue;
            }
            if len != u64::from(c.zstd_len) {
                let why = format!(
                    "held chunk {} is {len} bytes, its manifest lists {}",
                    c.hash, c.zstd_len
                );
                return Err(self.refuse(why));
            }
            self.frame.clear();
            file.read_to_end(&mut self.frame)?;
            let decoder = match &mut self.decoder {
                Some(d) => d,
                None => self.decoder.insert(Decoder::new()?),
            };
            let decoded = decoder
                .decode(c, true, &self.frame, &mut self.decoded)
                .map(<[u8]>::len)
                .map_err(|e| format!("held chunk {}: {e}", c.hash));
            let n = match decoded {
                Ok(n) => n,
                Err(why) => return Err(self.refuse(why)),
            };
            (self.at, self.end, self.from_decoded) = (0, n, true);
            return Ok(true);
        }
    }
}

impl Read for Assembled<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.at == self.end && !self.refill()? {
            return Ok(0);
        }
        let src = if self.from_decoded {
            &self.decoded
        } else {
            &self.piece
        };
        let n = buf.len().min(self.end - self.at);
        buf[..n].copy_from_slice(&src[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Lets staging run beside the download: the unpacker waits for each chunk
/// to land, so a package arriving roughly in order is unpacked as it comes
/// and only its last chunks are left to unpack when the download ends.
#[derive(Debug, Default)]
pub struct Following {
    gave_up: std::sync::atomic::AtomicBool,
}

/// The folders being staged in this process, and a signal when one is done.
static STAGING: (std::sync::Mutex<Vec<PathBuf>>, std::sync::Condvar) =
    (std::sync::Mutex::new(Vec::new()), std::sync::Condvar::new());

/// A folder claimed for staging; released when dropped.
struct Claim(PathBuf);

impl Claim {
    /// Waits until no other staging of `dest` runs in this process (or,
    /// following a download, until it gives up), then claims it.
    fn take(dest: &Path, follow: Option<&Following>) -> io::Result<Self> {
        fn poisoned<T>(_: T) -> io::Error {
            io::Error::other("staging lock poisoned")
        }
        let mut held = STAGING.0.lock().map_err(poisoned)?;
        while held.iter().any(|d| d == dest) {
            if follow.is_some_and(Following::gave_up) {
                return Err(io::Error::new(
                    io::ErrorKind::Interrupted,
                    "the download stopped before the package was complete",
                ));
            }
            held = STAGING
                .1
                .wait_timeout(held, FOLLOW_POLL)
                .map_err(poisoned)?
                .0;
        }
        held.push(dest.to_path_buf());
        Ok(Self(dest.to_path_buf()))
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Ok(mut held) = STAGING.0.lock() {
            held.retain(|d| *d != self.0);
        }
        STAGING.1.notify_all();
    }
}

/// How often a staging beside a download flushes what it unpacked so far.
const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(500);
/// How often a staging that waits for a chunk looks again.
const FOLLOW_POLL: std::time::Duration = std::time::Duration::from_millis(20);

impl Following {
    /// The download ended without the package: the staging stops.
    pub fn give_up(&self) {
        self.gave_up
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn gave_up(&self) -> bool {
        self.gave_up.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn wait_for(&self, store: &ChunkStore, hash: &ChunkHash) -> io::Result<()> {
        while !store.contains(hash) {
            if self.gave_up() {
                return Err(io::Error::new(
                    io::ErrorKind::Interrupted,
                    "the download stopped before the package was complete",
                ));
            }
            std::thread::sleep(FOLLOW_POLL);
        }
        Ok(())
    }
}

/// Flushes the filesystem holding `dir` (syncfs): every file and folder of a
/// staged tree in one writeback and one device flush, where a flush per file
/// costs the disk a cache flush each.
fn sync_tree(dir: &Path) -> io::Result<()> {
    nix::unistd::syncfs(File::open(dir)?).map_err(io::Error::from)
}

/// How much a format 1 manifest (no declared unpacked size) may unpack to,
/// as a multiple of its package size.
const UNDECLARED_EXPANSION: u64 = 64;

/// The most bytes a package may unpack to on this till: what its manifest
/// declares (or, for a format 1 manifest, [`UNDECLARED_EXPANSION`] times its
/// size), and no more than `room` (free disk less the reserve, when known).
/// Refuses at once when the declared size does not fit.
pub fn unpack_cap(manifest: &Manifest, room: Option<u64>) -> Result<u64> {
    let declared = manifest
        .unpacked_size
        .unwrap_or_else(|| manifest.size.saturating_mul(UNDECLARED_EXPANSION));
    match room {
        Some(room) if manifest.unpacked_size.is_some_and(|d| d > room) => {
            Err(Error::Verify(format!(
                "the package unpacks to {declared} bytes, more than the {room} bytes free on this till (less the reserve)"
            )))
        }
        Some(room) => Ok(declared.min(room)),
        None => Ok(declared),
    }
}

/// Unpacks the package from the chunk store into `<update_dir>/<version>/`,
/// checking every chunk's blake3, writing at most `cap` bytes (see
/// [`unpack_cap`]). Blocking: run it off the executor.
pub fn stage(
    manifest: &Manifest,
    store: &ChunkStore,
    update_dir: &Path,
    cap: u64,
) -> Result<PathBuf> {
    stage_following(manifest, store, update_dir, cap, None)
}

/// As [`stage`]; with `follow`, started beside the download and waiting for
/// each chunk to land (see [`Following`]). Blocking: run it off the executor.
pub fn stage_following(
    manifest: &Manifest,
    store: &ChunkStore,
    update_dir: &Path,
    cap: u64,
    follow: Option<&Following>,
) -> Result<PathBuf> {
    let dest = staged_dir(update_dir, manifest);
    if is_staged(&dest, &manifest.package_id) {
        return Ok(dest);
    }
    // One staging per folder at a time (two tasks of one version, or a
    // staging left running by a job that lost its agent); the next one
    // finds the folder staged.
    let _claim = Claim::take(&dest, follow)?;
    if is_staged(&dest, &manifest.package_id) {
        return Ok(dest);
    }
    fs::create_dir_all(update_dir)?;
    let partial = update_dir.join(format!(".{}.partial", manifest.version));
    if partial.exists() {
        fs::remove_dir_all(&partial)?;
    }
    fs::create_dir_all(&partial)?;
    let mut reuse = reuse::Reuse::open(update_dir, &partial);
    // A format 3 package's content is a tar; older ones may be gzip.
    let sniff_gzip = manifest.upload.is_none();
    let mut assembled = Assembled::new(store, manifest, follow);
    // Beside a download, what is unpacked so far is flushed as it goes, so
    // the flush before the marker finds little left.
    let done = std::sync::atomic::AtomicBool::new(false);
    let unpacked = std::thread::scope(|scope| {
        if follow.is_some() {
            scope.spawn(|| {
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(FLUSH_EVERY);
                    let _ = sync_tree(&partial);
                }
            });
        }
        let unpacked = unpack(&mut assembled, &partial, cap, sniff_gzip, reuse.as_mut());
        // Drain whatever the tar reader left unread: every chunk is checked.
        let drained = io::copy(&mut assembled, &mut io::sink());
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        drained.map_err(Error::from).and(unpacked)
    });
    let verdict = match (assembled.corrupt.take(), unpacked) {
        (Some(why), _) => Err(Error::Verify(why)),
        (None, Err(e)) => Err(e),
        (None, Ok(())) if !assembled.complete => Err(Error::Verify(
            "the package's chunks were not all read".into(),
        )),
        (None, Ok(())) => Ok(()),
    };
    if let Err(e) = verdict {
        let _ = fs::remove_dir_all(&partial);
        return Err(e);
    }
    if !partial.join("up.sh").is_file() {
        let _ = fs::remove_dir_all(&partial);
        return Err(Error::Verify("the package has no up.sh".into()));
    }
    fs::write(
        partial.join(STAGED_MARKER),
        format!("{}\n", manifest.package_id),
    )?;
    // On disk before it is renamed into place: a staged folder survives power loss.
    sync_tree(&partial)?;
    if dest.exists() {
        // An older, unverified or foreign folder of the same version: set it aside.
        let aside = update_dir.join(format!(".{}.replaced", manifest.version));
        let _ = fs::remove_dir_all(&aside);
        fs::rename(&dest, &aside)?;
    }
    fs::rename(&partial, &dest)?;
    File::open(update_dir)?.sync_all()?;
    if let Some(r) = reuse {
        tracing::info!(
            version = %manifest.version,
            files_linked = r.stats.files_linked,
            bytes_linked = r.stats.bytes_linked,
            files_patched = r.stats.files_patched,
            "staged, reusing unchanged files of earlier versions"
        );
    }
    Ok(dest)
}

/// Unpacks a tar stream (or, with `sniff_gzip`, a tar.gz one) into `dir`,
/// each entry checked by the archive rules before it is written (nothing
/// outside `dir`, no devices, FIFOs or sparse files, links only inside) and
/// the total held to `cap` bytes. Modes keep only the permission bits,
/// without group or other write: no setuid, setgid or sticky file comes out
/// of a package. With `reuse`, unchanged regular files are linked from an
/// earlier staged tree.
pub(crate) fn unpack(
    reader: &mut dyn Read,
    dir: &Path,
    cap: u64,
    sniff_gzip: bool,
    mut reuse: Option<&mut reuse::Reuse>,
) -> Result<()> {
    use tillswarm_protocol::archive::{self, EntryKind};
    let mut head = [0u8; 2];
    let n = if sniff_gzip {
        read_full(reader, &mut head)?
    } else {
        0
    };
    let chained = (&head[..n]).chain(reader);
    let boxed: Box<dyn Read + '_> = if n == 2 && head == [0x1f, 0x8b] {
        Box::new(flate2::read::GzDecoder::new(chained))
    } else {
        Box::new(chained)
    };
    let bad = |e: std::io::Error| Error::Verify(format!("cannot unpack the package: {e}"));
    let mut tar = tar::Archive::new(boxed);
    tar.set_preserve_permissions(false);
    tar.set_mask(0o022);
    tar.set_overwrite(true);
    let mut tally = archive::Tally::new(cap);
    for entry in tar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let kind = archive::kind_of(entry.header().entry_type());
        let size = entry.header().size().map_err(bad)?;
        let path = entry.path().map_err(bad)?.into_owned();
        let link = entry.link_name().map_err(bad)?.map(|l| l.into_owned());
        tally
            .add(&path, kind, link.as_deref(), size)
            .map_err(|e| Error::Verify(format!("the package is refused: {e}")))?;
        if kind == EntryKind::File
            && let Some(reuse) = reuse.as_deref_mut()
        {
            // The mode and time tar would give the file (see below).
            let mode = entry.header().mode().map_err(bad)? & 0o755;
            let mtime = entry.header().mtime().map_err(bad)?.max(1) as i64;
            if reuse
                .place(&path, mode, mtime, size, &mut entry)
                .map_err(bad)?
            {
                continue;
            }
        }
        if kind != EntryKind::Metadata {
            entry.unpack_in(dir).map_err(bad)?;
        }
    }
    tally
        .finish()
        .map_err(|e| Error::Verify(format!("the package is refused: {e}")))?;
    Ok(())
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

#[cfg(test)]
mod reuse_tests;

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use tillswarm_fixtures::{RawEntry, raw_tar};
    use tillswarm_protocol::Version;

    use super::*;

    const UP_SH: &[u8] = b"#!/bin/sh\nexit 0\n";

    /// A package's chunks in a fresh store and its manifest, declaring
    /// `unpacked` bytes (or, with `None`, a format 1 manifest).
    fn packaged(bytes: &[u8], unpacked: Option<u64>) -> (tempfile::TempDir, ChunkStore, Manifest) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ChunkStore::open(&dir.path().join("chunks")).expect("store");
        let chunker = tillswarm_protocol::Chunker::V1;
        let chunked =
            tillswarm_protocol::chunking::chunk_reader_with(chunker, bytes, |info, data| {
                store.put(&info.hash, data).map_err(std::io::Error::other)
            })
            .expect("chunks");
        let version: Version = "2.0.0".parse().expect("version");
        let mut manifest = Manifest::new("demo", version, &chunked, 0, 0).expect("manifest");
        manifest.unpacked_size = unpacked;
        (dir, store, manifest)
    }

    fn stage_in(
        dir: &Path,
        store: &ChunkStore,
        m: &Manifest,
        room: Option<u64>,
    ) -> Result<PathBuf> {
        let cap = unpack_cap(m, room)?;
        stage(m, store, &dir.join("update"), cap)
    }

    fn nothing_staged(dir: &Path) {
        let update = dir.join("update");
        let left: Vec<_> = std::fs::read_dir(&update)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "left in update/: {left:?}");
    }

    #[test]
    fn staging_beside_the_download_waits_for_each_chunk_or_gives_up() {
        let big = tillswarm_fixtures::noise(6 << 20, 7);
        let tar = raw_tar(&[
            RawEntry::file("up.sh", 0o755, UP_SH),
            RawEntry::file("data", 0o644, &big),
        ]);
        let (dir, full, m) = packaged(&tar, None);
        assert!(m.chunks.len() > 1, "several chunks");
        // An empty store the chunks arrive in, one at a time, last first.
        let empty = ChunkStore::open(&dir.path().join("arriving")).expect("store");
        let follow = Following::default();
        let update = dir.path().join("update");
        std::thread::scope(|scope| {
            let staging =
                scope.spawn(|| stage_following(&m, &empty, &update, u64::MAX, Some(&follow)));
            for c in m.chunks.iter().rev() {
                std::thread::sleep(std::time::Duration::from_millis(30));
                assert!(!staging.is_finished(), "staged before every chunk landed");
                let data = full.get(&c.hash).expect("get").expect("held");
                empty.put(&c.hash, &data.data).expect("put");
            }
            let staged = staging.join().expect("join").expect("staged");
            assert_eq!(fs::read(staged.join("data")).expect("data"), big);
        });
        // Two stagings of one version at once (two tasks, or one left
        // running by a lost job): one stages, the other finds it staged.
        let (dir, full, m) = packaged(&tar, None);
        let empty = ChunkStore::open(&dir.path().join("twice")).expect("store");
        let update = dir.path().join("update");
        let (a, b) = (Following::default(), Following::default());
        std::thread::scope(|scope| {
            let first = scope.spawn(|| stage_following(&m, &empty, &update, u64::MAX, Some(&a)));
            let second = scope.spawn(|| stage_following(&m, &empty, &update, u64::MAX, Some(&b)));
            for c in &m.chunks {
                std::thread::sleep(std::time::Duration::from_millis(30));
                let data = full.get(&c.hash).expect("get").expect("held");
                empty.put(&c.hash, &data.data).expect("put");
            }
            for staging in [first, second] {
                let staged = staging.join().expect("join").expect("staged");
                assert_eq!(fs::read(staged.join("data")).expect("data"), big);
            }
        });
        // A download that stops: the staging stops too, leaving nothing.
        let (dir, _full, m) = packaged(&tar, None);
        let empty = ChunkStore::open(&dir.path().join("never")).expect("store");
        let follow = Following::default();
        let update = dir.path().join("update");
        std::thread::scope(|scope| {
            let staging =
                scope.spawn(|| stage_following(&m, &empty, &update, u64::MAX, Some(&follow)));
            std::thread::sleep(std::time::Duration::from_millis(60));
            follow.give_up();
            assert!(staging.join().expect("join").is_err());
        });
        nothing_staged(dir.path());
    }

    #[test]
    fn a_package_too_big_for_the_disk_is_refused_before_anything_is_written() {
        let tar = raw_tar(&[RawEntry::file("up.sh", 0o755, UP_SH)]);
        let (dir, store, m) = packaged(&tar, Some(200 << 20));
        let e = stage_in(dir.path(), &store, &m, Some(50 << 20)).expect_err("too big");
        assert!(e.to_string().contains("more than the"), "{e}");
        nothing_staged(dir.path());
    }

    #[test]
    fn a_decompression_bomb_stops_at_the_declared_size() {
        // A 64 MiB file of zeros in a small tar.gz whose manifest lies and
        // declares one MiB: unpacking stops at the header saying 64 MiB.
        let bomb = tillswarm_fixtures::gzip(&raw_tar(&[
            RawEntry::file("up.sh", 0o755, UP_SH),
            RawEntry::file("zeros", 0o644, &vec![0u8; 64 << 20]),
        ]));
        assert!(bomb.len() < 1 << 20, "the bomb is {} bytes", bomb.len());
        let (dir, store, m) = packaged(&bomb, Some(1 << 20));
        let e = stage_in(dir.path(), &store, &m, None).expect_err("refused");
        assert!(
            e.to_string().contains("unpacks to more than 1048576"),
            "{e}"
        );
        nothing_staged(dir.path());
        // A format 1 manifest (no declared size) is held to 64 x its size.
        let (dir, store, m) = packaged(&bomb, None);
        assert!(stage_in(dir.path(), &store, &m, None).is_err());
        nothing_staged(dir.path());
    }

    #[test]
    fn setuid_setgid_sticky_and_world_write_are_dropped() {
        let tar = raw_tar(&[
            RawEntry::file("up.sh", 0o6777, UP_SH),
            RawEntry::file("bin/tool", 0o1777, b"x"),
        ]);
        let (dir, store, m) = packaged(&tar, Some(UP_SH.len() as u64 + 1));
        let staged = stage_in(dir.path(), &store, &m, None).expect("staged");
        for (file, want) in [("up.sh", 0o755), ("bin/tool", 0o755)] {
            let mode = std::fs::metadata(staged.join(file))
                .expect("stat")
                .permissions()
                .mode();
            assert_eq!(mode & 0o7777, want, "{file}: {mode:o}");
        }
    }

    #[test]
    fn hostile_entries_are_refused_and_nothing_is_staged() {
        use tar::EntryType as T;
        let up = RawEntry::file("up.sh", 0o755, UP_SH);
        let cases: Vec<(&str, RawEntry)> = vec![
            ("parent dir", RawEntry::file("../escaped", 0o644, b"x")),
            ("absolute", RawEntry::file("/tmp/escaped", 0o644, b"x")),
            (
                "symlink out",
                RawEntry::other(b"shadow", T::Symlink, Some(b"/etc/shadow")),
            ),
            (
                "symlink up",
                RawEntry::other(b"a/up", T::Symlink, Some(b"../../etc")),
            ),
            ("fifo", RawEntry::other(b"pipe", T::Fifo, None)),
            ("device", RawEntry::other(b"sda", T::Block, None)),
            ("sparse", RawEntry::other(b"holes", T::GNUSparse, None)),
        ];
        for (what, entry) in cases {
            let tar = raw_tar(&[up.clone(), entry]);
            let (dir, store, m) = packaged(&tar, Some(1 << 20));
            assert!(
                stage_in(dir.path(), &store, &m, None).is_err(),
                "{what} was staged"
            );
            nothing_staged(dir.path());
        }
        let tar = raw_tar(&[RawEntry::other(b"up.sh", T::Symlink, Some(b"bin/real"))]);
        let (dir, store, m) = packaged(&tar, Some(1 << 20));
        assert!(
            stage_in(dir.path(), &store, &m, None).is_err(),
            "up.sh as a link"
        );
    }
}
