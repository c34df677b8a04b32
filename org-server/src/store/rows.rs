//! What the two backends share, so that each rule exists once: the rows
//! queries decode into and their conversion to domain types, the records
//! behind idempotency keys, and the UpdateOrg batch algorithm (rounds,
//! replays, planning), written against [`OrgWriteTx`], the handful of
//! set-based statements each backend implements in its `org_writes`.
//!
//! Both backends decode into the same row types: SQLite's columns already
//! have these types, and PostgreSQL's job queries cast theirs (`id::text`,
//! `kind::int8`, `failure_sample::text`, …) in their column list.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::time::Duration;

use uuid::Uuid;

use super::{ClaimedJob, Lease, OrgWrite, Progress};
use crate::domain::Micros;
use crate::domain::job::{FAILURE_SAMPLE_SIZE, Job, JobKind, JobState, MemberFailure};
use crate::domain::org::{NewOrg, Org, OrgUpdate, UpdatePlan, plan_update};
use crate::error::{Error, Result};

/// The idempotency-key namespace of CreateOrg.
pub(super) const CREATE_ORG: &str = "CreateOrg";
/// The idempotency-key namespace of UpdateOrg.
pub(super) const UPDATE_ORG: &str = "UpdateOrg";

#[derive(sqlx::FromRow)]
pub(super) struct OrgRow {
    pub(super) id: String,
    display_name: String,
    allow_custom_sso: bool,
    revision: i64,
    member_count: i64,
    create_time: i64,
    update_time: i64,
}

