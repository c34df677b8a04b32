//! auth-server's command line. Every flag can also be set through the
//! environment variable `--help` shows beside it (`AUTH_SERVER_<FLAG>`).
//!
//! Parse it with `orgauth_runtime::parse_config::<Config>("AUTH_SERVER_")`,
//! which gives the flags shared with org-server ([`ServeArgs`]: the tokens
//! file, TLS, limits) their `AUTH_SERVER_` variables; plain
//! `Config::parse()` would leave those without one.

use std::ffi::OsStr;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::builder::TypedValueParser;
use clap::error::ErrorKind;
use clap::{Arg, Command, Parser};
use orgauth_runtime::transport::ServeArgs;
use sqlx::postgres::PgConnectOptions;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "auth-server",
    version,
    about = "Auth service: per-org SSO policies and per-member custom SSO connections, over gRPC.",
    after_help = "Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=debug) for more detail. \
                  SIGTERM or SIGINT shuts down gracefully."
)]
pub struct Config {
    /// Address to serve gRPC on (AuthService, grpc.health.v1.Health,
    /// reflection). Port 0 picks a free port; the bound address is printed
    /// on stdout as `listening ADDR`.
    #[arg(
        long,
        value_name = "ADDR",
        env = "AUTH_SERVER_LISTEN",
        default_value = "127.0.0.1:50052"
    )]
    pub listen: SocketAddr,

    /// Where policies and connections are stored: sqlite://PATH (one file,
    /// for a single replica; the file and its parent directories are
    /// created if missing) or postgres://USER:PASSWORD@HOST:PORT/DATABASE
    /// (postgresql:// too; for several replicas sharing one database; the
    /// database must exist). The schema is migrated at start, and the server
    /// refuses to start if the database holds a schema newer than it knows.
    /// The URL is never logged or echoed with its password.
    #[arg(
        long,
        value_name = "URL",
        env = "AUTH_SERVER_DATABASE",
        default_value = "sqlite://data/auth.db",
        value_parser = DatabaseUrlParser
    )]
    pub database: DatabaseUrl,

    /// Pooled database connections. PostgreSQL: the whole pool of this
    /// replica (mind the server's max_connections across all replicas).
    /// SQLite: the connections that read, beside the one that writes.
    #[arg(
        long,
        value_name = "N",
        env = "AUTH_SERVER_DB_MAX_CONNECTIONS",
        default_value_t = 8,
        value_parser = clap::value_parser!(u32).range(1..=1000)
    )]
    pub db_max_connections: u32,

    /// PostgreSQL only: the longest one SQL statement may run, set on every
    /// pooled connection (`statement_timeout`); a statement cut short is
    /// answered UNAVAILABLE (DATABASE_BUSY), so callers retry. 0 turns it
    /// off. Migrations at start are not bounded by it. SQLite ignores it.
    #[arg(
        long,
        value_name = "DURATION",
        env = "AUTH_SERVER_DB_STATEMENT_TIMEOUT",
        default_value = "30s",
        value_parser = parse_statement_timeout
    )]
    pub db_statement_timeout: Duration,

    /// PostgreSQL only: how long to wait for the database at start (and for
    /// a pooled connection at run time) before giving up. At start a
    /// refused or unanswered connection is retried until then, and the
    /// server exits with a message naming the host and port it could not
    /// reach. SQLite ignores it.
    #[arg(
        long,
        value_name = "DURATION",
        env = "AUTH_SERVER_DB_CONNECT_TIMEOUT",
        default_value = "10s",
        value_parser = humantime::parse_duration
    )]
    pub db_connect_timeout: Duration,

    /// On SIGTERM/SIGINT: how long to let in-flight calls finish before
    /// exiting anyway, as a duration such as 10s, 500ms or 1m.
    #[arg(
        long,
        value_name = "DURATION",
        env = "AUTH_SERVER_SHUTDOWN_GRACE",
        default_value = "10s",
        value_parser = humantime::parse_duration
    )]
    pub shutdown_grace: Duration,

    /// Authentication, TLS and transport limits: `--tokens-file` (required),
    /// `--tls-cert`/`--tls-key`/`--tls-client-ca`, `--max-message-bytes`,
    /// `--max-streams-per-connection`, `--max-inflight-per-connection`,
    /// `--max-call-time`, `--keepalive-interval`, `--keepalive-timeout`.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// A parsed `--database` value: which backend, and where.
