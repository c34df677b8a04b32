//! The store tests, written once against [`AuthStore`] and run against each
//! backend: `store::tests::sqlite::*` on a temporary SQLite file and
//! `store::tests::postgres::*` on a throw-away PostgreSQL server
//! (`orgauth_testkit::TempPostgres`). Where PostgreSQL is not installed, the
//! PostgreSQL variants print why and pass as skipped.
//!
//! Backend-specific tests (SQLite's pragmas and busy lock, PostgreSQL's row
//! locks, statement timeout and connection refusals) live beside their
//! backend.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use orgauth_security::{Caller, Role};
use orgauth_testkit::TempPostgres;
use tempfile::TempDir;

use super::{AuthStore, LoginFacts, StoreOptions, open};
use crate::app::App;
use crate::config::DatabaseUrl;
use crate::domain::{
    LinkBatch, MemberId, Micros, OrgId, SsoPolicy, UnlinkBatch, UnlinkOutcome, UnlinkResult,
};
use crate::error::AuthError;

/// Where a test's databases live, kept until the test ends.
enum Home {
    Sqlite(TempDir),
    Postgres(TempPostgres),
}

/// One backend under test: a database (`main`) and the means to open more
/// stores on it, or on other, empty databases of the same backend.
pub(crate) struct Fixture {
    home: Home,
    url: DatabaseUrl,
}

impl Fixture {
    pub(crate) fn sqlite() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let url = DatabaseUrl::Sqlite(dir.path().join("main.db"));
        Fixture {
            home: Home::Sqlite(dir),
            url,
        }
    }

    /// `None` when PostgreSQL is not installed (the reason is printed).
    pub(crate) fn postgres() -> Option<Fixture> {
        let pg = TempPostgres::start()?;
        let url = DatabaseUrl::Postgres(pg.create_database("main"));
        Some(Fixture {
            home: Home::Postgres(pg),
            url,
        })
    }

    /// The main database's URL.
    pub(crate) fn url(&self) -> &DatabaseUrl {
        &self.url
    }

    /// A new, empty database of the same backend.
    pub(crate) fn other_database(&self, name: &str) -> DatabaseUrl {
        match &self.home {
            Home::Sqlite(dir) => DatabaseUrl::Sqlite(dir.path().join(format!("{name}.db"))),
            Home::Postgres(pg) => DatabaseUrl::Postgres(pg.create_database(name)),
        }
    }

    /// A store on the main database, as the server opens it.
    pub(crate) async fn store(&self) -> Arc<dyn AuthStore> {
        self.open(&self.url).await.unwrap()
    }

    pub(crate) async fn open(&self, url: &DatabaseUrl) -> Result<Arc<dyn AuthStore>, AuthError> {
        open(url, &StoreOptions::default()).await
    }

    /// Records a migration from the future in the main database, as a newer
    /// release would have.
    async fn add_migration(&self, version: i64) {
        let sql = match &self.home {
            Home::Sqlite(_) => format!(
                "INSERT INTO _sqlx_migrations \
                 (version, description, success, checksum, execution_time) \
                 VALUES ({version}, 'from the future', 1, X'00', 0)"
            ),
            Home::Postgres(_) => format!(
                "INSERT INTO _sqlx_migrations \
                 (version, description, success, checksum, execution_time) \
                 VALUES ({version}, 'from the future', true, '\\x00'::bytea, 0)"
            ),
        };
        match &self.home {
            Home::Sqlite(dir) => {
                let path = dir.path().join("main.db");
                let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
                    .await
                    .unwrap();
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&pool)
                    .await
                    .unwrap();
                pool.close().await;
            }
            Home::Postgres(pg) => {
                pg.psql("main", &sql);
            }
        }
    }
}

/// Generates, for each named test function `async fn name(Fixture)`, a
/// `#[tokio::test]` per backend: `sqlite::name` and `postgres::name`.
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::Fixture::sqlite()).await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let Some(fixture) = super::Fixture::postgres() else {
                        return;
                    };
                    super::$name(fixture).await;
                }
            )*
        }
    };
}

