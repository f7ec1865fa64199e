//! What `lan` reports: the figures of each contender, the verdict against
//! DESIGN's targets, the progress lines and the printed table.

use super::*;

/// A [`Measure`] with its derived figures, as reported.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    /// The raw measurement.
    #[serde(flatten)]
    pub measure: Measure,
    /// MiB/s.
    pub mib_per_s: f64,
    /// Gbit/s.
    pub gbit_per_s: f64,
    /// CPU seconds per GB, both ends.
    pub cpu_s_per_gb: f64,
    /// Average busy cores, both ends.
    pub cores: f64,
}

impl From<Measure> for Figures {
    fn from(m: Measure) -> Self {
        Self {
            mib_per_s: m.mib_per_s(),
            gbit_per_s: m.gbit_per_s(),
            cpu_s_per_gb: m.cpu_s_per_gb(),
            cores: m.cores(),
            measure: m,
        }
    }
}

/// The run against the targets.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// DESIGN 9 throughput target, Gbit/s.
    pub target_gbit_s: f64,
    /// The swarm's best, Gbit/s.
    pub gbit_s: f64,
    /// Throughput met.
    pub throughput_ok: bool,
    /// DESIGN 9 core target per till.
    pub target_cores: f64,
    /// Cores of the busier till, when the peers ran apart (`--netns`).
    pub cores_per_till: Option<f64>,
    /// Cores of both tills together.
    pub cores_both: f64,
    /// Core target met; `None` when it cannot be told (one process, both
    /// peers together above one core).
    pub cores_ok: Option<bool>,
    /// The target ratio swarm / raw TCP.
    pub target_ratio: f64,
    /// Swarm throughput / raw TCP throughput (best runs).
    pub ratio: f64,
    /// Ratio met.
    pub ratio_ok: bool,
    /// All met; `None` when the core target could not be decided.
    pub pass: Option<bool>,
}

/// Everything one invocation measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `loopback` (one process) or `netns` (a veth pair, one process per peer).
    pub mode: String,
    /// What the CPU figures cover.
    pub cpu_scope: String,
    /// Package size in bytes.
    pub size_bytes: u64,
    /// Chunks in its manifest.
    pub chunks: usize,
    /// Timed runs of each contender.
    pub runs: u32,
    /// Cores the OS offers.
    pub cores_available: usize,
    /// B's planner: most LAN fetches in flight.
    pub lan_in_flight: usize,
    /// B's planner: most requests in flight to one peer.
    pub per_peer_in_flight: usize,
    /// A's most uploads served at once.
    pub max_uploads: usize,
    /// The veth's A -> B rate when shaped (`--link-mbit`), Mbit/s.
    pub link_mbit: Option<u32>,
    /// Writing, chunking and storing the package into A, s.
    pub setup_s: f64,
    /// Raw TCP, best run.
    pub raw_tcp: Figures,
    /// The swarm, best run.
    pub swarm: Figures,
    /// B's chunk-store work alone, best run (no network).
    pub store_only: Figures,
    /// Every raw TCP run.
    pub raw_tcp_runs: Vec<Measure>,
    /// Every swarm run.
    pub swarm_runs: Vec<Measure>,
    /// The targets.
    pub verdict: Verdict,
}

pub(super) fn report_run(
    run: u32,
    runs: u32,
    tcp: &[Measure],
    swarm: &[Measure],
    store: &[Measure],
) {
    let last = |v: &[Measure]| v.last().copied().unwrap_or_default();
    let (t, s, d) = (last(tcp), last(swarm), last(store));
    eprintln!(
        "run {}/{runs}: raw TCP {:.2} s ({:.0} MiB/s), swarm {:.2} s ({:.0} MiB/s), store only {:.2} s",
        run + 1,
        t.seconds,
        t.mib_per_s(),
        s.seconds,
        s.mib_per_s(),
        d.seconds
    );
}

