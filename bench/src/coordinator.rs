//! `tillswarm-bench coordinator`: heartbeat load against a real coordinator.
//!
//! A coordinator is started in-process on `127.0.0.1:0` (its own multi-thread
//! tokio runtime on its own OS thread, a temporary data folder), so warp/hyper,
//! JSON and SQLite are all on the measured path. A chain of `tills` tills is
//! imported, a small package uploaded and a Download task created for group 1
//! (All), so every till holds one assignment. Every till then sends one warm-up
//! heartbeat and keeps the revision it got.
//!
//! The measurement is **open loop**: heartbeats are scheduled at a fixed rate
//! (`tills / interval` req/s by default: every till polling once per interval),
//! round-robin over the tills, each echoing its `known_revision`. A latency runs
//! from the request's *scheduled* send time to its response, so a stalled server
//! cannot hide its queue by slowing the client down (coordinated omission).
//! In-flight requests are bounded; sends that leave late are counted.
//!
//! A short **closed-loop** phase follows: a fixed number of workers each send
//! heartbeats back to back, which finds the most req/s the coordinator sustains.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::StreamExt;
use tillswarm_coordinator::Config;
use tillswarm_coordinator::db::Database;
use tillswarm_coordinator::devices::RegistryEntry;
use tillswarm_protocol::api::{
    Challenge, ChallengeRequest, DeviceLogin, DeviceSession, DeviceState, HeartbeatRequest,
    HeartbeatResponse,
};
use tillswarm_protocol::manifest::SecretKey;
use tillswarm_protocol::trust::{self, Domain};
use tillswarm_protocol::{DeviceId, StoreId, Version};
use tokio::sync::Semaphore;

mod activation;
mod report;
mod server;

pub use activation::Activation;
pub use report::{ClosedLoop, Latency, OpenLoop, Report, Verdict, print};
use server::Server;

/// The DESIGN target: at least this many heartbeats per second ...
pub const TARGET_RPS: f64 = 700.0;
/// ... with a p99 latency under this many milliseconds (on 2 cores).
pub const TARGET_P99_MS: f64 = 50.0;
/// A send leaving more than this after its scheduled time counts as late.
pub const LATE_AFTER: Duration = Duration::from_millis(5);
/// Time limit of one request; a request that takes longer counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Concurrent heartbeats of the warm-up.
const WARMUP_CONCURRENCY: usize = 64;

/// What to run.
#[derive(Debug, Clone)]
pub struct Params {
    /// Tills in the chain.
    pub tills: u32,
    /// Seconds between two polls of one till (sets the open-loop rate).
    pub interval_s: f64,
    /// Explicit open-loop rate in req/s, instead of `tills / interval_s`.
    pub rate: Option<f64>,
    /// Length of the open-loop phase in seconds.
    pub duration_s: f64,
    /// Tills per store.
    pub stores_of: u32,
    /// Most open-loop requests in flight at once.
    pub max_in_flight: usize,
    /// Concurrent workers of the closed-loop phase (0 skips the phase).
    pub closed_workers: usize,
    /// Length of the closed-loop phase in seconds.
    pub closed_s: f64,
    /// Worker threads of the coordinator's runtime.
    pub server_threads: usize,
    /// The coordinator's database: SQLite in the temporary data folder, or
    /// a PostgreSQL database, where the run gets a schema of its own.
    pub database: Database,
    /// Worker threads of the load generator's runtime.
    pub client_threads: usize,
    /// Create a Download task for All this many seconds into the open loop
    /// and follow every till until it holds it (see [`activation`]).
    pub activate_after_s: Option<f64>,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            tills: 20_000,
            interval_s: 30.0,
            rate: None,
            duration_s: 20.0,
            stores_of: 20,
            max_in_flight: 512,
            closed_workers: 64,
            closed_s: 5.0,
            server_threads: 2,
            database: Database::Sqlite,
            client_threads: 2,
            activate_after_s: None,
        }
    }
}

