//! Measurement 3: the naive alternative the design replaces, an UpdateOrg
//! that unlinks every member inline before it returns.
//!
//! There is no such handler in org-server, so this module performs, in the
//! benchmark process, exactly what one would do, with org-server's own
//! production code:
//!
//! 1. write the org change: `Store::update_org` on org-server's
//!    `SqliteStore` (WAL, `synchronous=FULL`), here a separate database in
//!    a temporary directory, seeded through the same store API;
//! 2. `SetOrgSsoPolicy(allow_custom_sso=false)` on Auth, so that no new link
//!    can appear behind the scan (the design's "policy first");
//! 3. read the org's members in id order, 500 at a time, with the worker's
//!    own keyset query (`Store::member_ids_after`), and send each page to
//!    Auth's `BatchUnlinkSso` over gRPC through org-server's own client
//!    (`GrpcAuthGateway`), one call after the other, each outcome checked;
//! 4. return. The latency is the time of 1 to 3.
//!
//! Auth is the real auth-server process of the run, the org's members are
//! linked there through `LinkSso` before every sample, and every sample must
//! report each member UNLINKED.
//!
//! The baseline is fair, if anything generous to the naive design: it skips
//! the client's round trip to org-server (one loopback RPC, a fraction of a
//! millisecond), it writes no checkpoints and feeds no watchers, it uses the
//! cheapest member scan there is (ids only, the runner's index walk, not the
//! `ListMembers` query with e-mails), and the org write is the production
//! one, which also enqueues a job row in the same transaction: one row more
//! than a naive handler would write, next to 20 to 200 Auth round trips.
//! It is sequential, as a handler that simply loops over the pages would
//! be; calls in parallel would shorten it by at most the parallelism (the
//! sweep of measurement 4 shows what parallelism buys end to end).

use std::path::Path;
use std::time::{Duration, Instant};

use org_server::auth_client::{AuthConnection, GrpcAuthGateway};
use org_server::domain::job::UnlinkOutcome;
use org_server::domain::org::{Member, NewOrg, OrgUpdate};
use org_server::jobs::auth::AuthGateway;
use org_server::store::{SqliteStore, Store, StoreOptions};
use serde::Serialize;

use crate::error::{Result, fail};
use crate::rpc::{self, AuthedChannel};

/// Members per `BatchUnlinkSso` call: org-server's default batch size.
pub const PAGE: usize = 500;

/// Deadline of one call to Auth (org-server's default `--auth-timeout`).
const AUTH_TIMEOUT: Duration = Duration::from_secs(30);

/// The most pages one naive UpdateOrg may walk (bounds the loop: 2,000
/// pages of 500 cover a 1,000,000-member org).
const MAX_PAGES: usize = 2_000;

/// One org size of the naive baseline.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Members of the org.
    pub members: u64,
    /// Measured naive UpdateOrgs (the org is re-linked before each).
    pub samples: usize,
}

/// What the naive baseline measured for one org size.
#[derive(Debug, Clone, Serialize)]
pub struct NaivePoint {
    /// Members of the org.
    pub members: u64,
    /// Each naive UpdateOrg's latency, in milliseconds, in run order.
    pub samples_ms: Vec<f64>,
    /// The median of `samples_ms` (the mean of the middle two for an even
    /// count).
    pub median_ms: f64,
    /// The share of all samples' time spent waiting for `BatchUnlinkSso`.
    pub unlink_share: f64,
}

/// Runs the naive UpdateOrg for each plan, against the Auth server `auth`
/// (with its service token, as org-server calls it), with org-server's
/// store in a temporary directory.
pub async fn run(auth: &rpc::Target, plans: &[Plan]) -> Result<Vec<NaivePoint>> {
    let dir = tempfile::Builder::new()
        .prefix("orgauth-bench-naive-")
        .tempdir()?;
    let store = open_store(dir.path()).await?;
    let auth_channel = rpc::connect(auth).await?;
    let auth = GrpcAuthGateway::new(AuthConnection {
        endpoint: format!("http://{}", auth.addr),
        call_timeout: AUTH_TIMEOUT,
        token: auth.token.clone(),
        tls: None,
    })?;
    let mut points = Vec::new();
    for plan in plans {
        let org_id = format!(
            "naive-{}",
            crate::latency::size_label(plan.members).to_lowercase()
        );
        seed(&store, &auth, &auth_channel, &org_id, plan.members).await?;
        let mut samples = Vec::new();
        let mut unlink_time = Duration::ZERO;
        for sample in 0..plan.samples {
            if sample > 0 {
                relink(&store, &auth, &auth_channel, &org_id, plan.members).await?;
            }
            let timing = naive_update_org(&store, &auth, &org_id).await?;
            if timing.unlinked != plan.members {
                return fail(format!(
                    "naive UpdateOrg({org_id}) unlinked {} of {} members",
                    timing.unlinked, plan.members
                ));
            }
            samples.push(timing.total);
            unlink_time += timing.unlink;
        }
        let left = rpc::count_connections(&auth_channel, &org_id).await?;
        if left != 0 {
            return fail(format!(
                "{left} connections of {org_id} left after the naive UpdateOrg"
            ));
        }
        let total: Duration = samples.iter().sum();
        points.push(NaivePoint {
            members: plan.members,
            samples_ms: samples.iter().map(|d| d.as_secs_f64() * 1e3).collect(),
            median_ms: median_ms(&samples),
            unlink_share: if total.is_zero() {
                0.0
            } else {
                unlink_time.as_secs_f64() / total.as_secs_f64()
            },
        });
    }
    drop(store);
    Ok(points)
}

