//! The reconnecting job watch against a scripted in-process JobService:
//! resuming with `since_version`, dropping versions already seen, final
//! errors, the retry budget, a connection cut under a live stream, and,
//! behind the servers' own authenticator, the bearer token sent again on
//! every reconnection while UNAUTHENTICATED and PERMISSION_DENIED are never
//! retried.

// Test helpers outside #[test] functions are not covered by clippy.toml's
// allow-unwrap-in-tests; a panic is the right failure here too.
#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use orgauth_client::org::v1 as pb;
use orgauth_client::org::v1::job_service_server::{JobService, JobServiceServer};
use orgauth_client::{ClientError, ConnectOptions, OrgClient, WatchOptions};
use orgauth_runtime::access::Authenticator;
use orgauth_security::token::issue;
use orgauth_security::{Role, TokenSet};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::Interceptor;
use tonic::{Code, Request, Response, Status};

const JOB_ID: &str = "0190a000-0000-7000-8000-000000000001";

/// What the fake server does for one WatchJob call.
enum Script {
    /// Fails the call itself.
    Refuse(Status),
    /// Sends these items, then ends the stream (or keeps it open, silent).
    Send {
        items: Vec<Result<pb::Job, Status>>,
        then_hang: bool,
    },
}

fn send(items: Vec<Result<pb::Job, Status>>) -> Script {
    Script::Send {
        items,
        then_hang: false,
    }
}

#[derive(Default)]
struct Scripted {
    scripts: Mutex<VecDeque<Script>>,
    /// The `since_version` of every WatchJob call, in order.
    since_versions: Mutex<Vec<i64>>,
}

#[derive(Clone)]
struct FakeJobs(Arc<Scripted>);

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchJobResponse, Status>> + Send>>;

