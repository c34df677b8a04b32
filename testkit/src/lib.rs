//! A throw-away PostgreSQL server for tests.
//!
//! Tests that need PostgreSQL call [`TempPostgres::start`], which returns a
//! server of their own: a fresh `postgres` process, a child of the test
//! process, listening on `127.0.0.1` on a free port, with its data directory,
//! log and unix socket in a temporary directory. Dropping the value stops the
//! server and removes the directory, also when the test panics (drop runs on
//! unwind).
//!
//! ```no_run
//! let Some(pg) = orgauth_testkit::TempPostgres::start() else {
//!     return; // PostgreSQL is not installed: the reason was printed.
//! };
//! let url = pg.create_database("orgs"); // postgres://postgres@127.0.0.1:PORT/orgs
//! assert_eq!(pg.psql("orgs", "select 1"), "1\n");
//! # let _ = url;
//! ```
//!
//! # Speed
//!
//! `initdb` runs once per test process (under a second), into a template data
//! directory; each `start` copies the template (`cp -a`, 28 MB) and starts a
//! server on it, about 0.2 s in all, so tests are isolated from each other
//! at little cost. The directories go to `/dev/shm` when it is a tmpfs with
//! at least 1 GiB free (on a slow disk the copy alone takes a second), else
//! to the temporary directory (`TMPDIR`, `/tmp`); `ORGAUTH_PG_TMPDIR`
//! overrides both. The servers run with
//! `fsync=off`, `synchronous_commit=off` and `full_page_writes=off`: fast and
//! unsafe, meant only for these throw-away test databases, never for a real
//! deployment. `start`, `stop`, `restart` and drop block the calling thread,
//! which is fine inside `#[tokio::test]` too.
//!
//! # Skipping
//!
//! The binaries are found through, in order: the `ORGAUTH_PG_BIN` environment
//! variable (a directory holding `initdb`, `postgres`, `pg_isready`,
//! `createdb` and `psql`), `pg_config --bindir`, the highest
//! `/usr/lib/postgresql/*/bin` (Debian's layout), and `PATH`. When none holds
//! them, `start` prints why (once per process past the test harness's output
//! capture, and in each test's captured output) and returns `None`, and the
//! test returns early. With `ORGAUTH_REQUIRE_POSTGRES=1` (as CI sets it) it
//! panics instead, so a broken install cannot turn into silently skipped tests.
//! When the binaries exist but `initdb` or the server fails, `start` panics
//! with the command's output or the server's log.
//!
//! # Root
//!
//! `initdb` and `postgres` refuse to run as root. When the tests run as root,
//! both run as the `postgres` user (which Debian's package creates), by
//! setting the child's uid and gid ([`std::os::unix::process::CommandExt`];
//! supplementary groups are dropped), and the temporary directories are
//! handed to that user with `chown`. They must therefore lie where that user
//! can reach them: `/dev/shm` and `/tmp` are fine, an `ORGAUTH_PG_TMPDIR` or
//! `TMPDIR` under `/root` is not. When running as root and there is no
//! `postgres` user, the tests are skipped with that reason. The client tools
//! (`pg_isready`, `createdb`, `psql`) run as the caller and connect over TCP
//! as the database user `postgres` with `trust` authentication.
//!
//! # Leftovers
//!
//! Every directory is named `orgauth-pg-<pid of the test process>-…` (the
//! template `orgauth-pg-template-<pid>-…`), in `/dev/shm` or the temporary
//! directory (above). A
//! small `sh` watchdog per directory holds a pipe from the test process; when
//! the test process dies without dropping the server, also when it is
//! SIGKILLed or keeps a server in a `static`, the pipe closes and the watchdog
//! stops that server (immediate shutdown) and removes the directory. Only if
//! the watchdogs are killed too (say `kill -9` of the whole process group)
//! can a server be left behind; find it with `pgrep -af 'orgauth-pg-'`
//! (its command line holds `-D <dir>/orgauth-pg-…/data`) and the
//! directories with `ls -d /dev/shm/orgauth-pg-* /tmp/orgauth-pg-*`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::thread::sleep;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// A directory holding `initdb`, `postgres`, `pg_isready`, `createdb` and
/// `psql`; takes precedence over every other place.
pub const BIN_DIR_ENV: &str = "ORGAUTH_PG_BIN";

