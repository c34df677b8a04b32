//! The reconnecting `WatchJob` stream behind
//! [`OrgClient::watch_job`](crate::OrgClient::watch_job).
//!
//! A watch is a small state machine: open the server stream with
//! `since_version` = the last version yielded, pass on every newer job, stop
//! after a terminal state. When the stream breaks in a way that may heal
//! (UNAVAILABLE, as a shutting-down server sends; a transport error; the
//! stream ending before the job did) it sleeps with exponential backoff and
//! jitter and opens it again, through the same stub, so the reopened call
//! carries the same bearer token. Any other status (UNAUTHENTICATED and
//! PERMISSION_DENIED included) ends the watch with that error. The time
//! spent failing is bounded by [`WatchOptions::retry_budget`].

use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use futures::Stream;
use orgauth_proto::org::v1::job_service_client::JobServiceClient;
use orgauth_proto::org::v1::{Job, WatchJobRequest, WatchJobResponse};
use tonic::Streaming;
use tracing::{debug, info};

use crate::connect::ClientChannel;
use crate::error::{ClientError, Result, code_name, is_transient_status};
use crate::job::is_terminal;

/// How a job watch behaves when its stream breaks.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// How long a broken watch keeps trying to resume before it gives up
    /// with [`ClientError::WatchInterrupted`], counted from the first failure
    /// since the watch last made progress.
    pub retry_budget: Duration,
    /// Delay before the first reconnection; it doubles (plus up to 100%
    /// jitter, so the watchers of a restarted server do not reconnect in
    /// lockstep) up to `max_backoff`.
    pub min_backoff: Duration,
    /// Cap on the delay between two reconnections.
    pub max_backoff: Duration,
    /// A stream that stayed open this long before breaking counts as
    /// healthy: its failure starts a fresh retry budget. Without this, a
    /// watch of a quiet job (queued behind others, nothing to report) that
    /// was interrupted once would have no budget left for the next restart.
    pub healthy_after: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            retry_budget: Duration::from_secs(30),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            healthy_after: Duration::from_secs(5),
        }
    }
}

/// Whether a received job should be passed on, given the last version
/// already yielded. Older and repeated versions are dropped, which keeps the
/// output strictly increasing across reconnections. The one exception is a
/// terminal state at the version already seen: the server re-sends the final
/// state to a caller that claims to have seen it, so that the watch can end,
/// and dropping it would leave the watch reconnecting forever.
pub(crate) fn is_news(last_version: Option<i64>, job: &Job) -> bool {
    match last_version {
        None => true,
        Some(last) => job.version > last || (job.version == last && is_terminal(job.state())),
    }
}

type Backoff = <ExponentialBuilder as BackoffBuilder>::Backoff;

/// The reconnection policy: backoff delays, and the budget of time a watch
/// may spend failing without making progress.
pub(crate) struct ResumePolicy {
    options: WatchOptions,
    delays: Backoff,
    /// When the current run of failures began; `None` while healthy.
    failing_since: Option<Instant>,
}

impl ResumePolicy {
    pub(crate) fn new(options: WatchOptions) -> Self {
        Self {
            delays: Self::fresh_delays(&options),
            options,
            failing_since: None,
        }
    }

    fn fresh_delays(options: &WatchOptions) -> Backoff {
        ExponentialBuilder::new()
            .with_min_delay(options.min_backoff)
            .with_max_delay(options.max_backoff)
            .without_max_times()
            .with_jitter()
            .build()
    }

    /// The watch yielded something new: the connection works.
    pub(crate) fn progressed(&mut self) {
        self.failing_since = None;
        self.delays = Self::fresh_delays(&self.options);
    }

