//! org-server's own metrics, beside the per-call `grpc_server_*` ones of
//! `orgauth_runtime::metrics`: what this replica's workers do (claims, jobs
//! ended, batch latency, retries, members unlinked), and the queue as
//! storage sees it (jobs by state, queue depth, oldest queued job), read
//! from the database at each scrape.
//!
//! The queue figures describe the whole cluster, so every replica reports
//! the same values: aggregate them with `max`, not `sum`. The worker
//! figures are this replica's own: `sum` them.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::FutureExt;
use orgauth_runtime::metrics::{ScrapeHook, latency_histogram};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tracing::warn;

use crate::domain::Micros;
use crate::domain::job::{JobState, UnlinkOutcome};
use crate::limits::WatchLimits;
use crate::store::Store;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabel {
    call: &'static str,
}

/// The counters the worker pool and runner update. Cloning shares them;
/// [`JobMetrics::default`] counts without being exported (tests).
#[derive(Clone)]
pub struct JobMetrics {
    claims: Counter,
    finished: Family<StateLabel, Counter>,
    running: Gauge,
    batch_seconds: Histogram,
    auth_retries: Family<CallLabel, Counter>,
    members_unlinked: Counter,
    members_failed: Counter,
}

impl Default for JobMetrics {
    fn default() -> Self {
        JobMetrics {
            claims: Counter::default(),
            finished: Family::default(),
            running: Gauge::default(),
            batch_seconds: latency_histogram(),
            auth_retries: Family::default(),
            members_unlinked: Counter::default(),
            members_failed: Counter::default(),
        }
    }
}

impl JobMetrics {
    /// New counters, registered in `registry`.
    pub fn register(registry: &mut Registry) -> JobMetrics {
        let metrics = JobMetrics::default();
        registry.register(
            "orgauth_job_claims",
            "Jobs this replica's workers claimed (a resumed job counts again)",
            metrics.claims.clone(),
        );
        registry.register(
            "orgauth_jobs_finished",
            "Jobs this replica's workers ended, by final state",
            metrics.finished.clone(),
        );
        registry.register(
            "orgauth_worker_jobs_running",
            "Jobs this replica's workers are running now",
            metrics.running.clone(),
        );
        registry.register(
            "orgauth_unlink_batch_duration_seconds",
            "Duration of one BatchUnlinkSso call to Auth, failed tries included",
            metrics.batch_seconds.clone(),
        );
        registry.register(
            "orgauth_auth_call_retries",
            "Calls to Auth retried after a transient error, by call",
            metrics.auth_retries.clone(),
        );
        registry.register(
            "orgauth_members_unlinked",
            "Members whose SSO connection Auth removed",
            metrics.members_unlinked.clone(),
        );
        registry.register(
            "orgauth_members_failed",
            "Members Auth refused to unlink (listed by ListJobFailures)",
            metrics.members_failed.clone(),
        );
        metrics
    }

    pub fn job_claimed(&self) {
        self.claims.inc();
        self.running.inc();
    }

    /// The run of a claimed job is over, however it ended.
    pub fn run_over(&self) {
        self.running.dec();
    }

    pub fn job_finished(&self, state: JobState) {
        self.finished
            .get_or_create(&StateLabel {
                state: state.name(),
            })
            .inc();
    }

    pub fn batch_call(&self, took: Duration) {
        self.batch_seconds.observe(took.as_secs_f64());
    }

    /// `call` is the Auth RPC's name.
    pub fn auth_retry(&self, call: &'static str) {
        self.auth_retries.get_or_create(&CallLabel { call }).inc();
    }

    pub fn batch_outcomes(&self, outcomes: &[UnlinkOutcome]) {
        let (mut unlinked, mut failed) = (0, 0);
        for outcome in outcomes {
            match outcome {
                UnlinkOutcome::Unlinked => unlinked += 1,
                UnlinkOutcome::NotLinked => {}
                UnlinkOutcome::Failed { .. } => failed += 1,
            }
        }
        self.members_unlinked.inc_by(unlinked);
        self.members_failed.inc_by(failed);
    }
}

/// How many jobs storage holds in each state, and the oldest queued one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobCounts {
    pub by_state: Vec<(JobState, u64)>,
    /// Creation time of the oldest QUEUED job.
    pub oldest_queued: Option<Micros>,
}