/// When set (to anything but empty or `0`), missing PostgreSQL is a test
/// failure instead of a skip. CI sets it.
pub const REQUIRE_ENV: &str = "ORGAUTH_REQUIRE_POSTGRES";

/// Where the directories go, instead of `/dev/shm` or the temporary
/// directory (see the crate docs).
pub const TMPDIR_ENV: &str = "ORGAUTH_PG_TMPDIR";

const SHM: &str = "/dev/shm";
const SHM_MIN_FREE: u64 = 1 << 30;

/// The prefix of every directory this crate makes (in `/dev/shm` or the
/// temporary directory), followed by the test process's pid.
pub const DIR_PREFIX: &str = "orgauth-pg-";

/// The database superuser (`initdb -U`), which the URLs connect as.
pub const SUPERUSER: &str = "postgres";

/// The operating-system user that runs `initdb` and `postgres` when the tests
/// run as root.
const OS_USER: &str = "postgres";

const BINARIES: [&str; 5] = ["initdb", "postgres", "pg_isready", "createdb", "psql"];

/// Server settings for tests only: durability off. A crash of a test server
/// may corrupt its data, which is thrown away anyway.
const TEST_SETTINGS: [&str; 3] = [
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
];

/// How long a server may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a fast shutdown (SIGINT) may take before an immediate one.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an immediate shutdown (SIGQUIT) may take before SIGKILL.
const QUIT_TIMEOUT: Duration = Duration::from_secs(5);
/// Fresh ports tried when another process takes the chosen one first.
const PORT_ATTEMPTS: u32 = 10;
/// How long `restart` waits for its old port to become free.
const SAME_PORT_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(10);

/// Run by the template directory's watchdog; `$1` is the directory.
/// It blocks until the test process's end of its stdin closes.
const TEMPLATE_WATCHDOG: &str = r#"trap '' INT HUP QUIT TERM
cat >/dev/null 2>&1
rm -rf -- "$1""#;

