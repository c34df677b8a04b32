//! Measurement 4: unlink throughput, end to end and raw.
//!
//! End to end: members per second from the start of
//! `UpdateOrg(allow_custom_sso=false)` to the terminal `WatchJob` message,
//! with the job checked SUCCEEDED, every member counted as unlinked and Auth
//! left with no connection for the org.
//!
//! Raw: the rate at which Auth's own storage (`SqliteStore`, in this
//! process, no gRPC) deletes the same number of connections from a fresh
//! database, in the same batch size with the same number of deletes in
//! flight. That is the ceiling the end-to-end path can approach. The
//! Postgres column uses Auth's `PgStore` on a fresh database of the same
//! PostgreSQL server instead ([`raw_postgres`]).

use std::time::{Duration, Instant};

use auth_server::domain::{MemberId, OrgId, now_micros};
use auth_server::store::postgres::PgStore;
use auth_server::store::sqlite::SqliteStore;
use auth_server::store::{AuthStore, StoreOptions};
use futures::{StreamExt, TryStreamExt};
use orgauth_proto::org::v1::job_service_client::JobServiceClient;
use orgauth_proto::org::v1::org_service_client::OrgServiceClient;

use crate::error::{Result, fail};
use crate::latency::size_label;
use crate::report::{Goal, Row};
use crate::rpc;

/// How long one end-to-end unlink may take before the run fails.
pub const UNLINK_TIMEOUT: Duration = Duration::from_secs(300);

/// One end-to-end unlink.
#[derive(Debug, Clone, Copy)]
pub struct EndToEnd {
    /// Members unlinked.
    pub members: u64,
    /// UpdateOrg start to the terminal message.
    pub total: Duration,
    /// UpdateOrg's own latency.
    pub update: Duration,
    /// UpdateOrg start to the first message past QUEUED.
    pub started: Option<Duration>,
    /// UpdateOrg start to the first message with progress.
    pub first_progress: Option<Duration>,
    /// Messages the watcher received.
    pub messages: u64,
}

impl EndToEnd {
    /// Members per second.
    pub fn rate(&self) -> f64 {
        self.members as f64 / self.total.as_secs_f64()
    }

    /// The sub-step timings, for the note of a row.
    pub fn breakdown(&self) -> String {
        let ms = |d: Option<Duration>| {
            d.map_or_else(
                || "-".to_owned(),
                |d| format!("{:.0}", d.as_secs_f64() * 1e3),
            )
        };
        format!(
            "{:.2} s total; UpdateOrg {:.1} ms, RUNNING seen at {} ms, first progress at {} ms; {} watch messages",
            self.total.as_secs_f64(),
            self.update.as_secs_f64() * 1e3,
            ms(self.started),
            ms(self.first_progress),
            self.messages
        )
    }
}

/// The rows of measurement 4 for one org size: the end-to-end rate next to
/// the raw store's (`raw_name`, say "Auth store 500x4"), and for 1M members
/// or more the wall time.
pub fn rows(e2e: &EndToEnd, raw: &Raw, raw_name: &str) -> Vec<Row> {
    let label = size_label(e2e.members);
    let mut rows = vec![
        Row::new(
            4,
            format!("unlink {label} members, end to end"),
            e2e.rate(),
            "members/s",
            Some((raw.rate, raw_name)),
            Goal::RatioAtLeast(0.60),
        )
        .note(format!(
            "batch 500, parallelism 4; {}; raw {:.2} s",
            e2e.breakdown(),
            raw.elapsed.as_secs_f64()
        )),
    ];
    if e2e.members >= 1_000_000 {
        rows.push(
            Row::new(
                4,
                format!("unlink {label} members, wall time"),
                e2e.total.as_secs_f64(),
                "s",
                Some((raw.elapsed.as_secs_f64(), raw_name)),
                Goal::ValueBelow(6.0),
            )
            .note("UpdateOrg start to the terminal WatchJob message"),
        );
    }
    rows
}

