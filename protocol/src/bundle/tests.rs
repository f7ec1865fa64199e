//! Bundles as a till meets them: genuine, from another chain, with a key the
//! root never certified, expired, tampered with, reordered or padded.

use super::*;
use crate::chunking::chunk_reader;
use crate::manifest::SecretKey;
use crate::trust::{Domain, OnlineKey};

const NOW: u64 = 1_800_000_000;

fn key(n: u8) -> SecretKey {
    SecretKey::from_seed([n; 32])
}

fn cert(root: &SecretKey, online: &SecretKey, not_after: u64) -> Signed {
    Signed::sign(
        root,
        Domain::OnlineKey,
        &OnlineKey {
            root_version: 1,
            serial: 1,
            key: online.public(),
            not_after_unix: not_after,
        },
    )
}

/// A package of a few chunks (random bytes, so they do not repeat).
fn package() -> Vec<u8> {
    let mut state = 0x1234_5678_u64;
    (0..3 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

struct Parts {
    header: Vec<u8>,
    trust: Vec<u8>,
    manifest: Vec<u8>,
    package: Vec<u8>,
}

fn parts(root: &SecretKey, signer: &SecretKey, not_after: u64) -> Parts {
    let package = package();
    let chunked = chunk_reader(crate::Chunker::V1, &package[..]).expect("chunk");
    let version: Version = "2.0".parse().expect("version");
    let manifest = Manifest::new("demo", version.clone(), &chunked, NOW, 1).expect("manifest");
    let header = BundleHeader {
        format: FORMAT,
        name: "demo".into(),
        version,
    };
    let chain = BundleTrust {
        rotations: Vec::new(),
        online_key: cert(root, &key(2), not_after),
    };
    Parts {
        header: serde_json::to_vec(&header).expect("json"),
        trust: serde_json::to_vec(&chain).expect("json"),
        manifest: signer.sign_manifest(&manifest).to_bytes(),
        package,
    }
}

fn tar(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let h = entry_header(name, data.len() as u64, NOW).expect("header");
        b.append(&h, *data).expect("append");
    }
    b.into_inner().expect("tar")
}

fn bundle(p: &Parts) -> Vec<u8> {
    tar(&[
        (HEADER_FILE, &p.header),
        (TRUST_FILE, &p.trust),
        (MANIFEST_FILE, &p.manifest),
        (PACKAGE_FILE, &p.package),
    ])
}

fn till() -> TrustState {
    TrustState::pinned(key(1).public())
}

/// Reads `bytes` as a till pinning key 1; the chunks it kept.
fn open(bytes: &[u8]) -> (Result<Manifest, BundleError>, usize) {
    let mut kept = 0;
    let r = read(bytes, &till(), NOW, |_, _| {
        kept += 1;
        Ok(())
    });
    (r, kept)
}

#[test]
fn a_genuine_bundle_verifies_and_hands_over_every_chunk() {
    let p = parts(&key(1), &key(2), NOW + 100);
    let (m, kept) = open(&bundle(&p));
    let m = m.expect("genuine");
    assert_eq!(m.version.as_str(), "2.0");
    assert!(m.chunks.len() > 1);
    assert_eq!(kept, m.chunks.len());
}

#[test]
fn bundles_that_do_not_verify_from_the_pinned_root_are_refused_before_any_chunk() {
    for (what, p) in [
        ("another chain's root", parts(&key(9), &key(2), NOW + 100)),
        (
            "a manifest signed by an uncertified key",
            parts(&key(1), &key(3), NOW + 100),
        ),
        ("an expired online key", parts(&key(1), &key(2), NOW)),
    ] {
        let (r, kept) = open(&bundle(&p));
        assert!(matches!(r, Err(BundleError::Untrusted(_))), "{what}: {r:?}");
        assert_eq!(kept, 0, "{what}");
    }
}

#[test]
fn a_tampered_package_is_refused_at_the_first_bad_chunk() {
    let mut p = parts(&key(1), &key(2), NOW + 100);
    let last = p.package.len() - 1;
    p.package[last] ^= 1;
    let (r, kept) = open(&bundle(&p));
    assert!(matches!(r, Err(BundleError::Mismatch(_))), "{r:?}");
    let m = open(&bundle(&parts(&key(1), &key(2), NOW + 100)))
        .0
        .expect("genuine");
    assert_eq!(
        kept,
        m.chunks.len() - 1,
        "the chunks before the bad one only"
    );
    // Shorter than the manifest says.
    let mut p = parts(&key(1), &key(2), NOW + 100);
    p.package.truncate(1 << 20);
    assert!(matches!(open(&bundle(&p)).0, Err(BundleError::Mismatch(_))));
}

#[test]
fn anything_but_the_four_entries_in_order_is_refused() {
    let p = parts(&key(1), &key(2), NOW + 100);
    let reordered = tar(&[
        (TRUST_FILE, &p.trust),
        (HEADER_FILE, &p.header),
        (MANIFEST_FILE, &p.manifest),
        (PACKAGE_FILE, &p.package),
    ]);
    let missing = tar(&[(HEADER_FILE, &p.header), (TRUST_FILE, &p.trust)]);
    let big = vec![b' '; MAX_META_BYTES as usize + 1];
    let oversized = tar(&[(HEADER_FILE, &big)]);
    let mut wrong_format = p.header.clone();
    wrong_format = String::from_utf8(wrong_format)
        .expect("utf8")
        .replace("\"format\":1", "\"format\":7")
        .into_bytes();
    let future = tar(&[(HEADER_FILE, &wrong_format)]);
    for (what, bytes) in [
        ("reordered", reordered),
        ("missing entries", missing),
        ("an oversized header", oversized),
        ("another format", future),
        ("not a tar", b"hello".repeat(200)),
    ] {
        let (r, kept) = open(&bytes);
        assert!(r.is_err(), "{what}");
        assert_eq!(kept, 0, "{what}");
    }
    // A link where a file belongs.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_path(HEADER_FILE).expect("path");
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_link_name("/etc/shadow").expect("link");
    h.set_size(0);
    h.set_cksum();
    b.append(&h, &[][..]).expect("append");
    let (r, _) = open(&b.into_inner().expect("tar"));
    assert!(matches!(r, Err(BundleError::Malformed(_))), "{r:?}");
}
