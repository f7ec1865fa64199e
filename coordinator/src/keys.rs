//! The manifest signing key: created on first start, kept in `<data>/coordinator.key`
//! (mode 0600), with the public half in `<data>/coordinator.pub` for pinning on tills.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use tillswarm_protocol::manifest::SecretKey;

use crate::error::{Error, Result};

/// Loads the key from `dir`, creating it on first use.
pub fn load_or_create(dir: &Path) -> Result<SecretKey> {
    let path = dir.join("coordinator.key");
    let key = match fs::read_to_string(&path) {
        Ok(text) => {
            let seed: tillswarm_protocol::ChunkHash = text
                .trim()
                .parse()
                .map_err(|_| Error::Internal(format!("{} is not a 64-hex key", path.display())))?;
            SecretKey::from_seed(seed.0)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed)
                .map_err(|e| Error::Internal(format!("no OS randomness: {e}")))?;
            let key = SecretKey::from_seed(seed);
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)?;
            f.write_all(tillswarm_protocol::ChunkHash(seed).to_hex().as_bytes())?;
            f.sync_all()?;
            tracing::info!(public_key = %key.public(), "created the manifest signing key");
            key
        }
        Err(e) => return Err(e.into()),
    };
    fs::write(dir.join("coordinator.pub"), format!("{}\n", key.public()))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_once_with_private_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = load_or_create(dir.path()).expect("create");
        let b = load_or_create(dir.path()).expect("load");
        assert_eq!(a.public(), b.public());
        let mode = fs::metadata(dir.path().join("coordinator.key"))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let pinned = fs::read_to_string(dir.path().join("coordinator.pub")).expect("pub");
        assert_eq!(pinned.trim(), a.public().to_string());
    }
}