/// Turns custom SSO off for `org_id` (whose `members` members are all
/// linked) and follows the job to its end.
pub async fn end_to_end(
    org: &rpc::Target,
    auth: &rpc::Target,
    org_id: &str,
    members: u64,
) -> Result<EndToEnd> {
    let channel = rpc::connect(org).await?;
    let mut orgs = OrgServiceClient::new(channel.clone());
    let mut jobs = JobServiceClient::new(channel);
    let start = Instant::now();
    let job_id = rpc::set_allow_custom_sso(&mut orgs, org_id, false).await?;
    let update = start.elapsed();
    let timeline = rpc::follow_job(&mut jobs, &job_id, UNLINK_TIMEOUT).await?;
    rpc::ensure_succeeded(&timeline.job)?;
    let job = &timeline.job;
    let expected = i64::try_from(members)?;
    if job.unlinked_members != expected || job.total_members != expected {
        return fail(format!(
            "job {job_id}: unlinked {} of total {}, expected {members}",
            job.unlinked_members, job.total_members
        ));
    }
    let auth_channel = rpc::connect(auth).await?;
    let left = rpc::count_connections(&auth_channel, org_id).await?;
    if left != 0 {
        return fail(format!(
            "{left} connections of {org_id} left after the unlink"
        ));
    }
    Ok(EndToEnd {
        members,
        total: timeline.end - start,
        update,
        started: timeline.started.map(|t| t - start),
        first_progress: timeline.first_progress.map(|t| t - start),
        messages: timeline.messages,
    })
}

/// Links all `members` of `org_id` again after an unlink: turns custom SSO
/// back on (and waits for that job), then LinkSso in 1,000-id calls.
pub async fn relink(
    org: &rpc::Target,
    auth: &rpc::Target,
    org_id: &str,
    members: u64,
) -> Result<()> {
    let channel = rpc::connect(org).await?;
    rpc::set_and_wait(&channel, org_id, true, UNLINK_TIMEOUT).await?;
    let auth_channel = rpc::connect(auth).await?;
    rpc::link_members(&auth_channel, org_id, members).await
}

/// One raw run: seconds to delete, and members per second.
#[derive(Debug, Clone, Copy)]
pub struct Raw {
    /// Time to delete every connection.
    pub elapsed: Duration,
    /// Members per second.
    pub rate: f64,
}

/// Seeds `members` connections into a fresh Auth database and deletes them
/// all through `AuthStore::unlink` in batches of `batch_size`, at most
/// `parallelism` in flight.
pub async fn raw(members: u64, batch_size: usize, parallelism: usize) -> Result<Raw> {
    let dir = tempfile::Builder::new()
        .prefix("orgauth-bench-raw-")
        .tempdir()?;
    let store = SqliteStore::open(&dir.path().join("auth.db")).await?;
    delete_all(&store, members, batch_size, parallelism).await
}

/// [`raw`] on Auth's PostgreSQL store (`auth_server::store::postgres`),
/// in the fresh, empty database `url`, with auth-server's default pool.
pub async fn raw_postgres(
    url: &str,
    members: u64,
    batch_size: usize,
    parallelism: usize,
) -> Result<Raw> {
    let store = PgStore::open(url, &StoreOptions::default()).await?;
    delete_all(&store, members, batch_size, parallelism).await
}

/// Seeds `members` connections into `store` (empty) and times deleting
/// them all; closes the store.
async fn delete_all(
    store: &impl AuthStore,
    members: u64,
    batch_size: usize,
    parallelism: usize,
) -> Result<Raw> {
    let org = OrgId::parse("raw".to_owned())?;
    let ids = (0..members)
        .map(|i| MemberId::new(rpc::member_id(i)))
        .collect::<std::result::Result<Vec<_>, String>>()?;
    let seeded = store.seed_connections(&org, &ids, now_micros()).await?;
    if seeded != members {
        return fail(format!("seeded {seeded} of {members} connections"));
    }
    let start = Instant::now();
    let deleted = futures::stream::iter(ids.chunks(batch_size.max(1)))
        .map(|chunk| store.unlink(&org, chunk))
        .buffer_unordered(parallelism.max(1))
        .try_fold(0_u64, |total, unlinked| async move {
            Ok(total + unlinked.len() as u64)
        })
        .await?;
    let elapsed = start.elapsed();
    store.close().await;
    if deleted != members {
        return fail(format!("raw unlink deleted {deleted} of {members}"));
    }
    Ok(Raw {
        elapsed,
        rate: members as f64 / elapsed.as_secs_f64(),
    })
}
