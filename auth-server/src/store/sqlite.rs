//! The SQLite backend: one file, no setup.
//!
//! Durability is not traded for speed: WAL with `synchronous=FULL`, so an
//! acknowledged unlink or policy change survives power loss. Read-then-write
//! transactions start with `BEGIN IMMEDIATE`, taking the write lock before
//! the read, so the policy LinkSso checks cannot change before it commits.
//! Batches travel as one JSON array parameter expanded by `json_each`, so a
//! 1,000-member write is one statement, not 1,000 round trips.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};
use tracing::info;

use super::{
    AuthStore, ConnectionRow, LoginFacts, PolicyRow, StoreOptions, connection_count,
    stored_member_id,
};
use crate::domain::{LinkBatch, MemberId, Micros, OrgId, SsoConnection, SsoPolicy};
use crate::error::AuthError;

/// The schema, embedded at build time. Version numbers match the PostgreSQL
/// backend's migrations one for one.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a statement waits for another connection's write lock before
/// failing with SQLITE_BUSY (answered as UNAVAILABLE, so callers retry).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Members per INSERT when seeding: keeps each statement's JSON parameter to
/// a few hundred kilobytes however many members are seeded.
const SEED_CHUNK: usize = 10_000;

#[derive(Debug)]
pub struct SqliteStore {
    /// Connections for reads; WAL lets them run beside the writer.
    pool: SqlitePool,
    /// The one connection every write goes through. SQLite allows one
    /// writer at a time; writers of this process (concurrent BatchUnlinkSso
    /// calls above all) queue here, first come first served, instead of
    /// colliding on the database lock, where SQLite's busy handler makes
    /// them sleep (1, 2, 5, 10 … ms) and retry.
    writer: SqlitePool,
}

impl SqliteStore {
    /// Opens the database file at `path`, creating it and its parent
    /// directories if missing, and applies pending migrations, with the
    /// default [`StoreOptions`].
    pub async fn open(path: &Path) -> Result<Self, AuthError> {
        Self::open_with_options(path, &StoreOptions::default()).await
    }

    /// Opens as [`SqliteStore::open`] does, with `options.max_connections`
    /// readers beside the one writer. Refuses ([`AuthError::SchemaTooNew`])
    /// a database a newer binary has migrated.
    pub async fn open_with_options(path: &Path, options: &StoreOptions) -> Result<Self, AuthError> {
        Self::open_with(path, options.max_connections, BUSY_TIMEOUT).await
    }

    async fn open_with(
        path: &Path,
        max_connections: u32,
        busy_timeout: Duration,
    ) -> Result<Self, AuthError> {
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|source| AuthError::CreateDir {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(busy_timeout)
            .foreign_keys(true);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            // A connection to a local file cannot go stale; the default
            // ping on every acquire is a wasted round trip to its thread.
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await?;
        {
            let mut conn = writer.acquire().await?;
            orgauth_runtime::schema::migrate_sqlite(&MIGRATOR, &mut conn).await?;
        }
        let pool = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(max_connections)
            .connect_with(options)
            .await?;
        info!(path = %path.display(), "opened sqlite database");
        Ok(SqliteStore { pool, writer })
    }

    /// A transaction holding the write lock from its first statement.
    async fn begin_immediate(&self) -> Result<Transaction<'static, Sqlite>, AuthError> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }
}

/// A batch of member ids as the JSON array `json_each` expands.
fn json_array(member_ids: &[MemberId]) -> Result<String, AuthError> {
    let ids: Vec<&str> = member_ids.iter().map(MemberId::as_str).collect();
    serde_json::to_string(&ids)
        .map_err(|err| AuthError::Internal(format!("cannot encode member ids as JSON: {err}")))
}

#[async_trait]
impl AuthStore for SqliteStore {
    async fn set_policy(
        &self,
        org_id: &OrgId,
        allow_custom_sso: bool,
        now: Micros,
    ) -> Result<SsoPolicy, AuthError> {
        let row: PolicyRow = sqlx::query_as(
            "INSERT INTO sso_policies (org_id, allow_custom_sso, update_time) \
             VALUES (?1, ?2, ?3) \
             ON CONFLICT (org_id) DO UPDATE SET \
                 allow_custom_sso = excluded.allow_custom_sso, \
                 update_time = excluded.update_time \
             RETURNING allow_custom_sso, update_time",
        )
        .bind(org_id.as_str())
        .bind(allow_custom_sso)
        .bind(now)
        .fetch_one(&self.writer)
        .await?;
        Ok(row.into_policy(org_id))
    }

