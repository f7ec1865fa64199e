//! Operator accounts from the command line, and the coordinator's listening
//! rules: users and tokens on the data folder, the first-admin hint and
//! `--init-admin`, uploads and imports with `--token` / `TILLSWARM_TOKEN`,
//! plain HTTP beyond loopback refused, and HTTPS with a private CA.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::tillswarm;

fn run(args: &[&str], data: &Path, stdin: Option<&str>) -> Output {
    let mut child = tillswarm()
        .args(args)
        .arg("--data")
        .arg(data)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tillswarm");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write stdin");
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("wait")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A running coordinator and every line it printed so far.
struct Served {
    child: Child,
    url: String,
    lines: mpsc::Receiver<String>,
    printed: Vec<String>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    /// Lines printed within `wait` after the ones read so far.
    fn more(&mut self, wait: Duration) -> &[String] {
        while let Ok(line) = self.lines.recv_timeout(wait) {
            self.printed.push(line);
        }
        &self.printed
    }
}

fn serve(data: &Path, extra: &[&str]) -> Served {
    let mut cmd = tillswarm();
    cmd.arg("coordinator");
    if !extra.contains(&"--listen") {
        cmd.args(["--listen", "127.0.0.1:0"]);
    }
    let mut child = cmd
        .arg("--data")
        .arg(data)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start coordinator");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut printed = Vec::new();
    let url = loop {
        let line = lines
            .recv_timeout(Duration::from_secs(20))
            .expect("the coordinator prints its URL");
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://") || w.starts_with("https://"))
            .map(|u| u.trim_end_matches('/').to_owned());
        printed.push(line);
        if let Some(url) = url {
            break url;
        }
    };
    Served {
        child,
        url,
        lines,
        printed,
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

#[test]
fn users_and_tokens_are_managed_on_the_data_folder_and_audited() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path();
    let out = run(
        &["coordinator", "user", "add", "anna", "--role", "admin"],
        data,
        None,
    );
    assert!(out.status.success(), "{}", text(&out));
    let printed = text(&out);
    let password = printed
        .lines()
        .find_map(|l| l.strip_prefix("password (shown once): "))
        .expect("a generated password is printed");
    assert_eq!(password.len(), 24, "{printed}");
    let out = run(
        &[
            "coordinator",
            "user",
            "add",
            "boris",
            "--role",
            "viewer",
            "--password-stdin",
        ],
        data,
        Some("a password of my own\n"),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !text(&out).contains("shown once"),
        "a chosen password is not printed"
    );
    let out = run(
        &["coordinator", "user", "add", "x", "--role", "root"],
        data,
        None,
    );
    assert!(!out.status.success(), "an unknown role is refused");
    let out = run(
        &[
            "coordinator",
            "user",
            "add",
            "clara",
            "--role",
            "viewer",
            "--password-stdin",
        ],
        data,
        Some("short\n"),
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("at least 12"), "{}", text(&out));
    let out = run(&["coordinator", "user", "list"], data, None);
    let listing = text(&out);
    assert!(
        listing.contains("anna") && listing.contains("admin"),
        "{listing}"
    );
    assert!(
        listing.contains("boris") && listing.contains("viewer"),
        "{listing}"
    );

    let out = run(
        &[
            "coordinator",
            "token",
            "create",
            "--name",
            "ci",
            "--role",
            "operator",
            "--expires-days",
            "30",
        ],
        data,
        None,
    );
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let token = stdout.lines().last().expect("last line");
    assert!(token.starts_with("tsw_") && token.len() == 68, "{stdout}");
    let listing = text(&run(&["coordinator", "token", "list"], data, None));
    assert!(
        listing.contains("ci") && listing.contains("live"),
        "{listing}"
    );
    assert!(!listing.contains(token), "the list never shows the secret");
    assert!(
        run(&["coordinator", "token", "revoke", "ci"], data, None)
            .status
            .success()
    );
    let listing = text(&run(&["coordinator", "token", "list"], data, None));
    assert!(listing.contains("revoked"), "{listing}");

    let out = run(&["coordinator", "user", "remove", "anna"], data, None);
    assert!(!out.status.success(), "the last admin stays");
    assert!(text(&out).contains("only admin"), "{}", text(&out));
    assert!(
        run(&["coordinator", "user", "passwd", "boris"], data, None)
            .status
            .success()
    );
    assert!(
        run(&["coordinator", "user", "remove", "boris"], data, None)
            .status
            .success()
    );

    // The running coordinator shows who did all that, as the CLI's OS user.
    let out = run(
        &[
            "coordinator",
            "token",
            "create",
            "--name",
            "audit",
            "--role",
            "admin",
        ],
        data,
        None,
    );
    let admin = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .expect("token")
        .to_owned();
    let served = serve(data, &[]);
    let rows: serde_json::Value = block_on(async {
        tillswarm_node::tls::http_client(None)
            .expect("client")
            .build()
            .expect("client")
            .get(format!("{}/api/v1/audit?per_page=100", served.url))
            .bearer_auth(&admin)
            .send()
            .await
            .expect("audit")
            .json()
            .await
            .expect("json")
    });
    let actions: Vec<&str> = rows["items"]
        .as_array()
        .expect("items")
        .iter()
        .rev()
        .filter(|r| r["actor_kind"] == "cli")
        .filter_map(|r| r["action"].as_str())
        .collect();
    assert_eq!(
        actions,
        [
            "user.add",
            "user.add",
            "token.create",
            "token.revoke",
            "user.remove",
            "user.passwd",
            "user.remove",
            "token.create"
        ],
        "{rows}"
    );
}

#[test]
fn a_fresh_coordinator_names_the_first_step_and_init_admin_takes_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut fresh = serve(&dir.path().join("a"), &[]);
    let printed = fresh.more(Duration::from_millis(500)).join("\n");
    assert!(
        printed.contains("no operator account exists yet"),
        "{printed}"
    );
    assert!(
        printed.contains("tillswarm coordinator user add"),
        "{printed}"
    );
    drop(fresh);

    let data = dir.path().join("b");
    let served = serve(&data, &["--init-admin", "root"]);
    let password = served
        .printed
        .iter()
        .find_map(|l| l.split("password (shown once): ").nth(1))
        .expect("the admin's password is printed")
        .to_owned();
    let status = block_on(async {
        tillswarm_node::tls::http_client(None)
            .expect("client")
            .build()
            .expect("client")
            .post(format!("{}/api/v1/session", served.url))
            .json(&serde_json::json!({"username": "root", "password": password}))
            .send()
            .await
            .expect("login")
            .status()
    });
    assert_eq!(status, 200);
    drop(served);
    // Once an account exists, --init-admin creates nothing.
    let again = serve(&data, &["--init-admin", "other"]);
    assert!(
        again.printed.iter().any(|l| l.contains("nothing created")),
        "{:?}",
        again.printed
    );
}

