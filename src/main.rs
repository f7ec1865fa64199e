//! `tillswarm`: the one binary operators, tills and scripts run.
//!
//! This file is glue: it parses the command line (clap), installs the tracing
//! subscriber and dispatches to the library crates, where the logic lives.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

mod coordinator_cmd;
mod demo;
mod enroll_cmd;
mod node_cmd;
mod package;
mod remote;

/// Peer-to-peer software updates for the tills of retail chains.
#[derive(Debug, Parser)]
#[command(name = "tillswarm", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// A live demo on this machine: coordinator, web panel and simulated stores
    /// of tills (in-process nodes, simulated WAN links and cashiers).
    Demo(demo::DemoArgs),
    /// Run the head-office coordinator (database, APIs, web panel).
    Coordinator(Box<coordinator_cmd::CoordinatorArgs>),
    /// Run the agent on a till, or talk to the running one.
    Node(node_cmd::NodeArgs),
    /// Work with update package files.
    #[command(subcommand)]
    Package(package::PackageCommand),
    /// Sample data for tests, benches and demos.
    #[command(subcommand)]
    Fixtures(FixturesCommand),
}

#[derive(Debug, Subcommand)]
enum FixturesCommand {
    /// Write the deterministic sample packages (demo 1.0.0 and 1.1.0, a failing
    /// package, and optionally a large one) into a folder.
    Generate {
        /// Folder to write into (created if missing).
        #[arg(long, default_value = "fixtures-out")]
        out: PathBuf,
        /// Also write `demo-large-2.0.0.tar` with a payload of this many MiB.
        #[arg(long, value_name = "MIB")]
        large_mb: Option<u64>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo runs dozens of nodes in one process and prints its own summary:
    // only warnings from them unless RUST_LOG asks for more.
    let default_filter = match cli.command {
        Command::Demo(_) => "warn",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(dispatch(cli))
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Demo(args) => demo::run(args).await,
        Command::Coordinator(args) => coordinator_cmd::run(*args).await,
        Command::Node(args) => node_cmd::run(args).await,
        Command::Package(cmd) => package::run(cmd).await,
        Command::Fixtures(FixturesCommand::Generate { out, large_mb }) => {
            let written = tillswarm_fixtures::generate(&out, large_mb.map(|mb| mb * 1024 * 1024))
                .with_context(|| format!("writing fixtures into {}", out.display()))?;
            for g in written {
                println!("{} {} -> {}", g.name, g.version, g.path.display());
            }
            Ok(())
        }
    }
}
