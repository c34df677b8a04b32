//! The limits that protect the servers (issue 5), over real processes:
//! message size, the UpdateOrg rate limit per org, per-connection load
//! shedding, 10,000 concurrent idle WatchJob streams against the caps
//! per caller and per server, the caller's deadline, and keepalive
//! dropping a frozen watcher. Each refusal is checked for its exact code
//! and reason, and for having changed nothing.
//!
//! Every case is printed (`-- --nocapture`) for issue 5's closing note.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use orgauth_e2e::{
    Stack, StackOptions, authed, connect, error_domain, error_reason, outcome, retry_delay,
    set_allow_request,
};
use orgauth_proto::auth::v1 as authpb;
use orgauth_proto::org::v1 as pb;
use orgauth_proto::org::v1::job_service_client::JobServiceClient;
use orgauth_proto::org::v1::org_service_client::OrgServiceClient;
use tonic::Code;

fn new_org(id: &str, allow: bool) -> pb::CreateOrgRequest {
    pb::CreateOrgRequest {
        org: Some(pb::Org {
            id: id.into(),
            display_name: format!("Org {id}"),
            allow_custom_sso: allow,
            ..Default::default()
        }),
        request_id: String::new(),
    }
}

/// `n` valid members whose emails are `email_len` characters long.
fn members(prefix: &str, n: usize, email_len: usize) -> Vec<pb::Member> {
    (0..n)
        .map(|i| {
            let id = format!("{prefix}{i:05}");
            let domain = "@example.com";
            let local = "e".repeat(email_len.saturating_sub(domain.len()).max(1));
            pb::Member {
                id,
                email: format!("{local}{domain}"),
            }
        })
        .collect()
}

async fn get_org(orgs: &mut OrgServiceClient<orgauth_e2e::Authed>, id: &str) -> pb::Org {
    orgs.get_org(pb::GetOrgRequest { org_id: id.into() })
        .await
        .expect("get org")
        .into_inner()
        .org
        .expect("org")
}

// ---------------------------------------------------------------------------
// Message size
// ---------------------------------------------------------------------------

/// The status of a request over --max-message-bytes: RESOURCE_EXHAUSTED,
/// as the gRPC spec asks of a server, with ErrorInfo (tonic itself says
/// OUT_OF_RANGE; the servers' DetailsLayer maps it).
fn assert_oversized_request(status: &tonic::Status, domain: &str) {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(error_reason(status), "MESSAGE_TOO_LARGE");
    assert_eq!(error_domain(status), domain);
    assert!(
        status.message().contains("message length too large"),
        "{status:?}"
    );
}