///
/// `Debug` and `Display` never show a PostgreSQL password: both print the
/// [redacted](DatabaseUrl::redacted) form.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// A SQLite database file (`sqlite://PATH`; `sqlite:///abs/path` for an
    /// absolute path).
    Sqlite(PathBuf),
    /// A PostgreSQL database: the URL as given (`postgres://…` or
    /// `postgresql://…`), password and all. Checked by [`DatabaseUrl::parse`]
    /// to be a URL sqlx accepts, with only query parameters it knows.
    Postgres(String),
}

/// The query parameters sqlx's PostgreSQL driver understands. Any other is
/// refused: sqlx would log it, value and all, and ignore it.
const POSTGRES_PARAMETERS: [&str; 18] = [
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

impl DatabaseUrl {
    /// Parses `sqlite://PATH`, `postgres://…` or `postgresql://…`. The error
    /// never repeats the value or any part of it: a database URL may carry a
    /// password.
    pub fn parse(value: &str) -> Result<Self, String> {
        if value.starts_with("postgres://") || value.starts_with("postgresql://") {
            return Self::parse_postgres(value);
        }
        let Some(path) = value.strip_prefix("sqlite://") else {
            return Err(match value.split_once("://") {
                Some((scheme, _)) if is_scheme(scheme) => format!(
                    "{scheme}:// is not supported; use sqlite://PATH (for example \
                     sqlite://data/auth.db) or postgres://USER:PASSWORD@HOST:PORT/DATABASE"
                ),
                _ => "expected sqlite://PATH (for example sqlite://data/auth.db) or \
                      postgres://USER:PASSWORD@HOST:PORT/DATABASE"
                    .to_owned(),
            });
        };
        if path.is_empty() {
            return Err(
                "sqlite:// needs a file path, for example sqlite://data/auth.db".to_owned(),
            );
        }
        if path.contains('?') {
            return Err(
                "sqlite://PATH takes no ?options: auth-server sets SQLite's options itself"
                    .to_owned(),
            );
        }
        Ok(DatabaseUrl::Sqlite(PathBuf::from(path)))
    }

    fn parse_postgres(value: &str) -> Result<Self, String> {
        if let Some((_, query)) = value.split_once('?') {
            for (position, pair) in query.split('&').enumerate() {
                let key = pair.split_once('=').map_or(pair, |(key, _)| key);
                let known = POSTGRES_PARAMETERS.contains(&key)
                    || (key.starts_with("options[") && key.ends_with(']'));
                if !known {
                    // Not even the key is echoed: a mistyped URL can put a
                    // password where a key should be.
                    return Err(format!(
                        "the postgres URL's query parameter number {} is not one auth-server \
                         knows (known: {}, options[NAME])",
                        position + 1,
                        POSTGRES_PARAMETERS.join(", ")
                    ));
                }
            }
        }
        // sqlx's own errors name what is wrong (an invalid port, a bad
        // sslmode), never the password; the URL itself is not repeated.
        PgConnectOptions::from_str(value)
            .map_err(|err| format!("not a valid postgres URL: {}", pg_reason(&err)))?;
        Ok(DatabaseUrl::Postgres(value.to_owned()))
    }

    /// The URL without its password, fit for logs: `sqlite://PATH`, or
    /// `postgres://USER@HOST:PORT/DATABASE` (query parameters left out, as
    /// one of them may be a password).
    pub fn redacted(&self) -> String {
        match self {
            DatabaseUrl::Sqlite(path) => format!("sqlite://{}", path.display()),
            DatabaseUrl::Postgres(url) => match PgConnectOptions::from_str(url) {
                Ok(options) => {
                    let database = options.get_database().unwrap_or("");
                    format!(
                        "postgres://{}@{}/{database}",
                        options.get_username(),
                        postgres_address(&options)
                    )
                }
                Err(_) => "postgres://(unparseable URL)".to_owned(),
            },
        }
    }
}

/// Where a PostgreSQL connection goes, for messages: `HOST:PORT`, or the
/// Unix socket's directory and port.
pub fn postgres_address(options: &PgConnectOptions) -> String {
    match options.get_socket() {
        Some(socket) => format!("{}:{}", socket.display(), options.get_port()),
        None if options.get_host().contains(':') => {
            format!("[{}]:{}", options.get_host(), options.get_port())
        }
        None => format!("{}:{}", options.get_host(), options.get_port()),
    }
}

/// What is wrong with a postgres URL, from sqlx's error, without sqlx's
/// generic prefix.
fn pg_reason(err: &sqlx::Error) -> String {
    match err {
        sqlx::Error::Configuration(source) => source.to_string(),
        other => other.to_string(),
    }
}

/// Whether `value` looks like a URL scheme, so it may be named in an error
/// (a password never does: it comes after the scheme).
fn is_scheme(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 16
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseUrl::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            DatabaseUrl::Postgres(_) => f.debug_tuple("Postgres").field(&self.redacted()).finish(),
        }
    }
}

