//! `orgctl job …`: inspect, list (once or live), cancel, watch and wait
//! for jobs.

use std::time::Duration;

use clap::{Subcommand, ValueEnum};
use orgauth_client::pb::org::JobState;

use super::live::{DEFAULT_ROWS, LiveArgs, watch_jobs};
use super::output::{FAILURES, JOBS, job_json, job_text};
use super::watch::{Follow, follow_job};
use super::{CliError, Context, ExitStatus, PageArgs, list_pages};

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Show one job, with a sample of its failures.
    Get {
        /// The job id (a UUID).
        job_id: String,
    },
    /// List jobs, newest first; with --watch, keep watching them.
    List {
        /// Only jobs of this org.
        #[arg(long = "org", value_name = "ORG")]
        org_id: Option<String>,
        /// Only jobs in this state.
        #[arg(long, value_enum)]
        state: Option<StateFilter>,
        #[command(flatten)]
        page: PageArgs,
        /// Keep watching the --page-size newest jobs (20 by default), listing
        /// again every --interval for new ones: a table redrawn in place on a
        /// terminal, otherwise one line (or, with --output json, one JSON
        /// object) per change. Runs until Ctrl-C.
        #[arg(long, conflicts_with_all = ["page_token", "all"])]
        watch: bool,
        /// With --watch: exit 0 once no job shown is QUEUED or RUNNING.
        #[arg(long, requires = "watch")]
        until_idle: bool,
        /// With --watch: how often to list again (500ms to 1m).
        #[arg(
            long,
            requires = "watch",
            value_name = "DURATION",
            default_value = "2s",
            value_parser = parse_interval
        )]
        interval: Duration,
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
    /// terminal, otherwise one line (or, with --output json or --json, one
    /// JSON object) per update, then a summary. Survives server restarts by resuming from the
    /// last version seen. Exit code 0 if the job SUCCEEDED, 3 if FAILED, 4
    /// if CANCELLED.
    Watch {
        /// The job id (a UUID).
        job_id: String,
    },
    /// Wait silently for a job to end, then print its summary (or, with
    /// --output json, the final job). Exit code 0 if the job SUCCEEDED, 3 if
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

/// `--interval`: long enough not to hammer the server, short enough to
/// notice new jobs.
fn parse_interval(value: &str) -> Result<Duration, String> {
    let interval = humantime::parse_duration(value).map_err(|error| error.to_string())?;
    if !(Duration::from_millis(500)..=Duration::from_secs(60)).contains(&interval) {
        return Err("must be between 500ms and 1m".to_owned());
    }
    Ok(interval)
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
            watch,
            until_idle,
            interval,
        } => {
            let org_id = org_id.unwrap_or_default();
            let state = state.map_or(JobState::Unspecified, JobState::from);
            if watch {
                let args = LiveArgs {
                    org_id,
                    state,
                    rows: page.page_size.unwrap_or(DEFAULT_ROWS),
                    interval,
                    until_idle,
                    retry_budget: context.watch_retry_budget(),
                };
                return watch_jobs(&client, args, output).await;
            }
            list_pages(&page, output, JOBS, |page_size, token| {
                let client = client.clone();
                let org_id = org_id.clone();
                async move { client.list_jobs(&org_id, state, page_size, &token).await }
            })
            .await?;
            Ok(ExitStatus::Success)
        }
        JobCommand::Cancel { job_id } => {
            let job = client.cancel_job(&job_id).await?;
            output.record(job_text(&job, false), job_json(&job));
            Ok(ExitStatus::Success)
        }
        JobCommand::Failures { job_id, page } => {
            list_pages(&page, output, FAILURES, |page_size, token| {
                let client = client.clone();
                let job_id = job_id.clone();
                async move { client.list_job_failures(&job_id, page_size, &token).await }
            })
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