/// The status of an answer over the limit. It fails in the response body,
/// after the headers went out, so no layer sees it: tonic's OUT_OF_RANGE
/// stands. (Page sizes keep real answers far below the default limit.)
fn assert_oversized_answer(status: &tonic::Status) {
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(
        status.message().contains("message length too large"),
        "{status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_are_resource_exhausted_and_add_nothing() {
    let stack = Stack::start_with(StackOptions {
        workers: 0,
        org_args: vec!["--max-message-bytes".into(), "65536".into()],
        ..Default::default()
    })
    .await;
    let mut orgs = stack.orgs().await;
    orgs.create_org(new_org("acme", false)).await.unwrap();
    let before = get_org(&mut orgs, "acme").await;

    // 1,000 members (the most one call may carry), each valid, ~130 KB in
    // all: only the size is wrong.
    let big = members("m", 1000, 100);
    let request = pb::AddMembersRequest {
        org_id: "acme".into(),
        members: big,
    };
    let size = prost::Message::encoded_len(&request);
    assert!(size > 65536, "the request is {size} bytes");
    let refused = orgs.add_members(request).await;
    eprintln!(
        "org-server AddMembers of {size} bytes with --max-message-bytes 65536: {} ({})",
        outcome(&refused),
        refused.as_ref().err().map(|s| s.message()).unwrap_or("")
    );
    let status = refused.expect_err("an oversized message is refused");
    assert_oversized_request(&status, "orgauth.org.v1");
    assert_eq!(
        get_org(&mut orgs, "acme").await,
        before,
        "nothing was added (member_count and etag unchanged)"
    );

    // The same connection and server still serve, up to the limit.
    let fits = pb::AddMembersRequest {
        org_id: "acme".into(),
        members: members("m", 300, 100),
    };
    assert!(prost::Message::encoded_len(&fits) < 65536);
    let added = orgs
        .add_members(fits)
        .await
        .expect("a message under the limit is served")
        .into_inner()
        .added;
    assert_eq!(added, 300);
    assert_eq!(get_org(&mut orgs, "acme").await.member_count, 300);
    eprintln!("org-server AddMembers under the limit afterwards: OK");

    // The limit bounds what the server sends too: a page of members
    // larger than it fails, a smaller page of the same listing works.
    orgs.add_members(pb::AddMembersRequest {
        org_id: "acme".into(),
        members: members("n", 300, 100),
    })
    .await
    .expect("another 300");
    let page = |size: i32| pb::ListMembersRequest {
        org_id: "acme".into(),
        page_size: size,
        page_token: String::new(),
    };
    let too_big = orgs.list_members(page(600)).await;
    eprintln!(
        "org-server ListMembers answer of ~70 KB with --max-message-bytes 65536: {} ({})",
        outcome(&too_big),
        too_big.as_ref().err().map(|s| s.message()).unwrap_or("")
    );
    assert_oversized_answer(&too_big.expect_err("an oversized answer is not sent"));
    let fits = orgs
        .list_members(page(300))
        .await
        .expect("a page under the limit")
        .into_inner();
    assert_eq!(fits.members.len(), 300);

    // auth-server with its default limit (4 MiB): a 5 MB LinkSso.
    let mut authz = stack.authz().await;
    authz
        .set_org_sso_policy(authpb::SetOrgSsoPolicyRequest {
            org_id: "acme".into(),
            allow_custom_sso: true,
        })
        .await
        .unwrap();
    let huge = authpb::LinkSsoRequest {
        org_id: "acme".into(),
        member_ids: (0..40_000).map(|i| format!("{i:0>125}")).collect(),
    };
    let size = prost::Message::encoded_len(&huge);
    assert!(size > 4 << 20, "the request is {size} bytes");
    let refused = authz.link_sso(huge).await;
    eprintln!(
        "auth-server LinkSso of {size} bytes with the default 4 MiB limit: {} ({})",
        outcome(&refused),
        refused.as_ref().err().map(|s| s.message()).unwrap_or("")
    );
    assert_oversized_request(
        &refused.expect_err("an oversized message is refused"),
        "orgauth.auth.v1",
    );
    assert_eq!(stack.connections("acme").await, 0, "nothing was linked");
    authz
        .link_sso(authpb::LinkSsoRequest {
            org_id: "acme".into(),
            member_ids: vec!["m00001".into()],
        })
        .await
        .expect("auth-server still serves");
    assert_eq!(stack.connections("acme").await, 1);
}

// ---------------------------------------------------------------------------
// UpdateOrg rate limit
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_flips_of_one_org_are_rate_limited_and_enqueue_nothing() {
    // The harness turns the limit off; a second org-server on the same
    // database has it on (6 a minute, bursts of 3).
    let stack = Stack::start_with(StackOptions {
        workers: 0,
        ..Default::default()
    })
    .await;
    let mut unlimited = stack.orgs().await;
    for id in ["acme", "globex"] {
        unlimited.create_org(new_org(id, true)).await.unwrap();
    }
    let limited_server = stack.spawn_org_server(
        "limited.log",
        &[
            "--workers",
            "0",
            "--org-updates-per-minute",
            "6",
            "--org-update-burst",
            "3",
        ],
    );
    let channel = limited_server.channel().await;
    let mut limited = OrgServiceClient::new(authed(channel.clone(), &stack.tokens.admin));
    let mut jobs = JobServiceClient::new(authed(channel.clone(), &stack.tokens.admin));
    let jobs_of = |jobs: &mut JobServiceClient<orgauth_e2e::Authed>, org: &'static str| {
        let mut jobs = jobs.clone();
        async move { orgauth_e2e::list_org_jobs(&mut jobs, org).await.len() }
    };
    let jobs_before = jobs_of(&mut jobs, "acme").await;

    // The burst: three flips, each with its job.
    for (i, allow) in [false, true, false].into_iter().enumerate() {
        let response = limited
            .update_org(set_allow_request("acme", allow))
            .await
            .unwrap_or_else(|s| panic!("flip {} within the burst: {s:?}", i + 1))
            .into_inner();
        assert!(!response.job_id.is_empty(), "flip {} enqueued a job", i + 1);
        eprintln!("UpdateOrg flip {} of acme within the burst: OK", i + 1);
    }
    let after_burst = get_org(&mut limited, "acme").await;
    assert!(!after_burst.allow_custom_sso);

    // The fourth is refused, with a delay to retry after.
    let refused = limited
        .update_org(set_allow_request("acme", true))
        .await
        .expect_err("the fourth flip within a minute is refused");
    let delay = retry_delay(&refused);
    eprintln!(
        "UpdateOrg flip 4 of acme: {} RetryInfo {delay:?} ({})",
        outcome::<()>(&Err(refused.clone())),
        refused.message()
    );
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert_eq!(error_reason(&refused), "ORG_UPDATE_RATE_LIMITED");
    let delay = delay.expect("RetryInfo with a delay");
    assert!(
        delay >= Duration::from_secs(1) && delay <= Duration::from_secs(11),
        "6 a minute refills one every 10 s: {delay:?}"
    );

    // Not by another caller either (the limit is the org's). A rename,
    // which can never start an unlink, is not limited.
    let by_acme = OrgServiceClient::new(authed(channel.clone(), &stack.tokens.acme))
        .update_org(set_allow_request("acme", true))
        .await;
    eprintln!(
        "UpdateOrg flip 5 of acme by acme-bot: {}",
        outcome(&by_acme)
    );
    assert_eq!(
        outcome(&by_acme),
        "RESOURCE_EXHAUSTED ORG_UPDATE_RATE_LIMITED"
    );
    let mut rename = set_allow_request("acme", false);
    rename.org.as_mut().unwrap().display_name = "Renamed".into();
    rename.update_mask.as_mut().unwrap().paths = vec!["display_name".into()];
    let renamed = limited.update_org(rename).await;
    eprintln!(
        "UpdateOrg rename of acme after the burst: {}",
        outcome(&renamed)
    );
    assert_eq!(outcome(&renamed), "OK");

    let now = get_org(&mut limited, "acme").await;
    assert_eq!(now.display_name, "Renamed");
    assert_eq!(
        now.allow_custom_sso, after_burst.allow_custom_sso,
        "refused flips changed nothing"
    );
    assert_eq!(
        jobs_of(&mut jobs, "acme").await,
        jobs_before + 3,
        "only the three flips in the burst enqueued jobs"
    );

    // Another org is not affected.
    let globex = limited
        .update_org(set_allow_request("globex", false))
        .await
        .expect("another org's flip is not limited")
        .into_inner();
    assert!(!globex.job_id.is_empty());
    eprintln!("UpdateOrg flip of globex meanwhile: OK");
}

