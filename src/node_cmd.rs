//! `tillswarm node ...`: run the till agent, or talk to the one running on this till.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use tillswarm_node::NodeConfig;

/// Run the node (default) or talk to the running one.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// The node's config file (TOML; see fixtures/config/node.toml).
    #[arg(long, global = true, default_value = "/etc/tillswarm/node.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<NodeCommand>,
}

#[derive(Debug, Subcommand)]
enum NodeCommand {
    /// Answer the open update prompt, as the cashier would.
    Prompt {
        /// accept: install now; decline: ask again after the next restart.
        answer: PromptAnswer,
    },
    /// Install the newest staged update now (replaces `sudo ./up.sh`).
    Install,
    /// Tell the node the POS has left sale mode (the POS normally does this).
    SaleModeLeft,
    /// Show what the node is doing, any open prompt, and its store peers with
    /// what each holds.
    Status,
    /// Advertise this till over mDNS and print each store peer found or lost as
    /// one JSON line, for a while (real discovery, without the node).
    Discover {
        /// How long to run, in seconds.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// The TCP port to advertise (nothing listens on it here).
        #[arg(long, default_value_t = 7782)]
        port: u16,
        /// Use loopback only (nodes on this machine) instead of the LAN.
        #[arg(long)]
        loopback: bool,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PromptAnswer {
    Accept,
    Decline,
}

/// Runs a node subcommand.
pub async fn run(args: NodeArgs) -> anyhow::Result<()> {
    let config = NodeConfig::load(&args.config)?;
    let local = format!("http://{}/api/local/v1", config.local_api_listen);
    let secret_file = config.local_api_secret_path();
    let secret = || {
        std::fs::read_to_string(&secret_file)
            .map(|s| s.trim().to_owned())
            .with_context(|| {
                format!(
                    "reading the node's local secret {} (run as the node's user or its group)",
                    secret_file.display()
                )
            })
    };
    let post = |path: &str| {
        let url = format!("{local}/{path}");
        let secret = secret();
        async move {
            let resp = tillswarm_node::tls::http_client(None)?
                .build()?
                .post(&url)
                .bearer_auth(secret?)
                .send()
                .await
                .with_context(|| {
                    format!("talking to the node at {url} (is `tillswarm node` running?)")
                })?;
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            anyhow::ensure!(status.is_success(), "{status}: {text}");
            println!("{text}");
            Ok::<_, anyhow::Error>(())
        }
    };
    match args.command {
        None => {
            let (stop, stopped) = tokio::sync::watch::channel(false);
            tokio::spawn(async move {
                crate::coordinator_cmd::shutdown_signal().await;
                let _ = stop.send(true);
            });
            tracing::info!(device = %config.device_id, store = %config.store_id, "node starting");
            tillswarm_node::run(config, stopped).await?;
            Ok(())
        }
        Some(NodeCommand::Prompt {
            answer: PromptAnswer::Accept,
        }) => post("prompt/accept").await,
        Some(NodeCommand::Prompt {
            answer: PromptAnswer::Decline,
        }) => post("prompt/decline").await,
        Some(NodeCommand::Install) => post("install").await,
        Some(NodeCommand::SaleModeLeft) => post("sale-mode/left").await,
        Some(NodeCommand::Discover {
            seconds,
            port,
            loopback,
        }) => discover(&config, seconds, port, loopback).await,
        Some(NodeCommand::Status) => {
            let url = format!("{local}/status");
            let text = tillswarm_node::tls::http_client(None)?
                .build()?
                .get(&url)
                .bearer_auth(secret()?)
                .send()
                .await
                .with_context(|| {
                    format!("talking to the node at {url} (is `tillswarm node` running?)")
                })?
                .text()
                .await?;
            println!("{text}");
            Ok(())
        }
    }
}

/// `node discover`: the peer id is derived from the GUID (no libp2p key here).
async fn discover(
    config: &NodeConfig,
    seconds: u64,
    port: u16,
    loopback: bool,
) -> anyhow::Result<()> {
    use tillswarm_node::discovery::{Discovery, LocalAdvert, MdnsDiscovery};
    let me = LocalAdvert::new(config, format!("discover-{}", config.device_id), port);
    let (events_tx, mut events) = tokio::sync::mpsc::channel(64);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mdns = if loopback {
        MdnsDiscovery::loopback(tillswarm_node::discovery::MDNS_PORT)
    } else {
        MdnsDiscovery::default()
    };
    let task = Box::new(mdns).start(me, events_tx, stopped);
    let until = tokio::time::sleep(std::time::Duration::from_secs(seconds));
    let signal = crate::coordinator_cmd::shutdown_signal();
    tokio::pin!(until, signal);
    loop {
        tokio::select! {
            _ = &mut until => break,
            _ = &mut signal => break,
            event = events.recv() => match event {
                Some(event) => println!("{}", serde_json::to_string(&event)?),
                None => break,
            },
        }
    }
    let _ = stop.send(true);
    task.await.context("discovery task")?;
    Ok(())
}
