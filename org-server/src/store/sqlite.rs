//! The SQLite backend: one file, no setup, for a single org-server.
//!
//! Durability is not traded for speed: WAL with `synchronous=FULL`, so an
//! acknowledged UpdateOrg (and its job) survives power loss. Read-then-write
//! transactions start with `BEGIN IMMEDIATE`, taking the write lock up front
//! so two writers never deadlock upgrading a read lock. Batches travel as one
//! JSON array parameter (`json_each`), so a 1,000-member write is a single
//! statement.
//!
//! Every write goes through one connection. UpdateOrgs are group-committed
//! ([`super::group_commit`]): concurrent ones share a transaction, written
//! set-based by [`org_writes`], and so share its fsync.

use std::collections::BTreeSet;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};
use tracing::{Instrument, info, info_span};
use uuid::Uuid;

use super::group_commit::GroupCommit;
use super::rows::{
    CREATE_ORG, FirstResponse, JobRow, OrgRow, created_org, lease_lost, merged_sample, micros,
    org_taken,
};
use super::{
    CancelOutcome, ClaimedJob, Lease, LeaseStatus, OrgWrite, Progress, Store, StoreOptions,
};
use crate::domain::job::{Checkpoint, Job, JobFilter, JobState, MemberFailure};
use crate::domain::org::{Member, NewOrg, Org, OrgUpdate};
use crate::domain::{Micros, now_micros};
use crate::error::{Error, Result};
use crate::metrics::JobCounts;

/// The column list every job query selects, in `JobRow` order.
macro_rules! job_columns {
    () => {
        "id, org_id, kind, state, total_members, processed_members, unlinked_members, \
         failed_members, attempt, last_error, failure_sample, version, create_time, \
         update_time, start_time, end_time, cursor, cancel_reason, lease_epoch, seq"
    };
}

/// The column list every org query selects, in `OrgRow` order.
macro_rules! org_columns {
    () => {
        "id, display_name, allow_custom_sso, revision, member_count, create_time, update_time"
    };
}

pub(super) mod org_writes;

/// Most UpdateOrgs one group commit writes together; beyond this they wait
/// for the next transaction.
const MAX_UPDATE_BATCH: usize = 256;

pub struct SqliteStore {
    /// Connections for reads; WAL lets them run beside the writer.
    pool: SqlitePool,
    /// The one connection every write goes through. SQLite allows one
    /// writer at a time; writers of this process queue here, first come
    /// first served, instead of colliding on the database lock, where
    /// SQLite's busy handler makes them sleep (1, 2, 5, 10 … ms) and retry.
    writer: SqlitePool,
    /// UpdateOrgs, group-committed through `writer`.
    org_updates: GroupCommit<OrgUpdate, OrgWrite>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and migrates it.
    pub async fn open(path: &str, options: &StoreOptions) -> Result<Self> {
        if let Some(parent) = Path::new(path).parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|err| {
                Error::Internal(format!("cannot create database directory: {err}"))
            })?;
        }
        let connect = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            // A connection to a local file cannot go stale; the default
            // ping on every acquire is a wasted round trip to its thread.
            .test_before_acquire(false)
            .connect_with(connect.clone())
            .await?;
        {
            static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
            let mut conn = writer.acquire().await?;
            orgauth_runtime::schema::migrate_sqlite(&MIGRATOR, &mut conn).await?;
        }
        let pool = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(options.max_connections.max(1))
            .connect_with(connect)
            .await?;
        info!(path, "opened sqlite database");
        let batch_writer = writer.clone();
        let org_updates = GroupCommit::spawn(MAX_UPDATE_BATCH, move |updates: Vec<OrgUpdate>| {
            let writer = batch_writer.clone();
            let span = info_span!("commit_org_updates", batch = updates.len());
            async move { org_writes::update_orgs(&writer, updates).await }.instrument(span)
        });
        Ok(SqliteStore {
            pool,
            writer,
            org_updates,
        })
    }

    /// Starts a write transaction. Read the clock only after this returns:
    /// a time taken while waiting for the lock could precede writes that
    /// commit ahead of us (a job's `start_time` before the `end_time` of
    /// the org's previous job, say).
    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }
}

async fn org_exists(tx: &mut Transaction<'static, Sqlite>, org_id: &str) -> Result<()> {
    let found: Option<(i64,)> = sqlx::query_as("SELECT 1 FROM orgs WHERE id = ?1")
        .bind(org_id)
        .fetch_optional(&mut **tx)
        .await?;
    found
        .map(|_| ())
        .ok_or_else(|| Error::org_not_found(org_id))
}

