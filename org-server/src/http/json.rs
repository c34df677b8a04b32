//! The JSON shapes of orgs and jobs, and JSON responses.
//!
//! Member names are the proto fields' (snake_case, as proto3 JSON with
//! `preserving_proto_field_name` and grpcurl print them) and timestamps
//! RFC 3339 in UTC. Two deliberate differences from proto3 JSON, for plain
//! HTTP clients: enums are their short names (`"RUNNING"`, not
//! `"JOB_STATE_RUNNING"`), and 64-bit counters are JSON numbers, not
//! strings (they stay far below 2^53). Every member is always present,
//! except the job's `start_time` and `end_time` until they happen.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tracing::error;

use crate::domain::Micros;
use crate::domain::job::{Job, JobKind, MemberFailure};
use crate::domain::org::Org;

#[derive(Debug, Serialize)]
pub struct OrgJson<'a> {
    id: &'a str,
    display_name: &'a str,
    allow_custom_sso: bool,
    etag: String,
    member_count: i64,
    create_time: String,
    update_time: String,
}

pub fn org(org: &Org) -> OrgJson<'_> {
    OrgJson {
        id: &org.id,
        display_name: &org.display_name,
        allow_custom_sso: org.allow_custom_sso,
        etag: org.etag(),
        member_count: org.member_count,
        create_time: timestamp(org.create_time),
        update_time: timestamp(org.update_time),
    }
}

#[derive(Debug, Serialize)]
pub struct JobJson<'a> {
    id: String,
    org_id: &'a str,
    kind: &'static str,
    state: &'static str,
    total_members: i64,
    processed_members: i64,
    unlinked_members: i64,
    failed_members: i64,
    attempt: i32,
    last_error: &'a str,
    failures: &'a [MemberFailure],
    version: i64,
    create_time: String,
    update_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    start_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    end_time: Option<String>,
}

pub fn job(job: &Job) -> JobJson<'_> {
    JobJson {
        id: job.id.to_string(),
        org_id: &job.org_id,
        kind: match job.kind {
            JobKind::DisableCustomSso => "DISABLE_CUSTOM_SSO",
            JobKind::EnableCustomSso => "ENABLE_CUSTOM_SSO",
        },
        state: job.state.name(),
        total_members: job.total_members,
        processed_members: job.processed_members,
        unlinked_members: job.unlinked_members,
        failed_members: job.failed_members,
        attempt: job.attempt,
        last_error: &job.last_error,
        failures: &job.failures,
        version: job.version,
        create_time: timestamp(job.create_time),
        update_time: timestamp(job.update_time),
        start_time: job.start_time.map(timestamp),
        end_time: job.end_time.map(timestamp),
    }
}

/// RFC 3339 in UTC with microseconds, as stored.
pub fn timestamp(micros: Micros) -> String {
    let offset = std::time::Duration::from_micros(micros.unsigned_abs());
    let time = if micros >= 0 {
        std::time::UNIX_EPOCH.checked_add(offset)
    } else {
        std::time::UNIX_EPOCH.checked_sub(offset)
    };
    // Unrepresentable times cannot come from the store's clock; the epoch
    // is a visible, harmless stand-in rather than a failed response.
    humantime::format_rfc3339_micros(time.unwrap_or(std::time::UNIX_EPOCH)).to_string()
}

/// `value` as a JSON response with `status`.
pub fn respond(status: StatusCode, value: &impl Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(bytes) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            Body::from(bytes),
        )
            .into_response(),
        Err(err) => {
            error!(error = %err, "could not serialize a response");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                r#"{"error":{"code":500,"status":"INTERNAL","reason":"INTERNAL","message":"internal error"}}"#,
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::domain::job::JobState;

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds() {
        assert_eq!(
            timestamp(1_700_000_000_123_456),
            "2023-11-14T22:13:20.123456Z"
        );
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn a_job_has_snake_case_members_short_enum_names_and_numbers() {
        let mut job = Job::queued(
            Uuid::nil(),
            "acme".into(),
            JobKind::DisableCustomSso,
            1_700_000_000_000_000,
        );
        job.state = JobState::Running;
        job.total_members = 3;
        job.failures = vec![MemberFailure {
            member_id: "m1".into(),
            code: "INVALID_ARGUMENT".into(),
            message: "no".into(),
        }];
        let value = serde_json::to_value(self::job(&job)).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "id": "00000000-0000-0000-0000-000000000000",
                "org_id": "acme",
                "kind": "DISABLE_CUSTOM_SSO",
                "state": "RUNNING",
                "total_members": 3,
                "processed_members": 0,
                "unlinked_members": 0,
                "failed_members": 0,
                "attempt": 0,
                "last_error": "",
                "failures": [{"member_id": "m1", "code": "INVALID_ARGUMENT", "message": "no"}],
                "version": 1,
                "create_time": "2023-11-14T22:13:20.000000Z",
                "update_time": "2023-11-14T22:13:20.000000Z",
            })
        );
    }

    #[test]
    fn an_org_carries_its_etag() {
        let org = Org {
            id: "acme".into(),
            display_name: "Acme".into(),
            allow_custom_sso: true,
            revision: 4,
            member_count: 2,
            create_time: 0,
            update_time: 0,
        };
        let value = serde_json::to_value(self::org(&org)).unwrap();
        assert_eq!(value["etag"], "r4");
        assert_eq!(value["allow_custom_sso"], true);
        assert_eq!(value["member_count"], 2);
    }
}
