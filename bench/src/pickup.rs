//! Measurement 5: job pickup latency, from UpdateOrg's return to the first
//! `WatchJob` message whose state is past QUEUED, on an org with no
//! members (so each job is short), one job at a time.
//!
//! The watch is opened right after UpdateOrg returns, so the figure includes
//! opening the stream (one round trip). When the job is already RUNNING (or
//! even finished) by then, the first message shows it: the figure is then
//! an upper bound of the real pickup time. The run counts how often the
//! first message was still QUEUED. The baseline is the Health Check round
//! trip on the same server.

use std::time::Instant;

use orgauth_proto::org::v1 as pb;
use orgauth_proto::org::v1::job_service_client::JobServiceClient;
use orgauth_proto::org::v1::org_service_client::OrgServiceClient;
use tonic_health::pb::health_client::HealthClient;

use crate::error::{Result, fail};
use crate::report::{Goal, Latencies, Row};
use crate::rpc;

/// How many jobs, and how many warm-up jobs before them.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Unrecorded jobs first.
    pub warmup: usize,
    /// Measured jobs.
    pub jobs: usize,
}

/// Flips `org_id` `warmup + jobs` times, waiting for each job to end.
pub async fn run(org: &rpc::Target, org_id: &str, plan: Plan) -> Result<Vec<Row>> {
    let channel = rpc::connect(org).await?;
    let mut orgs = OrgServiceClient::new(channel.clone());
    let mut jobs = JobServiceClient::new(channel.clone());
    let mut health = HealthClient::new(channel);

    let mut checks = Latencies::new()?;
    for i in 0..plan.warmup + plan.jobs {
        let start = Instant::now();
        rpc::health_check(&mut health).await?;
        if i >= plan.warmup {
            checks.record(start.elapsed());
        }
    }

    let mut allow = rpc::get_allow_custom_sso(&mut orgs, org_id).await?;
    let mut pickup = Latencies::new()?;
    let mut whole = Latencies::new()?;
    let mut first_queued = 0_u64;
    let mut first_running = 0_u64;
    let mut first_terminal = 0_u64;
    for i in 0..plan.warmup + plan.jobs {
        allow = !allow;
        let job_id = rpc::set_allow_custom_sso(&mut orgs, org_id, allow).await?;
        let returned = Instant::now();
        let timeline = rpc::follow_job(&mut jobs, &job_id, crate::unlink::UNLINK_TIMEOUT).await?;
        rpc::ensure_succeeded(&timeline.job)?;
        let Some(started) = timeline.started else {
            return fail(format!("job {job_id}: no message past QUEUED"));
        };
        if i < plan.warmup {
            continue;
        }
        pickup.record(started - returned);
        whole.record(timeline.end - returned);
        match timeline.first_state {
            pb::JobState::Queued => first_queued += 1,
            pb::JobState::Running => first_running += 1,
            _ => first_terminal += 1,
        }
    }

    let note = format!(
        "{} jobs after {} warm-up, 0 members, workers 4; first message QUEUED {first_queued}x, \
         RUNNING {first_running}x, already finished {first_terminal}x; return to terminal p50 {:.2} ms",
        plan.jobs,
        plan.warmup,
        whole.p50_ms()
    );
    Ok(vec![
        Row::new(
            5,
            "job pickup p50 (UpdateOrg return -> RUNNING seen)",
            pickup.p50_ms(),
            "ms",
            Some((checks.p50_ms(), "Check p50")),
            Goal::ValueBelow(2.0),
        )
        .note(note.clone()),
        Row::new(
            5,
            "job pickup p99",
            pickup.p99_ms(),
            "ms",
            Some((checks.p99_ms(), "Check p99")),
            Goal::None,
        )
        .note(note),
    ])
}
