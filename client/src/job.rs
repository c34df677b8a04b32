//! Small helpers over the generated `Job` types: state and kind names as
//! the CLI prints them, the terminal-state rule, and turning an unsuccessful
//! end into a [`ClientError`].

use orgauth_proto::org::v1::{Job, JobKind, JobState};

use crate::error::{ClientError, Result};

/// The state's name without the `JOB_STATE_` prefix, e.g. `"RUNNING"`.
pub fn job_state_name(state: JobState) -> &'static str {
    match state {
        JobState::Unspecified => "UNSPECIFIED",
        JobState::Queued => "QUEUED",
        JobState::Running => "RUNNING",
        JobState::Succeeded => "SUCCEEDED",
        JobState::Failed => "FAILED",
        JobState::Cancelled => "CANCELLED",
    }
}

/// Parses a state name, with or without the `JOB_STATE_` prefix, in any
/// case: `"running"`, `"RUNNING"` and `"JOB_STATE_RUNNING"` all work.
pub fn parse_job_state(name: &str) -> Option<JobState> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("JOB_STATE_").unwrap_or(&upper);
    JobState::from_str_name(&format!("JOB_STATE_{bare}"))
}

/// The kind's name without the `JOB_KIND_` prefix, e.g. `"DISABLE_CUSTOM_SSO"`.
pub fn job_kind_name(kind: JobKind) -> &'static str {
    match kind {
        JobKind::Unspecified => "UNSPECIFIED",
        JobKind::DisableCustomSso => "DISABLE_CUSTOM_SSO",
        JobKind::EnableCustomSso => "ENABLE_CUSTOM_SSO",
    }
}

/// Whether a job in this state will never change again.
pub fn is_terminal(state: JobState) -> bool {
    matches!(
        state,
        JobState::Succeeded | JobState::Failed | JobState::Cancelled
    )
}

/// Turns a job that ended FAILED or CANCELLED into
/// [`ClientError::JobFailed`] / [`ClientError::JobCancelled`]; a job that
/// succeeded (or has not finished) is returned as is.
pub fn ensure_succeeded(job: Job) -> Result<Job> {
    match job.state() {
        JobState::Failed => Err(ClientError::JobFailed(Box::new(job))),
        JobState::Cancelled => Err(ClientError::JobCancelled(Box::new(job))),
        _ => Ok(job),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_STATES: [JobState; 6] = [
        JobState::Unspecified,
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
    ];

    fn job_in(state: JobState, last_error: &str) -> Job {
        let mut job = Job {
            id: "j1".into(),
            last_error: last_error.into(),
            ..Job::default()
        };
        job.set_state(state);
        job
    }

    #[test]
    fn only_succeeded_failed_and_cancelled_are_terminal() {
        let terminal: Vec<_> = ALL_STATES.into_iter().filter(|s| is_terminal(*s)).collect();
        assert_eq!(
            terminal,
            [JobState::Succeeded, JobState::Failed, JobState::Cancelled]
        );
    }

    #[test]
    fn state_names_match_the_proto_without_prefix() {
        for state in ALL_STATES {
            assert_eq!(
                format!("JOB_STATE_{}", job_state_name(state)),
                state.as_str_name()
            );
        }
        assert_eq!(
            format!("JOB_KIND_{}", job_kind_name(JobKind::DisableCustomSso)),
            JobKind::DisableCustomSso.as_str_name()
        );
    }

    #[test]
    fn state_names_parse_in_any_form() {
        assert_eq!(parse_job_state("running"), Some(JobState::Running));
        assert_eq!(parse_job_state("CANCELLED"), Some(JobState::Cancelled));
        assert_eq!(parse_job_state("job_state_queued"), Some(JobState::Queued));
        assert_eq!(parse_job_state("sleeping"), None);
        for state in ALL_STATES {
            assert_eq!(parse_job_state(job_state_name(state)), Some(state));
        }
    }

    #[test]
    fn ensure_succeeded_passes_success_and_unfinished_jobs() {
        assert!(ensure_succeeded(job_in(JobState::Succeeded, "")).is_ok());
        assert!(ensure_succeeded(job_in(JobState::Running, "")).is_ok());
    }

    #[test]
    fn ensure_succeeded_turns_failure_and_cancellation_into_errors() {
        let failed = ensure_succeeded(job_in(JobState::Failed, "auth down")).unwrap_err();
        assert!(matches!(failed, ClientError::JobFailed(_)));
        assert_eq!(failed.to_string(), "job j1 failed: auth down");
        assert_eq!(failed.job().map(|job| job.id.as_str()), Some("j1"));

        let cancelled = ensure_succeeded(job_in(JobState::Cancelled, "")).unwrap_err();
        assert!(matches!(cancelled, ClientError::JobCancelled(_)));
        assert_eq!(
            cancelled.to_string(),
            "job j1 was cancelled: no reason given"
        );
    }
}
