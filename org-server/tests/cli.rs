//! The org-server binary's operator contract: documented flags with their
//! environment variables, the `listening ADDR` line, and a clean exit on
//! SIGTERM. (Building this test also makes `cargo test --workspace` build
//! the binary that the end-to-end suite in `tests/` runs.)

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_org-server");

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
    ] {
        let dir = tempfile::tempdir().unwrap();
        let output = Command::new(BIN)
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("run org-server");
        assert!(!output.status.success(), "{args:?} must be refused");
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
    let (mut child, addr) = spawn_server(&[
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--workers".into(),
        "1".into(),
        "--database".into(),
        format!("sqlite://{}/nested/org.db", dir.path().display()),
    ]);
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
    let (mut child, addr) = spawn_server(&[
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
    ]);

    // Creating an org that allows custom SSO enqueues a job whose first
    // call (SetOrgSsoPolicy) goes to the black hole.
    let mut orgs = pb::org_service_client::OrgServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
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
    let mut jobs = pb::job_service_client::JobServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
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
