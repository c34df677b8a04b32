//! `orgctl job …`: inspect, list, cancel, watch and wait for jobs.

use clap::{Subcommand, ValueEnum};
use orgauth_client::pb::org::JobState;

use super::output::{failure_json, failure_text, job_json, job_text};
use super::watch::{Follow, follow_job};
use super::{CliError, Context, ExitStatus, PageArgs, list_pages};

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Show one job, with a sample of its failures.
    Get {
        /// The job id (a UUID).
        job_id: String,
    },
    /// List jobs, newest first.
    List {
        /// Only jobs of this org.
        #[arg(long = "org", value_name = "ORG")]
        org_id: Option<String>,
        /// Only jobs in this state.
        #[arg(long, value_enum)]
        state: Option<StateFilter>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Ask a job to stop. A running job stops at its next batch boundary,
    /// so the job printed may still be RUNNING.
    Cancel {
        /// The job id (a UUID).
        job_id: String,
    },
    /// List the members a job could not process.
    Failures {
        /// The job id (a UUID).
        job_id: String,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Follow a job until it ends: a live progress bar when stdout is a
    /// terminal, otherwise one line (or, with --json, one JSON object) per
    /// update, then a summary. Survives server restarts by resuming from the
    /// last version seen. Exit code 0 if the job SUCCEEDED, 3 if FAILED, 4
    /// if CANCELLED.
    Watch {
        /// The job id (a UUID).
        job_id: String,
    },
    /// Wait silently for a job to end, then print its summary (or, with
    /// --json, the final job). Exit code 0 if the job SUCCEEDED, 3 if
    /// FAILED, 4 if CANCELLED.
    Wait {
        /// The job id (a UUID).
        job_id: String,
    },
}

/// `--state` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StateFilter {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl From<StateFilter> for JobState {
    fn from(filter: StateFilter) -> Self {
        match filter {
            StateFilter::Queued => JobState::Queued,
            StateFilter::Running => JobState::Running,
            StateFilter::Succeeded => JobState::Succeeded,
            StateFilter::Failed => JobState::Failed,
            StateFilter::Cancelled => JobState::Cancelled,
        }
    }
}

pub async fn run(command: JobCommand, context: &Context) -> Result<ExitStatus, CliError> {
    let output = context.output;
    let client = context.org_client().await?;
    match command {
        JobCommand::Get { job_id } => {
            let job = client.get_job(&job_id).await?;
            output.record(job_text(&job, true), job_json(&job));
            Ok(ExitStatus::Success)
        }
        JobCommand::List {
            org_id,
            state,
            page,
        } => {
            let org_id = org_id.unwrap_or_default();
            let state = state.map_or(JobState::Unspecified, JobState::from);
            list_pages(
                &page,
                |page_size, token| {
                    let client = client.clone();
                    let org_id = org_id.clone();
                    async move { client.list_jobs(&org_id, state, page_size, &token).await }
                },
                |job| output.record(job_text(job, false), job_json(job)),
            )
            .await?;
            Ok(ExitStatus::Success)
        }
        JobCommand::Cancel { job_id } => {
            let job = client.cancel_job(&job_id).await?;
            output.record(job_text(&job, false), job_json(&job));
            Ok(ExitStatus::Success)
        }
        JobCommand::Failures { job_id, page } => {
            list_pages(
                &page,
                |page_size, token| {
                    let client = client.clone();
                    let job_id = job_id.clone();
                    async move { client.list_job_failures(&job_id, page_size, &token).await }
                },
                |failure| output.record(failure_text(failure), failure_json(failure)),
            )
            .await?;
            Ok(ExitStatus::Success)
        }
        JobCommand::Watch { job_id } => {
            follow_job(&client, &job_id, output, Follow::EveryUpdate).await
        }
        JobCommand::Wait { job_id } => {
            follow_job(&client, &job_id, output, Follow::FinalOnly).await
        }
    }
}
