//! What the job runner needs from the Auth service, in domain terms.
//!
//! The runner depends on this trait, not on tonic, so its retry, batching
//! and checkpoint logic is tested against an in-memory fake; the gRPC
//! implementation lives in `crate::auth_client`.

use async_trait::async_trait;

use crate::domain::job::UnlinkOutcome;

/// A failed call to Auth, classified for the retry policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("auth {code}: {message}")]
pub struct AuthCallError {
    /// gRPC status code name, e.g. "UNAVAILABLE".
    pub code: String,
    pub message: String,
    /// Worth retrying: Auth was unreachable, overloaded or too slow.
    pub transient: bool,
}

#[async_trait]
pub trait AuthGateway: Send + Sync + 'static {
    /// Sets the org's SSO policy. Idempotent.
    async fn set_sso_policy(
        &self,
        org_id: &str,
        allow_custom_sso: bool,
    ) -> Result<(), AuthCallError>;

    /// Unlinks a batch of members; one outcome per id, in the same order.
    async fn batch_unlink(
        &self,
        org_id: &str,
        member_ids: &[String],
    ) -> Result<Vec<UnlinkOutcome>, AuthCallError>;
}
