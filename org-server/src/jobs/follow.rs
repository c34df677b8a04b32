//! Brings changes made by other replicas into this process: the job-change
//! hints heard from the database ([`crate::store::job_changes`]) wake the
//! worker pool when a job may have become runnable, have a job running
//! here check its lease at once when another replica asked it to stop, and
//! refresh the watchers of a job whose state they have not seen yet.
//!
//! Hints are never trusted for content: the job is re-read, and the watch
//! hub orders states by version, so a hint for this process's own write, a
//! duplicate or a reordered one changes nothing.
//!
//! Hints can also be lost in ways no one reports: a re-read that failed
//! (the database busy right after a restart), a listener whose connection
//! died silently and has not been pinged yet. So every
//! [`SAFETY_POLL`] (5 s) the follower also re-reads each watched job whose
//! watchers have not seen it end: a watcher waits at most that long for a
//! state it missed, never forever.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{debug, warn};
use uuid::Uuid;

use super::RunningJobs;
use super::hub::WatchHub;
use super::worker::Wakeup;
use crate::store::Store;
use crate::store::job_changes::JobChange;

/// How often watched, unfinished jobs are re-read whatever the hints say.
pub const SAFETY_POLL: Duration = Duration::from_secs(5);

/// What the follower needs: the hints, and what it refreshes and wakes.
pub struct ChangeFollower {
    pub changes: mpsc::Receiver<JobChange>,
    pub store: Arc<dyn Store>,
    pub hub: Arc<WatchHub>,
    pub wakeup: Arc<Wakeup>,
    pub running: Arc<RunningJobs>,
    /// [`SAFETY_POLL`] in production.
    pub safety_poll: Duration,
}

impl ChangeFollower {
    /// Applies the changes until the listener ends (at shutdown).
    pub async fn run(self) {
        let ChangeFollower {
            mut changes,
            store,
            hub,
            wakeup,
            running,
            safety_poll,
        } = self;
        let mut safety_poll =
            tokio::time::interval_at(tokio::time::Instant::now() + safety_poll, safety_poll);
        safety_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let change = tokio::select! {
                change = changes.recv() => match change {
                    Some(change) => change,
                    None => return,
                },
                _ = safety_poll.tick() => {
                    for job_id in hub.watched_unfinished() {
                        refresh(store.as_ref(), &hub, job_id).await;
                    }
                    continue;
                }
            };
            match change {
                JobChange::Changed {
                    job_id,
                    version,
                    claimable,
                    stop_requested,
                    ..
                } => {
                    if claimable {
                        wakeup.wake();
                    }
                    if stop_requested {
                        running.recheck(job_id);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::job::JobState;
    use crate::store::CancelOutcome;
    use crate::testing::{set_allow, store};

    /// A job changed behind the hub's back (as by another replica) and an
    /// org of one queued job, watched here.
    async fn watched_job_changed_elsewhere() -> (crate::testing::TestStore, Arc<WatchHub>, Uuid) {
        let fixture = store().await;
        crate::testing::org_with_members(fixture.store.as_ref(), "acme", 1).await;
        let job_id = set_allow(fixture.store.as_ref(), "acme", false)
            .await
            .job_id
            .expect("a disable job");
        let hub = WatchHub::new();
        (fixture, hub, job_id)
    }

    #[tokio::test]
    async fn a_hint_or_the_safety_poll_brings_a_missed_state_to_watchers() {
        for hinted in [true, false] {
            let (fixture, hub, job_id) = watched_job_changed_elsewhere().await;
            let mut watcher = hub.subscribe(job_id);
            let Ok(CancelOutcome::Cancelled(cancelled)) =
                fixture.store.cancel_job(job_id, "test").await
            else {
                panic!("the queued job is cancelled");
            };
            let (sender, changes) = mpsc::channel(8);
            let follower = ChangeFollower {
                changes,
                store: Arc::clone(&fixture.store),
                hub: Arc::clone(&hub),
                wakeup: Arc::new(Wakeup::default()),
                running: Arc::new(RunningJobs::default()),
                // Without a hint, only the poll can bring the change.
                safety_poll: if hinted {
                    Duration::from_secs(3600)
                } else {
                    Duration::from_millis(50)
                },
            };
            let running = tokio::spawn(follower.run());
            if hinted {
                sender
                    .send(JobChange::Changed {
                        job_id,
                        version: cancelled.version,
                        state: JobState::Cancelled,
                        claimable: true,
                        stop_requested: false,
                    })
                    .await
                    .expect("the follower listens");
            }
            let seen = tokio::time::timeout(Duration::from_secs(5), watcher.next_after(0))
                .await
                .expect("the watcher hears of the change")
                .expect("a state");
            assert_eq!(seen.state, JobState::Cancelled, "hinted: {hinted}");
            assert_eq!(seen.version, cancelled.version);
            drop(sender);
            if hinted {
                // The listener ending ends the follower.
                tokio::time::timeout(Duration::from_secs(5), running)
                    .await
                    .expect("the follower stops")
                    .expect("no panic");
            } else {
                running.abort();
            }
        }
    }

    #[tokio::test]
    async fn missed_changes_re_read_every_watched_job() {
        let (fixture, hub, job_id) = watched_job_changed_elsewhere().await;
        let mut watcher = hub.subscribe(job_id);
        fixture
            .store
            .cancel_job(job_id, "test")
            .await
            .expect("cancelled");
        let (sender, changes) = mpsc::channel(8);
        let running = tokio::spawn(
            ChangeFollower {
                changes,
                store: Arc::clone(&fixture.store),
                hub: Arc::clone(&hub),
                wakeup: Arc::new(Wakeup::default()),
                running: Arc::new(RunningJobs::default()),
                safety_poll: Duration::from_secs(3600),
            }
            .run(),
        );
        sender.send(JobChange::Missed).await.expect("listening");
        let seen = tokio::time::timeout(Duration::from_secs(5), watcher.next_after(0))
            .await
            .expect("re-read on Missed")
            .expect("a state");
        assert_eq!(seen.state, JobState::Cancelled);
        running.abort();
    }
}
