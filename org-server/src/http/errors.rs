//! The one mapping of the gateway's failures to HTTP: a status, headers and
//! a JSON body
//!
//! ```json
//! {"error": {"code": 404, "status": "NOT_FOUND", "reason": "JOB_NOT_FOUND",
//!            "message": "job \"…\" not found"}}
//! ```
//!
//! `status` is the gRPC code the same failure has over gRPC, `reason` the
//! same stable ErrorInfo reason, and `field`, when present, where the
//! request went wrong: a JSON Pointer into the body (`/1/value`), a header
//! (`Idempotency-Key`, `Last-Event-ID`) or a path or query parameter (`id`,
//! `since_version`). Domain errors follow Google's HTTP mapping of gRPC
//! codes, mirroring [`crate::grpc`]'s `Status` mapping (a unit test holds
//! the two together); internal errors say nothing beyond "internal error"
//! and are logged.
//!
//! Failures only HTTP has:
//!
//! | HTTP | status | reason | when |
//! |---|---|---|---|
//! | 400 | INVALID_ARGUMENT | `MALFORMED_JSON` | the body is not JSON |
//! | 400 | INVALID_ARGUMENT | `PATCH_MALFORMED` | not a JSON Patch: a missing or ill-typed member, an unknown op, a value of the wrong type |
//! | 400 | INVALID_ARGUMENT | `INVALID_FIELD` | on the events route, a token both in `Authorization` and as `access_token`, or `access_token` twice (field `access_token`) |
//! | 401 | UNAUTHENTICATED | `TOKEN_*` | as over gRPC, with `WWW-Authenticate: Bearer` |
//! | 404 | NOT_FOUND | `ROUTE_NOT_FOUND` | a path the gateway does not serve (a gRPC call to an unknown method still gets UNIMPLEMENTED) |
//! | 405 | UNIMPLEMENTED | `METHOD_NOT_ALLOWED` | e.g. DELETE on an org, with `Allow` |
//! | 409 | ABORTED | `PATCH_TEST_FAILED` | a `test` operation did not hold (a value of another JSON type never does); nothing was written |
//! | 413 | RESOURCE_EXHAUSTED | `MESSAGE_TOO_LARGE` | a body over 64 KiB |
//! | 415 | INVALID_ARGUMENT | `UNSUPPORTED_MEDIA_TYPE` | a PATCH body that is not `application/json-patch+json` or `application/json`, with `Accept-Patch` |
//! | 422 | INVALID_ARGUMENT | `PATCH_OP_UNSUPPORTED` | add, remove, move or copy |
//! | 422 | INVALID_ARGUMENT | `PATCH_PATH_UNSUPPORTED` | a path that is not a member of the org, or a `replace` of a read-only one |
//! | 503 | UNAVAILABLE | `DEADLINE_EXCEEDED` | a GET or PATCH ran past the gateway's time limit (a little under `--max-call-time`), with `Retry-After` |

use std::time::Duration;

use axum::http::header::{RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use orgauth_security::AuthnError;
use serde::Serialize;
use tracing::{debug, error, warn};

use super::json;
use super::patch::{PatchError, PatchErrorKind};
use crate::error::Error;

/// RFC 5789's header (the http crate has no constant for it).
const ACCEPT_PATCH: axum::http::HeaderName = axum::http::HeaderName::from_static("accept-patch");

/// The media types a PATCH body may have, as `Accept-Patch` lists them.
pub const PATCH_MEDIA_TYPES: &str = "application/json-patch+json, application/json";

/// Every way a gateway request fails.
#[derive(Debug)]
pub enum ApiError {
    /// Refused by App, or by validation shared with gRPC.
    Domain(Error),
    Unauthenticated(AuthnError),
    Patch(PatchError),
    UnsupportedMediaType(String),
    BodyTooLarge,
    /// The body could not be read (the client went away mid-body).
    BodyUnreadable(String),
    MethodNotAllowed,
    /// No route has this path.
    RouteNotFound,
    /// The request ran past the gateway's limit for a call (see
    /// `super::call_limit`).
    Timeout(Duration),
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        ApiError::Domain(err)
    }
}