/// PostgreSQL's `statement_timeout` is a count of milliseconds that must fit
/// in an `i32` (about 24.8 days).
const MAX_STATEMENT_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);

fn parse_statement_timeout(value: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(value).map_err(|err| err.to_string())?;
    if duration > MAX_STATEMENT_TIMEOUT {
        return Err("must be at most 24days (PostgreSQL's limit); 0 turns it off".to_owned());
    }
    Ok(duration)
}

/// Parses `--database` with [`DatabaseUrl::parse`]. A plain function parser
/// would do, except that clap then echoes the rejected value, password and
/// all, into the error (and so into the logs).
#[derive(Debug, Clone, Copy)]
struct DatabaseUrlParser;

impl TypedValueParser for DatabaseUrlParser {
    type Value = DatabaseUrl;

    fn parse_ref(
        &self,
        cmd: &Command,
        _arg: Option<&Arg>,
        value: &OsStr,
    ) -> Result<DatabaseUrl, clap::Error> {
        let parsed = value
            .to_str()
            .ok_or_else(|| "is not valid UTF-8".to_owned())
            .and_then(DatabaseUrl::parse);
        parsed.map_err(|reason| {
            clap::Error::raw(
                ErrorKind::ValueValidation,
                format!("--database: {reason}\n"),
            )
            .with_cmd(cmd)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Parses as `main` does, so the shared flags get their variables.
    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        orgauth_runtime::try_parse_config::<Config, _, _>(
            "AUTH_SERVER_",
            std::iter::once("auth-server").chain(args.iter().copied()),
        )
    }

    #[test]
    fn command_line_is_well_formed() {
        Config::command().debug_assert();
    }

    #[test]
    fn defaults_match_the_operator_contract() {
        let config = parse(&["--tokens-file", "tokens"]).unwrap();
        assert_eq!(config.listen, "127.0.0.1:50052".parse().unwrap());
        assert_eq!(config.database, DatabaseUrl::Sqlite("data/auth.db".into()));
        assert_eq!(config.shutdown_grace, Duration::from_secs(10));
        assert_eq!(config.db_max_connections, 8);
        assert_eq!(config.db_statement_timeout, Duration::from_secs(30));
        assert_eq!(config.db_connect_timeout, Duration::from_secs(10));
        assert_eq!(config.serve.tokens_file, PathBuf::from("tokens"));
        assert_eq!(config.serve.tls_cert, None);
        assert_eq!(config.serve.max_message_bytes, 4 << 20);
    }

    #[test]
    fn flags_override_defaults() {
        let config = parse(&[
            "--listen",
            "0.0.0.0:0",
            "--database",
            "sqlite:///var/lib/auth/auth.db",
            "--shutdown-grace",
            "1500ms",
            "--tokens-file",
            "/etc/orgauth/tokens",
            "--tls-cert",
            "cert.pem",
            "--tls-key",
            "key.pem",
            "--tls-client-ca",
            "ca.pem",
            "--max-message-bytes",
            "65536",
            "--max-call-time",
            "5s",
            "--db-max-connections",
            "32",
            "--db-statement-timeout",
            "2s",
            "--db-connect-timeout",
            "1s",
        ])
        .unwrap();
        assert_eq!(config.listen, "0.0.0.0:0".parse().unwrap());
        assert_eq!(config.db_max_connections, 32);
        assert_eq!(config.db_statement_timeout, Duration::from_secs(2));
        assert_eq!(config.db_connect_timeout, Duration::from_secs(1));
        assert_eq!(
            config.database,
            DatabaseUrl::Sqlite("/var/lib/auth/auth.db".into())
        );
        assert_eq!(config.shutdown_grace, Duration::from_millis(1500));
        assert_eq!(config.serve.tls_client_ca, Some(PathBuf::from("ca.pem")));
        assert_eq!(config.serve.max_message_bytes, 65536);
        assert_eq!(config.serve.max_call_time, Duration::from_secs(5));
    }

    #[test]
    fn a_tokens_file_is_required() {
        let err = parse(&[]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::MissingRequiredArgument);
        assert!(err.to_string().contains("--tokens-file"), "{err}");
    }

    #[test]
    fn tls_flags_require_each_other() {
        for args in [
            &["--tls-cert", "cert.pem"][..],
            &["--tls-key", "key.pem"][..],
            &["--tls-client-ca", "ca.pem"][..],
            &["--tls-client-ca", "ca.pem", "--tls-key", "key.pem"][..],
        ] {
            let mut all = vec!["--tokens-file", "tokens"];
            all.extend_from_slice(args);
            let err = parse(&all).unwrap_err();
            assert_eq!(
                err.kind(),
                ErrorKind::MissingRequiredArgument,
                "{args:?}: {err}"
            );
        }
        let config = parse(&[
            "--tokens-file",
            "tokens",
            "--tls-cert",
            "cert.pem",
            "--tls-key",
            "key.pem",
        ])
        .unwrap();
        assert_eq!(config.serve.tls_key, Some(PathBuf::from("key.pem")));
    }

    #[test]
    fn shared_flags_get_auth_server_variables() {
        let command = orgauth_runtime::try_parse_config::<Config, _, _>(
            "AUTH_SERVER_",
            ["auth-server", "--help"],
        )
        .unwrap_err()
        .to_string();
        for var in [
            "AUTH_SERVER_TOKENS_FILE",
            "AUTH_SERVER_TLS_CERT",
            "AUTH_SERVER_TLS_CLIENT_CA",
            "AUTH_SERVER_MAX_MESSAGE_BYTES",
            "AUTH_SERVER_LISTEN",
        ] {
            assert!(command.contains(var), "--help lacks {var}:\n{command}");
        }
    }

    #[test]
    fn postgres_urls_are_accepted_and_shown_without_their_password() {
        for url in [
            "postgres://auth:hunter2@db.internal:5433/auth",
            "postgresql://auth:hunter2@db.internal:5433/auth?sslmode=require",
            "postgres://auth@db.internal:5433/auth?password=hunter2&application_name=auth",
        ] {
            let config = parse(&["--tokens-file", "tokens", "--database", url]).unwrap();
            assert_eq!(config.database, DatabaseUrl::Postgres(url.to_owned()));
            for shown in [
                config.database.to_string(),
                format!("{:?}", config.database),
                format!("{config:?}"),
            ] {
                assert!(!shown.contains("hunter2"), "{shown}");
                assert!(
                    shown.contains("postgres://auth@db.internal:5433/auth"),
                    "{shown}"
                );
            }
        }
    }

    #[test]
    fn bad_database_urls_are_refused_and_never_echoed() {
        let cases = [
            ("mysql://auth:hunter2@db/auth", "mysql:// is not supported"),
            ("hunter2", "expected sqlite://PATH"),
            (
                "postgres://auth:hunter2@db:notaport/auth",
                "not a valid postgres URL",
            ),
            (
                "postgres://auth@db/auth?pasword=hunter2",
                "query parameter number 1 is not one auth-server knows",
            ),
            (
                "postgres://auth@db/auth?sslmode=require&hunter2",
                "query parameter number 2",
            ),
        ];
        for (url, expected) in cases {
            let err = parse(&["--tokens-file", "tokens", "--database", url]).unwrap_err();
            let message = err.to_string();
            assert!(message.contains(expected), "{url}: {message}");
            assert!(!message.contains("hunter2"), "{message}");
        }

        for bad in [
            "data/auth.db",
            "sqlite://",
            "sqlite://a.db?mode=ro",
            "sqlite:a.db",
            "postgres:/db",
        ] {
            assert!(DatabaseUrl::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn statement_timeouts_fit_postgres() {
        let config = parse(&["--tokens-file", "t", "--db-statement-timeout", "0s"]).unwrap();
        assert_eq!(config.db_statement_timeout, Duration::ZERO);
        assert!(parse(&["--tokens-file", "t", "--db-statement-timeout", "30days"]).is_err());
        assert!(parse(&["--tokens-file", "t", "--db-max-connections", "0"]).is_err());
    }

    #[test]
    fn bad_durations_are_refused() {
        assert!(parse(&["--tokens-file", "t", "--shutdown-grace", "soon"]).is_err());
        assert!(parse(&["--tokens-file", "t", "--max-call-time", "soon"]).is_err());
    }
}
