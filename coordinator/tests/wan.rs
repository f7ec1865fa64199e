//! WAN diagnostics (`GET /api/v1/tasks/{id}/wan`): chunks served to tills over
//! the node API are logged, and a task's report per store counts only its
//! package's chunks since its creation, lists chunks that crossed a store's
//! link more than once with the tills that fetched them, and the tills whose
//! swarm reported no store peer. Driven through the routes as tills and
//! operators call them.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::Value;
use tillswarm_coordinator::auth::rules::{self, Access};
use tillswarm_coordinator::auth::{Caller, Role};
use tillswarm_coordinator::groups::GroupInput;
use tillswarm_coordinator::tasks::NewTask;
use tillswarm_protocol::TaskId;
use tillswarm_protocol::api::{DeviceState, HeartbeatRequest, TaskKind};
use tillswarm_protocol::manifest::ChunkRef;
use tillswarm_protocol::{DeviceId, PackageId};
use warp::http::StatusCode;

use common::fleet::{till, upload};
use common::{Api, device_token};

/// A package of several chunks (incompressible payload).
fn package(version: &str, seed: u64) -> Vec<u8> {
    tillswarm_fixtures::package_tar(
        &tillswarm_fixtures::up_sh("demo", version, 0),
        &tillswarm_fixtures::noise(3 << 20, seed),
    )
}

/// The sample chain (two stores of six tills) behind the routes.
async fn chain() -> Api {
    let api = common::api().await;
    let registry = std::fs::read(tillswarm_fixtures::dir().join("registry/sample-chain.json"))
        .expect("registry");
    api.coordinator
        .import_registry(registry, true, &Caller::system("test"))
        .await
        .expect("import");
    api
}

/// Uploads a package; returns its id and chunks.
async fn publish(api: &Api, version: &str, seed: u64) -> (PackageId, Vec<ChunkRef>) {
    let id = upload(&api.coordinator, "demo", version, package(version, seed)).await;
    let chunks = api.coordinator.package(id).await.expect("package");
    (id, chunks.manifest.chunks)
}

/// Numbers the groups [`task_for`] makes (their names are unique).
static GROUPS: AtomicU32 = AtomicU32::new(0);

/// A download task of `package` for `members`; returns its id.
async fn task_for(api: &Api, package: PackageId, members: Vec<DeviceId>) -> TaskId {
    let by = Caller::system("test");
    let group = api
        .coordinator
        .create_group(
            GroupInput {
                name: Some(format!(
                    "diagnosed-{}",
                    GROUPS.fetch_add(1, Ordering::Relaxed)
                )),
                description: None,
                members: Some(members),
            },
            &by,
        )
        .await
        .expect("group");
    let task = NewTask {
        kind: TaskKind::Download,
        package_id: package,
        group_id: group.id,
        activate_at: None,
        rollback: false,
        window: None,
        max_installing_per_store: None,
        install_retries: None,
    };
    api.coordinator
        .create_task(task, &by)
        .await
        .expect("task")
        .summary
        .id
}

/// Till `d` fetches a chunk as its node does (with `range`, if any).
async fn fetch(api: &Api, d: DeviceId, chunk: &ChunkRef, range: Option<&str>) {
    let token = device_token(&api.coordinator, d).await;
    let mut req = warp::test::request()
        .method("GET")
        .path(&format!("/api/v1/node/chunks/{}", chunk.hash))
        .header("authorization", format!("Bearer {token}"));
    if let Some(r) = range {
        req = req.header("range", r);
    }
    let r = api.send(req).await;
    assert!(r.status.is_success(), "{}: {:?}", r.status, r.body);
}

/// Till `d` heartbeats, reporting `peers` connected store peers.
async fn heartbeat(api: &Api, d: DeviceId, peers: Option<u32>) {
    let token = device_token(&api.coordinator, d).await;
    api.coordinator
        .heartbeat(
            token,
            HeartbeatRequest {
                device_id: d,
                version: None,
                state: DeviceState::Ready,
                ip: None,
                peer_id: None,
                free_disk_bytes: None,
                known_revision: None,
                warnings: Vec::new(),
                swarm_addrs: Vec::new(),
                connected_peers: peers,
            },
            None,
        )
        .await
        .expect("heartbeat");
}

