//! Uploads in every format round-trip to the same content; hostile uploads
//! are refused and leave no chunk behind.

use std::io::Write;

use tillswarm_fixtures::{RawEntry, raw_tar};

use super::*;

const UP_SH: &[u8] = b"#!/bin/sh\nexit 0\n";

fn sample_tar() -> Vec<u8> {
    let text = b"line of a receipt template\n".repeat(40_000);
    raw_tar(&[
        RawEntry::file("up.sh", 0o755, UP_SH),
        RawEntry::file(
            "payload/noise.bin",
            0o644,
            &tillswarm_fixtures::noise(1_500_000, 3),
        ),
        RawEntry::file("payload/text.txt", 0o644, &text),
    ])
}

fn zstd_of(bytes: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(bytes, 3).expect("zstd")
}

fn xz_of(bytes: &[u8]) -> Vec<u8> {
    let mut w =
        lzma_rust2::XzWriter::new(Vec::new(), lzma_rust2::XzOptions::with_preset(6)).expect("xz");
    w.write_all(bytes).expect("xz");
    w.finish().expect("xz")
}

struct Setup {
    dir: tempfile::TempDir,
    store: ChunkStore,
    key: SecretKey,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ChunkStore::open(&dir.path().join("chunks")).expect("store");
    Setup {
        dir,
        store,
        key: SecretKey::from_seed([5; 32]),
    }
}

const LIMITS: IngestLimits = IngestLimits {
    max_unpacked: 64 << 20,
    max_content: 64 << 20,
};

fn ingest(s: &Setup, upload: &[u8], limits: IngestLimits) -> Result<Manifest> {
    let path = s.dir.path().join("upload");
    std::fs::write(&path, upload).expect("write");
    let received = Received {
        id: PackageId::of(upload),
        size: upload.len() as u64,
    };
    let version = "1.0.0".parse().expect("version");
    ingest_file(
        &path, "demo", version, &s.store, &s.key, 0, limits, received,
    )
    .map(|(m, signed, _)| {
        assert_eq!(signed.verify(&s.key.public()).expect("verify"), m);
        m
    })
}

/// The content a manifest's stored chunks make up.
fn reassembled(s: &Setup, m: &Manifest) -> Vec<u8> {
    let mut out = Vec::new();
    for c in &m.chunks {
        let (stored, compressed) = s.store.read_stored(&c.hash).expect("read").expect("held");
        assert_eq!(compressed, c.zstd_len > 0);
        assert_eq!(stored.len() as u32, c.wire_len());
        out.extend(
            s.store
                .read_content(&c.hash)
                .expect("content")
                .expect("held"),
        );
    }
    out
}

#[test]
fn every_format_round_trips_to_the_same_content() {
    let tar = sample_tar();
    let gz = tillswarm_fixtures::gzip(&tar);
    // Two gzip members, as pigz and `cat a.gz b.gz` write.
    let (a, b) = tar.split_at(tar.len() / 3);
    let two_members = [tillswarm_fixtures::gzip(a), tillswarm_fixtures::gzip(b)].concat();
    let cases = [
        (UploadFormat::Tar, tar.clone()),
        (UploadFormat::TarGz, gz),
        (UploadFormat::TarGz, two_members),
        (UploadFormat::TarZst, zstd_of(&tar)),
        (UploadFormat::TarXz, xz_of(&tar)),
    ];
    for (format, upload) in cases {
        let s = setup();
        let m = ingest(&s, &upload, LIMITS).unwrap_or_else(|e| panic!("{format:?}: {e}"));
        assert_eq!(m.package_id, PackageId::of(&tar), "{format:?}");
        assert_eq!(m.size, tar.len() as u64);
        let up = m.upload.expect("format 3");
        assert_eq!(
            (up.id, up.size, up.format),
            (PackageId::of(&upload), upload.len() as u64, format)
        );
        assert_eq!(m.chunker, Chunker::V2);
        assert_eq!(reassembled(&s, &m), tar, "{format:?}");
        // The text compresses, the noise does not.
        assert!(m.chunks.iter().any(|c| c.zstd_len > 0), "{format:?}");
        assert!(m.chunks.iter().any(|c| c.zstd_len == 0), "{format:?}");
        assert!(
            m.wire_size() < m.size * 2 / 3,
            "{format:?}: {} of {}",
            m.wire_size(),
            m.size
        );
    }
}

