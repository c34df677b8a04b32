//! orgctl as operators use it, against real servers: `job watch` follows a
//! job across a kill -9 and restart of org-server; settings come from the
//! config file, the environment and flags in that rising order; lists print
//! as aligned tables or JSON lines; `job list --watch --until-idle` sees a
//! job finish and exits; a followed job that fails exits 3.

use std::ffi::OsStr;
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
    let lines = lines_of(&mut orgctl);

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

    let status = exit_within(&mut orgctl, Duration::from_secs(120)).expect("orgctl did not finish");
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

/// Runs orgctl to its end (at most `timeout`) with none of the caller's
/// ORGCTL_* variables or config file, plus `env`.
fn orgctl<K: AsRef<OsStr>, V: AsRef<OsStr>>(
    args: &[&str],
    env: &[(K, V)],
    timeout: Duration,
) -> std::process::Output {
    let mut command = Command::new(bin("orgctl"));
    command.args(args);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("ORGCTL_") {
            command.env_remove(name);
        }
    }
    command.env("XDG_CONFIG_HOME", "/nonexistent/orgctl-e2e");
    command.envs(env.iter().map(|(name, value)| (name, value)));
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn orgctl");
    let finished = exit_within(&mut child, timeout).is_some();
    let output = child.wait_with_output().expect("orgctl's output");
    assert!(
        finished,
        "orgctl {args:?} did not finish within {timeout:?}; stdout:\n{}\nstderr:\n{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    output
}

/// Waits up to `timeout` for `child` to exit: its status, or `None` after
/// killing it.
fn exit_within(
    child: &mut std::process::Child,
    timeout: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("poll orgctl") {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What orgctl printed.
struct Printed {
    stdout: String,
    stderr: String,
}

/// orgctl with a generous bound, off the runtime's worker threads; it must
/// exit with `code`.
#[track_caller]
fn run<K: AsRef<OsStr>, V: AsRef<OsStr>>(args: &[&str], env: &[(K, V)], code: i32) -> Printed {
    let output = tokio::task::block_in_place(|| orgctl(args, env, Duration::from_secs(60)));
    assert_exit(&output, code);
    Printed {
        stdout: text(&output.stdout),
        stderr: text(&output.stderr),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[track_caller]
fn assert_exit(output: &std::process::Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        text(&output.stdout),
        text(&output.stderr)
    );
}

/// Writes `text` as a config file only its owner can read.
fn write_config(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write the config file");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .expect("chmod the config file");
    }
    path.to_str().expect("a UTF-8 path").to_owned()
}

/// Checks that `table` is a header row and rows in aligned columns: every
/// column after the first starts, in every row, right after a gap of two
/// spaces, where the header's name of it starts.
#[track_caller]
fn assert_table(table: &str, header: &[&str], rows: usize) {
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), rows + 1, "{table}");
    let names: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(names, header, "{table}");
    let starts: Vec<usize> = header
        .iter()
        .map(|name| lines[0].find(&format!("  {name}")).map_or(0, |at| at + 2))
        .collect();
    for line in &lines[1..] {
        let chars: Vec<char> = line.chars().collect();
        for &start in &starts[1..] {
            if start >= chars.len() {
                // An empty last cell.
                continue;
            }
            assert!(
                chars[start - 2] == ' ' && chars[start - 1] == ' ' && chars[start] != ' ',
                "column at {start} is not aligned in {line:?}:\n{table}"
            );
        }
    }
}

