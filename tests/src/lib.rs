//! Harness for the end-to-end tests: starts real `auth-server` and
//! `org-server` processes on 127.0.0.1 port 0, each with its own SQLite
//! files in a temporary directory (or on PostgreSQL databases the test
//! gives, for the cluster tests), and hands out gRPC clients.
//!
//! The binaries are taken from the cargo target directory next to the test
//! executable (`cargo test --workspace` builds them), or from
//! `ORGAUTH_BIN_DIR`. Each server's log goes to a file in the stack's
//! directory; set `TEST_LOG=1` to have it echoed when the server is dropped.
//!
//! Both servers of a stack read one tokens file the harness writes
//! ([`Tokens`]); the stack's clients call as the admin (org-server) and
//! service (auth-server) identities unless a test asks for another.

pub mod tools;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use orgauth_proto::auth::v1 as authpb;
use orgauth_proto::auth::v1::auth_service_client::AuthServiceClient;
use orgauth_proto::org::v1 as pb;
use orgauth_proto::org::v1::job_service_client::JobServiceClient;
use orgauth_proto::org::v1::org_service_client::OrgServiceClient;
use orgauth_runtime::access::BearerToken;
use orgauth_security::Role;
use orgauth_security::token::issue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// A channel whose calls carry a bearer token.
pub type Authed = InterceptedService<Channel, BearerToken>;

/// The tokens every stack's servers accept, by holder. The org-role tokens
/// cover the orgs the role tests use.
#[derive(Debug, Clone)]
pub struct Tokens {
    /// `ops`, role admin.
    pub admin: String,
    /// `org-server`, role service: what org-server presents to Auth.
    pub service: String,
    /// `acme-bot`, role org, orgs `acme` and `acme-eu`.
    pub acme: String,
    /// `globex-bot`, role org, org `globex`.
    pub globex: String,
    /// `retired`, role admin, expired an hour ago.
    pub expired: String,
}

impl Tokens {
    /// Issues the tokens and writes the tokens file at `path`.
    pub fn write(path: &Path) -> Tokens {
        let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
        let issued = [
            issue("ops", Role::Admin, &[], None),
            issue("org-server", Role::Service, &[], None),
            issue(
                "acme-bot",
                Role::Org,
                &["acme".into(), "acme-eu".into()],
                None,
            ),
            issue("globex-bot", Role::Org, &["globex".into()], None),
            issue("retired", Role::Admin, &[], Some(an_hour_ago)),
        ]
        .map(|token| token.expect("issue a token"));
        let file: String = issued.iter().map(|t| format!("{}\n", t.line)).collect();
        std::fs::write(path, file).expect("write the tokens file");
        let [admin, service, acme, globex, expired] = issued.map(|t| t.secret);
        Tokens {
            admin,
            service,
            acme,
            globex,
            expired,
        }
    }
}

/// `channel` with `secret` as its bearer token.
pub fn authed(channel: Channel, secret: &str) -> Authed {
    InterceptedService::new(
        channel,
        BearerToken::new(secret).expect("token fits in metadata"),
    )
}

/// Where the workspace's binaries are.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("ORGAUTH_BIN_DIR") {
        return PathBuf::from(dir);
    }
    // target/<profile>/deps/<test-exe> -> target/<profile>
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps")
        .to_path_buf()
}

/// The path of one of the workspace's binaries (`org-server`, `auth-server`, `orgctl`).
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} not found: run the tests with `cargo test --workspace` (which builds it) \
         or set ORGAUTH_BIN_DIR",
        path.display()
    );
    path
}

/// A server process. Killed (SIGKILL) when dropped.
pub struct Server {
    pub name: &'static str,
    child: Child,
    pub addr: SocketAddr,
    /// Where `/metrics` is served, when started with `--metrics-listen`.
    pub metrics_addr: Option<SocketAddr>,
    pub log_path: PathBuf,
    args: Vec<String>,
    envs: Vec<(String, String)>,
}

