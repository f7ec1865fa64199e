//! The coordinator's content-addressed chunk store: one file per chunk, named by
//! its blake3 hash, under `<data>/chunks/<first two hex digits>/`: `<hex>` for
//! a raw chunk, `<hex>.zst` for one kept as a zstd frame (the hash is always
//! of the content).
//!
//! A chunk is written to a temporary file, flushed to disk, then renamed into
//! place, so a chunk file that exists is always complete. Chunks are shared by
//! every package that contains them. With a bucket ([`bucket`]), chunks live
//! there under the same names instead, with each package's signed manifest
//! beside them; uploads are still spooled in the local `tmp/` folder.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tillswarm_protocol::chunk_codec::Compressor;
use tillswarm_protocol::chunking::MAX_CHUNK;
use tillswarm_protocol::{ChunkHash, PackageId};

pub mod bucket;

/// The chunk store: a folder, or a bucket with a local folder for spooling.
#[derive(Debug)]
pub struct ChunkStore {
    root: PathBuf,
    tmp: PathBuf,
    next_tmp: AtomicU64,
    bucket: Option<bucket::Bucket>,
}

impl ChunkStore {
    /// Opens (creating) the store under `root`, clearing temporary files left by a
    /// previous run that died mid-write.
    pub fn open(root: &Path) -> io::Result<Self> {
        let tmp = root.join("tmp");
        fs::create_dir_all(&tmp)?;
        for entry in fs::read_dir(&tmp)? {
            let _ = fs::remove_file(entry?.path());
        }
        Ok(Self {
            root: root.to_path_buf(),
            tmp,
            next_tmp: AtomicU64::new(0),
            bucket: None,
        })
    }

    /// Keeps chunks in `bucket` instead of the folder (which then only
    /// spools uploads).
    pub fn with_bucket(mut self, bucket: bucket::Bucket) -> Self {
        self.bucket = Some(bucket);
        self
    }

    /// Where chunks are kept, for logs.
    pub fn location(&self) -> String {
        match &self.bucket {
            Some(b) => b.url().to_string(),
            None => self.root.display().to_string(),
        }
    }

    fn path(&self, hash: &ChunkHash, compressed: bool) -> PathBuf {
        let hex = hash.to_hex();
        let dir = self.root.join(&hex[..2]);
        if compressed {
            dir.join(format!("{hex}.zst"))
        } else {
            dir.join(hex)
        }
    }

    /// How a chunk is stored in the folder: `Some(true)` as a zstd frame,
    /// `Some(false)` raw.
    fn form(&self, hash: &ChunkHash) -> Option<bool> {
        [true, false]
            .into_iter()
            .find(|&compressed| self.path(hash, compressed).is_file())
    }

    /// Whether the chunk is stored (in either form).
    pub fn contains(&self, hash: &ChunkHash) -> io::Result<bool> {
        match &self.bucket {
            Some(b) => Ok(b.form(hash)?.is_some()),
            None => Ok(self.form(hash).is_some()),
        }
    }

