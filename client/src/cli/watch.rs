//! Following a job to its end (`job watch`, `job wait`, `org update
//! --watch`): a live progress bar when stdout is a terminal, otherwise one
//! plain or JSON line per update, then a summary, and the exit code that
//! says how the job ended.

use std::io::IsTerminal;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use orgauth_client::pb::org::{Job, JobState};
use orgauth_client::{OrgClient, is_terminal, job_kind_name, job_state_name};

use super::output::{Output, job_json, job_progress_text, print_line};
use super::{CliError, ExitStatus};

/// How updates are shown.
enum View {
    /// A live bar on the terminal.
    Bar(Option<ProgressBar>),
    /// One human line per update.
    Lines,
    /// One JSON object per update.
    Json,
    /// Nothing until the end (`job wait`).
    Quiet,
}

/// Whether every update is shown, or only the final state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Follow {
    EveryUpdate,
    FinalOnly,
}

/// Follows a job until it ends; the exit status reflects its final state.
pub async fn follow_job(
    client: &OrgClient,
    job_id: &str,
    output: Output,
    follow: Follow,
) -> Result<ExitStatus, CliError> {
    let mut view = match (follow, output.is_json()) {
        (Follow::EveryUpdate, true) => View::Json,
        (Follow::EveryUpdate, false) if std::io::stdout().is_terminal() => View::Bar(None),
        (Follow::EveryUpdate, false) => View::Lines,
        (Follow::FinalOnly, _) => View::Quiet,
    };
    let watch_started = Instant::now();
    let mut updates = client.watch_job(job_id);
    while let Some(update) = updates.next().await {
        let job = match update {
            Ok(job) => job,
            Err(error) => {
                if let View::Bar(Some(bar)) = &view {
                    // Leave the last drawn state on screen above the error.
                    bar.abandon();
                }
                return Err(error.into());
            }
        };
        match &mut view {
            View::Bar(bar) => draw(bar, &job),
            View::Lines => print_line(job_progress_text(&job)),
            View::Json => print_line(job_json(&job)),
            View::Quiet => {}
        }
        if is_terminal(job.state()) {
            match &view {
                View::Bar(bar) => {
                    if let Some(bar) = bar {
                        bar.finish_and_clear();
                    }
                    print_line(summary(&job, watch_started.elapsed()));
                }
                View::Lines => print_line(summary(&job, watch_started.elapsed())),
                View::Json => {}
                View::Quiet if output.is_json() => print_line(job_json(&job)),
                View::Quiet => print_line(summary(&job, watch_started.elapsed())),
            }
            return Ok(exit_status_of(job.state()));
        }
    }
    // The watch yields a terminal state or an error before it ends.
    Err(CliError::from(orgauth_client::ClientError::from(
        tonic::Status::internal(format!(
            "the watch of job {job_id} ended before the job did"
        )),
    )))
}

/// How a finished job maps to orgctl's exit status.
pub fn exit_status_of(state: JobState) -> ExitStatus {
    match state {
        JobState::Failed => ExitStatus::JobFailed,
        JobState::Cancelled => ExitStatus::JobCancelled,
        _ => ExitStatus::Success,
    }
}

/// The longest `last_error` shown in the bar; the bar must fit on one line
/// or the terminal wraps it and every redraw leaves a copy behind.
const BAR_ERROR_CHARS: usize = 40;

fn draw(bar: &mut Option<ProgressBar>, job: &Job) {
    match bar {
        Some(bar) => update_bar(bar, job),
        None => *bar = Some(new_bar(job)),
    }
}

fn update_bar(bar: &ProgressBar, job: &Job) {
    // Text first: setting the position may redraw at once.
    bar.set_prefix(job_state_name(job.state()));
    bar.set_message(bar_message(job));
    bar.set_length(u64::try_from(job.total_members).unwrap_or(0));
    bar.set_position(u64::try_from(job.processed_members).unwrap_or(0));
}

