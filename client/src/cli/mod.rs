//! orgctl's command line: the clap definitions of every command, the shared
//! context (endpoints, credentials, TLS, timeouts, output form), error
//! reporting and exit codes. Each resource's commands live in their own
//! module.
//!
//! Layout:
//! - `org`, `member`, `job`, `auth`: the subcommands and their handlers.
//! - `token`: `token issue`, which needs no server.
//! - `settings`: where each setting comes from (flag, environment, config
//!   file, default) and `config show`.
//! - `watch`: following one job (progress bar, lines or JSON, summary).
//! - `live`: `job list --watch`, the live view of many jobs.
//! - `progress`: the meter for bulk operations (`member seed`).
//! - `output`: text, table and JSON shapes of every resource; `table`:
//!   aligned columns.

mod auth;
mod job;
mod live;
mod member;
mod org;
mod output;
mod progress;
mod settings;
mod table;
mod token;
mod watch;

use std::error::Error as _;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use clap_complete::Shell;
use orgauth_client::{
    AuthClient, ClientError, ClientTls, ConnectOptions, OrgClient, Page, WatchOptions, code_name,
};
use orgauth_security::token::Secret;
use tonic::Code;

use output::{Format, Output, Shape};
use settings::{ConfigCommand, Origins, Settings, Token};

const AFTER_HELP: &str = "\
Credentials and TLS:
  Both servers require a bearer token on every call: pass the secret with
  --token / ORGCTL_TOKEN or --token-file / ORGCTL_TOKEN_FILE. Make one with
  `orgctl token issue` (no server needed). --ca-cert turns TLS on (a bare
  HOST:PORT endpoint then means https://); --client-cert and --client-key
  add a client certificate for mutual TLS.

Config file:
  endpoint, auth-endpoint, token or token-file, ca-cert, client-cert,
  client-key, tls-server-name and output can also be set in a TOML file:
  --config / ORGCTL_CONFIG, by default $XDG_CONFIG_HOME/orgctl/config.toml
  (else ~/.config/orgctl/config.toml). The command line beats the
  environment, which beats the file. `orgctl config show` prints the
  settings in effect and where each came from.

Exit codes:
  0  success; for `job watch`, `job wait` and `--watch`: the job SUCCEEDED
  1  failure (server error, server unreachable, UNAUTHENTICATED,
     PERMISSION_DENIED, TLS handshake, ...)
  2  usage error (bad flag, unreadable token file or certificate, missing
     or invalid config file), or the server answered INVALID_ARGUMENT
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

    /// How to print results.
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL_OPTIONS,
        env = "ORGCTL_OUTPUT",
        value_enum,
        default_value = "table"
    )]
    output: Format,

    /// Short for --output json.
    #[arg(long, global = true, help_heading = GLOBAL_OPTIONS)]
    json: bool,

    /// The config file [default: $XDG_CONFIG_HOME/orgctl/config.toml, else
    /// ~/.config/orgctl/config.toml]. A file named here must exist.
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL_OPTIONS,
        env = "ORGCTL_CONFIG",
        value_name = "PATH"
    )]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,

    /// Where clap found each global option, for the config file to fill
    /// in only what neither the command line nor the environment set.
    #[arg(skip)]
    origins: Origins,
}

/// Where the servers are and how to reach them: every command that calls a
/// server uses these. The TLS options' dependencies on each other are
/// checked after the config file is merged in ([`Settings::check_tls`]).
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
        value_name = "PATH"
    )]
    client_cert: Option<PathBuf>,

    /// PEM private key of --client-cert.
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL_OPTIONS,
        env = "ORGCTL_CLIENT_KEY",
        value_name = "PATH"
    )]
    client_key: Option<PathBuf>,

    /// The name to check the servers' certificates against, when it is not
    /// the endpoint's host (e.g. connecting by IP address). Needs --ca-cert.
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL_OPTIONS,
        env = "ORGCTL_TLS_SERVER_NAME",
        value_name = "NAME"
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
/// error) and records where clap found each global option.
pub fn parse() -> Cli {
    let matches = Cli::command().get_matches();
    from_matches(&matches).unwrap_or_else(|error| error.exit())
}

fn from_matches(matches: &clap::ArgMatches) -> Result<Cli, clap::Error> {
    let mut cli = Cli::from_arg_matches(matches)?;
    cli.origins = Origins::from_matches(matches);
    cli.connection
        .drop_empty_env_values(|id| matches.value_source(id) == Some(ValueSource::EnvVariable));
    Ok(cli)
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
    /// orgctl's own settings (no server involved).
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a completion script for SHELL on stdout.
    #[command(after_help = COMPLETIONS_HELP)]
    Completions {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: Shell,
    },
}

const COMPLETIONS_HELP: &str = "\
Install:
  bash        orgctl completions bash > ~/.local/share/bash-completion/completions/orgctl
  zsh         orgctl completions zsh > ~/.zfunc/_orgctl
              (with `fpath+=~/.zfunc; autoload -Uz compinit; compinit` in ~/.zshrc)
  fish        orgctl completions fish > ~/.config/fish/completions/orgctl.fish
  powershell  orgctl completions powershell >> $PROFILE
  elvish      orgctl completions elvish >> ~/.config/elvish/rc.elv