    /// A writer for the many chunks of one ingest (see [`Writer`]).
    pub fn writer(&self) -> Writer<'_> {
        Writer {
            store: self,
            puts: self.bucket.as_ref().map(bucket::Bucket::puts),
            written: Vec::new(),
        }
    }

    /// Stores a chunk's content `data` under `hash` (the caller has hashed it):
    /// as a zstd frame when `zstd` makes it smaller enough, else raw. Returns
    /// whether it was newly written, and the stored frame's length (0: raw),
    /// which is what the manifest lists. A chunk already stored keeps its form.
    pub fn put(
        &self,
        hash: &ChunkHash,
        data: &[u8],
        zstd: Option<&mut Compressor>,
    ) -> io::Result<(bool, u32)> {
        if let Some(bucket) = &self.bucket {
            // One conditional write: the form is a function of the content
            // and the compressor, so an existing key holds these bytes.
            let frame = match zstd {
                Some(z) => z.compress(data)?,
                None => None,
            };
            return match &frame {
                Some(f) => Ok((bucket.put(hash, f, true)?, f.len() as u32)),
                None => Ok((bucket.put(hash, data, false)?, 0)),
            };
        }
        match self.form(hash) {
            Some(true) => {
                let len = fs::metadata(self.path(hash, true))?.len();
                return Ok((false, len as u32));
            }
            Some(false) => return Ok((false, 0)),
            None => {}
        }
        let frame = match zstd {
            Some(z) => z.compress(data)?,
            None => None,
        };
        let (bytes, zstd_len) = match &frame {
            Some(f) => (&f[..], f.len() as u32),
            None => (data, 0),
        };
        let dest = self.path(hash, zstd_len > 0);
        let n = self.next_tmp.fetch_add(1, Ordering::Relaxed);
        let tmp = self.tmp.join(format!("{}-{n}", std::process::id()));
        {
            let mut f = File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_data()?;
        }
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::rename(&tmp, &dest)?;
        Ok((true, zstd_len))
    }

    /// A whole stored chunk in the stored form, and whether that is a zstd
    /// frame; `Ok(None)` when the chunk is not stored.
    pub fn read_stored(&self, hash: &ChunkHash) -> io::Result<Option<(Vec<u8>, bool)>> {
        if let Some(bucket) = &self.bucket {
            return bucket.read_stored(hash);
        }
        for compressed in [true, false] {
            match File::open(self.path(hash, compressed)) {
                Ok(f) => {
                    let mut buf = Vec::new();
                    f.take(MAX_CHUNK as u64 + 1).read_to_end(&mut buf)?;
                    if buf.len() > MAX_CHUNK {
                        return Err(io::Error::other(format!(
                            "stored chunk {hash} is oversized"
                        )));
                    }
                    return Ok(Some((buf, compressed)));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// A whole stored chunk's content (a frame decoded, capped at the largest
    /// chunk); `Ok(None)` when the chunk is not stored.
    pub fn read_content(&self, hash: &ChunkHash) -> io::Result<Option<Vec<u8>>> {
        match self.read_stored(hash)? {
            Some((frame, true)) => {
                let content = zstd::bulk::decompress(&frame, MAX_CHUNK)?;
                if ChunkHash::of(&content) != *hash {
                    return Err(io::Error::other(format!("stored chunk {hash} is corrupt")));
                }
                Ok(Some(content))
            }
            Some((raw, false)) => Ok(Some(raw)),
            None => Ok(None),
        }
    }

    /// Removes a chunk in either form (no-op when absent).
    pub fn remove(&self, hash: &ChunkHash) -> io::Result<()> {
        if let Some(bucket) = &self.bucket {
            return bucket.remove(hash);
        }
        for compressed in [true, false] {
            match fs::remove_file(self.path(hash, compressed)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// Every stored chunk's hash (for garbage collection).
    pub fn list(&self) -> io::Result<Vec<ChunkHash>> {
        if let Some(bucket) = &self.bucket {
            return bucket.list();
        }
        let mut out = Vec::new();
        for dir in fs::read_dir(&self.root)? {
            let dir = dir?;
            if dir.file_name() == "tmp" || !dir.file_type()?.is_dir() {
                continue;
            }
            for f in fs::read_dir(dir.path())? {
                let name = f?.file_name();
                let name = name.to_str().unwrap_or_default();
                let hex = name.strip_suffix(".zst").unwrap_or(name);
                if let Ok(h) = hex.parse() {
                    out.push(h);
                }
            }
        }
        Ok(out)
    }

    /// Keeps a package's signed manifest beside its chunks, in a bucket
    /// (a folder store's manifests are the database's); whether it was
    /// newly written.
    pub fn put_manifest(&self, id: &PackageId, signed: &[u8]) -> io::Result<bool> {
        match &self.bucket {
            Some(b) => b.put_manifest(id, signed),
            None => Ok(false),
        }
    }

    /// Removes a package's manifest from a bucket (absent is fine).
    pub fn remove_manifest(&self, id: &PackageId) -> io::Result<()> {
        match &self.bucket {
            Some(b) => b.remove_manifest(id),
            None => Ok(()),
        }
    }

    /// The packages whose manifests a bucket holds (for garbage collection).
    pub fn manifests(&self) -> io::Result<Vec<PackageId>> {
        match &self.bucket {
            Some(b) => b.manifests(),
            None => Ok(Vec::new()),
        }
    }

    /// A fresh temporary path inside the store's volume (same filesystem, so a
    /// rename out of it is atomic).
    pub fn temp_path(&self, label: &str) -> PathBuf {
        let n = self.next_tmp.fetch_add(1, Ordering::Relaxed);
        self.tmp.join(format!("{label}-{}-{n}", std::process::id()))
    }
}

/// Stores the chunks of one ingest: in a bucket their uploads overlap
/// ([`bucket::Puts`]); in the folder each is written when put.
pub struct Writer<'a> {
    store: &'a ChunkStore,
    puts: Option<bucket::Puts>,
    written: Vec<ChunkHash>,
}

impl Writer<'_> {
    /// As [`ChunkStore::put`], returning the stored frame's length (0: raw);
    /// which chunks were newly written, [`Writer::finish`] tells. In a bucket
    /// an upload's failure shows at a later put or at the finish.
    pub fn put(
        &mut self,
        hash: &ChunkHash,
        data: &[u8],
        zstd: Option<&mut Compressor>,
    ) -> io::Result<u32> {
        let Some(puts) = &mut self.puts else {
            let (new, zstd_len) = self.store.put(hash, data, zstd)?;
            if new {
                self.written.push(*hash);
            }
            return Ok(zstd_len);
        };
        let frame = match zstd {
            Some(z) => z.compress(data)?,
            None => None,
        };
        match frame {
            Some(f) => {
                let len = f.len() as u32;
                puts.put(*hash, f, true)?;
                Ok(len)
            }
            None => {
                puts.put(*hash, data.to_vec(), false)?;
                Ok(0)
            }
        }
    }

    /// Waits for what is still being written: the chunks newly written
    /// (whatever else happened, so a refused package can remove them) and
    /// the first failure, if any.
    pub fn finish(self) -> (Vec<ChunkHash>, io::Result<()>) {
        let mut written = self.written;
        match self.puts {
            Some(puts) => {
                let (uploaded, outcome) = puts.finish();
                written.extend(uploaded);
                (written, outcome)
            }
            None => (written, Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_read_forms_and_gc_listing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ChunkStore::open(dir.path()).expect("open");
        let mut zstd = Compressor::new().expect("zstd");
        // Incompressible: kept raw, whatever the compressor.
        let data = b"hello chunk store".to_vec();
        let h = ChunkHash::of(&data);
        assert!(!store.contains(&h).expect("contains"));
        assert_eq!(
            store.put(&h, &data, Some(&mut zstd)).expect("put"),
            (true, 0)
        );
        assert_eq!(store.put(&h, &data, None).expect("idempotent"), (false, 0));
        assert_eq!(
            store.read_stored(&h).expect("read"),
            Some((data.clone(), false))
        );
        // Compressible: kept as a frame, reported on every put.
        let text = b"total 12.50 EUR\n".repeat(4000);
        let t = ChunkHash::of(&text);
        let (new, zlen) = store.put(&t, &text, Some(&mut zstd)).expect("put");
        assert!(new && zlen > 0 && (zlen as usize) < text.len() / 10);
        assert_eq!(store.put(&t, &text, None).expect("again"), (false, zlen));
        let (frame, compressed) = store.read_stored(&t).expect("read").expect("held");
        assert!(compressed && frame.len() == zlen as usize);
        assert_eq!(store.read_content(&t).expect("content"), Some(text.clone()));
        let mut listed = store.list().expect("list");
        listed.sort();
        let mut want = vec![h, t];
        want.sort();
        assert_eq!(listed, want);
        // A frame changed on disk is not served as content.
        std::fs::write(
            store.path(&t, true),
            zstd.compress(&b"other ".repeat(900))
                .expect("z")
                .expect("z"),
        )
        .expect("tamper");
        assert!(store.read_content(&t).is_err());
        store.remove(&h).expect("remove");
        store.remove(&t).expect("remove");
        assert_eq!(store.read_stored(&h).expect("read"), None);
        assert!(store.list().expect("list").is_empty());
    }
}
