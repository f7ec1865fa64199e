//! What the node tells systemd when it runs as a `Type=notify` unit
//! (`tillswarm-node.service`): ready once the first poll of the coordinator
//! has an outcome, a watchdog ping from each turn of the agent's loop, and,
//! when asked to stop during an install, more time until the install ends.
//! Every call is a no-op outside systemd (no `NOTIFY_SOCKET`).

use std::time::Duration;

use sd_notify::NotifyState;
use tokio::time::Instant;

/// How much more stop time each note during an install asks for; sent every
/// [`EXTEND_EVERY`], so the stop timeout never runs out while up.sh runs.
pub(crate) const EXTEND_BY: Duration = Duration::from_secs(60);
/// How often the extension is renewed while an install finishes.
pub(crate) const EXTEND_EVERY: Duration = Duration::from_secs(20);

/// The node's notes to the service manager.
pub(crate) struct Notifier {
    watchdog: bool,
    last_ping: Option<Instant>,
    ready: bool,
}

impl Notifier {
    pub(crate) fn new() -> Self {
        Self {
            watchdog: sd_notify::watchdog_enabled().is_some(),
            last_ping: None,
            ready: false,
        }
    }

    /// The first heartbeat had an outcome: the unit is active. A till whose
    /// coordinator is away still works (store peers, drop-ins, staged
    /// installs), so a failed first poll is ready too, with a status saying so.
    pub(crate) fn polled(&mut self, ok: bool) {
        let status = if ok {
            "polling the coordinator"
        } else {
            "coordinator unreachable; retrying"
        };
        if !self.ready {
            self.ready = true;
            let _ = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(status)]);
        } else if !ok {
            let _ = sd_notify::notify(&[NotifyState::Status(status)]);
        }
    }

    /// One turn of the agent's loop finished: a watchdog ping, at most one a
    /// second.
    pub(crate) fn alive(&mut self) {
        let now = Instant::now();
        if self.watchdog
            && self
                .last_ping
                .is_none_or(|t| now - t >= Duration::from_secs(1))
        {
            let _ = sd_notify::notify(&[NotifyState::Watchdog]);
            self.last_ping = Some(now);
        }
    }

    /// Stopping, but `installs` installs still run: ask for [`EXTEND_BY`]
    /// more and say why (renewed every [`EXTEND_EVERY`] by the caller).
    pub(crate) fn stopping_after_installs(&mut self, installs: usize) {
        let status = format!("stopping after {installs} running install(s) finish");
        let usec = u32::try_from(EXTEND_BY.as_micros()).unwrap_or(u32::MAX);
        let _ = sd_notify::notify(&[
            NotifyState::Stopping,
            NotifyState::ExtendTimeoutUsec(usec),
            NotifyState::Status(&status),
        ]);
        self.alive();
    }
}
