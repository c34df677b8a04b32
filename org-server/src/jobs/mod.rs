//! The asynchronous path: durable jobs, the workers that run them, and the
//! fan-out of their progress to watchers.
//!
//! - [`auth`]: the narrow view of Auth the runner needs (a trait).
//! - [`runner`]: runs one claimed job (policy, batches, checkpoints, retries).
//! - [`worker`]: the pool that claims jobs, holds their leases, and stops
//!   them on cancellation or shutdown.
//! - [`hub`]: per-job watch channels behind WatchJob.
//! - [`follow`]: applies job changes made by other replicas (PostgreSQL).
//! - [`retention`]: prunes finished jobs after the retention period.

pub mod auth;
pub mod follow;
pub mod hub;
pub mod retention;
pub mod runner;
pub mod worker;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Why a running job must stop before it completes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// CancelJob, or superseded by a newer change; ends CANCELLED with it.
    Cancelled(String),
    /// The process is shutting down; the lease is released for a successor.
    Shutdown,
    /// Another worker holds the job now; this one must not write.
    LeaseLost,
}

/// Tells a running job to stop at its next batch boundary, and why. The
/// first reason given wins.
#[derive(Debug, Default)]
pub struct StopSignal {
    token: CancellationToken,
    reason: Mutex<Option<StopReason>>,
    /// Asks the job's heartbeat to check its lease now rather than at its
    /// next period: another replica may have asked the job to stop.
    recheck: tokio::sync::Notify,
}

impl StopSignal {
    /// Has the heartbeat renew the lease at once, which reports whether
    /// the job was asked to stop.
    pub fn recheck(&self) {
        self.recheck.notify_one();
    }

    /// Completes when [`recheck`](Self::recheck) is called.
    pub async fn rechecked(&self) {
        self.recheck.notified().await;
    }

    pub fn stop(&self, reason: StopReason) {
        let mut current = self.reason.lock().unwrap_or_else(PoisonError::into_inner);
        if current.is_none() {
            *current = Some(reason);
        }
        self.token.cancel();
    }

    pub fn is_stopping(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Completes once [`stop`](Self::stop) has been called.
    pub async fn stopping(&self) {
        self.token.cancelled().await;
    }

    pub fn reason(&self) -> Option<StopReason> {
        self.reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The jobs this process is running, so CancelJob and superseding changes
/// reach them at once instead of at the next lease renewal.
#[derive(Debug, Default)]
pub struct RunningJobs {
    jobs: Mutex<HashMap<Uuid, Arc<StopSignal>>>,
}

impl RunningJobs {
    pub fn register(&self, job_id: Uuid) -> Arc<StopSignal> {
        let signal = Arc::new(StopSignal::default());
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(job_id, Arc::clone(&signal));
        signal
    }

    pub fn unregister(&self, job_id: Uuid) {
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&job_id);
    }

    /// Has the job's heartbeat check its lease now, if it runs here: a
    /// request to stop it was stored, by another replica.
    pub fn recheck(&self, job_id: Uuid) {
        let signal = self
            .jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&job_id)
            .cloned();
        if let Some(signal) = signal {
            signal.recheck();
        }
    }

    /// Stops the job if it runs here; otherwise its worker learns of the
    /// request from storage when it next renews its lease or checkpoints.
    pub fn stop(&self, job_id: Uuid, reason: StopReason) {
        let signal = self
            .jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&job_id)
            .cloned();
        if let Some(signal) = signal {
            signal.stop(reason);
        }
    }
}