impl Params {
    /// The open-loop rate in req/s.
    pub fn target_rps(&self) -> f64 {
        self.rate
            .unwrap_or(f64::from(self.tills) / self.interval_s)
            .max(0.001)
    }
}

/// Deterministic GUID of till `i` (0-based).
pub fn till_guid(i: u32) -> DeviceId {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&0x7B3E_0000u32.to_be_bytes());
    b[6] = 0x40; // version 4 layout, for tools that check
    b[8] = 0x80;
    b[12..].copy_from_slice(&(i + 1).to_be_bytes());
    DeviceId::from_bytes(b)
}

/// The registry of a chain of `tills` tills in stores of `stores_of`, tills
/// numbered from 1 in each store.
pub fn registry(tills: u32, stores_of: u32) -> anyhow::Result<Vec<RegistryEntry>> {
    let stores_of = stores_of.max(1);
    (0..tills)
        .map(|i| {
            let store = i / stores_of + 1;
            let number = i % stores_of + 1;
            Ok(RegistryEntry {
                guid: till_guid(i),
                till_name: format!("Till {number}"),
                till_number: number,
                store_id: StoreId::new(format!("store-{store:05}"))?,
                store_name: format!("Bench store {store}"),
                store_address: format!("{store} Bench Street"),
                till_type: "standard".into(),
                time_zone: "Europe/Moscow".into(),
            })
        })
        .collect()
}

/// The device key of till `i`: deterministic, so a run needs no key files.
pub fn till_key(i: u32) -> SecretKey {
    let mut seed = [0x5b; 32];
    seed[..4].copy_from_slice(&i.to_le_bytes());
    SecretKey::from_seed(seed)
}

/// The load generator's HTTP side.
#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    base: Arc<str>,
    heartbeat_url: Arc<str>,
    /// Each till's device token, once logged in.
    tokens: Arc<Vec<String>>,
}

enum Outcome {
    /// `assignments`: how many the answer's instructions carried (a full list).
    Ok {
        revision: u64,
        assignments: Option<usize>,
    },
    Failed,
}

impl Client {
    fn new(addr: SocketAddr, pool: usize) -> anyhow::Result<Self> {
        let http = tillswarm_node::tls::http_client(None)?
            .no_proxy()
            .pool_max_idle_per_host(pool)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .timeout(REQUEST_TIMEOUT)
            .build()?;
        Ok(Self {
            http,
            base: format!("http://{addr}").into(),
            heartbeat_url: format!("http://{addr}/api/v1/node/heartbeat").into(),
            tokens: Arc::new(Vec::new()),
        })
    }

    /// Logs till `i` in as a till does: a challenge, then the signed login.
    async fn log_in(&self, i: u32) -> anyhow::Result<String> {
        let device = till_guid(i);
        let key = till_key(i);
        let challenge: Challenge = self
            .http
            .post(format!("{}/api/v1/node/challenge", self.base))
            .json(&ChallengeRequest { device_id: device })
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let public_key = key.public();
        let message = trust::login_message(&device, &challenge.challenge, &public_key);
        let login = DeviceLogin {
            device_id: device,
            public_key,
            signature: trust::sign_bytes(&key, Domain::DeviceLogin, &message),
            challenge: challenge.challenge,
            enroll_token: None,
        };
        let session: DeviceSession = self
            .http
            .post(format!("{}/api/v1/node/session", self.base))
            .json(&login)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        session.token.context("the till is not approved")
    }

    /// Logs every till in; returns the failures.
    async fn log_in_all(&mut self, tills: u32) -> u64 {
        let results: Vec<(u32, anyhow::Result<String>)> = futures_util::stream::iter(0..tills)
            .map(|i| {
                let client = self.clone();
                async move { (i, client.log_in(i).await) }
            })
            .buffer_unordered(WARMUP_CONCURRENCY)
            .collect()
            .await;
        let mut tokens = vec![String::new(); tills as usize];
        let mut errors = 0;
        for (i, r) in results {
            match r {
                Ok(t) => tokens[i as usize] = t,
                Err(e) => {
                    if errors == 0 {
                        eprintln!("login of till {i} failed: {e:#}");
                    }
                    errors += 1;
                }
            }
        }
        self.tokens = Arc::new(tokens);
        errors
    }

