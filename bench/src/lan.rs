//! `tillswarm-bench lan`: the peer-to-peer transfer between two tills of a
//! store, against a raw TCP copy of the same bytes measured in the same run.
//!
//! **Setup (not timed).** A package-like file of `--size-mb` MiB of seeded ChaCha
//! noise (incompressible) is written to a temporary folder one MiB at a time,
//! chunked with the product's chunker ([`tillswarm_protocol::chunking::chunk_reader_with`],
//! as the coordinator ingests a package), and every chunk is put into peer A's
//! [`ChunkStore`]. The [`Manifest`] is built from the chunk list; it needs no
//! signature because the download driver takes an already verified `Manifest`.
//!
//! **Swarm.** Two store swarms ([`tillswarm_node::swarm::start`]: TCP, chain PSK,
//! noise, yamux, the capped postcard request-response codec) with the same key,
//! chain and store. B dials A and A tracks the package; once B's view shows A
//! holding every chunk, B runs the product's download driver [`fetch_package`]
//! (planner limits as on a till unless overridden) with a WAN source that always
//! fails: a WAN attempt makes the run an error. B's chunk store verifies (blake3)
//! and writes every chunk (temp file, batched fdatasync, rename) exactly as on a till; its
//! store is fresh in every run. Timed: from the call of `fetch_package` until it
//! returns with every chunk stored.
//!
//! **Baseline: raw TCP.** The same file over one TCP connection: the sender reads
//! it in 1 MiB blocks and writes them (plain read/write, no sendfile), the
//! receiver reads into a 1 MiB buffer and **discards** the bytes. It is the
//! link's ceiling: no framing, encryption, hashing or disk writes. Timed from
//! before the connect until the receiver has seen the end of the stream.
//!
//! B's stores of all runs are removed only at the end, so no timed run pays for
//! the deletions of the one before (ext4 scans recently freed inodes when it
//! allocates new ones, which shows in profiles of the chunk writes).
//!
//! **Reference: B's disk work alone.** Every chunk read from A's store and
//! stored into a fresh store through its writer thread (blake3, write, batched
//! fdatasync, rename), as many at once as the driver keeps in flight, with no
//! network: the floor the swarm cannot beat.
//!
//! **CPU.** `getrusage(RUSAGE_SELF)` user + system seconds over the timed span
//! ([`cpu_seconds`]). On loopback both peers (and both TCP ends) run in this one
//! process, so its CPU figures cover sender and receiver together. With `--netns`
//! each peer is its own process and each end's CPU is measured on its own.
//!
//! **`--netns`** (root only): two network namespaces joined by a veth pair,
//! addresses 10.77.0.1/24 and 10.77.0.2/24 that exist only inside them;
//! `--link-mbit N` shapes its A -> B direction with tbf (e.g. a gigabit LAN). The bench
//! re-executes itself inside them (`ip netns exec NS <this exe> lan-peer ...`) as
//! peer A (swarm serve, TCP send) and peer B (swarm fetch, TCP receive); the
//! children talk to the bench in lines on stdin/stdout (`READY`, `START`,
//! `RESULT <json>`, `cpu` / `CPU <s>`) and exit when their stdin closes. The
//! namespaces are deleted on exit, after an error and on Ctrl-C/SIGTERM, and
//! left-overs of a killed run are removed at the next start.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tillswarm_node::chunks::{ChunkStore, Wire};
use tillswarm_node::stage::{ChunkSource, Origin, Progress};
use tillswarm_node::swarm::fetch::{Expected, fetch_package};
use tillswarm_node::swarm::planner::Limits;
use tillswarm_node::swarm::{StoreNet, SwarmConfig};
use tillswarm_protocol::archive::UploadFormat;
use tillswarm_protocol::manifest::{ChunkRef, MAX_PACKAGE_SIZE, Manifest, Upload};
use tillswarm_protocol::{ChainId, Chunker, DeviceId, StoreId, Version};
use tokio::sync::watch;

pub mod netns;
pub mod report;

use netns::{Namespaces, swarm_netns, tcp_netns};
pub use netns::{PeerArgs, peer_main};
pub use report::{Report, print};
use report::{report_run, verdict};

