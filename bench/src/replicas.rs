//! Measurement 7 (PostgreSQL only): cross-replica watch delay. Two
//! org-server processes on one PostgreSQL database: replica A runs the jobs
//! (`--workers 4`), replica B only serves the API (`--workers 0`) and hears
//! A's job changes through LISTEN/NOTIFY (org-server's `job_changes`). One
//! watcher on A and one on B follow the same unlink job; for every version
//! of the job, the time at which B's watcher has it is compared with the
//! time at which A's watcher has it.
//!
//! The approach is the fan-out's (`fanout`): every `Job` message carries
//! `update_time`, stamped by the replica that writes the change, on this
//! machine's clock, which also stamps each receipt here. Watch channels
//! coalesce, so a watcher may skip a version and receive a newer one: a
//! watcher *has* version `v` from its first receipt of any version `>= v`.
//! The versions measured are those written after both watchers had their
//! first message (the first message is a snapshot of whatever the job was
//! when the stream opened), up to and including the terminal one. For each:
//!
//! - the delay on A and on B: the moment the watcher has it minus its
//!   `update_time`;
//! - B's lag behind A: the moment B's watcher has it minus the moment A's
//!   watcher has it (negative when B was first).
//!
//! The jobs are created through B (UpdateOrg on the API-only replica, as a
//! load balancer would route it), so A learns of them only through the
//! database; both watches are opened right after UpdateOrg returns. The job
//! is the unlink of an org whose members are no longer linked in Auth (every
//! outcome NOT_LINKED: the same calls and checkpoints as a real unlink),
//! with org-server's default batch size and parallelism, so checkpoints come
//! every few milliseconds. Between two measured jobs the org's custom SSO is
//! turned back on (through B, and waited for on B).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use orgauth_proto::org::v1 as pb;
use orgauth_proto::org::v1::job_service_client::JobServiceClient;
use orgauth_proto::org::v1::org_service_client::OrgServiceClient;
use serde::Serialize;

use crate::error::{Result, fail};
use crate::report::Latencies;
use crate::rpc::{self, AuthedChannel};

/// How long one job may take, from UpdateOrg to both watchers' terminal
/// messages.
const JOB_TIMEOUT: Duration = Duration::from_secs(120);

/// How many jobs.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Measured unlink jobs (each preceded by an unmeasured re-enable).
    pub jobs: usize,
}

/// What the cross-replica measurement found.
#[derive(Debug, Clone, Serialize)]
pub struct CrossReplica {
    /// Unlink jobs measured.
    pub jobs: usize,
    /// Members of the org each job went over.
    pub members: u64,
    /// Job versions measured over all jobs (written after both watchers
    /// attached).
    pub versions: u64,
    /// Of those, the share A's watcher received itself (the rest it had
    /// through a newer version).
    pub a_received_share: f64,
    /// The same for B's watcher.
    pub b_received_share: f64,
    /// `update_time` to A's watcher having the version, p50, ms.
    pub a_delay_p50_ms: f64,
    /// The same, p99, ms.
    pub a_delay_p99_ms: f64,
    /// `update_time` to B's watcher having the version, p50, ms.
    pub b_delay_p50_ms: f64,
    /// The same, p99, ms.
    pub b_delay_p99_ms: f64,
    /// B's receipt minus A's receipt per version, p50, ms (negative: B
    /// first).
    pub lag_p50_ms: f64,
    /// The same, p99, ms.
    pub lag_p99_ms: f64,
    /// The smallest lag, ms.
    pub lag_min_ms: f64,
    /// The largest lag, ms.
    pub lag_max_ms: f64,
    /// Share of versions B had no later than A.
    pub b_first_share: f64,
    /// UpdateOrg on B returned to the first message past QUEUED on A's
    /// watcher (the watch is opened after the return, so an upper bound),
    /// p50 over the jobs, ms.
    pub start_p50_ms: f64,
    /// The jobs' mean rate, members/s (UpdateOrg to the terminal message
    /// on A).
    pub members_per_s: f64,
}

/// One message as a watcher saw it.
#[derive(Debug, Clone, Copy)]
struct Receipt {
    version: i64,
    /// The change's `update_time`, µs since the epoch.
    updated_us: i64,
    /// When it arrived here, µs since the epoch.
    received_us: i64,
}

