//! `tillswarm demo`: the whole product on one machine, with nothing to configure.
//!
//! It runs a real coordinator (embedded SQLite, the operator panel, the APIs) on
//! `--listen`, imports a demo chain (stores with names, addresses and time
//! zones; numbered tills), uploads the demo packages, and runs every till as a
//! real node agent in this process. What is simulated, and named so:
//! - each store's **WAN link** (`SimulatedWanLink`): one token bucket per store
//!   that every till of the store shares for chunks from the coordinator;
//! - each store's **LAN** (`SimulatedLan`): the tills' swarms listen on
//!   127.0.0.1 and find each other through a discovery that stands in for
//!   mDNS (libp2p, the chain key, chunk sharing and verification are the
//!   real ones);
//! - the **cashiers** ([`Cashier`]): some accept the update prompt, some decline
//!   it (the till restarts a little later, "end of shift", and they accept when
//!   asked again), some never answer (the till installs when
//!   `autoUpdateTimeout` runs out);
//! - the **reboot** after an install: the till's agent is stopped and started.
//!
//! Without `--scenario` it runs until Ctrl-C; the operator works in the panel.
//! `--scenario rollout` and `--scenario rollout-failure` act as an operator
//! through the API (see [`scenario`]), write a JSON summary and exit non-zero
//! unless the rollout ended as it must.

mod scenario;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use clap::{Args, ValueEnum};
use serde::Serialize;
use tillswarm_coordinator::auth::{Caller, Role};
use tillswarm_coordinator::service::access::NewUserInput;
use tillswarm_coordinator::till_types::TillTypeInput;
use tillswarm_coordinator::{Config, Coordinator};
use tillswarm_node::client::CoordinatorClient;
use tillswarm_node::local_api::Answer;
use tillswarm_node::sim::{SimulatedLan, SimulatedWanLink};
use tillswarm_node::{Agent, NodeConfig};
use tillswarm_protocol::clock::SystemClock;
use tillswarm_protocol::{ChainId, DeviceId, PackageId, StoreId};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

/// The demo stores: name, address, IANA time zone. More stores reuse them with a number.
const STORES: &[(&str, &str, &str)] = &[
    ("Central Market", "12 Lenin St, Kazan", "Europe/Moscow"),
    ("Riverside", "3 Embankment Rd, Samara", "Europe/Samara"),
    (
        "Uralsky",
        "48 Malysheva St, Yekaterinburg",
        "Asia/Yekaterinburg",
    ),
    (
        "Siberia Mall",
        "7 Krasny Ave, Novosibirsk",
        "Asia/Novosibirsk",
    ),
    (
        "Amber Coast",
        "21 Victory Sq, Kaliningrad",
        "Europe/Kaliningrad",
    ),
    (
        "Pacific",
        "5 Svetlanskaya St, Vladivostok",
        "Asia/Vladivostok",
    ),
];

/// Chain id of the demo chain.
const CHAIN: &str = "demo-chain";
/// The store-swarm key of the demo chain (any 32 bytes, shared by its tills).
const SWARM_KEY: &str = "d3e0c4a1b2f5968778695a4b3c2d1e0f0f1e2d3c4b5a69788796a5b4c3d2e1f0";
/// The version every demo till runs at start.
const START_VERSION: &str = "1.0.0";
/// The version the demo rolls out.
const NEW_VERSION: &str = "1.1.0";

/// Options of `tillswarm demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Number of stores (1 to 50).
    #[arg(long, default_value_t = 3)]
    stores: u32,
    /// Tills per store (1 to 64).
    #[arg(long, default_value_t = 8)]
    tills: u32,
    /// Where the coordinator and its panel listen (default 127.0.0.1:8080;
    /// with `--scenario`, a free port).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Folder for everything the demo writes (default: a temporary folder,
    /// removed on exit).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Simulated WAN bandwidth of each store, in Mbit/s.
    #[arg(long, default_value_t = 20.0)]
    wan_mbit: f64,
    /// Payload size of the demo packages, in MiB.
    #[arg(long, default_value_t = 16)]
    package_mb: usize,
    /// Run a scripted scenario to the end instead of waiting for Ctrl-C.
    #[arg(long, value_enum)]
    scenario: Option<Scenario>,
    /// Write the scenario's summary here (JSON).
    #[arg(long, requires = "scenario")]
    json: Option<PathBuf>,
}

