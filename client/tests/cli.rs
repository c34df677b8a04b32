//! orgctl as a user runs it: the documented flags and environment variables
//! are in `--help`, and an unreachable server gives a clear error and a
//! non-zero exit quickly. (Building this test also makes `cargo test
//! --workspace` build `target/debug/orgctl` for the end-to-end suite.)

use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn orgctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_orgctl"))
        .args(args)
        // The test must not depend on the caller's environment.
        .env_remove("ORGCTL_ENDPOINT")
        .env_remove("ORGCTL_AUTH_ENDPOINT")
        .env_remove("ORGCTL_CONNECT_TIMEOUT")
        .env_remove("ORGCTL_WATCH_RETRY_BUDGET")
        .output()
        .expect("orgctl runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn assert_mentions(text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

#[test]
fn help_documents_global_flags_env_vars_and_exit_codes() {
    let output = orgctl(&["--help"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_mentions(
        &stdout(&output),
        &[
            "--endpoint",
            "ORGCTL_ENDPOINT",
            "http://127.0.0.1:50051",
            "--auth-endpoint",
            "ORGCTL_AUTH_ENDPOINT",
            "http://127.0.0.1:50052",
            "--connect-timeout",
            "ORGCTL_CONNECT_TIMEOUT",
            "--watch-retry-budget",
            "--json",
            "org",
            "member",
            "job",
            "auth",
            "Exit codes:",
            "3  the followed job ended FAILED",
            "4  the followed job ended CANCELLED",
        ],
    );
}

#[test]
fn job_watch_help_documents_the_output_and_exit_codes() {
    let output = orgctl(&["job", "watch", "--help"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_mentions(
        &stdout(&output),
        &[
            "<JOB_ID>",
            "progress bar",
            "--json",
            "--endpoint",
            "ORGCTL_ENDPOINT",
            "--watch-retry-budget",
            "Exit code 0 if the job SUCCEEDED, 3 if FAILED, 4 if CANCELLED",
        ],
    );
}

#[test]
fn every_rpc_has_a_command() {
    for (command, subcommands) in [
        ("org", &["create", "get", "list", "update"][..]),
        ("member", &["add", "remove", "list", "seed"][..]),
        (
            "job",
            &["get", "list", "cancel", "failures", "watch", "wait"][..],
        ),
        (
            "auth",
            &["policy", "link", "unlink", "connections", "check"][..],
        ),
    ] {
        let output = orgctl(&[command, "--help"]);
        assert!(output.status.success(), "{}", stderr(&output));
        assert_mentions(&stdout(&output), subcommands);
    }
}

#[test]
fn usage_errors_exit_with_2() {
    // An update that changes nothing is refused before any connection.
    let output = orgctl(&["org", "update", "acme"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let output = orgctl(&["--endpoint", "https://example.com", "org", "get", "acme"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert_mentions(&stderr(&output), &["error: INVALID_ARGUMENT: ", "http://"]);
}

#[test]
fn an_unreachable_server_fails_fast_with_a_clear_error() {
    let started = Instant::now();
    let output = orgctl(&[
        "--endpoint",
        "http://127.0.0.1:1",
        "--connect-timeout",
        "1s",
        "org",
        "get",
        "x",
    ]);
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let stderr = stderr(&output);
    assert!(
        stderr.starts_with("error: UNAVAILABLE: cannot connect to http://127.0.0.1:1"),
        "{stderr}"
    );
    assert!(stdout(&output).is_empty());
}
