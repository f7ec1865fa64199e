//! The agent: heartbeats, keeps the local task list in step with the
//! coordinator, drives every task through its states, and reports.
//!
//! Its parts, each using only what it needs:
//! - the **loop** (this file): owns the agent's working state (`&mut self`),
//!   asks the [`policy`] what each task needs next and carries it out;
//! - the **policy** ([`policy`]): pure, unit-tested rules of the three task
//!   types (Download, Update with the cashier's prompt, Forced update);
//! - the **jobs** ([`jobs`]): a download (the one download driver, with
//!   staging beside it) and an install, spawned so heartbeats continue; they
//!   report back to the loop over a bounded channel;
//! - the **boot** ([`boot`]): the store swarm, discovery (injected; mDNS by
//!   default) and offering the store the packages this till holds;
//! - the **reports** ([`reports`]): heartbeat, signed instructions, progress.
//!
//! Every state change is committed to [`State`] before it is acted on.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tillswarm_protocol::api::{DeviceState, TargetState, TillSettings};
use tillswarm_protocol::clock::Clock;
use tillswarm_protocol::trust::TrustState;
use tillswarm_protocol::{TaskId, Version};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::chunks::ChunkStore;
use crate::client::CoordinatorClient;
use crate::config::NodeConfig;
use crate::discovery::Discovery;
use crate::error::{Error, Result};
use crate::local_api::{Answer, LocalUi, Prompt};
use crate::stage::ChunkSource;
use crate::state::{LocalTask, State};

mod boot;
mod jobs;
mod policy;
mod reports;

use policy::{Action, Facts};

/// Least time between two polls brought forward by store news.
const NEWS_MIN_GAP: Duration = Duration::from_secs(5);
/// How often the loop looks at its tasks when nothing wakes it.
const TICK: Duration = Duration::from_millis(200);
/// Job reports waiting for the loop (each job sends one or two).
const JOB_EVENTS: usize = 32;

/// What a node is built with besides its config. By default the coordinator
/// is the chunk source and discovery is mDNS (when `config.mdns` is on).
#[derive(Default)]
pub struct Wiring {
    /// Where chunks come from besides store peers (e.g. a simulated WAN link).
    pub source: Option<Arc<dyn ChunkSource>>,
    /// How store peers are found (e.g. a simulated LAN); replaces mDNS.
    pub discovery: Option<Box<dyn Discovery>>,
}

/// A running node. Cheap to clone.
#[derive(Clone)]
pub struct Agent {
    inner: Arc<Inner>,
}

/// What the loop and its jobs share; the loop's own state is in [`Loop`].
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
    /// The store swarm, once started (only with a swarm key).
    net: std::sync::OnceLock<crate::swarm::StoreNet>,
    /// Discovery, until the swarm starts it.
    discovery: std::sync::Mutex<Option<Box<dyn Discovery>>>,
    /// The cap on chunks from store peers (`lan_rate_limit_kbit`).
    lan_cap: Option<Arc<crate::client::RateLimiter>>,
    /// An install job is waiting for the POS to leave sale mode.
    waiting_for_sale: std::sync::atomic::AtomicBool,
}

