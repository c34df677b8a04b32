//! `orgctl job list --watch` against a fake org-server where jobs start
//! faster than the view has rows: the view watches only the jobs it shows,
//! closes the WatchJob stream of each job it drops, never watches a job
//! twice, and never puts a dropped job back on the board.

// Test helpers outside #[test] functions are not covered by clippy.toml's
// allow-unwrap-in-tests; a panic is the right failure here too.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use orgauth_client::org::v1 as pb;
use orgauth_client::org::v1::job_service_server::{JobService, JobServiceServer};
use orgauth_client::pb::prost_types::Timestamp;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

/// The view's `--page-size`.
const ROWS: usize = 4;
/// New RUNNING jobs at each busy listing: every one pushes an older
/// job out of the view.
const NEW_PER_ROUND: usize = 4;
/// Listings that start jobs: 40 jobs in all, more than the view's cap of
/// 32 watches, so a view that leaked the watches of dropped jobs would
/// exceed it.
const BUSY_ROUNDS: usize = 10;
/// Listings after those, with nothing new: the view has settled.
const QUIET_ROUNDS: usize = 2;

/// What the fake knows and has seen.
#[derive(Default)]
struct State {
    /// Every job, oldest first.
    jobs: Vec<pb::Job>,
    lists: usize,
    /// The WatchJob streams open, per job.
    open: HashMap<String, usize>,
    open_total: usize,
    /// The most streams ever open at once.
    peak: usize,
    /// Jobs that had two streams open at once.
    doubled: Vec<String>,
    /// The streams open at each quiet listing.
    settled: Vec<usize>,
}

impl State {
    fn job(&self, job_id: &str) -> Option<&pb::Job> {
        self.jobs.iter().find(|job| job.id == job_id)
    }

    /// One listing: the jobs move on (and new ones start, or all end).
    fn next_round(&mut self) {
        self.lists += 1;
        if self.lists <= BUSY_ROUNDS {
            for _ in 0..NEW_PER_ROUND {
                let n = i64::try_from(self.jobs.len()).unwrap();
                let mut job = pb::Job {
                    id: format!("job-{n:03}"),
                    org_id: "acme".into(),
                    total_members: 1_000,
                    version: 1,
                    create_time: Some(Timestamp {
                        seconds: 1_700_000_000 + n,
                        nanos: 0,
                    }),
                    ..pb::Job::default()
                };
                job.set_state(pb::JobState::Running);
                self.jobs.push(job);
            }
        } else if self.lists <= BUSY_ROUNDS + QUIET_ROUNDS {
            self.settled.push(self.open_total);
        }
        let finish = self.lists > BUSY_ROUNDS + QUIET_ROUNDS;
        for job in &mut self.jobs {
            if job.state() == pb::JobState::Running {
                job.version += 1;
                job.processed_members += 10;
                if finish {
                    job.set_state(pb::JobState::Succeeded);
                }
            }
        }
    }
}

#[derive(Clone)]
struct Churn(Arc<Mutex<State>>);

/// Held by each open WatchJob stream; counts it closed when the server
/// drops the stream (the client went away, or the job ended).
struct OpenStream {
    state: Arc<Mutex<State>>,
    job_id: String,
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        let mut state = self.state.lock().unwrap();
        state.open_total -= 1;
        *state.open.get_mut(&self.job_id).unwrap() -= 1;
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchJobResponse, Status>> + Send>>;

#[tonic::async_trait]
impl JobService for Churn {
    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::GetJobResponse>, Status> {
        let job_id = request.into_inner().job_id;
        let job = self.0.lock().unwrap().job(&job_id).cloned();
        match job {
            Some(job) => Ok(Response::new(pb::GetJobResponse { job: Some(job) })),
            None => Err(Status::not_found(job_id)),
        }
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let page_size = usize::try_from(request.into_inner().page_size).unwrap();
        let mut state = self.0.lock().unwrap();
        state.next_round();
        let jobs = state.jobs.iter().rev().take(page_size).cloned().collect();
        Ok(Response::new(pb::ListJobsResponse {
            jobs,
            next_page_token: String::new(),
        }))
    }