    /// A failure at `now`, of a stream opened at `opened_at` (`None` when the
    /// call itself failed). Returns how long to wait before trying again, or
    /// `None` when that wait would go beyond the retry budget.
    pub(crate) fn next_delay(
        &mut self,
        now: Instant,
        opened_at: Option<Instant>,
    ) -> Option<Duration> {
        let stream_was_healthy = opened_at.is_some_and(|opened| {
            now.saturating_duration_since(opened) >= self.options.healthy_after
        });
        if stream_was_healthy {
            self.progressed();
        }
        let failing_since = *self.failing_since.get_or_insert(now);
        let delay = self.delays.next().unwrap_or(self.options.max_backoff);
        let failing_for_after_delay = now.saturating_duration_since(failing_since) + delay;
        (failing_for_after_delay <= self.options.retry_budget).then_some(delay)
    }
}

/// One watch in progress.
struct Watch {
    jobs: JobServiceClient<ClientChannel>,
    job_id: String,
    /// The version of the last job yielded; `None` before the first.
    last_version: Option<i64>,
    /// The open server stream and when it was opened.
    stream: Option<(Streaming<WatchJobResponse>, Instant)>,
    resume: ResumePolicy,
    /// Set after the terminal state or a final error: nothing more to yield.
    finished: bool,
}

impl Watch {
    async fn next(&mut self) -> Option<Result<Job>> {
        if self.finished {
            return None;
        }
        loop {
            let Some((stream, opened_at)) = &mut self.stream else {
                let request = WatchJobRequest {
                    job_id: self.job_id.clone(),
                    since_version: self.last_version.unwrap_or(0),
                };
                match self.jobs.watch_job(request).await {
                    Ok(response) => self.stream = Some((response.into_inner(), Instant::now())),
                    Err(status) => {
                        if let Err(error) = self.pause_before_resuming(status, None).await {
                            return Some(Err(error));
                        }
                    }
                }
                continue;
            };
            let opened_at = *opened_at;
            let status = match stream.message().await {
                Ok(Some(WatchJobResponse { job: Some(job) })) => {
                    if !is_news(self.last_version, &job) {
                        debug!(job_id = %self.job_id, version = job.version, "dropping a version already seen");
                        continue;
                    }
                    self.last_version = Some(job.version);
                    self.resume.progressed();
                    if is_terminal(job.state()) {
                        self.finished = true;
                        self.stream = None;
                    }
                    return Some(Ok(job));
                }
                Ok(Some(WatchJobResponse { job: None })) => {
                    self.finished = true;
                    return Some(Err(ClientError::MissingField {
                        rpc: "WatchJob",
                        field: "job",
                    }));
                }
                Ok(None) => tonic::Status::unavailable(
                    "the WatchJob stream ended before the job reached a terminal state",
                ),
                Err(status) => status,
            };
            self.stream = None;
            if let Err(error) = self.pause_before_resuming(status, Some(opened_at)).await {
                return Some(Err(error));
            }
        }
    }

    /// Decides what a failure means: sleeps before the next attempt when it
    /// may heal and the budget allows, and otherwise ends the watch with the
    /// error to yield.
    async fn pause_before_resuming(
        &mut self,
        status: tonic::Status,
        opened_at: Option<Instant>,
    ) -> Result<()> {
        if !is_transient_status(&status) {
            self.finished = true;
            return Err(status.into());
        }
        let Some(delay) = self.resume.next_delay(Instant::now(), opened_at) else {
            self.finished = true;
            return Err(ClientError::WatchInterrupted {
                job_id: self.job_id.clone(),
                last_version: self.last_version.unwrap_or(0),
                retry_budget: self.resume.options.retry_budget,
                source: status.into(),
            });
        };
        info!(
            job_id = %self.job_id,
            since_version = self.last_version.unwrap_or(0),
            code = code_name(status.code()),
            error = status.message(),
            ?delay,
            "job watch interrupted; resuming"
        );
        tokio::time::sleep(delay).await;
        Ok(())
    }
}