/// `more` with a short connect timeout: the tests point orgctl at a dead
/// endpoint on purpose.
fn with<'a>(more: &[&'a str]) -> Vec<&'a str> {
    [&["--connect-timeout", "2s"][..], more].concat()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orgctl_takes_settings_from_flags_env_and_config_file_and_prints_tables_or_json() {
    let stack = Stack::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let live = stack.org.endpoint();
    let dead = "http://127.0.0.1:1";
    let admin = stack.tokens.admin.as_str();

    // The endpoint and the token only in the config file.
    let config = write_config(
        dir.path(),
        "live.toml",
        &format!("endpoint = \"{live}\"\ntoken = \"{admin}\"\n"),
    );
    let args = [
        "--config",
        &config,
        "org",
        "create",
        "--id",
        "acme",
        "--display-name",
        "Acme Corp",
        "--allow-custom-sso",
        "true",
        "--watch",
    ];
    let no_env: [(&str, &str); 0] = [];
    run(&with(&args), &no_env, 0);
    let members = [
        "member",
        "add",
        "acme",
        "-m",
        "m1:m1@example.com",
        "-m",
        "member-two:two@example.com",
        "-m",
        "m3",
    ];
    let env = [("ORGCTL_CONFIG", config.as_str())];
    run(&with(&members), &env, 0);

    // The environment beats the file, the command line beats both: a dead
    // endpoint or a refused token wherever the weaker source is.
    let dead_file = write_config(
        dir.path(),
        "dead.toml",
        &format!(
            "endpoint = \"{dead}\"\ntoken = \"{}\"\n",
            stack.tokens.expired
        ),
    );
    let get = ["org", "get", "acme"];
    let file_env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        std::iter::once(("ORGCTL_CONFIG", dead_file.as_str()))
            .chain(pairs.iter().copied())
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect()
    };
    let output = run(&with(&get), &file_env(&[]), 1);
    assert!(output.stderr.contains("127.0.0.1:1"), "{}", output.stderr);
    let output = run(&with(&get), &file_env(&[("ORGCTL_ENDPOINT", &live)]), 1);
    assert!(
        output.stderr.contains("TOKEN_EXPIRED"),
        "the file's token was used: {}",
        output.stderr
    );
    let output = run(
        &with(&get),
        &file_env(&[("ORGCTL_ENDPOINT", &live), ("ORGCTL_TOKEN", admin)]),
        0,
    );
    assert!(output.stdout.starts_with("org acme "), "{}", output.stdout);
    run(
        &[
            &with(&["--endpoint", &live, "--token", admin])[..],
            &get[..],
        ]
        .concat(),
        &file_env(&[
            ("ORGCTL_ENDPOINT", dead),
            ("ORGCTL_TOKEN", &stack.tokens.globex),
        ]),
        0,
    );
    // The globex token from the environment beats the admin one in the file.
    let output = run(
        &with(&get),
        &[
            ("ORGCTL_CONFIG", config.as_str()),
            ("ORGCTL_TOKEN", &stack.tokens.globex),
        ],
        1,
    );
    assert!(
        output.stderr.contains("PERMISSION_DENIED"),
        "{}",
        output.stderr
    );

    // `config show` says where each setting came from, never the secret.
    let output = run(
        &["--output", "json", "config", "show"],
        &file_env(&[("ORGCTL_ENDPOINT", &live), ("ORGCTL_TOKEN", admin)]),
        0,
    );
    let shown = output.stdout;
    for secret in [admin, stack.tokens.expired.as_str()] {
        assert!(!shown.contains(secret), "{shown}");
        assert!(!output.stderr.contains(secret));
    }
    let shown: serde_json::Value = serde_json::from_str(&shown).expect("one JSON object");
    assert_eq!(shown["endpoint"]["source"], "env");
    assert_eq!(shown["token"]["value"], "<redacted>");
    assert_eq!(shown["config"]["path"], dead_file.as_str());

    // Tables: a header row, then aligned columns.
    let output = run(&with(&["org", "list"]), &env, 0);
    assert_table(
        &output.stdout,
        &["ID", "NAME", "CUSTOM_SSO", "MEMBERS", "ETAG", "UPDATED"],
        1,
    );
    assert!(output.stdout.contains("Acme Corp"));
    let output = run(&with(&["member", "list", "acme"]), &env, 0);
    let table = output.stdout;
    assert_table(&table, &["ID", "EMAIL"], 3);
    assert!(table.contains("member-two  two@example.com"), "{table}");
    let output = run(&with(&["job", "list", "--org", "acme"]), &env, 0);
    let table = output.stdout;
    assert_table(
        &table,
        &[
            "ID", "ORG", "KIND", "STATE", "PROGRESS", "FAILED", "ATTEMPT", "CREATED",
        ],
        1,
    );
    assert!(table.contains("SUCCEEDED"), "{table}");

    // JSON lines, asked for by flag, by variable or by the config file;
    // the flag beats the file.
    let json_config = write_config(
        dir.path(),
        "json.toml",
        &format!("endpoint = \"{live}\"\ntoken = \"{admin}\"\noutput = \"json\"\n"),
    );
    let list = ["member", "list", "acme"];
    for (args, env) in [
        (
            [&["--output", "json"][..], &list[..]].concat(),
            vec![("ORGCTL_CONFIG", config.as_str())],
        ),
        (
            list.to_vec(),
            vec![
                ("ORGCTL_CONFIG", config.as_str()),
                ("ORGCTL_OUTPUT", "json"),
            ],
        ),
        (list.to_vec(), vec![("ORGCTL_CONFIG", json_config.as_str())]),
    ] {
        let output = run(&with(&args), &env, 0);
        let ids: Vec<String> = output
            .stdout
            .lines()
            .map(|line| {
                let member: serde_json::Value = serde_json::from_str(line)
                    .unwrap_or_else(|error| panic!("{line:?} is not JSON: {error}"));
                member["id"].as_str().expect("an id").to_owned()
            })
            .collect();
        assert_eq!(ids, ["m1", "m3", "member-two"], "{args:?} {env:?}");
    }
    let output = run(
        &with(&["--output", "table", "member", "list", "acme"]),
        &[("ORGCTL_CONFIG", json_config.as_str())],
        0,
    );
    assert!(output.stdout.starts_with("ID "), "{}", output.stdout);

    // An unknown key is a usage error naming the key and the file.
    let typo = write_config(
        dir.path(),
        "typo.toml",
        &format!("endpoint = \"{live}\"\nauth_endpoint = \"x:1\"\n"),
    );
    let output = run(
        &with(&["org", "get", "acme"]),
        &[("ORGCTL_CONFIG", typo.as_str())],
        2,
    );
    let error = output.stderr;
    assert!(
        error.contains("auth_endpoint") && error.contains(&typo),
        "{error}"
    );
}

