//! The worker pool: claims jobs, keeps their leases alive, and settles each
//! run (succeeded, failed, cancelled, or handed back on shutdown).
//!
//! A job is picked up as soon as it is enqueued here (UpdateOrg wakes the
//! pool through a `Notify`), and otherwise on a short poll that also finds
//! jobs whose worker died and whose lease has expired.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

use super::runner::{RunError, RunOutcome, Runner};
use super::{RunningJobs, StopReason, StopSignal};
use crate::domain::job::JobState;
use crate::store::{ClaimedJob, LeaseStatus};

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Jobs run concurrently by this process.
    pub workers: usize,
    /// How long a claim stays valid without renewal. A crashed worker's job
    /// is resumed by another worker after at most this long.
    pub lease: Duration,
    /// How often to look for runnable jobs when not woken.
    pub poll_interval: Duration,
    /// Identifies this process in lease records.
    pub owner: String,
}

/// Wakes the pool when a job is enqueued or a job of an org ends.
#[derive(Debug, Default)]
pub struct Wakeup(Notify);

impl Wakeup {
    pub fn wake(&self) {
        // notify_one stores a permit when the pool is busy claiming, so a
        // wake-up between two claims is never lost.
        self.0.notify_one();
    }
}

pub struct WorkerPool {
    pub runner: Arc<Runner>,
    pub running: Arc<RunningJobs>,
    pub wakeup: Arc<Wakeup>,
    pub config: WorkerConfig,
}

impl WorkerPool {
    /// Claims and runs jobs until `shutdown` fires, then waits for every
    /// running job to checkpoint and hand back its lease.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let slots = Arc::new(Semaphore::new(self.config.workers.max(1)));
        let mut tasks = JoinSet::new();
        info!(workers = self.config.workers, owner = %self.config.owner, "worker pool started");
        loop {
            let permit = tokio::select! {
                permit = Arc::clone(&slots).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
                () = shutdown.cancelled() => break,
            };
            match self
                .runner
                .store
                .claim_job(&self.config.owner, self.config.lease)
                .await
            {
                Ok(Some(claimed)) => {
                    let pool = Arc::clone(&self);
                    let shutdown = shutdown.clone();
                    // The root of the job's trace: its batches and their
                    // calls to Auth are children, so Auth's logs carry the
                    // same trace_id.
                    let span = info_span!(
                        "job",
                        job_id = %claimed.job.id,
                        org_id = %claimed.job.org_id,
                        attempt = claimed.job.attempt,
                        trace_id = tracing::field::Empty,
                    );
                    orgauth_runtime::telemetry::record_trace_id(&span);
                    tasks.spawn(
                        async move {
                            pool.run_claimed(claimed, shutdown).await;
                            drop(permit);
                        }
                        .instrument(span),
                    );
                    // Look for more work straight away.
                    continue;
                }
                Ok(None) => drop(permit),
                Err(err) => {
                    drop(permit);
                    warn!(error = %err, "claiming a job failed");
                }
            }
            while tasks.try_join_next().is_some() {}
            tokio::select! {
                () = self.wakeup.0.notified() => {}
                () = tokio::time::sleep(self.config.poll_interval) => {}
                () = shutdown.cancelled() => break,
            }
        }
        info!(
            running = tasks.len(),
            "worker pool stopping; waiting for running jobs to checkpoint"
        );
        while tasks.join_next().await.is_some() {}
        info!("worker pool stopped");
    }

    async fn run_claimed(&self, claimed: ClaimedJob, shutdown: CancellationToken) {
        let job_id = claimed.job.id;
        info!(kind = ?claimed.job.kind, attempt = claimed.job.attempt, "job claimed");
        self.runner.metrics.job_claimed();
        self.runner.hub.publish(&claimed.job);
        let stop = self.running.register(job_id);
        if let Some(reason) = &claimed.cancel_reason {
            stop.stop(StopReason::Cancelled(reason.clone()));
        }
        let heartbeat = tokio::spawn(heartbeat(
            Arc::clone(&self.runner),
            claimed.lease.clone(),
            self.config.lease,
            Arc::clone(&stop),
            shutdown,
        ));

        let result = if stop.is_stopping() {
            Ok(RunOutcome::Stopped)
        } else {
            self.runner.run(&claimed, &stop).await
        };
        heartbeat.abort();
        self.runner.metrics.run_over();
        self.running.unregister(job_id);
        self.settle(&claimed, result, &stop).await;
        // The next job of this org (if any) may be runnable now.
        self.wakeup.wake();
    }

    /// Records how a run ended.
    async fn settle(
        &self,
        claimed: &ClaimedJob,
        result: Result<RunOutcome, RunError>,
        stop: &StopSignal,
    ) {
        let store = &self.runner.store;
        let lease = &claimed.lease;
        let finished = match result {
            Ok(RunOutcome::Completed) => store.finish_job(lease, JobState::Succeeded, "").await,
            Ok(RunOutcome::Stopped) => match stop.reason() {
                Some(StopReason::Cancelled(reason)) => {
                    store.finish_job(lease, JobState::Cancelled, &reason).await
                }
                Some(StopReason::Shutdown) | None => {
                    if let Err(err) = store.release_lease(lease).await {
                        warn!(error = %err, "releasing the lease failed; it will expire instead");
                    } else {
                        info!("job handed back for another worker to resume");
                    }
                    return;
                }
                Some(StopReason::LeaseLost) => {
                    warn!("lease lost to another worker; abandoning the run");
                    return;
                }
            },
            Err(RunError::Store(crate::error::Error::LeaseLost { .. })) => {
                warn!("lease lost to another worker; abandoning the run");
                return;
            }
            Err(RunError::Store(err)) => {
                // The job stays RUNNING and resumes from its last
                // checkpoint. After a transient failure (a restart, a
                // failover) hand it back as soon as the database answers
                // again, so a brief outage does not idle it for the rest of
                // its lease. Any other failure would only recur at once:
                // then the lease runs out first.
                error!(error = %err, "storage failed while running the job");
                if err.is_transient_storage() {
                    self.release_when_possible(lease).await;
                }
                return;
            }
            Err(err @ (RunError::RetriesExhausted { .. } | RunError::Permanent(_))) => {
                warn!(error = %err, "job failed");
                store
                    .finish_job(lease, JobState::Failed, &err.to_string())
                    .await
            }
        };
        match finished {
            Ok(job) => {
                self.runner.metrics.job_finished(job.state);
                info!(
                    state = job.state.name(),
                    processed = job.processed_members,
                    unlinked = job.unlinked_members,
                    failed = job.failed_members,
                    "job ended"
                );
                self.runner.hub.publish(&job);
            }
            Err(err) => warn!(error = %err, "recording the end of the job failed"),
        }
    }
}

