//! Prometheus metrics: request counts and latency histograms kept in atomics,
//! plus gauges read from the database at scrape time.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::db::sql::Connection;

use crate::devices::ONLINE_WINDOW_MS;
use crate::error::Result;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 11] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Which API a request belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `/api/v1/node/...`: tills.
    Node,
    /// The rest of `/api/v1/...`: operators.
    Operator,
    /// Panel, health, metrics.
    Other,
}

impl Family {
    /// The family of a request path.
    pub fn of(path: &str) -> Self {
        if path.starts_with("/api/v1/node/") {
            Self::Node
        } else if path.starts_with("/api/v1/") {
            Self::Operator
        } else {
            Self::Other
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Node => "node",
            Self::Operator => "operator",
            Self::Other => "other",
        }
    }
}

#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
    errors: AtomicU64,
}

/// Counters shared by all requests.
#[derive(Default)]
pub struct Metrics {
    families: [Histogram; 3],
    chunk_bytes: AtomicU64,
    quiet_polls: AtomicU64,
    refreshed_polls: AtomicU64,
}

impl Metrics {
    /// Records one request.
    pub fn observe(&self, family: Family, status: u16, seconds: f64) {
        let h = &self.families[family as usize];
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                h.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        h.count.fetch_add(1, Ordering::Relaxed);
        h.sum_micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
        if status >= 500 {
            h.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts chunk bytes served to tills.
    pub fn add_chunk_bytes(&self, n: u64) {
        self.chunk_bytes.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts a heartbeat answered without writing (it repeated the last).
    pub fn count_quiet_poll(&self) {
        self.quiet_polls.fetch_add(1, Ordering::Relaxed);
    }

    /// Heartbeats answered without writing so far.
    pub fn quiet_polls(&self) -> u64 {
        self.quiet_polls.load(Ordering::Relaxed)
    }

    /// Counts an unchanged heartbeat whose last contact was written with
    /// the one-statement refresh (`devices::refresh`).
    pub fn count_refreshed_poll(&self) {
        self.refreshed_polls.fetch_add(1, Ordering::Relaxed);
    }

    /// Heartbeats written with the one-statement refresh so far.
    pub fn refreshed_polls(&self) -> u64 {
        self.refreshed_polls.load(Ordering::Relaxed)
    }

    /// Chunk bytes served so far.
    pub fn chunk_bytes(&self) -> u64 {
        self.chunk_bytes.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition.
    pub fn render(&self, g: &Gauges) -> String {
        let mut out = String::with_capacity(4096);
        let _ = writeln!(
            out,
            "# HELP tillswarm_devices Tills known to the coordinator, by status."
        );
        let _ = writeln!(out, "# TYPE tillswarm_devices gauge");
        let _ = writeln!(
            out,
            "tillswarm_devices{{status=\"approved\"}} {}",
            g.devices_approved
        );
        let _ = writeln!(
            out,
            "tillswarm_devices{{status=\"pending\"}} {}",
            g.devices_pending
        );
        let _ = writeln!(
            out,
            "# HELP tillswarm_devices_online Tills heard from in the last {} s.",
            ONLINE_WINDOW_MS / 1000
        );
        let _ = writeln!(out, "# TYPE tillswarm_devices_online gauge");
        let _ = writeln!(out, "tillswarm_devices_online {}", g.devices_online);
        let _ = writeln!(out, "# HELP tillswarm_tasks Tasks by status.");
        let _ = writeln!(out, "# TYPE tillswarm_tasks gauge");
        for status in crate::tasks::TaskStatus::ALL.iter().map(|s| s.as_str()) {
            let n = g
                .tasks
                .iter()
                .find(|(s, _)| s == status)
                .map_or(0, |(_, n)| *n);
            let _ = writeln!(out, "tillswarm_tasks{{status=\"{status}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP tillswarm_task_targets Till targets of unfinished tasks, by state."
        );
        let _ = writeln!(out, "# TYPE tillswarm_task_targets gauge");
        for (state, n) in &g.targets {
            let _ = writeln!(out, "tillswarm_task_targets{{state=\"{state}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP tillswarm_chunk_bytes_served_total Chunk bytes served to tills."
        );
        let _ = writeln!(out, "# TYPE tillswarm_chunk_bytes_served_total counter");
        let _ = writeln!(
            out,
            "tillswarm_chunk_bytes_served_total {}",
            self.chunk_bytes()
        );
        let _ = writeln!(
            out,
            "# HELP tillswarm_quiet_polls_total Heartbeats answered without a write (they repeated the last one written)."
        );
        let _ = writeln!(out, "# TYPE tillswarm_quiet_polls_total counter");
        let _ = writeln!(out, "tillswarm_quiet_polls_total {}", self.quiet_polls());
        let _ = writeln!(
            out,
            "# HELP tillswarm_refreshed_polls_total Unchanged heartbeats whose last contact was written in one statement."
        );
        let _ = writeln!(out, "# TYPE tillswarm_refreshed_polls_total counter");
        let _ = writeln!(
            out,
            "tillswarm_refreshed_polls_total {}",
            self.refreshed_polls()
        );
        let _ = writeln!(
            out,
            "# HELP tillswarm_db_batches_total Transactions shared by queued heartbeats (group commit)."
        );
        let _ = writeln!(out, "# TYPE tillswarm_db_batches_total counter");
        let _ = writeln!(out, "tillswarm_db_batches_total {}", g.db_batches);
        let _ = writeln!(
            out,
            "# HELP tillswarm_db_batched_jobs_total Heartbeats written in shared transactions."
        );
        let _ = writeln!(out, "# TYPE tillswarm_db_batched_jobs_total counter");
        let _ = writeln!(out, "tillswarm_db_batched_jobs_total {}", g.db_batched_jobs);
        let _ = writeln!(
            out,
            "# HELP tillswarm_http_request_duration_seconds HTTP request latency by API."
        );
        let _ = writeln!(
            out,
            "# TYPE tillswarm_http_request_duration_seconds histogram"
        );
        for family in [Family::Node, Family::Operator, Family::Other] {
            let h = &self.families[family as usize];
            let api = family.label();
            for (i, bound) in BUCKETS.iter().enumerate() {
                let n = h.buckets[i].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "tillswarm_http_request_duration_seconds_bucket{{api=\"{api}\",le=\"{bound}\"}} {n}"
                );
            }
            let count = h.count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "tillswarm_http_request_duration_seconds_bucket{{api=\"{api}\",le=\"+Inf\"}} {count}"
            );
            let sum = h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(
                out,
                "tillswarm_http_request_duration_seconds_sum{{api=\"{api}\"}} {sum}"
            );
            let _ = writeln!(
                out,
                "tillswarm_http_request_duration_seconds_count{{api=\"{api}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP tillswarm_http_server_errors_total Responses with a 5xx status."
        );
        let _ = writeln!(out, "# TYPE tillswarm_http_server_errors_total counter");
        for family in [Family::Node, Family::Operator, Family::Other] {
            let n = self.families[family as usize]
                .errors
                .load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "tillswarm_http_server_errors_total{{api=\"{}\"}} {n}",
                family.label()
            );
        }
        out
    }
}

/// Values read from the database for one scrape.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    /// Approved tills.
    pub devices_approved: u64,
    /// Pending tills.
    pub devices_pending: u64,
    /// Online tills.
    pub devices_online: u64,
    /// Tasks per status.
    pub tasks: Vec<(String, u64)>,
    /// Targets of unfinished tasks per state.
    pub targets: Vec<(String, u64)>,
    /// Shared transactions run for heartbeats (group commit).
    pub db_batches: u64,
    /// Heartbeats written in them.
    pub db_batched_jobs: u64,
}

/// Reads the gauges.
pub fn read_gauges(conn: &Connection, now_ms: i64) -> Result<Gauges> {
    let (approved, pending, online) = conn.query_row(
        // Built-in FILTER counts: the schema's sum(boolean) for PostgreSQL
        // is an SQL function, which made this scan about 9 ms per 1,000
        // tills there (0.9 s a scrape at 100,000).
        "SELECT count(*) FILTER (WHERE approved = 1), count(*) FILTER (WHERE approved = 0),
                count(*) FILTER (WHERE last_seen_ms >= ?1)
         FROM devices",
        [now_ms - ONLINE_WINDOW_MS],
        |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        },
    )?;
    let pairs = |sql: &str| -> Result<Vec<(String, u64)>> {
        let mut stmt = conn.prepare_cached(sql)?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
        })?;
        Ok(rows.collect::<crate::db::sql::Result<_>>()?)
    };
    Ok(Gauges {
        devices_approved: approved as u64,
        devices_pending: pending as u64,
        devices_online: online as u64,
        tasks: pairs("SELECT status, count(*) FROM tasks GROUP BY status")?,
        db_batches: 0,
        db_batched_jobs: 0,
        targets: pairs(
            "SELECT tt.state, count(*) FROM task_targets tt JOIN tasks t ON t.id = tt.task_id
             WHERE t.status NOT IN ('completed', 'completed_with_failures')
             GROUP BY tt.state ORDER BY tt.state",
        )?,
    })
}
