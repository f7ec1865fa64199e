//! The loop's talk with the coordinator: the heartbeat (and the signed
//! instructions it brings back), and progress reports with retries.

use std::time::Duration;

use tillswarm_protocol::api::{HeartbeatRequest, ProgressReport, TargetState};
use tillswarm_protocol::trust::Instructions;

use super::{Loop, df_free};
use crate::error::Result;
use crate::state::DROP_IN_TASK;

/// Least time between two progress-only reports of one task.
const PROGRESS_REPORT: Duration = Duration::from_secs(2);
/// First wait before a failed report is sent again; it doubles (with jitter)
/// up to [`REPORT_RETRY_MAX`].
pub(super) const REPORT_RETRY_BASE: Duration = Duration::from_secs(1);
/// Longest wait between two tries of a failed report.
pub(super) const REPORT_RETRY_MAX: Duration = Duration::from_secs(120);

impl Loop {
    /// Sends a heartbeat and acts on what comes back; the next poll interval.
    pub(super) async fn heartbeat(&mut self) -> Result<u64> {
        let mut trust = self.agent.trust().await?;
        let mut warnings = std::mem::take(&mut self.warnings);
        if trust.revision > 0 && trust.is_stale(self.agent.now_unix()) {
            warnings.push("stale_instructions".into());
        }
        warnings.truncate(tillswarm_protocol::api::MAX_WARNINGS);
        let net = self.agent.net();
        let req = HeartbeatRequest {
            device_id: self.inner().config.device_id,
            version: self.inner().state.installed_version().await?,
            state: self.activity,
            ip: None,
            peer_id: net.as_ref().map(|n| n.peer_id.to_string()),
            free_disk_bytes: self.free_disk().await,
            known_revision: (trust.revision > 0).then_some(trust.revision),
            warnings,
            swarm_addrs: net
                .as_ref()
                .and_then(|n| crate::peers::port_of(&n.listen_addr))
                .map(|port| crate::peers::swarm_addrs(self.inner().config.swarm_listen.ip(), port))
                .unwrap_or_default(),
            connected_peers: net
                .as_ref()
                .map(|n| u32::try_from(n.connected_peers()).unwrap_or(u32::MAX)),
        };
        let resp = self.inner().client.heartbeat(&req).await?;
        let bundle = resp.trust;
        // Root rotations, the online key, the timestamp, then the
        // instructions: anything that does not check out is not acted on.
        let device = self.inner().config.device_id;
        let instructions = match trust.accept(&bundle, &device, self.agent.now_unix()) {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(error = %e, "refused the coordinator's answer");
                self.warn(format!("instructions refused: {e}"));
                return Ok(resp.poll_interval_ms.max(50));
            }
        };
        if let Some(ins) = instructions {
            self.apply_instructions(&ins).await?;
        }
        // Committed after what it vouches for, so a crash in between makes the
        // node ask for the same instructions again.
        self.inner().state.set_trust(&trust).await?;
        // Every poll: store peers mDNS did not bring (or that went away) are
        // dialled at the addresses the coordinator vouches for.
        if let Some(net) = &net {
            let members = self.inner().state.store_members().await?;
            crate::peers::dial_members(net, &members).await?;
        }
        Ok(resp.poll_interval_ms.max(50))
    }

    /// Applies accepted instructions: settings, new and changed tasks, and
    /// the end of tasks the coordinator no longer lists.
    async fn apply_instructions(&mut self, ins: &Instructions) -> Result<()> {
        self.inner().state.set_settings(&ins.settings).await?;
        self.settings = ins.settings.clone();
        let base = ins.chunk_base_url.as_deref();
        self.inner().state.set_chunk_base_url(base).await?;
        self.inner().client.set_chunk_base(base);
        let mut members = ins.store_members.clone();
        members.truncate(tillswarm_protocol::trust::MAX_STORE_MEMBERS);
        self.inner().state.set_store_members(&members).await?;
        if let Some(net) = self.agent.net() {
            net.set_members(members.clone()).await?;
            crate::peers::dial_members(&net, &members).await?;
        }
        let (gone, replaced) = self
            .inner()
            .state
            .sync_assignments(&ins.assignments)
            .await?;
        for &id in &replaced {
            tracing::warn!(task = %id, "the coordinator reused a task id for other work; treating it as a new task");
        }
        for id in gone.into_iter().chain(replaced.iter().copied()) {
            if let Some((_, job)) = self.jobs.remove(&id) {
                job.abort();
            }
            if !replaced.contains(&id) {
                self.inner().state.remove_task(id).await?;
            }
            let ui = &self.inner().ui;
            if ui.status().await.prompt.is_some_and(|p| p.task_id == id) {
                ui.close_prompt().await;
            }
        }
        Ok(())
    }

    /// Queues a warning for the next heartbeat (operators see it on the device).
    pub(super) fn warn(&mut self, text: String) {
        let w = &mut self.warnings;
        if w.len() < tillswarm_protocol::api::MAX_WARNINGS && !w.contains(&text) {
            w.push(
                text.chars()
                    .take(tillswarm_protocol::api::MAX_SHORT_FIELD_LEN)
                    .collect(),
            );
        }
    }

    /// Free bytes on the data volume, measured at most once a minute.
    async fn free_disk(&mut self) -> Option<u64> {
        match self.free_disk {
            Some((at, bytes)) if at.elapsed() < Duration::from_secs(60) => bytes,
            _ => {
                let bytes = df_free(&self.inner().config.data_dir).await;
                self.free_disk = Some((tokio::time::Instant::now(), bytes));
                bytes
            }
        }
    }

    /// Sends a report for every task whose state the coordinator has not heard;
    /// progress-only changes at most every [`PROGRESS_REPORT`].
    pub(super) async fn flush_reports(&mut self) {
        let now = tokio::time::Instant::now();
        if self.report_again_at.is_some_and(|at| now < at) {
            return;
        }
        let Ok(tasks) = self.inner().state.tasks().await else {
            return;
        };
        for t in tasks
            .into_iter()
            .filter(|t| t.unreported && t.assignment.task_id != DROP_IN_TASK)
        {
            let id = t.assignment.task_id;
            if t.state == TargetState::Downloading
                && self
                    .last_report
                    .get(&id)
                    .is_some_and(|&at| now.duration_since(at) < PROGRESS_REPORT)
            {
                continue;
            }
            let Ok(seq) = self.inner().state.next_seq().await else {
                return;
            };
            let report = ProgressReport {
                device_id: self.inner().config.device_id,
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
            match self.inner().client.report(&report).await {
                Ok(_) => {
                    let _ = self.inner().state.mark_reported(id, t.change).await;
                    self.last_report.insert(id, now);
                    self.report_retry.succeeded();
                    self.report_again_at = None;
                }
                Err(e) => {
                    // Refused or unreachable: wait (exponentially, with jitter)
                    // before any report is tried again.
                    let wait = self.report_retry.failed(crate::backoff::unit());
                    self.report_again_at = Some(tokio::time::Instant::now() + wait);
                    tracing::warn!(task = %id, error = %e, retry_in = ?wait, "report failed");
                    return;
                }
            }
        }
    }
}
