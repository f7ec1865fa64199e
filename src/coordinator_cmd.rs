//! `tillswarm coordinator ...`: run the head-office service, or import a store
//! registry into a running one.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use tillswarm_coordinator::{Config, Coordinator};

/// Run the coordinator (default) or talk to one.
#[derive(Debug, Args)]
pub struct CoordinatorArgs {
    /// Folder for the database, chunk store and signing key.
    #[arg(long, default_value = "./tillswarm-data")]
    data: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Largest package upload accepted, in MiB.
    #[arg(long, default_value_t = 4096)]
    max_package_mb: u64,
    /// Poll interval hinted to tills, in seconds.
    #[arg(long, default_value_t = 30)]
    poll_interval_s: u64,
    #[command(subcommand)]
    command: Option<CoordinatorCommand>,
}

#[derive(Debug, Subcommand)]
enum CoordinatorCommand {
    /// Import a store registry (CSV with a header row, or JSON) into a running
    /// coordinator: GUID, till name and number, store id, name and address, till type.
    Import {
        /// The registry file (`.json` is sent as JSON, anything else as CSV).
        file: PathBuf,
        /// The coordinator's URL.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        coordinator: String,
    },
}

/// Runs a coordinator subcommand.
pub async fn run(args: CoordinatorArgs) -> anyhow::Result<()> {
    match args.command {
        None => {
            serve(
                args.data,
                args.listen,
                args.max_package_mb,
                args.poll_interval_s,
            )
            .await
        }
        Some(CoordinatorCommand::Import { file, coordinator }) => import(&file, &coordinator).await,
    }
}

async fn serve(
    data: PathBuf,
    listen: SocketAddr,
    max_package_mb: u64,
    poll_interval_s: u64,
) -> anyhow::Result<()> {
    let config = Config {
        data_dir: data.clone(),
        max_package_bytes: max_package_mb << 20,
        poll_interval_ms: poll_interval_s * 1000,
        ..Config::default()
    };
    let coordinator = Coordinator::open(config)
        .await
        .with_context(|| format!("opening the coordinator data in {}", data.display()))?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let addr = listener.local_addr()?;
    // stdout may be a closed pipe (a supervisor that read the URL and left):
    // write without panicking.
    let mut out = std::io::stdout();
    let _ = writeln!(
        out,
        "tillswarm coordinator listening on http://{addr}/ (data in {})",
        data.display()
    );
    let _ = writeln!(
        out,
        "coordinator public key (pin it on tills): {}",
        coordinator.public_key()
    );
    let _ = out.flush();
    tillswarm_coordinator::serve(coordinator, listener, shutdown_signal()).await;
    tracing::info!("coordinator stopped");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

async fn import(file: &PathBuf, coordinator: &str) -> anyhow::Result<()> {
    let body = tokio::fs::read(file)
        .await
        .with_context(|| format!("reading {}", file.display()))?;
    let is_json = file
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let url = format!(
        "{}/api/v1/devices/import",
        coordinator.trim_end_matches('/')
    );
    let response = reqwest::Client::new()
        .post(&url)
        .header(
            "content-type",
            if is_json {
                "application/json"
            } else {
                "text/csv"
            },
        )
        .body(body)
        .send()
        .await
        .with_context(|| format!("sending to {url}"))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    anyhow::ensure!(status.is_success(), "import refused ({status}): {text}");
    println!("{text}");
    Ok(())
}