#[tonic::async_trait]
impl JobService for FakeJobs {
    async fn get_job(
        &self,
        _: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::GetJobResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn list_jobs(
        &self,
        _: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn cancel_job(
        &self,
        _: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::CancelJobResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    type WatchJobStream = WatchStream;

    async fn watch_job(
        &self,
        request: Request<pb::WatchJobRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let request = request.into_inner();
        assert_eq!(request.job_id, JOB_ID);
        self.0
            .since_versions
            .lock()
            .unwrap()
            .push(request.since_version);
        let script = self.0.scripts.lock().unwrap().pop_front();
        match script {
            None => Err(Status::unavailable("no more scripts")),
            Some(Script::Refuse(status)) => Err(status),
            Some(Script::Send { items, then_hang }) => {
                let items = futures::stream::iter(
                    items
                        .into_iter()
                        .map(|item| item.map(|job| pb::WatchJobResponse { job: Some(job) })),
                );
                let stream: WatchStream = if then_hang {
                    Box::pin(items.chain(futures::stream::pending()))
                } else {
                    Box::pin(items)
                };
                Ok(Response::new(stream))
            }
        }
    }

    async fn list_job_failures(
        &self,
        _: Request<pb::ListJobFailuresRequest>,
    ) -> Result<Response<pb::ListJobFailuresResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

fn job(version: i64, state: pb::JobState) -> Result<pb::Job, Status> {
    let mut job = pb::Job {
        id: JOB_ID.into(),
        org_id: "acme".into(),
        total_members: 10,
        processed_members: version,
        version,
        ..pb::Job::default()
    };
    job.set_state(state);
    Ok(job)
}

fn running(version: i64) -> Result<pb::Job, Status> {
    job(version, pb::JobState::Running)
}

/// Starts the fake server on a free port and returns its address.
async fn serve(scripts: Vec<Script>) -> (SocketAddr, Arc<Scripted>) {
    let scripted = Arc::new(Scripted {
        scripts: Mutex::new(scripts.into()),
        ..Scripted::default()
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = JobServiceServer::new(FakeJobs(scripted.clone()));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (addr, scripted)
}

/// A fake behind the servers' authenticator, accepting one admin token:
/// returns the address, the script state, the token's secret and how many
/// calls the authenticator refused.
async fn serve_authenticated(
    scripts: Vec<Script>,
) -> (SocketAddr, Arc<Scripted>, String, Arc<AtomicUsize>) {
    let scripted = Arc::new(Scripted {
        scripts: Mutex::new(scripts.into()),
        ..Scripted::default()
    });
    let token = issue("ops", Role::Admin, &[], None).unwrap();
    let mut authenticator =
        Authenticator::new(TokenSet::parse(&token.line).unwrap(), "orgauth.org.v1");
    let refused = Arc::new(AtomicUsize::new(0));
    let counter = refused.clone();
    let interceptor = move |request: Request<()>| {
        let result = authenticator.call(request);
        if result.is_err() {
            counter.fetch_add(1, Ordering::SeqCst);
        }
        result
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = JobServiceServer::with_interceptor(FakeJobs(scripted.clone()), interceptor);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (addr, scripted, token.secret, refused)
}

async fn client_with_token(addr: SocketAddr, token: Option<&str>) -> OrgClient {
    let options = ConnectOptions {
        token: token.map(str::to_owned),
        ..ConnectOptions::default()
    };
    OrgClient::connect_with(&addr.to_string(), &options)
        .await
        .unwrap()
        .with_watch_options(fast_retries(Duration::from_secs(5)))
}

fn fast_retries(retry_budget: Duration) -> WatchOptions {
    WatchOptions {
        retry_budget,
        min_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        ..WatchOptions::default()
    }
}

async fn client(addr: SocketAddr) -> OrgClient {
    OrgClient::connect(&format!("http://{addr}"))
        .await
        .unwrap()
        .with_watch_options(fast_retries(Duration::from_secs(5)))
}

async fn versions_until_end(client: &OrgClient) -> Vec<Result<i64, ClientError>> {
    let watch = client.watch_job(JOB_ID);
    tokio::time::timeout(
        Duration::from_secs(10),
        watch.map(|job| job.map(|job| job.version)).collect(),
    )
    .await
    .expect("the watch ends")
}

fn oks(versions: Vec<Result<i64, ClientError>>) -> Vec<i64> {
    versions.into_iter().map(|v| v.unwrap()).collect()
}

#[tokio::test]
async fn resumes_from_the_last_version_after_unavailable() {
    let (addr, scripted) = serve(vec![
        send(vec![
            running(1),
            running(2),
            Err(Status::unavailable("server is shutting down")),
        ]),
        // The server repeats version 2, which must not be yielded again.
        send(vec![
            running(2),
            running(3),
            job(4, pb::JobState::Succeeded),
        ]),
    ])
    .await;
    let versions = versions_until_end(&client(addr).await).await;
    assert_eq!(oks(versions), [1, 2, 3, 4]);
    assert_eq!(*scripted.since_versions.lock().unwrap(), [0, 2]);
}

#[tokio::test]
async fn resumes_after_refused_calls_and_an_early_end_of_stream() {
    let (addr, scripted) = serve(vec![
        send(vec![running(1)]),
        Script::Refuse(Status::unavailable("restarting")),
        Script::Refuse(Status::unavailable("restarting")),
        send(vec![running(1), job(2, pb::JobState::Cancelled)]),
    ])
    .await;
    let versions = versions_until_end(&client(addr).await).await;
    assert_eq!(oks(versions), [1, 2]);
    assert_eq!(*scripted.since_versions.lock().unwrap(), [0, 1, 1, 1]);
}

#[tokio::test]
async fn not_found_ends_the_watch_at_once() {
    let (addr, scripted) = serve(vec![Script::Refuse(Status::not_found("no such job"))]).await;
    let versions = versions_until_end(&client(addr).await).await;
    assert_eq!(versions.len(), 1);
    let error = versions.into_iter().next().unwrap().unwrap_err();
    assert_eq!(error.code(), Code::NotFound);
    assert_eq!(scripted.since_versions.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn an_error_status_mid_stream_is_final_unless_transient() {
    let (addr, _) = serve(vec![send(vec![
        running(1),
        Err(Status::permission_denied("not yours")),
    ])])
    .await;
    let versions = versions_until_end(&client(addr).await).await;
    assert_eq!(versions.len(), 2);
    assert_eq!(*versions[0].as_ref().unwrap(), 1);
    assert_eq!(
        versions[1].as_ref().unwrap_err().code(),
        Code::PermissionDenied
    );
}

#[tokio::test]
async fn gives_up_when_the_retry_budget_is_spent() {
    let (addr, scripted) = serve(vec![send(vec![running(1)])]).await;
    let client = client(addr)
        .await
        .with_watch_options(fast_retries(Duration::from_millis(400)));
    let started = std::time::Instant::now();
    let versions = versions_until_end(&client).await;
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(versions.len(), 2);
    match &versions[1] {
        Err(ClientError::WatchInterrupted {
            last_version,
            source,
            ..
        }) => {
            assert_eq!(*last_version, 1);
            assert_eq!(source.code(), Code::Unavailable);
        }
        other => panic!("unexpected: {other:?}"),
    }
    // Several reconnections were tried, each from version 1.
    let since_versions = scripted.since_versions.lock().unwrap().clone();
    assert!(since_versions.len() >= 3, "{since_versions:?}");
    assert!(since_versions[1..].iter().all(|v| *v == 1));
}

#[tokio::test]
async fn wait_for_job_returns_a_failed_job_and_the_success_variant_errs() {
    let (addr, _) = serve(vec![
        send(vec![running(1), job(2, pb::JobState::Failed)]),
        send(vec![job(2, pb::JobState::Failed)]),
    ])
    .await;
    let client = client(addr).await;
    let job = client.wait_for_job(JOB_ID).await.unwrap();
    assert_eq!(job.state(), pb::JobState::Failed);
    let error = client.wait_for_job_success(JOB_ID).await.unwrap_err();
    assert!(matches!(error, ClientError::JobFailed(_)), "{error}");
}

/// A TCP proxy whose connections can all be cut at once, to break a live
/// stream the way a crashed server or a network failure would.
async fn cuttable_proxy(backend: SocketAddr) -> (SocketAddr, watch::Sender<u32>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (cut, _) = watch::channel(0_u32);
    let cuts = cut.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            let mut cut_signal = cuts.subscribe();
            tokio::spawn(async move {
                let Ok(mut outbound) = TcpStream::connect(backend).await else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    _ = cut_signal.changed() => {}
                }
            });
        }
    });
    (addr, cut)
}

#[tokio::test]
async fn survives_a_connection_cut_under_a_live_stream() {
    let (backend, scripted) = serve(vec![
        Script::Send {
            items: vec![running(1)],
            then_hang: true,
        },
        send(vec![running(2), job(3, pb::JobState::Succeeded)]),
    ])
    .await;
    let (proxy, cut) = cuttable_proxy(backend).await;
    let client = client(proxy).await;
    let mut watch = client.watch_job(JOB_ID);
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(first.version, 1);

    cut.send_modify(|cuts| *cuts += 1);

    let rest: Vec<_> = tokio::time::timeout(Duration::from_secs(10), watch.collect::<Vec<_>>())
        .await
        .expect("the watch ends");
    let rest: Vec<i64> = rest.into_iter().map(|job| job.unwrap().version).collect();
    assert_eq!(rest, [2, 3]);
    assert_eq!(*scripted.since_versions.lock().unwrap(), [0, 1]);
}

#[tokio::test]
async fn every_reconnection_sends_the_token_again() {
    let (addr, scripted, secret, refused) = serve_authenticated(vec![
        send(vec![
            running(1),
            running(2),
            Err(Status::unavailable("server is shutting down")),
        ]),
        Script::Refuse(Status::unavailable("restarting")),
        send(vec![running(3), job(4, pb::JobState::Succeeded)]),
    ])
    .await;
    let client = client_with_token(addr, Some(&secret)).await;
    let versions = versions_until_end(&client).await;
    assert_eq!(oks(versions), [1, 2, 3, 4]);
    // Three calls reached the service: all three were authenticated.
    assert_eq!(*scripted.since_versions.lock().unwrap(), [0, 2, 2]);
    assert_eq!(refused.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn unauthenticated_and_permission_denied_watches_are_not_retried() {
    let (addr, scripted, secret, refused) =
        serve_authenticated(vec![Script::Refuse(Status::permission_denied("not yours"))]).await;

    // No token: refused once by the authenticator, and the watch ends.
    let versions = versions_until_end(&client_with_token(addr, None).await).await;
    assert_eq!(versions.len(), 1);
    let error = versions.into_iter().next().unwrap().unwrap_err();
    assert_eq!(error.code(), Code::Unauthenticated);
    assert_eq!(error.reason(), Some("TOKEN_MISSING"));
    assert_eq!(refused.load(Ordering::SeqCst), 1);
    assert!(scripted.since_versions.lock().unwrap().is_empty());

    // PERMISSION_DENIED from the service: one call, the watch ends.
    let versions = versions_until_end(&client_with_token(addr, Some(&secret)).await).await;
    assert_eq!(versions.len(), 1);
    let error = versions.into_iter().next().unwrap().unwrap_err();
    assert_eq!(error.code(), Code::PermissionDenied);
    assert_eq!(scripted.since_versions.lock().unwrap().len(), 1);
    assert_eq!(refused.load(Ordering::SeqCst), 1);
}
