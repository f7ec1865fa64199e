//! The chain of trust end to end: a man in the middle who rewrites what the
//! coordinator tells a till (an injected rollback) or withholds it (freeze),
//! and an online-key rotation that reaches running tills untouched.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tillswarm_coordinator::auth::Caller;
use tillswarm_coordinator::groups::GroupInput;
use tillswarm_coordinator::tasks::NewTask;
use tillswarm_protocol::api::{HeartbeatResponse, TargetState, TaskKind};
use tillswarm_protocol::clock::{Clock, ManualClock, SystemClock};
use tillswarm_protocol::{DeviceId, PackageId, TaskId};
use tillswarm_tests::mitm::SimulatedMitm;
use tillswarm_tests::{Cluster, RunningNode, eventually, sample_till};

const POLL_MS: u64 = 100;

fn package(version: &str) -> Vec<u8> {
    tillswarm_fixtures::package_tar(
        &tillswarm_fixtures::up_sh("demo", version, 0),
        &tillswarm_fixtures::noise(200_000, 5),
    )
}

async fn task(
    cluster: &Cluster,
    kind: TaskKind,
    package_id: PackageId,
    members: Vec<DeviceId>,
) -> TaskId {
    let by = Caller::system("test");
    let g = cluster
        .coordinator
        .create_group(
            GroupInput {
                name: Some(format!("g{}", package_id.to_hex().get(..8).unwrap_or("x"))),
                description: None,
                members: Some(members),
            },
            &by,
        )
        .await
        .expect("group")
        .id;
    cluster
        .coordinator
        .create_task(
            NewTask {
                kind,
                package_id,
                group_id: g,
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
        .id
}

async fn warning_of(cluster: &Cluster, d: DeviceId, needle: &'static str) -> String {
    eventually(30, needle, || async {
        let dev = cluster.coordinator.device(d).await.ok()?;
        dev.warnings.iter().find(|w| w.contains(needle)).cloned()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injected_forced_rollback_is_refused_and_nothing_is_installed() {
    let cluster = Cluster::start(POLL_MS).await;
    cluster.import_sample_registry().await;
    let pkg = cluster.upload("demo", "1.0.0", package("1.0.0")).await;
    // The attacker turns a harmless Download into a Forced update with the
    // rollback flag, in the instructions' body.
    let mitm = SimulatedMitm::start(
        &cluster.url,
        Arc::new(|path: &str, body: Vec<u8>| {
            if path != "/api/v1/node/heartbeat" {
                return body;
            }
            let Ok(mut hb) = serde_json::from_slice::<HeartbeatResponse>(&body) else {
                return body;
            };
            if let Some(ins) = hb.trust.instructions.as_mut() {
                ins.body = ins
                    .body
                    .replace("\"download\"", "\"forced_update\"")
                    .replace("\"rollback\":false", "\"rollback\":true");
            }
            serde_json::to_vec(&hb).unwrap_or(body)
        }),
    )
    .await;
    let till = sample_till(0, 1);
    let mut config = cluster.node_config(till, "store-001");
    config.coordinator_url = mitm.url.clone();
    let node = RunningNode::start(config, Arc::new(SystemClock), None);
    let id = task(&cluster, TaskKind::Download, pkg, vec![till]).await;
    let warned = warning_of(&cluster, till, "instructions refused").await;
    assert!(warned.contains("signature"), "{warned}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = cluster.coordinator.task(id).await.expect("task");
    assert_eq!(
        t.target_details[0].state,
        TargetState::Pending,
        "acted on nothing"
    );
    assert!(node.agent.state().tasks().await.expect("tasks").is_empty());
    node.stop().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_till_reports_stale_instructions_and_starts_nothing() {
    let cluster = Cluster::start(POLL_MS).await;
    cluster.import_sample_registry().await;
    let pkg = cluster.upload("demo", "1.0.0", package("1.0.0")).await;
    // The attacker lets the first signed answer through, then replays it
    // forever: the till never hears of anything newer.
    let first: Arc<Mutex<Option<Vec<u8>>>> = Arc::new(Mutex::new(None));
    let held = first.clone();
    let mitm = SimulatedMitm::start(
        &cluster.url,
        Arc::new(move |path: &str, body: Vec<u8>| {
            if path != "/api/v1/node/heartbeat" {
                return body;
            }
            let mut held = held
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            held.get_or_insert(body).clone()
        }),
    )
    .await;
    let till = sample_till(0, 2);
    let clock = ManualClock::new(SystemClock.now_ms());
    let mut config = cluster.node_config(till, "store-001");
    config.coordinator_url = mitm.url.clone();
    let node = RunningNode::start(config, Arc::new(clock.clone()), None);
    eventually(10, "the first answer", || async {
        node.agent.state().trust().await.ok().flatten().map(|_| ())
    })
    .await;
    let id = task(&cluster, TaskKind::Download, pkg, vec![till]).await;
    // A day later by the till's clock, the replayed timestamp is stale.
    clock.advance_ms(25 * 3600 * 1000);
    warning_of(&cluster, till, "stale_instructions").await;
    let t = cluster.coordinator.task(id).await.expect("task");
    assert_eq!(t.target_details[0].state, TargetState::Pending);
    node.stop().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_online_key_rotation_reaches_running_tills_untouched() {
    let cluster = Cluster::start(POLL_MS).await;
    cluster.import_sample_registry().await;
    let v1 = cluster.upload("demo", "1.0.0", package("1.0.0")).await;
    let till = sample_till(0, 3);
    let node = RunningNode::start(
        cluster.node_config(till, "store-001"),
        Arc::new(SystemClock),
        None,
    );
    let done = |id: TaskId| {
        let cluster = &cluster;
        async move {
            eventually(30, "the download", || async {
                let t = cluster.coordinator.task(id).await.ok()?;
                (t.target_details[0].state == TargetState::Downloaded).then_some(())
            })
            .await
        }
    };
    done(task(&cluster, TaskKind::Download, v1, vec![till]).await).await;
    let before = node
        .agent
        .state()
        .trust()
        .await
        .expect("state")
        .expect("trust");
    let serial = before.online.as_ref().map(|o| o.serial);
    assert_eq!(serial, Some(1));
    // The operator rotates the online key on the coordinator's machine.
    let data = cluster.dir.path().join("coordinator");
    let rotated = tillswarm_coordinator::keys::rotate_online(&data, None, 30).expect("rotate");
    eventually(10, "the coordinator to reload its keys", || async {
        (cluster.coordinator.online_public_key() != before.online.as_ref()?.key).then_some(())
    })
    .await;
    // A package uploaded before the rotation, re-signed by the new key, and
    // the till that pinned only the root follows.
    done(
        task(
            &cluster,
            TaskKind::Download,
            cluster.upload("demo", "1.1.0", package("1.1.0")).await,
            vec![till],
        )
        .await,
    )
    .await;
    let after = node
        .agent
        .state()
        .trust()
        .await
        .expect("state")
        .expect("trust");
    assert_eq!(
        after.online.as_ref().map(|o| o.serial),
        Some(rotated.serial)
    );
    assert_eq!(after.root, before.root, "the till's root did not change");
    node.stop().await;
    cluster.stop().await;
}
