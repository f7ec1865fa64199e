//! The "real network" store test: `tests/netns/store.sh` builds a store in
//! network namespaces (a coordinator behind a shaped WAN link, a router with a
//! bridge, five tills running the real `tillswarm node` with mDNS) and checks
//! the package crosses the WAN about once; then the same store with multicast
//! blocked on its bridge, where the tills find each other only through the
//! coordinator's signed member lists. Needs root and `ip netns`; skips
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

/// The two stores run one at a time: each measures time against the WAN's
/// bound on this machine's two cores.
static ONE_STORE: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn store_in_network_namespaces() {
    run_store(false);
}

/// The same store with multicast blocked on its bridge: mDNS finds nobody,
/// and the tills still share the package through the addresses the
/// coordinator vouches for (WAN about once, same time limits).
#[test]
fn store_without_multicast_in_network_namespaces() {
    run_store(true);
}

fn run_store(no_multicast: bool) {
    let _one = ONE_STORE.lock().unwrap_or_else(|e| e.into_inner());
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
        .env("STORE_NO_MULTICAST", if no_multicast { "1" } else { "0" })
        .status()
        .expect("run tests/netns/store.sh");
    assert!(status.success(), "{} failed: {status}", script.display());
}
