//! The throw-away PostgreSQL: it starts, serves databases by URL, runs side
//! by side with others, survives stop/restart, and leaves no process or
//! directory behind: not on drop, not on a panic, not when the test process
//! is SIGKILLed. Skipped (with a printed reason) when PostgreSQL is missing.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::thread::sleep;
use std::time::{Duration, Instant};

use orgauth_testkit::TempPostgres;

/// `psql` on a URL, as a service would connect, not through the helper.
fn psql_url(pg: &TempPostgres, url: &str, sql: &str) -> std::process::Output {
    Command::new(pg.bin_dir().join("psql"))
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            url,
            "-c",
            sql,
        ])
        .env_remove("PGHOST")
        .env_remove("PGPORT")
        .stdin(Stdio::null())
        .output()
        .expect("run psql")
}

/// Every process whose command line mentions `text` (like `pgrep -f`).
fn processes_mentioning(text: &str) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(text) {
            found.push((pid, cmdline));
        }
    }
    found
}

/// `root` and all its descendants, from the parent pids in /proc/*/stat.
fn process_tree(root: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    for entry in fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
            continue;
        };
        if let Some(ppid) = rest
            .split_whitespace()
            .nth(1)
            .and_then(|ppid| ppid.parse::<u32>().ok())
        {
            parents.push((pid, ppid));
        }
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parents
                .iter()
                .filter(|(_, ppid)| *ppid == parent)
                .map(|(pid, _)| *pid),
        );
        i += 1;
    }
    tree
}

/// A live (not zombie) postgres process with this pid.
fn is_live_postgres(pid: u32) -> bool {
    fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
        !cmdline.is_empty() && String::from_utf8_lossy(&cmdline).contains("postgres")
    })
}

/// What must be gone once a server is: its processes and its directory.
struct Traces {
    dir: PathBuf,
    pids: Vec<u32>,
}

impl Traces {
    fn of(pg: &TempPostgres) -> Traces {
        let pids = process_tree(pg.pid().expect("the server runs"));
        // The postmaster and its background workers (checkpointer, walwriter…).
        assert!(
            pids.len() > 2,
            "expected postgres's child processes, got {pids:?}"
        );
        Traces {
            dir: pg
                .data_dir()
                .parent()
                .expect("the server directory")
                .to_owned(),
            pids,
        }
    }

    fn leftovers(&self) -> Vec<String> {
        let mut left: Vec<String> = processes_mentioning(&self.dir.to_string_lossy())
            .into_iter()
            .map(|(pid, cmdline)| format!("process {pid}: {cmdline}"))
            .collect();
        left.extend(
            self.pids
                .iter()
                .filter(|pid| is_live_postgres(**pid))
                .map(|pid| format!("postgres pid {pid}")),
        );
        if self.dir.exists() {
            left.push(format!("directory {}", self.dir.display()));
        }
        left
    }

    fn assert_gone_within(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = self.leftovers();
            if left.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "left behind: {left:#?}");
            sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn starts_creates_a_database_and_answers_on_its_url() {
    let Some(pg) = TempPostgres::start() else {
        return;
    };
    assert_eq!(
        pg.url("postgres"),
        format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port())
    );
    let url = pg.create_database("app_db");
    assert_eq!(url, pg.url("app_db"));

    let output = psql_url(&pg, &url, "select 1");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "1\n");
    let output = psql_url(
        &pg,
        &url,
        "select current_database(), current_setting('fsync'), version()",
    );
    let row = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(row.starts_with("app_db|off|PostgreSQL "), "{row}");

    assert_eq!(
        pg.psql(
            "app_db",
            "create table t (x int); insert into t values (7); select x from t"
        ),
        "7\n"
    );
    assert!(
        pg.log().contains("ready to accept connections"),
        "{}",
        pg.log()
    );
}

#[test]
#[should_panic(expected = "database name")]
fn refuses_database_names_that_need_escaping() {
    let Some(pg) = TempPostgres::start() else {
        panic!("database name: (skipped, PostgreSQL missing)");
    };
    pg.create_database("a/b");
}

#[test]
fn two_servers_at_once_are_separate() {
    let (Some(a), Some(b)) = (TempPostgres::start(), TempPostgres::start()) else {
        return;
    };
    assert_ne!(a.port(), b.port());
    assert_ne!(a.data_dir(), b.data_dir());
    a.psql("postgres", "create table only_in_a (x int)");
    assert_eq!(
        a.psql(
            "postgres",
            "select count(*) from pg_tables where tablename = 'only_in_a'"
        ),
        "1\n"
    );
    assert_eq!(
        b.psql(
            "postgres",
            "select count(*) from pg_tables where tablename = 'only_in_a'"
        ),
        "0\n"
    );
    assert_eq!(
        b.psql("postgres", "select current_setting('port')"),
        format!("{}\n", b.port())
    );
}