backend_tests!(
    reopening_keeps_data_and_skips_applied_migrations,
    the_page_token_key_is_random_once_and_then_kept,
    policies_are_upserted,
    link_is_refused_for_an_unknown_org_and_after_policy_false,
    link_counts_only_new_links,
    connections_are_per_org,
    unlink_returns_what_it_deleted_and_replays_delete_nothing,
    unlink_results_follow_request_order,
    pages_walk_member_id_order_bytewise,
    pages_through_the_app_end_with_no_token,
    seeding_ignores_the_policy_and_spans_statements,
    login_facts_read_policy_and_link,
    no_link_survives_a_committed_disallow,
    a_schema_newer_than_the_binary_is_refused,
);

fn org(id: &str) -> OrgId {
    OrgId::parse(id.to_owned()).unwrap()
}

fn member(id: &str) -> MemberId {
    MemberId::new(id.to_owned()).unwrap()
}

fn members(ids: &[&str]) -> Vec<MemberId> {
    ids.iter().map(|id| member(id)).collect()
}

fn batch(ids: &[&str]) -> LinkBatch {
    LinkBatch::parse(ids.iter().map(|&id| id.to_owned()).collect()).unwrap()
}

fn service() -> Caller {
    Caller::new("org-server", Role::Service, [])
}

async fn reopening_keeps_data_and_skips_applied_migrations(fixture: Fixture) {
    let store = fixture.store().await;
    store.set_policy(&org("acme"), true, 1).await.unwrap();
    store.close().await;

    // Migrations already applied are skipped; data survives.
    let store = fixture.store().await;
    let policy = store.get_policy(&org("acme")).await.unwrap().unwrap();
    assert!(policy.allow_custom_sso);
    store.close().await;
}

async fn the_page_token_key_is_random_once_and_then_kept(fixture: Fixture) {
    let store = fixture.store().await;
    let key = store.page_token_key().await.unwrap();
    assert_eq!(key.len(), 32);
    assert_ne!(key, vec![0; 32]);
    assert_eq!(store.page_token_key().await.unwrap(), key);
    // Another process on the same database (a replica, or after a restart).
    let other = fixture.store().await;
    assert_eq!(other.page_token_key().await.unwrap(), key);
    store.close().await;
    other.close().await;
    let reopened = fixture.store().await;
    assert_eq!(reopened.page_token_key().await.unwrap(), key);

    let elsewhere = fixture
        .open(&fixture.other_database("elsewhere"))
        .await
        .unwrap();
    assert_ne!(elsewhere.page_token_key().await.unwrap(), key);

    // Replicas starting together agree on one key.
    let fresh = fixture.other_database("fresh");
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(fixture.open(&fresh).await.unwrap());
    }
    let keys = futures_join(stores.iter().map(|s| {
        let s = Arc::clone(s);
        tokio::spawn(async move { s.page_token_key().await.unwrap() })
    }))
    .await;
    assert!(keys.windows(2).all(|w| w[0] == w[1]), "{keys:?}");
}

/// Awaits spawned tasks in order.
async fn futures_join<T>(tasks: impl Iterator<Item = tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.unwrap());
    }
    out
}

async fn policies_are_upserted(fixture: Fixture) {
    let store = fixture.store().await;
    let acme = org("acme");
    assert_eq!(store.get_policy(&acme).await.unwrap(), None);

    let set = store.set_policy(&acme, true, 10).await.unwrap();
    assert_eq!(
        set,
        SsoPolicy {
            org_id: acme.clone(),
            allow_custom_sso: true,
            update_time: Some(10)
        }
    );
    let set = store.set_policy(&acme, false, 20).await.unwrap();
    assert!(!set.allow_custom_sso);
    assert_eq!(store.get_policy(&acme).await.unwrap(), Some(set));
}

async fn link_is_refused_for_an_unknown_org_and_after_policy_false(fixture: Fixture) {
    let store = fixture.store().await;
    let acme = org("acme");
    let err = store.link(&acme, &batch(&["m1"]), 1).await.unwrap_err();
    assert!(
        matches!(err, AuthError::CustomSsoDisallowed { .. }),
        "{err:?}"
    );

    store.set_policy(&acme, true, 1).await.unwrap();
    assert_eq!(store.link(&acme, &batch(&["m1"]), 2).await.unwrap(), 1);

    store.set_policy(&acme, false, 3).await.unwrap();
    let err = store.link(&acme, &batch(&["m2"]), 4).await.unwrap_err();
    assert!(
        matches!(err, AuthError::CustomSsoDisallowed { .. }),
        "{err:?}"
    );
    assert_eq!(
        store.count_connections(&acme).await.unwrap(),
        1,
        "m2 not linked"
    );
}

