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
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::StreamExt;
use serde::Serialize;
use tillswarm_coordinator::auth::{Caller, Role};
use tillswarm_coordinator::devices::RegistryEntry;
use tillswarm_coordinator::service::access::NewTokenInput;
use tillswarm_coordinator::{Config, Coordinator};
use tillswarm_protocol::api::{
    Challenge, ChallengeRequest, DeviceLogin, DeviceSession, DeviceState, HeartbeatRequest,
    HeartbeatResponse,
};
use tillswarm_protocol::manifest::SecretKey;
use tillswarm_protocol::trust::{self, Domain};
use tillswarm_protocol::{DeviceId, StoreId, Version};
use tokio::sync::Semaphore;

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
    /// Worker threads of the load generator's runtime.
    pub client_threads: usize,
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
            client_threads: 2,
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

/// Latency summary in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

impl Latency {
    /// Summarises latencies in microseconds (sorts them).
    pub fn of(micros: &mut [u64]) -> Self {
        if micros.is_empty() {
            return Self::default();
        }
        micros.sort_unstable();
        // Nearest rank: the smallest value with at least p% of values at or below.
        let at = |p: f64| {
            let rank = ((p / 100.0) * micros.len() as f64).ceil() as usize;
            micros[rank.clamp(1, micros.len()) - 1] as f64 / 1000.0
        };
        let sum: u128 = micros.iter().map(|&m| u128::from(m)).sum();
        Self {
            p50_ms: at(50.0),
            p90_ms: at(90.0),
            p99_ms: at(99.0),
            p999_ms: at(99.9),
            max_ms: at(100.0),
            mean_ms: sum as f64 / micros.len() as f64 / 1000.0,
        }
    }
}

/// Figures of the open-loop phase.
#[derive(Debug, Clone, Serialize)]
pub struct OpenLoop {
    /// Rate asked for, req/s.
    pub target_rps: f64,
    /// Successful responses per second over the phase (its nominal length, or
    /// until the last response if that came later).
    pub achieved_rps: f64,
    /// Requests scheduled.
    pub scheduled: u64,
    /// 200 responses with a valid body.
    pub ok: u64,
    /// Non-200 responses, transport failures, timeouts, unreadable bodies.
    pub errors: u64,
    /// Sends that left more than [`LATE_AFTER`] after their scheduled time.
    pub late_sends: u64,
    /// Sends that had to wait for a free in-flight slot.
    pub limit_waits: u64,
    /// Largest delay of a send behind its schedule, ms.
    pub max_send_lag_ms: f64,
    /// Answers that carried the full assignment list although the till echoed
    /// the current revision (should be 0).
    pub full_lists: u64,
    /// Latency from scheduled send to response (successful requests).
    pub latency: Latency,
    /// Mean time the server spent per node request (its own `/metrics`), ms.
    pub server_mean_ms: Option<f64>,
}

/// Figures of the closed-loop phase.
#[derive(Debug, Clone, Serialize)]
pub struct ClosedLoop {
    /// Concurrent workers.
    pub workers: usize,
    /// Seconds it ran.
    pub seconds: f64,
    /// 200 responses.
    pub ok: u64,
    /// Failures.
    pub errors: u64,
    /// Successful responses per second: the most the coordinator sustains.
    pub max_rps: f64,
    /// Latency from send to response.
    pub latency: Latency,
    /// Mean time the server spent per node request (its own `/metrics`), ms.
    pub server_mean_ms: Option<f64>,
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Tills in the chain.
    pub tills: u32,
    /// Tills per store.
    pub stores_of: u32,
    /// Poll interval the rate stands for, s.
    pub interval_s: f64,
    /// Cores the OS offers this process (client and server share them).
    pub cores: usize,
    /// Worker threads of the coordinator's runtime (plus its database thread).
    pub server_threads: usize,
    /// Worker threads of the load generator.
    pub client_threads: usize,
    /// Most open-loop requests in flight.
    pub max_in_flight: usize,
    /// Registry import, s.
    pub import_s: f64,
    /// Device logins (challenge + signed login per till), s.
    pub login_s: f64,
    /// Logins that did not end with a device token.
    pub login_errors: u64,
    /// Warm-up (one heartbeat per till), s.
    pub warmup_s: f64,
    /// Warm-up heartbeats that failed or did not carry exactly one assignment.
    pub warmup_errors: u64,
    /// The open-loop phase.
    pub open_loop: OpenLoop,
    /// The closed-loop phase, when it ran.
    pub closed_loop: Option<ClosedLoop>,
    /// The DESIGN verdict.
    pub verdict: Verdict,
}