/// DESIGN 9: LAN throughput between two tills of at least this many Gbit/s ...
pub const TARGET_GBIT_S: f64 = 1.0;
/// ... using at most this many cores (per till).
pub const TARGET_CORES: f64 = 1.0;
/// The issue: the swarm moves at least this fraction of raw TCP's throughput.
pub const TARGET_RATIO: f64 = 0.7;

const MIB: u64 = 1 << 20;
/// "GB" in CPU seconds per GB: 10^9 bytes.
const GB: f64 = 1e9;
/// Read/write block of the TCP baseline.
const BLOCK: usize = 1 << 20;
/// Seed of the package bytes (block `i` uses `SEED ^ i`).
const SEED: u64 = 0x1A7;
/// The chain key both peers share.
const PSK: [u8; 32] = [0x42; 32];
/// Longest wait for B to see A's holdings, or for a child to start.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Network-namespace names start with this (stale ones are removed by it).
const NS_PREFIX: &str = "tsblan-";
/// Addresses of peers A and B inside the namespaces.
const NS_ADDR_A: &str = "10.77.0.1";
const NS_ADDR_B: &str = "10.77.0.2";

/// What to run.
#[derive(Debug, Clone)]
pub struct Params {
    /// Package size in MiB.
    pub size_mb: u64,
    /// Timed runs of each contender (the fastest is reported).
    pub runs: u32,
    /// Across a veth pair between two network namespaces instead of loopback.
    pub netns: bool,
    /// Overrides the planner's `lan_in_flight` (most LAN fetches at once).
    pub lan_in_flight: Option<usize>,
    /// Overrides the planner's `per_peer_in_flight` (most requests to one peer).
    pub per_peer_in_flight: Option<usize>,
    /// A's `max_uploads` (chunk uploads served at once; the node's default is 4).
    pub max_uploads: usize,
    /// With `--netns`: shape the A -> B direction of the veth to this many
    /// Mbit/s (tbf), e.g. 1000 for a gigabit store LAN.
    pub link_mbit: Option<u32>,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            size_mb: 1024,
            runs: 3,
            netns: false,
            lan_in_flight: None,
            per_peer_in_flight: None,
            max_uploads: 4,
            link_mbit: None,
        }
    }
}

impl Params {
    /// Refuses values the bench cannot run with.
    pub fn check(&self) -> anyhow::Result<()> {
        ensure!(self.size_mb >= 1, "--size-mb must be at least 1");
        ensure!(
            self.size_mb.saturating_mul(MIB) <= MAX_PACKAGE_SIZE,
            "--size-mb is at most {} (the manifest's package size limit)",
            MAX_PACKAGE_SIZE / MIB
        );
        ensure!(self.runs >= 1, "--runs must be at least 1");
        ensure!(
            self.lan_in_flight != Some(0),
            "--lan-in-flight must be at least 1"
        );
        ensure!(
            self.per_peer_in_flight != Some(0),
            "--per-peer-in-flight must be at least 1"
        );
        ensure!(self.max_uploads >= 1, "--max-uploads must be at least 1");
        if let Some(m) = self.link_mbit {
            ensure!(self.netns, "--link-mbit shapes the veth: it needs --netns");
            ensure!(m >= 1, "--link-mbit must be at least 1");
        }
        Ok(())
    }

    /// The planner limits of B's download: a till's, with the overrides.
    pub fn limits(&self) -> Limits {
        let till = Limits::default();
        Limits {
            lan_in_flight: self.lan_in_flight.unwrap_or(till.lan_in_flight),
            per_peer_in_flight: self.per_peer_in_flight.unwrap_or(till.per_peer_in_flight),
            ..till
        }
    }
}

/// One timed transfer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Measure {
    /// Wall time, s.
    pub seconds: f64,
    /// Bytes moved.
    pub bytes: u64,
    /// CPU seconds (user + system) of both ends together.
    pub cpu_s: f64,
    /// CPU seconds of the sending end (A), when measured apart.
    pub cpu_sender_s: Option<f64>,
    /// CPU seconds of the receiving end (B), when measured apart.
    pub cpu_receiver_s: Option<f64>,
}

