//! Two org-server replicas sharing one PostgreSQL database (and one
//! auth-server, itself on PostgreSQL), as real processes on 127.0.0.1.
//!
//! Every test starts its own throw-away PostgreSQL server
//! ([`orgauth_testkit::TempPostgres`]) with one database for org-server and
//! one for auth-server (both have a `server_secrets` table and their own
//! `_sqlx_migrations`), and is skipped (passes after printing why) when
//! PostgreSQL is not installed. Replica A is the stack's org-server
//! (`org.log` in the stack's directory); replica B is a second org-server
//! with the same flags on the same database (`org-b.log`).
//!
//! The scenarios:
//!
//! 1. A job created through A's UpdateOrg is watched through B, which runs
//!    no workers (`--workers 0`): B can only learn of the job's progress
//!    through the database (LISTEN/NOTIFY). The watch must show monotonic
//!    progress, intermediate states and the end, GetJob through B must
//!    agree, and Auth must be left with no connection. The delay between
//!    each state's `update_time` and its arrival at B's watcher is printed.
//! 2. Jobs of many orgs, each flipped off, on, off in quick succession
//!    through A or B, spread over both replicas' workers: both replicas run
//!    jobs (seen in their logs), no job is claimed twice, one org's jobs
//!    never overlap in time and start in creation order, every job ends
//!    SUCCEEDED or superseded by a newer job of its org, and Auth ends with
//!    no connection and custom SSO disallowed.
//! 3. kill -9 of the replica running a big unlink: the other replica takes
//!    the job over once its lease (2 s) expires, a watcher connected to the
//!    survivor sees progress that never goes backwards, the takeover comes
//!    within the lease plus a small margin, and the job succeeds.
//! 4. A rolling restart (SIGTERM, exit, start again on the same address: A,
//!    then B) while a client streams UpdateOrg flips with idempotency keys,
//!    alternating between the replicas and retrying a failed call on the
//!    other one with the same key: every acknowledged change has exactly one
//!    job, which ends (SUCCEEDED, or CANCELLED superseded by a newer one),
//!    each org ends with its last acknowledged value, and Auth agrees.
//! 5. PostgreSQL stopped and started again (same port) in the middle of a
//!    big unlink run by A and watched through B (`--workers 0`): calls made
//!    while it is down answer UNAVAILABLE `DATABASE_BUSY`, both replicas'
//!    job-change listeners reconnect, B's watcher gets the states after the
//!    restart and the end without going backwards, and the job succeeds
//!    with every member processed. Auth is on SQLite here (see the test).
//!
//! Server logs: `TEST_LOG=1` echoes them when the servers are dropped.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use orgauth_e2e::{
    Authed, Server, Stack, StackOptions, assert_monotonic, get_job, list_org_jobs,
    set_allow_request, state_name, wait_until, watch_to_end,
};
use orgauth_proto::org::v1 as pb;
use orgauth_proto::org::v1::job_service_client::JobServiceClient;
use orgauth_proto::org::v1::org_service_client::OrgServiceClient;
use orgauth_testkit::TempPostgres;
use tonic::Code;

/// PostgreSQL, a stack (auth-server and replica A) on it, and replica B.
/// Fields drop in order: the replicas stop before the database does.
struct Cluster {
    b: Server,
    stack: Stack,
    pg: TempPostgres,
}

impl Cluster {
    /// `None` (after printing why) when PostgreSQL is not installed.
    /// `b_overrides` are flags of B that differ from A's.
    async fn start(options: StackOptions, b_overrides: &[(&str, &str)]) -> Option<Cluster> {
        let pg = TempPostgres::start()?;
        let org_database = pg.create_database("org");
        let auth_database = pg.create_database("auth");
        let stack = Stack::start_with(StackOptions {
            org_database: Some(org_database),
            auth_database: Some(auth_database),
            ..options
        })
        .await;
        let b = stack.spawn_org_replica("org-b.log", b_overrides);
        Some(Cluster { b, stack, pg })
    }
}

fn args(flags: &[&str]) -> Vec<String> {
    flags.iter().map(|s| (*s).to_owned()).collect()
}

fn micros(ts: &Option<prost_types::Timestamp>) -> Option<i128> {
    ts.as_ref()
        .map(|t| i128::from(t.seconds) * 1_000_000 + i128::from(t.nanos) / 1_000)
}

fn system_micros(at: SystemTime) -> i128 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_micros() as i128)
        .expect("clock after 1970")
}

/// Removes terminal colour codes from a log line.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The job ids of a replica's log's "job claimed" lines (the worker logs
/// them inside a `job{job_id=… org_id=…}` span), one per claim, in order.
fn claimed_jobs(log: &str) -> Vec<String> {
    log.lines()
        .map(strip_ansi)
        .filter(|line| line.contains("job claimed"))
        .filter_map(|line| {
            let rest = &line[line.find("job_id=")? + "job_id=".len()..];
            let end = rest.find([' ', '}', ',']).unwrap_or(rest.len());
            Some(rest[..end].to_owned())
        })
        .collect()
}

/// When (microseconds into the UTC day, from the line's timestamp) and for
/// which job (its span's `job_id`) each of a log's lines containing `what`
/// was logged.
fn job_events(log: &str, what: &str) -> Vec<(i128, String)> {
    log.lines()
        .map(strip_ansi)
        .filter(|line| line.contains(what))
        .filter_map(|line| {
            // 2026-11-23T15:49:07.767794Z  INFO job{job_id=… org_id=…}: …
            let time = line.get(11..26)?;
            let mut hms = time.split(':');
            let hours: i128 = hms.next()?.parse().ok()?;
            let minutes: i128 = hms.next()?.parse().ok()?;
            let (seconds, fraction) = hms.next()?.split_once('.')?;
            let seconds: i128 = seconds.parse().ok()?;
            let micros: i128 = fraction.get(..6)?.parse().ok()?;
            let at = ((hours * 60 + minutes) * 60 + seconds) * 1_000_000 + micros;
            let rest = &line[line.find("job_id=")? + "job_id=".len()..];
            let end = rest.find([' ', '}', ',']).unwrap_or(rest.len());
            Some((at, rest[..end].to_owned()))
        })
        .collect()
}