impl WorkerPool {
    /// Releases `lease`, retrying with backoff for at most the lease's
    /// duration (after which it has expired anyway). Harmless if another
    /// worker took the job meanwhile: the release is fenced by the epoch.
    async fn release_when_possible(&self, lease: &crate::store::Lease) {
        let give_up = tokio::time::Instant::now() + self.config.lease;
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.runner.store.release_lease(lease).await {
                Ok(()) => {
                    info!("job handed back after a storage failure, to resume at once");
                    self.wakeup.wake();
                    return;
                }
                Err(err) if tokio::time::Instant::now() + backoff < give_up => {
                    debug!(error = %err, "cannot hand the job back yet; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                Err(err) => {
                    warn!(error = %err, "cannot hand the job back; its lease will expire");
                    return;
                }
            }
        }
    }
}

/// Renews the lease every third of its duration, or at once when asked
/// (another replica stored a request to stop the job); stops the job when
/// the lease is lost, cancellation was requested elsewhere, or on shutdown.
async fn heartbeat(
    runner: Arc<Runner>,
    lease: crate::store::Lease,
    lease_for: Duration,
    stop: Arc<StopSignal>,
    shutdown: CancellationToken,
) {
    let period = lease_for / 3;
    // Until when the lease surely holds, by this process's clock: from the
    // start of the last renewal that succeeded (the claim, at first).
    let mut held_until = tokio::time::Instant::now() + lease_for;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => {
                stop.stop(StopReason::Shutdown);
                return;
            }
            () = tokio::time::sleep(period) => {}
            () = stop.rechecked() => {}
        }
        let renewing = tokio::time::Instant::now();
        // Bounded: a renewal stuck on a dead connection must not outlive
        // the lease it is renewing.
        let renewed =
            tokio::time::timeout(period, runner.store.renew_lease(&lease, lease_for)).await;
        match renewed {
            Ok(Ok(LeaseStatus::Held { cancel_reason })) => {
                held_until = renewing + lease_for;
                if let Some(reason) = cancel_reason {
                    stop.stop(StopReason::Cancelled(reason));
                }
            }
            Ok(Ok(LeaseStatus::Lost)) => {
                stop.stop(StopReason::LeaseLost);
                return;
            }
            Ok(Err(err)) if tokio::time::Instant::now() + period < held_until => {
                warn!(error = %err, "lease renewal failed; will retry");
            }
            Err(_) if tokio::time::Instant::now() + period < held_until => {
                warn!("lease renewal got no answer; will retry");
            }
            // Cut off from the database for most of a lease: another
            // worker may claim the job before we can renew again, so stop
            // sending batches now rather than race it.
            Ok(Err(_)) | Err(_) => {
                warn!("cannot renew the lease before it expires; stopping the run");
                stop.stop(StopReason::LeaseLost);
                return;
            }
        }
    }
}