impl Server {
    /// Starts `name` with `args` and waits for its `listening ADDR` line
    /// (and, with `--metrics-listen`, the `metrics ADDR` line after it).
    pub fn spawn(
        name: &'static str,
        args: Vec<String>,
        envs: Vec<(String, String)>,
        log_path: PathBuf,
    ) -> Server {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("open server log");
        let mut child = Command::new(bin(name))
            .args(&args)
            .envs(envs.iter().map(|(k, v)| (k, v)))
            .env_remove("ORG_SERVER_LISTEN")
            .env_remove("AUTH_SERVER_LISTEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| panic!("spawn {name}: {err}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        let metrics_expected = args.iter().any(|a| a == "--metrics-listen");
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            for _ in 0..(1 + usize::from(metrics_expected)) {
                if let Some(Ok(line)) = lines.next() {
                    let _ = tx.send(line);
                }
            }
            // Keep draining so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let line = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "{name} did not report its address; log:\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
        };
        let addr = line
            .strip_prefix("listening ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("{name}: unexpected first line {line:?}"));
        let metrics_addr = metrics_expected.then(|| {
            let line = rx
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("{name} did not report its metrics address"));
            line.strip_prefix("metrics ")
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("{name}: unexpected second line {line:?}"))
        });
        Server {
            name,
            child,
            addr,
            metrics_addr,
            log_path,
            args,
            envs,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub async fn channel(&self) -> Channel {
        connect(&self.endpoint()).await
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// kill -9: no chance to clean up.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits for the process to exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Starts the same binary again with the same flags and environment,
    /// on the same address (so clients can reconnect).
    pub fn restart(&mut self) {
        self.kill9();
        let mut args = self.args.clone();
        if let Some(i) = args.iter().position(|a| a == "--listen") {
            args[i + 1] = self.addr.to_string();
        }
        let next = Server::spawn(self.name, args, self.envs.clone(), self.log_path.clone());
        *self = next;
    }

    /// A graceful restart: SIGTERM, wait up to `timeout` for the process to
    /// exit (panicking, with the log, if it does not), then start the same
    /// binary again with the same flags and environment on the same
    /// address. Returns how the old process exited.
    pub fn restart_gracefully(&mut self, timeout: Duration) -> ExitStatus {
        self.signal("TERM");
        let status = self.wait_exit(timeout).unwrap_or_else(|| {
            panic!(
                "{} did not exit within {timeout:?} of SIGTERM; log:\n{}",
                self.name,
                self.log()
            )
        });
        self.restart();
        status
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::env::var_os("TEST_LOG").is_some() {
            eprintln!("----- {} log -----\n{}", self.name, self.log());
        }
    }
}

/// Connects to `endpoint`, retrying briefly while the server starts.
pub async fn connect(endpoint: &str) -> Channel {
    let endpoint = Endpoint::from_shared(endpoint.to_owned()).expect("endpoint");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match endpoint.connect().await {
            Ok(channel) => return channel,
            Err(err) if Instant::now() < deadline => {
                let _ = err;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(err) => panic!("connect {endpoint:?}: {err}"),
        }
    }
}

/// How to start a stack.
#[derive(Debug, Clone)]
pub struct StackOptions {
    pub workers: usize,
    pub batch_size: usize,
    pub parallelism: usize,
    /// Extra org-server flags.
    pub org_args: Vec<String>,
    /// Extra org-server environment (e.g. RUST_LOG).
    pub org_env: Vec<(String, String)>,
    /// Extra auth-server flags.
    pub auth_args: Vec<String>,
    /// Extra auth-server environment.
    pub auth_env: Vec<(String, String)>,
    /// Point org-server at this Auth endpoint instead of the stack's.
    pub auth_endpoint: Option<String>,
    /// org-server's `--database`; `None`: a SQLite file in the stack's
    /// directory.
    pub org_database: Option<String>,
    /// auth-server's `--database`; `None`: a SQLite file in the stack's
    /// directory.
    pub auth_database: Option<String>,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            workers: 4,
            batch_size: 500,
            parallelism: 4,
            org_args: Vec::new(),
            org_env: Vec::new(),
            auth_args: Vec::new(),
            auth_env: Vec::new(),
            auth_endpoint: None,
            org_database: None,
            auth_database: None,
        }
    }
}

