//! orgctl as operators use it: a real `orgctl job watch` process follows a
//! job across a kill -9 and restart of org-server and still ends with the
//! job's final state.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use orgauth_e2e::{Stack, StackOptions, bin};

/// `processed=N/M` from one of orgctl's plain output lines.
fn processed(line: &str) -> Option<i64> {
    let field = line
        .split_whitespace()
        .find_map(|f| f.strip_prefix("processed="))?;
    field.split('/').next()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orgctl_job_watch_survives_an_org_server_restart() {
    let mut stack = Stack::start_with(StackOptions {
        batch_size: 50,
        parallelism: 1,
        org_args: vec![
            "--lease".into(),
            "1s".into(),
            "--poll-interval".into(),
            "100ms".into(),
        ],
        ..Default::default()
    })
    .await;
    stack.seed_linked_org("acme", 20_000).await;
    let job_id = stack.set_allow("acme", false).await;

    let mut orgctl = Command::new(bin("orgctl"))
        .env("ORGCTL_TOKEN", &stack.tokens.admin)
        .args([
            "--endpoint",
            &stack.org.endpoint(),
            "--watch-retry-budget",
            "60s",
            "job",
            "watch",
            &job_id,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn orgctl");
    let (tx, lines) = mpsc::channel();
    let stdout = orgctl.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    // Let it watch some progress, then kill org-server under it.
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen
        .iter()
        .filter_map(|l: &String| processed(l))
        .max()
        .unwrap_or(0)
        < 2_000
    {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("orgctl prints progress");
        seen.push(line);
    }
    stack.org.restart();

    let status = {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = orgctl.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "orgctl did not finish");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    seen.extend(lines.try_iter());
    assert!(
        status.success(),
        "orgctl exits 0 when the job succeeds: {status:?}\n{}",
        seen.join("\n")
    );
    let progress: Vec<i64> = seen.iter().filter_map(|l| processed(l)).collect();
    assert!(
        progress.windows(2).all(|w| w[0] <= w[1]),
        "progress went backwards: {progress:?}"
    );
    let last = seen.last().unwrap();
    assert!(
        last.contains("SUCCEEDED") && last.contains("processed=20000/20000"),
        "{last}"
    );
    assert_eq!(stack.connections("acme").await, 0);
}