/// Starts a reconnecting watch; see [`OrgClient::watch_job`](crate::OrgClient::watch_job).
pub(crate) fn watch_job(
    jobs: JobServiceClient<ClientChannel>,
    job_id: String,
    options: WatchOptions,
) -> impl Stream<Item = Result<Job>> + Send + Unpin + 'static {
    let watch = Watch {
        jobs,
        job_id,
        last_version: None,
        stream: None,
        resume: ResumePolicy::new(options),
        finished: false,
    };
    Box::pin(futures::stream::unfold(watch, |mut watch| async move {
        let item = watch.next().await?;
        Some((item, watch))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use orgauth_proto::org::v1::JobState;

    fn job(version: i64, state: JobState) -> Job {
        let mut job = Job {
            version,
            ..Job::default()
        };
        job.set_state(state);
        job
    }

    #[test]
    fn first_job_is_always_news() {
        assert!(is_news(None, &job(0, JobState::Queued)));
        assert!(is_news(None, &job(7, JobState::Running)));
    }

    #[test]
    fn only_newer_versions_are_news() {
        assert!(is_news(Some(3), &job(4, JobState::Running)));
        assert!(!is_news(Some(3), &job(3, JobState::Running)));
        assert!(!is_news(Some(3), &job(2, JobState::Running)));
        assert!(!is_news(Some(3), &job(2, JobState::Succeeded)));
    }

    #[test]
    fn a_terminal_state_at_the_last_version_still_ends_the_watch() {
        assert!(is_news(Some(3), &job(3, JobState::Succeeded)));
        assert!(is_news(Some(3), &job(3, JobState::Cancelled)));
    }

    fn options(retry_budget_ms: u64) -> WatchOptions {
        WatchOptions {
            retry_budget: Duration::from_millis(retry_budget_ms),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(400),
            healthy_after: Duration::from_secs(5),
        }
    }

    #[test]
    fn delays_grow_with_jitter_up_to_the_cap() {
        let mut policy = ResumePolicy::new(options(60_000));
        let start = Instant::now();
        let delays: Vec<_> = (0..6)
            .map(|_| policy.next_delay(start, None).unwrap())
            .collect();
        // Jitter adds up to 100% to each base delay: 100, 200, 400, 400...
        for (delay, base_ms) in delays.iter().zip([100, 200, 400, 400, 400, 400]) {
            let base = Duration::from_millis(base_ms);
            assert!(*delay >= base && *delay <= base * 2, "{delays:?}");
        }
    }

    #[test]
    fn gives_up_when_failing_longer_than_the_budget() {
        let mut policy = ResumePolicy::new(options(1_000));
        let start = Instant::now();
        assert!(policy.next_delay(start, None).is_some());
        assert!(
            policy
                .next_delay(start + Duration::from_millis(500), None)
                .is_some()
        );
        // 1.0s into the failure any further wait exceeds the 1s budget.
        assert!(
            policy
                .next_delay(start + Duration::from_millis(1_000), None)
                .is_none()
        );
    }

    #[test]
    fn progress_restores_the_budget() {
        let mut policy = ResumePolicy::new(options(1_000));
        let start = Instant::now();
        assert!(policy.next_delay(start, None).is_some());
        policy.progressed();
        let later = start + Duration::from_millis(1_000);
        assert!(policy.next_delay(later, None).is_some());
    }

    #[test]
    fn a_stream_that_lived_long_enough_restores_the_budget() {
        let mut policy = ResumePolicy::new(options(1_000));
        let start = Instant::now();
        assert!(policy.next_delay(start, None).is_some());
        // Reopened at once, then quiet for a minute before breaking again.
        let reopened = start + Duration::from_millis(300);
        let broke = reopened + Duration::from_secs(60);
        assert!(policy.next_delay(broke, Some(reopened)).is_some());
    }

    #[test]
    fn a_stream_that_breaks_at_once_does_not_restore_the_budget() {
        let mut policy = ResumePolicy::new(options(1_000));
        let start = Instant::now();
        assert!(policy.next_delay(start, None).is_some());
        let reopened = start + Duration::from_millis(900);
        let broke = start + Duration::from_millis(1_000);
        assert!(policy.next_delay(broke, Some(reopened)).is_none());
    }
}
