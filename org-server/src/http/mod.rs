//! The JSON gateway: plain HTTP/JSON routes over [`App`], served on the
//! gRPC port (tonic's router is axum, so both share one listener, one set of
//! transport limits and one shutdown). Like [`crate::grpc`] it is a thin
//! edge: no rules live here, every call goes through `App` with the
//! [`Caller`](orgauth_security::Caller) the bearer token authenticates as,
//! so roles, rate limits and watch caps are exactly those of gRPC.
//!
//! | route | what |
//! | --- | --- |
//! | `GET /v1/orgs/{id}` | the org |
//! | `PATCH /v1/orgs/{id}` | a JSON Patch (RFC 6902) as one UpdateOrg: 202 + `Location` of the job, or 200 when no job was needed |
//! | `GET /v1/jobs/{id}` | the job |
//! | `GET /v1/jobs/{id}/events` | WatchJob as Server-Sent Events, resumable with `Last-Event-ID` |
//!
//! - [`patch`]: parsing and checking JSON Patch documents, without I/O.
//! - [`orgs`], [`jobs`], [`sse`]: the handlers.
//! - [`errors`]: the one mapping of failures to HTTP statuses and JSON
//!   error bodies (the HTTP twin of the mapping in [`crate::grpc`]).
//! - [`auth`]: `Authorization: Bearer` through the same
//!   [`Authenticator`] as gRPC.
//! - [`json`]: the JSON shapes of orgs and jobs.
//!
//! Request bodies are capped at [`MAX_BODY_BYTES`]: a patch of the two
//! mutable fields fits in well under a kilobyte.
//!
//! A path no route has is 404 with the JSON error body, except for gRPC
//! calls, which keep tonic's UNIMPLEMENTED ([`errors::route_not_found`]).
//! GET and PATCH have a time limit of their own, [`call_limit`], a little
//! under `--max-call-time`: tonic's limit for a call sits outside these
//! routes and would answer a plain HTTP client with a gRPC status. The
//! event stream has none, like WatchJob.

mod auth;
mod errors;
mod jobs;
mod json;
mod orgs;
mod patch;
mod sse;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use orgauth_runtime::access::Authenticator;
use tracing::Instrument;

use errors::ApiError;

use crate::app::App;

/// Largest request body the gateway reads; beyond it, 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What every handler shares.
#[derive(Clone)]
struct Gateway {
    /// Every route calls App, as the gRPC services do, so the rules and
    /// limits are one set.
    app: Arc<App>,
    /// The gRPC services' own: one tokens file, one answer to a bad token.
    authenticator: Authenticator,
}

/// The time limit of a GET or PATCH on a server whose calls are cut after
/// `max_call_time`: a tenth less (at least 50 ms and at most 2 s less), so
/// the gateway answers with its own JSON 503 before tonic's limit fires.
pub fn call_limit(max_call_time: Duration) -> Duration {
    max_call_time.saturating_sub(
        (max_call_time / 10).clamp(Duration::from_millis(50), Duration::from_secs(2)),
    )
}

/// The gateway's routes, with no fallback: [`routes`] adds the one that
/// tells gRPC calls from HTTP requests. `max_call_time` is the server's
/// `--max-call-time` (see [`call_limit`]).
pub fn router(app: Arc<App>, authenticator: Authenticator, max_call_time: Duration) -> Router {
    let limit = middleware::from_fn_with_state(call_limit(max_call_time), deadline);
    Router::new()
        .route(
            "/v1/orgs/{id}",
            get(orgs::get).patch(orgs::patch).route_layer(limit.clone()),
        )
        .route("/v1/jobs/{id}", get(jobs::get).route_layer(limit))
        // A stream has no time limit (as WatchJob); the token may come in
        // the query, which is taken out of the URI first.
        .route(
            "/v1/jobs/{id}/events",
            get(sse::events).route_layer(middleware::from_fn(auth::take_query_token)),
        )
        .method_not_allowed_fallback(errors::method_not_allowed)
        // route_layer, not layer: only requests that matched one of the
        // routes above, so the merged gRPC routes and the fallback are
        // left exactly as they are.
        .route_layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .route_layer(middleware::from_fn(trace))
        .with_state(Gateway { app, authenticator })
}

