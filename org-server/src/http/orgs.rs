//! `GET /v1/orgs/{id}` and `PATCH /v1/orgs/{id}`.
//!
//! A PATCH is one UpdateOrg: its replaces become the update mask and
//! values, its tests preconditions, and `Idempotency-Key` the request_id
//! (the same key space as gRPC's, so a retry over either transport finds
//! the first answer). All of it or none of it is written.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::header::{CONTENT_TYPE, LOCATION};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use serde::Serialize;

use super::auth::Authed;
use super::errors::ApiError;
use super::patch::{self, Current};
use super::{Gateway, json, path_id};
use crate::domain::org::{Org, OrgUpdate};
use crate::error::Error;

/// The header that carries UpdateOrg's request_id.
const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

pub async fn get(
    State(gateway): State<Gateway>,
    Authed(caller): Authed,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path_id(id)?;
    let org = gateway
        .app
        .get_org(&caller, &id)
        .await
        .map_err(|err| renamed(err, &[("org_id", "id")]))?;
    Ok(json::respond(StatusCode::OK, &json::org(&org)))
}

/// What a PATCH answers: the org as written, and the job the change
/// started, if any (as UpdateOrgResponse, whose JSON omits an empty id).
#[derive(Serialize)]
struct Updated<'a> {
    org: json::OrgJson<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    job_id: Option<String>,
}

pub async fn patch(
    State(gateway): State<Gateway>,
    Authed(caller): Authed,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let id = path_id(id)?;
    check_media_type(&headers)?;
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::BodyTooLarge
        } else {
            ApiError::BodyUnreadable(rejection.body_text())
        }
    })?;
    let request_id = idempotency_key(&headers)?;
    let ops = patch::parse(&body)?;

    let current = if patch::needs_current(&ops) {
        let org = gateway
            .app
            .get_org(&caller, &id)
            .await
            .map_err(|err| renamed(err, &[("org_id", "id")]))?;
        Some(org)
    } else {
        None
    };
    let seen = current.as_ref().map(seen).transpose()?;
    let change = patch::evaluate(&ops, seen.as_ref())?;
    if change.is_empty() {
        // Only tests, all held: nothing to write, and `needs_current`
        // made sure the org was read.
        let org =
            current.ok_or_else(|| Error::Internal("a test-only patch without a read".into()))?;
        return Ok(answer(&org, None));
    }

    let mut mask = Vec::new();
    if change.display_name.is_some() {
        mask.push("display_name".to_owned());
    }
    if change.allow_custom_sso.is_some() {
        mask.push("allow_custom_sso".to_owned());
    }
    let (display_name, name_at) = change.display_name.unwrap_or_default();
    let names = [
        ("org.id", "id"),
        ("org.display_name", name_at.as_str()),
        ("request_id", IDEMPOTENCY_KEY),
    ];
    let update = OrgUpdate::parse(
        id,
        display_name,
        change.allow_custom_sso.unwrap_or_default(),
        change.expected_etag.unwrap_or_default(),
        &mask,
        request_id,
    )
    .map_err(|err| renamed(err, &names))?;
    let write = gateway
        .app
        .update_org(&caller, update)
        .await
        .map_err(|err| renamed(err, &names))?;
    Ok(answer(&write.org, write.job_id.map(|id| id.to_string())))
}

/// 202 with the job's `Location` when the change started one (the rest
/// of the work is asynchronous), else 200.
fn answer(org: &Org, job_id: Option<String>) -> Response {
    let location = job_id
        .as_deref()
        .and_then(|id| HeaderValue::try_from(format!("/v1/jobs/{id}")).ok());
    let status = if job_id.is_some() {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    let mut response = json::respond(
        status,
        &Updated {
            org: json::org(org),
            job_id,
        },
    );
    if let Some(location) = location {
        response.headers_mut().insert(LOCATION, location);
    }
    response
}

/// The org as a patch's tests see it: the document GET returns.
fn seen(org: &Org) -> Result<Current, Error> {
    serde_json::to_value(json::org(org))
        .map(Current::new)
        .map_err(|err| Error::Internal(format!("cannot serialize org: {err}")))
}

/// A patch is JSON (RFC 6902's own media type, or plain JSON for clients
/// that cannot set it); parameters such as charset are ignored.
fn check_media_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return Err(ApiError::UnsupportedMediaType("no Content-Type".into()));
    };
    let essence = value
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json-patch+json" | "application/json" => Ok(()),
        other => Err(ApiError::UnsupportedMediaType(format!(
            "{:?}",
            other.chars().take(64).collect::<String>()
        ))),
    }
}

/// The `Idempotency-Key` header ("" when absent). The IETF draft makes it
/// a structured-field string (`"…"`); the bare form most APIs use is
/// accepted too. Length and characters are checked with UpdateOrg's
/// request_id.
fn idempotency_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(String::new());
    };
    let text = value
        .to_str()
        .map_err(|_| Error::invalid(IDEMPOTENCY_KEY, "must be printable ASCII"))?;
    let key = text
        .strip_prefix('"')
        .and_then(|quoted| quoted.strip_suffix('"'))
        .unwrap_or(text);
    if key.is_empty() {
        return Err(Error::invalid(IDEMPOTENCY_KEY, "must not be empty when sent").into());
    }
    Ok(key.to_owned())
}

/// Names a validation error's field as the HTTP request spells it (a
/// path parameter, a header, a place in the body) rather than as the
/// UpdateOrgRequest message does.
pub(super) fn renamed(err: Error, names: &[(&str, &str)]) -> Error {
    match err {
        Error::InvalidArgument { field, reason } => {
            let field = names
                .iter()
                .find(|(grpc, _)| *grpc == field)
                .map_or(field, |(_, http)| (*http).to_owned());
            Error::InvalidArgument { field, reason }
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn patch_media_types() {
        for ok in [
            "application/json-patch+json",
            "application/json",
            "Application/JSON; charset=utf-8",
        ] {
            check_media_type(&headers(&[("content-type", ok)])).unwrap();
        }
        for bad in [
            "text/plain",
            "application/merge-patch+json",
            "application/x-www-form-urlencoded",
        ] {
            assert!(matches!(
                check_media_type(&headers(&[("content-type", bad)])),
                Err(ApiError::UnsupportedMediaType(_))
            ));
        }
        assert!(matches!(
            check_media_type(&HeaderMap::new()),
            Err(ApiError::UnsupportedMediaType(_))
        ));
    }

    #[test]
    fn idempotency_keys_bare_or_quoted() {
        assert_eq!(idempotency_key(&HeaderMap::new()).unwrap(), "");
        assert_eq!(
            idempotency_key(&headers(&[("idempotency-key", "k-1")])).unwrap(),
            "k-1"
        );
        assert_eq!(
            idempotency_key(&headers(&[("idempotency-key", "\"k-1\"")])).unwrap(),
            "k-1"
        );
        assert!(idempotency_key(&headers(&[("idempotency-key", "\"\"")])).is_err());
    }

    #[test]
    fn fields_are_named_as_http_spells_them() {
        let names = [("request_id", IDEMPOTENCY_KEY), ("org.id", "id")];
        match renamed(Error::invalid("request_id", "too long"), &names) {
            Error::InvalidArgument { field, .. } => assert_eq!(field, IDEMPOTENCY_KEY),
            other => panic!("{other:?}"),
        }
        match renamed(Error::invalid("other", "x"), &names) {
            Error::InvalidArgument { field, .. } => assert_eq!(field, "other"),
            other => panic!("{other:?}"),
        }
    }
}
