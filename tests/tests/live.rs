//! The panel's transport over a real socket: the live event stream
//! (`GET /api/v1/events`) carries a till's progress while a real node
//! installs, the panel's files are served with ETags and a strict Content
//! Security Policy, and answers are gzip-compressed only for clients that
//! accept it (never the event stream).

use std::io::Read as _;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::Value;
use tillswarm_coordinator::auth::{Caller, Role};
use tillswarm_coordinator::groups::GroupInput;
use tillswarm_coordinator::service::access::NewTokenInput;
use tillswarm_coordinator::tasks::NewTask;
use tillswarm_protocol::api::TaskKind;
use tillswarm_protocol::clock::SystemClock;
use tillswarm_tests::{Cluster, RunningNode, sample_till};

async fn token(cluster: &Cluster, role: Role) -> String {
    cluster
        .coordinator
        .create_token(
            NewTokenInput {
                name: format!("live-{role}"),
                role,
                expires_days: None,
            },
            &Caller::system("test"),
        )
        .await
        .expect("token")
        .token_secret
}

/// One server-sent event: its `event:` name and `data:` text.
#[derive(Debug)]
struct Frame {
    event: String,
    data: String,
}

/// Reads frames off an event stream as they come.
struct Frames<S> {
    body: S,
    buf: String,
}

