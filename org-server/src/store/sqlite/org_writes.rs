//! The writes behind CreateOrg and UpdateOrg, set-based: each statement
//! covers every org of a batch (its rows travel as one JSON array), so a
//! group-committed batch of 64 UpdateOrgs runs the same few statements,
//! and waits for the same one fsync, as a batch of one.

use std::collections::{HashMap, HashSet};

use serde_json::json;
use sqlx::{Sqlite, SqlitePool, Transaction};
use uuid::Uuid;

use super::{JobRow, OrgRow};
use crate::domain::job::{Job, JobKind, JobState};
use crate::domain::org::{Org, OrgUpdate, UpdatePlan, plan_update};
use crate::domain::{Micros, now_micros};
use crate::error::{Error, Result};
use crate::store::OrgWrite;

type Tx = Transaction<'static, Sqlite>;

/// The idempotency-key namespace of UpdateOrg.
const UPDATE_ORG: &str = "UpdateOrg";

/// Applies a batch of UpdateOrgs in one transaction and returns one result
/// per update, in order. The outer `Err` is a failed transaction: then
/// nothing of the batch was written. An update's own error (unknown org,
/// stale etag, reused request id) fails that update alone.
pub(super) async fn update_orgs(
    writer: &SqlitePool,
    updates: Vec<OrgUpdate>,
) -> Result<Vec<Result<OrgWrite>>> {
    let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
    // Read after taking the lock; see `SqliteStore::begin_write`.
    let now = now_micros();
    let mut results = Vec::with_capacity(updates.len());
    let mut rest = updates.as_slice();
    while !rest.is_empty() {
        let (round, later) = rest.split_at(round_len(rest));
        results.extend(update_round(&mut tx, round, now).await?);
        rest = later;
    }
    tx.commit().await?;
    Ok(results)
}

/// The longest prefix of `updates` whose orgs and request ids are distinct.
/// A round reads each of its orgs once, up front, so a second update of
/// one org (or a second use of one key) goes in a later round, where it
/// sees the first, exactly as if the two had been sent one after another.
fn round_len(updates: &[OrgUpdate]) -> usize {
    let mut orgs = HashSet::new();
    let mut keys = HashSet::new();
    updates
        .iter()
        .position(|update| {
            !orgs.insert(update.org_id.as_str())
                || update
                    .request_id
                    .as_deref()
                    .is_some_and(|key| !keys.insert(key))
        })
        .unwrap_or(updates.len())
}

/// The idempotency key of an UpdateOrg: its request_id within its org.
/// Keys are per org so that one tenant can neither see that another used a
/// request_id nor take one first (org ids hold no '/').
fn update_key(update: &OrgUpdate) -> Option<String> {
    update
        .request_id
        .as_deref()
        .map(|request_id| format!("{}/{request_id}", update.org_id))
}

/// One round: replays, then plans against the current rows, then the
/// writes of every planned update together.
async fn update_round(
    tx: &mut Tx,
    round: &[OrgUpdate],
    now: Micros,
) -> Result<Vec<Result<OrgWrite>>> {
    let mut results: Vec<Option<Result<OrgWrite>>> = round.iter().map(|_| None).collect();

    let keys: Vec<Option<String>> = round.iter().map(update_key).collect();
    let mut stored =
        stored_responses(tx, UPDATE_ORG, keys.iter().filter_map(|k| k.as_deref())).await?;
    for ((update, key), result) in round.iter().zip(&keys).zip(results.iter_mut()) {
        if let (Some(request_id), Some(key)) = (&update.request_id, key)
            && let Some(first) = stored.remove(key.as_str())
        {
            *result = Some(first.replay(UPDATE_ORG, request_id, &update.fingerprint()));
        }
    }

    let pending: Vec<usize> = (0..round.len()).filter(|&i| results[i].is_none()).collect();
    let current = load_orgs(tx, pending.iter().map(|&i| round[i].org_id.as_str())).await?;
    let mut plans: Vec<(usize, UpdatePlan)> = Vec::with_capacity(pending.len());
    for i in pending {
        let update = &round[i];
        let planned = match current.get(&update.org_id) {
            None => Err(Error::org_not_found(&update.org_id)),
            Some(org) => plan_update(org, update, now),
        };
        match planned {
            Ok(plan) => plans.push((i, plan)),
            Err(err) => results[i] = Some(Err(err)),
        }
    }

    write_orgs(
        tx,
        plans
            .iter()
            .filter(|(_, plan)| plan.changed)
            .map(|(_, plan)| &plan.org),
    )
    .await?;
    let jobs: Vec<(&str, JobKind)> = plans
        .iter()
        .filter_map(|(_, plan)| plan.job.map(|kind| (plan.org.id.as_str(), kind)))
        .collect();
    let mut enqueued = enqueue_jobs(tx, &jobs, now).await?;

    let writes: Vec<(usize, OrgWrite)> = plans
        .into_iter()
        .map(|(i, plan)| {
            let mut write = OrgWrite::new(plan.org);
            if let Some(job) = enqueued.remove(&write.org.id) {
                job.report(&mut write);
            }
            (i, write)
        })
        .collect();
    let firsts: Vec<FirstResponse<'_>> = writes
        .iter()
        .filter_map(|(i, write)| {
            keys[*i].as_deref().map(|key| FirstResponse {
                request_id: key,
                fingerprint: round[*i].fingerprint(),
                write,
            })
        })
        .collect();
    remember(tx, UPDATE_ORG, &firsts, now).await?;
    for (i, write) in writes {
        results[i] = Some(Ok(write));
    }

    results
        .into_iter()
        .map(|result| {
            result.ok_or_else(|| Error::Internal("an update of a batch got no result".into()))
        })
        .collect()
}

