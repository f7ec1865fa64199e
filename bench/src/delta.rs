//! `tillswarm-bench delta`: what a store's WAN carries, and how long its
//! tills take, to go from version N to N+1 of a package when they all hold
//! N, against the bound: the new bytes of N+1 (its chunks N lacks, as sent)
//! over the WAN once.
//!
//! The pair is the scattered-change fixture
//! ([`tillswarm_fixtures::write_scattered_pair`]: 256 files, ten seeded
//! regions making 10% of the payload, compressible 2x) as `.tar` or
//! `.tar.gz`. Every till first takes N (unmeasured); the measured task is
//! N+1, from its creation until the last till has it staged. The bound comes
//! from the two contents chunked and compressed as the coordinator does.
//! In-process by default (simulated WAN and LAN, see
//! [`crate::distribution`]); `--netns` runs real nodes in network namespaces
//! through `bench/scripts/netns-distribution.sh --base`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, ensure};
use clap::{Args, ValueEnum};
use serde::Serialize;
use tillswarm_fixtures::{Compression, SCATTER_CHANGED_FRACTION, SCATTER_REGIONS};
use tillswarm_protocol::chunk_codec::Compressor;
use tillswarm_protocol::{ChunkHash, Chunker};

use crate::distribution::{InProcess, Shape, peak_rss_bytes};

/// The pair's upload format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A plain tar.
    Tar,
    /// gzip.
    #[value(name = "tar.gz")]
    TarGz,
}

