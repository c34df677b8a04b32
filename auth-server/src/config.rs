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
use std::time::Duration;

use clap::builder::TypedValueParser;
use clap::error::ErrorKind;
use clap::{Arg, Command, Parser};
use orgauth_runtime::transport::ServeArgs;

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

    /// Where policies and connections are stored: sqlite://PATH. The file
    /// and its parent directories are created if missing, and the schema is
    /// migrated at start. (PostgreSQL is not supported by this build.)
    #[arg(
        long,
        value_name = "URL",
        env = "AUTH_SERVER_DATABASE",
        default_value = "sqlite://data/auth.db",
        value_parser = DatabaseUrlParser
    )]
    pub database: DatabaseUrl,

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// A SQLite database file (`sqlite://PATH`; `sqlite:///abs/path` for an
    /// absolute path).
    Sqlite(PathBuf),
}

impl DatabaseUrl {
    /// Parses `sqlite://PATH`. The error never repeats the value: a
    /// database URL of another kind may carry a password.
    pub fn parse(value: &str) -> Result<Self, String> {
        let Some(path) = value.strip_prefix("sqlite://") else {
            return Err(match value.split_once("://") {
                Some((scheme, _)) => format!(
                    "{scheme}:// is not supported by this build; only sqlite://PATH is \
                     (for example sqlite://data/auth.db)"
                ),
                None => "expected sqlite://PATH, for example sqlite://data/auth.db".to_owned(),
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
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseUrl::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
        }
    }
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
        ])
        .unwrap();
        assert_eq!(config.listen, "0.0.0.0:0".parse().unwrap());
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
    fn only_sqlite_is_supported_and_urls_are_not_echoed() {
        let err = parse(&[
            "--tokens-file",
            "tokens",
            "--database",
            "postgres://auth:hunter2@db/auth",
        ])
        .unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("postgres:// is not supported by this build; only sqlite://PATH is"),
            "{message}"
        );
        assert!(!message.contains("hunter2"), "{message}");

        for bad in [
            "data/auth.db",
            "sqlite://",
            "sqlite://a.db?mode=ro",
            "sqlite:a.db",
        ] {
            assert!(DatabaseUrl::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bad_durations_are_refused() {
        assert!(parse(&["--tokens-file", "t", "--shutdown-grace", "soon"]).is_err());
        assert!(parse(&["--tokens-file", "t", "--max-call-time", "soon"]).is_err());
    }
}