/// Scripted scenarios.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Scenario {
    /// The recommended rollout (pilot tills, Even, Odd) through the API, to the end.
    Rollout,
    /// The same while `up.sh` fails on one store's tills: the rollout must
    /// pause itself, and no install may start after the pause.
    RolloutFailure,
}

/// How a simulated cashier answers the update prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cashier {
    /// Accepts about a second after the prompt appears.
    Accepts,
    /// Accepts after a few seconds.
    AcceptsLate,
    /// Declines; after the till's next restart, accepts.
    DeclinesOnce,
    /// Never answers: the till installs when `autoUpdateTimeout` runs out.
    Absent,
}

impl Cashier {
    /// The cashier of till number `n` (1-based): the four kinds take turns
    /// among the odd and among the even tills, so every wave meets each kind.
    pub fn for_till(n: u32) -> Self {
        [
            Self::Accepts,
            Self::DeclinesOnce,
            Self::Absent,
            Self::AcceptsLate,
        ][((n.saturating_sub(1) / 2) % 4) as usize]
    }
}

/// A till of the demo chain and its running agent.
struct Till {
    device: DeviceId,
    store: usize,
    number: u32,
    cashier: Cashier,
    config: NodeConfig,
    wan: Arc<SimulatedWanLink>,
    /// The store LAN, simulated (stands in for mDNS).
    lan: SimulatedLan,
    running: Mutex<Option<Running>>,
    /// Restarts so far (reboots after installs, restarts after declines).
    restarts: std::sync::atomic::AtomicU32,
}

struct Running {
    agent: Agent,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Till {
    async fn start(&self) -> anyhow::Result<()> {
        let wiring = tillswarm_node::Wiring {
            source: Some(self.wan.source(CoordinatorClient::for_till(&self.config)?)),
            discovery: Some(self.lan.discovery()),
        };
        let agent = Agent::open(self.config.clone(), Arc::new(SystemClock), wiring)
            .with_context(|| format!("opening till {}", self.device))?;
        let (stop, stopped) = watch::channel(false);
        let runner = agent.clone();
        let device = self.device;
        let task = tokio::spawn(async move {
            if let Err(e) = runner.run(stopped).await {
                tracing::error!(till = %device, error = %e, "till agent stopped");
            }
        });
        *self.running.lock().await = Some(Running { agent, stop, task });
        Ok(())
    }

    async fn stop(&self) {
        if let Some(r) = self.running.lock().await.take() {
            let _ = r.stop.send(true);
            let _ = r.task.await;
        }
    }

    /// A reboot of the till: its agent stops and starts again (a new boot).
    async fn restart(&self) -> anyhow::Result<()> {
        self.stop().await;
        self.restarts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.start().await
    }

    async fn agent(&self) -> Option<Agent> {
        self.running.lock().await.as_ref().map(|r| r.agent.clone())
    }
}

/// The running demo: a coordinator, its HTTP server and the tills.
struct Demo {
    coordinator: Coordinator,
    url: String,
    /// The demo admin's password, generated at each start.
    admin_password: String,
    tills: Vec<Arc<Till>>,
    stores: Vec<String>,
    packages: BTreeMap<String, (PackageId, u64)>,
    /// The coordinator's server, until shutdown.
    served: Option<tillswarm_coordinator::Spawned>,
    background: Vec<JoinHandle<()>>,
    _tmp: Option<tempfile::TempDir>,
}

/// The demo's operator account (an admin).
const DEMO_ADMIN: &str = "admin";

/// Creates the demo admin with a new random password, or gives the existing one
/// (a reused `--data` folder) a new random password; returns it.
async fn demo_admin(coordinator: &Coordinator) -> anyhow::Result<String> {
    let by = Caller::system("demo");
    let added = coordinator
        .add_user(
            NewUserInput {
                name: DEMO_ADMIN.into(),
                role: Role::Admin,
                password: None,
            },
            &by,
        )
        .await;
    let user = match added {
        Ok(u) => u,
        Err(tillswarm_coordinator::Error::Conflict { .. }) => coordinator
            .set_password(DEMO_ADMIN.into(), None, "user.passwd", &by)
            .await
            .context("setting the demo admin's password")?,
        Err(e) => return Err(e).context("creating the demo admin"),
    };
    user.password
        .context("the coordinator generated no password for the demo admin")
}

/// Runs `tillswarm demo`.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    ensure!((1..=50).contains(&args.stores), "--stores must be 1 to 50");
    ensure!((1..=64).contains(&args.tills), "--tills must be 1 to 64");
    ensure!(
        args.wan_mbit > 0.0 && args.wan_mbit <= 10_000.0,
        "--wan-mbit must be above 0 and at most 10000"
    );
    ensure!(
        (1..=1024).contains(&args.package_mb),
        "--package-mb must be 1 to 1024"
    );
    let demo = Demo::start(&args).await?;
    let result = match args.scenario {
        None => demo.interactive().await,
        Some(Scenario::Rollout) => demo.rollout_scenario(args.json.as_deref(), false).await,
        Some(Scenario::RolloutFailure) => demo.rollout_scenario(args.json.as_deref(), true).await,
    };
    demo.shutdown().await;
    result
}