/// What one watcher saw of one job.
struct Watched {
    receipts: Vec<Receipt>,
    /// The terminal job.
    job: pb::Job,
    /// When the first message past QUEUED arrived.
    started: Option<Instant>,
    /// When the terminal message arrived.
    end: Instant,
}

/// Runs `plan.jobs` unlinks of `org_id` (`members` members, custom SSO off
/// and none linked) through replica `b`, watched on `a` and `b`.
pub async fn run(
    a: &rpc::Target,
    b: &rpc::Target,
    org_id: &str,
    members: u64,
    plan: Plan,
) -> Result<CrossReplica> {
    let a_channel = rpc::connect(a).await?;
    let b_channel = rpc::connect(b).await?;
    let mut orgs = OrgServiceClient::new(b_channel.clone());
    let expected = i64::try_from(members)?;

    let mut a_delays = Latencies::new()?;
    let mut b_delays = Latencies::new()?;
    let mut lags_us: Vec<i64> = Vec::new();
    let mut versions = 0_u64;
    let mut a_received = 0_u64;
    let mut b_received = 0_u64;
    let mut starts = Latencies::new()?;
    let mut busy = Duration::ZERO;
    for _ in 0..plan.jobs {
        if !rpc::get_allow_custom_sso(&mut orgs, org_id).await? {
            rpc::set_and_wait(&b_channel, org_id, true, JOB_TIMEOUT).await?;
        }

        let start = Instant::now();
        let job_id = rpc::set_allow_custom_sso(&mut orgs, org_id, false).await?;
        let returned = Instant::now();
        let (on_a, on_b) = tokio::try_join!(
            follow(JobServiceClient::new(a_channel.clone()), &job_id),
            follow(JobServiceClient::new(b_channel.clone()), &job_id),
        )?;
        for watched in [&on_a, &on_b] {
            rpc::ensure_succeeded(&watched.job)?;
            if watched.job.unlinked_members != 0 || watched.job.processed_members != expected {
                return fail(format!(
                    "job {job_id}: processed {} (unlinked {}), expected {members} (none linked)",
                    watched.job.processed_members, watched.job.unlinked_members
                ));
            }
        }
        if on_a.job.version != on_b.job.version {
            return fail(format!(
                "job {job_id} ended at version {} on A but {} on B",
                on_a.job.version, on_b.job.version
            ));
        }
        busy += on_a.end - start;
        if let Some(started) = on_a.started {
            starts.record(started.saturating_duration_since(returned));
        }

        let attached_us = match (on_a.receipts.first(), on_b.receipts.first()) {
            (Some(a_first), Some(b_first)) => a_first.received_us.max(b_first.received_us),
            _ => return fail(format!("job {job_id}: a watcher received nothing")),
        };
        // The versions written once both watched, as either watcher saw
        // them (one may have skipped a version the other received).
        let mut written: Vec<(i64, i64)> = on_a
            .receipts
            .iter()
            .chain(&on_b.receipts)
            .filter(|r| r.updated_us >= attached_us)
            .map(|r| (r.version, r.updated_us))
            .collect();
        written.sort_unstable();
        written.dedup_by_key(|w| w.0);
        for &(version, updated_us) in &written {
            let (a_at, a_own) = has(&on_a.receipts, version, "A")?;
            let (b_at, b_own) = has(&on_b.receipts, version, "B")?;
            versions += 1;
            a_received += u64::from(a_own);
            b_received += u64::from(b_own);
            a_delays.record(micros(a_at - updated_us));
            b_delays.record(micros(b_at - updated_us));
            lags_us.push(b_at - a_at);
        }
    }
    if versions == 0 {
        return fail(
            "no job version was written while both watchers were attached: \
             the org needs more members",
        );
    }
    lags_us.sort_unstable();
    let lag_ms = |q: f64| signed_quantile(&lags_us, q) as f64 / 1000.0;
    let total = versions as f64;
    Ok(CrossReplica {
        jobs: plan.jobs,
        members,
        versions,
        a_received_share: a_received as f64 / total,
        b_received_share: b_received as f64 / total,
        a_delay_p50_ms: a_delays.p50_ms(),
        a_delay_p99_ms: a_delays.p99_ms(),
        b_delay_p50_ms: b_delays.p50_ms(),
        b_delay_p99_ms: b_delays.p99_ms(),
        lag_p50_ms: lag_ms(0.50),
        lag_p99_ms: lag_ms(0.99),
        lag_min_ms: lag_ms(0.0),
        lag_max_ms: lag_ms(1.0),
        b_first_share: lags_us.iter().filter(|&&lag| lag <= 0).count() as f64 / total,
        start_p50_ms: starts.p50_ms(),
        members_per_s: (members as f64 * plan.jobs as f64) / busy.as_secs_f64().max(1e-9),
    })
}

