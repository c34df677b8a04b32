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

/// A layer that gives the statuses tonic produces by itself, before or
/// after a handler runs (an undecodable or oversized request, an unknown
/// method), the same `ErrorInfo` every other error carries. A request over
/// the message size limit, which tonic answers with OUT_OF_RANGE, becomes
/// RESOURCE_EXHAUSTED with reason `MESSAGE_TOO_LARGE`, as the gRPC spec
/// asks of servers; neither server's own code uses OUT_OF_RANGE.
///
/// Only trailers-only responses (the status in the headers) pass through
/// here; load shedding and the call-time limit are applied by tonic outside
/// any user layer and keep tonic's bare statuses.
#[derive(Debug, Clone, Copy)]
pub struct DetailsLayer {
    domain: &'static str,
}

impl DetailsLayer {
    pub fn new(domain: &'static str) -> DetailsLayer {
        DetailsLayer { domain }
    }
}

impl<S> tower_layer::Layer<S> for DetailsLayer {
    type Service = Details<S>;

    fn layer(&self, inner: S) -> Details<S> {
        Details {
            inner,
            domain: self.domain,
        }
    }
}

/// The service [`DetailsLayer`] wraps around the routes.
#[derive(Debug, Clone)]
pub struct Details<S> {
    inner: S,
    domain: &'static str,
}

type BoxFuture<T, E> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, E>> + Send + 'static>>;

impl<S, Req, ResBody> tower_service::Service<Req> for Details<S>
where
    S: tower_service::Service<Req, Response = tonic::codegen::http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<S::Response, S::Error>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let domain = self.domain;
        let response = self.inner.call(request);
        Box::pin(async move {
            let mut response = response.await?;
            add_details(response.headers_mut(), domain);
            Ok(response)
        })
    }
}

fn add_details(headers: &mut tonic::codegen::http::HeaderMap, domain: &str) {
    if headers.contains_key("grpc-status-details-bin") {
        return;
    }
    let Some(status) = Status::from_header_map(headers) else {
        return;
    };
    let (code, reason) = match status.code() {
        Code::Ok => return,
        Code::OutOfRange => (Code::ResourceExhausted, "MESSAGE_TOO_LARGE"),
        Code::Unimplemented => (Code::Unimplemented, "METHOD_NOT_FOUND"),
        Code::Internal => (Code::Internal, "INTERNAL"),
        other => (other, "TRANSPORT_ERROR"),
    };
    let detailed = Problem::new(domain, reason).status(code, status.message());
    // If the new headers cannot be written the original status stands.
    let _ = detailed.add_header(headers);
}
