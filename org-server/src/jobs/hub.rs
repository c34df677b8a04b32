//! Fan-out of job states to WatchJob streams.
//!
//! One `tokio::sync::watch` channel per watched job holds only the newest
//! state, which gives the coalescing the API promises: a worker publishing a
//! checkpoint never waits for anyone, and a slow watcher simply sees the
//! latest state when it next reads. Channels exist only while someone
//! watches; the last watcher to leave removes its job's entry.
//!
//! States are ordered by `Job::version`, so an older state (for example one
//! read from the database just before a checkpoint was published) never
//! replaces a newer one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;
use uuid::Uuid;

use crate::domain::job::Job;

type Slot = Option<Arc<Job>>;

#[derive(Default)]
pub struct WatchHub {
    channels: Mutex<HashMap<Uuid, watch::Sender<Slot>>>,
}

impl WatchHub {
    pub fn new() -> Arc<Self> {
        Arc::new(WatchHub::default())
    }

    /// Offers a new state of a job to its watchers, if it has any.
    pub fn publish(&self, job: &Job) {
        let channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(sender) = channels.get(&job.id) {
            offer(sender, job);
        }
    }

    /// Starts watching a job. Call [`Subscription::offer`] with the state
    /// read from storage *after* subscribing, so no update can fall between
    /// the read and the subscription.
    pub fn subscribe(self: &Arc<Self>, job_id: Uuid) -> Subscription {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        let receiver = channels
            .entry(job_id)
            .or_insert_with(|| watch::channel(None).0)
            .subscribe();
        Subscription {
            hub: Arc::clone(self),
            job_id,
            receiver: Some(receiver),
        }
    }

    /// Whether a job is watched here and its watchers have not yet seen
    /// `version`: only then is a change heard from another replica worth
    /// re-reading.
    pub fn is_behind(&self, job_id: Uuid, version: i64) -> bool {
        let channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        channels.get(&job_id).is_some_and(|sender| {
            sender
                .borrow()
                .as_ref()
                .is_none_or(|job| job.version < version)
        })
    }

    /// The jobs watched here, to re-read after changes may have been missed.
    pub fn watched(&self) -> Vec<Uuid> {
        let channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        channels.keys().copied().collect()
    }