/// An auth-server and an org-server wired together.
pub struct Stack {
    pub org: Server,
    pub auth: Server,
    pub dir: tempfile::TempDir,
    pub tokens: Tokens,
    /// org-server's `--database`, for more replicas on it.
    pub org_database: String,
}

impl Stack {
    pub async fn start() -> Stack {
        Stack::start_with(StackOptions::default()).await
    }

    pub async fn start_with(options: StackOptions) -> Stack {
        let dir = tempfile::tempdir().expect("tempdir");
        let tokens_file = dir.path().join("tokens");
        let tokens = Tokens::write(&tokens_file);
        let org_database = options
            .org_database
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("org.db").display()));
        let mut auth_args = vec![
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--database".into(),
            options
                .auth_database
                .clone()
                .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("auth.db").display())),
            "--tokens-file".into(),
            tokens_file.display().to_string(),
        ];
        auth_args.extend(options.auth_args.iter().cloned());
        let auth = Server::spawn(
            "auth-server",
            auth_args,
            options.auth_env.clone(),
            dir.path().join("auth.log"),
        );
        let auth_endpoint = options
            .auth_endpoint
            .clone()
            .unwrap_or_else(|| auth.endpoint());
        let mut args = vec![
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--database".into(),
            org_database.clone(),
            "--auth-endpoint".into(),
            auth_endpoint,
            "--workers".into(),
            options.workers.to_string(),
            "--batch-size".into(),
            options.batch_size.to_string(),
            "--parallelism".into(),
            options.parallelism.to_string(),
            "--tokens-file".into(),
            tokens_file.display().to_string(),
            // Tests flip orgs far faster than the production default
            // allows; the rate-limit tests turn it back on.
            "--org-updates-per-minute".into(),
            "0".into(),
        ];
        args.extend(options.org_args.iter().cloned());
        let mut env = vec![("ORG_SERVER_AUTH_TOKEN".to_owned(), tokens.service.clone())];
        env.extend(options.org_env.iter().cloned());
        let org = Server::spawn("org-server", args, env, dir.path().join("org.log"));
        Stack {
            org,
            auth,
            dir,
            tokens,
            org_database,
        }
    }

    /// OrgService as the admin.
    pub async fn orgs(&self) -> OrgServiceClient<Authed> {
        self.orgs_as(&self.tokens.admin).await
    }

    /// JobService as the admin.
    pub async fn jobs(&self) -> JobServiceClient<Authed> {
        self.jobs_as(&self.tokens.admin).await
    }

    /// AuthService as the service identity (which may call every RPC).
    pub async fn authz(&self) -> AuthServiceClient<Authed> {
        self.authz_as(&self.tokens.service).await
    }

    pub async fn orgs_as(&self, secret: &str) -> OrgServiceClient<Authed> {
        OrgServiceClient::new(authed(self.org.channel().await, secret))
    }

    pub async fn jobs_as(&self, secret: &str) -> JobServiceClient<Authed> {
        JobServiceClient::new(authed(self.org.channel().await, secret))
    }

    pub async fn authz_as(&self, secret: &str) -> AuthServiceClient<Authed> {
        AuthServiceClient::new(authed(self.auth.channel().await, secret))
    }

    /// Creates an org that allows custom SSO, waits for Auth to mirror the
    /// policy, then adds `members` members and links each in Auth.
    pub async fn seed_linked_org(&self, org_id: &str, members: usize) -> pb::Org {
        let mut orgs = self.orgs().await;
        let created = orgs
            .create_org(new_org(org_id, &format!("Org {org_id}"), true))
            .await
            .expect("create org")
            .into_inner();
        let job = watch_to_end(&mut self.jobs().await, &created.job_id).await;
        assert_eq!(
            job.last().expect("states").state,
            pb::JobState::Succeeded as i32
        );
        let ids: Vec<String> = (0..members).map(member_id).collect();
        let mut authz = self.authz().await;
        for chunk in ids.chunks(1000) {
            orgs.add_members(pb::AddMembersRequest {
                org_id: org_id.into(),
                members: chunk
                    .iter()
                    .map(|id| pb::Member {
                        id: id.clone(),
                        email: format!("{id}@example.com"),
                    })
                    .collect(),
            })
            .await
            .expect("add members");
            authz
                .link_sso(authpb::LinkSsoRequest {
                    org_id: org_id.into(),
                    member_ids: chunk.to_vec(),
                })
                .await
                .expect("link sso");
        }
        self.get_org(org_id).await
    }

    /// Creates an org with no members (custom SSO as `allow` says) and
    /// returns CreateOrg's answer.
    pub async fn create_org(
        &self,
        org_id: &str,
        display_name: &str,
        allow: bool,
    ) -> pb::CreateOrgResponse {
        self.orgs()
            .await
            .create_org(new_org(org_id, display_name, allow))
            .await
            .expect("create org")
            .into_inner()
    }

    /// GetOrg, as the admin.
    pub async fn get_org(&self, org_id: &str) -> pb::Org {
        self.orgs()
            .await
            .get_org(pb::GetOrgRequest {
                org_id: org_id.into(),
            })
            .await
            .expect("get org")
            .into_inner()
            .org
            .expect("org")
    }

    /// CancelJob, as the admin.
    pub async fn cancel_job(&self, job_id: &str) {
        self.jobs()
            .await
            .cancel_job(pb::CancelJobRequest {
                job_id: job_id.into(),
            })
            .await
            .expect("cancel job");
    }

    /// A stack whose org-server retries Auth quickly, up to `max_attempts`
    /// times ([`retry_flags`]), with `org_id` seeded with `members` linked
    /// members, and then Auth killed: the org's next job retries (RUNNING)
    /// until Auth is back or the attempts run out.
    pub async fn with_auth_down(max_attempts: &str, org_id: &str, members: usize) -> Stack {
        let mut stack = Stack::start_with(StackOptions {
            org_args: retry_flags(max_attempts),
            ..Default::default()
        })
        .await;
        stack.seed_linked_org(org_id, members).await;
        stack.auth.kill9();
        stack
    }

    /// Sets the org's `allow_custom_sso` through UpdateOrg and returns the
    /// job it enqueued (empty when the setting did not change).
    pub async fn set_allow(&self, org_id: &str, allow: bool) -> String {
        self.orgs()
            .await
            .update_org(set_allow_request(org_id, allow))
            .await
            .expect("update org")
            .into_inner()
            .job_id
    }

    /// How many SSO connections Auth holds for the org.
    pub async fn connections(&self, org_id: &str) -> i64 {
        self.authz()
            .await
            .list_sso_connections(authpb::ListSsoConnectionsRequest {
                org_id: org_id.into(),
                page_size: 1,
                page_token: String::new(),
            })
            .await
            .expect("list connections")
            .into_inner()
            .total_size
    }
}