/// [`router`] with the fallback for unknown paths, as tonic routes ready
/// for `Server::add_routes`: gRPC services added afterwards join it. The
/// fallback keeps tonic's UNIMPLEMENTED for gRPC calls to an unknown
/// method and answers anything else 404 with the JSON error body (tonic's
/// own fallback would answer a plain HTTP client 200 with an empty body).
pub fn routes(
    app: Arc<App>,
    authenticator: Authenticator,
    max_call_time: Duration,
) -> tonic::service::Routes {
    with_fallback(router(app, authenticator, max_call_time)).into()
}

fn with_fallback(router: Router) -> Router {
    router.fallback(errors::route_not_found)
}

/// Stops a request that runs past `limit`, answering 503 with the JSON
/// error body and `Retry-After`. Dropping the handler rolls back a
/// transaction it had open; a write whose commit was already on its way
/// may still land, which the message says (a retry with the same
/// Idempotency-Key is then answered with the first result).
async fn deadline(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout(limit).into_response(),
    }
}

/// The `{id}` of a route. Only a path that is not valid percent-encoded
/// UTF-8 fails here; what an id must look like is checked by App.
fn path_id(id: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    id.map(|Path(id)| id)
        .map_err(|rejection| crate::error::Error::invalid("id", rejection.body_text()).into())
}

/// A span per request naming the method and the route it matched (the
/// template, not the path, so ids do not explode log cardinality), and the
/// status it got.
async fn trace(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("", MatchedPath::as_str)
        .to_owned();
    let span = tracing::info_span!(
        "http",
        method = %request.method(),
        route = %route,
        status = tracing::field::Empty,
    );
    let response = next.run(request).instrument(span.clone()).await;
    span.record("status", response.status().as_u16());
    tracing::debug!(parent: &span, "answered");
    response
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::StatusCode;
    use tonic::codegen::Service;

    use super::*;

    async fn call(router: &mut Router, request: axum::http::Request<Body>) -> Response {
        match Service::call(router, request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }

    async fn json_body(response: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn the_limit_is_a_little_under_the_call_time() {
        let ms = Duration::from_millis;
        assert_eq!(call_limit(Duration::from_secs(60)), Duration::from_secs(58));
        assert_eq!(call_limit(Duration::from_secs(10)), Duration::from_secs(9));
        assert_eq!(call_limit(ms(2000)), ms(1800));
        assert_eq!(call_limit(ms(300)), ms(250));
        assert_eq!(call_limit(ms(20)), Duration::ZERO);
    }

    #[tokio::test]
    async fn a_request_past_the_limit_gets_a_json_503_and_a_fast_one_its_answer() {
        let mut router = Router::new()
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    "late"
                }),
            )
            .route("/fast", get(|| async { "on time" }))
            .route_layer(middleware::from_fn_with_state(
                Duration::from_millis(20),
                deadline,
            ));
        let started = std::time::Instant::now();
        let slow = call(
            &mut router,
            axum::http::Request::get("/slow")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(slow.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(slow.headers()["retry-after"], "1");
        assert_eq!(slow.headers()["content-type"], "application/json");
        let body = json_body(slow).await;
        assert_eq!(body["error"]["code"], 503);
        assert_eq!(body["error"]["reason"], "DEADLINE_EXCEEDED");
        let fast = call(
            &mut router,
            axum::http::Request::get("/fast")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(fast.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn unknown_paths_fall_back_by_content_type() {
        let mut router = with_fallback(Router::new().route("/v1/known", get(|| async { "ok" })));
        let plain = call(
            &mut router,
            axum::http::Request::get("/v1/org/acme")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(plain.status(), StatusCode::NOT_FOUND);
        assert_eq!(json_body(plain).await["error"]["reason"], "ROUTE_NOT_FOUND");
        let grpc = call(
            &mut router,
            axum::http::Request::post("/orgauth.org.v1.OrgService/Nope")
                .header("content-type", "application/grpc")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(grpc.status(), StatusCode::OK);
        assert_eq!(grpc.headers()["grpc-status"], "12");
        let known = call(
            &mut router,
            axum::http::Request::get("/v1/known")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(known.status(), StatusCode::OK);
    }
}