// ---------------------------------------------------------------------------
// Load shedding per connection
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_the_per_connection_limit_are_shed_not_queued() {
    let stack = Stack::start_with(StackOptions {
        workers: 0,
        org_args: vec!["--max-inflight-per-connection".into(), "2".into()],
        ..Default::default()
    })
    .await;
    let mut orgs = stack.orgs().await;
    orgs.create_org(new_org("acme", false)).await.unwrap();
    orgs.add_members(pb::AddMembersRequest {
        org_id: "acme".into(),
        members: members("m", 1000, 60),
    })
    .await
    .unwrap();

    // 200 listings of 1,000 members at once on one connection.
    let calls = futures::future::join_all((0..200).map(|_| {
        let mut orgs = orgs.clone();
        async move {
            orgs.list_members(pb::ListMembersRequest {
                org_id: "acme".into(),
                page_size: 1000,
                page_token: String::new(),
            })
            .await
        }
    }))
    .await;
    let ok = calls.iter().filter(|c| c.is_ok()).count();
    let shed: Vec<&tonic::Status> = calls.iter().filter_map(|c| c.as_ref().err()).collect();
    eprintln!(
        "200 concurrent ListMembers on one connection, --max-inflight-per-connection 2: {ok} OK, {} {}",
        shed.len(),
        shed.first()
            .map(|s| format!("{:?} {:?}", s.code(), s.message()))
            .unwrap_or_default()
    );
    assert!(ok >= 2, "calls within the limit are served");
    assert!(!shed.is_empty(), "calls beyond the limit are shed");
    for status in &shed {
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    }
    // Shedding is per connection and momentary: the next call is served.
    orgs.get_org(pb::GetOrgRequest {
        org_id: "acme".into(),
    })
    .await
    .expect("served after the burst");
}