/// Options of `tillswarm-bench delta`.
#[derive(Debug, Args)]
pub struct DeltaArgs {
    /// Tills of the store.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=64))]
    tills: u32,
    /// Payload size of the package in MiB.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    size_mb: u64,
    /// The package's upload format.
    #[arg(long, value_enum, default_value_t = Format::Tar)]
    format: Format,
    /// WAN bandwidth of the store, Mbit/s.
    #[arg(long, default_value_t = 20.0)]
    wan_mbit: f64,
    /// LAN bandwidth of each till's link, Mbit/s.
    #[arg(long, default_value_t = 1000.0)]
    lan_mbit: f64,
    /// Real node processes in network namespaces (root).
    #[arg(long)]
    netns: bool,
    /// The `tillswarm` binary for `--netns` (default: next to this bench).
    #[arg(long)]
    tillswarm: Option<PathBuf>,
    /// Also write the figures to this file as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The figures (the JSON fields first, then detail).
#[derive(Debug, Serialize)]
struct Report {
    /// Bytes of N+1 as uploaded.
    package_size: u64,
    format: &'static str,
    /// Share of N+1's payload that differs from N.
    changed_fraction: f64,
    /// WAN bytes of the store for N+1, as sent (the tills' own count).
    wan_bytes_per_store: u64,
    /// Bytes of N+1's content in chunks N lacks.
    new_content_bytes: u64,
    /// Task creation until the last till had N+1 staged.
    seconds: f64,
    /// The new chunks, as sent, over the WAN once.
    new_bytes_bound_s: f64,
    mode: &'static str,
    tills: u32,
    wan_mbit: f64,
    lan_mbit: f64,
    regions: u64,
    /// Bytes of N+1's content (the uncompressed tar).
    content_size: u64,
    /// All of N+1's chunks as sent (compressed where that is smaller).
    wire_size: u64,
    /// The new chunks as sent.
    new_wire_bytes: u64,
    /// `wan_bytes_per_store / package_size` (target <= 0.15).
    wan_ratio: f64,
    /// `new_content_bytes / package_size`: what the chunking leaves to send.
    bound_ratio: f64,
    /// `seconds / new_bytes_bound_s` (target <= 1.5).
    time_ratio: f64,
    /// With `--netns`: what the router counted on the WAN, headers included.
    wan_rx_bytes_router: Option<u64>,
    /// With `--netns`: the nodes' largest peak RSS; in-process: the whole
    /// bench process's.
    peak_rss_bytes: Option<u64>,
    /// Seconds every till took to get N (unmeasured).
    base_seconds: Option<f64>,
}

/// Bytes of `new`'s chunks `old` lacks (content and as sent), and all of
/// `new`'s as sent, chunked and compressed as the coordinator does.
struct Bound {
    content_size: u64,
    wire_size: u64,
    new_content: u64,
    new_wire: u64,
}

fn bound(old: &Path, new: &Path) -> anyhow::Result<Bound> {
    let cut = |path: &Path,
               zstd: Option<&mut Compressor>|
     -> anyhow::Result<Vec<(ChunkHash, u32, u32)>> {
        let (_, content) = tillswarm_coordinator::packages::open_content(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let mut out = Vec::new();
        let mut zstd = zstd;
        tillswarm_protocol::chunking::chunk_reader_with(Chunker::CURRENT, content, |c, data| {
            let wire = match zstd.as_deref_mut() {
                Some(z) => z.compress(data)?.map_or(c.length, |f| f.len() as u32),
                None => c.length,
            };
            out.push((c.hash, c.length, wire));
            Ok(())
        })?;
        Ok(out)
    };
    let held: HashSet<ChunkHash> = cut(old, None)?.into_iter().map(|c| c.0).collect();
    let mut zstd = Compressor::new()?;
    let next = cut(new, Some(&mut zstd))?;
    let mut seen = HashSet::new();
    let mut b = Bound {
        content_size: 0,
        wire_size: 0,
        new_content: 0,
        new_wire: 0,
    };
    for (hash, length, wire) in next {
        b.content_size += u64::from(length);
        b.wire_size += u64::from(wire);
        if !held.contains(&hash) && seen.insert(hash) {
            b.new_content += u64::from(length);
            b.new_wire += u64::from(wire);
        }
    }
    Ok(b)
}

/// What the measured distribution gave.
struct Measured {
    seconds: f64,
    wan_bytes: u64,
    wan_rx_router: Option<u64>,
    peak_rss: Option<u64>,
    base_seconds: Option<f64>,
}

/// Runs the benchmark.
pub async fn run(args: DeltaArgs) -> anyhow::Result<()> {
    ensure!(
        args.wan_mbit > 0.0 && args.lan_mbit > 0.0,
        "bandwidths must be above 0"
    );
    let dir = tempfile::Builder::new()
        .prefix("tillswarm-bench-delta-")
        .tempdir()?;
    let compression = match args.format {
        Format::Tar => Compression::None,
        Format::TarGz => Compression::Gzip,
    };
    eprintln!(
        "writing the scattered pair ({} MiB, {:?})",
        args.size_mb, args.format
    );
    let (base, next) =
        tillswarm_fixtures::write_scattered_pair(dir.path(), args.size_mb << 20, compression)
            .context("writing the package pair")?;
    let b = bound(&base, &next)?;
    let package_size = std::fs::metadata(&next)?.len();
    let measured = if args.netns {
        run_netns(&args, &base, &next, dir.path())?
    } else {
        run_in_process(&args, &base, &next, package_size).await?
    };
    let bound_s = b.new_wire as f64 * 8.0 / (args.wan_mbit * 1e6);
    let report = Report {
        package_size,
        format: match args.format {
            Format::Tar => "tar",
            Format::TarGz => "tar.gz",
        },
        changed_fraction: SCATTER_CHANGED_FRACTION,
        wan_bytes_per_store: measured.wan_bytes,
        new_content_bytes: b.new_content,
        seconds: measured.seconds,
        new_bytes_bound_s: bound_s,
        mode: if args.netns { "netns" } else { "in-process" },
        tills: args.tills,
        wan_mbit: args.wan_mbit,
        lan_mbit: args.lan_mbit,
        regions: SCATTER_REGIONS,
        content_size: b.content_size,
        wire_size: b.wire_size,
        new_wire_bytes: b.new_wire,
        wan_ratio: measured.wan_bytes as f64 / package_size as f64,
        bound_ratio: b.new_content as f64 / package_size as f64,
        time_ratio: measured.seconds / bound_s,
        wan_rx_bytes_router: measured.wan_rx_router,
        peak_rss_bytes: measured.peak_rss,
        base_seconds: measured.base_seconds,
    };
    report.print();
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

impl Report {
    fn print(&self) {
        let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
        println!();
        println!(
            "delta: {} tills, {} package of {:.1} MiB ({:.1} MiB content, {:.1} MiB as sent), {:.0}% changed in {} regions, WAN {} Mbit/s ({})",
            self.tills,
            self.format,
            mib(self.package_size),
            mib(self.content_size),
            mib(self.wire_size),
            self.changed_fraction * 100.0,
            self.regions,
            self.wan_mbit,
            self.mode
        );
        println!(
            "new chunks: {:.2} MiB of content = {:.3}x the package, {:.2} MiB as sent; bound {:.2} s",
            mib(self.new_content_bytes),
            self.bound_ratio,
            mib(self.new_wire_bytes),
            self.new_bytes_bound_s
        );
        println!(
            "WAN per store: {:.2} MiB = {:.3}x the package (target <= 0.15x){}",
            mib(self.wan_bytes_per_store),
            self.wan_ratio,
            self.wan_rx_bytes_router
                .map(|r| format!("; the router counted {:.2} MiB", mib(r)))
                .unwrap_or_default()
        );
        println!(
            "time: {:.2} s = {:.2}x the bound of the new bytes (target <= 1.5x)",
            self.seconds, self.time_ratio
        );
    }
}

async fn run_in_process(
    args: &DeltaArgs,
    base: &Path,
    next: &Path,
    package_size: u64,
) -> anyhow::Result<Measured> {
    let bench = InProcess::start(&Shape {
        stores: 1,
        tills: args.tills,
        wan_mbit: args.wan_mbit,
        lan_mbit: args.lan_mbit,
        max_package_bytes: package_size * 2 + (64 << 20),
    })
    .await?;
    let full_bound = package_size as f64 * 8.0 / (args.wan_mbit * 1e6);
    let n = bench.upload(base, "2.0.0").await?;
    let first = bench.distribute(&n, full_bound, "N    ").await?;
    let n1 = bench.upload(next, "2.1.0").await?;
    let run = bench.distribute(&n1, full_bound, "N+1  ").await?;
    bench.stop().await;
    Ok(Measured {
        seconds: run.seconds,
        wan_bytes: run.wan_per_store.iter().copied().max().unwrap_or(0),
        wan_rx_router: None,
        peak_rss: peak_rss_bytes(),
        base_seconds: Some(first.seconds),
    })
}

/// `--netns`: the distribution script with `--base`.
fn run_netns(args: &DeltaArgs, base: &Path, next: &Path, dir: &Path) -> anyhow::Result<Measured> {
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
    // Beside the bench's own JSON when there is one (the script's detail).
    let json = match &args.json {
        Some(j) => j.with_extension("netns.json"),
        None => dir.join("netns.json"),
    };
    let status = std::process::Command::new("bash")
        .arg(&script)
        .arg(&bin)
        .args(["--tills", &args.tills.to_string()])
        .args(["--size-mb", &args.size_mb.to_string()])
        .args(["--wan-mbit", &(args.wan_mbit.round() as u64).to_string()])
        .args(["--lan-mbit", &(args.lan_mbit.round() as u64).to_string()])
        .arg("--skip-http")
        .arg("--base")
        .arg(base)
        .arg("--package")
        .arg(next)
        .arg("--json")
        .arg(&json)
        .status()
        .with_context(|| format!("running {}", script.display()))?;
    ensure!(status.success(), "{} failed: {status}", script.display());
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json)?)?;
    let swarm = &v["swarm"];
    Ok(Measured {
        seconds: swarm["seconds"]
            .as_f64()
            .context("no seconds in the script's JSON")?,
        wan_bytes: swarm["wan_bytes_per_store"]
            .as_u64()
            .context("no WAN bytes in the script's JSON")?,
        wan_rx_router: swarm["wan_rx_bytes_router"].as_u64(),
        peak_rss: swarm["peak_rss_bytes"].as_u64(),
        base_seconds: v["settle_before_task"]["base_seconds"].as_f64(),
    })
}
