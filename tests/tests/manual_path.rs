//! The seed's manual path end to end: support exports a signed bundle, it is
//! dropped into a till's `update/` folder, and the till (even one that cannot
//! reach the coordinator) offers and installs it; a tampered bundle and an
//! unsigned folder are refused and reported; a till that allows unsigned
//! drop-ins still installs a loose folder.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tillswarm_coordinator::auth::{Caller, Role};
use tillswarm_coordinator::service::access::NewTokenInput;
use tillswarm_node::local_api::Answer;
use tillswarm_node::state::DROP_IN_TASK;
use tillswarm_protocol::DeviceId;
use tillswarm_protocol::api::TargetState;
use tillswarm_protocol::clock::SystemClock;
use tillswarm_tests::{Cluster, RunningNode, eventually, sample_till};

const POLL_MS: u64 = 100;

/// Exports package `version` over HTTP with an operator token, as
/// `tillswarm package export` does; returns the file name and bytes.
async fn export(cluster: &Cluster, version: &str) -> (String, Vec<u8>) {
    let package = tillswarm_fixtures::package_tar(
        &tillswarm_fixtures::up_sh("demo", version, 0),
        &tillswarm_fixtures::noise(3 << 20, 11),
    );
    let id = cluster.upload("demo", version, package).await;
    let token = cluster
        .coordinator
        .create_token(
            NewTokenInput {
                name: format!("support-{version}"),
                role: Role::Operator,
                expires_days: None,
            },
            &Caller::system("test"),
        )
        .await
        .expect("token")
        .token_secret;
    let url = format!("{}/api/v1/packages/{id}/bundle", cluster.url);
    let client = tillswarm_node::tls::http_client(None)
        .expect("tls")
        .build()
        .expect("client");
    let anonymous = client.get(&url).send().await.expect("get");
    assert_eq!(anonymous.status(), 401, "a bundle without credentials");
    let resp = client
        .get(&url)
        .bearer_auth(&token)
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 200);
    let disposition = resp.headers()["content-disposition"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let length = resp.content_length();
    let bytes = resp.bytes().await.expect("body").to_vec();
    assert_eq!(length, Some(bytes.len() as u64));
    let name = format!("demo-{version}.tsb");
    assert!(disposition.contains(&name), "{disposition}");
    (name, bytes)
}

/// Puts a bundle into a till's `update/` folder, old enough to count as
/// fully copied.
fn drop_in(root: &Path, name: &str, bytes: &[u8]) {
    let dir = root.join("update");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write");
    let f = std::fs::File::options()
        .write(true)
        .open(&path)
        .expect("open");
    f.set_modified(SystemTime::now() - Duration::from_secs(60))
        .expect("mtime");
}

async fn accept_and_wait_installed(node: &RunningNode, version: &str) {
    let prompt = eventually(30, "the drop-in to be offered", || async {
        node.agent.ui().status().await.prompt
    })
    .await;
    assert_eq!(prompt.version.to_string(), version);
    assert!(node.agent.ui().answer(Answer::Accept).await);
    wait_installed(node, version).await;
}

async fn wait_installed(node: &RunningNode, version: &str) {
    eventually(30, "the drop-in to be installed", || async {
        let v = node.agent.state().installed_version().await.ok()??;
        (v.to_string() == version).then_some(())
    })
    .await;
    let app = std::fs::read_to_string(node.update_root().join("app/VERSION")).expect("installed");
    assert_eq!(app.trim(), version);
}

