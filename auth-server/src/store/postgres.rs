//! The PostgreSQL backend: one database shared by any number of auth-server
//! replicas, with the same behaviour as the SQLite backend (the same tests
//! run against both).
//!
//! # Opening
//!
//! [`PgStore::open`] goes through [`open_postgres`], shared with org-server:
//! a bounded, retried first connection ([`AuthError::Connect`] names
//! `HOST:PORT`, the database and the user, never the password), the refusal
//! of a newer schema ([`AuthError::SchemaTooNew`]), migrations, then a pool
//! of at most `--db-max-connections` with `--db-statement-timeout` set on
//! every connection (a statement cut short fails with SQLSTATE 57014,
//! answered UNAVAILABLE so the caller retries).
//!
//! # The invariant, across replicas: no link after a disallow
//!
//! Once SetOrgSsoPolicy(allow_custom_sso=false) has committed, no LinkSso
//! may commit a new link for that org: org-server's unlink job then makes a
//! single pass over the org's members and leaves none linked. On SQLite one
//! write lock serializes everything; here replicas write concurrently, and
//! the org's policy row is the lock:
//!
//! - **LinkSso** runs, in one READ COMMITTED transaction,
//!   `SELECT allow_custom_sso FROM sso_policies WHERE org_id = $1 FOR SHARE`
//!   and, only if that is `true`, the `INSERT`, then commits. The share
//!   lock is held until the commit, so the policy it read cannot change
//!   before its links are committed. Concurrent LinkSso calls of one org
//!   share the lock and do not wait for each other.
//! - **SetOrgSsoPolicy** is one `INSERT … ON CONFLICT (org_id) DO UPDATE`,
//!   which locks an existing row exclusively (as `FOR UPDATE` would) before
//!   changing it. That lock conflicts with `FOR SHARE`, so:
//!   - a LinkSso that locked the row first makes the policy change wait
//!     until its links commit; they were there before the disallow, and the
//!     unlink job that follows the disallow removes them;
//!   - a LinkSso that comes second waits for the policy change to commit,
//!     then (READ COMMITTED re-reads a row it waited for) sees the new row,
//!     `false`, and refuses, inserting nothing.
//! - **No row yet**: an org without a policy row disallows custom SSO, so a
//!   LinkSso that finds no row refuses whatever happens next. The first
//!   SetOrgSsoPolicy of an org inserts the row; a LinkSso cannot see it (or
//!   lock it) before that insert commits, and then it holds the stored value.
//!
//! Nothing else takes these locks: BatchUnlinkSso, reads and CheckSsoLogin
//! never touch a policy row's lock, so unlinking never waits on linking.
//! Statements wait for locks at most `--db-statement-timeout`.
//!
//! # The statements
//!
//! - `link`: the share-locked policy read, then one
//!   `INSERT … SELECT $1, m, $3 FROM unnest($2::text[]) … ON CONFLICT DO
//!   NOTHING`: the batch travels as one array parameter (one round trip for
//!   1,000 members), sorted, so two LinkSso calls with overlapping members
//!   insert them in the same order and cannot deadlock.
//! - `unlink`: one `DELETE … WHERE org_id = $1 AND member_id = ANY($2)
//!   RETURNING member_id`, its own transaction: the whole batch or none of
//!   it. The primary key is probed once per id. Which ids came back decides
//!   each member's UNLINKED / NOT_LINKED answer, in request order
//!   ([`UnlinkBatch::into_results`](crate::domain::UnlinkBatch::into_results)).
//! - `list_connections`: a keyset page, `member_id > $2 ORDER BY member_id
//!   LIMIT $3`, on the primary key. Ids are `COLLATE "C"`, so the order is
//!   bytewise, as on SQLite.
//! - `login_facts`: the policy and the link read by one statement, so from
//!   one snapshot.
//! - `page_token_key`: `INSERT … ON CONFLICT DO NOTHING` of 32 random bytes
//!   drawn here, then a `SELECT` of whatever key is stored: replicas
//!   starting at once agree on the first key committed (the second insert
//!   waits for the first, then does nothing).

use std::str::FromStr;

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool};
use sqlx::{Postgres, Transaction};
use tracing::info;

use super::{
    AuthStore, ConnectionRow, LoginFacts, PolicyRow, StoreOptions, connection_count,
    stored_member_id,
};
use crate::domain::{LinkBatch, MemberId, Micros, OrgId, SsoConnection, SsoPolicy};
use crate::error::AuthError;
use orgauth_runtime::database::{describe, open_postgres};

