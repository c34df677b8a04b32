//! The store tests, written once against [`Store`] and run against each
//! backend: `store::tests::sqlite::*` on a temporary SQLite file and
//! `store::tests::postgres::*` on a throw-away PostgreSQL server
//! (`orgauth_testkit::TempPostgres`). Where PostgreSQL is not installed, the
//! PostgreSQL variants print why and pass as skipped.
//!
//! Tests that open two stores on one database play two replicas (or a
//! restart). Backend-specific tests (SQLite's schema refusal; PostgreSQL's
//! locks and concurrent claims across replicas) live beside their backend.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::{CancelOutcome, LeaseStatus, OrgWrite, Store};
use crate::domain::job::{
    Checkpoint, FAILURE_SAMPLE_SIZE, Job, JobFilter, JobKind, JobState, MemberFailure,
};
use crate::domain::now_micros;
use crate::domain::org::{Member, NewOrg, OrgUpdate};
use crate::error::{Error, Result};
use crate::testing::{Fixture, member_id, org_with_members, set_allow};

const LEASE: Duration = Duration::from_secs(30);

/// Generates, for each named test function `async fn name(Fixture)`, a
/// `#[tokio::test]` per backend: `sqlite::name` and `postgres::name`.
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(crate::testing::Fixture::sqlite()).await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let Some(fixture) = crate::testing::Fixture::postgres() else {
                        return;
                    };
                    super::$name(fixture).await;
                }
            )*
        }
    };
}

backend_tests!(
    the_page_token_key_is_random_once_and_then_kept,
    orgs_are_created_read_and_listed_in_bytewise_order,
    create_org_request_ids_replay_the_first_response,
    racing_creates_with_one_request_id_answer_the_first_response,
    members_are_added_removed_and_paged_bytewise,
    update_org_request_ids_replay_across_stores,
    racing_updates_with_one_request_id_answer_the_first_response,
    one_batch_applies_each_update_as_if_sent_one_after_another,
    a_batch_supersedes_queued_jobs_and_asks_running_ones_to_stop,
    jobs_are_listed_newest_first_by_filter_and_page,
    failures_are_recorded_once_sampled_and_paged,
    cancel_rules,
    claims_follow_enqueue_order_per_org,
    an_expired_lease_is_taken_over_and_the_old_one_is_fenced,
    a_released_lease_is_claimable_at_once_and_resumes_at_its_cursor,
    pruning_removes_ended_jobs_in_chunks_with_their_failures_and_old_keys,
    job_counts_follow_the_queue,
);

fn update(org_id: &str, request_id: Option<&str>) -> OrgUpdate {
    OrgUpdate {
        org_id: org_id.into(),
        display_name: None,
        allow_custom_sso: Some(false),
        expected_etag: None,
        request_id: request_id.map(Into::into),
    }
}

fn new_org(id: Option<&str>, allow_custom_sso: bool, request_id: Option<&str>) -> NewOrg {
    NewOrg {
        id: id.map(Into::into),
        display_name: "Acme".into(),
        allow_custom_sso,
        request_id: request_id.map(Into::into),
    }
}

fn members(ids: &[&str]) -> Vec<Member> {
    ids.iter()
        .map(|id| Member {
            id: (*id).into(),
            email: format!("{id}@example.com"),
        })
        .collect()
}

fn failure(member_id: &str) -> MemberFailure {
    MemberFailure {
        member_id: member_id.into(),
        code: "FAILED_PRECONDITION".into(),
        message: format!("{member_id} is locked"),
    }
}

fn ids(jobs: &[(i64, Job)]) -> Vec<Uuid> {
    jobs.iter().map(|(_, job)| job.id).collect()
}

/// Claims and finishes every runnable job, such as the policy jobs that
/// creating an org that allows custom SSO enqueues.
async fn finish_all(store: &dyn Store) {
    while let Some(claimed) = store.claim_job("setup", LEASE).await.expect("claim") {
        store
            .finish_job(&claimed.lease, JobState::Succeeded, "")
            .await
            .expect("finish");
    }
}

/// Writes `updates` as one group-committed batch of the fixture's backend,
/// bypassing the queue, so the test chooses what shares a transaction.
async fn apply_batch(fixture: &Fixture, updates: Vec<OrgUpdate>) -> Vec<Result<OrgWrite>> {
    if let Some(path) = fixture.sqlite_path() {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(path)
            .busy_timeout(Duration::from_secs(10));
        let writer = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .expect("open the SQLite file beside the store");
        return super::sqlite::org_writes::update_orgs(&writer, updates)
            .await
            .expect("the batch commits");
    }
    let url = fixture.postgres_url().expect("a PostgreSQL fixture");
    let pool = sqlx::PgPool::connect(url)
        .await
        .expect("connect to the test database");
    super::postgres::org_writes::update_orgs(&pool, updates)
        .await
        .expect("the batch commits")
}

