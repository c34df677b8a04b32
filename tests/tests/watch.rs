//! WatchJob semantics over real processes.

use std::time::Duration;

use orgauth_e2e::{Stack, assert_monotonic, watch_from, watch_to_end, watch_to_end_from};
use orgauth_proto::org::v1 as pb;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watching_a_finished_job_sends_one_message_and_ends_ok() {
    let stack = Stack::start().await;
    stack.seed_linked_org("acme", 5).await;
    let job_id = stack.set_allow("acme", false).await;
    let mut jobs = stack.jobs().await;
    watch_to_end(&mut jobs, &job_id).await;

    let states = watch_to_end(&mut jobs, &job_id).await;
    assert_eq!(states.len(), 1, "a finished job: its final state, then OK");
    assert_eq!(states[0].state, pb::JobState::Succeeded as i32);

    // A reconnecting watcher that already saw the end gets it once more.
    let mut stream = watch_from(&mut jobs, &job_id, states[0].version).await;
    let only = stream.message().await.unwrap().unwrap().job.unwrap();
    assert_eq!(only.version, states[0].version);
    assert!(
        stream.message().await.unwrap().is_none(),
        "then the stream ends OK"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumed_beyond_the_jobs_versions_still_ends_with_its_terminal_state() {
    // No workers: the job stays QUEUED until it is cancelled.
    let stack = Stack::start_with(orgauth_e2e::StackOptions {
        workers: 0,
        ..Default::default()
    })
    .await;
    stack.create_org("acme", "Acme", false).await;
    let job_id = stack.set_allow("acme", true).await;
    let mut jobs = stack.jobs().await;
    let mut stream = watch_from(&mut jobs, &job_id, 1_000_000).await;
    // Nothing newer than a million while the job waits...
    let early = tokio::time::timeout(Duration::from_millis(300), stream.message()).await;
    assert!(early.is_err(), "nothing is sent yet: {early:?}");
    stack.cancel_job(&job_id).await;
    // ...but its end is sent, whatever its version, and the stream ends OK.
    let last = tokio::time::timeout(Duration::from_secs(30), stream.message())
        .await
        .expect("the terminal state comes")
        .expect("a message, not an error")
        .expect("a message, not the end")
        .job
        .expect("job");
    assert_eq!(last.state, pb::JobState::Cancelled as i32);
    assert!(last.version < 1_000_000, "{last:?}");
    let end = tokio::time::timeout(Duration::from_secs(30), stream.message())
        .await
        .expect("the stream ends");
    assert!(matches!(end, Ok(None)), "then the stream ends OK: {end:?}");

    // Watched again from the same point after the end: the terminal state
    // once more, then OK (WatchJob's rule; the SSE route answers 204).
    let states = watch_to_end_from(&mut jobs, &job_id, 1_000_000).await;
    assert_eq!(states, vec![last]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watching_an_unknown_or_malformed_id_fails_with_the_right_code() {
    let stack = Stack::start().await;
    let mut jobs = stack.jobs().await;
    let unknown = jobs
        .watch_job(pb::WatchJobRequest {
            job_id: uuid::Uuid::now_v7().to_string(),
            since_version: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    for bad in ["", "not-a-uuid", "0190"] {
        let err = jobs
            .watch_job(pb::WatchJobRequest {
                job_id: bad.into(),
                since_version: 0,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad:?}");
    }
    let negative = jobs
        .watch_job(pb::WatchJobRequest {
            job_id: uuid::Uuid::now_v7().to_string(),
            since_version: -1,
        })
        .await
        .unwrap_err();
    assert_eq!(negative.code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_watchers_both_follow_the_job_to_its_end() {
    let stack = Stack::start_with(orgauth_e2e::StackOptions {
        batch_size: 100,
        parallelism: 2,
        ..Default::default()
    })
    .await;
    stack.seed_linked_org("acme", 3000).await;
    let job_id = stack.set_allow("acme", false).await;
    let (mut a, mut b) = (stack.jobs().await, stack.jobs().await);
    let (first, second) =
        tokio::join!(watch_to_end(&mut a, &job_id), watch_to_end(&mut b, &job_id));
    for states in [&first, &second] {
        assert_monotonic(states);
        let last = states.last().unwrap();
        assert_eq!(last.state, pb::JobState::Succeeded as i32);
        assert_eq!(last.processed_members, 3000);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_disconnects_does_not_disturb_the_job() {
    let stack = Stack::start().await;
    stack.seed_linked_org("acme", 2000).await;
    let job_id = stack.set_allow("acme", false).await;
    let mut jobs = stack.jobs().await;
    {
        let mut stream = jobs
            .watch_job(pb::WatchJobRequest {
                job_id: job_id.clone(),
                since_version: 0,
            })
            .await
            .unwrap()
            .into_inner();
        stream.message().await.unwrap().unwrap();
        // Dropped here, mid-job.
    }
    let states = watch_to_end(&mut jobs, &job_id).await;
    assert_eq!(states.last().unwrap().state, pb::JobState::Succeeded as i32);
}
