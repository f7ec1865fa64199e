//! Bad input to the coordinator's HTTP API, driven through `warp::test` without a
//! socket. Every bad request must get a 4xx (never a 5xx) with a JSON
//! `{code, message}` body whose code is stable, and must change nothing: each test
//! reads the whole visible state back through the API (and lists the chunk store)
//! before and after, and compares.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tempfile::TempDir;
use tillswarm_coordinator::auth::{Caller, Role};
use tillswarm_coordinator::service::access::NewTokenInput;
use tillswarm_coordinator::{Config, Coordinator};
use tillswarm_protocol::api::{MAX_ERROR_LEN, MAX_LOG_TAIL_LEN};
use warp::filters::BoxedFilter;
use warp::http::{HeaderMap, StatusCode, header};
use warp::reply::Response;

const MIB: usize = 1 << 20;
/// Payload of the small demo packages these tests upload.
const SMALL: usize = 300_000;
/// A GUID no registry lists.
const UNKNOWN_GUID: &str = "00000000-0000-0000-0000-0000000000ff";
/// A well-formed package id / chunk hash nothing has.
const UNKNOWN_HASH: &str = "abababababababababababababababababababababababababababababababab";
/// Two tills of the sample registry.
const TILL_1: &str = "71110000-0000-0000-0000-000000000001";
const TILL_2: &str = "71110000-0000-0000-0000-000000000002";
/// A till outside the registry that node requests speak for before one is imported.
const LONE_TILL: &str = "0000abcd-0000-4000-8000-000000000001";
const REGISTRY_HEADER: &str =
    "guid,till_name,till_number,store_id,store_name,store_address,till_type,time_zone";

/// A coordinator in a temporary folder, its route tree and an admin token
/// every request carries (the bad input here is about content, not access).
struct Api {
    dir: TempDir,
    coordinator: Coordinator,
    routes: BoxedFilter<(Response,)>,
    token: String,
    /// Device tokens of the tills node requests speak for, made on first use.
    tills: tokio::sync::Mutex<std::collections::HashMap<String, String>>,
}

/// A response, its body collected.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: bytes::Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} answered with a non-JSON body ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// The ids a seeded coordinator holds.
struct Seed {
    package_id: String,
    task_id: i64,
    group_id: i64,
}

async fn api() -> Api {
    api_with_limit(Config::default().max_package_bytes).await
}

async fn api_with_limit(max_package_bytes: u64) -> Api {
    api_with_config(Config {
        max_package_bytes,
        ..Default::default()
    })
    .await
}

async fn api_with_unpacked_limit(max_unpacked_bytes: u64) -> Api {
    api_with_config(Config {
        max_unpacked_bytes,
        ..Default::default()
    })
    .await
}

async fn api_with_config(config: Config) -> Api {
    let dir = tempfile::tempdir().expect("tempdir");
    let coordinator = Coordinator::open(Config {
        data_dir: dir.path().to_path_buf(),
        ..config
    })
    .await
    .expect("open coordinator");
    let token = coordinator
        .create_token(
            NewTokenInput {
                name: "bad-input".into(),
                role: Role::Admin,
                expires_days: None,
            },
            &Caller::system("test"),
        )
        .await
        .expect("token")
        .token_secret;
    Api {
        dir,
        routes: tillswarm_coordinator::http::routes(coordinator.clone()),
        coordinator,
        token,
        tills: Default::default(),
    }
}

fn sample_registry(ext: &str) -> Vec<u8> {
    let path = tillswarm_fixtures::dir().join(format!("registry/sample-chain.{ext}"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Percent-encodes a query value.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A till's route (needs a device token).
fn is_node_route(path: &str) -> bool {
    path.starts_with("/api/v1/node/")
        && !matches!(path, "/api/v1/node/challenge" | "/api/v1/node/session")
}

impl Api {
    /// A request with the admin token.
    async fn send(&self, req: warp::test::RequestBuilder) -> Reply {
        self.send_as(req, &self.token).await
    }

    /// A device token for the till a node request's body names (its
    /// `device_id`), or for till 1 when the body names none it can log in as
    /// (the registry is imported by then; empty before).
    async fn node_token(&self, body: Option<&[u8]>) -> String {
        let named = body
            .and_then(|b| serde_json::from_slice::<Value>(b).ok())
            .and_then(|v| {
                v.get("device_id")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            });
        let mut tills = self.tills.lock().await;
        for guid in named.into_iter().chain([TILL_1.to_owned()]) {
            if let Some(t) = tills.get(&guid) {
                return t.clone();
            }
            let Ok(device) = guid.parse() else { continue };
            if self.coordinator.device(device).await.is_err() {
                continue;
            }
            if let Some(t) = common::log_in(&self.coordinator, device).await {
                tills.insert(guid, t.clone());
                return t;
            }
        }
        // No registry yet: a till of its own, admitted by the admin.
        let t = common::device_token(&self.coordinator, LONE_TILL.parse().expect("guid")).await;
        tills.insert(LONE_TILL.to_owned(), t.clone());
        t
    }

    async fn send_as(&self, req: warp::test::RequestBuilder, token: &str) -> Reply {
        let req = req.header("authorization", format!("Bearer {token}"));
        let r = req.reply(&self.routes).await;
        let (parts, body) = r.into_parts();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    /// A request with the admin token, or on a till's route the device
    /// token of the till its body names.
    async fn call(&self, method: &str, path: &str, body: Option<&[u8]>) -> Reply {
        let mut req = warp::test::request().method(method).path(path);
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        if is_node_route(path) {
            let token = self.node_token(body).await;
            return self.send_as(req, &token).await;
        }
        self.send(req).await
    }

    async fn get(&self, path: &str) -> Reply {
        self.call("GET", path, None).await
    }

    async fn delete(&self, path: &str) -> Reply {
        self.call("DELETE", path, None).await
    }

    async fn post(&self, path: &str, body: impl AsRef<[u8]>) -> Reply {
        self.call("POST", path, Some(body.as_ref())).await
    }

    async fn put(&self, path: &str, body: impl AsRef<[u8]>) -> Reply {
        self.call("PUT", path, Some(body.as_ref())).await
    }

    async fn upload(&self, name: &str, version: &str, body: &[u8]) -> Reply {
        let path = format!(
            "/api/v1/packages?name={}&version={}",
            enc(name),
            enc(version)
        );
        self.send(
            warp::test::request()
                .method("POST")
                .path(&path)
                .header("content-type", "application/octet-stream")
                .body(body),
        )
        .await
    }

    async fn import(&self, content_type: &str, body: impl AsRef<[u8]>) -> Reply {
        self.send(
            warp::test::request()
                .method("POST")
                .path("/api/v1/devices/import")
                .header("content-type", content_type)
                .body(body),
        )
        .await
    }

    async fn chunk(&self, hash: &str, range: &str) -> Reply {
        let token = self.node_token(None).await;
        self.send_as(
            warp::test::request()
                .method("GET")
                .path(&format!("/api/v1/node/chunks/{hash}"))
                .header("range", range),
            &token,
        )
        .await
    }

    fn chunks_dir(&self) -> PathBuf {
        self.dir.path().join("chunks")
    }

    /// Every file in the chunk store, temporary ones included.
    fn chunk_files(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).expect("read chunk dir") {
                let path = entry.expect("dir entry").path();
                if path.is_dir() {
                    walk(&path, out);
                } else {
                    out.push(path);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.chunks_dir(), &mut out);
        out.sort();
        out
    }

    /// Everything an operator can see, plus the chunk store's files.
    async fn snapshot(&self) -> Value {
        let mut state = serde_json::Map::new();
        for path in [
            "/api/v1/packages?per_page=1000",
            "/api/v1/groups",
            "/api/v1/tasks?per_page=1000",
            "/api/v1/devices?per_page=1000",
            "/api/v1/stores",
            "/api/v1/till-types",
        ] {
            state.insert(path.into(), ok(&self.get(path).await, 200));
        }
        let groups = state["/api/v1/groups"].clone();
        for g in groups.as_array().expect("group list") {
            let path = format!("/api/v1/groups/{}", g["id"]);
            state.insert(path.clone(), ok(&self.get(&path).await, 200));
        }
        let tasks = state["/api/v1/tasks?per_page=1000"]["items"].clone();
        for t in tasks.as_array().expect("task list") {
            let path = format!("/api/v1/tasks/{}", t["id"]);
            state.insert(path.clone(), ok(&self.get(&path).await, 200));
        }
        let packages = state["/api/v1/packages?per_page=1000"]["items"].clone();
        for p in packages.as_array().expect("package list") {
            let path = format!("/api/v1/packages/{}", p["package_id"].as_str().expect("id"));
            state.insert(path.clone(), ok(&self.get(&path).await, 200));
        }
        let files: Vec<Value> = self
            .chunk_files()
            .iter()
            .map(|p| {
                json!(
                    p.strip_prefix(self.dir.path())
                        .expect("under data")
                        .display()
                        .to_string()
                )
            })
            .collect();
        state.insert("chunk files".into(), Value::Array(files));
        Value::Object(state)
    }

    /// The sample registry, one small package, a custom group of two tills and a
    /// running update task of that package for every till.
    async fn seed(&self) -> Seed {
        ok(&self.import("text/csv", sample_registry("csv")).await, 200);
        // Tills 1 and 2 log in (binding their keys) before any snapshot.
        for till in [TILL_1, TILL_2] {
            let body = json!({ "device_id": till }).to_string();
            self.node_token(Some(body.as_bytes())).await;
        }
        let package_id = self.upload_demo().await;
        let group = ok(
            &self
                .post(
                    "/api/v1/groups",
                    json!({"name": "Pilot", "description": "two tills", "members": [TILL_1, TILL_2]})
                        .to_string(),
                )
                .await,
            201,
        );
        let task = ok(
            &self
                .post(
                    "/api/v1/tasks",
                    json!({"kind": "update", "package_id": package_id, "group_id": 1}).to_string(),
                )
                .await,
            201,
        );
        assert_eq!(task["status"], "running", "{task}");
        assert_eq!(task["states"]["pending"], 12, "{task}");
        Seed {
            package_id,
            task_id: task["id"].as_i64().expect("task id"),
            group_id: group["id"].as_i64().expect("group id"),
        }
    }

    async fn upload_demo(&self) -> String {
        let pkg = ok(
            &self
                .upload(
                    "demo",
                    "1.0.0",
                    &tillswarm_fixtures::demo_package("1.0.0", SMALL),
                )
                .await,
            201,
        );
        pkg["package_id"].as_str().expect("package id").to_owned()
    }
}

/// Asserts a success status and returns the JSON body.
#[track_caller]
fn ok(r: &Reply, status: u16) -> Value {
    assert_eq!(
        r.status.as_u16(),
        status,
        "expected {status}, got {}: {}",
        r.status,
        String::from_utf8_lossy(&r.body)
    );
    r.json()
}

/// Asserts an error reply: the status, a JSON content type and a body of exactly
/// `{code, message}` with the expected code and a non-empty message. Returns the
/// message.
#[track_caller]
fn err(r: &Reply, status: u16, code: &str) -> String {
    let text = String::from_utf8_lossy(&r.body).into_owned();
    assert_eq!(
        r.status.as_u16(),
        status,
        "expected {status} {code}, got {}: {text}",
        r.status
    );
    let ct = r
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        ct.starts_with("application/json"),
        "error body is {ct:?}, not JSON: {text}"
    );
    let body = r.json();
    let obj = body
        .as_object()
        .unwrap_or_else(|| panic!("error body is not an object: {text}"));
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["code", "message"], "error body fields: {text}");
    assert_eq!(body["code"], code, "error code: {text}");
    let message = body["message"].as_str().expect("message is a string");
    assert!(!message.trim().is_empty(), "empty message: {text}");
    assert!(
        !message.contains("internal error"),
        "a caller's mistake reported as internal: {text}"
    );
    message.to_owned()
}

/// Asserts that nothing visible changed.
#[track_caller]
fn same(before: &Value, after: &Value, what: &str) {
    if before != after {
        let b = before.as_object().expect("snapshot");
        let a = after.as_object().expect("snapshot");
        let changed: Vec<&String> = b.keys().filter(|k| b.get(*k) != a.get(*k)).collect();
        panic!("{what} changed state at {changed:?}\nbefore: {before:#}\nafter: {after:#}");
    }
}

/// A tar holding the given files.
fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_path(path).expect("tar path");
        h.set_size(data.len() as u64);
        h.set_mode(0o755);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        b.append(&h, *data).expect("tar append");
    }
    b.into_inner().expect("tar finish")
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).expect("gzip");
    gz.finish().expect("gzip finish")
}

