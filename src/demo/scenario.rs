//! The scripted scenarios of `tillswarm demo`. They act as an operator
//! would, through the HTTP API with an approver's token:
//! - `rollout`: the recommended rollout (`pilot-even-odd`: Download to All,
//!   pilot tills Update, Even Update, Odd Forced update), approving the Even
//!   wave when the rollout asks, to the end; every till must then run the new
//!   version and each store's WAN bytes stay near one package;
//! - `rollout-failure`: the same rollout while the package's `up.sh` fails on
//!   one store's tills; the rollout must pause itself at the error threshold,
//!   and no install may start after the pause.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::{Value, json};
use tillswarm_coordinator::auth::{Caller, Role};
use tillswarm_coordinator::clock::parse_rfc3339;
use tillswarm_coordinator::service::access::NewTokenInput;
use tillswarm_coordinator::tasks::TaskDetail;
use tillswarm_protocol::DeviceId;

use super::{Cashier, Demo, NEW_VERSION};
use crate::remote::Remote;

/// Largest WAN bytes per store over the whole rollout, as a multiple of the
/// package size, for the scenario to pass.
const MAX_ROLLOUT_WAN_RATIO: f64 = 1.10;
/// How long a scenario may take before it fails.
const LIMIT: Duration = Duration::from_secs(900);

#[derive(Serialize)]
struct Summary {
    ok: bool,
    scenario: &'static str,
    rollout_id: i64,
    rollout_state: String,
    reason: Option<String>,
    package_size: u64,
    devices_total: usize,
    devices_installed: usize,
    seconds: f64,
    max_wan_ratio: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    failing_store: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    installs_after_pause: Option<usize>,
    paused_stores: Vec<String>,
    stores: Vec<StoreSummary>,
    waves: Vec<WaveJson>,
    cashiers: Vec<CashierJson>,
}

#[derive(Serialize)]
struct StoreSummary {
    store_id: String,
    tills: usize,
    wan_bytes: u64,
    lan_bytes: u64,
    wan_ratio: f64,
}

#[derive(Serialize)]
struct WaveJson {
    name: String,
    kind: String,
    task_id: Option<i64>,
    targets: u64,
    installed: u64,
    failed: u64,
    skipped: u64,
    started_at: Option<String>,
    finished_at: Option<String>,
    seconds: Option<f64>,
}

#[derive(Serialize)]
struct CashierJson {
    device: DeviceId,
    store_id: String,
    number: u32,
    cashier: Cashier,
    restarts: u32,
}

/// An API client acting as the scenario's approver.
struct Operator {
    remote: Remote,
}

impl Operator {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut request = self.remote.request(method, path)?;
        if let Some(b) = body {
            request = request.json(&b);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("calling {path}"))?;
        let text = Remote::check(response, path).await?;
        serde_json::from_str(&text).with_context(|| format!("reading the answer of {path}"))
    }
}

/// Seconds between two RFC 3339 times.
fn between(from: &Option<String>, to: &Option<String>) -> Option<f64> {
    let a = parse_rfc3339(from.as_deref()?)?;
    let b = parse_rfc3339(to.as_deref()?)?;
    Some((b - a) as f64 / 1000.0)
}