/// The task's WAN report (as a viewer), with `query` (`?store=...`).
async fn report(api: &Api, task: TaskId, query: &str) -> Value {
    let r = api
        .as_role(
            Role::Viewer,
            "GET",
            &format!("/api/v1/tasks/{task}/wan{query}"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.json()
}

/// The report's entry for `store`.
fn store<'a>(report: &'a Value, store: &str) -> &'a Value {
    report["stores"]
        .as_array()
        .expect("stores")
        .iter()
        .find(|s| s["store_id"] == store)
        .unwrap_or_else(|| panic!("no {store} in {report:#}"))
}

fn guids(list: &Value) -> Vec<String> {
    let mut out: Vec<String> = list
        .as_array()
        .expect("a list")
        .iter()
        .map(|t| t["device"].as_str().expect("device").to_owned())
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn a_till_fetching_each_chunk_once_crosses_the_link_once() {
    let api = chain().await;
    let (pkg, chunks) = publish(&api, "1.0.0", 1).await;
    assert!(chunks.len() >= 2, "{} chunks", chunks.len());
    let size: u64 = chunks.iter().map(|c| u64::from(c.length)).sum();
    let task = task_for(&api, pkg, vec![till(0, 1), till(0, 2)]).await;
    // The first chunk comes in two ranges (an interrupted fetch resumed).
    let first = &chunks[0];
    fetch(&api, till(0, 1), first, Some("bytes=0-99")).await;
    fetch(&api, till(0, 1), first, Some("bytes=100-")).await;
    for c in &chunks[1..] {
        fetch(&api, till(0, 1), c, None).await;
    }
    let r = report(&api, task, "").await;
    assert_eq!(r["package_size"], size);
    assert_eq!(r["package_chunks"], chunks.len());
    assert_eq!(r["stores_total"], 1);
    let s = store(&r, "store-001");
    assert_eq!(s["tills"], 2);
    assert_eq!(s["wan_bytes"], size);
    assert_eq!(s["wan_ratio"].as_f64(), Some(1.0));
    assert_eq!(s["fetches"], chunks.len(), "a resumed range is not a fetch");
    assert_eq!(s["duplicate_chunks_total"], 0);
    assert_eq!(s["duplicate_chunks"], Value::Array(Vec::new()));
}

#[tokio::test]
async fn a_chunk_two_tills_of_a_store_fetched_is_listed_with_both() {
    let api = chain().await;
    let (pkg, chunks) = publish(&api, "1.0.0", 2).await;
    let task = task_for(&api, pkg, vec![till(0, 1), till(0, 2), till(1, 1)]).await;
    for c in &chunks {
        fetch(&api, till(0, 1), c, None).await;
    }
    fetch(&api, till(0, 2), &chunks[1], None).await;
    // Another store fetching the same chunk is that store's link, not this one's.
    fetch(&api, till(1, 1), &chunks[1], None).await;
    let r = report(&api, task, "").await;
    let s = store(&r, "store-001");
    let size: u64 = chunks.iter().map(|c| u64::from(c.length)).sum();
    assert_eq!(s["wan_bytes"], size + u64::from(chunks[1].length));
    assert!(s["wan_ratio"].as_f64().expect("ratio") > 1.0);
    assert_eq!(s["duplicate_chunks_total"], 1);
    let dup = &s["duplicate_chunks"][0];
    assert_eq!(dup["hash"], chunks[1].hash.to_string());
    assert_eq!(dup["length"], chunks[1].length);
    assert_eq!(dup["fetches"], 2);
    assert_eq!(
        guids(&dup["tills"]),
        vec![till(0, 1).to_string(), till(0, 2).to_string()]
    );
    for t in dup["tills"].as_array().expect("tills") {
        assert_eq!(t["fetches"], 1);
        assert_eq!(t["in_task"], true);
        assert!(t["name"].as_str().is_some_and(|n| n.starts_with("Till ")));
    }
    let other = store(&r, "store-002");
    assert_eq!(other["duplicate_chunks_total"], 0);
    assert_eq!(other["wan_bytes"], chunks[1].length);
}

#[tokio::test]
async fn a_till_with_no_store_peer_is_listed_as_not_connected() {
    let api = chain().await;
    let (pkg, _) = publish(&api, "1.0.0", 3).await;
    let (alone, connected, silent) = (till(0, 1), till(0, 2), till(0, 3));
    let task = task_for(&api, pkg, vec![alone, connected, silent]).await;
    heartbeat(&api, alone, Some(0)).await;
    heartbeat(&api, connected, Some(2)).await;
    // `silent` never reports a count.
    heartbeat(&api, silent, None).await;
    let r = report(&api, task, "").await;
    let s = store(&r, "store-001");
    assert_eq!(s["unconnected_tills_total"], 2);
    assert_eq!(
        guids(&s["unconnected_tills"]),
        vec![alone.to_string(), silent.to_string()]
    );
    let alone_row = s["unconnected_tills"]
        .as_array()
        .expect("list")
        .iter()
        .find(|t| t["device"] == alone.to_string())
        .expect("alone");
    assert_eq!(alone_row["connected_peers"], 0);
    assert!(alone_row["last_seen"].is_string());
    // The device JSON shows the last count.
    let device = |d: DeviceId| {
        let api = &api;
        async move {
            api.as_role(Role::Viewer, "GET", &format!("/api/v1/devices/{d}"), None)
                .await
                .json()
        }
    };
    assert_eq!(device(alone).await["connected_peers"], 0);
    assert_eq!(device(connected).await["connected_peers"], 2);
    assert_eq!(device(silent).await["connected_peers"], Value::Null);
    let list = api
        .as_role(Role::Viewer, "GET", "/api/v1/devices?store=store-001", None)
        .await
        .json();
    let row = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|d| d["guid"] == connected.to_string())
        .expect("listed");
    assert_eq!(row["connected_peers"], 2);
}

