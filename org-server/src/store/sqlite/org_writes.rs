//! The writes behind CreateOrg and UpdateOrg, set-based: each statement
//! covers every org of a batch (its rows travel as one JSON array), so a
//! group-committed batch of 64 UpdateOrgs runs the same few statements,
//! and waits for the same one fsync, as a batch of one. The rounds and
//! replays around these statements are shared with PostgreSQL
//! ([`crate::store::rows::apply_updates`]).

use std::collections::HashMap;

use serde_json::json;
use sqlx::{SqliteConnection, SqlitePool};
use uuid::Uuid;

use crate::domain::job::{Job, JobKind};
use crate::domain::org::{Org, OrgUpdate};
use crate::domain::{Micros, now_micros};
use crate::error::Result;
use crate::store::OrgWrite;
use crate::store::rows::{
    Enqueued, FirstResponse, JobRow, OrgRow, OrgWriteTx, StoredResponse, apply_updates,
};

/// Applies a batch of UpdateOrgs in one transaction and returns one result
/// per update, in order. The outer `Err` is a failed transaction: then
/// nothing of the batch was written. An update's own error (unknown org,
/// stale etag, reused request id) fails that update alone.
pub(in crate::store) async fn update_orgs(
    writer: &SqlitePool,
    updates: Vec<OrgUpdate>,
) -> Result<Vec<Result<OrgWrite>>> {
    let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
    // Read after taking the lock; see `SqliteStore::begin_write`.
    let now = now_micros();
    let results = apply_updates(&mut *tx, &updates, now).await?;
    tx.commit().await?;
    Ok(results)
}

impl OrgWriteTx for SqliteConnection {
    async fn stored_responses(
        &mut self,
        method: &str,
        request_ids: &[&str],
    ) -> Result<HashMap<String, StoredResponse>> {
        stored_responses(self, method, request_ids).await
    }

    async fn load_orgs(&mut self, org_ids: &[&str]) -> Result<HashMap<String, Org>> {
        load_orgs(self, org_ids).await
    }

    async fn write_orgs(&mut self, orgs: &[&Org]) -> Result<()> {
        write_orgs(self, orgs).await
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
        remember(self, method, firsts, now).await
    }
}

/// The current rows of `org_ids` (unknown ids are simply absent).
async fn load_orgs(conn: &mut SqliteConnection, org_ids: &[&str]) -> Result<HashMap<String, Org>> {
    let ids = json_array(org_ids.iter().map(|id| json!(id)));
    if ids == "[]" {
        return Ok(HashMap::new());
    }
    let rows: Vec<OrgRow> = sqlx::query_as(concat!(
        "SELECT ",
        org_columns!(),
        " FROM orgs WHERE id IN (SELECT value FROM json_each(?1))"
    ))
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.id.clone(), Org::from(row)))
        .collect())
}

