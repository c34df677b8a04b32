//! auth-server's command line. Every flag can also be set through the
//! environment variable `--help` shows beside it.

use std::ffi::OsStr;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::TypedValueParser;
use clap::error::ErrorKind;
use clap::{Arg, Command, Parser};

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

    #[test]
    fn command_line_is_well_formed() {
        Config::command().debug_assert();
    }

    #[test]
    fn defaults_match_the_operator_contract() {
        let config = Config::try_parse_from(["auth-server"]).unwrap();
        assert_eq!(config.listen, "127.0.0.1:50052".parse().unwrap());
        assert_eq!(config.database, DatabaseUrl::Sqlite("data/auth.db".into()));
        assert_eq!(config.shutdown_grace, Duration::from_secs(10));
    }

    #[test]
    fn flags_override_defaults() {
        let config = Config::try_parse_from([
            "auth-server",
            "--listen",
            "0.0.0.0:0",
            "--database",
            "sqlite:///var/lib/auth/auth.db",
            "--shutdown-grace",
            "1500ms",
        ])
        .unwrap();
        assert_eq!(config.listen, "0.0.0.0:0".parse().unwrap());
        assert_eq!(
            config.database,
            DatabaseUrl::Sqlite("/var/lib/auth/auth.db".into())
        );
        assert_eq!(config.shutdown_grace, Duration::from_millis(1500));
    }

    #[test]
    fn only_sqlite_is_supported_and_urls_are_not_echoed() {
        let err = Config::try_parse_from([
            "auth-server",
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
        assert!(Config::try_parse_from(["auth-server", "--shutdown-grace", "soon"]).is_err());
    }
}
