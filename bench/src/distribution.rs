//! `tillswarm-bench distribution`: how long until every till of a store holds a
//! verified package, and how many bytes crossed each store's WAN link, against
//! the baseline where every till downloads the package by plain HTTP over the
//! same link, in the same run.
//!
//! In-process (default): a real coordinator on 127.0.0.1 and every till as a
//! real node agent (store swarm over libp2p on loopback, chunk verification,
//! staging) in this process. Simulated, and named so: each store's WAN link is
//! one token bucket its tills share (`tillswarm_node::sim::SimulatedWanLink`),
//! each till's LAN link is its `lan_rate_limit_kbit` cap, and peers are
//! found by a simulated LAN (`SimulatedLan`) instead of mDNS. The baseline's HTTP downloads go
//! through the same store buckets. Memory is measured for the whole process
//! (coordinator + every node + baseline), an upper bound for one node.
//!
//! `--netns` (root): real `tillswarm node` processes in network namespaces with
//! `tc tbf` shaping, by `bench/scripts/netns-distribution.sh`; there each node's
//! own peak RSS and CPU are measured.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, ensure};
use clap::Args;
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tillswarm_node::sim::SimulatedWanLink;
use tillswarm_protocol::PackageId;

mod harness;

pub(crate) use harness::{InProcess, Shape};

