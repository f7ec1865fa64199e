//! End to end: a real coordinator on loopback and till nodes in temporary
//! folders, in one process. Each task type, the cashier's answers, timeouts,
//! failures, tampering, resume after a kill, and version rules.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tillswarm_protocol::TaskId;

use futures_util::future::BoxFuture;
use tillswarm_coordinator::auth::Caller;
use tillswarm_coordinator::tasks::TaskDetail;
use tillswarm_coordinator::till_types::TillTypeInput;
use tillswarm_node::Error as NodeError;
use tillswarm_node::chunks::Wire;
use tillswarm_node::client::CoordinatorClient;
use tillswarm_node::local_api::Answer;
use tillswarm_node::stage::{ChunkSource, Origin};
use tillswarm_protocol::DeviceId;
use tillswarm_protocol::api::{TargetState, TaskKind};
use tillswarm_protocol::clock::{Clock, ManualClock, SystemClock};
use tillswarm_protocol::manifest::ChunkRef;
use tillswarm_tests::{Cluster, RunningNode, eventually, sample_till};

const POLL_MS: u64 = 100;

fn package(version: &str, payload: usize) -> Vec<u8> {
    tillswarm_fixtures::package_tar(
        &tillswarm_fixtures::up_sh("demo", version, 0),
        &tillswarm_fixtures::noise(payload, 7),
    )
}

fn target_state(t: &TaskDetail, d: DeviceId) -> TargetState {
    t.target_details
        .iter()
        .find(|x| x.device == d)
        .map(|x| x.state)
        .expect("target")
}