impl Measure {
    fn secs(&self) -> f64 {
        self.seconds.max(1e-9)
    }

    /// Throughput in MiB/s.
    pub fn mib_per_s(&self) -> f64 {
        self.bytes as f64 / MIB as f64 / self.secs()
    }

    /// Throughput in Gbit/s (10^9 bits).
    pub fn gbit_per_s(&self) -> f64 {
        self.bytes as f64 * 8.0 / 1e9 / self.secs()
    }

    /// CPU seconds per GB (10^9 bytes) moved, both ends together.
    pub fn cpu_s_per_gb(&self) -> f64 {
        self.cpu_s / (self.bytes as f64 / GB).max(1e-12)
    }

    /// Cores kept busy on average, both ends together.
    pub fn cores(&self) -> f64 {
        self.cpu_s / self.secs()
    }

    /// Cores kept busy by the busier end, when the ends were measured apart.
    pub fn busiest_end_cores(&self) -> Option<f64> {
        Some(self.cpu_sender_s?.max(self.cpu_receiver_s?) / self.secs())
    }
}

/// CPU seconds (user + system) this process has used so far, all threads.
pub fn cpu_seconds() -> anyhow::Result<f64> {
    use nix::sys::resource::{UsageWho, getrusage};
    use nix::sys::time::TimeValLike;
    let u = getrusage(UsageWho::RUSAGE_SELF).context("getrusage")?;
    Ok(micros_to_seconds(
        u.user_time().num_microseconds() + u.system_time().num_microseconds(),
    ))
}

fn micros_to_seconds(us: i64) -> f64 {
    us as f64 / 1e6
}

/// Whether this process runs as root (needed for `--netns`).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The package, its manifest and A's store, in a temporary folder.
struct Work {
    dir: tempfile::TempDir,
    manifest: Manifest,
    setup_s: f64,
}

