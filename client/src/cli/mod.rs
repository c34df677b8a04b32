//! orgctl's command line: the clap definitions of every command, the shared
//! context (endpoints, credentials, TLS, timeouts, output mode), error
//! reporting and exit codes. Each resource's commands live in their own
//! module.
//!
//! Layout:
//! - `org`, `member`, `job`, `auth`: the subcommands and their handlers.
//! - `token`: `token issue`, which needs no server.
//! - `watch`: following a job (progress bar, lines or JSON, summary).
//! - `progress`: the meter for bulk operations (`member seed`).
//! - `output`: text and JSON shapes of every resource.

mod auth;
mod job;
mod member;
mod org;
mod output;
mod progress;
mod token;
mod watch;

use std::error::Error as _;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use orgauth_client::{
    AuthClient, ClientError, ClientTls, ConnectOptions, OrgClient, Page, WatchOptions, code_name,
};
use orgauth_security::token::Secret;
use tonic::Code;

use output::Output;

const AFTER_HELP: &str = "\
Credentials and TLS:
  Both servers require a bearer token on every call: pass the secret with
  --token / ORGCTL_TOKEN or --token-file / ORGCTL_TOKEN_FILE. Make one with
  `orgctl token issue` (no server needed). --ca-cert turns TLS on (a bare
  HOST:PORT endpoint then means https://); --client-cert and --client-key
  add a client certificate for mutual TLS.

Exit codes:
  0  success; for `job watch`, `job wait` and `--watch`: the job SUCCEEDED
  1  failure (server error, server unreachable, UNAUTHENTICATED,
     PERMISSION_DENIED, TLS handshake, ...)
  2  usage error (bad flag, unreadable token file or certificate), or the
     server answered INVALID_ARGUMENT
  3  the followed job ended FAILED
  4  the followed job ended CANCELLED

Errors are printed to stderr as `error: <GRPC_CODE> (<REASON>): <message>`
(the reason when the server sent one), then a `hint:` line when there is
one. Set RUST_LOG=info to see connection retries and watch resumptions.";

/// The help heading of the options every command takes.
const GLOBAL_OPTIONS: &str = "Global options";

/// Command-line client of orgauth's org-server and auth-server.
#[derive(Debug, Parser)]
#[command(name = "orgctl", version, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(flatten)]
    connection: ConnectionArgs,

    /// Print one JSON object per line on stdout instead of text.
    #[arg(long, global = true, help_heading = GLOBAL_OPTIONS)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

/// Where the servers are and how to reach them: every command that calls a
/// server uses these.
#[derive(Debug, clap::Args)]
struct ConnectionArgs {
    /// org-server's gRPC endpoint (OrgService, JobService): HOST:PORT,
    /// http://HOST:PORT or https://HOST:PORT. A bare HOST:PORT is plaintext,
    /// or TLS when --ca-cert is given.
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL_OPTIONS,
        env = "ORGCTL_ENDPOINT",
        default_value = "127.0.0.1:50051"
    )]
    endpoint: String,

    /// auth-server's gRPC endpoint (AuthService), in the same forms as
    /// --endpoint.
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL_OPTIONS,
        env = "ORGCTL_AUTH_ENDPOINT",
        default_value = "127.0.0.1:50052"
    )]
    auth_endpoint: String,

    /// Bearer token sent with every call: the secret (oat_…) printed by
    /// `orgctl token issue`. Prefer --token-file or the environment: a
    /// command line is visible to other users of the machine.
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL_OPTIONS,
        env = "ORGCTL_TOKEN",
        hide_env_values = true,
        value_name = "SECRET",
        value_parser = clap::value_parser!(Secret)
    )]
    token: Option<Secret>,

    /// A file holding the bearer token's secret (one line), instead of
    /// --token. On the command line it beats ORGCTL_TOKEN, as --token beats
    /// ORGCTL_TOKEN_FILE.
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL_OPTIONS,
        env = "ORGCTL_TOKEN_FILE",
        value_name = "PATH"
    )]
    token_file: Option<PathBuf>,

    /// PEM CA certificate(s) that sign the servers' certificates; turns TLS
    /// on for both endpoints.
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL_OPTIONS,
        env = "ORGCTL_CA_CERT",
        value_name = "PATH"
    )]
    ca_cert: Option<PathBuf>,

    /// PEM client certificate for mutual TLS (needs --client-key and
    /// --ca-cert).
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL_OPTIONS,
        env = "ORGCTL_CLIENT_CERT",
        value_name = "PATH",
        requires_all = ["client_key", "ca_cert"]
    )]
    client_cert: Option<PathBuf>,

    /// PEM private key of --client-cert.
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL_OPTIONS,
        env = "ORGCTL_CLIENT_KEY",
        value_name = "PATH",
        requires = "client_cert"
    )]
    client_key: Option<PathBuf>,

    /// The name to check the servers' certificates against, when it is not
    /// the endpoint's host (e.g. connecting by IP address). Needs --ca-cert.
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL_OPTIONS,
        env = "ORGCTL_TLS_SERVER_NAME",
        value_name = "NAME",
        requires = "ca_cert"
    )]
    tls_server_name: Option<String>,

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
}