fn progress(device: &str, task: i64, seq: u64, state: &str) -> Value {
    json!({
        "device_id": device,
        "task_id": task,
        "attempt": 1,
        "seq": seq,
        "state": state,
        "bytes_done": 1000,
        "wan_bytes": 1000,
        "lan_bytes": 0,
        "error": null,
        "log_tail": null,
    })
}

fn heartbeat(device: &str) -> Value {
    json!({
        "device_id": device,
        "version": "0.9.0",
        "state": "ready",
        "ip": "10.0.0.1",
        "peer_id": null,
        "free_disk_bytes": 1000000,
        "known_revision": null,
    })
}

// ----- malformed and mis-shaped JSON -----

#[tokio::test]
async fn malformed_json_bodies_are_400_invalid_json() {
    let api = api().await;
    let seed = api.seed().await;
    let before = api.snapshot().await;
    let bodies: [&[u8]; 8] = [
        b"{",
        b"not json",
        b"",
        b"{\"kind\": \"update\",",
        b"{\"name\": \"x\"}}",
        b"\xff\xfe\x00{",
        b"nul",
        b"{'name': 'single quotes'}",
    ];
    let targets = [
        ("POST", "/api/v1/tasks".to_owned()),
        ("POST", "/api/v1/groups".to_owned()),
        ("PUT", format!("/api/v1/groups/{}", seed.group_id)),
        ("PATCH", format!("/api/v1/groups/{}", seed.group_id)),
        ("POST", format!("/api/v1/tasks/{}/group", seed.task_id)),
        ("POST", "/api/v1/node/heartbeat".to_owned()),
        ("POST", "/api/v1/node/progress".to_owned()),
        ("PUT", "/api/v1/till-types/standard".to_owned()),
        ("PUT", "/api/v1/till-types/*".to_owned()),
    ];
    for (method, path) in &targets {
        for body in bodies {
            let r = api.call(method, path, Some(body)).await;
            let msg = err(&r, 400, "invalid_json");
            assert!(
                msg.contains("JSON"),
                "{method} {path} {body:?}: unclear message {msg:?}"
            );
        }
    }
    same(&before, &api.snapshot().await, "malformed JSON");
}