#[test]
fn uploads_and_imports_need_a_token_from_the_flag_or_the_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let out = run(
        &[
            "coordinator",
            "token",
            "create",
            "--name",
            "ci",
            "--role",
            "admin",
        ],
        &data,
        None,
    );
    let token = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .expect("token")
        .to_owned();
    let served = serve(&data, &[]);
    let fixtures = dir.path().join("fx");
    let package = crate::generate(&fixtures);
    let upload = |version: &str, token_flag: Option<&str>, env: Option<&str>| {
        let file = package.with_file_name(format!("demo-{version}.tar"));
        let mut cmd = tillswarm();
        cmd.args([
            "package",
            "upload",
            "--name",
            "demo",
            "--version",
            version,
            "--coordinator",
            &served.url,
        ])
        .arg(&file)
        .env_remove("TILLSWARM_TOKEN");
        if let Some(t) = token_flag {
            cmd.args(["--token", t]);
        }
        if let Some(t) = env {
            cmd.env("TILLSWARM_TOKEN", t);
        }
        cmd.output().expect("upload")
    };
    let out = upload("1.0.0", None, None);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("401") && text(&out).contains("--token"),
        "{}",
        text(&out)
    );
    let upload_out = upload("1.0.0", Some(&token), None);
    assert!(upload_out.status.success(), "{}", text(&upload_out));
    let out = upload("1.1.0", None, Some(&token));
    assert!(out.status.success(), "{}", text(&out));
    let out = upload("1.1.0", Some("tsw_not_a_token"), None);
    assert!(!out.status.success());
    // The manual path: the uploaded package exported as a signed bundle.
    let uploaded: serde_json::Value =
        serde_json::from_slice(&upload_out.stdout).expect("upload prints the package");
    let id = uploaded["package_id"]
        .as_str()
        .expect("package_id")
        .to_owned();
    let bundle = dir.path().join("demo-1.0.0.tsb");
    let export = |token: &str| {
        tillswarm()
            .args(["package", "export", &id, "--coordinator", &served.url])
            .args(["--token", token, "--out"])
            .arg(&bundle)
            .env_remove("TILLSWARM_TOKEN")
            .output()
            .expect("export")
    };
    let out = export("tsw_not_a_token");
    assert!(!out.status.success());
    assert!(!bundle.exists(), "a refused export left a file");
    let out = export(&token);
    assert!(out.status.success(), "{}", text(&out));
    let keys = run(&["coordinator", "keys", "show"], &data, None);
    let root: tillswarm_protocol::manifest::PublicKey = text(&keys)
        .lines()
        .find_map(|l| l.strip_prefix("root (pin on tills as coordinator_public_key): "))
        .expect("root key")
        .trim()
        .parse()
        .expect("hex key");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs();
    let file = std::fs::File::open(&bundle).expect("bundle");
    let manifest = tillswarm_protocol::bundle::read(
        file,
        &tillswarm_protocol::trust::TrustState::pinned(root),
        now,
        |_, _| Ok(()),
    )
    .expect("the exported bundle verifies from the pinned root");
    assert_eq!(manifest.package_id.to_hex(), id);
    let out = export(&token);
    assert!(!out.status.success(), "overwrote an existing bundle");
    let registry = tillswarm_fixtures::dir().join("registry/sample-chain.csv");
    let out = tillswarm()
        .args([
            "coordinator",
            "import",
            "--coordinator",
            &served.url,
            "--token",
            &token,
        ])
        .arg(&registry)
        .output()
        .expect("import");
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("devices_added"));
}

