//! Tests of the asynchronous path against a real store and an in-memory
//! Auth: ordering, checkpoints, resume, retries, fencing, superseding and
//! cancellation. Each is written once, as `async fn name(store)`, and run
//! on both backends: `jobs::tests::sqlite::name` on a temporary SQLite file
//! and `jobs::tests::postgres::name` on a throw-away PostgreSQL server
//! (skipped, with the reason printed, where PostgreSQL is not installed).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::hub::WatchHub;
use super::runner::{RunError, RunOutcome, Runner, RunnerConfig};
use super::worker::{Wakeup, WorkerConfig, WorkerPool};
use super::{RunningJobs, StopReason, StopSignal};
use crate::domain::job::{Job, JobState};
use crate::error::Error;
use crate::store::{CancelOutcome, LeaseStatus, Store};
use crate::testing::{FakeAuth, member_id, org_with_members, set_allow};

/// Generates, for each test function `async fn name(Arc<dyn Store>)`, a
/// `#[tokio::test]` per backend: `sqlite::name` and `postgres::name`.
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let t = crate::testing::store().await;
                    super::$name(std::sync::Arc::clone(&t.store)).await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let Some(t) = crate::testing::postgres_store().await else {
                        return;
                    };
                    super::$name(std::sync::Arc::clone(&t.store)).await;
                }
            )*
        }
    };
}

backend_tests!(
    disable_sets_policy_first_then_unlinks_everyone_in_order,
    resume_continues_from_the_checkpoint_and_counts_each_member_once,
    transient_errors_are_retried_and_visible_on_the_job,
    an_exhausted_retry_budget_fails_the_run,
    per_member_failures_are_counted_and_listed,
    a_worker_that_lost_its_lease_cannot_write,
    jobs_of_one_org_run_one_at_a_time_in_order_and_other_orgs_run_alongside,
    a_newer_change_supersedes_a_queued_job,
    cancel_rules,
    the_pool_runs_a_job_to_success_and_watchers_see_monotonic_progress,
    pruning_removes_only_jobs_that_ended_before_the_cutoff,
);

const LEASE: Duration = Duration::from_secs(30);

fn runner(store: &Arc<dyn Store>, auth: &Arc<FakeAuth>, config: RunnerConfig) -> Runner {
    Runner {
        store: Arc::clone(store),
        auth: Arc::clone(auth) as Arc<dyn super::auth::AuthGateway>,
        hub: WatchHub::new(),
        config,
        metrics: crate::metrics::JobMetrics::default(),
    }
}

fn fast_config(batch_size: usize, parallelism: usize) -> RunnerConfig {
    RunnerConfig {
        batch_size,
        parallelism,
        max_attempts: 5,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
    }
}

async fn disable_sets_policy_first_then_unlinks_everyone_in_order(store: Arc<dyn Store>) {
    org_with_members(&*store, "acme", 2345).await;
    let auth = FakeAuth::with_linked(2345);
    let write = set_allow(&*store, "acme", false).await;
    let runner = runner(&store, &auth, fast_config(100, 4));

    let claimed = store.claim_job("w1", LEASE).await.unwrap().unwrap();
    assert_eq!(Some(claimed.job.id), write.job_id);
    assert_eq!(
        claimed.job.total_members, 2345,
        "total is the org size at start"
    );
    let outcome = runner.run(&claimed, &StopSignal::default()).await.unwrap();
    assert!(matches!(outcome, RunOutcome::Completed));

    let calls = auth.calls.lock().unwrap().clone();
    assert_eq!(
        calls[0], "policy:false",
        "policy must be set before any unlink"
    );
    assert_eq!(calls.len(), 1 + 24, "2345 members in batches of 100");
    assert!(auth.linked.lock().unwrap().is_empty());
    let max = auth.max_in_flight.load(Ordering::SeqCst);
    assert!(
        (2..=4).contains(&max),
        "parallelism bounded by 4, got {max}"
    );

    let job = store.get_job(claimed.job.id).await.unwrap().unwrap();
    assert_eq!(
        job.state,
        JobState::Running,
        "the worker, not the runner, ends the job"
    );
    assert_eq!(
        (
            job.processed_members,
            job.unlinked_members,
            job.failed_members
        ),
        (2345, 2345, 0)
    );
}

