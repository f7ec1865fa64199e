//! Property tests of the protocol's promises: chunking is deterministic, tiles its
//! input and is local to edits; manifests round-trip and every tamper is caught;
//! decoders survive hostile bytes.

use proptest::prelude::*;
use rand::{RngCore, SeedableRng, rngs::StdRng};
use tillswarm_protocol::archive::UploadFormat;
use tillswarm_protocol::chunking::{Chunker, MAX_CHUNK};
use tillswarm_protocol::manifest::{
    self, ChunkRef, Manifest, ManifestError, SecretKey, SignedManifest, Upload,
};
use tillswarm_protocol::wire::{self, PeerMessage};
use tillswarm_protocol::{ChunkHash, PackageId, Version, chunk_reader};

fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    /// Same input, same chunks; chunks tile the input and hash to their bytes.
    #[test]
    fn chunking_is_deterministic_and_tiles_the_input(len in 0usize..6_000_000, seed: u64) {
        let data = bytes(len, seed);
        let a = chunk_reader(Chunker::CURRENT, &data[..]).expect("chunk");
        let b = chunk_reader(Chunker::CURRENT, &data[..]).expect("chunk");
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(a.package_id, PackageId::of(&data));
        let mut rebuilt = Vec::with_capacity(len);
        for (i, c) in a.chunks.iter().enumerate() {
            prop_assert_eq!(c.offset as usize, rebuilt.len());
            prop_assert!(c.length as usize <= Chunker::CURRENT.max());
            prop_assert!(i + 1 == a.chunks.len() || c.length as usize >= Chunker::CURRENT.min());
            let piece = &data[c.offset as usize..][..c.length as usize];
            prop_assert_eq!(c.hash, ChunkHash::of(piece));
            rebuilt.extend_from_slice(piece);
        }
        prop_assert_eq!(rebuilt, data);
    }

    /// Low-entropy input (long runs) still tiles and respects the maximum.
    #[test]
    fn chunking_handles_runs(runs in proptest::collection::vec((any::<u8>(), 1usize..3_000_000), 1..6)) {
        let data: Vec<u8> = runs.iter().flat_map(|&(b, n)| std::iter::repeat_n(b, n)).collect();
        let f = chunk_reader(Chunker::CURRENT, &data[..]).expect("chunk");
        prop_assert_eq!(f.size as usize, data.len());
        prop_assert!(f.chunks.iter().all(|c| c.length as usize <= Chunker::CURRENT.max()));
        prop_assert_eq!(f.chunks.iter().map(|c| u64::from(c.length)).sum::<u64>(), f.size);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, .. ProptestConfig::default() })]

    /// A one-byte edit in a 20 MB input changes at most 3 chunks.
    #[test]
    fn one_byte_edit_is_local(seed: u64, at in 0usize..20_000_000, delta in 1u8..=255, v1: bool) {
        let chunker = if v1 { Chunker::V1 } else { Chunker::V2 };
        let mut data = bytes(20_000_000, seed);
        let before = chunk_reader(chunker, &data[..]).expect("chunk");
        data[at] = data[at].wrapping_add(delta);
        let after = chunk_reader(chunker, &data[..]).expect("chunk");
        let old: std::collections::HashSet<_> = before.chunks.iter().map(|c| c.hash).collect();
        let changed = after.chunks.iter().filter(|c| !old.contains(&c.hash)).count();
        prop_assert!(changed >= 1, "the edit must change some chunk");
        prop_assert!(changed <= 3, "{} chunks changed for a one-byte edit at {}", changed, at);
    }
}

