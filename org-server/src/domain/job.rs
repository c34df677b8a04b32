//! The job model: what a job does, where it is in its life, and its progress.
//!
//! States move QUEUED -> RUNNING -> {SUCCEEDED, FAILED, CANCELLED}, and
//! QUEUED -> CANCELLED. Every change of a job bumps its `version`, so
//! watchers can order states and resume after a reconnect.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Micros;
use crate::error::{Error, Result};

/// How many per-member failures a job carries inline; the rest are paged
/// through ListJobFailures so a job never grows unbounded.
pub const FAILURE_SAMPLE_SIZE: usize = 10;

/// What a job does. Values match the protobuf enum and the stored column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// Set the org's policy in Auth to disallowed, then unlink every member.
    DisableCustomSso = 1,
    /// Set the org's policy in Auth to allowed.
    EnableCustomSso = 2,
}

impl JobKind {
    pub fn from_i64(value: i64) -> Option<Self> {
        match value {
            1 => Some(JobKind::DisableCustomSso),
            2 => Some(JobKind::EnableCustomSso),
            _ => None,
        }
    }

    /// The policy Auth must end up with.
    pub fn allow_custom_sso(self) -> bool {
        matches!(self, JobKind::EnableCustomSso)
    }
}

/// Where a job is in its life. Values match the protobuf enum and the stored
/// column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    Queued = 1,
    Running = 2,
    Succeeded = 3,
    Failed = 4,
    Cancelled = 5,
}

impl JobState {
    pub const ALL: [JobState; 5] = [
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
    ];

    pub fn from_i64(value: i64) -> Option<Self> {
        match value {
            1 => Some(JobState::Queued),
            2 => Some(JobState::Running),
            3 => Some(JobState::Succeeded),
            4 => Some(JobState::Failed),
            5 => Some(JobState::Cancelled),
            _ => None,
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            JobState::Queued => "QUEUED",
            JobState::Running => "RUNNING",
            JobState::Succeeded => "SUCCEEDED",
            JobState::Failed => "FAILED",
            JobState::Cancelled => "CANCELLED",
        }
    }
}

/// A member Auth could not process, with Auth's reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberFailure {
    pub member_id: String,
    /// gRPC status code name, e.g. "INVALID_ARGUMENT".
    pub code: String,
    pub message: String,
}

/// A durable job as callers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: Uuid,
    pub org_id: String,
    pub kind: JobKind,
    pub state: JobState,
    pub total_members: i64,
    pub processed_members: i64,
    pub unlinked_members: i64,
    pub failed_members: i64,
    pub attempt: i32,
    pub last_error: String,
    /// The first `FAILURE_SAMPLE_SIZE` failures.
    pub failures: Vec<MemberFailure>,
    pub version: i64,
    pub create_time: Micros,
    pub update_time: Micros,
    pub start_time: Option<Micros>,
    pub end_time: Option<Micros>,
}

impl Job {
    /// A job as enqueued: queued, nothing done yet, version 1.
    pub fn queued(id: Uuid, org_id: String, kind: JobKind, now: Micros) -> Self {
        Job {
            id,
            org_id,
            kind,
            state: JobState::Queued,
            total_members: 0,
            processed_members: 0,
            unlinked_members: 0,
            failed_members: 0,
            attempt: 0,
            last_error: String::new(),
            failures: Vec::new(),
            version: 1,
            create_time: now,
            update_time: now,
            start_time: None,
            end_time: None,
        }
    }
}

/// Parses a job id sent by a caller.
pub fn parse_job_id(field: &str, id: &str) -> Result<Uuid> {
    if id.is_empty() {
        return Err(Error::invalid(field, "required"));
    }
    Uuid::try_parse(id).map_err(|_| {
        Error::invalid(
            field,
            format!(
                "{:?} is not a job id: job ids are UUIDs such as 01890a5d-ac96-774b-bcce-b302099a8057",
                id.chars().take(64).collect::<String>()
            ),
        )
    })
}

/// Which jobs ListJobs returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    pub org_id: Option<String>,
    pub state: Option<JobState>,
    /// Only jobs of these orgs: the scope of an `org`-role caller.
    pub within: Option<std::collections::BTreeSet<String>>,
}

/// The outcome of one member in a BatchUnlinkSso call, as the runner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnlinkOutcome {
    Unlinked,
    NotLinked,
    Failed { code: String, message: String },
}

/// Progress made by one batch, persisted atomically with the cursor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// The last member id of the batch: the job resumes after it.
    pub cursor: String,
    pub processed: i64,
    pub unlinked: i64,
    pub failures: Vec<MemberFailure>,
}

impl Checkpoint {
    /// Summarises a batch's results; `results` pairs each member id with its
    /// outcome, in member id order.
    pub fn from_results(results: Vec<(String, UnlinkOutcome)>) -> Option<Self> {
        let cursor = results.last()?.0.clone();
        let mut checkpoint = Checkpoint {
            cursor,
            processed: i64::try_from(results.len()).unwrap_or(i64::MAX),
            ..Checkpoint::default()
        };
        for (member_id, outcome) in results {
            match outcome {
                UnlinkOutcome::Unlinked => checkpoint.unlinked += 1,
                UnlinkOutcome::NotLinked => {}
                UnlinkOutcome::Failed { code, message } => {
                    checkpoint.failures.push(MemberFailure {
                        member_id,
                        code,
                        message,
                    });
                }
            }
        }
        Some(checkpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_terminality() {
        for state in [
            JobState::Queued,
            JobState::Running,
            JobState::Succeeded,
            JobState::Failed,
            JobState::Cancelled,
        ] {
            assert_eq!(JobState::from_i64(state as i64), Some(state));
        }
        assert_eq!(JobState::from_i64(0), None);
        assert!(!JobState::Queued.is_terminal());
        assert!(!JobState::Running.is_terminal());
        assert!(JobState::Cancelled.is_terminal());
    }

    #[test]
    fn job_ids_must_be_uuids() {
        parse_job_id("job_id", "01890a5d-ac96-774b-bcce-b302099a8057").unwrap();
        assert!(matches!(
            parse_job_id("job_id", "nope"),
            Err(Error::InvalidArgument { field, .. }) if field == "job_id"
        ));
        assert!(parse_job_id("job_id", "").is_err());
    }

    #[test]
    fn checkpoint_counts_outcomes() {
        let results = vec![
            ("a".to_string(), UnlinkOutcome::Unlinked),
            ("b".to_string(), UnlinkOutcome::NotLinked),
            (
                "c".to_string(),
                UnlinkOutcome::Failed {
                    code: "INVALID_ARGUMENT".into(),
                    message: "bad".into(),
                },
            ),
        ];
        let cp = Checkpoint::from_results(results).unwrap();
        assert_eq!(cp.cursor, "c");
        assert_eq!((cp.processed, cp.unlinked, cp.failures.len()), (3, 1, 1));
        assert_eq!(Checkpoint::from_results(vec![]), None);
    }
}
