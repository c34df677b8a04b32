//! A newer change supersedes an older job of the same org; CancelJob stops
//! queued jobs at once and running ones at their next batch boundary.

use std::time::Duration;

use orgauth_client::UpdateOrg;
use orgauth_e2e::{
    Recorder, Stack, StackOptions, assert_monotonic, get_job, list_org_jobs, set_allow_request,
    watch_to_end,
};
use orgauth_proto::org::v1 as pb;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipping_back_while_the_unlink_runs_cancels_it_in_favour_of_the_newer_job() {
    const MEMBERS: i64 = 20_000;
    let stack = Stack::start_with(StackOptions {
        batch_size: 50,
        parallelism: 1,
        ..Default::default()
    })
    .await;
    stack.seed_linked_org("big", MEMBERS as usize).await;

    let client = stack.client(Duration::from_secs(60)).await;
    let off = client
        .update_org(UpdateOrg::new("big").allow_custom_sso(false))
        .await
        .expect("off")
        .job_id
        .expect("job");
    let mut first = Recorder::start(&client, &off);
    let running = first
        .wait_for(
            "the unlink to make progress",
            Duration::from_secs(60),
            |job| job.processed_members >= 500,
        )
        .await;
    let on = client
        .update_org(UpdateOrg::new("big").allow_custom_sso(true))
        .await
        .expect("on")
        .job_id
        .expect("job");
    assert_ne!(on, off);

    let first_states = first.finish(Duration::from_secs(60)).await;
    assert_monotonic(&first_states);
    let cancelled = first_states.last().expect("states");
    assert_eq!(
        cancelled.state,
        pb::JobState::Cancelled as i32,
        "{cancelled:?}"
    );
    assert_eq!(cancelled.last_error, format!("superseded by job {on}"));
    assert!(
        cancelled.processed_members >= running.processed_members
            && cancelled.processed_members < MEMBERS,
        "{cancelled:?}"
    );
    // It stopped at a batch boundary with every unlink accounted for.
    assert_eq!(
        stack.connections("big").await,
        MEMBERS - cancelled.unlinked_members,
        "{cancelled:?}"
    );

    let second = client.wait_for_job(&on).await.expect("wait");
    assert_eq!(second.state, pb::JobState::Succeeded as i32, "{second:?}");
    assert_eq!(second.kind, pb::JobKind::EnableCustomSso as i32);
    // That it started only after the older job ended is checked over
    // hundreds of jobs by crash.rs (random_kill9s_...): the stored
    // timestamps can disagree with the order the jobs actually ran in by a
    // few milliseconds, which would make a check of one pair flaky here.
    assert!(stack.sso_policy("big").await, "Auth's policy ends allowed");
    eprintln!(
        "superseded at processed={} of {MEMBERS} ({} unlinked); newer job {} SUCCEEDED",
        cancelled.processed_members, cancelled.unlinked_members, second.id
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_job_on_queued_running_cancelled_and_succeeded_jobs() {
    const MEMBERS: i64 = 20_000;
    // One worker: while "big" runs, the job of "small" waits, QUEUED.
    let stack = Stack::start_with(StackOptions {
        workers: 1,
        batch_size: 50,
        parallelism: 1,
        ..Default::default()
    })
    .await;
    stack.seed_linked_org("big", MEMBERS as usize).await;
    stack.seed_linked_org("small", 5).await;
    let mut orgs = stack.orgs().await;
    let mut jobs = stack.jobs().await;
    let client = stack.client(Duration::from_secs(60)).await;

    let big_job = orgs
        .update_org(set_allow_request("big", false))
        .await
        .expect("flip big")
        .into_inner()
        .job_id;
    let mut big = Recorder::start(&client, &big_job);
    big.wait_for(
        "the unlink to make progress",
        Duration::from_secs(60),
        |job| job.processed_members >= 500,
    )
    .await;
    let small_job = orgs
        .update_org(set_allow_request("small", false))
        .await
        .expect("flip small")
        .into_inner()
        .job_id;

    // Queued: cancelled at once, in the response.
    let queued = get_job(&mut jobs, &small_job).await;
    assert_eq!(queued.state, pb::JobState::Queued as i32, "{queued:?}");
    let cancelled = jobs
        .cancel_job(pb::CancelJobRequest {
            job_id: small_job.clone(),
        })
        .await
        .expect("cancel queued")
        .into_inner()
        .job
        .expect("job");
    assert_eq!(
        cancelled.state,
        pb::JobState::Cancelled as i32,
        "{cancelled:?}"
    );
    assert_eq!(cancelled.last_error, "cancelled by CancelJob");
    assert!(cancelled.end_time.is_some() && cancelled.start_time.is_none());
    assert!(cancelled.version > queued.version);
    // Again: OK, and nothing changes.
    let again = jobs
        .cancel_job(pb::CancelJobRequest {
            job_id: small_job.clone(),
        })
        .await
        .expect("cancelling a cancelled job is OK")
        .into_inner()
        .job
        .expect("job");
    assert_eq!(again, cancelled, "nothing changes");

    // Running: the response may still say RUNNING; the job stops at its next
    // batch boundary.
    let requested = jobs
        .cancel_job(pb::CancelJobRequest {
            job_id: big_job.clone(),
        })
        .await
        .expect("cancel running")
        .into_inner()
        .job
        .expect("job");
    assert!(
        requested.state == pb::JobState::Running as i32
            || requested.state == pb::JobState::Cancelled as i32,
        "{requested:?}"
    );
    let states = big.finish(Duration::from_secs(60)).await;
    assert_monotonic(&states);
    let stopped = states.last().expect("states").clone();
    assert_eq!(stopped.state, pb::JobState::Cancelled as i32, "{stopped:?}");
    assert_eq!(stopped.last_error, "cancelled by CancelJob");
    assert!(
        stopped.processed_members < stopped.total_members,
        "{stopped:?}"
    );
    assert_eq!(
        stack.connections("big").await,
        MEMBERS - stopped.unlinked_members,
        "stopped at a batch boundary, every unlink accounted for"
    );
    let again = jobs
        .cancel_job(pb::CancelJobRequest {
            job_id: big_job.clone(),
        })
        .await
        .expect("cancelling a cancelled job is OK")
        .into_inner()
        .job
        .expect("job");
    assert_eq!(again.version, stopped.version, "nothing changes");
    assert_eq!(again.state, pb::JobState::Cancelled as i32);
    // The cancelled queued job never ran.
    let small_now = get_job(&mut jobs, &small_job).await;
    assert_eq!(small_now, cancelled);

    // Succeeded: FAILED_PRECONDITION.
    let small_jobs = list_org_jobs(&mut jobs, "small").await;
    let created = small_jobs.first().expect("the CreateOrg job");
    assert_eq!(created.state, pb::JobState::Succeeded as i32);
    let err = jobs
        .cancel_job(pb::CancelJobRequest {
            job_id: created.id.clone(),
        })
        .await
        .expect_err("a succeeded job cannot be cancelled");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(get_job(&mut jobs, &created.id).await, *created);
    // Unknown job: NOT_FOUND.
    let err = jobs
        .cancel_job(pb::CancelJobRequest {
            job_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .expect_err("unknown job");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    // The worker is free again: a new change of "small" runs.
    let rerun = orgs
        .update_org(set_allow_request("small", true))
        .await
        .expect("flip small back")
        .into_inner()
        .job_id;
    let end = watch_to_end(&mut jobs, &rerun).await;
    assert_eq!(
        end.last().expect("states").state,
        pb::JobState::Succeeded as i32
    );
    eprintln!(
        "cancel: queued job CANCELLED in the response (version {} -> {}); running job answered \
         {} and stopped at processed={} of {}",
        queued.version,
        cancelled.version,
        orgauth_e2e::state_name(requested.state),
        stopped.processed_members,
        stopped.total_members
    );
}
