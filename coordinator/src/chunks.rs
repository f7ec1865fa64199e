//! The coordinator's content-addressed chunk store: one file per chunk, named by
//! its blake3 hash, under `<data>/chunks/<first two hex digits>/`.
//!
//! A chunk is written to a temporary file, flushed to disk, then renamed into
//! place, so a chunk file that exists is always complete. Chunks are shared by
//! every package that contains them.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tillswarm_protocol::ChunkHash;

/// The chunk store rooted at one folder.
#[derive(Debug)]
pub struct ChunkStore {
    root: PathBuf,
    tmp: PathBuf,
    next_tmp: AtomicU64,
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
        })
    }

    fn path(&self, hash: &ChunkHash) -> PathBuf {
        let hex = hash.to_hex();
        self.root.join(&hex[..2]).join(hex)
    }

    /// Whether the chunk is stored.
    pub fn contains(&self, hash: &ChunkHash) -> bool {
        self.path(hash).is_file()
    }

    /// Stores `data` under `hash` (the caller has hashed it). Returns whether it
    /// was newly written (false: already stored).
    pub fn put(&self, hash: &ChunkHash, data: &[u8]) -> io::Result<bool> {
        let dest = self.path(hash);
        if dest.is_file() {
            return Ok(false);
        }
        let n = self.next_tmp.fetch_add(1, Ordering::Relaxed);
        let tmp = self.tmp.join(format!("{}-{n}", std::process::id()));
        {
            let mut f = File::create(&tmp)?;
            f.write_all(data)?;
            f.sync_data()?;
        }
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::rename(&tmp, &dest)?;
        Ok(true)
    }

    /// Reads `len` bytes from `offset` of a chunk (`None` len: to the end).
    /// `Ok(None)` when the chunk is not stored.
    pub fn read(
        &self,
        hash: &ChunkHash,
        offset: u64,
        len: Option<u64>,
    ) -> io::Result<Option<Vec<u8>>> {
        let mut f = match File::open(self.path(hash)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let size = f.metadata()?.len();
        let offset = offset.min(size);
        let len = len.unwrap_or(size - offset).min(size - offset);
        f.seek(SeekFrom::Start(offset))?;
        let mut buf = Vec::with_capacity(len as usize);
        f.take(len).read_to_end(&mut buf)?;
        Ok(Some(buf))
    }

    /// Size of a stored chunk.
    pub fn size(&self, hash: &ChunkHash) -> io::Result<Option<u64>> {
        match fs::metadata(self.path(hash)) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes a chunk (no-op when absent).
    pub fn remove(&self, hash: &ChunkHash) -> io::Result<()> {
        match fs::remove_file(self.path(hash)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Every stored chunk's hash (for garbage collection).
    pub fn list(&self) -> io::Result<Vec<ChunkHash>> {
        let mut out = Vec::new();
        for dir in fs::read_dir(&self.root)? {
            let dir = dir?;
            if dir.file_name() == "tmp" || !dir.file_type()?.is_dir() {
                continue;
            }
            for f in fs::read_dir(dir.path())? {
                if let Some(h) = f?.file_name().to_str().and_then(|n| n.parse().ok()) {
                    out.push(h);
                }
            }
        }
        Ok(out)
    }

    /// A fresh temporary path inside the store's volume (same filesystem, so a
    /// rename out of it is atomic).
    pub fn temp_path(&self, label: &str) -> PathBuf {
        let n = self.next_tmp.fetch_add(1, Ordering::Relaxed);
        self.tmp.join(format!("{label}-{}-{n}", std::process::id()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_read_ranges_and_gc_listing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ChunkStore::open(dir.path()).expect("open");
        let data = b"hello chunk store".to_vec();
        let h = ChunkHash::of(&data);
        assert!(!store.contains(&h));
        store.put(&h, &data).expect("put");
        store.put(&h, &data).expect("idempotent");
        assert_eq!(store.read(&h, 0, None).expect("read"), Some(data.clone()));
        assert_eq!(
            store.read(&h, 6, Some(5)).expect("read"),
            Some(b"chunk".to_vec())
        );
        assert_eq!(store.read(&h, 100, None).expect("read"), Some(vec![]));
        assert_eq!(store.list().expect("list"), vec![h]);
        store.remove(&h).expect("remove");
        assert_eq!(store.read(&h, 0, None).expect("read"), None);
    }
}
