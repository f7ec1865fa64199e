//! Many callers, one statement. The steady state of a large fleet is
//! thousands of tiny, identical database operations a second (a till's
//! quiet read, its minutely refresh); on PostgreSQL each costs a round trip
//! and the server's per-statement work, which on shared cores costs more
//! than the row itself. A [`Coalesce`] queues such operations and runs
//! whatever has gathered as one batch: the first caller starts a flush,
//! callers arriving while it runs wait for the next one. No caller waits
//! for work that is not queued yet, as with the database's group commit.
//! Used on PostgreSQL only: on SQLite a statement costs no round trip and
//! the hand-overs would cost more than they save.

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::error::{Error, Result};

/// Most operations one flush carries.
pub(crate) const MAX_BATCH: usize = 256;

type Reply<A> = oneshot::Sender<Result<A>>;

/// A queue of operations of one kind, flushed in batches.
pub(crate) struct Coalesce<Q, A> {
    /// What the flushes are for, in errors.
    what: &'static str,
    queue: Mutex<Queue<Q, A>>,
}

struct Queue<Q, A> {
    waiting: Vec<(Q, Reply<A>)>,
    /// A task is flushing; it takes what is waiting before it ends.
    flushing: bool,
}

impl<Q: Send + 'static, A: Send + 'static> Coalesce<Q, A> {
    /// An empty queue for operations that are `what`.
    pub(crate) fn new(what: &'static str) -> Arc<Self> {
        Arc::new(Self {
            what,
            queue: Mutex::new(Queue {
                waiting: Vec::new(),
                flushing: false,
            }),
        })
    }

    /// Queues `ask` and returns its answer once a flush carrying it ran.
    /// Without a flush under way it starts one on a task of its own (so a
    /// caller that goes away stops no one else's answer), with `flush`:
    /// given the asks in order, it answers each, in the same order.
    pub(crate) async fn ask<F, Fut>(self: &Arc<Self>, ask: Q, flush: F) -> Result<A>
    where
        F: Fn(Vec<Q>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<A>>> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut queue = self.lock();
            queue.waiting.push((ask, reply));
            !std::mem::replace(&mut queue.flushing, true)
        };
        if start {
            tokio::spawn(self.clone().drain(flush));
        }
        answer
            .await
            .map_err(|_| Error::Internal(format!("{}: the batch was dropped", self.what)))?
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue<Q, A>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Flushes batches until nothing waits.
    async fn drain<F, Fut>(self: Arc<Self>, flush: F)
    where
        F: Fn(Vec<Q>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<A>>> + Send + 'static,
    {
        loop {
            let batch: Vec<(Q, Reply<A>)> = {
                let mut queue = self.lock();
                if queue.waiting.is_empty() {
                    queue.flushing = false;
                    return;
                }
                let n = queue.waiting.len().min(MAX_BATCH);
                queue.waiting.drain(..n).collect()
            };
            let (asks, replies): (Vec<Q>, Vec<Reply<A>>) = batch.into_iter().unzip();
            let n = asks.len();
            // Its own task: a flush that panics fails its batch, not the queue.
            let ran = tokio::spawn(flush(asks)).await;
            match ran {
                Ok(Ok(answers)) if answers.len() == n => {
                    for (reply, answer) in replies.into_iter().zip(answers) {
                        let _ = reply.send(Ok(answer));
                    }
                }
                failed => {
                    let why = match failed {
                        Ok(Ok(answers)) => Error::Internal(format!(
                            "{} answered {} of {n}",
                            self.what,
                            answers.len()
                        )),
                        Ok(Err(e)) => e,
                        Err(e) => Error::Internal(format!("{} failed: {e}", self.what)),
                    };
                    tracing::warn!(error = %why, what = self.what, "a batch failed");
                    for reply in replies {
                        let _ = reply.send(Err(shared(&why)));
                    }
                }
            }
        }
    }
}

/// `e` for each caller of a failed batch: a busy database stays busy (503),
/// anything else is internal (500, its text in the log).
fn shared(e: &Error) -> Error {
    match e {
        Error::Unavailable(m) => Error::Unavailable(m.clone()),
        other => Error::Internal(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn callers_arriving_during_a_flush_share_the_next_one() {
        let q = Coalesce::<u32, u32>::new("doubling");
        let flushes = Arc::new(AtomicUsize::new(0));
        let flush = {
            let flushes = flushes.clone();
            move |asks: Vec<u32>| {
                flushes.fetch_add(1, Ordering::SeqCst);
                async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok(asks.into_iter().map(|a| a * 2).collect())
                }
            }
        };
        let first = tokio::spawn({
            let (q, f) = (q.clone(), flush.clone());
            async move { q.ask(1, f).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let rest: Vec<_> = (2..=20)
            .map(|i| {
                let (q, f) = (q.clone(), flush.clone());
                tokio::spawn(async move { q.ask(i, f).await })
            })
            .collect();
        assert_eq!(first.await.expect("join").expect("answer"), 2);
        for (i, r) in (2..=20).zip(rest) {
            assert_eq!(r.await.expect("join").expect("answer"), i * 2, "its own");
        }
        assert_eq!(
            flushes.load(Ordering::SeqCst),
            2,
            "one alone, then 19 together"
        );
        assert!(!q.lock().flushing, "the flusher ended");
    }

    #[tokio::test]
    async fn a_failed_or_short_or_panicking_flush_fails_its_batch_and_not_the_next() {
        let q = Coalesce::<u32, u32>::new("test");
        let err = q
            .ask(1, |_| async { Err(Error::Unavailable("busy".into())) })
            .await
            .expect_err("failed");
        assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
        let err = q.ask(1, |_| async { Ok(vec![]) }).await.expect_err("short");
        assert!(err.to_string().contains("answered 0 of 1"), "{err}");
        let err = q
            .ask(1, |_| async {
                if true {
                    panic!("flush panicked");
                }
                Ok(vec![])
            })
            .await
            .expect_err("panicked");
        assert!(err.to_string().contains("failed"), "{err}");
        let ok = q.ask(3, |a| async move { Ok(a) }).await.expect("next");
        assert_eq!(ok, 3);
    }
}
