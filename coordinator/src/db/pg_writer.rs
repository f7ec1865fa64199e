//! The PostgreSQL group-commit thread: heartbeats ([`super::Db::call_batched`])
//! queue here and share transactions as on SQLite's database thread
//! ([`super::batch`]), on one session of the coordinator's own.
//!
//! Every writing transaction holds the writers' lock ([`super::pg::BEGIN`]),
//! so writes of all coordinators on the database run one at a time and a
//! transaction's round trips are the write path's cost. One transaction for
//! many heartbeats takes the lock, the commit and the hand-over between
//! sessions once for all of them; the session's connection runs on this
//! thread ([`super::pg::Client::connect_blocking`]), so a statement costs a
//! round trip to the server and no hop between threads.

use super::pg_tls::Server;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::sql::Connection;
use super::{Job, QUEUE_DEPTH, batch, pg};
use crate::error::{Error, Result};

/// After failing to connect, jobs are refused this long before the next try,
/// so a database that is down costs each heartbeat no connection attempt.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The session's `application_name` (with its schema, if the URL names
/// one), as `pg_stat_activity` shows it.
pub(super) fn application_name(config: &tokio_postgres::Config) -> String {
    match super::database::named_schema(config) {
        Some(schema) => format!("tillswarm group commit {schema}"),
        None => "tillswarm group commit".to_owned(),
    }
}

/// Starts the thread; it ends when the last sender is dropped.
pub(super) fn start(mut server: Server, stats: Arc<batch::Stats>) -> Result<mpsc::Sender<Job>> {
    let name = application_name(&server.config);
    server.config.application_name(name);
    let (jobs, mut inbox) = mpsc::channel::<Job>(QUEUE_DEPTH);
    std::thread::Builder::new()
        .name("tillswarm-db-pg-batch".into())
        .spawn(move || {
            let mut session = Session::new(server);
            let mut next = None;
            while let Some(job) = next.take().or_else(|| inbox.blocking_recv()) {
                let conn = match session.connection() {
                    Ok(conn) => conn,
                    Err(why) => {
                        refuse(job, &why);
                        continue;
                    }
                };
                match job {
                    Job::Alone(f) => f(conn),
                    Job::Batched(f) => next = batch::run(conn, f, &mut inbox, &stats),
                }
            }
        })?;
    Ok(jobs)
}

/// Answers a job that cannot run with why.
fn refuse(job: Job, why: &str) {
    match job {
        Job::Batched(f) => (f(None).settle)(Err(why.to_owned())),
        // Alone jobs go to the pool on PostgreSQL; one here is dropped, and
        // its caller learns that it was.
        Job::Alone(f) => drop(f),
    }
}

/// The thread's session, opened again when the server closed it.
struct Session {
    server: Server,
    conn: Option<Connection>,
    /// The last failed attempt to connect and why it failed.
    failed: Option<(Instant, String)>,
}

impl Session {
    fn new(server: Server) -> Self {
        Self {
            server,
            conn: None,
            failed: None,
        }
    }

    /// The open session, connecting first if there is none (or it ended).
    fn connection(&mut self) -> std::result::Result<&mut Connection, String> {
        if self.conn.as_ref().is_some_and(Connection::is_closed) {
            tracing::warn!("the group-commit session to PostgreSQL ended; connecting again");
            self.conn = None;
        }
        if self.conn.is_none() {
            if let Some((at, why)) = &self.failed
                && at.elapsed() < RETRY_AFTER
            {
                return Err(why.clone());
            }
            match pg::Client::connect_blocking(&self.server) {
                Ok(client) => {
                    self.conn = Some(Connection::postgres(client));
                    self.failed = None;
                }
                Err(e) => {
                    let why = Error::from(e).to_string();
                    tracing::warn!(error = %why, "cannot connect to PostgreSQL for heartbeats");
                    self.failed = Some((Instant::now(), why.clone()));
                    return Err(why);
                }
            }
        }
        self.conn
            .as_mut()
            .ok_or_else(|| "no PostgreSQL session".to_owned())
    }
}
