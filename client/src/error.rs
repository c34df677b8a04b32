//! [`ClientError`]: every way a call through this crate can fail, with the
//! gRPC code each one maps to so callers (and `orgctl`) can react uniformly.
//!
//! A status from a server comes with google.rpc details, decoded once into
//! a [`StatusError`]: the `ErrorInfo` reason (a stable UPPER_SNAKE word
//! such as `TOKEN_MISSING` or `ORG_ACCESS_DENIED`, the thing to switch on),
//! the `BadRequest` field violations of an INVALID_ARGUMENT, and the
//! `RetryInfo` delay of a throttled call.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use orgauth_proto::org::v1::Job;
use orgauth_runtime::transport::TlsError;
use tonic::Code;
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

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

    /// The bearer token cannot be sent (it holds characters that are not
    /// allowed in gRPC metadata). The message never contains the token.
    #[error("invalid token: {reason}")]
    InvalidToken {
        /// What is wrong with it.
        reason: String,
    },

    /// The TLS options cannot be used: a PEM file cannot be read or parsed,
    /// or no CA certificate is set.
    #[error("{0}")]
    Tls(#[source] TlsError),

    /// The TLS handshake failed: the server's certificate is not signed by
    /// the configured CA or does not name the server, the server refused
    /// the client certificate, or the server does not speak TLS. Not
    /// retried: trying again would fail the same way.
    #[error("TLS handshake with {endpoint} failed")]
    TlsHandshake {
        /// The endpoint we tried.
        endpoint: String,
        /// What the TLS layer said.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
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
    /// status; its google.rpc details are decoded.
    #[error(transparent)]
    Status(StatusError),

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
        "lost the watch of job {job_id} (last version seen: {last_version}) and could not resume it within {}: {source}",
        humantime::format_duration(*.retry_budget)
    )]
    WatchInterrupted {
        /// The watched job.
        job_id: String,
        /// The last version the watch yielded (0 if none).
        last_version: i64,
        /// How long the watch kept trying without progress.
        retry_budget: Duration,
        /// The last error seen.
        source: StatusError,
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
        Self::Status(StatusError::new(status))
    }
}

impl From<StatusError> for ClientError {
    fn from(status: StatusError) -> Self {
        Self::Status(status)
    }
}

impl From<TlsError> for ClientError {
    fn from(error: TlsError) -> Self {
        Self::Tls(error)
    }
}

impl ClientError {
    /// The gRPC code this error corresponds to: the status code for
    /// [`ClientError::Status`], and the closest code for the others
    /// (UNAVAILABLE for connection problems, INVALID_ARGUMENT for a bad
    /// endpoint, token or TLS option, FAILED_PRECONDITION / ABORTED for a
    /// failed / cancelled job).
    pub fn code(&self) -> Code {
        match self {
            Self::InvalidEndpoint { .. } | Self::InvalidToken { .. } | Self::Tls(_) => {
                Code::InvalidArgument
            }
            Self::TlsHandshake { .. } | Self::Connect { .. } | Self::WatchInterrupted { .. } => {
                Code::Unavailable
            }
            Self::Status(status) => status.code(),
            Self::MissingField { .. } => Code::Internal,
            Self::JobFailed(_) => Code::FailedPrecondition,
            Self::JobCancelled(_) => Code::Aborted,
        }
    }

    /// The status with its decoded details, when the error is one (for
    /// [`ClientError::WatchInterrupted`], the last status seen).
    pub fn status_error(&self) -> Option<&StatusError> {
        match self {
            Self::Status(status) | Self::WatchInterrupted { source: status, .. } => Some(status),
            _ => None,
        }
    }

    /// The status, when the error is one.
    pub fn status(&self) -> Option<&tonic::Status> {
        self.status_error().map(StatusError::status)
    }

    /// The google.rpc details the server attached to the status, if any.
    pub fn details(&self) -> Option<&ErrorDetails> {
        self.status_error().map(StatusError::details)
    }

    /// The server's `ErrorInfo.reason`, e.g. `TOKEN_MISSING`,
    /// `ORG_ACCESS_DENIED`: stable, UPPER_SNAKE, the thing to switch on.
    pub fn reason(&self) -> Option<&str> {
        self.status_error().and_then(StatusError::reason)
    }