    async fn heartbeat(&self, till: u32, known_revision: Option<u64>) -> Outcome {
        let req = HeartbeatRequest {
            device_id: till_guid(till),
            version: Some(bench_version()),
            state: DeviceState::Ready,
            ip: None,
            peer_id: None,
            free_disk_bytes: Some(8 << 30),
            known_revision,
            warnings: Vec::new(),
            swarm_addrs: Vec::new(),
            connected_peers: None,
        };
        let token = self.tokens.get(till as usize).map_or("", String::as_str);
        let sent = self
            .http
            .post(&*self.heartbeat_url)
            .bearer_auth(token)
            .json(&req)
            .send()
            .await;
        let Ok(resp) = sent else {
            return Outcome::Failed;
        };
        if resp.status() != reqwest::StatusCode::OK {
            return Outcome::Failed;
        }
        match resp.json::<HeartbeatResponse>().await {
            Ok(r) => Outcome::Ok {
                revision: r.revision,
                assignments: r.trust.instructions.map(|i| {
                    serde_json::from_str::<serde_json::Value>(&i.body)
                        .ok()
                        .and_then(|b| b["assignments"].as_array().map(Vec::len))
                        .unwrap_or(0)
                }),
            },
            Err(_) => Outcome::Failed,
        }
    }
}

fn bench_version() -> Version {
    "0.9"
        .parse()
        .unwrap_or_else(|_| unreachable!("0.9 is a valid version"))
}

/// Uploads a demo package; returns its id.
async fn upload(
    client: &Client,
    addr: SocketAddr,
    token: &str,
    version: &str,
) -> anyhow::Result<String> {
    let package = tillswarm_fixtures::demo_package(version, 1 << 20);
    let resp = client
        .http
        .post(format!("http://{addr}/api/v1/packages"))
        .bearer_auth(token)
        .query(&[("name", "demo"), ("version", version)])
        .body(package)
        .send()
        .await?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await?;
    anyhow::ensure!(status.is_success(), "package upload: {status} {body}");
    Ok(body["package_id"]
        .as_str()
        .context("package upload answered without a package_id")?
        .to_owned())
}

/// Uploads the demo packages and creates a Download task of 1.0.0 for group
/// 1 (All); returns the id of 1.1.0 (for the activation).
async fn set_up_task(
    client: &Client,
    addr: SocketAddr,
    token: &str,
    tills: u32,
) -> anyhow::Result<String> {
    let package_id = upload(client, addr, token, "1.0.0").await?;
    let next = upload(client, addr, token, "1.1.0").await?;
    let resp = client
        .http
        .post(format!("http://{addr}/api/v1/tasks"))
        .bearer_auth(token)
        .json(&serde_json::json!({
            "kind": "download",
            "package_id": package_id,
            "group_id": 1,
        }))
        .timeout(Duration::from_secs(60))
        .send()
        .await?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await?;
    anyhow::ensure!(status.is_success(), "task creation: {status} {body}");
    let targets = body["targets"].as_u64().unwrap_or(0);
    anyhow::ensure!(
        targets == u64::from(tills),
        "the task targets {targets} tills, not {tills}"
    );
    Ok(next)
}

/// One value of the server's `/metrics` (`name` with its labels).
async fn metric(client: &Client, addr: SocketAddr, name: &str) -> Option<f64> {
    let text = client
        .http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
}

/// Node-API request count and summed seconds, from the server's `/metrics`.
async fn node_metrics(client: &Client, addr: SocketAddr) -> Option<(f64, f64)> {
    let count = "tillswarm_http_request_duration_seconds_count{api=\"node\"}";
    let sum = "tillswarm_http_request_duration_seconds_sum{api=\"node\"}";
    Some((
        metric(client, addr, count).await?,
        metric(client, addr, sum).await?,
    ))
}

