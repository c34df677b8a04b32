//! The real servers as child processes: `auth-server` and `org-server` from
//! the directory of this executable (`target/release`), each on
//! 127.0.0.1 port 0 with its own temporary directory for its SQLite files
//! (or, with [`Backend::Postgres`], its tokens only: the data is in a
//! PostgreSQL database) and its log. Every process is killed when its handle
//! is dropped, so a failing or panicking run leaves none behind.
//!
//! On PostgreSQL a second org-server can run on the same database
//! ([`Stack::start_replica`]), as replicas of one deployment do.
//!
//! Both servers require a bearer token on every call. The stack issues its
//! own tokens at start and writes their hashes into each server's tokens
//! file: an `admin` token for the benchmark's calls to org-server, and a
//! `service` token that org-server presents to Auth and that the benchmark
//! also uses for its own calls to Auth (SetOrgSsoPolicy and BatchUnlinkSso,
//! which the naive baseline makes, accept only that role).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use orgauth_runtime::access::BearerToken;
use orgauth_security::Role;
use orgauth_security::token::issue;
use tempfile::TempDir;

use crate::error::{Result, fail};
use crate::rpc::Target;

/// How long a server may take to print `listening ADDR`.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a graceful stop (SIGTERM) may take before the process is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(25);

/// org-server's `--max-watches-per-caller` and `--max-watches`: room for the
/// fan-out's 10,000 watchers, all one caller, plus its lone baseline
/// watcher and the job follows of the other measurements.
const MAX_WATCHES: u32 = 20_000;

/// org-server's `--max-streams-per-connection`: the fan-out spreads its
/// 10,000 watchers over 8 connections, 1,250 on each.
const MAX_STREAMS_PER_CONNECTION: u32 = 4_096;

/// One server process; killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct ServerProcess {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
    log_path: PathBuf,
}

