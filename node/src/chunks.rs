//! The till's chunk store: chunks named by their blake3 hash under
//! `<data>/chunks/<first two hex>/`, shared by every package the till holds.
//!
//! Invariant: [`ChunkStore::put`] hashes the bytes and refuses them unless they
//! match the expected hash, then writes a temporary file and renames it into
//! place. A chunk file that exists is complete and verified, so after a crash at
//! most the chunks that were in flight are lost.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tillswarm_protocol::ChunkHash;

use crate::error::{Error, Result};

/// A verified, content-addressed chunk store.
#[derive(Debug)]
pub struct ChunkStore {
    root: PathBuf,
    tmp: PathBuf,
    next: AtomicU64,
}

impl ChunkStore {
    /// Opens the store under `root`, removing temporary files of a previous run.
    pub fn open(root: &Path) -> Result<Self> {
        let tmp = root.join("tmp");
        fs::create_dir_all(&tmp)?;
        for entry in fs::read_dir(&tmp)? {
            let _ = fs::remove_file(entry?.path());
        }
        Ok(Self {
            root: root.to_path_buf(),
            tmp,
            next: AtomicU64::new(0),
        })
    }

    fn path(&self, hash: &ChunkHash) -> PathBuf {
        let hex = hash.to_hex();
        self.root.join(&hex[..2]).join(hex)
    }

    /// Whether the chunk is held.
    pub fn contains(&self, hash: &ChunkHash) -> bool {
        self.path(hash).is_file()
    }

    /// Verifies `data` against `hash` and stores it. A mismatch is an error and
    /// nothing is written.
    pub fn put(&self, hash: &ChunkHash, data: &[u8]) -> Result<()> {
        let actual = ChunkHash::of(data);
        if actual != *hash {
            return Err(Error::Verify(format!(
                "chunk {hash} arrived with hash {actual}"
            )));
        }
        let dest = self.path(hash);
        if dest.is_file() {
            return Ok(());
        }
        let tmp = self.tmp.join(format!(
            "{}-{}",
            std::process::id(),
            self.next.fetch_add(1, Ordering::Relaxed)
        ));
        {
            let mut f = File::create(&tmp)?;
            f.write_all(data)?;
            f.sync_data()?;
        }
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::rename(&tmp, &dest)?;
        Ok(())
    }

    /// Opens a held chunk for reading.
    pub fn open_chunk(&self, hash: &ChunkHash) -> io::Result<File> {
        File::open(self.path(hash))
    }

    /// Reads a whole held chunk (at most 4 MiB).
    pub fn get(&self, hash: &ChunkHash) -> io::Result<Option<Vec<u8>>> {
        match File::open(self.path(hash)) {
            Ok(mut f) => {
                let mut buf = Vec::new();
                f.read_to_end(&mut buf)?;
                Ok(Some(buf))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Drops a chunk that turned out bad on disk.
    pub fn remove(&self, hash: &ChunkHash) -> io::Result<()> {
        match fs::remove_file(self.path(hash)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
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
        assert_eq!(store.get(&h).expect("get"), Some(b"good".to_vec()));
    }
}
