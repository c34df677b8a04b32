//! Thin helpers over the generated gRPC stubs of `orgauth-proto` (and the
//! standard health stub): connecting with a bearer token, seeding orgs,
//! members and SSO links, flipping `allow_custom_sso`, and following a job
//! through `WatchJob` with the instants at which its states were seen.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use orgauth_proto::auth::v1 as authpb;
use orgauth_proto::auth::v1::auth_service_client::AuthServiceClient;
use orgauth_proto::org::v1 as pb;
use orgauth_proto::org::v1::job_service_client::JobServiceClient;
use orgauth_proto::org::v1::org_service_client::OrgServiceClient;
use orgauth_runtime::access::BearerToken;
use prost_types::FieldMask;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::error::{Result, fail};

/// Members per AddMembers and per LinkSso call (the API's maximum).
pub const SEED_CHUNK: u64 = 1000;

/// Seeding calls in flight at once.
pub const SEED_IN_FLIGHT: usize = 4;

/// How long connecting may take while a server starts.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// One HTTP/2 connection whose every call carries
/// `authorization: Bearer <token>` (health checks too; the servers ignore it
/// there).
pub type AuthedChannel = InterceptedService<Channel, BearerToken>;

/// A server the benchmark calls: where it listens, and the token presented
/// to it.
#[derive(Debug, Clone)]
pub struct Target {
    /// The server's loopback address.
    pub addr: SocketAddr,
    /// The bench's token for this server.
    pub token: BearerToken,
}

