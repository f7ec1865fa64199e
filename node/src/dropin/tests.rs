//! Scans of an `update/` folder as people leave it: loose folders with and
//! without permission, archives, hidden and staged folders, broken bundles.
//! (A genuine bundle end to end: tests/tests/manual_path.rs.)

use tillswarm_protocol::manifest::SecretKey;

use super::*;

struct Till {
    dir: tempfile::TempDir,
    store: ChunkStore,
    state: State,
    trust: TrustState,
}

impl Till {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ChunkStore::open(&dir.path().join("chunks")).expect("store");
        let state = State::open(&dir.path().join("state")).expect("state");
        let trust = TrustState::pinned(SecretKey::from_seed([1; 32]).public());
        fs::create_dir_all(dir.path().join("update")).expect("mkdir");
        Self {
            dir,
            store,
            state,
            trust,
        }
    }

    fn update(&self) -> PathBuf {
        self.dir.path().join("update")
    }

    fn folder(&self, name: &str, script: bool) -> PathBuf {
        let dir = self.update().join(name);
        fs::create_dir_all(&dir).expect("mkdir");
        if script {
            fs::write(dir.join("up.sh"), format!("echo {name}")).expect("write");
        }
        dir
    }

    fn scan(&self, installed: &str, allow_unsigned: bool) -> Vec<String> {
        let installed: Version = installed.parse().expect("version");
        Scan {
            update_dir: &self.update(),
            installed: Some(&installed),
            trust: &self.trust,
            now_unix: 1_800_000_000,
            store: &self.store,
            room: Some(1 << 30),
            allow_unsigned,
            state: &self.state,
        }
        .run()
        .expect("scan")
    }

    /// The drop-in task's version, if one is on offer.
    fn offered(&self) -> Option<String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        runtime
            .block_on(self.state.tasks())
            .expect("tasks")
            .into_iter()
            .find(|t| t.assignment.task_id == crate::state::DROP_IN_TASK)
            .map(|t| t.assignment.version.to_string())
    }
}

/// Sets a file's modification time far enough back that it counts as settled.
fn age(path: &Path) {
    let f = fs::File::options().write(true).open(path).expect("open");
    f.set_modified(SystemTime::now() - SETTLE * 2)
        .expect("mtime");
}

#[test]
fn unsigned_folders_are_refused_by_default_and_reported_once() {
    let till = Till::new();
    let dir = till.folder("1.2", true);
    let warnings = till.scan("1.1", false);
    assert!(
        warnings.len() == 1 && warnings[0].starts_with("unsigned_dropin_refused 1.2: "),
        "{warnings:?}"
    );
    assert_eq!(till.offered(), None);
    assert!(dir.join(REFUSED_MARKER).is_file());
    assert!(till.scan("1.1", false).is_empty(), "reported again");
    assert_eq!(till.offered(), None);
}

#[test]
fn with_permission_the_newest_foreign_folder_is_offered() {
    let till = Till::new();
    till.folder("1.0", true);
    till.folder("1.2", true);
    till.folder("1.5", false); // no up.sh: not a package
    till.folder(".2.0.partial", true); // ours, in progress
    till.folder("notes", true); // not a version
    let staged = till.folder("1.9", true);
    fs::write(staged.join(STAGED_MARKER), "x").expect("marker"); // staged by the node
    assert!(till.scan("1.1", true).is_empty());
    assert_eq!(till.offered().as_deref(), Some("1.2"));
    // An older loose folder found later does not replace the newer offer.
    let other = Till::new();
    other.folder("1.3", true);
    assert!(other.scan("1.1", true).is_empty());
    other.folder("1.2", true);
    other.scan("1.1", true);
    assert_eq!(other.offered().as_deref(), Some("1.3"));
}

#[test]
fn with_permission_a_lone_archive_is_unpacked_under_the_archive_rules() {
    let till = Till::new();
    let good = till.folder("3.0", false);
    fs::write(good.join("package.tar"), tar(&[("up.sh", b"echo hi\n")])).expect("write");
    till.scan("1.0", true);
    assert_eq!(till.offered().as_deref(), Some("3.0"));
    assert!(good.join("up.sh").is_file());

    let till = Till::new();
    let evil = till.folder("4.0", false);
    fs::write(
        evil.join("package.tar"),
        tar(&[("up.sh", b"echo hi\n"), ("../../escaped", b"x")]),
    )
    .expect("write");
    let warnings = till.scan("1.0", true);
    assert!(
        warnings.len() == 1 && warnings[0].starts_with("dropin_refused 4.0: "),
        "{warnings:?}"
    );
    assert!(!till.dir.path().join("escaped").exists());
    assert!(
        !evil.join("up.sh").exists(),
        "part of a refused archive was kept"
    );
    assert_eq!(till.offered(), None, "a refused archive was offered");
}

#[test]
fn a_broken_bundle_is_refused_renamed_and_reported() {
    let till = Till::new();
    let path = till.update().join("demo-2.0.tsb");
    fs::write(&path, b"not a tar at all, just words").expect("write");
    // Still being copied: left alone.
    assert!(till.scan("1.0", false).is_empty());
    assert!(path.exists());
    age(&path);
    let warnings = till.scan("1.0", false);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with("dropin_refused demo-2.0.tsb: "),
        "{warnings:?}"
    );
    assert!(!path.exists());
    assert!(till.update().join("demo-2.0.tsb.refused").exists());
    assert_eq!(till.offered(), None);
}

#[test]
fn a_bundle_signed_by_another_chain_is_refused() {
    let till = Till::new();
    // A well-formed bundle whose key chain starts from a root this till does
    // not pin.
    let stranger = SecretKey::from_seed([9; 32]);
    let cert = tillswarm_protocol::trust::Signed::sign(
        &stranger,
        tillswarm_protocol::trust::Domain::OnlineKey,
        &tillswarm_protocol::trust::OnlineKey {
            root_version: 1,
            serial: 1,
            key: stranger.public(),
            not_after_unix: 1_900_000_000,
        },
    );
    let header = bundle::BundleHeader {
        format: bundle::FORMAT,
        name: "demo".into(),
        version: "2.0".parse().expect("version"),
    };
    let chain = bundle::BundleTrust {
        rotations: Vec::new(),
        online_key: cert,
    };
    let bytes = tar(&[
        (
            bundle::HEADER_FILE,
            &serde_json::to_vec(&header).expect("json"),
        ),
        (
            bundle::TRUST_FILE,
            &serde_json::to_vec(&chain).expect("json"),
        ),
    ]);
    let path = till.update().join("evil.tsb");
    fs::write(&path, bytes).expect("write");
    age(&path);
    let warnings = till.scan("1.0", true);
    assert!(
        warnings.len() == 1 && warnings[0].contains("does not verify"),
        "{warnings:?}"
    );
    assert_eq!(till.offered(), None);
}

fn tar(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut h = tar::Header::new_gnu();
        // Written raw so that a hostile name (`..`) survives.
        h.as_gnu_mut().expect("gnu").name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_size(data.len() as u64);
        h.set_mode(0o755);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append(&h, *data).expect("append");
    }
    b.into_inner().expect("tar")
}