/// The log lines that mention `needle`, without colour codes, for messages.
fn log_lines_with(log: &str, needle: &str) -> String {
    log.lines()
        .map(strip_ansi)
        .filter(|line| line.contains(needle))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One state a [`TimedWatch`] received, with when it arrived.
#[derive(Debug, Clone)]
struct Seen {
    at: SystemTime,
    instant: Instant,
    job: pb::Job,
}

/// A raw WatchJob stream read in the background, recording when each state
/// arrived.
struct TimedWatch {
    job_id: String,
    latest: tokio::sync::watch::Receiver<Option<pb::Job>>,
    task: tokio::task::JoinHandle<(Vec<Seen>, Option<tonic::Status>)>,
}

impl TimedWatch {
    async fn start(mut jobs: JobServiceClient<Authed>, job_id: &str) -> TimedWatch {
        let mut stream = jobs
            .watch_job(pb::WatchJobRequest {
                job_id: job_id.to_owned(),
                since_version: 0,
            })
            .await
            .unwrap_or_else(|status| panic!("watch job {job_id}: {status:?}"))
            .into_inner();
        let (tx, latest) = tokio::sync::watch::channel(None);
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..1_000_000 {
                match stream.next().await {
                    Some(Ok(message)) => {
                        let job = message.job.expect("a watch message carries the job");
                        seen.push(Seen {
                            at: SystemTime::now(),
                            instant: Instant::now(),
                            job: job.clone(),
                        });
                        let _ = tx.send(Some(job));
                    }
                    Some(Err(status)) => return (seen, Some(status)),
                    None => return (seen, None),
                }
            }
            panic!("endless watch stream");
        });
        TimedWatch {
            job_id: job_id.to_owned(),
            latest,
            task,
        }
    }

    /// Waits (bounded) until the latest state satisfies `pred`.
    async fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&pb::Job) -> bool,
    ) -> pb::Job {
        let waited = tokio::time::timeout(
            timeout,
            self.latest
                .wait_for(|job| job.as_ref().is_some_and(&mut pred)),
        )
        .await
        .map(|result| result.map(|job| job.clone()));
        match waited {
            Ok(Ok(job)) => job.expect("checked by the predicate"),
            Ok(Err(_)) => panic!(
                "job {}: the watch ended before {what}; last state {:?}",
                self.job_id,
                self.latest.borrow().clone()
            ),
            Err(_) => panic!(
                "job {}: timed out after {timeout:?} waiting for {what}; last state {:?}",
                self.job_id,
                self.latest.borrow().clone()
            ),
        }
    }

    /// Waits (bounded) for the stream to end OK; every state it sent.
    async fn finish(self, timeout: Duration) -> Vec<Seen> {
        let (seen, error) = tokio::time::timeout(timeout, self.task)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "job {}: the watch did not end within {timeout:?}; last state {:?}",
                    self.job_id,
                    self.latest.borrow().clone()
                )
            })
            .expect("watch task");
        if let Some(status) = error {
            panic!(
                "job {}: the watch ended with {status:?} after {} states",
                self.job_id,
                seen.len()
            );
        }
        seen
    }
}

/// Milliseconds between each state's update_time and its arrival, for the
/// states after the first (which is the current state when the watch
/// The states a watch received: monotonic, ending SUCCEEDED with every one
/// of `members` processed and none failed.
fn monotonic_to_success(seen: &[Seen], members: i64) -> Vec<pb::Job> {
    let states: Vec<pb::Job> = seen.iter().map(|s| s.job.clone()).collect();
    assert_monotonic(&states);
    let last = states.last().expect("the watch sent states");
    assert_eq!(last.state, pb::JobState::Succeeded as i32, "{last:?}");
    assert_eq!(
        (
            last.processed_members,
            last.total_members,
            last.failed_members
        ),
        (members, members, 0),
        "{last:?}"
    );
    states
}

/// opened, possibly old).
fn arrival_delays_ms(seen: &[Seen]) -> Vec<f64> {
    seen.iter()
        .skip(1)
        .map(|s| {
            let updated = micros(&s.job.update_time).expect("a job has an update_time");
            (system_micros(s.at) - updated) as f64 / 1000.0
        })
        .collect()
}

fn summary(delays: &[f64]) -> String {
    if delays.is_empty() {
        return "no pushed states".to_owned();
    }
    let mut sorted = delays.to_vec();
    sorted.sort_by(f64::total_cmp);
    format!(
        "{} pushed states, min {:.1} ms, median {:.1} ms, max {:.1} ms",
        sorted.len(),
        sorted[0],
        sorted[sorted.len() / 2],
        sorted[sorted.len() - 1]
    )
}

/// Checks one org's jobs (oldest first, all ended): they started in
/// creation order and never overlapped; each ended SUCCEEDED or CANCELLED
/// superseded by a newer job of the org; the newest SUCCEEDED.
fn check_org_jobs(org_id: &str, list: &[pb::Job]) {
    let position: HashMap<&str, usize> = list
        .iter()
        .enumerate()
        .map(|(i, job)| (job.id.as_str(), i))
        .collect();
    let mut previous: Option<(i128, i128, &str)> = None;
    for (i, job) in list.iter().enumerate() {
        match pb::JobState::try_from(job.state) {
            Ok(pb::JobState::Succeeded) => {}
            Ok(pb::JobState::Cancelled) => {
                let newer = job
                    .last_error
                    .strip_prefix("superseded by job ")
                    .unwrap_or_else(|| panic!("{org_id}: cancelled, but not superseded: {job:?}"));
                let newer_index = position
                    .get(newer)
                    .unwrap_or_else(|| panic!("{org_id}: superseded by an unknown job: {job:?}"));
                assert!(
                    *newer_index > i,
                    "{org_id}: superseded by a job that is not newer: {job:?}"
                );
            }
            _ => panic!(
                "{org_id}: job ended {} (only SUCCEEDED or superseded expected): {job:?}",
                state_name(job.state)
            ),
        }
        let Some(start) = micros(&job.start_time) else {
            continue;
        };
        let end = micros(&job.end_time).expect("an ended job that started has an end_time");
        assert!(start <= end, "{org_id}: {job:?}");
        if let Some((previous_start, previous_end, previous_id)) = previous {
            assert!(
                previous_start < start,
                "{org_id}: jobs started out of creation order: {previous_id} then {}",
                job.id
            );
            assert!(
                previous_end <= start,
                "{org_id}: job {} started {} µs before job {previous_id}, created before it, \
                 ended: two jobs of one org ran at once",
                job.id,
                previous_end - start
            );
        }
        previous = Some((start, end, &job.id));
    }
    let newest = list.last().expect("an org has jobs");
    assert_eq!(
        newest.state,
        pb::JobState::Succeeded as i32,
        "{org_id}: the newest job is never superseded: {newest:?}"
    );
}

async fn get_org(orgs: &mut OrgServiceClient<Authed>, org_id: &str) -> pb::Org {
    orgs.get_org(pb::GetOrgRequest {
        org_id: org_id.to_owned(),
    })
    .await
    .unwrap_or_else(|status| panic!("get org {org_id}: {status:?}"))
    .into_inner()
    .org
    .expect("org")
}