impl From<OrgRow> for Org {
    fn from(row: OrgRow) -> Self {
        Org {
            id: row.id,
            display_name: row.display_name,
            allow_custom_sso: row.allow_custom_sso,
            revision: row.revision,
            member_count: row.member_count,
            create_time: row.create_time,
            update_time: row.update_time,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct JobRow {
    id: String,
    org_id: String,
    kind: i64,
    state: i64,
    total_members: i64,
    processed_members: i64,
    unlinked_members: i64,
    failed_members: i64,
    attempt: i64,
    last_error: String,
    failure_sample: String,
    version: i64,
    create_time: i64,
    update_time: i64,
    start_time: Option<i64>,
    end_time: Option<i64>,
    cursor: Option<String>,
    pub(super) cancel_reason: Option<String>,
    lease_epoch: i64,
    pub(super) seq: i64,
}

impl JobRow {
    pub(super) fn into_job(self) -> Result<Job> {
        let corrupt = |what: &str| Error::Internal(format!("job {}: corrupt {what}", self.id));
        Ok(Job {
            id: Uuid::try_parse(&self.id).map_err(|_| corrupt("id"))?,
            kind: JobKind::from_i64(self.kind).ok_or_else(|| corrupt("kind"))?,
            state: JobState::from_i64(self.state).ok_or_else(|| corrupt("state"))?,
            failures: serde_json::from_str(&self.failure_sample)
                .map_err(|_| corrupt("failure sample"))?,
            attempt: i32::try_from(self.attempt).unwrap_or(i32::MAX),
            org_id: self.org_id,
            total_members: self.total_members,
            processed_members: self.processed_members,
            unlinked_members: self.unlinked_members,
            failed_members: self.failed_members,
            last_error: self.last_error,
            version: self.version,
            create_time: self.create_time,
            update_time: self.update_time,
            start_time: self.start_time,
            end_time: self.end_time,
        })
    }

    /// The job as a claim returned it, with the lease the claim took.
    pub(super) fn into_claimed(self) -> Result<ClaimedJob> {
        let cursor = self.cursor.clone();
        let cancel_reason = self.cancel_reason.clone();
        let epoch = self.lease_epoch;
        let job = self.into_job()?;
        Ok(ClaimedJob {
            lease: Lease {
                job_id: job.id,
                epoch,
            },
            job,
            cursor,
            cancel_reason,
        })
    }

    /// The job as a checkpoint left it, and whether it was asked to stop.
    pub(super) fn into_progress(self) -> Result<Progress> {
        let cancel_reason = self.cancel_reason.clone();
        Ok(Progress {
            job: self.into_job()?,
            cancel_reason,
        })
    }
}

pub(super) fn lease_lost(lease: &Lease) -> Error {
    Error::LeaseLost {
        job_id: lease.job_id.to_string(),
    }
}

pub(super) fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

/// The failure sample after a checkpoint: the stored one (JSON) topped up
/// with `failures` not yet in it, up to [`FAILURE_SAMPLE_SIZE`]. `None`
/// when the stored sample is already full (nothing to write).
pub(super) fn merged_sample(stored: &str, failures: &[MemberFailure]) -> Option<String> {
    let mut sample: Vec<MemberFailure> = serde_json::from_str(stored).unwrap_or_default();
    if sample.len() >= FAILURE_SAMPLE_SIZE {
        return None;
    }
    for failure in failures {
        if sample.len() == FAILURE_SAMPLE_SIZE {
            break;
        }
        if !sample.iter().any(|s| s.member_id == failure.member_id) {
            sample.push(failure.clone());
        }
    }
    serde_json::to_string(&sample).ok()
}

/// A response stored under an idempotency key.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct StoredResponse {
    pub(super) request_id: String,
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

/// A response to keep under its idempotency key.
pub(super) struct FirstResponse<'a> {
    pub request_id: &'a str,
    pub fingerprint: String,
    pub write: &'a OrgWrite,
}

impl FirstResponse<'_> {
    /// The org as stored with the response (JSON).
    pub(super) fn org_json(&self) -> Result<String> {
        serde_json::to_string(&self.write.org)
            .map_err(|err| Error::Internal(format!("cannot encode org: {err}")))
    }
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

    /// Sorts the older jobs an enqueue touched (`touched`, as updated) under
    /// the new jobs of their orgs. `new_jobs` holds at most one job per org.
    pub(super) fn collect(
        new_jobs: Vec<Job>,
        touched: Vec<JobRow>,
    ) -> Result<HashMap<String, Enqueued>> {
        let expected = new_jobs.len();
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
        if enqueued.len() != expected {
            return Err(Error::Internal(format!(
                "{expected} jobs for {} distinct orgs: at most one job per org",
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
}

/// The statements an UpdateOrg batch is made of, each covering every org of
/// a round at once. Implemented by each backend's connection, and called on
/// the connection of the batch's transaction (`&mut *tx`). (On the
/// connection rather than on `Transaction<'static, _>`: the group commit
/// needs the batch's future to be `Send`, which rustc cannot yet prove
/// through an impl for one lifetime only.)
pub(super) trait OrgWriteTx: Send {
    /// The stored responses of those `request_ids` already used with
    /// `method`, by request id.
    fn stored_responses(
        &mut self,
        method: &str,
        request_ids: &[&str],
    ) -> impl Future<Output = Result<HashMap<String, StoredResponse>>> + Send;

    /// The current rows of `org_ids` (unknown ids are simply absent).
    fn load_orgs(
        &mut self,
        org_ids: &[&str],
    ) -> impl Future<Output = Result<HashMap<String, Org>>> + Send;

    /// Writes the given org rows' mutable columns.
    fn write_orgs(&mut self, orgs: &[&Org]) -> impl Future<Output = Result<()>> + Send;

    /// Inserts a queued job for each org and supersedes the org's older
    /// jobs: queued ones end CANCELLED, running ones are asked to stop. At
    /// most one job per org. Returns what happened, by org id.
    fn enqueue_jobs(
        &mut self,
        jobs: &[(&str, JobKind)],
        now: Micros,
    ) -> impl Future<Output = Result<HashMap<String, Enqueued>>> + Send;

    /// Stores first responses under their keys, so a retry gets them back.
    fn remember(
        &mut self,
        method: &str,
        firsts: &[FirstResponse<'_>],
        now: Micros,
    ) -> impl Future<Output = Result<()>> + Send;
}

/// CreateOrg's answer when the id is taken.
pub(super) fn org_taken(id: &str) -> Error {
    Error::AlreadyExists(format!(
        "org {id:?} already exists; choose another id or leave it empty for a server-assigned one"
    ))
}

/// What CreateOrg writes once its org row is inserted (as `id`, at `now`):
/// the org as created and, when its settings need one, its job, enqueued
/// on `tx`.
pub(super) async fn created_org<T: OrgWriteTx>(
    tx: &mut T,
    new: &NewOrg,
    id: &str,
    now: Micros,
) -> Result<OrgWrite> {
    let mut write = OrgWrite::new(Org {
        id: id.to_owned(),
        display_name: new.display_name.clone(),
        allow_custom_sso: new.allow_custom_sso,
        revision: 1,
        member_count: 0,
        create_time: now,
        update_time: now,
    });
    if let Some(kind) = new.job_kind() {
        let mut enqueued = tx.enqueue_jobs(&[(id, kind)], now).await?;
        if let Some(job) = enqueued.remove(id) {
            job.report(&mut write);
        }
    }
    Ok(write)
}

/// Applies a batch of UpdateOrgs on `tx`, round by round, and returns
/// one result per update, in order. The outer `Err` is a failed statement:
/// the caller then rolls back and nothing of the batch was written. An
/// update's own error (unknown org, stale etag, reused request id) fails
/// that update alone.
pub(super) async fn apply_updates<T: OrgWriteTx>(
    tx: &mut T,
    updates: &[OrgUpdate],
    now: Micros,
) -> Result<Vec<Result<OrgWrite>>> {
    let mut results = Vec::with_capacity(updates.len());
    let mut rest = updates;
    while !rest.is_empty() {
        let (round, later) = rest.split_at(round_len(rest));
        results.extend(update_round(tx, round, now).await?);
        rest = later;
    }
    Ok(results)
}

/// The longest prefix of `updates` whose orgs and request ids are distinct.
/// A round reads each of its orgs once, up front, so a second update of
/// one org (or a second use of one key) goes in a later round, where it
/// sees the first, exactly as if the two had been sent one after another.
pub(super) fn round_len(updates: &[OrgUpdate]) -> usize {
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
pub(super) fn update_key(update: &OrgUpdate) -> Option<String> {
    update
        .request_id
        .as_deref()
        .map(|request_id| format!("{}/{request_id}", update.org_id))
}

/// One round: replays, then plans against the current rows, then the
/// writes of every planned update together.
async fn update_round<T: OrgWriteTx>(
    tx: &mut T,
    round: &[OrgUpdate],
    now: Micros,
) -> Result<Vec<Result<OrgWrite>>> {
    let mut results: Vec<Option<Result<OrgWrite>>> = round.iter().map(|_| None).collect();

    let keys: Vec<Option<String>> = round.iter().map(update_key).collect();
    let key_refs: Vec<&str> = keys.iter().filter_map(|k| k.as_deref()).collect();
    let mut stored = tx.stored_responses(UPDATE_ORG, &key_refs).await?;
    for ((update, key), result) in round.iter().zip(&keys).zip(results.iter_mut()) {
        if let (Some(request_id), Some(key)) = (&update.request_id, key)
            && let Some(first) = stored.remove(key.as_str())
        {
            *result = Some(first.replay(UPDATE_ORG, request_id, &update.fingerprint()));
        }
    }

    let pending: Vec<usize> = (0..round.len()).filter(|&i| results[i].is_none()).collect();
    let pending_orgs: Vec<&str> = pending.iter().map(|&i| round[i].org_id.as_str()).collect();
    let current = tx.load_orgs(&pending_orgs).await?;
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

    let changed: Vec<&Org> = plans
        .iter()
        .filter(|(_, plan)| plan.changed)
        .map(|(_, plan)| &plan.org)
        .collect();
    tx.write_orgs(&changed).await?;
    let jobs: Vec<(&str, JobKind)> = plans
        .iter()
        .filter_map(|(_, plan)| plan.job.map(|kind| (plan.org.id.as_str(), kind)))
        .collect();
    let mut enqueued = tx.enqueue_jobs(&jobs, now).await?;

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
    tx.remember(UPDATE_ORG, &firsts, now).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

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

    fn failure(member_id: &str) -> MemberFailure {
        MemberFailure {
            member_id: member_id.into(),
            code: "FAILED_PRECONDITION".into(),
            message: "locked".into(),
        }
    }

    #[test]
    fn the_failure_sample_is_topped_up_without_duplicates_to_its_size() {
        let first = merged_sample("[]", &[failure("a"), failure("b"), failure("a")])
            .expect("room in an empty sample");
        let sample: Vec<MemberFailure> = serde_json::from_str(&first).expect("json");
        assert_eq!(sample, [failure("a"), failure("b")]);

        let many: Vec<MemberFailure> = (0..20).map(|i| failure(&format!("m{i:02}"))).collect();
        let full = merged_sample(&first, &many).expect("room for eight more");
        let sample: Vec<MemberFailure> = serde_json::from_str(&full).expect("json");
        assert_eq!(sample.len(), FAILURE_SAMPLE_SIZE);
        assert_eq!(sample[2], failure("m00"));
        assert_eq!(merged_sample(&full, &[failure("z")]), None, "already full");
    }
}
