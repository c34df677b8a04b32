//! The one error type of auth-server, and its one mapping to a gRPC status.
//!
//! Messages of caller errors name the request field and say what would be
//! valid. Storage and internal failures are logged in full here and reach
//! the caller only as a generic message: their text can hold SQL or file
//! paths.

use std::path::PathBuf;

use tonic::Status;
use tracing::{error, warn};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The request is malformed; `field` names the offending request field
    /// (`member_ids[3]` for one element of a list).
    #[error("{field}: {reason}")]
    InvalidArgument { field: String, reason: String },

    /// LinkSso for an org whose policy disallows custom SSO (including an org
    /// Auth has never heard of).
    #[error(
        "custom SSO is disallowed for org {org_id}; \
         SetOrgSsoPolicy allow_custom_sso=true first"
    )]
    CustomSsoDisallowed { org_id: String },

    /// A database failure. Some are transient (the database is busy, the
    /// pool is closing for shutdown); see [`AuthError::is_transient`].
    #[error("storage: {0}")]
    Storage(#[from] sqlx::Error),

    /// The schema could not be brought up to date at startup.
    #[error("cannot migrate the database schema: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),

    /// The directory of the SQLite file could not be created at startup.
    #[error("cannot create database directory {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },

    /// A broken invariant, such as a stored row that does not parse.
    #[error("internal: {0}")]
    Internal(String),
}

impl AuthError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        AuthError::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Whether the same call may succeed if retried later, unchanged.
    pub fn is_transient(&self) -> bool {
        let AuthError::Storage(err) = self else {
            return false;
        };
        match err {
            // The pool is closing (shutdown) or every connection stayed busy.
            sqlx::Error::PoolClosed | sqlx::Error::PoolTimedOut => true,
            // SQLITE_BUSY (5) and SQLITE_LOCKED (6), in the low byte of the
            // extended result code: another writer held the lock for longer
            // than the busy timeout.
            sqlx::Error::Database(db) => db
                .code()
                .and_then(|code| code.parse::<i32>().ok())
                .is_some_and(|code| matches!(code & 0xff, 5 | 6)),
            _ => false,
        }
    }
}

impl From<AuthError> for Status {
    fn from(err: AuthError) -> Status {
        match err {
            AuthError::InvalidArgument { .. } => Status::invalid_argument(err.to_string()),
            AuthError::CustomSsoDisallowed { .. } => Status::failed_precondition(err.to_string()),
            _ if err.is_transient() => {
                warn!(error = %err, "transient storage failure; caller may retry");
                // UNAVAILABLE is the code clients retry on (org-server's job
                // runner among them).
                Status::unavailable("auth-server storage is busy; retry with backoff")
            }
            AuthError::Storage(_)
            | AuthError::Migrate(_)
            | AuthError::CreateDir { .. }
            | AuthError::Internal(_) => {
                error!(error = %err, "request failed");
                Status::internal("internal error in auth-server; details are in its log")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn caller_errors_keep_their_message() {
        let status = Status::from(AuthError::invalid(
            "member_ids",
            "at most 1000 ids per call, got 1001",
        ));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "member_ids: at most 1000 ids per call, got 1001"
        );

        let status = Status::from(AuthError::CustomSsoDisallowed {
            org_id: "acme".into(),
        });
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(
            status.message(),
            "custom SSO is disallowed for org acme; SetOrgSsoPolicy allow_custom_sso=true first"
        );
    }

    #[test]
    fn internal_errors_do_not_leak_details() {
        let leaky = [
            AuthError::Storage(sqlx::Error::Protocol(
                "near \"DELETE FROM sso_connections\": syntax error".into(),
            )),
            AuthError::CreateDir {
                path: "/var/lib/secret/auth.db".into(),
                source: std::io::Error::other("permission denied"),
            },
            AuthError::Internal("stored member id \"x y\" does not parse".into()),
        ];
        for err in leaky {
            let status = Status::from(err);
            assert_eq!(status.code(), Code::Internal);
            for secret in ["sso_connections", "/var/lib", "x y"] {
                assert!(!status.message().contains(secret), "{}", status.message());
            }
        }
    }

    #[test]
    fn a_closing_pool_is_unavailable_not_internal() {
        let status = Status::from(AuthError::Storage(sqlx::Error::PoolClosed));
        assert_eq!(status.code(), Code::Unavailable);
        let status = Status::from(AuthError::Storage(sqlx::Error::PoolTimedOut));
        assert_eq!(status.code(), Code::Unavailable);
    }
}