/// The schema, embedded at build time. Version numbers match the SQLite
/// backend's migrations one for one.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// Members per INSERT when seeding: keeps each statement's array parameter
/// to a few hundred kilobytes however many members are seeded.
const SEED_CHUNK: usize = 10_000;

#[derive(Debug)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to the database `url` names, refuses a schema newer than
    /// this binary, applies pending migrations and opens the pool
    /// ([`orgauth_runtime::database::open_postgres`]).
    pub async fn open(url: &str, options: &StoreOptions) -> Result<Self, AuthError> {
        let pool = open_postgres(url, &MIGRATOR, options).await?;
        info!(
            database = %pool_target(url),
            max_connections = options.max_connections,
            statement_timeout = ?options.statement_timeout,
            "opened postgres database"
        );
        Ok(PgStore { pool })
    }

    /// The pool, for tests that inspect the database directly.
    #[cfg(test)]
    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Where `url` points, for the log line; never the password.
fn pool_target(url: &str) -> String {
    PgConnectOptions::from_str(url)
        .map_or_else(|_| String::from("(unparseable URL)"), |o| describe(&o))
}

/// Member ids as the `text[]` parameter `unnest` and `= ANY` take.
fn id_array(member_ids: &[MemberId]) -> Vec<&str> {
    member_ids.iter().map(MemberId::as_str).collect()
}

/// Inserts connections for `ids`, skipping members already linked; returns
/// how many were new.
async fn insert_connections(
    tx: &mut Transaction<'static, Postgres>,
    org_id: &OrgId,
    ids: &[&str],
    now: Micros,
) -> Result<u64, AuthError> {
    Ok(sqlx::query(
        "INSERT INTO sso_connections (org_id, member_id, create_time) \
         SELECT $1, m, $3 FROM unnest($2::text[]) AS m \
         ON CONFLICT (org_id, member_id) DO NOTHING",
    )
    .bind(org_id.as_str())
    .bind(ids)
    .bind(now)
    .execute(&mut **tx)
    .await?
    .rows_affected())
}

