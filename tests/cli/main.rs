//! Tests of the `tillswarm` binary as a user runs it.

mod accounts;
mod coordinator;
mod systemd;

use std::path::{Path, PathBuf};
use std::process::Command;

pub(crate) fn tillswarm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tillswarm"))
}

pub(crate) fn generate(dir: &Path) -> PathBuf {
    let out = tillswarm()
        .args(["fixtures", "generate", "--out"])
        .arg(dir)
        .output()
        .expect("run tillswarm");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.join("demo-1.0.0.tar")
}

fn inspect_json(file: &Path) -> serde_json::Value {
    let out = tillswarm()
        .args(["package", "inspect", "--json"])
        .arg(file)
        .output()
        .expect("run tillswarm");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("inspect prints JSON")
}

#[test]
fn inspect_prints_the_documented_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = generate(dir.path());
    let v = inspect_json(&file);
    let bytes = std::fs::read(&file).expect("read");
    assert_eq!(v["package_id"], blake3::hash(&bytes).to_hex().as_str());
    assert_eq!(v["size"], bytes.len() as u64);
    let chunks = v["chunks"].as_array().expect("chunks array");
    assert!(chunks.len() > 10);
    let mut at = 0u64;
    for c in chunks {
        let offset = c["offset"].as_u64().expect("offset");
        let length = c["length"].as_u64().expect("length");
        assert_eq!(offset, at);
        let piece = &bytes[offset as usize..(offset + length) as usize];
        assert_eq!(c["hash"], blake3::hash(piece).to_hex().as_str());
        at += length;
    }
    assert_eq!(at, bytes.len() as u64);
}

#[test]
fn inspect_agrees_with_b3sum() {
    let Ok(which) = Command::new("b3sum").arg("--version").output() else {
        eprintln!("SKIPPED: b3sum is not installed (apt-get install b3sum); .ci/run installs it");
        return;
    };
    assert!(which.status.success());
    let b3sum = |path: &Path| {
        let out = Command::new("b3sum").arg(path).output().expect("b3sum");
        let b3 = String::from_utf8(out.stdout).expect("utf8");
        b3.split_whitespace().next().expect("hash").to_owned()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let file = generate(dir.path());
    // A plain tar is its own content: both ids are the file's.
    for name in ["demo-1.0.0.tar", "demo-1.1.0.tar", "demo-broken-1.0.1.tar"] {
        let path = file.with_file_name(name);
        let v = inspect_json(&path);
        assert_eq!(v["package_id"], b3sum(&path), "{name}");
        assert_eq!(v["upload_id"], b3sum(&path), "{name}");
        assert_eq!(v["format"], "tar");
    }
    // A tar.gz: the upload id is the file's, the package id its tar's.
    for version in ["1.0.0", "1.1.0"] {
        let gz = file.with_file_name(format!("demo-{version}.tar.gz"));
        let tar = file.with_file_name(format!("demo-{version}.tar"));
        let v = inspect_json(&gz);
        assert_eq!(v["upload_id"], b3sum(&gz));
        assert_eq!(v["package_id"], b3sum(&tar));
        assert_eq!(v["format"], "tar_gz");
        assert_eq!(v["size"], std::fs::metadata(&tar).expect("tar").len());
    }
    // Anything else is refused, by content.
    for (name, bytes) in [("empty", vec![]), ("small.tar", b"hello till".to_vec())] {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).expect("write");
        let out = tillswarm()
            .args(["package", "inspect", "--json"])
            .arg(&path)
            .output()
            .expect("run");
        assert!(!out.status.success(), "{name}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("not a tar, tar.gz, tar.zst or tar.xz"),
            "{err}"
        );
    }
}

#[test]
fn inspect_of_a_missing_file_fails_cleanly() {
    let out = tillswarm()
        .args(["package", "inspect", "/nonexistent/package.tar"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("opening /nonexistent/package.tar"), "{err}");
}
