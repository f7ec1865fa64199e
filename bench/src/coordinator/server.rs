//! The bench's coordinator: a real one, in-process, on its own thread and
//! runtime, its database SQLite in a temporary folder or a schema of its own
//! on a PostgreSQL server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use tillswarm_coordinator::auth::{Caller, Role};
use tillswarm_coordinator::db::Database;
use tillswarm_coordinator::service::access::NewTokenInput;
use tillswarm_coordinator::{Config, Coordinator};

use super::{Params, registry};

/// A coordinator serving on its own thread and runtime.
pub(super) struct Server {
    pub(super) addr: SocketAddr,
    /// An operator token for setting up the task over the API.
    pub(super) token: String,
    pub(super) import_s: f64,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: std::sync::mpsc::Receiver<()>,
    thread: Option<std::thread::JoinHandle<()>>,
    dir: Option<tempfile::TempDir>,
    /// On PostgreSQL: the server's URL and the run's schema, dropped at the end.
    schema: Option<(String, String)>,
}

impl Server {
    pub(super) fn start(params: &Params) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("tillswarm-bench-coordinator-")
            .tempdir()?;
        let data_dir: PathBuf = dir.path().to_path_buf();
        let (database, schema) = match &params.database {
            Database::Postgres(url) => {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.subsec_nanos());
                let name = format!("bench_{}_{nanos}", std::process::id());
                let database = params
                    .database
                    .in_schema(&name)
                    .context("a schema of the bench's own")?;
                (database, Some((url.clone(), name)))
            }
            Database::Default | Database::Sqlite => (Database::Sqlite, None),
        };
        let registry = serde_json::to_vec(&registry(params.tills, params.stores_of)?)?;
        let threads = params.server_threads.max(1);
        let (ready_tx, ready_rx) =
            std::sync::mpsc::channel::<anyhow::Result<(SocketAddr, String, f64)>>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("bench-coordinator".into())
            .spawn(move || {
                let run = || -> anyhow::Result<()> {
                    let rt = tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(threads)
                        .thread_name("coordinator-worker")
                        .enable_all()
                        .build()?;
                    rt.block_on(async move {
                        let setup = async {
                            let coordinator = Coordinator::open(Config {
                                data_dir,
                                database,
                                ..Config::default()
                            })
                            .await?;
                            let start = Instant::now();
                            let summary = coordinator
                                .import_registry(registry, true, &Caller::system("bench"))
                                .await?;
                            let import_s = start.elapsed().as_secs_f64();
                            anyhow::ensure!(
                                summary.devices_added == summary.rows,
                                "registry import added {} of {} tills",
                                summary.devices_added,
                                summary.rows
                            );
                            let token = coordinator
                                .create_token(
                                    NewTokenInput {
                                        name: "bench".into(),
                                        role: Role::Operator,
                                        expires_days: None,
                                    },
                                    &Caller::system("bench"),
                                )
                                .await?
                                .token_secret;
                            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                            let addr = listener.local_addr()?;
                            anyhow::Ok((coordinator, listener, addr, token, import_s))
                        };
                        match setup.await {
                            Ok((coordinator, listener, addr, token, import_s)) => {
                                let _ = ready_tx.send(Ok((addr, token, import_s)));
                                tillswarm_coordinator::serve(coordinator, listener, async move {
                                    let _ = stop_rx.await;
                                })
                                .await;
                            }
                            Err(e) => {
                                let _ = ready_tx.send(Err(e));
                            }
                        }
                    });
                    // Give the database thread a moment to see its last handle go.
                    rt.shutdown_timeout(Duration::from_secs(5));
                    Ok(())
                };
                if let Err(e) = run() {
                    eprintln!("coordinator thread failed: {e:#}");
                }
                let _ = done_tx.send(());
            })?;
        let mut server = Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            token: String::new(),
            import_s: 0.0,
            stop: Some(stop_tx),
            done: done_rx,
            thread: Some(thread),
            dir: Some(dir),
            schema,
        };
        // On an error the server (and with it the schema) is cleaned up.
        let (addr, token, import_s) = ready_rx
            .recv()
            .context("the coordinator thread stopped before serving")??;
        server.addr = addr;
        server.token = token;
        server.import_s = import_s;
        Ok(server)
    }

    /// Stops the server gracefully and removes the data folder (and on
    /// PostgreSQL the run's schema).
    pub(super) fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
            match self.done.recv_timeout(Duration::from_secs(20)) {
                Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    if let Some(t) = self.thread.take() {
                        let _ = t.join();
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    eprintln!("warning: the coordinator did not stop within 20 s");
                }
            }
        }
        if let Some(dir) = self.dir.take() {
            dir.close()
                .context("removing the coordinator's temp folder")?;
        }
        if let Some((url, schema)) = self.schema.take() {
            drop_schema(&url, &schema)
                .with_context(|| format!("dropping the bench's schema {schema}"))?;
        }
        Ok(())
    }
}

/// Drops the run's schema and every table in it.
fn drop_schema(url: &str, schema: &str) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        let connection = tokio::spawn(connection);
        let tables: i64 = client
            .query_one(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1",
                &[&schema],
            )
            .await?
            .get(0);
        anyhow::ensure!(tables > 0, "the coordinator never created its tables there");
        client
            .batch_execute(&format!(
                "SET lock_timeout = '10s'; DROP SCHEMA {schema} CASCADE"
            ))
            .await?;
        drop(client);
        let _ = connection.await;
        anyhow::Ok(())
    })
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            eprintln!("warning: {e:#}");
        }
    }
}
