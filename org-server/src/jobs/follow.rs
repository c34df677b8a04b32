//! Brings changes made by other replicas into this process: the job-change
//! hints heard from the database ([`crate::store::job_changes`]) wake the
//! worker pool when a job may have become runnable, and refresh the
//! watchers of a job whose state they have not seen yet.
//!
//! Hints are never trusted for content: the job is re-read, and the watch
//! hub orders states by version, so a hint for this process's own write, a
//! duplicate or a reordered one changes nothing.

use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::{debug, warn};
use uuid::Uuid;

use super::hub::WatchHub;
use super::worker::Wakeup;
use crate::store::Store;
use crate::store::job_changes::JobChange;

/// What the follower needs: the hints, and what it refreshes and wakes.
pub struct ChangeFollower {
    pub changes: mpsc::Receiver<JobChange>,
    pub store: Arc<dyn Store>,
    pub hub: Arc<WatchHub>,
    pub wakeup: Arc<Wakeup>,
}

impl ChangeFollower {
    /// Applies the changes until the listener ends (at shutdown).
    pub async fn run(self) {
        let ChangeFollower {
            mut changes,
            store,
            hub,
            wakeup,
        } = self;
        while let Some(change) = changes.recv().await {
            match change {
                JobChange::Changed {
                    job_id,
                    version,
                    claimable,
                    ..
                } => {
                    if claimable {
                        wakeup.wake();
                    }
                    if hub.is_behind(job_id, version) {
                        refresh(store.as_ref(), &hub, job_id).await;
                    }
                }
                JobChange::Missed => {
                    wakeup.wake();
                    let watched = hub.watched();
                    debug!(jobs = watched.len(), "re-reading every watched job");
                    for job_id in watched {
                        refresh(store.as_ref(), &hub, job_id).await;
                    }
                }
            }
        }
    }
}

/// Re-reads a job and offers it to its watchers.
async fn refresh(store: &dyn Store, hub: &WatchHub, job_id: Uuid) {
    match store.get_job(job_id).await {
        Ok(Some(job)) => hub.publish(&job),
        // Pruned meanwhile; its watchers end when they next read it.
        Ok(None) => {}
        Err(err) => warn!(%job_id, error = %err, "cannot re-read a changed job"),
    }
}