/// Run by each server directory's watchdog; `$1` is the directory. It stops
/// the server only when the pid in `postmaster.pid` is still a postgres run
/// on this data directory (its command line holds `-D <data>`). A zombie
/// (empty command line) counts as gone: the orphaned postmaster's new parent
/// may never reap it.
const SERVER_WATCHDOG: &str = r#"trap '' INT HUP QUIT TERM
cat >/dev/null 2>&1
data="$1/data"
pid=$(head -n 1 "$data/postmaster.pid" 2>/dev/null)
if [ -n "$pid" ] && tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qxF -- "$data"; then
    kill -QUIT "$pid" 2>/dev/null
    i=0
    while [ -n "$(head -c 1 "/proc/$pid/cmdline" 2>/dev/null)" ] && [ "$i" -lt 50 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    kill -KILL "$pid" 2>/dev/null
fi
rm -rf -- "$1""#;

/// A PostgreSQL server of one's own, stopped and deleted on drop.
#[derive(Debug)]
pub struct TempPostgres {
    setup: &'static Installation,
    port: u16,
    data: PathBuf,
    log: PathBuf,
    server: Option<Child>,
    /// Started by [`TempPostgres::start_durable`]: PostgreSQL's own
    /// durability settings, on disk.
    durable: bool,
    // Drop order: `drop` disarms the watchdog and stops the server; the
    // directory goes last.
    watchdog: Watchdog,
    dir: TempDir,
}

impl TempPostgres {
    /// Starts a fresh server on a free port, or returns `None` (after printing
    /// why) when PostgreSQL is not installed. Panics when it is installed but
    /// `initdb` or the server fails, with their output.
    pub fn start() -> Option<TempPostgres> {
        Self::start_with(false)
    }

    /// As [`start`](Self::start), but durable, as production runs it: the
    /// data directory on disk (the temporary directory, not `/dev/shm`)
    /// and PostgreSQL's defaults (`fsync`, `synchronous_commit` and
    /// `full_page_writes` on), so every commit waits for its WAL flush.
    /// For benchmarks; tests want [`start`](Self::start)'s speed.
    pub fn start_durable() -> Option<TempPostgres> {
        Self::start_with(true)
    }

    fn start_with(durable: bool) -> Option<TempPostgres> {
        let setup = match SETUP.get_or_init(Setup::new) {
            Setup::Ready(installation) => installation,
            Setup::Skip(reason) => {
                if required() {
                    panic!(
                        "{reason}, and {REQUIRE_ENV} is set: PostgreSQL tests must not be skipped"
                    );
                }
                static ONCE: OnceLock<()> = OnceLock::new();
                ONCE.get_or_init(|| {
                    // Past the harness's capture, once: visible in CI logs.
                    let _ = writeln!(
                        io::stderr(),
                        "orgauth-testkit: skipping PostgreSQL tests: {reason}"
                    );
                });
                eprintln!("skipping: {reason}");
                return None;
            }
            Setup::Failed(error) => panic!("{error}"),
        };
        let began = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix(&format!("{DIR_PREFIX}{}-", std::process::id()))
            .tempdir_in(if durable {
                std::env::temp_dir()
            } else {
                setup.scratch.clone()
            })
            .expect("create a temporary directory for PostgreSQL");
        let watchdog = Watchdog::spawn(SERVER_WATCHDOG, dir.path())
            .expect("start the PostgreSQL watchdog (sh)");
        setup
            .hand_over(dir.path())
            .expect("chown the PostgreSQL directory");
        let data = dir.path().join("data");
        let copy = Command::new("cp")
            .arg("-a")
            .arg(&setup.template)
            .arg(&data)
            .stdin(Stdio::null())
            .output()
            .expect("run cp");
        assert!(
            copy.status.success(),
            "cp -a of the template data directory failed: {}",
            output_text(&copy)
        );
        let mut pg = TempPostgres {
            setup,
            port: 0,
            log: dir.path().join("postgres.log"),
            data,
            server: None,
            durable,
            watchdog,
            dir,
        };
        pg.launch(None);
        eprintln!(
            "orgauth-testkit: PostgreSQL on 127.0.0.1:{} ({}), started in {} ms",
            pg.port,
            pg.dir.path().display(),
            began.elapsed().as_millis()
        );
        Some(pg)
    }

    /// The TCP port on 127.0.0.1; it stays the same across `restart`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:PORT/<database>`. The database must
    /// exist (`postgres` always does; see [`Self::create_database`]).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates an empty database and returns its URL. Names are limited to
    /// ASCII letters, digits and `_` (at most 63), so the URL needs no
    /// escaping. Panics when `createdb` fails.
    pub fn create_database(&self, name: &str) -> String {
        assert!(
            !name.is_empty()
                && name.len() <= 63
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "database name {name:?}: use 1 to 63 ASCII letters, digits or '_'"
        );
        let output = self
            .client("createdb")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                SUPERUSER,
                "--",
                name,
            ])
            .output()
            .expect("run createdb");
        assert!(
            output.status.success(),
            "createdb {name} failed: {}",
            output_text(&output)
        );
        self.url(name)
    }

    /// Runs SQL with `psql` in `database` and returns its unaligned, tuples-only
    /// output (`select 1` gives `"1\n"`). Panics when the SQL fails.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let output = self
            .client("psql")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                SUPERUSER,
                "-d",
                database,
            ])
            .arg("-c")
            .arg(sql)
            .output()
            .expect("run psql");
        assert!(
            output.status.success(),
            "psql {sql:?} in {database} failed: {}",
            output_text(&output)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Stops the server (fast shutdown: clients are disconnected), keeping its
    /// data; the port refuses connections until [`Self::restart`]. Does nothing
    /// when it is stopped already.
    pub fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            shut_down(server);
        }
    }

    /// Stops the server if it runs and starts it again on the same port and
    /// data. Panics when it cannot.
    pub fn restart(&mut self) {
        self.stop();
        self.launch(Some(self.port));
    }

    /// Whether the server process is running (it may have been stopped, or
    /// killed by the test).
    pub fn is_running(&mut self) -> bool {
        match &mut self.server {
            Some(server) => matches!(server.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The pid of the server's postmaster while it runs: for tests that kill
    /// it themselves.
    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(Child::id)
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// Everything the server has logged so far (across restarts).
    pub fn log(&self) -> String {
        fs::read(&self.log)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// The directory the PostgreSQL binaries were taken from (for `pg_dump`
    /// and the like).
    pub fn bin_dir(&self) -> &Path {
        &self.setup.bin
    }

    /// A client tool run as the caller, with no `PG*` variables from the
    /// environment.
    fn client(&self, program: &str) -> Command {
        let mut command = pg_command(&self.setup.bin, program);
        command.stdin(Stdio::null());
        command
    }

    /// Starts the server on `port`, or on a fresh free port (retrying with
    /// another when something takes it first).
    fn launch(&mut self, port: Option<u16>) {
        let deadline = Instant::now() + SAME_PORT_TIMEOUT;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let chosen = match port {
                Some(port) => port,
                None => free_port().expect("find a free port on 127.0.0.1"),
            };
            match self.try_launch(chosen) {
                Ok(()) => return,
                Err(Launch::PortTaken) if port.is_none() && attempt < PORT_ATTEMPTS => continue,
                Err(Launch::PortTaken) if port.is_some() && Instant::now() < deadline => {
                    sleep(Duration::from_millis(100));
                    continue;
                }
                Err(Launch::PortTaken) => panic!(
                    "PostgreSQL could not listen on 127.0.0.1:{chosen} (address in use), attempt {attempt}; log {}:\n{}",
                    self.log.display(),
                    self.log()
                ),
                Err(Launch::Failed(error)) => panic!("{error}"),
            }
        }
    }

    fn try_launch(&mut self, port: u16) -> Result<(), Launch> {
        let failed = |what: String| Launch::Failed(what);
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| failed(format!("open {}: {e}", self.log.display())))?;
        let log_start = log.seek(SeekFrom::End(0)).unwrap_or(0);
        let stderr = log
            .try_clone()
            .map_err(|e| failed(format!("dup the log file: {e}")))?;
        let mut command = pg_command(&self.setup.bin, "postgres");
        command
            .arg("-D")
            .arg(&self.data)
            .args(["-p", &port.to_string(), "-h", "127.0.0.1", "-k"])
            .arg(self.dir.path());
        if !self.durable {
            for setting in TEST_SETTINGS {
                command.args(["-c", setting]);
            }
        }
        self.setup.as_owner(&mut command, self.dir.path());
        command.stdin(Stdio::null()).stdout(log).stderr(stderr);
        let server = command.spawn().map_err(|e| {
            failed(format!(
                "start {}: {e}",
                self.setup.bin.join("postgres").display()
            ))
        })?;
        self.server = Some(server);
        self.port = port;

        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let exited = match &mut self.server {
                Some(server) => server
                    .try_wait()
                    .map_err(|e| failed(format!("wait for postgres: {e}")))?,
                None => None,
            };
            if let Some(status) = exited {
                self.server = None;
                let new_log = self.log_since(log_start);
                if new_log.contains("Address already in use") {
                    return Err(Launch::PortTaken);
                }
                return Err(failed(format!(
                    "PostgreSQL exited ({status}) before accepting connections on 127.0.0.1:{port}; log {}:\n{new_log}",
                    self.log.display()
                )));
            }
            if self.pid_file_says_ready() && self.accepts_connections() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.stop();
                return Err(failed(format!(
                    "PostgreSQL did not accept connections on 127.0.0.1:{port} within {} s; log {}:\n{}",
                    READY_TIMEOUT.as_secs(),
                    self.log.display(),
                    self.log_since(log_start)
                )));
            }
            sleep(POLL);
        }
    }

    /// The postmaster writes `ready` as the 8th line of `postmaster.pid` once
    /// it accepts connections (what `pg_ctl -w` waits for). This, unlike a
    /// connection attempt, cannot be fooled by another server on the port.
    fn pid_file_says_ready(&self) -> bool {
        let Some(pid) = self.pid() else { return false };
        let Ok(contents) = fs::read_to_string(self.data.join("postmaster.pid")) else {
            return false;
        };
        let lines: Vec<&str> = contents.lines().collect();
        lines.first().map(|line| line.trim()) == Some(pid.to_string().as_str())
            && lines.get(7).map(|line| line.trim()) == Some("ready")
    }

    fn accepts_connections(&self) -> bool {
        self.client("pg_isready")
            .args([
                "-q",
                "-t",
                "5",
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                SUPERUSER,
                "-d",
                "postgres",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }

    fn log_since(&self, offset: u64) -> String {
        let mut text = Vec::new();
        if let Ok(mut file) = File::open(&self.log)
            && file.seek(SeekFrom::Start(offset)).is_ok()
        {
            let _ = file.read_to_end(&mut text);
        }
        String::from_utf8_lossy(&text).into_owned()
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        // Disarm first, so the watchdog never acts on a directory being removed.
        self.watchdog.disarm();
        self.stop();
        // `dir` is removed when the fields drop, after this.
    }
}

enum Launch {
    PortTaken,
    Failed(String),
}

/// Fast shutdown (SIGINT), then immediate (SIGQUIT), then SIGKILL; reaps it.
fn shut_down(mut server: Child) {
    for (signal, patience) in [("INT", STOP_TIMEOUT), ("QUIT", QUIT_TIMEOUT)] {
        if send_signal(server.id(), signal).is_err() {
            break;
        }
        if wait_timeout(&mut server, patience).is_some() {
            return;
        }
    }
    let _ = server.kill();
    let _ = server.wait();
}

/// Sends a signal with the shell's `kill` builtin (no `libc` here: the
/// workspace forbids unsafe code).
fn send_signal(pid: u32, signal: &str) -> io::Result<ExitStatus> {
    Command::new("sh")
        .args([
            "-c",
            "kill -s \"$1\" \"$2\" 2>/dev/null",
            "sh",
            signal,
            &pid.to_string(),
        ])
        .stdin(Stdio::null())
        .status()
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => sleep(POLL),
            _ => return None,
        }
    }
}