async fn the_page_token_key_is_random_once_and_then_kept(fixture: Fixture) {
    // Two replicas starting at once agree on one key.
    let (one, two) = (fixture.store().await, fixture.store().await);
    let (a, b) = tokio::join!(one.page_token_key(), two.page_token_key());
    let key = a.unwrap();
    assert_eq!(b.unwrap(), key);
    assert_eq!(key.len(), 32);
    assert_ne!(key, vec![0; 32]);
    assert_eq!(one.page_token_key().await.unwrap(), key);
    // After a restart.
    let three = fixture.store().await;
    assert_eq!(three.page_token_key().await.unwrap(), key);
    // Another database has a key of its own.
    let elsewhere = Fixture::sqlite();
    let other = elsewhere.store().await;
    assert_ne!(other.page_token_key().await.unwrap(), key);
}

async fn orgs_are_created_read_and_listed_in_bytewise_order(fixture: Fixture) {
    let store = fixture.store().await;
    let acme = store
        .create_org(&new_org(Some("acme"), false, None))
        .await
        .unwrap();
    assert_eq!(
        acme.job_id, None,
        "Auth already disallows an org it does not know"
    );
    assert!(acme.new_job.is_none());
    assert_eq!(
        (acme.org.revision, acme.org.member_count, acme.org.etag()),
        (1, 0, "r1".to_owned())
    );
    assert!(acme.org.create_time > 0 && acme.org.create_time == acme.org.update_time);
    assert_eq!(store.get_org("acme").await.unwrap(), Some(acme.org.clone()));
    assert_eq!(store.get_org("nope").await.unwrap(), None);

    let beta = store
        .create_org(&new_org(Some("beta"), true, None))
        .await
        .unwrap();
    let job = beta.new_job.clone().expect("allowing needs a job");
    assert_eq!(beta.job_id, Some(job.id));
    assert_eq!(
        (job.kind, job.state, job.org_id.as_str(), job.version),
        (JobKind::EnableCustomSso, JobState::Queued, "beta", 1)
    );
    assert!(beta.superseded.is_empty() && beta.stop_requested.is_empty());
    assert_eq!(store.get_job(job.id).await.unwrap(), Some(job));

    let assigned = store.create_org(&new_org(None, false, None)).await.unwrap();
    Uuid::try_parse(&assigned.org.id).expect("server-assigned ids are UUIDs");

    let taken = store.create_org(&new_org(Some("acme"), true, None)).await;
    assert!(matches!(taken, Err(Error::AlreadyExists(_))), "{taken:?}");
    assert!(
        !store
            .get_org("acme")
            .await
            .unwrap()
            .unwrap()
            .allow_custom_sso
    );

    for id in ["B", "a", "Z9", "a-z", "a0"] {
        store
            .create_org(&new_org(Some(id), false, None))
            .await
            .unwrap();
    }
    let mut expected: Vec<String> = ["acme", "beta", "B", "a", "Z9", "a-z", "a0"]
        .iter()
        .map(|id| (*id).to_owned())
        .chain([assigned.org.id.clone()])
        .collect();
    // Bytewise: "-" before digits before upper case before lower case, so
    // "a-z" < "a0" and "B" < "a" (a locale's order would differ).
    expected.sort();
    let all: Vec<String> = store
        .list_orgs(None, None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|org| org.id)
        .collect();
    assert_eq!(all, expected);

    let mut paged = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.list_orgs(None, after.as_deref(), 3).await.unwrap();
        assert!(page.len() <= 3);
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        paged.extend(page.into_iter().map(|org| org.id));
    }
    assert_eq!(paged, expected);

    let within: BTreeSet<String> = ["beta", "a", "missing"]
        .iter()
        .map(|id| (*id).to_owned())
        .collect();
    let scoped: Vec<String> = store
        .list_orgs(Some(&within), None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|org| org.id)
        .collect();
    assert_eq!(scoped, ["a", "beta"]);
    let scoped_after: Vec<String> = store
        .list_orgs(Some(&within), Some("a"), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|org| org.id)
        .collect();
    assert_eq!(scoped_after, ["beta"]);
    assert!(
        store
            .list_orgs(Some(&BTreeSet::new()), None, 100)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn create_org_request_ids_replay_the_first_response(fixture: Fixture) {
    let (one, two) = (fixture.store().await, fixture.store().await);
    let request = new_org(None, true, Some("r1"));
    let first = one.create_org(&request).await.unwrap();
    assert!(first.job_id.is_some());
    // Retried against another replica: the first answer, nothing written.
    let replayed = two.create_org(&request).await.unwrap();
    assert_eq!(replayed.org, first.org);
    assert_eq!(replayed.job_id, first.job_id);
    assert_eq!(one.list_orgs(None, None, 100).await.unwrap().len(), 1);
    assert_eq!(
        one.list_jobs(&JobFilter::default(), None, 100)
            .await
            .unwrap()
            .len(),
        1
    );

    let other = NewOrg {
        display_name: "Other".into(),
        ..request.clone()
    };
    let reused = two.create_org(&other).await;
    assert!(
        matches!(reused, Err(Error::InvalidArgument { ref field, .. }) if field == "request_id"),
        "{reused:?}"
    );

    // With a chosen id: a retry is a replay, not ALREADY_EXISTS.
    let named = new_org(Some("acme"), false, Some("r2"));
    let created = one.create_org(&named).await.unwrap();
    assert_eq!(two.create_org(&named).await.unwrap().org, created.org);
    // A new request for a taken id is refused, and its key is not kept.
    let taken = two
        .create_org(&new_org(Some("acme"), false, Some("r3")))
        .await;
    assert!(matches!(taken, Err(Error::AlreadyExists(_))), "{taken:?}");
    let fresh = one
        .create_org(&new_org(Some("acme2"), false, Some("r3")))
        .await
        .unwrap();
    assert_eq!(fresh.org.id, "acme2");
}

async fn racing_creates_with_one_request_id_answer_the_first_response(fixture: Fixture) {
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(fixture.store().await);
    }
    for (request, expected_id) in [
        (new_org(None, true, Some("race")), None),
        (
            new_org(Some("fixed"), true, Some("race-fixed")),
            Some("fixed"),
        ),
    ] {
        let calls: Vec<_> = stores
            .iter()
            .flat_map(|store| [Arc::clone(store), Arc::clone(store)])
            .map(|store| {
                let request = request.clone();
                tokio::spawn(async move { store.create_org(&request).await })
            })
            .collect();
        let mut answers = Vec::new();
        for call in calls {
            answers.push(call.await.unwrap().unwrap());
        }
        let first = &answers[0];
        assert!(first.job_id.is_some());
        for answer in &answers {
            assert_eq!(answer.org, first.org);
            assert_eq!(answer.job_id, first.job_id);
        }
        if let Some(id) = expected_id {
            assert_eq!(first.org.id, id);
        }
        let jobs = stores[0]
            .list_jobs(
                &JobFilter {
                    org_id: Some(first.org.id.clone()),
                    ..JobFilter::default()
                },
                None,
                100,
            )
            .await
            .unwrap();
        assert_eq!(ids(&jobs), first.job_id.into_iter().collect::<Vec<_>>());
    }
    assert_eq!(stores[0].list_orgs(None, None, 100).await.unwrap().len(), 2);
}

