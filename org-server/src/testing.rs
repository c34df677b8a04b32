//! Test fixtures shared by the unit tests: a store on a temporary SQLite
//! file or on a throw-away PostgreSQL server, and an in-memory Auth that
//! records what it was asked.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use orgauth_testkit::TempPostgres;
use sqlx::Connection;
use sqlx::postgres::{PgConnection, PgPoolOptions};

use crate::domain::job::UnlinkOutcome;
use crate::domain::org::{Member, NewOrg, OrgUpdate};
use crate::jobs::auth::{AuthCallError, AuthGateway};
use crate::store::{OrgWrite, PgStore, SqliteStore, Store, StoreOptions};

/// Connections per PostgreSQL test store.
const PG_MAX_CONNECTIONS: u32 = 8;

/// A store on a database that lives as long as this value.
pub struct TestStore {
    pub store: Arc<dyn Store>,
    _fixture: Fixture,
}

/// A temporary SQLite store.
pub async fn store() -> TestStore {
    let fixture = Fixture::sqlite();
    let store = fixture.store().await;
    TestStore {
        store,
        _fixture: fixture,
    }
}

/// A store on a fresh PostgreSQL server; `None` (after printing why) when
/// PostgreSQL is not installed, and the test passes as skipped.
pub async fn postgres_store() -> Option<TestStore> {
    let fixture = Fixture::postgres()?;
    let store = fixture.store().await;
    Some(TestStore {
        store,
        _fixture: fixture,
    })
}

/// One database of one backend, kept until the fixture is dropped, and the
/// means to open any number of stores on it: each its own pools and group
/// commit, as separate processes (replicas) would have.
pub struct Fixture {
    backend: Backend,
}

enum Backend {
    Sqlite {
        _dir: tempfile::TempDir,
        path: PathBuf,
    },
    Postgres {
        _server: TempPostgres,
        url: String,
    },
}

impl Fixture {
    pub fn sqlite() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("org.db");
        Fixture {
            backend: Backend::Sqlite { _dir: dir, path },
        }
    }

    /// `None` when PostgreSQL is not installed (the reason is printed).
    pub fn postgres() -> Option<Fixture> {
        let server = TempPostgres::start()?;
        let url = server.create_database("main");
        Some(Fixture {
            backend: Backend::Postgres {
                _server: server,
                url,
            },
        })
    }

    /// The SQLite database file, for SQLite fixtures.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match &self.backend {
            Backend::Sqlite { path, .. } => Some(path),
            Backend::Postgres { .. } => None,
        }
    }

    /// The PostgreSQL database's URL, for PostgreSQL fixtures.
    pub fn postgres_url(&self) -> Option<&str> {
        match &self.backend {
            Backend::Sqlite { .. } => None,
            Backend::Postgres { url, .. } => Some(url),
        }
    }

    /// A new store on the fixture's database, migrated as the server does.
    pub async fn store(&self) -> Arc<dyn Store> {
        match &self.backend {
            Backend::Sqlite { path, .. } => Arc::new(
                SqliteStore::open(path.to_str().expect("utf-8 path"), &StoreOptions::default())
                    .await
                    .expect("open the SQLite store"),
            ),
            Backend::Postgres { url, .. } => Arc::new(pg_store(url).await),
        }
    }
}

/// A [`PgStore`] on `url`: migrated on a connection of its own, then on a
/// pool of its own.
pub async fn pg_store(url: &str) -> PgStore {
    let mut conn = PgConnection::connect(url)
        .await
        .expect("connect to the test database");
    orgauth_runtime::schema::migrate_postgres(&crate::store::postgres::MIGRATOR, &mut conn)
        .await
        .expect("migrate the test database");
    conn.close().await.expect("close the migration connection");
    let pool = PgPoolOptions::new()
        .max_connections(PG_MAX_CONNECTIONS)
        .connect(url)
        .await
        .expect("open the test pool");
    PgStore::from_pool(pool)
        .await
        .expect("open the PostgreSQL store")
}

pub fn member_id(i: usize) -> String {
    format!("m{i:07}")
}

/// Creates an org that allows custom SSO with `members` members.
pub async fn org_with_members(store: &dyn Store, org_id: &str, members: usize) {
    store
        .create_org(&NewOrg {
            id: Some(org_id.into()),
            display_name: org_id.into(),
            allow_custom_sso: true,
            request_id: None,
        })
        .await
        .expect("create org");
    let ids: Vec<usize> = (0..members).collect();
    for chunk in ids.chunks(1000) {
        let batch: Vec<Member> = chunk
            .iter()
            .map(|&i| Member {
                id: member_id(i),
                email: String::new(),
            })
            .collect();
        store
            .add_members(org_id, &batch)
            .await
            .expect("add members");
    }
}

pub async fn set_allow(store: &dyn Store, org_id: &str, allow: bool) -> OrgWrite {
    store
        .update_org(&OrgUpdate {
            org_id: org_id.into(),
            display_name: None,
            allow_custom_sso: Some(allow),
            expected_etag: None,
            request_id: None,
        })
        .await
        .expect("update org")
}

/// An Auth service in memory. Every member starts linked.
#[derive(Default)]
pub struct FakeAuth {
    pub linked: Mutex<BTreeSet<String>>,
    /// Every call in order: "policy:false", "unlink:m0000000..m0000099".
    pub calls: Mutex<Vec<String>>,
    /// Fail this many of the next calls with UNAVAILABLE.
    pub fail_next: AtomicUsize,
    /// Members Auth refuses to unlink, with a permanent per-member error.
    pub refuse: Mutex<BTreeSet<String>>,
    in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
    pub policies: Mutex<HashMap<String, bool>>,
}

impl FakeAuth {
    pub fn with_linked(members: usize) -> Arc<Self> {
        let auth = FakeAuth::default();
        *auth.linked.lock().unwrap() = (0..members).map(member_id).collect();
        Arc::new(auth)
    }

    fn maybe_fail(&self) -> Result<(), AuthCallError> {
        let failed = self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failed {
            return Err(AuthCallError {
                code: "UNAVAILABLE".into(),
                message: "connection refused".into(),
                transient: true,
            });
        }
        Ok(())
    }
}

#[async_trait]
impl AuthGateway for FakeAuth {
    async fn set_sso_policy(&self, org_id: &str, allow: bool) -> Result<(), AuthCallError> {
        self.maybe_fail()?;
        self.calls.lock().unwrap().push(format!("policy:{allow}"));
        self.policies.lock().unwrap().insert(org_id.into(), allow);
        Ok(())
    }

    async fn batch_unlink(
        &self,
        _org_id: &str,
        member_ids: &[String],
    ) -> Result<Vec<UnlinkOutcome>, AuthCallError> {
        self.maybe_fail()?;
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        // Let other batches start, so parallelism is actually exercised.
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        self.calls.lock().unwrap().push(format!(
            "unlink:{}..{}",
            member_ids.first().map_or("", String::as_str),
            member_ids.last().map_or("", String::as_str)
        ));
        let refuse = self.refuse.lock().unwrap().clone();
        let mut linked = self.linked.lock().unwrap();
        let outcomes = member_ids
            .iter()
            .map(|id| {
                if refuse.contains(id) {
                    UnlinkOutcome::Failed {
                        code: "FAILED_PRECONDITION".into(),
                        message: "member is locked".into(),
                    }
                } else if linked.remove(id) {
                    UnlinkOutcome::Unlinked
                } else {
                    UnlinkOutcome::NotLinked
                }
            })
            .collect();
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        Ok(outcomes)
    }
}
