//! Measurement 6: watch fan-out. Many concurrent `WatchJob` streams on one
//! running job, over a handful of HTTP/2 connections: org-server's resident
//! memory per watcher, and the delay from a checkpoint to the moment the
//! last watcher has it.
//!
//! The job is an unlink of an org whose members are not linked in Auth
//! (every outcome NOT_LINKED: the same calls and checkpoints), run with a
//! small batch and parallelism 1 so that it checkpoints often and lasts
//! longer than the measurement; it is cancelled when the measurement ends.
//!
//! Baseline: before the others attach, one watcher alone follows the job
//! for a moment; its checkpoint-to-receipt delays and the job's rate then
//! are what the fan-out is compared with.
//!
//! Memory: org-server's `VmRSS` (/proc/PID/status) once the job is running
//! and the watchers' connections are open, and again once every watcher has
//! received its first message; the difference divided by the number of
//! watchers. It includes everything a watcher costs the server: the HTTP/2
//! stream, the response task and its encode buffer, the subscription. A
//! second sample at the end of the window (watchers still attached, after
//! many fan-out rounds) shows whether it grows. The watches are opened a
//! few hundred at a time ([`Plan::opening`]): opened all in the same
//! instant, every request waits for its first database read with its whole
//! service future alive, and that burst, not the watchers, sets the
//! high-water mark of the process's RSS.
//!
//! Delay: every `Job` message carries `update_time`, which org-server
//! stamps when it writes the checkpoint (before the commit, so the figure
//! also includes the commit's fsync); the same machine's clock stamps each
//! receipt here. Watch channels coalesce, so a slow watcher may skip a
//! version and receive a newer one: a watcher has checkpoint `v` from its
//! first receipt of any version `>= v`. For each checkpoint written after
//! every watcher was attached (and received by at least one), the delay is
//! the latest such receipt over all watchers minus its `update_time`.
//!
//! The watchers only record `(version, update_time, receipt time)` into
//! their own `Vec`; everything is computed after the streams end, so the
//! benchmark's share of the two cores stays small. It is not zero: this
//! process decodes every message the server sends, and the CPU time of
//! both processes during the window is reported.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use orgauth_proto::org::v1 as pb;
use orgauth_proto::org::v1::job_service_client::JobServiceClient;
use orgauth_proto::org::v1::org_service_client::OrgServiceClient;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::error::{Result, fail};
use crate::report::Latencies;
use crate::rpc::{self, AuthedChannel};

/// How long the job may take to show progress after UpdateOrg.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long opening every watch (to each one's first message) may take.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the streams may take to end after CancelJob.
const END_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the memory is left to settle before each sample.
const SETTLE: Duration = Duration::from_millis(300);

/// Sizes and durations of the fan-out measurement.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Concurrent WatchJob streams.
    pub watchers: usize,
    /// HTTP/2 connections they are spread over.
    pub connections: usize,
    /// Watches being opened at once (each until its first message).
    pub opening: usize,
    /// How long checkpoints are measured once every watcher is attached.
    pub window: Duration,
    /// How long the one watcher of the baseline measures, before the others
    /// attach.
    pub solo_window: Duration,
}