#[tokio::test]
async fn only_the_tasks_package_served_since_its_creation_counts() {
    let api = chain().await;
    let (pkg, chunks) = publish(&api, "1.0.0", 4).await;
    let (_, others) = publish(&api, "2.0.0", 5).await;
    // Before the task exists.
    fetch(&api, till(0, 1), &chunks[0], None).await;
    api.clock.advance_ms(1_000);
    let task = task_for(&api, pkg, vec![till(0, 1), till(0, 2)]).await;
    // Another package's chunk served to the store.
    fetch(&api, till(0, 2), &others[0], None).await;
    // An operator's download is not a till's WAN traffic.
    let r = api
        .as_role(
            Role::Viewer,
            "GET",
            &format!("/api/v1/node/chunks/{}", chunks[1].hash),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let s0 = report(&api, task, "").await;
    let s = store(&s0, "store-001");
    assert_eq!(s["wan_bytes"], 0, "{s:#}");
    assert_eq!(s["fetches"], 0);
    fetch(&api, till(0, 1), &chunks[0], None).await;
    let s1 = report(&api, task, "").await;
    let s = store(&s1, "store-001");
    assert_eq!(s["wan_bytes"], chunks[0].length);
    assert_eq!(s["fetches"], 1);
    assert_eq!(
        s["duplicate_chunks_total"], 0,
        "the earlier fetch is not counted"
    );
}

#[tokio::test]
async fn the_report_needs_credentials_and_a_readers_role() {
    let api = chain().await;
    let (pkg, _) = publish(&api, "1.0.0", 6).await;
    let task = task_for(&api, pkg, vec![till(0, 1)]).await;
    let path = format!("/api/v1/tasks/{task}/wan");
    assert_eq!(
        api.with_token(None, "GET", &path, None).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        api.with_token(Some("tst_not-a-token"), "GET", &path, None)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let till_token = device_token(&api.coordinator, till(0, 1)).await;
    assert_eq!(
        api.with_token(Some(&till_token), "GET", &path, None)
            .await
            .status,
        StatusCode::UNAUTHORIZED,
        "a till's token opens no operator route"
    );
    // The same rule as reading the task itself: every role may.
    let rule = rules::find("GET", &path).expect("a rule");
    let sibling = rules::find("GET", &format!("/api/v1/tasks/{task}")).expect("task.get");
    assert_eq!(rule.access, sibling.access);
    assert_eq!(rule.access, Access::Role(Role::Viewer));
    for role in Role::ALL {
        let r = api.as_role(role, "GET", &path, None).await;
        assert_eq!(r.status, StatusCode::OK, "{role}: {:?}", r.body);
    }
}

#[tokio::test]
async fn stores_are_paged_or_picked() {
    let api = chain().await;
    let (pkg, chunks) = publish(&api, "1.0.0", 7).await;
    let task = task_for(&api, pkg, vec![till(0, 1), till(1, 1)]).await;
    fetch(&api, till(1, 1), &chunks[0], None).await;
    let all = report(&api, task, "").await;
    assert_eq!(all["stores_total"], 2);
    let page2 = report(&api, task, "?per_page=1&page=2").await;
    assert_eq!(page2["stores"].as_array().map(Vec::len), Some(1));
    assert_eq!(page2["stores"][0]["store_id"], "store-002");
    let one = report(&api, task, "?store=store-002").await;
    assert_eq!(one["stores_total"], 1);
    assert_eq!(one["stores"][0]["wan_bytes"], chunks[0].length);
    let missing = api
        .as_role(
            Role::Viewer,
            "GET",
            &format!("/api/v1/tasks/{task}/wan?store=store-404"),
            None,
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let too_many = api
        .as_role(
            Role::Viewer,
            "GET",
            &format!("/api/v1/tasks/{task}/wan?per_page=101"),
            None,
        )
        .await;
    assert_eq!(too_many.status, StatusCode::BAD_REQUEST);
    assert_eq!(too_many.code(), "invalid_paging");
}

#[tokio::test]
async fn the_chunk_log_forgets_fetches_after_thirty_days() {
    let api = chain().await;
    let (pkg, chunks) = publish(&api, "1.0.0", 8).await;
    let task = task_for(&api, pkg, vec![till(0, 1)]).await;
    fetch(&api, till(0, 1), &chunks[0], None).await;
    api.coordinator.tick().await.expect("tick");
    let s = report(&api, task, "").await;
    assert_eq!(store(&s, "store-001")["fetches"], 1, "kept while recent");
    api.clock.advance_ms(31 * 86_400_000);
    api.coordinator.tick().await.expect("tick");
    let s = report(&api, task, "").await;
    assert_eq!(store(&s, "store-001")["fetches"], 0, "pruned");
}

#[tokio::test]
async fn a_stores_history_lists_each_tasks_wan_bytes_against_its_package() {
    let api = chain().await;
    let (first, chunks) = publish(&api, "1.0.0", 7).await;
    let size: u64 = chunks.iter().map(|c| u64::from(c.length)).sum();
    let older = task_for(&api, first, vec![till(0, 1), till(0, 2)]).await;
    for c in &chunks {
        fetch(&api, till(0, 1), c, None).await;
    }
    // The other store's fetch is not this store's link.
    fetch(&api, till(1, 1), &chunks[0], None).await;
    let (second, more) = publish(&api, "1.1.0", 8).await;
    let newer = task_for(&api, second, vec![till(0, 3)]).await;
    fetch(&api, till(0, 3), &more[0], None).await;
    // A task with no till in store-001 is not in its history.
    let elsewhere = task_for(&api, second, vec![till(1, 2)]).await;

    let r = api
        .as_role(Role::Viewer, "GET", "/api/v1/stores/store-001/wan", None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let h = r.json();
    assert_eq!(h["store_id"], "store-001");
    let tasks = h["tasks"].as_array().expect("tasks");
    let ids: Vec<u64> = tasks
        .iter()
        .map(|t| t["task_id"].as_u64().expect("id"))
        .collect();
    assert_eq!(
        ids,
        vec![newer.0, older.0],
        "newest first, only the store's tasks (not {elsewhere})"
    );
    let old = &tasks[1];
    assert_eq!(old["package_id"], first.to_string());
    assert_eq!(old["package_size"], size);
    assert_eq!(
        old["wan_bytes"], size,
        "the same bytes as the task's own report"
    );
    assert_eq!(
        old["wan_bytes"],
        store(&report(&api, older, "").await, "store-001")["wan_bytes"]
    );
    assert_eq!(old["wan_ratio"].as_f64(), Some(1.0));
    assert_eq!(old["tills"], 2);
    assert_eq!(old["kind"], "download");
    assert_eq!(tasks[0]["wan_bytes"], more[0].length);
    assert_eq!(tasks[0]["tills"], 1);
    // The package says who uploaded it.
    let pkg = api
        .as_role(
            Role::Viewer,
            "GET",
            &format!("/api/v1/packages/{first}"),
            None,
        )
        .await;
    assert_eq!(pkg.json()["uploaded_by"], "test");

    let one = api
        .as_role(
            Role::Viewer,
            "GET",
            "/api/v1/stores/store-001/wan?limit=1",
            None,
        )
        .await;
    assert_eq!(one.json()["tasks"].as_array().map(Vec::len), Some(1));
    for (path, status) in [
        (
            "/api/v1/stores/store-001/wan?limit=0",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/stores/store-001/wan?limit=51",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/stores/store-001/wan?limit=x",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/stores/store-001/wan?sort=id",
            StatusCode::BAD_REQUEST,
        ),
        ("/api/v1/stores/no-such-store/wan", StatusCode::NOT_FOUND),
    ] {
        let r = api.as_role(Role::Viewer, "GET", path, None).await;
        assert_eq!(r.status, status, "{path}: {:?}", r.body);
    }
    let anonymous = api
        .send(
            warp::test::request()
                .method("GET")
                .path("/api/v1/stores/store-001/wan"),
        )
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
}
