//! The one error type of auth-server, and its one mapping to a gRPC status.
//!
//! Every status auth-server sends carries a `google.rpc.ErrorInfo` with
//! domain [`ERROR_DOMAIN`] and a stable UPPER_SNAKE reason clients can
//! switch on; INVALID_ARGUMENT also carries a `google.rpc.BadRequest` field
//! violation naming the request field, and UNAVAILABLE a `RetryInfo`.
//!
//! | code | reason | when |
//! | --- | --- | --- |
//! | UNAUTHENTICATED | `TOKEN_MISSING` | no `authorization: Bearer …` metadata (or the service was not behind the authenticator) |
//! | UNAUTHENTICATED | `TOKEN_MALFORMED` | not `Bearer oat_…` with a well-formed secret |
//! | UNAUTHENTICATED | `TOKEN_UNKNOWN` | the token is not in `--tokens-file` (revoked or never issued) |
//! | UNAUTHENTICATED | `TOKEN_EXPIRED` | the token's `expires=` has passed |
//! | PERMISSION_DENIED | `ROLE_NOT_PERMITTED` | SetOrgSsoPolicy or BatchUnlinkSso by a caller without the `service` role |
//! | PERMISSION_DENIED | `ORG_ACCESS_DENIED` | an `org` token naming an org it does not cover |
//! | INVALID_ARGUMENT | `INVALID_FIELD` | a malformed request; the BadRequest names the field (`org_id`, `member_ids`, `member_ids[3]`, `member_id`, `page_size`, `page_token`) |
//! | FAILED_PRECONDITION | `CUSTOM_SSO_DISALLOWED` | LinkSso for an org whose policy disallows custom SSO |
//! | UNAVAILABLE | `DATABASE_BUSY` | the database stayed locked past the busy timeout, no pooled connection came free, or PostgreSQL failed transiently (a lost connection, a deadlock or serialization failure, `--db-statement-timeout`, a failover); retry after the RetryInfo delay |
//! | UNAVAILABLE | `SHUTTING_DOWN` | the server is shutting down; retry on another replica or after restart |
//! | INTERNAL | `INTERNAL` | anything else; the caller sees a generic message, the log has the details |
//!
//! The four `TOKEN_*` refusals come from the authenticator in front of the
//! service (`orgauth_runtime::access`), with the same domain. Statuses tonic
//! makes by itself get their ErrorInfo from
//! `orgauth_runtime::status::DetailsLayer`: RESOURCE_EXHAUSTED
//! `MESSAGE_TOO_LARGE` (a request over --max-message-bytes), UNIMPLEMENTED
//! `METHOD_NOT_FOUND`, and `TRANSPORT_ERROR` for anything else. Load
//! shedding (RESOURCE_EXHAUSTED) and --max-call-time (CANCELLED) are applied
//! by tonic outside any layer and carry no ErrorInfo.
//!
//! Messages of caller errors name the request field and say what would be
//! valid. Storage and internal failures are logged in full here and reach
//! the caller only as a generic message: their text can hold SQL or file
//! paths.

use std::path::PathBuf;
use std::time::Duration;

use orgauth_runtime::status::Problem;
use orgauth_security::Role;
use tonic::{Code, Status};
use tracing::{error, warn};

/// `ErrorInfo.domain` of every error auth-server sends: its API package.
pub const ERROR_DOMAIN: &str = "orgauth.auth.v1";

/// How long a caller is told to wait after [`DATABASE_BUSY`](AuthError::reason).
pub const BUSY_RETRY_AFTER: Duration = Duration::from_millis(250);

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

    /// An RPC reserved for another role (SetOrgSsoPolicy and BatchUnlinkSso
    /// accept only `service`).
    #[error(
        "{rpc} is reserved for the service role (org-server); token {caller:?} has role {role}"
    )]
    RoleNotPermitted {
        rpc: &'static str,
        caller: String,
        role: Role,
    },

    /// An `org` token naming an org it does not cover.
    #[error("token {caller:?} does not cover org {org_id}")]
    OrgAccessDenied { caller: String, org_id: String },

    /// The request reached a handler without an authenticated caller: the
    /// service was not wrapped in the authenticator. Refused, never served.
    #[error("no authenticated caller: send metadata `authorization: Bearer <token>`")]
    Unauthenticated,

    /// A database failure. Some are transient (the database is busy, the
    /// pool is closing for shutdown); see [`AuthError::is_transient`].
    #[error("storage: {0}")]
    Storage(#[from] sqlx::Error),

    /// The schema could not be brought up to date at startup.
    #[error("cannot migrate the database schema: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),

    /// The database holds migrations this binary does not know: a newer
    /// release migrated it. Refused at startup rather than run against a
    /// schema it does not understand.
    #[error(
        "database schema version {version} is newer than this binary (knows up to {known}); \
         upgrade the binary"
    )]
    SchemaTooNew { version: i64, known: i64 },

    /// PostgreSQL could not be reached, or refused the connection, at
    /// startup. `target` is `HOST:PORT (database D, user U)`, never the URL.
    #[error("cannot connect to PostgreSQL at {target}: {reason}")]
    Connect { target: String, reason: String },

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

