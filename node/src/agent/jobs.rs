//! The agent's jobs, spawned so heartbeats continue meanwhile: a download
//! (fetch through the store swarm or from the coordinator alone, staging
//! beside it) and an install (leave sale mode, run `up.sh`, record, reboot).

use super::*;

impl Agent {
    pub(super) async fn spawn_download(&self, t: LocalTask) {
        let id = t.assignment.task_id;
        let this = self.clone();
        let span = tracing::Span::current();
        let job = tokio::spawn(tracing::Instrument::instrument(
            async move {
                if let Err(e) = this.download(&t).await {
                    tracing::warn!(task = %id, error = %e, "download failed");
                    let permanent = matches!(e, Error::Verify(_) | Error::Install(_));
                    if permanent {
                        let _ = this.inner.state.set_state(
                            id,
                            TargetState::Failed,
                            Some(&e.to_string()),
                            None,
                        );
                    }
                    // Other errors (coordinator unreachable, disk hiccup) retry on a later step.
                }
            },
            span,
        ));
        self.inner.jobs.lock().await.insert(id, job);
    }

    async fn download(&self, t: &LocalTask) -> Result<()> {
        let id = t.assignment.task_id;
        let c = &self.inner.config;
        tracing::info!(task = %id, version = %t.assignment.version, "download started");
        if t.state == TargetState::Pending {
            self.inner
                .state
                .set_state(id, TargetState::Downloading, None, None)?;
        }
        let Some(online) = self.online_key()? else {
            return Err(Error::Coordinator(
                "no certified online key yet to check manifests with".into(),
            ));
        };
        let manifest = stage::manifest_for(
            &t.assignment,
            &online,
            &self.inner.client,
            &c.data_dir.join("manifests"),
        )
        .await?;
        // Refused before a chunk is fetched when it cannot fit; unpacking
        // stops at the same cap.
        let cap = stage::unpack_cap(&manifest, self.room().await)?;
        let start = Progress {
            bytes_done: t.bytes_done,
            wan_bytes: t.wan_bytes,
            lan_bytes: t.lan_bytes,
        };
        let state = self.inner.state.clone();
        let on_progress = move |p: Progress| {
            let _ = state.set_progress(id, p.bytes_done, p.wan_bytes, p.lan_bytes);
        };
        // Staging runs beside the download, unpacking chunks as they land.
        let following = Arc::new(stage::Following::default());
        let staging = {
            let (manifest, store, follow) = (
                manifest.clone(),
                self.inner.store.clone(),
                following.clone(),
            );
            let update_dir = c.update_dir();
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
        let fetched = self.fetch(&manifest, t, start, on_progress).await;
        tracing::debug!(task = %id, ok = fetched.is_ok(), "download ended; finishing the staging");
        if fetched.is_err() {
            drop(give_up);
        }
        let staged = staging
            .await
            .map_err(|e| Error::Io(std::io::Error::other(e)));
        let progress = fetched?;
        staged??;
        self.inner.state.set_progress(
            id,
            progress.bytes_done,
            progress.wan_bytes,
            progress.lan_bytes,
        )?;
        self.inner
            .state
            .set_state(id, TargetState::Downloaded, None, None)?;
        tracing::info!(task = %id, version = %t.assignment.version, wan = progress.wan_bytes, lan = progress.lan_bytes, "package staged");
        Ok(())
    }

    /// Fetches the package's missing chunks: through the store swarm when
    /// there is one, else from the coordinator alone.
    async fn fetch(
        &self,
        manifest: &tillswarm_protocol::manifest::Manifest,
        t: &LocalTask,
        start: Progress,
        on_progress: impl FnMut(Progress),
    ) -> Result<Progress> {
        let progress = match self.net() {
            Some(net) => {
                // The store's other tills of the task own their share of the WAN
                // work until every till knows the task (bounded, in case clocks
                // disagree); after that only those that joined do.
                let join_in_ms = t
                    .assignment
                    .join_by_unix_ms
                    .map_or(0, |at| at as i64 - self.now())
                    .clamp(0, 120_000);
                let expected = crate::swarm::fetch::Expected {
                    devices: t.assignment.store_peers.iter().copied().collect(),
                    until_ms: net.now_ms() + join_in_ms,
                    holders: t.assignment.store_holders.iter().copied().collect(),
                    holders_until_ms: net.now_ms() + HOLDER_WAIT_MS,
                };
                let limits = crate::swarm::planner::Limits {
                    wan_start_ms: SWARM_WARM_UP_MS,
                    ..Default::default()
                };
                crate::swarm::fetch::fetch_package(
                    manifest,
                    &self.inner.store,
                    &net,
                    self.inner.source.as_ref(),
                    limits,
                    &expected,
                    self.inner.lan_cap.as_ref(),
                    start,
                    on_progress,
                )
                .await?
            }
            None => {
                stage::fetch_missing(
                    manifest,
                    &self.inner.store,
                    self.inner.source.as_ref(),
                    PARALLEL_FETCHES,
                    start,
                    on_progress,
                )
                .await?
            }
        };
        Ok(progress)
    }

    pub(super) async fn spawn_install(&self, t: LocalTask) {
        let id = t.assignment.task_id;
        let this = self.clone();
        let span = tracing::Span::current();
        let job = tokio::spawn(tracing::Instrument::instrument(
            async move {
                if let Err(e) = this.install(&t).await {
                    tracing::error!(task = %id, error = %e, "install failed");
                    let _ = this.inner.state.set_state(
                        id,
                        TargetState::Failed,
                        Some(&e.to_string()),
                        None,
                    );
                }
                this.inner.ui.request_leave_sale_mode(false).await;
            },
            span,
        ));
        self.inner.jobs.lock().await.insert(id, job);
    }

    /// Leaves sale mode (bounded wait for the POS), runs `up.sh`, records the
    /// result, reports it, and reboots on success.
    async fn install(&self, t: &LocalTask) -> Result<()> {
        let id = t.assignment.task_id;
        let c = &self.inner.config;
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
        self.inner.ui.close_prompt().await;
        self.inner.ui.request_leave_sale_mode(true).await;
        let wait_until = tokio::time::Instant::now() + Duration::from_secs(c.sale_mode_timeout_s);
        // Cleared when the wait ends, and also when the job is dropped
        // (the task withdrawn mid-wait), so the state never sticks.
        let waiting = WaitFlag::raise(&self.inner.waiting_for_sale);
        if !self.inner.ui.sale_mode_left().await {
            *self.inner.activity.lock().await = DeviceState::WaitingForSaleEnd;
        }
        while !self.inner.ui.sale_mode_left().await && tokio::time::Instant::now() < wait_until {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = self.inner.ui.changed.notified() => {}
            }
        }
        drop(waiting);
        *self.inner.activity.lock().await = DeviceState::Installing;
        if !self.inner.ui.sale_mode_left().await {
            tracing::warn!(task = %id, "the POS did not confirm leaving sale mode in time; installing anyway");
        }
        self.inner
            .state
            .set_state(id, TargetState::Installing, None, None)?;
        self.flush_reports().await;
        let outcome = install::run_up_sh(
            &staged,
            &c.update_root,
            &t.assignment.version,
            Duration::from_secs(c.install_timeout_s),
            &c.data_dir.join("logs"),
        )
        .await?;
        if !outcome.success {
            self.inner.state.set_state(
                id,
                TargetState::Failed,
                outcome.error.as_deref(),
                Some(&outcome.log_tail),
            )?;
            return Ok(());
        }
        self.inner.state.set_installed(&t.assignment.version)?;
        self.inner
            .state
            .set_state(id, TargetState::Rebooting, None, Some(&outcome.log_tail))?;
        // The report must leave before the reboot takes the node down.
        self.flush_reports().await;
        install::reboot(&c.reboot_command).await?;
        if c.reboot_command.trim() == "none" {
            self.inner
                .state
                .set_state(id, TargetState::Installed, None, None)?;
        }
        Ok(())
    }
}