impl JobCounts {
    /// From `(state, count)` rows; unknown states are ignored.
    pub fn from_rows(rows: Vec<(i64, i64)>, oldest_queued: Option<Micros>) -> JobCounts {
        JobCounts {
            by_state: rows
                .into_iter()
                .filter_map(|(state, count)| {
                    Some((JobState::from_i64(state)?, u64::try_from(count).ok()?))
                })
                .collect(),
            oldest_queued,
        }
    }
}

/// The queue gauges, refreshed from storage before each scrape.
#[derive(Clone, Default)]
struct QueueGauges {
    jobs: Family<StateLabel, Gauge>,
    queue_depth: Gauge,
    oldest_queued_age: Gauge<f64, AtomicU64>,
    watch_streams: Gauge,
}

/// Registers the queue and watch gauges, and returns the hook that
/// refreshes them at each scrape.
pub fn register_queue(
    registry: &mut Registry,
    store: Arc<dyn Store>,
    watches: Arc<WatchLimits>,
) -> ScrapeHook {
    let gauges = QueueGauges::default();
    registry.register(
        "orgauth_jobs",
        "Jobs in storage by state, all replicas' (aggregate with max)",
        gauges.jobs.clone(),
    );
    registry.register(
        "orgauth_job_queue_depth",
        "Jobs waiting for a worker (QUEUED)",
        gauges.queue_depth.clone(),
    );
    registry.register(
        "orgauth_job_oldest_queued_age_seconds",
        "Age of the oldest QUEUED job; 0 when none waits",
        gauges.oldest_queued_age.clone(),
    );
    registry.register(
        "orgauth_watch_streams_open",
        "WatchJob and job-event streams open on this replica",
        gauges.watch_streams.clone(),
    );
    Arc::new(move || {
        let store = Arc::clone(&store);
        let watches = Arc::clone(&watches);
        let gauges = gauges.clone();
        async move {
            gauges.watch_streams.set(watches.open() as i64);
            match store.job_counts().await {
                Ok(counts) => gauges.apply(&counts, now_micros()),
                Err(err) => warn!(error = %err, "cannot read job counts for metrics"),
            }
        }
        .boxed()
    })
}

impl QueueGauges {
    fn apply(&self, counts: &JobCounts, now: Micros) {
        // Every state is reported, zeros included, so a state that empties
        // drops to 0 instead of keeping its last value.
        for state in JobState::ALL {
            let count = counts
                .by_state
                .iter()
                .find(|(s, _)| *s == state)
                .map_or(0, |(_, n)| *n);
            self.jobs
                .get_or_create(&StateLabel {
                    state: state.name(),
                })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
            if state == JobState::Queued {
                self.queue_depth
                    .set(i64::try_from(count).unwrap_or(i64::MAX));
            }
        }
        // Clocks of replicas differ a little: a job "from the future" is 0 s old.
        let age = counts
            .oldest_queued
            .map_or(0, |created| now.saturating_sub(created).max(0));
        self.oldest_queued_age.set(age as f64 / 1e6);
    }
}

fn now_micros() -> Micros {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_gauges_report_every_state_and_the_oldest_age() {
        let gauges = QueueGauges::default();
        let now = now_micros();
        gauges.apply(
            &JobCounts {
                by_state: vec![(JobState::Queued, 3), (JobState::Succeeded, 7)],
                oldest_queued: Some(now - 90_000_000),
            },
            now,
        );
        assert_eq!(gauges.queue_depth.get(), 3);
        assert!((gauges.oldest_queued_age.get() - 90.0).abs() < 1e-6);
        let running = gauges
            .jobs
            .get_or_create(&StateLabel { state: "RUNNING" })
            .get();
        assert_eq!(running, 0);
        gauges.apply(&JobCounts::default(), now);
        assert_eq!(gauges.queue_depth.get(), 0);
        assert_eq!(gauges.oldest_queued_age.get(), 0.0);
    }

    #[test]
    fn outcomes_are_counted_by_kind() {
        let metrics = JobMetrics::default();
        metrics.batch_outcomes(&[
            UnlinkOutcome::Unlinked,
            UnlinkOutcome::NotLinked,
            UnlinkOutcome::Unlinked,
            UnlinkOutcome::Failed {
                code: "X".into(),
                message: "y".into(),
            },
        ]);
        assert_eq!(metrics.members_unlinked.get(), 2);
        assert_eq!(metrics.members_failed.get(), 1);
    }
}