    async fn get_policy(&self, org_id: &OrgId) -> Result<Option<SsoPolicy>, AuthError> {
        let row: Option<PolicyRow> = sqlx::query_as(
            "SELECT allow_custom_sso, update_time FROM sso_policies WHERE org_id = ?1",
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
        // IMMEDIATE: the policy read and the inserts commit as one step with
        // no writer in between, so a SetOrgSsoPolicy(false) that committed
        // first is seen, and one that commits later sees these links (and
        // the unlink job that follows it removes them).
        let mut tx = self.begin_immediate().await?;
        let allowed: Option<bool> =
            sqlx::query_scalar("SELECT allow_custom_sso FROM sso_policies WHERE org_id = ?1")
                .bind(org_id.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        if allowed != Some(true) {
            // Dropping `tx` rolls back; nothing was written.
            return Err(AuthError::CustomSsoDisallowed {
                org_id: org_id.to_string(),
            });
        }
        // `WHERE true` is SQLite's documented way to keep ON CONFLICT from
        // parsing as a join constraint after `FROM json_each(...)`.
        let linked = sqlx::query(
            "INSERT INTO sso_connections (org_id, member_id, create_time) \
             SELECT ?1, value, ?3 FROM json_each(?2) WHERE true \
             ON CONFLICT (org_id, member_id) DO NOTHING",
        )
        .bind(org_id.as_str())
        .bind(json_array(members.ids())?)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(linked)
    }

    async fn unlink(
        &self,
        org_id: &OrgId,
        member_ids: &[MemberId],
    ) -> Result<Vec<MemberId>, AuthError> {
        // One statement is one implicit transaction: all of the batch or
        // none of it. The plan probes the primary key once per id (see the
        // test `unlink_probes_the_primary_key`), so the cost is the batch's
        // size, not the org's.
        let deleted: Vec<String> = sqlx::query_scalar(
            "DELETE FROM sso_connections \
             WHERE org_id = ?1 AND member_id IN (SELECT value FROM json_each(?2)) \
             RETURNING member_id",
        )
        .bind(org_id.as_str())
        .bind(json_array(member_ids)?)
        .fetch_all(&self.writer)
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
             WHERE org_id = ?1 AND member_id > ?2 \
             ORDER BY member_id LIMIT ?3",
        )
        .bind(org_id.as_str())
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| row.into_connection(org_id))
            .collect()
    }

