//! The agent's jobs, spawned so heartbeats continue meanwhile: a download
//! (the one download driver, through the store swarm when there is one,
//! staging beside it) and an install (leave sale mode, run `up.sh`, record,
//! reboot). They commit their own state changes and tell the loop when they
//! end (see [`super::JobEvent`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tillswarm_protocol::api::TargetState;
use tokio::sync::{mpsc, oneshot};

use super::{Agent, JobEvent};
use crate::error::{Error, Result};
use crate::install;
use crate::stage::{self, Progress};
use crate::state::{DROP_IN_TASK, LocalTask};

/// No WAN fetch in the swarm's first milliseconds: a node that starts a task at
/// boot first finds its store peers (mDNS answers within about a second), so it
/// does not take every chunk for itself.
const SWARM_WARM_UP_MS: i64 = 3_000;
/// Longest wait for the store's tills that already hold a package (one may
/// be restarting) before fetching it over the WAN.
const HOLDER_WAIT_MS: i64 = 10_000;
/// Least time between two progress writes of a download (the last one is
/// always written): per-chunk progress is batched, not a write per chunk.
const PROGRESS_WRITE: Duration = Duration::from_millis(500);

/// Fetches, verifies and stages `t`'s package; the task ends `Downloaded`.
pub(super) async fn download(agent: &Agent, t: &LocalTask) -> Result<()> {
    let (id, i) = (t.assignment.task_id, &agent.inner);
    tracing::info!(task = %id, version = %t.assignment.version, "download started");
    if t.state == TargetState::Pending {
        i.state
            .set_state(id, TargetState::Downloading, None, None)
            .await?;
    }
    let Some(online) = agent.online_key().await? else {
        return Err(Error::Coordinator(
            "no certified online key yet to check manifests with".into(),
        ));
    };
    let manifest = stage::manifest_for(
        &t.assignment,
        &online,
        &i.client,
        &i.config.data_dir.join("manifests"),
    )
    .await?;
    // Refused before a chunk is fetched when it cannot fit; unpacking
    // stops at the same cap.
    let cap = stage::unpack_cap(&manifest, agent.room().await)?;
    let start = Progress {
        bytes_done: t.bytes_done,
        wan_bytes: t.wan_bytes,
        lan_bytes: t.lan_bytes,
    };
    // The latest progress is written every PROGRESS_WRITE, not per chunk.
    let latest = Arc::new(tokio::sync::Mutex::new(None::<Progress>));
    let _writer = {
        let (latest, state) = (latest.clone(), i.state.clone());
        AbortOnDrop(tokio::spawn(async move {
            let mut every = tokio::time::interval(PROGRESS_WRITE);
            loop {
                every.tick().await;
                // Written under the lock, so the final write below is last.
                let mut l = latest.lock().await;
                if let Some(p) = l.take() {
                    let _ = state
                        .set_progress(id, p.bytes_done, p.wan_bytes, p.lan_bytes)
                        .await;
                }
            }
        }))
    };
    let on_progress = {
        let latest = latest.clone();
        move |p: Progress| {
            // Held by the writer only while it writes; a busy slot skips
            // this one (a newer one follows, and the last is written below).
            if let Ok(mut l) = latest.try_lock() {
                *l = Some(p);
            }
        }
    };
    // Staging runs beside the download, unpacking chunks as they land.
    let following = Arc::new(stage::Following::default());
    let staging = {
        let (manifest, store, follow) = (manifest.clone(), i.store.clone(), following.clone());
        let update_dir = i.config.update_dir();
        tokio::task::spawn_blocking(move || {
            stage::stage_following(&manifest, &store, &update_dir, cap, Some(&follow))
        })
    };
    // Stops the staging if the download ends early, also when this
    // future is dropped (the task was paused or deleted).
    struct GiveUp(Arc<stage::Following>);
    impl Drop for GiveUp {
        fn drop(&mut self) {
            self.0.give_up();
        }
    }
    let give_up = GiveUp(following);
    let fetched = fetch(agent, &manifest, t, start, on_progress).await;
    tracing::debug!(task = %id, ok = fetched.is_ok(), "download ended; finishing the staging");
    if fetched.is_err() {
        drop(give_up);
    }
    let staged = staging
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e)));
    let progress = fetched?;
    staged??;
    {
        let mut l = latest.lock().await;
        l.take();
        i.state
            .set_progress(
                id,
                progress.bytes_done,
                progress.wan_bytes,
                progress.lan_bytes,
            )
            .await?;
    }
    i.state
        .set_state(id, TargetState::Downloaded, None, None)
        .await?;
    tracing::info!(task = %id, version = %t.assignment.version, wan = progress.wan_bytes, lan = progress.lan_bytes, "package staged");
    Ok(())
}

