//! The seed's manual path: support hands out a package, someone puts it in
//! `<update_root>/update/<version>/` on the till, and a few minutes later the
//! till offers it to the cashier. This module finds such folders.
//!
//! A folder qualifies when its name is a version newer than the running one, it
//! is not hidden (`.1.2.partial` is ours, in progress), it is not a package the
//! node staged itself (those carry [`STAGED_MARKER`]), and it holds an `up.sh`,
//! or a single `.tar`/`.tar.gz` that holds one (then unpacked in place).

use std::fs;
use std::path::Path;

use tillswarm_protocol::{PackageId, Version};

use crate::error::Result;
use crate::stage::STAGED_MARKER;

/// The newest qualifying drop-in folder: its version and an identity (blake3 of
/// its `up.sh`). Unpacks a lone package archive first.
pub fn newest(
    update_dir: &Path,
    installed: Option<&Version>,
) -> Result<Option<(Version, PackageId)>> {
    let Ok(entries) = fs::read_dir(update_dir) else {
        return Ok(None);
    };
    let mut best: Option<(Version, PackageId)> = None;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Ok(version) = name.parse::<Version>() else {
            continue;
        };
        let dir = entry.path();
        if !dir.is_dir() || dir.join(STAGED_MARKER).exists() {
            continue;
        }
        if installed.is_some_and(|v| *v >= version) {
            continue;
        }
        if !dir.join("up.sh").is_file() {
            unpack_lone_archive(&dir);
        }
        let Ok(script) = fs::read(dir.join("up.sh")) else {
            continue;
        };
        if best.as_ref().is_none_or(|(v, _)| version > *v) {
            best = Some((version, PackageId::of(&script)));
        }
    }
    Ok(best)
}

/// If `dir` holds exactly one `.tar` or `.tar.gz`, unpacks it into `dir`.
fn unpack_lone_archive(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let archives: Vec<_> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.to_string_lossy();
            n.ends_with(".tar") || n.ends_with(".tar.gz") || n.ends_with(".tgz")
        })
        .collect();
    let [archive] = archives.as_slice() else {
        return;
    };
    let Ok(file) = fs::File::open(archive) else {
        return;
    };
    let gz = !archive.to_string_lossy().ends_with(".tar");
    let reader: Box<dyn std::io::Read> = if gz {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    if let Err(e) = tar::Archive::new(reader).unpack(dir) {
        tracing::warn!(archive = %archive.display(), error = %e, "cannot unpack a dropped-in package");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_newest_foreign_folder_with_up_sh() {
        let dir = tempfile::tempdir().expect("tempdir");
        let up = dir.path();
        let mk = |name: &str, script: bool| {
            fs::create_dir_all(up.join(name)).expect("mkdir");
            if script {
                fs::write(up.join(name).join("up.sh"), format!("echo {name}")).expect("write");
            }
        };
        mk("1.0", true);
        mk("1.2", true);
        mk("1.5", false); // no up.sh: not a package
        mk(".2.0.partial", true); // ours, in progress
        mk("notes", true); // not a version
        mk("1.9", true);
        fs::write(up.join("1.9").join(STAGED_MARKER), "x").expect("marker"); // staged by the node
        let installed: Version = "1.1".parse().expect("v");
        let (v, id) = newest(up, Some(&installed)).expect("scan").expect("found");
        assert_eq!(v.to_string(), "1.2");
        assert_eq!(id, PackageId::of(b"echo 1.2"));
        let newer: Version = "1.2".parse().expect("v");
        assert!(newest(up, Some(&newer)).expect("scan").is_none());
    }

    #[test]
    fn a_lone_archive_is_unpacked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let folder = dir.path().join("3.0");
        fs::create_dir_all(&folder).expect("mkdir");
        let tar = tillswarm_fixtures_free_tar();
        fs::write(folder.join("package.tar"), tar).expect("write");
        let (v, _) = newest(dir.path(), None).expect("scan").expect("found");
        assert_eq!(v.to_string(), "3.0");
        assert!(folder.join("up.sh").is_file());
    }

    /// A minimal tar with an `up.sh`, built here to keep the crate's dev
    /// dependencies small.
    fn tillswarm_fixtures_free_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let script = b"echo hi\n";
        let mut h = tar::Header::new_ustar();
        h.set_path("up.sh").expect("path");
        h.set_size(script.len() as u64);
        h.set_mode(0o755);
        h.set_cksum();
        b.append(&h, &script[..]).expect("append");
        b.into_inner().expect("tar")
    }
}