/// Parses the command line (exiting with clap's message on a usage
/// error), then settles which token to use when both --token and
/// --token-file are set: the one on the command line beats the one from
/// the environment; both from the same place is a usage error.
pub fn parse() -> Cli {
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    cli.connection
        .drop_empty_env_values(|id| matches.value_source(id) == Some(ValueSource::EnvVariable));
    let sources = (
        matches.value_source("token"),
        matches.value_source("token_file"),
    );
    if let Err(message) = cli.connection.settle_token_sources(sources) {
        Cli::command()
            .error(clap::error::ErrorKind::ArgumentConflict, message)
            .exit();
    }
    cli
}

impl ConnectionArgs {
    /// Treats an empty `ORGCTL_TOKEN=` or `ORGCTL_TLS_SERVER_NAME=` as
    /// unset, as shells and CI systems often leave them; an empty value on
    /// the command line stays an error. (clap itself refuses empty paths.)
    fn drop_empty_env_values(&mut self, from_env: impl Fn(&str) -> bool) {
        if from_env("token")
            && self
                .token
                .as_ref()
                .is_some_and(|Secret(s)| s.trim().is_empty())
        {
            self.token = None;
        }
        if from_env("tls_server_name") && self.tls_server_name.as_deref() == Some("") {
            self.tls_server_name = None;
        }
    }

    /// Keeps one of --token and --token-file when both are set; see
    /// [`parse`].
    fn settle_token_sources(
        &mut self,
        (token, token_file): (Option<ValueSource>, Option<ValueSource>),
    ) -> Result<(), &'static str> {
        if self.token.is_none() || self.token_file.is_none() {
            return Ok(());
        }
        match (token, token_file) {
            (Some(ValueSource::CommandLine), Some(ValueSource::EnvVariable)) => {
                self.token_file = None;
                Ok(())
            }
            (Some(ValueSource::EnvVariable), Some(ValueSource::CommandLine)) => {
                self.token = None;
                Ok(())
            }
            (Some(ValueSource::EnvVariable), _) => {
                Err("ORGCTL_TOKEN and ORGCTL_TOKEN_FILE are both set: unset one")
            }
            _ => Err("--token and --token-file cannot be used together"),
        }
    }

    /// The token to send: --token, or the contents of --token-file.
    fn token(&self) -> Result<Option<String>, CliError> {
        match (&self.token, &self.token_file) {
            (Some(Secret(secret)), _) => Ok(Some(secret.clone())),
            (None, Some(path)) => read_token_file(path).map(Some),
            (None, None) => Ok(None),
        }
    }

    /// The TLS settings, when any TLS flag is given.
    fn tls(&self) -> Option<ClientTls> {
        if self.ca_cert.is_none() && self.client_cert.is_none() && self.tls_server_name.is_none() {
            return None;
        }
        Some(ClientTls {
            ca: self.ca_cert.clone(),
            identity: self.client_cert.clone().zip(self.client_key.clone()),
            domain: self.tls_server_name.clone(),
        })
    }
}