async fn link_counts_only_new_links(fixture: Fixture) {
    let store = fixture.store().await;
    let acme = org("acme");
    store.set_policy(&acme, true, 1).await.unwrap();
    assert_eq!(store.link(&acme, &batch(&["a", "b"]), 2).await.unwrap(), 2);
    assert_eq!(store.link(&acme, &batch(&["c", "b"]), 3).await.unwrap(), 1);
    let listed = store.list_connections(&acme, None, 10).await.unwrap();
    let times: Vec<(&str, Micros)> = listed
        .iter()
        .map(|c| (c.member_id.as_str(), c.create_time))
        .collect();
    assert_eq!(
        times,
        vec![("a", 2), ("b", 2), ("c", 3)],
        "relinking keeps the first time"
    );
}

async fn connections_are_per_org(fixture: Fixture) {
    let store = fixture.store().await;
    for id in ["acme", "globex"] {
        store.set_policy(&org(id), true, 1).await.unwrap();
    }
    store
        .link(&org("acme"), &batch(&["m1", "m2"]), 1)
        .await
        .unwrap();
    store
        .link(&org("globex"), &batch(&["m1"]), 1)
        .await
        .unwrap();

    let unlinked = store
        .unlink(&org("globex"), &members(&["m1", "m2"]))
        .await
        .unwrap();
    assert_eq!(unlinked, members(&["m1"]));
    assert_eq!(store.count_connections(&org("acme")).await.unwrap(), 2);
    assert_eq!(store.count_connections(&org("globex")).await.unwrap(), 0);
}

async fn unlink_returns_what_it_deleted_and_replays_delete_nothing(fixture: Fixture) {
    let store = fixture.store().await;
    let acme = org("acme");
    store.set_policy(&acme, true, 1).await.unwrap();
    store.link(&acme, &batch(&["a", "c"]), 1).await.unwrap();
    store.set_policy(&acme, false, 2).await.unwrap();

    let batch = UnlinkBatch::parse(vec!["c".into(), "b".into(), "a".into()]).unwrap();
    let mut unlinked = store.unlink(&acme, batch.to_unlink()).await.unwrap();
    unlinked.sort();
    assert_eq!(unlinked, members(&["a", "c"]));
    assert!(
        store
            .unlink(&acme, batch.to_unlink())
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.count_connections(&acme).await.unwrap(), 0);
}

fn outcomes(results: &[UnlinkResult]) -> Vec<(&str, &str)> {
    results
        .iter()
        .map(|r| {
            let outcome = match r.outcome {
                UnlinkOutcome::Unlinked => "UNLINKED",
                UnlinkOutcome::NotLinked => "NOT_LINKED",
                UnlinkOutcome::Invalid { .. } => "ERROR",
            };
            (r.member_id.as_str(), outcome)
        })
        .collect()
}

/// BatchUnlinkSso as the API answers it: one result per requested member,
/// in request order, NOT_LINKED for ids the store did not delete.
async fn unlink_results_follow_request_order(fixture: Fixture) {
    let app = App::open(fixture.store().await).await.unwrap();
    let acme = org("acme");
    app.set_policy(&service(), &acme, true).await.unwrap();
    app.link_sso(&service(), &acme, &batch(&["m3", "m1", "z9"]))
        .await
        .unwrap();
    app.set_policy(&service(), &acme, false).await.unwrap();

    let request = ["z9", "unknown", "bad id", "m1", "m2", "m3"];
    let results = app
        .batch_unlink_sso(
            &service(),
            &acme,
            UnlinkBatch::parse(request.iter().map(|&id| id.to_owned()).collect()).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        outcomes(&results),
        [
            ("z9", "UNLINKED"),
            ("unknown", "NOT_LINKED"),
            ("bad id", "ERROR"),
            ("m1", "UNLINKED"),
            ("m2", "NOT_LINKED"),
            ("m3", "UNLINKED"),
        ]
    );
    // A replay (a retried batch) deletes nothing and says so.
    let results = app
        .batch_unlink_sso(
            &service(),
            &acme,
            UnlinkBatch::parse(vec!["m3".into(), "m1".into()]).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        outcomes(&results),
        [("m3", "NOT_LINKED"), ("m1", "NOT_LINKED")]
    );
}