impl Agent {
    /// Opens the node's state and stores, and counts this start as a boot.
    pub fn open(config: NodeConfig, clock: Arc<dyn Clock>, wiring: Wiring) -> Result<Self> {
        let mut opening = crate::state::Opening::open(&config.data_dir)?;
        opening.init_version(config.initial_version.as_ref())?;
        let boot = opening.next_boot()?;
        let state = opening.start()?;
        let store = Arc::new(ChunkStore::open(&config.data_dir.join("chunks"))?);
        let client = CoordinatorClient::for_till(&config)?;
        let source = wiring.source.unwrap_or_else(|| Arc::new(client.clone()));
        let discovery = wiring.discovery.or_else(|| {
            config
                .mdns
                .then(|| Box::new(crate::discovery::MdnsDiscovery::default()) as Box<dyn Discovery>)
        });
        let lan_cap = config
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
                net: std::sync::OnceLock::new(),
                discovery: std::sync::Mutex::new(discovery),
                lan_cap,
                waiting_for_sale: std::sync::atomic::AtomicBool::new(false),
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

    /// The store swarm, when it runs.
    pub fn net(&self) -> Option<crate::swarm::StoreNet> {
        self.inner.net.get().cloned()
    }

    /// Runs until `shutdown` turns true. Downloads in flight are aborted
    /// (their state is durable, so the next start resumes them); an install
    /// in flight is waited for, so a stop never cuts one in half.
    pub async fn run(self, shutdown: watch::Receiver<bool>) -> Result<()> {
        use tracing::Instrument;
        let span = tracing::info_span!("node", till = %self.inner.config.device_id);
        async move {
            let settings = self.inner.state.settings().await?;
            let base = self.inner.state.chunk_base_url().await?;
            self.inner.client.set_chunk_base(base.as_deref());
            Loop::new(self, settings).run(shutdown).await
        }
        .instrument(span)
        .await
    }

    fn now(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    fn now_unix(&self) -> u64 {
        (self.now().max(0) / 1000) as u64
    }

    /// The node's trust state: what it accepted, or its pinned root.
    async fn trust(&self) -> Result<TrustState> {
        Ok(self
            .inner
            .state
            .trust()
            .await?
            .unwrap_or_else(|| TrustState::pinned(self.inner.config.coordinator_public_key)))
    }

    /// The online key manifests must be signed by (`None` before the first
    /// accepted answer, or once its certificate expired).
    async fn online_key(&self) -> Result<Option<tillswarm_protocol::manifest::PublicKey>> {
        Ok(self.trust().await?.online_key(self.now_unix()))
    }

    /// Free bytes on the update volume less the reserve, when known.
    async fn room(&self) -> Option<u64> {
        let c = &self.inner.config;
        df_free(&existing_ancestor(&c.update_root))
            .await
            .map(|free| free.saturating_sub(c.disk_reserve_mb.saturating_mul(1 << 20)))
    }
}

/// Which kind of job runs for a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JobKind {
    Download,
    Install,
}

/// What a job tells the loop.
enum JobEvent {
    /// The job ended.
    Done {
        task: TaskId,
        kind: JobKind,
        result: Result<()>,
    },
    /// Send every pending report now (an install, before it reboots).
    FlushReports(oneshot::Sender<()>),
}

/// The agent's loop and the state only it touches.
struct Loop {
    agent: Agent,
    settings: TillSettings,
    /// Download or install jobs in flight, by task.
    jobs: HashMap<TaskId, (JobKind, JoinHandle<()>)>,
    events: mpsc::Receiver<JobEvent>,
    events_tx: mpsc::Sender<JobEvent>,
    /// When each task last reported, to throttle progress-only reports.
    last_report: HashMap<TaskId, tokio::time::Instant>,
    /// What the till is doing, for heartbeats.
    activity: DeviceState,
    /// When `update/` was last scanned for dropped-in packages.
    last_scan: Option<tokio::time::Instant>,
    /// Free disk bytes and when they were measured (at most once a minute).
    free_disk: Option<(tokio::time::Instant, Option<u64>)>,
    /// Warnings for the next heartbeat (refused instructions, unsigned drop-ins).
    warnings: Vec<String>,
    /// Pace of report retries after the coordinator refused or was away.
    report_retry: crate::backoff::Backoff,
    /// The earliest time of the next report try.
    report_again_at: Option<tokio::time::Instant>,
}

impl Loop {
    fn new(agent: Agent, settings: TillSettings) -> Self {
        let (events_tx, events) = mpsc::channel(JOB_EVENTS);
        Self {
            agent,
            settings,
            jobs: HashMap::new(),
            events,
            events_tx,
            last_report: HashMap::new(),
            activity: DeviceState::Ready,
            last_scan: None,
            free_disk: None,
            warnings: Vec::new(),
            report_retry: crate::backoff::Backoff::new(
                reports::REPORT_RETRY_BASE,
                reports::REPORT_RETRY_MAX,
            ),
            report_again_at: None,
        }
    }

