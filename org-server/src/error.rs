//! The one error type of org-server's domain and storage layers.
//!
//! Every failure a caller can see is a variant here; `grpc` maps each
//! variant to a `tonic::Status` in one place. Messages are written for the
//! caller: they name the field or resource and say what would be valid.
//!
//! Each error also has a stable machine-readable [`Error::reason`], sent as
//! google.rpc.ErrorInfo.reason (domain `orgauth.org.v1`):
//!
//! | code                | reason                    | when |
//! |---------------------|---------------------------|------|
//! | INVALID_ARGUMENT    | `INVALID_FIELD`           | a request field is invalid (BadRequest names it) |
//! | NOT_FOUND           | `ORG_NOT_FOUND`           | no such org |
//! | NOT_FOUND           | `JOB_NOT_FOUND`           | no such job, or one the caller may not see |
//! | ALREADY_EXISTS      | `ORG_ALREADY_EXISTS`      | CreateOrg with a taken id |
//! | ABORTED             | `ETAG_MISMATCH`           | stale etag: re-read and retry |
//! | FAILED_PRECONDITION | `JOB_ALREADY_FINISHED`    | CancelJob on a finished job |
//! | PERMISSION_DENIED   | `ROLE_NOT_PERMITTED`      | the caller's role may not call this RPC |
//! | PERMISSION_DENIED   | `ORG_ACCESS_DENIED`       | the org is not on the caller's token |
//! | RESOURCE_EXHAUSTED  | `ORG_UPDATE_RATE_LIMITED` | too many UpdateOrg for one org (RetryInfo says when) |
//! | RESOURCE_EXHAUSTED  | `WATCH_LIMIT_PER_CALLER`  | the caller has too many open WatchJob streams |
//! | RESOURCE_EXHAUSTED  | `WATCH_LIMIT_PER_SERVER`  | the server has too many open WatchJob streams |
//! | UNAVAILABLE         | `SHUTTING_DOWN`           | retry elsewhere (watches: with since_version) |
//! | UNAVAILABLE         | `DATABASE_BUSY`           | the database is busy or briefly away (no pooled connection, a lost connection, a failover, `--db-statement-timeout`): retry with backoff |
//! | INTERNAL            | `INTERNAL`                | a bug or storage failure; details only in the log |
//! | UNIMPLEMENTED       | `DELETE_NOT_SUPPORTED`    | google.longrunning DeleteOperation (grpc/operations.rs): jobs are pruned by --job-retention |
//!
//! UNAUTHENTICATED (`TOKEN_MISSING`, `TOKEN_MALFORMED`, `TOKEN_UNKNOWN`,
//! `TOKEN_EXPIRED`) is answered before a request reaches org-server's code,
//! by `orgauth_runtime::access::Authenticator`. Statuses tonic makes by
//! itself get their ErrorInfo from `orgauth_runtime::status::DetailsLayer`:
//! RESOURCE_EXHAUSTED `MESSAGE_TOO_LARGE` (a request over
//! --max-message-bytes), UNIMPLEMENTED `METHOD_NOT_FOUND`, and
//! `TRANSPORT_ERROR` for anything else. Load shedding (RESOURCE_EXHAUSTED)
//! and --max-call-time (CANCELLED) are applied by tonic outside any layer
//! and carry no ErrorInfo.

use std::time::Duration;

/// Result alias used throughout org-server.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed; `field` names the offending request field.
    #[error("{field}: {reason}")]
    InvalidArgument { field: String, reason: String },

    #[error("{kind} {id:?} not found")]
    NotFound { kind: Resource, id: String },

    #[error("{0}")]
    AlreadyExists(String),

    /// An optimistic-concurrency check failed (stale etag): re-read and retry.
    #[error("{0}")]
    Aborted(String),

    /// The request is valid but the resource is in the wrong state for it.
    #[error("{0}")]
    FailedPrecondition(String),

    /// The caller is authenticated but may not do this.
    #[error("{message}")]
    PermissionDenied { denial: Denial, message: String },

    /// A limit was reached; `retry_after` says when trying again can work.
    #[error("{message}")]
    ResourceExhausted {
        limit: Limit,
        message: String,
        retry_after: Option<Duration>,
    },

    /// This process is shutting down; the caller should retry elsewhere.
    #[error("{0}")]
    Unavailable(String),

    /// A worker tried to write to a job whose lease it no longer holds.
    #[error("lease on job {job_id} was lost to another worker")]
    LeaseLost { job_id: String },

    /// A transient database failure shared by every caller of one
    /// group-committed batch (the `sqlx::Error` itself cannot be cloned).
    /// Its text is logged, never shown; callers see UNAVAILABLE and retry.
    #[error("database busy or unreachable: {0}")]
    DatabaseBusy(String),

    /// A database failure. Its text may contain SQL or paths, so it is logged
    /// and never shown to callers.
    #[error("storage error: {0}")]
    Storage(#[from] sqlx::Error),

    /// A bug or broken invariant; details are logged, not returned.
    #[error("internal error: {0}")]
    Internal(String),

    /// At start: the database was migrated by a newer release.
    #[error(
        "database schema version {version} is newer than this binary (knows up to {known}); \
         upgrade the binary"
    )]
    SchemaTooNew { version: i64, known: i64 },

    /// At start: PostgreSQL could not be reached or refused us. `target` is
    /// `HOST:PORT (database D, user U)`, never the URL.
    #[error("cannot connect to PostgreSQL at {target}: {reason}")]
    Connect { target: String, reason: String },
}

