//! The auth-server binary as operators and the end-to-end suite run it:
//! its `--help`, its `listening ADDR` line, a refusal to start without a
//! usable tokens file, and a clean exit on SIGTERM.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use orgauth_proto::auth::v1 as pb;
use orgauth_proto::auth::v1::auth_service_client::AuthServiceClient;
use orgauth_runtime::access::BearerToken;
use orgauth_security::Role;
use orgauth_security::token::issue;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const BIN: &str = env!("CARGO_BIN_EXE_auth-server");

/// Environment variables that would override the flags under test.
const ENV_VARS: [&str; 16] = [
    "AUTH_SERVER_LISTEN",
    "AUTH_SERVER_DATABASE",
    "AUTH_SERVER_DB_MAX_CONNECTIONS",
    "AUTH_SERVER_DB_STATEMENT_TIMEOUT",
    "AUTH_SERVER_DB_CONNECT_TIMEOUT",
    "AUTH_SERVER_SHUTDOWN_GRACE",
    "AUTH_SERVER_TOKENS_FILE",
    "AUTH_SERVER_TLS_CERT",
    "AUTH_SERVER_TLS_KEY",
    "AUTH_SERVER_TLS_CLIENT_CA",
    "AUTH_SERVER_MAX_MESSAGE_BYTES",
    "AUTH_SERVER_MAX_STREAMS_PER_CONNECTION",
    "AUTH_SERVER_MAX_INFLIGHT_PER_CONNECTION",
    "AUTH_SERVER_MAX_CALL_TIME",
    "AUTH_SERVER_KEEPALIVE_INTERVAL",
    "AUTH_SERVER_KEEPALIVE_TIMEOUT",
];

fn command() -> Command {
    let mut command = Command::new(BIN);
    for var in ENV_VARS {
        command.env_remove(var);
    }
    command
}

#[test]
fn help_documents_every_flag_and_its_environment_variable() {
    let output = command().arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for expected in [
        "--listen",
        "[env: AUTH_SERVER_LISTEN=]",
        "[default: 127.0.0.1:50052]",
        "--database",
        "[env: AUTH_SERVER_DATABASE=]",
        "[default: sqlite://data/auth.db]",
        "postgres://USER:PASSWORD@HOST:PORT/DATABASE",
        "--db-max-connections <N>",
        "[env: AUTH_SERVER_DB_MAX_CONNECTIONS=]",
        "[default: 8]",
        "--db-statement-timeout <DURATION>",
        "[env: AUTH_SERVER_DB_STATEMENT_TIMEOUT=]",
        "[default: 30s]",
        "--db-connect-timeout <DURATION>",
        "[env: AUTH_SERVER_DB_CONNECT_TIMEOUT=]",
        "--shutdown-grace",
        "[env: AUTH_SERVER_SHUTDOWN_GRACE=]",
        "[default: 10s]",
        "--tokens-file <PATH>",
        "[env: AUTH_SERVER_TOKENS_FILE=]",
        "--tls-cert <PATH>",
        "[env: AUTH_SERVER_TLS_CERT=]",
        "--tls-key <PATH>",
        "--tls-client-ca <PATH>",
        "--max-message-bytes",
        "[env: AUTH_SERVER_MAX_MESSAGE_BYTES=]",
        "--max-call-time",
        "--keepalive-interval",
    ] {
        assert!(
            help.contains(expected),
            "--help lacks {expected:?}:\n{help}"
        );
    }
}