/// Reads a token file: the secret on one line, surrounding whitespace
/// ignored. Warns when other users can read it.
fn read_token_file(path: &Path) -> Result<String, CliError> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        CliError::usage(format!(
            "cannot read token file {}: {error}",
            path.display()
        ))
    })?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(CliError::usage(format!(
            "token file {} is empty",
            path.display()
        )));
    }
    if secret.contains(char::is_whitespace) {
        return Err(CliError::usage(format!(
            "token file {} must hold only the token's secret (oat_…) on one line",
            path.display()
        ))
        .with_hint(
            "a tokens-file line (NAME ROLE sha256:…) belongs in the servers' --tokens-file; \
             the secret is what `orgctl token issue` prints on stdout",
        ));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(metadata) = std::fs::metadata(path) {
            let mode = metadata.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                eprintln!(
                    "warning: token file {} can be read by other users (mode {mode:03o}); chmod 600 it",
                    path.display()
                );
            }
        }
    }
    Ok(secret.to_owned())
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Server(ServerCommand),
    /// Bearer tokens for the servers' tokens files (no server involved).
    #[command(subcommand)]
    Token(token::TokenCommand),
}

/// The commands that call a server.
#[derive(Debug, Subcommand)]
enum ServerCommand {
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

/// What went wrong.
#[derive(Debug)]
pub enum Failure {
    /// A call through the client library failed (or could not be made).
    Client(ClientError),
    /// The command line asks for something that cannot be done (exit 2).
    Usage(String),
    /// Something on this machine failed, e.g. writing a file (exit 1).
    Local(String),
}

/// Why a command failed, and what the user can do about it when we know.
#[derive(Debug)]
pub struct CliError {
    pub error: Failure,
    pub hint: Option<String>,
}

impl From<ClientError> for CliError {
    fn from(error: ClientError) -> Self {
        Self {
            error: Failure::Client(error),
            hint: None,
        }
    }
}

impl CliError {
    /// A usage error: exit status 2.
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            error: Failure::Usage(message.into()),
            hint: None,
        }
    }

    /// A local failure: exit status 1.
    pub fn local(message: impl Into<String>) -> Self {
        Self {
            error: Failure::Local(message.into()),
            hint: None,
        }
    }

    /// Adds what the user can do about it.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    fn exit_status(&self) -> ExitStatus {
        match &self.error {
            Failure::Client(error) if error.code() == Code::InvalidArgument => ExitStatus::Usage,
            Failure::Client(_) | Failure::Local(_) => ExitStatus::Failure,
            Failure::Usage(_) => ExitStatus::Usage,
        }
    }

    /// `error: <CODE> (<REASON>): <message>` (a status), `error: <CODE>:
    /// <message>` (another client error) or `error: <message>` (a local
    /// error); the message followed by its root cause (for a connection
    /// failure: which connect error), then the hint.
    fn report(&self) -> String {
        let mut report = match &self.error {
            Failure::Client(error) => client_error_report(error),
            Failure::Usage(message) | Failure::Local(message) => format!("error: {message}"),
        };
        if let Some(hint) = &self.hint {
            report.push_str(&format!("\nhint: {hint}"));
        }
        report
    }
}

fn client_error_report(error: &ClientError) -> String {
    let mut report = match error {
        // The status's own form: code, reason, message, fields.
        ClientError::Status(status) => format!("error: {status}"),
        other => format!("error: {}: {other}", code_name(other.code())),
    };
    // The root cause says what actually went wrong ("Connection
    // refused"); the layers between repeat each other.
    let root_cause = std::iter::successors(error.source(), |&cause| cause.source()).last();
    if let Some(root_cause) = root_cause {
        let text = root_cause.to_string();
        if !report.contains(&text) {
            report.push_str(&format!(": {text}"));
        }
    }
    report
}