#[test]
fn stop_makes_it_unreachable_and_restart_brings_it_back_with_its_data() {
    let Some(mut pg) = TempPostgres::start() else {
        return;
    };
    let url = pg.create_database("kept");
    pg.psql("kept", "create table t (x int); insert into t values (1)");
    let port = pg.port();

    pg.stop();
    assert!(!pg.is_running());
    assert_eq!(pg.pid(), None);
    assert!(
        !psql_url(&pg, &url, "select 1").status.success(),
        "a stopped server answered"
    );
    pg.stop(); // stopping twice is fine

    pg.restart();
    assert!(pg.is_running());
    assert_eq!(pg.port(), port);
    assert_eq!(pg.psql("kept", "select x from t"), "1\n");
    pg.restart(); // restarting a running server too
    assert_eq!(pg.psql("kept", "select x from t"), "1\n");
}

#[test]
fn drop_leaves_no_process_and_no_directory() {
    let Some(pg) = TempPostgres::start() else {
        return;
    };
    // A client connection open during drop: fast shutdown ends it.
    let mut client = Command::new(pg.bin_dir().join("psql"))
        .args([
            "-X",
            "-q",
            "-d",
            &pg.url("postgres"),
            "-c",
            "select pg_sleep(60)",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while pg.psql("postgres", "select count(*) from pg_stat_activity where query like '%pg_sleep(60)%' and pid <> pg_backend_pid()") != "1\n" {
        assert!(Instant::now() < deadline, "the sleeping client never connected");
        sleep(Duration::from_millis(20));
    }
    let traces = Traces::of(&pg);
    assert!(!traces.leftovers().is_empty());
    let began = Instant::now();
    drop(pg);
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "drop took {:?}",
        began.elapsed()
    );
    traces.assert_gone_within(Duration::ZERO);
    let _ = client.kill();
    let _ = client.wait();
}

#[test]
fn a_panicking_test_leaves_nothing_behind() {
    let traces = Mutex::new(None);
    let result = std::panic::catch_unwind(|| {
        let Some(pg) = TempPostgres::start() else {
            return;
        };
        *traces.lock().unwrap() = Some(Traces::of(&pg));
        panic!("the test fails while its server runs");
    });
    let Some(traces) = traces.into_inner().unwrap() else {
        return;
    };
    assert!(result.is_err());
    traces.assert_gone_within(Duration::ZERO);
}

/// Set in the child process of the SIGKILL test.
const CHILD_ENV: &str = "ORGAUTH_TESTKIT_SIGKILL_CHILD";

/// Only does something as the child of the test below: starts a server,
/// reports it, and waits to be killed.
#[test]
fn sigkill_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let Some(pg) = TempPostgres::start() else {
        println!("SKIPPED");
        return;
    };
    println!("SERVER {} {}", pg.pid().unwrap(), pg.data_dir().display());
    sleep(Duration::from_secs(120));
}

#[test]
fn a_sigkilled_test_process_leaves_nothing_behind() {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "sigkill_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut server = None;
    for line in stdout.lines() {
        let line = line.unwrap();
        if line == "SKIPPED" {
            break;
        }
        // After the harness's "test sigkill_child ... " on the same line.
        if let Some((_, rest)) = line.split_once("SERVER ") {
            let (pid, data) = rest.split_once(' ').unwrap();
            server = Some((pid.parse::<u32>().unwrap(), PathBuf::from(data)));
            break;
        }
    }
    let Some((pid, data)) = server else {
        let _ = child.kill();
        let _ = child.wait();
        return;
    };
    let traces = Traces {
        dir: data.parent().unwrap().to_owned(),
        pids: process_tree(pid),
    };
    let scratch = data
        .parent()
        .and_then(Path::parent)
        .expect("the scratch directory");
    let template = template_dir_of(scratch, child.id());
    assert!(is_live_postgres(pid));
    assert!(
        template.as_deref().is_some_and(Path::exists),
        "no template directory for pid {}",
        child.id()
    );

    child.kill().unwrap(); // SIGKILL: no drop runs.
    child.wait().unwrap();
    traces.assert_gone_within(Duration::from_secs(10));
    if let Some(template) = template {
        let deadline = Instant::now() + Duration::from_secs(10);
        while template.exists() {
            assert!(
                Instant::now() < deadline,
                "template directory {} left behind",
                template.display()
            );
            sleep(Duration::from_millis(50));
        }
    }
}

fn template_dir_of(scratch: &Path, pid: u32) -> Option<PathBuf> {
    let prefix = format!("{}template-{pid}-", orgauth_testkit::DIR_PREFIX);
    fs::read_dir(scratch)
        .expect("read the temporary directory")
        .flatten()
        .find(|entry| entry.file_name().to_string_lossy().starts_with(&prefix))
        .map(|entry| entry.path())
}