/// Keeps `orgs.member_count` in step with the members table, in the same
/// transaction as the membership change, so jobs and GetOrg never count rows.
async fn adjust_member_count(
    tx: &mut Transaction<'static, Sqlite>,
    org_id: &str,
    delta: i64,
) -> Result<()> {
    sqlx::query("UPDATE orgs SET member_count = member_count + ?2 WHERE id = ?1")
        .bind(org_id)
        .bind(delta)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// A JSON array of ids, for `json_each` in set-based statements.
fn json_ids<I>(ids: I) -> Result<String>
where
    I: IntoIterator,
    I::Item: serde::Serialize,
{
    serde_json::to_string(&ids.into_iter().collect::<Vec<_>>())
        .map_err(|err| Error::Internal(format!("cannot encode ids: {err}")))
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_org(&self, new: &NewOrg) -> Result<OrgWrite> {
        let mut tx = self.begin_write().await?;
        let now = now_micros();
        let fingerprint = new.fingerprint();
        if let Some(request_id) = &new.request_id {
            let mut stored =
                org_writes::stored_responses(&mut tx, CREATE_ORG, &[request_id.as_str()]).await?;
            if let Some(first) = stored.remove(request_id.as_str()) {
                return first.replay(CREATE_ORG, request_id, &fingerprint);
            }
        }
        let id = new.id.clone().unwrap_or_else(|| Uuid::now_v7().to_string());
        let inserted = sqlx::query(
            "INSERT INTO orgs (id, display_name, allow_custom_sso, revision, create_time, update_time) \
             VALUES (?1, ?2, ?3, 1, ?4, ?4) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&id)
        .bind(&new.display_name)
        .bind(new.allow_custom_sso)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(org_taken(&id));
        }
        let write = created_org(&mut *tx, new, &id, now).await?;
        if let Some(request_id) = &new.request_id {
            let first = FirstResponse {
                request_id,
                fingerprint,
                write: &write,
            };
            org_writes::remember(&mut tx, CREATE_ORG, &[first], now).await?;
        }
        tx.commit().await?;
        Ok(write)
    }

    async fn get_org(&self, org_id: &str) -> Result<Option<Org>> {
        let row: Option<OrgRow> = sqlx::query_as(concat!(
            "SELECT ",
            org_columns!(),
            " FROM orgs WHERE id = ?1"
        ))
        .bind(org_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(Org::from))
    }

    async fn page_token_key(&self) -> Result<Vec<u8>> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO server_secrets (name, value) VALUES ('page_token_key', randomblob(32)) \
             ON CONFLICT (name) DO NOTHING",
        )
        .execute(&mut *tx)
        .await?;
        let (key,): (Vec<u8>,) =
            sqlx::query_as("SELECT value FROM server_secrets WHERE name = 'page_token_key'")
                .fetch_one(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(key)
    }

    async fn list_orgs(
        &self,
        within: Option<&BTreeSet<String>>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Org>> {
        let rows: Vec<OrgRow> = sqlx::query_as(concat!(
            "SELECT ",
            org_columns!(),
            " FROM orgs WHERE id > ?1 \
             AND (?3 IS NULL OR id IN (SELECT value FROM json_each(?3))) \
             ORDER BY id LIMIT ?2"
        ))
        .bind(after.unwrap_or(""))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(within.map(json_ids).transpose()?)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(Org::from).collect())
    }

    async fn update_org(&self, update: &OrgUpdate) -> Result<OrgWrite> {
        self.org_updates.submit(update.clone()).await
    }

    async fn add_members(&self, org_id: &str, members: &[Member]) -> Result<u64> {
        let batch = serde_json::Value::Array(
            members
                .iter()
                .map(|m| serde_json::json!([m.id, m.email]))
                .collect(),
        )
        .to_string();
        let mut tx = self.begin_write().await?;
        org_exists(&mut tx, org_id).await?;
        // `WHERE true` resolves SQLite's parsing ambiguity between an upsert
        // clause and a join constraint after INSERT … SELECT.
        let added = sqlx::query(
            "INSERT INTO members (org_id, member_id, email, create_time) \
             SELECT ?1, value ->> 0, value ->> 1, ?3 FROM json_each(?2) WHERE true \
             ON CONFLICT (org_id, member_id) DO NOTHING",
        )
        .bind(org_id)
        .bind(batch)
        .bind(now_micros())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        adjust_member_count(&mut tx, org_id, i64::try_from(added).unwrap_or(i64::MAX)).await?;
        tx.commit().await?;
        Ok(added)
    }

    async fn remove_members(&self, org_id: &str, member_ids: &[String]) -> Result<u64> {
        let batch = json_ids(member_ids)?;
        let mut tx = self.begin_write().await?;
        org_exists(&mut tx, org_id).await?;
        let removed = sqlx::query(
            "DELETE FROM members WHERE org_id = ?1 AND member_id IN (SELECT value FROM json_each(?2))",
        )
        .bind(org_id)
        .bind(batch)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        adjust_member_count(&mut tx, org_id, -i64::try_from(removed).unwrap_or(i64::MAX)).await?;
        tx.commit().await?;
        Ok(removed)
    }

    async fn list_members(
        &self,
        org_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Member>> {
        let mut tx = self.pool.begin().await?;
        org_exists(&mut tx, org_id).await?;
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT member_id, email FROM members WHERE org_id = ?1 AND member_id > ?2 \
             ORDER BY member_id LIMIT ?3",
        )
        .bind(org_id)
        .bind(after.unwrap_or(""))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows
            .into_iter()
            .map(|(id, email)| Member { id, email })
            .collect())
    }

    async fn member_ids_after(
        &self,
        org_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT member_id FROM members WHERE org_id = ?1 AND member_id > ?2 \
             ORDER BY member_id LIMIT ?3",
        )
        .bind(org_id)
        .bind(after.unwrap_or(""))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    async fn get_job(&self, job_id: Uuid) -> Result<Option<Job>> {
        let row: Option<JobRow> = sqlx::query_as(concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE id = ?1"
        ))
        .bind(job_id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.map(JobRow::into_job).transpose()
    }

    async fn job_counts(&self) -> Result<JobCounts> {
        // Both read an index (jobs_by_state; the QUEUED rows of jobs_active).
        let by_state: Vec<(i64, i64)> =
            sqlx::query_as("SELECT state, COUNT(*) FROM jobs GROUP BY state")
                .fetch_all(&self.pool)
                .await?;
        let oldest_queued: Option<i64> =
            sqlx::query_scalar("SELECT MIN(create_time) FROM jobs WHERE state = 1")
                .fetch_one(&self.pool)
                .await?;
        Ok(JobCounts::from_rows(by_state, oldest_queued))
    }

    async fn list_jobs(
        &self,
        filter: &JobFilter,
        before_seq: Option<i64>,
        limit: usize,
    ) -> Result<Vec<(i64, Job)>> {
        let rows: Vec<JobRow> = sqlx::query_as(concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE seq < ?1 AND (?2 IS NULL OR org_id = ?2) \
             AND (?3 IS NULL OR state = ?3) \
             AND (?5 IS NULL OR org_id IN (SELECT value FROM json_each(?5))) \
             ORDER BY seq DESC LIMIT ?4"
        ))
        .bind(before_seq.unwrap_or(i64::MAX))
        .bind(filter.org_id.as_deref())
        .bind(filter.state.map(|s| s as i64))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(filter.within.as_ref().map(json_ids).transpose()?)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                let seq = row.seq;
                row.into_job().map(|job| (seq, job))
            })
            .collect()
    }

    async fn list_job_failures(
        &self,
        job_id: Uuid,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<MemberFailure>> {
        let mut tx = self.pool.begin().await?;
        let exists: Option<(i64,)> = sqlx::query_as("SELECT 1 FROM jobs WHERE id = ?1")
            .bind(job_id.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(Error::job_not_found(job_id));
        }
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT member_id, code, message FROM job_failures \
             WHERE job_id = ?1 AND member_id > ?2 ORDER BY member_id LIMIT ?3",
        )
        .bind(job_id.to_string())
        .bind(after.unwrap_or(""))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows
            .into_iter()
            .map(|(member_id, code, message)| MemberFailure {
                member_id,
                code,
                message,
            })
            .collect())
    }

    async fn cancel_job(&self, job_id: Uuid, reason: &str) -> Result<CancelOutcome> {
        let mut tx = self.begin_write().await?;
        let now = now_micros();
        let row: JobRow = sqlx::query_as(concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE id = ?1"
        ))
        .bind(job_id.to_string())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| Error::job_not_found(job_id))?;
        let job = row.into_job()?;
        let outcome = match job.state {
            JobState::Queued => {
                let row: JobRow = sqlx::query_as(concat!(
                    "UPDATE jobs SET state = 5, last_error = ?2, end_time = ?3, update_time = ?3, \
                     version = version + 1 WHERE id = ?1 RETURNING ",
                    job_columns!()
                ))
                .bind(job_id.to_string())
                .bind(reason)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
                CancelOutcome::Cancelled(row.into_job()?)
            }
            JobState::Running => {
                sqlx::query(
                    "UPDATE jobs SET cancel_reason = COALESCE(cancel_reason, ?2) WHERE id = ?1",
                )
                .bind(job_id.to_string())
                .bind(reason)
                .execute(&mut *tx)
                .await?;
                CancelOutcome::Requested(job)
            }
            JobState::Cancelled => CancelOutcome::AlreadyCancelled(job),
            JobState::Succeeded | JobState::Failed => {
                return Err(Error::FailedPrecondition(format!(
                    "job {job_id} already ended {}; only queued or running jobs can be cancelled",
                    job.state.name()
                )));
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    async fn claim_job(&self, owner: &str, lease_for: Duration) -> Result<Option<ClaimedJob>> {
        let mut tx = self.begin_write().await?;
        let now = now_micros();
        // The head of each org's line of unfinished jobs is the only one of
        // that org that may run; a running head is claimable only once its
        // lease has expired (its worker is presumed dead).
        let candidate: Option<(String,)> = sqlx::query_as(
            "SELECT j.id FROM jobs j \
             WHERE j.state IN (1, 2) AND (j.state = 1 OR j.lease_expires < ?1) \
             AND NOT EXISTS (SELECT 1 FROM jobs o WHERE o.org_id = j.org_id \
                             AND o.state IN (1, 2) AND o.seq < j.seq) \
             ORDER BY j.seq LIMIT 1",
        )
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((job_id,)) = candidate else {
            return Ok(None);
        };
        let row: JobRow = sqlx::query_as(concat!(
            "UPDATE jobs SET state = 2, lease_owner = ?2, lease_epoch = lease_epoch + 1, \
             lease_expires = ?3, attempt = attempt + 1, start_time = COALESCE(start_time, ?4), \
             total_members = CASE kind WHEN 1 THEN MAX(processed_members, \
                 (SELECT member_count FROM orgs WHERE orgs.id = jobs.org_id)) ELSE 0 END, \
             version = version + 1, update_time = ?4 \
             WHERE id = ?1 RETURNING ",
            job_columns!()
        ))
        .bind(&job_id)
        .bind(owner)
        .bind(now.saturating_add(micros(lease_for)))
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        row.into_claimed().map(Some)
    }

    async fn renew_lease(&self, lease: &Lease, lease_for: Duration) -> Result<LeaseStatus> {
        let held: Option<(Option<String>,)> = sqlx::query_as(
            "UPDATE jobs SET lease_expires = ?3 \
             WHERE id = ?1 AND lease_epoch = ?2 AND state = 2 RETURNING cancel_reason",
        )
        .bind(lease.job_id.to_string())
        .bind(lease.epoch)
        .bind(now_micros().saturating_add(micros(lease_for)))
        .fetch_optional(&self.writer)
        .await?;
        Ok(match held {
            Some((cancel_reason,)) => LeaseStatus::Held { cancel_reason },
            None => LeaseStatus::Lost,
        })
    }

    async fn checkpoint(&self, lease: &Lease, checkpoint: &Checkpoint) -> Result<Progress> {
        let job_id = lease.job_id.to_string();
        let mut tx = self.begin_write().await?;
        let now = now_micros();
        // Failures are keyed by member, so a batch replayed after a crash
        // neither duplicates rows nor double-counts failed_members.
        let mut new_failures = 0_i64;
        let mut sample_update: Option<String> = None;
        if !checkpoint.failures.is_empty() {
            let batch = serde_json::Value::Array(
                checkpoint
                    .failures
                    .iter()
                    .map(|f| serde_json::json!([f.member_id, f.code, f.message]))
                    .collect(),
            )
            .to_string();
            let inserted = sqlx::query(
                "INSERT INTO job_failures (job_id, member_id, code, message) \
                 SELECT ?1, value ->> 0, value ->> 1, value ->> 2 FROM json_each(?2) WHERE true \
                 ON CONFLICT (job_id, member_id) DO NOTHING",
            )
            .bind(&job_id)
            .bind(batch)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            new_failures = i64::try_from(inserted).unwrap_or(i64::MAX);
            let (sample,): (String,) =
                sqlx::query_as("SELECT failure_sample FROM jobs WHERE id = ?1")
                    .bind(&job_id)
                    .fetch_one(&mut *tx)
                    .await?;
            sample_update = merged_sample(&sample, &checkpoint.failures);
        }
        let row: Option<JobRow> = sqlx::query_as(concat!(
            "UPDATE jobs SET processed_members = processed_members + ?3, \
             unlinked_members = unlinked_members + ?4, failed_members = failed_members + ?5, \
             failure_sample = COALESCE(?6, failure_sample), cursor = ?7, \
             total_members = MAX(total_members, processed_members + ?3), \
             version = version + 1, update_time = ?8 \
             WHERE id = ?1 AND lease_epoch = ?2 AND state = 2 RETURNING ",
            job_columns!()
        ))
        .bind(&job_id)
        .bind(lease.epoch)
        .bind(checkpoint.processed)
        .bind(checkpoint.unlinked)
        .bind(new_failures)
        .bind(sample_update)
        .bind(&checkpoint.cursor)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Err(lease_lost(lease));
        };
        tx.commit().await?;
        row.into_progress()
    }

    async fn record_retry(&self, lease: &Lease, error: &str) -> Result<Job> {
        let row: Option<JobRow> = sqlx::query_as(concat!(
            "UPDATE jobs SET attempt = attempt + 1, last_error = ?3, version = version + 1, \
             update_time = ?4 WHERE id = ?1 AND lease_epoch = ?2 AND state = 2 RETURNING ",
            job_columns!()
        ))
        .bind(lease.job_id.to_string())
        .bind(lease.epoch)
        .bind(error)
        .bind(now_micros())
        .fetch_optional(&self.writer)
        .await?;
        row.ok_or_else(|| lease_lost(lease))?.into_job()
    }

    async fn finish_job(&self, lease: &Lease, state: JobState, last_error: &str) -> Result<Job> {
        debug_assert!(state.is_terminal());
        let row: Option<JobRow> = sqlx::query_as(concat!(
            "UPDATE jobs SET state = ?3, last_error = CASE WHEN ?4 = '' THEN last_error ELSE ?4 END, \
             end_time = ?5, update_time = ?5, version = version + 1, lease_owner = NULL, \
             lease_expires = 0 WHERE id = ?1 AND lease_epoch = ?2 AND state = 2 RETURNING ",
            job_columns!()
        ))
        .bind(lease.job_id.to_string())
        .bind(lease.epoch)
        .bind(state as i64)
        .bind(last_error)
        .bind(now_micros())
        .fetch_optional(&self.writer)
        .await?;
        row.ok_or_else(|| lease_lost(lease))?.into_job()
    }

    async fn prune_finished_jobs(&self, ended_before: Micros) -> Result<u64> {
        // In bounded transactions, so pruning a large backlog never holds
        // the write lock long enough to stall UpdateOrg.
        const CHUNK: i64 = 1000;
        let mut pruned = 0;
        loop {
            let mut tx = self.begin_write().await?;
            let ids: Vec<(String,)> = sqlx::query_as(
                "DELETE FROM jobs WHERE seq IN (SELECT seq FROM jobs \
                 WHERE state IN (3, 4, 5) AND end_time < ?1 LIMIT ?2) RETURNING id",
            )
            .bind(ended_before)
            .bind(CHUNK)
            .fetch_all(&mut *tx)
            .await?;
            let ids_json = json_ids(ids.iter().map(|(id,)| id))?;
            sqlx::query(
                "DELETE FROM job_failures WHERE job_id IN (SELECT value FROM json_each(?1))",
            )
            .bind(ids_json)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            pruned += ids.len() as u64;
            if (ids.len() as i64) < CHUNK {
                break;
            }
        }
        sqlx::query("DELETE FROM idempotency_keys WHERE create_time < ?1")
            .bind(ended_before)
            .execute(&self.writer)
            .await?;
        Ok(pruned)
    }

    async fn release_lease(&self, lease: &Lease) -> Result<()> {
        sqlx::query(
            "UPDATE jobs SET lease_owner = NULL, lease_expires = 0 \
             WHERE id = ?1 AND lease_epoch = ?2 AND state = 2",
        )
        .bind(lease.job_id.to_string())
        .bind(lease.epoch)
        .execute(&self.writer)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database that a newer release migrated is refused at start, with
    /// a message saying so, instead of being served.
    #[tokio::test]
    async fn a_schema_newer_than_the_binary_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("org.db");
        let path = path.to_str().unwrap();
        let store = SqliteStore::open(path, &StoreOptions::default())
            .await
            .unwrap();
        drop(store);
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{path}"))
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (9999, 'from the future', 1, X'00', 0)",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;

        let err = SqliteStore::open(path, &StoreOptions::default())
            .await
            .err()
            .expect("a newer schema is refused");
        assert!(
            matches!(
                err,
                Error::SchemaTooNew {
                    version: 9999,
                    known: 2
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("upgrade the binary"), "{err}");
    }
}