impl From<orgauth_runtime::database::DatabaseError> for AuthError {
    fn from(err: orgauth_runtime::database::DatabaseError) -> Self {
        use orgauth_runtime::database::DatabaseError;
        match err {
            DatabaseError::Connect { target, reason } => AuthError::Connect { target, reason },
            DatabaseError::Schema(err) => err.into(),
        }
    }
}

impl From<orgauth_runtime::schema::MigrationError> for AuthError {
    fn from(err: orgauth_runtime::schema::MigrationError) -> Self {
        use orgauth_runtime::schema::MigrationError;
        match err {
            MigrationError::SchemaTooNew { version, known } => {
                AuthError::SchemaTooNew { version, known }
            }
            MigrationError::Migrate(err) => AuthError::Migrate(err),
            MigrationError::Read(err) => AuthError::Storage(err),
        }
    }
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
        self.shutting_down() || self.busy()
    }

    /// The pool is closing: the server is shutting down.
    fn shutting_down(&self) -> bool {
        matches!(self, AuthError::Storage(sqlx::Error::PoolClosed))
    }

    /// The database could not serve the call now but may soon: another
    /// writer held it past the busy timeout, every pooled connection stayed
    /// taken, or (PostgreSQL) a transient failure such as a lost connection.
    fn busy(&self) -> bool {
        let AuthError::Storage(err) = self else {
            return false;
        };
        orgauth_runtime::database::is_transient(err)
    }

    /// The gRPC code this error is answered with.
    pub fn code(&self) -> Code {
        match self {
            AuthError::InvalidArgument { .. } => Code::InvalidArgument,
            AuthError::CustomSsoDisallowed { .. } => Code::FailedPrecondition,
            AuthError::RoleNotPermitted { .. } | AuthError::OrgAccessDenied { .. } => {
                Code::PermissionDenied
            }
            AuthError::Unauthenticated => Code::Unauthenticated,
            // UNAVAILABLE is the code clients retry on (org-server's job
            // runner among them).
            _ if self.is_transient() => Code::Unavailable,
            AuthError::Storage(_)
            | AuthError::Migrate(_)
            | AuthError::SchemaTooNew { .. }
            | AuthError::Connect { .. }
            | AuthError::CreateDir { .. }
            | AuthError::Internal(_) => Code::Internal,
        }
    }

    /// The `ErrorInfo.reason` this error is answered with: stable and
    /// documented in the table above.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::InvalidArgument { .. } => "INVALID_FIELD",
            AuthError::CustomSsoDisallowed { .. } => "CUSTOM_SSO_DISALLOWED",
            AuthError::RoleNotPermitted { .. } => "ROLE_NOT_PERMITTED",
            AuthError::OrgAccessDenied { .. } => "ORG_ACCESS_DENIED",
            AuthError::Unauthenticated => "TOKEN_MISSING",
            _ if self.shutting_down() => "SHUTTING_DOWN",
            _ if self.busy() => "DATABASE_BUSY",
            AuthError::Storage(_)
            | AuthError::Migrate(_)
            | AuthError::SchemaTooNew { .. }
            | AuthError::Connect { .. }
            | AuthError::CreateDir { .. }
            | AuthError::Internal(_) => "INTERNAL",
        }
    }
}