    async fn cancel_job(
        &self,
        _: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::CancelJobResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    type WatchJobStream = WatchStream;

    /// Sends each new version of the job until it ends.
    async fn watch_job(
        &self,
        request: Request<pb::WatchJobRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let pb::WatchJobRequest {
            job_id,
            since_version,
        } = request.into_inner();
        let open = {
            let mut state = self.0.lock().unwrap();
            if state.job(&job_id).is_none() {
                return Err(Status::not_found(job_id));
            }
            let streams = state.open.entry(job_id.clone()).or_default();
            *streams += 1;
            if *streams > 1 {
                state.doubled.push(job_id.clone());
            }
            state.open_total += 1;
            state.peak = state.peak.max(state.open_total);
            OpenStream {
                state: self.0.clone(),
                job_id,
            }
        };
        let stream = futures::stream::unfold(
            (open, since_version, false),
            |(open, mut sent, ended)| async move {
                if ended {
                    return None;
                }
                loop {
                    let job = open.state.lock().unwrap().job(&open.job_id).cloned()?;
                    if job.version > sent {
                        sent = job.version;
                        let ended = job.state() != pb::JobState::Running;
                        let item = Ok(pb::WatchJobResponse { job: Some(job) });
                        return Some((item, (open, sent, ended)));
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
        );
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_job_failures(
        &self,
        _: Request<pb::ListJobFailuresRequest>,
    ) -> Result<Response<pb::ListJobFailuresResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_live_view_closes_the_watch_of_every_job_it_drops() {
    let state = Arc::new(Mutex::new(State::default()));
    let (secret, authenticator) = support::ops_token();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = listener.local_addr().unwrap().to_string();
    let service = JobServiceServer::with_interceptor(Churn(state.clone()), authenticator);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );

    let dir = tempfile::tempdir().unwrap();
    let stdout_path = dir.path().join("stdout");
    let stderr_path = dir.path().join("stderr");
    let rows = ROWS.to_string();
    let mut orgctl = Command::new(env!("CARGO_BIN_EXE_orgctl"))
        .env_clear()
        .env("XDG_CONFIG_HOME", "/nonexistent/orgctl-tests")
        .env("ORGCTL_TOKEN", &secret)
        .args(["--endpoint", &endpoint, "--output", "json"])
        .args([
            "job",
            "list",
            "--watch",
            "--until-idle",
            "--interval",
            "500ms",
        ])
        .args(["--page-size", &rows])
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut waited = Duration::ZERO;
    let status = loop {
        if let Some(status) = orgctl.try_wait().unwrap() {
            break status;
        }
        if waited > Duration::from_secs(60) {
            let _ = orgctl.kill();
            let _ = orgctl.wait();
            panic!(
                "orgctl did not exit once idle: {}",
                std::fs::read_to_string(&stderr_path).unwrap()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += Duration::from_millis(50);
    };
    let stdout = std::fs::read_to_string(&stdout_path).unwrap();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(status.success(), "{status:?}\n{stderr}\n{stdout}");

    {
        let state = state.lock().unwrap();
        assert!(state.lists > BUSY_ROUNDS + QUIET_ROUNDS, "{}", state.lists);
        assert!(
            state.doubled.is_empty(),
            "jobs watched twice at once: {:?}",
            state.doubled
        );
        // Once the jobs stop coming, one stream per row is left.
        assert_eq!(
            state.settled, [ROWS; QUIET_ROUNDS],
            "streams open when settled"
        );
        // While they come, each listing drops as many jobs as it adds: their
        // streams may still be closing when the new ones open, but never
        // more than one listing's worth.
        assert!(
            state.peak <= ROWS + NEW_PER_ROUND,
            "{} streams open at once (view cap 32, {} jobs)",
            state.peak,
            state.jobs.len()
        );
    }

    // Only the jobs in view were seen to end: no update of a dropped job
    // (its watch stopped) brought it back.
    let mut ended: Vec<String> = stdout
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|job| job["state"] == "SUCCEEDED")
        .map(|job| job["id"].as_str().unwrap().to_owned())
        .collect();
    ended.sort();
    let newest: Vec<String> = (BUSY_ROUNDS * NEW_PER_ROUND - ROWS..BUSY_ROUNDS * NEW_PER_ROUND)
        .map(|n| format!("job-{n:03}"))
        .collect();
    assert_eq!(ended, newest, "{stdout}");

    // The view is gone, and with it every stream.
    let mut waited = Duration::ZERO;
    while state.lock().unwrap().open_total > 0 {
        assert!(waited < Duration::from_secs(10), "streams left open");
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += Duration::from_millis(50);
    }
}
