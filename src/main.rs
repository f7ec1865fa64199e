//! `tillswarm`: the one binary operators, tills and scripts run.
//!
//! This file is glue: it parses the command line (clap), installs the tracing
//! subscriber and dispatches to the library crates, where the logic lives.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

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
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // The demo runs dozens of nodes in one process and prints its own summary:
    // only warnings from them unless RUST_LOG asks for more.
    let default_filter = match cli.command {
        Command::Demo(_) => "warn",
        _ => "info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    // Colours only on a terminal; under systemd (JOURNAL_STREAM names the
    // journal's stream) the journal stamps each line, so the log does not.
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        log.without_time().init();
    } else {
        log.init();
    }
    match run(cli, &matches) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli, matches: &clap::ArgMatches) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(dispatch(cli, matches))
}

async fn dispatch(cli: Cli, matches: &clap::ArgMatches) -> anyhow::Result<()> {
    match cli.command {
        Command::Demo(args) => demo::run(args).await,
        Command::Coordinator(args) => {
            let sub = matches
                .subcommand_matches("coordinator")
                .context("the coordinator's arguments")?;
            coordinator_cmd::run(*args, sub).await
        }
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
