//! `tillswarm node ...`: run the till agent, or talk to the one running on this till.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use tillswarm_node::NodeConfig;

/// Run the node (default) or talk to the running one.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// The node's config file (TOML; see fixtures/config/node.toml).
    #[arg(long, default_value = "/etc/tillswarm/node.toml")]
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
    /// Show what the node is doing and any open prompt.
    Status,
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
    let post = |path: &str| {
        let url = format!("{local}/{path}");
        async move {
            let resp = reqwest::Client::new()
                .post(&url)
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
        Some(NodeCommand::Status) => {
            let url = format!("{local}/status");
            let text = reqwest::get(&url)
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
