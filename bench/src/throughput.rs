//! Measurement 2: UpdateOrg throughput with N concurrent clients, each on
//! its own connection and its own org, next to Health Check throughput at
//! the same concurrency on the same server.
//!
//! Every client loops until a shared deadline: a warm-up window whose calls
//! are not counted, then a fixed measuring window. Each UpdateOrg flips its
//! org's `allow_custom_sso`, so every call is a write that enqueues a job.
//! org-server runs with `--workers 0`, as for measurement 1.

use std::time::{Duration, Instant};

use orgauth_proto::org::v1::org_service_client::OrgServiceClient;
use tokio::task::JoinSet;
use tonic_health::pb::health_client::HealthClient;

use crate::error::{Result, fail};
use crate::report::{Goal, Latencies, Row};
use crate::rpc::{self, AuthedChannel};

/// What one step measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Check,
    Update,
}

/// Window lengths.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Uncounted time at the start of each step.
    pub warmup: Duration,
    /// Counted time of each step.
    pub duration: Duration,
}

/// The result of one step: calls per second over the measuring window, and
/// the latencies of the calls in it.
struct Step {
    rate: f64,
    latencies: Latencies,
}

/// Measures both operations at each concurrency in `levels`; `org_ids`
/// holds at least as many orgs as the largest level.
pub async fn run(
    org: &rpc::Target,
    org_ids: &[String],
    levels: &[usize],
    plan: Plan,
) -> Result<Vec<Row>> {
    let max = levels.iter().copied().max().unwrap_or(0);
    if org_ids.len() < max {
        return fail(format!(
            "{max} clients need {max} orgs, got {}",
            org_ids.len()
        ));
    }
    let mut channels = Vec::with_capacity(max);
    for _ in 0..max {
        channels.push(rpc::connect(org).await?);
    }
    let mut rows = Vec::new();
    for &clients in levels {
        let check = step(&channels[..clients], org_ids, Op::Check, plan).await?;
        let update = step(&channels[..clients], org_ids, Op::Update, plan).await?;
        let goal = if clients >= 64 {
            Goal::RatioAtLeast(0.30)
        } else {
            Goal::None
        };
        rows.push(
            Row::new(
                2,
                format!("UpdateOrg throughput, {clients} clients"),
                update.rate,
                "calls/s",
                Some((check.rate, "Check")),
                goal,
            )
            .note(format!(
                "{:.0} s after {:.1} s warm-up, one connection and org per client; \
                 UpdateOrg p50 {:.2} ms p99 {:.2} ms, Check p50 {:.2} ms; --workers 0",
                plan.duration.as_secs_f64(),
                plan.warmup.as_secs_f64(),
                update.latencies.p50_ms(),
                update.latencies.p99_ms(),
                check.latencies.p50_ms()
            )),
        );
    }
    Ok(rows)
}

async fn step(channels: &[AuthedChannel], org_ids: &[String], op: Op, plan: Plan) -> Result<Step> {
    // Every client reads its org's state first, then all start together.
    let start = Instant::now() + Duration::from_millis(300);
    let measure_from = start + plan.warmup;
    let until = measure_from + plan.duration;
    let mut tasks = JoinSet::new();
    for (channel, org_id) in channels.iter().zip(org_ids) {
        let channel = channel.clone();
        let org_id = org_id.clone();
        tasks.spawn(
            async move { client_loop(channel, org_id, op, start, measure_from, until).await },
        );
    }
    let mut count = 0_u64;
    let mut latencies = Latencies::new()?;
    while let Some(joined) = tasks.join_next().await {
        let (n, client_latencies) =
            joined.map_err(|err| format!("client task failed: {err}"))??;
        count += n;
        latencies.merge(&client_latencies)?;
    }
    Ok(Step {
        rate: count as f64 / plan.duration.as_secs_f64(),
        latencies,
    })
}

/// One client: calls until `until`, counting the calls that complete in
/// `[measure_from, until)`.
async fn client_loop(
    channel: AuthedChannel,
    org_id: String,
    op: Op,
    start: Instant,
    measure_from: Instant,
    until: Instant,
) -> Result<(u64, Latencies)> {
    let mut health = HealthClient::new(channel.clone());
    let mut orgs = OrgServiceClient::new(channel);
    let mut allow = match op {
        Op::Update => rpc::get_allow_custom_sso(&mut orgs, &org_id).await?,
        Op::Check => false,
    };
    tokio::time::sleep_until(start.into()).await;
    let mut count = 0_u64;
    let mut latencies = Latencies::new()?;
    // Bounded by the deadline.
    while Instant::now() < until {
        let call_start = Instant::now();
        match op {
            Op::Check => rpc::health_check(&mut health).await?,
            Op::Update => {
                allow = !allow;
                rpc::set_allow_custom_sso(&mut orgs, &org_id, allow).await?;
            }
        }
        let done = Instant::now();
        if done >= measure_from && done < until {
            count += 1;
            latencies.record(done - call_start);
        }
    }
    Ok((count, latencies))
}
