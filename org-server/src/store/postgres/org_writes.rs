//! The writes behind CreateOrg and UpdateOrg, set-based: each statement
//! covers every org of a round (its rows travel as array parameters,
//! `unnest($1::text[], …)`), so a group-committed batch of 64 UpdateOrgs
//! runs the same few statements, and waits for the same one commit, as a
//! batch of one. The rounds and replays around these statements are shared
//! with SQLite ([`crate::store::rows::apply_updates`]); what is PostgreSQL's
//! own is the locking (see the parent module's documentation).

use std::collections::HashMap;

use sqlx::postgres::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::job::{Job, JobKind};
use crate::domain::org::{Org, OrgUpdate};
use crate::domain::{Micros, now_micros};
use crate::error::{Error, Result};
use crate::store::OrgWrite;
use crate::store::rows::{
    Enqueued, FirstResponse, JobRow, OrgRow, OrgWriteTx, StoredResponse, apply_updates,
};

/// How many times a key reservation is tried when it conflicts with a key
/// that is then gone (pruned in between).
const RESERVE_ATTEMPTS: usize = 3;

/// Applies a batch of UpdateOrgs in one transaction and returns one result
/// per update, in order. The outer `Err` is a failed transaction: then
/// nothing of the batch was written. An update's own error (unknown org,
/// stale etag, reused request id) fails that update alone.
pub(in crate::store) async fn update_orgs(
    pool: &PgPool,
    updates: Vec<OrgUpdate>,
) -> Result<Vec<Result<OrgWrite>>> {
    let mut tx = pool.begin().await?;
    lock_orgs(&mut tx, &updates).await?;
    // Read after taking the locks: a time taken while waiting could precede
    // writes to these orgs that committed ahead of us.
    let now = now_micros();
    let results = apply_updates(&mut *tx, &updates, now).await?;
    tx.commit().await?;
    Ok(results)
}

