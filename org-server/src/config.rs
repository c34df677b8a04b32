//! org-server's command line. Every flag can also be set through the
//! environment variable shown in `--help`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use orgauth_runtime::database::{DatabaseUrl, DatabaseUrlParser, DbArgs};
use orgauth_runtime::transport::ServeArgs;
use orgauth_security::token::Secret;
use tonic::codegen::http::HeaderValue;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "org-server",
    version,
    about = "Org service: organizations, members and settings, plus the worker pool that carries setting changes to Auth."
)]
pub struct Config {
    /// Address to serve on: gRPC (OrgService, JobService,
    /// google.longrunning.Operations, health, reflection), gRPC-Web and the
    /// JSON gateway (`/v1/...`), over HTTP/2 and HTTP/1.1. Port 0 picks a
    /// free port; the bound address is printed on stdout as
    /// `listening ADDR`.
    #[arg(long, env = "ORG_SERVER_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// Where orgs, members and jobs are stored: sqlite://PATH (one file,
    /// for a single replica; created if missing) or
    /// postgres://USER:PASSWORD@HOST:PORT/DATABASE (postgresql:// too; for
    /// several replicas sharing one database, which must exist). The schema
    /// is migrated at start, and the server refuses to start if the
    /// database holds a schema newer than it knows. The URL is never logged
    /// or echoed with its password.
    #[arg(
        long,
        value_name = "URL",
        env = "ORG_SERVER_DATABASE",
        default_value = "sqlite://data/org.db",
        value_parser = DatabaseUrlParser
    )]
    pub database: DatabaseUrl,

    /// Pool sizing and bounds: `--db-max-connections`,
    /// `--db-statement-timeout`, `--db-connect-timeout`.
    #[command(flatten)]
    pub db: DbArgs,

    /// The Auth service the workers call (SetOrgSsoPolicy, BatchUnlinkSso).
    #[arg(
        long,
        env = "ORG_SERVER_AUTH_ENDPOINT",
        default_value = "http://127.0.0.1:50052"
    )]
    pub auth_endpoint: String,

    /// File holding the bearer token (role `service`) that org-server
    /// presents to Auth. Required when --workers is above 0.
    #[arg(long, env = "ORG_SERVER_AUTH_TOKEN_FILE", value_name = "PATH")]
    pub auth_token_file: Option<PathBuf>,

    /// The same token given directly; prefer the environment variable or
    /// the file, which stay out of `ps`.
    #[arg(
        long,
        env = "ORG_SERVER_AUTH_TOKEN",
        hide_env_values = true,
        conflicts_with = "auth_token_file"
    )]
    pub auth_token: Option<Secret>,

    /// PEM CA certificates that sign Auth's certificate; implies TLS to
    /// Auth (use an https:// --auth-endpoint).
    #[arg(long, env = "ORG_SERVER_AUTH_TLS_CA", value_name = "PATH")]
    pub auth_tls_ca: Option<PathBuf>,

    /// PEM client certificate presented to Auth for mutual TLS (needs
    /// --auth-tls-key).
    #[arg(
        long,
        env = "ORG_SERVER_AUTH_TLS_CERT",
        value_name = "PATH",
        requires = "auth_tls_key"
    )]
    pub auth_tls_cert: Option<PathBuf>,

    /// PEM private key of --auth-tls-cert.
    #[arg(
        long,
        env = "ORG_SERVER_AUTH_TLS_KEY",
        value_name = "PATH",
        requires = "auth_tls_cert"
    )]
    pub auth_tls_key: Option<PathBuf>,

    /// The name Auth's certificate must carry, when it is not the host of
    /// --auth-endpoint.
    #[arg(long, env = "ORG_SERVER_AUTH_TLS_SERVER_NAME")]
    pub auth_tls_server_name: Option<String>,

    /// Deadline of one call to Auth.
    #[arg(long, env = "ORG_SERVER_AUTH_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub auth_timeout: Duration,

    /// Jobs this process runs at once. 0 runs an API-only replica that
    /// enqueues jobs but never runs them.
    #[arg(long, env = "ORG_SERVER_WORKERS", default_value_t = 4)]
    pub workers: usize,

    /// Members per BatchUnlinkSso call (1 to 1000).
    #[arg(long, env = "ORG_SERVER_BATCH_SIZE", default_value_t = 500,
          value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub batch_size: u16,

    /// BatchUnlinkSso calls in flight per job.
    #[arg(long, env = "ORG_SERVER_PARALLELISM", default_value_t = 4,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    pub parallelism: u16,

    /// How long a worker's claim on a job lasts without renewal; renewed
    /// every third of it. A crashed worker's job resumes after at most this.
    #[arg(long, env = "ORG_SERVER_LEASE", default_value = "15s", value_parser = humantime::parse_duration)]
    pub lease: Duration,

    /// How often idle workers look for jobs they were not woken for (jobs
    /// whose lease expired).
    #[arg(long, env = "ORG_SERVER_POLL_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub poll_interval: Duration,

    /// Tries per Auth call before the job ends FAILED (1 = no retry).
    #[arg(long, env = "ORG_SERVER_RETRY_MAX_ATTEMPTS", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub retry_max_attempts: u32,

    /// First retry delay; doubles per retry, with jitter.
    #[arg(long, env = "ORG_SERVER_RETRY_INITIAL_BACKOFF", default_value = "200ms", value_parser = humantime::parse_duration)]
    pub retry_initial_backoff: Duration,

    /// Longest retry delay.
    #[arg(long, env = "ORG_SERVER_RETRY_MAX_BACKOFF", default_value = "30s", value_parser = humantime::parse_duration)]
    pub retry_max_backoff: Duration,

    /// How long finished jobs (and idempotency keys) are kept before they
    /// are pruned; GetJob on a pruned job is NOT_FOUND.
    #[arg(long, env = "ORG_SERVER_JOB_RETENTION", default_value = "30days", value_parser = humantime::parse_duration)]
    pub job_retention: Duration,

    /// How often to prune finished jobs past their retention.
    #[arg(long, env = "ORG_SERVER_PRUNE_INTERVAL", default_value = "1h", value_parser = humantime::parse_duration)]
    pub prune_interval: Duration,

    /// Sustained UpdateOrg calls that touch allow_custom_sso (each may start
    /// a mass unlink) allowed per org and minute, per replica; beyond it and
    /// the burst, RESOURCE_EXHAUSTED with a retry delay. Renames are not
    /// limited. 0 turns the limit off.
    #[arg(long, env = "ORG_SERVER_ORG_UPDATES_PER_MINUTE", default_value_t = 10)]
    pub org_updates_per_minute: u32,

    /// UpdateOrg calls one org may make at once before the rate applies.
    #[arg(long, env = "ORG_SERVER_ORG_UPDATE_BURST", default_value_t = 10)]
    pub org_update_burst: u32,

    /// Open WatchJob streams allowed per token; more are RESOURCE_EXHAUSTED.
    #[arg(
        long,
        env = "ORG_SERVER_MAX_WATCHES_PER_CALLER",
        default_value_t = 1000
    )]
    pub max_watches_per_caller: usize,

    /// Open WatchJob streams allowed on this server in total.
    #[arg(long, env = "ORG_SERVER_MAX_WATCHES", default_value_t = 10_000)]
    pub max_watches: usize,

    /// An origin (e.g. `https://ops.example.com`) whose browser pages may
    /// call this server (gRPC-Web, the JSON gateway) with CORS; repeat, or
    /// separate with commas. Without it only same-origin pages and
    /// non-browser clients can.
    #[arg(
        long,
        env = "ORG_SERVER_CORS_ALLOWED_ORIGIN",
        value_name = "ORIGIN",
        value_delimiter = ',',
        value_parser = parse_origin
    )]
    pub cors_allowed_origin: Vec<HeaderValue>,

    #[command(flatten)]
    pub serve: ServeArgs,

    /// Logs, metrics and traces: `--log-format`, `--metrics-listen`,
    /// `--otel-endpoint`, `--otel-service-name`.
    #[command(flatten)]
    pub telemetry: orgauth_runtime::telemetry::TelemetryArgs,

    /// On SIGTERM/SIGINT: how long to let running batches checkpoint and
    /// connections drain before exiting anyway.
    #[arg(long, env = "ORG_SERVER_SHUTDOWN_GRACE", default_value = "20s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
}

