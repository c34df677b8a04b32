//! The transport edge: tonic service implementations that translate
//! protobuf requests into domain calls on [`crate::app::App`] and back.
//! No rules live here.
//!
//! - [`convert`]: protobuf <-> domain values.
//! - [`org_service`], [`job_service`]: the two services org-server serves.
//! - [`operations`]: `google.longrunning.Operations` over the same jobs.
//! - the one mapping of [`crate::error::Error`] to `tonic::Status` (below).

pub mod convert;
pub mod job_service;
pub mod operations;
pub mod org_service;

use orgauth_runtime::status::Problem;
use tonic::{Code, Status};
use tracing::{error, warn};

use crate::error::Error;

/// `ErrorInfo.domain` of every error org-server sends.
pub const ERROR_DOMAIN: &str = "orgauth.org.v1";

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        let problem = Problem::new(ERROR_DOMAIN, err.reason());
        match &err {
            Error::InvalidArgument { field, reason } => problem
                .field(field, reason)
                .status(Code::InvalidArgument, err.to_string()),
            Error::NotFound { .. } => problem.status(Code::NotFound, err.to_string()),
            Error::AlreadyExists(msg) => problem.status(Code::AlreadyExists, msg),
            Error::Aborted(msg) => problem.status(Code::Aborted, msg),
            Error::FailedPrecondition(msg) => problem.status(Code::FailedPrecondition, msg),
            Error::PermissionDenied { message, .. } => {
                problem.status(Code::PermissionDenied, message)
            }
            Error::ResourceExhausted {
                message,
                retry_after,
                ..
            } => match retry_after {
                Some(delay) => problem.retry_after(*delay),
                None => problem,
            }
            .status(Code::ResourceExhausted, message),
            Error::Unavailable(msg) => problem.status(Code::Unavailable, msg),
            Error::DatabaseBusy(_) => busy(problem, &err),
            Error::Storage(inner) if orgauth_runtime::database::is_transient(inner) => {
                busy(problem, &err)
            }
            Error::Storage(inner) => {
                error!(error = %inner, "storage error");
                problem.status(Code::Internal, "internal storage error")
            }
            Error::LeaseLost { .. }
            | Error::Internal(_)
            | Error::SchemaTooNew { .. }
            | Error::Connect { .. } => {
                error!(error = %err, "internal error");
                problem.status(Code::Internal, "internal error")
            }
        }
    }
}

/// UNAVAILABLE for a database that is busy or briefly away: the caller
/// retries after the RetryInfo delay.
fn busy(problem: Problem, err: &Error) -> Status {
    warn!(error = %err, "call refused: the database is busy or away");
    problem
        .retry_after(std::time::Duration::from_millis(250))
        .status(
            Code::Unavailable,
            "the database is busy or briefly unreachable; retry with backoff",
        )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tonic_types::StatusExt;

    use super::*;
    use crate::error::Limit;

    fn details(
        err: Error,
    ) -> (
        Code,
        String,
        String,
        Option<(String, String)>,
        Option<Duration>,
    ) {
        let status = Status::from(err);
        let details = status.get_error_details();
        let info = details.error_info().expect("every error carries ErrorInfo");
        assert_eq!(info.domain, ERROR_DOMAIN);
        let violation = details
            .bad_request()
            .and_then(|b| b.field_violations.first())
            .map(|v| (v.field.clone(), v.description.clone()));
        let retry = details.retry_info().and_then(|r| r.retry_delay);
        (
            status.code(),
            info.reason.clone(),
            status.message().to_owned(),
            violation,
            retry,
        )
    }

    #[test]
    fn every_error_carries_its_reason_and_details() {
        let (code, reason, _, violation, _) = details(Error::invalid("org.id", "bad"));
        assert_eq!(
            (code, reason.as_str()),
            (Code::InvalidArgument, "INVALID_FIELD")
        );
        assert_eq!(violation, Some(("org.id".into(), "bad".into())));

        let (code, reason, _, _, retry) = details(Error::ResourceExhausted {
            limit: Limit::OrgUpdateRate,
            message: "slow down".into(),
            retry_after: Some(Duration::from_secs(6)),
        });
        assert_eq!(
            (code, reason.as_str(), retry),
            (
                Code::ResourceExhausted,
                "ORG_UPDATE_RATE_LIMITED",
                Some(Duration::from_secs(6))
            )
        );

        let (code, reason, message, _, _) = details(Error::job_not_found("j1"));
        assert_eq!((code, reason.as_str()), (Code::NotFound, "JOB_NOT_FOUND"));
        assert_eq!(message, "job \"j1\" not found");
    }

    #[test]
    fn internal_errors_leak_neither_sql_nor_paths() {
        let sql = Error::Storage(sqlx::Error::Protocol(
            "no such table: /var/lib/org.db SELECT secret FROM orgs".into(),
        ));
        let (code, reason, message, _, _) = details(sql);
        assert_eq!((code, reason.as_str()), (Code::Internal, "INTERNAL"));
        assert_eq!(message, "internal storage error");
        let (_, _, message, _, _) = details(Error::Internal("corrupt row at /data/x".into()));
        assert_eq!(message, "internal error");
    }
}