/// What the fan-out measured.
#[derive(Debug, Clone, Serialize)]
pub struct Fanout {
    /// Concurrent WatchJob streams.
    pub watchers: usize,
    /// HTTP/2 connections.
    pub connections: usize,
    /// org-server's VmRSS before the watchers, KiB.
    pub rss_before_kib: u64,
    /// VmRSS once every watcher had its first message, KiB.
    pub rss_attached_kib: u64,
    /// VmRSS at the end of the window, watchers still attached, KiB.
    pub rss_end_kib: u64,
    /// (attached - before) / watchers, bytes.
    pub bytes_per_watcher: f64,
    /// (end - before) / watchers, bytes.
    pub bytes_per_watcher_end: f64,
    /// From the first watch opened to every watcher's first message, s.
    pub attach_s: f64,
    /// The measurement window, s.
    pub window_s: f64,
    /// Checkpoints measured (written after all watchers attached, received
    /// by at least one).
    pub checkpoints: u64,
    /// Checkpoint versions written in the window (measured or skipped by
    /// every watcher).
    pub versions_in_window: u64,
    /// Checkpoint-to-last-watcher delay p50, ms.
    pub delay_p50_ms: f64,
    /// Checkpoint-to-last-watcher delay p99, ms.
    pub delay_p99_ms: f64,
    /// The largest delay, ms.
    pub delay_max_ms: f64,
    /// Of those checkpoints, the mean share each watcher received itself
    /// (the rest it skipped, coalesced into a newer one).
    pub received_share: f64,
    /// Messages received by all watchers together.
    pub messages: u64,
    /// Members processed by the job during the window.
    pub members_in_window: i64,
    /// The baseline: checkpoint-to-watcher delay p50 with one watcher, ms.
    pub solo_p50_ms: f64,
    /// The same, p99, ms.
    pub solo_p99_ms: f64,
    /// Checkpoints the lone watcher measured.
    pub solo_checkpoints: u64,
    /// The job's rate with one watcher, members/s.
    pub solo_members_per_s: f64,
    /// The job's rate during the window, members/s.
    pub members_per_s: f64,
    /// CPU time org-server used during the window, s.
    pub server_cpu_s: f64,
    /// CPU time this benchmark used during the window, s.
    pub bench_cpu_s: f64,
    /// The part of the window over which CPU time was taken, s.
    pub cpu_window_s: f64,
}

/// One message as a watcher saw it.
#[derive(Debug, Clone, Copy)]
struct Receipt {
    version: i64,
    /// Server's `update_time`, µs since the epoch.
    updated_us: i64,
    /// When it arrived here, µs since the epoch.
    received_us: i64,
    running: bool,
    processed: i64,
}

