//! The in-process cluster harness for tillswarm: a real coordinator on a loopback
//! port chosen by the OS, and till nodes in temporary folders, all in one process.
//! End-to-end tests (`tests/tests/`) use it. The coordinator is started as the
//! demo and the bench start theirs ([`tillswarm_coordinator::Spawned`]); nodes
//! of a swarm find each other on its simulated LAN ([`SimulatedLan`], the one
//! the demo and the bench use too).

pub mod mitm;
pub mod s3;
pub mod tls;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream;
use tillswarm_coordinator::auth::Caller;
use tillswarm_coordinator::service::node_ops::NewEnrollTokenInput;
use tillswarm_coordinator::{Config, Coordinator};
use tillswarm_node::sim::SimulatedLan;
use tillswarm_node::stage::ChunkSource;
use tillswarm_node::{Agent, NodeConfig, Wiring};
use tillswarm_protocol::api::DeviceLogin;
use tillswarm_protocol::clock::Clock;
use tillswarm_protocol::manifest::SecretKey;
use tillswarm_protocol::trust::{self, Domain};
use tillswarm_protocol::{ChainId, DeviceId, PackageId, StoreId};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A coordinator served on 127.0.0.1 with a temporary data folder.
pub struct Cluster {
    /// The service (for direct calls).
    pub coordinator: Coordinator,
    /// Its base URL.
    pub url: String,
    /// The CA tills trust, when the coordinator serves HTTPS.
    pub ca_file: Option<PathBuf>,
    /// Holds every temporary folder of the cluster.
    pub dir: tempfile::TempDir,
    /// The stores' LAN, simulated: nodes started with its discovery (see
    /// [`Cluster::swarm_wiring`]) find their store's other nodes through it.
    pub lan: SimulatedLan,
    served: Option<tillswarm_coordinator::Spawned>,
}

impl Cluster {
    /// Starts a coordinator that asks tills to poll every `poll_ms`. Set
    /// `RUST_LOG` (e.g. `tillswarm_node=debug`) to see the cluster's logs.
    pub async fn start(poll_ms: u64) -> Self {
        Self::start_with(poll_ms, None, |c| c).await
    }

    /// As [`Cluster::start`], with the coordinator's settings changed by
    /// `tweak` (the data folder and poll settings are the cluster's).
    pub async fn start_configured(poll_ms: u64, tweak: impl FnOnce(Config) -> Config) -> Self {
        Self::start_with(poll_ms, None, tweak).await
    }

    /// As [`Cluster::start`], serving HTTPS with a certificate for `localhost`
    /// from `pki` (tills get `https://localhost:PORT` and the CA file).
    pub async fn start_tls(poll_ms: u64, pki: &tls::TestPki) -> Self {
        Self::start_with(poll_ms, Some(pki), |c| c).await
    }

    async fn start_with(
        poll_ms: u64,
        pki: Option<&tls::TestPki>,
        tweak: impl FnOnce(Config) -> Config,
    ) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().expect("tempdir");
        let config = Config {
            data_dir: dir.path().join("coordinator"),
            poll_interval_ms: poll_ms,
            poll_jitter: 0.0,
            scheduler_tick_ms: 50,
            ..tweak(Config::default())
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (url, options) = match pki {
            None => (
                format!("http://127.0.0.1:{port}"),
                tillswarm_coordinator::ServeOptions::default(),
            ),
            Some(pki) => (
                format!("https://localhost:{port}"),
                tillswarm_coordinator::ServeOptions {
                    tls: Some(
                        tillswarm_coordinator::server::tls_config(&pki.cert_pem, &pki.key_pem)
                            .expect("TLS config"),
                    ),
                    ..Default::default()
                },
            ),
        };
        let served = tillswarm_coordinator::Spawned::start(config, listener, options)
            .await
            .expect("coordinator");
        Self {
            coordinator: served.coordinator.clone(),
            url,
            ca_file: pki.map(|p| p.ca_pem.clone()),
            dir,
            lan: SimulatedLan::loopback(),
            served: Some(served),
        }
    }

    /// Imports the sample chain (2 stores x 6 tills, see `fixtures/registry`).
    pub async fn import_sample_registry(&self) {
        let registry = std::fs::read(tillswarm_fixtures::dir().join("registry/sample-chain.json"))
            .expect("registry");
        self.coordinator
            .import_registry(registry, true, &Caller::system("test"))
            .await
            .expect("import");
    }

