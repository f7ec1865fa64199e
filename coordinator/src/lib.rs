//! The head-office service of tillswarm.
//!
//! It owns: the SQLite database (devices, stores, groups, packages, tasks, till
//! type settings, operators, the audit log), package ingestion into a
//! content-addressed chunk store, the manifest signing key, the task scheduler,
//! the node-facing API (heartbeats, assignments, progress, manifests, chunks),
//! the operator API under `/api/v1/` with its authentication, roles and CSRF
//! defence, serving the web panel, metrics, and the HTTP(S) accept loop.
//!
//! Entry points: [`serve`] / [`serve_with`] run the server and the scheduler on
//! a listener the caller bound, until the caller's shutdown future resolves;
//! [`Spawned`] does so in a task of the caller's process (tests, demo, bench).
//! [`Coordinator`] is the service itself, usable without HTTP.
//! [`admin::Accounts`] administers users and tokens on a data folder (the CLI).
//!
//! Architecture invariants: only this crate touches the server's SQLite
//! database, and in the coordinator process only on the database thread
//! ([`db::Db`]). No operator route without a rule in [`auth::rules`].

pub mod admin;
pub mod audit;
pub mod auth;
pub mod chunks;
pub mod clock;
pub mod db;
pub mod device_auth;
pub mod devices;
pub mod error;
pub mod events;
pub mod groups;
pub mod http;
pub mod keys;
pub mod metrics;
pub mod packages;
pub mod rollouts;
pub mod server;
pub mod service;
pub mod tasks;
pub mod till_types;
pub mod wan;
pub mod windows;

use std::future::Future;
use std::time::Duration;

pub use error::{Error, Result};
pub use server::ServeOptions;
pub use service::{Config, Coordinator};

/// Serves `coordinator` over plain HTTP on `listener` and runs its scheduler
/// until `shutdown` resolves; then stops accepting, lets in-flight requests
/// finish and returns.
pub async fn serve(
    coordinator: Coordinator,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    serve_with(coordinator, listener, ServeOptions::default(), shutdown).await;
}

/// As [`serve`], with TLS and timeouts from `options`.
pub async fn serve_with(
    coordinator: Coordinator,
    listener: tokio::net::TcpListener,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let scheduler = tokio::spawn(run_scheduler(coordinator.clone(), stop_rx));
    let routes = http::routes(coordinator.clone());
    // Under systemd (Type=notify) the unit turns active now: the data is open
    // and migrated and the listener bound, so connections already queue.
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&format!("serving on {addr}")),
    ]);
    server::run(routes, listener, options, async move {
        shutdown.await;
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        let _ = stop_tx.send(true);
        coordinator.events().close();
    })
    .await;
    let _ = scheduler.await;
}

/// A coordinator served by a task of this process (the tests' harness, the
/// demo and the distribution bench start theirs this one way).
pub struct Spawned {
    /// The service (for direct calls).
    pub coordinator: Coordinator,
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Spawned {
    /// Opens a coordinator with `config` and serves it on `listener` (bound by
    /// the caller) with `options`, in a spawned task.
    pub async fn start(
        config: Config,
        listener: tokio::net::TcpListener,
        options: ServeOptions,
    ) -> Result<Self> {
        let coordinator = Coordinator::open(config).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_with(coordinator.clone(), listener, options, async {
            let _ = stopped.await;
        }));
        Ok(Self {
            coordinator,
            addr,
            stop: Some(stop),
            server: Some(server),
        })
    }

    /// Its plain-HTTP base URL (`http://ADDR`).
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving: in-flight requests finish, the scheduler stops.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(s) = self.server.take() {
            let _ = s.await;
        }
    }
}

/// Activates due tasks every `scheduler_tick_ms` until told to stop. Each
/// finished tick is also the systemd watchdog's sign of life (at most one a
/// second): a scheduler or database thread that hangs stops the pings, and
/// the unit's `WatchdogSec=` restarts the service.
async fn run_scheduler(coordinator: Coordinator, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_millis(
        coordinator.config().scheduler_tick_ms.max(10),
    ));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let watchdog = sd_notify::watchdog_enabled().is_some();
    let mut last_ping: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = coordinator.tick().await {
                    tracing::error!(error = %e, "scheduler tick failed");
                }
                if watchdog && last_ping.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                    last_ping = Some(tokio::time::Instant::now());
                }
            }
            _ = stop.changed() => break,
        }
    }
}