    async fn count_connections(&self, org_id: &OrgId) -> Result<u64, AuthError> {
        let count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM sso_connections WHERE org_id = ?1")
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
                 COALESCE((SELECT allow_custom_sso FROM sso_policies WHERE org_id = ?1), 0), \
                 EXISTS (SELECT 1 FROM sso_connections WHERE org_id = ?1 AND member_id = ?2)",
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
        let mut tx = self.begin_immediate().await?;
        let mut linked = 0;
        for chunk in member_ids.chunks(SEED_CHUNK) {
            linked += sqlx::query(
                "INSERT INTO sso_connections (org_id, member_id, create_time) \
                 SELECT ?1, value, ?3 FROM json_each(?2) WHERE true \
                 ON CONFLICT (org_id, member_id) DO NOTHING",
            )
            .bind(org_id.as_str())
            .bind(json_array(chunk)?)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(linked)
    }

    async fn page_token_key(&self) -> Result<Vec<u8>, AuthError> {
        // Insert-if-absent then read, in one write transaction: two
        // processes starting at once agree on the first key written.
        let mut tx = self.begin_immediate().await?;
        sqlx::query(
            "INSERT INTO server_secrets (name, value) \
             VALUES ('page_token_key', randomblob(32)) \
             ON CONFLICT (name) DO NOTHING",
        )
        .execute(&mut *tx)
        .await?;
        let key: Vec<u8> =
            sqlx::query_scalar("SELECT value FROM server_secrets WHERE name = 'page_token_key'")
                .fetch_one(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(key)
    }

    async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    //! SQLite only: its pragmas, its query plan, its busy lock. The behaviour
    //! both backends share is tested once, in `store::tests`.

    use super::*;

    async fn store() -> (SqliteStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("auth.db"))
            .await
            .unwrap();
        (store, dir)
    }

    fn org(id: &str) -> OrgId {
        OrgId::parse(id.to_owned()).unwrap()
    }

    fn batch(ids: &[&str]) -> LinkBatch {
        LinkBatch::parse(ids.iter().map(|&id| id.to_owned()).collect()).unwrap()
    }

    #[tokio::test]
    async fn open_creates_missing_directories_and_is_reopenable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/deeper/auth.db");
        let store = SqliteStore::open(&path).await.unwrap();
        store.set_policy(&org("acme"), true, 1).await.unwrap();
        store.close().await;

        // Migrations already applied are skipped; data survives.
        let store = SqliteStore::open(&path).await.unwrap();
        let policy = store.get_policy(&org("acme")).await.unwrap().unwrap();
        assert!(policy.allow_custom_sso);
    }

    #[tokio::test]
    async fn pragmas_favour_durability() {
        let (store, _dir) = store().await;
        let mut conn = store.pool.acquire().await.unwrap();
        let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        let foreign_keys: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(journal, "wal");
        assert_eq!(synchronous, 2, "synchronous=FULL");
        assert_eq!(foreign_keys, 1);
    }

    #[tokio::test]
    async fn unlink_probes_the_primary_key() {
        // Guards the hot path: a plan that scanned the org's connections would
        // make a 1,000,000-member unlink quadratic.
        let (store, _dir) = store().await;
        let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(
            "EXPLAIN QUERY PLAN DELETE FROM sso_connections \
             WHERE org_id = ?1 AND member_id IN (SELECT value FROM json_each(?2)) \
             RETURNING member_id",
        )
        .bind("acme")
        .bind("[\"a\"]")
        .fetch_all(&store.pool)
        .await
        .unwrap();
        let details: Vec<&str> = plan.iter().map(|row| row.3.as_str()).collect();
        assert!(
            details
                .iter()
                .any(|d| d.contains("USING PRIMARY KEY (org_id=? AND member_id=?)")),
            "{details:?}"
        );
        assert!(
            !details
                .iter()
                .any(|d| d.starts_with("SCAN sso_connections")),
            "{details:?}"
        );
    }

    #[tokio::test]
    async fn a_held_write_lock_is_a_transient_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.db");
        let store = SqliteStore::open_with(&path, 8, Duration::from_millis(50))
            .await
            .unwrap();
        store.set_policy(&org("acme"), true, 1).await.unwrap();

        // Another process (here, another pool) holds the write lock.
        let other = SqliteStore::open(&path).await.unwrap();
        let holder = other.begin_immediate().await.unwrap();

        let err = store
            .link(&org("acme"), &batch(&["m1"]), 2)
            .await
            .unwrap_err();
        assert!(err.is_transient(), "{err:?}");
        drop(holder);
        assert_eq!(
            store.link(&org("acme"), &batch(&["m1"]), 3).await.unwrap(),
            1
        );
    }
}
