//! Group commit: jobs that may share a transaction (heartbeats) and wait in
//! the queue together run in one relaxed transaction, each inside its own
//! savepoint, and learn their outcome only once that transaction committed.
//! Under load this turns thousands of small commits a second into a few
//! hundred, without making any job wait for work that is not already queued.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::sql::{Connection, Transaction, TransactionBehavior};
use tokio::sync::mpsc;

use super::{Durability, Job, set_durability};

/// Most jobs in one shared transaction.
pub(super) const MAX_JOBS: usize = 32;

/// Longest a batch keeps taking queued jobs: the first job's answer waits
/// for the whole batch's commit.
const MAX_SPAN: Duration = Duration::from_millis(5);

/// Tells a batched job how its transaction ended (`Err` carries why the
/// commit failed); it answers its caller then.
pub(super) type Settle = Box<dyn FnOnce(std::result::Result<(), String>) + Send>;

/// A job that shares a transaction: runs its work in the transaction it is
/// given and returns how to settle it; given none (the transaction could not
/// begin), it runs nothing and only returns its settle.
pub(super) type BatchedJob = Box<dyn FnOnce(Option<&Transaction<'_>>) -> Ran + Send>;

/// What running one batched job left behind.
pub(super) struct Ran {
    /// Answers the caller once the transaction's outcome is known.
    pub settle: Settle,
    /// The job's savepoint could not be rolled back: its partial writes would
    /// commit with the others, so the whole batch must roll back instead.
    pub poisoned: bool,
}

/// How many batches committed and how many jobs they carried.
#[derive(Debug, Default)]
pub struct Stats {
    batches: AtomicU64,
    jobs: AtomicU64,
}

impl Stats {
    /// Counts one transaction that carried `jobs` jobs.
    fn count(&self, jobs: u64) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.jobs.fetch_add(jobs, Ordering::Relaxed);
    }

    /// Transactions run for batched jobs so far.
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// Batched jobs run so far.
    pub fn jobs(&self) -> u64 {
        self.jobs.load(Ordering::Relaxed)
    }
}

/// Runs `f` inside a savepoint of `tx`: its writes stay if it succeeds and
/// are undone if it fails, leaving the other jobs of the batch alone. The
/// `bool` is true when undoing failed (see [`Ran::poisoned`]).
pub(super) fn in_savepoint<T, E>(
    tx: &Transaction<'_>,
    f: impl FnOnce(&Transaction<'_>) -> std::result::Result<T, E>,
) -> (std::result::Result<T, E>, bool)
where
    E: From<super::sql::Error>,
{
    let savepoint = match tx.savepoint() {
        Ok(savepoint) => savepoint,
        Err(e) => return (Err(e.into()), false),
    };
    let out = f(&savepoint);
    let closed = if out.is_ok() {
        savepoint.commit()
    } else {
        savepoint.rollback()
    };
    match closed {
        Ok(()) => (out, false),
        Err(e) => (Err(e.into()), true),
    }
}

/// Runs `first` and the batched jobs queued right behind it in one
/// transaction, commits, then settles each. Returns the first queued job that
/// may not share the transaction, for the caller to run next.
pub(super) fn run(
    conn: &mut Connection,
    first: BatchedJob,
    inbox: &mut mpsc::Receiver<Job>,
    stats: &Arc<Stats>,
) -> Option<Job> {
    let started = Instant::now();
    let mut next = None;
    let mut settles: Vec<Settle> = Vec::with_capacity(MAX_JOBS);
    let mut poisoned = false;
    if let Some(lite) = conn.as_sqlite()
        && let Err(e) = set_durability(lite, Durability::Relaxed)
    {
        (first(None).settle)(Err(e.to_string()));
        return None;
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate);
    // PostgreSQL: the commit does not wait for the disk (the counterpart
    // of SQLite's relaxed durability above).
    let tx = tx.and_then(|tx| {
        if tx.is_postgres() {
            tx.execute_batch("SET LOCAL synchronous_commit = off")?;
        }
        Ok(tx)
    });
    let tx = match tx {
        Ok(tx) => tx,
        Err(e) => {
            // Nothing runs; the job answers with the reason.
            (first(None).settle)(Err(e.to_string()));
            return None;
        }
    };
    let mut job = first;
    loop {
        let ran = job(Some(&tx));
        settles.push(ran.settle);
        poisoned |= ran.poisoned;
        if poisoned || settles.len() >= MAX_JOBS || started.elapsed() >= MAX_SPAN {
            break;
        }
        match inbox.try_recv() {
            Ok(Job::Batched(f)) => job = f,
            Ok(other) => {
                next = Some(other);
                break;
            }
            Err(_) => break,
        }
    }
    let outcome = if poisoned {
        let _ = tx.rollback();
        Err("a job of this batch could not be undone; the batch was rolled back".to_owned())
    } else {
        tx.commit().map_err(|e| e.to_string())
    };
    stats.count(settles.len() as u64);
    for settle in settles {
        settle(outcome.clone());
    }
    next
}
