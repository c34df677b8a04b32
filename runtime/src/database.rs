//! Where a server keeps its data: the `--database` URL (SQLite or
//! PostgreSQL), the pool flags both servers share, and opening a PostgreSQL
//! pool the same careful way in both.
//!
//! # Opening PostgreSQL
//!
//! [`open_postgres`] first makes one plain connection, retrying a refused or
//! dropped one until `--db-connect-timeout`, and refuses to start with
//! [`DatabaseError::Connect`] (naming `HOST:PORT`, the database and the
//! user, never the password) if it gets none. On that connection it refuses
//! a schema newer than the binary and applies pending migrations
//! ([`crate::schema`]); sqlx holds a `pg_advisory_lock` while migrating, so
//! replicas starting together migrate once. That connection carries no
//! `statement_timeout`: a long migration is not cut short. Then the pool
//! opens: at most `--db-max-connections`, each set up when it connects so
//! that no statement runs, and no transaction sits idle, longer than
//! `--db-statement-timeout`, with TCP keepalives on the server's side. A caller waits at most
//! `--db-connect-timeout` for a pooled connection.

use std::ffi::OsStr;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::builder::TypedValueParser;
use clap::error::ErrorKind;
use clap::{Arg, Command};
use sqlx::Connection;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use tokio::time::Instant;
use tracing::warn;

use crate::schema::MigrationError;

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
                     sqlite://data/orgauth.db) or postgres://USER:PASSWORD@HOST:PORT/DATABASE"
                ),
                _ => "expected sqlite://PATH (for example sqlite://data/orgauth.db) or \
                      postgres://USER:PASSWORD@HOST:PORT/DATABASE"
                    .to_owned(),
            });
        };
        if path.is_empty() {
            return Err(
                "sqlite:// needs a file path, for example sqlite://data/orgauth.db".to_owned(),
            );
        }
        if path.contains('?') {
            return Err(
                "sqlite://PATH takes no ?options: the server sets SQLite's options itself"
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
                        "the postgres URL's query parameter number {} is not one the \
                         server knows (known: {}, options[NAME])",
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

pub fn parse_statement_timeout(value: &str) -> Result<Duration, String> {
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
pub struct DatabaseUrlParser;

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

/// The pool flags both servers share. Each server's prefix gives them their
/// variables (`ORG_SERVER_DB_MAX_CONNECTIONS`, …) through
/// [`crate::parse_config`].
#[derive(Debug, Clone, clap::Args)]
pub struct DbArgs {
    /// Pooled database connections. PostgreSQL: the whole pool of this
    /// replica (mind the server's max_connections across all replicas).
    /// SQLite: the connections that read, beside the one that writes.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 8,
        value_parser = clap::value_parser!(u32).range(1..=1000)
    )]
    pub db_max_connections: u32,

    /// PostgreSQL only: the longest one SQL statement may run, set on every
    /// pooled connection (`statement_timeout`); a statement cut short is
    /// answered UNAVAILABLE, so callers retry. 0 turns it off. Migrations
    /// at start are not bounded by it. SQLite ignores it.
    #[arg(
        long,
        value_name = "DURATION",
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
        default_value = "10s",
        value_parser = humantime::parse_duration
    )]
    pub db_connect_timeout: Duration,
}

impl DbArgs {
    pub fn options(&self) -> DbOptions {
        DbOptions {
            max_connections: self.db_max_connections,
            statement_timeout: self.db_statement_timeout,
            connect_timeout: self.db_connect_timeout,
        }
    }
}

/// How to size and bound the connections to the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DbOptions {
    /// Pooled connections. PostgreSQL: the whole pool. SQLite: the readers
    /// beside the one writer.
    pub max_connections: u32,
    /// PostgreSQL's `statement_timeout` on every pooled connection;
    /// [`Duration::ZERO`] turns it off. SQLite ignores it.
    pub statement_timeout: Duration,
    /// PostgreSQL: how long to wait for the database at start, and for a
    /// pooled connection at run time. SQLite ignores it.
    pub connect_timeout: Duration,
}

