//! Group commit: concurrent writes of one kind share a transaction, and so
//! share its fsync.
//!
//! A durable commit waits for the disk (about 0.15 ms here), and a database
//! has one writer at a time, so one transaction per request caps a write
//! RPC at roughly one request per fsync however many clients there are.
//! Here every request goes into a queue; one committer task takes whatever
//! has queued up, applies it as one batch, and answers each caller with its
//! own result. Under load a batch grows to what arrived during the previous
//! commit; a lone request goes at once, since nothing waits on a timer.
//!
//! A caller that gives up (its RPC is cancelled) does not withdraw its
//! request: it may still commit, exactly as if the response had been lost
//! on the way back, which is what idempotency keys are for.

use std::future::Future;

use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error};

use crate::error::{Error, Result};

/// How many requests may wait for the committer before callers wait to
/// enqueue: backpressure instead of unbounded memory.
const QUEUE_DEPTH: usize = 4096;

/// A request and where its answer goes.
type Pending<Req, Resp> = (Req, oneshot::Sender<Result<Resp>>);

/// The handle callers submit to; the committer task ends when every handle
/// is dropped.
pub struct GroupCommit<Req, Resp> {
    queue: mpsc::Sender<Pending<Req, Resp>>,
}

impl<Req, Resp> GroupCommit<Req, Resp>
where
    Req: Send + 'static,
    Resp: Send + 'static,
{
    /// Starts the committer task. `apply` writes one batch in one
    /// transaction and returns one result per request, in order; its own
    /// `Err` means the transaction failed and nothing in the batch was
    /// written. Batches hold at most `max_batch` requests.
    pub fn spawn<F, Fut>(max_batch: usize, apply: F) -> Self
    where
        F: Fn(Vec<Req>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Vec<Result<Resp>>>> + Send + 'static,
    {
        let (queue, mut incoming) = mpsc::channel::<Pending<Req, Resp>>(QUEUE_DEPTH);
        let max_batch = max_batch.max(1);
        let committer = async move {
            let mut batch = Vec::with_capacity(max_batch);
            while incoming.recv_many(&mut batch, max_batch).await > 0 {
                let (requests, replies): (Vec<Req>, Vec<_>) = batch.drain(..).unzip();
                let expected = requests.len();
                let started = std::time::Instant::now();
                let outcome = apply(requests).await;
                debug!(batch = expected, elapsed = ?started.elapsed(), "group commit");
                match outcome {
                    Ok(results) if results.len() == expected => {
                        for (reply, result) in replies.into_iter().zip(results) {
                            // A caller that went away needs no answer.
                            let _ = reply.send(result);
                        }
                    }
                    Ok(results) => {
                        error!(
                            expected,
                            got = results.len(),
                            "group commit: a batch returned the wrong number of results"
                        );
                        for reply in replies {
                            let _ = reply.send(Err(Error::Internal(
                                "group commit returned the wrong number of results".into(),
                            )));
                        }
                    }
                    Err(err) => {
                        error!(error = %err, batch = expected, "group commit failed");
                        for reply in replies {
                            let _ = reply.send(Err(shared(&err)));
                        }
                    }
                }
            }
        };
        // The committer gets a thread and a runtime of its own. A batch is
        // several round trips to the database's thread, and on a runtime
        // busy with RPCs each wake-up would wait its turn behind them: the
        // batches would crawl exactly when they matter, under load.
        let spawned = std::thread::Builder::new()
            .name("group-commit".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(committer),
                    Err(err) => error!(error = %err, "group commit: cannot start its runtime"),
                }
            });
        if let Err(err) = spawned {
            // Submissions then fail with UNAVAILABLE (the queue is closed).
            error!(error = %err, "group commit: cannot start its thread");
        }
        GroupCommit { queue }
    }

    /// Queues `request` for the next batch and waits for its result.
    pub async fn submit(&self, request: Req) -> Result<Resp> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((request, reply))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// The committer is gone: only possible if it panicked or the runtime is
/// shutting down.
fn stopped() -> Error {
    Error::Unavailable("the write queue has stopped; retry against another server".into())
}

/// A failed batch's error, for each of its callers. A transient database
/// failure (busy, a lost connection, a statement timeout, a failover) stays
/// retryable; anything else is internal (and was logged once, above).
fn shared(err: &Error) -> Error {
    match err {
        Error::Storage(inner) if orgauth_runtime::database::is_transient(inner) => {
            Error::DatabaseBusy(inner.to_string())
        }
        Error::DatabaseBusy(message) => Error::DatabaseBusy(message.clone()),
        Error::Unavailable(message) => Error::Unavailable(message.clone()),
        other => Error::Internal(format!("batch write failed: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn concurrent_requests_share_batches_and_each_gets_its_own_answer() {
        let batches = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&batches);
        let doubler = Arc::new(GroupCommit::spawn(64, move |requests: Vec<u32>| {
            counted.fetch_add(1, Ordering::Relaxed);
            async move {
                // Long enough that the other requests queue up meanwhile.
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                Ok(requests
                    .into_iter()
                    .map(|n| {
                        if n == 7 {
                            Err(Error::org_not_found("seven"))
                        } else {
                            Ok(n * 2)
                        }
                    })
                    .collect())
            }
        }));
        let calls: Vec<_> = (0..100u32)
            .map(|n| {
                let doubler = Arc::clone(&doubler);
                tokio::spawn(async move { (n, doubler.submit(n).await) })
            })
            .collect();
        for call in calls {
            let (n, result) = call.await.unwrap();
            match result {
                Ok(doubled) => assert_eq!(doubled, n * 2),
                Err(Error::NotFound { .. }) => assert_eq!(n, 7),
                Err(other) => panic!("unexpected error for {n}: {other}"),
            }
        }
        let batches = batches.load(Ordering::Relaxed);
        assert!(batches < 100, "requests were grouped: {batches} batches");
    }

    #[tokio::test]
    async fn a_failed_batch_fails_every_request_in_it() {
        let failing = GroupCommit::spawn(8, |_requests: Vec<u32>| async {
            Err::<Vec<Result<u32>>, _>(Error::Storage(sqlx::Error::PoolTimedOut))
        });
        let err = failing.submit(1).await.unwrap_err();
        // Still retryable for the caller: UNAVAILABLE DATABASE_BUSY.
        assert!(matches!(err, Error::DatabaseBusy(_)), "{err:?}");
        assert_eq!(err.reason(), "DATABASE_BUSY");

        let broken = GroupCommit::spawn(8, |_requests: Vec<u32>| async {
            Err::<Vec<Result<u32>>, _>(Error::Storage(sqlx::Error::RowNotFound))
        });
        let err = broken.submit(1).await.unwrap_err();
        assert!(matches!(err, Error::Internal(_)), "{err:?}");
    }

    #[tokio::test]
    async fn a_miscounted_batch_is_an_internal_error_not_a_hang() {
        let short: GroupCommit<u32, u32> =
            GroupCommit::spawn(8, |_requests: Vec<u32>| async { Ok(Vec::new()) });
        let err = short.submit(1).await.unwrap_err();
        assert!(matches!(err, Error::Internal(_)), "{err}");
    }
}