/// Locks the rows of every org the batch updates, in id order, until the
/// batch commits (parent module docs: why all up front, why NO KEY UPDATE).
async fn lock_orgs(conn: &mut PgConnection, updates: &[OrgUpdate]) -> Result<()> {
    let mut ids: Vec<&str> = updates.iter().map(|u| u.org_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    sqlx::query("SELECT id FROM orgs WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE")
        .bind(&ids)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

impl OrgWriteTx for PgConnection {
    async fn stored_responses(
        &mut self,
        method: &str,
        request_ids: &[&str],
    ) -> Result<HashMap<String, StoredResponse>> {
        stored_responses(self, method, request_ids).await
    }

    async fn load_orgs(&mut self, org_ids: &[&str]) -> Result<HashMap<String, Org>> {
        if org_ids.is_empty() {
            return Ok(HashMap::new());
        }
        // Every row read here is one this batch has locked. The rows that
        // existed at the start were locked by `lock_orgs`, and re-locking
        // them is free. An org created (and committed) since then was not:
        // planning from it unlocked would let another replica's batch
        // update it in between, and one of the two updates would be lost.
        // NOWAIT takes it now if nobody holds it, and otherwise fails the
        // batch with lock_not_available, which is transient (callers
        // retry) and never waits, so it cannot deadlock.
        let rows: Vec<OrgRow> = sqlx::query_as(concat!(
            "SELECT ",
            org_columns!(),
            " FROM orgs WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE NOWAIT"
        ))
        .bind(org_ids)
        .fetch_all(&mut *self)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| (row.id.clone(), Org::from(row)))
            .collect())
    }

    async fn write_orgs(&mut self, orgs: &[&Org]) -> Result<()> {
        if orgs.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = orgs.iter().map(|org| org.id.as_str()).collect();
        let names: Vec<&str> = orgs.iter().map(|org| org.display_name.as_str()).collect();
        let allows: Vec<bool> = orgs.iter().map(|org| org.allow_custom_sso).collect();
        let revisions: Vec<i64> = orgs.iter().map(|org| org.revision).collect();
        let update_times: Vec<i64> = orgs.iter().map(|org| org.update_time).collect();
        sqlx::query(
            "UPDATE orgs SET display_name = u.display_name, allow_custom_sso = u.allow_custom_sso, \
             revision = u.revision, update_time = u.update_time \
             FROM unnest($1::text[], $2::text[], $3::bool[], $4::int8[], $5::int8[]) \
                  AS u (target, display_name, allow_custom_sso, revision, update_time) \
             WHERE orgs.id = u.target",
        )
        .bind(&ids)
        .bind(&names)
        .bind(&allows)
        .bind(&revisions)
        .bind(&update_times)
        .execute(&mut *self)
        .await?;
        Ok(())
    }

    async fn enqueue_jobs(
        &mut self,
        jobs: &[(&str, JobKind)],
        now: Micros,
    ) -> Result<HashMap<String, Enqueued>> {
        enqueue_jobs(self, jobs, now).await
    }

    async fn remember(
        &mut self,
        method: &str,
        firsts: &[FirstResponse<'_>],
        now: Micros,
    ) -> Result<()> {
        if firsts.is_empty() {
            return Ok(());
        }
        let keys: Vec<&str> = firsts.iter().map(|f| f.request_id).collect();
        let fingerprints: Vec<&str> = firsts.iter().map(|f| f.fingerprint.as_str()).collect();
        let org_ids: Vec<&str> = firsts.iter().map(|f| f.write.org.id.as_str()).collect();
        let job_ids: Vec<Option<Uuid>> = firsts.iter().map(|f| f.write.job_id).collect();
        let orgs = firsts
            .iter()
            .map(FirstResponse::org_json)
            .collect::<Result<Vec<String>>>()?;
        // The org locks make a conflict impossible (parent module docs); if
        // one happened anyway, the batch fails and rolls back rather than
        // answer a request differently from the response stored first.
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys \
             (method, request_id, fingerprint, org_id, job_id, org_json, create_time) \
             SELECT $1, k, f, o, j, b::jsonb, $7 \
             FROM unnest($2::text[], $3::text[], $4::text[], $5::uuid[], $6::text[]) \
                  AS n (k, f, o, j, b) \
             ON CONFLICT (method, request_id) DO NOTHING",
        )
        .bind(method)
        .bind(&keys)
        .bind(&fingerprints)
        .bind(&org_ids)
        .bind(&job_ids)
        .bind(&orgs)
        .bind(now)
        .execute(&mut *self)
        .await?
        .rows_affected();
        if inserted != firsts.len() as u64 {
            return Err(Error::Internal(format!(
                "{method}: {} of {} idempotency keys were taken concurrently",
                firsts.len() as u64 - inserted,
                firsts.len()
            )));
        }
        Ok(())
    }
}

/// See [`OrgWriteTx::enqueue_jobs`].
pub(super) async fn enqueue_jobs(
    conn: &mut PgConnection,
    jobs: &[(&str, JobKind)],
    now: Micros,
) -> Result<HashMap<String, Enqueued>> {
    if jobs.is_empty() {
        return Ok(HashMap::new());
    }
    let new_jobs: Vec<Job> = jobs
        .iter()
        .map(|(org_id, kind)| Job::queued(Uuid::now_v7(), (*org_id).to_owned(), *kind, now))
        .collect();
    let ids: Vec<Uuid> = new_jobs.iter().map(|job| job.id).collect();
    let org_ids: Vec<&str> = new_jobs.iter().map(|job| job.org_id.as_str()).collect();
    let kinds: Vec<i16> = new_jobs.iter().map(|job| job.kind as i16).collect();
    // One statement for both kinds of older job. SET expressions all see
    // the row as it was, so `jobs.state` in each CASE is the old state. A
    // row a concurrent claim changed is re-read once that claim commits,
    // and both the WHERE and the CASEs apply to the new version: a job
    // claimed meanwhile is asked to stop instead of cancelled.
    let touched: Vec<JobRow> = sqlx::query_as(concat!(
        "UPDATE jobs SET \
           state = CASE WHEN jobs.state = 1 THEN 5 ELSE jobs.state END, \
           last_error = CASE WHEN jobs.state = 1 THEN n.reason ELSE jobs.last_error END, \
           end_time = CASE WHEN jobs.state = 1 THEN $3 ELSE jobs.end_time END, \
           update_time = CASE WHEN jobs.state = 1 THEN $3 ELSE jobs.update_time END, \
           version = CASE WHEN jobs.state = 1 THEN jobs.version + 1 ELSE jobs.version END, \
           cancel_reason = CASE WHEN jobs.state = 2 THEN n.reason ELSE jobs.cancel_reason END \
         FROM (SELECT o AS superseding_org, 'superseded by job ' || j::text AS reason \
               FROM unnest($1::text[], $2::uuid[]) AS u (o, j)) AS n \
         WHERE jobs.org_id = n.superseding_org AND jobs.state IN (1, 2) \
           AND (jobs.state = 1 OR jobs.cancel_reason IS NULL) \
         RETURNING ",
        job_columns!()
    ))
    .bind(&org_ids)
    .bind(&ids)
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    // `ORDER BY i` keeps `seq` in request order. The other columns take
    // their defaults, which `Job::queued` mirrors (a test holds the two
    // together), so nothing needs to be read back.
    sqlx::query(
        "INSERT INTO jobs (id, org_id, kind, state, create_time, update_time) \
         SELECT j, o, k, 1, $4, $4 \
         FROM unnest($1::uuid[], $2::text[], $3::int2[]) WITH ORDINALITY AS n (j, o, k, i) \
         ORDER BY i",
    )
    .bind(&ids)
    .bind(&org_ids)
    .bind(&kinds)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Enqueued::collect(new_jobs, touched)
}