#[test]
fn uploads_that_are_no_package_are_refused_and_leave_no_chunk() {
    let tar = sample_tar();
    let gz = tillswarm_fixtures::gzip(&tar);
    let zst = zstd_of(&tar);
    let xz = xz_of(&tar);
    let hostile = raw_tar(&[
        RawEntry::file("up.sh", 0o755, UP_SH),
        RawEntry::file("../escape", 0o644, b"x"),
    ]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("zip", b"PK\x03\x04 a zip, not a tar".repeat(100)),
        ("bzip2", b"BZh91AY&SY not a tar".repeat(100)),
        ("text", b"#!/bin/sh\necho hi\n".repeat(100)),
        ("truncated gz", gz[..gz.len() / 2].to_vec()),
        ("truncated zst", zst[..zst.len() / 2].to_vec()),
        ("truncated xz", xz[..xz.len() / 2].to_vec()),
        ("corrupt gz", {
            let mut g = gz.clone();
            let mid = g.len() / 2;
            g[mid..mid + 64].fill(0x55);
            g
        }),
        ("hostile entry in tar.xz", xz_of(&hostile)),
        ("hostile entry in tar.zst", zstd_of(&hostile)),
    ];
    for (what, upload) in cases {
        let s = setup();
        match ingest(&s, &upload, LIMITS) {
            Err(Error::BadRequest { code, .. }) => assert_eq!(code, "invalid_package", "{what}"),
            other => panic!("{what}: {other:?}"),
        }
        assert!(
            s.store.list().expect("list").is_empty(),
            "{what} left chunks"
        );
    }
}

#[test]
fn an_upload_expanding_past_the_content_cap_is_refused() {
    // A small zstd upload: a valid package followed by 256 MiB of zeros.
    // The archive rules see only the tar (the zeros follow its end), so only
    // the content cap stops it.
    let mut content = sample_tar();
    let mut enc = zstd::stream::Encoder::new(Vec::new(), 3).expect("zstd");
    enc.write_all(&content).expect("zstd");
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..256 {
        enc.write_all(&zeros).expect("zstd");
    }
    let bomb = enc.finish().expect("zstd");
    assert!(bomb.len() < 2 << 20, "the bomb is {} bytes", bomb.len());
    let s = setup();
    let limits = IngestLimits {
        max_unpacked: 64 << 20,
        max_content: 16 << 20,
    };
    match ingest(&s, &bomb, limits) {
        Err(Error::BadRequest { code, message }) => {
            assert_eq!(code, "invalid_package");
            assert!(message.contains("expands to more than"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(s.store.list().expect("list").is_empty());
    // Within the cap, trailing bytes are content like any other.
    content.extend_from_slice(&[0u8; 4096]);
    let s = setup();
    let m = ingest(&s, &zstd_of(&content), LIMITS).expect("trailing zeros within the cap");
    assert_eq!(m.size, content.len() as u64);
}

#[test]
fn a_zstd_upload_needing_a_huge_window_is_refused() {
    let tar = sample_tar();
    let mut enc = zstd::stream::Encoder::new(Vec::new(), 3).expect("zstd");
    enc.set_parameter(zstd::stream::raw::CParameter::WindowLog(30))
        .expect("window");
    enc.write_all(&tar).expect("zstd");
    let upload = enc.finish().expect("zstd");
    let s = setup();
    match ingest(&s, &upload, LIMITS) {
        Err(Error::BadRequest { code, .. }) => assert_eq!(code, "invalid_package"),
        other => panic!("{other:?}"),
    }
}

/// A random package: `up.sh` and 1 to 4 files of random size and
/// compressibility, in a random upload format.
fn arb_upload() -> impl proptest::strategy::Strategy<Value = (Vec<u8>, Vec<u8>, UploadFormat)> {
    use proptest::prelude::*;
    (
        proptest::collection::vec((0usize..400_000, any::<u64>(), any::<bool>()), 1..5),
        0u8..4,
    )
        .prop_map(|(files, format)| {
            let mut entries = vec![RawEntry::file("up.sh", 0o755, UP_SH)];
            for (i, (len, seed, text)) in files.into_iter().enumerate() {
                let mut data = tillswarm_fixtures::noise(len, seed);
                if text {
                    data.iter_mut().for_each(|b| *b = b'a' + *b % 4);
                }
                entries.push(RawEntry::file(&format!("f{i}"), 0o644, &data));
            }
            let tar = raw_tar(&entries);
            let format = UploadFormat::from_code(format).expect("0..4");
            let upload = match format {
                UploadFormat::Tar => tar.clone(),
                UploadFormat::TarGz => tillswarm_fixtures::gzip(&tar),
                UploadFormat::TarZst => zstd_of(&tar),
                UploadFormat::TarXz => xz_of(&tar),
            };
            (tar, upload, format)
        })
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 12, .. Default::default() })]

    /// Decompress, chunk, store, reassemble: the content comes back whole,
    /// whatever the format, and the ids are the content's and the upload's.
    #[test]
    fn ingest_round_trips((tar, upload, format) in arb_upload()) {
        let s = setup();
        let m = ingest(&s, &upload, LIMITS).expect("ingest");
        proptest::prop_assert_eq!(m.package_id, PackageId::of(&tar));
        let up = m.upload.expect("format 3");
        proptest::prop_assert_eq!((up.id, up.format), (PackageId::of(&upload), format));
        proptest::prop_assert_eq!(reassembled(&s, &m), tar);
    }
}