/// The coordinator's count of heartbeats answered without a write (absent
/// from builds before quiet polls).
async fn quiet_polls(client: &Client, addr: SocketAddr) -> Option<f64> {
    metric(client, addr, "tillswarm_quiet_polls_total").await
}

fn server_mean_ms(before: Option<(f64, f64)>, after: Option<(f64, f64)>) -> Option<f64> {
    let ((c0, s0), (c1, s1)) = (before?, after?);
    (c1 > c0).then(|| (s1 - s0) / (c1 - c0) * 1000.0)
}

/// Warm-up: one heartbeat per till; returns the revisions and the failures.
async fn warm_up(client: &Client, tills: u32) -> (Vec<AtomicU64>, u64) {
    let results: Vec<(u32, Outcome)> = futures_util::stream::iter(0..tills)
        .map(|i| {
            let client = client.clone();
            async move { (i, client.heartbeat(i, None).await) }
        })
        .buffer_unordered(WARMUP_CONCURRENCY)
        .collect()
        .await;
    let revisions: Vec<AtomicU64> = (0..tills).map(|_| AtomicU64::new(0)).collect();
    let mut errors = 0;
    for (i, outcome) in results {
        match outcome {
            // A till with no known revision must get its one assignment.
            Outcome::Ok {
                revision,
                assignments: Some(1),
            } => revisions[i as usize].store(revision, Ordering::Relaxed),
            _ => errors += 1,
        }
    }
    (revisions, errors)
}

struct Sample {
    latency_us: u64,
    /// Scheduled send, µs after the loop's start.
    scheduled_us: u64,
    ok: bool,
    /// A full list the till did not need (no change since its revision).
    unexpected_list: bool,
}