/// Cleans up a directory if the test process dies without doing it: a `sh`
/// child blocked reading a pipe whose only writer is this process.
#[derive(Debug)]
struct Watchdog {
    child: Option<Child>,
}

impl Watchdog {
    fn spawn(script: &str, dir: &Path) -> io::Result<Watchdog> {
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("orgauth-pg-watchdog")
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        Ok(Watchdog { child: Some(child) })
    }

    /// Kills the watchdog before its pipe closes, so it does nothing.
    fn disarm(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGKILL first: `wait` closes the pipe, which would set it off.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.disarm();
    }
}

/// The uid and gid `initdb` and `postgres` run as when the tests run as root.
#[derive(Debug, Clone, Copy)]
struct Owner {
    uid: u32,
    gid: u32,
}

/// What `initdb` made once per process.
#[derive(Debug)]
struct Installation {
    bin: PathBuf,
    /// Where the directories go (see [`scratch_root`]).
    scratch: PathBuf,
    run_as: Option<Owner>,
    template: PathBuf,
    _template_dir: TempDir,
    _template_watchdog: Watchdog,
}

impl Installation {
    /// Gives a directory to the user the server runs as (when root).
    fn hand_over(&self, dir: &Path) -> io::Result<()> {
        hand_over(dir, self.run_as)
    }