impl Work {
    fn prepare(size_mb: u64) -> anyhow::Result<Self> {
        let start = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("tillswarm-bench-lan-")
            .tempdir()?;
        let file = package_path(dir.path());
        write_package(&file, size_mb * MIB)?;
        let store_a = home_store(&home_a(dir.path()))?;
        let chunked = tillswarm_protocol::chunking::chunk_reader_with(
            Chunker::CURRENT,
            std::io::BufReader::with_capacity(BLOCK, File::open(&file)?),
            |info, data| store_a.put(&info.hash, data).map_err(std::io::Error::other),
        )
        .context("chunking the package into A's store")?;
        let version: Version = "1.0.0".parse()?;
        // Raw noise (incompressible: every chunk raw), never staged: its
        // unpacked size is its size.
        let upload = Upload {
            id: chunked.package_id,
            size: chunked.size,
            format: UploadFormat::Tar,
        };
        let raw = vec![0; chunked.chunks.len()];
        let manifest = Manifest::new_content(
            "bench-lan",
            version,
            &chunked,
            Chunker::CURRENT,
            &raw,
            0,
            chunked.size,
            upload,
        )?;
        std::fs::write(
            manifest_path(dir.path()),
            serde_json::to_vec(&manifest).context("encoding the manifest")?,
        )?;
        Ok(Self {
            dir,
            manifest,
            setup_s: start.elapsed().as_secs_f64(),
        })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

fn package_path(work: &Path) -> PathBuf {
    work.join("package.bin")
}
fn manifest_path(work: &Path) -> PathBuf {
    work.join("manifest.json")
}
fn home_a(work: &Path) -> PathBuf {
    work.join("a")
}
fn home_b(work: &Path, run: u32) -> PathBuf {
    work.join(format!("b{run}"))
}

fn load_manifest(work: &Path) -> anyhow::Result<Manifest> {
    let path = manifest_path(work);
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(serde_json::from_slice(&bytes)?)
}

/// Writes `size` bytes of seeded noise, one MiB at a time (never all in memory).
fn write_package(path: &Path, size: u64) -> anyhow::Result<()> {
    let mut f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut left = size;
    let mut block = 0u64;
    while left > 0 {
        let n = left.min(MIB);
        f.write_all(&tillswarm_fixtures::noise(n as usize, SEED ^ block))?;
        left -= n;
        block += 1;
    }
    Ok(())
}

fn home_store(home: &Path) -> anyhow::Result<Arc<ChunkStore>> {
    Ok(Arc::new(ChunkStore::open(&home.join("chunks"))?))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    // As the node binary: a multi-thread runtime with a worker per core.
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// A running store swarm with its chunk store.
struct Peer {
    net: StoreNet,
    store: Arc<ChunkStore>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Peer {
    async fn start(
        home: &Path,
        listen: SocketAddr,
        device: u8,
        max_uploads: usize,
    ) -> anyhow::Result<Self> {
        let store = home_store(home)?;
        let key = tillswarm_node::swarm::load_or_create_key(home)?;
        let config = SwarmConfig {
            listen,
            psk: PSK,
            chain: ChainId::new("bench-chain")?,
            store: StoreId::new("bench-store")?,
            device: DeviceId::from_bytes([device; 16]),
            max_uploads,
            peer_subnets: Vec::new(),
            peer_ports: 1024..=65535,
        };
        let (stop, shutdown) = watch::channel(false);
        let (net, task) =
            tillswarm_node::swarm::start(config, key, store.clone(), shutdown).await?;
        Ok(Self {
            net,
            store,
            stop,
            task,
        })
    }

    async fn track(&self, manifest: &Manifest) -> anyhow::Result<()> {
        let hashes = manifest.chunks.iter().map(|c| c.hash).collect();
        self.net.track(manifest.package_id, hashes).await?;
        Ok(())
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// The coordinator of this bench: there is none. Counts the attempts.
#[derive(Default)]
struct NoWan {
    calls: AtomicU64,
}

impl ChunkSource for NoWan {
    fn fetch<'a>(
        &'a self,
        _chunk: &'a ChunkRef,
    ) -> BoxFuture<'a, tillswarm_node::Result<(Wire, Origin)>> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Box::pin(async {
            Err(tillswarm_node::Error::Coordinator(
                "the LAN bench has no WAN: every chunk must come from peer A".into(),
            ))
        })
    }
}

/// B's side of one swarm run.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Fetched {
    seconds: f64,
    cpu_s: f64,
    bytes: u64,
}

/// B downloads the whole package from A (peer id and multiaddr as text) with
/// the product's driver; `on_start` is called just before the clock starts.
async fn fetch_all(
    b: &Peer,
    manifest: &Manifest,
    a_peer: &str,
    a_addr: &str,
    limits: Limits,
    on_start: impl FnOnce(),
) -> anyhow::Result<Fetched> {
    let a_id = a_peer
        .parse()
        .with_context(|| format!("peer id {a_peer:?}"))?;
    let addr = a_addr
        .parse()
        .with_context(|| format!("multiaddr {a_addr:?}"))?;
    b.net.add_peer(a_id, vec![addr]).await?;
    b.track(manifest).await?;
    // Wait until B sees A holding every chunk, so the planner never has a chunk
    // that no peer holds (which it would send to the WAN).
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let held = b
            .net
            .view()
            .get(&a_id)
            .and_then(|p| p.holds.get(&manifest.package_id).map(|h| h.len()))
            .unwrap_or(0);
        if held == manifest.chunks.len() {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "B did not learn A's holdings within {READY_TIMEOUT:?} (it sees {held} of {} chunks)",
            manifest.chunks.len()
        );
        tokio::select! {
            _ = b.net.changed.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
    let wan = NoWan::default();
    on_start();
    let cpu0 = cpu_seconds()?;
    let t0 = Instant::now();
    let progress = fetch_package(
        manifest,
        &b.store,
        Some(&b.net),
        &wan,
        limits,
        &Expected::default(),
        None,
        Progress::default(),
        |_| {},
    )
    .await?;
    let seconds = t0.elapsed().as_secs_f64();
    let cpu_s = cpu_seconds()? - cpu0;
    let calls = wan.calls.load(Ordering::Relaxed);
    ensure!(
        calls == 0,
        "the download asked the WAN {calls} times: it must take every chunk from A"
    );
    ensure!(
        progress.bytes_done == manifest.size && progress.wan_bytes == 0,
        "the download ended at {} of {} bytes ({} over the WAN)",
        progress.bytes_done,
        manifest.size,
        progress.wan_bytes
    );
    let missing = manifest
        .chunks
        .iter()
        .filter(|c| !b.store.contains(&c.hash))
        .count();
    ensure!(missing == 0, "{missing} chunks missing from B's store");
    Ok(Fetched {
        seconds,
        cpu_s,
        bytes: progress.lan_bytes,
    })
}

/// The TCP sender: reads `file` in blocks and writes them to `to`.
fn tcp_send(file: &Path, to: SocketAddr) -> anyhow::Result<u64> {
    let mut f = File::open(file)?;
    let mut s = TcpStream::connect(to).with_context(|| format!("connecting to {to}"))?;
    s.set_nodelay(true)?;
    let mut buf = vec![0u8; BLOCK];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        s.write_all(&buf[..n])?;
        total += n as u64;
    }
    s.shutdown(std::net::Shutdown::Write)?;
    Ok(total)
}

/// One end of the TCP baseline, as a child reports it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct TcpEnd {
    /// From accept (receiver) or connect (sender) to the end.
    seconds: f64,
    cpu_s: f64,
    bytes: u64,
}