/// The open-loop phase.
async fn open_loop(
    client: &Client,
    addr: SocketAddr,
    params: &Params,
    revisions: Arc<Vec<AtomicU64>>,
    activation: Option<(String, String)>,
) -> anyhow::Result<(OpenLoop, Option<Activation>)> {
    let rate = params.target_rps();
    let total = ((rate * params.duration_s).round() as u64).max(1);
    let period = Duration::from_secs_f64(1.0 / rate);
    let slots = Arc::new(Semaphore::new(params.max_in_flight.max(1)));
    let tills = params.tills.max(1);
    let before = node_metrics(client, addr).await;
    let quiet_before = quiet_polls(client, addr).await;

    // Samples go to a collector as requests finish, so the generator keeps
    // 16 bytes per request (its latency samples) and no finished task: a
    // long soak measures the coordinator's memory, not the generator's.
    let (samples, mut inbox) = tokio::sync::mpsc::unbounded_channel::<Sample>();
    let collector = tokio::spawn(async move {
        let mut ok: Vec<(u64, u64)> = Vec::new();
        let (mut errors, mut full_lists) = (0u64, 0u64);
        while let Some(s) = inbox.recv().await {
            if s.ok {
                ok.push((s.latency_us, s.scheduled_us));
                full_lists += u64::from(s.unexpected_list);
            } else {
                errors += 1;
            }
        }
        (ok, errors, full_lists)
    });
    let mut handles = Vec::new();
    let (mut late, mut limit_waits, mut max_lag) = (0u64, 0u64, Duration::ZERO);
    let start = tokio::time::Instant::now() + Duration::from_millis(10);
    let tracker = Arc::new(activation::Tracker::new(start.into_std(), tills));
    let creation = activation
        .zip(params.activate_after_s)
        .map(|((token, package), after)| {
            let (client, tracker) = (client.clone(), tracker.clone());
            tokio::spawn(async move {
                tokio::time::sleep_until(start + Duration::from_secs_f64(after)).await;
                tracker.create(&client, addr, &token, &package, tills).await
            })
        });
    for n in 0..total {
        let scheduled = start + period.mul_f64(n as f64);
        tokio::time::sleep_until(scheduled).await;
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                limit_waits += 1;
                slots.clone().acquire_owned().await?
            }
        };
        let lag = tokio::time::Instant::now().saturating_duration_since(scheduled);
        max_lag = max_lag.max(lag);
        if lag > LATE_AFTER {
            late += 1;
        }
        let till = (n % u64::from(tills)) as u32;
        let client = client.clone();
        let revisions = revisions.clone();
        let tracker = tracker.clone();
        let scheduled_us = scheduled.saturating_duration_since(start).as_micros() as u64;
        let samples = samples.clone();
        let request = tokio::spawn(async move {
            let known = revisions[till as usize].load(Ordering::Relaxed);
            let sent = Instant::now();
            let outcome = client.heartbeat(till, Some(known)).await;
            let latency_us = scheduled.elapsed().as_micros() as u64;
            drop(permit);
            let sample = match outcome {
                Outcome::Ok {
                    revision,
                    assignments,
                } => {
                    revisions[till as usize].store(revision, Ordering::Relaxed);
                    if let Some(n) = assignments {
                        tracker.full_list(till, n, Instant::now());
                    }
                    Sample {
                        latency_us,
                        scheduled_us,
                        ok: true,
                        unexpected_list: assignments.is_some() && !tracker.created_by(sent),
                    }
                }
                Outcome::Failed => Sample {
                    latency_us,
                    scheduled_us,
                    ok: false,
                    unexpected_list: false,
                },
            };
            let _ = samples.send(sample);
        });
        // Only requests still running are held, give or take a thousand (a
        // finished task's handle keeps its future's memory until awaited).
        if n % 1024 == 0 {
            handles.retain(|h: &tokio::task::JoinHandle<()>| !h.is_finished());
        }
        handles.push(request);
    }
    drop(samples);
    for h in handles {
        h.await?;
    }
    let (ok_samples, errors, full_lists) = collector.await?;
    let window = tracker.created_us().map(|c| {
        let two = (2.0 * params.interval_s * 1e6) as u64;
        c..c + two
    });
    let mut latencies = Vec::with_capacity(ok_samples.len());
    let mut during = Vec::new();
    for (latency_us, scheduled_us) in ok_samples {
        latencies.push(latency_us);
        if window.as_ref().is_some_and(|w| w.contains(&scheduled_us)) {
            during.push(latency_us);
        }
    }
    let activation = match creation {
        Some(job) => {
            job.await??;
            Some(tracker.summary(params.interval_s, &mut during))
        }
        None => None,
    };
    // `total` sends are spread over `duration_s`; a slow tail stretches it.
    let elapsed = start.elapsed().as_secs_f64().max(params.duration_s);
    let after = node_metrics(client, addr).await;
    let quiet_after = quiet_polls(client, addr).await;
    let ok = latencies.len() as u64;
    Ok((
        OpenLoop {
            target_rps: rate,
            achieved_rps: ok as f64 / elapsed,
            scheduled: total,
            ok,
            errors,
            late_sends: late,
            limit_waits,
            max_send_lag_ms: max_lag.as_secs_f64() * 1000.0,
            full_lists,
            latency: Latency::of(&mut latencies),
            server_mean_ms: server_mean_ms(before, after),
            quiet_share: quiet_before
                .zip(quiet_after)
                .filter(|_| ok > 0)
                .map(|(q0, q1)| (q1 - q0) / ok as f64),
        },
        activation,
    ))
}