    fn as_owner(&self, command: &mut Command, cwd: &Path) {
        as_owner(command, self.run_as, cwd);
    }
}

fn hand_over(dir: &Path, run_as: Option<Owner>) -> io::Result<()> {
    if let Some(owner) = run_as {
        // The directory stays mode 0700 (tempfile's), now the server's own.
        std::os::unix::fs::chown(dir, Some(owner.uid), Some(owner.gid))?;
    }
    Ok(())
}

fn as_owner(command: &mut Command, run_as: Option<Owner>, cwd: &Path) {
    if let Some(owner) = run_as {
        // std also drops supplementary groups when root sets a uid.
        command.gid(owner.gid).uid(owner.uid);
    }
    // A working directory the server's user can enter.
    command.current_dir(cwd);
}

#[derive(Debug)]
enum Setup {
    Ready(Installation),
    Skip(String),
    Failed(String),
}

static SETUP: OnceLock<Setup> = OnceLock::new();

impl Setup {
    fn new() -> Setup {
        let bin = match find_bin_dir() {
            Ok(bin) => bin,
            Err(reason) => return Setup::Skip(reason),
        };
        let run_as = if running_as_root() {
            match lookup_user(OS_USER) {
                Ok(owner) => Some(owner),
                Err(reason) => return Setup::Skip(reason),
            }
        } else {
            None
        };
        let scratch = scratch_root();
        match make_template(&bin, run_as, &scratch) {
            Ok((template_dir, watchdog)) => Setup::Ready(Installation {
                template: template_dir.path().join("data"),
                bin,
                scratch,
                run_as,
                _template_dir: template_dir,
                _template_watchdog: watchdog,
            }),
            Err(error) => Setup::Failed(error),
        }
    }
}