async fn members_are_added_removed_and_paged_bytewise(fixture: Fixture) {
    let store = fixture.store().await;
    assert!(matches!(
        store.add_members("nope", &members(&["a"])).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        store.remove_members("nope", &["a".into()]).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        store.list_members("nope", None, 10).await,
        Err(Error::NotFound { .. })
    ));
    store
        .create_org(&new_org(Some("acme"), false, None))
        .await
        .unwrap();
    assert!(
        store
            .list_members("acme", None, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // A member named twice in one call is added once.
    assert_eq!(
        store
            .add_members("acme", &members(&["a", "B", "c", "a"]))
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        store
            .add_members("acme", &members(&["B", "d"]))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store.get_org("acme").await.unwrap().unwrap().member_count,
        4
    );

    let all = store.list_members("acme", None, 10).await.unwrap();
    assert_eq!(all, members(&["B", "a", "c", "d"]));
    let first = store.list_members("acme", None, 2).await.unwrap();
    assert_eq!(first, members(&["B", "a"]));
    let second = store.list_members("acme", Some("a"), 2).await.unwrap();
    assert_eq!(second, members(&["c", "d"]));
    assert!(
        store
            .list_members("acme", Some("d"), 2)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.member_ids_after("acme", None, 3).await.unwrap(),
        ["B", "a", "c"]
    );
    assert_eq!(
        store.member_ids_after("acme", Some("c"), 3).await.unwrap(),
        ["d"]
    );
    assert!(
        store
            .member_ids_after("nope", None, 3)
            .await
            .unwrap()
            .is_empty()
    );

    assert_eq!(
        store
            .remove_members("acme", &["a".into(), "zz".into(), "a".into()])
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store.get_org("acme").await.unwrap().unwrap().member_count,
        3
    );
    assert_eq!(
        store.list_members("acme", None, 10).await.unwrap(),
        members(&["B", "c", "d"])
    );
    // Members are per org.
    org_with_members(&*store, "beta", 2).await;
    assert_eq!(
        store.member_ids_after("beta", None, 10).await.unwrap(),
        [member_id(0), member_id(1)]
    );
    assert_eq!(
        store.get_org("acme").await.unwrap().unwrap().member_count,
        3
    );
}

async fn update_org_request_ids_replay_across_stores(fixture: Fixture) {
    let (one, two) = (fixture.store().await, fixture.store().await);
    for org in ["acme", "beta"] {
        org_with_members(&*one, org, 2).await;
    }
    let first = one.update_org(&update("acme", Some("k"))).await.unwrap();
    let job = first.new_job.clone().expect("disallowing needs a job");
    // Retried on another replica: the first answer, nothing written.
    let replayed = two.update_org(&update("acme", Some("k"))).await.unwrap();
    assert_eq!(replayed.org, first.org);
    assert_eq!(replayed.job_id, Some(job.id));
    assert!(replayed.new_job.is_none() && replayed.superseded.is_empty());
    let org = two.get_org("acme").await.unwrap().unwrap();
    assert_eq!(org.revision, first.org.revision);

    let mut other = update("acme", Some("k"));
    other.allow_custom_sso = Some(true);
    let reused = two.update_org(&other).await;
    assert!(
        matches!(reused, Err(Error::InvalidArgument { ref field, .. }) if field == "request_id"),
        "{reused:?}"
    );
    // Keys are per org: another org's "k" is its own.
    let beta = two.update_org(&update("beta", Some("k"))).await.unwrap();
    assert!(beta.job_id.is_some() && beta.job_id != first.job_id);
    // A failed update keeps no key: the same key works once the org exists.
    let missing = one.update_org(&update("gamma", Some("k2"))).await;
    assert!(
        matches!(missing, Err(Error::NotFound { .. })),
        "{missing:?}"
    );
    org_with_members(&*one, "gamma", 1).await;
    let gamma = two.update_org(&update("gamma", Some("k2"))).await.unwrap();
    assert!(gamma.job_id.is_some());
}

async fn racing_updates_with_one_request_id_answer_the_first_response(fixture: Fixture) {
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(fixture.store().await);
    }
    org_with_members(&*stores[0], "acme", 3).await;
    finish_all(&*stores[0]).await;
    let calls: Vec<_> = stores
        .iter()
        .flat_map(|store| [Arc::clone(store), Arc::clone(store), Arc::clone(store)])
        .map(|store| {
            tokio::spawn(async move { store.update_org(&update("acme", Some("k"))).await })
        })
        .collect();
    let mut answers = Vec::new();
    for call in calls {
        answers.push(call.await.unwrap().unwrap());
    }
    let job_id = answers[0]
        .job_id
        .expect("the first disallow enqueued a job");
    for answer in &answers {
        assert_eq!(answer.org, answers[0].org);
        assert_eq!(answer.job_id, Some(job_id));
    }
    assert_eq!(answers[0].org.revision, 2, "written once");
    let queued = stores[1]
        .list_jobs(
            &JobFilter {
                state: Some(JobState::Queued),
                ..JobFilter::default()
            },
            None,
            100,
        )
        .await
        .unwrap();
    assert_eq!(ids(&queued), [job_id]);
}

async fn one_batch_applies_each_update_as_if_sent_one_after_another(fixture: Fixture) {
    let store = fixture.store().await;
    for org in ["a", "b"] {
        org_with_members(&*store, org, 3).await;
    }
    let mut renamed = update("b", None);
    renamed.allow_custom_sso = None;
    renamed.display_name = Some("Bee".into());
    let mut stale = update("b", None);
    stale.expected_etag = Some("\"1\"".into());
    let mut other_request = update("a", Some("k1"));
    other_request.allow_custom_sso = Some(true);
    let results = apply_batch(
        &fixture,
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
    .await;
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

    // Committed: visible through the store. The job as returned is the job
    // as stored (`Job::queued` mirrors the column defaults).
    let a = store.get_org("a").await.unwrap().unwrap();
    assert_eq!(a, first.org);
    let b = store.get_org("b").await.unwrap().unwrap();
    assert_eq!(b.display_name, "Bee");
    assert_eq!(store.get_job(job.id).await.unwrap().unwrap(), job);
    let other_job = other_org.new_job.unwrap();
    assert_eq!(
        store.get_job(other_job.id).await.unwrap().unwrap(),
        other_job
    );
}

async fn a_batch_supersedes_queued_jobs_and_asks_running_ones_to_stop(fixture: Fixture) {
    let store = fixture.store().await;
    for org in ["queued", "running"] {
        org_with_members(&*store, org, 3).await;
    }
    // Creating an org enqueues a job that sets its policy; finish those.
    finish_all(&*store).await;
    // The "running" org's job is enqueued first, so it is the one claimed.
    let older_running = store.update_org(&update("running", None)).await.unwrap();
    let claimed = store.claim_job("w", LEASE).await.unwrap().unwrap();
    assert_eq!(Some(claimed.job.id), older_running.job_id);
    let older_queued = store.update_org(&update("queued", None)).await.unwrap();

    let on = |org: &str| OrgUpdate {
        allow_custom_sso: Some(true),
        ..update(org, None)
    };
    let (queued_on, running_on) = (on("queued"), on("running"));
    let (queued, running) =
        tokio::join!(store.update_org(&queued_on), store.update_org(&running_on));
    let (queued, running) = (queued.unwrap(), running.unwrap());

    assert_eq!(
        running.stop_requested,
        older_running.job_id.into_iter().collect::<Vec<_>>()
    );
    assert!(running.superseded.is_empty());
    let still_running = store.get_job(claimed.job.id).await.unwrap().unwrap();
    assert_eq!(
        still_running.state,
        JobState::Running,
        "stops at its next batch"
    );
    assert_eq!(
        store.renew_lease(&claimed.lease, LEASE).await.unwrap(),
        LeaseStatus::Held {
            cancel_reason: Some(format!("superseded by job {}", running.job_id.unwrap()))
        }
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
        store.get_job(superseded.id).await.unwrap().unwrap(),
        superseded
    );
}

async fn jobs_are_listed_newest_first_by_filter_and_page(fixture: Fixture) {
    let store = fixture.store().await;
    for org in ["a", "b"] {
        store
            .create_org(&new_org(Some(org), false, None))
            .await
            .unwrap();
    }
    let a1 = set_allow(&*store, "a", true).await.job_id.unwrap();
    let b1 = set_allow(&*store, "b", true).await.job_id.unwrap();
    let a2 = set_allow(&*store, "a", false).await.job_id.unwrap();
    let list = |filter: JobFilter, before: Option<i64>, limit: usize| {
        let store = Arc::clone(&store);
        async move { store.list_jobs(&filter, before, limit).await.unwrap() }
    };

    let all = list(JobFilter::default(), None, 10).await;
    assert_eq!(ids(&all), [a2, b1, a1]);
    assert!(all.windows(2).all(|w| w[0].0 > w[1].0), "seq descending");
    assert_eq!(all[2].1.state, JobState::Cancelled, "a1 was superseded");

    let by_org = JobFilter {
        org_id: Some("a".into()),
        ..JobFilter::default()
    };
    assert_eq!(ids(&list(by_org.clone(), None, 10).await), [a2, a1]);
    let cancelled = JobFilter {
        state: Some(JobState::Cancelled),
        ..JobFilter::default()
    };
    assert_eq!(ids(&list(cancelled, None, 10).await), [a1]);
    let queued = JobFilter {
        state: Some(JobState::Queued),
        ..JobFilter::default()
    };
    assert_eq!(ids(&list(queued, None, 10).await), [a2, b1]);
    let within_b = JobFilter {
        within: Some(["b".to_owned()].into_iter().collect()),
        ..JobFilter::default()
    };
    assert_eq!(ids(&list(within_b.clone(), None, 10).await), [b1]);
    let outside = JobFilter {
        org_id: Some("a".into()),
        ..within_b
    };
    assert!(list(outside, None, 10).await.is_empty());
    let within_none = JobFilter {
        within: Some(BTreeSet::new()),
        ..JobFilter::default()
    };
    assert!(list(within_none, None, 10).await.is_empty());

    // Pages: strictly older than the last seq seen.
    let page = list(JobFilter::default(), None, 2).await;
    assert_eq!(ids(&page), [a2, b1]);
    let next = list(JobFilter::default(), Some(page[1].0), 2).await;
    assert_eq!(ids(&next), [a1]);
    assert!(
        list(JobFilter::default(), Some(next[0].0), 2)
            .await
            .is_empty()
    );
    let org_page = list(by_org, Some(all[0].0), 10).await;
    assert_eq!(ids(&org_page), [a1]);
}

async fn failures_are_recorded_once_sampled_and_paged(fixture: Fixture) {
    let store = fixture.store().await;
    assert!(matches!(
        store.list_job_failures(Uuid::now_v7(), None, 10).await,
        Err(Error::NotFound { .. })
    ));
    org_with_members(&*store, "acme", 40).await;
    finish_all(&*store).await;
    let job_id = set_allow(&*store, "acme", false).await.job_id.unwrap();
    assert!(
        store
            .list_job_failures(job_id, None, 10)
            .await
            .unwrap()
            .is_empty(),
        "a job without failures has an empty list"
    );
    let claimed = store.claim_job("w", LEASE).await.unwrap().unwrap();
    assert_eq!(claimed.job.total_members, 40);

    let first_batch = Checkpoint {
        cursor: member_id(5),
        processed: 6,
        unlinked: 4,
        failures: vec![failure(&member_id(3)), failure(&member_id(1))],
    };
    let progress = store
        .checkpoint(&claimed.lease, &first_batch)
        .await
        .unwrap();
    assert_eq!(progress.cancel_reason, None);
    let job = progress.job;
    assert_eq!(
        (
            job.processed_members,
            job.unlinked_members,
            job.failed_members
        ),
        (6, 4, 2)
    );
    assert_eq!(job.failures, first_batch.failures, "in the order reported");
    assert_eq!(job.version, claimed.job.version + 1);
    assert_eq!(store.get_job(job_id).await.unwrap().unwrap(), job);

    // The same batch again (as after a crash): failures are not counted twice.
    let job = store
        .checkpoint(&claimed.lease, &first_batch)
        .await
        .unwrap()
        .job;
    assert_eq!(job.failed_members, 2);
    assert_eq!(job.failures.len(), 2);

    let many: Vec<MemberFailure> = (10..25).map(|i| failure(&member_id(i))).collect();
    let job = store
        .checkpoint(
            &claimed.lease,
            &Checkpoint {
                cursor: member_id(39),
                processed: 28,
                unlinked: 13,
                failures: many.clone(),
            },
        )
        .await
        .unwrap()
        .job;
    assert_eq!(job.failed_members, 17);
    assert_eq!(job.processed_members, 40);
    assert_eq!(job.failures.len(), FAILURE_SAMPLE_SIZE);
    assert_eq!(job.failures[..2], first_batch.failures[..]);
    assert_eq!(job.failures[2..], many[..FAILURE_SAMPLE_SIZE - 2]);
    assert!(job.total_members >= job.processed_members);

    let mut expected: Vec<String> = [1, 3].into_iter().chain(10..25).map(member_id).collect();
    expected.sort();
    let mut listed = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store
            .list_job_failures(job_id, after.as_deref(), 5)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.member_id.clone());
        listed.extend(page);
    }
    assert_eq!(
        listed
            .iter()
            .map(|f| f.member_id.clone())
            .collect::<Vec<_>>(),
        expected
    );
    assert_eq!(listed[0], failure(&member_id(1)));
}

