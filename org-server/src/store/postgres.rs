//! The PostgreSQL backend: one database shared by any number of org-server
//! replicas, with the behaviour of the SQLite backend (the same tests run
//! against both, `store::tests` and `jobs::tests`).
//!
//! Every method is one READ COMMITTED transaction (or one statement). Job
//! changes are announced to the other replicas by the schema's trigger
//! (`orgauth_announce_job_change`, on commit), so nothing here sends a
//! notification. Batches travel as array parameters (`unnest($1::text[])`,
//! `= ANY($1)`); ids are `COLLATE "C"`, so pages walk bytewise order, as on
//! SQLite. Job queries cast their columns to the types the shared
//! [`JobRow`] decodes (`id::text`, `kind::int8`, `failure_sample::text`, …).
//!
//! # Jobs of one org run one at a time, across replicas
//!
//! `claim_job` takes two statements in one transaction:
//!
//! 1. `SELECT j.seq … WHERE <head rule> ORDER BY j.seq LIMIT 1 FOR UPDATE OF
//!    j SKIP LOCKED` finds a candidate and locks it; a row another claimer
//!    holds is skipped, so one job is never handed to two workers.
//! 2. `UPDATE jobs … WHERE seq = $1 AND <the whole rule again> RETURNING …`
//!    takes the claim. It is a new statement, so under READ COMMITTED it
//!    reads a new snapshot, taken while we hold the candidate's lock.
//!
//! Step 1's `NOT EXISTS` (no unfinished job of the org with a smaller
//! `seq`) reads the statement's snapshot, taken before the lock: when the
//! candidate changed meanwhile, PostgreSQL re-checks the query against the
//! candidate's new version (EvalPlanQual) but the other rows the anti-join
//! looks at still come from the old snapshot. Rather than make safety rest
//! on that, step 2 evaluates the whole rule again after the lock. If it
//! finds the candidate no longer claimable, the transaction is rolled back
//! and the claim starts over (at most [`CLAIM_ATTEMPTS`] times, then the
//! worker's next poll or wake-up tries again).
//!
//! Why step 2 suffices, given two facts the other writes maintain:
//!
//! - **(a) Within an org, `seq` order is commit order.** Jobs are inserted
//!   by UpdateOrg only while it holds the org's row lock (below), and by
//!   CreateOrg in the transaction that creates the org, before any other
//!   transaction can see (or lock) it. So no job of an org with a smaller
//!   `seq` can commit after one with a larger `seq`.
//! - **(b) A job leaves states QUEUED/RUNNING once, for good,** and only
//!   under its row lock with the state re-checked: `finish_job` is fenced
//!   on `state = 2`, `cancel_job` reads the job `FOR UPDATE`, superseding
//!   re-evaluates its `WHERE state IN (1, 2)` on the latest row version.
//!
//! Say we claim J of org X while K of X is being claimed or run. If K's
//! `seq` is smaller, K committed before J was inserted (a), so our step-2
//! snapshot holds K, in QUEUED or RUNNING (b): the claim is refused. If K's
//! `seq` is larger, the same argument from K's side refuses K's claim for
//! as long as J is unfinished, and once J has finished, J cannot be claimed
//! (b). The only overlap left is the one leases allow on SQLite too: a
//! worker whose lease expired may still be working when another takes the
//! same job over; its writes are fenced by `lease_epoch`. No advisory lock
//! or org-row lock is needed on this path, so claims never wait on
//! UpdateOrg or on membership changes. Lease expiry compares `lease_expires`
//! with the claiming process's clock, as on SQLite: replicas need
//! synchronized clocks (skew shortens or lengthens leases by as much).
//!
//! # The org row is the lock for writes of one org
//!
//! - **UpdateOrg** is group-committed per replica ([`GroupCommit`]); a
//!   batch first locks all of its orgs with `SELECT … WHERE id = ANY($1)
//!   ORDER BY id FOR NO KEY UPDATE`, up front and in id order, so two
//!   batches (of one replica or two) never deadlock, however their rounds
//!   split. `NO KEY UPDATE` is the lock an `UPDATE` of non-key columns
//!   takes; unlike `FOR UPDATE`, it does not conflict with the `KEY SHARE`
//!   locks that inserting members takes through their foreign key. Rounds
//!   then read the rows, which nobody else can change until we commit.
//! - **Idempotency keys of UpdateOrg** are per org (`{org_id}/{request_id}`),
//!   so every transaction using a key holds that org's lock: the second of
//!   two replicas racing on one key waits for the first to commit, then
//!   reads its stored response and replays it. The final insert is still
//!   `ON CONFLICT DO NOTHING`, and a conflict there (impossible while the
//!   lock rule holds) fails the batch rather than answering differently.
//! - **CreateOrg** with a request id first *reserves* its key: `INSERT …
//!   ON CONFLICT DO NOTHING` of a placeholder, replaced by the response
//!   before commit. A concurrent CreateOrg with the same key waits on the
//!   unique index until the first commits, then inserts nothing, reads the
//!   first response back and replays it; if the first rolled back, the
//!   second proceeds. An org id that is taken answers ALREADY_EXISTS, as on
//!   SQLite.
//! - **AddMembers / RemoveMembers** lock the org row (`FOR NO KEY UPDATE`)
//!   before touching members: membership changes of one org are serialized,
//!   so overlapping batches cannot deadlock on the members' primary key,
//!   and `member_count` moves with the rows.
//!
//! Lock order is org row, then its jobs; claims and the fenced writes lock
//! one job row only. No transaction waits for an org lock while holding a
//! job lock, so there are no deadlock cycles.
//!
//! # The other statements
//!
//! - Fenced writes (`renew_lease`, `record_retry`, `finish_job`,
//!   `release_lease`) are single statements `WHERE id = $1 AND lease_epoch
//!   = $2 AND state = 2`. `checkpoint` with failures first locks the job
//!   row (fenced) `FOR UPDATE`, so two writers cannot lose each other's
//!   failure sample, then inserts the failures and merges the sample.
//! - `prune_finished_jobs` deletes in chunks of [`PRUNE_CHUNK`], each its
//!   own transaction, picking rows `FOR UPDATE SKIP LOCKED` so two replicas
//!   pruning at once do not queue behind each other.
//! - `list_members` and `list_job_failures` answer NOT_FOUND and the page
//!   from one statement, so from one snapshot.
//! - `page_token_key`: `INSERT … ON CONFLICT DO NOTHING` of 32 random bytes
//!   drawn here, then a `SELECT` of whatever key is stored: replicas starting
//!   at once agree on the first key committed.
//!
//! The group-commit task runs on its own thread and runtime (see
//! [`super::group_commit`]) and shares the pool with the rest: a
//! connection belongs to the runtime that opened it and is polled through
//! that runtime's I/O driver, which both keep running while the store lives.