impl Default for DbOptions {
    /// The defaults of the command line.
    fn default() -> Self {
        DbOptions {
            max_connections: 8,
            statement_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// Why a database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    /// PostgreSQL could not be reached or refused us. `target` is
    /// `HOST:PORT (database D, user U)`, never the URL.
    #[error("cannot connect to PostgreSQL at {target}: {reason}")]
    Connect { target: String, reason: String },
    #[error(transparent)]
    Schema(#[from] MigrationError),
}

/// The longest pause between two connection attempts at start.
const MAX_CONNECT_BACKOFF: Duration = Duration::from_secs(1);

/// Connects to the PostgreSQL database `url` names, refuses a schema newer
/// than `migrator`, applies pending migrations and opens the pool (see the
/// module documentation for what each step waits for).
pub async fn open_postgres(
    url: &str,
    migrator: &'static Migrator,
    options: &DbOptions,
) -> Result<PgPool, DatabaseError> {
    let connect = PgConnectOptions::from_str(url).map_err(|err| DatabaseError::Connect {
        // Not the URL: it may hold a password.
        target: "the --database URL".to_owned(),
        reason: format!("not a valid postgres URL ({})", pg_reason(&err)),
    })?;
    let target = describe(&connect);

    let mut conn = connect_at_start(&connect, options.connect_timeout, &target).await?;
    let migrated = crate::schema::migrate_postgres(migrator, &mut conn).await;
    if let Err(err) = conn.close().await {
        warn!(error = %err, "cannot close the migration connection cleanly");
    }
    migrated?;

    let statement_timeout = statement_timeout_millis(options.statement_timeout);
    PgPoolOptions::new()
        .max_connections(options.max_connections)
        .acquire_timeout(options.connect_timeout)
        .after_connect(move |conn, _meta| {
            Box::pin(set_session_limits(conn, statement_timeout.clone()))
        })
        .connect_with(connect)
        .await
        .map_err(|err| connect_error(&err, &target, options.connect_timeout))
}

/// `HOST:PORT (database D, user U)`: where a connection goes, for messages
/// and logs. Never the password.
pub fn describe(options: &PgConnectOptions) -> String {
    format!(
        "{} (database {}, user {})",
        postgres_address(options),
        options.get_database().unwrap_or("(default)"),
        options.get_username()
    )
}

/// One connection for the checks and migrations at start. A refused or
/// broken connection (the database starting, or briefly away) is retried
/// with backoff until `timeout`; anything else (bad credentials, a missing
/// database, TLS) fails at once.
async fn connect_at_start(
    options: &PgConnectOptions,
    timeout: Duration,
    target: &str,
) -> Result<PgConnection, DatabaseError> {
    let deadline = Instant::now() + timeout;
    let mut backoff = Duration::from_millis(50);
    loop {
        let attempt = tokio::time::timeout_at(deadline, PgConnection::connect_with(options)).await;
        let err = match attempt {
            Ok(Ok(conn)) => return Ok(conn),
            Ok(Err(err)) => err,
            Err(_) => {
                return Err(DatabaseError::Connect {
                    target: target.to_owned(),
                    reason: format!(
                        "no answer within {} (--db-connect-timeout); check the host and port",
                        humantime::format_duration(timeout)
                    ),
                });
            }
        };
        let retry = match &err {
            sqlx::Error::Io(_) => true,
            // cannot_connect_now (starting up or shutting down),
            // too_many_connections.
            sqlx::Error::Database(db) => matches!(db.code().as_deref(), Some("57P03" | "53300")),
            _ => false,
        };
        if !retry || Instant::now() >= deadline {
            return Err(connect_error(&err, target, timeout));
        }
        tokio::time::sleep_until((Instant::now() + backoff).min(deadline)).await;
        if Instant::now() >= deadline {
            return Err(connect_error(&err, target, timeout));
        }
        backoff = (backoff * 2).min(MAX_CONNECT_BACKOFF);
    }
}

/// [`DatabaseError::Connect`] for a failed connection: why, in words an
/// operator can act on, without the URL.
fn connect_error(err: &sqlx::Error, target: &str, timeout: Duration) -> DatabaseError {
    let gave_up = humantime::format_duration(timeout);
    let reason = match err {
        sqlx::Error::Io(io) => format!(
            "the host or port is unreachable ({io}); gave up after {gave_up} \
             (--db-connect-timeout)"
        ),
        sqlx::Error::PoolTimedOut => format!(
            "the host or port is unreachable: no connection within {gave_up} \
             (--db-connect-timeout)"
        ),
        sqlx::Error::Database(db) => format!("the server refused: {}", db.message()),
        sqlx::Error::Tls(tls) => format!("TLS failed: {tls}"),
        other => other.to_string(),
    };
    DatabaseError::Connect {
        target: target.to_owned(),
        reason,
    }
}

/// `statement_timeout` as PostgreSQL reads it: whole milliseconds, rounded
/// up so that a sub-millisecond timeout does not become 0 (off).
fn statement_timeout_millis(timeout: Duration) -> String {
    let millis = timeout.as_micros().div_ceil(1000);
    millis.to_string()
}

/// Sets a new pooled connection's session limits, for the whole session,
/// as bound parameters (never SQL text built from a flag):
///
/// - `statement_timeout`: no statement runs longer than the flag allows;
/// - `idle_in_transaction_session_timeout`, the same: a replica cut off in
///   the middle of a transaction (a partition, not a clean crash) cannot
///   hold its row locks, and so stall every other replica, for longer;
/// - server-side TCP keepalives (30 s idle, then every 10 s, 3 probes), so
///   the server notices a vanished replica in about a minute rather than
///   the operating system's default of two hours.
async fn set_session_limits(conn: &mut PgConnection, millis: String) -> Result<(), sqlx::Error> {
    sqlx::query(
        "SELECT set_config('statement_timeout', $1, false), \
                set_config('idle_in_transaction_session_timeout', $1, false), \
                set_config('tcp_keepalives_idle', '30', false), \
                set_config('tcp_keepalives_interval', '10', false), \
                set_config('tcp_keepalives_count', '3', false)",
    )
    .bind(millis)
    .execute(conn)
    .await?;
    Ok(())
}

/// Whether a storage call that failed with `err` may succeed if retried
/// unchanged, soon: every pooled connection stayed busy, the connection
/// broke (a restart, a failover, the network; the pool opens a new one),
/// SQLite's lock was held past the busy timeout, or PostgreSQL reported a
/// transient condition. Callers answer these UNAVAILABLE.
pub fn is_transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) => true,
        sqlx::Error::Database(db) => {
            let code = db.code();
            if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                // SQLITE_BUSY (5) and SQLITE_LOCKED (6), in the low byte of
                // the extended result code.
                return code
                    .and_then(|code| code.parse::<i32>().ok())
                    .is_some_and(|code| matches!(code & 0xff, 5 | 6));
            }
            if db
                .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .is_some()
            {
                return code.is_some_and(|code| pg_transient(&code));
            }
            false
        }
        _ => false,
    }
}