/// `initdb` into a temporary directory that lives as long as the process.
fn make_template(
    bin: &Path,
    run_as: Option<Owner>,
    scratch: &Path,
) -> Result<(TempDir, Watchdog), String> {
    let dir = tempfile::Builder::new()
        .prefix(&format!("{DIR_PREFIX}template-{}-", std::process::id()))
        .tempdir_in(scratch)
        .map_err(|e| {
            format!(
                "create a temporary directory for initdb in {}: {e}",
                scratch.display()
            )
        })?;
    let watchdog = Watchdog::spawn(TEMPLATE_WATCHDOG, dir.path())
        .map_err(|e| format!("start a watchdog (sh): {e}"))?;
    hand_over(dir.path(), run_as)
        .map_err(|e| format!("chown {} to {OS_USER}: {e}", dir.path().display()))?;
    let mut initdb = pg_command(bin, "initdb");
    initdb
        .arg("-D")
        .arg(dir.path().join("data"))
        .args([
            "-A",
            "trust",
            "-U",
            SUPERUSER,
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ])
        // 1 MB WAL segments: a smaller directory to copy per server.
        .arg("--wal-segsize=1")
        .stdin(Stdio::null());
    as_owner(&mut initdb, run_as, dir.path());
    let output = initdb
        .output()
        .map_err(|e| format!("run {}: {e}", bin.join("initdb").display()))?;
    if !output.status.success() {
        return Err(format!(
            "initdb failed ({}): {}",
            output.status,
            output_text(&output)
        ));
    }
    Ok((dir, watchdog))
}

/// Where the template and the servers' directories go: `ORGAUTH_PG_TMPDIR`
/// when set; else `/dev/shm` when it is a tmpfs with at least 1 GiB free
/// (copying the template to a disk costs about a second on a slow virtual
/// disk, to memory a tenth of that, and createdb gains as much); else the
/// temporary directory (`TMPDIR`, `/tmp`).
fn scratch_root() -> PathBuf {
    if let Some(dir) = std::env::var_os(TMPDIR_ENV)
        && !dir.is_empty()
    {
        return PathBuf::from(dir);
    }
    if shm_is_roomy() {
        return PathBuf::from(SHM);
    }
    std::env::temp_dir()
}