/// The closed-loop phase.
async fn closed_loop(
    client: &Client,
    addr: SocketAddr,
    params: &Params,
    revisions: Arc<Vec<AtomicU64>>,
) -> anyhow::Result<ClosedLoop> {
    let workers = params.closed_workers.max(1);
    let tills = params.tills.max(1) as usize;
    let next = Arc::new(AtomicUsize::new(0));
    let before = node_metrics(client, addr).await;
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(params.closed_s);
    let mut handles = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (client, revisions, next) = (client.clone(), revisions.clone(), next.clone());
        handles.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let till = next.fetch_add(1, Ordering::Relaxed) % tills;
                let known = revisions[till].load(Ordering::Relaxed);
                let sent = Instant::now();
                match client.heartbeat(till as u32, Some(known)).await {
                    Outcome::Ok { revision, .. } => {
                        revisions[till].store(revision, Ordering::Relaxed);
                        latencies.push(sent.elapsed().as_micros() as u64);
                    }
                    Outcome::Failed => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for h in handles {
        let (l, e) = h.await?;
        latencies.extend(l);
        errors += e;
    }
    let seconds = start.elapsed().as_secs_f64();
    let after = node_metrics(client, addr).await;
    let ok = latencies.len() as u64;
    Ok(ClosedLoop {
        workers,
        seconds,
        ok,
        errors,
        max_rps: ok as f64 / seconds,
        latency: Latency::of(&mut latencies),
        server_mean_ms: server_mean_ms(before, after),
    })
}

/// Runs the whole benchmark and returns its figures.
pub fn run(params: &Params) -> anyhow::Result<Report> {
    anyhow::ensure!(params.tills > 0, "--tills must be at least 1");
    anyhow::ensure!(
        params.tills as usize <= tillswarm_coordinator::devices::MAX_IMPORT_ROWS,
        "--tills is at most {}",
        tillswarm_coordinator::devices::MAX_IMPORT_ROWS
    );
    anyhow::ensure!(params.interval_s > 0.0, "--interval-s must be positive");
    anyhow::ensure!(params.duration_s > 0.0, "--duration-s must be positive");
    anyhow::ensure!(
        params.target_rps() * params.duration_s <= 10_000_000.0,
        "rate x duration is over 10 million requests"
    );
    if let Some(after) = params.activate_after_s {
        anyhow::ensure!(
            after >= 0.0 && params.duration_s >= after + 2.0 * params.interval_s + 2.0,
            "--duration-s must cover --activate-after-s plus two poll intervals and 2 s"
        );
    }
    let server = Server::start(params)?;
    let addr = server.addr;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(params.client_threads.max(1))
        .thread_name("bench-client")
        .enable_all()
        .build()?;
    let result = rt.block_on(async {
        let mut client = Client::new(addr, params.max_in_flight.max(WARMUP_CONCURRENCY))?;
        let next = set_up_task(&client, addr, &server.token, params.tills).await?;
        // A task for thousands of tills reaches them store by store over most
        // of a poll interval; the warm-up expects every till to hold it.
        let announced = Instant::now()
            + Duration::from_millis(tillswarm_coordinator::tasks::stagger::spread_ms(
                Config::default().poll_interval_ms,
            ) as u64);
        let logins = Instant::now();
        let login_errors = client.log_in_all(params.tills).await;
        let login_s = logins.elapsed().as_secs_f64();
        tokio::time::sleep_until(announced.into()).await;
        let warm = Instant::now();
        let (revisions, warmup_errors) = warm_up(&client, params.tills).await;
        let warmup_s = warm.elapsed().as_secs_f64();
        let revisions = Arc::new(revisions);
        let activation = params
            .activate_after_s
            .map(|_| (server.token.clone(), next));
        let (open, activation) =
            open_loop(&client, addr, params, revisions.clone(), activation).await?;
        let closed = if params.closed_workers > 0 && params.closed_s > 0.0 {
            Some(closed_loop(&client, addr, params, revisions).await?)
        } else {
            None
        };
        anyhow::Ok((
            login_s,
            login_errors,
            warmup_s,
            warmup_errors,
            open,
            closed,
            activation,
        ))
    });
    // Close the client's connections before the server's graceful shutdown.
    rt.shutdown_timeout(Duration::from_secs(5));
    let import_s = server.import_s;
    server.stop()?;
    let (login_s, login_errors, warmup_s, warmup_errors, open_loop, closed_loop, activation) =
        result?;
    let verdict = verdict(&open_loop, closed_loop.as_ref());
    Ok(Report {
        database: params.database.to_string(),
        tills: params.tills,
        stores_of: params.stores_of,
        interval_s: params.interval_s,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        server_threads: params.server_threads.max(1),
        client_threads: params.client_threads.max(1),
        max_in_flight: params.max_in_flight.max(1),
        import_s,
        login_s,
        login_errors,
        warmup_s,
        warmup_errors,
        open_loop,
        closed_loop,
        activation,
        verdict,
    })
}

fn verdict(open: &OpenLoop, closed: Option<&ClosedLoop>) -> Verdict {
    let throughput_rps = closed.map_or(open.achieved_rps, |c| c.max_rps);
    let throughput_ok = throughput_rps >= TARGET_RPS && closed.is_none_or(|c| c.errors == 0);
    let latency_ok = open.latency.p99_ms < TARGET_P99_MS && open.errors == 0 && open.ok > 0;
    Verdict {
        target_rps: TARGET_RPS,
        target_p99_ms: TARGET_P99_MS,
        throughput_rps,
        throughput_ok,
        p99_ms: open.latency.p99_ms,
        p99_at_rps: open.target_rps,
        latency_ok,
        pass: throughput_ok && latency_ok,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut v: Vec<u64> = (1..=100).map(|i| i * 1000).collect();
        let l = Latency::of(&mut v);
        assert_eq!(l.p50_ms, 50.0);
        assert_eq!(l.p99_ms, 99.0);
        assert_eq!(l.max_ms, 100.0);
        assert_eq!(Latency::of(&mut []).p99_ms, 0.0);
    }

    #[test]
    fn registry_numbers_tills_per_store() {
        let r = registry(45, 20).expect("registry");
        assert_eq!(r.len(), 45);
        assert_eq!(
            (r[0].till_number, r[0].store_id.as_str()),
            (1, "store-00001")
        );
        assert_eq!(
            (r[20].till_number, r[20].store_id.as_str()),
            (1, "store-00002")
        );
        assert_eq!(
            (r[44].till_number, r[44].store_id.as_str()),
            (5, "store-00003")
        );
        assert_ne!(r[0].guid, r[1].guid);
        assert_eq!(till_guid(0), r[0].guid);
    }

    /// The whole bench, tiny: a real coordinator, 50 tills, 1 s at a high rate.
    #[test]
    fn smoke_run_has_no_errors() {
        let params = Params {
            tills: 50,
            stores_of: 7,
            rate: Some(400.0),
            duration_s: 1.0,
            max_in_flight: 32,
            closed_workers: 4,
            closed_s: 0.5,
            server_threads: 1,
            client_threads: 1,
            ..Params::default()
        };
        let r = run(&params).expect("bench run");
        assert_eq!(r.warmup_errors, 0);
        assert_eq!(r.open_loop.errors, 0);
        assert_eq!(r.open_loop.scheduled, 400);
        assert_eq!(r.open_loop.ok, 400);
        assert_eq!(r.open_loop.full_lists, 0);
        let c = r.closed_loop.as_ref().expect("closed loop ran");
        assert_eq!(c.errors, 0);
        assert!(c.ok > 0);
        serde_json::to_string(&r).expect("report as JSON");
    }

    #[test]
    fn smoke_run_on_postgres_leaves_no_schema_behind() {
        let Some(url) = std::env::var(tillswarm_coordinator::db::TEST_POSTGRES_ENV)
            .ok()
            .filter(|u| !u.is_empty())
        else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI needs a PostgreSQL test server (TILLSWARM_TEST_POSTGRES_URL)"
            );
            eprintln!("skipped: no PostgreSQL test server (TILLSWARM_TEST_POSTGRES_URL)");
            return;
        };
        let params = Params {
            tills: 30,
            stores_of: 7,
            rate: Some(200.0),
            duration_s: 1.0,
            max_in_flight: 16,
            closed_workers: 0,
            server_threads: 1,
            client_threads: 1,
            database: url.parse().expect("the test server's URL"),
            ..Params::default()
        };
        // The run fails if its schema was never created, or not dropped.
        let r = run(&params).expect("bench run on PostgreSQL");
        assert!(r.database.starts_with("postgres://"), "{}", r.database);
        assert!(!r.database.contains(&url), "the password is hidden");
        assert_eq!((r.warmup_errors, r.open_loop.errors), (0, 0));
        assert_eq!(r.open_loop.ok, 200);
    }
}