    /// The `BadRequest` field violations of an INVALID_ARGUMENT: which
    /// request field is wrong and why. Empty when there are none.
    pub fn field_violations(&self) -> &[FieldViolation] {
        self.status_error()
            .map_or(&[], StatusError::field_violations)
    }

    /// The `RetryInfo` delay: how long the server asks to wait before the
    /// same call can succeed (e.g. UpdateOrg's per-org rate limit).
    pub fn retry_delay(&self) -> Option<Duration> {
        self.status_error().and_then(StatusError::retry_delay)
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

    /// Whether the error happened in the TLS layer: the server's
    /// certificate is not trusted or does not name it
    /// ([`ClientError::TlsHandshake`]), or the server refused the client
    /// certificate (with TLS 1.3 that shows at the first call, as a status
    /// caused by a TLS alert).
    pub fn is_tls_failure(&self) -> bool {
        match self {
            Self::TlsHandshake { .. } => true,
            other => other
                .status()
                .and_then(StdError::source)
                .is_some_and(is_tls_failure),
        }
    }

    /// Whether trying again later may succeed (the server or the network was
    /// unavailable), as opposed to an answer that will not change.
    /// UNAUTHENTICATED, PERMISSION_DENIED and TLS failures never are.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::WatchInterrupted { .. } => true,
            Self::Status(status) => is_transient_status(status.status()),
            _ => false,
        }
    }
}

/// A non-OK gRPC status with its google.rpc details decoded
/// (`tonic_types::StatusExt::get_error_details`).
///
/// Displays as `CODE (REASON): message`, e.g.
/// `PERMISSION_DENIED (ORG_ACCESS_DENIED): token "acme-bot" may not touch org globex`;
/// without an `ErrorInfo`, as `CODE: message`. The field violations the
/// message does not already name follow it as `(field org.id: …)`.
#[derive(Debug, Clone)]
pub struct StatusError {
    status: tonic::Status,
    // Boxed: ErrorDetails is large, and errors travel in `Result`s.
    details: Box<ErrorDetails>,
}

impl StatusError {
    /// Decodes the details of `status` (none if it carries none or they do
    /// not decode).
    pub fn new(status: tonic::Status) -> Self {
        let details = Box::new(status.get_error_details());
        Self { status, details }
    }

    /// The status as received.
    pub fn status(&self) -> &tonic::Status {
        &self.status
    }

    /// The status as received, by value.
    pub fn into_status(self) -> tonic::Status {
        self.status
    }

    /// The gRPC code.
    pub fn code(&self) -> Code {
        self.status.code()
    }

    /// The status message.
    pub fn message(&self) -> &str {
        self.status.message()
    }

    /// Every google.rpc detail decoded from the status.
    pub fn details(&self) -> &ErrorDetails {
        &self.details
    }

    /// `ErrorInfo.reason`, when the server sent one.
    pub fn reason(&self) -> Option<&str> {
        self.details
            .error_info()
            .map(|info| info.reason.as_str())
            .filter(|reason| !reason.is_empty())
    }

    /// `ErrorInfo.domain`: which service produced the error.
    pub fn domain(&self) -> Option<&str> {
        self.details
            .error_info()
            .map(|info| info.domain.as_str())
            .filter(|domain| !domain.is_empty())
    }

    /// `BadRequest.field_violations`; empty when there are none.
    pub fn field_violations(&self) -> &[FieldViolation] {
        self.details
            .bad_request()
            .map_or(&[], |bad_request| bad_request.field_violations.as_slice())
    }

    /// `RetryInfo.retry_delay`.
    pub fn retry_delay(&self) -> Option<Duration> {
        self.details.retry_info().and_then(|info| info.retry_delay)
    }
}

impl From<tonic::Status> for StatusError {
    fn from(status: tonic::Status) -> Self {
        Self::new(status)
    }
}