#[test]
fn an_unsupported_database_fails_fast_without_echoing_the_url() {
    let output = command()
        .args([
            "--listen",
            "127.0.0.1:0",
            "--tokens-file",
            "/nonexistent/tokens",
            "--database",
            "mysql://auth:hunter2@db/auth",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(output.stdout.is_empty(), "nothing announced");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("mysql:// is not supported; use sqlite://PATH"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

/// The tokens a test server accepts: the file's lines and their secrets.
struct Tokens {
    service: String,
    admin: String,
}

/// Writes `dir/tokens` with a service and an admin token.
fn write_tokens(dir: &Path) -> (PathBuf, Tokens) {
    let service = issue("org-server", Role::Service, &[], None).expect("issue");
    let admin = issue("ops", Role::Admin, &[], None).expect("issue");
    let path = dir.join("tokens");
    std::fs::write(&path, format!("{}\n{}\n", service.line, admin.line)).expect("write tokens");
    let tokens = Tokens {
        service: service.secret,
        admin: admin.secret,
    };
    (path, tokens)
}

/// Runs the server with `tokens_file` and expects it to refuse to start:
/// non-zero exit, no `listening` line, and `expected` in its log.
fn refuses_to_start(dir: &Path, tokens_file: &Path, expected: &str) {
    let database = format!("sqlite://{}", dir.join("refused.db").display());
    let output = command()
        .args(["--listen", "127.0.0.1:0", "--database", &database])
        .arg("--tokens-file")
        .arg(tokens_file)
        .stdin(Stdio::null())
        .output()
        .expect("run auth-server");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "started anyway: {stderr}");
    assert!(!stdout.contains("listening"), "announced: {stdout}");
    assert!(stderr.contains(expected), "{expected:?} not in:\n{stderr}");
}

#[test]
fn a_missing_or_garbage_tokens_file_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    refuses_to_start(
        dir.path(),
        &dir.path().join("no-such-file"),
        "cannot read tokens file",
    );
    let garbage = dir.path().join("garbage");
    for (text, expected) in [
        ("", "tokens file has no tokens"),
        ("ops admin sha256:nothex\n", "tokens file line 1"),
        ("# ok\nops root sha256:00\n", "tokens file line 2"),
    ] {
        std::fs::write(&garbage, text).unwrap();
        refuses_to_start(dir.path(), &garbage, expected);
    }
    // A directory is not a file either.
    refuses_to_start(dir.path(), dir.path(), "cannot read tokens file");
    assert!(
        !dir.path().join("refused.db").exists(),
        "no database created"
    );
}

#[test]
fn a_missing_tls_file_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, _) = write_tokens(dir.path());
    let output = command()
        .args(["--listen", "127.0.0.1:0", "--database"])
        .arg(format!("sqlite://{}", dir.path().join("a.db").display()))
        .arg("--tokens-file")
        .arg(&tokens)
        .args([
            "--tls-cert",
            "/nonexistent/cert.pem",
            "--tls-key",
            "/nonexistent/key.pem",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(output.stdout.is_empty(), "nothing announced");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/cert.pem"), "{stderr}");
}

#[test]
fn tls_flags_without_their_partner_are_refused() {
    let output = command()
        .args(["--tokens-file", "/dev/null", "--tls-cert", "cert.pem"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--tls-key"), "{stderr}");
}

/// A running auth-server, killed if the test fails before it exits.
struct Server {
    child: Child,
    addr: SocketAddr,
    /// The server's stderr (its log), shown if the test fails.
    log: PathBuf,
    /// Secrets of the tokens it accepts.
    tokens: Tokens,
}

impl Server {
    fn start(dir: &Path, database: &str) -> Server {
        Server::start_named(dir, "auth-server", database)
    }

    /// Starts another server in `dir` (a replica, say), logging to
    /// `dir/NAME.log`, with the tokens of `dir/tokens` (rewritten).
    fn start_named(dir: &Path, name: &str, database: &str) -> Server {
        let log = dir.join(format!("{name}.log"));
        let (tokens_file, tokens) = write_tokens(dir);
        let mut child = command()
            .args(["--listen", "127.0.0.1:0", "--database", database])
            .arg("--tokens-file")
            .arg(&tokens_file)
            .args(["--shutdown-grace", "5s"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&log).expect("create the server log"))
            .spawn()
            .expect("spawn auth-server");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        let addr = line
            .trim_end()
            .strip_prefix("listening ")
            .and_then(|addr| addr.parse().ok());
        let Some(addr) = addr else {
            let _ = child.kill();
            panic!(
                "unexpected first line {line:?}; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        Server {
            child,
            addr,
            log,
            tokens,
        }
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("a valid URI")
            .connect()
            .await
            .expect("connect to auth-server")
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal}");
    }

    /// Waits for the process to exit. Async, so the test's own gRPC
    /// connection keeps running meanwhile (and can answer the server's
    /// GOAWAY), as a real client's would.
    async fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the child") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "auth-server did not exit within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "----- auth-server log -----\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

#[tokio::test]
async fn serves_on_an_announced_port_and_exits_0_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    // The parent directory does not exist yet: the server creates it.
    let database = format!("sqlite://{}", dir.path().join("data/a.db").display());
    let mut server = Server::start(dir.path(), &database);
    let channel = server.channel().await;

    let health = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status(), ServingStatus::Serving);

    // AuthService needs a token; health did not.
    let status = AuthServiceClient::new(channel.clone())
        .get_org_sso_policy(pb::GetOrgSsoPolicyRequest {
            org_id: "acme".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let mut admin = AuthServiceClient::with_interceptor(
        channel.clone(),
        BearerToken::new(&server.tokens.admin).unwrap(),
    );
    let policy = admin
        .get_org_sso_policy(pb::GetOrgSsoPolicyRequest {
            org_id: "acme".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .policy
        .unwrap();
    assert_eq!(policy.org_id, "acme");
    assert!(
        !policy.allow_custom_sso,
        "an unknown org disallows custom SSO"
    );
    assert!(dir.path().join("data/a.db").exists());
    // Only org-server's service token may change a policy.
    let status = admin
        .set_org_sso_policy(pb::SetOrgSsoPolicyRequest {
            org_id: "acme".into(),
            allow_custom_sso: true,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    AuthServiceClient::with_interceptor(
        channel.clone(),
        BearerToken::new(&server.tokens.service).unwrap(),
    )
    .set_org_sso_policy(pb::SetOrgSsoPolicyRequest {
        org_id: "acme".into(),
        allow_custom_sso: true,
    })
    .await
    .unwrap();

    // The client stays connected: an idle connection must not hold the
    // shutdown for the whole grace period (5 s).
    let signalled = Instant::now();
    server.signal("TERM");
    let status = server.wait(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(
        signalled.elapsed() < Duration::from_secs(3),
        "{:?}",
        signalled.elapsed()
    );
    drop(channel);
}

/// Runs the server against `database` and expects it to refuse to start
/// before announcing an address; returns its log.
fn refused_database(dir: &Path, database: &str, extra: &[&str]) -> String {
    let (tokens_file, _) = write_tokens(dir);
    let began = Instant::now();
    let output = command()
        .args(["--listen", "127.0.0.1:0", "--database", database])
        .arg("--tokens-file")
        .arg(&tokens_file)
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("run auth-server");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "started anyway: {stderr}");
    assert!(!stdout.contains("listening"), "announced: {stdout}");
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "{:?}",
        began.elapsed()
    );
    stderr
}

#[test]
fn an_unreachable_postgres_refuses_to_start_naming_host_and_port() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let stderr = refused_database(
        dir.path(),
        &format!("postgres://auth:hunter2@127.0.0.1:{port}/auth"),
        &["--db-connect-timeout", "1s"],
    );
    assert!(
        stderr.contains(&format!(
            "cannot connect to PostgreSQL at 127.0.0.1:{port} (database auth, user auth): \
             the host or port is unreachable"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

/// The binary on PostgreSQL: SetOrgSsoPolicy, LinkSso and a paged
/// ListSsoConnections; a second replica on the same database continues the
/// first one's page token (the key is shared) and sees its unlinks; after a
/// newer release's migration lands, the binary refuses to start.
#[tokio::test]
async fn serves_on_postgres_and_refuses_a_newer_schema() {
    let Some(pg) = orgauth_testkit::TempPostgres::start() else {
        return;
    };
    let database = pg.create_database("auth");
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &database);
    let channel = server.channel().await;
    let mut service = AuthServiceClient::with_interceptor(
        channel.clone(),
        BearerToken::new(&server.tokens.service).unwrap(),
    );
    service
        .set_org_sso_policy(pb::SetOrgSsoPolicyRequest {
            org_id: "acme".into(),
            allow_custom_sso: true,
        })
        .await
        .unwrap();
    let linked = service
        .link_sso(pb::LinkSsoRequest {
            org_id: "acme".into(),
            member_ids: vec!["m3".into(), "m1".into(), "m2".into()],
        })
        .await
        .unwrap()
        .into_inner()
        .linked;
    assert_eq!(linked, 3);
    let first = service
        .list_sso_connections(pb::ListSsoConnectionsRequest {
            org_id: "acme".into(),
            page_size: 2,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = first
        .connections
        .iter()
        .map(|c| c.member_id.as_str())
        .collect();
    assert_eq!(ids, ["m1", "m2"]);
    assert_eq!(first.total_size, 3);
    assert!(!first.next_page_token.is_empty());

    // A replica on the same database.
    let replica = Server::start_named(dir.path(), "replica", &database);
    let mut admin = AuthServiceClient::with_interceptor(
        replica.channel().await,
        BearerToken::new(&replica.tokens.admin).unwrap(),
    );
    let rest = admin
        .list_sso_connections(pb::ListSsoConnectionsRequest {
            org_id: "acme".into(),
            page_size: 2,
            page_token: first.next_page_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = rest
        .connections
        .iter()
        .map(|c| c.member_id.as_str())
        .collect();
    assert_eq!(ids, ["m3"]);
    assert!(rest.next_page_token.is_empty(), "the last page");

    // Disallow through one, then LinkSso through the other is refused.
    service
        .set_org_sso_policy(pb::SetOrgSsoPolicyRequest {
            org_id: "acme".into(),
            allow_custom_sso: false,
        })
        .await
        .unwrap();
    let status = admin
        .link_sso(pb::LinkSsoRequest {
            org_id: "acme".into(),
            member_ids: vec!["m4".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);

    server.signal("TERM");
    assert_eq!(server.wait(Duration::from_secs(10)).await.code(), Some(0));
    drop(replica);

    // A newer release migrated the database: this binary must not serve it.
    pg.psql(
        "auth",
        "INSERT INTO _sqlx_migrations \
         (version, description, success, checksum, execution_time) \
         VALUES (20991231000000, 'from the future', true, '\\x00'::bytea, 0)",
    );
    let stderr = refused_database(dir.path(), &database, &[]);
    assert!(
        stderr.contains(
            "database schema version 20991231000000 is newer than this binary \
             (knows up to 2); upgrade the binary"
        ),
        "{stderr}"
    );
}
