//! The till's chunk store: chunks named by their blake3 hash under
//! `<data>/chunks/<first two hex>/`, shared by every package the till holds.
//! A chunk is kept in the form it arrived in: `<hex>` raw, or `<hex>.zst` as
//! the zstd frame its manifest lists, and is relayed to peers in that form.
//!
//! Invariant: [`ChunkStore::put`] and [`ChunkStore::store`] check the bytes
//! against the signed manifest (a frame is decoded under the chunk's length,
//! then hashed) and refuse them unless they match, then write a temporary
//! file, flush it to disk and rename it into place. A chunk file that exists is
//! complete and verified, so after a crash at most the chunks that were in
//! flight are lost.
//!
//! Downloads go through [`ChunkStore::store`]: one writer thread per store
//! takes the chunks queued meanwhile as a batch, writes them all, then flushes
//! them (one `fdatasync` each, after every write, so the disk sees one burst)
//! and renames them. On a VM's virtio disk that is 3-4x less CPU than writing
//! and flushing chunk by chunk, and no async worker ever waits on the disk.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tillswarm_protocol::ChunkHash;
use tillswarm_protocol::chunk_codec::Decoder;
use tillswarm_protocol::manifest::ChunkRef;

use crate::error::{Error, Result};

/// Most chunks written and flushed as one batch.
const MAX_BATCH: usize = 32;

/// A chunk's bytes as stored and sent: raw, or the zstd frame its manifest
/// lists (`compressed`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wire {
    /// The bytes.
    pub data: bytes::Bytes,
    /// Whether they are a zstd frame.
    pub compressed: bool,
}

/// A chunk for the writer thread, with where to send the outcome.
type WriteJob = (ChunkRef, Wire, tokio::sync::oneshot::Sender<Result<()>>);

/// Where chunk files go; shared by the store and its writer thread.
#[derive(Debug)]
struct Layout {
    root: PathBuf,
    tmp: PathBuf,
    next: AtomicU64,
}

/// A verified, content-addressed chunk store.
#[derive(Debug)]
pub struct ChunkStore {
    layout: std::sync::Arc<Layout>,
    writer: tokio::sync::mpsc::Sender<WriteJob>,
}

impl ChunkStore {
    /// Opens the store under `root`, removing temporary files of a previous
    /// run, and starts its writer thread (it ends with the store).
    pub fn open(root: &Path) -> Result<Self> {
        let tmp = root.join("tmp");
        fs::create_dir_all(&tmp)?;
        for entry in fs::read_dir(&tmp)? {
            let _ = fs::remove_file(entry?.path());
        }
        let layout = std::sync::Arc::new(Layout {
            root: root.to_path_buf(),
            tmp,
            next: AtomicU64::new(0),
        });
        let (writer, inbox) = tokio::sync::mpsc::channel(MAX_BATCH);
        let l = layout.clone();
        std::thread::Builder::new()
            .name("tillswarm-chunks".into())
            .spawn(move || l.write_loop(inbox))?;
        Ok(Self { layout, writer })
    }

    /// Whether the chunk is held (in either form).
    pub fn contains(&self, hash: &ChunkHash) -> bool {
        self.layout.path(hash, false).is_file() || self.layout.path(hash, true).is_file()
    }

    /// Verifies raw `data` against `hash` and stores it. A mismatch is an
    /// error and nothing is written. Blocking; downloads use [`ChunkStore::store`].
    pub fn put(&self, hash: &ChunkHash, data: &[u8]) -> Result<()> {
        let actual = ChunkHash::of(data);
        if actual != *hash {
            return Err(Error::Verify(format!(
                "chunk {hash} arrived with hash {actual}"
            )));
        }
        let Some((tmp, dest, f)) = self.layout.write_tmp(hash, false, data)? else {
            return Ok(());
        };
        f.sync_data()?;
        drop(f);
        self.layout.place(&tmp, &dest)
    }

    /// As [`ChunkStore::store`], blocking, on the caller's thread (bundles,
    /// tests, benches).
    pub fn put_wire(&self, chunk: &ChunkRef, wire: &Wire) -> Result<()> {
        let mut decoder = Decoder::new()?;
        let mut scratch = Vec::new();
        decoder
            .decode(chunk, wire.compressed, &wire.data, &mut scratch)
            .map_err(|e| Error::Verify(format!("chunk {}: {e}", chunk.hash)))?;
        let Some((tmp, dest, f)) =
            self.layout
                .write_tmp(&chunk.hash, wire.compressed, &wire.data)?
        else {
            return Ok(());
        };
        f.sync_data()?;
        drop(f);
        self.layout.place(&tmp, &dest)
    }