#[tokio::test]
async fn wrong_shape_unknown_fields_and_bad_enum_values_are_400() {
    let api = api().await;
    let seed = api.seed().await;
    let before = api.snapshot().await;
    let pkg = seed.package_id.as_str();
    let task = json!({"kind": "update", "package_id": pkg, "group_id": 1});
    let with = |base: &Value, key: &str, value: Value| {
        let mut v = base.clone();
        v[key] = value;
        v
    };
    let without = |base: &Value, key: &str| {
        let mut v = base.clone();
        v.as_object_mut().expect("object").remove(key);
        v
    };
    let hb = heartbeat(TILL_1);
    let report = progress(TILL_1, seed.task_id, 1, "downloading");
    // (method, path, body, a word the message must mention)
    let cases: Vec<(&str, String, Value, &str)> = vec![
        // tasks
        (
            "POST",
            "/api/v1/tasks".into(),
            with(&task, "kind", json!("reboot")),
            "reboot",
        ),
        (
            "POST",
            "/api/v1/tasks".into(),
            with(&task, "kind", json!("UPDATE")),
            "UPDATE",
        ),
        (
            "POST",
            "/api/v1/tasks".into(),
            with(&task, "kind", json!(1)),
            "`kind`",
        ),
        (
            "POST",
            "/api/v1/tasks".into(),
            with(&task, "priority", json!(1)),
            "priority",
        ),
        (
            "POST",
            "/api/v1/tasks".into(),
            without(&task, "group_id"),
            "group_id",
        ),
        (
            "POST",
            "/api/v1/tasks".into(),
            without(&task, "package_id"),
            "package_id",
        ),
        (
            "POST",
            "/api/v1/tasks".into(),
            with(&task, "group_id", json!("1")),
            "invalid type",
        ),
        (
            "POST",
            "/api/v1/tasks".into(),
            with(&task, "group_id", json!(1.5)),
            "invalid type",
        ),
        (
            "POST",
            "/api/v1/tasks".into(),
            with(&task, "package_id", json!("xyz")),
            "xyz",
        ),
        (
            "POST",
            "/api/v1/tasks".into(),
            with(&task, "rollback", json!("yes")),
            "invalid type",
        ),
        (
            "POST",
            "/api/v1/tasks".into(),
            with(&task, "activate_at", json!(5)),
            "invalid type",
        ),
        ("POST", "/api/v1/tasks".into(), json!(null), "invalid type"),
        // groups
        (
            "POST",
            "/api/v1/groups".into(),
            json!({"name": "X", "colour": "red"}),
            "colour",
        ),
        (
            "POST",
            "/api/v1/groups".into(),
            json!({"name": 5}),
            "invalid type",
        ),
        (
            "POST",
            "/api/v1/groups".into(),
            json!({"name": "X", "members": TILL_1}),
            "invalid type",
        ),
        (
            "POST",
            "/api/v1/groups".into(),
            json!({"name": "X", "members": ["not-a-guid"]}),
            "GUID",
        ),
        (
            "PUT",
            format!("/api/v1/groups/{}", seed.group_id),
            json!({"name": "Renamed", "owner": "me"}),
            "owner",
        ),
        // a group from a task's tills
        (
            "POST",
            format!("/api/v1/tasks/{}/group", seed.task_id),
            json!({"name": "Failed ones", "state": ["failed"]}),
            "state",
        ),
        (
            "POST",
            format!("/api/v1/tasks/{}/group", seed.task_id),
            json!({"name": "Failed ones", "states": "failed"}),
            "invalid type",
        ),
        // heartbeat
        (
            "POST",
            "/api/v1/node/heartbeat".into(),
            without(&hb, "device_id"),
            "device_id",
        ),
        (
            "POST",
            "/api/v1/node/heartbeat".into(),
            with(&hb, "state", json!("dancing")),
            "dancing",
        ),
        (
            "POST",
            "/api/v1/node/heartbeat".into(),
            with(&hb, "device_id", json!("xyz")),
            "GUID",
        ),
        (
            "POST",
            "/api/v1/node/heartbeat".into(),
            with(&hb, "version", json!("v1")),
            "v1",
        ),
        (
            "POST",
            "/api/v1/node/heartbeat".into(),
            with(&hb, "free_disk_bytes", json!(-1)),
            "-1",
        ),
        // progress
        (
            "POST",
            "/api/v1/node/progress".into(),
            with(&report, "state", json!("bogus")),
            "bogus",
        ),
        (
            "POST",
            "/api/v1/node/progress".into(),
            with(&report, "seq", json!(-1)),
            "-1",
        ),
        (
            "POST",
            "/api/v1/node/progress".into(),
            with(&report, "task_id", json!("1")),
            "invalid type",
        ),
        (
            "POST",
            "/api/v1/node/progress".into(),
            without(&report, "attempt"),
            "attempt",
        ),
        // till types
        (
            "PUT",
            "/api/v1/till-types/standard".into(),
            json!({"auto_update_timeout_minutes": "15"}),
            "invalid type",
        ),
        (
            "PUT",
            "/api/v1/till-types/standard".into(),
            json!({"auto_update_timeout_minutes": -5}),
            "-5",
        ),
        (
            "PUT",
            "/api/v1/till-types/standard".into(),
            json!({"auto_update_timeout_minutes": 1.5}),
            "1.5",
        ),
        (
            "PUT",
            "/api/v1/till-types/standard".into(),
            json!({"auto_update_timeout_minute": 5}),
            "auto_update_timeout_minute",
        ),
        (
            "PUT",
            "/api/v1/till-types/standard".into(),
            json!(15),
            "invalid type",
        ),
    ];
    for (method, path, body, word) in &cases {
        let r = api
            .call(method, path, Some(body.to_string().as_bytes()))
            .await;
        let msg = err(&r, 400, "invalid_json");
        assert!(
            msg.contains(word),
            "{method} {path} {body}: message {msg:?} does not mention {word:?}"
        );
    }
    same(&before, &api.snapshot().await, "mis-shaped JSON");
}

// ----- ids -----

#[tokio::test]
async fn unknown_ids_are_404_not_found() {
    let api = api().await;
    let seed = api.seed().await;
    let before = api.snapshot().await;
    let group_body = json!({"description": "x"}).to_string();
    let task_group = json!({"name": "From nothing"}).to_string();
    let cases: Vec<(&str, String, Option<String>)> = vec![
        ("GET", format!("/api/v1/devices/{UNKNOWN_GUID}"), None),
        (
            "POST",
            format!("/api/v1/devices/{UNKNOWN_GUID}/approve"),
            None,
        ),
        ("DELETE", format!("/api/v1/devices/{UNKNOWN_GUID}"), None),
        ("GET", "/api/v1/groups/999".into(), None),
        ("GET", "/api/v1/groups/0".into(), None),
        ("GET", "/api/v1/groups/-1".into(), None),
        ("PUT", "/api/v1/groups/999".into(), Some(group_body.clone())),
        ("PATCH", "/api/v1/groups/999".into(), Some(group_body)),
        ("DELETE", "/api/v1/groups/999".into(), None),
        ("GET", "/api/v1/tasks/999".into(), None),
        ("GET", "/api/v1/tasks/0".into(), None),
        ("DELETE", "/api/v1/tasks/999".into(), None),
        ("POST", "/api/v1/tasks/999/pause".into(), None),
        ("POST", "/api/v1/tasks/999/resume".into(), None),
        ("POST", "/api/v1/tasks/999/restart".into(), None),
        ("POST", "/api/v1/tasks/999/group".into(), Some(task_group)),
        ("GET", format!("/api/v1/packages/{UNKNOWN_HASH}"), None),
        (
            "GET",
            format!("/api/v1/packages/{UNKNOWN_HASH}/manifest"),
            None,
        ),
        (
            "GET",
            format!("/api/v1/packages/{UNKNOWN_HASH}/bundle"),
            None,
        ),
        ("DELETE", format!("/api/v1/packages/{UNKNOWN_HASH}"), None),
        (
            "GET",
            format!("/api/v1/node/manifests/{UNKNOWN_HASH}"),
            None,
        ),
        ("GET", format!("/api/v1/node/chunks/{UNKNOWN_HASH}"), None),
    ];
    for (method, path, body) in &cases {
        let r = api
            .call(method, path, body.as_deref().map(str::as_bytes))
            .await;
        let msg = err(&r, 404, "not_found");
        assert!(
            msg.starts_with("no ") || msg.contains("no "),
            "{method} {path}: {msg:?}"
        );
    }
    // Chunks are looked up by hash too, also with a Range.
    err(
        &api.chunk(UNKNOWN_HASH, "bytes=0-9").await,
        404,
        "not_found",
    );
    // The seeded ids still resolve.
    ok(
        &api.get(&format!("/api/v1/tasks/{}", seed.task_id)).await,
        200,
    );
    same(&before, &api.snapshot().await, "unknown ids");
}

#[tokio::test]
async fn malformed_ids_are_400_invalid_id() {
    let api = api().await;
    let seed = api.seed().await;
    let before = api.snapshot().await;
    let group_body = json!({"description": "x"}).to_string();
    let task_group = json!({"name": "From nothing"}).to_string();
    let short_hash = &UNKNOWN_HASH[..62];
    let cases: Vec<(&str, String, Option<String>)> = vec![
        ("GET", "/api/v1/tasks/abc".into(), None),
        ("GET", "/api/v1/tasks/1.5".into(), None),
        ("GET", "/api/v1/tasks/99999999999999999999".into(), None),
        ("DELETE", "/api/v1/tasks/abc".into(), None),
        ("POST", "/api/v1/tasks/abc/pause".into(), None),
        ("POST", "/api/v1/tasks/abc/resume".into(), None),
        ("POST", "/api/v1/tasks/abc/restart".into(), None),
        ("POST", "/api/v1/tasks/abc/group".into(), Some(task_group)),
        ("GET", "/api/v1/packages/xyz".into(), None),
        ("GET", format!("/api/v1/packages/{short_hash}"), None),
        ("GET", format!("/api/v1/packages/{}", "zz".repeat(32)), None),
        ("GET", "/api/v1/packages/xyz/manifest".into(), None),
        ("GET", "/api/v1/packages/xyz/bundle".into(), None),
        ("DELETE", "/api/v1/packages/xyz".into(), None),
        ("GET", "/api/v1/node/manifests/xyz".into(), None),
        ("GET", "/api/v1/node/chunks/xyz".into(), None),
        ("GET", "/api/v1/devices/not-a-guid".into(), None),
        ("GET", "/api/v1/devices/12345".into(), None),
        ("POST", "/api/v1/devices/not-a-guid/approve".into(), None),
        ("DELETE", "/api/v1/devices/not-a-guid".into(), None),
        ("GET", "/api/v1/groups/abc".into(), None),
        ("PUT", "/api/v1/groups/abc".into(), Some(group_body)),
        ("DELETE", "/api/v1/groups/abc".into(), None),
    ];
    for (method, path, body) in &cases {
        let r = api
            .call(method, path, body.as_deref().map(str::as_bytes))
            .await;
        let msg = err(&r, 400, "invalid_id");
        assert!(msg.starts_with("invalid "), "{method} {path}: {msg:?}");
    }
    ok(
        &api.get(&format!("/api/v1/tasks/{}", seed.task_id)).await,
        200,
    );
    same(&before, &api.snapshot().await, "malformed ids");
}