/// The current rows of `org_ids` (unknown ids are simply absent).
async fn load_orgs<'a>(
    tx: &mut Tx,
    org_ids: impl Iterator<Item = &'a str>,
) -> Result<HashMap<String, Org>> {
    let ids = json_array(org_ids.map(|id| json!(id)));
    if ids == "[]" {
        return Ok(HashMap::new());
    }
    let rows: Vec<OrgRow> = sqlx::query_as(concat!(
        "SELECT ",
        org_columns!(),
        " FROM orgs WHERE id IN (SELECT value FROM json_each(?1))"
    ))
    .bind(ids)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.id.clone(), Org::from(row)))
        .collect())
}

/// Writes the given org rows' mutable columns.
async fn write_orgs<'a>(tx: &mut Tx, orgs: impl Iterator<Item = &'a Org>) -> Result<()> {
    let rows = json_array(orgs.map(|org| {
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
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// What enqueueing a job did to its org's jobs.
#[derive(Debug)]
pub(super) struct Enqueued {
    job: Job,
    /// The org's queued jobs, now CANCELLED.
    superseded: Vec<Job>,
    /// The org's running jobs, now asked to stop at their next batch.
    stop_requested: Vec<Uuid>,
}

impl Enqueued {
    pub(super) fn report(self, write: &mut OrgWrite) {
        write.job_id = Some(self.job.id);
        write.new_job = Some(self.job);
        write.superseded = self.superseded;
        write.stop_requested = self.stop_requested;
    }
}

/// Inserts a queued job for each org and supersedes the org's older jobs:
/// queued ones end CANCELLED, running ones are asked to stop. At most one
/// job per org. Returns what happened, by org id.
pub(super) async fn enqueue_jobs(
    tx: &mut Tx,
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
    .fetch_all(&mut **tx)
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
    .execute(&mut **tx)
    .await?;

    let mut enqueued: HashMap<String, Enqueued> = new_jobs
        .into_iter()
        .map(|job| {
            let org_id = job.org_id.clone();
            let entry = Enqueued {
                job,
                superseded: Vec::new(),
                stop_requested: Vec::new(),
            };
            (org_id, entry)
        })
        .collect();
    if enqueued.len() != jobs.len() {
        return Err(Error::Internal(format!(
            "{} jobs for {} distinct orgs: at most one job per org",
            jobs.len(),
            enqueued.len()
        )));
    }
    for row in touched {
        let older = row.into_job()?;
        let Some(entry) = enqueued.get_mut(&older.org_id) else {
            return Err(Error::Internal(format!(
                "superseded job {} of an org without a new job",
                older.id
            )));
        };
        if older.state == JobState::Running {
            entry.stop_requested.push(older.id);
        } else {
            entry.superseded.push(older);
        }
    }
    Ok(enqueued)
}

/// A response stored under an idempotency key.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct StoredResponse {
    request_id: String,
    fingerprint: String,
    job_id: Option<String>,
    org_json: String,
}

impl StoredResponse {
    /// The first response again, or INVALID_ARGUMENT when the key was first
    /// used for a different request.
    pub(super) fn replay(
        self,
        method: &str,
        request_id: &str,
        fingerprint: &str,
    ) -> Result<OrgWrite> {
        if self.fingerprint != fingerprint {
            return Err(Error::invalid(
                "request_id",
                format!(
                    "{request_id:?} was already used for a different {method} request; \
                     use a new request_id for a new request"
                ),
            ));
        }
        let org: Org = serde_json::from_str(&self.org_json)
            .map_err(|err| Error::Internal(format!("corrupt idempotency record: {err}")))?;
        let mut write = OrgWrite::new(org);
        write.job_id = self
            .job_id
            .as_deref()
            .and_then(|id| Uuid::try_parse(id).ok());
        Ok(write)
    }
}

/// The stored responses of those `request_ids` already used with `method`,
/// by request id.
pub(super) async fn stored_responses<'a>(
    tx: &mut Tx,
    method: &str,
    request_ids: impl Iterator<Item = &'a str>,
) -> Result<HashMap<String, StoredResponse>> {
    let keys = json_array(request_ids.map(|key| json!(key)));
    if keys == "[]" {
        return Ok(HashMap::new());
    }
    let rows: Vec<StoredResponse> = sqlx::query_as(
        "SELECT request_id, fingerprint, job_id, org_json FROM idempotency_keys \
         WHERE method = ?1 AND request_id IN (SELECT value FROM json_each(?2))",
    )
    .bind(method)
    .bind(keys)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.request_id.clone(), row))
        .collect())
}