impl Demo {
    /// Runs the `rollout` scenario, or with `failure` the `rollout-failure` one.
    pub(super) async fn rollout_scenario(
        &self,
        json: Option<&Path>,
        failure: bool,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        let scenario = if failure {
            "rollout-failure"
        } else {
            "rollout"
        };
        let (package_id, package_size) = self.packages[NEW_VERSION];
        let token = self
            .coordinator
            .create_token(
                NewTokenInput {
                    name: format!("demo-{scenario}-{}", self.coordinator.now_ms()),
                    role: Role::Approver,
                    expires_days: Some(1),
                },
                &Caller::system("demo"),
            )
            .await
            .context("creating the scenario's API token")?;
        let op = Operator {
            remote: Remote {
                coordinator: self.url.clone(),
                token: Some(token.token_secret),
                ca_file: None,
            },
        };
        let failing_store = if failure {
            let s = 1 % self.stores.len();
            for t in self.tills.iter().filter(|t| t.store == s) {
                let root = &t.config.update_root;
                std::fs::create_dir_all(root)?;
                std::fs::write(root.join(tillswarm_fixtures::DEMO_FAIL_MARKER), b"demo\n")?;
            }
            println!(
                "{}: up.sh will fail on every till of this store",
                self.stores[s]
            );
            Some(self.stores[s].clone())
        } else {
            None
        };
        println!(
            "{scenario}: demo {NEW_VERSION} ({package_size} bytes) to {} tills in {} stores; panel at {}/ (user {}, password {})",
            self.tills.len(),
            self.stores.len(),
            self.url,
            super::DEMO_ADMIN,
            self.admin_password
        );
        let created = op
            .call(
                reqwest::Method::POST,
                "/api/v1/rollouts",
                Some(json!({
                    "name": format!("demo {NEW_VERSION}: pilot, Even, Odd"),
                    "package_id": package_id,
                    "template": "pilot-even-odd",
                    // The demo does not wait an hour between waves.
                    "template_options": {"soak_minutes": 0, "approval_after_pilot": true},
                })),
            )
            .await?;
        let id = created["id"].as_i64().context("the rollout has no id")?;
        println!(
            "rollout {id} created through the API: {} waves",
            created["waves"].as_array().map_or(0, Vec::len)
        );
        let path = format!("/api/v1/rollouts/{id}");
        let mut last = String::new();
        let rollout = loop {
            let r = op.call(reqwest::Method::GET, &path, None).await?;
            let state = r["state"].as_str().unwrap_or_default().to_owned();
            let line = wave_line(&r);
            if line != last {
                println!("  [{state}] {line}");
                last = line;
            }
            match state.as_str() {
                "waiting_for_approval" if !failure => {
                    println!("  approving: {}", r["reason"].as_str().unwrap_or_default());
                    op.call(
                        reqwest::Method::POST,
                        &format!("{path}/approve"),
                        Some(json!({})),
                    )
                    .await?;
                }
                "completed" | "completed_with_failures" | "cancelled" | "paused" => break r,
                _ => {}
            }
            if started.elapsed() > LIMIT {
                bail!(
                    "the rollout did not end within {} s: {last}",
                    LIMIT.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let state = rollout["state"].as_str().unwrap_or_default().to_owned();
        let reason = rollout["reason"].as_str().map(str::to_owned);
        if let Some(r) = &reason {
            println!("rollout {id} {state}: {r}");
        }
        // Installs that start after the pause: a till learns of it at its next
        // poll, so one poll interval (with jitter) and a second of slack pass
        // first; then every wave task's targets are looked at again.
        let installs_after_pause = if state == "paused" {
            // When the scheduler paused it (audited; seconds, rounded down).
            let paused_ms = self
                .coordinator
                .audit_log(tillswarm_coordinator::audit::Filter {
                    action: Some("rollout.paused".into()),
                    target: Some(format!("rollout:{id}")),
                    ..Default::default()
                })
                .await?
                .items
                .first()
                .and_then(|a| parse_rfc3339(&a.at))
                .unwrap_or_else(|| self.coordinator.now_ms());
            let poll = self.coordinator.config().poll_interval_ms as f64
                * (1.0 + self.coordinator.config().poll_jitter);
            let grace = poll as i64 + 1_000;
            tokio::time::sleep(Duration::from_millis(grace as u64 + 3 * poll as u64)).await;
            let mut late = 0;
            for task in self.wave_tasks(&op, id).await? {
                late += task
                    .target_details
                    .iter()
                    .filter(|t| {
                        t.install_started
                            .as_deref()
                            .and_then(parse_rfc3339)
                            .is_some_and(|at| at > paused_ms + grace)
                    })
                    .count();
            }
            println!("installs started after the pause: {late}");
            Some(late)
        } else {
            None
        };
        let rollout = op.call(reqwest::Method::GET, &path, None).await?;
        let tasks = self.wave_tasks(&op, id).await?;
        let summary = self
            .summary(
                scenario,
                &rollout,
                &tasks,
                started,
                failing_store,
                installs_after_pause,
            )
            .await?;
        for w in &summary.waves {
            println!(
                "wave {}: {} installed, {} failed, {} skipped of {} in {}",
                w.name,
                w.installed,
                w.failed,
                w.skipped,
                w.targets,
                w.seconds.map_or("-".into(), |s| format!("{s:.0} s"))
            );
        }
        for s in &summary.stores {
            println!(
                "store {}: {} tills, WAN {} bytes ({:.3}x the package) over the whole rollout, LAN {} bytes",
                s.store_id, s.tills, s.wan_bytes, s.wan_ratio, s.lan_bytes
            );
        }
        println!(
            "{scenario} {}: rollout {state}, {}/{} tills run {NEW_VERSION}, {:.1} s",
            if summary.ok { "ok" } else { "FAILED" },
            summary.devices_installed,
            summary.devices_total,
            summary.seconds
        );
        if let Some(path) = json {
            std::fs::write(path, serde_json::to_vec_pretty(&summary)?)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        if !summary.ok {
            bail!("the {scenario} scenario did not end as it must (see the summary above)");
        }
        Ok(())
    }

    /// The details of every started wave's task.
    async fn wave_tasks(&self, op: &Operator, rollout: i64) -> anyhow::Result<Vec<TaskDetail>> {
        let r = op
            .call(
                reqwest::Method::GET,
                &format!("/api/v1/rollouts/{rollout}"),
                None,
            )
            .await?;
        let mut out = Vec::new();
        for w in r["waves"].as_array().into_iter().flatten() {
            if let Some(task) = w["task_id"].as_i64() {
                let t = op
                    .call(reqwest::Method::GET, &format!("/api/v1/tasks/{task}"), None)
                    .await?;
                out.push(serde_json::from_value(t).context("reading a task")?);
            }
        }
        Ok(out)
    }

    async fn summary(
        &self,
        scenario: &'static str,
        rollout: &Value,
        tasks: &[TaskDetail],
        started: Instant,
        failing_store: Option<String>,
        installs_after_pause: Option<usize>,
    ) -> anyhow::Result<Summary> {
        let (_, package_size) = self.packages[NEW_VERSION];
        let devices = self
            .coordinator
            .devices(
                Default::default(),
                tillswarm_coordinator::service::Paging {
                    page: None,
                    per_page: Some(tillswarm_coordinator::service::MAX_PER_PAGE),
                },
            )
            .await?
            .items;
        let installed_in = |store: Option<&str>| {
            devices
                .iter()
                .filter(|d| self.tills.iter().any(|t| t.device == d.guid))
                .filter(|d| {
                    store.is_none_or(|s| d.store_id.as_ref().map(|id| id.as_str()) == Some(s))
                })
                .filter(|d| d.version.as_deref() == Some(NEW_VERSION))
                .count()
        };
        let installed = installed_in(None);
        let mut stores = Vec::new();
        for (s, store_id) in self.stores.iter().enumerate() {
            let (mut wan, mut lan) = (0u64, 0u64);
            for t in tasks {
                for x in t.stores.iter().filter(|x| &x.store_id == store_id) {
                    wan += x.wan_bytes;
                    lan += x.lan_bytes;
                }
            }
            stores.push(StoreSummary {
                store_id: store_id.clone(),
                tills: self.tills.iter().filter(|t| t.store == s).count(),
                wan_bytes: wan,
                lan_bytes: lan,
                wan_ratio: wan as f64 / package_size as f64,
            });
        }
        let waves: Vec<WaveJson> = rollout["waves"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|w| {
                let text = |k: &str| w[k].as_str().map(str::to_owned);
                let started_at = text("started_at");
                let finished_at = text("finished_at");
                WaveJson {
                    name: text("name").unwrap_or_default(),
                    kind: text("kind").unwrap_or_default(),
                    task_id: w["task_id"].as_i64(),
                    targets: w["targets"].as_u64().unwrap_or(0),
                    installed: w["installed"].as_u64().unwrap_or(0),
                    failed: w["failed"].as_u64().unwrap_or(0),
                    skipped: w["skipped"].as_u64().unwrap_or(0),
                    seconds: between(&started_at, &finished_at),
                    started_at,
                    finished_at,
                }
            })
            .collect();
        let state = rollout["state"].as_str().unwrap_or_default().to_owned();
        let paused_stores: Vec<String> = rollout["paused_stores"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["store_id"].as_str().map(str::to_owned))
            .collect();
        let wan_ok = stores.iter().all(|s| s.wan_ratio <= MAX_ROLLOUT_WAN_RATIO);
        let ok = match &failing_store {
            None => state == "completed" && installed == self.tills.len() && wan_ok,
            Some(bad) => {
                state == "paused"
                    && installs_after_pause == Some(0)
                    && installed_in(Some(bad)) == 0
                    && paused_stores.contains(bad)
                    && waves.iter().any(|w| w.failed > 0)
            }
        };
        Ok(Summary {
            ok,
            scenario,
            rollout_id: rollout["id"].as_i64().unwrap_or_default(),
            rollout_state: state,
            reason: rollout["reason"].as_str().map(str::to_owned),
            package_size,
            devices_total: self.tills.len(),
            devices_installed: installed,
            seconds: started.elapsed().as_secs_f64(),
            max_wan_ratio: MAX_ROLLOUT_WAN_RATIO,
            failing_store,
            installs_after_pause,
            paused_stores,
            stores,
            waves,
            cashiers: self
                .tills
                .iter()
                .map(|t| CashierJson {
                    device: t.device,
                    store_id: self.stores[t.store].clone(),
                    number: t.number,
                    cashier: t.cashier,
                    restarts: t.restarts.load(std::sync::atomic::Ordering::Relaxed),
                })
                .collect(),
        })
    }
}

/// One line of wave progress: `Pilot 2/3 (1 failed) | Even waiting`.
fn wave_line(r: &Value) -> String {
    r["waves"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| {
            let name = w["name"].as_str().unwrap_or("?");
            if w["task_id"].is_null() {
                return format!("{name} waiting");
            }
            let failed = w["failed"].as_u64().unwrap_or(0);
            format!(
                "{name} {}/{} {}{}",
                w["installed"].as_u64().unwrap_or(0),
                w["targets"]
                    .as_u64()
                    .unwrap_or(0)
                    .saturating_sub(w["skipped"].as_u64().unwrap_or(0)),
                w["state"].as_str().unwrap_or(""),
                if failed > 0 {
                    format!(" ({failed} failed)")
                } else {
                    String::new()
                }
            )
        })
        .collect::<Vec<_>>()
        .join(" | ")
}