/// The run against the DESIGN target (">= 700 req/s with p99 < 50 ms on 2 cores").
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// Target throughput, req/s.
    pub target_rps: f64,
    /// Target p99, ms.
    pub target_p99_ms: f64,
    /// Most req/s seen: the closed-loop maximum (or the open-loop rate if the
    /// closed loop did not run).
    pub throughput_rps: f64,
    /// Throughput met.
    pub throughput_ok: bool,
    /// Open-loop p99 (at the open-loop rate), ms.
    pub p99_ms: f64,
    /// The rate the p99 was measured at.
    pub p99_at_rps: f64,
    /// p99 under target, with no errors.
    pub latency_ok: bool,
    /// Both.
    pub pass: bool,
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

/// A coordinator serving on its own thread and runtime.
struct Server {
    addr: SocketAddr,
    /// An operator token for setting up the task over the API.
    token: String,
    import_s: f64,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: std::sync::mpsc::Receiver<()>,
    thread: Option<std::thread::JoinHandle<()>>,
    dir: Option<tempfile::TempDir>,
}

impl Server {
    fn start(params: &Params) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("tillswarm-bench-coordinator-")
            .tempdir()?;
        let data_dir: PathBuf = dir.path().to_path_buf();
        let registry = serde_json::to_vec(&registry(params.tills, params.stores_of)?)?;
        let threads = params.server_threads.max(1);
        let (ready_tx, ready_rx) =
            std::sync::mpsc::channel::<anyhow::Result<(SocketAddr, String, f64)>>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("bench-coordinator".into())
            .spawn(move || {
                let run = || -> anyhow::Result<()> {
                    let rt = tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(threads)
                        .thread_name("coordinator-worker")
                        .enable_all()
                        .build()?;
                    rt.block_on(async move {
                        let setup = async {
                            let coordinator = Coordinator::open(Config {
                                data_dir,
                                ..Config::default()
                            })
                            .await?;
                            let start = Instant::now();
                            let summary = coordinator
                                .import_registry(registry, true, &Caller::system("bench"))
                                .await?;
                            let import_s = start.elapsed().as_secs_f64();
                            anyhow::ensure!(
                                summary.devices_added == summary.rows,
                                "registry import added {} of {} tills",
                                summary.devices_added,
                                summary.rows
                            );
                            let token = coordinator
                                .create_token(
                                    NewTokenInput {
                                        name: "bench".into(),
                                        role: Role::Operator,
                                        expires_days: None,
                                    },
                                    &Caller::system("bench"),
                                )
                                .await?
                                .token_secret;
                            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                            let addr = listener.local_addr()?;
                            anyhow::Ok((coordinator, listener, addr, token, import_s))
                        };
                        match setup.await {
                            Ok((coordinator, listener, addr, token, import_s)) => {
                                let _ = ready_tx.send(Ok((addr, token, import_s)));
                                tillswarm_coordinator::serve(coordinator, listener, async move {
                                    let _ = stop_rx.await;
                                })
                                .await;
                            }
                            Err(e) => {
                                let _ = ready_tx.send(Err(e));
                            }
                        }
                    });
                    // Give the database thread a moment to see its last handle go.
                    rt.shutdown_timeout(Duration::from_secs(5));
                    Ok(())
                };
                if let Err(e) = run() {
                    eprintln!("coordinator thread failed: {e:#}");
                }
                let _ = done_tx.send(());
            })?;
        let (addr, token, import_s) = ready_rx
            .recv()
            .context("the coordinator thread stopped before serving")??;
        Ok(Self {
            addr,
            token,
            import_s,
            stop: Some(stop_tx),
            done: done_rx,
            thread: Some(thread),
            dir: Some(dir),
        })
    }

    /// Stops the server gracefully and removes the data folder.
    fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
            match self.done.recv_timeout(Duration::from_secs(20)) {
                Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    if let Some(t) = self.thread.take() {
                        let _ = t.join();
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    eprintln!("warning: the coordinator did not stop within 20 s");
                }
            }
        }
        if let Some(dir) = self.dir.take() {
            dir.close()
                .context("removing the coordinator's temp folder")?;
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            eprintln!("warning: {e:#}");
        }
    }
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
    Ok { revision: u64, full_list: bool },
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
                full_list: r.trust.instructions.is_some(),
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