/// The TCP receiver: accepts one connection and reads it to the end,
/// discarding; timed (and CPU counted) from the accept.
fn tcp_receive(listener: &TcpListener) -> anyhow::Result<TcpEnd> {
    let (mut s, _) = listener.accept()?;
    let cpu0 = cpu_seconds()?;
    let t0 = Instant::now();
    let mut buf = vec![0u8; BLOCK];
    let mut bytes = 0u64;
    loop {
        match s.read(&mut buf)? {
            0 => break,
            n => bytes += n as u64,
        }
    }
    Ok(TcpEnd {
        seconds: t0.elapsed().as_secs_f64(),
        cpu_s: cpu_seconds()? - cpu0,
        bytes,
    })
}

/// Raw TCP over 127.0.0.1, both ends in this process.
fn tcp_loopback(work: &Work) -> anyhow::Result<Measure> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let file = package_path(work.path());
    let cpu0 = cpu_seconds()?;
    let t0 = Instant::now();
    let receiver = std::thread::spawn(move || tcp_receive(&listener));
    // If the send fails the receiver may wait forever: it is left behind.
    let sent = tcp_send(&file, addr)?;
    let received = receiver
        .join()
        .map_err(|_| anyhow!("the TCP receiver panicked"))??;
    let seconds = t0.elapsed().as_secs_f64();
    let cpu_s = cpu_seconds()? - cpu0;
    let size = work.manifest.size;
    ensure!(
        sent == size && received.bytes == size,
        "TCP moved {sent} / {} of {size} bytes",
        received.bytes
    );
    Ok(Measure {
        seconds,
        bytes: size,
        cpu_s,
        ..Measure::default()
    })
}

/// The swarm over 127.0.0.1, both peers in this process (one runtime).
fn swarm_loopback(
    rt: &tokio::runtime::Runtime,
    work: &Work,
    params: &Params,
    run: u32,
) -> anyhow::Result<Measure> {
    let home = home_b(work.path(), run);
    let listen: SocketAddr = "127.0.0.1:0".parse()?;
    let result = rt.block_on(async {
        let a = Peer::start(&home_a(work.path()), listen, 1, params.max_uploads).await?;
        a.track(&work.manifest).await?;
        let b = match Peer::start(&home, listen, 2, params.max_uploads).await {
            Ok(b) => b,
            Err(e) => {
                a.stop().await;
                return Err(e);
            }
        };
        let fetched = fetch_all(
            &b,
            &work.manifest,
            &a.net.peer_id.to_string(),
            &a.net.listen_addr.to_string(),
            params.limits(),
            || {},
        )
        .await;
        b.stop().await;
        a.stop().await;
        fetched
    });
    let f = result?;
    Ok(Measure {
        seconds: f.seconds,
        bytes: f.bytes,
        cpu_s: f.cpu_s,
        ..Measure::default()
    })
}