async fn pages_walk_member_id_order_bytewise(fixture: Fixture) {
    let store = fixture.store().await;
    let acme = org("acme");
    let ids: Vec<MemberId> = (0..25).rev().map(|i| member(&format!("m{i:03}"))).collect();
    assert_eq!(store.seed_connections(&acme, &ids, 7).await.unwrap(), 25);

    let first = store.list_connections(&acme, None, 10).await.unwrap();
    assert_eq!(first.len(), 10);
    assert_eq!(first[0].member_id.as_str(), "m000");
    let rest = store
        .list_connections(&acme, Some(&first[9].member_id), 100)
        .await
        .unwrap();
    assert_eq!(rest.len(), 15);
    assert_eq!(rest[0].member_id.as_str(), "m010");

    // Every character a member id may hold, in an order no locale would
    // pick: the pages follow bytes, as on SQLite.
    let globex = org("globex");
    let odd = [
        "b", "B", "a.b", "a-b", "a+b", "a@b", "a_b", "ab", "A_b", "0", "_", "Zz", "z",
    ];
    store
        .seed_connections(&globex, &members(&odd), 1)
        .await
        .unwrap();
    let mut bytewise: Vec<&str> = odd.to_vec();
    bytewise.sort_unstable();
    let mut walked = Vec::new();
    let mut after: Option<MemberId> = None;
    loop {
        let page = store
            .list_connections(&globex, after.as_ref(), 4)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.member_id.clone());
        walked.extend(page.into_iter().map(|c| c.member_id.into_string()));
    }
    assert_eq!(walked, bytewise);
}

/// ListSsoConnections over the app: sealed page tokens, the total, no token
/// on the last page.
async fn pages_through_the_app_end_with_no_token(fixture: Fixture) {
    let app = App::open(fixture.store().await).await.unwrap();
    let admin = Caller::new("ops", Role::Admin, []);
    let acme = org("acme");
    let ids: Vec<MemberId> = (0..7).map(|i| member(&format!("m{i}"))).collect();
    app.store().seed_connections(&acme, &ids, 1).await.unwrap();

    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let request = app.page_request(&acme, 3, &token).unwrap();
        let page = app.list_connections(&admin, &acme, &request).await.unwrap();
        pages += 1;
        assert_eq!(page.total_size, 7);
        seen.extend(page.connections.iter().map(|c| c.member_id.clone()));
        match page.next_page_token {
            Some(next) => token = next,
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ids);
}

async fn seeding_ignores_the_policy_and_spans_statements(fixture: Fixture) {
    let store = fixture.store().await;
    let acme = org("acme");
    // More than one INSERT's worth on both backends.
    let ids: Vec<MemberId> = (0..10_005).map(|i| member(&format!("m{i:06}"))).collect();
    assert_eq!(
        store.seed_connections(&acme, &ids, 1).await.unwrap(),
        u64::try_from(ids.len()).unwrap()
    );
    assert_eq!(
        store.seed_connections(&acme, &ids[..3], 1).await.unwrap(),
        0
    );
    assert_eq!(
        store.count_connections(&acme).await.unwrap(),
        u64::try_from(ids.len()).unwrap()
    );
}

async fn login_facts_read_policy_and_link(fixture: Fixture) {
    let store = fixture.store().await;
    let acme = org("acme");
    let m1 = member("m1");
    let facts = store.login_facts(&acme, &m1).await.unwrap();
    assert_eq!(
        facts,
        LoginFacts {
            policy_allows: false,
            linked: false
        }
    );
    store.set_policy(&acme, true, 1).await.unwrap();
    store.link(&acme, &batch(&["m1"]), 1).await.unwrap();
    let facts = store.login_facts(&acme, &m1).await.unwrap();
    assert_eq!(
        facts,
        LoginFacts {
            policy_allows: true,
            linked: true
        }
    );
}

