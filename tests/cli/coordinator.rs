//! The coordinator binary over real sockets: killed with SIGKILL in the middle
//! of an upload, it restarts with no trace of the partial package, and the task
//! that was running carries on.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

struct Running {
    child: Child,
    url: String,
    token: String,
}

/// An admin API token for the coordinator of `data`, made by the CLI.
fn admin_token(data: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tillswarm"))
        .args([
            "coordinator",
            "token",
            "create",
            "--name",
            "cli-test",
            "--role",
            "admin",
            "--data",
        ])
        .arg(data)
        .output()
        .expect("token create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .expect("the token is the last line")
        .to_owned()
}

fn start(data: &Path) -> Running {
    let token = if data.join("coordinator.sqlite3").exists() {
        std::fs::read_to_string(data.join("test-token")).expect("token file")
    } else {
        let t = admin_token(data);
        std::fs::write(data.join("test-token"), &t).expect("token file");
        t
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_tillswarm"))
        .args(["coordinator", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start coordinator");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("first line");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("the coordinator prints its URL")
        .trim_end_matches('/')
        .to_owned();
    Running { child, url, token }
}

fn client() -> reqwest::Client {
    tillswarm_node::tls::http_client(None)
        .expect("client")
        .build()
        .expect("client")
}

fn call(
    token: Option<&str>,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut req = client().request(method, url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    })
}

fn post_bytes(token: &str, url: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let resp = client()
            .post(url)
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("json"))
    })
}

const TILL: &str = "71110000-0000-0000-0000-000000000002";

/// The number of tasks in a heartbeat answer's (signed) instructions.
fn assignment_count(hb: &Value) -> Option<usize> {
    let body = hb["trust"]["instructions"]["body"].as_str()?;
    let ins: Value = serde_json::from_str(body).ok()?;
    ins["assignments"].as_array().map(Vec::len)
}

/// Logs the till in as its node does (its key bound at the first login) and
/// returns a device token; the binding and the token live in the database, so
/// they survive a restart.
fn device_token(url: &str) -> String {
    let device: tillswarm_protocol::DeviceId = TILL.parse().expect("guid");
    let key = tillswarm_protocol::manifest::SecretKey::from_seed([0x17; 32]);
    let (status, ch) = call(
        None,
        reqwest::Method::POST,
        &format!("{url}/api/v1/node/challenge"),
        Some(json!({ "device_id": TILL })),
    );
    assert_eq!(status, 200, "{ch}");
    let challenge = ch["challenge"].as_str().expect("challenge");
    let message = tillswarm_protocol::trust::login_message(&device, challenge, &key.public());
    let signature = tillswarm_protocol::trust::sign_bytes(
        &key,
        tillswarm_protocol::trust::Domain::DeviceLogin,
        &message,
    );
    let (status, session) = call(
        None,
        reqwest::Method::POST,
        &format!("{url}/api/v1/node/session"),
        Some(
            json!({"device_id": TILL, "public_key": key.public().to_string(),
                    "challenge": challenge, "signature": signature}),
        ),
    );
    assert_eq!(status, 200, "{session}");
    session["token"].as_str().expect("token").to_owned()
}

fn heartbeat(url: &str, till: &str) -> Value {
    let (status, hb) = call(
        Some(till),
        reqwest::Method::POST,
        &format!("{url}/api/v1/node/heartbeat"),
        Some(
            json!({"device_id": TILL, "version": "0.9", "state": "ready", "ip": null,
                    "peer_id": null, "free_disk_bytes": 1, "known_revision": null}),
        ),
    );
    assert_eq!(status, 200, "{hb}");
    hb
}

fn progress(url: &str, till: &str, seq: u64, state: &str) -> Value {
    let (status, r) = call(
        Some(till),
        reqwest::Method::POST,
        &format!("{url}/api/v1/node/progress"),
        Some(
            json!({"device_id": TILL, "task_id": 1, "attempt": 1, "seq": seq, "state": state,
                    "bytes_done": 5, "wan_bytes": 5, "lan_bytes": 0, "error": null, "log_tail": null}),
        ),
    );
    assert_eq!(status, 200, "{r}");
    r
}

#[test]
fn sigkill_mid_upload_leaves_no_partial_package_and_tasks_continue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut c = start(&data);

    let registry = std::fs::read(tillswarm_fixtures::dir().join("registry/sample-chain.csv"))
        .expect("registry");
    let (status, _) = post_bytes(
        &c.token,
        &format!("{}/api/v1/devices/import", c.url),
        "text/csv",
        registry,
    );
    assert_eq!(status, 200);
    let package = tillswarm_fixtures::demo_package("1.0.0", 2 << 20);
    let (status, pkg) = post_bytes(
        &c.token,
        &format!("{}/api/v1/packages?name=demo&version=1.0.0", c.url),
        "application/octet-stream",
        package,
    );
    assert_eq!(status, 201, "{pkg}");
    let (status, task) = call(
        Some(&c.token),
        reqwest::Method::POST,
        &format!("{}/api/v1/tasks", c.url),
        Some(json!({"kind": "download", "package_id": pkg["package_id"], "group_id": 1})),
    );
    assert_eq!(status, 201, "{task}");
    let till = device_token(&c.url);
    assert_eq!(assignment_count(&heartbeat(&c.url, &till)), Some(1));
    assert_eq!(progress(&c.url, &till, 1, "downloading")["accepted"], true);

    // Start a large upload by hand and kill the process while it is arriving.
    let addr = c.url.trim_start_matches("http://").to_owned();
    let mut raw = TcpStream::connect(&addr).expect("connect");
    let big = tillswarm_fixtures::demo_package("1.1.0", 8 << 20);
    write!(
        raw,
        "POST /api/v1/packages?name=big&version=2.0 HTTP/1.1\r\nHost: {addr}\r\n\
         Authorization: Bearer {}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        c.token,
        big.len()
    )
    .expect("headers");
    raw.write_all(&big[..big.len() / 2]).expect("half the body");
    raw.flush().expect("flush");
    let tmp = data.join("chunks/tmp");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::fs::read_dir(&tmp).expect("tmp dir").next().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the upload never reached the disk"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    c.child.kill().expect("SIGKILL");
    c.child.wait().expect("reap");
    drop(raw);

    let mut c = start(&data);
    let (_, packages) = call(
        Some(&c.token),
        reqwest::Method::GET,
        &format!("{}/api/v1/packages", c.url),
        None,
    );
    assert_eq!(packages["total"], 1, "{packages}");
    assert_eq!(packages["items"][0]["name"], "demo");
    assert!(
        std::fs::read_dir(&tmp).expect("tmp").next().is_none(),
        "temporary upload removed"
    );
    // The running task continues: the till still has it and its reports land.
    let (_, task) = call(
        Some(&c.token),
        reqwest::Method::GET,
        &format!("{}/api/v1/tasks/1", c.url),
        None,
    );
    assert_eq!(task["status"], "running");
    assert_eq!(assignment_count(&heartbeat(&c.url, &till)), Some(1));
    assert_eq!(
        progress(&c.url, &till, 1, "downloading")["accepted"],
        false,
        "seq 1 was already applied"
    );
    assert_eq!(progress(&c.url, &till, 2, "downloaded")["accepted"], true);
    let (_, task) = call(
        Some(&c.token),
        reqwest::Method::GET,
        &format!("{}/api/v1/tasks/1", c.url),
        None,
    );
    assert_eq!(task["states"]["downloaded"], 1, "{task}");

    // SIGTERM: a graceful stop.
    let pid = c.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let status = c.child.wait().expect("wait");
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
}