impl From<PatchError> for ApiError {
    fn from(err: PatchError) -> Self {
        ApiError::Patch(err)
    }
}

/// The JSON error body.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Debug, Serialize)]
struct ErrorDetail {
    code: u16,
    status: &'static str,
    reason: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
}

/// A failure as HTTP says it.
#[derive(Debug)]
pub struct Problem {
    pub status: StatusCode,
    pub body: ErrorBody,
    headers: HeaderMap,
}

impl Problem {
    fn new(
        status: StatusCode,
        code: &'static str,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Problem {
        Problem {
            status,
            body: ErrorBody {
                error: ErrorDetail {
                    code: status.as_u16(),
                    status: code,
                    reason,
                    message: message.into(),
                    field: None,
                },
            },
            headers: HeaderMap::new(),
        }
    }

    fn field(mut self, field: impl Into<String>) -> Problem {
        self.body.error.field = Some(field.into());
        self
    }

    fn header(mut self, name: axum::http::HeaderName, value: &'static str) -> Problem {
        self.headers.insert(name, HeaderValue::from_static(value));
        self
    }

    /// `Retry-After` takes whole seconds: round up, so a client never
    /// retries before the server said it could work.
    fn retry_after(mut self, delay: Duration) -> Problem {
        let seconds = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
        self.headers
            .insert(RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        self
    }
}

impl ApiError {
    /// The one mapping. Logs what must be logged, as `crate::grpc` does.
    pub fn into_problem(self) -> Problem {
        use StatusCode as S;
        match self {
            ApiError::Domain(err) => domain(err),
            ApiError::Unauthenticated(err) => {
                debug!(reason = err.reason(), "refused unauthenticated request");
                let challenge = match err {
                    AuthnError::Missing => "Bearer",
                    _ => "Bearer error=\"invalid_token\"",
                };
                Problem::new(
                    S::UNAUTHORIZED,
                    "UNAUTHENTICATED",
                    err.reason(),
                    err.to_string(),
                )
                .header(WWW_AUTHENTICATE, challenge)
            }
            ApiError::Patch(err) => {
                let (status, code, reason) = match err.kind {
                    PatchErrorKind::NotJson => {
                        (S::BAD_REQUEST, "INVALID_ARGUMENT", "MALFORMED_JSON")
                    }
                    PatchErrorKind::Malformed => {
                        (S::BAD_REQUEST, "INVALID_ARGUMENT", "PATCH_MALFORMED")
                    }
                    PatchErrorKind::UnsupportedOp => (
                        S::UNPROCESSABLE_ENTITY,
                        "INVALID_ARGUMENT",
                        "PATCH_OP_UNSUPPORTED",
                    ),
                    PatchErrorKind::UnsupportedPath => (
                        S::UNPROCESSABLE_ENTITY,
                        "INVALID_ARGUMENT",
                        "PATCH_PATH_UNSUPPORTED",
                    ),
                    // The same family as a stale etag: an optimistic check
                    // failed, re-read and decide again.
                    PatchErrorKind::TestFailed => (S::CONFLICT, "ABORTED", "PATCH_TEST_FAILED"),
                };
                let message = if err.field.is_empty() {
                    err.message
                } else {
                    format!("{}: {}", err.field, err.message)
                };
                Problem::new(status, code, reason, message).field(err.field)
            }
            ApiError::UnsupportedMediaType(got) => Problem::new(
                S::UNSUPPORTED_MEDIA_TYPE,
                "INVALID_ARGUMENT",
                "UNSUPPORTED_MEDIA_TYPE",
                format!("a PATCH body must be one of {PATCH_MEDIA_TYPES}, not {got}"),
            )
            .field("Content-Type")
            .header(ACCEPT_PATCH, PATCH_MEDIA_TYPES),
            ApiError::BodyTooLarge => Problem::new(
                S::PAYLOAD_TOO_LARGE,
                "RESOURCE_EXHAUSTED",
                "MESSAGE_TOO_LARGE",
                format!("the body is over {} KiB", super::MAX_BODY_BYTES / 1024),
            ),
            ApiError::BodyUnreadable(why) => Problem::new(
                S::BAD_REQUEST,
                "INVALID_ARGUMENT",
                "MALFORMED_JSON",
                format!("the body could not be read: {why}"),
            ),
            ApiError::MethodNotAllowed => Problem::new(
                S::METHOD_NOT_ALLOWED,
                "UNIMPLEMENTED",
                "METHOD_NOT_ALLOWED",
                "this resource does not support that method",
            ),
            ApiError::RouteNotFound => Problem::new(
                S::NOT_FOUND,
                "NOT_FOUND",
                "ROUTE_NOT_FOUND",
                "no such resource: the JSON gateway serves /v1/orgs/{id}, /v1/jobs/{id} \
                 and /v1/jobs/{id}/events",
            ),
            ApiError::Timeout(limit) => {
                warn!(limit = ?limit, "gateway request stopped at its time limit");
                Problem::new(
                    S::SERVICE_UNAVAILABLE,
                    "UNAVAILABLE",
                    "DEADLINE_EXCEEDED",
                    format!(
                        "the request ran past the server's limit of {} ms and was stopped; \
                         a PATCH may or may not have been applied: retry it with the same \
                         Idempotency-Key",
                        limit.as_millis()
                    ),
                )
                .retry_after(Duration::from_secs(1))
            }
        }
    }
}

/// Google's HTTP mapping of the gRPC code each domain error has.
fn domain(err: Error) -> Problem {
    use StatusCode as S;
    let reason = err.reason();
    match &err {
        Error::InvalidArgument { field, .. } => {
            let field = field.clone();
            Problem::new(S::BAD_REQUEST, "INVALID_ARGUMENT", reason, err.to_string()).field(field)
        }
        Error::NotFound { .. } => Problem::new(S::NOT_FOUND, "NOT_FOUND", reason, err.to_string()),
        Error::AlreadyExists(msg) => Problem::new(S::CONFLICT, "ALREADY_EXISTS", reason, msg),
        Error::Aborted(msg) => Problem::new(S::CONFLICT, "ABORTED", reason, msg),
        Error::FailedPrecondition(msg) => {
            Problem::new(S::BAD_REQUEST, "FAILED_PRECONDITION", reason, msg)
        }
        Error::PermissionDenied { message, .. } => {
            Problem::new(S::FORBIDDEN, "PERMISSION_DENIED", reason, message)
        }
        Error::ResourceExhausted {
            message,
            retry_after,
            ..
        } => Problem::new(S::TOO_MANY_REQUESTS, "RESOURCE_EXHAUSTED", reason, message)
            // A cap on open watches says no delay: one second is a polite
            // floor rather than an immediate retry loop.
            .retry_after(retry_after.unwrap_or(Duration::from_secs(1))),
        Error::Unavailable(msg) => Problem::new(S::SERVICE_UNAVAILABLE, "UNAVAILABLE", reason, msg)
            .retry_after(Duration::from_secs(1)),
        Error::DatabaseBusy(_) => busy(&err, reason),
        Error::Storage(inner) if orgauth_runtime::database::is_transient(inner) => {
            busy(&err, reason)
        }
        Error::Storage(inner) => {
            error!(error = %inner, "storage error");
            Problem::new(
                S::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                reason,
                "internal storage error",
            )
        }
        Error::LeaseLost { .. }
        | Error::Internal(_)
        | Error::SchemaTooNew { .. }
        | Error::Connect { .. } => {
            error!(error = %err, "internal error");
            Problem::new(
                S::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                reason,
                "internal error",
            )
        }
    }
}

/// 503 for a database that is busy or briefly away: the caller retries.
fn busy(err: &Error, reason: &'static str) -> Problem {
    warn!(error = %err, "request refused: the database is busy or away");
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "UNAVAILABLE",
        reason,
        "the database is busy or briefly unreachable; retry with backoff",
    )
    .retry_after(Duration::from_millis(250))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let Problem {
            status,
            body,
            headers,
        } = self.into_problem();
        let mut response = json::respond(status, &body);
        response.headers_mut().extend(headers);
        response
    }
}