async fn resume_continues_from_the_checkpoint_and_counts_each_member_once(store: Arc<dyn Store>) {
    org_with_members(&*store, "acme", 1000).await;
    let auth = FakeAuth::with_linked(1000);
    set_allow(&*store, "acme", false).await;
    let runner = runner(&store, &auth, fast_config(100, 1));

    // First worker: stop after some checkpoints, as on shutdown.
    let first = store.claim_job("w1", LEASE).await.unwrap().unwrap();
    let stop = StopSignal::default();
    let mut sub = runner.hub.subscribe(first.job.id);
    let run = runner.run(&first, &stop);
    let watch = async {
        let job = sub.next_after(0).await.unwrap();
        let mut seen = job.processed_members;
        while seen < 300 {
            let job = sub.next_after(job_version(&sub)).await.unwrap();
            seen = job.processed_members;
        }
        stop.stop(StopReason::Shutdown);
    };
    let (outcome, ()) = tokio::join!(run, watch);
    assert!(matches!(outcome.unwrap(), RunOutcome::Stopped));
    store.release_lease(&first.lease).await.unwrap();

    let paused = store.get_job(first.job.id).await.unwrap().unwrap();
    assert!(paused.processed_members >= 300 && paused.processed_members < 1000);

    // Second worker resumes after the cursor, not from zero.
    let second = store.claim_job("w2", LEASE).await.unwrap().unwrap();
    assert_eq!(second.job.id, first.job.id);
    assert_eq!(second.job.processed_members, paused.processed_members);
    assert!(second.cursor.is_some());
    assert_eq!(second.job.attempt, 2, "a resume counts as a new attempt");
    let before = auth.calls.lock().unwrap().len();
    runner.run(&second, &StopSignal::default()).await.unwrap();
    let resumed_batches = auth.calls.lock().unwrap().len() - before - 1;
    assert_eq!(
        resumed_batches,
        usize::try_from(1000 - paused.processed_members).unwrap() / 100,
        "only the remaining batches are sent"
    );
    let done = store.get_job(first.job.id).await.unwrap().unwrap();
    assert_eq!(
        done.processed_members, 1000,
        "every member counted exactly once"
    );
    assert!(auth.linked.lock().unwrap().is_empty());
}

fn job_version(sub: &super::hub::Subscription) -> i64 {
    sub.latest().map_or(0, |job| job.version)
}

async fn transient_errors_are_retried_and_visible_on_the_job(store: Arc<dyn Store>) {
    org_with_members(&*store, "acme", 50).await;
    let auth = FakeAuth::with_linked(50);
    auth.fail_next.store(3, Ordering::SeqCst);
    set_allow(&*store, "acme", false).await;
    let runner = runner(&store, &auth, fast_config(10, 2));
    let claimed = store.claim_job("w1", LEASE).await.unwrap().unwrap();
    runner.run(&claimed, &StopSignal::default()).await.unwrap();
    let job = store.get_job(claimed.job.id).await.unwrap().unwrap();
    assert_eq!(job.attempt, 1 + 3, "one claim plus three retries");
    assert!(job.last_error.contains("UNAVAILABLE"), "{}", job.last_error);
    assert_eq!(job.processed_members, 50);
}

async fn an_exhausted_retry_budget_fails_the_run(store: Arc<dyn Store>) {
    org_with_members(&*store, "acme", 10).await;
    let auth = FakeAuth::with_linked(10);
    auth.fail_next.store(100, Ordering::SeqCst);
    set_allow(&*store, "acme", false).await;
    let runner = runner(&store, &auth, fast_config(10, 1));
    let claimed = store.claim_job("w1", LEASE).await.unwrap().unwrap();
    let err = runner
        .run(&claimed, &StopSignal::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, RunError::RetriesExhausted { attempts: 5, .. }),
        "{err:?}"
    );
}