// ----- oversized bodies -----

/// JSON bodies just over the 1 MiB cap, with their Content-Length.
#[tokio::test]
async fn json_bodies_over_1_mib_are_413() {
    let api = api().await;
    let seed = api.seed().await;
    let before = api.snapshot().await;
    let big = vec![b' '; MIB + 1];
    for (method, path) in [
        ("POST", "/api/v1/node/heartbeat".to_owned()),
        ("POST", "/api/v1/node/progress".to_owned()),
        ("PUT", "/api/v1/till-types/standard".to_owned()),
        ("POST", format!("/api/v1/tasks/{}/group", seed.task_id)),
    ] {
        let r = api.call(method, &path, Some(&big)).await;
        err(&r, 413, "too_large");
        // Exactly at the cap, the body is read (and found not to be JSON).
        let r = api.call(method, &path, Some(&big[..MIB])).await;
        err(&r, 400, "invalid_json");
        // No Content-Length at all: 411.
        let token = if is_node_route(&path) {
            api.node_token(None).await
        } else {
            api.token.clone()
        };
        let r = api
            .send_as(warp::test::request().method(method).path(&path), &token)
            .await;
        err(&r, 411, "length_required");
    }
    same(&before, &api.snapshot().await, "oversized JSON");
}

/// The same cap on routes whose path also has a route for another method.
#[tokio::test]

async fn json_bodies_over_the_cap_on_shared_paths_are_413() {
    let api = api().await;
    let seed = api.seed().await;
    let before = api.snapshot().await;
    let big = vec![b' '; MIB + 1];
    let r = api.post("/api/v1/tasks", &big).await;
    err(&r, 413, "too_large");
    // Groups accept up to 8 MiB (100 000 members); one byte more is refused.
    let bigger = vec![b' '; 8 * MIB + 1];
    err(&api.post("/api/v1/groups", &bigger).await, 413, "too_large");
    let path = format!("/api/v1/groups/{}", seed.group_id);
    err(&api.put(&path, &bigger).await, 413, "too_large");
    // The registry import cap is 64 MiB: only the declared length is checked
    // before reading, so the header alone shows the refusal.
    let r = api
        .send(
            warp::test::request()
                .method("POST")
                .path("/api/v1/devices/import")
                .header("content-type", "text/csv")
                .body(REGISTRY_HEADER)
                .header("content-length", (64 * MIB + 1).to_string()),
        )
        .await;
    err(&r, 413, "too_large");
    // No Content-Length at all: 411.
    let r = api
        .send(warp::test::request().method("POST").path("/api/v1/tasks"))
        .await;
    err(&r, 411, "length_required");
    same(
        &before,
        &api.snapshot().await,
        "oversized JSON on shared paths",
    );
}

#[tokio::test]
async fn package_over_max_package_bytes_is_413_and_leaves_nothing() {
    let limit = 2 * MIB as u64;
    let api = api_with_limit(limit).await;
    let before = api.snapshot().await;
    let big = tillswarm_fixtures::demo_package("1.0.0", 3 * MIB);
    assert!(big.len() as u64 > limit);
    // Refused from its Content-Length, before reading.
    let msg = err(&api.upload("demo", "1.0.0", &big).await, 413, "too_large");
    assert!(msg.contains(&limit.to_string()), "{msg:?}");
    // Refused while streaming, when the declared length does not show it (as
    // with a chunked upload).
    let r = api
        .send(
            warp::test::request()
                .method("POST")
                .path("/api/v1/packages?name=demo&version=1.0.0")
                .body(&big)
                .header("content-length", "1000"),
        )
        .await;
    err(&r, 413, "too_large");
    let after = api.snapshot().await;
    same(&before, &after, "oversized package");
    assert_eq!(after["/api/v1/packages?per_page=1000"]["total"], 0);
    assert_eq!(
        api.chunk_files(),
        Vec::<PathBuf>::new(),
        "leftover chunk files"
    );
    let tmp = api.chunks_dir().join("tmp");
    assert!(tmp.is_dir(), "the chunk store's tmp dir is kept");
    // The limit leaves room for a package under it.
    ok(
        &api.upload(
            "demo",
            "1.0.0",
            &tillswarm_fixtures::demo_package("1.0.0", SMALL),
        )
        .await,
        201,
    );
}

// ----- package names and versions -----

#[tokio::test]
async fn invalid_versions_and_names_and_missing_query_are_400() {
    let api = api().await;
    let before = api.snapshot().await;
    let pkg = tillswarm_fixtures::demo_package("1.0.0", SMALL);
    for version in [
        "1..2",
        "v1",
        "",
        "1.",
        ".1",
        "1.02",
        "1.2.3.4.5.6.7",
        "1.-2",
        " 1.0",
        "1.0 ",
        "1.0-beta",
        "99999999999",
        "1,0",
    ] {
        let msg = err(
            &api.upload("demo", version, &pkg).await,
            400,
            "invalid_version",
        );
        assert!(msg.contains("invalid version"), "{version:?}: {msg:?}");
    }
    let long = "a".repeat(65);
    for name in [
        "bad name",
        "../evil",
        "",
        long.as_str(),
        "ünicode",
        "a/b",
        "a;b",
        "x\n",
    ] {
        let msg = err(
            &api.upload(name, "1.0.0", &pkg).await,
            400,
            "invalid_package",
        );
        assert!(msg.contains("package name"), "{name:?}: {msg:?}");
    }
    for query in ["", "?name=demo", "?version=1.0.0", "?nam=demo&ver=1.0.0"] {
        let r = api
            .send(
                warp::test::request()
                    .method("POST")
                    .path(&format!("/api/v1/packages{query}"))
                    .body(&pkg),
            )
            .await;
        let msg = err(&r, 400, "invalid_package");
        assert!(msg.contains("name and version"), "{query:?}: {msg:?}");
    }
    same(&before, &api.snapshot().await, "invalid names and versions");
    assert_eq!(api.chunk_files(), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn duplicate_package_versions_and_files_are_409() {
    let api = api().await;
    let v100 = tillswarm_fixtures::demo_package("1.0.0", SMALL);
    let v110 = tillswarm_fixtures::demo_package("1.1.0", SMALL);
    let first = ok(&api.upload("demo", "1.0.0", &v100).await, 201);
    let before = api.snapshot().await;
    // The same name and version, with the same or another file.
    for (version, body) in [
        ("1.0.0", &v100),
        ("1.0.0", &v110),
        ("1.0", &v110),
        ("1", &v110),
        ("1.0.0.0", &v110),
    ] {
        let msg = err(
            &api.upload("demo", version, body).await,
            409,
            "package_exists",
        );
        assert!(msg.contains("already uploaded"), "{version}: {msg:?}");
    }
    // The same file under another version or name.
    for (name, version) in [("demo", "2.0.0"), ("other", "1.0.0")] {
        let msg = err(
            &api.upload(name, version, &v100).await,
            409,
            "package_exists",
        );
        assert!(
            msg.contains("demo 1.0.0"),
            "{name} {version}: message should name the existing package: {msg:?}"
        );
    }
    same(&before, &api.snapshot().await, "duplicate packages");
    // Another file under a new version is fine.
    let second = ok(&api.upload("demo", "1.1.0", &v110).await, 201);
    assert_ne!(first["package_id"], second["package_id"]);
}

/// Two different files uploaded at the same time under one name and version:
/// one wins, the other gets 409 and leaves no chunks behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]

async fn concurrent_duplicate_uploads_leave_no_orphan_chunks() {
    let api = std::sync::Arc::new(api().await);
    let bodies: Vec<Vec<u8>> = (0..4u64)
        .map(|seed| {
            tillswarm_fixtures::package_tar(
                &tillswarm_fixtures::up_sh("demo", "3.0.0", 0),
                &tillswarm_fixtures::noise(4 * MIB, 0xC0C0 + seed),
            )
        })
        .collect();
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(bodies.len()));
    let mut handles = Vec::new();
    for body in bodies {
        let (api, start) = (api.clone(), start.clone());
        handles.push(tokio::spawn(async move {
            start.wait().await;
            let r = api.upload("demo", "3.0.0", &body).await;
            (
                r.status.as_u16(),
                String::from_utf8_lossy(&r.body).into_owned(),
            )
        }));
    }
    let mut statuses = Vec::new();
    for h in handles {
        let (status, body) = h.await.expect("join");
        assert!(status == 201 || status == 409, "{status}: {body}");
        statuses.push(status);
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 409, 409, 409]);
    // Every chunk file belongs to the one package that was stored.
    let packages = ok(&api.get("/api/v1/packages").await, 200);
    let id = packages["items"][0]["package_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let detail = ok(&api.get(&format!("/api/v1/packages/{id}")).await, 200);
    let mut referenced: Vec<String> = detail["manifest"]["chunks"]
        .as_array()
        .expect("chunks")
        .iter()
        .map(|c| c["hash"].as_str().expect("hash").to_owned())
        .collect();
    referenced.sort();
    referenced.dedup();
    let mut on_disk: Vec<String> = api
        .chunk_files()
        .iter()
        .map(|p| {
            // A chunk kept as a zstd frame is `<hash>.zst`.
            let name = p.file_name().expect("name").to_string_lossy().into_owned();
            name.strip_suffix(".zst").map(str::to_owned).unwrap_or(name)
        })
        .collect();
    on_disk.sort();
    assert_eq!(on_disk, referenced, "chunk files no package references");
}

// ----- uploads that are not packages -----

#[tokio::test]
async fn uploads_that_are_not_a_tar_with_up_sh_are_400_invalid_package() {
    let api = api().await;
    let before = api.snapshot().await;
    let no_up_sh = tar_of(&[("readme.txt", b"hello"), ("payload.bin", &[7u8; 4096])]);
    let nested = tar_of(&[("pkg/up.sh", b"#!/bin/sh\n"), ("payload.bin", b"x")]);
    let mut gz_garbage = vec![0x1f, 0x8b];
    gz_garbage.extend(tillswarm_fixtures::noise(4096, 2));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("random bytes", tillswarm_fixtures::noise(64 * 1024, 1)),
        ("a few random bytes", tillswarm_fixtures::noise(100, 3)),
        ("zeros (an empty tar)", vec![0u8; 1024]),
        ("a tar without up.sh", no_up_sh.clone()),
        ("a tar.gz without up.sh", gzip(&no_up_sh)),
        ("up.sh not at the top", nested),
        ("gzip magic and garbage", gz_garbage),
        ("a truncated package", {
            let mut p = tillswarm_fixtures::demo_package("1.0.0", SMALL);
            p.truncate(300);
            p
        }),
        ("an empty body", Vec::new()),
    ];
    for (what, body) in &cases {
        let r = api.upload("demo", "1.0.0", body).await;
        let msg = err(&r, 400, "invalid_package");
        assert!(
            msg.contains("not a package") || msg.contains("empty"),
            "{what}: {msg:?}"
        );
    }
    same(&before, &api.snapshot().await, "not-a-package uploads");
    assert_eq!(api.chunk_files(), Vec::<PathBuf>::new(), "leftover chunks");
}

