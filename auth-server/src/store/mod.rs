//! Storage of SSO policies and connections: the [`AuthStore`] trait, which
//! speaks only domain types, and the backend behind it.
//!
//! SQL lives in the backends. Only SQLite exists today ([`sqlite`]); a
//! PostgreSQL backend will implement the same trait, and the same tests.

use std::sync::Arc;

use async_trait::async_trait;

use crate::config::DatabaseUrl;
use crate::domain::{LinkBatch, MemberId, Micros, OrgId, SsoConnection, SsoPolicy};
use crate::error::AuthError;

pub mod sqlite;

/// What every storage backend provides.
///
/// Each method is atomic: it commits entirely or not at all.
#[async_trait]
pub trait AuthStore: Send + Sync + 'static {
    /// Creates or replaces the org's policy and returns it as stored.
    async fn set_policy(
        &self,
        org_id: &OrgId,
        allow_custom_sso: bool,
        now: Micros,
    ) -> Result<SsoPolicy, AuthError>;

    /// The org's policy, or `None` if it was never set.
    async fn get_policy(&self, org_id: &OrgId) -> Result<Option<SsoPolicy>, AuthError>;

    /// Links the members unless the org's policy disallows custom SSO, in
    /// which case it fails with [`AuthError::CustomSsoDisallowed`] and links
    /// none. Returns how many members were newly linked.
    ///
    /// The policy check and the inserts must be serialized with
    /// [`AuthStore::set_policy`]: once a policy of "disallowed" has been
    /// stored, no link may be created. This is what lets an unlink job make
    /// a single pass over an org.
    async fn link(
        &self,
        org_id: &OrgId,
        members: &LinkBatch,
        now: Micros,
    ) -> Result<u64, AuthError>;

    /// Deletes the connections of these distinct members, in one
    /// transaction, and returns the ids that had one.
    async fn unlink(
        &self,
        org_id: &OrgId,
        member_ids: &[MemberId],
    ) -> Result<Vec<MemberId>, AuthError>;

    /// Up to `limit` of the org's connections with a member id greater than
    /// `after`, in member id order.
    async fn list_connections(
        &self,
        org_id: &OrgId,
        after: Option<&MemberId>,
        limit: u32,
    ) -> Result<Vec<SsoConnection>, AuthError>;

    /// How many connections the org has.
    async fn count_connections(&self, org_id: &OrgId) -> Result<u64, AuthError>;

    /// Whether the org's policy allows custom SSO and whether the member is
    /// linked, read together.
    async fn login_facts(
        &self,
        org_id: &OrgId,
        member_id: &MemberId,
    ) -> Result<LoginFacts, AuthError>;

    /// Links any number of members in one transaction, ignoring the policy.
    /// For benchmarks and test fixtures; not reachable over gRPC. Returns
    /// how many members were newly linked.
    async fn seed_connections(
        &self,
        org_id: &OrgId,
        member_ids: &[MemberId],
        now: Micros,
    ) -> Result<u64, AuthError>;

    /// Waits for in-flight work to release its connections, then closes
    /// them, so the database is left tidy (for SQLite: the WAL checkpointed).
    async fn close(&self);
}

/// What CheckSsoLogin decides from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginFacts {
    /// The org's policy allows custom SSO (false for an unknown org).
    pub policy_allows: bool,
    /// The member has a connection.
    pub linked: bool,
}

/// Opens the store `url` names, creating and migrating it as needed.
pub async fn open(url: &DatabaseUrl) -> Result<Arc<dyn AuthStore>, AuthError> {
    match url {
        DatabaseUrl::Sqlite(path) => Ok(Arc::new(sqlite::SqliteStore::open(path).await?)),
    }
}