impl From<AuthError> for Status {
    fn from(err: AuthError) -> Status {
        let code = err.code();
        let problem = Problem::new(ERROR_DOMAIN, err.reason());
        match &err {
            AuthError::InvalidArgument { field, reason } => {
                problem.field(field, reason).status(code, err.to_string())
            }
            AuthError::CustomSsoDisallowed { .. }
            | AuthError::RoleNotPermitted { .. }
            | AuthError::OrgAccessDenied { .. }
            | AuthError::Unauthenticated => problem.status(code, err.to_string()),
            _ if err.shutting_down() => {
                warn!(error = %err, "call refused: shutting down");
                problem.status(code, "auth-server is shutting down; retry")
            }
            _ if err.busy() => {
                warn!(error = %err, "transient storage failure; caller may retry");
                problem
                    .retry_after(BUSY_RETRY_AFTER)
                    .status(code, "auth-server storage is busy; retry with backoff")
            }
            AuthError::Storage(_)
            | AuthError::Migrate(_)
            | AuthError::SchemaTooNew { .. }
            | AuthError::Connect { .. }
            | AuthError::CreateDir { .. }
            | AuthError::Internal(_) => {
                error!(error = %err, "request failed");
                problem.status(
                    code,
                    "internal error in auth-server; details are in its log",
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic_types::StatusExt;

    use super::*;

    /// The code, ErrorInfo (reason, domain) and first field violation of a
    /// status.
    fn details(status: &Status) -> (Code, String, Option<(String, String)>) {
        let details = status.get_error_details();
        let info = details.error_info().expect("every status has an ErrorInfo");
        assert_eq!(info.domain, ERROR_DOMAIN);
        let field = details
            .bad_request()
            .and_then(|bad| bad.field_violations.first())
            .map(|v| (v.field.clone(), v.description.clone()));
        (status.code(), info.reason.clone(), field)
    }

    #[test]
    fn caller_errors_keep_their_message_and_carry_a_reason() {
        let status = Status::from(AuthError::invalid(
            "member_ids",
            "at most 1000 ids per call, got 1001",
        ));
        assert_eq!(
            details(&status),
            (
                Code::InvalidArgument,
                "INVALID_FIELD".into(),
                Some((
                    "member_ids".into(),
                    "at most 1000 ids per call, got 1001".into()
                ))
            )
        );
        assert_eq!(
            status.message(),
            "member_ids: at most 1000 ids per call, got 1001"
        );

        let status = Status::from(AuthError::CustomSsoDisallowed {
            org_id: "acme".into(),
        });
        assert_eq!(
            details(&status),
            (
                Code::FailedPrecondition,
                "CUSTOM_SSO_DISALLOWED".into(),
                None
            )
        );
        assert_eq!(
            status.message(),
            "custom SSO is disallowed for org acme; SetOrgSsoPolicy allow_custom_sso=true first"
        );
    }

    #[test]
    fn refusals_say_why_in_a_reason() {
        let status = Status::from(AuthError::RoleNotPermitted {
            rpc: "BatchUnlinkSso",
            caller: "ops".into(),
            role: Role::Admin,
        });
        assert_eq!(
            details(&status),
            (Code::PermissionDenied, "ROLE_NOT_PERMITTED".into(), None)
        );
        assert_eq!(
            status.message(),
            "BatchUnlinkSso is reserved for the service role (org-server); \
             token \"ops\" has role admin"
        );
        let status = Status::from(AuthError::OrgAccessDenied {
            caller: "acme-bot".into(),
            org_id: "globex".into(),
        });
        assert_eq!(
            details(&status),
            (Code::PermissionDenied, "ORG_ACCESS_DENIED".into(), None)
        );
        let status = Status::from(AuthError::Unauthenticated);
        assert_eq!(
            details(&status),
            (Code::Unauthenticated, "TOKEN_MISSING".into(), None)
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
            assert_eq!(details(&status), (Code::Internal, "INTERNAL".into(), None));
            for secret in ["sso_connections", "/var/lib", "x y"] {
                assert!(!status.message().contains(secret), "{}", status.message());
            }
            let details = status.get_error_details();
            let info = details.error_info().unwrap();
            assert!(info.metadata.is_empty(), "{:?}", info.metadata);
        }
    }

    #[test]
    fn a_busy_or_closing_database_is_unavailable_not_internal() {
        let status = Status::from(AuthError::Storage(sqlx::Error::PoolTimedOut));
        assert_eq!(
            details(&status),
            (Code::Unavailable, "DATABASE_BUSY".into(), None)
        );
        assert_eq!(
            status.get_error_details().retry_info().unwrap().retry_delay,
            Some(BUSY_RETRY_AFTER)
        );
        let status = Status::from(AuthError::Storage(sqlx::Error::PoolClosed));
        assert_eq!(
            details(&status),
            (Code::Unavailable, "SHUTTING_DOWN".into(), None)
        );
        assert!(AuthError::Storage(sqlx::Error::PoolClosed).is_transient());
    }

    #[test]
    fn transient_postgres_failures_are_told_apart_from_bugs() {
        // A dropped connection (a restart, a failover) is retried.
        let lost = AuthError::Storage(sqlx::Error::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        )));
        assert_eq!(lost.code(), Code::Unavailable);
        assert_eq!(lost.reason(), "DATABASE_BUSY");
    }

    #[test]
    fn startup_refusals_say_what_to_do() {
        let err = AuthError::SchemaTooNew {
            version: 3,
            known: 2,
        };
        assert_eq!(
            err.to_string(),
            "database schema version 3 is newer than this binary (knows up to 2); \
             upgrade the binary"
        );
        assert_eq!(err.code(), Code::Internal);
    }

    #[test]
    fn reasons_are_upper_snake() {
        let all = [
            AuthError::invalid("f", "r"),
            AuthError::CustomSsoDisallowed { org_id: "a".into() },
            AuthError::RoleNotPermitted {
                rpc: "X",
                caller: "c".into(),
                role: Role::Org,
            },
            AuthError::OrgAccessDenied {
                caller: "c".into(),
                org_id: "a".into(),
            },
            AuthError::Unauthenticated,
            AuthError::Storage(sqlx::Error::PoolClosed),
            AuthError::Storage(sqlx::Error::PoolTimedOut),
            AuthError::Internal("x".into()),
        ];
        for err in all {
            let reason = err.reason();
            assert!(
                !reason.is_empty() && reason.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'),
                "{reason}"
            );
        }
    }
}