/// The live view of the jobs, ending once none is running.
const LIVE_VIEW: [&str; 4] = ["job", "list", "--watch", "--until-idle"];

/// Reads a child's stdout lines on a thread, into a channel.
fn lines_of(child: &mut std::process::Child) -> mpsc::Receiver<String> {
    let (tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().expect("piped stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orgctl_job_list_watch_follows_jobs_until_idle() {
    // With Auth down the job keeps RUNNING (retrying) until it is back, so
    // the view surely sees it unfinished.
    let mut stack = Stack::with_auth_down("1000", "acme", 300).await;
    let job_id = stack.set_allow("acme", false).await;

    let mut watcher = Command::new(bin("orgctl"))
        .env("ORGCTL_TOKEN", &stack.tokens.admin)
        .env("XDG_CONFIG_HOME", "/nonexistent/orgctl-e2e")
        .args(["--endpoint", &stack.org.endpoint(), "--output", "json"])
        .args(LIVE_VIEW)
        .args(["--interval", "500ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn orgctl job list --watch");
    let lines = lines_of(&mut watcher);
    let parse = |line: &str| -> serde_json::Value {
        serde_json::from_str(line).unwrap_or_else(|error| panic!("{line:?}: {error}"))
    };
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !seen.iter().any(|line: &String| {
        let job = parse(line);
        job["id"] == job_id.as_str() && (job["state"] == "RUNNING" || job["state"] == "QUEUED")
    }) {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("the view shows the unfinished job; saw {seen:?}"));
        seen.push(line);
    }
    stack.auth.restart();

    let status = exit_within(&mut watcher, Duration::from_secs(90))
        .unwrap_or_else(|| panic!("orgctl did not exit once idle; saw:\n{}", seen.join("\n")));
    // The reader thread ends with the process's stdout.
    seen.extend(lines.iter());
    assert!(status.success(), "{status:?}\n{}", seen.join("\n"));
    let states: Vec<serde_json::Value> = seen
        .iter()
        .map(|line| parse(line))
        .filter(|job| job["id"] == job_id.as_str())
        .collect();
    let versions: Vec<i64> = states
        .iter()
        .map(|job| job["version"].as_i64().expect("a version"))
        .collect();
    assert!(
        versions.windows(2).all(|pair| pair[0] < pair[1]),
        "one line per change, in order: {versions:?}"
    );
    eprintln!(
        "the view printed {} lines; job {job_id} went {:?}",
        seen.len(),
        states
            .iter()
            .map(|job| format!("{}@{}", job["state"], job["processed_members"]))
            .collect::<Vec<_>>()
    );
    let last = states.last().expect("the job's states");
    assert_eq!(last["state"], "SUCCEEDED", "{last}");
    assert_eq!(last["processed_members"], 300);
    // The org's first job (creating it) was listed too, already finished.
    assert!(
        seen.iter()
            .map(|line| parse(line))
            .any(|job| job["id"] != job_id.as_str() && job["state"] == "SUCCEEDED"),
        "{seen:?}"
    );
    assert_eq!(stack.connections("acme").await, 0);

    // Not on a terminal and without --output json: one text line per job;
    // nothing is running any more, so it ends at once.
    let output = run(
        &[
            &["--endpoint", &stack.org.endpoint()][..],
            &LIVE_VIEW,
            &["--org", "acme"],
        ]
        .concat(),
        &[("ORGCTL_TOKEN", &stack.tokens.admin)],
        0,
    );
    let out = output.stdout;
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(
        out.lines()
            .any(|line| line.starts_with(&format!("job {job_id} SUCCEEDED processed=300/300"))),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orgctl_exits_3_when_the_job_it_follows_fails() {
    let stack = Stack::with_auth_down("3", "acme", 50).await;
    let endpoint = stack.org.endpoint();
    let env = [("ORGCTL_TOKEN", stack.tokens.admin.as_str())];
    let base = ["--endpoint", endpoint.as_str()];
    let args = |more: &[&'static str]| [&base[..], more].concat();

    let output = run(
        &args(&[
            "org",
            "update",
            "acme",
            "--allow-custom-sso",
            "false",
            "--watch",
        ]),
        &env,
        3,
    );
    let out = output.stdout;
    let job_id = out
        .lines()
        .find_map(|line| line.strip_prefix("job ").filter(|rest| !rest.contains(' ')))
        .unwrap_or_else(|| panic!("no job id in:\n{out}"))
        .to_owned();
    let last = out.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!("job {job_id} FAILED")) && last.contains("last_error="),
        "{out}"
    );

    run(
        &[&base[..], &["job", "wait", &job_id][..]].concat(),
        &env,
        3,
    );
    let output = run(
        &[
            &base[..],
            &["--output", "json", "job", "watch", &job_id][..],
        ]
        .concat(),
        &env,
        3,
    );
    let last: serde_json::Value =
        serde_json::from_str(output.stdout.lines().last().unwrap_or_default()).expect("JSON lines");
    assert_eq!(last["state"], "FAILED");

    // The live view is a list, not a follow: a failed job ends it with 0.
    let output = run(
        &args(&[&["--output", "json"][..], &LIVE_VIEW, &["--org", "acme"]].concat()),
        &env,
        0,
    );
    assert!(
        output
            .stdout
            .lines()
            .any(|line| line.contains(&job_id) && line.contains("\"FAILED\"")),
        "{}",
        output.stdout
    );
}
