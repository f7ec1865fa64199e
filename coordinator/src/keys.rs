//! The coordinator's keys, in its data folder (see [`tillswarm_protocol::trust`]):
//!
//! - `root.key`: the root secret (hex, 0600). It certifies online keys and
//!   new roots; `keys init --root-out FILE` moves it out of the data folder,
//!   and the commands that need it then take `--root-key FILE`.
//! - `coordinator.pub`: the current root public key, the one tills pin.
//! - `online.key`: the online secret (hex, 0600), which signs manifests,
//!   instructions and timestamps while the coordinator runs.
//! - `trust.json`: what tills need to get from their pinned root to the online
//!   key: the root rotations and the online key's certificate.
//!
//! A data folder from before the key hierarchy has one `coordinator.key`: it
//! becomes the root (so tills that pinned it keep working) and an online key
//! is made and certified on the first start.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tillswarm_protocol::manifest::{PublicKey, SecretKey};
use tillswarm_protocol::trust::{Domain, OnlineKey, RootRotation, Signed};

use crate::error::{Error, Result};

/// How long an online key's certificate lasts unless told otherwise.
pub const DEFAULT_ONLINE_DAYS: u64 = 365;

/// The public side of the keys, as `trust.json` holds it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TrustFile {
    /// The current root's version (1: the first root).
    pub root_version: u64,
    /// The current root public key.
    pub root: PublicKey,
    /// Rotations from version 1, oldest first.
    pub rotations: Vec<Signed>,
    /// The online key's certificate by the current root.
    pub online_key: Signed,
    /// The certificate's serial (mirrors the signed one).
    pub serial: u64,
    /// Unix seconds when the certificate ends (mirrors the signed one).
    pub not_after_unix: u64,
}

/// The keys a running coordinator signs with.
#[derive(Debug)]
pub struct KeyRing {
    /// `trust.json`.
    pub trust: TrustFile,
    /// The online secret.
    pub online: SecretKey,
}