async fn cancel_rules(fixture: Fixture) {
    let store = fixture.store().await;
    assert!(matches!(
        store.cancel_job(Uuid::now_v7(), "nope").await,
        Err(Error::NotFound { .. })
    ));
    org_with_members(&*store, "acme", 1).await;
    finish_all(&*store).await;
    let queued = set_allow(&*store, "acme", false).await.new_job.unwrap();
    let CancelOutcome::Cancelled(job) = store.cancel_job(queued.id, "by test").await.unwrap()
    else {
        panic!("a queued job is cancelled at once");
    };
    assert_eq!(
        (job.state, job.last_error.as_str(), job.version),
        (JobState::Cancelled, "by test", queued.version + 1)
    );
    assert!(job.end_time.is_some());
    assert_eq!(store.get_job(queued.id).await.unwrap().unwrap(), job);
    let CancelOutcome::AlreadyCancelled(again) =
        store.cancel_job(queued.id, "again").await.unwrap()
    else {
        panic!("a cancelled job stays cancelled");
    };
    assert_eq!(again, job, "nothing changed");

    // A running job is asked to stop; the first reason stands.
    set_allow(&*store, "acme", true).await;
    let claimed = store
        .claim_job("w1", Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    let CancelOutcome::Requested(running) = store.cancel_job(claimed.job.id, "stop").await.unwrap()
    else {
        panic!("a running job stops at its next batch");
    };
    assert_eq!(running.state, JobState::Running);
    assert!(matches!(
        store.cancel_job(claimed.job.id, "later").await.unwrap(),
        CancelOutcome::Requested(_)
    ));
    assert_eq!(
        store.renew_lease(&claimed.lease, LEASE).await.unwrap(),
        LeaseStatus::Held {
            cancel_reason: Some("stop".into())
        },
        "a worker on another replica learns of the request at renewal"
    );
    // A worker that takes the job over learns of it at its claim.
    store.release_lease(&claimed.lease).await.unwrap();
    let resumed = store.claim_job("w2", LEASE).await.unwrap().unwrap();
    assert_eq!(resumed.job.id, claimed.job.id);
    assert_eq!(resumed.cancel_reason.as_deref(), Some("stop"));
    store
        .finish_job(&resumed.lease, JobState::Cancelled, "stop")
        .await
        .unwrap();
    assert!(matches!(
        store.cancel_job(claimed.job.id, "late").await.unwrap(),
        CancelOutcome::AlreadyCancelled(_)
    ));

    let done = set_allow(&*store, "acme", false).await.job_id.unwrap();
    let claimed = store.claim_job("w", LEASE).await.unwrap().unwrap();
    assert_eq!(claimed.job.id, done);
    store
        .finish_job(&claimed.lease, JobState::Succeeded, "")
        .await
        .unwrap();
    assert!(matches!(
        store.cancel_job(done, "late").await,
        Err(Error::FailedPrecondition(_))
    ));
}

async fn claims_follow_enqueue_order_per_org(fixture: Fixture) {
    let store = fixture.store().await;
    for (org, size) in [("a", 3), ("b", 5)] {
        store
            .create_org(&new_org(Some(org), false, None))
            .await
            .unwrap();
        let batch: Vec<Member> = (0..size)
            .map(|i| Member {
                id: member_id(i),
                email: String::new(),
            })
            .collect();
        store.add_members(org, &batch).await.unwrap();
    }
    assert!(store.claim_job("w", LEASE).await.unwrap().is_none());
    let a1 = set_allow(&*store, "a", true).await.new_job.unwrap();
    let b1 = set_allow(&*store, "b", true).await.new_job.unwrap();

    let first = store.claim_job("w", LEASE).await.unwrap().unwrap();
    assert_eq!(first.job.id, a1.id, "oldest first");
    assert_eq!(first.job.state, JobState::Running);
    assert_eq!(first.job.attempt, 1);
    assert_eq!(first.job.version, a1.version + 1);
    assert_eq!(first.job.total_members, 0, "enabling touches no member");
    assert!(first.job.start_time.is_some());
    assert_eq!(first.cursor, None);
    assert_eq!(first.cancel_reason, None);
    assert_eq!(first.lease.job_id, a1.id);
    assert_eq!(store.get_job(a1.id).await.unwrap().unwrap(), first.job);

    // A newer change of org a waits behind its running job; org b's job
    // runs alongside.
    let a2 = set_allow(&*store, "a", false).await;
    assert_eq!(a2.stop_requested, [a1.id]);
    let second = store.claim_job("w", LEASE).await.unwrap().unwrap();
    assert_eq!(second.job.id, b1.id);
    assert!(
        store.claim_job("w", LEASE).await.unwrap().is_none(),
        "a2 waits for a1"
    );

    store
        .finish_job(&first.lease, JobState::Cancelled, "superseded")
        .await
        .unwrap();
    let third = store.claim_job("w", LEASE).await.unwrap().unwrap();
    assert_eq!(Some(third.job.id), a2.job_id);
    assert_eq!(third.job.kind, JobKind::DisableCustomSso);
    assert_eq!(third.job.total_members, 3, "the org's size at the claim");
    assert!(store.claim_job("w", LEASE).await.unwrap().is_none());
}

async fn an_expired_lease_is_taken_over_and_the_old_one_is_fenced(fixture: Fixture) {
    let store = fixture.store().await;
    org_with_members(&*store, "acme", 10).await;
    finish_all(&*store).await;
    set_allow(&*store, "acme", false).await;
    let old = store
        .claim_job("w1", Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2)).await;
    // Another replica takes the job over.
    let other = fixture.store().await;
    let new = other.claim_job("w2", LEASE).await.unwrap().unwrap();
    assert_eq!(new.job.id, old.job.id, "an expired lease is reclaimed");
    assert!(new.lease.epoch > old.lease.epoch);
    assert_eq!(new.job.attempt, 2);
    assert_eq!(new.job.start_time, old.job.start_time, "started once");

    assert_eq!(
        store.renew_lease(&old.lease, LEASE).await.unwrap(),
        LeaseStatus::Lost
    );
    let quiet = Checkpoint {
        cursor: member_id(4),
        processed: 5,
        unlinked: 5,
        failures: Vec::new(),
    };
    let failing = Checkpoint {
        failures: vec![failure(&member_id(2))],
        ..quiet.clone()
    };
    for checkpoint in [&quiet, &failing] {
        let err = store.checkpoint(&old.lease, checkpoint).await.unwrap_err();
        assert!(matches!(err, Error::LeaseLost { .. }), "{err:?}");
    }
    assert!(
        store
            .list_job_failures(old.job.id, None, 10)
            .await
            .unwrap()
            .is_empty(),
        "a fenced checkpoint writes nothing"
    );
    assert!(matches!(
        store.record_retry(&old.lease, "late").await,
        Err(Error::LeaseLost { .. })
    ));
    assert!(matches!(
        store.finish_job(&old.lease, JobState::Succeeded, "").await,
        Err(Error::LeaseLost { .. })
    ));
    // Handing back a lost lease changes nothing.
    store.release_lease(&old.lease).await.unwrap();
    assert!(store.claim_job("w3", LEASE).await.unwrap().is_none());
    let job = store.get_job(old.job.id).await.unwrap().unwrap();
    assert_eq!(job, new.job, "untouched by the old lease");

    // The new lease writes.
    let progress = store.checkpoint(&new.lease, &failing).await.unwrap();
    assert_eq!(
        (progress.job.processed_members, progress.job.failed_members),
        (5, 1)
    );
    let retried = store
        .record_retry(&new.lease, "UNAVAILABLE: down")
        .await
        .unwrap();
    assert_eq!(
        (retried.attempt, retried.last_error.as_str()),
        (3, "UNAVAILABLE: down")
    );
    assert_eq!(retried.version, progress.job.version + 1);
    let done = store
        .finish_job(&new.lease, JobState::Succeeded, "")
        .await
        .unwrap();
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(
        done.last_error, "UNAVAILABLE: down",
        "kept when none is given"
    );
    assert!(done.end_time.is_some());
    assert_eq!(store.get_job(done.id).await.unwrap().unwrap(), done);
    assert_eq!(
        other.renew_lease(&new.lease, LEASE).await.unwrap(),
        LeaseStatus::Lost,
        "an ended job has no lease"
    );
}