/// The stored responses of those `request_ids` already used with `method`,
/// by request id.
async fn stored_responses(
    conn: &mut PgConnection,
    method: &str,
    request_ids: &[&str],
) -> Result<HashMap<String, StoredResponse>> {
    if request_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<StoredResponse> = sqlx::query_as(
        "SELECT request_id, fingerprint, job_id::text AS job_id, org_json::text AS org_json \
         FROM idempotency_keys WHERE method = $1 AND request_id = ANY($2)",
    )
    .bind(method)
    .bind(request_ids)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.request_id.clone(), row))
        .collect())
}

/// Takes `request_id` for this transaction before the request is carried
/// out: `None` when it was free (it now holds a placeholder, which
/// [`fill_reserved_key`] replaces before commit), or the response stored
/// under it by the request that used it first. A concurrent first use
/// makes the insert wait until that transaction ends; see the parent
/// module's documentation.
pub(super) async fn reserve_key(
    conn: &mut PgConnection,
    method: &str,
    request_id: &str,
    fingerprint: &str,
    org_id: &str,
    now: Micros,
) -> Result<Option<StoredResponse>> {
    for _ in 0..RESERVE_ATTEMPTS {
        let reserved = sqlx::query(
            "INSERT INTO idempotency_keys \
             (method, request_id, fingerprint, org_id, job_id, org_json, create_time) \
             VALUES ($1, $2, $3, $4, NULL, 'null', $5) \
             ON CONFLICT (method, request_id) DO NOTHING",
        )
        .bind(method)
        .bind(request_id)
        .bind(fingerprint)
        .bind(org_id)
        .bind(now)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if reserved == 1 {
            return Ok(None);
        }
        // A new statement, so a new snapshot: it sees the first use, which
        // committed before our insert gave up.
        let mut stored = stored_responses(conn, method, &[request_id]).await?;
        if let Some(first) = stored.remove(request_id) {
            return Ok(Some(first));
        }
    }
    Err(Error::Internal(format!(
        "{method}: request_id {request_id:?} is taken, yet no response is stored under it"
    )))
}

/// Stores the response under a key that [`reserve_key`] reserved.
pub(super) async fn fill_reserved_key(
    conn: &mut PgConnection,
    method: &str,
    first: &FirstResponse<'_>,
) -> Result<()> {
    let filled = sqlx::query(
        "UPDATE idempotency_keys SET job_id = $3, org_json = $4::jsonb \
         WHERE method = $1 AND request_id = $2",
    )
    .bind(method)
    .bind(first.request_id)
    .bind(first.write.job_id)
    .bind(first.org_json()?)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if filled != 1 {
        return Err(Error::Internal(format!(
            "{method}: the reserved idempotency key {:?} is gone",
            first.request_id
        )));
    }
    Ok(())
}