fn path(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

fn read_secret(path: &Path) -> Result<Option<SecretKey>> {
    match fs::read_to_string(path) {
        Ok(text) => {
            let seed: tillswarm_protocol::ChunkHash = text
                .trim()
                .parse()
                .map_err(|_| Error::Internal(format!("{} is not a 64-hex key", path.display())))?;
            Ok(Some(SecretKey::from_seed(seed.0)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Writes a secret to a new file readable only by its owner.
pub fn write_secret(path: &Path, key: &SecretKey) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(
        tillswarm_protocol::ChunkHash(key.to_seed())
            .to_hex()
            .as_bytes(),
    )?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)?;
    Ok(())
}

fn new_secret() -> Result<SecretKey> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| Error::Internal(format!("no OS randomness: {e}")))?;
    Ok(SecretKey::from_seed(seed))
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn write_trust(dir: &Path, trust: &TrustFile) -> Result<()> {
    let tmp = path(dir, "trust.json.tmp");
    let text = serde_json::to_string_pretty(trust).map_err(|e| Error::Internal(e.to_string()))?;
    fs::write(&tmp, text + "\n")?;
    fs::File::open(&tmp)?.sync_all()?;
    fs::rename(&tmp, path(dir, "trust.json"))?;
    fs::write(path(dir, "coordinator.pub"), format!("{}\n", trust.root))?;
    Ok(())
}

fn certify(
    root: &SecretKey,
    root_version: u64,
    serial: u64,
    online: &SecretKey,
    days: u64,
) -> (Signed, u64) {
    let not_after = now_unix() + days.max(1) * 86_400;
    let cert = OnlineKey {
        root_version,
        serial,
        key: online.public(),
        not_after_unix: not_after,
    };
    (Signed::sign(root, Domain::OnlineKey, &cert), not_after)
}

/// Loads the keys of `dir`, creating what is missing on a first start (a root
/// unless one was moved offline, an online key certified by it). A folder
/// whose root is offline and has no online key yet is refused with the
/// command to run.
pub fn load_or_init(dir: &Path) -> Result<KeyRing> {
    // Before the key hierarchy: the single key becomes the root.
    let legacy = path(dir, "coordinator.key");
    if legacy.exists() && !path(dir, "root.key").exists() && !path(dir, "trust.json").exists() {
        fs::rename(&legacy, path(dir, "root.key"))?;
        tracing::info!("the former manifest signing key is now the root key");
    }
    if let (Some(online), Ok(text)) = (
        read_secret(&path(dir, "online.key"))?,
        fs::read_to_string(path(dir, "trust.json")),
    ) {
        let trust: TrustFile =
            serde_json::from_str(&text).map_err(|e| Error::Internal(format!("trust.json: {e}")))?;
        return Ok(KeyRing { trust, online });
    }
    let root = match read_secret(&path(dir, "root.key"))? {
        Some(root) => root,
        None if path(dir, "trust.json").exists() => {
            return Err(Error::Internal(format!(
                "no online key in {} and the root key is offline: run `tillswarm coordinator keys rotate-online --root-key FILE --data {}`",
                dir.display(),
                dir.display()
            )));
        }
        None => {
            let root = new_secret()?;
            write_secret(&path(dir, "root.key"), &root)?;
            tracing::info!(root = %root.public(), "created the root key");
            root
        }
    };
    let online = new_secret()?;
    let (online_key, not_after) = certify(&root, 1, 1, &online, DEFAULT_ONLINE_DAYS);
    let trust = TrustFile {
        root_version: 1,
        root: root.public(),
        rotations: Vec::new(),
        online_key,
        serial: 1,
        not_after_unix: not_after,
    };
    write_secret(&path(dir, "online.key"), &online)?;
    write_trust(dir, &trust)?;
    tracing::info!(online = %online.public(), "created and certified the online key");
    Ok(KeyRing { trust, online })
}

/// The root secret: from `file`, or from the data folder.
fn root_secret(dir: &Path, file: Option<&Path>) -> Result<SecretKey> {
    let path = file.map_or_else(|| path(dir, "root.key"), Path::to_path_buf);
    let root = read_secret(&path)?.ok_or_else(|| {
        Error::bad(
            "no_root_key",
            format!("no root key at {} (pass --root-key FILE)", path.display()),
        )
    })?;
    Ok(root)
}

/// `keys init`: creates the keys if missing; with `root_out`, moves the root
/// secret there (out of the data folder). Returns the keys.
pub fn init(dir: &Path, root_out: Option<&Path>) -> Result<KeyRing> {
    fs::create_dir_all(dir)?;
    let ring = load_or_init(dir)?;
    if let Some(out) = root_out {
        let root = root_secret(dir, None)?;
        write_secret(out, &root)?;
        fs::remove_file(path(dir, "root.key"))?;
    }
    Ok(ring)
}

/// `keys rotate-online`: a new online key, certified by the root for `days`.
/// Tills accept it at their next poll without being touched; the running
/// coordinator picks it up within a scheduler tick and re-signs its manifests.
pub fn rotate_online(dir: &Path, root_file: Option<&Path>, days: u64) -> Result<TrustFile> {
    let ring = load_or_init(dir)?;
    let root = root_secret(dir, root_file)?;
    if root.public() != ring.trust.root {
        return Err(Error::bad(
            "wrong_root_key",
            "that is not the current root key",
        ));
    }
    let online = new_secret()?;
    let serial = ring.trust.serial + 1;
    let (online_key, not_after) = certify(&root, ring.trust.root_version, serial, &online, days);
    let trust = TrustFile {
        online_key,
        serial,
        not_after_unix: not_after,
        ..ring.trust
    };
    write_secret(&path(dir, "online.key"), &online)?;
    write_trust(dir, &trust)?;
    Ok(trust)
}

/// `keys rotate-root`: a new root, announced by a rotation the old root signs,
/// and a new online key certified by it. The new root secret goes to
/// `new_root_out`, or into the data folder.
pub fn rotate_root(
    dir: &Path,
    root_file: Option<&Path>,
    new_root_out: Option<&Path>,
    days: u64,
) -> Result<TrustFile> {
    let ring = load_or_init(dir)?;
    let old = root_secret(dir, root_file)?;
    if old.public() != ring.trust.root {
        return Err(Error::bad(
            "wrong_root_key",
            "that is not the current root key",
        ));
    }
    let new_root = new_secret()?;
    let version = ring.trust.root_version + 1;
    let mut rotations = ring.trust.rotations.clone();
    rotations.push(Signed::sign(
        &old,
        Domain::RootRotation,
        &RootRotation {
            version,
            new_root: new_root.public(),
        },
    ));
    let online = new_secret()?;
    let serial = ring.trust.serial + 1;
    let (online_key, not_after) = certify(&new_root, version, serial, &online, days);
    match new_root_out {
        Some(out) => {
            write_secret(out, &new_root)?;
            let _ = fs::remove_file(path(dir, "root.key"));
        }
        None => write_secret(&path(dir, "root.key"), &new_root)?,
    }
    let trust = TrustFile {
        root_version: version,
        root: new_root.public(),
        rotations,
        online_key,
        serial,
        not_after_unix: not_after,
    };
    write_secret(&path(dir, "online.key"), &online)?;
    write_trust(dir, &trust)?;
    Ok(trust)
}

/// The identity of `trust.json` as last loaded (its length and change time),
/// to notice a rotation made by the command line while running.
pub fn stamp(dir: &Path) -> Option<(u64, std::time::SystemTime)> {
    let m = fs::metadata(path(dir, "trust.json")).ok()?;
    Some((m.len(), m.modified().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use tillswarm_protocol::trust::TrustState;

    #[test]
    fn first_start_makes_a_root_and_a_certified_online_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = load_or_init(dir.path()).expect("create");
        let b = load_or_init(dir.path()).expect("load");
        assert_eq!(a.trust, b.trust);
        for f in ["root.key", "online.key"] {
            let mode = fs::metadata(dir.path().join(f))
                .expect("stat")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        let pinned: PublicKey = fs::read_to_string(dir.path().join("coordinator.pub"))
            .expect("pub")
            .trim()
            .parse()
            .expect("key");
        let mut till = TrustState::pinned(pinned);
        let online = till
            .accept_online_key(&a.trust.online_key, now_unix())
            .expect("certified");
        assert_eq!(online, a.online.public());
    }

    #[test]
    fn a_legacy_single_key_becomes_the_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old = SecretKey::from_seed([5; 32]);
        write_secret(&dir.path().join("coordinator.key"), &old).expect("legacy");
        let ring = load_or_init(dir.path()).expect("migrate");
        assert_eq!(
            ring.trust.root,
            old.public(),
            "tills that pinned it keep working"
        );
        assert_ne!(ring.online.public(), old.public());
    }

    #[test]
    fn rotations_keep_tills_on_the_chain_and_an_offline_root_is_asked_for() {
        let dir = tempfile::tempdir().expect("tempdir");
        let offline = dir.path().join("offline-root.key");
        let data = dir.path().join("data");
        let first = init(&data, Some(&offline)).expect("init");
        assert!(!data.join("root.key").exists(), "moved out");
        assert!(
            rotate_online(&data, None, 30).is_err(),
            "the root is offline"
        );
        let mut till = TrustState::pinned(first.trust.root);
        let t2 = rotate_online(&data, Some(&offline), 30).expect("rotate online");
        assert_eq!(t2.serial, 2);
        till.accept_online_key(&t2.online_key, now_unix())
            .expect("new online key");
        let new_root = dir.path().join("new-root.key");
        let t3 = rotate_root(&data, Some(&offline), Some(&new_root), 30).expect("rotate root");
        till.rotate_root(&t3.rotations).expect("rotation");
        assert_eq!((till.root, till.root_version), (t3.root, 2));
        till.accept_online_key(&t3.online_key, now_unix())
            .expect("online under the new root");
        let wrong = dir.path().join("wrong.key");
        write_secret(&wrong, &SecretKey::from_seed([9; 32])).expect("wrong");
        assert!(rotate_online(&data, Some(&wrong), 30).is_err());
        // The retired root cannot certify any more.
        assert!(rotate_online(&data, Some(&offline), 30).is_err());
    }
}