async fn a_released_lease_is_claimable_at_once_and_resumes_at_its_cursor(fixture: Fixture) {
    let store = fixture.store().await;
    org_with_members(&*store, "acme", 10).await;
    finish_all(&*store).await;
    set_allow(&*store, "acme", false).await;
    let first = store.claim_job("w1", LEASE).await.unwrap().unwrap();
    assert!(
        store.claim_job("w2", LEASE).await.unwrap().is_none(),
        "held"
    );
    store
        .checkpoint(
            &first.lease,
            &Checkpoint {
                cursor: member_id(4),
                processed: 5,
                unlinked: 5,
                failures: Vec::new(),
            },
        )
        .await
        .unwrap();
    store.release_lease(&first.lease).await.unwrap();
    let second = store.claim_job("w2", LEASE).await.unwrap().unwrap();
    assert_eq!(second.job.id, first.job.id);
    assert_eq!(second.cursor, Some(member_id(4)));
    assert_eq!(second.job.processed_members, 5);
    assert_eq!(second.job.total_members, 10);
    assert_eq!(second.job.attempt, 2);
    assert_eq!(
        store.renew_lease(&first.lease, LEASE).await.unwrap(),
        LeaseStatus::Lost
    );
    assert_eq!(
        store.renew_lease(&second.lease, LEASE).await.unwrap(),
        LeaseStatus::Held {
            cancel_reason: None
        }
    );
}

