//! [`ClientError`]: every way a call through this crate can fail, with the
//! gRPC code each one maps to so callers (and `orgctl`) can react uniformly.

use std::error::Error as StdError;
use std::time::Duration;

use orgauth_proto::org::v1::Job;
use tonic::Code;

/// Shorthand for results of this crate.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// An error from the orgauth client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The endpoint string could not be turned into a gRPC endpoint.
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },

    /// No connection could be made within the connect timeout, retries
    /// included.
    #[error("cannot connect to {endpoint} within {} ({attempts} attempts)", humantime::format_duration(*.timeout))]
    Connect {
        /// The endpoint we tried.
        endpoint: String,
        /// The overall time allowed for connecting.
        timeout: Duration,
        /// How many connection attempts were made.
        attempts: u32,
        /// Why the last attempt failed.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },

    /// The server (or the transport under the call) answered with a non-OK
    /// status.
    #[error("{}: {}", code_name(.0.code()), .0.message())]
    Status(tonic::Status),

    /// A response lacked a field the contract promises (a server bug).
    #[error("{rpc} response has no {field}")]
    MissingField {
        /// The RPC whose response was incomplete.
        rpc: &'static str,
        /// The missing field.
        field: &'static str,
    },

    /// A job watch broke and could not be resumed within its retry budget.
    #[error(
        "lost the watch of job {job_id} (last version seen: {last_version}) and could not resume it within {}: {}",
        humantime::format_duration(*.retry_budget),
        display_status(.source)
    )]
    WatchInterrupted {
        /// The watched job.
        job_id: String,
        /// The last version the watch yielded (0 if none).
        last_version: i64,
        /// How long the watch kept trying without progress.
        retry_budget: Duration,
        /// The last error seen.
        source: tonic::Status,
    },

    /// [`wait_for_job_success`](crate::OrgClient::wait_for_job_success): the
    /// job ended FAILED.
    #[error("job {} failed: {}", .0.id, reason_or_none(&.0.last_error))]
    JobFailed(Box<Job>),

    /// [`wait_for_job_success`](crate::OrgClient::wait_for_job_success): the
    /// job ended CANCELLED.
    #[error("job {} was cancelled: {}", .0.id, reason_or_none(&.0.last_error))]
    JobCancelled(Box<Job>),
}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        Self::Status(status)
    }
}

impl ClientError {
    /// The gRPC code this error corresponds to: the status code for
    /// [`ClientError::Status`], and the closest code for the others
    /// (UNAVAILABLE for connection problems, INVALID_ARGUMENT for a bad
    /// endpoint, FAILED_PRECONDITION / ABORTED for a failed / cancelled job).
    pub fn code(&self) -> Code {
        match self {
            Self::InvalidEndpoint { .. } => Code::InvalidArgument,
            Self::Connect { .. } | Self::WatchInterrupted { .. } => Code::Unavailable,
            Self::Status(status) => status.code(),
            Self::MissingField { .. } => Code::Internal,
            Self::JobFailed(_) => Code::FailedPrecondition,
            Self::JobCancelled(_) => Code::Aborted,
        }
    }

    /// The status, when the error is one.
    pub fn status(&self) -> Option<&tonic::Status> {
        match self {
            Self::Status(status) | Self::WatchInterrupted { source: status, .. } => Some(status),
            _ => None,
        }
    }

    /// The human part of the error, without the code: the status message
    /// for a status, the whole description otherwise.
    pub fn message(&self) -> String {
        match self {
            Self::Status(status) => status.message().to_owned(),
            other => other.to_string(),
        }
    }

    /// The job, for [`ClientError::JobFailed`] and [`ClientError::JobCancelled`].
    pub fn job(&self) -> Option<&Job> {
        match self {
            Self::JobFailed(job) | Self::JobCancelled(job) => Some(job),
            _ => None,
        }
    }

    /// Whether trying again later may succeed (the server or the network was
    /// unavailable), as opposed to an answer that will not change.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::WatchInterrupted { .. } => true,
            Self::Status(status) => is_transient_status(status),
            _ => false,
        }
    }
}

/// Whether a status is worth retrying: UNAVAILABLE (server down, restarting,
/// or shutting down gracefully), or any status synthesized on this side from
/// a transport failure. Statuses sent by a server are parsed from trailers
/// and carry no source; tonic attaches the underlying error only to statuses
/// it builds locally from a broken connection (reset, h2 error, ...), whose
/// code is then INTERNAL or UNKNOWN rather than UNAVAILABLE.
pub(crate) fn is_transient_status(status: &tonic::Status) -> bool {
    status.code() == Code::Unavailable || status.source().is_some()
}

pub use orgauth_proto::code_name;

fn display_status(status: &tonic::Status) -> String {
    format!("{}: {}", code_name(status.code()), status.message())
}

fn reason_or_none(reason: &str) -> &str {
    if reason.is_empty() {
        "no reason given"
    } else {
        reason
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_errors_display_code_and_message() {
        let error = ClientError::from(tonic::Status::not_found("org x not found"));
        assert_eq!(error.to_string(), "NOT_FOUND: org x not found");
        assert_eq!(error.code(), Code::NotFound);
        assert_eq!(error.message(), "org x not found");
        assert!(!error.is_transient());
    }

    #[test]
    fn unavailable_is_transient_and_server_answers_are_not() {
        assert!(is_transient_status(&tonic::Status::unavailable(
            "restarting"
        )));
        assert!(!is_transient_status(&tonic::Status::internal("bug")));
        assert!(!is_transient_status(&tonic::Status::invalid_argument(
            "bad"
        )));
    }

    #[test]
    fn locally_built_transport_statuses_are_transient() {
        // What tonic builds when a connection breaks mid-stream: an error
        // with the underlying cause attached.
        let broken = tonic::Status::from_error(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset",
        )));
        assert!(is_transient_status(&broken));
    }
}