#[async_trait]
impl AuthStore for PgStore {
    async fn set_policy(
        &self,
        org_id: &OrgId,
        allow_custom_sso: bool,
        now: Micros,
    ) -> Result<SsoPolicy, AuthError> {
        // ON CONFLICT DO UPDATE locks an existing row exclusively, waiting
        // for LinkSso transactions holding it FOR SHARE (module docs).
        let row: PolicyRow = sqlx::query_as(
            "INSERT INTO sso_policies (org_id, allow_custom_sso, update_time) \
             VALUES ($1, $2, $3) \
             ON CONFLICT (org_id) DO UPDATE SET \
                 allow_custom_sso = EXCLUDED.allow_custom_sso, \
                 update_time = EXCLUDED.update_time \
             RETURNING allow_custom_sso, update_time",
        )
        .bind(org_id.as_str())
        .bind(allow_custom_sso)
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.into_policy(org_id))
    }

    async fn get_policy(&self, org_id: &OrgId) -> Result<Option<SsoPolicy>, AuthError> {
        let row: Option<PolicyRow> = sqlx::query_as(
            "SELECT allow_custom_sso, update_time FROM sso_policies WHERE org_id = $1",
        )
        .bind(org_id.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|row| row.into_policy(org_id)))
    }

    async fn link(
        &self,
        org_id: &OrgId,
        members: &LinkBatch,
        now: Micros,
    ) -> Result<u64, AuthError> {
        let mut tx = self.pool.begin().await?;
        // FOR SHARE: held until commit, so a SetOrgSsoPolicy(false) either
        // waits for these links or is seen by this read (module docs).
        let allowed: Option<bool> = sqlx::query_scalar(
            "SELECT allow_custom_sso FROM sso_policies WHERE org_id = $1 FOR SHARE",
        )
        .bind(org_id.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        if allowed != Some(true) {
            tx.rollback().await?;
            return Err(AuthError::CustomSsoDisallowed {
                org_id: org_id.to_string(),
            });
        }
        // Sorted: concurrent overlapping batches take row locks in one
        // order, so they wait for each other instead of deadlocking.
        let mut ids = id_array(members.ids());
        ids.sort_unstable();
        let linked = insert_connections(&mut tx, org_id, &ids, now).await?;
        tx.commit().await?;
        Ok(linked)
    }

    async fn unlink(
        &self,
        org_id: &OrgId,
        member_ids: &[MemberId],
    ) -> Result<Vec<MemberId>, AuthError> {
        // One statement is one transaction: all of the batch or none of it.
        // `= ANY($2)` probes the primary key once per id (see the test
        // `plans_use_the_primary_key`).
        let deleted: Vec<String> = sqlx::query_scalar(
            "DELETE FROM sso_connections \
             WHERE org_id = $1 AND member_id = ANY($2) \
             RETURNING member_id",
        )
        .bind(org_id.as_str())
        .bind(id_array(member_ids))
        .fetch_all(&self.pool)
        .await?;
        deleted.into_iter().map(stored_member_id).collect()
    }

    async fn list_connections(
        &self,
        org_id: &OrgId,
        after: Option<&MemberId>,
        limit: u32,
    ) -> Result<Vec<SsoConnection>, AuthError> {
        // The empty string sorts before every valid member id.
        let after = after.map_or("", MemberId::as_str);
        let rows: Vec<ConnectionRow> = sqlx::query_as(
            "SELECT member_id, create_time FROM sso_connections \
             WHERE org_id = $1 AND member_id > $2 \
             ORDER BY member_id LIMIT $3",
        )
        .bind(org_id.as_str())
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| row.into_connection(org_id))
            .collect()
    }

    async fn count_connections(&self, org_id: &OrgId) -> Result<u64, AuthError> {
        let count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM sso_connections WHERE org_id = $1")
                .bind(org_id.as_str())
                .fetch_one(&self.pool)
                .await?;
        connection_count(count)
    }

    async fn login_facts(
        &self,
        org_id: &OrgId,
        member_id: &MemberId,
    ) -> Result<LoginFacts, AuthError> {
        // One statement, so both facts come from the same snapshot.
        let (policy_allows, linked): (bool, bool) = sqlx::query_as(
            "SELECT \
                 COALESCE((SELECT allow_custom_sso FROM sso_policies WHERE org_id = $1), false), \
                 EXISTS (SELECT 1 FROM sso_connections WHERE org_id = $1 AND member_id = $2)",
        )
        .bind(org_id.as_str())
        .bind(member_id.as_str())
        .fetch_one(&self.pool)
        .await?;
        Ok(LoginFacts {
            policy_allows,
            linked,
        })
    }

    async fn seed_connections(
        &self,
        org_id: &OrgId,
        member_ids: &[MemberId],
        now: Micros,
    ) -> Result<u64, AuthError> {
        let mut tx = self.pool.begin().await?;
        let mut linked = 0;
        for chunk in member_ids.chunks(SEED_CHUNK) {
            linked += insert_connections(&mut tx, org_id, &id_array(chunk), now).await?;
        }
        tx.commit().await?;
        Ok(linked)
    }

    async fn page_token_key(&self) -> Result<Vec<u8>, AuthError> {
        // Insert-if-absent, then read whatever is stored. READ COMMITTED: a
        // concurrent first insert makes this one wait and then do nothing,
        // and the SELECT (a new statement, a new snapshot) sees the winner.
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

    async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    //! PostgreSQL only: the row locks behind LinkSso's invariant, the
    //! statement timeout, query plans, and refusals at start. The behaviour
    //! both backends share is tested once, in `store::tests`.

    use std::net::TcpListener;
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::time::Instant;

    use orgauth_testkit::TempPostgres;

    use super::*;

    /// A store on a fresh database of a fresh server; `None` (skipped) when
    /// PostgreSQL is not installed.
    async fn store_with(options: StoreOptions) -> Option<(PgStore, TempPostgres)> {
        let pg = TempPostgres::start()?;
        let url = pg.create_database("auth");
        let store = PgStore::open(&url, &options).await.unwrap();
        Some((store, pg))
    }

    fn org(id: &str) -> OrgId {
        OrgId::parse(id.to_owned()).unwrap()
    }

    fn batch(ids: &[&str]) -> LinkBatch {
        LinkBatch::parse(ids.iter().map(|&id| id.to_owned()).collect()).unwrap()
    }

    fn quick() -> StoreOptions {
        StoreOptions {
            connect_timeout: Duration::from_secs(1),
            ..StoreOptions::default()
        }
    }

    #[tokio::test]
    async fn a_closed_port_is_refused_naming_host_and_port_but_not_the_password() {
        // A port nothing listens on: bound, then released.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("postgres://auth:hunter2@127.0.0.1:{port}/auth");
        let began = Instant::now();
        let err = PgStore::open(&url, &quick()).await.unwrap_err();
        let elapsed = began.elapsed();
        let message = err.to_string();
        assert!(matches!(err, AuthError::Connect { .. }), "{err:?}");
        assert!(
            message.contains(&format!(
                "cannot connect to PostgreSQL at 127.0.0.1:{port} (database auth, user auth): \
                 the host or port is unreachable"
            )),
            "{message}"
        );
        assert!(message.contains("gave up after 1s"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
        // Retried until the timeout, not longer.
        assert!(elapsed >= Duration::from_millis(500), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    }

    #[tokio::test]
    async fn a_silent_server_is_refused_after_the_connect_timeout() {
        // Accepts connections (the kernel does) and never answers.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let url = format!("postgres://auth:hunter2@127.0.0.1:{port}/auth");
        let began = Instant::now();
        let err = PgStore::open(&url, &quick()).await.unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains(&format!(
                "PostgreSQL at 127.0.0.1:{port} (database auth, user auth): no answer within 1s"
            )),
            "{message}"
        );
        assert!(!message.contains("hunter2"), "{message}");
        assert!(began.elapsed() < Duration::from_secs(3));
        drop(listener);
    }

    #[tokio::test]
    async fn a_missing_database_is_refused_at_once() {
        let Some(pg) = TempPostgres::start() else {
            return;
        };
        let began = Instant::now();
        let err = PgStore::open(&pg.url("nope"), &StoreOptions::default())
            .await
            .unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("the server refused: database \"nope\" does not exist"),
            "{message}"
        );
        assert!(began.elapsed() < Duration::from_secs(5), "not retried");
    }

    #[tokio::test]
    async fn every_pooled_connection_gets_the_session_limits() {
        let options = StoreOptions {
            statement_timeout: Duration::from_millis(300),
            max_connections: 3,
            ..StoreOptions::default()
        };
        let Some((store, _pg)) = store_with(options).await else {
            return;
        };
        let mut held = Vec::new();
        for _ in 0..3 {
            let mut conn = store.pool().acquire().await.unwrap();
            let shown: String = sqlx::query_scalar("SHOW statement_timeout")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            assert_eq!(shown, "300ms");
            let idle: String = sqlx::query_scalar("SHOW idle_in_transaction_session_timeout")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            assert_eq!(idle, "300ms");
            let keepalive: String = sqlx::query_scalar("SHOW tcp_keepalives_idle")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            assert_eq!(keepalive, "30", "seconds");
            held.push(conn);
        }
        drop(held);
        // A statement cut short is a transient error: UNAVAILABLE, retried.
        let err: AuthError = sqlx::query("SELECT pg_sleep(2)")
            .execute(store.pool())
            .await
            .unwrap_err()
            .into();
        assert!(err.is_transient(), "{err:?}");
        assert_eq!(err.reason(), "DATABASE_BUSY");

        // 0 turns it off.
        let options = StoreOptions {
            statement_timeout: Duration::ZERO,
            ..StoreOptions::default()
        };
        let Some((store, _pg)) = store_with(options).await else {
            return;
        };
        let shown: String = sqlx::query_scalar("SHOW statement_timeout")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(shown, "0");
    }

    /// A SetOrgSsoPolicy(false) waits for a LinkSso that read the policy
    /// first: the links commit before the disallow does.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_disallow_waits_for_a_link_in_flight() {
        let Some((store, _pg)) = store_with(StoreOptions::default()).await else {
            return;
        };
        let store = Arc::new(store);
        let acme = org("acme");
        store.set_policy(&acme, true, 1).await.unwrap();

        // A LinkSso between its policy read and its commit.
        let mut link = store.pool().begin().await.unwrap();
        let allowed: bool = sqlx::query_scalar(
            "SELECT allow_custom_sso FROM sso_policies WHERE org_id = $1 FOR SHARE",
        )
        .bind("acme")
        .fetch_one(&mut *link)
        .await
        .unwrap();
        assert!(allowed);

        let disallow = tokio::spawn({
            let (store, acme) = (Arc::clone(&store), acme.clone());
            async move { store.set_policy(&acme, false, 2).await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!disallow.is_finished(), "the disallow did not wait");
        sqlx::query(
            "INSERT INTO sso_connections (org_id, member_id, create_time) \
             VALUES ('acme', 'm1', 1)",
        )
        .execute(&mut *link)
        .await
        .unwrap();
        link.commit().await.unwrap();
        let policy = disallow.await.unwrap().unwrap();
        assert!(!policy.allow_custom_sso);
        // The link came first, so the unlink pass after the disallow sees it.
        assert_eq!(
            store
                .unlink(&acme, &[MemberId::new("m1".into()).unwrap()])
                .await
                .unwrap()
                .len(),
            1
        );
    }

    /// A LinkSso that reaches the policy row while a disallow holds it waits,
    /// then sees the disallow and links nothing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_link_behind_a_disallow_sees_it() {
        let Some((store, _pg)) = store_with(StoreOptions::default()).await else {
            return;
        };
        let store = Arc::new(store);
        let acme = org("acme");
        store.set_policy(&acme, true, 1).await.unwrap();

        // SetOrgSsoPolicy(false), written but not yet committed.
        let mut disallow = store.pool().begin().await.unwrap();
        sqlx::query(
            "INSERT INTO sso_policies (org_id, allow_custom_sso, update_time) \
             VALUES ('acme', false, 2) \
             ON CONFLICT (org_id) DO UPDATE SET \
                 allow_custom_sso = EXCLUDED.allow_custom_sso, \
                 update_time = EXCLUDED.update_time",
        )
        .execute(&mut *disallow)
        .await
        .unwrap();

        let link = tokio::spawn({
            let (store, acme) = (Arc::clone(&store), acme.clone());
            async move { store.link(&acme, &batch(&["m1", "m2"]), 3).await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !link.is_finished(),
            "the link did not wait for the policy row"
        );
        disallow.commit().await.unwrap();
        let err = link.await.unwrap().unwrap_err();
        assert!(
            matches!(err, AuthError::CustomSsoDisallowed { .. }),
            "{err:?}"
        );
        assert_eq!(store.count_connections(&acme).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn plans_use_the_primary_key() {
        // Guards the hot paths: ids are COLLATE "C" and the parameters must
        // not force another collation, or the primary key could not serve
        // `= ANY($2)` or the keyset page, and a 1,000,000-member unlink
        // would scan the org once per batch.
        let Some((store, _pg)) = store_with(StoreOptions::default()).await else {
            return;
        };
        let mut conn = store.pool().acquire().await.unwrap();
        // A tiny table is cheaper to scan; forbid that to see the index
        // is usable at all.
        sqlx::query("SET enable_seqscan = off")
            .execute(&mut *conn)
            .await
            .unwrap();
        let plans = [
            sqlx::query_scalar::<_, String>(
                "EXPLAIN DELETE FROM sso_connections \
                 WHERE org_id = $1 AND member_id = ANY($2) RETURNING member_id",
            )
            .bind("acme")
            .bind(vec!["a", "b"])
            .fetch_all(&mut *conn)
            .await
            .unwrap(),
            sqlx::query_scalar::<_, String>(
                "EXPLAIN SELECT member_id, create_time FROM sso_connections \
                 WHERE org_id = $1 AND member_id > $2 ORDER BY member_id LIMIT $3",
            )
            .bind("acme")
            .bind("m")
            .bind(10_i64)
            .fetch_all(&mut *conn)
            .await
            .unwrap(),
        ];
        for plan in plans {
            let plan = plan.join("\n");
            assert!(plan.contains("sso_connections_pkey"), "{plan}");
            assert!(!plan.contains("Sort"), "{plan}");
            assert!(
                plan.contains("Index Cond: ((org_id = 'acme'::text) AND (member_id"),
                "{plan}"
            );
        }
    }

    #[tokio::test]
    async fn a_restarted_database_is_a_transient_error_at_worst() {
        let Some((store, mut pg)) = store_with(quick()).await else {
            return;
        };
        let acme = org("acme");
        store.set_policy(&acme, true, 1).await.unwrap();
        pg.restart();
        // Pooled connections died with the server; each call either
        // succeeds on a new one or fails transiently (UNAVAILABLE).
        let mut answered = false;
        for _ in 0..20 {
            match store.get_policy(&acme).await {
                Ok(policy) => {
                    assert!(policy.unwrap().allow_custom_sso);
                    answered = true;
                    break;
                }
                Err(err) => {
                    assert!(err.is_transient(), "{err:?}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        assert!(answered, "no answer after the restart");
    }
}
