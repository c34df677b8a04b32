//! `Authorization: Bearer <token>` on the gateway, checked by the same
//! [`Authenticator`](orgauth_runtime::access::Authenticator) (and tokens
//! file) as gRPC calls.
//!
//! The events route also takes the token as the `access_token` query
//! parameter (RFC 6750 section 2.3), because a browser's `EventSource`
//! cannot send headers. [`take_query_token`] moves it out of the request's
//! URI before the handler runs, so nothing that logs or echoes the URI can
//! carry the secret; the request spans log only the path and the route
//! template, never the query.

use axum::extract::{FromRequestParts, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::uri::PathAndQuery;
use axum::http::{HeaderMap, HeaderValue, Uri};
use axum::middleware::Next;
use axum::response::Response;
use orgauth_security::{AuthnError, Caller};
use tonic::metadata::MetadataMap;

use super::Gateway;
use super::errors::ApiError;
use crate::error::Error;

/// RFC 6750's query parameter for a bearer token.
pub const ACCESS_TOKEN: &str = "access_token";

/// The authenticated caller of a request; extracting it answers 401 for a
/// missing, malformed, unknown or expired token.
pub struct Authed(pub Caller);

impl FromRequestParts<Gateway> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, gateway: &Gateway) -> Result<Self, ApiError> {
        authenticate(gateway, parts.headers.get(AUTHORIZATION).cloned()).map(Authed)
    }
}

/// [`Authed`] for the events route: the `Authorization` header, or else
/// the `access_token` query parameter that [`take_query_token`] took out
/// of the URI. Both at once, or the parameter twice, is 400 (RFC 6750: one
/// method per request).
pub struct AuthedEvents(pub Caller);

impl FromRequestParts<Gateway> for AuthedEvents {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, gateway: &Gateway) -> Result<Self, ApiError> {
        let header = parts.headers.get(AUTHORIZATION).cloned();
        let credential = match (header, parts.extensions.remove::<QueryToken>()) {
            (header, None) => header,
            (Some(_), Some(_)) => {
                return Err(Error::invalid(
                    ACCESS_TOKEN,
                    "send the token once: in the Authorization header or as access_token, \
                     not both",
                )
                .into());
            }
            (None, Some(QueryToken(tokens))) => {
                let [token] = tokens.as_slice() else {
                    return Err(Error::invalid(ACCESS_TOKEN, "must be given at most once").into());
                };
                // A token with bytes no header may hold is no token of ours.
                Some(
                    HeaderValue::try_from(format!("Bearer {token}"))
                        .map_err(|_| ApiError::Unauthenticated(AuthnError::Malformed))?,
                )
            }
        };
        authenticate(gateway, credential).map(AuthedEvents)
    }
}

/// Only the credential crosses over: the rest of the headers are no
/// business of the authenticator.
fn authenticate(gateway: &Gateway, credential: Option<HeaderValue>) -> Result<Caller, ApiError> {
    let mut headers = HeaderMap::new();
    if let Some(value) = credential {
        headers.insert(AUTHORIZATION, value);
    }
    gateway
        .authenticator
        .authenticate(&MetadataMap::from_headers(headers))
        .map_err(ApiError::Unauthenticated)
}

/// The `access_token` values a request's query carried, decoded.
#[derive(Clone)]
struct QueryToken(Vec<String>);

/// Middleware of the events route: takes every `access_token` out of the
/// URI (the rest of the query stays as sent) into a request extension for
/// [`AuthedEvents`].
pub async fn take_query_token(mut request: Request, next: Next) -> Response {
    let (tokens, rest) = split_query_token(request.uri().query());
    if !tokens.is_empty() {
        let redacted = redact(request.uri(), rest.as_deref());
        *request.uri_mut() = redacted;
        request.extensions_mut().insert(QueryToken(tokens));
    }
    next.run(request).await
}

/// `uri` with `query` in place of its query (none when `None`). Cannot
/// fail for a query that was part of a valid URI; if it did, the whole
/// query goes rather than the token staying.
fn redact(uri: &Uri, query: Option<&str>) -> Uri {
    let path = uri.path();
    let path_and_query = match query {
        Some(query) => PathAndQuery::try_from(format!("{path}?{query}")),
        None => PathAndQuery::try_from(path),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(
        path_and_query
            .or_else(|_| PathAndQuery::try_from(path))
            .unwrap_or_else(|_| PathAndQuery::from_static("/")),
    );
    Uri::from_parts(parts).unwrap_or_default()
}

/// The decoded values of `access_token` in `query`, and the query without
/// them (`None` when nothing is left).
fn split_query_token(query: Option<&str>) -> (Vec<String>, Option<String>) {
    let Some(query) = query else {
        return (Vec::new(), None);
    };
    let mut tokens = Vec::new();
    let mut rest = Vec::new();
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if form_decode(name) == ACCESS_TOKEN {
            tokens.push(form_decode(value));
        } else {
            rest.push(pair);
        }
    }
    let rest = rest.join("&");
    (tokens, (!rest.is_empty()).then_some(rest))
}

/// `application/x-www-form-urlencoded` decoding (`+` is a space, `%XX` a
/// byte); a bad escape is kept as written, invalid UTF-8 replaced.
fn form_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|hex| std::str::from_utf8(hex).ok())
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok());
                if let Some(byte) = hex {
                    out.push(byte);
                    i += 2;
                } else {
                    out.push(b'%');
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_leaves_the_query_and_the_rest_stays() {
        assert_eq!(split_query_token(None), (vec![], None));
        assert_eq!(
            split_query_token(Some("since_version=3")),
            (vec![], Some("since_version=3".to_owned()))
        );
        assert_eq!(
            split_query_token(Some("access_token=oat_a%2Bb%3D&since_version=3")),
            (
                vec!["oat_a+b=".to_owned()],
                Some("since_version=3".to_owned())
            )
        );
        assert_eq!(
            split_query_token(Some("access%5Ftoken=x&access_token=y+z")),
            (vec!["x".to_owned(), "y z".to_owned()], None)
        );
        assert_eq!(
            split_query_token(Some("access_token")),
            (vec![String::new()], None)
        );
        assert_eq!(form_decode("100%"), "100%");
        assert_eq!(form_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn redacted_uris_keep_everything_but_the_token() {
        let uri: Uri = "/v1/jobs/j/events?access_token=secret&since_version=2"
            .parse()
            .unwrap();
        let (_, rest) = split_query_token(uri.query());
        assert_eq!(
            redact(&uri, rest.as_deref()).to_string(),
            "/v1/jobs/j/events?since_version=2"
        );
        let uri: Uri = "http://host:1/v1/jobs/j/events?access_token=secret"
            .parse()
            .unwrap();
        assert_eq!(
            redact(&uri, None).to_string(),
            "http://host:1/v1/jobs/j/events"
        );
    }
}
