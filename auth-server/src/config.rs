//! auth-server's command line. Every flag can also be set through the
//! environment variable `--help` shows beside it (`AUTH_SERVER_<FLAG>`).
//!
//! Parse it with `orgauth_runtime::parse_config::<Config>("AUTH_SERVER_")`,
//! which gives the flags shared with org-server ([`ServeArgs`]: the tokens
//! file, TLS, limits) their `AUTH_SERVER_` variables; plain
//! `Config::parse()` would leave those without one.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use orgauth_runtime::database::{DatabaseUrlParser, DbArgs};
use orgauth_runtime::transport::ServeArgs;

pub use orgauth_runtime::database::DatabaseUrl;

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

    /// Pool sizing and bounds: `--db-max-connections`,
    /// `--db-statement-timeout`, `--db-connect-timeout`.
    #[command(flatten)]
    pub db: DbArgs,

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

    /// Logs, metrics and traces: `--log-format`, `--metrics-listen`,
    /// `--otel-endpoint`, `--otel-service-name`.
    #[command(flatten)]
    pub telemetry: orgauth_runtime::telemetry::TelemetryArgs,
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use clap::error::ErrorKind;

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
        assert_eq!(config.db.db_max_connections, 8);
        assert_eq!(config.db.db_statement_timeout, Duration::from_secs(30));
        assert_eq!(config.db.db_connect_timeout, Duration::from_secs(10));
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
        assert_eq!(config.db.db_max_connections, 32);
        assert_eq!(config.db.db_statement_timeout, Duration::from_secs(2));
        assert_eq!(config.db.db_connect_timeout, Duration::from_secs(1));
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
                "query parameter number 1 is not one the server knows",
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
        assert_eq!(config.db.db_statement_timeout, Duration::ZERO);
        assert!(parse(&["--tokens-file", "t", "--db-statement-timeout", "30days"]).is_err());
        assert!(parse(&["--tokens-file", "t", "--db-max-connections", "0"]).is_err());
    }

    #[test]
    fn bad_durations_are_refused() {
        assert!(parse(&["--tokens-file", "t", "--shutdown-grace", "soon"]).is_err());
        assert!(parse(&["--tokens-file", "t", "--max-call-time", "soon"]).is_err());
    }
}