async fn per_member_failures_are_counted_and_listed(store: Arc<dyn Store>) {
    org_with_members(&*store, "acme", 30).await;
    let auth = FakeAuth::with_linked(30);
    *auth.refuse.lock().unwrap() = [member_id(3), member_id(17)].into_iter().collect();
    set_allow(&*store, "acme", false).await;
    let runner = runner(&store, &auth, fast_config(10, 2));
    let claimed = store.claim_job("w1", LEASE).await.unwrap().unwrap();
    runner.run(&claimed, &StopSignal::default()).await.unwrap();
    let job = store.get_job(claimed.job.id).await.unwrap().unwrap();
    assert_eq!(
        (
            job.processed_members,
            job.unlinked_members,
            job.failed_members
        ),
        (30, 28, 2)
    );
    assert_eq!(job.failures.len(), 2);
    let listed = store.list_job_failures(job.id, None, 10).await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|f| f.member_id.clone())
            .collect::<Vec<_>>(),
        [member_id(3), member_id(17)]
    );
    assert_eq!(listed[0].code, "FAILED_PRECONDITION");
}

async fn a_worker_that_lost_its_lease_cannot_write(store: Arc<dyn Store>) {
    org_with_members(&*store, "acme", 10).await;
    set_allow(&*store, "acme", false).await;
    let first = store
        .claim_job("w1", Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2)).await;
    let second = store.claim_job("w2", LEASE).await.unwrap().unwrap();
    assert_eq!(first.job.id, second.job.id, "an expired lease is reclaimed");
    assert!(second.lease.epoch > first.lease.epoch);

    assert_eq!(
        store.renew_lease(&first.lease, LEASE).await.unwrap(),
        LeaseStatus::Lost
    );
    let checkpoint = crate::domain::job::Checkpoint {
        cursor: member_id(5),
        processed: 5,
        ..Default::default()
    };
    assert!(matches!(
        store.checkpoint(&first.lease, &checkpoint).await,
        Err(Error::LeaseLost { .. })
    ));
    assert!(matches!(
        store
            .finish_job(&first.lease, JobState::Succeeded, "")
            .await,
        Err(Error::LeaseLost { .. })
    ));
    let job = store.get_job(first.job.id).await.unwrap().unwrap();
    assert_eq!((job.state, job.processed_members), (JobState::Running, 0));
}

async fn jobs_of_one_org_run_one_at_a_time_in_order_and_other_orgs_run_alongside(
    store: Arc<dyn Store>,
) {
    org_with_members(&*store, "a", 1).await;
    org_with_members(&*store, "b", 1).await;
    let a1 = set_allow(&*store, "a", false).await.job_id.unwrap();
    let b1 = set_allow(&*store, "b", false).await.job_id.unwrap();

    let first = store.claim_job("w", LEASE).await.unwrap().unwrap();
    assert_eq!(first.job.id, a1);
    // A newer change of org a is queued behind the running job, which is
    // asked to stop; org b's job is claimable meanwhile.
    let write = set_allow(&*store, "a", true).await;
    assert_eq!(write.stop_requested, vec![a1]);
    let second = store.claim_job("w", LEASE).await.unwrap().unwrap();
    assert_eq!(second.job.id, b1);
    assert!(
        store.claim_job("w", LEASE).await.unwrap().is_none(),
        "a2 waits for a1"
    );

    store
        .finish_job(&first.lease, JobState::Cancelled, "superseded")
        .await
        .unwrap();
    let third = store.claim_job("w", LEASE).await.unwrap().unwrap();
    assert_eq!(Some(third.job.id), write.job_id);
}

async fn a_newer_change_supersedes_a_queued_job(store: Arc<dyn Store>) {
    org_with_members(&*store, "acme", 1).await;
    let old = set_allow(&*store, "acme", false).await.job_id.unwrap();
    let new = set_allow(&*store, "acme", true).await;
    assert_eq!(new.superseded.len(), 1);
    let old = store.get_job(old).await.unwrap().unwrap();
    assert_eq!(old.state, JobState::Cancelled);
    assert_eq!(
        old.last_error,
        format!("superseded by job {}", new.job_id.unwrap())
    );
}

