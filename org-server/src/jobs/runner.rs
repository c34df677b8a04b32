//! Runs one claimed job: policy first, then every member in id order, in
//! batches with bounded parallelism, checkpointing after each batch.
//!
//! Invariants this module keeps (DESIGN.md, "Invariants of the asynchronous
//! path"):
//! - Policy first: Auth's policy is set before any unlink, so no new link can
//!   appear behind the scan and a single pass leaves no member linked.
//! - Batches complete out of order but are checkpointed in order
//!   (`FuturesOrdered`), so the persisted cursor only ever
//!   covers members whose batch succeeded, and progress never goes backwards.
//! - Transient Auth errors are retried with exponential backoff and jitter;
//!   each retry is recorded on the job so watchers see `attempt` and
//!   `last_error`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use tracing::{Instrument, debug, info_span, warn};

use super::StopSignal;
use super::auth::{AuthCallError, AuthGateway};
use super::hub::WatchHub;
use crate::domain::job::{Checkpoint, JobKind, UnlinkOutcome};
use crate::error::Error;
use crate::metrics::JobMetrics;
use crate::store::{ClaimedJob, Progress, Store};

/// How a job is run; every field is an operator flag.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Members per BatchUnlinkSso call (Auth accepts at most 1,000).
    pub batch_size: usize,
    /// BatchUnlinkSso calls in flight per job.
    pub parallelism: usize,
    /// Tries per Auth call before the job fails (1 = no retry).
    pub max_attempts: usize,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

/// How a run ended, short of a storage failure.
#[derive(Debug)]
pub enum RunOutcome {
    /// Every member was processed.
    Completed,
    /// The run stopped early because its [`StopSignal`] fired; the signal
    /// says why. Progress up to the last checkpoint is saved.
    Stopped,
}

/// Why a run could not go on.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Auth kept failing with transient errors until the retry budget ran out.
    #[error("gave up after {attempts} attempts: {last}")]
    RetriesExhausted {
        attempts: usize,
        last: AuthCallError,
    },
    /// Auth refused the call in a way retrying cannot fix.
    #[error("{0}")]
    Permanent(AuthCallError),
    /// Storage failed, or the lease was lost to another worker.
    #[error(transparent)]
    Store(#[from] Error),
}

pub struct Runner {
    pub store: Arc<dyn Store>,
    pub auth: Arc<dyn AuthGateway>,
    pub hub: Arc<WatchHub>,
    pub config: RunnerConfig,
    pub metrics: JobMetrics,
}

impl Runner {
    /// Runs `claimed` until it completes, fails or `stop` fires.
    pub async fn run(
        &self,
        claimed: &ClaimedJob,
        stop: &StopSignal,
    ) -> Result<RunOutcome, RunError> {
        let job = &claimed.job;
        let allow = job.kind.allow_custom_sso();
        let set_policy = self
            .with_retries(claimed, stop, "SetOrgSsoPolicy", || {
                self.auth.set_sso_policy(&job.org_id, allow)
            })
            .await?;
        if set_policy.is_none() {
            return Ok(RunOutcome::Stopped);
        }
        match job.kind {
            JobKind::EnableCustomSso => Ok(RunOutcome::Completed),
            JobKind::DisableCustomSso => self.unlink_members(claimed, stop).await,
        }
    }

