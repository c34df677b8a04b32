//! How orgctl prints (`--output`): lists as aligned columns under a header
//! row or one JSON object per line, single results as one line of text or
//! one JSON object; and the text, table and JSON shapes of every resource.
//!
//! The prost types do not implement `Serialize`, so the JSON shapes are
//! built here by hand; field names follow the protobuf fields, enums use
//! their names without prefix (`"RUNNING"`), timestamps are RFC 3339 strings
//! (or null when unset).

use std::fmt::Display;
use std::io::Write;
use std::time::SystemTime;

use orgauth_client::pb;
use orgauth_client::pb::prost_types::Timestamp;
use orgauth_client::{job_kind_name, job_state_name};
use serde_json::{Value, json};

use super::table::Table;

/// `--output` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// For humans: lists as aligned columns under a header row, single
    /// results as one line of text.
    Table,
    /// For scripts: one JSON object per line.
    Json,
}

impl Format {
    /// The name `--output` takes.
    pub fn name(self) -> &'static str {
        match self {
            Format::Table => "table",
            Format::Json => "json",
        }
    }
}

/// Where results go, and in which form.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub format: Format,
}

impl Output {
    pub fn is_json(self) -> bool {
        self.format == Format::Json
    }

    /// Prints one result: `text` for humans, `json` for scripts.
    pub fn record(self, text: impl Display, json: Value) {
        if self.is_json() {
            print_line(json);
        } else {
            print_line(text);
        }
    }

    /// Starts printing a list of items shaped by `shape`.
    pub fn list<T>(self, shape: Shape<T>) -> Listing<T> {
        let table = (!self.is_json()).then(|| Table::new(shape.header));
        Listing {
            shape,
            table,
            any: false,
        }
    }
}

/// How the items of one kind of list print: their table columns and their
/// JSON object.
pub struct Shape<T> {
    pub header: &'static [&'static str],
    pub row: fn(&T) -> Vec<String>,
    pub json: fn(&T) -> Value,
}

/// A list being printed: JSON lines go out at once, table rows when the
/// table can size its columns.
pub struct Listing<T> {
    shape: Shape<T>,
    table: Option<Table>,
    /// Whether any item was pushed.
    any: bool,
}

impl<T> Listing<T> {
    pub fn push(&mut self, item: &T) {
        self.any = true;
        match &mut self.table {
            Some(table) => table.push((self.shape.row)(item)),
            None => print_line((self.shape.json)(item)),
        }
    }

    /// Prints whatever the table still holds; an empty list is its header.
    pub fn finish(self) {
        if let Some(table) = self.table {
            table.finish();
        }
    }

    /// Ends a list cut short by an error: the items listed before it are
    /// still worth seeing, a lone header is not.
    pub fn abandon(self) {
        if self.any {
            self.finish();
        }
    }
}

/// Writes one line to stdout. A closed stdout (`orgctl member list | head`)
/// is not an error worth a panic: stop quietly, as `head`'s other inputs do.
pub fn print_line(line: impl Display) {
    let mut stdout = std::io::stdout().lock();
    if writeln!(stdout, "{line}")
        .and_then(|()| stdout.flush())
        .is_err()
    {
        std::process::exit(0);
    }
}

/// An RFC 3339 time with milliseconds, or `None` when unset or out of range.
pub fn time(timestamp: Option<&Timestamp>) -> Option<String> {
    let system_time = SystemTime::try_from(*timestamp?).ok()?;
    Some(humantime::format_rfc3339_millis(system_time).to_string())
}

fn time_text(timestamp: Option<&Timestamp>) -> String {
    time(timestamp).unwrap_or_else(|| "-".to_owned())
}

/// A time for a table cell: RFC 3339 to the second, or `-`.
fn time_cell(timestamp: Option<&Timestamp>) -> String {
    timestamp
        .and_then(|timestamp| SystemTime::try_from(*timestamp).ok())
        .map_or_else(
            || "-".to_owned(),
            |time| humantime::format_rfc3339_seconds(time).to_string(),
        )
}

/// `1500/10000 15%`: a job's progress in one cell (no percentage before
/// the job knows how many members it has).
pub fn progress_cell(job: &pb::org::Job) -> String {
    let done = format!("{}/{}", job.processed_members, job.total_members);
    if job.total_members <= 0 {
        return done;
    }
    let percent = job.processed_members.saturating_mul(100) / job.total_members;
    format!("{done} {percent}%")
}