/// What to do about an error nobody gave a hint for: mostly credentials.
fn default_hint(error: &ClientError, token_given: bool) -> Option<String> {
    let hint = match (error.code(), error.reason()) {
        (Code::Unauthenticated, _) if !token_given => {
            "pass --token or set ORGCTL_TOKEN (or --token-file / ORGCTL_TOKEN_FILE) with a token \
             listed in the server's --tokens-file; `orgctl token issue` makes one"
        }
        (Code::Unauthenticated, Some("TOKEN_EXPIRED")) => {
            "issue a new token with `orgctl token issue` and add its line to the servers' tokens file"
        }
        (Code::Unauthenticated, Some("TOKEN_MALFORMED")) => {
            "pass the secret `orgctl token issue` printed on stdout (oat_…), not the tokens-file line"
        }
        (Code::Unauthenticated, _) => {
            "this server does not accept the token: add its line (from `orgctl token issue`) to \
             the server's --tokens-file, or pass another token with --token / ORGCTL_TOKEN"
        }
        (Code::PermissionDenied, _) => {
            "the token's role does not allow this: an org token reaches only the orgs listed on \
             it, and auth-server takes SetOrgSsoPolicy and BatchUnlinkSso only from the service role"
        }
        _ if matches!(error, ClientError::TlsHandshake { .. }) => {
            "check --ca-cert (the CA that signed the server's certificate), --tls-server-name (the \
             name on that certificate) and, if the server requires mutual TLS, --client-cert and \
             --client-key; is the server serving TLS at all?"
        }
        _ => return None,
    };
    Some(hint.to_owned())
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
    fn new(args: &ConnectionArgs, output: Output) -> Result<Self, CliError> {
        Ok(Self {
            endpoint: args.endpoint.clone(),
            auth_endpoint: args.auth_endpoint.clone(),
            connect: ConnectOptions {
                timeout: args.connect_timeout,
                token: args.token()?,
                tls: args.tls(),
                ..ConnectOptions::default()
            },
            watch: WatchOptions {
                retry_budget: args.watch_retry_budget,
                ..WatchOptions::default()
            },
            output,
        })
    }

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
    let output = Output { json: cli.json };
    let result = match cli.command {
        Command::Server(command) => run_server_command(command, &cli.connection, output).await,
        Command::Token(command) => token::run(command, output),
    };
    match result {
        Ok(status) => status.into(),
        Err(error) => {
            eprintln!("{}", error.report());
            error.exit_status().into()
        }
    }
}