    async fn unlink_members(
        &self,
        claimed: &ClaimedJob,
        stop: &StopSignal,
    ) -> Result<RunOutcome, RunError> {
        let org_id = claimed.job.org_id.as_str();
        let batch_size = self.config.batch_size.clamp(1, 1000);
        let parallelism = self.config.parallelism.max(1);
        // Batches in flight, yielded in the order they were sent.
        let mut in_flight = FuturesOrdered::new();
        // Results of finished batches, in member order, not yet saved.
        let mut finished: Vec<(String, UnlinkOutcome)> = Vec::new();
        // The checkpoint being written. Batches keep going meanwhile, and
        // whatever finishes during one write is saved by the next, in one
        // transaction: one fsync for several batches when Auth is fast.
        let mut saving: Option<BoxFuture<'_, Result<Progress, Error>>> = None;
        let mut after = claimed.cursor.clone();
        let mut exhausted = false;
        // A batch stopped while waiting to retry: nothing after it is saved,
        // so the cursor never skips it; it is replayed (harmlessly) later.
        let mut cut_short = false;
        loop {
            // Keep `parallelism` calls in flight, reading ids lazily, but
            // send no more while `parallelism` batches' worth of results
            // wait for a slow checkpoint: that bounds both the memory held
            // and the work a crash makes us replay (at most about five
            // times `parallelism` batches: in flight, waiting, being saved).
            while in_flight.len() < parallelism
                && finished.len() < parallelism * batch_size
                && !exhausted
                && !cut_short
                && !stop.is_stopping()
            {
                let ids = self
                    .store
                    .member_ids_after(org_id, after.as_deref(), batch_size)
                    .await?;
                // A short page is the last one: skip the empty read after it.
                exhausted = ids.len() < batch_size;
                let (Some(first), Some(last)) = (ids.first(), ids.last()) else {
                    break;
                };
                // The batch's calls to Auth (and their trace context) run
                // in this span, a child of the job's.
                let span = info_span!("batch", first = %first, members = ids.len());
                after = Some(last.clone());
                in_flight.push_back(self.unlink_batch(claimed, stop, ids).instrument(span));
            }
            if saving.is_none()
                && let Some(checkpoint) = Checkpoint::from_results(std::mem::take(&mut finished))
            {
                let store = &self.store;
                let lease = &claimed.lease;
                saving = Some(Box::pin(async move {
                    store.checkpoint(lease, &checkpoint).await
                }));
            }
            if in_flight.is_empty() && saving.is_none() {
                break;
            }
            tokio::select! {
                Some(result) = in_flight.next() => {
                    let (ids, outcomes) = result?;
                    match outcomes {
                        Some(outcomes) => finished.extend(ids.into_iter().zip(outcomes)),
                        None => {
                            cut_short = true;
                            in_flight = FuturesOrdered::new();
                        }
                    }
                }
                progress = wait_for(&mut saving) => {
                    saving = None;
                    let progress = progress?;
                    debug!(
                        job_id = %claimed.job.id,
                        processed = progress.job.processed_members,
                        total = progress.job.total_members,
                        "checkpoint"
                    );
                    self.hub.publish(&progress.job);
                    if let Some(reason) = progress.cancel_reason {
                        stop.stop(super::StopReason::Cancelled(reason));
                    }
                }
            }
        }
        if exhausted && !cut_short {
            Ok(RunOutcome::Completed)
        } else {
            Ok(RunOutcome::Stopped)
        }
    }

    /// Sends one batch to Auth (with retries). `None` outcomes: stopped
    /// while waiting to retry.
    async fn unlink_batch(
        &self,
        claimed: &ClaimedJob,
        stop: &StopSignal,
        ids: Vec<String>,
    ) -> Result<(Vec<String>, Option<Vec<UnlinkOutcome>>), RunError> {
        let org_id = claimed.job.org_id.as_str();
        let outcomes = self
            .with_retries(claimed, stop, "BatchUnlinkSso", || async {
                let started = std::time::Instant::now();
                let result = self.auth.batch_unlink(org_id, &ids).await;
                self.metrics.batch_call(started.elapsed());
                result
            })
            .await?;
        if let Some(outcomes) = &outcomes
            && outcomes.len() != ids.len()
        {
            return Err(RunError::Permanent(AuthCallError {
                code: "INTERNAL".into(),
                message: format!(
                    "BatchUnlinkSso answered {} results for {} members",
                    outcomes.len(),
                    ids.len()
                ),
                transient: false,
            }));
        }
        if let Some(outcomes) = &outcomes {
            self.metrics.batch_outcomes(outcomes);
        }
        Ok((ids, outcomes))
    }

    /// Calls Auth (`call_name`: the RPC, for metrics), retrying transient
    /// errors with backoff. `Ok(None)` means the stop signal fired while
    /// waiting to retry.
    async fn with_retries<T, F, Fut>(
        &self,
        claimed: &ClaimedJob,
        stop: &StopSignal,
        call_name: &'static str,
        mut call: F,
    ) -> Result<Option<T>, RunError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, AuthCallError>>,
    {
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(self.config.initial_backoff)
            .with_max_delay(self.config.max_backoff)
            .with_max_times(self.config.max_attempts.saturating_sub(1))
            .with_jitter()
            .build();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let err = match call().await {
                Ok(value) => return Ok(Some(value)),
                Err(err) if !err.transient => return Err(RunError::Permanent(err)),
                Err(err) => err,
            };
            let Some(delay) = delays.next() else {
                return Err(RunError::RetriesExhausted {
                    attempts,
                    last: err,
                });
            };
            warn!(job_id = %claimed.job.id, call = call_name, attempts, ?delay, error = %err, "auth call failed; retrying");
            self.metrics.auth_retry(call_name);
            let job = self
                .store
                .record_retry(&claimed.lease, &err.to_string())
                .await?;
            self.hub.publish(&job);
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = stop.stopping() => return Ok(None),
            }
        }
    }
}

/// Waits for the checkpoint being written; never resolves when there is none.
async fn wait_for(
    saving: &mut Option<BoxFuture<'_, Result<Progress, Error>>>,
) -> Result<Progress, Error> {
    match saving {
        Some(write) => write.await,
        None => std::future::pending().await,
    }
}
