//! Finished jobs are pruned after the retention period.

use std::time::{Duration, Instant};

use orgauth_e2e::{Stack, StackOptions, watch_to_end};
use orgauth_proto::org::v1 as pb;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_job_is_pruned_after_its_retention_and_is_then_not_found() {
    let stack = Stack::start_with(StackOptions {
        org_args: vec![
            "--job-retention".into(),
            "1s".into(),
            "--prune-interval".into(),
            "100ms".into(),
        ],
        ..Default::default()
    })
    .await;
    stack.seed_linked_org("acme", 10).await;
    let job_id = stack.set_allow("acme", false).await;
    let mut jobs = stack.jobs().await;
    let states = watch_to_end(&mut jobs, &job_id).await;
    assert_eq!(states.last().unwrap().state, pb::JobState::Succeeded as i32);

    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        match jobs
            .get_job(pb::GetJobRequest {
                job_id: job_id.clone(),
            })
            .await
        {
            Err(status) => break status,
            Ok(_) => {
                assert!(Instant::now() < deadline, "job was never pruned");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(status.code(), Code::NotFound);
    let watch = jobs
        .watch_job(pb::WatchJobRequest {
            job_id: job_id.clone(),
            since_version: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(watch.code(), Code::NotFound);
    // The org itself is untouched.
    let org = stack
        .orgs()
        .await
        .get_org(pb::GetOrgRequest {
            org_id: "acme".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .org
        .unwrap();
    assert!(!org.allow_custom_sso);
}