Then open a new shell.";

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
    fn new(settings: &Settings, output: Output) -> Result<Self, CliError> {
        settings.check_tls()?;
        let token = match settings.token.as_ref().map(|token| &token.value) {
            Some(Token::Secret(Secret(secret))) => Some(secret.clone()),
            Some(Token::File(path)) => Some(read_token_file(path)?),
            None => None,
        };
        let path = |setting: &Option<settings::Setting<PathBuf>>| {
            setting.as_ref().map(|setting| setting.value.clone())
        };
        let (ca, client_cert, client_key) = (
            path(&settings.ca_cert),
            path(&settings.client_cert),
            path(&settings.client_key),
        );
        let domain = settings
            .tls_server_name
            .as_ref()
            .map(|name| name.value.clone());
        let tls = (ca.is_some() || client_cert.is_some() || domain.is_some()).then(|| ClientTls {
            ca,
            identity: client_cert.zip(client_key),
            domain,
        });
        Ok(Self {
            endpoint: settings.endpoint.value.clone(),
            auth_endpoint: settings.auth_endpoint.value.clone(),
            connect: ConnectOptions {
                timeout: settings.connect_timeout.value,
                token,
                tls,
                ..ConnectOptions::default()
            },
            watch: WatchOptions {
                retry_budget: settings.watch_retry_budget.value,
                ..WatchOptions::default()
            },
            output,
        })
    }

    /// How long a broken watch (or listing, for `job list --watch`) may
    /// keep failing before orgctl gives up.
    pub fn watch_retry_budget(&self) -> Duration {
        self.watch.retry_budget
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

/// Fetches one page (or every page, with `--all`) and prints its items
/// shaped by `shape`. Without `--all`, the token of the next page goes to
/// stderr so stdout holds only items.
pub async fn list_pages<T, Fetch, Fut>(
    args: &PageArgs,
    output: Output,
    shape: Shape<T>,
    mut fetch: Fetch,
) -> Result<(), CliError>
where
    Fetch: FnMut(i32, String) -> Fut,
    Fut: Future<Output = orgauth_client::Result<Page<T>>>,
{
    let page_size = args.page_size.unwrap_or(if args.all { 1_000 } else { 0 });
    let mut page_token = args.page_token.clone();
    let mut listing = output.list(shape);
    loop {
        let page = match fetch(page_size, page_token).await {
            Ok(page) => page,
            Err(error) => {
                listing.abandon();
                return Err(error.into());
            }
        };
        page.items.iter().for_each(|item| listing.push(item));
        match page.next_page_token {
            Some(next) if args.all => page_token = next,
            Some(next) => {
                listing.finish();
                eprintln!("more: --page-token {next}");
                return Ok(());
            }
            None => {
                listing.finish();
                return Ok(());
            }
        }
    }
}

/// Runs the parsed command line and reports how it went.
pub async fn run(cli: Cli) -> ExitCode {
    match run_command(cli).await {
        Ok(status) => status.into(),
        Err(error) => {
            eprintln!("{}", error.report());
            error.exit_status().into()
        }
    }
}

async fn run_command(cli: Cli) -> Result<ExitStatus, CliError> {
    // Completions need no settings, so a broken config file cannot keep
    // them from being installed.
    if let Command::Completions { shell } = cli.command {
        print_completions(shell);
        return Ok(ExitStatus::Success);
    }
    let (location, config) = settings::load_config(&cli)?;
    let settings = Settings::resolve(&cli, config, location)?;
    let output = Output {
        format: settings.output.value,
    };
    match cli.command {
        Command::Server(command) => run_server_command(command, &settings, output).await,
        Command::Token(command) => token::run(command, output),
        Command::Config(ConfigCommand::Show) => settings::show(&settings, output),
        Command::Completions { .. } => Ok(ExitStatus::Success),
    }
}

/// Writes the completion script through [`output::print_line`], which
/// takes a closed pipe calmly (clap_complete would panic on it).
fn print_completions(shell: Shell) {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "orgctl", &mut script);
    let script = String::from_utf8_lossy(&script);
    output::print_line(script.trim_end());
}