/// Every entry of an archive is checked at upload, not only up to `up.sh`.
#[tokio::test]
async fn archives_with_hostile_entries_are_refused_whole() {
    use tar::EntryType as T;
    use tillswarm_fixtures::{RawEntry, raw_tar};
    let api = api_with_unpacked_limit(1 << 20).await;
    let before = api.snapshot().await;
    let up = RawEntry::file("up.sh", 0o755, b"#!/bin/sh\nexit 0\n");
    let cases: Vec<(&str, Vec<RawEntry>, &str)> = vec![
        (
            "`..` after up.sh",
            vec![
                up.clone(),
                RawEntry::file("../../etc/cron.d/x", 0o644, b"x"),
            ],
            "`..`",
        ),
        (
            "an absolute path",
            vec![up.clone(), RawEntry::file("/etc/passwd", 0o644, b"x")],
            "absolute",
        ),
        (
            "a symlink to /etc/shadow",
            vec![
                up.clone(),
                RawEntry::other(b"s", T::Symlink, Some(b"/etc/shadow")),
            ],
            "link",
        ),
        (
            "a hard link out",
            vec![
                up.clone(),
                RawEntry::other(b"h", T::Link, Some(b"/etc/shadow")),
            ],
            "link",
        ),
        (
            "up.sh as a symlink",
            vec![RawEntry::other(b"up.sh", T::Symlink, Some(b"bin/real.sh"))],
            "regular file",
        ),
        (
            "a FIFO",
            vec![up.clone(), RawEntry::other(b"pipe", T::Fifo, None)],
            "FIFO",
        ),
        (
            "a device",
            vec![up.clone(), RawEntry::other(b"sda", T::Block, None)],
            "devices",
        ),
        (
            "a sparse file",
            vec![up.clone(), RawEntry::other(b"holes", T::GNUSparse, None)],
            "sparse",
        ),
        (
            "over the unpacked limit",
            vec![
                up.clone(),
                RawEntry::file("big", 0o644, &vec![0u8; 2 << 20]),
            ],
            "unpacks to more than",
        ),
    ];
    for (what, entries, needle) in &cases {
        let tar = raw_tar(entries);
        for body in [tar.clone(), gzip(&tar)] {
            let r = api.upload("demo", "1.0.0", &body).await;
            let msg = err(&r, 400, "invalid_package");
            assert!(msg.contains(needle), "{what}: {msg:?}");
        }
    }
    // A name with control characters is shown escaped, never raw.
    let r = api
        .upload(
            "demo",
            "1.0.0",
            &raw_tar(&[up.clone(), RawEntry::file("/\u{1b}[2Jx\n", 0o644, b"x")]),
        )
        .await;
    let msg = err(&r, 400, "invalid_package");
    assert!(!msg.contains('\u{1b}') && !msg.contains('\n'), "{msg:?}");
    assert!(msg.contains("\\u{1b}"), "{msg:?}");
    same(&before, &api.snapshot().await, "hostile archives");
    assert_eq!(api.chunk_files(), Vec::<PathBuf>::new(), "leftover chunks");
    // Within the limits, an archive with links inside the tree is fine.
    let fine = raw_tar(&[
        up,
        RawEntry::other(b"lib/a.so", T::Symlink, Some(b"a.so.1")),
    ]);
    ok(&api.upload("demo", "1.0.0", &fine).await, 201);
}

// ----- groups -----

#[tokio::test]
async fn group_errors_unknown_device_duplicate_name_and_builtin() {
    let api = api().await;
    let seed = api.seed().await;
    let other = ok(
        &api.post(
            "/api/v1/groups",
            json!({"name": "Second", "members": [TILL_2]}).to_string(),
        )
        .await,
        201,
    );
    let other_id = other["id"].as_i64().expect("id");
    let before = api.snapshot().await;
    let pilot = format!("/api/v1/groups/{}", seed.group_id);

    // Unknown devices, alone or among known ones, on create and on edit.
    for members in [json!([UNKNOWN_GUID]), json!([TILL_1, UNKNOWN_GUID])] {
        let body = json!({"name": "New", "members": members}).to_string();
        let msg = err(
            &api.post("/api/v1/groups", &body).await,
            400,
            "unknown_device",
        );
        assert!(msg.contains(UNKNOWN_GUID), "{msg:?}");
        let body = json!({"members": members}).to_string();
        err(&api.put(&pilot, &body).await, 400, "unknown_device");
        // A rename in the same edit is not applied either.
        let body = json!({"name": "Renamed", "description": "d", "members": members}).to_string();
        err(&api.put(&pilot, &body).await, 400, "unknown_device");
    }

    // Duplicate names (names are case-insensitive).
    for name in ["Pilot", "pilot", "PILOT", "All", "even"] {
        let body = json!({"name": name}).to_string();
        let msg = err(
            &api.post("/api/v1/groups", &body).await,
            409,
            "group_exists",
        );
        assert!(msg.contains(name), "{msg:?}");
    }
    let body = json!({"name": "pilot"}).to_string();
    err(
        &api.put(&format!("/api/v1/groups/{other_id}"), &body).await,
        409,
        "group_exists",
    );

    // Bad names.
    for body in [
        json!({}),
        json!({"name": ""}),
        json!({"name": " padded"}),
        json!({"name": "x".repeat(65)}),
        json!({"name": "Long", "description": "d".repeat(1025)}),
    ] {
        err(
            &api.post("/api/v1/groups", body.to_string()).await,
            400,
            "invalid_group",
        );
    }
    err(
        &api.put(&pilot, json!({"name": ""}).to_string()).await,
        400,
        "invalid_group",
    );

    // Built-in groups cannot be edited or deleted.
    for id in 1..=3 {
        let path = format!("/api/v1/groups/{id}");
        for (method, body) in [
            ("PUT", Some(json!({"description": "mine now"}))),
            ("PATCH", Some(json!({"name": "Renamed"}))),
            ("PUT", Some(json!({"members": [TILL_1]}))),
            ("PATCH", Some(json!({}))),
            ("DELETE", None),
        ] {
            let body = body.map(|b| b.to_string());
            let r = api
                .call(method, &path, body.as_deref().map(str::as_bytes))
                .await;
            let msg = err(&r, 409, "builtin_group");
            assert!(msg.contains("built-in"), "{msg:?}");
        }
    }
    same(&before, &api.snapshot().await, "group errors");
}

