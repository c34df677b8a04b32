//! The org-server binary's operator contract: documented flags with their
//! environment variables, the `listening ADDR` line, and a clean exit on
//! SIGTERM. (Building this test also makes `cargo test --workspace` build
//! the binary that the end-to-end suite in `tests/` runs.)

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_org-server");

/// A tokens file with an admin token and a service token, the flags that
/// point org-server at them, and the admin secret for calls.
fn credentials(dir: &std::path::Path) -> (Vec<String>, String) {
    use orgauth_security::Role;
    use orgauth_security::token::issue;
    let admin = issue("ops", Role::Admin, &[], None).expect("issue admin token");
    let service = issue("org-server", Role::Service, &[], None).expect("issue service token");
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, format!("{}\n{}\n", admin.line, service.line)).expect("write tokens");
    let service_token = dir.join("service-token");
    std::fs::write(&service_token, &service.secret).expect("write service token");
    let args = vec![
        "--tokens-file".into(),
        tokens.display().to_string(),
        "--auth-token-file".into(),
        service_token.display().to_string(),
    ];
    (args, admin.secret)
}

/// Kills the server when a test ends, even by a failed assertion, so no
/// failing run leaves a process behind.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for KillOnDrop {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

#[test]
fn help_documents_every_flag_and_its_environment_variable() {
    let output = Command::new(BIN)
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for (flag, env) in [
        ("--listen", "ORG_SERVER_LISTEN"),
        ("--database", "ORG_SERVER_DATABASE"),
        ("--auth-endpoint", "ORG_SERVER_AUTH_ENDPOINT"),
        ("--workers", "ORG_SERVER_WORKERS"),
        ("--batch-size", "ORG_SERVER_BATCH_SIZE"),
        ("--parallelism", "ORG_SERVER_PARALLELISM"),
        ("--lease", "ORG_SERVER_LEASE"),
        ("--retry-max-attempts", "ORG_SERVER_RETRY_MAX_ATTEMPTS"),
        ("--shutdown-grace", "ORG_SERVER_SHUTDOWN_GRACE"),
        ("--tokens-file", "ORG_SERVER_TOKENS_FILE"),
        ("--tls-cert", "ORG_SERVER_TLS_CERT"),
        ("--tls-client-ca", "ORG_SERVER_TLS_CLIENT_CA"),
        ("--max-message-bytes", "ORG_SERVER_MAX_MESSAGE_BYTES"),
        (
            "--max-streams-per-connection",
            "ORG_SERVER_MAX_STREAMS_PER_CONNECTION",
        ),
        (
            "--max-inflight-per-connection",
            "ORG_SERVER_MAX_INFLIGHT_PER_CONNECTION",
        ),
        ("--keepalive-interval", "ORG_SERVER_KEEPALIVE_INTERVAL"),
        ("--max-call-time", "ORG_SERVER_MAX_CALL_TIME"),
        ("--auth-token-file", "ORG_SERVER_AUTH_TOKEN_FILE"),
        ("--auth-tls-ca", "ORG_SERVER_AUTH_TLS_CA"),
        (
            "--org-updates-per-minute",
            "ORG_SERVER_ORG_UPDATES_PER_MINUTE",
        ),
        (
            "--max-watches-per-caller",
            "ORG_SERVER_MAX_WATCHES_PER_CALLER",
        ),
        ("--max-watches", "ORG_SERVER_MAX_WATCHES"),
        ("--log-format", "ORG_SERVER_LOG_FORMAT"),
        ("--metrics-listen", "ORG_SERVER_METRICS_LISTEN"),
        ("--otel-endpoint", "ORG_SERVER_OTEL_ENDPOINT"),
        ("--otel-service-name", "ORG_SERVER_OTEL_SERVICE_NAME"),
        ("--cors-allowed-origin", "ORG_SERVER_CORS_ALLOWED_ORIGIN"),
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
        assert!(help.contains(env), "{env} missing from --help");
    }
}

#[test]
fn invalid_flags_are_refused_at_start() {
    for args in [
        &["--batch-size", "0"][..],
        &["--batch-size", "1001"],
        &["--lease", "soon"],
        &["--database", "mysql://x"],
        &["--tls-cert", "cert.pem"],
        &["--tls-client-ca", "ca.pem"],
        &["--log-format", "xml"],
        &["--metrics-listen", "not-an-address"],
        &["--otel-endpoint", "not a url"],
        &["--cors-allowed-origin", "ops.example.com"],
        &["--cors-allowed-origin", "https://ops.example.com/path"],
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (credentials, _) = credentials(dir.path());
        let output = Command::new(BIN)
            .args(["--listen", "127.0.0.1:0"])
            .args(&credentials)
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("run org-server");
        assert!(!output.status.success(), "{args:?} must be refused");
        assert!(!String::from_utf8_lossy(&output.stdout).contains("listening"));
    }
}