/// When the watcher first had `version`: its first receipt of that version
/// or a newer one, and whether it was that version itself.
fn has(receipts: &[Receipt], version: i64, replica: &str) -> Result<(i64, bool)> {
    // Versions arrive in increasing order on one stream.
    match receipts.iter().find(|r| r.version >= version) {
        Some(r) => Ok((r.received_us, r.version == version)),
        None => fail(format!(
            "the watcher on replica {replica} never had version {version} or a newer one"
        )),
    }
}

/// The `q` quantile (0..=1) of sorted values, nearest rank.
fn signed_quantile(sorted: &[i64], q: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let last = sorted.len() - 1;
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.saturating_sub(1).min(last)]
}

/// A non-negative duration from microseconds (negative ones, clock jitter
/// between threads, count as zero).
fn micros(us: i64) -> Duration {
    Duration::from_micros(u64::try_from(us).unwrap_or(0))
}

/// Follows the job to its terminal message, recording every message.
async fn follow(mut jobs: JobServiceClient<AuthedChannel>, job_id: &str) -> Result<Watched> {
    let following = async {
        let mut stream = jobs
            .watch_job(pb::WatchJobRequest {
                job_id: job_id.to_owned(),
                since_version: 0,
            })
            .await?
            .into_inner();
        let mut receipts = Vec::with_capacity(256);
        let mut started = None;
        // Bounded by JOB_TIMEOUT; the server ends the stream after the
        // terminal state.
        while let Some(message) = stream.message().await? {
            let received_us = now_us();
            let now = Instant::now();
            let Some(job) = message.job else {
                return fail(format!("WatchJob({job_id}) sent a message without a job"));
            };
            let state = job.state();
            if started.is_none()
                && !matches!(state, pb::JobState::Queued | pb::JobState::Unspecified)
            {
                started = Some(now);
            }
            receipts.push(Receipt {
                version: job.version,
                updated_us: updated_us(&job),
                received_us,
            });
            if rpc::is_terminal(state) {
                return Ok(Watched {
                    receipts,
                    job,
                    started,
                    end: now,
                });
            }
        }
        fail(format!("WatchJob({job_id}) ended before a terminal state"))
    };
    match tokio::time::timeout(JOB_TIMEOUT, following).await {
        Ok(result) => result,
        Err(_) => fail(format!("job {job_id} did not end within {JOB_TIMEOUT:?}")),
    }
}

/// A job message's `update_time` in µs since the epoch (0 if unset).
fn updated_us(job: &pb::Job) -> i64 {
    job.update_time.map_or(0, |t| {
        t.seconds
            .saturating_mul(1_000_000)
            .saturating_add(i64::from(t.nanos) / 1000)
    })
}

/// Microseconds since the Unix epoch (0 before it).
fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_signed_values() {
        let sorted = [-3, -1, 0, 2, 5, 8, 9, 10, 11, 40];
        assert_eq!(signed_quantile(&sorted, 0.0), -3);
        assert_eq!(signed_quantile(&sorted, 0.5), 5);
        assert_eq!(signed_quantile(&sorted, 0.99), 40);
        assert_eq!(signed_quantile(&sorted, 1.0), 40);
        assert_eq!(signed_quantile(&[], 0.5), 0);
    }

    #[test]
    fn a_watcher_has_a_skipped_version_through_a_newer_one() {
        let receipts = [
            Receipt {
                version: 3,
                updated_us: 0,
                received_us: 10,
            },
            Receipt {
                version: 6,
                updated_us: 0,
                received_us: 20,
            },
        ];
        assert_eq!(has(&receipts, 3, "A").ok(), Some((10, true)));
        assert_eq!(has(&receipts, 4, "A").ok(), Some((20, false)));
        assert!(has(&receipts, 7, "A").is_err());
    }
}