/// A response to keep under its idempotency key.
pub(super) struct FirstResponse<'a> {
    pub request_id: &'a str,
    pub fingerprint: String,
    pub write: &'a OrgWrite,
}

/// Stores first responses under their keys, so a retry gets them back.
pub(super) async fn remember(
    tx: &mut Tx,
    method: &str,
    firsts: &[FirstResponse<'_>],
    now: Micros,
) -> Result<()> {
    if firsts.is_empty() {
        return Ok(());
    }
    let mut rows = Vec::with_capacity(firsts.len());
    for first in firsts {
        let org_json = serde_json::to_string(&first.write.org)
            .map_err(|err| Error::Internal(format!("cannot encode org: {err}")))?;
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
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn json_array(items: impl Iterator<Item = serde_json::Value>) -> String {
    serde_json::Value::Array(items.collect()).to_string()
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

    use super::*;
    use crate::store::{Store, StoreOptions};
    use crate::testing::{org_with_members, store};

    /// The store's database file, opened beside it, to call `update_orgs`
    /// with a batch of our choosing.
    async fn writer_beside(path: &std::path::Path) -> SqlitePool {
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .unwrap()
            .busy_timeout(std::time::Duration::from_secs(10));
        SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .unwrap()
    }

    fn update(org_id: &str, request_id: Option<&str>) -> OrgUpdate {
        OrgUpdate {
            org_id: org_id.into(),
            display_name: None,
            allow_custom_sso: Some(false),
            expected_etag: None,
            request_id: request_id.map(Into::into),
        }
    }

    #[test]
    fn a_round_ends_before_an_org_or_key_repeats() {
        let batch = [
            update("a", Some("k1")),
            update("b", None),
            update("c", Some("k2")),
            update("a", None),
        ];
        assert_eq!(round_len(&batch), 3, "second update of org a");
        let keys = [update("a", Some("k")), update("b", Some("k"))];
        assert_eq!(round_len(&keys), 1, "second use of key k");
        assert_eq!(round_len(&batch[1..]), 3);
        assert_eq!(round_len(&batch[..1]), 1);
    }

    #[tokio::test]
    async fn one_batch_applies_each_update_as_if_sent_one_after_another() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("org.db");
        let store =
            crate::store::SqliteStore::open(path.to_str().unwrap(), &StoreOptions::default())
                .await
                .unwrap();
        for org in ["a", "b"] {
            org_with_members(&store, org, 3).await;
        }
        let writer = writer_beside(&path).await;
        let mut renamed = update("b", None);
        renamed.allow_custom_sso = None;
        renamed.display_name = Some("Bee".into());
        let mut stale = update("b", None);
        stale.expected_etag = Some("\"1\"".into());
        let mut other_request = update("a", Some("k1"));
        other_request.allow_custom_sso = Some(true);
        let results = update_orgs(
            &writer,
            vec![
                update("a", Some("k1")),
                update("missing", None),
                renamed,
                // Same org again: sees "a" already disabled, so no new job.
                update("a", None),
                // Same key, same request: the first answer again.
                update("a", Some("k1")),
                // Same key, another request.
                other_request,
                stale,
                // Keys are per org: another org's "k1" is its own.
                update("b", Some("k1")),
            ],
        )
        .await
        .unwrap();
        let [
            first,
            missing,
            renamed,
            again,
            replayed,
            reused,
            stale,
            other_org,
        ] = <[Result<OrgWrite>; 8]>::try_from(results).unwrap();

        let first = first.unwrap();
        let job = first.new_job.clone().unwrap();
        assert_eq!(first.job_id, Some(job.id));
        assert!(!first.org.allow_custom_sso);
        assert_eq!(first.org.revision, 2);
        assert!(matches!(missing, Err(Error::NotFound { .. })));
        let renamed = renamed.unwrap();
        assert_eq!(renamed.org.display_name, "Bee");
        assert_eq!(renamed.job_id, None);
        let again = again.unwrap();
        assert_eq!(again.job_id, None, "no change, no job");
        assert_eq!(again.org.revision, 2);
        let replayed = replayed.unwrap();
        assert_eq!(replayed.job_id, first.job_id);
        assert_eq!(replayed.org, first.org);
        assert!(
            matches!(reused, Err(Error::InvalidArgument { ref field, .. }) if field == "request_id")
        );
        assert!(matches!(stale, Err(Error::Aborted(_))), "{stale:?}");
        let other_org = other_org.unwrap();
        assert!(other_org.job_id.is_some() && other_org.job_id != first.job_id);

        // Committed: visible through the store.
        let a = store.get_org("a").await.unwrap().unwrap();
        assert_eq!(a, first.org);
        let b = store.get_org("b").await.unwrap().unwrap();
        assert_eq!(b.display_name, "Bee");
        assert_eq!(store.get_job(job.id).await.unwrap().unwrap(), job);
    }

    #[tokio::test]
    async fn a_batch_supersedes_queued_jobs_and_asks_running_ones_to_stop() {
        let t = store().await;
        for org in ["queued", "running"] {
            org_with_members(&*t.store, org, 3).await;
        }
        let lease = std::time::Duration::from_secs(30);
        // Creating an org enqueues a job that sets its policy; finish those.
        while let Some(setup) = t.store.claim_job("w", lease).await.unwrap() {
            t.store
                .finish_job(&setup.lease, JobState::Succeeded, "")
                .await
                .unwrap();
        }
        // The "running" org's job is enqueued first, so it is the one claimed.
        let older_running = t.store.update_org(&update("running", None)).await.unwrap();
        let claimed = t.store.claim_job("w", lease).await.unwrap().unwrap();
        assert_eq!(Some(claimed.job.id), older_running.job_id);
        let older_queued = t.store.update_org(&update("queued", None)).await.unwrap();

        let on = |org: &str| OrgUpdate {
            allow_custom_sso: Some(true),
            ..update(org, None)
        };
        let (queued_on, running_on) = (on("queued"), on("running"));
        let (queued, running) = tokio::join!(
            t.store.update_org(&queued_on),
            t.store.update_org(&running_on)
        );
        let (queued, running) = (queued.unwrap(), running.unwrap());

        assert_eq!(
            running.stop_requested,
            older_running.job_id.into_iter().collect::<Vec<_>>()
        );
        assert!(running.superseded.is_empty());
        let still_running = t.store.get_job(claimed.job.id).await.unwrap().unwrap();
        assert_eq!(
            still_running.state,
            JobState::Running,
            "stops at its next batch"
        );

        assert!(queued.stop_requested.is_empty());
        let [superseded] = <[Job; 1]>::try_from(queued.superseded).unwrap();
        assert_eq!(Some(superseded.id), older_queued.job_id);
        assert_eq!(superseded.state, JobState::Cancelled);
        assert_eq!(
            superseded.last_error,
            format!("superseded by job {}", queued.job_id.unwrap())
        );
        assert_eq!(
            t.store.get_job(superseded.id).await.unwrap().unwrap(),
            superseded
        );
    }
}
