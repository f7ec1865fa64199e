//! The "real network" store test: `tests/netns/store.sh` builds a store in
//! network namespaces (a coordinator behind a shaped WAN link, a router with a
//! bridge, five tills running the real `tillswarm node` with mDNS) and checks
//! the package crosses the WAN about once. Needs root and `ip netns`; skips
//! otherwise. Uses the `tillswarm` binary built next to this test (CI runs
//! `cargo build --bin tillswarm` first).

use std::path::PathBuf;
use std::process::{Command, Stdio};

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let uids = s.lines().find(|l| l.starts_with("Uid:"))?.to_owned();
            Some(uids.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

fn netns_works() -> bool {
    let name = format!("ts-probe-{}", std::process::id());
    let ip = |args: &[&str]| {
        Command::new("ip")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let ok = ip(&["netns", "add", &name]);
    if ok {
        ip(&["netns", "del", &name]);
    }
    ok
}

#[test]
fn store_in_network_namespaces() {
    if !is_root() {
        eprintln!("SKIPPED: the netns store test needs root");
        return;
    }
    if !netns_works() {
        eprintln!("SKIPPED: `ip netns add` failed (no iproute2 or no namespace support)");
        return;
    }
    // <target>/<profile>/deps/netns-<hash> -> <target>/<profile>/tillswarm
    let exe = std::env::current_exe().expect("current exe");
    let bin: PathBuf = match exe.parent().and_then(|p| p.parent()) {
        Some(dir) => dir.join("tillswarm"),
        None => PathBuf::from("tillswarm"),
    };
    if !bin.is_file() {
        eprintln!(
            "SKIPPED: {} not built (run `cargo build --bin tillswarm` first)",
            bin.display()
        );
        return;
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("netns/store.sh");
    let status = Command::new("bash")
        .arg(&script)
        .arg(&bin)
        .status()
        .expect("run tests/netns/store.sh");
    assert!(status.success(), "{} failed: {status}", script.display());
}