    fn inner(&self) -> &Inner {
        &self.agent.inner
    }

    async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<()> {
        let swarm_task = self.agent.start_swarm(shutdown.clone()).await?;
        // Polling is paced by monotonic time; the injectable clock only decides
        // deadlines (cashier timeout, forced-update time).
        let mut next_heartbeat = tokio::time::Instant::now();
        let mut poll_ms = 1_000u64;
        let mut failures = 0u32;
        let mut last_news_poll: Option<tokio::time::Instant> = None;
        let mut notifier = crate::systemd::Notifier::new();
        loop {
            notifier.alive();
            if *shutdown.borrow() {
                break;
            }
            if tokio::time::Instant::now() >= next_heartbeat {
                let polled = self.heartbeat().await;
                notifier.polled(polled.is_ok());
                let wait = match polled {
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
            if let Some(net) = self.agent.net() {
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
                _ = self.agent.inner.ui.changed.notified() => {}
                _ = shutdown.changed() => {}
                Some(event) = self.events.recv() => self.on_job_event(event).await,
            }
        }
        // Downloads stop at once (they resume from durable state); an
        // install is never cut in half: the stop waits for it.
        self.jobs.retain(|_, (kind, job)| {
            if *kind == JobKind::Download {
                job.abort();
            }
            *kind == JobKind::Install
        });
        self.finish_installs(&mut notifier).await;
        if let Some(t) = swarm_task {
            let _ = t.await;
        }
        Ok(())
    }

    /// Waits for the installs in flight while the node stops, telling
    /// systemd to extend its stop timeout meanwhile. Job events are still
    /// served: an install asks for its reports to be sent before a reboot.
    async fn finish_installs(&mut self, notifier: &mut crate::systemd::Notifier) {
        // An install still waiting for the POS to leave sale mode has not
        // started up.sh: it stops like a download, and asks again next start.
        let running: Vec<TaskId> = match self.inner().state.tasks().await {
            Ok(tasks) => tasks
                .iter()
                .filter(|t| t.state == TargetState::Installing)
                .map(|t| t.assignment.task_id)
                .collect(),
            Err(_) => self.jobs.keys().copied().collect(),
        };
        self.jobs.retain(|id, (_, job)| {
            let keep = running.contains(id);
            if !keep {
                job.abort();
            }
            keep
        });
        if !self.jobs.is_empty() {
            tracing::warn!(
                installs = self.jobs.len(),
                "stopping once the running install finishes"
            );
        }
        loop {
            self.jobs.retain(|_, (_, job)| !job.is_finished());
            if self.jobs.is_empty() {
                return;
            }
            notifier.stopping_after_installs(self.jobs.len());
            tokio::select! {
                Some(event) = self.events.recv() => self.on_job_event(event).await,
                _ = tokio::time::sleep(crate::systemd::EXTEND_EVERY) => {}
            }
        }
    }

    async fn on_job_event(&mut self, event: JobEvent) {
        match event {
            JobEvent::Done { task, kind, result } => {
                self.jobs.remove(&task);
                let Err(e) = result else { return };
                // An install that failed fails its task; a download only
                // when retrying cannot help (coordinator away, a disk
                // hiccup: a later step tries again).
                let fails = kind == JobKind::Install || e.is_permanent();
                match kind {
                    JobKind::Install => tracing::error!(%task, error = %e, "install failed"),
                    JobKind::Download => tracing::warn!(%task, error = %e, "download failed"),
                }
                if fails {
                    let _ = self
                        .inner()
                        .state
                        .set_state(task, TargetState::Failed, Some(&e.to_string()), None)
                        .await;
                }
            }
            JobEvent::FlushReports(done) => {
                self.flush_reports().await;
                let _ = done.send(());
            }
        }
    }

    /// Moves every task on by one step where it can.
    async fn step(&mut self) -> Result<()> {
        // Finished jobs are dropped before the tasks are read: a job commits
        // its task's state before it ends, so a job that ends after this
        // line still counts as running below, and one that ended before it
        // left its state in what is read. (Read first, a job ending in
        // between looked like a task without a job, and its download was
        // started a second time.)
        self.jobs.retain(|_, (_, j)| !j.is_finished());
        let tasks = self.inner().state.tasks().await?;
        let installed = self.inner().state.installed_version().await?;
        let mut installing = self.jobs.values().any(|(k, _)| *k == JobKind::Install);
        // Cut off from fresh signed timestamps (withheld, or the coordinator
        // away for long): start nothing new on the coordinator's word; the
        // heartbeat says `stale_instructions`. The manual path still works.
        let trust = self.agent.trust().await?;
        let stale = trust.revision > 0 && trust.is_stale(self.agent.now_unix());
        for t in &tasks {
            let id = t.assignment.task_id;
            if self.jobs.contains_key(&id) {
                continue;
            }
            let answer = if t.state == TargetState::AwaitingCashier && !installing {
                self.inner().ui.take_answer(id).await
            } else {
                None
            };
            let facts = Facts {
                installed: installed.as_ref(),
                boot: self.inner().boot,
                now_ms: self.agent.now(),
                auto_update_timeout_minutes: self.settings.auto_update_timeout_minutes,
                stale,
                installing,
                answer,
            };
            let action = policy::next_action(t, &facts);
            installing |= action == Action::Install;
            self.act(t, action, answer).await?;
        }
        self.scan_drop_ins(installed.as_ref()).await?;
        if self.inner().ui.manual_install_requested().await {
            self.manual_install().await?;
        }
        self.update_activity(&tasks).await;
        Ok(())
    }

    /// Serves a pending manual install request (`tillswarm node install`).
    /// The tasks are read again: a job or the drop-in scan may have staged
    /// an update since the step began, and a request read against the older
    /// list was dropped as "nothing staged". A candidate whose job is still
    /// finishing keeps the request for the next step.
    async fn manual_install(&mut self) -> Result<()> {
        let tasks = self.inner().state.tasks().await?;
        let ui = &self.agent.inner.ui;
        match policy::manual_install_candidate(&tasks) {
            Some(t) if self.jobs.contains_key(&t.assignment.task_id) => {}
            Some(t) => {
                ui.take_manual_install().await;
                tracing::info!(task = %t.assignment.task_id, version = %t.assignment.version, "manual install");
                self.spawn(JobKind::Install, t.clone());
            }
            None => {
                ui.take_manual_install().await;
                tracing::warn!("manual install requested, but no staged update is waiting");
            }
        }
        Ok(())
    }

    /// Carries out the policy's decision for `t`.
    async fn act(&mut self, t: &LocalTask, action: Action, answer: Option<Answer>) -> Result<()> {
        let id = t.assignment.task_id;
        let (state, ui) = (&self.agent.inner.state, &self.agent.inner.ui);
        let prompt = |deadline_ms| Prompt {
            task_id: id,
            version: t.assignment.version.clone(),
            deadline_ms,
        };
        match action {
            Action::Wait => {}
            // Said in the task's error, so an operator sees why.
            Action::Skip(why) => {
                state
                    .set_state(id, TargetState::Skipped, Some(&why), None)
                    .await?
            }
            Action::Download => self.spawn(JobKind::Download, t.clone()),
            Action::Install => {
                if t.state == TargetState::AwaitingCashier {
                    match answer {
                        Some(_) => tracing::info!(task = %id, "cashier accepted the update"),
                        None => {
                            tracing::info!(task = %id, "no answer from the cashier in time; installing")
                        }
                    }
                }
                self.spawn(JobKind::Install, t.clone());
            }
            Action::Ask { deadline_ms } => {
                state.set_asked(id, self.agent.now()).await?;
                state
                    .set_state(id, TargetState::AwaitingCashier, None, None)
                    .await?;
                // Shown now, before the state is reported.
                ui.ask(prompt(deadline_ms)).await;
            }
            Action::KeepAsking { deadline_ms } => ui.ask(prompt(deadline_ms)).await,
            Action::Decline => {
                tracing::info!(task = %id, "cashier declined; asking again after the next restart");
                ui.close_prompt().await;
                state.set_declined(id, self.agent.inner.boot).await?;
            }
            Action::StopAsking => {
                ui.close_prompt().await;
                state
                    .set_state(id, TargetState::Downloaded, None, None)
                    .await?;
            }
            Action::AskAgain => {
                state
                    .set_state(id, TargetState::Downloaded, None, None)
                    .await?
            }
            Action::Interrupted => {
                state
                    .set_state(id, TargetState::Failed, Some(policy::INTERRUPTED), None)
                    .await?
            }
            Action::Installed => {
                state
                    .set_state(id, TargetState::Installed, None, None)
                    .await?
            }
        }
        Ok(())
    }

    /// Spawns a job for `t`; it reports back on the loop's channel.
    fn spawn(&mut self, kind: JobKind, t: LocalTask) {
        let id = t.assignment.task_id;
        let (agent, events) = (self.agent.clone(), self.events_tx.clone());
        let job = tokio::spawn(tracing::Instrument::instrument(
            async move {
                let result = match kind {
                    JobKind::Download => jobs::download(&agent, &t).await,
                    JobKind::Install => {
                        let r = jobs::install(&agent, &t, &events).await;
                        agent.inner.ui.request_leave_sale_mode(false).await;
                        r
                    }
                };
                let _ = events
                    .send(JobEvent::Done {
                        task: id,
                        kind,
                        result,
                    })
                    .await;
            },
            tracing::Span::current(),
        ));
        self.jobs.insert(id, (kind, job));
    }

    /// Every `drop_in_scan_s`, looks in `<update_root>/update/` for what a
    /// person dropped in (see [`crate::dropin`]) and offers the newest newer
    /// package like an Update task.
    async fn scan_drop_ins(&mut self, installed: Option<&Version>) -> Result<()> {
        let every = Duration::from_secs(self.inner().config.drop_in_scan_s);
        if self.last_scan.is_some_and(|at| at.elapsed() < every) {
            return Ok(());
        }
        self.last_scan = Some(tokio::time::Instant::now());
        let room = self.agent.room().await;
        let trust = self.agent.trust().await?;
        let now_unix = self.agent.now_unix();
        let (agent, installed) = (self.agent.clone(), installed.cloned());
        let warnings = tokio::task::spawn_blocking(move || {
            let i = &agent.inner;
            crate::dropin::Scan {
                update_dir: &i.config.update_dir(),
                installed: installed.as_ref(),
                trust: &trust,
                now_unix,
                store: &i.store,
                room,
                allow_unsigned: i.config.allow_unsigned_dropin,
                state: &i.state,
            }
            .run()
        })
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e)))??;
        for w in warnings {
            self.warn(w);
        }
        Ok(())
    }

    async fn update_activity(&mut self, tasks: &[LocalTask]) {
        let waiting_for_sale = self
            .inner()
            .waiting_for_sale
            .load(std::sync::atomic::Ordering::Relaxed);
        self.activity = policy::activity(tasks, |id| self.jobs.contains_key(&id), waiting_for_sale);
        let version = self.inner().state.installed_version().await.ok().flatten();
        let activity = format!("{:?}", self.activity).to_lowercase();
        self.inner().ui.set_activity(version, activity).await;
    }
}

/// `path`, or its nearest ancestor that exists (the update root may not yet).
fn existing_ancestor(path: &std::path::Path) -> PathBuf {
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