/// Uploads the demo package and creates a Download task for group 1 (All).
async fn set_up_task(
    client: &Client,
    addr: SocketAddr,
    token: &str,
    tills: u32,
) -> anyhow::Result<()> {
    let package = tillswarm_fixtures::demo_package("1.0.0", 1 << 20);
    let resp = client
        .http
        .post(format!("http://{addr}/api/v1/packages"))
        .bearer_auth(token)
        .query(&[("name", "demo"), ("version", "1.0.0")])
        .body(package)
        .send()
        .await?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await?;
    anyhow::ensure!(status.is_success(), "package upload: {status} {body}");
    let package_id = body["package_id"]
        .as_str()
        .context("package upload answered without a package_id")?
        .to_owned();
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
    Ok(())
}

/// Node-API request count and summed seconds, from the server's `/metrics`.
async fn node_metrics(client: &Client, addr: SocketAddr) -> Option<(f64, f64)> {
    let text = client
        .http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    Some((
        value("tillswarm_http_request_duration_seconds_count{api=\"node\"}")?,
        value("tillswarm_http_request_duration_seconds_sum{api=\"node\"}")?,
    ))
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
                full_list: true,
            } => revisions[i as usize].store(revision, Ordering::Relaxed),
            _ => errors += 1,
        }
    }
    (revisions, errors)
}

struct Sample {
    latency_us: u64,
    ok: bool,
    full_list: bool,
}