// ----- packages in use -----

#[tokio::test]
async fn deleting_a_package_in_use_is_409_until_its_tasks_are_gone() {
    let api = api().await;
    let seed = api.seed().await;
    // A second, scheduled task of the same package, on the custom group.
    let scheduled = ok(
        &api.post(
            "/api/v1/tasks",
            json!({
                "kind": "download",
                "package_id": seed.package_id,
                "group_id": seed.group_id,
                "activate_at": "2099-01-01T00:00:00Z",
            })
            .to_string(),
        )
        .await,
        201,
    );
    assert_eq!(scheduled["status"], "scheduled");
    let before = api.snapshot().await;
    let path = format!("/api/v1/packages/{}", seed.package_id);
    let msg = err(&api.delete(&path).await, 409, "package_in_use");
    assert!(msg.contains("2 unfinished task"), "{msg:?}");
    // The group waiting for that task cannot go either.
    err(
        &api.delete(&format!("/api/v1/groups/{}", seed.group_id))
            .await,
        409,
        "group_in_use",
    );
    same(&before, &api.snapshot().await, "delete in use");

    let r = api.delete(&format!("/api/v1/tasks/{}", seed.task_id)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let msg = err(&api.delete(&path).await, 409, "package_in_use");
    assert!(msg.contains("1 unfinished task"), "{msg:?}");
    let r = api
        .delete(&format!("/api/v1/tasks/{}", scheduled["id"]))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = api.delete(&path).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
    err(&api.get(&path).await, 404, "not_found");
    assert_eq!(
        api.chunk_files(),
        Vec::<PathBuf>::new(),
        "chunks of the deleted package"
    );
}

// ----- tasks -----

#[tokio::test]
async fn task_timers_and_references_are_checked() {
    let api = api().await;
    ok(&api.import("text/csv", sample_registry("csv")).await, 200);
    let pkg = api.upload_demo().await;
    let before = api.snapshot().await;
    let task = |at: Value, package: &str, group: Value| {
        json!({"kind": "update", "package_id": package, "group_id": group, "activate_at": at})
            .to_string()
    };
    for at in [
        "2001-01-01T00:00:00Z",
        "1970-01-01T00:00:00Z",
        "2020-06-01 12:00:00",
    ] {
        let msg = err(
            &api.post("/api/v1/tasks", task(json!(at), &pkg, json!(1)))
                .await,
            400,
            "time_in_past",
        );
        assert!(msg.contains("past"), "{at}: {msg:?}");
    }
    for at in [
        "tomorrow",
        "2026-13-45T00:00:00Z",
        "1700000000",
        "2099-01-01",
        "02:00",
    ] {
        let msg = err(
            &api.post("/api/v1/tasks", task(json!(at), &pkg, json!(1)))
                .await,
            400,
            "invalid_time",
        );
        assert!(msg.contains("RFC 3339"), "{at}: {msg:?}");
    }
    let msg = err(
        &api.post("/api/v1/tasks", task(Value::Null, UNKNOWN_HASH, json!(1)))
            .await,
        400,
        "unknown_package",
    );
    assert!(msg.contains(UNKNOWN_HASH), "{msg:?}");
    for group in [999, 0, -1] {
        let msg = err(
            &api.post("/api/v1/tasks", task(Value::Null, &pkg, json!(group)))
                .await,
            400,
            "unknown_group",
        );
        assert!(msg.contains(&group.to_string()), "{msg:?}");
    }
    same(&before, &api.snapshot().await, "bad tasks");
}

// ----- registry imports -----

fn row(guid: &str, number: &str, store: &str, name: &str) -> String {
    format!("{guid},Till {number},{number},{store},{name},\"1 Main St\",standard,Europe/Moscow")
}

#[tokio::test]
async fn bad_registry_imports_are_400_invalid_registry() {
    let api = api().await;
    ok(&api.import("text/csv", sample_registry("csv")).await, 200);
    let before = api.snapshot().await;
    let sample = String::from_utf8(sample_registry("csv")).expect("utf-8");
    // Every bad file also renames an existing store, so a partial import shows.
    let renamed = row(TILL_1, "1", "store-001", "Renamed Market");
    let g = |n: u32| format!("72220000-0000-0000-0000-{n:012}");
    let csv = |rows: &[String]| format!("{REGISTRY_HEADER}\n{}\n", rows.join("\n"));
    let long = "x".repeat(257);
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "duplicate GUID",
            csv(&[
                renamed.clone(),
                row(&g(1), "7", "store-001", "M"),
                row(&g(1), "8", "store-001", "M"),
            ]),
            "listed twice",
        ),
        (
            "duplicate GUID in the sample plus one",
            format!("{sample}{}\n", row(TILL_1, "9", "store-009", "New")),
            "listed twice",
        ),
        (
            "two tills numbered 1 in one store",
            csv(&[renamed.clone(), row(&g(2), "1", "store-001", "M")]),
            "two tills numbered 1",
        ),
        (
            "bad GUID",
            csv(&[renamed.clone(), row("not-a-guid", "7", "store-001", "M")]),
            "row 3",
        ),
        (
            "missing column",
            format!("guid,till_name,store_id,store_name\n{TILL_1},Till 1,store-001,Renamed\n"),
            "till_number",
        ),
        (
            "header only the GUID",
            format!("guid\n{TILL_1}\n"),
            "header row lacks",
        ),
        (
            "a header naming nothing, no rows",
            "{}".to_owned(),
            "header row lacks",
        ),
        (
            "negative till number",
            csv(&[renamed.clone(), row(&g(4), "-1", "store-001", "M")]),
            "row 3",
        ),
        (
            "till number not a number",
            csv(&[renamed.clone(), row(&g(5), "one", "store-001", "M")]),
            "row 3",
        ),
        (
            "bad store id",
            csv(&[renamed.clone(), row(&g(6), "7", "store 001", "M")]),
            "row 3",
        ),
        (
            "over-long store name",
            csv(&[renamed.clone(), row(&g(7), "7", "store-001", &long)]),
            "store_name",
        ),
        (
            "over-long till name",
            format!(
                "{REGISTRY_HEADER}\n{}\n{},{long},7,store-001,M,a,standard,UTC\n",
                renamed,
                g(8)
            ),
            "till_name",
        ),
        (
            "over-long till type",
            format!(
                "{REGISTRY_HEADER}\n{}\n{},T,7,store-001,M,a,{long},UTC\n",
                renamed,
                g(9)
            ),
            "till_type",
        ),
        (
            "empty till name",
            format!(
                "{REGISTRY_HEADER}\n{}\n{},,7,store-001,M,a,standard,UTC\n",
                renamed,
                g(10)
            ),
            "required",
        ),
        (
            "too few fields in a row",
            format!("{REGISTRY_HEADER}\n{renamed}\n{},T,7\n", g(11)),
            "row 3",
        ),
    ];
    for (what, body, word) in &cases {
        let msg = err(&api.import("text/csv", body).await, 400, "invalid_registry");
        assert!(
            msg.contains(word),
            "{what}: message {msg:?} does not mention {word:?}"
        );
    }
    let entry = |guid: &str, number: u32, store_name: &str| {
        json!({
            "guid": guid, "till_name": "T", "till_number": number, "store_id": "store-001",
            "store_name": store_name, "store_address": "", "till_type": "standard", "time_zone": "UTC"
        })
    };
    let json_cases: Vec<(&str, Value, &str)> = vec![
        (
            "duplicate GUID",
            json!([
                entry(TILL_1, 1, "Renamed"),
                entry(&g(1), 7, "R"),
                entry(&g(1), 8, "R")
            ]),
            "listed twice",
        ),
        (
            "same number twice",
            json!([entry(TILL_1, 1, "Renamed"), entry(&g(2), 1, "R")]),
            "two tills numbered 1",
        ),
        (
            "bad GUID",
            json!([entry(TILL_1, 1, "Renamed"), entry("nope", 7, "R")]),
            "GUID",
        ),
        (
            "missing field",
            json!([entry(TILL_1, 1, "Renamed"), {"guid": g(3), "till_name": "T"}]),
            "missing field",
        ),
        (
            "over-long field",
            json!([entry(TILL_1, 1, "Renamed"), entry(&g(4), 7, &long)]),
            "store_name",
        ),
        (
            "an object, not a list",
            entry(TILL_1, 1, "Renamed"),
            "invalid type",
        ),
        ("not JSON", json!("guid,till_name"), "invalid type"),
    ];
    for (what, body, word) in &json_cases {
        let msg = err(
            &api.import("application/json", body.to_string()).await,
            400,
            "invalid_registry",
        );
        assert!(
            msg.contains(word),
            "JSON {what}: message {msg:?} does not mention {word:?}"
        );
    }
    // CSV sent as JSON and JSON sent as CSV.
    err(
        &api.import("application/json", sample_registry("csv")).await,
        400,
        "invalid_registry",
    );
    err(
        &api.import("text/csv", sample_registry("json")).await,
        400,
        "invalid_registry",
    );
    // Content types it does not take.
    for ct in [
        "application/xml",
        "image/png",
        "application/octet-stream",
        "",
    ] {
        let r = api.import(ct, sample_registry("csv")).await;
        assert!(
            r.status == StatusCode::BAD_REQUEST || r.status == StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{ct:?}: {} {:?}",
            r.status,
            r.body
        );
        let msg = err(&r, r.status.as_u16(), "unsupported_media_type");
        assert!(msg.contains("text/csv"), "{msg:?}");
    }
    let r = api
        .send(
            warp::test::request()
                .method("POST")
                .path("/api/v1/devices/import")
                .body(sample_registry("csv")),
        )
        .await;
    err(&r, 400, "unsupported_media_type");
    same(&before, &api.snapshot().await, "bad registry imports");
}

