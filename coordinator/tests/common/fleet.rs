//! A coordinator driven as tills drive it, without HTTP: the sample chain
//! imported, packages uploaded, heartbeats checked from the pinned root as a
//! till checks them, and progress reports sent with device tokens. Used by
//! the life-cycle and rollout tests.

use std::sync::Arc;

use futures_util::stream;
use tillswarm_coordinator::auth::Caller;
use tillswarm_coordinator::clock::ManualClock;
use tillswarm_coordinator::service::{Config, Coordinator};
use tillswarm_protocol::api::{DeviceState, HeartbeatRequest, ProgressReport, TargetState};
use tillswarm_protocol::{DeviceId, PackageId, TaskId};

use super::log_in;

pub const T0: i64 = 1_800_000_000_000;

pub struct Fixture {
    pub coordinator: Coordinator,
    pub clock: ManualClock,
    pub _dir: tempfile::TempDir,
}

pub async fn fixture() -> Fixture {
    fixture_with(Config::default()).await
}

/// [`fixture`] with these settings (the data folder is a fresh temporary one).
pub async fn fixture_with(config: Config) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(T0);
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        ..config
    };
    let coordinator = Coordinator::open_with_clock(config, Arc::new(clock.clone()))
        .await
        .expect("open");
    let registry = std::fs::read(tillswarm_fixtures::dir().join("registry/sample-chain.json"))
        .expect("registry");
    let summary = coordinator
        .import_registry(registry, true, &Caller::system("test"))
        .await
        .expect("import");
    assert_eq!(summary.devices_added, 12);
    Fixture {
        coordinator,
        clock,
        _dir: dir,
    }
}

/// Till `n` of store `store` (0-based) in the sample registry.
pub fn till(store: u32, n: u32) -> DeviceId {
    format!("71110000-0000-0000-0000-{store:04x}{n:08x}")
        .parse()
        .expect("guid")
}

pub async fn upload(c: &Coordinator, name: &str, version: &str, bytes: Vec<u8>) -> PackageId {
    let body = stream::iter([Ok::<_, warp::Error>(bytes::Bytes::from(bytes))]);
    c.upload_package(name.into(), version.into(), body, &Caller::system("test"))
        .await
        .expect("upload")
        .package_id
}

pub fn small_package(version: &str) -> Vec<u8> {
    tillswarm_fixtures::package_tar(
        &tillswarm_fixtures::up_sh("demo", version, 0),
        version.as_bytes(),
    )
}

/// A heartbeat's answer as a till sees it once the signatures check out.
pub struct Heard {
    pub revision: u64,
    /// The assignments, when the answer carried (signed) instructions.
    pub assignments: Option<Vec<tillswarm_protocol::api::Assignment>>,
    /// The settings from the instructions (default when none came).
    pub settings: tillswarm_protocol::api::TillSettings,
    /// The chunk base URL from the instructions, when they came.
    pub chunk_base_url: Option<Option<String>>,
}

pub async fn heartbeat(c: &Coordinator, d: DeviceId, version: &str, rev: Option<u64>) -> Heard {
    let token = log_in(c, d).await.expect("an approved till");
    let hb = c
        .heartbeat(
            token,
            HeartbeatRequest {
                device_id: d,
                version: Some(version.parse().expect("version")),
                state: DeviceState::Ready,
                ip: None,
                peer_id: None,
                free_disk_bytes: Some(1 << 30),
                known_revision: rev,
                warnings: Vec::new(),
                swarm_addrs: Vec::new(),
                connected_peers: None,
            },
            None,
        )
        .await
        .expect("heartbeat");
    // Checked from the pinned root, as a till does.
    let mut trust = tillswarm_protocol::trust::TrustState::pinned(c.public_key());
    let now = (c.now_ms() / 1000) as u64;
    let instructions = trust
        .accept(&hb.trust, &d, now)
        .expect("the answer verifies");
    Heard {
        revision: hb.revision,
        settings: instructions
            .as_ref()
            .map(|i| i.settings.clone())
            .unwrap_or_default(),
        chunk_base_url: instructions.as_ref().map(|i| i.chunk_base_url.clone()),
        assignments: instructions.map(|i| i.assignments),
    }
}

/// Sends `r` as its till does, with the till's device token.
pub async fn send(
    c: &Coordinator,
    r: ProgressReport,
) -> tillswarm_coordinator::Result<tillswarm_coordinator::tasks::ReportOutcome> {
    let token = log_in(c, r.device_id).await.expect("an approved till");
    c.report(token, r).await
}

pub fn report(
    d: DeviceId,
    task: TaskId,
    attempt: u32,
    seq: u64,
    state: TargetState,
) -> ProgressReport {
    ProgressReport {
        device_id: d,
        task_id: task,
        attempt,
        seq,
        state,
        bytes_done: 10,
        wan_bytes: 7,
        lan_bytes: 3,
        error: (state == TargetState::Failed).then(|| "up.sh exited 1".into()),
        log_tail: (state == TargetState::Failed).then(|| "installing...\nerror".into()),
    }
}

/// The PostgreSQL database for a test of PostgreSQL itself, on the server
/// `TILLSWARM_TEST_POSTGRES_URL` names; `None` (a skip) without one, which
/// fails under `CI=true`.
pub fn postgres_or_skip(test: &str) -> Option<tillswarm_coordinator::db::Database> {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = tillswarm_coordinator::db::test_postgres(dir.path());
    if db.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{test} needs PostgreSQL: set {}",
            tillswarm_coordinator::db::TEST_POSTGRES_ENV
        );
        eprintln!(
            "skipping {test}: no PostgreSQL test server ({} is not set)",
            tillswarm_coordinator::db::TEST_POSTGRES_ENV
        );
    }
    db
}