pub(super) fn verdict(swarm: &Measure, tcp: &Measure) -> Verdict {
    let gbit_s = swarm.gbit_per_s();
    let throughput_ok = gbit_s >= TARGET_GBIT_S;
    let cores_per_till = swarm.busiest_end_cores();
    let cores_both = swarm.cores();
    let cores_ok = match cores_per_till {
        Some(c) => Some(c <= TARGET_CORES),
        // Both peers together within one core: each certainly is.
        None if cores_both <= TARGET_CORES => Some(true),
        None => None,
    };
    let ratio = swarm.gbit_per_s() / tcp.gbit_per_s().max(1e-12);
    let ratio_ok = ratio >= TARGET_RATIO;
    let pass = cores_ok.map(|c| c && throughput_ok && ratio_ok);
    // A miss elsewhere decides it even when the cores cannot be told.
    let pass = if !throughput_ok || !ratio_ok {
        Some(false)
    } else {
        pass
    };
    Verdict {
        target_gbit_s: TARGET_GBIT_S,
        gbit_s,
        throughput_ok,
        target_cores: TARGET_CORES,
        cores_per_till,
        cores_both,
        cores_ok,
        target_ratio: TARGET_RATIO,
        ratio,
        ratio_ok,
        pass,
    }
}

/// Prints the figures as a table.
pub fn print(r: &Report) {
    let link = match (r.mode.as_str(), r.link_mbit) {
        ("netns", Some(m)) => format!(
            "a veth pair between two network namespaces shaped to {m} Mbit/s (tbf; one process per peer)"
        ),
        ("netns", None) => {
            "a veth pair between two network namespaces (one process per peer)".to_owned()
        }
        _ => "loopback 127.0.0.1 (both peers in this process)".to_owned(),
    };
    println!(
        "lan: {} MiB package ({} chunks) from till A to till B over {link}; {} cores; best of {} runs",
        r.size_bytes / MIB,
        r.chunks,
        r.cores_available,
        r.runs
    );
    println!(
        "swarm: B's planner lan_in_flight {}, per_peer_in_flight {}; A's max_uploads {}; B verifies (blake3) and flushes every chunk to disk (batched)",
        r.lan_in_flight, r.per_peer_in_flight, r.max_uploads
    );
    println!(
        "{:<44} {:>8} {:>8} {:>7} {:>7} {:>9} {:>6}",
        "contender", "seconds", "MiB/s", "Gbit/s", "CPU s", "CPU s/GB", "cores"
    );
    let row = |name: &str, f: &Figures| {
        println!(
            "{name:<44} {:>8.3} {:>8.0} {:>7.2} {:>7.2} {:>9.2} {:>6.2}",
            f.measure.seconds, f.mib_per_s, f.gbit_per_s, f.measure.cpu_s, f.cpu_s_per_gb, f.cores
        );
        if let (Some(s), Some(rx)) = (f.measure.cpu_sender_s, f.measure.cpu_receiver_s) {
            let secs = f.measure.seconds.max(1e-9);
            println!(
                "{:<44} sender A {s:.2} CPU s ({:.2} cores), receiver B {rx:.2} CPU s ({:.2} cores)",
                "",
                s / secs,
                rx / secs
            );
        }
    };
    row("raw TCP (read/write, receiver discards)", &r.raw_tcp);
    row("tillswarm swarm (fetch_package, A -> B)", &r.swarm);
    row("  ref: B's chunk store alone (no network)", &r.store_only);
    let v = &r.verdict;
    println!("swarm / raw TCP throughput: {:.2}", v.ratio);
    println!("CPU: {}; GB = 10^9 bytes", r.cpu_scope);
    println!();
    println!("targets (DESIGN 9 and the issue):");
    println!(
        "  LAN >= {:.1} Gbit/s per link: {:.2} Gbit/s -> {}",
        v.target_gbit_s,
        v.gbit_s,
        if v.throughput_ok { "ok" } else { "short" }
    );
    match (v.cores_per_till, v.cores_ok) {
        (Some(c), Some(ok)) => println!(
            "  <= {:.0} core per till: busier till {c:.2} cores -> {}",
            v.target_cores,
            if ok { "ok" } else { "over" }
        ),
        (_, Some(_)) => println!(
            "  <= {:.0} core per till: both tills together {:.2} cores -> ok",
            v.target_cores, v.cores_both
        ),
        _ => println!(
            "  <= {:.0} core per till: both tills together {:.2} cores; one process cannot split them (use --netns) -> undecided",
            v.target_cores, v.cores_both
        ),
    }
    println!(
        "  swarm >= {:.1} x raw TCP: {:.2} -> {}",
        v.target_ratio,
        v.ratio,
        if v.ratio_ok { "ok" } else { "short" }
    );
    println!(
        "  {}",
        match v.pass {
            Some(true) => "PASS",
            Some(false) => "MISS",
            None => "PASS on throughput and ratio; core use per till undecided",
        }
    );
}