    /// The watched jobs whose watchers have not yet seen them end: the
    /// ones a missed change could leave waiting forever.
    pub fn watched_unfinished(&self) -> Vec<Uuid> {
        let channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        channels
            .iter()
            .filter(|(_, sender)| {
                sender
                    .borrow()
                    .as_ref()
                    .is_none_or(|job| !job.state.is_terminal())
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// Number of jobs with at least one watcher (for tests and metrics).
    pub fn watched_jobs(&self) -> usize {
        self.channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

fn offer(sender: &watch::Sender<Slot>, job: &Job) {
    sender.send_if_modified(|slot| match slot {
        Some(current) if current.version >= job.version => false,
        _ => {
            *slot = Some(Arc::new(job.clone()));
            true
        }
    });
}

/// A watcher's handle on one job's channel. Dropping it unsubscribes.
pub struct Subscription {
    hub: Arc<WatchHub>,
    job_id: Uuid,
    /// Always `Some` until drop, which takes it to release the channel
    /// before checking whether anyone else still listens.
    receiver: Option<watch::Receiver<Slot>>,
}

impl Subscription {
    /// Seeds the channel with a state read from storage (ignored if older).
    pub fn offer(&self, job: &Job) {
        self.hub.publish(job);
    }

    /// Waits until a state newer than `after_version` exists and returns it.
    /// Returns `None` only if the hub dropped the channel, which it does not
    /// do while this subscription lives.
    pub async fn next_after(&mut self, after_version: i64) -> Option<Arc<Job>> {
        let receiver = self.receiver.as_mut()?;
        let result = receiver
            .wait_for(|slot| slot.as_ref().is_some_and(|job| job.version > after_version))
            .await;
        result.ok().and_then(|slot| slot.clone())
    }

    /// Waits until a state newer than `after_version`, or a terminal state
    /// of any version, exists and returns it: what a watch sends next. A
    /// terminal state is final (a job is never written after it), so a
    /// watch that asked to skip past it still ends with it.
    pub async fn next_after_or_end(&mut self, after_version: i64) -> Option<Arc<Job>> {
        let receiver = self.receiver.as_mut()?;
        let result = receiver
            .wait_for(|slot| {
                slot.as_ref()
                    .is_some_and(|job| job.version > after_version || job.state.is_terminal())
            })
            .await;
        result.ok().and_then(|slot| slot.clone())
    }

    /// The newest state known, if any.
    pub fn latest(&self) -> Option<Arc<Job>> {
        self.receiver.as_ref().and_then(|r| r.borrow().clone())
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut channels = self
            .hub
            .channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        drop(self.receiver.take());
        if channels
            .get(&self.job_id)
            .is_some_and(|sender| sender.receiver_count() == 0)
        {
            channels.remove(&self.job_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::job::{JobKind, JobState};

    fn job(id: Uuid, version: i64) -> Job {
        Job {
            id,
            org_id: "acme".into(),
            kind: JobKind::DisableCustomSso,
            state: JobState::Running,
            total_members: 10,
            processed_members: version,
            unlinked_members: 0,
            failed_members: 0,
            attempt: 1,
            last_error: String::new(),
            failures: vec![],
            version,
            create_time: 0,
            update_time: 0,
            start_time: None,
            end_time: None,
        }
    }

    #[tokio::test]
    async fn watchers_see_the_newest_state_and_never_an_older_one() {
        let hub = WatchHub::new();
        let id = Uuid::now_v7();
        let mut sub = hub.subscribe(id);
        hub.publish(&job(id, 3));
        hub.publish(&job(id, 5));
        sub.offer(&job(id, 4)); // a stale read loses to the published state
        assert_eq!(sub.next_after(0).await.unwrap().version, 5);
        hub.publish(&job(id, 6));
        assert_eq!(sub.next_after(5).await.unwrap().version, 6);
    }

    #[tokio::test]
    async fn a_terminal_state_is_delivered_whatever_version_was_asked_for() {
        let hub = WatchHub::new();
        let id = Uuid::now_v7();
        let mut sub = hub.subscribe(id);
        hub.publish(&job(id, 3));
        let pending = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            sub.next_after_or_end(1_000_000),
        )
        .await;
        assert!(pending.is_err(), "a running job's older state is skipped");
        let mut ended = job(id, 4);
        ended.state = JobState::Failed;
        hub.publish(&ended);
        let last = sub.next_after_or_end(1_000_000).await.unwrap();
        assert_eq!((last.version, last.state), (4, JobState::Failed));
        assert_eq!(sub.next_after_or_end(2).await.unwrap().version, 4);
    }

    #[tokio::test]
    async fn last_watcher_leaving_frees_the_channel() {
        let hub = WatchHub::new();
        let id = Uuid::now_v7();
        let a = hub.subscribe(id);
        let b = hub.subscribe(id);
        assert_eq!(hub.watched_jobs(), 1);
        drop(a);
        assert_eq!(hub.watched_jobs(), 1);
        drop(b);
        assert_eq!(hub.watched_jobs(), 0);
        hub.publish(&job(id, 1)); // no watchers: a no-op
        assert_eq!(hub.watched_jobs(), 0);
    }

    #[test]
    fn only_a_watched_job_with_an_older_state_is_behind() {
        let hub = WatchHub::new();
        let id = Uuid::now_v7();
        assert!(!hub.is_behind(id, 1), "nobody watches");
        let _sub = hub.subscribe(id);
        assert!(hub.is_behind(id, 1), "watched, nothing seen yet");
        hub.publish(&job(id, 4));
        assert!(!hub.is_behind(id, 4));
        assert!(!hub.is_behind(id, 3));
        assert!(hub.is_behind(id, 5));
        assert_eq!(hub.watched(), vec![id]);
        assert_eq!(hub.watched_unfinished(), vec![id]);
        let mut ended = job(id, 6);
        ended.state = JobState::Succeeded;
        hub.publish(&ended);
        assert_eq!(hub.watched(), vec![id]);
        assert!(
            hub.watched_unfinished().is_empty(),
            "its watchers saw the end"
        );
    }
}
