//! The in-process store(s) of the distribution and delta benches: a real
//! coordinator on 127.0.0.1 and every till as a real node agent (store
//! swarm over libp2p on loopback, chunk verification, staging) in this
//! process, each store's WAN one simulated token bucket its tills share
//! ([`SimulatedWanLink`]), peers found by a [`tillswarm_node::sim::SimulatedLan`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use tillswarm_coordinator::Config;
use tillswarm_coordinator::auth::Caller;
use tillswarm_coordinator::packages::Package;
use tillswarm_coordinator::tasks::NewTask;
use tillswarm_node::client::CoordinatorClient;
use tillswarm_node::sim::SimulatedWanLink;
use tillswarm_node::{Agent, NodeConfig};
use tillswarm_protocol::api::{TargetState, TaskKind};
use tillswarm_protocol::clock::SystemClock;
use tillswarm_protocol::{ChainId, DeviceId, StoreId};
use tokio::sync::watch;

use super::{cpu_seconds, progress_bar, tokio_util_free_stream};

/// The stores to build.
pub struct Shape {
    /// Stores (each with its own WAN link).
    pub stores: u32,
    /// Tills per store.
    pub tills: u32,
    /// WAN bandwidth of each store, Mbit/s.
    pub wan_mbit: f64,
    /// LAN bandwidth of each till's link, Mbit/s.
    pub lan_mbit: f64,
    /// Largest upload the coordinator takes.
    pub max_package_bytes: u64,
}

/// GUID of till `n` of store `s` in the bench chain.
fn bench_till(s: u32, n: u32) -> DeviceId {
    format!("be4c0000-0000-4000-8000-{s:04x}{n:08x}")
        .parse()
        .expect("a well-formed GUID")
}

const SWARM_KEY: &str = "be4cbe4cbe4cbe4cbe4cbe4cbe4cbe4cbe4cbe4cbe4cbe4cbe4cbe4cbe4cbe4c";

struct BenchTill {
    store: usize,
    agent: Agent,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// The running stores.
pub struct InProcess {
    /// The bench's work folder (the coordinator's and tills' data).
    pub dir: tempfile::TempDir,
    served: tillswarm_coordinator::Spawned,
    tills: Vec<BenchTill>,
    /// Each store's simulated WAN link.
    pub links: Vec<Arc<SimulatedWanLink>>,
    stores: u32,
    tills_per_store: u32,
}

/// What one distribution took.
pub struct Run {
    /// Task creation until every till of every store held the package.
    pub seconds: f64,
    /// Per store: until its last till held it.
    pub store_seconds: Vec<f64>,
    /// Bytes each store's tills took from the coordinator, as sent.
    pub wan_per_store: Vec<u64>,
    /// Bytes the tills took from each other, as sent.
    pub lan_bytes: u64,
    /// CPU seconds of this process meanwhile.
    pub cpu_seconds: f64,
}

impl InProcess {
    /// Starts the coordinator and the tills, and waits until every store's
    /// tills are connected to each other and past their warm-up.
    pub async fn start(shape: &Shape) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("tillswarm-bench-dist-")
            .tempdir()?;
        let config = Config {
            data_dir: dir.path().join("coordinator"),
            poll_interval_ms: 1_000,
            poll_jitter: 0.2,
            scheduler_tick_ms: 100,
            max_package_bytes: shape.max_package_bytes,
            ..Config::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let served =
            tillswarm_coordinator::Spawned::start(config, listener, Default::default()).await?;
        let (coordinator, url) = (served.coordinator.clone(), served.http_url());
        let mut registry = Vec::new();
        for s in 0..shape.stores {
            for n in 1..=shape.tills {
                registry.push(serde_json::json!({
                    "guid": bench_till(s, n).to_string(),
                    "till_name": format!("Till {n}"),
                    "till_number": n,
                    "store_id": format!("store-{:03}", s + 1),
                    "store_name": format!("Bench store {}", s + 1),
                }));
            }
        }
        coordinator
            .import_registry(
                serde_json::to_vec(&registry)?,
                true,
                &Caller::system("bench"),
            )
            .await?;
        let wan_kbit = (shape.wan_mbit * 1000.0).round() as u64;
        let lan_kbit = (shape.lan_mbit * 1000.0).round() as u64;
        let lan = tillswarm_node::sim::SimulatedLan::loopback();
        let mut tills = Vec::new();
        let mut links = Vec::new();
        for s in 0..shape.stores {
            let link = Arc::new(SimulatedWanLink::new(wan_kbit));
            links.push(link.clone());
            for n in 1..=shape.tills {
                let root = dir.path().join(format!("s{s}-t{n}"));
                let config = NodeConfig {
                    device_id: bench_till(s, n),
                    chain_id: ChainId::new("bench")?,
                    store_id: StoreId::new(format!("store-{:03}", s + 1))?,
                    coordinator_url: url.clone(),
                    coordinator_ca_file: None,
                    coordinator_public_key: coordinator.public_key(),
                    enroll_token: None,
                    data_dir: root.join("data"),
                    update_root: root.join("mint"),
                    reboot_command: "none".into(),
                    wan_rate_limit_kbit: None,
                    lan_rate_limit_kbit: Some(lan_kbit),
                    install_timeout_s: 60,
                    disk_reserve_mb: 64,
                    local_api_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                    sale_mode_timeout_s: 0,
                    drop_in_scan_s: 3600,
                    allow_unsigned_dropin: false,
                    local_api_secret_file: None,
                    initial_version: Some("1.0".parse()?),
                    swarm_key: Some(SWARM_KEY.into()),
                    swarm_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                    swarm_peer_subnets: Vec::new(),
                    swarm_peer_ports: [1024, 65535],
                    mdns: false,
                    max_uploads: 4,
                };
                let source = link.source(CoordinatorClient::for_till(&config)?);
                let wiring = tillswarm_node::Wiring {
                    source: Some(source),
                    discovery: Some(lan.discovery()),
                };
                let agent = Agent::open(config, Arc::new(SystemClock), wiring)?;
                let (stop, stopped) = watch::channel(false);
                let runner = agent.clone();
                let task = tokio::spawn(async move {
                    let _ = runner.run(stopped).await;
                });
                tills.push(BenchTill {
                    store: s as usize,
                    agent,
                    stop,
                    task,
                });
            }
        }
        let bench = Self {
            dir,
            served,
            tills,
            links,
            stores: shape.stores,
            tills_per_store: shape.tills,
        };
        bench.wait_meshed().await?;
        // The swarm's warm-up (no WAN fetch in a node's first seconds) is over
        // before the task: a store's tills run long before an update comes.
        tokio::time::sleep(Duration::from_secs(3)).await;
        Ok(bench)
    }