/// Turns custom SSO off for `org_id` (org-server must run with a small
/// batch size so that the job outlasts the measurement), attaches
/// `plan.watchers` watchers, measures, and cancels the job.
pub async fn run(org: &rpc::Target, org_pid: u32, org_id: &str, plan: Plan) -> Result<Fanout> {
    let control = rpc::connect(org).await?;
    let mut orgs = OrgServiceClient::new(control.clone());
    let mut jobs = JobServiceClient::new(control);
    let job_id = rpc::set_allow_custom_sso(&mut orgs, org_id, false).await?;
    let solo = solo_watch(&mut jobs, &job_id, plan.solo_window).await?;

    let connections = plan.connections.max(1);
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections {
        channels.push(rpc::connect(org).await?);
    }
    tokio::time::sleep(SETTLE).await;
    let rss_before_kib = vm_rss_kib(org_pid)?;

    let attached = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let opening = Arc::new(Semaphore::new(plan.opening.max(1)));
    let deadline = tokio::time::Instant::now() + ATTACH_TIMEOUT + plan.window + END_TIMEOUT;
    let open_start = Instant::now();
    let watchers: Vec<JoinHandle<Result<Vec<Receipt>>>> = (0..plan.watchers)
        .map(|i| {
            let client = JobServiceClient::new(channels[i % channels.len()].clone());
            let job_id = job_id.clone();
            let attached = Arc::clone(&attached);
            let opening = Arc::clone(&opening);
            let failed = Arc::clone(&failed);
            tokio::spawn(async move {
                let watching = watch(client, job_id, attached, opening);
                let result = match tokio::time::timeout_at(deadline, watching).await {
                    Ok(result) => result,
                    Err(_) => fail("a watcher was still open at the deadline"),
                };
                if result.is_err() {
                    failed.fetch_add(1, Ordering::Release);
                }
                result
            })
        })
        .collect();

    // Bounded by ATTACH_TIMEOUT.
    let attach_deadline = open_start + ATTACH_TIMEOUT;
    while attached.load(Ordering::Acquire) < plan.watchers {
        if failed.load(Ordering::Acquire) > 0 {
            return first_error(watchers).await;
        }
        if Instant::now() >= attach_deadline {
            for watcher in &watchers {
                watcher.abort();
            }
            return fail(format!(
                "only {} of {} watchers had their first message after {ATTACH_TIMEOUT:?}",
                attached.load(Ordering::Acquire),
                plan.watchers
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let attach = open_start.elapsed();
    let attached_us = now_us();
    tokio::time::sleep(SETTLE).await;
    let rss_attached_kib = vm_rss_kib(org_pid)?;

    let window_start = Instant::now();
    let server_cpu_start = cpu_seconds(&org_pid.to_string())?;
    let bench_cpu_start = cpu_seconds("self")?;
    tokio::time::sleep(plan.window.saturating_sub(SETTLE)).await;
    let server_cpu_end = cpu_seconds(&org_pid.to_string())?;
    let bench_cpu_end = cpu_seconds("self")?;
    let cpu_window = window_start.elapsed();
    let rss_end_kib = vm_rss_kib(org_pid)?;
    let window = window_start.elapsed() + SETTLE;
    let cancelled_us = now_us();
    let cancelled = jobs
        .cancel_job(pb::CancelJobRequest {
            job_id: job_id.clone(),
        })
        .await;
    match cancelled {
        Ok(_) => {}
        // The job finished on its own within the window: its terminal
        // message ends the streams just the same.
        Err(status) if status.code() == tonic::Code::FailedPrecondition => {}
        Err(status) => return Err(status.into()),
    }

    let mut logs = Vec::with_capacity(watchers.len());
    for watcher in watchers {
        logs.push(watcher.await??);
    }
    drop(channels);

    let delays = checkpoint_delays(&logs, attached_us, cancelled_us)?;
    let watchers_f = plan.watchers as f64;
    let bytes = |after: u64| (after as f64 - rss_before_kib as f64) * 1024.0 / watchers_f;
    Ok(Fanout {
        watchers: plan.watchers,
        connections,
        rss_before_kib,
        rss_attached_kib,
        rss_end_kib,
        bytes_per_watcher: bytes(rss_attached_kib),
        bytes_per_watcher_end: bytes(rss_end_kib),
        attach_s: attach.as_secs_f64(),
        window_s: window.as_secs_f64(),
        checkpoints: delays.latencies.len(),
        versions_in_window: delays.versions_in_window,
        delay_p50_ms: delays.latencies.p50_ms(),
        delay_p99_ms: delays.latencies.p99_ms(),
        delay_max_ms: delays.latencies.quantile_ms(1.0),
        received_share: delays.received_share,
        messages: logs.iter().map(|log| log.len() as u64).sum(),
        members_in_window: delays.members_in_window,
        solo_p50_ms: solo.delays.p50_ms(),
        solo_p99_ms: solo.delays.p99_ms(),
        solo_checkpoints: solo.delays.len(),
        solo_members_per_s: solo.members_per_s,
        members_per_s: delays.members_in_window as f64 / window.as_secs_f64(),
        server_cpu_s: server_cpu_end - server_cpu_start,
        bench_cpu_s: bench_cpu_end - bench_cpu_start,
        cpu_window_s: cpu_window.as_secs_f64(),
    })
}

/// Stops every watcher and returns the error of the first that failed.
async fn first_error<T>(watchers: Vec<JoinHandle<Result<Vec<Receipt>>>>) -> Result<T> {
    for watcher in &watchers {
        if !watcher.is_finished() {
            watcher.abort();
        }
    }
    for watcher in watchers {
        if let Ok(Err(err)) = watcher.await {
            return Err(format!("a watcher failed: {err}").into());
        }
    }
    fail("a watcher failed")
}

/// Follows the job alone until it has checkpointed once, so that the
/// watchers attach to a running job, then for `window` more: the delay of
/// each checkpoint to this one watcher, the baseline of the fan-out.
async fn solo_watch(
    jobs: &mut JobServiceClient<AuthedChannel>,
    job_id: &str,
    window: Duration,
) -> Result<Solo> {
    let mut delays = Latencies::new()?;
    // (when, processed_members) of the first and the latest checkpoint.
    let mut first: Option<(Instant, i64)> = None;
    let mut latest: Option<(Instant, i64)> = None;
    let follow = async {
        let mut stream = jobs
            .watch_job(pb::WatchJobRequest {
                job_id: job_id.to_owned(),
                since_version: 0,
            })
            .await?
            .into_inner();
        let mut measuring_until: Option<Instant> = None;
        // Bounded by START_TIMEOUT + window; the stream ends after the
        // terminal state.
        while let Some(message) = stream.message().await? {
            let received_us = now_us();
            let Some(job) = message.job else {
                return fail("WatchJob sent a message without a job");
            };
            if rpc::is_terminal(job.state()) {
                return fail(format!(
                    "job {job_id} ended ({}) before the watchers attached: \
                     the fan-out org needs more members or a smaller batch",
                    job.state().as_str_name()
                ));
            }
            if job.processed_members == 0 {
                continue;
            }
            let now = Instant::now();
            match measuring_until {
                // The first checkpoint may have been written before the
                // stream opened: start with the next one.
                None => {
                    measuring_until = Some(now + window);
                    first = Some((now, job.processed_members));
                }
                Some(until) => {
                    let micros = received_us.saturating_sub(updated_us(&job));
                    delays.record(Duration::from_micros(u64::try_from(micros).unwrap_or(0)));
                    latest = Some((now, job.processed_members));
                    if now >= until {
                        return Ok(());
                    }
                }
            }
        }
        fail(format!("WatchJob({job_id}) ended without a terminal state"))
    };
    match tokio::time::timeout(START_TIMEOUT + window, follow).await {
        Ok(result) => result?,
        Err(_) => {
            return fail(format!(
                "job {job_id} made no progress within {START_TIMEOUT:?}"
            ));
        }
    }
    let members_per_s = match (first, latest) {
        (Some((t0, p0)), Some((t1, p1))) if t1 > t0 => (p1 - p0) as f64 / (t1 - t0).as_secs_f64(),
        _ => 0.0,
    };
    Ok(Solo {
        delays,
        members_per_s,
    })
}

/// What the lone watcher measured.
struct Solo {
    delays: Latencies,
    /// The job's rate while only it watched.
    members_per_s: f64,
}

/// A job message's `update_time` in µs since the epoch (0 if unset).
fn updated_us(job: &pb::Job) -> i64 {
    job.update_time.map_or(0, |t| {
        t.seconds
            .saturating_mul(1_000_000)
            .saturating_add(i64::from(t.nanos) / 1000)
    })
}

/// One watcher: opens the stream and records every message until the
/// terminal one. Counts itself in `attached` at its first message.
async fn watch(
    mut client: JobServiceClient<AuthedChannel>,
    job_id: String,
    attached: Arc<AtomicUsize>,
    opening: Arc<Semaphore>,
) -> Result<Vec<Receipt>> {
    let mut permit = Some(opening.acquire_owned().await?);
    let mut stream = client
        .watch_job(pb::WatchJobRequest {
            job_id,
            since_version: 0,
        })
        .await?
        .into_inner();
    let mut log = Vec::with_capacity(64);
    // Bounded by the caller's deadline; the server ends the stream after
    // the terminal state (the job is cancelled at the end of the window).
    while let Some(message) = stream.message().await? {
        let received_us = now_us();
        let Some(job) = message.job else {
            return fail("WatchJob sent a message without a job");
        };
        if log.is_empty() {
            attached.fetch_add(1, Ordering::Release);
            drop(permit.take());
        }
        let state = job.state();
        log.push(Receipt {
            version: job.version,
            updated_us: updated_us(&job),
            received_us,
            running: state == pb::JobState::Running,
            processed: job.processed_members,
        });
        if rpc::is_terminal(state) {
            if log.len() == 1 {
                return fail("the job had ended when a watcher attached");
            }
            return Ok(log);
        }
    }
    fail("WatchJob ended before a terminal state")
}

/// The delays computed from every watcher's receipts.
struct Delays {
    latencies: Latencies,
    versions_in_window: u64,
    received_share: f64,
    members_in_window: i64,
}

/// For every checkpoint written between `from_us` and `to_us` that some
/// watcher received: the latest first receipt of it (or of a newer version)
/// over all watchers, minus its `update_time`.
fn checkpoint_delays(logs: &[Vec<Receipt>], from_us: i64, to_us: i64) -> Result<Delays> {
    // The checkpoints: RUNNING states written inside the window, by version.
    let mut checkpoints: Vec<(i64, i64, i64)> = logs
        .iter()
        .flatten()
        .filter(|r| r.running && r.updated_us >= from_us && r.updated_us <= to_us)
        .map(|r| (r.version, r.updated_us, r.processed))
        .collect();
    checkpoints.sort_unstable();
    checkpoints.dedup_by_key(|c| c.0);
    let (Some(first), Some(last)) = (checkpoints.first(), checkpoints.last()) else {
        return fail(
            "no checkpoint was written while every watcher was attached: \
             lengthen the window or shrink the batch",
        );
    };
    let versions_in_window = u64::try_from(last.0 - first.0 + 1)?;
    let members_in_window = last.2 - first.2;

    // latest[k]: the latest first receipt, over all watchers, of a version
    // >= checkpoints[k].
    let mut latest = vec![i64::MIN; checkpoints.len()];
    let mut received = 0_u64;
    for log in logs {
        let mut at = 0;
        for (k, &(version, _, _)) in checkpoints.iter().enumerate() {
            // Versions arrive in increasing order on one stream.
            while at < log.len() && log[at].version < version {
                at += 1;
            }
            let Some(receipt) = log.get(at) else {
                return fail(format!(
                    "a watcher never received version {version} or a newer one"
                ));
            };
            if receipt.version == version {
                received += 1;
            }
            latest[k] = latest[k].max(receipt.received_us);
        }
    }
    let mut latencies = Latencies::new()?;
    for (&(_, updated_us, _), &last_receipt) in checkpoints.iter().zip(&latest) {
        let micros = u64::try_from(last_receipt.saturating_sub(updated_us)).unwrap_or(0);
        latencies.record(Duration::from_micros(micros));
    }
    let pairs = (checkpoints.len() * logs.len()) as f64;
    Ok(Delays {
        latencies,
        versions_in_window,
        received_share: if pairs > 0.0 {
            received as f64 / pairs
        } else {
            0.0
        },
        members_in_window,
    })
}

/// Microseconds since the Unix epoch (0 before it).
fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// A process's resident set size, from /proc/PID/status, in KiB.
pub fn vm_rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let Some(value) = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
    else {
        return fail(format!("no VmRSS in /proc/{pid}/status"));
    };
    Ok(value)
}

/// CPU time (user + system, all threads) of `/proc/<pid>`, in seconds.
/// Linux reports it in USER_HZ ticks, which are 100 per second.
fn cpu_seconds(pid: &str) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces; fields after its closing
    // parenthesis are space-separated: state is field 3, utime 14, stime 15.
    let Some((_, after_name)) = stat.rsplit_once(')') else {
        return fail(format!("unexpected /proc/{pid}/stat"));
    };
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| -> Result<u64> {
        match fields.get(i).and_then(|f| f.parse().ok()) {
            Some(value) => Ok(value),
            None => fail(format!("unexpected /proc/{pid}/stat")),
        }
    };
    // utime and stime are fields 14 and 15, i.e. 11 and 12 after field 3.
    Ok((ticks(11)? + ticks(12)?) as f64 / 100.0)
}