/// CreateOrg of an org with no members.
pub fn new_org(org_id: &str, display_name: &str, allow: bool) -> pb::CreateOrgRequest {
    pb::CreateOrgRequest {
        org: Some(pb::Org {
            id: org_id.into(),
            display_name: display_name.into(),
            allow_custom_sso: allow,
            ..Default::default()
        }),
        request_id: String::new(),
    }
}

/// org-server flags for retrying Auth quickly (50 ms, backing off to
/// 500 ms), up to `max_attempts` times.
pub fn retry_flags(max_attempts: &str) -> Vec<String> {
    [
        "--retry-initial-backoff",
        "50ms",
        "--retry-max-backoff",
        "500ms",
        "--retry-max-attempts",
        max_attempts,
    ]
    .iter()
    .map(|flag| (*flag).to_owned())
    .collect()
}

pub fn member_id(i: usize) -> String {
    format!("m{i:07}")
}

/// UpdateOrg setting allow_custom_sso.
pub fn set_allow_request(org_id: &str, allow: bool) -> pb::UpdateOrgRequest {
    pb::UpdateOrgRequest {
        org: Some(pb::Org {
            id: org_id.into(),
            allow_custom_sso: allow,
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["allow_custom_sso".into()],
        }),
        request_id: String::new(),
    }
}

