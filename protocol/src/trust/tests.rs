//! TUF's attack cases, as they apply here: arbitrary instructions, a key not
//! certified by the root, rollback, replay, freeze, mix-and-match, wrong
//! device, rotations of the online and the root key, and domain separation.

use super::*;
use crate::api::TaskKind;
use crate::id::{PackageId, TaskId};

const NOW: u64 = 1_800_000_000;
const DAY: u64 = 86_400;

fn key(n: u8) -> SecretKey {
    SecretKey::from_seed([n; 32])
}

fn device(n: u8) -> DeviceId {
    DeviceId::from_bytes([n; 16])
}

fn cert(
    root: &SecretKey,
    root_version: u64,
    serial: u64,
    online: &SecretKey,
    not_after: u64,
) -> Signed {
    Signed::sign(
        root,
        Domain::OnlineKey,
        &OnlineKey {
            root_version,
            serial,
            key: online.public(),
            not_after_unix: not_after,
        },
    )
}

fn timestamp(online: &SecretKey, d: DeviceId, revision: u64, expires: u64) -> Signed {
    Signed::sign(
        online,
        Domain::Timestamp,
        &Timestamp {
            device: d,
            revision,
            expires_unix: expires,
        },
    )
}

fn assignment(version: &str, rollback: bool) -> Assignment {
    Assignment {
        task_id: TaskId(7),
        kind: TaskKind::ForcedUpdate,
        package_id: PackageId::of(version.as_bytes()),
        package_name: "demo".into(),
        version: version.parse().expect("version"),
        size: 1,
        install_at_unix: None,
        rollback,
        attempt: 1,
        join_by_unix_ms: None,
        store_peers: Vec::new(),
        store_holders: Vec::new(),
        hold_install: false,
        install_until_unix: None,
    }
}

fn instructions(
    online: &SecretKey,
    d: DeviceId,
    revision: u64,
    expires: u64,
    a: Vec<Assignment>,
) -> Signed {
    Signed::sign(
        online,
        Domain::Instructions,
        &Instructions {
            device: d,
            revision,
            issued_unix: NOW,
            expires_unix: expires,
            assignments: a,
            settings: TillSettings::default(),
            store_members: Vec::new(),
            chunk_base_url: None,
        },
    )
}

/// A coordinator's keys and the bundle it would send `d` at `revision`.
struct Coordinator {
    root: SecretKey,
    online: SecretKey,
    serial: u64,
    rotations: Vec<Signed>,
    root_version: u64,
}

impl Coordinator {
    fn new() -> Self {
        Self {
            root: key(1),
            online: key(2),
            serial: 1,
            rotations: Vec::new(),
            root_version: 1,
        }
    }

    fn bundle(&self, d: DeviceId, revision: u64, with_instructions: bool) -> TrustBundle {
        TrustBundle {
            rotations: self.rotations.clone(),
            online_key: cert(
                &self.root,
                self.root_version,
                self.serial,
                &self.online,
                NOW + 365 * DAY,
            ),
            timestamp: timestamp(&self.online, d, revision, NOW + DAY),
            instructions: with_instructions.then(|| {
                instructions(
                    &self.online,
                    d,
                    revision,
                    NOW + DAY,
                    vec![assignment("2.0", false)],
                )
            }),
        }
    }
}

fn till() -> TrustState {
    TrustState::pinned(key(1).public())
}

#[test]
fn a_genuine_bundle_is_accepted_in_order() {
    let c = Coordinator::new();
    let mut s = till();
    let got = s
        .accept(&c.bundle(device(1), 5, true), &device(1), NOW)
        .expect("accepted");
    assert_eq!(got.expect("instructions").assignments.len(), 1);
    assert_eq!(s.revision, 5);
    assert!(!s.is_stale(NOW));
    // An unchanged poll: a fresh timestamp, no instructions.
    assert!(
        s.accept(&c.bundle(device(1), 5, false), &device(1), NOW + 10)
            .expect("fresh")
            .is_none()
    );
}