impl ServerProcess {
    /// Starts `bin` with `args`, its stderr appended to `log_path`, and
    /// waits for its first stdout line, `listening ADDR`.
    pub fn spawn(name: &'static str, bin: &Path, args: &[String], log_path: &Path) -> Result<Self> {
        let log = File::options().create(true).append(true).open(log_path)?;
        let mut command = Command::new(bin);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            // The servers run at their default log level (info), as operators
            // run them, whatever this shell has set.
            .env_remove("RUST_LOG");
        // A flag of the environment (ORG_SERVER_WORKERS=...) must not change
        // what is measured behind the benchmark's back.
        for (key, _) in std::env::vars_os() {
            let key_str = key.to_string_lossy();
            if key_str.starts_with("ORG_SERVER_") || key_str.starts_with("AUTH_SERVER_") {
                command.env_remove(&key);
            }
        }
        let mut child = command
            .spawn()
            .map_err(|err| format!("cannot start {}: {err}", bin.display()))?;
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            let _ = child.wait();
            return fail(format!("{name}: no stdout pipe"));
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so the server never blocks on a full pipe; ends
            // when the process exits.
            for _ in lines {}
        });
        let mut server = ServerProcess {
            name,
            child,
            // Replaced below once the server reports its address.
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log_path: log_path.to_path_buf(),
        };
        let line = match rx.recv_timeout(START_TIMEOUT) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // Its stdout closed: it is exiting (bounded wait).
                let deadline = Instant::now() + Duration::from_secs(2);
                let status = loop {
                    match server.child.try_wait() {
                        Ok(Some(status)) => break status.to_string(),
                        Ok(None) if Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        Ok(None) => break "still running, stdout closed".to_owned(),
                        Err(err) => break err.to_string(),
                    }
                };
                return fail(format!(
                    "{name} exited ({status}) before printing `listening ADDR`; log tail:\n{}",
                    server.log_tail()
                ));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return fail(format!(
                    "{name} did not print `listening ADDR` within {START_TIMEOUT:?}; log tail:\n{}",
                    server.log_tail()
                ));
            }
        };
        let Some(addr) = line
            .strip_prefix("listening ")
            .and_then(|addr| addr.trim().parse::<SocketAddr>().ok())
        else {
            return fail(format!("{name}: unexpected first line {line:?}"));
        };
        if !addr.ip().is_loopback() {
            return fail(format!("{name} listens on {addr}, not on loopback"));
        }
        server.addr = addr;
        Ok(server)
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last few lines of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Stops the server gracefully (SIGTERM: running batches checkpoint and
    /// leases are handed back) and waits for it to exit; kills it if it
    /// takes longer than [`STOP_TIMEOUT`].
    pub fn stop(mut self) -> Result<()> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        if !status.success() {
            return fail(format!("kill -TERM {} ({}) failed", self.pid(), self.name));
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        fail(format!(
            "{} did not stop within {STOP_TIMEOUT:?}",
            self.name
        ))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How org-server is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrgOptions {
    /// `--workers`: 0 = API only, jobs are enqueued and never run.
    pub workers: u32,
    /// `--batch-size`.
    pub batch_size: u32,
    /// `--parallelism`.
    pub parallelism: u32,
}

impl Default for OrgOptions {
    /// org-server's own defaults.
    fn default() -> Self {
        OrgOptions {
            workers: 4,
            batch_size: 500,
            parallelism: 4,
        }
    }
}

/// Where both servers keep their data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in each server's temporary directory.
    Sqlite,
    /// PostgreSQL: org-server's and auth-server's own databases (URLs
    /// without a password, on loopback).
    Postgres {
        /// org-server's `--database`.
        org_url: String,
        /// auth-server's `--database`.
        auth_url: String,
    },
}

/// PostgreSQL pool flags both servers get on [`Backend::Postgres`]: their
/// defaults, spelled out so that a run's command lines say what was
/// measured.
const PG_POOL_FLAGS: [&str; 4] = ["--db-max-connections", "8", "--db-statement-timeout", "30s"];

/// Both servers, each with its own temporary directory. org-server can be
/// restarted with other flags on the same database.
#[derive(Debug)]
pub struct Stack {
    // Declared before the directories: processes are killed before their
    // files are removed.
    org: Option<ServerProcess>,
    /// A second org-server on the same (PostgreSQL) database.
    replica: Option<ServerProcess>,
    auth: ServerProcess,
    /// The benchmark's token for org-server (role admin).
    admin: BearerToken,
    /// org-server's and the benchmark's token for Auth (role service).
    service: BearerToken,
    bin_dir: PathBuf,
    backend: Backend,
    org_dir: TempDir,
    _auth_dir: TempDir,
}

impl Stack {
    /// Starts auth-server, then org-server pointed at it, both on SQLite.
    pub fn start(bin_dir: &Path, org_options: OrgOptions) -> Result<Self> {
        Self::start_on(bin_dir, Backend::Sqlite, org_options)
    }

    /// Starts auth-server, then org-server pointed at it, on `backend`.
    pub fn start_on(bin_dir: &Path, backend: Backend, org_options: OrgOptions) -> Result<Self> {
        let auth_dir = tempfile::Builder::new()
            .prefix("orgauth-bench-auth-")
            .tempdir()?;
        let org_dir = tempfile::Builder::new()
            .prefix("orgauth-bench-org-")
            .tempdir()?;
        // Each server's tokens file lists only whom it must accept; the
        // secrets stay in this process and in org-server's token file (the
        // temporary directories are private to this user).
        let admin = issue("bench", Role::Admin, &[], None)?;
        let service = issue("org-server", Role::Service, &[], None)?;
        std::fs::write(
            auth_dir.path().join("tokens"),
            format!("{}\n", service.line),
        )?;
        std::fs::write(org_dir.path().join("tokens"), format!("{}\n", admin.line))?;
        std::fs::write(org_dir.path().join("auth-token"), &service.secret)?;
        let mut auth_args = vec![
            "--listen".to_owned(),
            "127.0.0.1:0".to_owned(),
            "--database".to_owned(),
            match &backend {
                Backend::Sqlite => {
                    format!("sqlite://{}", auth_dir.path().join("auth.db").display())
                }
                Backend::Postgres { auth_url, .. } => auth_url.clone(),
            },
            "--tokens-file".to_owned(),
            auth_dir.path().join("tokens").display().to_string(),
        ];
        if matches!(backend, Backend::Postgres { .. }) {
            auth_args.extend(PG_POOL_FLAGS.map(str::to_owned));
        }
        let auth = ServerProcess::spawn(
            "auth-server",
            &bin_dir.join("auth-server"),
            &auth_args,
            &auth_dir.path().join("auth-server.log"),
        )?;
        let mut stack = Stack {
            org: None,
            replica: None,
            auth,
            admin: BearerToken::new(&admin.secret)?,
            service: BearerToken::new(&service.secret)?,
            bin_dir: bin_dir.to_path_buf(),
            backend,
            org_dir,
            _auth_dir: auth_dir,
        };
        stack.restart_org(org_options)?;
        Ok(stack)
    }

    /// Stops org-server (if running) gracefully and starts it again with
    /// `options`, on the same database.
    pub fn restart_org(&mut self, options: OrgOptions) -> Result<()> {
        if let Some(old) = self.org.take() {
            old.stop()?;
        }
        let org = ServerProcess::spawn(
            "org-server",
            &self.bin_dir.join("org-server"),
            &self.org_args(options),
            &self.org_dir.path().join("org-server.log"),
        )?;
        self.org = Some(org);
        Ok(())
    }

    /// Starts a second org-server ("replica B") with `options` on the same
    /// PostgreSQL database as the first, or restarts it. Fails on SQLite,
    /// whose file serves one process.
    pub fn start_replica(&mut self, options: OrgOptions) -> Result<()> {
        if self.backend == Backend::Sqlite {
            return fail("a second org-server replica needs the PostgreSQL backend");
        }
        self.stop_replica()?;
        let replica = ServerProcess::spawn(
            "org-server (replica B)",
            &self.bin_dir.join("org-server"),
            &self.org_args(options),
            &self.org_dir.path().join("org-server-b.log"),
        )?;
        self.replica = Some(replica);
        Ok(())
    }

    /// Stops replica B gracefully, if it runs.
    pub fn stop_replica(&mut self) -> Result<()> {
        match self.replica.take() {
            Some(replica) => replica.stop(),
            None => Ok(()),
        }
    }

    /// org-server's command line with `options`.
    fn org_args(&self, options: OrgOptions) -> Vec<String> {
        let dir = self.org_dir.path();
        let mut args = vec![
            "--listen".to_owned(),
            "127.0.0.1:0".to_owned(),
            "--database".to_owned(),
            match &self.backend {
                Backend::Sqlite => format!("sqlite://{}", dir.join("org.db").display()),
                Backend::Postgres { org_url, .. } => org_url.clone(),
            },
            "--tokens-file".to_owned(),
            dir.join("tokens").display().to_string(),
            "--auth-endpoint".to_owned(),
            format!("http://{}", self.auth.addr()),
            "--auth-token-file".to_owned(),
            dir.join("auth-token").display().to_string(),
            "--workers".to_owned(),
            options.workers.to_string(),
            "--batch-size".to_owned(),
            options.batch_size.to_string(),
            "--parallelism".to_owned(),
            options.parallelism.to_string(),
            // Production limits the measurements would hit, lifted here:
            // measurements 1, 2 and 5 flip one org hundreds of times a
            // second, and the per-org UpdateOrg rate limit (10 a minute)
            // would refuse all but the first few. 0 turns it off.
            "--org-updates-per-minute".to_owned(),
            "0".to_owned(),
            // The fan-out opens 10,000 WatchJob streams as one caller: the
            // defaults allow 1,000 per caller and 10,000 per server.
            "--max-watches-per-caller".to_owned(),
            MAX_WATCHES.to_string(),
            "--max-watches".to_owned(),
            MAX_WATCHES.to_string(),
            // 1,250 of those streams on each of its 8 connections: beyond
            // the default 1,024 the client would queue the rest, and they
            // would never attach.
            "--max-streams-per-connection".to_owned(),
            MAX_STREAMS_PER_CONNECTION.to_string(),
            // --max-inflight-per-connection keeps its default (256 handlers
            // at once per connection, load-shed beyond): no measurement
            // comes near it. The throughput clients make one call at a time
            // on a connection each, seeding 4, and the fan-out opens at most
            // 256 watches at once over all its 8 connections (a stream holds
            // its slot only until its handler returns).
        ];
        if matches!(self.backend, Backend::Postgres { .. }) {
            args.extend(PG_POOL_FLAGS.map(str::to_owned));
        }
        args
    }

    /// org-server, called with the benchmark's admin token.
    pub fn org(&self) -> Result<Target> {
        match &self.org {
            Some(org) => Ok(Target {
                addr: org.addr(),
                token: self.admin.clone(),
            }),
            None => fail("org-server is not running"),
        }
    }

    /// Replica B, called with the benchmark's admin token.
    pub fn replica(&self) -> Result<Target> {
        match &self.replica {
            Some(replica) => Ok(Target {
                addr: replica.addr(),
                token: self.admin.clone(),
            }),
            None => fail("replica B is not running"),
        }
    }

    /// Replica B's process id.
    pub fn replica_pid(&self) -> Option<u32> {
        self.replica.as_ref().map(ServerProcess::pid)
    }

    /// org-server's process id (for profiling).
    pub fn org_pid(&self) -> Option<u32> {
        self.org.as_ref().map(ServerProcess::pid)
    }

    /// auth-server, called with the service token (as org-server calls it).
    pub fn auth(&self) -> Target {
        Target {
            addr: self.auth.addr(),
            token: self.service.clone(),
        }
    }

    /// auth-server's process id (for profiling).
    pub fn auth_pid(&self) -> u32 {
        self.auth.pid()
    }

    /// The tails of both servers' logs, for error messages.
    pub fn log_tails(&self) -> String {
        let org = self
            .org
            .as_ref()
            .map(ServerProcess::log_tail)
            .unwrap_or_default();
        let replica = self
            .replica
            .as_ref()
            .map(|replica| {
                format!(
                    "--- org-server replica B log tail ---\n{}\n",
                    replica.log_tail()
                )
            })
            .unwrap_or_default();
        format!(
            "--- org-server log tail ---\n{org}\n{replica}--- auth-server log tail ---\n{}",
            self.auth.log_tail()
        )
    }
}