pub const ORGS: Shape<pb::org::Org> = Shape {
    header: &["ID", "NAME", "CUSTOM_SSO", "MEMBERS", "ETAG", "UPDATED"],
    row: org_row,
    json: org_json,
};

fn org_row(org: &pb::org::Org) -> Vec<String> {
    vec![
        org.id.clone(),
        org.display_name.clone(),
        org.allow_custom_sso.to_string(),
        org.member_count.to_string(),
        org.etag.clone(),
        time_cell(org.update_time.as_ref()),
    ]
}

pub const MEMBERS: Shape<pb::org::Member> = Shape {
    header: &["ID", "EMAIL"],
    row: |member| vec![member.id.clone(), member.email.clone()],
    json: member_json,
};

pub const JOBS: Shape<pb::org::Job> = Shape {
    header: &[
        "ID", "ORG", "KIND", "STATE", "PROGRESS", "FAILED", "ATTEMPT", "CREATED",
    ],
    row: job_row,
    json: job_json,
};

fn job_row(job: &pb::org::Job) -> Vec<String> {
    vec![
        job.id.clone(),
        job.org_id.clone(),
        job_kind_name(job.kind()).to_owned(),
        job_state_name(job.state()).to_owned(),
        progress_cell(job),
        job.failed_members.to_string(),
        job.attempt.to_string(),
        time_cell(job.create_time.as_ref()),
    ]
}

pub const FAILURES: Shape<pb::org::MemberFailure> = Shape {
    header: &["MEMBER", "CODE", "MESSAGE"],
    row: |failure| {
        vec![
            failure.member_id.clone(),
            failure.code.clone(),
            failure.message.clone(),
        ]
    },
    json: failure_json,
};

pub const CONNECTIONS: Shape<pb::auth::SsoConnection> = Shape {
    header: &["MEMBER", "LINKED"],
    row: |connection| {
        vec![
            connection.member_id.clone(),
            time_cell(connection.create_time.as_ref()),
        ]
    },
    json: connection_json,
};

pub const UNLINK_RESULTS: Shape<pb::auth::UnlinkResult> = Shape {
    header: &["MEMBER", "OUTCOME", "ERROR"],
    row: |result| {
        let error = match (
            result.error_code.is_empty(),
            result.error_message.is_empty(),
        ) {
            (true, true) => String::new(),
            _ => format!("{}: {}", result.error_code, result.error_message),
        };
        vec![
            result.member_id.clone(),
            unlink_outcome_name(result.outcome()).to_owned(),
            error,
        ]
    },
    json: unlink_result_json,
};

pub fn org_json(org: &pb::org::Org) -> Value {
    json!({
        "id": org.id,
        "display_name": org.display_name,
        "allow_custom_sso": org.allow_custom_sso,
        "etag": org.etag,
        "member_count": org.member_count,
        "create_time": time(org.create_time.as_ref()),
        "update_time": time(org.update_time.as_ref()),
    })
}

pub fn org_text(org: &pb::org::Org) -> String {
    format!(
        "org {} display_name={:?} allow_custom_sso={} members={} etag={} updated={}",
        org.id,
        org.display_name,
        org.allow_custom_sso,
        org.member_count,
        org.etag,
        time_text(org.update_time.as_ref()),
    )
}

pub fn member_json(member: &pb::org::Member) -> Value {
    json!({ "id": member.id, "email": member.email })
}

pub fn failure_json(failure: &pb::org::MemberFailure) -> Value {
    json!({ "member_id": failure.member_id, "code": failure.code, "message": failure.message })
}

pub fn failure_text(failure: &pb::org::MemberFailure) -> String {
    format!(
        "{} {}: {}",
        failure.member_id, failure.code, failure.message
    )
}

pub fn job_json(job: &pb::org::Job) -> Value {
    json!({
        "id": job.id,
        "org_id": job.org_id,
        "kind": job_kind_name(job.kind()),
        "state": job_state_name(job.state()),
        "total_members": job.total_members,
        "processed_members": job.processed_members,
        "unlinked_members": job.unlinked_members,
        "failed_members": job.failed_members,
        "attempt": job.attempt,
        "last_error": job.last_error,
        "failures": job.failures.iter().map(failure_json).collect::<Vec<_>>(),
        "version": job.version,
        "create_time": time(job.create_time.as_ref()),
        "update_time": time(job.update_time.as_ref()),
        "start_time": time(job.start_time.as_ref()),
        "end_time": time(job.end_time.as_ref()),
    })
}