/// The bar's tail: failures and retries, which matter only when non-zero.
fn bar_message(job: &Job) -> String {
    let mut message = String::new();
    if job.failed_members > 0 {
        message.push_str(&format!("failed={} ", job.failed_members));
    }
    if job.attempt > 1 {
        message.push_str(&format!("attempt={} ", job.attempt));
    }
    if !job.last_error.is_empty() {
        let mut error: String = job.last_error.chars().take(BAR_ERROR_CHARS).collect();
        if error.len() < job.last_error.len() {
            error.push('…');
        }
        message.push_str(&error);
    }
    message.trim_end().to_owned()
}

fn new_bar(first: &Job) -> ProgressBar {
    // The full id and what the job does go on a line of their own, so the
    // bar stays short enough for one terminal line.
    print_line(format!(
        "watching job {} ({} of org {})",
        first.id,
        job_kind_name(first.kind()),
        first.org_id
    ));
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stdout());
    // Rate and ETA are averages since the watch began, counted from where
    // the job was then. indicatif's own estimates swing wildly because
    // progress arrives in jumps of one batch.
    let start_position = u64::try_from(first.processed_members).unwrap_or(0);
    let style = ProgressStyle::with_template(
        "{spinner} {prefix:9} [{wide_bar}] {human_pos}/{human_len} {rate} ETA {remaining} {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .with_key(
        "rate",
        move |state: &ProgressState, out: &mut dyn std::fmt::Write| {
            let text = average_rate(state.pos().saturating_sub(start_position), state.elapsed())
                .map_or_else(|| "-/s".to_owned(), |rate| format!("{rate:.0}/s"));
            let _ = out.write_str(&text);
        },
    )
    .with_key(
        "remaining",
        move |state: &ProgressState, out: &mut dyn std::fmt::Write| {
            let rate = average_rate(state.pos().saturating_sub(start_position), state.elapsed());
            let left = state.len().unwrap_or(0).saturating_sub(state.pos());
            let text = match rate {
                Some(rate) if rate > 0.0 => {
                    // Precision loss is irrelevant for a whole-second ETA.
                    #[allow(clippy::cast_precision_loss)]
                    let seconds = (left as f64 / rate).ceil();
                    format_seconds(Duration::from_secs_f64(seconds))
                }
                _ => "-".to_owned(),
            };
            let _ = out.write_str(&text);
        },
    )
    .progress_chars("=> ");
    bar.set_style(style);
    update_bar(&bar, first);
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// Members per second over `elapsed`, once there is enough to say.
fn average_rate(done: u64, elapsed: Duration) -> Option<f64> {
    let seconds = elapsed.as_secs_f64();
    if done == 0 || seconds < 0.2 {
        return None;
    }
    // Precision loss is irrelevant for a rate shown without decimals.
    #[allow(clippy::cast_precision_loss)]
    Some(done as f64 / seconds)
}

/// `42s`, `3m05s`, `2h07m`.
pub fn format_seconds(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3_600 => format!("{}m{:02}s", seconds / 60, seconds % 60),
        _ => format!("{}h{:02}m", seconds / 3_600, seconds % 3_600 / 60),
    }
}

/// The closing line: `job ID SUCCEEDED processed=10000/10000 unlinked=10000
/// failed=0 in 1.52s (6578 members/s)`. The duration is the job's own
/// (start to end, from the server) when known, else how long we watched.
pub fn summary(job: &Job, watched_for: Duration) -> String {
    let ran_for = server_duration(job).unwrap_or(watched_for);
    let mut line = format!(
        "job {} {} processed={}/{} unlinked={} failed={} in {:.2}s",
        job.id,
        job_state_name(job.state()),
        job.processed_members,
        job.total_members,
        job.unlinked_members,
        job.failed_members,
        ran_for.as_secs_f64(),
    );
    let seconds = ran_for.as_secs_f64();
    if job.processed_members > 0 && seconds > 0.0 {
        // Precision loss is irrelevant for a rate printed without decimals.
        #[allow(clippy::cast_precision_loss)]
        let rate = job.processed_members as f64 / seconds;
        line.push_str(&format!(" ({rate:.0} members/s)"));
    }
    if !job.last_error.is_empty() {
        line.push_str(&format!(" last_error={:?}", job.last_error));
    }
    if job.failed_members > 0 {
        line.push_str(&format!(
            "\n{} members could not be unlinked; list them with: orgctl job failures {} --all",
            job.failed_members, job.id
        ));
    }
    line
}