/// A metrics port already taken fails the start, before the address is
/// announced, naming the flag.
#[test]
fn a_taken_metrics_port_is_refused_before_listening() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let (credentials, _) = credentials(dir.path());
    let output = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", &port])
        .args(&credentials)
        .current_dir(dir.path())
        .output()
        .expect("run org-server");
    assert!(!output.status.success());
    assert!(!String::from_utf8_lossy(&output.stdout).contains("listening"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--metrics-listen") && stderr.contains(&port),
        "{stderr}"
    );
}

/// Without usable credentials the server must not start at all: serving
/// with no tokens would either refuse everyone or, worse, no one.
#[test]
fn missing_or_bad_credentials_are_refused_before_listening() {
    let dir = tempfile::tempdir().unwrap();
    credentials(dir.path());
    let tokens = dir.path().join("tokens").display().to_string();
    let garbage = dir.path().join("garbage");
    std::fs::write(&garbage, "ops admin sha256:nothex\n").unwrap();
    let garbage = garbage.display().to_string();
    let database = format!("sqlite://{}/org.db", dir.path().display());
    let service_token = dir.path().join("service-token").display().to_string();
    let a_line = dir.path().join("a-line");
    std::fs::write(&a_line, "org-server service sha256:00\n").unwrap();
    let a_line = a_line.display().to_string();
    let with_auth = |extra: &[&'static str]| -> Vec<String> {
        let mut args: Vec<String> = ["--tokens-file", &tokens, "--workers", "1"]
            .iter()
            .map(|a| a.to_string())
            .collect();
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    };
    let plaintext_tls = [
        with_auth(&[
            "--auth-endpoint",
            "http://127.0.0.1:1",
            "--auth-tls-ca",
            "ca.pem",
        ]),
        vec!["--auth-token-file".to_owned(), service_token.clone()],
    ]
    .concat();
    let https_without_ca = [
        with_auth(&["--auth-endpoint", "https://127.0.0.1:1"]),
        vec!["--auth-token-file".to_owned(), service_token.clone()],
    ]
    .concat();
    let line_as_token = [with_auth(&["--auth-token-file"]), vec![a_line]].concat();
    let plaintext_tls: Vec<&str> = plaintext_tls.iter().map(String::as_str).collect();
    let https_without_ca: Vec<&str> = https_without_ca.iter().map(String::as_str).collect();
    let line_as_token: Vec<&str> = line_as_token.iter().map(String::as_str).collect();
    let cases: [(Vec<&str>, &str); 7] = [
        (plaintext_tls, "plaintext"),
        (https_without_ca, "--auth-tls-ca"),
        (line_as_token, "not a token secret"),
        (vec![], "--tokens-file"),
        (
            vec!["--tokens-file", "/nonexistent/tokens"],
            "cannot read tokens file",
        ),
        (vec!["--tokens-file", &garbage], "tokens file line 1"),
        (
            vec!["--tokens-file", &tokens, "--workers", "1"],
            "ORG_SERVER_AUTH_TOKEN",
        ),
    ];
    for (args, expected) in cases {
        let output = Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--database", &database])
            .args(&args)
            .env_remove("ORG_SERVER_TOKENS_FILE")
            .env_remove("ORG_SERVER_AUTH_TOKEN")
            .output()
            .expect("run org-server");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} must be refused");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!String::from_utf8_lossy(&output.stdout).contains("listening"));
        assert!(
            !stderr.contains("oat_"),
            "no secret in the output: {stderr}"
        );
    }
}

/// Starts org-server with `args` and returns it with the address from its
/// `listening ADDR` line.
fn spawn_server(args: &[String]) -> (KillOnDrop, std::net::SocketAddr) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map(KillOnDrop)
        .expect("spawn org-server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped stdout"))
        .read_line(&mut line)
        .expect("read the listening line");
    let addr = line
        .trim()
        .strip_prefix("listening ")
        .expect("listening line")
        .parse()
        .expect("address");
    (child, addr)
}

fn sigterm(child: &std::process::Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM failed");
}

