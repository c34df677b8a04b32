//! The one error type of org-server's domain and storage layers.
//!
//! Every failure a caller can see is a variant here; `grpc::status` maps
//! each variant to a `tonic::Status` in one place. Messages are written for
//! the caller: they name the field or resource and say what would be valid.

/// Result alias used throughout org-server.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed; `field` names the offending request field.
    #[error("{field}: {reason}")]
    InvalidArgument { field: String, reason: String },

    #[error("{0}")]
    NotFound(String),

    #[error("{0}")]
    AlreadyExists(String),

    /// An optimistic-concurrency check failed (stale etag): re-read and retry.
    #[error("{0}")]
    Aborted(String),

    /// The request is valid but the resource is in the wrong state for it.
    #[error("{0}")]
    FailedPrecondition(String),

    /// This process is shutting down; the caller should retry elsewhere.
    #[error("{0}")]
    Unavailable(String),

    /// A worker tried to write to a job whose lease it no longer holds.
    #[error("lease on job {job_id} was lost to another worker")]
    LeaseLost { job_id: String },

    /// A database failure. Its text may contain SQL or paths, so it is logged
    /// and never shown to callers.
    #[error("storage error: {0}")]
    Storage(#[from] sqlx::Error),

    /// A bug or broken invariant; details are logged, not returned.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for Error {
    fn from(err: sqlx::migrate::MigrateError) -> Self {
        Error::Internal(format!("database migration failed: {err}"))
    }
}