async fn pruning_removes_ended_jobs_in_chunks_with_their_failures_and_old_keys(fixture: Fixture) {
    // More ended jobs than one pruning chunk (1,000) holds.
    const ORGS: usize = 52;
    const FLIPS: usize = 21;
    let store = fixture.store().await;

    // A finished job with failures, and an idempotency key.
    org_with_members(&*store, "done", 3).await;
    finish_all(&*store).await;
    let done = store.update_org(&update("done", Some("k"))).await.unwrap();
    let done_id = done.job_id.unwrap();
    let claimed = store.claim_job("w", LEASE).await.unwrap().unwrap();
    assert_eq!(claimed.job.id, done_id);
    store
        .checkpoint(
            &claimed.lease,
            &Checkpoint {
                cursor: member_id(2),
                processed: 3,
                unlinked: 2,
                failures: vec![failure(&member_id(1))],
            },
        )
        .await
        .unwrap();
    store
        .finish_job(&claimed.lease, JobState::Succeeded, "")
        .await
        .unwrap();

    // Each flip supersedes the org's queued job: all but the last end
    // CANCELLED.
    let orgs: Vec<String> = (0..ORGS).map(|i| format!("flip{i:02}")).collect();
    for org in &orgs {
        store
            .create_org(&new_org(Some(org), false, None))
            .await
            .unwrap();
    }
    for flip in 0..FLIPS {
        let calls = orgs.iter().map(|org| {
            let store = Arc::clone(&store);
            let org = org.clone();
            async move { set_allow(&*store, &org, flip % 2 == 0).await }
        });
        for write in futures::future::join_all(calls).await {
            assert!(write.job_id.is_some());
        }
    }
    let cancelled = ORGS * (FLIPS - 1);
    let queued_before = store
        .list_jobs(
            &JobFilter {
                state: Some(JobState::Queued),
                ..JobFilter::default()
            },
            None,
            10_000,
        )
        .await
        .unwrap();
    assert_eq!(queued_before.len(), ORGS);

    let long_ago = now_micros() - 60_000_000;
    assert_eq!(
        store.prune_finished_jobs(long_ago).await.unwrap(),
        0,
        "too recent"
    );
    let pruned = store.prune_finished_jobs(now_micros() + 1).await.unwrap();
    // Plus the two jobs of "done": its creation-time policy job and the
    // one with failures.
    assert_eq!(
        pruned,
        u64::try_from(cancelled + 2).unwrap(),
        "every ended job, in chunks"
    );
    assert!(store.get_job(done_id).await.unwrap().is_none());
    assert!(matches!(
        store.list_job_failures(done_id, None, 10).await,
        Err(Error::NotFound { .. })
    ));
    let left = store
        .list_jobs(&JobFilter::default(), None, 10_000)
        .await
        .unwrap();
    assert_eq!(
        ids(&left).into_iter().collect::<HashSet<_>>(),
        ids(&queued_before).into_iter().collect::<HashSet<_>>(),
        "unfinished jobs are kept"
    );
    // The key went too: the same request is carried out anew, and finds
    // nothing to change (a replay would have answered the first job).
    let again = store.update_org(&update("done", Some("k"))).await.unwrap();
    assert_eq!(again.job_id, None);
    assert_eq!(
        store.prune_finished_jobs(now_micros() + 1).await.unwrap(),
        0
    );
}