#[test]
fn plain_http_beyond_loopback_needs_insecure_http() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = tillswarm()
        .args(["coordinator", "--listen", "0.0.0.0:0", "--data"])
        .arg(dir.path())
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(text(&out).contains("--insecure-http"), "{}", text(&out));
    let served = serve(dir.path(), &["--listen", "0.0.0.0:0", "--insecure-http"]);
    assert!(served.url.starts_with("http://0.0.0.0:"), "{}", served.url);
}

#[test]
fn https_with_a_private_ca_and_a_pinned_client() {
    let pki = tillswarm_tests::tls::test_pki(&["localhost", "127.0.0.1"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let out = run(
        &[
            "coordinator",
            "token",
            "create",
            "--name",
            "ci",
            "--role",
            "admin",
        ],
        &data,
        None,
    );
    let token = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .expect("token")
        .to_owned();
    let cert = pki.cert_pem.to_string_lossy().into_owned();
    let key = pki.key_pem.to_string_lossy().into_owned();
    let served = serve(&data, &["--tls-cert", &cert, "--tls-key", &key]);
    assert!(
        served.url.starts_with("https://127.0.0.1:"),
        "{}",
        served.url
    );
    let port = served.url.rsplit(':').next().expect("port").to_owned();
    let package = crate::generate(&dir.path().join("fx"));
    let upload = |url: &str, ca: &Path| {
        tillswarm()
            .args([
                "package",
                "upload",
                "--name",
                "demo",
                "--version",
                "1.0.0",
                "--coordinator",
                url,
                "--token",
                &token,
                "--ca-file",
            ])
            .arg(ca)
            .arg(&package)
            .output()
            .expect("upload")
    };
    // Someone else's CA does not vouch for this coordinator.
    let out = upload(&format!("https://localhost:{port}"), &pki.other_ca_pem);
    assert!(!out.status.success(), "{}", text(&out));
    let out = upload(&format!("https://localhost:{port}"), &pki.ca_pem);
    assert!(out.status.success(), "{}", text(&out));
    // Plain HTTP to the TLS port fails at once, and the port keeps serving.
    let (plain, cookie) = block_on(async {
        let plain = tillswarm_node::tls::http_client(None)
            .expect("client")
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client")
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await;
        let client = tillswarm_node::tls::http_client(Some(&pki.ca_pem))
            .expect("client")
            .build()
            .expect("client");
        let r = client
            .post(format!("https://127.0.0.1:{port}/api/v1/users"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"name": "anna", "role": "viewer", "password": "a password of my own"}))
            .send()
            .await
            .expect("add user");
        assert_eq!(r.status(), 201);
        let r = client
            .post(format!("https://127.0.0.1:{port}/api/v1/session"))
            .json(&serde_json::json!({"username": "anna", "password": "a password of my own"}))
            .send()
            .await
            .expect("login");
        assert_eq!(r.status(), 200);
        let cookie = r.headers()["set-cookie"]
            .to_str()
            .expect("cookie")
            .to_owned();
        (plain, cookie)
    });
    match plain {
        Ok(r) => assert!(!r.status().is_success(), "plain HTTP got {}", r.status()),
        Err(e) => assert!(!e.is_timeout(), "plain HTTP hung: {e}"),
    }
    assert!(
        cookie.starts_with("__Host-tillswarm_session=") && cookie.contains("; Secure"),
        "{cookie}"
    );
}