impl Demo {
    async fn start(args: &DemoArgs) -> anyhow::Result<Self> {
        let (root, tmp) = match &args.data {
            Some(d) => (d.clone(), None),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("tillswarm-demo-")
                    .tempdir()
                    .context("creating a temporary folder")?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        let config = Config {
            data_dir: root.join("coordinator"),
            // Fast polls: a demo should react within seconds.
            poll_interval_ms: 2_000,
            poll_jitter: 0.2,
            scheduler_tick_ms: 250,
            ..Config::default()
        };
        let listen = args.listen.unwrap_or_else(|| match args.scenario {
            Some(_) => SocketAddr::from(([127, 0, 0, 1], 0)),
            None => SocketAddr::from(([127, 0, 0, 1], 8080)),
        });
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listening on {listen} (pass --listen to pick another)"))?;
        let served = tillswarm_coordinator::Spawned::start(config, listener, Default::default())
            .await
            .context("opening the coordinator")?;
        let (coordinator, url) = (served.coordinator.clone(), served.http_url());
        let admin_password = demo_admin(&coordinator).await?;

        // The chain: stores and numbered tills, as a store registry would list them.
        let mut registry = Vec::new();
        let mut stores = Vec::new();
        for s in 0..args.stores {
            let (name, address, tz) = STORES[s as usize % STORES.len()];
            let round = s as usize / STORES.len();
            let name = match round {
                0 => name.to_owned(),
                r => format!("{name} {}", r + 1),
            };
            let store_id = format!("store-{:03}", s + 1);
            for n in 1..=args.tills {
                registry.push(serde_json::json!({
                    "guid": demo_till(s, n).to_string(),
                    "till_name": format!("Till {n}"),
                    "till_number": n,
                    "store_id": store_id,
                    "store_name": name,
                    "store_address": address,
                    "till_type": "standard",
                    "time_zone": tz,
                }));
            }
            stores.push(store_id);
        }
        coordinator
            .import_registry(
                serde_json::to_vec(&registry)?,
                true,
                &Caller::system("demo"),
            )
            .await
            .context("importing the demo chain")?;
        // Cashiers who never answer are waited for one minute, then the till installs.
        coordinator
            .set_till_type(
                "standard".into(),
                TillTypeInput {
                    auto_update_timeout_minutes: Some(1),
                },
                &Caller::system("demo"),
            )
            .await
            .context("setting autoUpdateTimeout")?;

        // The packages (skipped when a reused --data folder has them already).
        let mut packages = BTreeMap::new();
        let existing = coordinator
            .packages(tillswarm_coordinator::service::Paging::default())
            .await?
            .items;
        for version in [START_VERSION, NEW_VERSION] {
            let found = existing
                .iter()
                .find(|p| p.name == "demo" && p.version == version);
            let (id, size) = match found {
                Some(p) => (p.package_id, p.size),
                None => {
                    let bytes = tillswarm_fixtures::demo_package(version, args.package_mb << 20);
                    let size = bytes.len() as u64;
                    let body = futures_util::stream::iter([Ok::<_, std::io::Error>(
                        bytes::Bytes::from(bytes),
                    )]);
                    let p = coordinator
                        .upload_package(
                            "demo".into(),
                            version.into(),
                            body,
                            &Caller::system("demo"),
                        )
                        .await
                        .with_context(|| format!("uploading demo {version}"))?;
                    (p.package_id, size)
                }
            };
            packages.insert(version.to_owned(), (id, size));
        }

        // The tills: one simulated WAN link per store, shared by its tills,
        // and one simulated LAN (each till hears of its own store's tills).
        let kbit = (args.wan_mbit * 1000.0).round().max(1.0) as u64;
        let lan = SimulatedLan::loopback();
        let mut tills = Vec::new();
        for (s, store_id) in stores.iter().enumerate() {
            let wan = Arc::new(SimulatedWanLink::new(kbit));
            for n in 1..=args.tills {
                let device = demo_till(s as u32, n);
                let dir = root.join("tills").join(format!("{store_id}-till-{n:02}"));
                let config = NodeConfig {
                    device_id: device,
                    chain_id: ChainId::new(CHAIN)?,
                    store_id: StoreId::new(store_id)?,
                    coordinator_url: url.clone(),
                    coordinator_ca_file: None,
                    coordinator_public_key: coordinator.public_key(),
                    enroll_token: None,
                    data_dir: dir.join("data"),
                    update_root: dir.join("mint"),
                    reboot_command: "none".into(),
                    wan_rate_limit_kbit: None,
                    lan_rate_limit_kbit: None,
                    install_timeout_s: 120,
                    disk_reserve_mb: 64,
                    local_api_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                    sale_mode_timeout_s: 5,
                    drop_in_scan_s: 10,
                    allow_unsigned_dropin: false,
                    local_api_secret_file: None,
                    initial_version: Some(START_VERSION.parse()?),
                    swarm_key: Some(SWARM_KEY.into()),
                    swarm_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                    swarm_peer_subnets: Vec::new(),
                    swarm_peer_ports: [1024, 65535],
                    mdns: false,
                    max_uploads: 4,
                };
                tills.push(Arc::new(Till {
                    device,
                    store: s,
                    number: n,
                    cashier: Cashier::for_till(n),
                    config,
                    wan: wan.clone(),
                    lan: lan.clone(),
                    running: Mutex::new(None),
                    restarts: Default::default(),
                }));
            }
        }
        for t in &tills {
            t.start().await?;
        }
        let mut background = Vec::new();
        for t in &tills {
            background.push(tokio::spawn(simulated_cashier(t.clone())));
        }
        Ok(Self {
            coordinator,
            url,
            admin_password,
            tills,
            stores,
            packages,
            served: Some(served),
            background,
            _tmp: tmp,
        })
    }

    async fn interactive(&self) -> anyhow::Result<()> {
        let (id, size) = self.packages[NEW_VERSION];
        println!();
        println!("tillswarm demo is running");
        println!(
            "  panel:    {}/   (API: {}/api/v1/openapi.json)",
            self.url, self.url
        );
        println!(
            "  login:    user {DEMO_ADMIN}, password {}   (generated at this start)",
            self.admin_password
        );
        println!(
            "  chain:    {} stores x {} tills, every till at {START_VERSION}; one simulated WAN link per store",
            self.stores.len(),
            self.tills.len() / self.stores.len().max(1)
        );
        println!("  packages: demo {START_VERSION}, demo {NEW_VERSION} ({id}, {size} bytes)");
        println!(
            "  cashiers: by till number, some accept the prompt, some decline (asked again after a restart), some never answer (install after autoUpdateTimeout = 1 min)"
        );
        println!(
            "  try:      Tasks -> new Update task, package demo {NEW_VERSION}, a group; watch each store's WAN ratio"
        );
        println!("Ctrl-C stops the demo.");
        tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?;
        println!("stopping");
        Ok(())
    }

    async fn shutdown(mut self) {
        for b in &self.background {
            b.abort();
        }
        for t in &self.tills {
            t.stop().await;
        }
        if let Some(s) = self.served.take() {
            s.stop().await;
        }
    }
}

/// GUID of till `n` (1-based) of store index `s`.
fn demo_till(s: u32, n: u32) -> DeviceId {
    format!("de300000-0000-4000-8000-{s:04x}{n:08x}")
        .parse()
        .expect("a well-formed GUID")
}

/// A till's cashier and its POS: answers prompts as its [`Cashier`] kind says,
/// confirms leaving sale mode, and restarts the till after an install (the
/// reboot) and some seconds after a decline (the end of a shift).
async fn simulated_cashier(till: Arc<Till>) {
    let mut declined_at_boot: Option<u32> = None;
    let mut prompt_seen: Option<(tillswarm_protocol::TaskId, Instant)> = None;
    let mut version = None;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let Some(agent) = till.agent().await else {
            continue;
        };
        let restarts = till.restarts.load(std::sync::atomic::Ordering::Relaxed);
        let status = agent.ui().status().await;
        if status.leave_sale_mode {
            agent.ui().confirm_sale_mode_left().await;
        }
        // A new version running: the install finished; the till reboots.
        let installed = agent.state().installed_version().await.ok().flatten();
        if version.is_some() && installed != version {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if let Err(e) = till.restart().await {
                tracing::error!(till = %till.device, error = %e, "restart failed");
            }
            version = installed;
            continue;
        }
        version = installed;
        // Declined earlier: the shift ends, the till restarts, the cashier accepts next time.
        if declined_at_boot == Some(restarts) && status.prompt.is_none() {
            tokio::time::sleep(Duration::from_secs(8)).await;
            if let Err(e) = till.restart().await {
                tracing::error!(till = %till.device, error = %e, "restart failed");
            }
            continue;
        }
        let Some(prompt) = status.prompt else {
            prompt_seen = None;
            continue;
        };
        let since = match prompt_seen {
            Some((task, at)) if task == prompt.task_id => at,
            _ => {
                prompt_seen = Some((prompt.task_id, Instant::now()));
                Instant::now()
            }
        };
        let waited = since.elapsed();
        let answer = match till.cashier {
            Cashier::Accepts if waited >= Duration::from_secs(1) => Some(Answer::Accept),
            Cashier::AcceptsLate if waited >= Duration::from_secs(5) => Some(Answer::Accept),
            Cashier::DeclinesOnce if waited >= Duration::from_secs(2) => {
                if declined_at_boot.is_some() {
                    Some(Answer::Accept)
                } else {
                    declined_at_boot = Some(restarts);
                    Some(Answer::Decline)
                }
            }
            _ => None,
        };
        if let Some(a) = answer {
            agent.ui().answer(a).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_wave_meets_every_kind_of_cashier() {
        let odd: Vec<Cashier> = (1..=8).step_by(2).map(Cashier::for_till).collect();
        let even: Vec<Cashier> = (2..=8).step_by(2).map(Cashier::for_till).collect();
        for wave in [odd, even] {
            for kind in [
                Cashier::Accepts,
                Cashier::AcceptsLate,
                Cashier::DeclinesOnce,
                Cashier::Absent,
            ] {
                assert!(wave.contains(&kind), "{kind:?} missing from {wave:?}");
            }
        }
        assert_eq!(Cashier::for_till(1), Cashier::Accepts, "the pilot accepts");
    }

    #[test]
    fn demo_guids_are_distinct() {
        let mut all: Vec<DeviceId> = (0..50)
            .flat_map(|s| (1..=64).map(move |n| demo_till(s, n)))
            .collect();
        let n = all.len();
        all.sort_by_key(|d| d.to_string());
        all.dedup();
        assert_eq!(all.len(), n);
    }
}