/// `/dev/shm` is a tmpfs with room, by `stat -f` (coreutils; no libc here).
fn shm_is_roomy() -> bool {
    let Ok(output) = Command::new("stat")
        .args(["-f", "-c", "%T %a %S", SHM])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
    else {
        return false;
    };
    let text = String::from_utf8_lossy(&output.stdout);
    let fields: Vec<&str> = text.split_whitespace().collect();
    let number = |i: usize| fields.get(i).and_then(|field| field.parse::<u64>().ok());
    output.status.success()
        && fields.first() == Some(&"tmpfs")
        && number(1)
            .zip(number(2))
            .is_some_and(|(blocks, size)| blocks.saturating_mul(size) >= SHM_MIN_FREE)
}

/// A PostgreSQL binary with no `PG*` variables from the environment (a stray
/// `PGDATA`, `PGOPTIONS` or `PGPORT` must not change what the tests get).
fn pg_command(bin: &Path, program: &str) -> Command {
    let mut command = Command::new(bin.join(program));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PG") {
            command.env_remove(name);
        }
    }
    command
}

fn required() -> bool {
    std::env::var_os(REQUIRE_ENV).is_some_and(|value| !value.is_empty() && value != "0")
}

fn find_bin_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV) {
        let dir = PathBuf::from(dir);
        let missing: Vec<&str> = BINARIES
            .iter()
            .copied()
            .filter(|name| !is_executable(&dir.join(name)))
            .collect();
        if missing.is_empty() {
            return Ok(dir);
        }
        return Err(format!(
            "PostgreSQL binaries not found: {BIN_DIR_ENV}={} lacks {}",
            dir.display(),
            missing.join(", ")
        ));
    }
    let mut candidates = Vec::new();
    if let Ok(output) = Command::new("pg_config")
        .arg("--bindir")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        && output.status.success()
    {
        candidates.push(PathBuf::from(
            String::from_utf8_lossy(&output.stdout).trim(),
        ));
    }
    candidates.extend(debian_bin_dirs());
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path));
    }
    candidates.into_iter().find(|dir| has_binaries(dir)).ok_or_else(|| {
        format!("PostgreSQL binaries not found (install Debian's postgresql package or set {BIN_DIR_ENV})")
    })
}

/// `/usr/lib/postgresql/<major>/bin`, highest major first.
fn debian_bin_dirs() -> Vec<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let major = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((major, entry.path().join("bin")))
        })
        .collect();
    found.sort_by_key(|(major, _)| std::cmp::Reverse(*major));
    found.into_iter().map(|(_, dir)| dir).collect()
}

fn has_binaries(dir: &Path) -> bool {
    BINARIES.iter().all(|name| is_executable(&dir.join(name)))
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// The effective uid is 0: from /proc/self/status, else `id -u`.
fn running_as_root() -> bool {
    if let Ok(status) = fs::read_to_string("/proc/self/status")
        && let Some(line) = status.lines().find(|line| line.starts_with("Uid:"))
    {
        // Uid: real effective saved filesystem
        return line.split_whitespace().nth(2) == Some("0");
    }
    id(&["-u"]).is_ok_and(|uid| uid == 0)
}

fn lookup_user(user: &str) -> Result<Owner, String> {
    let not_found = |e: String| {
        format!(
            "running as root, which initdb refuses, and there is no {user:?} user to run PostgreSQL as ({e}); \
             install Debian's postgresql package (it creates the user) or run the tests as another user"
        )
    };
    let uid = id(&["-u", user]).map_err(not_found)?;
    let gid = id(&["-g", user]).map_err(not_found)?;
    Ok(Owner { uid, gid })
}

fn id(args: &[&str]) -> Result<u32, String> {
    let output = Command::new("id")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("id: {e}"))?;
    if !output.status.success() {
        return Err(format!("id {}: {}", args.join(" "), output_text(&output)));
    }
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .map_err(|e| format!("id {}: {e}", args.join(" ")))
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

fn output_text(output: &Output) -> String {
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    text.trim_end().to_owned()
}