/// The one-line progress view of a job, as `job watch` prints each update:
/// `job ID RUNNING processed=1500/10000 unlinked=1500 failed=0 attempt=0 version=7`.
pub fn job_progress_text(job: &pb::org::Job) -> String {
    let mut line = format!(
        "job {} {} processed={}/{} unlinked={} failed={} attempt={} version={}",
        job.id,
        job_state_name(job.state()),
        job.processed_members,
        job.total_members,
        job.unlinked_members,
        job.failed_members,
        job.attempt,
        job.version,
    );
    if !job.last_error.is_empty() {
        line.push_str(&format!(" last_error={:?}", job.last_error));
    }
    line
}

/// The full view of a job (`job get`, `job list`): the progress line plus
/// org, kind and times, and the sampled failures on following lines.
pub fn job_text(job: &pb::org::Job, with_failures: bool) -> String {
    let mut text = format!(
        "{} org={} kind={} created={} started={} ended={}",
        job_progress_text(job),
        job.org_id,
        job_kind_name(job.kind()),
        time_text(job.create_time.as_ref()),
        time_text(job.start_time.as_ref()),
        time_text(job.end_time.as_ref()),
    );
    if with_failures {
        for failure in &job.failures {
            text.push_str(&format!("\n  failure {}", failure_text(failure)));
        }
    }
    text
}

pub fn policy_json(policy: &pb::auth::SsoPolicy) -> Value {
    json!({
        "org_id": policy.org_id,
        "allow_custom_sso": policy.allow_custom_sso,
        "update_time": time(policy.update_time.as_ref()),
    })
}

pub fn policy_text(policy: &pb::auth::SsoPolicy) -> String {
    format!(
        "policy {} allow_custom_sso={} updated={}",
        policy.org_id,
        policy.allow_custom_sso,
        time(policy.update_time.as_ref()).unwrap_or_else(|| "never".to_owned()),
    )
}

pub fn connection_json(connection: &pb::auth::SsoConnection) -> Value {
    json!({
        "org_id": connection.org_id,
        "member_id": connection.member_id,
        "create_time": time(connection.create_time.as_ref()),
    })
}

fn unlink_outcome_name(outcome: pb::auth::UnlinkOutcome) -> &'static str {
    match outcome {
        pb::auth::UnlinkOutcome::Unspecified => "UNSPECIFIED",
        pb::auth::UnlinkOutcome::Unlinked => "UNLINKED",
        pb::auth::UnlinkOutcome::NotLinked => "NOT_LINKED",
        pb::auth::UnlinkOutcome::Error => "ERROR",
    }
}

pub fn unlink_result_json(result: &pb::auth::UnlinkResult) -> Value {
    json!({
        "member_id": result.member_id,
        "outcome": unlink_outcome_name(result.outcome()),
        "error_code": result.error_code,
        "error_message": result.error_message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running_job() -> pb::org::Job {
        let mut job = pb::org::Job {
            id: "0190".into(),
            org_id: "acme".into(),
            total_members: 10_000,
            processed_members: 1_500,
            unlinked_members: 1_500,
            version: 7,
            ..pb::org::Job::default()
        };
        job.set_state(pb::org::JobState::Running);
        job.set_kind(pb::org::JobKind::DisableCustomSso);
        job
    }

    #[test]
    fn progress_line_has_the_documented_shape() {
        assert_eq!(
            job_progress_text(&running_job()),
            "job 0190 RUNNING processed=1500/10000 unlinked=1500 failed=0 attempt=0 version=7"
        );
        let mut retrying = running_job();
        retrying.attempt = 2;
        retrying.last_error = "UNAVAILABLE: auth down".into();
        assert!(
            job_progress_text(&retrying)
                .ends_with("attempt=2 version=7 last_error=\"UNAVAILABLE: auth down\"")
        );
    }

    #[test]
    fn job_json_uses_bare_enum_names_and_null_times() {
        let value = job_json(&running_job());
        assert_eq!(value["state"], "RUNNING");
        assert_eq!(value["kind"], "DISABLE_CUSTOM_SSO");
        assert_eq!(value["processed_members"], 1_500);
        assert!(value["start_time"].is_null());
    }

    #[test]
    fn times_are_rfc3339_with_millis() {
        let timestamp = Timestamp {
            seconds: 1_700_000_000,
            nanos: 123_456_789,
        };
        assert_eq!(
            time(Some(&timestamp)).as_deref(),
            Some("2023-11-14T22:13:20.123Z")
        );
        assert_eq!(time(None), None);
    }
}