// ---------------------------------------------------------------------------
// 1. Cross-replica watch.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_created_through_one_replica_is_watched_through_the_other() {
    const MEMBERS: i64 = 5_000;
    // A runs the jobs; B runs none, so all it knows of the job's progress
    // comes through the database.
    let Some(cluster) = Cluster::start(
        StackOptions {
            workers: 2,
            batch_size: 100,
            parallelism: 2,
            ..Default::default()
        },
        &[("--workers", "0")],
    )
    .await
    else {
        return;
    };
    let Cluster { b, stack, pg: _pg } = &cluster;
    stack.seed_linked_org("acme", MEMBERS as usize).await;
    assert_eq!(stack.connections("acme").await, MEMBERS);

    let job_id = stack
        .orgs_of(&stack.org)
        .await
        .update_org(set_allow_request("acme", false))
        .await
        .expect("update org through A")
        .into_inner()
        .job_id;
    assert!(!job_id.is_empty(), "disabling custom SSO returns a job");
    // B knows the job at once: it is in the shared database.
    let mut b_jobs = stack.jobs_of(b).await;
    let at_start = get_job(&mut b_jobs, &job_id).await;
    assert_eq!(at_start.org_id, "acme");
    let on_b = TimedWatch::start(b_jobs.clone(), &job_id).await;
    // For comparison: a watcher on A, which runs the job.
    let on_a = TimedWatch::start(stack.jobs_of(&stack.org).await, &job_id).await;

    let seen_b = on_b.finish(Duration::from_secs(60)).await;
    let seen_a = on_a.finish(Duration::from_secs(60)).await;
    let states = monotonic_to_success(&seen_b, MEMBERS);
    let last = states.last().expect("checked non-empty");
    assert_eq!(last.unlinked_members, MEMBERS, "{last:?}");
    assert!(
        states
            .iter()
            .any(|j| j.state == pb::JobState::Running as i32
                && j.processed_members > 0
                && j.processed_members < MEMBERS),
        "B's watcher saw the job's progress, not just its end: {:?}",
        states
            .iter()
            .map(|j| (state_name(j.state), j.processed_members))
            .collect::<Vec<_>>()
    );
    // B's final state is the one in the database, and the one A's watcher
    // ended with.
    let through_b = get_job(&mut b_jobs, &job_id).await;
    assert_eq!(&through_b, last, "GetJob through B agrees with B's watch");
    let a_last = &seen_a.last().expect("A's watch sent states").job;
    assert_eq!(a_last, last, "both replicas' watches end on the same state");
    assert_eq!(
        stack.connections("acme").await,
        0,
        "Auth has no connection left"
    );
    assert!(!stack.sso_policy("acme").await);

    // B ran nothing; A claimed the job.
    let b_log = b.log();
    assert!(
        claimed_jobs(&b_log).is_empty(),
        "B has no workers, yet claimed jobs:\n{}",
        log_lines_with(&b_log, "job claimed")
    );
    assert!(
        claimed_jobs(&stack.org.log()).contains(&job_id),
        "A ran the job:\n{}",
        log_lines_with(&stack.org.log(), "job claimed")
    );

    let delays_b = arrival_delays_ms(&seen_b);
    let delays_a = arrival_delays_ms(&seen_a);
    for s in seen_b.iter().skip(1) {
        let updated = micros(&s.job.update_time).expect("update_time");
        eprintln!(
            "  B received v{} {} processed={}: {:.1} ms after its update_time",
            s.job.version,
            state_name(s.job.state),
            s.job.processed_members,
            (system_micros(s.at) - updated) as f64 / 1000.0
        );
    }
    eprintln!(
        "cross-replica watch: on B (no workers, LISTEN/NOTIFY): {}; on A (runs the job): {}; \
         job ran {:?}",
        summary(&delays_b),
        summary(&delays_a),
        micros(&last.end_time)
            .zip(micros(&last.start_time))
            .map(|(end, start)| Duration::from_micros((end - start) as u64))
    );
    for (i, delay) in delays_b.iter().enumerate() {
        assert!(
            *delay < 3_000.0,
            "B's watcher received state {} {delay:.1} ms after its update_time: {:?}",
            i + 1,
            seen_b[i + 1].job
        );
    }
}

// ---------------------------------------------------------------------------
// 2. Jobs of many orgs over both replicas.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_of_many_orgs_spread_over_both_replicas() {
    const ORGS: usize = 12;
    const MEMBERS: usize = 300;
    // Two workers per replica, so that neither can run all twelve orgs'
    // jobs at once and both get a share.
    let Some(cluster) = Cluster::start(
        StackOptions {
            workers: 2,
            batch_size: 50,
            parallelism: 1,
            ..Default::default()
        },
        &[],
    )
    .await
    else {
        return;
    };
    let Cluster { b, stack, pg: _pg } = &cluster;
    let org_ids: Vec<String> = (0..ORGS).map(|i| format!("org-{i:02}")).collect();
    for org_id in &org_ids {
        stack.seed_linked_org(org_id, MEMBERS).await;
    }
    let replicas = [&stack.org, b];
    let mut orgs = [
        stack.orgs_of(replicas[0]).await,
        stack.orgs_of(replicas[1]).await,
    ];
    let mut jobs = [
        stack.jobs_of(replicas[0]).await,
        stack.jobs_of(replicas[1]).await,
    ];

    // Off, on, off, back to back, half the orgs through A, half through B.
    let started = Instant::now();
    let mut flips: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (i, org_id) in org_ids.iter().enumerate() {
        for allow in [false, true, false] {
            let response = orgs[i % 2]
                .update_org(set_allow_request(org_id, allow))
                .await
                .unwrap_or_else(|status| panic!("update {org_id}: {status:?}"))
                .into_inner();
            assert!(!response.job_id.is_empty(), "{org_id}: a change has a job");
            flips
                .entry(org_id.clone())
                .or_default()
                .push(response.job_id);
        }
    }
    // Every job ends; each watched through the replica its change did not
    // go through.
    for (i, org_id) in org_ids.iter().enumerate() {
        for job_id in &flips[org_id] {
            let states = watch_to_end(&mut jobs[(i + 1) % 2], job_id).await;
            assert_monotonic(&states);
        }
    }
    let settled_in = started.elapsed();

    for org_id in &org_ids {
        let list = list_org_jobs(&mut jobs[1], org_id).await;
        assert_eq!(
            list.len(),
            4,
            "{org_id}: the CreateOrg job and three flips: {list:?}"
        );
        assert_eq!(
            list[1..].iter().map(|j| j.id.clone()).collect::<Vec<_>>(),
            flips[org_id],
            "{org_id}"
        );
        check_org_jobs(org_id, &list);
        let newest = list.last().expect("jobs");
        assert_eq!(newest.kind, pb::JobKind::DisableCustomSso as i32);
        assert_eq!(newest.processed_members, MEMBERS as i64, "{newest:?}");
        assert_eq!(stack.connections(org_id).await, 0, "{org_id}");
        assert!(!stack.sso_policy(org_id).await, "{org_id}");
        for replica in &mut orgs {
            assert!(!get_org(replica, org_id).await.allow_custom_sso, "{org_id}");
        }
    }

    // Who ran what, from the replicas' logs.
    let flip_ids: HashSet<&String> = flips.values().flatten().collect();
    let logs = [stack.org.log(), b.log()];
    let claims: Vec<Vec<String>> = logs.iter().map(|log| claimed_jobs(log)).collect();
    let mut claimed_by: HashMap<&String, Vec<&str>> = HashMap::new();
    for (claims, name) in claims.iter().zip(["A", "B"]) {
        for id in claims.iter().filter(|id| flip_ids.contains(id)) {
            claimed_by.entry(id).or_default().push(name);
        }
    }
    let count = |name: &str| {
        claimed_by
            .values()
            .filter(|who| who.contains(&name))
            .count()
    };
    let (by_a, by_b) = (count("A"), count("B"));
    let mut started_jobs = 0;
    for org_id in &org_ids {
        for job in list_org_jobs(&mut jobs[0], org_id).await.iter().skip(1) {
            let who = claimed_by.get(&job.id).cloned().unwrap_or_default();
            assert!(
                who.len() <= 1,
                "job {} was claimed more than once without any crash: by {who:?}\nA:\n{}\nB:\n{}",
                job.id,
                log_lines_with(&logs[0], &job.id),
                log_lines_with(&logs[1], &job.id)
            );
            if job.start_time.is_some() {
                started_jobs += 1;
                assert_eq!(
                    who.len(),
                    1,
                    "a job that ran was claimed by one replica: {job:?}"
                );
            }
        }
    }
    eprintln!(
        "{ORGS} orgs x {MEMBERS} members, {} flips: {started_jobs} jobs ran ({by_a} on A, \
         {by_b} on B), {} superseded before they started; settled in {settled_in:?}",
        flip_ids.len(),
        flip_ids.len() - started_jobs
    );
    assert!(
        by_a >= 1 && by_b >= 1,
        "both replicas run jobs: {by_a} on A, {by_b} on B"
    );
}

