//! `GET /v1/jobs/{id}/events`: WatchJob as Server-Sent Events.
//!
//! ```text
//! id: 7
//! event: job
//! data: {"id":"…","state":"RUNNING","processed_members":500,…}
//! ```
//!
//! The same [`App::watch_job`](crate::app::App::watch_job) as gRPC, so the
//! same semantics and limits: first the current state, then every change
//! (coalesced: a slow reader skips to the newest state), and the response
//! ends after the terminal state, which is always sent, even when its
//! version is at or below the one the client resumed from. The event id is
//! the job's version, so a client that reconnects with `Last-Event-ID` (as
//! EventSource does by itself) or `?since_version=` gets only newer
//! states; `Last-Event-ID` wins over the query, being the newer of the two.
//!
//! One difference from WatchJob: a client that resumes at or after the
//! terminal version of a job that has already ended gets `204 No Content`
//! rather than the terminal event once more. An EventSource reconnects
//! whenever a response ends, but stops for good on a 204; without it, it
//! would fetch the terminal event again every few seconds, forever.
//!
//! Browsers' EventSource cannot send an `Authorization` header, so this
//! route also takes the token as `?access_token=` (see [`super::auth`]).
//!
//! A comment line every 15 s keeps proxies from closing an idle stream.
//! Over HTTP/1.1 a failed write of that line is also how a client that
//! vanished without closing its connection is noticed, within about 15 s
//! (over HTTP/2, the transport's keepalive pings notice it). When the
//! server shuts down the stream ends with an `event: error` carrying the
//! error body (503, reason `SHUTTING_DOWN`): reconnect with the last id
//! seen.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tracing::{Instrument, error};

use super::auth::AuthedEvents;
use super::errors::ApiError;
use super::{Gateway, json, path_id};
use crate::domain::job::{Job, parse_job_id};
use crate::error::{Error, Result};

/// How often an idle stream sends a comment line.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub async fn events(
    State(gateway): State<Gateway>,
    AuthedEvents(caller): AuthedEvents,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let job_id = parse_job_id("id", &path_id(id)?)?;
    let since_version = since_version(&headers, uri.query())?;
    // Every refusal (unknown job, watch caps, a bad version) is answered
    // here, as a plain error response, before any event is sent.
    let watch = gateway
        .app
        .watch_job(&caller, job_id, since_version)
        .await?;
    if watch.caller_saw_end() {
        // The job had ended and the client has its last event: nothing
        // more will ever come, and a 204 is what stops an EventSource.
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    // The body outlives the handler's span: carry it into every poll.
    let span = tracing::Span::current();
    let stream = futures::stream::unfold(watch, move |mut watch| {
        async move {
            let event = match watch.next().await? {
                Ok(job) => job_event(&job),
                // Only shutdown ends a watch with an error; the watch
                // yields nothing after it, so the stream ends.
                Err(err) => error_event(err.into()),
            };
            Some((Ok::<_, Infallible>(event), watch))
        }
        .instrument(span.clone())
    });
    let sse = Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"));
    // nginx buffers responses unless told not to; events must flow at once.
    Ok((
        [(
            HeaderName::from_static("x-accel-buffering"),
            HeaderValue::from_static("no"),
        )],
        sse,
    )
        .into_response())
}

fn job_event(job: &Job) -> Event {
    match serde_json::to_string(&json::job(job)) {
        Ok(data) => Event::default()
            .id(job.version.to_string())
            .event("job")
            .data(data),
        Err(err) => error_event(Error::Internal(format!("cannot serialize job: {err}")).into()),
    }
}

fn error_event(err: ApiError) -> Event {
    let problem = err.into_problem();
    let data = serde_json::to_string(&problem.body).unwrap_or_else(|err| {
        error!(error = %err, "could not serialize an error event");
        r#"{"error":{"code":500,"status":"INTERNAL","reason":"INTERNAL","message":"internal error"}}"#
            .to_owned()
    });
    Event::default().event("error").data(data)
}

/// The version the client already has: `Last-Event-ID` (what EventSource
/// sends when it reconnects), else `?since_version=`, else 0 (everything).
fn since_version(headers: &HeaderMap, query: Option<&str>) -> Result<i64> {
    const HEADER: &str = "Last-Event-ID";
    if let Some(value) = headers.get(HEADER) {
        let text = value
            .to_str()
            .map_err(|_| Error::invalid(HEADER, "must be a job version"))?
            .trim();
        if !text.is_empty() {
            return version(HEADER, text);
        }
    }
    let mut since = 0;
    for pair in query.unwrap_or("").split('&') {
        if let Some(("since_version", value)) = pair.split_once('=') {
            since = version("since_version", value)?;
        }
    }
    Ok(since)
}

fn version(field: &str, text: &str) -> Result<i64> {
    text.parse::<i64>().ok().filter(|v| *v >= 0).ok_or_else(|| {
        Error::invalid(
            field,
            "must be a job version: a non-negative integer, as in an event's id",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last_event_id(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("last-event-id", HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn resume_points() {
        let none = HeaderMap::new();
        assert_eq!(since_version(&none, None).unwrap(), 0);
        assert_eq!(since_version(&none, Some("since_version=7")).unwrap(), 7);
        assert_eq!(
            since_version(&none, Some("a=b&since_version=7&c")).unwrap(),
            7
        );
        assert_eq!(since_version(&last_event_id("9"), None).unwrap(), 9);
        assert_eq!(
            since_version(&last_event_id("9"), Some("since_version=3")).unwrap(),
            9,
            "Last-Event-ID is newer than the URL"
        );
        assert_eq!(
            since_version(&last_event_id(" "), Some("since_version=3")).unwrap(),
            3
        );
        for (headers, query, field) in [
            (last_event_id("x"), None, "Last-Event-ID"),
            (last_event_id("-1"), None, "Last-Event-ID"),
            (none.clone(), Some("since_version=-2"), "since_version"),
            (none.clone(), Some("since_version="), "since_version"),
            (none.clone(), Some("since_version=1e3"), "since_version"),
        ] {
            match since_version(&headers, query) {
                Err(Error::InvalidArgument { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{query:?}: {other:?}"),
            }
        }
    }

    /// What `events` sends for these events, on the wire.
    async fn wire(events: Vec<Event>) -> String {
        let stream = futures::stream::iter(events.into_iter().map(Ok::<_, Infallible>));
        let body = Sse::new(stream).into_response().into_body();
        let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn job_events_carry_the_version_as_their_id() {
        let mut job = Job::queued(
            uuid::Uuid::nil(),
            "acme".into(),
            crate::domain::job::JobKind::DisableCustomSso,
            0,
        );
        job.version = 7;
        let text = wire(vec![job_event(&job)]).await;
        let data = serde_json::to_string(&json::job(&job)).unwrap();
        assert_eq!(text, format!("id: 7\nevent: job\ndata: {data}\n\n"));
    }

    #[tokio::test]
    async fn shutdown_ends_the_stream_with_an_error_event() {
        let text = wire(vec![error_event(
            Error::Unavailable("server is shutting down".into()).into(),
        )])
        .await;
        let data = text
            .strip_prefix("event: error\ndata: ")
            .and_then(|rest| rest.strip_suffix("\n\n"))
            .unwrap_or_else(|| panic!("{text:?}"));
        let body: serde_json::Value = serde_json::from_str(data).unwrap();
        assert_eq!(body["error"]["code"], 503);
        assert_eq!(body["error"]["reason"], "SHUTTING_DOWN");
    }
}