fn server_duration(job: &Job) -> Option<Duration> {
    let start = SystemTime::try_from(job.start_time?).ok()?;
    let end = SystemTime::try_from(job.end_time?).ok()?;
    end.duration_since(start).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use orgauth_client::pb::prost_types::Timestamp;

    fn finished_job(state: JobState) -> Job {
        let mut job = Job {
            id: "0190".into(),
            total_members: 10_000,
            processed_members: 10_000,
            unlinked_members: 10_000,
            start_time: Some(Timestamp {
                seconds: 100,
                nanos: 0,
            }),
            end_time: Some(Timestamp {
                seconds: 101,
                nanos: 520_000_000,
            }),
            ..Job::default()
        };
        job.set_state(state);
        job
    }

    #[test]
    fn summary_uses_the_job_times_and_rate() {
        assert_eq!(
            summary(&finished_job(JobState::Succeeded), Duration::from_secs(9)),
            "job 0190 SUCCEEDED processed=10000/10000 unlinked=10000 failed=0 in 1.52s (6579 members/s)"
        );
    }

    #[test]
    fn summary_falls_back_to_the_watch_time_and_mentions_failures() {
        let mut job = finished_job(JobState::Failed);
        job.start_time = None;
        job.failed_members = 3;
        job.last_error = "retry budget spent".into();
        let text = summary(&job, Duration::from_secs(2));
        assert!(text.starts_with("job 0190 FAILED processed=10000/10000 unlinked=10000 failed=3 in 2.00s (5000 members/s) last_error=\"retry budget spent\""), "{text}");
        assert!(text.contains("orgctl job failures 0190 --all"), "{text}");
    }

    #[test]
    fn bar_message_shows_only_what_needs_attention() {
        let mut job = finished_job(JobState::Running);
        assert_eq!(bar_message(&job), "");
        job.attempt = 3;
        job.failed_members = 2;
        job.last_error = "UNAVAILABLE: ".to_owned() + &"x".repeat(100);
        let message = bar_message(&job);
        assert!(
            message.starts_with("failed=2 attempt=3 UNAVAILABLE: xx"),
            "{message}"
        );
        assert!(message.ends_with('…'), "{message}");
        assert!(message.chars().count() < 70, "{message}");
    }

    #[test]
    fn rate_and_eta_are_averages_that_wait_for_data() {
        assert_eq!(average_rate(0, Duration::from_secs(5)), None);
        assert_eq!(average_rate(1_000, Duration::from_millis(100)), None);
        assert_eq!(average_rate(1_000, Duration::from_secs(2)), Some(500.0));
        assert_eq!(format_seconds(Duration::from_secs(42)), "42s");
        assert_eq!(format_seconds(Duration::from_secs(185)), "3m05s");
        assert_eq!(format_seconds(Duration::from_secs(7_620)), "2h07m");
    }

    #[test]
    fn exit_status_reflects_the_final_state() {
        assert_eq!(exit_status_of(JobState::Succeeded), ExitStatus::Success);
        assert_eq!(exit_status_of(JobState::Failed), ExitStatus::JobFailed);
        assert_eq!(
            exit_status_of(JobState::Cancelled),
            ExitStatus::JobCancelled
        );
    }
}
