//! The agent: one loop that heartbeats, keeps the local task list in step with
//! the coordinator, drives every task through its states, and reports.
//!
//! Task by type, as the seed describes:
//! - **Download**: fetch, verify, stage; done.
//! - **Update**: stage, then ask the cashier (local interface). Declined: ask
//!   again after the next restart of the node. Accepted, or no answer within
//!   `autoUpdateTimeout` minutes: leave sale mode and install. Timeout unset:
//!   never ask; only a manual install (`tillswarm node install`) installs it.
//! - **Forced update**: stage, then install at the task's time without asking.
//!
//! Downloads and installs run as spawned jobs so heartbeats continue meanwhile;
//! every state change is committed to [`State`] before it is acted on.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tillswarm_protocol::api::{
    Assignment, DeviceState, HeartbeatRequest, ProgressReport, TargetState, TaskKind, TillSettings,
};
use tillswarm_protocol::clock::Clock;
use tillswarm_protocol::trust::{Instructions, TrustState};
use tillswarm_protocol::{TaskId, Version};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

use crate::chunks::ChunkStore;
use crate::client::CoordinatorClient;
use crate::config::NodeConfig;
use crate::error::{Error, Result};
use crate::install;
use crate::local_api::{Answer, LocalUi, Prompt};
use crate::stage::{self, ChunkSource, Progress};
use crate::state::{DROP_IN_TASK, LocalTask, State};

mod boot;
mod jobs;

/// Least time between two polls brought forward by store news.
const NEWS_MIN_GAP: Duration = Duration::from_secs(5);
/// How often the loop looks at its tasks when nothing wakes it.
const TICK: Duration = Duration::from_millis(200);
/// Least time between two progress-only reports of one task.
const PROGRESS_REPORT: Duration = Duration::from_secs(2);
/// Chunks fetched at once.
const PARALLEL_FETCHES: usize = 4;
/// No WAN fetch in the swarm's first milliseconds: a node that starts a task at
/// boot first finds its store peers (mDNS answers within about a second), so it
/// does not take every chunk for itself.
const SWARM_WARM_UP_MS: i64 = 3_000;
/// Longest wait for the store's tills that already hold a package (one may
/// be restarting) before fetching it over the WAN.
const HOLDER_WAIT_MS: i64 = 10_000;
/// First wait before a failed report is sent again; it doubles (with jitter)
/// up to [`REPORT_RETRY_MAX`].
const REPORT_RETRY_BASE: Duration = Duration::from_secs(1);
/// Longest wait between two tries of a failed report.
const REPORT_RETRY_MAX: Duration = Duration::from_secs(120);
/// Most held packages offered to the store after a start (newest first).
const MAX_SEEDED_PACKAGES: usize = 8;

/// A running node. Cheap to clone.
#[derive(Clone)]
pub struct Agent {
    inner: Arc<Inner>,
}

struct Inner {
    config: NodeConfig,
    state: State,
    store: Arc<ChunkStore>,
    client: CoordinatorClient,
    source: Arc<dyn ChunkSource>,
    ui: LocalUi,
    clock: Arc<dyn Clock>,
    /// This start's boot number (a decline is asked again once it moves on).
    boot: u64,
    settings: Mutex<TillSettings>,
    /// Download or install jobs in flight, by task.
    jobs: Mutex<HashMap<TaskId, JoinHandle<()>>>,
    /// When each task last reported, to throttle progress-only reports.
    last_report: Mutex<HashMap<TaskId, tokio::time::Instant>>,
    /// What the till is doing, for heartbeats.
    activity: Mutex<DeviceState>,
    /// An install job is waiting for the POS to leave sale mode.
    waiting_for_sale: std::sync::atomic::AtomicBool,
    /// The store swarm, once started (only with a swarm key).
    net: std::sync::OnceLock<crate::swarm::StoreNet>,
    /// The cap on chunks from store peers (`lan_rate_limit_kbit`).
    lan_cap: Option<Arc<crate::client::RateLimiter>>,
    /// When `update/` was last scanned for dropped-in packages.
    last_scan: Mutex<Option<tokio::time::Instant>>,
    /// Free disk bytes and when they were measured; measured at most once a minute.
    free_disk: Mutex<Option<(tokio::time::Instant, Option<u64>)>>,
    /// Warnings for the next heartbeat (refused instructions, unsigned drop-ins).
    warnings: Mutex<Vec<String>>,
    /// Pace of report retries after the coordinator refused or was away, and
    /// the earliest time of the next try.
    report_retry: Mutex<(crate::backoff::Backoff, Option<tokio::time::Instant>)>,
}

