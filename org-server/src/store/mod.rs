//! Durable state of org-server behind one trait, so the domain and the job
//! runner never see SQL: [`SqliteStore`] (one file, one replica) and
//! [`PgStore`] (one database shared by several replicas), which pass the
//! same tests. [`job_changes`] hears, through PostgreSQL, the job changes
//! other replicas make.
//!
//! Each method is one transaction. Writes that change a job return the job
//! as committed, so callers can push exactly that state to watchers. Job
//! writes made by a worker are fenced by its [`Lease`]: once another worker
//! has claimed the job, they fail with `Error::LeaseLost`.

mod group_commit;
pub mod job_changes;
pub(crate) mod postgres;
mod rows;
mod sqlite;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use orgauth_runtime::database::{DatabaseUrl, open_postgres};
use uuid::Uuid;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

use crate::domain::job::{Checkpoint, Job, JobFilter, MemberFailure};
use crate::domain::org::{Member, NewOrg, Org, OrgUpdate};
use crate::error::{Error, Result};

/// Opens the store `url` names, refusing a schema newer than the binary
/// and applying pending migrations.
pub async fn open(url: &DatabaseUrl, options: &StoreOptions) -> Result<Arc<dyn Store>> {
    match url {
        DatabaseUrl::Sqlite(path) => {
            let path = path.to_str().ok_or_else(|| {
                Error::invalid("--database", "the SQLite path must be valid UTF-8")
            })?;
            Ok(Arc::new(SqliteStore::open(path, options).await?))
        }
        DatabaseUrl::Postgres(url) => {
            let pool = open_postgres(url, &postgres::MIGRATOR, options).await?;
            Ok(Arc::new(PgStore::from_pool(pool).await?))
        }
    }
}

/// Pool sizing and bounds, shared with auth-server.
pub type StoreOptions = orgauth_runtime::database::DbOptions;

/// A worker's claim on a running job. `epoch` increases with every claim,
/// which is what fences out a worker whose lease expired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub job_id: Uuid,
    pub epoch: i64,
}

/// A job handed to a worker by [`Store::claim_job`].
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub job: Job,
    /// The last member id already processed; `None` starts from the first.
    pub cursor: Option<String>,
    pub lease: Lease,
    /// Set when cancellation was requested before this claim.
    pub cancel_reason: Option<String>,
}

/// What a committed org write did.
#[derive(Debug, Clone)]
pub struct OrgWrite {
    pub org: Org,
    /// The job enqueued with the write (or, for a replayed request, the job
    /// the first request enqueued).
    pub job_id: Option<Uuid>,
    /// The job as inserted; `None` when nothing was enqueued or replayed.
    pub new_job: Option<Job>,
    /// Queued jobs of the org that the new job superseded (now CANCELLED).
    pub superseded: Vec<Job>,
    /// Running jobs of the org that were asked to stop at their next batch.
    pub stop_requested: Vec<Uuid>,
}

impl OrgWrite {
    /// A write of `org` that enqueued nothing.
    pub fn new(org: Org) -> Self {
        OrgWrite {
            org,
            job_id: None,
            new_job: None,
            superseded: Vec::new(),
            stop_requested: Vec::new(),
        }
    }
}

/// The result of asking a job to stop.
#[derive(Debug, Clone)]
pub enum CancelOutcome {
    /// It was queued and is now CANCELLED.
    Cancelled(Job),
    /// It is running; its worker stops at the next batch boundary.
    Requested(Job),
    /// It had already been cancelled; nothing changed.
    AlreadyCancelled(Job),
}

/// What a lease renewal found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseStatus {
    /// Still ours; `cancel_reason` is set when someone asked the job to stop.
    Held { cancel_reason: Option<String> },
    /// Another worker claimed the job, or it ended.
    Lost,
}

/// The job after a checkpoint, and whether it has been asked to stop.
#[derive(Debug, Clone)]
pub struct Progress {
    pub job: Job,
    pub cancel_reason: Option<String>,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The key page tokens are sealed with: generated at random the first
    /// time and shared through the database by every replica after that.
    async fn page_token_key(&self) -> Result<Vec<u8>>;