async fn cancel_rules(store: Arc<dyn Store>) {
    org_with_members(&*store, "acme", 1).await;
    let queued = set_allow(&*store, "acme", false).await.job_id.unwrap();
    let CancelOutcome::Cancelled(job) = store.cancel_job(queued, "by test").await.unwrap() else {
        panic!("a queued job is cancelled at once");
    };
    assert_eq!(
        (job.state, job.last_error.as_str()),
        (JobState::Cancelled, "by test")
    );
    assert!(matches!(
        store.cancel_job(queued, "again").await.unwrap(),
        CancelOutcome::AlreadyCancelled(_)
    ));

    set_allow(&*store, "acme", true).await;
    let claimed = store.claim_job("w", LEASE).await.unwrap().unwrap();
    assert!(matches!(
        store.cancel_job(claimed.job.id, "stop").await.unwrap(),
        CancelOutcome::Requested(_)
    ));
    assert_eq!(
        store.renew_lease(&claimed.lease, LEASE).await.unwrap(),
        LeaseStatus::Held {
            cancel_reason: Some("stop".into())
        },
        "a worker on another replica learns of the request at renewal"
    );
    store
        .finish_job(&claimed.lease, JobState::Succeeded, "")
        .await
        .unwrap();
    assert!(matches!(
        store.cancel_job(claimed.job.id, "late").await,
        Err(Error::FailedPrecondition(_))
    ));
}

/// The pool end to end: enqueue, wake, run, settle, publish.
async fn the_pool_runs_a_job_to_success_and_watchers_see_monotonic_progress(store: Arc<dyn Store>) {
    org_with_members(&*store, "acme", 3000).await;
    let auth = FakeAuth::with_linked(3000);
    let runner = Arc::new(runner(&store, &auth, fast_config(250, 3)));
    let hub = Arc::clone(&runner.hub);
    let wakeup = Arc::new(Wakeup::default());
    let pool = Arc::new(WorkerPool {
        runner,
        running: Arc::new(RunningJobs::default()),
        wakeup: Arc::clone(&wakeup),
        config: WorkerConfig {
            workers: 2,
            lease: LEASE,
            // Long, so the test proves the wake-up, not the poll, starts it.
            poll_interval: Duration::from_secs(3600),
            owner: "test".into(),
        },
    });
    let shutdown = CancellationToken::new();
    let pool_task = tokio::spawn(Arc::clone(&pool).run(shutdown.clone()));

    let job_id = set_allow(&*store, "acme", false).await.job_id.unwrap();
    let mut sub = hub.subscribe(job_id);
    sub.offer(&store.get_job(job_id).await.unwrap().unwrap());
    wakeup.wake();

    let mut seen: Vec<Arc<Job>> = Vec::new();
    let last = tokio::time::timeout(Duration::from_secs(20), async {
        let mut version = 0;
        loop {
            let job = sub.next_after(version).await.unwrap();
            version = job.version;
            seen.push(Arc::clone(&job));
            if job.state.is_terminal() {
                return job;
            }
        }
    })
    .await
    .expect("job finishes");
    assert_eq!(last.state, JobState::Succeeded);
    assert_eq!(last.processed_members, 3000);
    assert!(
        seen.windows(2).all(
            |w| w[0].processed_members <= w[1].processed_members && w[0].version < w[1].version
        )
    );
    shutdown.cancel();
    pool_task.await.unwrap();
}

async fn pruning_removes_only_jobs_that_ended_before_the_cutoff(store: Arc<dyn Store>) {
    org_with_members(&*store, "acme", 1).await;
    org_with_members(&*store, "busy", 1).await;
    let ended = set_allow(&*store, "acme", false).await.job_id.unwrap();
    store.cancel_job(ended, "by test").await.unwrap();
    let queued = set_allow(&*store, "busy", false).await.job_id.unwrap();

    let before_end = crate::domain::now_micros() - 60_000_000;
    assert_eq!(
        store.prune_finished_jobs(before_end).await.unwrap(),
        0,
        "too recent"
    );
    let after_end = crate::domain::now_micros() + 1;
    // The cancelled job, and the two orgs' creation-time policy jobs that
    // the flips superseded (CANCELLED, so ended too).
    assert_eq!(store.prune_finished_jobs(after_end).await.unwrap(), 3);
    assert!(store.get_job(ended).await.unwrap().is_none());
    assert!(
        store.get_job(queued).await.unwrap().is_some(),
        "unfinished jobs are kept"
    );
}