/// What a NOT_FOUND was looking for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Org,
    Job,
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Resource::Org => "org",
            Resource::Job => "job",
        })
    }
}

/// Why a PERMISSION_DENIED.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// The caller's role may not call this RPC at all.
    Role,
    /// The org is not among the orgs on the caller's token.
    OrgAccess,
}

/// Which limit a RESOURCE_EXHAUSTED hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    OrgUpdateRate,
    WatchesPerCaller,
    WatchesPerServer,
}

impl Error {
    pub fn org_not_found(id: impl Into<String>) -> Self {
        Error::NotFound {
            kind: Resource::Org,
            id: id.into(),
        }
    }

    pub fn job_not_found(id: impl ToString) -> Self {
        Error::NotFound {
            kind: Resource::Job,
            id: id.to_string(),
        }
    }

    /// The stable google.rpc.ErrorInfo reason of this error (table above).
    pub fn reason(&self) -> &'static str {
        match self {
            Error::InvalidArgument { .. } => "INVALID_FIELD",
            Error::NotFound {
                kind: Resource::Org,
                ..
            } => "ORG_NOT_FOUND",
            Error::NotFound {
                kind: Resource::Job,
                ..
            } => "JOB_NOT_FOUND",
            Error::AlreadyExists(_) => "ORG_ALREADY_EXISTS",
            Error::Aborted(_) => "ETAG_MISMATCH",
            Error::FailedPrecondition(_) => "JOB_ALREADY_FINISHED",
            Error::PermissionDenied {
                denial: Denial::Role,
                ..
            } => "ROLE_NOT_PERMITTED",
            Error::PermissionDenied {
                denial: Denial::OrgAccess,
                ..
            } => "ORG_ACCESS_DENIED",
            Error::ResourceExhausted { limit, .. } => match limit {
                Limit::OrgUpdateRate => "ORG_UPDATE_RATE_LIMITED",
                Limit::WatchesPerCaller => "WATCH_LIMIT_PER_CALLER",
                Limit::WatchesPerServer => "WATCH_LIMIT_PER_SERVER",
            },
            Error::Unavailable(_) => "SHUTTING_DOWN",
            Error::DatabaseBusy(_) => "DATABASE_BUSY",
            Error::Storage(err) if orgauth_runtime::database::is_transient(err) => "DATABASE_BUSY",
            Error::Storage(_)
            | Error::LeaseLost { .. }
            | Error::Internal(_)
            | Error::SchemaTooNew { .. }
            | Error::Connect { .. } => "INTERNAL",
        }
    }

    /// The database could not serve this now but may soon (busy, briefly
    /// unreachable, a statement timeout, a failover): retrying may work.
    pub fn is_transient_storage(&self) -> bool {
        match self {
            Error::DatabaseBusy(_) => true,
            Error::Storage(err) => orgauth_runtime::database::is_transient(err),
            _ => false,
        }
    }

    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl From<orgauth_runtime::database::DatabaseError> for Error {
    fn from(err: orgauth_runtime::database::DatabaseError) -> Self {
        use orgauth_runtime::database::DatabaseError;
        match err {
            DatabaseError::Connect { target, reason } => Error::Connect { target, reason },
            DatabaseError::Schema(err) => err.into(),
        }
    }
}

impl From<orgauth_runtime::schema::MigrationError> for Error {
    fn from(err: orgauth_runtime::schema::MigrationError) -> Self {
        use orgauth_runtime::schema::MigrationError;
        match err {
            MigrationError::SchemaTooNew { version, known } => {
                Error::SchemaTooNew { version, known }
            }
            MigrationError::Migrate(err) => err.into(),
            MigrationError::Read(err) => Error::Storage(err),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for Error {
    fn from(err: sqlx::migrate::MigrateError) -> Self {
        Error::Internal(format!("database migration failed: {err}"))
    }
}