    /// Until every swarm is up and every store's tills see each other.
    async fn wait_meshed(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let nets: Vec<_> = self.tills.iter().filter_map(|t| t.agent.net()).collect();
            if nets.len() == self.tills.len() {
                let mut all_meshed = true;
                for s in 0..self.stores as usize {
                    let store: Vec<_> = self
                        .tills
                        .iter()
                        .filter(|t| t.store == s)
                        .filter_map(|t| t.agent.net())
                        .collect();
                    all_meshed &= store
                        .iter()
                        .all(|n| n.view().len() + 1 >= self.tills_per_store as usize);
                }
                if all_meshed {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("the tills' swarms did not connect within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Uploads the package file at `path` as `version`.
    pub async fn upload(&self, path: &Path, version: &str) -> anyhow::Result<Package> {
        let file = tokio::fs::File::open(path).await?;
        self.served
            .coordinator
            .upload_package(
                "bench".into(),
                version.into(),
                tokio_util_free_stream(file),
                &Caller::system("bench"),
            )
            .await
            .context("uploading the package")
    }

    /// A Download task of `package` for every till, followed until each
    /// holds it staged; `bound_s` sizes the time limit.
    pub async fn distribute(
        &self,
        package: &Package,
        bound_s: f64,
        label: &str,
    ) -> anyhow::Result<Run> {
        let coordinator = &self.served.coordinator;
        let cpu0 = cpu_seconds();
        let bar = progress_bar(package.size * self.tills.len() as u64, label);
        let started = Instant::now();
        let task = coordinator
            .create_task(
                NewTask {
                    kind: TaskKind::Download,
                    package_id: package.package_id,
                    group_id: tillswarm_coordinator::groups::GroupId(1),
                    activate_at: None,
                    rollback: false,
                    window: None,
                    max_installing_per_store: None,
                    install_retries: None,
                },
                &Caller::system("bench"),
            )
            .await?;
        let task_id = task.summary.id;
        let mut store_done: HashMap<usize, f64> = HashMap::new();
        let limit = Duration::from_secs_f64(bound_s * 10.0 + 120.0);
        loop {
            let mut bytes = 0;
            let mut done_per_store: HashMap<usize, u32> = HashMap::new();
            for t in &self.tills {
                if let Ok(Some(local)) = t.agent.state().task(task_id).await {
                    bytes += local.bytes_done;
                    if local.state == TargetState::Downloaded {
                        *done_per_store.entry(t.store).or_default() += 1;
                    }
                }
            }
            bar.set_position(bytes);
            for (s, n) in &done_per_store {
                if *n == self.tills_per_store {
                    store_done
                        .entry(*s)
                        .or_insert_with(|| started.elapsed().as_secs_f64());
                }
            }
            if store_done.len() == self.stores as usize {
                break;
            }
            if started.elapsed() > limit {
                bail!("not every till held the package after {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bar.finish_and_clear();
        let cpu_seconds = cpu_seconds() - cpu0;
        let seconds = store_done.values().copied().fold(0.0, f64::max);
        let mut store_seconds: Vec<(usize, f64)> = store_done.into_iter().collect();
        store_seconds.sort_by_key(|(s, _)| *s);
        let (mut wan_per_store, mut lan_bytes) = (vec![0u64; self.stores as usize], 0u64);
        for t in &self.tills {
            let local = t
                .agent
                .state()
                .task(task_id)
                .await?
                .context("a till lost its task")?;
            wan_per_store[t.store] += local.wan_bytes;
            lan_bytes += local.lan_bytes;
            let staged = t
                .agent
                .config()
                .update_root
                .join("update")
                .join(&package.version);
            ensure!(
                tillswarm_node::stage::is_staged(&staged, &package.package_id),
                "a till's staged package does not match"
            );
        }
        Ok(Run {
            seconds,
            store_seconds: store_seconds.into_iter().map(|(_, s)| s).collect(),
            wan_per_store,
            lan_bytes,
            cpu_seconds,
        })
    }

    /// Stops the tills and the coordinator; returns the work folder.
    pub async fn stop(self) -> tempfile::TempDir {
        for t in self.tills {
            let _ = t.stop.send(true);
            let _ = t.task.await;
        }
        self.served.stop().await;
        self.dir
    }
}
