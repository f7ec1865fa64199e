//! `tillswarm-bench`: benchmarks that print figures against a baseline measured in
//! the same run.
//!
//! - `chunking`: package ingestion (FastCDC + per-chunk blake3 + whole-file blake3)
//!   against plain blake3 hashing of the same file, in-process and with `b3sum`.
//! - `coordinator`: heartbeat load (open loop at the tills' poll rate, then closed
//!   loop for the maximum) against a real coordinator started in-process; see
//!   [`coordinator`].
//! - `distribution`: a store's tills getting a package through the swarm over a
//!   slow WAN link, against plain HTTP per till; see [`distribution`].
//! - `delta`: a store's tills going from N to N+1 of a package with scattered
//!   changes, against the new bytes' transfer time; see [`delta`].
//! - `lan`: a package moved between two tills by the store swarm (the product's
//!   download driver over libp2p) against a raw TCP copy of the same bytes, on
//!   loopback or (`--netns`, root) across a veth pair; see [`lan`].
//!
//! Micro-benchmarks with statistics live in `benches/` (criterion).

use std::fs::File;
use std::io::{BufReader, Write};

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};

mod chunk_sizes;
mod coordinator;
mod delta;
mod distribution;
mod lan;

#[derive(Debug, Parser)]
#[command(name = "tillswarm-bench", version, about = "tillswarm benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Time and WAN bytes until every till of a store holds a package, against
    /// every till downloading it by plain HTTP over the same link.
    Distribution(distribution::DistributionArgs),
    /// WAN bytes and time for a store holding version N to get N+1 (ten
    /// scattered changes making 10%), against the bound of N+1's new bytes.
    Delta(delta::DeltaArgs),
    /// Chunk+hash throughput of ingestion against plain blake3 on the same file.
    Chunking {
        /// Size of the generated input file in MiB.
        #[arg(long, default_value_t = 256)]
        size_mb: u64,
        /// Timed repetitions of each measurement (the best is reported).
        #[arg(long, default_value_t = 3)]
        runs: u32,
    },
    /// WAN bytes of a scattered 10% delta (ten regions) against the chunker's
    /// sizes, offline: which FastCDC min/avg/max keeps a delta small.
    ChunkSizes {
        /// Package sizes in MiB, e.g. 64,256.
        #[arg(long, value_delimiter = ',', default_values_t = [64u64, 256])]
        size_mb: Vec<u64>,
        /// Chunker settings as MIN/AVG/MAX in KiB.
        #[arg(long, value_delimiter = ',', default_values_t = ["16/64/256".to_string(), "32/128/512".to_string(), "64/256/1024".to_string(), "256/1024/4096".to_string()])]
        sizes: Vec<String>,
        /// Also write the figures to this file as JSON.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// Heartbeat latency and throughput of a real coordinator on 127.0.0.1.
    Coordinator {
        /// Tills in the chain (each polls once per interval).
        #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        tills: u32,
        /// Seconds between two heartbeats of one till; the open-loop rate is
        /// tills / interval.
        #[arg(long, default_value_t = 30.0)]
        interval_s: f64,
        /// Open-loop rate in req/s, instead of tills / interval.
        #[arg(long)]
        rate: Option<f64>,
        /// Seconds of the open-loop phase.
        #[arg(long, default_value_t = 20.0)]
        duration_s: f64,
        /// Tills per store.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
        stores_of: u32,
        /// Most open-loop requests in flight at once.
        #[arg(long, default_value_t = 512)]
        max_in_flight: usize,
        /// Concurrent workers of the closed-loop phase (0 skips it).
        #[arg(long, default_value_t = 64)]
        closed_workers: usize,
        /// Seconds of the closed-loop phase.
        #[arg(long, default_value_t = 5.0)]
        closed_s: f64,
        /// Worker threads of the coordinator's tokio runtime.
        #[arg(long, default_value_t = 2)]
        server_threads: usize,
        /// The coordinator's database: `sqlite` (a file in a temporary
        /// folder) or `postgres://USER:PASSWORD@HOST:PORT/DBNAME` (a schema
        /// of the bench's own, dropped at the end).
        #[arg(long, default_value = "sqlite")]
        database: tillswarm_coordinator::db::Database,
        /// Worker threads of the load generator's tokio runtime.
        #[arg(long, default_value_t = 2)]
        client_threads: usize,
        /// Create a Download task for All this many seconds into the open
        /// loop and follow every till until it holds it (the duration must
        /// cover two poll intervals after it).
        #[arg(long)]
        activate_after_s: Option<f64>,
        /// Also write the figures to this file as JSON.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// Store-swarm transfer between two tills against raw TCP on the same link.
    Lan {
        /// Size of the package in MiB.
        #[arg(long, default_value_t = 1024)]
        size_mb: u64,
        /// Timed runs of each contender (the fastest is reported).
        #[arg(long, default_value_t = 3)]
        runs: u32,
        /// Across a veth pair between two network namespaces the bench creates
        /// (root only; skipped otherwise) instead of loopback in one process.
        #[arg(long)]
        netns: bool,
        /// B's planner limit on LAN fetches in flight (default: a till's).
        #[arg(long)]
        lan_in_flight: Option<usize>,
        /// B's planner limit on requests in flight to one peer (default: a till's).
        #[arg(long)]
        per_peer_in_flight: Option<usize>,
        /// Chunk uploads A serves at once (the node's default is 4).
        #[arg(long, default_value_t = 4)]
        max_uploads: usize,
        /// With --netns: shape the link A -> B to this many Mbit/s (tbf), e.g.
        /// 1000 for a gigabit store LAN.
        #[arg(long)]
        link_mbit: Option<u32>,
        /// Also write the figures to this file as JSON.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// One peer of `lan --netns`, run by the bench inside a network namespace.
    #[command(hide = true)]
    LanPeer(lan::PeerArgs),
}

fn main() -> anyhow::Result<()> {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    match Cli::parse().command {
        BenchCommand::Chunking { size_mb, runs } => chunking(size_mb, runs.max(1)),
        BenchCommand::ChunkSizes {
            size_mb,
            sizes,
            json,
        } => {
            let settings = sizes
                .iter()
                .map(|s| s.parse::<chunk_sizes::Sizes>().map_err(anyhow::Error::msg))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let mut reports = Vec::new();
            for mb in size_mb {
                anyhow::ensure!((1..=4096).contains(&mb), "--size-mb must be 1..4096");
                let (old, new, changed) = chunk_sizes::pair(mb << 20)?;
                let report = chunk_sizes::measure(&old, &new, changed, &settings);
                chunk_sizes::print(&report);
                reports.push(report);
            }
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_vec_pretty(&reports)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            Ok(())
        }
        BenchCommand::Coordinator {
            tills,
            interval_s,
            rate,
            duration_s,
            stores_of,
            max_in_flight,
            closed_workers,
            closed_s,
            server_threads,
            database,
            client_threads,
            activate_after_s,
            json,
        } => {
            let report = coordinator::run(&coordinator::Params {
                tills,
                interval_s,
                rate,
                duration_s,
                stores_of,
                max_in_flight,
                closed_workers,
                closed_s,
                server_threads,
                database,
                client_threads,
                activate_after_s,
            })?;
            coordinator::print(&report);
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            Ok(())
        }
        BenchCommand::Lan {
            size_mb,
            runs,
            netns,
            lan_in_flight,
            per_peer_in_flight,
            max_uploads,
            link_mbit,
            json,
        } => {
            let params = lan::Params {
                size_mb,
                runs,
                netns,
                lan_in_flight,
                per_peer_in_flight,
                max_uploads,
                link_mbit,
            };
            let Some(report) = lan::run(&params)? else {
                return Ok(());
            };
            lan::print(&report);
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            Ok(())
        }
        BenchCommand::LanPeer(args) => lan::peer_main(args),
        BenchCommand::Distribution(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(distribution::run(args)),
        BenchCommand::Delta(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(delta::run(args)),
    }
}

fn best_of(runs: u32, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<Duration> {
    let mut best = Duration::MAX;
    for _ in 0..runs {
        let start = Instant::now();
        f()?;
        best = best.min(start.elapsed());
    }
    Ok(best)
}

fn chunking(size_mb: u64, runs: u32) -> anyhow::Result<()> {
    let dir = tempdir()?;
    let path = dir.join("input.bin");
    let size = size_mb * 1024 * 1024;
    {
        let mut f = File::create(&path)?;
        for i in 0..size_mb {
            f.write_all(&tillswarm_fixtures::noise(1024 * 1024, 0xB3 ^ i))?;
        }
    }
    // Warm the page cache so every contender reads from memory.
    std::fs::read(&path)?;

    let mut rows: Vec<(String, Duration)> = Vec::new();
    let plain = best_of(runs, || {
        let mut hasher = blake3::Hasher::new();
        std::io::copy(
            &mut BufReader::with_capacity(64 * 1024, File::open(&path)?),
            &mut hasher,
        )?;
        std::hint::black_box(hasher.finalize());
        Ok(())
    })?;
    rows.push(("blake3 Hasher, 1 thread (baseline)".into(), plain));
    for (label, args) in [
        ("b3sum --num-threads 1", vec!["--num-threads", "1"]),
        ("b3sum (all cores)", vec![]),
    ] {
        match Command::new("b3sum").arg("--version").output() {
            Ok(_) => {
                let t = best_of(runs, || {
                    let out = Command::new("b3sum").args(&args).arg(&path).output()?;
                    anyhow::ensure!(out.status.success(), "b3sum failed");
                    Ok(())
                })?;
                rows.push((label.into(), t));
            }
            Err(_) => eprintln!("note: b3sum not installed; skipping the {label} row"),
        }
    }
    let ours = best_of(runs, || {
        let f = tillswarm_protocol::chunk_reader(
            tillswarm_protocol::Chunker::CURRENT,
            BufReader::with_capacity(1 << 20, File::open(&path)?),
        )?;
        std::hint::black_box(f.chunks.len());
        Ok(())
    })?;
    rows.push(("tillswarm chunk + hash (ingest)".into(), ours));

    println!("input: {size_mb} MiB of pseudo-random bytes, page-cached; best of {runs} runs");
    println!(
        "{:<38} {:>10} {:>12} {:>14}",
        "contender", "seconds", "MiB/s", "vs baseline"
    );
    for (label, t) in &rows {
        let mibs = size as f64 / 1048576.0 / t.as_secs_f64();
        let ratio = plain.as_secs_f64() / t.as_secs_f64();
        println!(
            "{label:<38} {:>10.3} {mibs:>12.0} {ratio:>13.2}x",
            t.as_secs_f64()
        );
    }
    std::fs::remove_dir_all(&dir).context("removing the temp folder")?;
    Ok(())
}

fn tempdir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("tillswarm-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