/// A WatchJob stream of the states newer than `since_version`.
pub async fn watch_from(
    jobs: &mut JobServiceClient<Authed>,
    job_id: &str,
    since_version: i64,
) -> tonic::Streaming<pb::WatchJobResponse> {
    jobs.watch_job(pb::WatchJobRequest {
        job_id: job_id.into(),
        since_version,
    })
    .await
    .expect("watch job")
    .into_inner()
}

/// Every state WatchJob sends until the stream ends (bounded: 5 minutes).
pub async fn watch_to_end(jobs: &mut JobServiceClient<Authed>, job_id: &str) -> Vec<pb::Job> {
    watch_to_end_from(jobs, job_id, 0).await
}

/// Every state newer than `since_version` that WatchJob sends until the
/// stream ends (bounded: 5 minutes).
pub async fn watch_to_end_from(
    jobs: &mut JobServiceClient<Authed>,
    job_id: &str,
    since_version: i64,
) -> Vec<pb::Job> {
    let mut stream = watch_from(jobs, job_id, since_version).await;
    let mut states = Vec::new();
    let collect = async {
        while let Some(message) = stream.next().await {
            let job = message.expect("watch stream item").job.expect("job");
            states.push(job);
        }
    };
    tokio::time::timeout(Duration::from_secs(300), collect)
        .await
        .expect("job did not end within 5 minutes");
    states
}

/// Asserts that progress never went backwards across watched states.
pub fn assert_monotonic(states: &[pb::Job]) {
    for pair in states.windows(2) {
        assert!(
            pair[0].version < pair[1].version,
            "versions must increase: {} then {}",
            pair[0].version,
            pair[1].version
        );
        assert!(
            pair[0].processed_members <= pair[1].processed_members,
            "processed_members went backwards: {} then {}",
            pair[0].processed_members,
            pair[1].processed_members
        );
    }
}

// ---------------------------------------------------------------------------
// Helpers for the fault-tolerance tests (crash.rs, auth_outage.rs,
// shutdown.rs, supersede.rs).
// ---------------------------------------------------------------------------

/// A small deterministic PRNG (xorshift64*): fault-injection tests pick their
/// kill points with it, print the seed, and take `FAULTS_SEED` to replay a
/// failing run.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> XorShift {
        // The state must never be zero.
        XorShift(seed ^ 0x9E37_79B9_7F4A_7C15 | 1)
    }

    /// `FAULTS_SEED` if set, else one derived from the clock; printed so a
    /// failing run can be replayed.
    pub fn from_env_or_clock(test: &str) -> XorShift {
        let seed = std::env::var("FAULTS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(42)
            });
        eprintln!("{test}: FAULTS_SEED={seed}");
        XorShift::new(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform duration in `[lo_ms, hi_ms)`.
    pub fn millis(&mut self, lo_ms: u64, hi_ms: u64) -> Duration {
        Duration::from_millis(lo_ms + self.below(hi_ms.saturating_sub(lo_ms).max(1)))
    }

    pub fn coin(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }
}

/// Polls `probe` every 20 ms until it returns `Some`, for at most `timeout`;
/// panics naming `what` (and the last probe's description) otherwise.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// GetJob.
pub async fn get_job(jobs: &mut JobServiceClient<Authed>, job_id: &str) -> pb::Job {
    jobs.get_job(pb::GetJobRequest {
        job_id: job_id.into(),
    })
    .await
    .unwrap_or_else(|status| panic!("get job {job_id}: {status:?}"))
    .into_inner()
    .job
    .expect("job")
}

/// Every job of an org, oldest (first created) first.
pub async fn list_org_jobs(jobs: &mut JobServiceClient<Authed>, org_id: &str) -> Vec<pb::Job> {
    let mut all = list_jobs(jobs, org_id).await;
    all.reverse();
    all
}