async fn wait_target(
    cluster: &Cluster,
    task: TaskId,
    d: DeviceId,
    want: TargetState,
    secs: u64,
) -> TaskDetail {
    eventually(
        secs,
        &format!("{d} to reach {want:?} in task {task}"),
        || async {
            let t = cluster.coordinator.task(task).await.expect("task");
            (target_state(&t, d) == want).then_some(t)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_task_stages_verified_packages_on_every_till() {
    let cluster = Cluster::start(POLL_MS).await;
    cluster.import_sample_registry().await;
    let pkg = cluster
        .upload("demo", "1.0.0", package("1.0.0", 3 << 20))
        .await;
    let tills = [sample_till(0, 1), sample_till(0, 2), sample_till(1, 3)];
    let g = cluster.group("three", tills.to_vec()).await;
    let nodes: Vec<RunningNode> = tills
        .iter()
        .map(|&d| {
            RunningNode::start(
                cluster.node_config(d, "store-001"),
                Arc::new(SystemClock),
                None,
            )
        })
        .collect();
    let id = cluster.task(TaskKind::Download, pkg, g).await;
    for &d in &tills {
        wait_target(&cluster, id, d, TargetState::Downloaded, 30).await;
    }
    let t = cluster.coordinator.task(id).await.expect("task");
    assert_eq!(t.summary.status, "completed");
    for n in &nodes {
        let staged = n.update_root().join("update/1.0.0");
        assert!(staged.join("up.sh").is_file());
        assert!(staged.join("payload.bin").is_file());
        assert!(tillswarm_node::stage::is_staged(&staged, &pkg));
        // A download never installs.
        assert_eq!(
            n.agent
                .state()
                .installed_version()
                .await
                .expect("state")
                .map(|v| v.to_string()),
            Some("0.9".into())
        );
    }
    // Every till fetched the whole package over the WAN (no swarm yet) and said so.
    let size = t.summary.package_size;
    assert!(
        t.target_details
            .iter()
            .all(|x| x.wan_bytes == size && x.bytes_done == size)
    );
    for n in nodes {
        n.stop().await;
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_asks_the_cashier_accept_decline_and_silence() {
    let cluster = Cluster::start(POLL_MS).await;
    cluster.import_sample_registry().await;
    let pkg = cluster
        .upload("demo", "1.0.0", package("1.0.0", 1 << 20))
        .await;
    let (accepts, declines, silent) = (sample_till(0, 1), sample_till(0, 2), sample_till(0, 3));
    let g = cluster
        .group("cashiers", vec![accepts, declines, silent])
        .await;
    // Starts at the real time: the coordinator signs with its own clock.
    let t0 = SystemClock.now_ms();
    let clock = ManualClock::new(t0);
    let start = |d| {
        RunningNode::start(
            cluster.node_config(d, "store-001"),
            Arc::new(clock.clone()),
            None,
        )
    };
    let (a, b, c) = (start(accepts), start(declines), start(silent));
    let id = cluster.task(TaskKind::Update, pkg, g).await;
    for d in [accepts, declines, silent] {
        wait_target(&cluster, id, d, TargetState::AwaitingCashier, 30).await;
    }
    let prompt = a
        .agent
        .ui()
        .status()
        .await
        .prompt
        .expect("the cashier is asked");
    assert_eq!(prompt.version.to_string(), "1.0.0");
    assert_eq!(
        prompt.deadline_ms,
        t0 + 15 * 60_000,
        "default autoUpdateTimeout: 15 min"
    );

    // Accepted: installs, reboots (simulated), reports the new version.
    assert!(a.agent.ui().answer(Answer::Accept).await);
    let t = wait_target(&cluster, id, accepts, TargetState::Installed, 30).await;
    let installed_app =
        std::fs::read_to_string(a.update_root().join("app/VERSION")).expect("up.sh ran");
    assert_eq!(installed_app.trim(), "1.0.0");
    assert!(t.target_details.iter().any(|x| {
        x.device == accepts
            && x.log_tail
                .as_deref()
                .is_some_and(|l| l.contains("installed"))
    }));

    // Declined: stays declined while the node runs, asked again after a restart.
    assert!(b.agent.ui().answer(Answer::Decline).await);
    wait_target(&cluster, id, declines, TargetState::Declined, 30).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        b.agent.ui().status().await.prompt.is_none(),
        "not asked again before a restart"
    );
    let config = b.agent.config().clone();
    b.stop().await;
    let b = RunningNode::start(config, Arc::new(clock.clone()), None);
    wait_target(&cluster, id, declines, TargetState::AwaitingCashier, 30).await;
    eventually(10, "the prompt after the restart", || async {
        b.agent.ui().status().await.prompt
    })
    .await;

    // No answer: installs once autoUpdateTimeout has passed (the clock is moved).
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        target_state(&cluster.coordinator.task(id).await.expect("task"), silent),
        TargetState::AwaitingCashier
    );
    clock.advance_ms(15 * 60_000 + 1);
    wait_target(&cluster, id, silent, TargetState::Installed, 30).await;

    for n in [a, b, c] {
        n.stop().await;
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unset_timeout_never_asks_and_waits_for_a_manual_install() {
    let cluster = Cluster::start(POLL_MS).await;
    cluster.import_sample_registry().await;
    cluster
        .coordinator
        .set_till_type(
            "*".into(),
            TillTypeInput {
                auto_update_timeout_minutes: None,
            },
            &Caller::system("test"),
        )
        .await
        .expect("settings");
    let pkg = cluster
        .upload("demo", "1.0.0", package("1.0.0", 1 << 20))
        .await;
    let d = sample_till(1, 1);
    let g = cluster.group("one", vec![d]).await;
    let node = RunningNode::start(
        cluster.node_config(d, "store-002"),
        Arc::new(SystemClock),
        None,
    );
    let id = cluster.task(TaskKind::Update, pkg, g).await;
    wait_target(&cluster, id, d, TargetState::Downloaded, 30).await;
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    assert!(
        node.agent.ui().status().await.prompt.is_none(),
        "never asks"
    );
    assert_eq!(
        target_state(&cluster.coordinator.task(id).await.expect("task"), d),
        TargetState::Downloaded
    );
    // The manual install (tillswarm node install).
    node.agent.ui().request_manual_install().await;
    wait_target(&cluster, id, d, TargetState::Installed, 30).await;
    node.stop().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_update_installs_without_asking_and_failures_carry_the_log() {
    let cluster = Cluster::start(POLL_MS).await;
    cluster.import_sample_registry().await;
    let good = cluster
        .upload("demo", "1.0.0", package("1.0.0", 1 << 20))
        .await;
    let broken = cluster
        .upload(
            "demo-broken",
            "1.0.1",
            tillswarm_fixtures::failing_package("1.0.1", 4096),
        )
        .await;
    let (d1, d2) = (sample_till(0, 4), sample_till(0, 5));
    let g1 = cluster.group("forced", vec![d1]).await;
    let g2 = cluster.group("broken", vec![d2]).await;
    let n1 = RunningNode::start(
        cluster.node_config(d1, "store-001"),
        Arc::new(SystemClock),
        None,
    );
    let n2 = RunningNode::start(
        cluster.node_config(d2, "store-001"),
        Arc::new(SystemClock),
        None,
    );
    let forced = cluster.task(TaskKind::ForcedUpdate, good, g1).await;
    let failing = cluster.task(TaskKind::ForcedUpdate, broken, g2).await;
    wait_target(&cluster, forced, d1, TargetState::Installed, 30).await;
    assert!(n1.agent.ui().status().await.prompt.is_none());
    let t = wait_target(&cluster, failing, d2, TargetState::Failed, 30).await;
    let target = t
        .target_details
        .iter()
        .find(|x| x.device == d2)
        .expect("target");
    assert!(
        target
            .error
            .as_deref()
            .is_some_and(|e| e.contains("exit status: 1")),
        "{target:?}"
    );
    assert!(
        target
            .log_tail
            .as_deref()
            .is_some_and(|l| l.contains("simulated install failure")),
        "{target:?}"
    );
    assert_eq!(
        n2.agent
            .state()
            .installed_version()
            .await
            .expect("state")
            .map(|v| v.to_string()),
        Some("0.9".into())
    );
    n1.stop().await;
    n2.stop().await;
    cluster.stop().await;
}

/// A chunk source that flips a byte of every chunk it passes on.
struct Tampering(CoordinatorClient);

impl ChunkSource for Tampering {
    fn fetch<'a>(
        &'a self,
        chunk: &'a ChunkRef,
    ) -> BoxFuture<'a, tillswarm_node::Result<(Wire, Origin)>> {
        Box::pin(async move {
            let mut wire = self.0.chunk(chunk).await?;
            let mut data = wire.data.to_vec();
            data[0] ^= 0xFF;
            wire.data = data.into();
            Ok((wire, Origin::Lan))
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_manifests_and_chunks_are_refused_and_nothing_is_staged() {
    let cluster = Cluster::start(POLL_MS).await;
    cluster.import_sample_registry().await;
    let pkg = cluster
        .upload("demo", "1.0.0", package("1.0.0", 1 << 20))
        .await;
    let (wrong_key, bad_chunks) = (sample_till(1, 2), sample_till(1, 3));
    let g = cluster.group("victims", vec![wrong_key, bad_chunks]).await;
    let mut config = cluster.node_config(wrong_key, "store-002");
    config.coordinator_public_key =
        tillswarm_protocol::manifest::SecretKey::from_seed([9; 32]).public();
    let n1 = RunningNode::start(config, Arc::new(SystemClock), None);
    let config = cluster.node_config(bad_chunks, "store-002");
    let client = CoordinatorClient::for_till(&config).expect("client");
    let n2 = RunningNode::start(
        config,
        Arc::new(SystemClock),
        Some(Arc::new(Tampering(client))),
    );
    let id = cluster.task(TaskKind::Download, pkg, g).await;
    // A till pinning another root refuses the coordinator's answers whole
    // (the online key's certificate does not verify): it acts on nothing
    // and says why.
    let warned = eventually(30, "the refusal to reach the coordinator", || async {
        let d = cluster.coordinator.device(wrong_key).await.ok()?;
        d.warnings
            .iter()
            .find(|w| w.contains("instructions refused"))
            .cloned()
    })
    .await;
    assert!(warned.contains("signature"), "{warned}");
    let t = cluster.coordinator.task(id).await.expect("task");
    assert_eq!(target_state(&t, wrong_key), TargetState::Pending);
    let t = wait_target(&cluster, id, bad_chunks, TargetState::Failed, 30).await;
    let err = t
        .target_details
        .iter()
        .find(|x| x.device == bad_chunks)
        .and_then(|x| x.error.clone())
        .expect("error");
    assert!(err.contains("verification failed"), "{err}");
    for n in [&n1, &n2] {
        assert!(
            !n.update_root().join("update/1.0.0").exists(),
            "nothing staged"
        );
    }
    n1.stop().await;
    n2.stop().await;
    cluster.stop().await;
}

/// Counts bytes fetched; with `stall_after`, never answers after that many chunks.
struct Counting {
    client: CoordinatorClient,
    bytes: Arc<AtomicU64>,
    chunks: AtomicU64,
    stall_after: Option<u64>,
}

impl ChunkSource for Counting {
    fn fetch<'a>(
        &'a self,
        chunk: &'a ChunkRef,
    ) -> BoxFuture<'a, tillswarm_node::Result<(Wire, Origin)>> {
        Box::pin(async move {
            let n = self.chunks.fetch_add(1, Ordering::SeqCst);
            let data = self.client.chunk(chunk).await?;
            self.bytes
                .fetch_add(data.data.len() as u64, Ordering::SeqCst);
            if self.stall_after.is_some_and(|k| n >= k) {
                // Fetched but never handed over: in flight when the node dies.
                std::future::pending::<()>().await;
            }
            Ok::<_, NodeError>((data, Origin::Wan))
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_download_resumes_without_refetching_held_chunks() {
    let cluster = Cluster::start(POLL_MS).await;
    cluster.import_sample_registry().await;
    let bytes = package("1.0.0", 24 << 20);
    let size = bytes.len() as u64;
    let pkg = cluster.upload("demo", "1.0.0", bytes).await;
    let d = sample_till(1, 4);
    let g = cluster.group("resume", vec![d]).await;
    let config = cluster.node_config(d, "store-002");
    let client = CoordinatorClient::for_till(&config).expect("client");
    let fetched = Arc::new(AtomicU64::new(0));
    let first = Counting {
        client: client.clone(),
        bytes: fetched.clone(),
        chunks: AtomicU64::new(0),
        stall_after: Some(8),
    };
    let node = RunningNode::start(config.clone(), Arc::new(SystemClock), Some(Arc::new(first)));
    let id = cluster.task(TaskKind::Download, pkg, g).await;
    eventually(30, "the first chunks to land", || async {
        let t = node.agent.state().tasks().await.ok()?;
        t.first().filter(|t| t.bytes_done > 0).map(|_| ())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    node.kill().await;
    let first_run = fetched.load(Ordering::SeqCst);
    assert!(first_run < size, "the first run must not finish");

    let second = Counting {
        client,
        bytes: fetched.clone(),
        chunks: AtomicU64::new(0),
        stall_after: None,
    };
    let node = RunningNode::start(config, Arc::new(SystemClock), Some(Arc::new(second)));
    let t = wait_target(&cluster, id, d, TargetState::Downloaded, 60).await;
    let total = fetched.load(Ordering::SeqCst);
    // Re-fetched at most the chunks that were in flight (4 at most, each <= 4 MiB).
    let in_flight = 4 * tillswarm_protocol::chunking::MAX_CHUNK as u64;
    assert!(
        total <= size + in_flight,
        "fetched {total} bytes for a {size}-byte package"
    );
    let reported = t.target_details[0].wan_bytes;
    assert!(
        reported <= total && reported >= size,
        "reported {reported}, fetched {total}"
    );
    assert!(tillswarm_node::stage::is_staged(
        &node.update_root().join("update/1.0.0"),
        &pkg
    ));
    node.stop().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_till_never_downgrades_and_skips_what_it_runs() {
    let cluster = Cluster::start(POLL_MS).await;
    cluster.import_sample_registry().await;
    let pkg = cluster
        .upload("demo", "1.0.0", package("1.0.0", 1 << 20))
        .await;
    let d = sample_till(1, 5);
    let g = cluster.group("newer", vec![d]).await;
    // The coordinator last heard 0.9, so it assigns the task...
    let config = cluster.node_config(d, "store-002");
    let node = RunningNode::start(config.clone(), Arc::new(SystemClock), None);
    eventually(10, "a first heartbeat", || async {
        cluster
            .coordinator
            .device(d)
            .await
            .ok()
            .and_then(|x| x.last_seen)
    })
    .await;
    node.stop().await;
    let id = cluster.task(TaskKind::ForcedUpdate, pkg, g).await;
    // ...but meanwhile the till was moved to 2.0 by hand: it must skip, not downgrade.
    tillswarm_node::state::State::open(&config.data_dir)
        .expect("state")
        .set_installed(&"2.0".parse().expect("version"))
        .await
        .expect("set");
    let node = RunningNode::start(config, Arc::new(SystemClock), None);
    wait_target(&cluster, id, d, TargetState::Skipped, 30).await;
    assert!(!node.update_root().join("update/1.0.0").exists());
    assert_eq!(
        node.agent
            .state()
            .installed_version()
            .await
            .expect("state")
            .map(|v| v.to_string()),
        Some("2.0".into())
    );
    node.stop().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_during_install_is_reported_never_silent() {
    let cluster = Cluster::start(POLL_MS).await;
    cluster.import_sample_registry().await;
    let slow = tillswarm_fixtures::package_tar("echo starting\nsleep 20\necho done\n", b"payload");
    let pkg = cluster.upload("slow", "1.0.0", slow).await;
    let d = sample_till(0, 6);
    let g = cluster.group("slow", vec![d]).await;
    let config = cluster.node_config(d, "store-001");
    let node = RunningNode::start(config.clone(), Arc::new(SystemClock), None);
    let id = cluster.task(TaskKind::ForcedUpdate, pkg, g).await;
    wait_target(&cluster, id, d, TargetState::Installing, 30).await;
    node.kill().await; // power cut while up.sh runs
    let node = RunningNode::start(config, Arc::new(SystemClock), None);
    let t = wait_target(&cluster, id, d, TargetState::Failed, 30).await;
    let err = t.target_details[0].error.clone().expect("reason");
    assert!(err.contains("interrupted"), "{err}");
    assert_eq!(
        node.agent
            .state()
            .installed_version()
            .await
            .expect("state")
            .map(|v| v.to_string()),
        Some("0.9".into())
    );
    // The operator can retry: a restart gives the till a fresh attempt.
    let restarted = cluster
        .coordinator
        .restart_task(id, &Caller::system("test"))
        .await
        .expect("restart");
    assert_eq!(restarted.summary.attempt, 2);
    node.kill().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_during_an_install_waits_for_it_to_finish() {
    let cluster = Cluster::start(POLL_MS).await;
    cluster.import_sample_registry().await;
    let marker = cluster.dir.path().join("up.sh-finished");
    let script = format!(
        "echo starting\nsleep 3\necho done > '{}'\n",
        marker.display()
    );
    let pkg = cluster
        .upload(
            "slowish",
            "1.0.0",
            tillswarm_fixtures::package_tar(&script, b"x"),
        )
        .await;
    let d = sample_till(0, 6);
    let g = cluster.group("slowish", vec![d]).await;
    let mut config = cluster.node_config(d, "store-001");
    config.reboot_command = "none".into();
    let node = RunningNode::start(config, Arc::new(SystemClock), None);
    let id = cluster.task(TaskKind::ForcedUpdate, pkg, g).await;
    wait_target(&cluster, id, d, TargetState::Installing, 30).await;
    assert!(!marker.exists(), "up.sh finished before the stop was asked");
    // systemctl stop (or the till shutting down) while up.sh runs: the node
    // stops only after the install ends, and reports it first.
    node.stop().await;
    assert!(marker.exists(), "the stop cut the install in half");
    let t = cluster.coordinator.task(id).await.expect("task");
    assert!(
        matches!(
            target_state(&t, d),
            TargetState::Rebooting | TargetState::Installed
        ),
        "{:?}",
        target_state(&t, d)
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_reboot_the_till_reports_the_new_version() {
    let cluster = Cluster::start(POLL_MS).await;
    cluster.import_sample_registry().await;
    let pkg = cluster
        .upload("demo", "1.0.0", package("1.0.0", 1 << 20))
        .await;
    let d = sample_till(1, 2);
    let g = cluster.group("reboot", vec![d]).await;
    let mut config = cluster.node_config(d, "store-002");
    let marker = cluster.dir.path().join("rebooted");
    config.reboot_command = format!("touch {}", marker.display());
    let node = RunningNode::start(config.clone(), Arc::new(SystemClock), None);
    let id = cluster.task(TaskKind::ForcedUpdate, pkg, g).await;
    // `touch` does not stop this process, so the till's next heartbeat
    // already names the new version and the coordinator may move it from
    // rebooting to installed within one poll: either state means up.sh ran.
    eventually(
        30,
        &format!("{d} to reach rebooting in task {id}"),
        || async {
            let t = cluster.coordinator.task(id).await.expect("task");
            matches!(
                target_state(&t, d),
                TargetState::Rebooting | TargetState::Installed
            )
            .then_some(())
        },
    )
    .await;
    eventually(10, "the reboot command", || async {
        marker.exists().then_some(())
    })
    .await;
    // The "reboot" did not stop this process; the coordinator counts the till as
    // installed once it reports the new version, i.e. after it comes back.
    node.kill().await;
    let node = RunningNode::start(config, Arc::new(SystemClock), None);
    wait_target(&cluster, id, d, TargetState::Installed, 30).await;
    assert_eq!(
        cluster
            .coordinator
            .task(id)
            .await
            .expect("task")
            .summary
            .status,
        "completed"
    );
    node.stop().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_till_talks_https_to_a_coordinator_with_a_private_ca() {
    let pki = tillswarm_tests::tls::test_pki(&["localhost"]);
    let cluster = Cluster::start_tls(POLL_MS, &pki).await;
    assert!(cluster.url.starts_with("https://"));
    cluster.import_sample_registry().await;
    let pkg = cluster
        .upload("demo", "1.0.0", package("1.0.0", 1 << 20))
        .await;
    let till = sample_till(0, 1);
    let g = cluster.group("one", vec![till]).await;
    let node = RunningNode::start(
        cluster.node_config(till, "store-001"),
        Arc::new(SystemClock),
        None,
    );
    // A till that trusts another CA never gets through.
    let stranger = sample_till(0, 2);
    let mut wrong = cluster.node_config(stranger, "store-001");
    wrong.coordinator_ca_file = Some(pki.other_ca_pem.clone());
    let untrusting = RunningNode::start(wrong, Arc::new(SystemClock), None);
    let id = cluster.task(TaskKind::Download, pkg, g).await;
    wait_target(&cluster, id, till, TargetState::Downloaded, 30).await;
    assert!(node.update_root().join("update/1.0.0/up.sh").is_file());
    let seen = cluster.coordinator.device(stranger).await.expect("device");
    assert!(
        seen.last_seen.is_none(),
        "a till with the wrong CA was heard"
    );
    untrusting.stop().await;
    node.stop().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_till_waits_for_the_sale_to_end_and_says_so() {
    let cluster = Cluster::start(POLL_MS).await;
    cluster.import_sample_registry().await;
    let pkg = cluster
        .upload("demo", "1.0.0", package("1.0.0", 1 << 20))
        .await;
    let d = sample_till(0, 6);
    let g = cluster.group("sale", vec![d]).await;
    let mut config = cluster.node_config(d, "store-001");
    // The POS gets half a minute to close its sale; here it keeps it open.
    config.sale_mode_timeout_s = 30;
    let node = RunningNode::start(config, Arc::new(SystemClock), None);
    let id = cluster.task(TaskKind::ForcedUpdate, pkg, g).await;
    eventually(30, "the till to report waiting_for_sale_end", || async {
        let dev = cluster.coordinator.device(d).await.ok()?;
        (dev.state.map(|s| s.as_str()) == Some("waiting_for_sale_end")).then_some(())
    })
    .await;
    assert!(
        node.agent.ui().status().await.leave_sale_mode,
        "the POS was asked"
    );
    let t = cluster.coordinator.task(id).await.expect("task");
    assert_ne!(
        t.target_details[0].state,
        TargetState::Installed,
        "nothing installed during the sale"
    );
    node.agent.ui().confirm_sale_mode_left().await;
    wait_target(&cluster, id, d, TargetState::Installed, 30).await;
    node.stop().await;
    cluster.stop().await;
}