/// B's disk work alone: read each chunk from A's store and store it into a
/// fresh one through its writer thread, as many at once as B's driver keeps
/// in flight (so batches form as they do in a download).
fn store_only(work: &Work, run: u32) -> anyhow::Result<Measure> {
    use futures_util::StreamExt;
    let a = home_store(&home_a(work.path()))?;
    let home = work.path().join(format!("store-only-{run}"));
    let c = home_store(&home)?;
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    let parallel = Limits::default().lan_in_flight;
    let cpu0 = cpu_seconds()?;
    let t0 = Instant::now();
    rt.block_on(
        futures_util::stream::iter(&work.manifest.chunks)
            .map(|chunk| {
                let (a, c) = (&a, &c);
                async move {
                    let wire = a.get(&chunk.hash)?.context("a chunk is missing from A")?;
                    c.store(*chunk, wire).await?;
                    anyhow::Ok(())
                }
            })
            .buffer_unordered(parallel)
            .collect::<Vec<_>>(),
    )
    .into_iter()
    .collect::<anyhow::Result<Vec<()>>>()?;
    let m = Measure {
        seconds: t0.elapsed().as_secs_f64(),
        bytes: work.manifest.size,
        cpu_s: cpu_seconds()? - cpu0,
        ..Measure::default()
    };
    Ok(m)
}

fn best(runs: &[Measure]) -> Measure {
    runs.iter()
        .copied()
        .min_by(|a, b| a.seconds.total_cmp(&b.seconds))
        .unwrap_or_default()
}