/// The invariant the unlink job leans on, under concurrency: linkers race a
/// SetOrgSsoPolicy(false) through stores of their own (on PostgreSQL, as
/// replicas would). Once the disallow has returned, one unlink pass over
/// every member that had been tried leaves the org with no connection, and
/// no link attempted after the disallow returned succeeds.
async fn no_link_survives_a_committed_disallow(fixture: Fixture) {
    const LINKERS: usize = 6;
    const ROUNDS: usize = 5;
    let policy_store = fixture.store().await;
    let mut linker_stores = Vec::new();
    for _ in 0..LINKERS {
        // One store each: separate pools, as separate replicas have.
        linker_stores.push(fixture.store().await);
    }
    let acme = org("acme");

    for round in 0..ROUNDS {
        policy_store.set_policy(&acme, true, 1).await.unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let disallowed = Arc::new(AtomicBool::new(false));
        // How many ids each linker has started to link; an id's index is
        // taken before its call starts.
        let started: Arc<Vec<AtomicUsize>> =
            Arc::new((0..LINKERS).map(|_| AtomicUsize::new(0)).collect());
        let mut tasks = Vec::new();
        for (k, store) in linker_stores.iter().enumerate() {
            let (store, stop, disallowed, started) = (
                Arc::clone(store),
                Arc::clone(&stop),
                Arc::clone(&disallowed),
                Arc::clone(&started),
            );
            let acme = acme.clone();
            tasks.push(tokio::spawn(async move {
                let mut late_successes = 0;
                let mut linked = 0;
                while !stop.load(Ordering::SeqCst) {
                    let after_disallow = disallowed.load(Ordering::SeqCst);
                    let i = started[k].fetch_add(1, Ordering::SeqCst);
                    // Two members per call, one shared with the next call,
                    // so concurrent batches overlap.
                    let ids = [
                        format!("r{round}-k{k}-{i:05}"),
                        format!("r{round}-shared-{i}"),
                    ];
                    let ids = LinkBatch::parse(ids.to_vec()).unwrap();
                    match store.link(&acme, &ids, 1).await {
                        Ok(_) if after_disallow => late_successes += 1,
                        Ok(_) => linked += 1,
                        Err(AuthError::CustomSsoDisallowed { .. }) => {}
                        Err(err) => panic!("unexpected link failure: {err:?}"),
                    }
                }
                (linked, late_successes)
            }));
        }
        // Let the linkers get going, then disallow.
        tokio::time::sleep(Duration::from_millis(30)).await;
        policy_store.set_policy(&acme, false, 2).await.unwrap();
        disallowed.store(true, Ordering::SeqCst);

        // The job's single pass: every id any linker had started by now.
        let mut tried = HashSet::new();
        for (k, count) in started.iter().enumerate() {
            for i in 0..count.load(Ordering::SeqCst) {
                tried.insert(format!("r{round}-k{k}-{i:05}"));
                tried.insert(format!("r{round}-shared-{i}"));
            }
        }
        let tried: Vec<MemberId> = tried.into_iter().map(|id| member(&id)).collect();
        for chunk in tried.chunks(1000) {
            policy_store.unlink(&acme, chunk).await.unwrap();
        }
        // Linkers keep trying for a while after the pass.
        tokio::time::sleep(Duration::from_millis(30)).await;
        stop.store(true, Ordering::SeqCst);
        let mut linked_before = 0;
        for task in tasks {
            let (linked, late) = task.await.unwrap();
            assert_eq!(late, 0, "a link started after the disallow succeeded");
            linked_before += linked;
        }
        assert!(
            linked_before > 0,
            "round {round}: no link raced the disallow"
        );
        assert_eq!(
            policy_store.count_connections(&acme).await.unwrap(),
            0,
            "round {round}: a link committed behind the unlink pass"
        );
    }
}

async fn a_schema_newer_than_the_binary_is_refused(fixture: Fixture) {
    let store = fixture.store().await;
    store.set_policy(&org("acme"), true, 1).await.unwrap();
    store.close().await;

    fixture.add_migration(20_991_231_000_000).await;
    let err = fixture.open(fixture.url()).await.err().unwrap();
    assert!(
        matches!(
            err,
            AuthError::SchemaTooNew {
                version: 20_991_231_000_000,
                known: 2
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "database schema version 20991231000000 is newer than this binary (knows up to 2); \
         upgrade the binary"
    );
}