async fn job_counts_follow_the_queue(fixture: Fixture) {
    let store = fixture.store().await;
    let empty = store.job_counts().await.unwrap();
    assert!(empty.by_state.iter().all(|(_, n)| *n == 0), "{empty:?}");
    assert_eq!(empty.oldest_queued, None);
    for org in ["a", "b"] {
        store
            .create_org(&new_org(Some(org), false, None))
            .await
            .unwrap();
    }
    let first = set_allow(&*store, "a", true).await.new_job.unwrap();
    set_allow(&*store, "b", true).await;
    let count = |counts: &crate::metrics::JobCounts, state: JobState| {
        counts
            .by_state
            .iter()
            .find(|(s, _)| *s == state)
            .map_or(0, |(_, n)| *n)
    };
    let queued = store.job_counts().await.unwrap();
    assert_eq!(count(&queued, JobState::Queued), 2);
    assert_eq!(queued.oldest_queued, Some(first.create_time));

    let claimed = store.claim_job("w", LEASE).await.unwrap().unwrap();
    store
        .finish_job(&claimed.lease, JobState::Succeeded, "")
        .await
        .unwrap();
    let after = store.job_counts().await.unwrap();
    assert_eq!(count(&after, JobState::Queued), 1);
    assert_eq!(count(&after, JobState::Succeeded), 1);
    assert!(after.oldest_queued > Some(first.create_time));
}