use std::collections::BTreeSet;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::PgPool;
use sqlx::{Postgres, Transaction};
use tracing::{Instrument, info_span};
use uuid::Uuid;

use super::group_commit::GroupCommit;
use super::rows::{
    CREATE_ORG, FirstResponse, JobRow, OrgRow, created_org, lease_lost, merged_sample, micros,
    org_taken,
};
use super::{CancelOutcome, ClaimedJob, Lease, LeaseStatus, OrgWrite, Progress, Store};
use crate::domain::job::{Checkpoint, Job, JobFilter, JobState, MemberFailure};
use crate::domain::org::{Member, NewOrg, Org, OrgUpdate};
use crate::domain::{Micros, now_micros};
use crate::error::{Error, Result};
use crate::metrics::JobCounts;

/// The schema, embedded at build time. Version numbers match the SQLite
/// backend's migrations one for one.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Most UpdateOrgs one group commit writes together; beyond this they wait
/// for the next transaction.
const MAX_UPDATE_BATCH: usize = 256;

/// How many times a claim starts over when its candidate turned out not to
/// be claimable once locked (module docs). Each retry reads a newer
/// snapshot; after the last, the worker finds the job on its next poll.
const CLAIM_ATTEMPTS: usize = 4;

/// Jobs deleted per pruning transaction.
const PRUNE_CHUNK: i64 = 1000;

/// The column list every job query selects, in `JobRow` order and types.
macro_rules! job_columns {
    () => {
        "id::text AS id, org_id, kind::int8 AS kind, state::int8 AS state, total_members, \
         processed_members, unlinked_members, failed_members, attempt::int8 AS attempt, \
         last_error, failure_sample::text AS failure_sample, version, create_time, \
         update_time, start_time, end_time, cursor, cancel_reason, lease_epoch, seq"
    };
}

/// The column list every org query selects, in `OrgRow` order.
macro_rules! org_columns {
    () => {
        "id, display_name, allow_custom_sso, revision, member_count, create_time, update_time"
    };
}

// After the macros, which it uses.
pub(super) mod org_writes;

pub struct PgStore {
    pool: PgPool,
    /// UpdateOrgs, group-committed through `pool`.
    org_updates: GroupCommit<OrgUpdate, OrgWrite>,
}

impl PgStore {
    /// Wraps a pool whose database is already migrated with [`MIGRATOR`],
    /// and starts the UpdateOrg committer.
    pub async fn from_pool(pool: PgPool) -> Result<Self> {
        let batch_pool = pool.clone();
        let org_updates = GroupCommit::spawn(MAX_UPDATE_BATCH, move |updates: Vec<OrgUpdate>| {
            let pool = batch_pool.clone();
            let span = info_span!("commit_org_updates", batch = updates.len());
            async move { org_writes::update_orgs(&pool, updates).await }.instrument(span)
        });
        Ok(PgStore { pool, org_updates })
    }

    /// The pool, for tests that look at the database directly.
    #[cfg(test)]
    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }
}

type Tx = Transaction<'static, Postgres>;

/// Locks the org row for a membership change; NOT_FOUND if there is none.
async fn lock_org(tx: &mut Tx, org_id: &str) -> Result<()> {
    let found: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM orgs WHERE id = $1 FOR NO KEY UPDATE")
            .bind(org_id)
            .fetch_optional(&mut **tx)
            .await?;
    found
        .map(|_| ())
        .ok_or_else(|| Error::org_not_found(org_id))
}