// ---------------------------------------------------------------------------
// 10,000 concurrent idle WatchJob streams
// ---------------------------------------------------------------------------

/// Opens `n` WatchJob streams on `job_id` spread over `clients`, at most
/// 256 at a time. Returns the streams that opened (their first message
/// read) and the refusals by outcome.
async fn open_watches(
    clients: &[JobServiceClient<orgauth_e2e::Authed>],
    job_id: &str,
    n: usize,
) -> (
    Vec<tonic::Streaming<pb::WatchJobResponse>>,
    std::collections::BTreeMap<String, usize>,
) {
    let results: Vec<Result<tonic::Streaming<pb::WatchJobResponse>, tonic::Status>> =
        futures::stream::iter(0..n)
            .map(|i| {
                let mut client = clients[i % clients.len()].clone();
                let job_id = job_id.to_owned();
                async move {
                    let mut stream = client
                        .watch_job(pb::WatchJobRequest {
                            job_id,
                            since_version: 0,
                        })
                        .await?
                        .into_inner();
                    let first = tokio::time::timeout(Duration::from_secs(30), stream.message())
                        .await
                        .map_err(|_| tonic::Status::deadline_exceeded("no first message"))??;
                    assert!(first.is_some(), "a watch starts with the current state");
                    Ok(stream)
                }
            })
            .buffer_unordered(256)
            .collect()
            .await;
    let mut open = Vec::new();
    let mut refused = std::collections::BTreeMap::new();
    for result in results {
        match result {
            Ok(stream) => open.push(stream),
            Err(status) => *refused.entry(outcome::<()>(&Err(status))).or_default() += 1,
        }
    }
    (open, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_watches_hit_the_caps_and_the_server_keeps_serving() {
    const PER_CALLER: usize = 6000;
    const PER_SERVER: usize = 10_000;
    // No workers: the job stays QUEUED, so every watch stays open and idle.
    let stack = Stack::start_with(StackOptions {
        workers: 0,
        org_args: vec![
            "--max-watches-per-caller".into(),
            PER_CALLER.to_string(),
            "--max-watches".into(),
            PER_SERVER.to_string(),
        ],
        ..Default::default()
    })
    .await;
    let started = Instant::now();
    let mut orgs = stack.orgs().await;
    let job_id = orgs
        .create_org(new_org("acme", true))
        .await
        .unwrap()
        .into_inner()
        .job_id;
    assert!(!job_id.is_empty());

    // 16 connections per caller (at most 1,024 streams each by default).
    let mut admin_clients = Vec::new();
    let mut acme_clients = Vec::new();
    for _ in 0..16 {
        admin_clients.push(JobServiceClient::new(authed(
            connect(&stack.org.endpoint()).await,
            &stack.tokens.admin,
        )));
        acme_clients.push(JobServiceClient::new(authed(
            connect(&stack.org.endpoint()).await,
            &stack.tokens.acme,
        )));
    }

    // Meanwhile, a probe measures GetOrg on its own connection.
    let slowest_get_org_ms = Arc::new(AtomicU64::new(0));
    let probes = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let probe = {
        let slowest = Arc::clone(&slowest_get_org_ms);
        let probes = Arc::clone(&probes);
        let stop = stop.clone();
        let mut orgs = OrgServiceClient::new(authed(
            connect(&stack.org.endpoint()).await,
            &stack.tokens.admin,
        ));
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                orgs.get_org(pb::GetOrgRequest {
                    org_id: "acme".into(),
                })
                .await
                .expect("GetOrg while watches are open");
                let ms = t.elapsed().as_millis() as u64;
                slowest.fetch_max(ms, Ordering::Relaxed);
                probes.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    // The admin asks for 7,000: 6,000 open, then its cap.
    let (mut admin_open, admin_refused) = open_watches(&admin_clients, &job_id, 7000).await;
    eprintln!(
        "admin: 7000 WatchJob asked, {} open, refused {admin_refused:?} ({:?})",
        admin_open.len(),
        started.elapsed()
    );
    assert_eq!(admin_open.len(), PER_CALLER);
    assert_eq!(
        admin_refused,
        [("RESOURCE_EXHAUSTED WATCH_LIMIT_PER_CALLER".to_owned(), 1000)].into()
    );
    // acme-bot asks for 5,000: 4,000 open, then the server's cap.
    let (acme_open, acme_refused) = open_watches(&acme_clients, &job_id, 5000).await;
    eprintln!(
        "acme-bot: 5000 WatchJob asked, {} open, refused {acme_refused:?} ({:?})",
        acme_open.len(),
        started.elapsed()
    );
    assert_eq!(acme_open.len(), PER_SERVER - PER_CALLER);
    assert_eq!(
        acme_refused,
        [("RESOURCE_EXHAUSTED WATCH_LIMIT_PER_SERVER".to_owned(), 1000)].into()
    );

    // 10,000 idle streams open: the server still answers everything else.
    let mut health = tonic_health::pb::health_client::HealthClient::new(stack.org.channel().await);
    let t = Instant::now();
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health with 10,000 watches open");
    let mut unary_ms = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        get_org(&mut orgs, "acme").await;
        unary_ms.push(t.elapsed().as_millis());
    }
    eprintln!(
        "with 10,000 watches open: health {:?}, GetOrg {unary_ms:?} ms",
        t.elapsed()
    );
    stop.store(true, Ordering::Relaxed);
    probe.await.expect("probe task");
    let slowest = slowest_get_org_ms.load(Ordering::Relaxed);
    eprintln!(
        "GetOrg while opening the watches: {} probes, slowest {slowest} ms",
        probes.load(Ordering::Relaxed)
    );
    assert!(
        slowest < 2000,
        "GetOrg stays responsive while watches open: slowest {slowest} ms"
    );
    assert!(
        unary_ms.iter().all(|ms| *ms < 500),
        "GetOrg with 10,000 watches open: {unary_ms:?} ms"
    );

    // Dropping the streams releases their slots: the admin may open up
    // to its cap again (minus one stream kept to check liveness below),
    // and acme-bot up to the server's.
    let mut kept = admin_open.pop().expect("a stream");
    drop(admin_open);
    drop(acme_open);
    let deadline = Instant::now() + Duration::from_secs(20);
    let (again_admin, refused) = loop {
        // The client resets the dropped streams in the background.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (open, refused) = open_watches(&admin_clients, &job_id, PER_CALLER).await;
        if open.len() == PER_CALLER - 1 || Instant::now() > deadline {
            break (open, refused);
        }
        eprintln!("slots not released yet: {} open, {refused:?}", open.len());
    };
    eprintln!(
        "after dropping them: admin reopens {} of {PER_CALLER} (refused {refused:?})",
        again_admin.len()
    );
    assert_eq!(
        again_admin.len(),
        PER_CALLER - 1,
        "every slot but the kept stream's was released"
    );
    assert_eq!(
        refused,
        [("RESOURCE_EXHAUSTED WATCH_LIMIT_PER_CALLER".to_owned(), 1)].into()
    );
    let (again_acme, refused) = open_watches(&acme_clients, &job_id, 4001).await;
    eprintln!(
        "after dropping them: acme-bot reopens {} of 4001 (refused {refused:?})",
        again_acme.len()
    );
    assert_eq!(again_acme.len(), 4000);
    assert_eq!(
        refused,
        [("RESOURCE_EXHAUSTED WATCH_LIMIT_PER_SERVER".to_owned(), 1)].into()
    );

    // The streams are live: cancelling the job ends them with its state.
    let cancelled = stack
        .jobs()
        .await
        .cancel_job(pb::CancelJobRequest {
            job_id: job_id.clone(),
        })
        .await
        .expect("cancel")
        .into_inner()
        .job
        .expect("job");
    assert_eq!(cancelled.state, pb::JobState::Cancelled as i32);
    let last = tokio::time::timeout(Duration::from_secs(10), kept.message())
        .await
        .expect("the idle stream hears the change")
        .expect("stream item")
        .expect("a message")
        .job
        .expect("job");
    assert_eq!(last.state, pb::JobState::Cancelled as i32);
    drop(again_admin);
    drop(again_acme);
    eprintln!("total {:?}", started.elapsed());
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "bounded in time: {:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------
// Deadlines and keepalive
// ---------------------------------------------------------------------------

/// A client's deadline (the grpc-timeout header) bounds the call on the
/// server: a call whose deadline is spent before it can finish is answered
/// without its result. A spent deadline races the call's own work (tonic
/// polls the handler before its timer), so the test makes the work a page
/// of 1,000 members and asks several times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_deadline_is_honoured_by_the_server() {
    let stack = Stack::start_with(StackOptions {
        workers: 0,
        ..Default::default()
    })
    .await;
    let mut orgs = stack.orgs().await;
    orgs.create_org(new_org("acme", false)).await.unwrap();
    orgs.add_members(pb::AddMembersRequest {
        org_id: "acme".into(),
        members: members("m", 1000, 60),
    })
    .await
    .unwrap();
    let page = || pb::ListMembersRequest {
        org_id: "acme".into(),
        page_size: 1000,
        page_token: String::new(),
    };

    let mut refused = 0;
    for _ in 0..20 {
        let mut spent = tonic::Request::new(page());
        spent.set_timeout(Duration::from_nanos(1));
        match orgs.list_members(spent).await {
            Ok(_) => {}
            Err(status) => {
                // tonic's server reports its timeout as CANCELLED
                // ("Timeout expired").
                assert!(
                    matches!(status.code(), Code::Cancelled | Code::DeadlineExceeded),
                    "{status:?}"
                );
                refused += 1;
            }
        }
    }
    eprintln!("ListMembers of 1,000 with a 1 ns deadline: {refused} of 20 refused");
    assert!(refused > 0, "a spent deadline never cut a call short");

    let mut ample = tonic::Request::new(page());
    ample.set_timeout(Duration::from_secs(10));
    let served = orgs
        .list_members(ample)
        .await
        .expect("a call within its deadline");
    assert_eq!(served.into_inner().members.len(), 1000);
}

/// A watcher that stops answering (its process frozen, as on a dead host)
/// is noticed by HTTP/2 keepalive: its connection is closed and its
/// WatchJob slot released, without anyone sending anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_notices_a_frozen_watcher_and_frees_its_slot() {
    let stack = Stack::start_with(StackOptions {
        // The job stays queued, so its watches stay open and idle.
        workers: 0,
        org_args: vec![
            "--keepalive-interval".into(),
            "300ms".into(),
            "--keepalive-timeout".into(),
            "300ms".into(),
            "--max-watches-per-caller".into(),
            "1".into(),
        ],
        ..Default::default()
    })
    .await;
    let mut orgs = stack.orgs().await;
    let job_id = orgs
        .create_org(new_org("acme", true))
        .await
        .unwrap()
        .into_inner()
        .job_id;

    let mut watcher = std::process::Command::new(orgauth_e2e::bin("orgctl"))
        .env("ORGCTL_TOKEN", &stack.tokens.admin)
        .args(["--endpoint", &stack.org.endpoint(), "job", "watch", &job_id])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn orgctl job watch");
    let pid = watcher.id().to_string();
    // orgctl prints the job's state once its watch is open. Probing with a
    // watch of our own before that could take the only slot from it.
    let stdout = watcher.stdout.take().expect("piped stdout");
    let (first_line, opened) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = first_line.send(line);
        }
        for _ in lines {}
    });
    let line = tokio::task::block_in_place(|| opened.recv_timeout(Duration::from_secs(20)))
        .expect("orgctl's watch opens and prints the job's state");
    eprintln!("orgctl watching: {line}");

    // One more watch by the same token is over the cap of one.
    let mut jobs = stack.jobs().await;
    let try_watch = |jobs: &mut JobServiceClient<orgauth_e2e::Authed>| {
        let mut jobs = jobs.clone();
        let job_id = job_id.clone();
        async move {
            jobs.watch_job(pb::WatchJobRequest {
                job_id,
                since_version: 0,
            })
            .await
            .map(|response| response.into_inner())
        }
    };
    let held = try_watch(&mut jobs)
        .await
        .expect_err("orgctl holds the slot");
    assert_eq!(error_reason(&held), "WATCH_LIMIT_PER_CALLER");

    let frozen_at = Instant::now();
    let stopped = std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .expect("kill -STOP");
    assert!(stopped.success());
    let stream = orgauth_e2e::wait_until(
        "the frozen watcher's slot is released",
        Duration::from_secs(20),
        || {
            let attempt = try_watch(&mut jobs);
            async move { attempt.await.ok() }
        },
    )
    .await;
    eprintln!(
        "frozen watcher dropped by keepalive after {:?}",
        frozen_at.elapsed()
    );
    drop(stream);
    let _ = watcher.kill();
    let _ = watcher.wait();
}