impl Agent {
    /// Opens the node's state and stores, and counts this start as a boot.
    pub fn open(
        config: NodeConfig,
        clock: Arc<dyn Clock>,
        source: Option<Arc<dyn ChunkSource>>,
    ) -> Result<Self> {
        let state = State::open(&config.data_dir)?;
        state.init_version(config.initial_version.as_ref())?;
        let boot = state.next_boot()?;
        let settings = state.settings()?;
        let store = Arc::new(ChunkStore::open(&config.data_dir.join("chunks"))?);
        let client = CoordinatorClient::for_till(&config)?;
        let source = source.unwrap_or_else(|| Arc::new(client.clone()));
        let config_lan_cap = config
            .lan_rate_limit_kbit
            .map(|k| Arc::new(crate::client::RateLimiter::kbit(k)));
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                state,
                store,
                client,
                source,
                ui: LocalUi::default(),
                clock,
                boot,
                settings: Mutex::new(settings),
                jobs: Mutex::new(HashMap::new()),
                last_report: Mutex::new(HashMap::new()),
                activity: Mutex::new(DeviceState::Ready),
                waiting_for_sale: std::sync::atomic::AtomicBool::new(false),
                free_disk: Mutex::new(None),
                warnings: Mutex::new(Vec::new()),
                report_retry: Mutex::new((
                    crate::backoff::Backoff::new(REPORT_RETRY_BASE, REPORT_RETRY_MAX),
                    None,
                )),
                last_scan: Mutex::new(None),
                net: std::sync::OnceLock::new(),
                lan_cap: config_lan_cap,
            }),
        })
    }

    /// The local interface state (prompt, sale mode, manual install).
    pub fn ui(&self) -> &LocalUi {
        &self.inner.ui
    }

    /// The durable state.
    pub fn state(&self) -> &State {
        &self.inner.state
    }

    /// The node's config.
    pub fn config(&self) -> &NodeConfig {
        &self.inner.config
    }

    /// The chunk store.
    pub fn chunk_store(&self) -> &Arc<ChunkStore> {
        &self.inner.store
    }

    fn now(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    /// The store swarm, when it runs.
    pub fn net(&self) -> Option<crate::swarm::StoreNet> {
        self.inner.net.get().cloned()
    }

    /// Runs until `shutdown` turns true; in-flight jobs are aborted (their state
    /// is durable, so the next start resumes them).
    pub async fn run(self, shutdown: watch::Receiver<bool>) -> Result<()> {
        use tracing::Instrument;
        let span = tracing::info_span!("node", till = %self.inner.config.device_id);
        self.run_inner(shutdown).instrument(span).await
    }

    async fn run_inner(self, mut shutdown: watch::Receiver<bool>) -> Result<()> {
        let swarm_task = self.start_swarm(shutdown.clone()).await?;
        // Polling is paced by monotonic time; the injectable clock only decides
        // deadlines (cashier timeout, forced-update time).
        let mut next_heartbeat = tokio::time::Instant::now();
        let mut poll_ms = 1_000u64;
        let mut failures = 0u32;
        let mut last_news_poll: Option<tokio::time::Instant> = None;
        loop {
            if *shutdown.borrow() {
                break;
            }
            if tokio::time::Instant::now() >= next_heartbeat {
                let wait = match self.heartbeat().await {
                    Ok(interval) => {
                        failures = 0;
                        poll_ms = interval;
                        Duration::from_millis(poll_ms)
                    }
                    Err(e) => {
                        // Back off with jitter up to ten intervals, so a dead
                        // coordinator is not hammered by every till at once.
                        let poll = Duration::from_millis(poll_ms);
                        let wait = crate::backoff::Backoff::new(poll, poll.saturating_mul(10))
                            .with_failures(failures)
                            .failed(crate::backoff::unit());
                        failures = failures.saturating_add(1);
                        if !matches!(e, Error::Pending) {
                            tracing::warn!(error = %e, failures, "heartbeat failed");
                        } else if failures == 1 {
                            tracing::info!("waiting for an operator to approve this till");
                        }
                        wait
                    }
                };
                next_heartbeat = tokio::time::Instant::now() + wait;
            }
            // A store peer took up a package this till does not know: a task
            // may be out that this till has not heard of yet; poll now rather
            // than at the next interval (at most every NEWS_MIN_GAP).
            if let Some(net) = self.net() {
                let now = tokio::time::Instant::now();
                if last_news_poll.is_none_or(|at| now - at >= NEWS_MIN_GAP) && net.take_news() {
                    tracing::debug!("store news: polling the coordinator now");
                    last_news_poll = Some(now);
                    next_heartbeat = now;
                    continue;
                }
            }
            if let Err(e) = self.step().await {
                tracing::error!(error = %e, "task step failed");
            }
            self.flush_reports().await;
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = self.inner.ui.changed.notified() => {}
                _ = shutdown.changed() => {}
            }
        }
        for (_, job) in self.inner.jobs.lock().await.drain() {
            job.abort();
        }
        if let Some(t) = swarm_task {
            let _ = t.await;
        }
        Ok(())
    }

    async fn free_disk(&self) -> Option<u64> {
        let mut cached = self.inner.free_disk.lock().await;
        match *cached {
            Some((at, bytes)) if at.elapsed() < Duration::from_secs(60) => bytes,
            _ => {
                let bytes = df_free(&self.inner.config.data_dir).await;
                *cached = Some((tokio::time::Instant::now(), bytes));
                bytes
            }
        }
    }

    /// The node's trust state: what it accepted, or its pinned root.
    fn trust(&self) -> Result<TrustState> {
        Ok(self
            .inner
            .state
            .trust()?
            .unwrap_or_else(|| TrustState::pinned(self.inner.config.coordinator_public_key)))
    }

    /// The online key manifests must be signed by (`None` before the first
    /// accepted answer, or once its certificate expired).
    fn online_key(&self) -> Result<Option<tillswarm_protocol::manifest::PublicKey>> {
        Ok(self.trust()?.online_key(self.now_unix()))
    }

    fn now_unix(&self) -> u64 {
        (self.now().max(0) / 1000) as u64
    }

    async fn heartbeat(&self) -> Result<u64> {
        let mut trust = self.trust()?;
        let mut warnings = std::mem::take(&mut *self.inner.warnings.lock().await);
        if trust.revision > 0 && trust.is_stale(self.now_unix()) {
            warnings.push("stale_instructions".into());
        }
        warnings.truncate(tillswarm_protocol::api::MAX_WARNINGS);
        let req = HeartbeatRequest {
            device_id: self.inner.config.device_id,
            version: self.inner.state.installed_version()?,
            state: *self.inner.activity.lock().await,
            ip: None,
            peer_id: self.net().map(|n| n.peer_id.to_string()),
            free_disk_bytes: self.free_disk().await,
            known_revision: (trust.revision > 0).then_some(trust.revision),
            warnings,
            swarm_addrs: self
                .net()
                .and_then(|n| crate::peers::port_of(&n.listen_addr))
                .map(|port| crate::peers::swarm_addrs(self.inner.config.swarm_listen.ip(), port))
                .unwrap_or_default(),
        };
        let resp = self.inner.client.heartbeat(&req).await?;
        let bundle = resp.trust;
        // Root rotations, the online key, the timestamp, then the
        // instructions: anything that does not check out is not acted on.
        let instructions =
            match trust.accept(&bundle, &self.inner.config.device_id, self.now_unix()) {
                Ok(i) => i,
                Err(e) => {
                    tracing::warn!(error = %e, "refused the coordinator's answer");
                    self.warn(format!("instructions refused: {e}")).await;
                    return Ok(resp.poll_interval_ms.max(50));
                }
            };
        if let Some(ins) = instructions {
            self.apply_instructions(&ins).await?;
        }
        // Committed after what it vouches for, so a crash in between makes the
        // node ask for the same instructions again.
        self.inner.state.set_trust(&trust)?;
        // Every poll: store peers mDNS did not bring (or that went away) are
        // dialled at the addresses the coordinator vouches for.
        if let Some(net) = self.net() {
            crate::peers::dial_members(&net, &self.inner.state.store_members()?).await?;
        }
        Ok(resp.poll_interval_ms.max(50))
    }

    /// Applies accepted instructions: settings, new and changed tasks, and
    /// the end of tasks the coordinator no longer lists.
    async fn apply_instructions(&self, ins: &Instructions) -> Result<()> {
        self.inner.state.set_settings(&ins.settings)?;
        *self.inner.settings.lock().await = ins.settings.clone();
        let mut members = ins.store_members.clone();
        members.truncate(tillswarm_protocol::trust::MAX_STORE_MEMBERS);
        self.inner.state.set_store_members(&members)?;
        if let Some(net) = self.net() {
            net.set_members(members.clone()).await?;
            crate::peers::dial_members(&net, &members).await?;
        }
        let (gone, replaced) = self.inner.state.sync_assignments(&ins.assignments)?;
        for &id in &replaced {
            tracing::warn!(task = %id, "the coordinator reused a task id for other work; treating it as a new task");
        }
        for id in gone.into_iter().chain(replaced.iter().copied()) {
            if let Some(job) = self.inner.jobs.lock().await.remove(&id) {
                job.abort();
            }
            if !replaced.contains(&id) {
                self.inner.state.remove_task(id)?;
            }
            if self
                .inner
                .ui
                .status()
                .await
                .prompt
                .is_some_and(|p| p.task_id == id)
            {
                self.inner.ui.close_prompt().await;
            }
        }
        Ok(())
    }

    /// Queues a warning for the next heartbeat (operators see it on the device).
    async fn warn(&self, text: String) {
        let mut w = self.inner.warnings.lock().await;
        if w.len() < tillswarm_protocol::api::MAX_WARNINGS && !w.contains(&text) {
            w.push(
                text.chars()
                    .take(tillswarm_protocol::api::MAX_SHORT_FIELD_LEN)
                    .collect(),
            );
        }
    }

    /// Moves every task on by one step where it can.
    async fn step(&self) -> Result<()> {
        let tasks = self.inner.state.tasks()?;
        let installed = self.inner.state.installed_version()?;
        let mut busy: HashSet<TaskId> = HashSet::new();
        {
            let mut jobs = self.inner.jobs.lock().await;
            jobs.retain(|_, j| !j.is_finished());
            busy.extend(jobs.keys().copied());
        }
        let installing = tasks
            .iter()
            .any(|t| t.state == TargetState::Installing && busy.contains(&t.assignment.task_id));
        // Cut off from fresh signed timestamps (withheld, or the coordinator
        // away for long): start nothing new on the coordinator's word; the
        // heartbeat says `stale_instructions`. The manual path still works.
        let trust = self.trust()?;
        let stale = trust.revision > 0 && trust.is_stale(self.now_unix());
        for t in &tasks {
            let id = t.assignment.task_id;
            if busy.contains(&id) {
                continue;
            }
            let moves_on = matches!(
                t.state,
                TargetState::Pending
                    | TargetState::Downloading
                    | TargetState::Downloaded
                    | TargetState::AwaitingCashier
            );
            if stale && moves_on && id != DROP_IN_TASK {
                continue;
            }
            match t.state {
                TargetState::Pending | TargetState::Downloading => {
                    if is_not_newer(&t.assignment, installed.as_ref()) {
                        // Say why, so an operator sees it in the task's details.
                        let why = format!(
                            "skipped: the till runs {}, not older than {}",
                            installed.as_ref().map_or("?", |v| v.as_str()),
                            t.assignment.version
                        );
                        self.inner
                            .state
                            .set_state(id, TargetState::Skipped, Some(&why), None)?;
                        continue;
                    }
                    self.spawn_download(t.clone()).await;
                }
                TargetState::Downloaded => self.after_download(t).await?,
                TargetState::AwaitingCashier => {
                    if !installing {
                        self.awaiting_cashier(t).await?;
                    }
                }
                TargetState::Declined => {
                    if t.declined_boot != Some(self.inner.boot) {
                        // A restart since the decline: ask again.
                        self.inner
                            .state
                            .set_state(id, TargetState::Downloaded, None, None)?;
                    }
                }
                TargetState::Installing => {
                    // Not busy: the node died while up.sh ran. Say so; an operator
                    // restart of the task installs again.
                    self.inner.state.set_state(
                        id,
                        TargetState::Failed,
                        Some("install interrupted (node restarted while up.sh ran); restart the task to reinstall"),
                        None,
                    )?;
                }
                TargetState::Rebooting => {
                    if installed.as_ref() == Some(&t.assignment.version) {
                        self.inner
                            .state
                            .set_state(id, TargetState::Installed, None, None)?;
                    }
                }
                TargetState::Installed | TargetState::Failed | TargetState::Skipped => {}
            }
        }
        self.scan_drop_ins(installed.as_ref()).await?;
        if self.inner.ui.take_manual_install().await {
            self.manual_install(&tasks).await?;
        }
        self.update_activity(&tasks, &busy).await;
        Ok(())
    }

    /// Every `drop_in_scan_s`, looks in `<update_root>/update/` for what a
    /// person dropped in (see [`crate::dropin`]) and offers the newest newer
    /// package like an Update task.
    async fn scan_drop_ins(&self, installed: Option<&Version>) -> Result<()> {
        {
            let mut last = self.inner.last_scan.lock().await;
            let every = Duration::from_secs(self.inner.config.drop_in_scan_s);
            if last.is_some_and(|at| at.elapsed() < every) {
                return Ok(());
            }
            *last = Some(tokio::time::Instant::now());
        }
        let room = self.room().await;
        let trust = self.trust()?;
        let now_unix = (self.now().max(0) / 1000) as u64;
        let (agent, installed) = (self.clone(), installed.cloned());
        let warnings = tokio::task::spawn_blocking(move || {
            let c = &agent.inner.config;
            crate::dropin::Scan {
                update_dir: &c.update_dir(),
                installed: installed.as_ref(),
                trust: &trust,
                now_unix,
                store: &agent.inner.store,
                room,
                allow_unsigned: c.allow_unsigned_dropin,
                state: &agent.inner.state,
            }
            .run()
        })
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e)))??;
        for w in warnings {
            self.warn(w).await;
        }
        Ok(())
    }

    /// Free bytes on the update volume less the reserve, when known.
    async fn room(&self) -> Option<u64> {
        let c = &self.inner.config;
        df_free(&existing_ancestor(&c.update_root))
            .await
            .map(|free| free.saturating_sub(c.disk_reserve_mb.saturating_mul(1 << 20)))
    }

    async fn update_activity(&self, tasks: &[LocalTask], busy: &HashSet<TaskId>) {
        let waiting_for_sale = self
            .inner
            .waiting_for_sale
            .load(std::sync::atomic::Ordering::Relaxed);
        let state = if tasks.iter().any(|t| t.state == TargetState::Installing) {
            DeviceState::Installing
        } else if tasks
            .iter()
            .any(|t| t.state == TargetState::AwaitingCashier)
        {
            DeviceState::AwaitingCashier
        } else if waiting_for_sale {
            // An install job waits for the POS to leave sale mode.
            DeviceState::WaitingForSaleEnd
        } else if tasks.iter().any(|t| busy.contains(&t.assignment.task_id)) {
            DeviceState::Downloading
        } else {
            DeviceState::Ready
        };
        *self.inner.activity.lock().await = state;
        let version = self.inner.state.installed_version().ok().flatten();
        self.inner
            .ui
            .set_activity(version, format!("{state:?}").to_lowercase())
            .await;
    }

    async fn after_download(&self, t: &LocalTask) -> Result<()> {
        let id = t.assignment.task_id;
        let a = &t.assignment;
        if a.kind != TaskKind::Download
            && (a.hold_install || a.install_until_unix.is_some_and(|u| self.now_unix() >= u))
        {
            // Staged; the coordinator has not let this till install yet (a
            // few tills of the store at a time, inside the store's window).
            return Ok(());
        }
        match t.assignment.kind {
            TaskKind::Download => {}
            TaskKind::Update => {
                let timeout = self.inner.settings.lock().await.auto_update_timeout_minutes;
                if timeout.is_some() {
                    self.inner.state.set_asked(id, self.now())?;
                    self.inner
                        .state
                        .set_state(id, TargetState::AwaitingCashier, None, None)?;
                    // Show the prompt now, before the state is reported.
                    if let Some(asking) = self.inner.state.task(id)? {
                        self.awaiting_cashier(&asking).await?;
                    }
                }
                // No timeout configured: never ask; wait for a manual install.
            }
            TaskKind::ForcedUpdate => {
                let at = t.assignment.install_at_unix.map_or(0, |s| s as i64 * 1000);
                if self.now() >= at {
                    self.spawn_install(t.clone()).await;
                }
            }
        }
        Ok(())
    }

    async fn awaiting_cashier(&self, t: &LocalTask) -> Result<()> {
        let id = t.assignment.task_id;
        let Some(minutes) = self.inner.settings.lock().await.auto_update_timeout_minutes else {
            // The setting was removed while asking: stop asking.
            self.inner.ui.close_prompt().await;
            return self
                .inner
                .state
                .set_state(id, TargetState::Downloaded, None, None);
        };
        let asked = t.asked_ms.unwrap_or_else(|| self.now());
        let deadline = asked + i64::from(minutes) * 60_000;
        self.inner
            .ui
            .ask(Prompt {
                task_id: id,
                version: t.assignment.version.clone(),
                deadline_ms: deadline,
            })
            .await;
        match self.inner.ui.take_answer(id).await {
            Some(Answer::Accept) => {
                tracing::info!(task = %id, "cashier accepted the update");
                self.spawn_install(t.clone()).await;
            }
            Some(Answer::Decline) => {
                tracing::info!(task = %id, "cashier declined; asking again after the next restart");
                self.inner.ui.close_prompt().await;
                self.inner.state.set_declined(id, self.inner.boot)?;
            }
            None if self.now() >= deadline => {
                tracing::info!(task = %id, "no answer from the cashier in time; installing");
                self.spawn_install(t.clone()).await;
            }
            None => {}
        }
        Ok(())
    }

    async fn manual_install(&self, tasks: &[LocalTask]) -> Result<()> {
        let candidate = tasks
            .iter()
            .filter(|t| {
                t.assignment.kind != TaskKind::Download
                    && matches!(
                        t.state,
                        TargetState::Downloaded
                            | TargetState::AwaitingCashier
                            | TargetState::Declined
                    )
            })
            .max_by(|a, b| a.assignment.version.cmp(&b.assignment.version));
        match candidate {
            Some(t) => {
                tracing::info!(task = %t.assignment.task_id, version = %t.assignment.version, "manual install");
                self.spawn_install(t.clone()).await;
            }
            None => tracing::warn!("manual install requested, but no staged update is waiting"),
        }
        Ok(())
    }

    /// Sends a report for every task whose state the coordinator has not heard;
    /// progress-only changes at most every [`PROGRESS_REPORT`].
    async fn flush_reports(&self) {
        let now = tokio::time::Instant::now();
        if self
            .inner
            .report_retry
            .lock()
            .await
            .1
            .is_some_and(|at| now < at)
        {
            return;
        }
        let Ok(tasks) = self.inner.state.tasks() else {
            return;
        };
        for t in tasks
            .into_iter()
            .filter(|t| t.unreported && t.assignment.task_id != DROP_IN_TASK)
        {
            let id = t.assignment.task_id;
            {
                let last = self.inner.last_report.lock().await;
                if t.state == TargetState::Downloading
                    && last
                        .get(&id)
                        .is_some_and(|&at| now.duration_since(at) < PROGRESS_REPORT)
                {
                    continue;
                }
            }
            let Ok(seq) = self.inner.state.next_seq() else {
                return;
            };
            let report = ProgressReport {
                device_id: self.inner.config.device_id,
                task_id: id,
                attempt: t.assignment.attempt,
                seq,
                state: t.state,
                bytes_done: t.bytes_done,
                wan_bytes: t.wan_bytes,
                lan_bytes: t.lan_bytes,
                error: t.error.clone(),
                log_tail: t.log_tail.clone(),
            };
            match self.inner.client.report(&report).await {
                Ok(_) => {
                    let _ = self.inner.state.mark_reported(id, t.change);
                    self.inner.last_report.lock().await.insert(id, now);
                    let mut retry = self.inner.report_retry.lock().await;
                    retry.0.succeeded();
                    retry.1 = None;
                }
                Err(e) => {
                    // Refused or unreachable: wait (exponentially, with jitter)
                    // before any report is tried again.
                    let mut retry = self.inner.report_retry.lock().await;
                    let wait = retry.0.failed(crate::backoff::unit());
                    retry.1 = Some(tokio::time::Instant::now() + wait);
                    tracing::warn!(task = %id, error = %e, retry_in = ?wait, "report failed");
                    return;
                }
            }
        }
    }
}

