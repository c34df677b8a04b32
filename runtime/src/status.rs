//! Statuses with google.rpc error details, built the same way by both
//! servers: every error carries an `ErrorInfo` with a stable UPPER_SNAKE
//! `reason` that clients can switch on, INVALID_ARGUMENT carries a
//! `BadRequest` naming the field, and throttling carries a `RetryInfo`.

use std::collections::HashMap;
use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// What an error says beyond its code and message.
#[derive(Debug, Clone, Copy)]
pub struct Problem<'a> {
    /// `ErrorInfo.domain`: the service that produced the error.
    pub domain: &'a str,
    /// `ErrorInfo.reason`: stable, UPPER_SNAKE, documented.
    pub reason: &'a str,
    /// `BadRequest.field_violations[0]`: the request field and what is
    /// wrong with it.
    pub field: Option<(&'a str, &'a str)>,
    /// `RetryInfo.retry_delay`: when trying again can succeed.
    pub retry_after: Option<Duration>,
}

impl<'a> Problem<'a> {
    pub fn new(domain: &'a str, reason: &'a str) -> Problem<'a> {
        Problem {
            domain,
            reason,
            field: None,
            retry_after: None,
        }
    }

    pub fn field(self, field: &'a str, description: &'a str) -> Problem<'a> {
        Problem {
            field: Some((field, description)),
            ..self
        }
    }

    pub fn retry_after(self, delay: Duration) -> Problem<'a> {
        Problem {
            retry_after: Some(delay),
            ..self
        }
    }

    pub fn status(self, code: Code, message: impl Into<String>) -> Status {
        let mut details = ErrorDetails::with_error_info(self.reason, self.domain, HashMap::new());
        if let Some((field, description)) = self.field {
            details.add_bad_request_violation(field, description);
        }
        if let Some(delay) = self.retry_after {
            details.set_retry_info(Some(delay));
        }
        Status::with_error_details(code, message, details)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_survive_the_round_trip() {
        let status = Problem::new("orgauth.org.v1", "INVALID_FIELD")
            .field("org.id", "not a valid org id")
            .retry_after(Duration::from_secs(3))
            .status(Code::InvalidArgument, "org.id: not a valid org id");
        let details = status.get_error_details();
        let info = details.error_info().unwrap();
        assert_eq!(
            (info.reason.as_str(), info.domain.as_str()),
            ("INVALID_FIELD", "orgauth.org.v1")
        );
        let violation = &details.bad_request().unwrap().field_violations[0];
        assert_eq!(violation.field, "org.id");
        assert_eq!(
            details.retry_info().unwrap().retry_delay,
            Some(Duration::from_secs(3))
        );
        assert_eq!(status.message(), "org.id: not a valid org id");
    }
}