// ----- node reports -----

#[tokio::test]
async fn progress_and_heartbeat_errors_and_stale_reports() {
    let api = api().await;
    let seed = api.seed().await;
    let before = api.snapshot().await;
    let post = |body: Value| {
        let api = &api;
        async move { api.post("/api/v1/node/progress", body.to_string()).await }
    };
    // Another till's report, with till 1's token: refused whoever it names.
    let msg = err(
        &post(progress(UNKNOWN_GUID, seed.task_id, 1, "downloading")).await,
        403,
        "wrong_device",
    );
    assert!(msg.contains(TILL_1), "{msg:?}");
    // Not a target: an unknown task.
    err(
        &post(progress(TILL_1, 999, 1, "downloading")).await,
        404,
        "not_found",
    );
    // Over-long free text.
    let mut r = progress(TILL_1, seed.task_id, 1, "failed");
    r["log_tail"] = json!("x".repeat(MAX_LOG_TAIL_LEN + 1));
    let msg = err(&post(r).await, 400, "invalid_report");
    assert!(msg.contains("log_tail"), "{msg:?}");
    let mut r = progress(TILL_1, seed.task_id, 1, "failed");
    r["error"] = json!("e".repeat(MAX_ERROR_LEN + 1));
    let msg = err(&post(r).await, 400, "invalid_report");
    assert!(msg.contains("error"), "{msg:?}");
    // Over-long heartbeat fields; an unknown till is not recorded either.
    for (guid, field) in [(UNKNOWN_GUID, "ip"), (TILL_1, "ip"), (TILL_1, "peer_id")] {
        let mut hb = heartbeat(guid);
        hb[field] = json!("1".repeat(129));
        let msg = err(
            &api.post("/api/v1/node/heartbeat", hb.to_string()).await,
            400,
            "invalid_heartbeat",
        );
        assert!(msg.contains(field), "{msg:?}");
    }
    // Swarm addresses the store's tills could not (or should not) dial.
    for (addrs, why) in [
        (
            json!([
                "10.0.0.1:4001",
                "10.0.0.2:4001",
                "10.0.0.3:4001",
                "10.0.0.4:4001",
                "10.0.0.5:4001"
            ]),
            "at most",
        ),
        (json!(["10.0.0.1:0"]), "cannot be dialled"),
        (json!(["0.0.0.0:4001"]), "cannot be dialled"),
        (json!(["224.0.0.251:5353"]), "cannot be dialled"),
        (json!(["255.255.255.255:4001"]), "cannot be dialled"),
        (json!(["[ff02::fb]:5353"]), "cannot be dialled"),
    ] {
        let mut hb = heartbeat(TILL_1);
        hb["swarm_addrs"] = addrs;
        let msg = err(
            &api.post("/api/v1/node/heartbeat", hb.to_string()).await,
            400,
            "invalid_heartbeat",
        );
        assert!(msg.contains(why), "{msg:?}");
    }
    let mut hb = heartbeat(TILL_1);
    hb["swarm_addrs"] = json!(["not an address"]);
    let reply = api.post("/api/v1/node/heartbeat", hb.to_string()).await;
    assert_eq!(reply.status, 400, "{:?}", reply.json());
    same(&before, &api.snapshot().await, "bad reports");

    // A good report, then stale and duplicate ones.
    let good = ok(
        &post(progress(TILL_1, seed.task_id, 5, "downloading")).await,
        200,
    );
    assert_eq!(good, json!({"accepted": true}));
    let accepted = api.snapshot().await;
    let mut dup = progress(TILL_1, seed.task_id, 5, "failed");
    dup["error"] = json!("should be ignored");
    let mut other_attempt = progress(TILL_1, seed.task_id, 9, "failed");
    other_attempt["attempt"] = json!(2);
    for stale in [
        dup,
        progress(TILL_1, seed.task_id, 3, "downloaded"),
        progress(TILL_1, seed.task_id, 0, "failed"),
        other_attempt,
    ] {
        let r = ok(&post(stale.clone()).await, 200);
        assert_eq!(r, json!({"accepted": false}), "{stale}");
    }
    same(&accepted, &api.snapshot().await, "stale reports");
}

// ----- listings -----

#[tokio::test]
async fn bad_paging_and_filters_are_400() {
    let api = api().await;
    api.seed().await;
    let before = api.snapshot().await;
    for list in ["/api/v1/devices", "/api/v1/packages", "/api/v1/tasks"] {
        for q in [
            "page=0",
            "per_page=0",
            "per_page=100000",
            "per_page=1001",
            "page=1000001",
        ] {
            let msg = err(
                &api.get(&format!("{list}?{q}")).await,
                400,
                "invalid_paging",
            );
            assert!(msg.contains("per_page"), "{list}?{q}: {msg:?}");
        }
    }
    for q in ["status=bogus", "sort=bogus", "status=RUNNING", "sort="] {
        err(
            &api.get(&format!("/api/v1/tasks?{q}")).await,
            400,
            "invalid_filter",
        );
    }
    for q in [
        "status=bogus",
        "state=READY",
        "state=null",
        "state=a%27%20OR%201",
        "state=x%00",
    ] {
        err(
            &api.get(&format!("/api/v1/devices?{q}")).await,
            400,
            "invalid_filter",
        );
    }
    // Unparseable numbers and booleans, on a path with only a GET route.
    for q in ["page=abc", "page=-1", "per_page=1.5", "online=maybe"] {
        err(
            &api.get(&format!("/api/v1/devices?{q}")).await,
            400,
            "invalid_query",
        );
    }
    same(&before, &api.snapshot().await, "bad listings");
}

/// Unparseable paging on lists whose path also has a POST route.
#[tokio::test]

async fn unparseable_paging_on_shared_paths_is_400() {
    let api = api().await;
    api.seed().await;
    let before = api.snapshot().await;
    for list in ["/api/v1/packages", "/api/v1/tasks"] {
        for q in [
            "page=abc",
            "page=-1",
            "per_page=1.5",
            "per_page=99999999999999999999999",
        ] {
            err(&api.get(&format!("{list}?{q}")).await, 400, "invalid_query");
        }
    }
    same(&before, &api.snapshot().await, "unparseable paging");
}

// ----- till types -----

#[tokio::test]
async fn till_type_timeout_over_the_maximum_is_400() {
    let api = api().await;
    api.seed().await;
    let before = api.snapshot().await;
    let max = 7 * 24 * 60;
    for name in ["standard", "express", "%2A", "new-type"] {
        let path = format!("/api/v1/till-types/{name}");
        for minutes in [max + 1, u32::MAX] {
            let body = json!({"auto_update_timeout_minutes": minutes}).to_string();
            let msg = err(&api.put(&path, body).await, 400, "invalid_till_type");
            assert!(msg.contains(&max.to_string()), "{msg:?}");
        }
        // Beyond u32: refused by the parser.
        let body = json!({"auto_update_timeout_minutes": 1u64 << 32}).to_string();
        err(&api.put(&path, body).await, 400, "invalid_json");
    }
    let long = format!("/api/v1/till-types/{}", "t".repeat(65));
    let body = json!({"auto_update_timeout_minutes": 5}).to_string();
    err(&api.put(&long, body).await, 400, "invalid_till_type");
    same(&before, &api.snapshot().await, "bad till types");
    // The maximum itself is accepted.
    let body = json!({"auto_update_timeout_minutes": max}).to_string();
    ok(&api.put("/api/v1/till-types/standard", body).await, 200);
}