#[test]
fn arbitrary_instructions_from_anyone_else_are_refused() {
    let c = Coordinator::new();
    let mut s = till();
    let mut b = c.bundle(device(1), 5, true);
    // An attacker signs instructions (a rollback to 1.0) with their own key.
    b.instructions = Some(instructions(
        &key(9),
        device(1),
        5,
        NOW + DAY,
        vec![assignment("1.0", true)],
    ));
    assert_eq!(
        s.accept(&b, &device(1), NOW),
        Err(TrustError::BadSignature("instructions"))
    );
    // The root's key is not the online key either.
    b.instructions = Some(instructions(&c.root, device(1), 5, NOW + DAY, vec![]));
    assert!(s.accept(&b, &device(1), NOW).is_err());
    assert_eq!(s, till(), "a refusal changes nothing");
}

#[test]
fn an_online_key_the_root_did_not_certify_is_refused() {
    let c = Coordinator::new();
    let mut s = till();
    let mut b = c.bundle(device(1), 5, true);
    b.online_key = cert(&key(9), 1, 99, &key(9), NOW + DAY);
    assert_eq!(
        s.accept(&b, &device(1), NOW),
        Err(TrustError::BadSignature("online key certificate"))
    );
}

#[test]
fn older_instructions_are_refused_once_newer_were_seen() {
    let c = Coordinator::new();
    let mut s = till();
    s.accept(&c.bundle(device(1), 7, true), &device(1), NOW)
        .expect("rev 7");
    // Replay of revision 6 (say, before the operator cancelled a task).
    let old = c.bundle(device(1), 6, true);
    assert_eq!(
        s.accept(&old, &device(1), NOW + 60),
        Err(TrustError::Rollback {
            what: "revision",
            got: 6,
            have: 7
        })
    );
}

#[test]
fn a_frozen_till_sees_its_instructions_go_stale() {
    let c = Coordinator::new();
    let mut s = till();
    s.accept(&c.bundle(device(1), 5, true), &device(1), NOW)
        .expect("accepted");
    // A day later, with nothing newer let through, the till knows.
    assert!(s.is_stale(NOW + DAY));
    // And a replayed old timestamp does not fool it.
    assert_eq!(
        s.accept(&c.bundle(device(1), 5, false), &device(1), NOW + DAY + 1),
        Err(TrustError::Expired("timestamp"))
    );
    let mut b = c.bundle(device(1), 6, true);
    b.instructions = Some(instructions(&c.online, device(1), 6, NOW - 1, vec![]));
    assert_eq!(
        s.accept(&b, &device(1), NOW),
        Err(TrustError::Expired("instructions"))
    );
}

#[test]
fn instructions_for_another_till_or_revision_are_refused() {
    let c = Coordinator::new();
    let mut s = till();
    let other = c.bundle(device(2), 5, true);
    assert_eq!(
        s.accept(&other, &device(1), NOW),
        Err(TrustError::WrongDevice)
    );
    // Mix and match: instructions of revision 4 under a timestamp of 5.
    let mut b = c.bundle(device(1), 5, true);
    b.instructions = Some(instructions(&c.online, device(1), 4, NOW + DAY, vec![]));
    assert_eq!(
        s.accept(&b, &device(1), NOW),
        Err(TrustError::Mismatch { got: 4, want: 5 })
    );
}

#[test]
fn a_signature_for_one_kind_never_passes_as_another() {
    let c = Coordinator::new();
    let mut s = till();
    let mut b = c.bundle(device(1), 5, false);
    // The body of a timestamp re-labelled as instructions: the domain differs.
    b.instructions = Some(Signed {
        body: b.timestamp.body.clone(),
        signature: b.timestamp.signature.clone(),
    });
    assert!(matches!(
        s.accept(&b, &device(1), NOW),
        Err(TrustError::BadSignature(_))
    ));
}

