//! auth-server killed (SIGKILL) while a job runs: the synchronous path does
//! not notice, the job stays RUNNING and retries visibly, and it completes
//! once Auth is back; with a small retry budget it ends FAILED instead.

use std::time::{Duration, Instant};

use orgauth_client::UpdateOrg;
use orgauth_e2e::{
    Recorder, Stack, StackOptions, assert_monotonic, get_job, retry_flags, set_allow_request,
    wait_until,
};
use orgauth_proto::org::v1 as pb;

/// UpdateOrg for `org_id` while Auth is down: succeeds, returns a job, and
/// is quick (it never calls Auth).
async fn flip_while_auth_is_down(stack: &Stack, org_id: &str, allow: bool) -> (String, Duration) {
    let mut orgs = stack.orgs().await;
    let started = Instant::now();
    let response = orgs
        .update_org(set_allow_request(org_id, allow))
        .await
        .expect("UpdateOrg succeeds while Auth is down")
        .into_inner();
    let elapsed = started.elapsed();
    assert!(!response.job_id.is_empty());
    assert!(
        elapsed < Duration::from_secs(1),
        "UpdateOrg took {elapsed:?} with Auth down"
    );
    (response.job_id, elapsed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_down_mid_job_the_job_retries_visibly_then_completes_when_auth_is_back() {
    const MEMBERS: i64 = 20_000;
    let mut stack = Stack::start_with(StackOptions {
        batch_size: 100,
        parallelism: 2,
        org_args: retry_flags("1000"),
        ..Default::default()
    })
    .await;
    stack.seed_linked_org("big", MEMBERS as usize).await;
    stack.seed_linked_org("other-a", 10).await;
    stack.seed_linked_org("other-b", 10).await;

    let client = stack.client(Duration::from_secs(60)).await;
    let job_id = client
        .update_org(UpdateOrg::new("big").allow_custom_sso(false))
        .await
        .expect("update org")
        .job_id
        .expect("job");
    let mut recorder = Recorder::start(&client, &job_id);
    let before = recorder
        .wait_for("processed >= 2,000", Duration::from_secs(60), |job| {
            job.processed_members >= 2_000
        })
        .await;

    stack.auth.kill9();
    let down_at = Instant::now();

    // The synchronous path never calls Auth: changes to other orgs go
    // through, quickly, while it is down.
    let (other_a, took_a) = flip_while_auth_is_down(&stack, "other-a", false).await;
    let (other_b, took_b) = flip_while_auth_is_down(&stack, "other-b", false).await;

    // Watchers see the job retrying: still RUNNING, attempt going up, and
    // the reason.
    let retrying = recorder
        .wait_for(
            "three retries with an UNAVAILABLE last_error",
            Duration::from_secs(30),
            |job| job.attempt >= before.attempt + 3 && job.last_error.contains("UNAVAILABLE"),
        )
        .await;
    assert_eq!(retrying.state, pb::JobState::Running as i32, "{retrying:?}");
    let mut jobs = stack.jobs().await;
    let stored = get_job(&mut jobs, &job_id).await;
    assert_eq!(stored.state, pb::JobState::Running as i32);
    assert!(stored.processed_members < MEMBERS);
    for other in [&other_a, &other_b] {
        let job = get_job(&mut jobs, other).await;
        assert!(
            job.state == pb::JobState::Running as i32 || job.state == pb::JobState::Queued as i32,
            "{job:?}"
        );
    }

    // Auth comes back on the same address with the same database.
    let down_for = down_at.elapsed();
    tokio::task::block_in_place(|| stack.auth.restart());

    let states = recorder.finish(Duration::from_secs(120)).await;
    assert_monotonic(&states);
    let last = states.last().expect("states");
    assert_eq!(last.state, pb::JobState::Succeeded as i32, "{last:?}");
    assert_eq!(
        (
            last.processed_members,
            last.total_members,
            last.failed_members
        ),
        (MEMBERS, MEMBERS, 0)
    );
    assert!(last.attempt >= retrying.attempt);
    assert_eq!(stack.connections("big").await, 0);
    assert!(!stack.sso_policy("big").await);
    for (org_id, job_id) in [("other-a", &other_a), ("other-b", &other_b)] {
        let job = client.wait_for_job(job_id).await.expect("wait");
        assert_eq!(job.state, pb::JobState::Succeeded as i32, "{job:?}");
        assert_eq!(stack.connections(org_id).await, 0);
    }
    let attempts: Vec<i32> = states.iter().map(|j| j.attempt).collect();
    eprintln!(
        "auth killed at processed={}; UpdateOrg of other orgs took {took_a:?}, {took_b:?}; \
         watchers saw attempt {}..={} with last_error {:?} while Auth was down ({down_for:?}); \
         final attempt={} processed={} unlinked={}",
        before.processed_members,
        attempts.first().copied().unwrap_or_default(),
        retrying.attempt,
        retrying.last_error,
        last.attempt,
        last.processed_members,
        last.unlinked_members
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_down_with_a_small_retry_budget_the_job_ends_failed_with_the_reason() {
    let stack = Stack::with_auth_down("3", "acme", 50).await;

    let (job_id, took) = flip_while_auth_is_down(&stack, "acme", false).await;
    let jobs = stack.jobs().await;
    let failed = wait_until("the job to fail", Duration::from_secs(30), || {
        let mut jobs = jobs.clone();
        let job_id = job_id.clone();
        async move {
            let job = get_job(&mut jobs, &job_id).await;
            (job.state != pb::JobState::Running as i32 && job.state != pb::JobState::Queued as i32)
                .then_some(job)
        }
    })
    .await;
    eprintln!(
        "UpdateOrg took {took:?}; job ended {} after attempt={}: {:?}",
        orgauth_e2e::state_name(failed.state),
        failed.attempt,
        failed.last_error
    );
    assert_eq!(failed.state, pb::JobState::Failed as i32, "{failed:?}");
    assert!(
        failed.last_error.starts_with("gave up after 3 attempts")
            && failed.last_error.contains("UNAVAILABLE"),
        "{:?}",
        failed.last_error
    );
    assert_eq!(failed.attempt, 3, "every try is counted: {failed:?}");
    assert_eq!(failed.processed_members, 0);
    assert!(failed.end_time.is_some());
    // The org keeps the change: the job failed, not the update.
    assert!(!stack.get_org("acme").await.allow_custom_sso);
}
