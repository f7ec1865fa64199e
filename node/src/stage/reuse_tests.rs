//! Staging format 3 packages (compressed chunks) and staging N+1 from N.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use tillswarm_fixtures::{RawEntry, raw_tar};
use tillswarm_protocol::archive::UploadFormat;
use tillswarm_protocol::chunk_codec::Compressor;
use tillswarm_protocol::manifest::Upload;
use tillswarm_protocol::{Chunker, PackageId};

use super::*;

const UP_SH: &[u8] = b"#!/bin/sh\nexit 0\n";

/// Stores `tar` as a format 3 package (V2 chunks, compressed where that
/// saves bytes) in `store`; returns its manifest.
fn content(store: &ChunkStore, version: &str, tar: &[u8]) -> Manifest {
    let mut zstd = Compressor::new().expect("zstd");
    let mut lens = Vec::new();
    let chunked = tillswarm_protocol::chunking::chunk_reader_with(Chunker::V2, tar, |c, data| {
        let frame = zstd.compress(data)?;
        lens.push(frame.as_ref().map_or(0, |f| f.len() as u32));
        let chunk = ChunkRef {
            hash: c.hash,
            length: c.length,
            zstd_len: lens[lens.len() - 1],
        };
        let wire = match frame {
            Some(f) => Wire {
                data: f.into(),
                compressed: true,
            },
            None => Wire {
                data: data.to_vec().into(),
                compressed: false,
            },
        };
        store.put_wire(&chunk, &wire).map_err(std::io::Error::other)
    })
    .expect("chunks");
    let upload = Upload {
        id: PackageId::of(tar),
        size: tar.len() as u64,
        format: UploadFormat::Tar,
    };
    let version = version.parse().expect("version");
    let unpacked = tillswarm_protocol::archive::scan(tar, u64::MAX).expect("a package");
    Manifest::new_content(
        "demo",
        version,
        &chunked,
        Chunker::V2,
        &lens,
        0,
        unpacked,
        upload,
    )
    .expect("manifest")
}

/// Every file of a tree: (blake3, mode, mtime) by relative path, and links.
/// The staging marker's time is when it was staged, not part of the package,
/// so it is left out (two stagings may fall in different seconds).
fn tree(dir: &Path) -> BTreeMap<String, (String, u32, i64)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("dir") {
            let p = e.expect("entry").path();
            let rel = p.strip_prefix(dir).expect("rel").display().to_string();
            let meta = fs::symlink_metadata(&p).expect("stat");
            if meta.is_dir() {
                stack.push(p.clone());
                out.insert(rel, ("dir".into(), meta.mode() & 0o7777, 0));
            } else if meta.file_type().is_symlink() {
                let target = fs::read_link(&p).expect("link").display().to_string();
                out.insert(rel, (format!("-> {target}"), 0, 0));
            } else {
                let hash = blake3::hash(&fs::read(&p).expect("read"))
                    .to_hex()
                    .to_string();
                let mtime = if rel == STAGED_MARKER {
                    0
                } else {
                    meta.mtime()
                };
                out.insert(rel, (hash, meta.mode() & 0o7777, mtime));
            }
        }
    }
    out
}

/// Versions 1 and 2 of a package: 2 changes `b` and adds `d`, keeps the rest.
fn pair() -> (Vec<u8>, Vec<u8>) {
    let a = tillswarm_fixtures::noise(300_000, 1);
    let b = tillswarm_fixtures::noise(200_000, 2);
    let mut b2 = b.clone();
    b2[150_000] ^= 1;
    let c: Vec<u8> = b"plain text line\n".repeat(20_000);
    let v1 = raw_tar(&[
        RawEntry::file("up.sh", 0o755, UP_SH),
        RawEntry::other(b"lib", tar::EntryType::Directory, None),
        RawEntry::file("lib/a.bin", 0o644, &a),
        RawEntry::file("lib/b.bin", 0o644, &b),
        RawEntry::file("c.txt", 0o644, &c),
        RawEntry::other(b"lib/link", tar::EntryType::Symlink, Some(b"a.bin")),
    ]);
    let v2 = raw_tar(&[
        RawEntry::file("up.sh", 0o755, UP_SH),
        RawEntry::other(b"lib", tar::EntryType::Directory, None),
        RawEntry::file("lib/a.bin", 0o644, &a),
        RawEntry::file("lib/b.bin", 0o644, &b2),
        RawEntry::file("c.txt", 0o600, &c),
        RawEntry::file("d.txt", 0o644, b"new\n"),
        RawEntry::other(b"lib/link", tar::EntryType::Symlink, Some(b"a.bin")),
    ]);
    (v1, v2)
}

