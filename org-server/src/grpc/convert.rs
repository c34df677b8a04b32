//! Conversions between protobuf messages and domain values.

use orgauth_proto::google::{longrunning as lro, rpc};
use orgauth_proto::org::v1 as pb;
use prost::Message;
use prost_types::Timestamp;

use crate::domain::Micros;
use crate::domain::job::{Job, JobKind, JobState, MemberFailure};
use crate::domain::org::{Member, Org};
use crate::error::{Error, Result};

pub fn timestamp(micros: Micros) -> Timestamp {
    Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: i32::try_from(micros.rem_euclid(1_000_000) * 1000).unwrap_or(0),
    }
}

pub fn org(org: &Org) -> pb::Org {
    pb::Org {
        id: org.id.clone(),
        display_name: org.display_name.clone(),
        allow_custom_sso: org.allow_custom_sso,
        etag: org.etag(),
        create_time: Some(timestamp(org.create_time)),
        update_time: Some(timestamp(org.update_time)),
        member_count: org.member_count,
    }
}

pub fn member(member: &Member) -> pb::Member {
    pb::Member {
        id: member.id.clone(),
        email: member.email.clone(),
    }
}

pub fn failure(failure: &MemberFailure) -> pb::MemberFailure {
    pb::MemberFailure {
        member_id: failure.member_id.clone(),
        code: failure.code.clone(),
        message: failure.message.clone(),
    }
}

fn job_kind(kind: JobKind) -> pb::JobKind {
    match kind {
        JobKind::DisableCustomSso => pb::JobKind::DisableCustomSso,
        JobKind::EnableCustomSso => pb::JobKind::EnableCustomSso,
    }
}

fn job_state(state: JobState) -> pb::JobState {
    match state {
        JobState::Queued => pb::JobState::Queued,
        JobState::Running => pb::JobState::Running,
        JobState::Succeeded => pb::JobState::Succeeded,
        JobState::Failed => pb::JobState::Failed,
        JobState::Cancelled => pb::JobState::Cancelled,
    }
}

/// A state filter from ListJobsRequest; UNSPECIFIED means any state.
pub fn job_state_filter(value: i32) -> Result<Option<JobState>> {
    match pb::JobState::try_from(value) {
        Ok(pb::JobState::Unspecified) => Ok(None),
        Ok(state) => Ok(JobState::from_i64(i64::from(state as i32))),
        Err(_) => Err(Error::invalid(
            "state",
            format!("unknown JobState value {value}"),
        )),
    }
}

pub fn job(job: &Job) -> pb::Job {
    pb::Job {
        id: job.id.to_string(),
        org_id: job.org_id.clone(),
        kind: job_kind(job.kind) as i32,
        state: job_state(job.state) as i32,
        total_members: job.total_members,
        processed_members: job.processed_members,
        unlinked_members: job.unlinked_members,
        failed_members: job.failed_members,
        attempt: job.attempt,
        last_error: job.last_error.clone(),
        failures: job.failures.iter().map(failure).collect(),
        version: job.version,
        create_time: Some(timestamp(job.create_time)),
        update_time: Some(timestamp(job.update_time)),
        start_time: job.start_time.map(timestamp),
        end_time: job.end_time.map(timestamp),
    }
}

/// `Any.type_url` of an `orgauth.org.v1.Job`, in the form every protobuf
/// runtime resolves (`type.googleapis.com/` + the full message name).
pub const JOB_TYPE_URL: &str = "type.googleapis.com/orgauth.org.v1.Job";

/// What an operation's name starts with: `operations/{job_id}`.
pub const OPERATION_PREFIX: &str = "operations/";

/// A job as a `google.longrunning.Operation`: the job in `metadata` at
/// every state, and once it has ended, the job again as the `response` of
/// a success or a `google.rpc.Status` whose code says how it ended.
pub fn operation(job: &Job) -> lro::Operation {
    let any = prost_types::Any {
        type_url: JOB_TYPE_URL.to_owned(),
        value: self::job(job).encode_to_vec(),
    };
    let error = |code: tonic::Code, fallback: &str| {
        let message = if job.last_error.is_empty() {
            fallback.to_owned()
        } else {
            job.last_error.clone()
        };
        lro::operation::Result::Error(rpc::Status {
            code: code as i32,
            message,
            details: Vec::new(),
        })
    };
    let result = match job.state {
        JobState::Queued | JobState::Running => None,
        JobState::Succeeded => Some(lro::operation::Result::Response(any.clone())),
        // ABORTED rather than INTERNAL or UNKNOWN: the job gave up after
        // its retry budget (Auth kept failing), and a newer change of the
        // setting may well succeed.
        JobState::Failed => Some(error(tonic::Code::Aborted, "the job failed")),
        JobState::Cancelled => Some(error(tonic::Code::Cancelled, "the job was cancelled")),
    };
    lro::Operation {
        name: format!("{OPERATION_PREFIX}{}", job.id),
        metadata: Some(any),
        done: job.state.is_terminal(),
        result,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_keep_microseconds() {
        let ts = timestamp(1_700_000_000_123_456);
        assert_eq!((ts.seconds, ts.nanos), (1_700_000_000, 123_456_000));
    }

    #[test]
    fn jobs_as_operations() {
        let id = uuid::Uuid::now_v7();
        let mut job = Job::queued(id, "acme".into(), JobKind::DisableCustomSso, 1_000);
        let unpack = |any: &prost_types::Any| {
            assert_eq!(any.type_url, JOB_TYPE_URL);
            pb::Job::decode(any.value.as_slice()).unwrap()
        };

        let op = operation(&job);
        assert_eq!(op.name, format!("operations/{id}"));
        assert!(!op.done);
        assert_eq!(op.result, None);
        assert_eq!(unpack(op.metadata.as_ref().unwrap()), self::job(&job));

        job.state = JobState::Succeeded;
        let op = operation(&job);
        assert!(op.done);
        match op.result {
            Some(lro::operation::Result::Response(any)) => {
                assert_eq!(unpack(&any), self::job(&job));
            }
            other => panic!("{other:?}"),
        }

        for (state, code, last_error, message) in [
            (
                JobState::Failed,
                tonic::Code::Aborted,
                "Auth: unavailable",
                "Auth: unavailable",
            ),
            (JobState::Failed, tonic::Code::Aborted, "", "the job failed"),
            (
                JobState::Cancelled,
                tonic::Code::Cancelled,
                "superseded by job x",
                "superseded by job x",
            ),
        ] {
            job.state = state;
            last_error.clone_into(&mut job.last_error);
            let op = operation(&job);
            assert!(op.done);
            assert_eq!(
                op.result,
                Some(lro::operation::Result::Error(rpc::Status {
                    code: code as i32,
                    message: message.into(),
                    details: vec![],
                }))
            );
            assert_eq!(unpack(op.metadata.as_ref().unwrap()), self::job(&job));
        }
    }

    #[test]
    fn state_filter() {
        assert_eq!(job_state_filter(0).unwrap(), None);
        assert_eq!(job_state_filter(2).unwrap(), Some(JobState::Running));
        assert!(job_state_filter(99).is_err());
    }
}