/// Keeps `orgs.member_count` in step with the members table, in the same
/// transaction as the membership change, so jobs and GetOrg never count rows.
async fn adjust_member_count(tx: &mut Tx, org_id: &str, delta: i64) -> Result<()> {
    if delta == 0 {
        return Ok(());
    }
    sqlx::query("UPDATE orgs SET member_count = member_count + $2 WHERE id = $1")
        .bind(org_id)
        .bind(delta)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

fn limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn count(rows: u64) -> i64 {
    i64::try_from(rows).unwrap_or(i64::MAX)
}

/// A set of ids as the `text[]` parameter `= ANY` takes.
fn id_array(ids: &BTreeSet<String>) -> Vec<&str> {
    ids.iter().map(String::as_str).collect()
}

#[async_trait]
impl Store for PgStore {
    async fn page_token_key(&self) -> Result<Vec<u8>> {
        // Insert-if-absent, then read whatever is stored. A concurrent first
        // insert makes this one wait and then do nothing, and the SELECT (a
        // new statement, a new snapshot) sees the winner.
        let candidate: [u8; 32] = rand::random();
        sqlx::query(
            "INSERT INTO server_secrets (name, value) VALUES ('page_token_key', $1) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(&candidate[..])
        .execute(&self.pool)
        .await?;
        let key: Vec<u8> =
            sqlx::query_scalar("SELECT value FROM server_secrets WHERE name = 'page_token_key'")
                .fetch_one(&self.pool)
                .await?;
        Ok(key)
    }

    async fn create_org(&self, new: &NewOrg) -> Result<OrgWrite> {
        let mut tx = self.pool.begin().await?;
        let now = now_micros();
        let fingerprint = new.fingerprint();
        let id = new.id.clone().unwrap_or_else(|| Uuid::now_v7().to_string());
        if let Some(request_id) = &new.request_id
            && let Some(first) =
                org_writes::reserve_key(&mut tx, CREATE_ORG, request_id, &fingerprint, &id, now)
                    .await?
        {
            tx.rollback().await?;
            return first.replay(CREATE_ORG, request_id, &fingerprint);
        }
        let inserted = sqlx::query(
            "INSERT INTO orgs (id, display_name, allow_custom_sso, revision, create_time, update_time) \
             VALUES ($1, $2, $3, 1, $4, $4) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&id)
        .bind(&new.display_name)
        .bind(new.allow_custom_sso)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            // Rolled back on drop, with the key reserved above.
            return Err(org_taken(&id));
        }
        let write = created_org(&mut *tx, new, &id, now).await?;
        if let Some(request_id) = &new.request_id {
            let first = FirstResponse {
                request_id,
                fingerprint,
                write: &write,
            };
            org_writes::fill_reserved_key(&mut tx, CREATE_ORG, &first).await?;
        }
        tx.commit().await?;
        Ok(write)
    }

    async fn get_org(&self, org_id: &str) -> Result<Option<Org>> {
        let row: Option<OrgRow> = sqlx::query_as(concat!(
            "SELECT ",
            org_columns!(),
            " FROM orgs WHERE id = $1"
        ))
        .bind(org_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(Org::from))
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
            " FROM orgs WHERE id > $1 AND ($3::text[] IS NULL OR id = ANY($3)) \
             ORDER BY id LIMIT $2"
        ))
        .bind(after.unwrap_or(""))
        .bind(self::limit(limit))
        .bind(within.map(id_array))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(Org::from).collect())
    }

    async fn update_org(&self, update: &OrgUpdate) -> Result<OrgWrite> {
        self.org_updates.submit(update.clone()).await
    }

    async fn add_members(&self, org_id: &str, members: &[Member]) -> Result<u64> {
        let ids: Vec<&str> = members.iter().map(|m| m.id.as_str()).collect();
        let emails: Vec<&str> = members.iter().map(|m| m.email.as_str()).collect();
        let mut tx = self.pool.begin().await?;
        lock_org(&mut tx, org_id).await?;
        let added = sqlx::query(
            "INSERT INTO members (org_id, member_id, email, create_time) \
             SELECT $1, m, e, $4 FROM unnest($2::text[], $3::text[]) AS n (m, e) \
             ON CONFLICT (org_id, member_id) DO NOTHING",
        )
        .bind(org_id)
        .bind(&ids)
        .bind(&emails)
        .bind(now_micros())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        adjust_member_count(&mut tx, org_id, count(added)).await?;
        tx.commit().await?;
        Ok(added)
    }

    async fn remove_members(&self, org_id: &str, member_ids: &[String]) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        lock_org(&mut tx, org_id).await?;
        let removed =
            sqlx::query("DELETE FROM members WHERE org_id = $1 AND member_id = ANY($2::text[])")
                .bind(org_id)
                .bind(member_ids)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        adjust_member_count(&mut tx, org_id, -count(removed)).await?;
        tx.commit().await?;
        Ok(removed)
    }

    async fn list_members(
        &self,
        org_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Member>> {
        // No row: no such org. One row of NULLs: an org with an empty page.
        let rows: Vec<(Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT m.member_id, m.email FROM orgs o \
             LEFT JOIN LATERAL (SELECT member_id, email FROM members \
                                WHERE org_id = o.id AND member_id > $2 \
                                ORDER BY member_id LIMIT $3) AS m ON true \
             WHERE o.id = $1",
        )
        .bind(org_id)
        .bind(after.unwrap_or(""))
        .bind(self::limit(limit))
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() {
            return Err(Error::org_not_found(org_id));
        }
        Ok(rows
            .into_iter()
            .filter_map(|(id, email)| {
                Some(Member {
                    id: id?,
                    email: email?,
                })
            })
            .collect())
    }

    async fn member_ids_after(
        &self,
        org_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT member_id FROM members WHERE org_id = $1 AND member_id > $2 \
             ORDER BY member_id LIMIT $3",
        )
        .bind(org_id)
        .bind(after.unwrap_or(""))
        .bind(self::limit(limit))
        .fetch_all(&self.pool)
        .await?)
    }

    async fn get_job(&self, job_id: Uuid) -> Result<Option<Job>> {
        let row: Option<JobRow> = sqlx::query_as(concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE id = $1"
        ))
        .bind(job_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(JobRow::into_job).transpose()
    }

    async fn job_counts(&self) -> Result<JobCounts> {
        // Both read an index (jobs_by_state; the QUEUED rows of jobs_active).
        let by_state: Vec<(i64, i64)> =
            sqlx::query_as("SELECT state::BIGINT, COUNT(*) FROM jobs GROUP BY state")
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
            " FROM jobs WHERE seq < $1 AND ($2::text IS NULL OR org_id = $2) \
             AND ($3::int2 IS NULL OR state = $3) \
             AND ($5::text[] IS NULL OR org_id = ANY($5)) \
             ORDER BY seq DESC LIMIT $4"
        ))
        .bind(before_seq.unwrap_or(i64::MAX))
        .bind(filter.org_id.as_deref())
        .bind(filter.state.map(|s| s as i16))
        .bind(self::limit(limit))
        .bind(filter.within.as_ref().map(id_array))
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
        // No row: no such job. One row of NULLs: a job with an empty page.
        type FailureRow = (Option<String>, Option<String>, Option<String>);
        let rows: Vec<FailureRow> = sqlx::query_as(
            "SELECT f.member_id, f.code, f.message FROM jobs j \
             LEFT JOIN LATERAL (SELECT member_id, code, message FROM job_failures \
                                WHERE job_id = j.id AND member_id > $2 \
                                ORDER BY member_id LIMIT $3) AS f ON true \
             WHERE j.id = $1",
        )
        .bind(job_id)
        .bind(after.unwrap_or(""))
        .bind(self::limit(limit))
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() {
            return Err(Error::job_not_found(job_id));
        }
        Ok(rows
            .into_iter()
            .filter_map(|(member_id, code, message)| {
                Some(MemberFailure {
                    member_id: member_id?,
                    code: code?,
                    message: message?,
                })
            })
            .collect())
    }

    async fn cancel_job(&self, job_id: Uuid, reason: &str) -> Result<CancelOutcome> {
        let mut tx = self.pool.begin().await?;
        // FOR UPDATE: the state read here is the state changed below. A
        // claim committing in between would otherwise be overwritten with
        // CANCELLED while its worker runs, and let the org's next job start.
        let row: JobRow = sqlx::query_as(concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE id = $1 FOR UPDATE"
        ))
        .bind(job_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| Error::job_not_found(job_id))?;
        let now = now_micros();
        let job = row.into_job()?;
        let outcome = match job.state {
            JobState::Queued => {
                let row: JobRow = sqlx::query_as(concat!(
                    "UPDATE jobs SET state = 5, last_error = $2, end_time = $3, update_time = $3, \
                     version = version + 1 WHERE id = $1 RETURNING ",
                    job_columns!()
                ))
                .bind(job_id)
                .bind(reason)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
                CancelOutcome::Cancelled(row.into_job()?)
            }
            JobState::Running => {
                sqlx::query(
                    "UPDATE jobs SET cancel_reason = COALESCE(cancel_reason, $2) WHERE id = $1",
                )
                .bind(job_id)
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
        for _ in 0..CLAIM_ATTEMPTS {
            let mut tx = self.pool.begin().await?;
            let now = now_micros();
            // The head of each org's line of unfinished jobs is the only one
            // of that org that may run; a running head is claimable only
            // once its lease has expired (its worker is presumed dead).
            let candidate: Option<i64> = sqlx::query_scalar(
                "SELECT j.seq FROM jobs j \
                 WHERE j.state IN (1, 2) AND (j.state = 1 OR j.lease_expires < $1) \
                 AND NOT EXISTS (SELECT 1 FROM jobs o WHERE o.org_id = j.org_id \
                                 AND o.state IN (1, 2) AND o.seq < j.seq) \
                 ORDER BY j.seq LIMIT 1 FOR UPDATE OF j SKIP LOCKED",
            )
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(seq) = candidate else {
                tx.rollback().await?;
                return Ok(None);
            };
            // The whole rule again, from a snapshot taken under the lock
            // (module docs). The clock is read again here, after the lock:
            // the org's previous job may have ended since `now`. And the
            // start is never recorded before that job's end, which another
            // replica's clock stamped: an org's jobs never appear to
            // overlap, even with clocks a few milliseconds apart.
            let started = now_micros();
            let row: Option<JobRow> = sqlx::query_as(concat!(
                "UPDATE jobs SET state = 2, lease_owner = $2, lease_epoch = lease_epoch + 1, \
                 lease_expires = $3, attempt = attempt + 1, \
                 start_time = COALESCE(start_time, GREATEST($5, \
                     (SELECT o.end_time FROM jobs o WHERE o.org_id = jobs.org_id \
                      AND o.seq < jobs.seq ORDER BY o.seq DESC LIMIT 1))), \
                 total_members = CASE kind WHEN 1 THEN GREATEST(processed_members, \
                     (SELECT member_count FROM orgs WHERE orgs.id = jobs.org_id)) ELSE 0 END, \
                 version = version + 1, update_time = $5 \
                 WHERE seq = $1 AND state IN (1, 2) AND (state = 1 OR lease_expires < $4) \
                 AND NOT EXISTS (SELECT 1 FROM jobs o WHERE o.org_id = jobs.org_id \
                                 AND o.state IN (1, 2) AND o.seq < jobs.seq) \
                 RETURNING ",
                job_columns!()
            ))
            .bind(seq)
            .bind(owner)
            .bind(started.saturating_add(micros(lease_for)))
            .bind(now)
            .bind(started)
            .fetch_optional(&mut *tx)
            .await?;
            match row {
                Some(row) => {
                    tx.commit().await?;
                    return row.into_claimed().map(Some);
                }
                None => tx.rollback().await?,
            }
        }
        Ok(None)
    }

    async fn renew_lease(&self, lease: &Lease, lease_for: Duration) -> Result<LeaseStatus> {
        let held: Option<Option<String>> = sqlx::query_scalar(
            "UPDATE jobs SET lease_expires = $3 \
             WHERE id = $1 AND lease_epoch = $2 AND state = 2 RETURNING cancel_reason",
        )
        .bind(lease.job_id)
        .bind(lease.epoch)
        .bind(now_micros().saturating_add(micros(lease_for)))
        .fetch_optional(&self.pool)
        .await?;
        Ok(match held {
            Some(cancel_reason) => LeaseStatus::Held { cancel_reason },
            None => LeaseStatus::Lost,
        })
    }

    async fn checkpoint(&self, lease: &Lease, checkpoint: &Checkpoint) -> Result<Progress> {
        let mut tx = self.pool.begin().await?;
        let now = now_micros();
        // Failures are keyed by member, so a batch replayed after a crash
        // neither duplicates rows nor double-counts failed_members.
        let mut new_failures = 0_i64;
        let mut sample_update: Option<String> = None;
        if !checkpoint.failures.is_empty() {
            // Fenced, and locked until commit: the sample read here is the
            // one the update below replaces.
            let sample: Option<String> = sqlx::query_scalar(
                "SELECT failure_sample::text FROM jobs \
                 WHERE id = $1 AND lease_epoch = $2 AND state = 2 FOR UPDATE",
            )
            .bind(lease.job_id)
            .bind(lease.epoch)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(sample) = sample else {
                return Err(lease_lost(lease));
            };
            let members: Vec<&str> = checkpoint
                .failures
                .iter()
                .map(|f| f.member_id.as_str())
                .collect();
            let codes: Vec<&str> = checkpoint
                .failures
                .iter()
                .map(|f| f.code.as_str())
                .collect();
            let messages: Vec<&str> = checkpoint
                .failures
                .iter()
                .map(|f| f.message.as_str())
                .collect();
            let inserted = sqlx::query(
                "INSERT INTO job_failures (job_id, member_id, code, message) \
                 SELECT $1, m, c, t FROM unnest($2::text[], $3::text[], $4::text[]) AS n (m, c, t) \
                 ON CONFLICT (job_id, member_id) DO NOTHING",
            )
            .bind(lease.job_id)
            .bind(&members)
            .bind(&codes)
            .bind(&messages)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            new_failures = count(inserted);
            sample_update = merged_sample(&sample, &checkpoint.failures);
        }
        let row: Option<JobRow> = sqlx::query_as(concat!(
            "UPDATE jobs SET processed_members = processed_members + $3, \
             unlinked_members = unlinked_members + $4, failed_members = failed_members + $5, \
             failure_sample = COALESCE($6::jsonb, failure_sample), cursor = $7, \
             total_members = GREATEST(total_members, processed_members + $3), \
             version = version + 1, update_time = $8 \
             WHERE id = $1 AND lease_epoch = $2 AND state = 2 RETURNING ",
            job_columns!()
        ))
        .bind(lease.job_id)
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
            "UPDATE jobs SET attempt = attempt + 1, last_error = $3, version = version + 1, \
             update_time = $4 WHERE id = $1 AND lease_epoch = $2 AND state = 2 RETURNING ",
            job_columns!()
        ))
        .bind(lease.job_id)
        .bind(lease.epoch)
        .bind(error)
        .bind(now_micros())
        .fetch_optional(&self.pool)
        .await?;
        row.ok_or_else(|| lease_lost(lease))?.into_job()
    }

    async fn finish_job(&self, lease: &Lease, state: JobState, last_error: &str) -> Result<Job> {
        debug_assert!(state.is_terminal());
        let row: Option<JobRow> = sqlx::query_as(concat!(
            "UPDATE jobs SET state = $3, \
             last_error = CASE WHEN $4 = '' THEN last_error ELSE $4 END, \
             end_time = $5, update_time = $5, version = version + 1, lease_owner = NULL, \
             lease_expires = 0 WHERE id = $1 AND lease_epoch = $2 AND state = 2 RETURNING ",
            job_columns!()
        ))
        .bind(lease.job_id)
        .bind(lease.epoch)
        .bind(state as i16)
        .bind(last_error)
        .bind(now_micros())
        .fetch_optional(&self.pool)
        .await?;
        row.ok_or_else(|| lease_lost(lease))?.into_job()
    }

    async fn prune_finished_jobs(&self, ended_before: Micros) -> Result<u64> {
        // In bounded transactions, so pruning a large backlog never holds
        // many locks or one long transaction.
        let mut pruned = 0;
        loop {
            let mut tx = self.pool.begin().await?;
            let ids: Vec<Uuid> = sqlx::query_scalar(
                "DELETE FROM jobs WHERE seq IN (SELECT seq FROM jobs \
                 WHERE state IN (3, 4, 5) AND end_time < $1 LIMIT $2 FOR UPDATE SKIP LOCKED) \
                 RETURNING id",
            )
            .bind(ended_before)
            .bind(PRUNE_CHUNK)
            .fetch_all(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM job_failures WHERE job_id = ANY($1)")
                .bind(&ids)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            pruned += ids.len() as u64;
            if count(ids.len() as u64) < PRUNE_CHUNK {
                break;
            }
        }
        sqlx::query("DELETE FROM idempotency_keys WHERE create_time < $1")
            .bind(ended_before)
            .execute(&self.pool)
            .await?;
        Ok(pruned)
    }

    async fn release_lease(&self, lease: &Lease) -> Result<()> {
        sqlx::query(
            "UPDATE jobs SET lease_owner = NULL, lease_expires = 0 \
             WHERE id = $1 AND lease_epoch = $2 AND state = 2",
        )
        .bind(lease.job_id)
        .bind(lease.epoch)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! PostgreSQL only: several replicas (stores with pools of their own)
    //! claiming and writing at once, and the row locks behind that. The
    //! behaviour both backends share is tested once, in `store::tests`.

    use std::collections::{HashMap, HashSet};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    use rand::Rng;

    use super::*;
    use crate::domain::job::JobKind;
    use crate::testing::{Fixture, member_id, org_with_members, pg_store, set_allow};

    const LEASE: Duration = Duration::from_secs(30);

    fn org(id: &str) -> NewOrg {
        NewOrg {
            id: Some(id.into()),
            display_name: id.into(),
            allow_custom_sso: false,
            request_id: None,
        }
    }

    /// What the workers of the hammer test saw, across all replicas.
    #[derive(Default)]
    struct Ledger {
        /// The job each org is running, between its claim and its finish.
        running: HashMap<String, Uuid>,
        /// How often each job was claimed.
        claims: HashMap<Uuid, usize>,
        /// Two jobs of one org running at once, described.
        overlaps: Vec<String>,
    }

    impl Ledger {
        fn claimed(&mut self, job: &Job) {
            *self.claims.entry(job.id).or_default() += 1;
            if let Some(other) = self.running.insert(job.org_id.clone(), job.id) {
                self.overlaps
                    .push(format!("org {}: {} and {}", job.org_id, other, job.id));
            }
        }

        /// Called before the finish is sent, so that the org's next job,
        /// claimable once the finish commits, never finds this one here.
        fn finishing(&mut self, job: &Job) {
            if self.running.get(&job.org_id) == Some(&job.id) {
                self.running.remove(&job.org_id);
            }
        }
    }

    fn pause(max_micros: u64) -> Duration {
        Duration::from_micros(rand::rng().random_range(0..max_micros))
    }

    /// Workers of several replicas claim at once while UpdateOrgs, sent
    /// through all replicas, keep enqueueing (and superseding) jobs of a few
    /// orgs: no job is claimed twice, and no two jobs of one org run at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 8)]
    async fn claims_never_overlap_within_an_org_across_replicas() {
        const REPLICAS: usize = 4;
        const WORKERS: usize = 3;
        const ORGS: usize = 3;
        const FLIPS: usize = 60;
        let Some(fixture) = Fixture::postgres() else {
            return;
        };
        let mut stores = Vec::new();
        for _ in 0..REPLICAS {
            stores.push(fixture.store().await);
        }
        let orgs: Vec<String> = (0..ORGS).map(|i| format!("org{i}")).collect();
        for id in &orgs {
            stores[0].create_org(&org(id)).await.expect("create org");
        }
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let enqueueing = Arc::new(AtomicBool::new(true));

        let mut workers = Vec::new();
        for (replica, store) in stores.iter().enumerate() {
            for worker in 0..WORKERS {
                let (store, ledger, enqueueing) = (
                    Arc::clone(store),
                    Arc::clone(&ledger),
                    Arc::clone(&enqueueing),
                );
                workers.push(tokio::spawn(async move {
                    let owner = format!("replica{replica}-worker{worker}");
                    loop {
                        let more_coming = enqueueing.load(Ordering::SeqCst);
                        let claimed = store.claim_job(&owner, LEASE).await.expect("claim");
                        let Some(claimed) = claimed else {
                            if !more_coming {
                                break;
                            }
                            tokio::time::sleep(pause(300)).await;
                            continue;
                        };
                        ledger.lock().expect("ledger").claimed(&claimed.job);
                        tokio::time::sleep(pause(2000)).await;
                        ledger.lock().expect("ledger").finishing(&claimed.job);
                        store
                            .finish_job(&claimed.lease, JobState::Succeeded, "")
                            .await
                            .expect("finish a job we hold");
                    }
                }));
            }
        }
        let mut enqueuers = Vec::new();
        for id in &orgs {
            let (stores, id) = (stores.clone(), id.clone());
            enqueuers.push(tokio::spawn(async move {
                for flip in 0..FLIPS {
                    let store = &stores[flip % stores.len()];
                    let write = set_allow(&**store, &id, flip % 2 == 0).await;
                    assert!(write.job_id.is_some(), "every flip enqueues");
                    tokio::time::sleep(pause(1000)).await;
                }
            }));
        }
        for enqueuer in enqueuers {
            enqueuer.await.expect("enqueuer");
        }
        enqueueing.store(false, Ordering::SeqCst);
        for worker in workers {
            worker.await.expect("worker");
        }
        // Whatever no worker could reach before it stopped.
        while let Some(claimed) = stores[0].claim_job("drain", LEASE).await.expect("claim") {
            ledger.lock().expect("ledger").claimed(&claimed.job);
            ledger.lock().expect("ledger").finishing(&claimed.job);
            stores[0]
                .finish_job(&claimed.lease, JobState::Succeeded, "")
                .await
                .expect("finish");
        }

        let Ledger {
            claims, overlaps, ..
        } = std::mem::take(&mut *ledger.lock().expect("ledger"));
        assert!(overlaps.is_empty(), "{overlaps:?}");
        let twice: Vec<_> = claims.iter().filter(|(_, n)| **n != 1).collect();
        assert!(twice.is_empty(), "claimed more than once: {twice:?}");
        let jobs = stores[1]
            .list_jobs(&JobFilter::default(), None, 10_000)
            .await
            .expect("list jobs");
        assert_eq!(jobs.len(), ORGS * FLIPS);
        let mut succeeded = HashSet::new();
        for (_, job) in &jobs {
            assert!(job.state.is_terminal(), "{job:?}");
            if job.state == JobState::Succeeded {
                assert_eq!(job.attempt, 1, "{job:?}");
                succeeded.insert(job.id);
            }
        }
        let claimed: HashSet<Uuid> = claims.keys().copied().collect();
        assert_eq!(claimed, succeeded, "exactly the claimed jobs ran");
        assert!(
            claimed.len() >= ORGS,
            "at least each org's last job ran: {}",
            claimed.len()
        );
    }

    /// Batches of several replicas over overlapping orgs, in every order,
    /// beside membership changes of the same orgs: nothing deadlocks and no
    /// update is lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 8)]
    async fn replicas_writing_overlapping_orgs_neither_deadlock_nor_lose_updates() {
        const REPLICAS: usize = 4;
        const ORGS: usize = 12;
        const UPDATES: usize = 120;
        let Some(fixture) = Fixture::postgres() else {
            return;
        };
        let mut stores = Vec::new();
        for _ in 0..REPLICAS {
            stores.push(fixture.store().await);
        }
        let orgs: Vec<String> = (0..ORGS).map(|i| format!("org{i:02}")).collect();
        for id in &orgs {
            stores[0].create_org(&org(id)).await.expect("create org");
        }
        let mut calls = Vec::new();
        let mut renames: HashMap<String, i64> = HashMap::new();
        let mut added: HashMap<String, i64> = HashMap::new();
        for n in 0..REPLICAS * UPDATES {
            let store = Arc::clone(&stores[n % REPLICAS]);
            let id = orgs[rand::rng().random_range(0..ORGS)].clone();
            if n % 3 == 0 {
                *added.entry(id.clone()).or_default() += 1;
                calls.push(tokio::spawn(async move {
                    let member = Member {
                        id: member_id(n),
                        email: String::new(),
                    };
                    store.add_members(&id, &[member]).await.map(|_| ())
                }));
            } else {
                *renames.entry(id.clone()).or_default() += 1;
                calls.push(tokio::spawn(async move {
                    let allow = rand::rng().random_bool(0.5);
                    store
                        .update_org(&OrgUpdate {
                            org_id: id,
                            display_name: Some(format!("name {n}")),
                            allow_custom_sso: Some(allow),
                            expected_etag: None,
                            request_id: Some(format!("request-{n}")),
                        })
                        .await
                        .map(|_| ())
                }));
            }
        }
        for call in calls {
            call.await.expect("call").expect("no deadlock, no failure");
        }
        for id in &orgs {
            let stored = stores[1].get_org(id).await.expect("get").expect("org");
            assert_eq!(
                stored.revision,
                1 + renames.get(id).copied().unwrap_or(0),
                "{id}: every rename bumped the revision once"
            );
            assert_eq!(stored.member_count, added.get(id).copied().unwrap_or(0));
            let listed = stores[2]
                .member_ids_after(id, None, 1000)
                .await
                .expect("members");
            assert_eq!(
                i64::try_from(listed.len()).expect("small"),
                stored.member_count
            );
        }
        // Each org has at most one unfinished job left: every enqueue
        // superseded the org's queued one.
        let unfinished = stores[3]
            .list_jobs(
                &JobFilter {
                    state: Some(JobState::Queued),
                    ..JobFilter::default()
                },
                None,
                10_000,
            )
            .await
            .expect("list jobs");
        let orgs_with_queued: HashSet<&str> = unfinished
            .iter()
            .map(|(_, job)| job.org_id.as_str())
            .collect();
        assert_eq!(orgs_with_queued.len(), unfinished.len());
    }

    /// CancelJob reads the job FOR UPDATE: racing a claim, it waits for the
    /// claim and then asks the now running job to stop, instead of marking
    /// it CANCELLED under its worker (which would let the org's next job
    /// start beside it).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancel_racing_a_claim_waits_and_then_asks_the_job_to_stop() {
        let Some(fixture) = Fixture::postgres() else {
            return;
        };
        let store = Arc::new(pg_store(fixture.postgres_url().expect("postgres")).await);
        store.create_org(&org("acme")).await.expect("create org");
        let job_id = set_allow(&*store, "acme", true).await.job_id.expect("job");

        // A claim between its candidate lock and its commit.
        let mut claim = store.pool().begin().await.expect("begin");
        sqlx::query("SELECT seq FROM jobs WHERE id = $1 FOR UPDATE OF jobs SKIP LOCKED")
            .bind(job_id)
            .execute(&mut *claim)
            .await
            .expect("lock the candidate");
        let cancel = tokio::spawn({
            let store = Arc::clone(&store);
            async move { store.cancel_job(job_id, "by test").await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!cancel.is_finished(), "the cancel did not wait");
        sqlx::query(
            "UPDATE jobs SET state = 2, lease_owner = 'w', lease_epoch = lease_epoch + 1, \
             lease_expires = $2, attempt = attempt + 1, version = version + 1 WHERE id = $1",
        )
        .bind(job_id)
        .bind(i64::MAX)
        .execute(&mut *claim)
        .await
        .expect("claim");
        claim.commit().await.expect("commit the claim");

        let outcome = cancel.await.expect("cancel").expect("cancel");
        assert!(
            matches!(outcome, CancelOutcome::Requested(_)),
            "{outcome:?}"
        );
        let job = store.get_job(job_id).await.expect("get").expect("job");
        assert_eq!(job.state, JobState::Running);
        let lease = Lease { job_id, epoch: 1 };
        assert_eq!(
            store.renew_lease(&lease, LEASE).await.expect("renew"),
            LeaseStatus::Held {
                cancel_reason: Some("by test".into())
            }
        );
    }

    /// Superseding re-reads a job a claim changed meanwhile: the queued job
    /// the UpdateOrg meant to cancel is running by the time the claim
    /// commits, so it is asked to stop instead.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn superseding_racing_a_claim_asks_the_claimed_job_to_stop() {
        let Some(fixture) = Fixture::postgres() else {
            return;
        };
        let store = Arc::new(pg_store(fixture.postgres_url().expect("postgres")).await);
        org_with_members(&*store, "acme", 3).await;
        let older = store
            .list_jobs(&JobFilter::default(), None, 10)
            .await
            .expect("list");
        let [(_, older)] = <[(i64, Job); 1]>::try_from(older).expect("the creation's job");
        assert_eq!(older.kind, JobKind::EnableCustomSso);

        let mut claim = store.pool().begin().await.expect("begin");
        sqlx::query("SELECT seq FROM jobs WHERE id = $1 FOR UPDATE OF jobs SKIP LOCKED")
            .bind(older.id)
            .execute(&mut *claim)
            .await
            .expect("lock the candidate");
        let update = tokio::spawn({
            let store = Arc::clone(&store);
            async move { set_allow(&*store, "acme", false).await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!update.is_finished(), "superseding did not wait");
        sqlx::query(
            "UPDATE jobs SET state = 2, lease_owner = 'w', lease_epoch = lease_epoch + 1, \
             lease_expires = $2, attempt = attempt + 1, version = version + 1 WHERE id = $1",
        )
        .bind(older.id)
        .bind(i64::MAX)
        .execute(&mut *claim)
        .await
        .expect("claim");
        claim.commit().await.expect("commit the claim");

        let write = update.await.expect("update");
        assert_eq!(write.stop_requested, [older.id]);
        assert!(write.superseded.is_empty());
        let older = store.get_job(older.id).await.expect("get").expect("job");
        assert_eq!(older.state, JobState::Running);
        // The new job waits for it.
        assert!(store.claim_job("w2", LEASE).await.expect("claim").is_none());
    }
}