/// Version 1.0.0 of [`pair`] staged (N), 1.1.0 in the store.
struct Staged {
    dir: tempfile::TempDir,
    store: ChunkStore,
    m1: Manifest,
    m2: Manifest,
    update: PathBuf,
    n: PathBuf,
}

fn staged_n() -> Staged {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ChunkStore::open(&dir.path().join("chunks")).expect("store");
    let (v1, v2) = pair();
    let m1 = content(&store, "1.0.0", &v1);
    let m2 = content(&store, "1.1.0", &v2);
    let update = dir.path().join("update");
    let n = stage(&m1, &store, &update, u64::MAX).expect("N");
    Staged {
        dir,
        store,
        m1,
        m2,
        update,
        n,
    }
}

#[test]
fn a_format_3_package_with_compressed_chunks_stages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ChunkStore::open(&dir.path().join("chunks")).expect("store");
    let (v1, _) = pair();
    let m = content(&store, "1.0.0", &v1);
    assert!(
        m.chunks.iter().any(|c| c.zstd_len > 0),
        "some chunk compressed"
    );
    assert!(m.chunks.iter().any(|c| c.zstd_len == 0), "some chunk raw");
    let staged = stage(&m, &store, &dir.path().join("update"), u64::MAX).expect("staged");
    assert!(is_staged(&staged, &m.package_id));
    // A compressed chunk changed on disk (its frame still decodes, to other
    // bytes) stops the staging.
    let c = m
        .chunks
        .iter()
        .find(|c| c.zstd_len > 0)
        .expect("compressed");
    let other = ChunkStore::open(&dir.path().join("bent")).expect("store");
    for chunk in &m.chunks {
        let held = store.get(&chunk.hash).expect("get").expect("held");
        let data = if chunk.hash == c.hash {
            let mut raw = Vec::new();
            store
                .read_content(chunk, &mut Decoder::new().expect("zstd"), &mut raw)
                .expect("read");
            raw[0] ^= 1;
            Compressor::new()
                .expect("zstd")
                .compress(&raw)
                .expect("z")
                .expect("z")
                .into()
        } else {
            held.data
        };
        let hex = chunk.hash.to_hex();
        let name = if held.compressed {
            format!("{hex}.zst")
        } else {
            hex.clone()
        };
        let path = dir.path().join("bent").join(&hex[..2]);
        fs::create_dir_all(&path).expect("mkdir");
        fs::write(path.join(name), &data).expect("write");
    }
    let update = dir.path().join("update-bent");
    assert!(stage(&m, &other, &update, u64::MAX).is_err());
    assert!(!staged_dir(&update, &m).exists());
}

#[test]
fn staging_from_n_gives_exactly_the_tree_of_n_plus_1_and_links_what_is_unchanged() {
    let Staged {
        dir,
        store,
        m1,
        m2,
        update,
        n,
    } = staged_n();
    let n1 = stage(&m2, &store, &update, u64::MAX).expect("N+1");
    // The same tree as staging N+1 alone.
    let fresh = stage(&m2, &store, &dir.path().join("fresh"), u64::MAX).expect("fresh");
    assert_eq!(tree(&n1), tree(&fresh));
    // The unchanged file is N's inode; the changed, re-moded and new ones are not.
    let ino = |p: PathBuf| fs::metadata(p).expect("stat").ino();
    assert_eq!(ino(n.join("lib/a.bin")), ino(n1.join("lib/a.bin")));
    assert_eq!(ino(n.join("up.sh")), ino(n1.join("up.sh")));
    assert_ne!(ino(n.join("lib/b.bin")), ino(n1.join("lib/b.bin")));
    assert_ne!(ino(n.join("c.txt")), ino(n1.join("c.txt")));
    // N is untouched.
    let again = stage(&m1, &store, &dir.path().join("again"), u64::MAX).expect("N again");
    assert_eq!(tree(&n), tree(&again));
}

#[test]
fn a_tampered_file_of_n_is_never_linked() {
    let Staged {
        dir,
        store,
        m1: _,
        m2,
        update,
        n,
    } = staged_n();
    // Same size, mode and time, one byte changed.
    let victim = n.join("lib/a.bin");
    let meta = fs::metadata(&victim).expect("stat");
    let mut bytes = fs::read(&victim).expect("read");
    bytes[123] ^= 0x55;
    fs::write(&victim, &bytes).expect("write");
    let time = std::fs::FileTimes::new().set_modified(meta.modified().expect("mtime"));
    fs::File::options()
        .write(true)
        .open(&victim)
        .expect("open")
        .set_times(time)
        .expect("times");
    let n1 = stage(&m2, &store, &update, u64::MAX).expect("N+1");
    let fresh = stage(&m2, &store, &dir.path().join("fresh"), u64::MAX).expect("fresh");
    assert_eq!(tree(&n1), tree(&fresh));
    assert_ne!(
        fs::metadata(&victim).expect("stat").ino(),
        fs::metadata(n1.join("lib/a.bin")).expect("stat").ino()
    );
}