/// True when the till already runs this version or a newer one (and the task
/// is not an explicit rollback): nothing to do, never downgrade.
fn is_not_newer(a: &Assignment, installed: Option<&Version>) -> bool {
    match installed {
        Some(v) if a.rollback => *v == a.version,
        Some(v) => *v >= a.version,
        None => false,
    }
}

/// `path`, or its nearest ancestor that exists (the update root may not yet).
fn existing_ancestor(path: &std::path::Path) -> std::path::PathBuf {
    path.ancestors()
        .find(|p| p.exists())
        .unwrap_or(std::path::Path::new("/"))
        .to_path_buf()
}

/// Free bytes on the volume holding `path` (via `df -Pk`; `None` when unknown).
async fn df_free(path: &std::path::Path) -> Option<u64> {
    let out = tokio::process::Command::new("df")
        .arg("-Pk")
        .arg(path)
        .output()
        .await
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let kb: u64 = text
        .lines()
        .nth(1)?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Raised while an install waits for the POS to leave sale mode; lowered
/// when dropped.
struct WaitFlag<'a>(&'a std::sync::atomic::AtomicBool);

impl<'a> WaitFlag<'a> {
    fn raise(flag: &'a std::sync::atomic::AtomicBool) -> Self {
        flag.store(true, std::sync::atomic::Ordering::Relaxed);
        Self(flag)
    }
}

impl Drop for WaitFlag<'_> {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::Relaxed);
    }
}
