//! The org-server binary's operator contract: documented flags with their
//! environment variables, the `listening ADDR` line, and a clean exit on
//! SIGTERM. (Building this test also makes `cargo test --workspace` build
//! the binary that the end-to-end suite in `tests/` runs.)

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_org-server");

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

#[test]
fn starts_on_port_0_reports_its_address_and_exits_0_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--workers", "1"])
        .arg("--database")
        .arg(format!("sqlite://{}/nested/org.db", dir.path().display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn org-server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr: std::net::SocketAddr = line
        .trim()
        .strip_prefix("listening ")
        .expect("listening line")
        .parse()
        .expect("address");
    assert_ne!(addr.port(), 0);
    assert!(
        dir.path().join("nested/org.db").exists(),
        "database created with its directory"
    );

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "org-server did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status:?}");
}