    /// Inserts the org, and its job when it needs one, in one transaction.
    /// A repeated `request_id` returns the first result and writes nothing.
    async fn create_org(&self, new: &NewOrg) -> Result<OrgWrite>;

    async fn get_org(&self, org_id: &str) -> Result<Option<Org>>;

    /// Orgs in id order, strictly after `after`; with `within`, only those.
    async fn list_orgs(
        &self,
        within: Option<&BTreeSet<String>>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Org>>;

    /// Applies [`crate::domain::org::plan_update`] to the current org and
    /// writes the new row and its job in one transaction, which concurrent
    /// updates may share (each still sees the ones before it). O(1) in the
    /// number of members. A repeated `request_id` returns the first result.
    async fn update_org(&self, update: &OrgUpdate) -> Result<OrgWrite>;

    /// Adds members that are not yet in the org; returns how many were new.
    async fn add_members(&self, org_id: &str, members: &[Member]) -> Result<u64>;

    /// Removes the members that exist; returns how many were removed.
    async fn remove_members(&self, org_id: &str, member_ids: &[String]) -> Result<u64>;

    /// Members in id order, strictly after `after`. NOT_FOUND for an unknown org.
    async fn list_members(
        &self,
        org_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Member>>;

    /// The next `limit` member ids after `after`: the runner's keyset scan.
    async fn member_ids_after(
        &self,
        org_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>>;

    async fn get_job(&self, job_id: Uuid) -> Result<Option<Job>>;

    /// How many jobs are in each state (states without jobs may be left
    /// out), and when the oldest queued job was created: the queue metrics.
    async fn job_counts(&self) -> Result<crate::metrics::JobCounts>;

    /// Jobs newest first, each with its sequence number (the page key),
    /// strictly older than `before_seq`.
    async fn list_jobs(
        &self,
        filter: &JobFilter,
        before_seq: Option<i64>,
        limit: usize,
    ) -> Result<Vec<(i64, Job)>>;

    /// A job's failures in member id order, strictly after `after`.
    /// NOT_FOUND for an unknown job.
    async fn list_job_failures(
        &self,
        job_id: Uuid,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<MemberFailure>>;

    /// Cancels a queued job, or asks a running one to stop.
    /// FAILED_PRECONDITION for a job that succeeded or failed.
    async fn cancel_job(&self, job_id: Uuid, reason: &str) -> Result<CancelOutcome>;

    /// Claims the oldest runnable job: queued, or running under an expired
    /// lease, and the oldest unfinished job of its org (jobs of one org run
    /// one at a time, in order).
    async fn claim_job(&self, owner: &str, lease_for: Duration) -> Result<Option<ClaimedJob>>;

    /// Extends a lease. Reports `Lost` rather than failing when it is gone.
    async fn renew_lease(&self, lease: &Lease, lease_for: Duration) -> Result<LeaseStatus>;

    /// Persists one batch's progress and the cursor after it, atomically.
    async fn checkpoint(&self, lease: &Lease, checkpoint: &Checkpoint) -> Result<Progress>;

    /// Records a retried error: bumps `attempt`, sets `last_error`.
    async fn record_retry(&self, lease: &Lease, error: &str) -> Result<Job>;

    /// Moves a job to a terminal state and drops its lease.
    async fn finish_job(
        &self,
        lease: &Lease,
        state: crate::domain::job::JobState,
        last_error: &str,
    ) -> Result<Job>;

    /// Deletes jobs that ended before `ended_before` (with their failures),
    /// and idempotency keys created before it. Returns the jobs deleted.
    async fn prune_finished_jobs(&self, ended_before: crate::domain::Micros) -> Result<u64>;

    /// Gives a running job back (on shutdown) so any worker may resume it at
    /// once instead of waiting for the lease to expire.
    async fn release_lease(&self, lease: &Lease) -> Result<()>;
}
