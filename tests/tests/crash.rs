//! org-server killed with SIGKILL (no chance to clean up) while jobs run,
//! then restarted on the same address and the same database: no
//! acknowledged change is lost, jobs resume from their checkpoints, progress
//! never goes backwards, and jobs of one org never overlap.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use orgauth_client::UpdateOrg;
use orgauth_e2e::{
    Recorder, Stack, StackOptions, XorShift, assert_monotonic, get_job, list_org_jobs,
    set_allow_request, state_name, wait_until,
};
use orgauth_proto::org::v1 as pb;
use orgauth_proto::org::v1::org_service_client::OrgServiceClient;

fn args(flags: &[&str]) -> Vec<String> {
    flags.iter().map(|s| (*s).to_owned()).collect()
}

fn micros(ts: &Option<prost_types::Timestamp>) -> Option<i128> {
    ts.as_ref()
        .map(|t| i128::from(t.seconds) * 1_000_000 + i128::from(t.nanos) / 1_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_in_the_middle_of_a_50k_unlink_then_restart_completes_the_job() {
    const MEMBERS: i64 = 50_000;
    const BATCH: i64 = 100;
    const PARALLELISM: i64 = 2;
    let mut stack = Stack::start_with(StackOptions {
        batch_size: BATCH as usize,
        parallelism: PARALLELISM as usize,
        // A short lease so the restarted process reclaims the dead one's job
        // quickly.
        org_args: args(&["--lease", "2s", "--poll-interval", "100ms"]),
        ..Default::default()
    })
    .await;
    stack.seed_linked_org("big", MEMBERS as usize).await;
    assert_eq!(stack.connections("big").await, MEMBERS);

    let client = stack.client(Duration::from_secs(60)).await;
    let job_id = client
        .update_org(UpdateOrg::new("big").allow_custom_sso(false))
        .await
        .expect("update org")
        .job_id
        .expect("disabling custom SSO returns a job");
    let started = Instant::now();
    // The client library's watch: it must survive the crash and the restart.
    let mut recorder = Recorder::start(&client, &job_id);
    let seen_before_kill = recorder
        .wait_for("processed >= 10,000", Duration::from_secs(60), |job| {
            job.processed_members >= 10_000
        })
        .await;

    stack.org.kill9();
    let killed_after = started.elapsed();
    tokio::task::block_in_place(|| stack.org.restart());

    // Right after the restart the job is still RUNNING (the dead worker's
    // lease has not expired yet, or it has and the job was just resumed)
    // with at least what the dead process checkpointed.
    let mut jobs = stack.jobs().await;
    let at_restart = get_job(&mut jobs, &job_id).await;
    assert_eq!(
        at_restart.state,
        pb::JobState::Running as i32,
        "the job was mid-way when killed: {at_restart:?}"
    );
    assert!(
        at_restart.processed_members >= seen_before_kill.processed_members
            && at_restart.processed_members < MEMBERS,
        "checkpoints survive the crash: watched {} before the kill, {} stored",
        seen_before_kill.processed_members,
        at_restart.processed_members
    );
    let connections_at_restart = stack.connections("big").await;
    assert!(
        connections_at_restart <= MEMBERS - at_restart.unlinked_members,
        "every checkpointed unlink happened in Auth: {connections_at_restart} connections, \
         {} unlinked",
        at_restart.unlinked_members
    );

    let resumed = recorder
        .wait_for(
            "the restarted process to resume the job",
            Duration::from_secs(30),
            |job| job.attempt > seen_before_kill.attempt,
        )
        .await;
    let states = recorder.finish(Duration::from_secs(120)).await;
    eprintln!(
        "kill -9 after {killed_after:?}: watched processed={} before the kill, stored \
         processed={} attempt={} at restart ({connections_at_restart} connections left); \
         resumed with attempt={} processed={}; {} states watched; total {:?}",
        seen_before_kill.processed_members,
        at_restart.processed_members,
        at_restart.attempt,
        resumed.attempt,
        resumed.processed_members,
        states.len(),
        started.elapsed()
    );

    assert_monotonic(&states);
    let last = states.last().expect("states");
    assert_eq!(last.state, pb::JobState::Succeeded as i32, "{last:?}");
    assert_eq!(
        (last.processed_members, last.total_members),
        (MEMBERS, MEMBERS)
    );
    assert_eq!(last.failed_members, 0);
    // Batches done in Auth but not checkpointed at the kill are replayed
    // and count as NOT_LINKED rather than UNLINKED. The runner keeps
    // batches going while a checkpoint is written, so that is up to
    // PARALLELISM batches in flight, as many waiting for the next write
    // and twice as many in the write under way (see runner.rs).
    assert!(
        last.unlinked_members <= MEMBERS
            && last.unlinked_members >= MEMBERS - 5 * BATCH * PARALLELISM,
        "unlinked {}",
        last.unlinked_members
    );
    assert!(
        resumed.processed_members >= at_restart.processed_members,
        "resumed from the checkpoint, not from zero"
    );
    assert!(
        states.iter().any(|j| j.attempt == 1) && last.attempt >= 2,
        "the watch spans both runs"
    );
    assert_eq!(
        stack.connections("big").await,
        0,
        "Auth has no connection left"
    );
    assert!(!stack.sso_policy("big").await);
}

/// One UpdateOrg that returned OK with a job.
#[derive(Debug, Clone)]
struct Acked {
    org_id: String,
    allow: bool,
    job_id: String,
}

#[derive(Debug, Default)]
struct FlipperReport {
    acked: Vec<Acked>,
    /// OK without a job: the org already had that value.
    no_op: usize,
    /// Failed (server down or killed mid-call): not acknowledged.
    failed: usize,
}

/// Flips `orgs` on and off at random through UpdateOrg until `stop`.
async fn flipper(
    endpoint: String,
    token: String,
    orgs: Vec<String>,
    mut rng: XorShift,
    stop: Arc<AtomicBool>,
) -> FlipperReport {
    let channel = orgauth_e2e::connect(&endpoint).await;
    let mut client = OrgServiceClient::new(orgauth_e2e::authed(channel, &token));
    let mut report = FlipperReport::default();
    for _ in 0..20_000 {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let org_id = &orgs[rng.below(orgs.len() as u64) as usize];
        let allow = rng.coin();
        let call = client.update_org(set_allow_request(org_id, allow));
        match tokio::time::timeout(Duration::from_secs(5), call).await {
            Ok(Ok(response)) => {
                let response = response.into_inner();
                if response.job_id.is_empty() {
                    report.no_op += 1;
                } else {
                    assert_eq!(
                        response.org.as_ref().map(|o| o.allow_custom_sso),
                        Some(allow)
                    );
                    report.acked.push(Acked {
                        org_id: org_id.clone(),
                        allow,
                        job_id: response.job_id,
                    });
                }
            }
            Ok(Err(_)) | Err(_) => report.failed += 1,
        }
        tokio::time::sleep(rng.millis(5, 40)).await;
    }
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_kill9s_across_a_stream_of_jobs_lose_no_acknowledged_change() {
    const ORGS: usize = 12;
    const MEMBERS: usize = 300;
    const KILLS: usize = 4;
    const FLIPPERS: usize = 3;
    let mut rng = XorShift::from_env_or_clock("random_kill9s");
    let mut stack = Stack::start_with(StackOptions {
        workers: 4,
        batch_size: 20,
        parallelism: 1,
        org_args: args(&["--lease", "2s", "--poll-interval", "100ms"]),
        ..Default::default()
    })
    .await;
    let org_ids: Vec<String> = (0..ORGS).map(|i| format!("org-{i:02}")).collect();
    for org_id in &org_ids {
        stack.seed_linked_org(org_id, MEMBERS).await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let flippers: Vec<_> = (0..FLIPPERS)
        .map(|f| {
            let orgs = org_ids.iter().skip(f).step_by(FLIPPERS).cloned().collect();
            tokio::spawn(flipper(
                stack.org.endpoint(),
                stack.tokens.admin.clone(),
                orgs,
                XorShift::new(rng.next_u64()),
                Arc::clone(&stop),
            ))
        })
        .collect();

    let started = Instant::now();
    let mut kills = Vec::new();
    for _ in 0..KILLS {
        // Random kill points and downtimes: these sleeps are the fault
        // schedule, not synchronization.
        tokio::time::sleep(rng.millis(300, 1500)).await;
        let at = started.elapsed();
        stack.org.kill9();
        tokio::time::sleep(rng.millis(0, 300)).await;
        tokio::task::block_in_place(|| stack.org.restart());
        kills.push(at);
    }
    // Changes keep coming for a moment after the last restart.
    tokio::time::sleep(rng.millis(300, 800)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    let (mut no_op, mut failed) = (0, 0);
    for task in flippers {
        let report = tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("flipper stops")
            .expect("flipper task");
        acked.extend(report.acked);
        no_op += report.no_op;
        failed += report.failed;
    }
    assert!(
        acked.len() >= 20,
        "too few acknowledged changes: {}",
        acked.len()
    );

    // Every job (acknowledged or not) reaches a terminal state, boundedly.
    let mut jobs = stack.jobs().await;
    let settle_started = Instant::now();
    wait_until("every job to end", Duration::from_secs(60), || {
        let mut jobs = jobs.clone();
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
    let settled_in = settle_started.elapsed();

    // The queue checker.
    let mut by_org: BTreeMap<String, Vec<pb::Job>> = BTreeMap::new();
    let mut position: HashMap<String, (String, usize)> = HashMap::new();
    for org_id in &org_ids {
        let list = list_org_jobs(&mut jobs, org_id).await;
        for (i, job) in list.iter().enumerate() {
            position.insert(job.id.clone(), (org_id.clone(), i));
        }
        by_org.insert(org_id.clone(), list);
    }
    let (mut succeeded, mut superseded, mut resumed) = (0, 0, 0);
    let mut overlaps = 0;
    let mut overlap_report = Vec::new();
    for ack in &acked {
        let (org_id, _) = position
            .get(&ack.job_id)
            .unwrap_or_else(|| panic!("acknowledged job lost: {ack:?}"));
        assert_eq!(org_id, &ack.org_id, "{ack:?}");
        let job = get_job(&mut jobs, &ack.job_id).await;
        let kind = if ack.allow {
            pb::JobKind::EnableCustomSso
        } else {
            pb::JobKind::DisableCustomSso
        };
        assert_eq!(job.kind, kind as i32, "{ack:?}: {job:?}");
    }
    for (org_id, list) in &by_org {
        let mut last_started: Option<(i128, i128, &str)> = None;
        for (i, job) in list.iter().enumerate() {
            match pb::JobState::try_from(job.state) {
                Ok(pb::JobState::Succeeded) => succeeded += 1,
                Ok(pb::JobState::Cancelled) => {
                    superseded += 1;
                    let newer = job
                        .last_error
                        .strip_prefix("superseded by job ")
                        .unwrap_or_else(|| panic!("cancelled, but not superseded: {job:?}"));
                    let (newer_org, newer_index) = position
                        .get(newer)
                        .unwrap_or_else(|| panic!("superseded by an unknown job: {job:?}"));
                    assert!(
                        newer_org == org_id && *newer_index > i,
                        "superseded by a job that is not a newer one of the org: {job:?}"
                    );
                }
                _ => panic!(
                    "job ended {} (only SUCCEEDED or superseded expected): {job:?}",
                    state_name(job.state)
                ),
            }
            if job.attempt >= 2 {
                resumed += 1;
            }
            // One org, one job at a time, in creation order.
            let Some(start) = micros(&job.start_time) else {
                continue;
            };
            let end = micros(&job.end_time).expect("a started job that ended has an end time");
            assert!(start <= end, "{job:?}");
            if let Some((previous_start, previous_end, previous)) = last_started {
                assert!(
                    previous_start < start,
                    "{org_id}: jobs started out of creation order: {previous} then {}",
                    job.id
                );
                if previous_end > start {
                    overlaps += 1;
                    if overlap_report.len() < 40 {
                        overlap_report.push(format!(
                            "{org_id}: job {} has start_time {start} µs, {} µs before the \
                             end_time {previous_end} µs of job {previous}, created before it",
                            job.id,
                            previous_end - start
                        ));
                        let log = stack.org.log();
                        overlap_report.extend(
                            log.lines()
                                .filter(|l| l.contains(&job.id) || l.contains(previous))
                                .filter(|l| l.contains("job claimed") || l.contains("job ended"))
                                .map(|l| format!("    {}", strip_ansi(l))),
                        );
                    }
                }
            }
            last_started = Some((start, end, &job.id));
        }
        // The newest change is never superseded, and Auth ends in line with
        // the org.
        let newest = list.last().expect("at least the CreateOrg job");
        assert_eq!(newest.state, pb::JobState::Succeeded as i32, "{newest:?}");
        let org = stack
            .orgs()
            .await
            .get_org(pb::GetOrgRequest {
                org_id: org_id.clone(),
            })
            .await
            .expect("get org")
            .into_inner()
            .org
            .expect("org");
        let expected_kind = if org.allow_custom_sso {
            pb::JobKind::EnableCustomSso
        } else {
            pb::JobKind::DisableCustomSso
        };
        assert_eq!(newest.kind, expected_kind as i32, "{org_id}");
        assert_eq!(
            stack.sso_policy(org_id).await,
            org.allow_custom_sso,
            "{org_id}: Auth's policy mirrors the org"
        );
        if !org.allow_custom_sso {
            assert_eq!(stack.connections(org_id).await, 0, "{org_id}");
        }
    }
    let total: usize = by_org.values().map(Vec::len).sum();
    eprintln!(
        "kills at {kills:?}; {} acknowledged changes, {no_op} no-ops, {failed} failed calls; \
         {total} jobs: {succeeded} succeeded, {superseded} superseded, {resumed} run more than \
         once; settled {settled_in:?} after the flips stopped; total {:?}",
        acked.len(),
        started.elapsed()
    );
    // Checked last so that a failure here means everything above held.
    assert!(
        overlaps == 0,
        "{overlaps} jobs have a start_time before the end_time of the previous job of their \
         org (the log shows the order in which they actually ran):\n{}",
        overlap_report.join("\n")
    );
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