// ---------------------------------------------------------------------------
// 3. kill -9 of the replica running a job.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_of_the_replica_running_a_job_lets_the_other_finish_it_within_the_lease() {
    const MEMBERS: i64 = 20_000;
    const LEASE: Duration = Duration::from_secs(2);
    let Some(mut cluster) = Cluster::start(
        StackOptions {
            workers: 2,
            batch_size: 100,
            parallelism: 2,
            org_args: args(&["--lease", "2s", "--poll-interval", "200ms"]),
            ..Default::default()
        },
        &[],
    )
    .await
    else {
        return;
    };
    cluster.stack.seed_linked_org("big", MEMBERS as usize).await;
    assert_eq!(cluster.stack.connections("big").await, MEMBERS);

    let job_id = cluster
        .stack
        .orgs_of(&cluster.stack.org)
        .await
        .update_org(set_allow_request("big", false))
        .await
        .expect("update org")
        .into_inner()
        .job_id;
    let created = Instant::now();
    // Which replica claimed it?
    let a_runs_it = {
        let cluster = &cluster;
        let job_id = &job_id;
        wait_until(
            "a replica to claim the job",
            Duration::from_secs(10),
            || async move {
                let on_a = claimed_jobs(&cluster.stack.org.log()).contains(job_id);
                let on_b = claimed_jobs(&cluster.b.log()).contains(job_id);
                assert!(!(on_a && on_b), "both replicas claimed the job");
                (on_a || on_b).then_some(on_a)
            },
        )
        .await
    };
    let (runner_name, survivor_name) = if a_runs_it { ("A", "B") } else { ("B", "A") };
    let survivor_jobs = {
        let survivor = if a_runs_it {
            &cluster.b
        } else {
            &cluster.stack.org
        };
        cluster.stack.jobs_of(survivor).await
    };
    let mut watch = TimedWatch::start(survivor_jobs.clone(), &job_id).await;
    let before_kill = watch
        .wait_for("processed >= 2,000", Duration::from_secs(60), |job| {
            job.processed_members >= 2_000
        })
        .await;
    assert!(
        before_kill.processed_members < MEMBERS,
        "the job must still be running when killed: {before_kill:?}"
    );
    let killed_at = Instant::now();
    if a_runs_it {
        cluster.stack.org.kill9();
    } else {
        cluster.b.kill9();
    }
    let killed_after = created.elapsed();
    let mut survivor_jobs_client = survivor_jobs.clone();
    let at_kill = get_job(&mut survivor_jobs_client, &job_id).await;
    assert_eq!(
        at_kill.state,
        pb::JobState::Running as i32,
        "the job was mid-way when its replica died: {at_kill:?}"
    );

    let seen = watch.finish(Duration::from_secs(60)).await;
    let states = monotonic_to_success(&seen, MEMBERS);
    let last = states.last().expect("checked non-empty");
    assert!(
        last.attempt > at_kill.attempt,
        "the survivor ran the job again: {last:?}"
    );
    // The takeover: the first state of a new attempt, and the first
    // progress past what the dead replica had reached.
    let takeover = seen
        .iter()
        .find(|s| s.instant > killed_at && s.job.attempt > at_kill.attempt)
        .expect("the watcher saw the new attempt");
    let takeover_after = takeover.instant - killed_at;
    let max_before = seen
        .iter()
        .filter(|s| s.instant <= killed_at)
        .map(|s| s.job.processed_members)
        .max()
        .unwrap_or(0)
        .max(at_kill.processed_members);
    let progress = seen
        .iter()
        .find(|s| s.instant > killed_at && s.job.processed_members > max_before)
        .expect("progress after the kill");
    let progress_after = progress.instant - killed_at;
    let survivor_log = if a_runs_it {
        cluster.b.log()
    } else {
        cluster.stack.org.log()
    };
    assert!(
        claimed_jobs(&survivor_log).contains(&job_id),
        "the survivor claimed the job:\n{survivor_log}"
    );
    assert_eq!(cluster.stack.connections("big").await, 0);
    assert!(!cluster.stack.sso_policy("big").await);
    eprintln!(
        "{runner_name} ran the job and was killed {killed_after:?} after it was created, at \
         processed={} (stored {} attempt {}); {survivor_name} took over (attempt {}, processed \
         {}) {takeover_after:?} after the kill, first progress past {max_before} \
         {progress_after:?} after the kill; the survivor's watcher saw {} states; finished \
         {:?} after the kill",
        before_kill.processed_members,
        at_kill.processed_members,
        at_kill.attempt,
        takeover.job.attempt,
        takeover.job.processed_members,
        seen.len(),
        seen.last().map(|s| s.instant - killed_at)
    );
    assert!(
        progress_after < LEASE + Duration::from_secs(3),
        "the survivor made progress {progress_after:?} after the kill (lease {LEASE:?})"
    );
    assert!(takeover_after <= progress_after);
}

// ---------------------------------------------------------------------------
// 4. Rolling restart under a stream of updates.
// ---------------------------------------------------------------------------

/// One UpdateOrg the stream got acknowledged.
#[derive(Debug, Clone)]
struct Acked {
    org_id: String,
    allow: bool,
    job_id: String,
    request_id: String,
    /// Which replica acknowledged it (0: A, 1: B).
    replica: usize,
    /// Failed tries before it (on either replica).
    failed_tries: usize,
}