#[test]
fn a_rotated_online_key_is_accepted_without_touching_the_till() {
    let mut c = Coordinator::new();
    let mut s = till();
    s.accept(&c.bundle(device(1), 5, true), &device(1), NOW)
        .expect("key 1");
    let old = c.bundle(device(1), 6, true);
    c.online = key(3);
    c.serial = 2;
    s.accept(&c.bundle(device(1), 6, true), &device(1), NOW)
        .expect("key 2");
    assert_eq!(s.online_key(NOW), Some(key(3).public()));
    // The retired key (serial 1) is refused from now on, even if still unexpired.
    assert_eq!(
        s.accept(&old, &device(1), NOW),
        Err(TrustError::Rollback {
            what: "online key serial",
            got: 1,
            have: 2
        })
    );
    // An expired certificate is refused.
    let mut b = c.bundle(device(1), 6, false);
    b.online_key = cert(&c.root, 1, 3, &c.online, NOW - 1);
    assert_eq!(
        s.accept(&b, &device(1), NOW),
        Err(TrustError::Expired("online key certificate"))
    );
}

#[test]
fn a_new_root_signed_by_the_old_one_takes_over() {
    let mut c = Coordinator::new();
    let mut s = till();
    s.accept(&c.bundle(device(1), 5, true), &device(1), NOW)
        .expect("root 1");
    let new_root = key(4);
    c.rotations.push(Signed::sign(
        &c.root,
        Domain::RootRotation,
        &RootRotation {
            version: 2,
            new_root: new_root.public(),
        },
    ));
    // The coordinator still certifies with the old root: refused after the rotation.
    assert!(matches!(
        s.clone()
            .accept(&c.bundle(device(1), 6, true), &device(1), NOW),
        Err(TrustError::BadSignature("online key certificate"))
    ));
    c.root = new_root;
    c.root_version = 2;
    c.serial = 2;
    s.accept(&c.bundle(device(1), 6, true), &device(1), NOW)
        .expect("root 2");
    assert_eq!((s.root, s.root_version), (key(4).public(), 2));
    // Rotations already applied are skipped on later polls.
    s.accept(&c.bundle(device(1), 6, false), &device(1), NOW + 1)
        .expect("again");
}

#[test]
fn a_forged_or_out_of_order_root_rotation_is_refused() {
    let mut s = till();
    let forged = Signed::sign(
        &key(9),
        Domain::RootRotation,
        &RootRotation {
            version: 2,
            new_root: key(9).public(),
        },
    );
    assert_eq!(
        s.rotate_root(&[forged]),
        Err(TrustError::BadSignature("root rotation"))
    );
    let skipping = Signed::sign(
        &key(1),
        Domain::RootRotation,
        &RootRotation {
            version: 3,
            new_root: key(5).public(),
        },
    );
    assert_eq!(
        s.rotate_root(&[skipping]),
        Err(TrustError::RotationGap { got: 3, have: 1 })
    );
    assert_eq!(s, till());
}

#[test]
fn hostile_documents_are_refused_without_panicking() {
    let s = till();
    for signed in [
        Signed {
            body: "{}".into(),
            signature: "zz".into(),
        },
        Signed {
            body: "x".repeat(MAX_SIGNED_LEN + 1),
            signature: "00".repeat(64),
        },
        Signed {
            body: "\u{0}".into(),
            signature: String::new(),
        },
    ] {
        assert!(
            signed
                .open::<OnlineKey>(&s.root, Domain::OnlineKey, "x")
                .is_err()
        );
    }
    // Signed correctly, but not the document it claims to be.
    let odd = Signed::sign(
        &key(1),
        Domain::OnlineKey,
        &serde_json::json!({"serial": "x"}),
    );
    assert!(matches!(
        odd.open::<OnlineKey>(&key(1).public(), Domain::OnlineKey, "x"),
        Err(TrustError::Malformed(_))
    ));
}

#[test]
fn chunk_base_urls_are_plain_http_urls() {
    for ok in [
        "https://cdn.example.com/tillswarm",
        "http://10.0.0.5:9000/chunks/prod",
        "https://h",
    ] {
        assert!(is_chunk_base_url(ok), "{ok}");
    }
    let long = format!("https://h/{}", "a".repeat(MAX_CHUNK_BASE_URL));
    for bad in [
        "",
        "ftp://h/x",
        "https://",
        "https:///path",
        "https://h/x/",
        "https://h/x?sig=1",
        "https://h/x#f",
        "https://h/a b",
        "https://h/\u{e9}",
        long.as_str(),
    ] {
        assert!(!is_chunk_base_url(bad), "{bad}");
    }
}
