//! orgctl's command line: the clap definitions of every command, the shared
//! context (endpoints, timeouts, output mode), error reporting and exit
//! codes. Each resource's commands live in their own module.
//!
//! Layout:
//! - `org`, `member`, `job`, `auth`: the subcommands and their handlers.
//! - `watch`: following a job (progress bar, lines or JSON, summary).
//! - `progress`: the meter for bulk operations (`member seed`).
//! - `output`: text and JSON shapes of every resource.

mod auth;
mod job;
mod member;
mod org;
mod output;
mod progress;
mod watch;

use std::error::Error as _;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use orgauth_client::{
    AuthClient, ClientError, ConnectOptions, OrgClient, Page, WatchOptions, code_name,
};
use tonic::Code;

use output::Output;

const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success; for `job watch`, `job wait` and `--watch`: the job SUCCEEDED
  1  failure (server error, server unreachable, ...)
  2  usage error, or the server answered INVALID_ARGUMENT
  3  the followed job ended FAILED
  4  the followed job ended CANCELLED

Errors are printed to stderr as `error: <GRPC_CODE>: <message>`.
Set RUST_LOG=info to see connection retries and watch resumptions.";

/// The help heading of the options every command takes.
const GLOBAL_OPTIONS: &str = "Global options";

/// Command-line client of orgauth's org-server and auth-server.
#[derive(Debug, Parser)]
#[command(name = "orgctl", version, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// org-server's gRPC endpoint (OrgService, JobService).
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL_OPTIONS,
        env = "ORGCTL_ENDPOINT",
        default_value = "http://127.0.0.1:50051"
    )]
    endpoint: String,

    /// auth-server's gRPC endpoint (AuthService).
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL_OPTIONS,
        env = "ORGCTL_AUTH_ENDPOINT",
        default_value = "http://127.0.0.1:50052"
    )]
    auth_endpoint: String,

    /// How long to keep retrying the first connection to a server.
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL_OPTIONS,
        env = "ORGCTL_CONNECT_TIMEOUT",
        default_value = "10s",
        value_parser = humantime::parse_duration
    )]
    connect_timeout: Duration,

    /// How long a broken job watch keeps trying to resume (e.g. across a
    /// server restart) before giving up.
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL_OPTIONS,
        env = "ORGCTL_WATCH_RETRY_BUDGET",
        default_value = "30s",
        value_parser = humantime::parse_duration
    )]
    watch_retry_budget: Duration,

    /// Print one JSON object per line on stdout instead of text.
    #[arg(long, global = true, help_heading = GLOBAL_OPTIONS)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Organizations (OrgService).
    #[command(subcommand)]
    Org(org::OrgCommand),
    /// Members of an organization (OrgService).
    #[command(subcommand)]
    Member(member::MemberCommand),
    /// Jobs that carry org changes to Auth (JobService).
    #[command(subcommand)]
    Job(job::JobCommand),
    /// SSO policies and connections (AuthService).
    #[command(subcommand)]
    Auth(auth::AuthCommand),
}

/// How orgctl ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Success = 0,
    Failure = 1,
    Usage = 2,
    JobFailed = 3,
    JobCancelled = 4,
}

impl From<ExitStatus> for ExitCode {
    fn from(status: ExitStatus) -> Self {
        ExitCode::from(status as u8)
    }
}

/// Why a command failed: the client error, and what the user can do about
/// it when we know.
#[derive(Debug)]
pub struct CliError {
    pub error: ClientError,
    pub hint: Option<String>,
}

impl From<ClientError> for CliError {
    fn from(error: ClientError) -> Self {
        Self { error, hint: None }
    }
}

impl CliError {
    fn exit_status(&self) -> ExitStatus {
        if self.error.code() == Code::InvalidArgument {
            ExitStatus::Usage
        } else {
            ExitStatus::Failure
        }
    }

    /// `error: <CODE>: <message>`, the message followed by its root cause
    /// (for a connection failure: which connect error), then the hint.
    fn report(&self) -> String {
        let error = &self.error;
        let mut report = format!("error: {}: {}", code_name(error.code()), error.message());
        // The root cause says what actually went wrong ("Connection
        // refused"); the layers between repeat each other and, for a
        // status, would print its debug form.
        let root_cause = std::iter::successors(error.source(), |&cause| cause.source()).last();
        if let Some(root_cause) = root_cause {
            let text = root_cause.to_string();
            if !report.contains(&text) {
                report.push_str(&format!(": {text}"));
            }
        }
        if let Some(hint) = &self.hint {
            report.push_str(&format!("\nhint: {hint}"));
        }
        report
    }
}