/// Runs a command that calls a server; errors without a hint get the
/// default one (what to do about credentials, mostly).
async fn run_server_command(
    command: ServerCommand,
    settings: &Settings,
    output: Output,
) -> Result<ExitStatus, CliError> {
    let context = Context::new(settings, output)?;
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

    /// Parses a command line and resolves its settings against `config`
    /// (the environment plays no part: tests cannot set it safely).
    fn settings_with(args: &[&str], config: &str) -> Result<Settings, CliError> {
        let argv = [&["orgctl"], args, &["org", "get", "x"]].concat();
        let matches = Cli::command().try_get_matches_from(argv).unwrap();
        let cli = from_matches(&matches).unwrap();
        let path = Path::new("/etc/orgctl/config.toml");
        let location = settings::ConfigLocation {
            path: Some(path.to_path_buf()),
            source: settings::Source::Flag,
            found: true,
        };
        let config = settings::parse_config(config, path)?;
        Settings::resolve(&cli, config, location)
    }

    fn settings(args: &[&str]) -> Settings {
        settings_with(args, "").unwrap()
    }

    #[test]
    fn the_command_line_beats_the_config_file() {
        let file = "endpoint = \"file:1\"\noutput = \"json\"\ntoken = \"oat_file\"\n";
        let from_file = settings_with(&[], file).unwrap();
        assert_eq!(from_file.endpoint.value, "file:1");
        assert_eq!(from_file.endpoint.source, settings::Source::Config);
        assert_eq!(from_file.output.value, Format::Json);
        assert_eq!(from_file.auth_endpoint.source, settings::Source::Default);

        let flags = settings_with(
            &[
                "--endpoint",
                "flag:1",
                "--output",
                "table",
                "--token-file",
                "t",
            ],
            file,
        )
        .unwrap();
        assert_eq!(flags.endpoint.value, "flag:1");
        assert_eq!(flags.endpoint.source, settings::Source::Flag);
        assert_eq!(flags.output.value, Format::Table);
        assert!(matches!(
            flags.token.map(|token| token.value),
            Some(Token::File(_))
        ));
    }

    #[test]
    fn json_is_short_for_output_json() {
        assert_eq!(settings(&["--json"]).output.value, Format::Json);
        assert_eq!(
            settings(&["--json", "--output", "json"]).output.value,
            Format::Json
        );
        assert_eq!(settings(&[]).output.value, Format::Table);
        let error = settings_with(&["--json", "--output", "table"], "").unwrap_err();
        assert_eq!(error.exit_status(), ExitStatus::Usage);
        // --json on the command line beats a config file's output.
        let json = settings_with(&["--json"], "output = \"table\"\n").unwrap();
        assert_eq!(json.output.value, Format::Json);
    }

    #[test]
    fn two_tokens_on_the_command_line_are_refused() {
        let error = settings_with(&["--token", "t", "--token-file", "f"], "").unwrap_err();
        assert!(error.report().contains("cannot be used together"));
    }

    #[test]
    fn empty_environment_values_count_as_unset() {
        let mut args = settings_cli(&["--token", ""]).connection;
        args.drop_empty_env_values(|_| false);
        assert!(args.token.is_some());
        args.drop_empty_env_values(|id| id == "token");
        assert!(args.token.is_none());
        let mut args = settings_cli(&["--token", "oat_x"]).connection;
        args.drop_empty_env_values(|_| true);
        assert!(args.token.is_some());
    }

    fn settings_cli(args: &[&str]) -> Cli {
        Cli::try_parse_from([&["orgctl"], args, &["org", "get", "x"]].concat()).unwrap()
    }

    #[test]
    fn the_token_is_never_in_debug_output() {
        let secret = "oat_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG";
        let cli = settings_cli(&["--token", secret]);
        assert!(!format!("{cli:?}").contains(secret));
        let settings = settings(&["--token", secret]);
        assert!(!format!("{settings:?}").contains(secret));
        let context = Context::new(
            &settings,
            Output {
                format: Format::Table,
            },
        )
        .unwrap();
        assert_eq!(context.connect.token.as_deref(), Some(secret));
        assert!(!format!("{:?}", context.connect).contains(secret));
    }

    fn tls_of(settings: &Settings) -> Option<ClientTls> {
        let output = Output {
            format: Format::Table,
        };
        Context::new(settings, output).unwrap().connect.tls
    }

    #[test]
    fn tls_is_on_when_any_tls_setting_is_given() {
        assert!(tls_of(&settings(&[])).is_none());
        let tls = tls_of(&settings(&[
            "--ca-cert",
            "ca.pem",
            "--client-cert",
            "c.pem",
            "--client-key",
            "c.key",
            "--tls-server-name",
            "orgs.internal",
        ]))
        .unwrap();
        assert_eq!(tls.ca, Some(PathBuf::from("ca.pem")));
        assert_eq!(
            tls.identity,
            Some((PathBuf::from("c.pem"), PathBuf::from("c.key")))
        );
        assert_eq!(tls.domain.as_deref(), Some("orgs.internal"));

        // The CA from the config file completes client certificate flags.
        let mixed = settings_with(
            &["--client-cert", "c.pem", "--client-key", "c.key"],
            "ca-cert = \"ca.pem\"\n",
        )
        .unwrap();
        let tls = tls_of(&mixed).unwrap();
        assert_eq!(tls.ca, Some(PathBuf::from("/etc/orgctl/ca.pem")));
    }

    #[test]
    fn tls_settings_that_need_each_other_are_checked_after_merging() {
        for args in [
            &["--client-cert", "c.pem"][..],
            &["--client-cert", "c.pem", "--client-key", "c.key"][..],
            &["--client-key", "c.key", "--ca-cert", "ca.pem"][..],
            &["--tls-server-name", "orgs.internal"][..],
        ] {
            let error = settings(args).check_tls().unwrap_err();
            assert_eq!(error.exit_status(), ExitStatus::Usage, "{args:?}");
        }
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