/// Runs the benchmark; `None` when `--netns` was asked for without root.
pub fn run(params: &Params) -> anyhow::Result<Option<Report>> {
    params.check()?;
    if params.netns && !is_root() {
        eprintln!(
            "lan --netns: skipped, it needs root to create network namespaces (effective uid {}); run without --netns for loopback",
            nix::unistd::geteuid()
        );
        return Ok(None);
    }
    eprintln!(
        "preparing {} MiB of noise, chunking it into peer A's store ...",
        params.size_mb
    );
    let work = Work::prepare(params.size_mb)?;
    eprintln!(
        "  {} chunks in {:.1} s",
        work.manifest.chunks.len(),
        work.setup_s
    );
    let mut tcp_runs = Vec::new();
    let mut swarm_runs = Vec::new();
    let mut store_runs = Vec::new();
    let (mode, cpu_scope) = if params.netns {
        let ns = Namespaces::create(params.link_mbit)?;
        for run in 0..params.runs {
            tcp_runs.push(tcp_netns(&ns, &work)?);
            swarm_runs.push(swarm_netns(&ns, &work, params, run)?);
            store_runs.push(store_only(&work, run)?);
            report_run(run, params.runs, &tcp_runs, &swarm_runs, &store_runs);
        }
        (
            "netns",
            "each peer is its own process in its own network namespace; CPU is getrusage of each, summed (both ends); the core target is checked on the busier end",
        )
    } else {
        let rt = runtime()?;
        for run in 0..params.runs {
            tcp_runs.push(tcp_loopback(&work)?);
            swarm_runs.push(swarm_loopback(&rt, &work, params, run)?);
            store_runs.push(store_only(&work, run)?);
            report_run(run, params.runs, &tcp_runs, &swarm_runs, &store_runs);
        }
        rt.shutdown_timeout(Duration::from_secs(5));
        (
            "loopback",
            "both peers (and both TCP ends) run in this one process: CPU is its getrusage, sender and receiver together",
        )
    };
    let (tcp, swarm) = (best(&tcp_runs), best(&swarm_runs));
    let limits = params.limits();
    Ok(Some(Report {
        mode: mode.into(),
        cpu_scope: cpu_scope.into(),
        size_bytes: work.manifest.size,
        chunks: work.manifest.chunks.len(),
        runs: params.runs,
        cores_available: std::thread::available_parallelism().map_or(1, |n| n.get()),
        lan_in_flight: limits.lan_in_flight,
        per_peer_in_flight: limits.per_peer_in_flight,
        max_uploads: params.max_uploads,
        link_mbit: params.link_mbit,
        setup_s: work.setup_s,
        raw_tcp: tcp.into(),
        swarm: swarm.into(),
        store_only: best(&store_runs).into(),
        raw_tcp_runs: tcp_runs,
        swarm_runs,
        verdict: verdict(&swarm, &tcp),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_checked() {
        assert!(Params::default().check().is_ok());
        for bad in [
            Params {
                size_mb: 0,
                ..Params::default()
            },
            Params {
                size_mb: MAX_PACKAGE_SIZE / MIB + 1,
                ..Params::default()
            },
            Params {
                runs: 0,
                ..Params::default()
            },
            Params {
                per_peer_in_flight: Some(0),
                ..Params::default()
            },
            Params {
                max_uploads: 0,
                ..Params::default()
            },
            Params {
                link_mbit: Some(1000),
                ..Params::default()
            },
            Params {
                netns: true,
                link_mbit: Some(0),
                ..Params::default()
            },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
        let tuned = Params {
            per_peer_in_flight: Some(16),
            ..Params::default()
        }
        .limits();
        assert_eq!(tuned.per_peer_in_flight, 16);
        assert_eq!(tuned.lan_in_flight, Limits::default().lan_in_flight);
    }

    #[test]
    fn figures_follow_from_the_measure() {
        let m = Measure {
            seconds: 2.0,
            bytes: 1_000_000_000,
            cpu_s: 3.0,
            cpu_sender_s: Some(1.0),
            cpu_receiver_s: Some(2.0),
        };
        assert_eq!(m.gbit_per_s(), 4.0);
        assert!((m.mib_per_s() - 476.837).abs() < 0.001);
        assert_eq!(m.cpu_s_per_gb(), 3.0);
        assert_eq!(m.cores(), 1.5);
        assert_eq!(m.busiest_end_cores(), Some(1.0));
        assert_eq!(micros_to_seconds(3_250_000), 3.25);
        // CPU time only grows.
        let a = cpu_seconds().expect("getrusage");
        let b = cpu_seconds().expect("getrusage");
        assert!(a >= 0.0 && b >= a);
    }

    #[test]
    fn verdicts() {
        let tcp = Measure {
            seconds: 1.0,
            bytes: 1_000_000_000,
            ..Measure::default()
        };
        // 4 Gbit/s at 0.5 of TCP: a miss whatever the cores.
        let half = Measure {
            seconds: 2.0,
            cpu_s: 5.0,
            ..tcp
        };
        let v = verdict(&half, &tcp);
        assert!(v.throughput_ok && !v.ratio_ok);
        assert_eq!((v.cores_ok, v.pass), (None, Some(false)));
        // Both peers in one process above one core: undecided.
        let fast = Measure {
            seconds: 1.25,
            cpu_s: 2.0,
            ..tcp
        };
        assert_eq!(verdict(&fast, &tcp).pass, None);
        // Measured apart: decided on the busier end.
        let apart = Measure {
            cpu_sender_s: Some(0.5),
            cpu_receiver_s: Some(1.0),
            ..fast
        };
        assert_eq!(verdict(&apart, &tcp).pass, Some(true));
    }

    #[test]
    fn only_our_namespaces_count_as_stale() {
        assert_eq!(netns::stale_pid("tsblan-a-1234"), Some(1234));
        assert_eq!(netns::stale_pid("tsblan-b-77"), Some(77));
        assert_eq!(netns::stale_pid("tsblan-c-77"), None);
        assert_eq!(netns::stale_pid("store-till1"), None);
        assert_eq!(netns::stale_pid("tsblan-a-x"), None);
    }

    #[test]
    fn the_package_is_streamed_and_seeded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (p, q) = (dir.path().join("p"), dir.path().join("q"));
        write_package(&p, MIB + 64).expect("write");
        write_package(&q, MIB + 64).expect("write");
        let (a, b) = (std::fs::read(&p).expect("p"), std::fs::read(&q).expect("q"));
        assert_eq!(a.len() as u64, MIB + 64);
        assert_eq!(a, b);
        assert_ne!(a[..16], a[MIB as usize..MIB as usize + 16]);
    }
}