/// Fetches the package's missing chunks with the one download driver: with
/// the store swarm's peers when there is one, else with none (every chunk
/// from the coordinator).
async fn fetch(
    agent: &Agent,
    manifest: &tillswarm_protocol::manifest::Manifest,
    t: &LocalTask,
    start: Progress,
    on_progress: impl FnMut(Progress),
) -> Result<Progress> {
    let i = &agent.inner;
    let net = agent.net();
    let mut limits = crate::swarm::planner::Limits::default();
    let mut expected = crate::swarm::fetch::Expected::default();
    if let Some(net) = &net {
        // The store's other tills of the task own their share of the WAN
        // work until every till knows the task (bounded, in case clocks
        // disagree); after that only those that joined do.
        let join_in_ms = t
            .assignment
            .join_by_unix_ms
            .map_or(0, |at| at as i64 - agent.now())
            .clamp(0, 120_000);
        expected = crate::swarm::fetch::Expected {
            devices: t.assignment.store_peers.iter().copied().collect(),
            until_ms: net.now_ms() + join_in_ms,
            holders: t.assignment.store_holders.iter().copied().collect(),
            holders_until_ms: net.now_ms() + HOLDER_WAIT_MS,
        };
        limits.wan_start_ms = SWARM_WARM_UP_MS;
    }
    crate::swarm::fetch::fetch_package(
        manifest,
        &i.store,
        net.as_ref(),
        i.source.as_ref(),
        limits,
        &expected,
        i.lan_cap.as_ref(),
        start,
        on_progress,
    )
    .await
}

/// Leaves sale mode (bounded wait for the POS), runs `up.sh`, records the
/// result, reports it, and reboots on success.
pub(super) async fn install(
    agent: &Agent,
    t: &LocalTask,
    events: &mpsc::Sender<JobEvent>,
) -> Result<()> {
    let (id, i) = (t.assignment.task_id, &agent.inner);
    let c = &i.config;
    let staged: PathBuf = c.update_dir().join(t.assignment.version.as_str());
    // Only our own verified staging (of a task, or of a signed bundle
    // dropped in), unless the till allows unsigned drop-ins.
    let unsigned_ok = id == DROP_IN_TASK && c.allow_unsigned_dropin;
    if !unsigned_ok && !stage::is_staged(&staged, &t.assignment.package_id) {
        return Err(Error::Install(format!(
            "{} is not staged (verified) on this till",
            staged.display()
        )));
    }
    i.ui.close_prompt().await;
    i.ui.request_leave_sale_mode(true).await;
    let wait_until = tokio::time::Instant::now() + Duration::from_secs(c.sale_mode_timeout_s);
    // Lowered once the install is under way, and also when the job is
    // dropped (the task withdrawn mid-wait), so the state never sticks.
    let waiting = WaitFlag::raise(&i.waiting_for_sale);
    while !i.ui.sale_mode_left().await && tokio::time::Instant::now() < wait_until {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = i.ui.changed.notified() => {}
        }
    }
    if !i.ui.sale_mode_left().await {
        tracing::warn!(task = %id, "the POS did not confirm leaving sale mode in time; installing anyway");
    }
    i.state
        .set_state(id, TargetState::Installing, None, None)
        .await?;
    drop(waiting);
    flush_reports(events).await;
    let outcome = install::run_up_sh(
        &staged,
        &c.update_root,
        &t.assignment.version,
        Duration::from_secs(c.install_timeout_s),
        &c.data_dir.join("logs"),
    )
    .await?;
    if !outcome.success {
        i.state
            .set_state(
                id,
                TargetState::Failed,
                outcome.error.as_deref(),
                Some(&outcome.log_tail),
            )
            .await?;
        return Ok(());
    }
    i.state.set_installed(&t.assignment.version).await?;
    i.state
        .set_state(id, TargetState::Rebooting, None, Some(&outcome.log_tail))
        .await?;
    // The report must leave before the reboot takes the node down.
    flush_reports(events).await;
    install::reboot(&c.reboot_command).await?;
    if c.reboot_command.trim() == "none" {
        i.state
            .set_state(id, TargetState::Installed, None, None)
            .await?;
    }
    Ok(())
}

/// Aborts a spawned helper task when dropped (its job ended or was aborted).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Asks the loop to send every pending report now, and waits until it has.
async fn flush_reports(events: &mpsc::Sender<JobEvent>) {
    let (done, sent) = oneshot::channel();
    if events.send(JobEvent::FlushReports(done)).await.is_ok() {
        let _ = sent.await;
    }
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
