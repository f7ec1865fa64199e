//! The till's keys on disk, each a 64-hex ed25519 seed in a file only the
//! node's user may read, made on first start:
//!
//! - `device.key`: proves the till to the coordinator (a signed login
//!   challenge; see [`crate::client::DeviceCredential`]);
//! - `node.key`: the till's libp2p identity in the store swarm;
//! - `local-api.secret`: what callers of the till-local interface present
//!   (readable by the file's group too, for the POS software).
//!
//! Two keys, not one: each signs for one protocol only, and either can be
//! replaced without the other (a device key reset by an admin keeps the
//! swarm's peer id).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use tillswarm_protocol::ChunkHash;
use tillswarm_protocol::manifest::SecretKey;

use crate::error::{Error, Result};

/// The device key's file in the data folder.
pub const DEVICE_KEY_FILE: &str = "device.key";

/// The till's device key from `data_dir`, made on first use.
pub fn device_key(data_dir: &Path) -> Result<SecretKey> {
    load_or_create_seed(&data_dir.join(DEVICE_KEY_FILE)).map(SecretKey::from_seed)
}

/// The seed in `path`, or a new random one written there (mode 0600, synced,
/// renamed into place so a crash never leaves half a key). A file others may
/// read is narrowed to its owner, with a warning: the key may have leaked.
pub fn load_or_create_seed(path: &Path) -> Result<[u8; 32]> {
    load_or_create(path, 0o600)
}

/// The local interface's secret in `path`, made like a key seed but readable
/// by the file's group (mode 0640), so the POS software's group may use it.
pub fn local_api_secret(path: &Path) -> Result<[u8; 32]> {
    load_or_create(path, 0o640)
}

fn load_or_create(path: &Path, allowed: u32) -> Result<[u8; 32]> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let mode = std::fs::metadata(path)?.permissions().mode();
            if mode & 0o777 & !allowed != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format!("{:o}", mode & 0o777),
                    allowed = format!("{allowed:o}"),
                    "secret file was readable by others; narrowed (for a device key, consider an admin key reset)"
                );
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(allowed))?;
            }
            let seed = text
                .trim()
                .parse::<ChunkHash>()
                .map_err(|_| Error::Config(format!("{} is not a 64-hex key", path.display())))?;
            Ok(seed.0)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed)
                .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut tmp = path.as_os_str().to_owned();
            tmp.push(".tmp");
            let tmp = std::path::PathBuf::from(tmp);
            let _ = std::fs::remove_file(&tmp);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(allowed)
                .open(&tmp)?;
            f.write_all(ChunkHash(seed).to_hex().as_bytes())?;
            f.sync_all()?;
            drop(f);
            std::fs::rename(&tmp, path)?;
            Ok(seed)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_made_once_private_and_kept() {
        let dir = tempfile::tempdir().expect("tmp");
        let a = device_key(dir.path()).expect("made");
        let b = device_key(dir.path()).expect("read");
        assert_eq!(a.public(), b.public());
        let path = dir.path().join(DEVICE_KEY_FILE);
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A copy others could read is narrowed.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        device_key(dir.path()).expect("read");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(&path, "not a key").expect("garble");
        assert!(device_key(dir.path()).is_err());
    }
}