impl fmt::Display for StatusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(code_name(self.code()))?;
        if let Some(reason) = self.reason() {
            write!(f, " ({reason})")?;
        }
        write!(f, ": {}", self.message())?;
        let message = self.message();
        let unnamed: Vec<_> = self
            .field_violations()
            .iter()
            .filter(|violation| !violation.field.is_empty() && !message.contains(&violation.field))
            .collect();
        for (index, violation) in unnamed.iter().enumerate() {
            let separator = if index == 0 { " (" } else { "; " };
            write!(f, "{separator}field {}", violation.field)?;
            if !violation.description.is_empty() && !message.contains(&violation.description) {
                write!(f, ": {}", violation.description)?;
            }
        }
        if !unnamed.is_empty() {
            f.write_str(")")?;
        }
        Ok(())
    }
}

impl StdError for StatusError {
    /// The transport error under a status built on this side from a broken
    /// connection; `None` for a status a server sent.
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.status.source()
    }
}

/// Whether a status is worth retrying: UNAVAILABLE (server down, restarting,
/// or shutting down gracefully), or any status synthesized on this side from
/// a transport failure. Statuses sent by a server are parsed from trailers
/// and carry no source; tonic attaches the underlying error only to statuses
/// it builds locally from a broken connection (reset, h2 error, ...), whose
/// code is then INTERNAL or UNKNOWN rather than UNAVAILABLE.
///
/// UNAUTHENTICATED and PERMISSION_DENIED are never retried: the same
/// credentials get the same answer.
///
/// Nor is a transport failure in the TLS layer (the server refused the
/// client certificate, or the certificates do not match): the same
/// certificates fail the same way.
pub(crate) fn is_transient_status(status: &tonic::Status) -> bool {
    match status.code() {
        Code::Unauthenticated | Code::PermissionDenied => false,
        _ if status.source().is_some_and(is_tls_failure) => false,
        Code::Unavailable => true,
        _ => status.source().is_some(),
    }
}

/// Whether an error failed in the TLS layer (certificate not trusted,
/// wrong name, client certificate refused or missing, a peer that does not
/// speak TLS): rustls reports those as `InvalidData` I/O errors, which
/// plain TCP and HTTP/2 never produce.
pub(crate) fn is_tls_failure(error: &(dyn StdError + 'static)) -> bool {
    std::iter::successors(Some(error), |&cause| cause.source()).any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::InvalidData)
            || cause.to_string().contains("HTTP/2 was not negotiated")
    })
}

pub use orgauth_proto::code_name;