    /// Verifies `wire` against the manifest's `chunk` (a frame is decoded,
    /// capped at the chunk's length) and stores it as it came, on the store's
    /// writer thread, batched with the chunks queued meanwhile; returns once
    /// the chunk is on disk in place.
    pub async fn store(&self, chunk: ChunkRef, wire: Wire) -> Result<()> {
        let (reply, outcome) = tokio::sync::oneshot::channel();
        let stopped = || Error::Io(io::Error::other("the chunk writer stopped"));
        self.writer
            .send((chunk, wire, reply))
            .await
            .map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }

    /// Opens a held chunk for reading: its file, whether it is a zstd frame,
    /// and its length.
    pub fn open_chunk(&self, hash: &ChunkHash) -> io::Result<(File, bool, u64)> {
        for compressed in [true, false] {
            match File::open(self.layout.path(hash, compressed)) {
                Ok(f) => {
                    let len = f.metadata()?.len();
                    return Ok((f, compressed, len));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Err(io::ErrorKind::NotFound.into())
    }

    /// Reads a held chunk as stored (at most 4 MiB).
    pub fn get(&self, hash: &ChunkHash) -> io::Result<Option<Wire>> {
        match self.open_chunk(hash) {
            Ok((mut f, compressed, _)) => {
                let mut buf = Vec::new();
                f.read_to_end(&mut buf)?;
                Ok(Some(Wire {
                    data: buf.into(),
                    compressed,
                }))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads a held chunk's content into `out` (decoding a frame under the
    /// manifest's length and checking the hash): a chunk file changed on disk
    /// since it was stored is an error, never trusted.
    pub fn read_content(
        &self,
        chunk: &ChunkRef,
        decoder: &mut Decoder,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let Some(wire) = self.get(&chunk.hash)? else {
            return Err(Error::Io(io::Error::new(
                io::ErrorKind::NotFound,
                format!("chunk {} is not held", chunk.hash),
            )));
        };
        let mut scratch = Vec::new();
        let bytes = decoder
            .decode(chunk, wire.compressed, &wire.data, &mut scratch)
            .map_err(|e| Error::Verify(format!("held chunk {}: {e}", chunk.hash)))?;
        out.clear();
        out.extend_from_slice(bytes);
        Ok(())
    }

    /// Drops a chunk that turned out bad on disk (both forms).
    pub fn remove(&self, hash: &ChunkHash) -> io::Result<()> {
        for compressed in [false, true] {
            match fs::remove_file(self.layout.path(hash, compressed)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
}

impl Layout {
    fn path(&self, hash: &ChunkHash, compressed: bool) -> PathBuf {
        let hex = hash.to_hex();
        let dir = self.root.join(&hex[..2]);
        if compressed {
            dir.join(format!("{hex}.zst"))
        } else {
            dir.join(hex)
        }
    }

    /// Writes verified chunk bytes to a temporary file, not flushed yet;
    /// `None` when the chunk is already held (in either form).
    fn write_tmp(
        &self,
        hash: &ChunkHash,
        compressed: bool,
        data: &[u8],
    ) -> Result<Option<(PathBuf, PathBuf, File)>> {
        if self.path(hash, !compressed).is_file() {
            return Ok(None);
        }
        let dest = self.path(hash, compressed);
        if dest.is_file() {
            return Ok(None);
        }
        let tmp = self.tmp.join(format!(
            "{}-{}",
            std::process::id(),
            self.next.fetch_add(1, Ordering::Relaxed)
        ));
        let mut f = File::create(&tmp)?;
        if let Err(e) = f.write_all(data) {
            let _ = fs::remove_file(&tmp);
            return Err(e.into());
        }
        Ok(Some((tmp, dest, f)))
    }

    /// Renames a flushed temporary file into place.
    fn place(&self, tmp: &Path, dest: &Path) -> Result<()> {
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::rename(tmp, dest).inspect_err(|_| {
            let _ = fs::remove_file(tmp);
        })?;
        Ok(())
    }

    /// The writer thread: takes what is queued (up to [`MAX_BATCH`]), writes
    /// it all, flushes it all, then places it all.
    fn write_loop(&self, mut inbox: tokio::sync::mpsc::Receiver<WriteJob>) {
        let Ok(mut decoder) = Decoder::new() else {
            tracing::error!("no zstd decoder: the chunk writer stops");
            return;
        };
        // One chunk's content at a time: memory bounded by the largest chunk.
        let mut scratch = Vec::new();
        while let Some(first) = inbox.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match inbox.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            let mut written = Vec::with_capacity(batch.len());
            for (chunk, wire, reply) in batch {
                let checked = decoder
                    .decode(&chunk, wire.compressed, &wire.data, &mut scratch)
                    .map(|_| ())
                    .map_err(|e| Error::Verify(format!("chunk {}: {e}", chunk.hash)))
                    .and_then(|()| self.write_tmp(&chunk.hash, wire.compressed, &wire.data));
                match checked {
                    Ok(Some(file)) => written.push((file, reply)),
                    Ok(None) => {
                        let _ = reply.send(Ok(()));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            for ((tmp, dest, f), reply) in written {
                let placed = f
                    .sync_data()
                    .map_err(Error::from)
                    .and_then(|()| self.place(&tmp, &dest));
                if placed.is_err() {
                    let _ = fs::remove_file(&tmp);
                }
                let _ = reply.send(placed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_bytes_are_refused_and_not_stored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ChunkStore::open(dir.path()).expect("open");
        let h = ChunkHash::of(b"good");
        assert!(matches!(store.put(&h, b"evil"), Err(Error::Verify(_))));
        assert!(!store.contains(&h));
        store.put(&h, b"good").expect("put");
        let held = store.get(&h).expect("get").expect("held");
        assert_eq!((&held.data[..], held.compressed), (&b"good"[..], false));
    }

    fn text(n: usize) -> Vec<u8> {
        b"receipt line; ".iter().copied().cycle().take(n).collect()
    }

    #[tokio::test]
    async fn compressed_chunks_are_checked_against_the_manifest_and_kept_as_frames() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ChunkStore::open(dir.path()).expect("open");
        let raw = text(200_000);
        let mut c = tillswarm_protocol::chunk_codec::Compressor::new().expect("zstd");
        let frame = c.compress(&raw).expect("compress").expect("compresses");
        let chunk = ChunkRef {
            hash: ChunkHash::of(&raw),
            length: raw.len() as u32,
            zstd_len: frame.len() as u32,
        };
        // The manifest lists another length than the frame decodes to:
        // refused, nothing kept.
        let lying = ChunkRef {
            length: chunk.length - 1,
            ..chunk
        };
        let wire = Wire {
            data: frame.clone().into(),
            compressed: true,
        };
        let err = store.store(lying, wire.clone()).await.expect_err("length");
        assert!(matches!(err, Error::Verify(_)), "{err}");
        assert!(!store.contains(&chunk.hash));
        // A bomb: a small frame of 64 MiB of zeros listed as this chunk.
        let bomb = c
            .compress(&vec![0u8; 64 << 20])
            .expect("zstd")
            .expect("bomb");
        let listed = ChunkRef {
            zstd_len: bomb.len() as u32,
            ..chunk
        };
        let bomb = Wire {
            data: bomb.into(),
            compressed: true,
        };
        assert!(matches!(
            store.store(listed, bomb).await,
            Err(Error::Verify(_))
        ));
        assert!(!store.contains(&chunk.hash));
        // The right frame is kept as it came and reads back as the content.
        store.store(chunk, wire).await.expect("store");
        let (_, compressed, len) = store.open_chunk(&chunk.hash).expect("open");
        assert!(compressed && len == frame.len() as u64);
        let mut decoder = Decoder::new().expect("decoder");
        let mut out = Vec::new();
        store
            .read_content(&chunk, &mut decoder, &mut out)
            .expect("read");
        assert_eq!(out, raw);
        // A frame changed on disk after it was stored is caught on reading.
        let path = dir
            .path()
            .join(&chunk.hash.to_hex()[..2])
            .join(format!("{}.zst", chunk.hash));
        let mut bent = frame.clone();
        let last = bent.len() - 1;
        bent[last] ^= 0xff;
        std::fs::write(&path, &bent).expect("tamper");
        assert!(store.read_content(&chunk, &mut decoder, &mut out).is_err());
        store.remove(&chunk.hash).expect("remove");
        assert!(!store.contains(&chunk.hash));
    }

    #[tokio::test]
    async fn the_writer_thread_verifies_every_chunk_of_a_batch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = std::sync::Arc::new(ChunkStore::open(dir.path()).expect("open"));
        // More than one batch at once, one bad chunk among them.
        let mut puts = Vec::new();
        for i in 0..40u32 {
            let data = format!("chunk {i}").into_bytes();
            let hash = if i == 17 {
                ChunkHash::of(b"something else")
            } else {
                ChunkHash::of(&data)
            };
            let store = store.clone();
            let chunk = ChunkRef {
                hash,
                length: data.len() as u32,
                zstd_len: 0,
            };
            let wire = Wire {
                data: data.into(),
                compressed: false,
            };
            puts.push(tokio::spawn(async move {
                (i, hash, store.store(chunk, wire).await)
            }));
        }
        for put in puts {
            let (i, hash, outcome) = put.await.expect("join");
            if i == 17 {
                assert!(matches!(outcome, Err(Error::Verify(_))), "{outcome:?}");
                assert!(!store.contains(&hash));
            } else {
                outcome.expect("stored");
                let want = format!("chunk {i}").into_bytes();
                let held = store.get(&hash).expect("get").expect("held");
                assert_eq!(held.data, want);
            }
        }
        // Nothing is left behind in the temporary folder.
        assert_eq!(
            fs::read_dir(dir.path().join("tmp")).expect("tmp").count(),
            0
        );
    }
}