/// Whether a PostgreSQL SQLSTATE names a failure that a retry of the same
/// call may not meet.
fn pg_transient(sqlstate: &str) -> bool {
    matches!(
        sqlstate,
        // serialization_failure, deadlock_detected: another transaction won.
        "40001" | "40P01"
        // lock_not_available, query_canceled (statement_timeout).
        | "55P03" | "57014"
        // too_many_connections; admin_shutdown, crash_shutdown,
        // cannot_connect_now (a restart or failover in progress).
        | "53300" | "57P01" | "57P02" | "57P03"
        // read_only_sql_transaction: connected to a standby mid-failover.
        | "25006"
    ) || sqlstate.starts_with("08") // connection_exception and its subclasses
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_timeouts_round_up_to_milliseconds() {
        assert_eq!(statement_timeout_millis(Duration::from_secs(30)), "30000");
        assert_eq!(statement_timeout_millis(Duration::ZERO), "0");
        assert_eq!(statement_timeout_millis(Duration::from_micros(1)), "1");
        assert_eq!(statement_timeout_millis(Duration::from_micros(1500)), "2");
    }

    #[test]
    fn transient_postgres_failures_are_told_apart_from_bugs() {
        for sqlstate in [
            "40001", "40P01", "55P03", "57014", "53300", "57P01", "57P03", "25006", "08006",
            "08001",
        ] {
            assert!(pg_transient(sqlstate), "{sqlstate}");
        }
        // unique_violation, syntax_error, undefined_table, check_violation.
        for sqlstate in ["23505", "42601", "42P01", "23514"] {
            assert!(!pg_transient(sqlstate), "{sqlstate}");
        }
        assert!(is_transient(&sqlx::Error::PoolTimedOut));
        assert!(!is_transient(&sqlx::Error::RowNotFound));
    }

    #[test]
    fn statement_timeouts_fit_postgres() {
        assert_eq!(parse_statement_timeout("0s"), Ok(Duration::ZERO));
        assert!(parse_statement_timeout("30days").is_err());
    }
}