/// Runs a command that calls a server; errors without a hint get the
/// default one (what to do about credentials, mostly).
async fn run_server_command(
    command: ServerCommand,
    connection: &ConnectionArgs,
    output: Output,
) -> Result<ExitStatus, CliError> {
    let context = Context::new(connection, output)?;
    let result = match command {
        ServerCommand::Org(command) => org::run(command, &context).await,
        ServerCommand::Member(command) => member::run(command, &context).await,
        ServerCommand::Job(command) => job::run(command, &context).await,
        ServerCommand::Auth(command) => auth::run(command, &context).await,
    };
    let token_given = context.connect.token.is_some();
    result.map_err(|mut error| {
        if let (None, Failure::Client(client_error)) = (&error.hint, &error.error) {
            error.hint = default_hint(client_error, token_given);
        }
        error
    })
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
    use std::collections::HashMap;

    use super::*;
    use orgauth_client::ErrorDetails;
    use tonic_types::StatusExt;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    fn status_with(code: Code, reason: &str, message: &str) -> ClientError {
        let details = ErrorDetails::with_error_info(reason, "orgauth.org.v1", HashMap::new());
        ClientError::from(tonic::Status::with_error_details(code, message, details))
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

        let usage = CliError::usage("role org needs orgs=ID,...").with_hint("pass --org");
        assert_eq!(
            usage.report(),
            "error: role org needs orgs=ID,...\nhint: pass --org"
        );
        assert_eq!(usage.exit_status(), ExitStatus::Usage);
        assert_eq!(
            CliError::local("disk full").exit_status(),
            ExitStatus::Failure
        );
    }

    #[test]
    fn refusals_report_their_reason_and_exit_non_zero() {
        let denied = status_with(
            Code::PermissionDenied,
            "ORG_ACCESS_DENIED",
            "token \"bot\" may not touch org globex",
        );
        let error = CliError::from(denied);
        assert_eq!(
            error.report(),
            "error: PERMISSION_DENIED (ORG_ACCESS_DENIED): token \"bot\" may not touch org globex"
        );
        assert_eq!(error.exit_status(), ExitStatus::Failure);

        let missing = status_with(
            Code::Unauthenticated,
            "TOKEN_MISSING",
            "missing credentials",
        );
        assert_eq!(CliError::from(missing).exit_status(), ExitStatus::Failure);
    }

    #[test]
    fn credential_errors_get_a_hint() {
        let missing = status_with(
            Code::Unauthenticated,
            "TOKEN_MISSING",
            "missing credentials",
        );
        let hint = default_hint(&missing, false).unwrap();
        assert!(
            hint.starts_with("pass --token or set ORGCTL_TOKEN"),
            "{hint}"
        );
        for (reason, expected) in [
            ("TOKEN_EXPIRED", "issue a new token"),
            ("TOKEN_MALFORMED", "not the tokens-file line"),
            ("TOKEN_UNKNOWN", "--tokens-file"),
        ] {
            let error = status_with(Code::Unauthenticated, reason, "no");
            let hint = default_hint(&error, true).unwrap();
            assert!(hint.contains(expected), "{reason}: {hint}");
        }
        let denied = status_with(Code::PermissionDenied, "ORG_ACCESS_DENIED", "no");
        assert!(
            default_hint(&denied, true)
                .unwrap()
                .contains("role does not allow")
        );
        let handshake = ClientError::TlsHandshake {
            endpoint: "https://localhost:1".into(),
            source: "invalid peer certificate: UnknownIssuer".into(),
        };
        assert!(
            default_hint(&handshake, true)
                .unwrap()
                .contains("--ca-cert")
        );
        let not_found = ClientError::from(tonic::Status::not_found("org x"));
        assert_eq!(default_hint(&not_found, true), None);
    }

    fn connection_args(args: &[&str]) -> ConnectionArgs {
        let cli = Cli::try_parse_from([&["orgctl"], args, &["org", "get", "x"]].concat()).unwrap();
        cli.connection
    }

    #[test]
    fn the_command_line_token_beats_the_environment() {
        use ValueSource::{CommandLine, EnvVariable};
        let both = || connection_args(&["--token", "t", "--token-file", "f"]);

        let mut args = both();
        args.settle_token_sources((Some(CommandLine), Some(EnvVariable)))
            .unwrap();
        assert!(args.token.is_some() && args.token_file.is_none());

        let mut args = both();
        args.settle_token_sources((Some(EnvVariable), Some(CommandLine)))
            .unwrap();
        assert!(args.token.is_none() && args.token_file.is_some());

        for sources in [
            (Some(CommandLine), Some(CommandLine)),
            (Some(EnvVariable), Some(EnvVariable)),
        ] {
            assert!(both().settle_token_sources(sources).is_err());
        }
        let mut only_token = connection_args(&["--token", "t"]);
        only_token
            .settle_token_sources((Some(CommandLine), None))
            .unwrap();
        assert!(only_token.token.is_some());
    }

    #[test]
    fn empty_environment_values_count_as_unset() {
        let mut args = connection_args(&["--token", ""]);
        args.drop_empty_env_values(|_| false);
        assert!(args.token.is_some());
        args.drop_empty_env_values(|id| id == "token");
        assert!(args.token.is_none());
        let mut args = connection_args(&["--token", "oat_x"]);
        args.drop_empty_env_values(|_| true);
        assert!(args.token.is_some());
    }

    #[test]
    fn the_token_is_never_in_debug_output() {
        let secret = "oat_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG";
        let cli = Cli::try_parse_from(["orgctl", "--token", secret, "org", "get", "x"]).unwrap();
        assert!(!format!("{cli:?}").contains(secret));
        let context = Context::new(&cli.connection, Output { json: false }).unwrap();
        assert_eq!(context.connect.token.as_deref(), Some(secret));
        assert!(!format!("{:?}", context.connect).contains(secret));
    }

    #[test]
    fn tls_is_on_when_any_tls_flag_is_given() {
        assert!(connection_args(&[]).tls().is_none());
        let tls = connection_args(&[
            "--ca-cert",
            "ca.pem",
            "--client-cert",
            "c.pem",
            "--client-key",
            "c.key",
            "--tls-server-name",
            "orgs.internal",
        ])
        .tls()
        .unwrap();
        assert_eq!(tls.ca, Some(PathBuf::from("ca.pem")));
        assert_eq!(
            tls.identity,
            Some((PathBuf::from("c.pem"), PathBuf::from("c.key")))
        );
        assert_eq!(tls.domain.as_deref(), Some("orgs.internal"));
    }

    #[test]
    fn token_files_hold_one_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "  oat_abc \n").unwrap();
        assert_eq!(read_token_file(&path).unwrap(), "oat_abc");
        for bad in ["", "\n", "ops admin sha256:00\n", "oat_a\noat_b\n"] {
            std::fs::write(&path, bad).unwrap();
            let error = read_token_file(&path).unwrap_err();
            assert_eq!(error.exit_status(), ExitStatus::Usage, "{bad:?}");
        }
        let missing = read_token_file(&dir.path().join("nope")).unwrap_err();
        assert!(missing.report().contains("cannot read token file"));
    }
}