/// Every job of an org (of every org when `org_id` is empty) as ListJobs
/// gives them: newest first.
pub async fn list_jobs(jobs: &mut JobServiceClient<Authed>, org_id: &str) -> Vec<pb::Job> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    for _ in 0..1000 {
        let page = jobs
            .list_jobs(pb::ListJobsRequest {
                org_id: org_id.into(),
                page_size: 1000,
                page_token: page_token.clone(),
                ..Default::default()
            })
            .await
            .expect("list jobs")
            .into_inner();
        all.extend(page.jobs);
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
    panic!("more than 1000 pages of jobs for {org_id}");
}

/// The name of a job state, for messages.
pub fn state_name(state: i32) -> &'static str {
    pb::JobState::try_from(state)
        .map(|s| s.as_str_name())
        .unwrap_or("?")
}

impl Stack {
    /// Auth's custom-SSO policy for the org.
    pub async fn sso_policy(&self, org_id: &str) -> bool {
        self.authz()
            .await
            .get_org_sso_policy(authpb::GetOrgSsoPolicyRequest {
                org_id: org_id.into(),
            })
            .await
            .expect("get policy")
            .into_inner()
            .policy
            .expect("policy")
            .allow_custom_sso
    }

    /// A client-library client of org-server whose watches keep trying to
    /// resume for up to `retry_budget` without progress.
    pub async fn client(&self, retry_budget: Duration) -> orgauth_client::OrgClient {
        let options = orgauth_client::ConnectOptions {
            token: Some(self.tokens.admin.clone()),
            ..Default::default()
        };
        orgauth_client::OrgClient::connect_with(&self.org.endpoint(), &options)
            .await
            .expect("connect client")
            .with_watch_options(orgauth_client::WatchOptions {
                retry_budget,
                ..Default::default()
            })
    }
}

/// A client-library `watch_job` stream consumed in the background: every
/// state it yields is recorded, and the test can wait for a condition on
/// the latest one.
pub struct Recorder {
    pub job_id: String,
    latest: tokio::sync::watch::Receiver<Option<pb::Job>>,
    task: tokio::task::JoinHandle<(Vec<pb::Job>, Option<orgauth_client::ClientError>)>,
}

impl Recorder {
    pub fn start(client: &orgauth_client::OrgClient, job_id: &str) -> Recorder {
        let mut stream = client.watch_job(job_id.to_owned());
        let (tx, latest) = tokio::sync::watch::channel(None);
        let task = tokio::spawn(async move {
            let mut states = Vec::new();
            while let Some(item) = stream.next().await {
                match item {
                    Ok(job) => {
                        states.push(job.clone());
                        let _ = tx.send(Some(job));
                    }
                    Err(err) => return (states, Some(err)),
                }
            }
            (states, None)
        });
        Recorder {
            job_id: job_id.to_owned(),
            latest,
            task,
        }
    }

    /// Waits (bounded) until the latest state yielded satisfies `pred`, and
    /// returns it.
    pub async fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&pb::Job) -> bool,
    ) -> pb::Job {
        let waited = tokio::time::timeout(
            timeout,
            self.latest
                .wait_for(|job| job.as_ref().is_some_and(&mut pred)),
        )
        .await;
        let waited = waited.map(|result| result.map(|job| job.clone()));
        match waited {
            Ok(Ok(job)) => job.expect("checked above"),
            Ok(Err(_)) => panic!(
                "job {}: the watch ended before {what}; last state {:?}",
                self.job_id,
                self.latest.borrow().clone()
            ),
            Err(_) => panic!(
                "job {}: timed out after {timeout:?} waiting for {what}; last state {:?}",
                self.job_id,
                self.latest.borrow().clone()
            ),
        }
    }

    /// Waits (bounded) for the stream to end; returns every state it
    /// yielded. Panics if it ended with an error.
    pub async fn finish(self, timeout: Duration) -> Vec<pb::Job> {
        let (states, error) = tokio::time::timeout(timeout, self.task)
            .await
            .unwrap_or_else(|_| panic!("job {}: watch did not end within {timeout:?}", self.job_id))
            .expect("watch task");
        if let Some(error) = error {
            panic!(
                "job {}: watch ended with an error after {} states: {error}",
                self.job_id,
                states.len()
            );
        }
        states
    }
}