/// Waits up to `timeout` for the process to exit; `what` says why it should.
fn wait_exit(
    child: &mut std::process::Child,
    timeout: Duration,
    what: &str,
) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("poll the child") {
            return status;
        }
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn starts_on_port_0_reports_its_address_and_exits_0_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (credentials, _) = credentials(dir.path());
    let (mut child, addr) = spawn_server(
        &[
            &credentials[..],
            &[
                "--listen".into(),
                "127.0.0.1:0".into(),
                "--workers".into(),
                "1".into(),
                "--database".into(),
                format!("sqlite://{}/nested/org.db", dir.path().display()),
            ],
        ]
        .concat(),
    );
    assert_ne!(addr.port(), 0);
    assert!(
        dir.path().join("nested/org.db").exists(),
        "database created with its directory"
    );

    sigterm(&child);
    let status = wait_exit(
        &mut child,
        Duration::from_secs(20),
        "org-server did not exit after SIGTERM",
    );
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test]
async fn a_second_signal_exits_at_once_while_a_graceful_shutdown_waits() {
    use orgauth_proto::org::v1 as pb;
    // An "Auth" that accepts connections and never answers: the worker's
    // call to it stays in flight, so a graceful shutdown has to wait.
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (credentials, admin) = credentials(dir.path());
    let (mut child, addr) = spawn_server(
        &[
            &credentials[..],
            &[
                "--listen".into(),
                "127.0.0.1:0".into(),
                "--workers".into(),
                "1".into(),
                "--auth-timeout".into(),
                "120s".into(),
                "--shutdown-grace".into(),
                "120s".into(),
                "--auth-endpoint".into(),
                format!("http://{}", black_hole.local_addr().unwrap()),
                "--database".into(),
                format!("sqlite://{}/org.db", dir.path().display()),
            ],
        ]
        .concat(),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let token = orgauth_runtime::access::BearerToken::new(&admin).unwrap();

    // Creating an org that allows custom SSO enqueues a job whose first
    // call (SetOrgSsoPolicy) goes to the black hole.
    let mut orgs =
        pb::org_service_client::OrgServiceClient::with_interceptor(channel.clone(), token.clone());
    let created = orgs
        .create_org(pb::CreateOrgRequest {
            org: Some(pb::Org {
                id: "acme".into(),
                display_name: "Acme".into(),
                allow_custom_sso: true,
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut jobs = pb::job_service_client::JobServiceClient::with_interceptor(channel, token);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let job = jobs
            .get_job(pb::GetJobRequest {
                job_id: created.job_id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .job
            .unwrap();
        if job.state == pb::JobState::Running as i32 {
            break;
        }
        assert!(Instant::now() < deadline, "the job never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop((orgs, jobs));

    sigterm(&child);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the graceful shutdown waits for the call in flight"
    );
    sigterm(&child);
    let status = wait_exit(
        &mut child,
        Duration::from_secs(5),
        "a second SIGTERM must exit at once",
    );
    assert_eq!(status.code(), Some(orgauth_runtime::FORCED_EXIT_CODE));
}

/// Runs org-server against `database` and expects it to refuse to start
/// before announcing an address; returns what it wrote to stderr.
fn refused_database(database: &str, extra: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let (credentials, _) = credentials(dir.path());
    let began = Instant::now();
    let output = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--database", database])
        .args(&credentials)
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("run org-server");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "started anyway: {stderr}");
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains("listening"),
        "announced an address: {stderr}"
    );
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "{:?}",
        began.elapsed()
    );
    stderr
}

#[test]
fn an_unreachable_postgres_refuses_to_start_naming_host_and_port() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let stderr = refused_database(
        &format!("postgres://org:hunter2@127.0.0.1:{port}/org"),
        &["--db-connect-timeout", "1s"],
    );
    assert!(
        stderr.contains(&format!(
            "cannot connect to PostgreSQL at 127.0.0.1:{port} (database org, user org): \
             the host or port is unreachable"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

/// On PostgreSQL the binary migrates an empty database and serves; once a
/// newer release's migration is recorded, it refuses to start, saying why.
#[test]
fn on_postgres_it_migrates_serves_and_refuses_a_newer_schema() {
    let Some(pg) = orgauth_testkit::TempPostgres::start() else {
        return;
    };
    let database = pg.create_database("org");
    let dir = tempfile::tempdir().unwrap();
    let (credentials, _) = credentials(dir.path());
    let args = [
        &credentials[..],
        &[
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--database".into(),
            database.clone(),
        ],
    ]
    .concat();
    let (mut child, _addr) = spawn_server(&args);
    sigterm(&child);
    let status = wait_exit(
        &mut child,
        Duration::from_secs(20),
        "org-server did not exit after SIGTERM",
    );
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(
        pg.psql("org", "SELECT count(*) FROM jobs").trim(),
        "0",
        "the schema is in place"
    );

    pg.psql(
        "org",
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from the future', true, '\\x00', 0)",
    );
    let stderr = refused_database(&database, &[]);
    assert!(
        stderr.contains("database schema version 9999 is newer than this binary"),
        "{stderr}"
    );
    assert!(stderr.contains("upgrade the binary"), "{stderr}");
}
