//! The tillswarm agent that runs on each till.
//!
//! It owns: the node config, durable local state, the coordinator client, the
//! local chunk store, the store swarm and discovery, fetching and staging
//! packages, the task policy and loop, the cashier prompt (local interface),
//! the installer and the drop-in folder. The agent's parts, the installer and
//! the retry pacing are private; what tests, the demo and the bench reach is
//! public.
//!
//! Architecture invariants: only this crate touches libp2p; no chunk is stored,
//! advertised or served before its blake3 hash is checked; no package is staged
//! or installed before its manifest signature and every chunk's hash are checked.

mod agent;
mod backoff;
pub mod chunks;
pub mod client;
pub mod config;
pub mod discovery;
pub mod dropin;
mod error;
pub mod identity;
mod install;
pub mod local_api;
pub mod peers;
pub mod sim;
pub mod stage;
pub mod state;
pub mod swarm;
mod systemd;
pub mod tls;

pub use agent::{Agent, Wiring};
pub use config::NodeConfig;
pub use error::{Error, Result};

use std::sync::Arc;

use tillswarm_protocol::clock::{Clock, SystemClock};

/// Runs a node: the local interface on `config.local_api_listen` and the agent,
/// until `shutdown` turns true.
pub async fn run(config: NodeConfig, shutdown: tokio::sync::watch::Receiver<bool>) -> Result<()> {
    run_with(config, Arc::new(SystemClock), shutdown).await
}

/// [`run`] with a given clock (tests move time by hand).
pub async fn run_with(
    config: NodeConfig,
    clock: Arc<dyn Clock>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    let listen = config.local_api_listen;
    let secret = identity::local_api_secret(&config.local_api_secret_path())?;
    let agent = Agent::open(config, clock, agent::Wiring::default())?;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let mut stop = shutdown.clone();
    let server = tokio::spawn(
        warp::serve(agent.ui().routes(secret))
            .incoming(listener)
            .graceful(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .run(),
    );
    let result = agent.run(shutdown).await;
    let _ = server.await;
    result
}
