//! The coordinator benchmark's figures and how they are printed.

use serde::Serialize;

use super::TARGET_P99_MS;

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
    /// Sends that left more than [`super::LATE_AFTER`] after their scheduled time.
    pub late_sends: u64,
    /// Sends that had to wait for a free in-flight slot.
    pub limit_waits: u64,
    /// Largest delay of a send behind its schedule, ms.
    pub max_send_lag_ms: f64,
    /// Answers that carried the full assignment list although the till echoed
    /// the current revision and nothing changed (should be 0).
    pub full_lists: u64,
    /// Latency from scheduled send to response (successful requests).
    pub latency: Latency,
    /// Mean time the server spent per node request (its own `/metrics`), ms.
    pub server_mean_ms: Option<f64>,
    /// Share of the phase's heartbeats answered without a database write
    /// (`tillswarm_quiet_polls_total`; `None` when the build lacks it).
    pub quiet_share: Option<f64>,
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
    /// The coordinator's database (`sqlite`, or the PostgreSQL URL with its
    /// password hidden).
    pub database: String,
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
    /// The task created for every till during the open loop, when asked for.
    pub activation: Option<super::Activation>,
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

/// Prints the figures as tables.
pub fn print(r: &Report) {
    let o = &r.open_loop;
    println!(
        "coordinator heartbeats: {} tills in stores of {}, {} cores; coordinator runtime {} workers, database {}; client runtime {} workers, <= {} in flight",
        r.tills,
        r.stores_of,
        r.cores,
        r.server_threads,
        r.database,
        r.client_threads,
        r.max_in_flight
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
    if let Some(q) = o.quiet_share {
        println!(
            "  heartbeats answered without a database write: {:.1} %",
            q * 100.0
        );
    }
    if let Some(a) = &r.activation {
        println!();
        println!(
            "activation: a Download task for all {} tills created {:.1} s into the open loop (request {:.0} ms)",
            a.tills, a.at_s, a.create_ms
        );
        println!(
            "  {}/{} tills held the new assignment: p50 {:.1} s, p99 {:.1} s, last {:.1} s after the creation (poll interval {:.0} s) -> {}",
            a.holding,
            a.tills,
            a.p50_s,
            a.p99_s,
            a.max_s,
            a.interval_s,
            if a.within_two_intervals {
                "within two intervals"
            } else {
                "NOT within two intervals"
            }
        );
        println!(
            "  heartbeats scheduled in those two intervals: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} -> {}); wrong lists {}",
            a.latency.p50_ms,
            a.latency.p99_ms,
            a.latency.max_ms,
            format_args!("target p99 < {TARGET_P99_MS:.0} ms"),
            if a.latency.p99_ms < TARGET_P99_MS {
                "ok"
            } else {
                "over"
            },
            a.wrong_lists
        );
    }
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