/// An origin as browsers send it: scheme, host and optional port, nothing
/// else.
fn parse_origin(value: &str) -> Result<HeaderValue, String> {
    let (scheme, rest) = value
        .split_once("://")
        .ok_or_else(|| format!("{value:?} is not an origin like https://host[:port]"))?;
    if !matches!(scheme, "http" | "https") || rest.is_empty() || rest.contains(['/', '?', '#']) {
        return Err(format!(
            "{value:?} is not an origin like https://host[:port] (no path)"
        ));
    }
    HeaderValue::from_str(value).map_err(|_| format!("{value:?} is not a valid header value"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        orgauth_runtime::try_parse_config(
            "ORG_SERVER_",
            std::iter::once("org-server").chain(args.iter().copied()),
        )
    }

    #[test]
    fn a_tokens_file_is_required_and_limits_have_safe_defaults() {
        assert!(parse(&[]).is_err());
        let config = parse(&["--tokens-file", "tokens"]).unwrap();
        assert_eq!(config.serve.max_message_bytes, 4 << 20);
        assert_eq!(config.serve.max_streams_per_connection, 1024);
        assert_eq!(config.org_updates_per_minute, 10);
        assert_eq!(config.max_watches_per_caller, 1000);
        assert!(config.serve.tls_cert.is_none());
        assert_eq!(config.database, DatabaseUrl::Sqlite("data/org.db".into()));
        assert_eq!(config.db.db_max_connections, 8);
        assert_eq!(config.db.db_statement_timeout, Duration::from_secs(30));
        assert_eq!(config.db.db_connect_timeout, Duration::from_secs(10));
    }

    #[test]
    fn postgres_urls_are_accepted_and_never_shown_with_their_password() {
        let url = "postgres://org:hunter2@db.internal:5433/org?sslmode=require";
        let config = parse(&["--tokens-file", "t", "--database", url]).unwrap();
        assert_eq!(config.database, DatabaseUrl::Postgres(url.to_owned()));
        let shown = format!("{config:?} {}", config.database);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("postgres://org@db.internal:5433/org"),
            "{shown}"
        );
        let err = parse(&[
            "--tokens-file",
            "t",
            "--database",
            "mysql://org:hunter2@db/org",
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("mysql:// is not supported"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        for var in [
            "ORG_SERVER_DB_MAX_CONNECTIONS",
            "ORG_SERVER_DB_STATEMENT_TIMEOUT",
        ] {
            let help = parse(&["--help"]).unwrap_err().to_string();
            assert!(help.contains(var), "--help lacks {var}");
        }
    }

    #[test]
    fn tls_flags_need_each_other() {
        for args in [
            &["--tokens-file", "t", "--tls-cert", "c"][..],
            &["--tokens-file", "t", "--tls-key", "k"],
            &["--tokens-file", "t", "--tls-client-ca", "ca"],
            &["--tokens-file", "t", "--auth-tls-cert", "c"],
            &[
                "--tokens-file",
                "t",
                "--auth-token",
                "a",
                "--auth-token-file",
                "f",
            ],
        ] {
            assert!(parse(args).is_err(), "{args:?}");
        }
        assert!(parse(&["--tokens-file", "t", "--tls-cert", "c", "--tls-key", "k"]).is_ok());
    }

    #[test]
    fn the_auth_token_never_shows_in_debug_output() {
        let config = parse(&["--tokens-file", "t", "--auth-token", "oat_supersecret"]).unwrap();
        assert!(!format!("{config:?}").contains("supersecret"));
        assert_eq!(config.auth_token.unwrap().0, "oat_supersecret");
    }
}