fn arb_manifest() -> impl Strategy<Value = Manifest> {
    (
        "[a-z][a-z0-9._-]{0,40}",
        proptest::collection::vec(0u32..100_000, 1..4),
        proptest::collection::vec(
            (any::<[u8; 32]>(), 1u32..=MAX_CHUNK as u32, any::<u32>()),
            0..200,
        ),
        any::<[u8; 32]>(),
        any::<u64>(),
    )
        .prop_map(|(name, parts, chunks, id, created)| {
            // All three formats: 1 (no unpacked size), 2, and 3 (content cut
            // by V2, some chunks compressed, an upload).
            let format = created % 3 + 1;
            let version: Version = parts
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(".")
                .parse()
                .expect("generated version parses");
            let chunks: Vec<ChunkRef> = chunks
                .into_iter()
                .map(|(h, length, z)| {
                    if format == 3 {
                        let length = length % Chunker::V2.max() as u32 + 1;
                        ChunkRef {
                            hash: ChunkHash(h),
                            length,
                            zstd_len: z % length,
                        }
                    } else {
                        ChunkRef {
                            hash: ChunkHash(h),
                            length,
                            zstd_len: 0,
                        }
                    }
                })
                .collect();
            Manifest {
                name,
                version,
                size: chunks.iter().map(|c| u64::from(c.length)).sum(),
                package_id: PackageId(id),
                created_unix: created,
                chunks,
                unpacked_size: (format > 1).then_some(created),
                upload: (format == 3).then_some(Upload {
                    id: PackageId([created as u8; 32]),
                    size: created / 7,
                    format: UploadFormat::from_code((created % 4) as u8).expect("0..4"),
                }),
                chunker: if format == 3 {
                    Chunker::V2
                } else {
                    Chunker::V1
                },
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn manifest_round_trips(m in arb_manifest(), seed: [u8; 32]) {
        let key = SecretKey::from_seed(seed);
        let signed = key.sign_manifest(&m);
        let decoded = SignedManifest::from_bytes(&signed.to_bytes()).expect("decode");
        prop_assert_eq!(decoded.verify(&key.public()).expect("verify"), m);
    }

    /// Flipping any bit anywhere in the signed encoding is caught.
    #[test]
    fn every_bit_flip_is_detected(m in arb_manifest(), pos: prop::sample::Index, bit in 0u8..8) {
        let key = SecretKey::from_seed([3; 32]);
        let mut bytes = key.sign_manifest(&m).to_bytes();
        let i = pos.index(bytes.len());
        bytes[i] ^= 1 << bit;
        let verdict = SignedManifest::from_bytes(&bytes).and_then(|s| s.verify(&key.public()));
        prop_assert!(verdict.is_err(), "flip of bit {} at byte {} went unnoticed", bit, i);
    }

    /// Any truncation is caught.
    #[test]
    fn every_truncation_is_detected(m in arb_manifest(), cut: prop::sample::Index) {
        let key = SecretKey::from_seed([4; 32]);
        let bytes = key.sign_manifest(&m).to_bytes();
        let len = cut.index(bytes.len());
        let verdict = SignedManifest::from_bytes(&bytes[..len]).and_then(|s| s.verify(&key.public()));
        prop_assert!(verdict.is_err());
    }

    /// A changed field, re-encoded but not re-signed, is caught.
    #[test]
    fn changed_fields_are_detected(m in arb_manifest(), which in 0usize..5) {
        let key = SecretKey::from_seed([5; 32]);
        let signed = key.sign_manifest(&m);
        let mut forged = m.clone();
        match which {
            0 => forged.name.push('x'),
            1 => forged.version = "999.0.1".parse().expect("version"),
            2 => forged.package_id.0[0] ^= 1,
            3 => forged.created_unix = forged.created_unix.wrapping_add(1),
            _ => forged.chunks.push(ChunkRef { hash: ChunkHash([9; 32]), length: 1, zstd_len: 0 }),
        }
        forged.size = forged.chunks.iter().map(|c| u64::from(c.length)).sum();
        let swapped = SignedManifest { body: forged.canonical_bytes(), signature: signed.signature.clone() };
        prop_assert_eq!(swapped.verify(&key.public()), Err(ManifestError::BadSignature));
    }

    /// Another key's signature is refused.
    #[test]
    fn wrong_key_is_refused(m in arb_manifest(), a: [u8; 32], b: [u8; 32]) {
        prop_assume!(a != b);
        let signed = SecretKey::from_seed(a).sign_manifest(&m);
        prop_assert_eq!(signed.verify(&SecretKey::from_seed(b).public()), Err(ManifestError::BadSignature));
    }

    /// Decoders return errors, never panic, on random bytes.
    #[test]
    fn decoders_survive_random_bytes(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = wire::decode(&data);
        let _ = wire::read_frame(&mut &data[..]);
        let _ = SignedManifest::from_bytes(&data).map(|s| s.verify(&SecretKey::from_seed([1; 32]).public()));
    }

    /// Every strict prefix of a valid message fails to decode.
    #[test]
    fn truncated_messages_are_refused(data in proptest::collection::vec(any::<u8>(), 1..2048), cut: prop::sample::Index) {
        let msg = PeerMessage::Chunk { hash: ChunkHash::of(&data), data: data.clone() };
        let mut framed = Vec::new();
        wire::write_frame(&mut framed, &msg).expect("frame");
        let len = cut.index(framed.len());
        prop_assert!(wire::read_frame(&mut &framed[..len]).is_err());
        let body = wire::encode(&msg);
        prop_assert!(wire::decode(&body[..cut.index(body.len())]).is_err());
    }
}

#[test]
fn unknown_format_version_is_refused_even_when_signed() {
    // A future format, correctly signed, must still be refused by this build.
    let key = SecretKey::from_seed([6; 32]);
    let m = Manifest {
        name: "demo".into(),
        version: "1.0".parse().expect("version"),
        size: 0,
        package_id: PackageId::of(b""),
        created_unix: 0,
        chunks: vec![],
        unpacked_size: Some(0),
        upload: None,
        chunker: Chunker::V1,
    };
    let mut body = m.canonical_bytes();
    body[4..6].copy_from_slice(&(manifest::FORMAT_VERSION + 1).to_le_bytes());
    // Re-sign the altered body the way the coordinator signs.
    let resigned = resign(&key, body);
    assert_eq!(
        resigned.verify(&key.public()),
        Err(ManifestError::UnknownFormat(manifest::FORMAT_VERSION + 1))
    );
}

fn resign(key: &SecretKey, body: Vec<u8>) -> SignedManifest {
    // sign_manifest only takes a Manifest; build the same message by hand.
    use ed25519_dalek::Signer;
    let sk = ed25519_dalek::SigningKey::from_bytes(&key.to_seed());
    let mut msg = b"tillswarm/manifest/v1\0".to_vec();
    msg.extend_from_slice(&body);
    SignedManifest {
        body,
        signature: sk.sign(&msg).to_bytes().to_vec(),
    }
}

#[test]
fn oversized_inputs_are_refused_before_parsing() {
    let huge = vec![0u8; manifest::MAX_SIGNED_MANIFEST_BYTES + 1];
    assert!(matches!(
        SignedManifest::from_bytes(&huge),
        Err(ManifestError::Malformed(_))
    ));
    let frame = vec![0u8; wire::MAX_FRAME + 1];
    assert!(matches!(
        wire::decode(&frame),
        Err(wire::WireError::TooLarge(_))
    ));
}

#[test]
fn signed_but_inconsistent_manifests_are_refused() {
    let key = SecretKey::from_seed([8; 32]);
    let m = Manifest {
        name: "demo".into(),
        version: "1.0".parse().expect("version"),
        size: 10, // chunks add up to 5
        package_id: PackageId::of(b""),
        created_unix: 0,
        chunks: vec![ChunkRef {
            hash: ChunkHash([1; 32]),
            length: 5,
            zstd_len: 0,
        }],
        unpacked_size: Some(5),
        upload: None,
        chunker: Chunker::V1,
    };
    let signed = resign(&key, m.canonical_bytes());
    assert!(matches!(
        signed.verify(&key.public()),
        Err(ManifestError::Invalid(_))
    ));
}

/// A valid format 3 manifest of two chunks, the second compressed.
fn content_manifest() -> Manifest {
    let chunks = vec![
        ChunkRef {
            hash: ChunkHash([1; 32]),
            length: 1000,
            zstd_len: 0,
        },
        ChunkRef {
            hash: ChunkHash([2; 32]),
            length: 5000,
            zstd_len: 700,
        },
    ];
    Manifest {
        name: "demo".into(),
        version: "2.0".parse().expect("version"),
        size: 6000,
        package_id: PackageId([3; 32]),
        created_unix: 1,
        chunks,
        unpacked_size: Some(4000),
        upload: Some(Upload {
            id: PackageId([4; 32]),
            size: 2000,
            format: UploadFormat::TarGz,
        }),
        chunker: Chunker::V2,
    }
}

#[test]
fn format_3_carries_the_upload_chunker_and_stored_lengths() {
    let key = SecretKey::from_seed([9; 32]);
    let m = content_manifest();
    assert_eq!(m.format(), 3);
    assert_eq!(m.wire_size(), 1700);
    let signed = key.sign_manifest(&m);
    assert_eq!(&signed.body[4..6], &3u16.to_le_bytes());
    assert_eq!(signed.verify(&key.public()), Ok(m));
}

#[test]
fn signed_format_3_manifests_breaking_a_rule_are_refused() {
    let key = SecretKey::from_seed([10; 32]);
    let refused = |m: Manifest, why: &str| {
        let signed = resign(&key, m.canonical_bytes());
        match signed.verify(&key.public()) {
            Err(ManifestError::Invalid(_)) => {}
            other => panic!("{why}: {other:?}"),
        }
    };
    // A compressed length not below the chunk's.
    let mut m = content_manifest();
    m.chunks[1].zstd_len = 5000;
    refused(m, "zstd_len == length");
    // A chunk longer than its chunker cuts.
    let mut m = content_manifest();
    m.chunks[0].length = Chunker::V2.max() as u32 + 1;
    m.size = m.chunks.iter().map(|c| u64::from(c.length)).sum();
    refused(m, "longer than V2's maximum");
    // A compressed chunk in a format 2 manifest (its encoding cannot carry
    // one; the rule is for manifests built in memory).
    let mut m = content_manifest();
    m.upload = None;
    m.chunker = Chunker::V1;
    m.chunks[0].zstd_len = 10;
    assert!(matches!(m.validate(), Err(ManifestError::Invalid(_))));
    // Unknown upload format and chunker codes: the two bytes before the
    // chunk count (one varint byte, 2) in the canonical body.
    let body = content_manifest().canonical_bytes();
    let count_at = body
        .windows(33)
        .position(|w| w[0] == 2 && w[1..] == [1u8; 32])
        .expect("chunk list");
    assert_eq!(body[count_at - 1], Chunker::V2.code());
    assert_eq!(body[count_at - 2], UploadFormat::TarGz.code());
    for at in [count_at - 1, count_at - 2] {
        let mut bent = body.clone();
        bent[at] = 9;
        match resign(&key, bent).verify(&key.public()) {
            Err(ManifestError::Invalid(_)) => {}
            other => panic!("code at {at}: {other:?}"),
        }
    }
}