/// The open-loop phase.
async fn open_loop(
    client: &Client,
    addr: SocketAddr,
    params: &Params,
    revisions: Arc<Vec<AtomicU64>>,
) -> anyhow::Result<OpenLoop> {
    let rate = params.target_rps();
    let total = ((rate * params.duration_s).round() as u64).max(1);
    let period = Duration::from_secs_f64(1.0 / rate);
    let slots = Arc::new(Semaphore::new(params.max_in_flight.max(1)));
    let tills = params.tills.max(1);
    let before = node_metrics(client, addr).await;

    let mut handles = Vec::with_capacity(total as usize);
    let (mut late, mut limit_waits, mut max_lag) = (0u64, 0u64, Duration::ZERO);
    let start = tokio::time::Instant::now() + Duration::from_millis(10);
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
        handles.push(tokio::spawn(async move {
            let known = revisions[till as usize].load(Ordering::Relaxed);
            let outcome = client.heartbeat(till, Some(known)).await;
            let latency_us = scheduled.elapsed().as_micros() as u64;
            drop(permit);
            match outcome {
                Outcome::Ok {
                    revision,
                    full_list,
                } => {
                    revisions[till as usize].store(revision, Ordering::Relaxed);
                    Sample {
                        latency_us,
                        ok: true,
                        full_list,
                    }
                }
                Outcome::Failed => Sample {
                    latency_us,
                    ok: false,
                    full_list: false,
                },
            }
        }));
    }
    let mut latencies = Vec::with_capacity(handles.len());
    let (mut errors, mut full_lists) = (0u64, 0u64);
    for h in handles {
        let s = h.await?;
        if s.ok {
            latencies.push(s.latency_us);
            full_lists += u64::from(s.full_list);
        } else {
            errors += 1;
        }
    }
    // `total` sends are spread over `duration_s`; a slow tail stretches it.
    let elapsed = start.elapsed().as_secs_f64().max(params.duration_s);
    let after = node_metrics(client, addr).await;
    let ok = latencies.len() as u64;
    Ok(OpenLoop {
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
    })
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
    let server = Server::start(params)?;
    let addr = server.addr;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(params.client_threads.max(1))
        .thread_name("bench-client")
        .enable_all()
        .build()?;
    let result = rt.block_on(async {
        let mut client = Client::new(addr, params.max_in_flight.max(WARMUP_CONCURRENCY))?;
        set_up_task(&client, addr, &server.token, params.tills).await?;
        let logins = Instant::now();
        let login_errors = client.log_in_all(params.tills).await;
        let login_s = logins.elapsed().as_secs_f64();
        let warm = Instant::now();
        let (revisions, warmup_errors) = warm_up(&client, params.tills).await;
        let warmup_s = warm.elapsed().as_secs_f64();
        let revisions = Arc::new(revisions);
        let open = open_loop(&client, addr, params, revisions.clone()).await?;
        let closed = if params.closed_workers > 0 && params.closed_s > 0.0 {
            Some(closed_loop(&client, addr, params, revisions).await?)
        } else {
            None
        };
        anyhow::Ok((login_s, login_errors, warmup_s, warmup_errors, open, closed))
    });
    // Close the client's connections before the server's graceful shutdown.
    rt.shutdown_timeout(Duration::from_secs(5));
    let import_s = server.import_s;
    server.stop()?;
    let (login_s, login_errors, warmup_s, warmup_errors, open_loop, closed_loop) = result?;
    let verdict = verdict(&open_loop, closed_loop.as_ref());
    Ok(Report {
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

/// Prints the figures as tables.
pub fn print(r: &Report) {
    let o = &r.open_loop;
    println!(
        "coordinator heartbeats: {} tills in stores of {}, {} cores; coordinator runtime {} workers + db thread, client runtime {} workers, <= {} in flight",
        r.tills, r.stores_of, r.cores, r.server_threads, r.client_threads, r.max_in_flight
    );
    println!(
        "setup: registry import {:.2} s; {} device logins (2 requests each) in {:.2} s ({:.0} logins/s, {} bad); warm-up {} heartbeats in {:.2} s ({:.0} req/s, {} bad)",
        r.import_s,
        r.tills,
        r.login_s,
        f64::from(r.tills) / r.login_s.max(1e-9),
        r.login_errors,
        r.tills,
        r.warmup_s,
        f64::from(r.tills) / r.warmup_s.max(1e-9),
        r.warmup_errors
    );
    println!();
    println!(
        "open loop ({} requests, latency from scheduled send to response):",
        o.scheduled
    );
    println!(
        "{:>7} {:>10} {:>10} {:>8} {:>8} {:>8} {:>9} {:>7} {:>6}",
        "tills", "target/s", "achieved/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors", "late"
    );
    println!(
        "{:>7} {:>10.0} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>9.2} {:>7} {:>6}",
        r.tills,
        o.target_rps,
        o.achieved_rps,
        o.latency.p50_ms,
        o.latency.p90_ms,
        o.latency.p99_ms,
        o.latency.max_ms,
        o.errors,
        o.late_sends
    );
    println!(
        "  p99.9 {:.2} ms, mean {:.2} ms; server-side mean per request {}; waits for an in-flight slot {}; max send lag {:.2} ms; unexpected full assignment lists {}",
        o.latency.p999_ms,
        o.latency.mean_ms,
        fmt_ms(o.server_mean_ms),
        o.limit_waits,
        o.max_send_lag_ms,
        o.full_lists
    );
    if let Some(c) = &r.closed_loop {
        println!();
        println!(
            "closed loop ({} workers back to back, {:.1} s, latency from send to response):",
            c.workers, c.seconds
        );
        println!(
            "{:>10} {:>8} {:>8} {:>8} {:>9} {:>7}",
            "max req/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors"
        );
        println!(
            "{:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>9.2} {:>7}",
            c.max_rps,
            c.latency.p50_ms,
            c.latency.p90_ms,
            c.latency.p99_ms,
            c.latency.max_ms,
            c.errors
        );
        println!(
            "  server-side mean per request {}",
            fmt_ms(c.server_mean_ms)
        );
    }
    let v = &r.verdict;
    println!();
    println!(
        "DESIGN target: >= {:.0} req/s with p99 < {:.0} ms on 2 cores (this run: {} cores, load generator on the same cores)",
        v.target_rps, v.target_p99_ms, r.cores
    );
    println!(
        "  throughput: {:.0} req/s {} -> {}",
        v.throughput_rps,
        if r.closed_loop.is_some() {
            "(closed-loop max)"
        } else {
            "(open loop; closed loop skipped)"
        },
        if v.throughput_ok { "ok" } else { "short" }
    );
    println!(
        "  latency: p99 {:.2} ms at {:.0} req/s open loop{} -> {}",
        v.p99_ms,
        v.p99_at_rps,
        if v.p99_at_rps < v.target_rps {
            " (below the 700 req/s of the target: use --rate 700 to check it there)"
        } else {
            ""
        },
        if v.latency_ok { "ok" } else { "over" }
    );
    println!("  {}", if v.pass { "PASS" } else { "MISS" });
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), |ms| format!("{ms:.2} ms"))
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
}
