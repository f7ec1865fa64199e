//! The binary as systemd runs it (`Type=notify`): the test stands in for the
//! service manager with a datagram socket named by `NOTIFY_SOCKET`, and reads
//! the readiness, watchdog and stopping notes the units rely on. Also the
//! coordinator's config file, read the way the packaged unit reads it.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::tillswarm;

/// A stand-in for systemd's notify socket.
struct NotifySocket {
    socket: UnixDatagram,
    path: std::path::PathBuf,
}

impl NotifySocket {
    fn bind(dir: &Path) -> Self {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        Self { socket, path }
    }

    /// Reads notes until one contains `want`, or fails after `secs`.
    fn wait_for(&self, want: &str, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let note = String::from_utf8_lossy(&buf[..n]).into_owned();
                if note.lines().any(|l| l == want) {
                    return note;
                }
                seen.push(note);
            }
        }
        panic!("no {want:?} within {secs} s; got {seen:?}");
    }
}

fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(ok.success());
    child.wait().expect("wait")
}

#[test]
fn the_coordinator_reads_its_config_and_tells_systemd_when_it_is_ready() {
    let dir = tempfile::tempdir().expect("tempdir");
    let notify = NotifySocket::bind(dir.path());
    let data = dir.path().join("state");
    let config = dir.path().join("coordinator.toml");
    std::fs::write(
        &config,
        format!(
            "data = \"{}\"\nlisten = \"127.0.0.1:0\"\npoll_interval_s = 7\n",
            data.display()
        ),
    )
    .expect("config");
    let mut child = tillswarm()
        .args(["coordinator", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", "2000000")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start coordinator");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("first line");
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http://"))
        .expect("the coordinator prints its URL")
        .trim_end_matches('/')
        .to_owned();
    // The file's data folder and listen address were used.
    assert!(data.join("coordinator.sqlite3").exists(), "{line}");
    let ready = notify.wait_for("READY=1", 10);
    assert!(
        ready.contains(&format!("STATUS=serving on {addr}")),
        "{ready}"
    );
    // Ready means bound: a connection is accepted.
    std::net::TcpStream::connect(&addr).expect("connect after READY");
    notify.wait_for("WATCHDOG=1", 10);
    notify.wait_for("WATCHDOG=1", 10);
    let status = terminate(&mut child);
    notify.wait_for("STOPPING=1", 10);
    assert!(status.success(), "{status}");
}

#[test]
fn a_bad_coordinator_config_stops_the_start_with_the_key_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("coordinator.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\npoll_intervl_s = 7\n").expect("config");
    let out = tillswarm()
        .args(["coordinator", "--config"])
        .arg(&config)
        .arg("--data")
        .arg(dir.path().join("d"))
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("poll_intervl_s") && err.contains("coordinator.toml"),
        "{err}"
    );
    assert!(
        !dir.path().join("d").exists(),
        "nothing may start on a bad config"
    );

    let out = tillswarm()
        .args(["coordinator", "--config"])
        .arg(dir.path().join("missing.toml"))
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("missing.toml"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_node_is_ready_after_its_first_poll_even_when_the_coordinator_is_away() {
    let dir = tempfile::tempdir().expect("tempdir");
    let notify = NotifySocket::bind(dir.path());
    // A port nothing listens on: the first poll fails at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    let url = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "device_id = \"71110000-0000-0000-0000-000000000001\"\n\
             chain_id = \"acme\"\nstore_id = \"store-001\"\n\
             coordinator_url = \"{url}\"\n\
             coordinator_public_key = \"8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c\"\n\
             data_dir = \"{data}\"\nupdate_root = \"{root}\"\n\
             local_api_listen = \"127.0.0.1:0\"\nmdns = false\n",
            data = dir.path().join("data").display(),
            root = dir.path().join("mint").display(),
        ),
    )
    .expect("config");
    let mut child = tillswarm()
        .args(["node", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", "2000000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start node");
    let ready = notify.wait_for("READY=1", 15);
    assert!(
        ready.contains("STATUS=coordinator unreachable; retrying"),
        "{ready}"
    );
    notify.wait_for("WATCHDOG=1", 10);
    notify.wait_for("WATCHDOG=1", 10);
    let status = terminate(&mut child);
    assert!(status.success(), "{status}");
}