impl<S, E> Frames<S>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    E: std::fmt::Debug,
{
    /// The next frame with an event name (comments are skipped), or `None`
    /// when the stream ends.
    async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut event, mut data) = (String::new(), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim());
                    }
                }
                if !event.is_empty() {
                    return Some(Frame { event, data });
                }
                continue;
            }
            let bytes = self.body.next().await?.expect("stream read");
            self.buf
                .push_str(std::str::from_utf8(&bytes).expect("UTF-8 events"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_carries_a_tills_install_as_it_happens() {
    let cluster = Cluster::start(100).await;
    cluster.import_sample_registry().await;
    let viewer = token(&cluster, Role::Viewer).await;
    let http = tillswarm_node::tls::http_client(None)
        .expect("client")
        .build()
        .expect("client");
    let events = format!("{}/api/v1/events", cluster.url);

    let anonymous = http.get(&events).send().await.expect("request");
    assert_eq!(anonymous.status(), 401, "the stream needs a credential");

    let res = http
        .get(&events)
        .bearer_auth(&viewer)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("stream");
    assert_eq!(res.status(), 200);
    let header = |name: &str| {
        res.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert!(header("content-type").starts_with("text/event-stream"));
    assert_eq!(header("content-encoding"), "", "a stream is never gzipped");
    assert_eq!(header("cache-control"), "no-store");
    let mut frames = Frames {
        body: Box::pin(res.bytes_stream()),
        buf: String::new(),
    };
    let hello = frames.next().await.expect("hello");
    assert_eq!(hello.event, "hello");
    assert_eq!(
        serde_json::from_str::<Value>(&hello.data).expect("json")["lifetime_s"],
        300
    );

    let till = sample_till(0, 1);
    let pkg = cluster
        .upload(
            "demo",
            "1.0.0",
            tillswarm_fixtures::package_tar(
                &tillswarm_fixtures::up_sh("demo", "1.0.0", 0),
                &tillswarm_fixtures::noise(1 << 20, 3),
            ),
        )
        .await;
    let by = Caller::system("test");
    let group = cluster
        .coordinator
        .create_group(
            GroupInput {
                name: Some("live".into()),
                description: None,
                members: Some(vec![till]),
            },
            &by,
        )
        .await
        .expect("group");
    let node = RunningNode::start(
        cluster.node_config(till, "store-001"),
        Arc::new(SystemClock),
        None,
    );
    let task = cluster
        .coordinator
        .create_task(
            NewTask {
                kind: TaskKind::ForcedUpdate,
                package_id: pkg,
                group_id: group.id,
                activate_at: None,
                rollback: false,
                window: None,
                max_installing_per_store: None,
                install_retries: None,
            },
            &by,
        )
        .await
        .expect("task")
        .summary
        .id;

    // Everything the panel needs to hear of, in order of arrival.
    let mut seen = Vec::new();
    let installed = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(f) = frames.next().await {
            assert_eq!(f.event, "change", "{f:?}");
            let change: Value = serde_json::from_str(&f.data).expect("change json");
            let done = change["kind"] == "target"
                && change["task_id"] == task.0
                && change["guid"] == till.to_string()
                && change["state"] == "installed";
            seen.push(change);
            if done {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(installed, Ok(true), "no `installed` change; saw {seen:#?}");
    let kinds: Vec<&str> = seen.iter().filter_map(|c| c["kind"].as_str()).collect();
    assert!(kinds.contains(&"package"), "{kinds:?}");
    assert!(kinds.contains(&"group"), "{kinds:?}");
    assert!(
        seen.iter()
            .any(|c| c["kind"] == "task" && c["task_id"] == task.0),
        "the task's creation: {seen:#?}"
    );
    assert!(
        seen.iter()
            .any(|c| c["kind"] == "device" && c["guid"] == till.to_string()),
        "the till's first heartbeat: {seen:#?}"
    );
    assert!(
        seen.iter()
            .any(|c| c["kind"] == "target" && c["state"] == "downloading"),
        "progress before the install: {seen:#?}"
    );
    node.stop().await;
    // Shutting down ends the open stream instead of waiting for it.
    let stopped = tokio::time::timeout(Duration::from_secs(10), cluster.stop()).await;
    assert!(stopped.is_ok(), "the open stream held the shutdown");
    let rest = tokio::time::timeout(Duration::from_secs(5), async {
        while frames.next().await.is_some() {}
    })
    .await;
    assert!(rest.is_ok(), "the stream did not end with the server");
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("valid gzip");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panel_files_are_cached_compressed_and_locked_down() {
    let cluster = Cluster::start(1000).await;
    let http = tillswarm_node::tls::http_client(None)
        .expect("client")
        .build()
        .expect("client");
    let get = |path: &str, gzip: bool, etag: Option<&str>| {
        let mut req = http.get(format!("{}{path}", cluster.url));
        if gzip {
            req = req.header("accept-encoding", "gzip, deflate, br");
        }
        if let Some(tag) = etag {
            req = req.header("if-none-match", tag);
        }
        req.send()
    };
    let page = get("/", true, None).await.expect("page");
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .expect("csp")
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-eval") && !csp.contains("script-src 'self' 'unsafe-inline'"));
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    assert_eq!(page.headers()["content-encoding"], "gzip");
    let body = page.bytes().await.expect("body");
    assert_eq!(gunzip(&body), tillswarm_web::INDEX_HTML.as_bytes());
    assert!(
        body.len() * 2 < tillswarm_web::INDEX_HTML.len(),
        "gzip at least halves the page"
    );

    assert!(
        tillswarm_web::ASSETS.len() > 3,
        "the panel is more than its page"
    );
    for asset in tillswarm_web::ASSETS {
        let path = format!("/panel/{}", asset.path);
        let plain = get(&path, false, None).await.expect("asset");
        assert_eq!(plain.status(), 200, "{path}");
        assert_eq!(
            plain.headers()["content-type"],
            asset.content_type,
            "{path}"
        );
        assert!(
            plain.headers().get("content-encoding").is_none(),
            "{path}: not asked for gzip"
        );
        assert_eq!(plain.headers()["cache-control"], "no-cache");
        assert_eq!(plain.headers()["x-content-type-options"], "nosniff");
        let etag = plain.headers()["etag"].to_str().expect("etag").to_owned();
        assert_eq!(
            &plain.bytes().await.expect("body")[..],
            asset.bytes,
            "{path}"
        );
        let again = get(&path, true, Some(&etag)).await.expect("revalidate");
        assert_eq!(
            again.status(),
            304,
            "{path}: an unchanged file is not sent again"
        );
        let packed = get(&path, true, Some("\"stale\"")).await.expect("gzip");
        assert_eq!(packed.status(), 200);
        let gz = packed.headers().get("content-encoding").is_some();
        let body = packed.bytes().await.expect("body");
        let body = if gz { gunzip(&body) } else { body.to_vec() };
        assert_eq!(body, asset.bytes, "{path}");
        assert!(
            gz || asset.bytes.len() < 1024,
            "{path}: {} bytes sent plain",
            asset.bytes.len()
        );
    }
    for missing in [
        "/panel/js/no-such.js",
        "/panel/../Cargo.toml",
        "/panel/",
        "/panel/%2e%2e/Cargo.toml",
    ] {
        let r = get(missing, false, None).await.expect("request");
        assert!(r.status().is_client_error(), "{missing}: {}", r.status());
    }

    // API answers too, only when asked.
    let plain = get("/api/v1/openapi.json", false, None).await.expect("doc");
    assert!(plain.headers().get("content-encoding").is_none());
    assert_eq!(plain.headers()["vary"], "accept-encoding");
    let plain = plain.bytes().await.expect("body");
    let packed = get("/api/v1/openapi.json", true, None).await.expect("doc");
    assert_eq!(packed.headers()["content-encoding"], "gzip");
    assert_eq!(gunzip(&packed.bytes().await.expect("body")), plain);
    let refused = http
        .get(format!("{}/api/v1/openapi.json", cluster.url))
        .header("accept-encoding", "gzip;q=0, identity")
        .send()
        .await
        .expect("doc");
    assert!(refused.headers().get("content-encoding").is_none());
    cluster.stop().await;
}
