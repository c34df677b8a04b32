//! SIGTERM while a job runs and watchers are connected (DESIGN.md invariant
//! 8): health stops saying SERVING, open WatchJob streams end with
//! UNAVAILABLE, the process exits 0 within its grace period having
//! checkpointed and handed back its lease, and the job resumes at once on
//! the next process from where it stopped.

use std::time::{Duration, Instant};

use orgauth_client::UpdateOrg;
use orgauth_e2e::{Recorder, Stack, StackOptions, assert_monotonic, get_job, wait_until};
use orgauth_proto::org::v1 as pb;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Reads a raw WatchJob stream, whose first state was `first`, to its end:
/// the states, and the status it ended with (`None`: ended OK).
async fn drain(
    first: pb::Job,
    mut stream: tonic::Streaming<pb::WatchJobResponse>,
) -> (Vec<pb::Job>, Option<tonic::Status>) {
    let mut states = vec![first];
    for _ in 0..1_000_000 {
        match stream.message().await {
            Ok(Some(message)) => states.push(message.job.expect("job")),
            Ok(None) => return (states, None),
            Err(status) => return (states, Some(status)),
        }
    }
    panic!("endless stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_watches_with_unavailable_exits_0_and_the_job_resumes_on_restart() {
    const MEMBERS: i64 = 30_000;
    const WATCHERS: usize = 3;
    let mut stack = Stack::start_with(StackOptions {
        batch_size: 100,
        parallelism: 2,
        // The default 15 s lease: the restarted process can resume the job
        // at once only if the lease was handed back.
        org_args: vec!["--shutdown-grace".into(), "5s".into()],
        ..Default::default()
    })
    .await;
    stack.seed_linked_org("big", MEMBERS as usize).await;

    let client = stack.client(Duration::from_secs(60)).await;
    let job_id = client
        .update_org(UpdateOrg::new("big").allow_custom_sso(false))
        .await
        .expect("update org")
        .job_id
        .expect("job");
    // Opened before the SIGTERM; must follow the job onto the next process.
    let mut recorder = Recorder::start(&client, &job_id);
    recorder
        .wait_for("processed >= 3,000", Duration::from_secs(60), |job| {
            job.processed_members >= 3_000
        })
        .await;

    // Raw watchers, each on its own connection, each past its first message.
    let mut raw = Vec::new();
    for _ in 0..WATCHERS {
        let mut jobs = stack.jobs().await;
        let mut stream = jobs
            .watch_job(pb::WatchJobRequest {
                job_id: job_id.clone(),
                since_version: 0,
            })
            .await
            .expect("watch")
            .into_inner();
        let first = stream
            .message()
            .await
            .expect("first message")
            .expect("a first message")
            .job
            .expect("job");
        assert_eq!(first.state, pb::JobState::Running as i32, "{first:?}");
        raw.push(tokio::spawn(drain(first, stream)));
    }
    let mut health = HealthClient::new(stack.org.channel().await);
    let serving = health
        .check(HealthCheckRequest::default())
        .await
        .expect("health")
        .into_inner()
        .status;
    assert_eq!(serving, ServingStatus::Serving as i32);
    let health_after_term = tokio::spawn(async move {
        // Whatever comes first: NOT_SERVING, or the call failing because
        // the server stopped accepting or exited.
        for _ in 0..1_000 {
            match tokio::time::timeout(
                Duration::from_secs(2),
                health.check(HealthCheckRequest::default()),
            )
            .await
            {
                Ok(Ok(response)) if response.get_ref().status == ServingStatus::Serving as i32 => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Ok(Ok(response)) => {
                    return format!("status {}", response.get_ref().status().as_str_name());
                }
                Ok(Err(status)) => return format!("error {:?}", status.code()),
                Err(_) => return "timeout".to_owned(),
            }
        }
        "still SERVING".to_owned()
    });

    let term_at = Instant::now();
    stack.org.signal("TERM");
    let exit = tokio::task::block_in_place(|| stack.org.wait_exit(Duration::from_secs(6)))
        .unwrap_or_else(|| {
            panic!(
                "org-server did not exit within 6 s of SIGTERM:\n{}",
                stack.org.log()
            )
        });
    let exited_after = term_at.elapsed();
    assert!(exit.success(), "exit status {exit:?}");

    let mut last_watched = 0;
    for watcher in raw {
        let (states, end) = tokio::time::timeout(Duration::from_secs(5), watcher)
            .await
            .expect("the raw watch ended with the server")
            .expect("watch task");
        let status = end.expect("the stream ended with a status, not OK");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(status.message().contains("since_version"), "{status:?}");
        assert_monotonic(&states);
        last_watched = last_watched.max(states.last().map_or(0, |j| j.processed_members));
    }
    assert!(last_watched < MEMBERS, "the job was mid-way at the SIGTERM");
    let health_seen = tokio::time::timeout(Duration::from_secs(5), health_after_term)
        .await
        .expect("health probe ends")
        .expect("health task");
    assert_ne!(health_seen, "still SERVING");
    assert_ne!(health_seen, "timeout");
    let log = stack.org.log();
    assert!(log.contains("received SIGTERM"), "{log}");
    assert!(
        log.contains("job handed back for another worker to resume"),
        "the lease is released on shutdown:\n{log}"
    );

    // The next process on the same address and database.
    tokio::task::block_in_place(|| stack.org.restart());
    let restarted_at = Instant::now();
    let mut jobs = stack.jobs().await;
    let at_restart = get_job(&mut jobs, &job_id).await;
    assert!(
        at_restart.processed_members > 0 && at_restart.processed_members >= last_watched,
        "the job kept its checkpoint: {at_restart:?} (watched {last_watched})"
    );
    let resumed = wait_until(
        "the restarted process to resume the job",
        Duration::from_secs(10),
        || {
            let mut jobs = jobs.clone();
            let job_id = job_id.clone();
            async move {
                let job = get_job(&mut jobs, &job_id).await;
                (job.attempt >= 2).then_some(job)
            }
        },
    )
    .await;
    let resumed_after = restarted_at.elapsed();

    let states = recorder.finish(Duration::from_secs(120)).await;
    assert_monotonic(&states);
    let last = states.last().expect("states");
    assert_eq!(last.state, pb::JobState::Succeeded as i32, "{last:?}");
    assert_eq!(
        (last.processed_members, last.total_members),
        (MEMBERS, MEMBERS)
    );
    assert!(states.iter().any(|j| j.attempt == 1) && last.attempt >= 2);
    let first_resumed = states.iter().find(|j| j.attempt >= 2).expect("resumed");
    assert!(
        first_resumed.processed_members >= last_watched,
        "resumed from its checkpoint, not from zero: {first_resumed:?}"
    );
    assert_eq!(stack.connections("big").await, 0);
    eprintln!(
        "SIGTERM at processed≈{last_watched} (raw watchers' last state); exited {exit:?} after \
         {exited_after:?}; health after SIGTERM: {health_seen}; stored processed={} at restart; \
         resumed (attempt {}) {resumed_after:?} after the restart; the client-library watch \
         saw {} states, finishing attempt={} processed={}",
        at_restart.processed_members,
        resumed.attempt,
        states.len(),
        last.attempt,
        last.processed_members
    );
}