#[test]
fn symlinks_in_n_are_not_followed() {
    let Staged {
        dir,
        store,
        m1: _,
        m2,
        update,
        n,
    } = staged_n();
    // Outside N, a file with the right bytes, mode and time; in N, the file
    // replaced by a link to it, and the folder by a link to its folder.
    let outside = dir.path().join("outside");
    fs::create_dir_all(outside.join("lib")).expect("mkdir");
    let a = outside.join("lib/a.bin");
    fs::copy(n.join("lib/a.bin"), &a).expect("copy");
    fs::set_permissions(&a, fs::Permissions::from_mode(0o644)).expect("chmod");
    let when = fs::metadata(n.join("lib/a.bin"))
        .expect("stat")
        .modified()
        .expect("mtime");
    fs::File::options()
        .write(true)
        .open(&a)
        .expect("open")
        .set_times(std::fs::FileTimes::new().set_modified(when))
        .expect("times");
    fs::copy(n.join("up.sh"), outside.join("up.sh")).expect("copy");
    fs::remove_file(n.join("lib/a.bin")).expect("rm");
    std::os::unix::fs::symlink(&a, n.join("lib/a.bin")).expect("link file");
    fs::remove_file(n.join("up.sh")).expect("rm");
    std::os::unix::fs::symlink(outside.join("up.sh"), n.join("up.sh")).expect("link");
    let n1 = stage(&m2, &store, &update, u64::MAX).expect("N+1");
    let fresh = stage(&m2, &store, &dir.path().join("fresh"), u64::MAX).expect("fresh");
    assert_eq!(tree(&n1), tree(&fresh));
    let ino = |p: &Path| fs::metadata(p).expect("stat").ino();
    assert_ne!(ino(&a), ino(&n1.join("lib/a.bin")));
    assert_ne!(ino(&outside.join("up.sh")), ino(&n1.join("up.sh")));
    // A whole folder of N swapped for a link to an outside copy.
    fs::remove_dir_all(&n1).expect("rm N+1");
    fs::remove_dir_all(n.join("lib")).expect("rm lib");
    std::os::unix::fs::symlink(outside.join("lib"), n.join("lib")).expect("link dir");
    let n1 = stage(&m2, &store, &update, u64::MAX).expect("N+1");
    assert_eq!(tree(&n1), tree(&fresh));
    assert_ne!(ino(&a), ino(&n1.join("lib/a.bin")));
}

#[test]
fn a_folder_without_a_marker_is_not_a_seed() {
    let Staged {
        dir: _dir,
        store,
        m1: _,
        m2,
        update,
        n,
    } = staged_n();
    fs::remove_file(n.join(STAGED_MARKER)).expect("unmark");
    let n1 = stage(&m2, &store, &update, u64::MAX).expect("N+1");
    assert_ne!(
        fs::metadata(n.join("lib/a.bin")).expect("stat").ino(),
        fs::metadata(n1.join("lib/a.bin")).expect("stat").ino()
    );
}

#[test]
fn a_raw_chunk_changed_on_disk_stops_the_staging() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ChunkStore::open(&dir.path().join("chunks")).expect("store");
    let (v1, _) = pair();
    let m = content(&store, "1.0.0", &v1);
    let c = *m
        .chunks
        .iter()
        .find(|c| c.zstd_len == 0)
        .expect("a raw chunk");
    let hex = c.hash.to_hex();
    let path = dir.path().join("chunks").join(&hex[..2]).join(&hex);
    let good = fs::read(&path).expect("read");
    for (what, bent) in [
        ("one byte flipped", {
            let mut b = good.clone();
            b[good.len() / 2] ^= 1;
            b
        }),
        ("cut short", good[..good.len() - 1].to_vec()),
        ("one byte longer", [good.clone(), vec![0]].concat()),
    ] {
        fs::write(&path, &bent).expect("tamper");
        let update = dir
            .path()
            .join(format!("update-{}", what.replace(' ', "-")));
        let err = stage(&m, &store, &update, u64::MAX).expect_err(what);
        assert!(matches!(err, Error::Verify(_)), "{what}: {err}");
        assert!(!staged_dir(&update, &m).exists(), "{what}");
    }
    fs::write(&path, &good).expect("restore");
    stage(&m, &store, &dir.path().join("update"), u64::MAX).expect("staged");
}