/// The answer to a method a route does not have (axum adds `Allow`).
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// The answer to a path no route has. A gRPC call (`application/grpc…`;
/// gRPC-Web arrives here as gRPC, tonic-web having translated it) keeps
/// tonic's own answer, UNIMPLEMENTED with no message, to which the
/// transport's details layer adds the reason `METHOD_NOT_FOUND`; anything
/// else is a plain HTTP client that mistyped a path: 404 with the JSON
/// error body, not a gRPC status it cannot read.
pub async fn route_not_found(headers: HeaderMap) -> Response {
    let grpc = headers
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"));
    if grpc {
        tonic::Status::unimplemented("").into_http()
    } else {
        ApiError::RouteNotFound.into_response()
    }
}

#[cfg(test)]
mod tests {
    use tonic::{Code, Status};

    use super::*;
    use crate::error::{Denial, Limit};

    /// Google's HTTP mapping of gRPC codes (google/rpc/code.proto).
    fn google_http(code: Code) -> StatusCode {
        match code {
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
                StatusCode::BAD_REQUEST
            }
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::Cancelled => StatusCode::from_u16(499).unwrap(),
            Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// One of each error, made fresh on every call (sqlx errors cannot be
    /// cloned).
    fn every_error() -> Vec<Error> {
        vec![
            Error::invalid("org.id", "bad"),
            Error::org_not_found("acme"),
            Error::job_not_found("j1"),
            Error::AlreadyExists("taken".into()),
            Error::Aborted("stale".into()),
            Error::FailedPrecondition("finished".into()),
            Error::PermissionDenied {
                denial: Denial::OrgAccess,
                message: "not yours".into(),
            },
            Error::ResourceExhausted {
                limit: Limit::OrgUpdateRate,
                message: "slow down".into(),
                retry_after: Some(Duration::from_millis(5500)),
            },
            Error::ResourceExhausted {
                limit: Limit::WatchesPerCaller,
                message: "too many".into(),
                retry_after: None,
            },
            Error::Unavailable("shutting down".into()),
            Error::DatabaseBusy("locked".into()),
            Error::Storage(sqlx::Error::PoolTimedOut),
            Error::Storage(sqlx::Error::Protocol(
                "no such table: /var/lib/org.db SELECT secret".into(),
            )),
            Error::Internal("corrupt row at /data/x".into()),
            Error::LeaseLost { job_id: "j".into() },
        ]
    }

    #[test]
    fn domain_errors_map_as_their_grpc_codes_do_with_the_same_reason() {
        for (err, twin) in every_error().into_iter().zip(every_error()) {
            let reason = err.reason();
            let status = Status::from(twin);
            let problem = ApiError::Domain(err).into_problem();
            assert_eq!(
                problem.status,
                google_http(status.code()),
                "{reason}: {status:?}"
            );
            assert_eq!(problem.body.error.reason, reason);
            assert_eq!(problem.body.error.code, problem.status.as_u16());
            assert_eq!(problem.body.error.status, code_name(status.code()));
            if problem.status.is_server_error() && problem.status != StatusCode::SERVICE_UNAVAILABLE
            {
                assert!(
                    ["internal error", "internal storage error"]
                        .contains(&problem.body.error.message.as_str()),
                    "{reason} leaks {:?}",
                    problem.body.error.message
                );
            }
        }
    }

    fn code_name(code: Code) -> &'static str {
        match code {
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::NotFound => "NOT_FOUND",
            Code::AlreadyExists => "ALREADY_EXISTS",
            Code::Aborted => "ABORTED",
            Code::FailedPrecondition => "FAILED_PRECONDITION",
            Code::PermissionDenied => "PERMISSION_DENIED",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Code::Unavailable => "UNAVAILABLE",
            Code::Internal => "INTERNAL",
            other => panic!("no domain error maps to {other:?}"),
        }
    }