fn reason_or_none(reason: &str) -> &str {
    if reason.is_empty() {
        "no reason given"
    } else {
        reason
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn status_errors_display_code_and_message() {
        let error = ClientError::from(tonic::Status::not_found("org x not found"));
        assert_eq!(error.to_string(), "NOT_FOUND: org x not found");
        assert_eq!(error.code(), Code::NotFound);
        assert_eq!(error.message(), "org x not found");
        assert_eq!(error.reason(), None);
        assert!(error.field_violations().is_empty());
        assert_eq!(error.retry_delay(), None);
        assert!(!error.is_transient());
    }

    #[test]
    fn the_error_info_reason_is_decoded_and_displayed() {
        let details =
            ErrorDetails::with_error_info("ORG_ACCESS_DENIED", "orgauth.org.v1", HashMap::new());
        let status = tonic::Status::with_error_details(
            Code::PermissionDenied,
            "token \"acme-bot\" may not touch org globex",
            details,
        );
        let error = ClientError::from(status);
        assert_eq!(
            error.to_string(),
            "PERMISSION_DENIED (ORG_ACCESS_DENIED): token \"acme-bot\" may not touch org globex"
        );
        assert_eq!(error.code(), Code::PermissionDenied);
        assert_eq!(error.reason(), Some("ORG_ACCESS_DENIED"));
        assert_eq!(
            error.status_error().and_then(StatusError::domain),
            Some("orgauth.org.v1")
        );
        assert_eq!(
            error.message(),
            "token \"acme-bot\" may not touch org globex"
        );
        assert!(!error.is_transient());
    }

    #[test]
    fn field_violations_are_decoded_and_named_once() {
        let mut details =
            ErrorDetails::with_error_info("INVALID_FIELD", "orgauth.org.v1", HashMap::new());
        details.add_bad_request_violation("org.id", "not a valid org id");
        // The message already names the field: it is not repeated.
        let named = ClientError::from(tonic::Status::with_error_details(
            Code::InvalidArgument,
            "org.id: not a valid org id",
            details.clone(),
        ));
        assert_eq!(
            named.to_string(),
            "INVALID_ARGUMENT (INVALID_FIELD): org.id: not a valid org id"
        );
        let violations = named.field_violations();
        assert_eq!(violations.len(), 1);
        assert_eq!(
            (
                violations[0].field.as_str(),
                violations[0].description.as_str()
            ),
            ("org.id", "not a valid org id")
        );

        // A message that does not name them gets every field appended.
        details.add_bad_request_violation("update_mask.paths", "\"*\" is not allowed");
        let unnamed = ClientError::from(tonic::Status::with_error_details(
            Code::InvalidArgument,
            "the request is invalid",
            details,
        ));
        assert_eq!(
            unnamed.to_string(),
            "INVALID_ARGUMENT (INVALID_FIELD): the request is invalid \
             (field org.id: not a valid org id; field update_mask.paths: \"*\" is not allowed)"
        );
        assert_eq!(unnamed.field_violations().len(), 2);
    }

    #[test]
    fn field_violations_without_error_info_still_name_the_field() {
        let status = tonic::Status::with_error_details(
            Code::InvalidArgument,
            "bad page size",
            ErrorDetails::with_bad_request_violation("page_size", "must be 0 to 1000"),
        );
        let error = ClientError::from(status);
        assert_eq!(error.reason(), None);
        assert_eq!(
            error.to_string(),
            "INVALID_ARGUMENT: bad page size (field page_size: must be 0 to 1000)"
        );
    }

    #[test]
    fn the_retry_delay_is_decoded() {
        let mut details =
            ErrorDetails::with_error_info("UPDATE_RATE_LIMITED", "orgauth.org.v1", HashMap::new());
        details.set_retry_info(Some(Duration::from_secs(3)));
        let error = ClientError::from(tonic::Status::with_error_details(
            Code::ResourceExhausted,
            "too many updates of org acme",
            details,
        ));
        assert_eq!(error.retry_delay(), Some(Duration::from_secs(3)));
        assert_eq!(error.reason(), Some("UPDATE_RATE_LIMITED"));
        assert!(!error.is_transient());
    }

    #[test]
    fn unauthenticated_and_permission_denied_are_never_transient() {
        let details =
            ErrorDetails::with_error_info("TOKEN_MISSING", "orgauth.org.v1", HashMap::new());
        let missing = ClientError::from(tonic::Status::with_error_details(
            Code::Unauthenticated,
            "missing credentials",
            details,
        ));
        assert_eq!(
            missing.to_string(),
            "UNAUTHENTICATED (TOKEN_MISSING): missing credentials"
        );
        assert!(!missing.is_transient());
        // Not even with a transport cause attached.
        for code in [Code::Unauthenticated, Code::PermissionDenied] {
            let mut status = tonic::Status::new(code, "no");
            status.set_source(std::sync::Arc::new(std::io::Error::other("cause")));
            assert!(!is_transient_status(&status), "{code:?}");
        }
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
        // The cause stays reachable for reports.
        let error = ClientError::from(broken);
        assert!(error.source().is_some());
    }

    #[test]
    fn watch_interruptions_expose_the_last_status() {
        let error = ClientError::WatchInterrupted {
            job_id: "j1".into(),
            last_version: 3,
            retry_budget: Duration::from_secs(30),
            source: tonic::Status::unavailable("shutting down").into(),
        };
        assert_eq!(error.code(), Code::Unavailable);
        assert_eq!(
            error.status().map(tonic::Status::code),
            Some(Code::Unavailable)
        );
        assert_eq!(
            error.to_string(),
            "lost the watch of job j1 (last version seen: 3) and could not resume it within 30s: UNAVAILABLE: shutting down"
        );
    }

    #[test]
    fn tls_failures_are_told_from_connection_failures() {
        let tls = std::io::Error::new(std::io::ErrorKind::InvalidData, "invalid peer certificate");
        let wrapped: Box<dyn StdError + Send + Sync> =
            Box::new(tonic::Status::from_error(Box::new(tls)));
        assert!(is_tls_failure(wrapped.as_ref()));
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(!is_tls_failure(&refused));
    }
}