async fn warnings_of(cluster: &Cluster, d: DeviceId, needle: &str) -> Vec<String> {
    eventually(30, "the till to report the refusal", || async {
        let dev = cluster.coordinator.device(d).await.ok()?;
        dev.warnings
            .iter()
            .any(|w| w.contains(needle))
            .then_some(dev.warnings)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_bundle_installs_on_a_till_that_cannot_reach_the_coordinator() {
    let cluster = Cluster::start(POLL_MS).await;
    cluster.import_sample_registry().await;
    let (name, bytes) = export(&cluster, "2.0").await;
    let mut config = cluster.node_config(sample_till(1, 6), "store-002");
    // Nothing listens there: the till is cut off from the coordinator.
    config.coordinator_url = "http://127.0.0.1:9".into();
    let node = RunningNode::start(config, Arc::new(SystemClock), None);
    drop_in(&node.update_root(), &name, &bytes);
    // Never told the cashier timeout, the till does not ask: support runs
    // the install (`tillswarm node install`, the seed's `sudo ./up.sh`).
    eventually(30, "the bundle to be staged and offered", || async {
        let tasks = node.agent.state().tasks().await.ok()?;
        tasks
            .iter()
            .any(|t| t.assignment.task_id == DROP_IN_TASK && t.state == TargetState::Downloaded)
            .then_some(())
    })
    .await;
    node.agent.ui().request_manual_install().await;
    wait_installed(&node, "2.0").await;
    let update = node.update_root().join("update");
    assert!(update.join(format!("{name}.staged")).is_file());
    assert!(!update.join(&name).exists());
    node.stop().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_bundle_and_an_unsigned_folder_are_refused_and_reported() {
    let cluster = Cluster::start(POLL_MS).await;
    cluster.import_sample_registry().await;
    let (name, mut bytes) = export(&cluster, "2.0").await;
    let d = sample_till(1, 6);
    let node = RunningNode::start(
        cluster.node_config(d, "store-002"),
        Arc::new(SystemClock),
        None,
    );
    // One byte of the package changed, near the end of the file.
    let at = bytes.len() - 4096;
    bytes[at] ^= 0x40;
    drop_in(&node.update_root(), &name, &bytes);
    // And an unsigned folder, as the seed's manual path used to allow.
    let folder = node.update_root().join("update/3.0");
    std::fs::create_dir_all(&folder).expect("mkdir");
    std::fs::write(
        folder.join("up.sh"),
        tillswarm_fixtures::up_sh("anyone", "3.0", 0),
    )
    .expect("up.sh");
    let warnings = warnings_of(&cluster, d, "unsigned_dropin_refused 3.0").await;
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with(&format!("dropin_refused {name}"))),
        "{warnings:?}"
    );
    let update = node.update_root().join("update");
    assert!(update.join(format!("{name}.refused")).is_file());
    assert!(
        !update.join("2.0").exists(),
        "a tampered package was staged"
    );
    assert!(
        folder
            .join(tillswarm_node::dropin::REFUSED_MARKER)
            .is_file()
    );
    assert_eq!(node.agent.ui().status().await.prompt, None);
    // A manual install request finds nothing it may run.
    node.agent.ui().request_manual_install().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!node.update_root().join("app/VERSION").exists());
    node.stop().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_till_that_allows_unsigned_drop_ins_installs_a_loose_folder() {
    let cluster = Cluster::start(POLL_MS).await;
    cluster.import_sample_registry().await;
    let d = sample_till(1, 6);
    let mut config = cluster.node_config(d, "store-002");
    config.allow_unsigned_dropin = true;
    let node = RunningNode::start(config, Arc::new(SystemClock), None);
    // Support's package, unpacked by hand into update/2.0/.
    let folder = node.update_root().join("update/2.0");
    std::fs::create_dir_all(&folder).expect("mkdir");
    std::fs::write(
        folder.join("up.sh"),
        tillswarm_fixtures::up_sh("support", "2.0", 0),
    )
    .expect("up.sh");
    std::fs::write(folder.join("payload.bin"), b"by hand").expect("payload");
    accept_and_wait_installed(&node, "2.0").await;
    eventually(20, "the coordinator to see 2.0", || async {
        let dev = cluster.coordinator.device(d).await.ok()?;
        (dev.version.as_deref() == Some("2.0")).then_some(())
    })
    .await;
    node.stop().await;
    cluster.stop().await;
}