    #[test]
    fn throttling_and_outages_say_when_to_retry_in_whole_seconds() {
        let retry = |err: Error| {
            ApiError::Domain(err)
                .into_problem()
                .headers
                .get(RETRY_AFTER)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(
            retry(Error::ResourceExhausted {
                limit: Limit::OrgUpdateRate,
                message: String::new(),
                retry_after: Some(Duration::from_millis(5500)),
            })
            .as_deref(),
            Some("6")
        );
        assert_eq!(
            retry(Error::DatabaseBusy(String::new())).as_deref(),
            Some("1")
        );
        assert_eq!(
            retry(Error::Unavailable(String::new())).as_deref(),
            Some("1")
        );
        assert_eq!(retry(Error::org_not_found("x")), None);
    }

    #[test]
    fn refusals_challenge_for_a_bearer_token() {
        let missing = ApiError::Unauthenticated(AuthnError::Missing).into_problem();
        assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
        assert_eq!(missing.headers[WWW_AUTHENTICATE], "Bearer");
        assert_eq!(missing.body.error.reason, "TOKEN_MISSING");
        let unknown = ApiError::Unauthenticated(AuthnError::Unknown).into_problem();
        assert_eq!(
            unknown.headers[WWW_AUTHENTICATE],
            "Bearer error=\"invalid_token\""
        );
    }

    #[tokio::test]
    async fn unknown_paths_are_404_json_except_for_grpc_calls() {
        let ask = |content_type: Option<&'static str>| {
            let mut headers = HeaderMap::new();
            if let Some(content_type) = content_type {
                headers.insert(
                    axum::http::header::CONTENT_TYPE,
                    HeaderValue::from_static(content_type),
                );
            }
            route_not_found(headers)
        };
        for content_type in [Some("application/grpc"), Some("application/grpc+proto")] {
            let response = ask(content_type).await;
            assert_eq!(response.status(), StatusCode::OK, "{content_type:?}");
            assert_eq!(response.headers()["grpc-status"], "12", "{content_type:?}");
            let status = Status::from_header_map(response.headers()).unwrap();
            assert_eq!(status.code(), Code::Unimplemented);
        }
        for content_type in [None, Some("application/json"), Some("text/html")] {
            let response = ask(content_type).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{content_type:?}");
            assert!(response.headers().get("grpc-status").is_none());
            assert_eq!(response.headers()["content-type"], "application/json");
            let body = axum::body::to_bytes(response.into_body(), 1 << 16)
                .await
                .unwrap();
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(body["error"]["code"], 404);
            assert_eq!(body["error"]["status"], "NOT_FOUND");
            assert_eq!(body["error"]["reason"], "ROUTE_NOT_FOUND");
        }
    }

    #[test]
    fn a_request_past_the_time_limit_is_503_with_a_retry_hint() {
        let problem = ApiError::Timeout(Duration::from_millis(1500)).into_problem();
        assert_eq!(problem.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(problem.body.error.reason, "DEADLINE_EXCEEDED");
        assert_eq!(problem.body.error.status, "UNAVAILABLE");
        assert_eq!(problem.headers[RETRY_AFTER], "1");
        assert!(problem.body.error.message.contains("1500 ms"));
    }

    #[test]
    fn the_body_has_the_documented_shape() {
        let response = ApiError::Domain(Error::invalid("id", "bad id")).into_problem();
        let body = serde_json::to_value(&response.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"error": {
                "code": 400,
                "status": "INVALID_ARGUMENT",
                "reason": "INVALID_FIELD",
                "message": "id: bad id",
                "field": "id",
            }})
        );
        let not_found = serde_json::to_value(
            &ApiError::Domain(Error::job_not_found("j"))
                .into_problem()
                .body,
        )
        .unwrap();
        assert!(not_found["error"].get("field").is_none());
    }
}