#[derive(Debug, Default)]
struct StreamReport {
    acked: Vec<Acked>,
    /// Failed tries by gRPC code.
    failures: BTreeMap<String, usize>,
}

/// Streams `plan` (org, value) as UpdateOrgs with idempotency keys,
/// alternating between the two replicas and retrying a failed call on the
/// other one with the same key. Before the last `hold_back` updates it waits
/// for `restarts_done`, so the stream spans the restarts.
async fn update_stream(
    endpoints: [String; 2],
    token: String,
    plan: Vec<(String, bool)>,
    hold_back: usize,
    progress: Arc<AtomicUsize>,
    restarts_done: Arc<AtomicBool>,
) -> StreamReport {
    let mut clients = Vec::new();
    for endpoint in &endpoints {
        let channel = orgauth_e2e::connect(endpoint).await;
        clients.push(OrgServiceClient::new(orgauth_e2e::authed(channel, &token)));
    }
    let mut report = StreamReport::default();
    let total = plan.len();
    for (k, (org_id, allow)) in plan.into_iter().enumerate() {
        if k + hold_back == total {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !restarts_done.load(Ordering::SeqCst) {
                assert!(Instant::now() < deadline, "the restarts did not finish");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let request_id = format!("rolling-{k:03}-{org_id}");
        let mut request = set_allow_request(&org_id, allow);
        request.request_id = request_id.clone();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut replica = k % 2;
        let mut failed_tries = 0;
        let response = loop {
            let call = clients[replica].update_org(request.clone());
            let outcome = tokio::time::timeout(Duration::from_secs(5), call).await;
            let status = match outcome {
                Ok(Ok(response)) => break response.into_inner(),
                Ok(Err(status)) => status,
                Err(_) => tonic::Status::deadline_exceeded("no answer within 5 s"),
            };
            assert!(
                matches!(
                    status.code(),
                    Code::Unavailable
                        | Code::Unknown
                        | Code::Cancelled
                        | Code::DeadlineExceeded
                        | Code::Internal
                ),
                "update {k} ({org_id} -> {allow}) on replica {replica} failed with a \
                 non-transient error: {status:?}"
            );
            // INTERNAL and UNKNOWN are tolerated only from the transport (a
            // connection cut by the restart): an answer of the server's own
            // code carries ErrorInfo, and an INTERNAL there is a bug.
            assert!(
                !matches!(
                    orgauth_e2e::error_reason(&status).as_str(),
                    "INTERNAL" | "DATABASE_BUSY"
                ),
                "update {k} ({org_id} -> {allow}) on replica {replica}: the server answered \
                 {status:?}"
            );
            *report
                .failures
                .entry(format!("{:?}", status.code()))
                .or_default() += 1;
            failed_tries += 1;
            assert!(
                Instant::now() < deadline,
                "update {k} ({org_id} -> {allow}) failed on both replicas for 30 s; last: \
                 {status:?}"
            );
            replica = 1 - replica;
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(
            !response.job_id.is_empty(),
            "update {k} ({org_id} -> {allow}) changed the setting, so it has a job"
        );
        assert_eq!(
            response.org.as_ref().map(|o| o.allow_custom_sso),
            Some(allow),
            "update {k}: the response shows the new value"
        );
        report.acked.push(Acked {
            org_id,
            allow,
            job_id: response.job_id,
            request_id,
            replica,
            failed_tries,
        });
        progress.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_a_stream_of_updates_loses_nothing() {
    const ORGS: usize = 6;
    const MEMBERS: usize = 2_000;
    const HOLD_BACK: usize = 12;
    // The default 15 s lease: jobs settle quickly after the restarts only
    // if a stopping replica hands its jobs back.
    let Some(mut cluster) = Cluster::start(
        StackOptions {
            workers: 2,
            batch_size: 50,
            parallelism: 1,
            org_args: args(&["--shutdown-grace", "5s"]),
            ..Default::default()
        },
        &[],
    )
    .await
    else {
        return;
    };
    let org_ids: Vec<String> = (0..ORGS).map(|i| format!("roll-{i}")).collect();
    for org_id in &org_ids {
        cluster.stack.seed_linked_org(org_id, MEMBERS).await;
    }
    // Org i is flipped 14 + i % 2 times from allowed: odd orgs end
    // disallowed, even ones allowed. Round robin over the orgs.
    let mut remaining: Vec<usize> = (0..ORGS).map(|i| 14 + i % 2).collect();
    let mut value = [true; ORGS];
    let mut plan = Vec::new();
    while remaining.iter().any(|&n| n > 0) {
        for i in 0..ORGS {
            if remaining[i] > 0 {
                remaining[i] -= 1;
                value[i] = !value[i];
                plan.push((org_ids[i].clone(), value[i]));
            }
        }
    }
    let planned = plan.len();

    let progress = Arc::new(AtomicUsize::new(0));
    let restarts_done = Arc::new(AtomicBool::new(false));
    let stream = tokio::spawn(update_stream(
        [cluster.stack.org.endpoint(), cluster.b.endpoint()],
        cluster.stack.tokens.admin.clone(),
        plan,
        HOLD_BACK,
        Arc::clone(&progress),
        Arc::clone(&restarts_done),
    ));
    let wait_progress = |at_least: usize| {
        let progress = Arc::clone(&progress);
        async move {
            wait_until(
                "the update stream to make progress",
                Duration::from_secs(30),
                || {
                    let done = progress.load(Ordering::SeqCst);
                    async move { (done >= at_least).then_some(done) }
                },
            )
            .await
        }
    };
    let started = Instant::now();
    let before_a = wait_progress(20).await;
    let a_began = started.elapsed();
    let a_exit = tokio::task::block_in_place(|| {
        cluster
            .stack
            .org
            .restart_gracefully(Duration::from_secs(10))
    });
    let a_took = started.elapsed() - a_began;
    assert!(a_exit.success(), "A exited {a_exit:?} on SIGTERM");
    let after_a = progress.load(Ordering::SeqCst);
    let before_b = wait_progress(after_a + 15).await;
    let b_began = started.elapsed();
    let b_exit =
        tokio::task::block_in_place(|| cluster.b.restart_gracefully(Duration::from_secs(10)));
    let b_took = started.elapsed() - b_began;
    assert!(b_exit.success(), "B exited {b_exit:?} on SIGTERM");
    let after_b = progress.load(Ordering::SeqCst);
    restarts_done.store(true, Ordering::SeqCst);
    let report = tokio::time::timeout(Duration::from_secs(60), stream)
        .await
        .expect("the update stream ends")
        .expect("update stream task");
    let stream_done = started.elapsed();
    assert_eq!(report.acked.len(), planned, "every update acknowledged");
    assert!(
        after_b + HOLD_BACK <= planned,
        "updates kept coming after the restarts"
    );

    // Every acknowledged change's job ends, without waiting out a lease.
    let stack = &cluster.stack;
    let mut jobs = [
        stack.jobs_of(&stack.org).await,
        stack.jobs_of(&cluster.b).await,
    ];
    let settle_started = Instant::now();
    // Nothing queued or running any more (through B), within less than
    // the lease.
    wait_until("every job to end", Duration::from_secs(12), || {
        let mut jobs = jobs[1].clone();
        async move {
            for state in [pb::JobState::Queued, pb::JobState::Running] {
                let open = jobs
                    .list_jobs(pb::ListJobsRequest {
                        state: state as i32,
                        page_size: 1,
                        ..Default::default()
                    })
                    .await
                    .ok()?
                    .into_inner()
                    .jobs;
                if !open.is_empty() {
                    return None;
                }
            }
            Some(())
        }
    })
    .await;
    // Every acknowledged change's job exists and ended (through A).
    for ack in &report.acked {
        let job = get_job(&mut jobs[0], &ack.job_id).await;
        assert!(
            job.state >= pb::JobState::Succeeded as i32,
            "{ack:?} has not ended: {job:?}"
        );
    }
    let settled_in = settle_started.elapsed();

    let mut ids = HashSet::new();
    for ack in &report.acked {
        assert!(
            ids.insert(ack.job_id.clone()),
            "one job per change: {ack:?}"
        );
    }
    let mut orgs = [
        stack.orgs_of(&stack.org).await,
        stack.orgs_of(&cluster.b).await,
    ];
    let mut superseded = 0;
    for org_id in &org_ids {
        let acked: Vec<&Acked> = report
            .acked
            .iter()
            .filter(|a| &a.org_id == org_id)
            .collect();
        let list = list_org_jobs(&mut jobs[1], org_id).await;
        // The CreateOrg job, then exactly one job per acknowledged change
        // (a retried key enqueued nothing new), in order.
        assert_eq!(
            list[1..].iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
            acked.iter().map(|a| a.job_id.as_str()).collect::<Vec<_>>(),
            "{org_id}: jobs vs acknowledged changes"
        );
        for (job, ack) in list[1..].iter().zip(&acked) {
            let kind = if ack.allow {
                pb::JobKind::EnableCustomSso
            } else {
                pb::JobKind::DisableCustomSso
            };
            assert_eq!(job.kind, kind as i32, "{ack:?}: {job:?}");
        }
        check_org_jobs(org_id, &list);
        superseded += list
            .iter()
            .filter(|j| j.state == pb::JobState::Cancelled as i32)
            .count();
        let last = acked.last().expect("each org was flipped");
        for replica in &mut orgs {
            assert_eq!(
                get_org(replica, org_id).await.allow_custom_sso,
                last.allow,
                "{org_id}: the last acknowledged value ({last:?})"
            );
        }
        assert_eq!(
            stack.sso_policy(org_id).await,
            last.allow,
            "{org_id}: Auth's policy mirrors the org"
        );
        if !last.allow {
            assert_eq!(stack.connections(org_id).await, 0, "{org_id}");
        }
    }
    // A replayed key answers with the first response.
    let first = &report.acked[0];
    let mut replay = set_allow_request(&first.org_id, first.allow);
    replay.request_id = first.request_id.clone();
    let replayed = orgs[1 - first.replica]
        .update_org(replay)
        .await
        .expect("replay a key")
        .into_inner();
    assert_eq!(replayed.job_id, first.job_id, "the same key, the same job");

    let retried = report.acked.iter().filter(|a| a.failed_tries > 0).count();
    let on_b = report.acked.iter().filter(|a| a.replica == 1).count();
    // The replicas stopped while running jobs, handed them back, and they
    // were resumed at once (not after the 15 s lease).
    let logs = [stack.org.log(), cluster.b.log()];
    for log in &logs {
        assert!(
            !log.contains("releasing the lease failed"),
            "{}",
            log_lines_with(log, "releasing the lease failed")
        );
    }
    let handed_back: Vec<(i128, String)> = logs
        .iter()
        .flat_map(|log| job_events(log, "job handed back"))
        .collect();
    let claims: Vec<(i128, String)> = logs
        .iter()
        .flat_map(|log| job_events(log, "job claimed"))
        .collect();
    let mut resumed_after = Vec::new();
    for (at, job_id) in &handed_back {
        let next_claim = claims
            .iter()
            .filter(|(claimed_at, id)| id == job_id && claimed_at >= at)
            .map(|(claimed_at, _)| claimed_at)
            .min()
            .unwrap_or_else(|| panic!("job {job_id} was handed back but never claimed again"));
        resumed_after.push(Duration::from_micros((next_claim - at) as u64));
    }
    assert!(
        !handed_back.is_empty(),
        "the restarts stopped replicas that were running jobs (no \"job handed back\" logged)"
    );
    for delay in &resumed_after {
        assert!(
            *delay < Duration::from_secs(5),
            "a handed-back job waited {delay:?} to be claimed again: {resumed_after:?}"
        );
    }
    eprintln!(
        "{planned} updates over {ORGS} orgs in {stream_done:?}: A restarted after {before_a} \
         acks at {a_began:?} (took {a_took:?}), B after {before_b} acks at {b_began:?} (took \
         {b_took:?}); {retried} updates needed a retry ({:?}); {on_b} acknowledged by B; \
         {superseded} jobs superseded; {} jobs handed back on SIGTERM, claimed again after \
         {resumed_after:?}; all jobs ended {settled_in:?} after the stream",
        report.failures,
        handed_back.len()
    );
}

// ---------------------------------------------------------------------------
// 5. PostgreSQL restarted in the middle of a job.
// ---------------------------------------------------------------------------

/// One call made while PostgreSQL was down, and how it ended.
#[derive(Debug)]
struct OutageCall {
    what: &'static str,
    /// When it was sent, after the stop began.
    sent: Duration,
    took: Duration,
    result: Result<(), tonic::Status>,
}

impl OutageCall {
    /// Sends `call` and waits (bounded: 20 s) for its answer.
    async fn make<T>(
        what: &'static str,
        stop_began: Instant,
        call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> OutageCall {
        let sent = stop_began.elapsed();
        let began = Instant::now();
        let result = match tokio::time::timeout(Duration::from_secs(20), call).await {
            Ok(result) => result.map(drop),
            Err(_) => Err(tonic::Status::deadline_exceeded(
                "no answer within the test's 20 s",
            )),
        };
        OutageCall {
            what,
            sent,
            took: began.elapsed(),
            result,
        }
    }

    /// `OK`, or `CODE REASON`.
    fn outcome(&self) -> String {
        orgauth_e2e::outcome(&self.result)
    }

    fn is_database_busy(&self) -> bool {
        self.result.as_ref().err().is_some_and(|status| {
            status.code() == Code::Unavailable
                && orgauth_e2e::error_reason(status) == "DATABASE_BUSY"
        })
    }
}

impl std::fmt::Display for OutageCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} sent {:?} after the stop began, answered {} after {:?}",
            self.what,
            self.sent,
            self.outcome(),
            self.took
        )?;
        match &self.result {
            Err(status) if !self.is_database_busy() => write!(f, " ({status:?})"),
            _ => Ok(()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_mid_job_loses_no_state_and_watchers_on_the_other_replica_see_the_end() {
    const MEMBERS: i64 = 20_000;
    const BATCH: i64 = 100;
    const PARALLELISM: i64 = 2;
    /// PostgreSQL stays down at least this long.
    const OUTAGE: Duration = Duration::from_secs(1);
    /// B's `--db-connect-timeout`: how long it waits for a pooled
    /// connection before answering DATABASE_BUSY. Shorter than the outage,
    /// so calls to B during it get an answer while PostgreSQL is still
    /// down; A keeps the default (10 s), so its calls wait the outage out.
    const B_CONNECT_TIMEOUT: &str = "300ms";
    /// From the restart to the terminal state at B's watcher.
    const END_WITHIN: Duration = Duration::from_secs(30);

    // Only org-server's database is on PostgreSQL: Auth stays on SQLite.
    // With Auth on the same server, the restart would also fail every
    // BatchUnlink for its duration; A's runner would retry them with its
    // jittered backoff (200 ms doubling, up to 30 s), so when the job moves
    // again would depend on that schedule and on Auth's own reconnects, not
    // only on org-server's. This test is about org-server's connections
    // (pool and LISTEN) and its replicas' watchers; Auth outages have tests
    // of their own.
    let Some(pg) = TempPostgres::start() else {
        return;
    };
    let org_database = pg.create_database("org");
    let stack = Stack::start_with(StackOptions {
        workers: 2,
        batch_size: BATCH as usize,
        parallelism: PARALLELISM as usize,
        org_args: args(&["--lease", "2s", "--poll-interval", "200ms"]),
        org_database: Some(org_database),
        auth_database: None,
        ..Default::default()
    })
    .await;
    // B runs no jobs: all it learns of the job comes through the database
    // (LISTEN/NOTIFY, and the re-reads after a reconnect).
    let b = stack.spawn_org_replica(
        "org-b.log",
        &[
            ("--workers", "0"),
            ("--db-connect-timeout", B_CONNECT_TIMEOUT),
        ],
    );
    // Fields drop in order: the replicas stop before the database does.
    let mut cluster = Cluster { b, stack, pg };
    cluster.stack.seed_linked_org("big", MEMBERS as usize).await;
    assert_eq!(cluster.stack.connections("big").await, MEMBERS);

    let job_id = cluster
        .stack
        .orgs_of(&cluster.stack.org)
        .await
        .update_org(set_allow_request("big", false))
        .await
        .expect("update org through A")
        .into_inner()
        .job_id;
    assert!(!job_id.is_empty(), "disabling custom SSO returns a job");
    let created = Instant::now();
    let mut b_jobs = cluster.stack.jobs_of(&cluster.b).await;
    let mut a_jobs = cluster.stack.jobs_of(&cluster.stack.org).await;
    let mut watch = TimedWatch::start(b_jobs.clone(), &job_id).await;
    let before = watch
        .wait_for("processed >= 2,000", Duration::from_secs(60), |job| {
            job.processed_members >= 2_000
        })
        .await;
    assert!(
        before.processed_members < MEMBERS && before.state == pb::JobState::Running as i32,
        "the job must still be running when PostgreSQL stops: {before:?}"
    );
    // What the database holds just before the stop: nothing of it may be
    // lost.
    let at_stop = get_job(&mut b_jobs, &job_id).await;

    // Stop (fast shutdown: every connection is cut), stay down at least
    // OUTAGE, start again on the same port.
    let stop_began = Instant::now();
    tokio::task::block_in_place(|| cluster.pg.stop());
    let stopped_in = stop_began.elapsed();
    assert!(!cluster.pg.is_running(), "PostgreSQL is down");
    // A call to A, which waits up to its 10 s --db-connect-timeout for a
    // connection: it may outlast the outage.
    let a_call = {
        let mut a_jobs = a_jobs.clone();
        let job_id = job_id.clone();
        tokio::spawn(async move {
            OutageCall::make(
                "GetJob on A",
                stop_began,
                a_jobs.get_job(pb::GetJobRequest { job_id }),
            )
            .await
        })
    };
    // Calls to B, which give up on a connection after B_CONNECT_TIMEOUT,
    // for as long as PostgreSQL is down.
    let mut b_calls = Vec::new();
    while b_calls.is_empty() || stop_began.elapsed() < OUTAGE {
        b_calls.push(
            OutageCall::make(
                "GetJob on B",
                stop_began,
                b_jobs.get_job(pb::GetJobRequest {
                    job_id: job_id.clone(),
                }),
            )
            .await,
        );
        b_calls.push(
            OutageCall::make(
                "ListJobs on B",
                stop_began,
                b_jobs.list_jobs(pb::ListJobsRequest {
                    org_id: "big".to_owned(),
                    page_size: 10,
                    ..Default::default()
                }),
            )
            .await,
        );
        b_calls.push(
            OutageCall::make(
                "WatchJob on B",
                stop_began,
                b_jobs.clone().watch_job(pb::WatchJobRequest {
                    job_id: job_id.clone(),
                    since_version: 0,
                }),
            )
            .await,
        );
        assert!(
            stop_began.elapsed() < Duration::from_secs(15),
            "calls to B during the outage take too long: {:?}",
            b_calls.iter().map(ToString::to_string).collect::<Vec<_>>()
        );
    }
    assert!(
        !cluster.pg.is_running(),
        "PostgreSQL stayed down during the calls"
    );
    let restart_began = Instant::now();
    let outage = restart_began - stop_began;
    tokio::task::block_in_place(|| cluster.pg.restart());
    let restarted_at = Instant::now();
    let down_for = restarted_at - stop_began;

    // The watcher on B, untouched by the restart (B's gRPC server never
    // went away), gets the end within END_WITHIN of the restart.
    let seen = watch.finish(END_WITHIN).await;
    let states = monotonic_to_success(&seen, MEMBERS);
    let last = states.last().expect("checked non-empty");
    // A run cut short by the outage replays on resume the batches it sent
    // but did not checkpoint, and their members then count as already
    // unlinked (see `Job.unlinked_members` in the proto). The runner bounds
    // that window at about five times PARALLELISM batches (in flight,
    // waiting, being saved: org-server/src/jobs/runner.rs), so each resume
    // may lower the count by that much, no more. Auth, checked below, is
    // the truth.
    let resumes = i64::from(last.attempt - at_stop.attempt);
    assert!(
        last.unlinked_members <= MEMBERS
            && last.unlinked_members >= MEMBERS - resumes * 5 * PARALLELISM * BATCH,
        "unlinked_members {} after {resumes} resume(s): {last:?}",
        last.unlinked_members
    );
    let first_after = seen
        .iter()
        .find(|s| s.instant > restarted_at)
        .expect("B's watcher got states after the restart");
    assert!(
        first_after.job.processed_members >= at_stop.processed_members
            && first_after.job.version >= at_stop.version,
        "the first state after the restart lost progress: {:?} after {at_stop:?}",
        first_after.job
    );
    let end_at = seen.last().expect("states").instant;
    assert!(
        end_at - restarted_at < END_WITHIN,
        "B's watcher got the end {:?} after the restart",
        end_at - restarted_at
    );
    let after_restart = seen.iter().filter(|s| s.instant > restarted_at).count();
    let running_after_restart = seen
        .iter()
        .filter(|s| s.instant > restarted_at && s.job.state == pb::JobState::Running as i32)
        .count();

    // The database agrees, through both replicas.
    let through_b = get_job(&mut b_jobs, &job_id).await;
    assert_eq!(&through_b, last, "GetJob through B agrees with B's watch");
    let through_a = get_job(&mut a_jobs, &job_id).await;
    assert_eq!(&through_a, last, "GetJob through A agrees with B's watch");
    assert_eq!(
        cluster.stack.connections("big").await,
        0,
        "Auth has no connection left"
    );
    assert!(!cluster.stack.sso_policy("big").await);

    // Calls during the outage: UNAVAILABLE DATABASE_BUSY (B, which gives up
    // on a connection before PostgreSQL is back), never INTERNAL; A's may
    // also have waited the outage out and succeeded.
    let a_call = tokio::time::timeout(Duration::from_secs(30), a_call)
        .await
        .expect("the call to A during the outage ends")
        .expect("call task");
    let b_summary: Vec<String> = b_calls.iter().map(ToString::to_string).collect();
    for call in &b_calls {
        assert!(
            call.is_database_busy(),
            "a call to B while PostgreSQL was down did not answer UNAVAILABLE \
             DATABASE_BUSY: {call}\nall calls to B during the outage:\n{}",
            b_summary.join("\n")
        );
    }
    assert!(
        a_call.result.is_ok() || a_call.is_database_busy(),
        "the call to A during the outage: {a_call}"
    );

    // Both replicas' listeners noticed and reconnected; B ran nothing.
    let b_log = cluster.b.log();
    let a_log = cluster.stack.org.log();
    let b_listener = log_lines_with(&b_log, "job-change listener");
    let a_listener = log_lines_with(&a_log, "job-change listener");
    assert!(
        b_listener.contains("reconnected"),
        "B's job-change listener did not log a reconnect:\n{b_listener}\nB's log:\n{b_log}"
    );
    assert!(
        claimed_jobs(&b_log).is_empty(),
        "B has no workers, yet claimed jobs:\n{}",
        log_lines_with(&b_log, "job claimed")
    );
    let a_claims = claimed_jobs(&a_log)
        .iter()
        .filter(|id| **id == job_id)
        .count();

    eprintln!(
        "job created; {} processed (stored {}, v{}, attempt {}) {:?} later, when PostgreSQL \
         stopped (stop took {stopped_in:?}); down {outage:?} before the restart began, \
         {down_for:?} until it accepted connections again",
        before.processed_members,
        at_stop.processed_members,
        at_stop.version,
        at_stop.attempt,
        stop_began - created
    );
    eprintln!("calls during the outage:");
    for call in b_calls.iter().chain(std::iter::once(&a_call)) {
        eprintln!("  {call}");
    }
    eprintln!(
        "B's watcher: first state after the restart {:?} later (v{} {} processed={} attempt \
         {}), {after_restart} states after the restart ({running_after_restart} RUNNING), \
         the end {:?} after the restart; {} states in all; A claimed the job {a_claims} \
         time(s), final attempt {}; job ran {:?}",
        first_after.instant - restarted_at,
        first_after.job.version,
        state_name(first_after.job.state),
        first_after.job.processed_members,
        first_after.job.attempt,
        end_at - restarted_at,
        seen.len(),
        last.attempt,
        micros(&last.end_time)
            .zip(micros(&last.start_time))
            .map(|(end, start)| Duration::from_micros((end - start) as u64))
    );
    eprintln!("B's listener:\n{b_listener}\nA's listener:\n{a_listener}");
    let a_trouble: Vec<String> = a_log
        .lines()
        .map(strip_ansi)
        .filter(|line| line.contains(" WARN ") || line.contains(" ERROR "))
        .filter(|line| !line.contains("job-change listener"))
        .collect();
    eprintln!(
        "A's warnings and errors ({}):\n{}",
        a_trouble.len(),
        a_trouble
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// CancelJob through B of a job that A runs, while A's worker sits in a
/// retry backoff (Auth is down), so no checkpoint would tell it for a
/// while: the stored request is announced, A's heartbeat checks its lease
/// at once, and the job ends CANCELLED well before the heartbeat's own
/// period (a third of the default 15 s lease).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_through_one_replica_stops_the_job_running_on_the_other_at_once() {
    let Some(mut cluster) = Cluster::start(
        StackOptions {
            workers: 2,
            org_args: args(&[
                "--retry-initial-backoff",
                "10s",
                "--retry-max-backoff",
                "10s",
            ]),
            ..Default::default()
        },
        &[("--workers", "0")],
    )
    .await
    else {
        return;
    };
    cluster.stack.seed_linked_org("acme", 100).await;
    cluster.stack.auth.kill9();
    let stack = &cluster.stack;
    let job_id = stack.set_allow("acme", false).await;
    let mut a_jobs = stack.jobs_of(&stack.org).await;
    // Running on A and stuck: its first call to Auth failed.
    wait_until("the job retries on A", Duration::from_secs(20), || {
        let mut a_jobs = a_jobs.clone();
        let job_id = job_id.clone();
        async move {
            let job = get_job(&mut a_jobs, &job_id).await;
            (job.state == pb::JobState::Running as i32
                && job.attempt >= 1
                && !job.last_error.is_empty())
            .then_some(())
        }
    })
    .await;
    // Past the claim's own lease renewal, so only the hint can be quick.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let asked = Instant::now();
    stack
        .jobs_of(&cluster.b)
        .await
        .cancel_job(pb::CancelJobRequest {
            job_id: job_id.clone(),
        })
        .await
        .expect("cancel through B");
    let ended = wait_until("the job ends", Duration::from_secs(20), || {
        let mut a_jobs = a_jobs.clone();
        let job_id = job_id.clone();
        async move {
            let job = get_job(&mut a_jobs, &job_id).await;
            (job.state != pb::JobState::Running as i32).then_some(job)
        }
    })
    .await;
    let took = asked.elapsed();
    eprintln!("CancelJob through B → CANCELLED on A after {took:?}");
    assert_eq!(ended.state, pb::JobState::Cancelled as i32, "{ended:?}");
    assert!(
        took < Duration::from_secs(3),
        "A stopped only after {took:?}: the heartbeat's period, not the hint"
    );
    a_jobs = stack.jobs_of(&cluster.b).await;
    assert_eq!(get_job(&mut a_jobs, &job_id).await.state, ended.state);
}
