//! Activation at fleet scale: while the open loop runs, a Download task for
//! All (a second package) is created through the API, as an operator or a
//! rollout wave does. Every till's assignments change at once, and each
//! fetches its new signed list at its next poll. Measured: how long the
//! creation took, when each till first held a list with the new assignment
//! (from the moment the creation was sent), and the heartbeat latency of the
//! requests scheduled while that wave of full lists ran.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use super::{Client, Latency};

const UNSET: u64 = u64::MAX;

/// Figures of the activation.
#[derive(Debug, Clone, Serialize)]
pub struct Activation {
    /// Seconds into the open loop the task was created.
    pub at_s: f64,
    /// The creation request (100 000 targets taken from All), ms.
    pub create_ms: f64,
    /// Tills that held the new assignment before the open loop ended.
    pub holding: u64,
    /// Tills in the chain.
    pub tills: u64,
    /// Median time from the creation to a till holding it, s.
    pub p50_s: f64,
    /// 99th percentile of that, s.
    pub p99_s: f64,
    /// The last till, s.
    pub max_s: f64,
    /// The poll interval, s.
    pub interval_s: f64,
    /// Every till held it within two poll intervals.
    pub within_two_intervals: bool,
    /// Latency of the heartbeats scheduled from the creation to two poll
    /// intervals after it (scheduled send to response).
    pub latency: Latency,
    /// Full lists that did not carry both assignments (should be 0).
    pub wrong_lists: u64,
}

/// Follows the activation through the open loop.
pub(super) struct Tracker {
    start: Instant,
    /// When the creation was sent, µs after `start` (UNSET before).
    created_us: AtomicU64,
    create_us: AtomicU64,
    /// When each till first held the new list, µs after `start`.
    held_us: Vec<AtomicU64>,
    wrong: AtomicU64,
}

impl Tracker {
    pub(super) fn new(start: Instant, tills: u32) -> Self {
        Self {
            start,
            created_us: AtomicU64::new(UNSET),
            create_us: AtomicU64::new(0),
            held_us: (0..tills).map(|_| AtomicU64::new(UNSET)).collect(),
            wrong: AtomicU64::new(0),
        }
    }

    fn since_start(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.start).as_micros() as u64
    }

    /// Whether the creation was sent by `at`.
    pub(super) fn created_by(&self, at: Instant) -> bool {
        let c = self.created_us.load(Ordering::Acquire);
        c != UNSET && self.since_start(at) >= c
    }

    /// A heartbeat answer of `till` carried `assignments` assignments.
    pub(super) fn full_list(&self, till: u32, assignments: usize, at: Instant) {
        if !self.created_by(at) {
            return;
        }
        if assignments != 2 {
            self.wrong.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if let Some(h) = self.held_us.get(till as usize) {
            let _ = h.compare_exchange(
                UNSET,
                self.since_start(at),
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
    }

    /// Creates the task (Download of `package_id` for All) and notes when.
    pub(super) async fn create(
        &self,
        client: &Client,
        addr: SocketAddr,
        token: &str,
        package_id: &str,
        tills: u32,
    ) -> anyhow::Result<()> {
        let sent = Instant::now();
        self.created_us
            .store(self.since_start(sent), Ordering::Release);
        let resp = client
            .http
            .post(format!("http://{addr}/api/v1/tasks"))
            .bearer_auth(token)
            .json(&serde_json::json!({"kind": "download", "package_id": package_id, "group_id": 1}))
            .timeout(Duration::from_secs(120))
            .send()
            .await
            .context("creating the activation task")?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await?;
        self.create_us
            .store(sent.elapsed().as_micros() as u64, Ordering::Relaxed);
        anyhow::ensure!(status.is_success(), "activation task: {status} {body}");
        anyhow::ensure!(
            body["targets"].as_u64() == Some(u64::from(tills)),
            "the activation task targets {} tills, not {tills}",
            body["targets"]
        );
        Ok(())
    }

    /// The figures; `during` are the latencies (µs) of heartbeats scheduled
    /// in the two intervals after the creation.
    pub(super) fn summary(&self, interval_s: f64, during: &mut [u64]) -> Activation {
        let created = self.created_us.load(Ordering::Acquire);
        let mut waits: Vec<u64> = self
            .held_us
            .iter()
            .map(|h| h.load(Ordering::Relaxed))
            .filter(|&h| h != UNSET && created != UNSET)
            .map(|h| h.saturating_sub(created))
            .collect();
        let holding = waits.len() as u64;
        let w = Latency::of(&mut waits);
        let tills = self.held_us.len() as u64;
        Activation {
            at_s: created as f64 / 1e6,
            create_ms: self.create_us.load(Ordering::Relaxed) as f64 / 1000.0,
            holding,
            tills,
            // Latency::of reports ms of µs input: here µs -> s.
            p50_s: w.p50_ms / 1000.0,
            p99_s: w.p99_ms / 1000.0,
            max_s: w.max_ms / 1000.0,
            interval_s,
            within_two_intervals: holding == tills && w.max_ms / 1000.0 <= 2.0 * interval_s,
            latency: Latency::of(during),
            wrong_lists: self.wrong.load(Ordering::Relaxed),
        }
    }

    /// When the creation was sent, µs after the start (None before).
    pub(super) fn created_us(&self) -> Option<u64> {
        let c = self.created_us.load(Ordering::Acquire);
        (c != UNSET).then_some(c)
    }
}