// ----- ranges -----

#[tokio::test]
async fn malformed_range_is_400_and_past_the_end_is_416() {
    let api = api().await;
    let pkg = api.upload_demo().await;
    let detail = ok(&api.get(&format!("/api/v1/packages/{pkg}")).await, 200);
    let chunk = &detail["manifest"]["chunks"][0];
    let hash = chunk["hash"].as_str().expect("hash").to_owned();
    let len = chunk["length"].as_u64().expect("length");
    api.node_token(None).await;
    let before = api.snapshot().await;
    // Sanity: a good range.
    let r = api.chunk(&hash, "bytes=0-9").await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.body.len(), 10);
    for range in [
        "bytes=abc",
        "bytes=5-1",
        "items=0-1",
        "bytes=0-1,3-4",
        "bytes=",
        "bytes=-",
        "0-10",
        "bytes=1-x",
        "bytes=18446744073709551616-",
    ] {
        let msg = err(&api.chunk(&hash, range).await, 400, "invalid_range");
        assert!(msg.contains("Range"), "{range}: {msg:?}");
    }
    for range in [
        format!("bytes={len}-"),
        format!("bytes={len}-{}", len + 10),
        format!("bytes={}-", len + 1_000_000),
        "bytes=-0".to_owned(),
    ] {
        let r = api.chunk(&hash, &range).await;
        err(&r, 416, "range_not_satisfiable");
        assert_eq!(
            r.headers
                .get(header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok()),
            Some(format!("bytes */{len}").as_str()),
            "{range}"
        );
    }
    same(&before, &api.snapshot().await, "bad ranges");
}

// ----- routes -----

#[tokio::test]
async fn unknown_route_is_404_and_wrong_method_is_405() {
    let api = api().await;
    let seed = api.seed().await;
    let before = api.snapshot().await;
    for (method, path) in [
        ("GET", "/nope".to_owned()),
        ("GET", "/api/v1/nope".to_owned()),
        ("GET", "/api/v2/packages".to_owned()),
        ("POST", "/api/v1/nope".to_owned()),
        ("DELETE", "/api/v1".to_owned()),
        ("POST", format!("/api/v1/tasks/{}/bogus", seed.task_id)),
        ("GET", format!("/api/v1/tasks/{}/pause/now", seed.task_id)),
        ("GET", "/api/v1/node/heartbeat/extra".to_owned()),
    ] {
        let msg = err(&api.call(method, &path, None).await, 404, "not_found");
        assert!(msg.contains("no such route"), "{method} {path}: {msg:?}");
    }
    for (method, path) in [
        ("DELETE", "/api/v1/till-types".to_owned()),
        ("POST", "/api/v1/till-types".to_owned()),
        ("GET", "/api/v1/node/heartbeat".to_owned()),
        ("GET", "/api/v1/node/progress".to_owned()),
        ("PUT", "/api/v1/packages".to_owned()),
        ("PATCH", "/api/v1/tasks".to_owned()),
        ("DELETE", "/api/v1/groups".to_owned()),
        ("POST", "/healthz".to_owned()),
        ("DELETE", "/api/v1/stores".to_owned()),
        ("GET", format!("/api/v1/tasks/{}/pause", seed.task_id)),
        ("PUT", format!("/api/v1/tasks/{}", seed.task_id)),
        ("POST", format!("/api/v1/packages/{}", seed.package_id)),
        ("DELETE", "/api/v1/node/manifests/x".to_owned()),
        ("GET", "/api/v1/devices/import".to_owned()),
        ("DELETE", "/api/v1/devices/import".to_owned()),
    ] {
        let reply = api.call(method, &path, None).await;
        let msg = err(&reply, 405, "method_not_allowed");
        assert!(msg.contains("method"), "{method} {path}: {msg:?}");
        let allow = reply
            .headers
            .get("allow")
            .map(|v| v.to_str().unwrap_or_default().to_owned());
        let allow = allow.unwrap_or_else(|| panic!("{method} {path}: a 405 without Allow"));
        assert!(
            !allow.is_empty() && !allow.contains(method),
            "{method} {path}: Allow {allow:?}"
        );
    }
    same(&before, &api.snapshot().await, "unknown routes");
}

/// A timer with a UTC offset is RFC 3339 too: one in the past is `time_in_past`.
#[tokio::test]

async fn task_timer_with_a_utc_offset_is_understood() {
    let api = api().await;
    ok(&api.import("text/csv", sample_registry("csv")).await, 200);
    let pkg = api.upload_demo().await;
    let before = api.snapshot().await;
    let task = |at: &str| {
        json!({"kind": "update", "package_id": pkg, "group_id": 1, "activate_at": at}).to_string()
    };
    err(
        &api.post("/api/v1/tasks", task("2020-06-01T12:00:00+03:00"))
            .await,
        400,
        "time_in_past",
    );
    same(
        &before,
        &api.snapshot().await,
        "a past timer with an offset",
    );
    let t = ok(
        &api.post("/api/v1/tasks", task("2099-06-01T12:00:00+03:00"))
            .await,
        201,
    );
    assert_eq!(t["activate_at"], "2099-06-01T09:00:00Z");
}

/// The GUID's one accepted textual form (hyphenated, optionally braced, as
/// `DeviceId::from_str` documents) holds for registry files too.
#[tokio::test]

async fn registry_guids_in_other_textual_forms_are_400() {
    let api = api().await;
    ok(&api.import("text/csv", sample_registry("csv")).await, 200);
    let before = api.snapshot().await;
    for guid in [
        "72220000000000000000000000000003",
        "urn:uuid:72220000-0000-0000-0000-000000000003",
    ] {
        let body =
            format!("{REGISTRY_HEADER}\n{guid},Till 7,7,store-001,Central Market,a,standard,UTC\n");
        err(&api.import("text/csv", body).await, 400, "invalid_registry");
        let body = json!([{
            "guid": guid, "till_name": "Till 7", "till_number": 7, "store_id": "store-001",
            "store_name": "Central Market", "till_type": "standard"
        }]);
        err(
            &api.import("application/json", body.to_string()).await,
            400,
            "invalid_registry",
        );
    }
    same(&before, &api.snapshot().await, "GUIDs in other forms");
}

/// JSON arrays where an object is expected: serde's derived structs also accept
/// their fields as a positional array, which is not the documented shape.
#[tokio::test]

async fn json_arrays_in_place_of_objects_are_400() {
    let api = api().await;
    let seed = api.seed().await;
    let before = api.snapshot().await;
    for (method, path, body, code) in [
        (
            "POST",
            "/api/v1/tasks".to_owned(),
            json!(["download", seed.package_id, 1]),
            "invalid_json",
        ),
        (
            "POST",
            "/api/v1/groups".to_owned(),
            json!(["Positional", "d", [TILL_1]]),
            "invalid_json",
        ),
        (
            "POST",
            format!("/api/v1/tasks/{}/group", seed.task_id),
            json!(["From task", null, ["pending"]]),
            "invalid_json",
        ),
        (
            "PUT",
            "/api/v1/till-types/standard".to_owned(),
            json!([5]),
            "invalid_json",
        ),
        (
            "POST",
            "/api/v1/node/heartbeat".to_owned(),
            json!([UNKNOWN_GUID, null, "ready", null, null, null, null]),
            "invalid_json",
        ),
        (
            "POST",
            "/api/v1/devices/import".to_owned(),
            json!([[UNKNOWN_GUID, "T", 9, "store-001", "S"]]),
            "invalid_registry",
        ),
    ] {
        let r = api
            .call(method, &path, Some(body.to_string().as_bytes()))
            .await;
        err(&r, 400, code);
    }
    same(&before, &api.snapshot().await, "positional arrays");
}

/// A settings body without its one setting is a mistake, not "never ask".
#[tokio::test]

async fn till_type_body_without_the_setting_is_400() {
    let api = api().await;
    api.seed().await;
    let before = api.snapshot().await;
    err(
        &api.put("/api/v1/till-types/standard", "{}").await,
        400,
        "invalid_json",
    );
    same(&before, &api.snapshot().await, "an empty till type body");
}