/// Writes the given org rows' mutable columns.
async fn write_orgs(conn: &mut SqliteConnection, orgs: &[&Org]) -> Result<()> {
    let rows = json_array(orgs.iter().map(|org| {
        json!({
            "id": org.id,
            "display_name": org.display_name,
            "allow_custom_sso": org.allow_custom_sso,
            "revision": org.revision,
            "update_time": org.update_time,
        })
    }));
    if rows == "[]" {
        return Ok(());
    }
    sqlx::query(
        "UPDATE orgs SET display_name = u.display_name, allow_custom_sso = u.allow_custom_sso, \
         revision = u.revision, update_time = u.update_time \
         FROM (SELECT value ->> 'id' AS target, value ->> 'display_name' AS display_name, \
               value ->> 'allow_custom_sso' AS allow_custom_sso, value ->> 'revision' AS revision, \
               value ->> 'update_time' AS update_time FROM json_each(?1)) AS u \
         WHERE orgs.id = u.target",
    )
    .bind(rows)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Inserts a queued job for each org and supersedes the org's older jobs:
/// queued ones end CANCELLED, running ones are asked to stop. At most one
/// job per org. Returns what happened, by org id.
pub(super) async fn enqueue_jobs(
    conn: &mut SqliteConnection,
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
    let batch = json_array(new_jobs.iter().map(|job| {
        json!({
            "job_id": job.id.to_string(),
            "org_id": job.org_id,
            "kind": job.kind as i64,
        })
    }));
    // One statement for both kinds of older job. SET expressions all see
    // the row as it was, so `jobs.state` in each CASE is the old state.
    // INDEXED BY: left to itself the planner scans every unfinished job
    // (`jobs_by_state`) and probes the batch for each, instead of looking
    // up each org of the batch among its unfinished jobs.
    let touched: Vec<JobRow> = sqlx::query_as(concat!(
        "UPDATE jobs INDEXED BY jobs_active_by_org SET \
           state = CASE WHEN jobs.state = 1 THEN 5 ELSE jobs.state END, \
           last_error = CASE WHEN jobs.state = 1 THEN n.reason ELSE jobs.last_error END, \
           end_time = CASE WHEN jobs.state = 1 THEN ?2 ELSE jobs.end_time END, \
           update_time = CASE WHEN jobs.state = 1 THEN ?2 ELSE jobs.update_time END, \
           version = CASE WHEN jobs.state = 1 THEN jobs.version + 1 ELSE jobs.version END, \
           cancel_reason = CASE WHEN jobs.state = 2 THEN n.reason ELSE jobs.cancel_reason END \
         FROM (SELECT value ->> 'org_id' AS superseding_org, \
                      'superseded by job ' || (value ->> 'job_id') AS reason \
               FROM json_each(?1)) AS n \
         WHERE jobs.org_id = n.superseding_org AND jobs.state IN (1, 2) \
           AND (jobs.state = 1 OR jobs.cancel_reason IS NULL) \
         RETURNING ",
        job_columns!()
    ))
    .bind(&batch)
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    // `ORDER BY key` keeps `seq` in request order. The other columns take
    // their defaults, which `Job::queued` mirrors (a unit test holds the
    // two together), so nothing needs to be read back.
    sqlx::query(
        "INSERT INTO jobs (id, org_id, kind, state, create_time, update_time) \
         SELECT value ->> 'job_id', value ->> 'org_id', value ->> 'kind', 1, ?2, ?2 \
         FROM json_each(?1) ORDER BY key",
    )
    .bind(&batch)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Enqueued::collect(new_jobs, touched)
}

/// The stored responses of those `request_ids` already used with `method`,
/// by request id.
pub(super) async fn stored_responses(
    conn: &mut SqliteConnection,
    method: &str,
    request_ids: &[&str],
) -> Result<HashMap<String, StoredResponse>> {
    let keys = json_array(request_ids.iter().map(|key| json!(key)));
    if keys == "[]" {
        return Ok(HashMap::new());
    }
    let rows: Vec<StoredResponse> = sqlx::query_as(
        "SELECT request_id, fingerprint, job_id, org_json FROM idempotency_keys \
         WHERE method = ?1 AND request_id IN (SELECT value FROM json_each(?2))",
    )
    .bind(method)
    .bind(keys)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.request_id.clone(), row))
        .collect())
}

/// Stores first responses under their keys, so a retry gets them back.
pub(super) async fn remember(
    conn: &mut SqliteConnection,
    method: &str,
    firsts: &[FirstResponse<'_>],
    now: Micros,
) -> Result<()> {
    if firsts.is_empty() {
        return Ok(());
    }
    let mut rows = Vec::with_capacity(firsts.len());
    for first in firsts {
        let org_json = first.org_json()?;
        rows.push(json!({
            "request_id": first.request_id,
            "fingerprint": first.fingerprint,
            "org_id": first.write.org.id,
            "job_id": first.write.job_id.map(|id| id.to_string()),
            "org_json": org_json,
        }));
    }
    sqlx::query(
        "INSERT INTO idempotency_keys \
         (method, request_id, fingerprint, org_id, job_id, org_json, create_time) \
         SELECT ?1, value ->> 'request_id', value ->> 'fingerprint', value ->> 'org_id', \
                value ->> 'job_id', value ->> 'org_json', ?3 \
         FROM json_each(?2)",
    )
    .bind(method)
    .bind(serde_json::Value::Array(rows).to_string())
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

fn json_array(items: impl Iterator<Item = serde_json::Value>) -> String {
    serde_json::Value::Array(items.collect()).to_string()
}