// ---------------------------------------------------------------------------
// Helpers for the security tests (security.rs, limits.rs, tls.rs).
// ---------------------------------------------------------------------------

/// The google.rpc.ErrorInfo reason of a status ("" when it carries none).
pub fn error_reason(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
        .unwrap_or_default()
}

/// The google.rpc.ErrorInfo domain of a status ("" when it carries none).
pub fn error_domain(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .error_info()
        .map(|info| info.domain.clone())
        .unwrap_or_default()
}

/// The fields the status's google.rpc.BadRequest names, in order.
pub fn violated_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .bad_request()
        .map(|bad| {
            bad.field_violations
                .iter()
                .map(|v| v.field.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// The google.rpc.RetryInfo delay of a status, if it carries one.
pub fn retry_delay(status: &tonic::Status) -> Option<Duration> {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .retry_info()
        .and_then(|info| info.retry_delay)
}

impl Stack {
    /// Another org-server on this stack's database, tokens file and Auth,
    /// with only `args` besides those (so every other flag has its
    /// production default): for tests of flags the harness already sets.
    pub fn spawn_org_server(&self, log_name: &str, args: &[&str]) -> Server {
        let mut all: Vec<String> = vec![
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--database".into(),
            self.org_database.clone(),
            "--auth-endpoint".into(),
            self.auth.endpoint(),
            "--tokens-file".into(),
            self.dir.path().join("tokens").display().to_string(),
        ];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        Server::spawn(
            "org-server",
            all,
            vec![(
                "ORG_SERVER_AUTH_TOKEN".to_owned(),
                self.tokens.service.clone(),
            )],
            self.dir.path().join(log_name),
        )
    }
}

// ---------------------------------------------------------------------------
// Helpers for the cluster tests (cluster.rs): several org-server replicas on
// one PostgreSQL database.
// ---------------------------------------------------------------------------

impl Stack {
    /// Another org-server replica with the same flags and environment as the
    /// stack's own (database, Auth, tokens, workers, batch size, ...) but on
    /// a fresh port, with `overrides` (flag, value) replacing the value of a
    /// flag it already has or added otherwise. Logs to `log_name` in the
    /// stack's directory.
    pub fn spawn_org_replica(&self, log_name: &str, overrides: &[(&str, &str)]) -> Server {
        let mut args = self.org.args.clone();
        let mut set = |flag: &str, value: &str| match args.iter().position(|a| a == flag) {
            Some(i) if i + 1 < args.len() => value.clone_into(&mut args[i + 1]),
            _ => args.extend([flag.to_owned(), value.to_owned()]),
        };
        set("--listen", "127.0.0.1:0");
        for (flag, value) in overrides {
            set(flag, value);
        }
        Server::spawn(
            "org-server",
            args,
            self.org.envs.clone(),
            self.dir.path().join(log_name),
        )
    }

    /// OrgService of `server` (one of this stack's org-server replicas), as
    /// the admin.
    pub async fn orgs_of(&self, server: &Server) -> OrgServiceClient<Authed> {
        OrgServiceClient::new(authed(server.channel().await, &self.tokens.admin))
    }

    /// JobService of `server` (one of this stack's org-server replicas), as
    /// the admin.
    pub async fn jobs_of(&self, server: &Server) -> JobServiceClient<Authed> {
        JobServiceClient::new(authed(server.channel().await, &self.tokens.admin))
    }
}

/// The canonical name of a gRPC code (`PERMISSION_DENIED`).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// A call's outcome in one line: `OK`, `CODE REASON`, or
/// `INVALID_ARGUMENT INVALID_FIELD field`, for tables of expected results.
pub fn outcome<T>(result: &Result<T, tonic::Status>) -> String {
    match result {
        Ok(_) => "OK".to_owned(),
        Err(status) => {
            let mut line = code_name(status.code()).to_owned();
            let reason = error_reason(status);
            if !reason.is_empty() {
                line.push(' ');
                line.push_str(&reason);
            }
            for field in violated_fields(status) {
                line.push(' ');
                line.push_str(&field);
            }
            line
        }
    }
}