    /// A custom group of `members`, made as an operator makes one.
    pub async fn group(
        &self,
        name: &str,
        members: Vec<DeviceId>,
    ) -> tillswarm_coordinator::groups::GroupId {
        self.coordinator
            .create_group(
                tillswarm_coordinator::groups::GroupInput {
                    name: Some(name.into()),
                    description: None,
                    members: Some(members),
                },
                &Caller::system("test"),
            )
            .await
            .expect("group")
            .id
    }

    /// A task of `kind` installing `package` on `group`, active at once.
    pub async fn task(
        &self,
        kind: tillswarm_protocol::api::TaskKind,
        package: PackageId,
        group: tillswarm_coordinator::groups::GroupId,
    ) -> tillswarm_protocol::TaskId {
        self.coordinator
            .create_task(
                tillswarm_coordinator::tasks::NewTask {
                    kind,
                    package_id: package,
                    group_id: group,
                    activate_at: None,
                    rollback: false,
                    window: None,
                    max_installing_per_store: None,
                    install_retries: None,
                },
                &Caller::system("test"),
            )
            .await
            .expect("task")
            .summary
            .id
    }

    /// Uploads a package.
    pub async fn upload(&self, name: &str, version: &str, bytes: Vec<u8>) -> PackageId {
        let body = stream::iter([Ok::<_, warp::Error>(bytes::Bytes::from(bytes))]);
        self.coordinator
            .upload_package(name.into(), version.into(), body, &Caller::system("test"))
            .await
            .expect("upload")
            .package_id
    }

    /// Logs `device` in with `key` through the service, as a node's client
    /// does over HTTP: its device token, or `None` while it waits for approval.
    pub async fn log_in(
        &self,
        device: DeviceId,
        key: &SecretKey,
        enroll_token: Option<String>,
    ) -> tillswarm_coordinator::Result<Option<String>> {
        let challenge = self.coordinator.device_challenge(device)?.challenge;
        let public_key = key.public();
        let message = trust::login_message(&device, &challenge, &public_key);
        let login = DeviceLogin {
            device_id: device,
            public_key,
            signature: trust::sign_bytes(key, Domain::DeviceLogin, &message),
            challenge,
            enroll_token,
        };
        let session = self
            .coordinator
            .device_login(login, "127.0.0.1".into())
            .await?;
        Ok(session.token)
    }

    /// The device key of the node [`Cluster::node_config`] makes for `device`.
    pub fn node_key(&self, device: DeviceId) -> SecretKey {
        tillswarm_node::identity::device_key(&self.node_config(device, "store-001").data_dir)
            .expect("device key")
    }

    /// The device token of `device` (listed in the registry, or admitted),
    /// logged in with its node's key.
    pub async fn device_token(&self, device: DeviceId) -> String {
        self.log_in(device, &self.node_key(device), None)
            .await
            .expect("login")
            .expect("an approved till")
    }

    /// Enrolls a till the registry does not list into `store`, as a new
    /// till does at its first login with an admin's store enrollment token.
    pub async fn enroll(&self, device: DeviceId, store: &str) {
        let token = self
            .coordinator
            .create_enroll_token(
                NewEnrollTokenInput {
                    store_id: store.into(),
                    expires_days: Some(1),
                    max_uses: Some(1),
                },
                &Caller::system("test"),
            )
            .await
            .expect("enroll token")
            .token_secret;
        let session = self
            .log_in(device, &self.node_key(device), Some(token))
            .await
            .expect("login");
        assert!(session.is_some(), "{device} was not enrolled");
    }