async fn open_store(dir: &Path) -> Result<SqliteStore> {
    let path = dir.join("org.db");
    let Some(path) = path.to_str() else {
        return fail(format!("{} is not UTF-8", path.display()));
    };
    Ok(SqliteStore::open(path, &StoreOptions::default()).await?)
}

/// Creates the org (custom SSO allowed) with `members` members in the
/// store, allows custom SSO for it in Auth and links every member there.
async fn seed(
    store: &SqliteStore,
    auth: &GrpcAuthGateway,
    auth_channel: &AuthedChannel,
    org_id: &str,
    members: u64,
) -> Result<()> {
    store
        .create_org(&NewOrg {
            id: Some(org_id.to_owned()),
            display_name: format!("bench {org_id}"),
            allow_custom_sso: true,
            request_id: None,
        })
        .await?;
    let mut start = 0;
    // Bounded: `members / SEED_CHUNK` rounds.
    while start < members {
        let end = (start + rpc::SEED_CHUNK).min(members);
        let chunk: Vec<Member> = (start..end)
            .map(|i| {
                let id = rpc::member_id(i);
                Member {
                    email: format!("{id}@bench.example"),
                    id,
                }
            })
            .collect();
        store.add_members(org_id, &chunk).await?;
        start = end;
    }
    auth.set_sso_policy(org_id, true).await?;
    rpc::link_members(auth_channel, org_id, members).await
}

/// Turns custom SSO back on (org row and Auth policy) and links every
/// member again, for the next sample. Not timed.
async fn relink(
    store: &SqliteStore,
    auth: &GrpcAuthGateway,
    auth_channel: &AuthedChannel,
    org_id: &str,
    members: u64,
) -> Result<()> {
    store.update_org(&allow_update(org_id, true)).await?;
    auth.set_sso_policy(org_id, true).await?;
    rpc::link_members(auth_channel, org_id, members).await
}

fn allow_update(org_id: &str, allow_custom_sso: bool) -> OrgUpdate {
    OrgUpdate {
        org_id: org_id.to_owned(),
        display_name: None,
        allow_custom_sso: Some(allow_custom_sso),
        expected_etag: None,
        request_id: None,
    }
}

/// One naive UpdateOrg's timings.
struct Timing {
    total: Duration,
    unlink: Duration,
    unlinked: u64,
}

/// The naive handler: org write, policy, then every page unlinked in turn.
async fn naive_update_org(
    store: &SqliteStore,
    auth: &GrpcAuthGateway,
    org_id: &str,
) -> Result<Timing> {
    let start = Instant::now();
    let write = store.update_org(&allow_update(org_id, false)).await?;
    if write.org.allow_custom_sso {
        return fail(format!("naive UpdateOrg({org_id}) did not turn SSO off"));
    }
    auth.set_sso_policy(org_id, false).await?;
    let mut after: Option<String> = None;
    let mut unlinked = 0_u64;
    let mut unlink = Duration::ZERO;
    for _ in 0..MAX_PAGES {
        let ids = store
            .member_ids_after(org_id, after.as_deref(), PAGE)
            .await?;
        let Some(last) = ids.last() else {
            break;
        };
        after = Some(last.clone());
        let call = Instant::now();
        let outcomes = auth.batch_unlink(org_id, &ids).await?;
        unlink += call.elapsed();
        for (id, outcome) in ids.iter().zip(&outcomes) {
            match outcome {
                UnlinkOutcome::Unlinked => unlinked += 1,
                other => {
                    return fail(format!(
                        "naive UpdateOrg({org_id}): member {id} answered {other:?}"
                    ));
                }
            }
        }
        if ids.len() < PAGE {
            break;
        }
    }
    Ok(Timing {
        total: start.elapsed(),
        unlink,
        unlinked,
    })
}

fn median_ms(samples: &[Duration]) -> f64 {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    match ms.len() {
        0 => 0.0,
        n if n % 2 == 1 => ms[n / 2],
        n => (ms[n / 2 - 1] + ms[n / 2]) / 2.0,
    }
}