/// Options of `tillswarm-bench distribution`.
#[derive(Debug, Args)]
pub struct DistributionArgs {
    /// Stores (each with its own WAN link).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=20))]
    stores: u32,
    /// Tills per store.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=64))]
    tills: u32,
    /// Package size in MiB.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    size_mb: u64,
    /// WAN bandwidth of each store, Mbit/s.
    #[arg(long, default_value_t = 20.0)]
    wan_mbit: f64,
    /// LAN bandwidth of each till's link, Mbit/s.
    #[arg(long, default_value_t = 1000.0)]
    lan_mbit: f64,
    /// Skip the plain-HTTP baseline (it takes tills x the swarm's time).
    #[arg(long)]
    skip_http: bool,
    /// Real node processes in network namespaces (root; see the module doc).
    #[arg(long)]
    netns: bool,
    /// With `--netns`: the store bridge floods no multicast, so mDNS finds
    /// nobody and the tills must find each other through the coordinator.
    #[arg(long, requires = "netns")]
    no_multicast: bool,
    /// With `--netns`: till 1 alone takes the package over the WAN first;
    /// the measured task then has it serve every other till at once (a next
    /// rollout wave), and its peak RSS is reported on its own.
    #[arg(long, requires = "netns")]
    seed_first: bool,
    /// The `tillswarm` binary for `--netns` (default: next to this bench).
    #[arg(long)]
    tillswarm: Option<PathBuf>,
    /// Also write the figures to this file as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Runs the benchmark.
pub async fn run(args: DistributionArgs) -> anyhow::Result<()> {
    ensure!(
        args.wan_mbit > 0.0 && args.wan_mbit <= 100_000.0,
        "--wan-mbit must be above 0"
    );
    ensure!(
        args.lan_mbit > 0.0 && args.lan_mbit <= 100_000.0,
        "--lan-mbit must be above 0"
    );
    if args.netns {
        return run_netns(&args);
    }
    let report = run_in_process(&args).await?;
    report.print();
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The figures (JSON as the issue specifies, plus detail).
#[derive(Debug, Serialize)]
struct Report {
    mode: &'static str,
    package_size: u64,
    stores: u32,
    tills_per_store: u32,
    wan_mbit: f64,
    lan_mbit: f64,
    lower_bound_s: f64,
    swarm: SwarmFigures,
    http: Option<HttpFigures>,
}

#[derive(Debug, Serialize)]
struct SwarmFigures {
    /// Task creation until every till of every store held the verified package.
    seconds: f64,
    /// The slowest store's time / the lower bound.
    time_ratio: f64,
    /// Per store: task creation until its last till held the package.
    store_seconds: Vec<f64>,
    /// The largest WAN bytes of any store.
    wan_bytes_per_store: u64,
    /// WAN bytes per store / package size (the largest).
    wan_ratio: f64,
    /// Bytes the tills took from each other.
    lan_bytes: u64,
    /// Peak RSS of this whole process (coordinator + every node); an upper
    /// bound for one node.
    peak_rss_bytes: u64,
    /// What `peak_rss_bytes` covers.
    rss_scope: &'static str,
    /// CPU seconds of this process during the swarm run.
    cpu_seconds: f64,
}

#[derive(Debug, Serialize)]
struct HttpFigures {
    /// Until every till of every store downloaded the package.
    seconds: f64,
    /// The slowest store's time / the lower bound.
    time_ratio: f64,
    /// WAN bytes of one store (every till downloads the whole package).
    wan_bytes_per_store: u64,
    /// HTTP time / swarm time.
    speedup_of_swarm: f64,
}

impl Report {
    fn print(&self) {
        let gib = |b: u64| b as f64 / (1u64 << 20) as f64;
        println!();
        println!(
            "distribution: {} store(s) x {} tills, package {:.1} MiB, WAN {} Mbit/s per store, LAN {} Mbit/s per till ({})",
            self.stores,
            self.tills_per_store,
            gib(self.package_size),
            self.wan_mbit,
            self.lan_mbit,
            self.mode
        );
        println!(
            "lower bound (one copy over the WAN): {:.2} s",
            self.lower_bound_s
        );
        println!(
            "{:<10} {:>10} {:>12} {:>16} {:>10}",
            "", "seconds", "x bound", "WAN bytes/store", "x size"
        );
        println!(
            "{:<10} {:>10.2} {:>12.3} {:>16} {:>10.3}",
            "swarm",
            self.swarm.seconds,
            self.swarm.time_ratio,
            self.swarm.wan_bytes_per_store,
            self.swarm.wan_ratio
        );
        if let Some(h) = &self.http {
            println!(
                "{:<10} {:>10.2} {:>12.3} {:>16} {:>10.3}",
                "http",
                h.seconds,
                h.time_ratio,
                h.wan_bytes_per_store,
                h.wan_bytes_per_store as f64 / self.package_size as f64
            );
            println!(
                "swarm is {:.1}x faster than every till downloading by HTTP (target >= 18x at 20 tills)",
                h.speedup_of_swarm
            );
        }
        println!(
            "targets: WAN <= 1.02x size: {:.3}x; time <= 1.15x bound: {:.3}x",
            self.swarm.wan_ratio, self.swarm.time_ratio
        );
        println!(
            "peak RSS {:.1} MiB ({}); CPU {:.1} s during the swarm run; LAN {:.1} MiB",
            gib(self.swarm.peak_rss_bytes),
            self.swarm.rss_scope,
            self.swarm.cpu_seconds,
            gib(self.swarm.lan_bytes)
        );
    }
}

async fn run_in_process(args: &DistributionArgs) -> anyhow::Result<Report> {
    let bench = InProcess::start(&Shape {
        stores: args.stores,
        tills: args.tills,
        wan_mbit: args.wan_mbit,
        lan_mbit: args.lan_mbit,
        max_package_bytes: (args.size_mb + 64) << 20,
    })
    .await?;
    let pkg_path = bench.dir.path().join("package.tar");
    tillswarm_fixtures::write_large_package(&pkg_path, "2.0.0", args.size_mb << 20)
        .context("writing the package")?;
    let size = std::fs::metadata(&pkg_path)?.len();
    let package = bench.upload(&pkg_path, "2.0.0").await?;
    let lower_bound_s = size as f64 * 8.0 / (args.wan_mbit * 1e6);
    let run = bench.distribute(&package, lower_bound_s, "swarm").await?;
    let links = bench.links.clone();
    let wan_max = run.wan_per_store.iter().copied().max().unwrap_or(0);
    let swarm = SwarmFigures {
        seconds: run.seconds,
        time_ratio: run.seconds / lower_bound_s,
        store_seconds: run.store_seconds,
        wan_bytes_per_store: wan_max,
        wan_ratio: wan_max as f64 / size as f64,
        lan_bytes: run.lan_bytes,
        peak_rss_bytes: peak_rss_bytes().unwrap_or(0),
        rss_scope: "whole bench process: coordinator and every node",
        cpu_seconds: run.cpu_seconds,
    };
    let dir = bench.stop().await;

    let http = if args.skip_http {
        None
    } else {
        let secs = http_baseline(&pkg_path, &package.package_id, &links, args.tills).await?;
        Some(HttpFigures {
            seconds: secs,
            time_ratio: secs / lower_bound_s,
            wan_bytes_per_store: size * u64::from(args.tills),
            speedup_of_swarm: secs / run.seconds,
        })
    };
    drop(dir);
    Ok(Report {
        mode: "in-process",
        package_size: size,
        stores: args.stores,
        tills_per_store: args.tills,
        wan_mbit: args.wan_mbit,
        lan_mbit: args.lan_mbit,
        lower_bound_s,
        swarm,
        http,
    })
}

/// The baseline: every till GETs the whole package from a plain HTTP server,
/// through its store's simulated WAN link, all at once; each download is
/// checked against the package id. Returns seconds until the last one ended.
async fn http_baseline(
    path: &Path,
    id: &PackageId,
    links: &[Arc<SimulatedWanLink>],
    tills: u32,
) -> anyhow::Result<f64> {
    use warp::Filter;
    let bytes = bytes::Bytes::from(std::fs::read(path)?);
    let size = bytes.len() as u64;
    let route = warp::path!("package.tar").map(move || warp::http::Response::new(bytes.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        warp::serve(route)
            .incoming(listener)
            .graceful(async {
                let _ = stopped.await;
            })
            .run(),
    );
    let client = tillswarm_node::tls::http_client(None)?.build()?;
    let bar = progress_bar(size * links.len() as u64 * u64::from(tills), "http ");
    let started = Instant::now();
    let mut downloads = Vec::new();
    for link in links {
        for _ in 0..tills {
            let (client, link, bar) = (client.clone(), link.clone(), bar.clone());
            let url = format!("http://{addr}/package.tar");
            downloads.push(tokio::spawn(async move {
                let resp = client.get(url).send().await?.error_for_status()?;
                let mut stream = resp.bytes_stream();
                let mut hasher = blake3::Hasher::new();
                while let Some(piece) = stream.next().await {
                    let piece = piece?;
                    link.bucket().acquire(piece.len()).await;
                    hasher.update(&piece);
                    bar.inc(piece.len() as u64);
                }
                anyhow::Ok(*hasher.finalize().as_bytes())
            }));
        }
    }
    for d in downloads {
        let hash = d.await??;
        ensure!(&hash == id.as_bytes(), "an HTTP download did not match");
    }
    let secs = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let _ = stop.send(());
    let _ = server.await;
    Ok(secs)
}

/// A body stream over a file, read 1 MiB at a time.
pub(crate) fn tokio_util_free_stream(
    file: tokio::fs::File,
) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + Unpin {
    use tokio::io::AsyncReadExt;
    Box::pin(futures_util::stream::unfold(file, |mut f| async move {
        let mut buf = vec![0u8; 1 << 20];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    }))
}

pub(crate) fn progress_bar(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{what} [{{elapsed_precise}}] {{bar:40}} {{bytes}}/{{total_bytes}} ({{bytes_per_sec}})"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// CPU seconds (user + system) of this process so far.
pub(crate) fn cpu_seconds() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_SELF)
        .map(|u| {
            let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
            t(u.user_time()) + t(u.system_time())
        })
        .unwrap_or(0.0)
}

/// This process's peak resident set (VmHWM), in bytes.
pub(crate) fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// `--netns`: runs `bench/scripts/netns-distribution.sh` with the real binary.
fn run_netns(args: &DistributionArgs) -> anyhow::Result<()> {
    ensure!(
        args.stores == 1,
        "--netns builds one store (its figures are per store)"
    );
    let bin = match &args.tillswarm {
        Some(b) => b.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("the bench's folder")?
            .join("tillswarm"),
    };
    ensure!(
        bin.is_file(),
        "{} not found: build it (cargo build --release --bin tillswarm) or pass --tillswarm",
        bin.display()
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/netns-distribution.sh");
    let mut cmd = std::process::Command::new("bash");
    cmd.arg(&script)
        .arg(&bin)
        .args(["--tills", &args.tills.to_string()])
        .args(["--size-mb", &args.size_mb.to_string()])
        .args(["--wan-mbit", &args.wan_mbit.to_string()])
        .args(["--lan-mbit", &args.lan_mbit.to_string()]);
    if let Some(j) = &args.json {
        cmd.arg("--json").arg(j);
    }
    if args.skip_http {
        cmd.arg("--skip-http");
    }
    if args.no_multicast {
        cmd.arg("--no-multicast");
    }
    if args.seed_first {
        cmd.arg("--seed-first");
    }
    let status = cmd
        .status()
        .with_context(|| format!("running {}", script.display()))?;
    ensure!(status.success(), "{} failed: {status}", script.display());
    Ok(())
}