    /// A node config for till `device` of `store`, in its own temporary folders.
    pub fn node_config(&self, device: DeviceId, store: &str) -> NodeConfig {
        let root = self.dir.path().join(format!("till-{device}"));
        NodeConfig {
            device_id: device,
            chain_id: ChainId::new("sample").expect("chain"),
            store_id: StoreId::new(store).expect("store"),
            coordinator_url: self.url.clone(),
            coordinator_ca_file: self.ca_file.clone(),
            coordinator_public_key: self.coordinator.public_key(),
            enroll_token: None,
            data_dir: root.join("data"),
            update_root: root.join("mint"),
            reboot_command: "none".into(),
            wan_rate_limit_kbit: None,
            lan_rate_limit_kbit: None,
            install_timeout_s: 30,
            disk_reserve_mb: 64,
            local_api_listen: "127.0.0.1:0".parse().expect("addr"),
            sale_mode_timeout_s: 0,
            drop_in_scan_s: 1,
            allow_unsigned_dropin: false,
            local_api_secret_file: None,
            initial_version: Some("0.9".parse().expect("version")),
            swarm_key: None,
            swarm_listen: "127.0.0.1:0".parse().expect("addr"),
            swarm_peer_subnets: Vec::new(),
            swarm_peer_ports: [1024, 65535],
            mdns: false,
            max_uploads: 4,
        }
    }

    /// How a node of this cluster joins its store's simulated LAN.
    pub fn swarm_wiring(&self) -> Wiring {
        Wiring {
            discovery: Some(self.lan.discovery()),
            ..Default::default()
        }
    }

    /// Stops the coordinator.
    pub async fn stop(mut self) {
        if let Some(s) = self.served.take() {
            s.stop().await;
        }
    }
}

/// Till `n` (1-based) of store index `store` (0-based) in the sample registry.
pub fn sample_till(store: u32, n: u32) -> DeviceId {
    format!("71110000-0000-0000-0000-{store:04x}{n:08x}")
        .parse()
        .expect("guid")
}

/// A node agent running in this process.
pub struct RunningNode {
    /// The agent (for its UI and state).
    pub agent: Agent,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl RunningNode {
    /// Opens and runs an agent with `config`, `clock` and optionally another chunk source.
    pub fn start(
        config: NodeConfig,
        clock: Arc<dyn Clock>,
        source: Option<Arc<dyn ChunkSource>>,
    ) -> Self {
        let wiring = Wiring {
            source,
            ..Default::default()
        };
        Self::start_wired(config, clock, wiring)
    }

    /// Opens and runs an agent built with `wiring` (e.g. on a simulated LAN).
    pub fn start_wired(config: NodeConfig, clock: Arc<dyn Clock>, wiring: Wiring) -> Self {
        let agent = Agent::open(config, clock, wiring).expect("agent");
        let (stop, stopped) = watch::channel(false);
        let runner = agent.clone();
        let task = tokio::spawn(async move {
            let _ = runner.run(stopped).await;
        });
        Self { agent, stop, task }
    }

    /// Stops the agent (like a till shutting down; state is durable).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// Kills the agent abruptly (in-flight work is lost, as in a power cut).
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
        let _ = self.stop.send(true);
    }

    /// The till's update root.
    pub fn update_root(&self) -> PathBuf {
        self.agent.config().update_root.clone()
    }
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after `secs`.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A swarm key for tests (any 32 bytes; the same for a whole chain).
pub const TEST_SWARM_KEY: &str = "1111111111111111111111111111111111111111111111111111111111111111";

/// Dials every pair of running nodes directly, bypassing the LAN: what a
/// device that knows the others' addresses can do (tests of who the swarm
/// lets in), once each one's swarm is up.
pub async fn connect_all(nodes: &[&RunningNode]) {
    let mut nets = Vec::new();
    for n in nodes {
        let net = eventually(10, "the store swarm to start", || async { n.agent.net() }).await;
        nets.push(net);
    }
    for a in &nets {
        for b in &nets {
            if a.peer_id != b.peer_id {
                a.add_peer(b.peer_id, vec![b.listen_addr.clone()])
                    .await
                    .expect("dial");
            }
        }
    }
}

/// Waits until each node (started on the cluster's simulated LAN) sees every
/// other as a store peer, their member lists from the coordinator included,
/// as tills that have run for a while do.
pub async fn mesh(nodes: &[&RunningNode]) {
    let everyone = nodes.len().saturating_sub(1);
    let seen = || {
        nodes
            .iter()
            .map(|n| n.agent.net().map_or(0, |net| net.view().len()))
            .collect::<Vec<_>>()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen().iter().any(|&n| n < everyone) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "after 60 s the tills see {:?} store peers each, not {everyone}",
            seen()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