/// Opens one HTTP/2 connection to the target (loopback only), retrying
/// briefly; every call on it presents the target's token.
pub async fn connect(target: &Target) -> Result<AuthedChannel> {
    let addr = target.addr;
    if !addr.ip().is_loopback() {
        return fail(format!(
            "refusing to benchmark {addr}: not a loopback address"
        ));
    }
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5));
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    loop {
        match endpoint.connect().await {
            Ok(channel) => return Ok(InterceptedService::new(channel, target.token.clone())),
            Err(err) if Instant::now() >= deadline => {
                return fail(format!("cannot connect to {addr}: {err}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// The id of member `i`: zero-padded, so id order is numeric order.
pub fn member_id(i: u64) -> String {
    format!("m{i:08}")
}

/// One `grpc.health.v1.Health/Check` of the whole server; fails unless it
/// answers SERVING.
pub async fn health_check(client: &mut HealthClient<AuthedChannel>) -> Result<()> {
    let response = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?
        .into_inner();
    if response.status != ServingStatus::Serving as i32 {
        return fail(format!("health check answered {}", response.status));
    }
    Ok(())
}

/// CreateOrg with a chosen id; returns the job id (empty if none).
pub async fn create_org(
    orgs: &mut OrgServiceClient<AuthedChannel>,
    org_id: &str,
    allow_custom_sso: bool,
) -> Result<String> {
    let response = orgs
        .create_org(pb::CreateOrgRequest {
            org: Some(pb::Org {
                id: org_id.to_owned(),
                display_name: format!("bench {org_id}"),
                allow_custom_sso,
                ..pb::Org::default()
            }),
            request_id: String::new(),
        })
        .await?
        .into_inner();
    Ok(response.job_id)
}

/// The org's current `allow_custom_sso`.
pub async fn get_allow_custom_sso(
    orgs: &mut OrgServiceClient<AuthedChannel>,
    org_id: &str,
) -> Result<bool> {
    let response = orgs
        .get_org(pb::GetOrgRequest {
            org_id: org_id.to_owned(),
        })
        .await?
        .into_inner();
    match response.org {
        Some(org) => Ok(org.allow_custom_sso),
        None => fail(format!("GetOrg({org_id}) returned no org")),
    }
}

/// UpdateOrg changing only `allow_custom_sso`; returns the job id, which
/// must be there since the setting changes.
pub async fn set_allow_custom_sso(
    orgs: &mut OrgServiceClient<AuthedChannel>,
    org_id: &str,
    allow_custom_sso: bool,
) -> Result<String> {
    let response = orgs
        .update_org(pb::UpdateOrgRequest {
            org: Some(pb::Org {
                id: org_id.to_owned(),
                allow_custom_sso,
                ..pb::Org::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["allow_custom_sso".to_owned()],
            }),
            request_id: String::new(),
        })
        .await?
        .into_inner();
    if response.job_id.is_empty() {
        return fail(format!(
            "UpdateOrg({org_id}, allow_custom_sso={allow_custom_sso}) enqueued no job: \
             the setting did not change"
        ));
    }
    Ok(response.job_id)
}

/// Creates every org with custom SSO allowed, a few at a time, and waits
/// for each creation job to succeed.
pub async fn create_orgs(channel: &AuthedChannel, org_ids: &[String]) -> Result<()> {
    futures::stream::iter(org_ids.iter())
        .map(|org_id| {
            let channel = channel.clone();
            async move {
                let mut orgs = OrgServiceClient::new(channel.clone());
                let mut jobs = JobServiceClient::new(channel);
                let job_id = create_org(&mut orgs, org_id, true).await?;
                if job_id.is_empty() {
                    return fail(format!("CreateOrg({org_id}) enqueued no job"));
                }
                let timeline =
                    follow_job(&mut jobs, &job_id, crate::unlink::UNLINK_TIMEOUT).await?;
                ensure_succeeded(&timeline.job)
            }
        })
        .buffer_unordered(SEED_IN_FLIGHT)
        .try_collect::<()>()
        .await
}

/// Adds members `0..count` to the org, 1,000 per call, a few calls in
/// flight.
pub async fn add_members(channel: &AuthedChannel, org_id: &str, count: u64) -> Result<()> {
    let chunks = count.div_ceil(SEED_CHUNK);
    futures::stream::iter(0..chunks)
        .map(|chunk| {
            let mut orgs = OrgServiceClient::new(channel.clone());
            async move {
                let start = chunk * SEED_CHUNK;
                let end = (start + SEED_CHUNK).min(count);
                let members = (start..end)
                    .map(|i| {
                        let id = member_id(i);
                        pb::Member {
                            email: format!("{id}@bench.example"),
                            id,
                        }
                    })
                    .collect();
                let added = orgs
                    .add_members(pb::AddMembersRequest {
                        org_id: org_id.to_owned(),
                        members,
                    })
                    .await?
                    .into_inner()
                    .added;
                if u64::try_from(added).ok() != Some(end - start) {
                    return fail(format!(
                        "AddMembers({org_id}) added {added} of {}",
                        end - start
                    ));
                }
                Ok(())
            }
        })
        .buffer_unordered(SEED_IN_FLIGHT)
        .try_collect::<()>()
        .await
}

/// Links members `0..count` of the org in Auth, 1,000 ids per LinkSso call,
/// a few calls in flight. The org's policy must allow custom SSO.
pub async fn link_members(channel: &AuthedChannel, org_id: &str, count: u64) -> Result<()> {
    let chunks = count.div_ceil(SEED_CHUNK);
    futures::stream::iter(0..chunks)
        .map(|chunk| {
            let mut auth = AuthServiceClient::new(channel.clone());
            async move {
                let start = chunk * SEED_CHUNK;
                let end = (start + SEED_CHUNK).min(count);
                auth.link_sso(authpb::LinkSsoRequest {
                    org_id: org_id.to_owned(),
                    member_ids: (start..end).map(member_id).collect(),
                })
                .await?;
                Ok(())
            }
        })
        .buffer_unordered(SEED_IN_FLIGHT)
        .try_collect::<()>()
        .await
}

/// How many SSO connections Auth holds for the org (one ListSsoConnections
/// page walk would be slow; the count is the API's own).
pub async fn count_connections(channel: &AuthedChannel, org_id: &str) -> Result<u64> {
    let mut auth = AuthServiceClient::new(channel.clone());
    let mut total = 0_u64;
    let mut page_token = String::new();
    // Bounded: 2,000 pages of 1,000 cover the largest org benchmarked.
    for _ in 0..2_000 {
        let page = auth
            .list_sso_connections(authpb::ListSsoConnectionsRequest {
                org_id: org_id.to_owned(),
                page_size: 1000,
                page_token,
            })
            .await?
            .into_inner();
        total += page.connections.len() as u64;
        if page.next_page_token.is_empty() {
            return Ok(total);
        }
        page_token = page.next_page_token;
    }
    fail(format!("ListSsoConnections({org_id}) did not end"))
}

/// What a watcher saw of one job, and when.
#[derive(Debug, Clone)]
pub struct JobTimeline {
    /// The job's last (terminal) state.
    pub job: pb::Job,
    /// The state in the stream's first message.
    pub first_state: pb::JobState,
    /// When the first message with a state past QUEUED (RUNNING or
    /// terminal) arrived.
    pub started: Option<Instant>,
    /// When the first message with `processed_members > 0` arrived.
    pub first_progress: Option<Instant>,
    /// When the terminal message arrived.
    pub end: Instant,
    /// How many messages the stream carried.
    pub messages: u64,
}

/// Opens `WatchJob` and reads it to the terminal message, within `timeout`.
pub async fn follow_job(
    jobs: &mut JobServiceClient<AuthedChannel>,
    job_id: &str,
    timeout: Duration,
) -> Result<JobTimeline> {
    match tokio::time::timeout(timeout, follow_job_inner(jobs, job_id)).await {
        Ok(result) => result,
        Err(_) => fail(format!("job {job_id} did not end within {timeout:?}")),
    }
}

async fn follow_job_inner(
    jobs: &mut JobServiceClient<AuthedChannel>,
    job_id: &str,
) -> Result<JobTimeline> {
    let mut stream = jobs
        .watch_job(pb::WatchJobRequest {
            job_id: job_id.to_owned(),
            since_version: 0,
        })
        .await?
        .into_inner();
    let mut first: Option<pb::JobState> = None;
    let mut started = None;
    let mut first_progress = None;
    let mut messages = 0_u64;
    // Bounded by the caller's timeout; the server ends the stream after the
    // terminal state.
    while let Some(message) = stream.message().await? {
        let now = Instant::now();
        messages += 1;
        let Some(job) = message.job else {
            return fail(format!("WatchJob({job_id}) sent a message without a job"));
        };
        let state = job.state();
        if first.is_none() {
            first = Some(state);
        }
        if started.is_none() && !matches!(state, pb::JobState::Queued | pb::JobState::Unspecified) {
            started = Some(now);
        }
        if first_progress.is_none() && job.processed_members > 0 {
            first_progress = Some(now);
        }
        if is_terminal(state) {
            let Some(first_state) = first else {
                return fail("unreachable: no first message");
            };
            return Ok(JobTimeline {
                job,
                first_state,
                started,
                first_progress,
                end: now,
                messages,
            });
        }
    }
    fail(format!("WatchJob({job_id}) ended before a terminal state"))
}

/// Whether a job in this state is finished.
pub fn is_terminal(state: pb::JobState) -> bool {
    matches!(
        state,
        pb::JobState::Succeeded | pb::JobState::Failed | pb::JobState::Cancelled
    )
}

/// Fails unless the job succeeded.
pub fn ensure_succeeded(job: &pb::Job) -> Result<()> {
    if job.state() == pb::JobState::Succeeded {
        Ok(())
    } else {
        fail(format!(
            "job {} of org {} ended {} ({})",
            job.id,
            job.org_id,
            job.state().as_str_name(),
            job.last_error
        ))
    }
}

/// Flips the org's setting, follows the job to its end and checks it
/// succeeded.
pub async fn set_and_wait(
    channel: &AuthedChannel,
    org_id: &str,
    allow_custom_sso: bool,
    timeout: Duration,
) -> Result<JobTimeline> {
    let mut orgs = OrgServiceClient::new(channel.clone());
    let mut jobs = JobServiceClient::new(channel.clone());
    let job_id = set_allow_custom_sso(&mut orgs, org_id, allow_custom_sso).await?;
    let timeline = follow_job(&mut jobs, &job_id, timeout).await?;
    ensure_succeeded(&timeline.job)?;
    Ok(timeline)
}