/// What every command needs: where the servers are, how to connect, and
/// how to print.
pub struct Context {
    endpoint: String,
    auth_endpoint: String,
    connect: ConnectOptions,
    watch: WatchOptions,
    pub output: Output,
}

impl Context {
    /// Connects to org-server.
    pub async fn org_client(&self) -> Result<OrgClient, CliError> {
        let client = OrgClient::connect_with(&self.endpoint, &self.connect).await?;
        Ok(client.with_watch_options(self.watch.clone()))
    }

    /// Connects to auth-server.
    pub async fn auth_client(&self) -> Result<AuthClient, CliError> {
        Ok(AuthClient::connect_with(&self.auth_endpoint, &self.connect).await?)
    }
}

/// Page size, page token and `--all`, shared by every list command.
#[derive(Debug, clap::Args)]
pub struct PageArgs {
    /// Items per call (1 to 1,000; the server's default when not given,
    /// 1,000 with --all).
    #[arg(long)]
    page_size: Option<i32>,
    /// Start from this page (the token printed after the previous page).
    #[arg(long, default_value = "")]
    page_token: String,
    /// Follow page tokens to the end of the list.
    #[arg(long)]
    all: bool,
}

/// Fetches one page (or every page, with `--all`) and hands each item to
/// `emit`. Without `--all`, the token of the next page goes to stderr so
/// stdout holds only items.
pub async fn list_pages<T, Fetch, Fut>(
    args: &PageArgs,
    mut fetch: Fetch,
    mut emit: impl FnMut(&T),
) -> Result<(), CliError>
where
    Fetch: FnMut(i32, String) -> Fut,
    Fut: Future<Output = orgauth_client::Result<Page<T>>>,
{
    let page_size = args.page_size.unwrap_or(if args.all { 1_000 } else { 0 });
    let mut page_token = args.page_token.clone();
    loop {
        let page = fetch(page_size, page_token).await?;
        page.items.iter().for_each(&mut emit);
        match page.next_page_token {
            Some(next) if args.all => page_token = next,
            Some(next) => {
                eprintln!("more: --page-token {next}");
                return Ok(());
            }
            None => return Ok(()),
        }
    }
}

/// Runs the parsed command line and reports how it went.
pub async fn run(cli: Cli) -> ExitCode {
    let context = Context {
        endpoint: cli.endpoint,
        auth_endpoint: cli.auth_endpoint,
        connect: ConnectOptions {
            timeout: cli.connect_timeout,
            ..ConnectOptions::default()
        },
        watch: WatchOptions {
            retry_budget: cli.watch_retry_budget,
            ..WatchOptions::default()
        },
        output: Output { json: cli.json },
    };
    let result = match cli.command {
        Command::Org(command) => org::run(command, &context).await,
        Command::Member(command) => member::run(command, &context).await,
        Command::Job(command) => job::run(command, &context).await,
        Command::Auth(command) => auth::run(command, &context).await,
    };
    match result {
        Ok(status) => status.into(),
        Err(error) => {
            eprintln!("{}", error.report());
            error.exit_status().into()
        }
    }
}

/// Sets up logging to stderr, filtered by `RUST_LOG` (default: warnings).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn errors_report_code_message_and_causes() {
        let error = CliError::from(ClientError::from(tonic::Status::not_found("org x")));
        assert_eq!(error.report(), "error: NOT_FOUND: org x");
        assert_eq!(error.exit_status(), ExitStatus::Failure);

        let invalid = CliError::from(ClientError::from(tonic::Status::invalid_argument("bad id")));
        assert_eq!(invalid.exit_status(), ExitStatus::Usage);

        let connect = CliError::from(ClientError::Connect {
            endpoint: "http://127.0.0.1:1".into(),
            timeout: Duration::from_secs(1),
            attempts: 3,
            source: "connection refused".into(),
        });
        assert_eq!(
            connect.report(),
            "error: UNAVAILABLE: cannot connect to http://127.0.0.1:1 within 1s (3 attempts): connection refused"
        );
    }
}
