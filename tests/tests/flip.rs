//! The main path end to end over real processes: turning custom SSO off
//! for a large org unlinks everyone, asynchronously, observably, and the
//! synchronous part does the same work whatever the org's size.

use std::time::Duration;

use orgauth_e2e::{
    Stack, StackOptions, assert_monotonic, member_id, set_allow_request, watch_to_end,
};
use orgauth_proto::auth::v1 as authpb;
use orgauth_proto::org::v1 as pb;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipping_custom_sso_off_unlinks_every_member_of_a_10k_org() {
    let stack = Stack::start().await;
    stack.seed_linked_org("big", 10_000).await;
    assert_eq!(stack.connections("big").await, 10_000);

    let mut orgs = stack.orgs().await;
    let response = orgs
        .update_org(set_allow_request("big", false))
        .await
        .expect("update org")
        .into_inner();
    assert!(
        !response.job_id.is_empty(),
        "disabling custom SSO returns a job"
    );
    assert!(!response.org.expect("org").allow_custom_sso);

    let states = watch_to_end(&mut stack.jobs().await, &response.job_id).await;
    assert_monotonic(&states);
    let last = states.last().expect("at least one state");
    assert_eq!(last.state, pb::JobState::Succeeded as i32, "{last:?}");
    assert_eq!(last.kind, pb::JobKind::DisableCustomSso as i32);
    assert_eq!(
        (last.total_members, last.processed_members),
        (10_000, 10_000)
    );
    assert_eq!((last.unlinked_members, last.failed_members), (10_000, 0));
    assert!(last.end_time.is_some() && last.start_time.is_some());
    assert!(
        states.len() > 2,
        "watchers see intermediate progress, got {} states",
        states.len()
    );

    assert_eq!(
        stack.connections("big").await,
        0,
        "Auth has no connection left"
    );
    let mut authz = stack.authz().await;
    let policy = authz
        .get_org_sso_policy(authpb::GetOrgSsoPolicyRequest {
            org_id: "big".into(),
        })
        .await
        .expect("policy")
        .into_inner()
        .policy
        .expect("policy");
    assert!(!policy.allow_custom_sso, "policy set before unlinking");
    let check = authz
        .check_sso_login(authpb::CheckSsoLoginRequest {
            org_id: "big".into(),
            member_id: member_id(42),
        })
        .await
        .expect("check")
        .into_inner();
    assert!(!check.allowed);
    let relink = authz
        .link_sso(authpb::LinkSsoRequest {
            org_id: "big".into(),
            member_ids: vec![member_id(1)],
        })
        .await
        .expect_err("no new link while custom SSO is off");
    assert_eq!(relink.code(), Code::FailedPrecondition);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_enabling_only_sets_the_policy_back() {
    let stack = Stack::start().await;
    stack.seed_linked_org("acme", 20).await;
    let mut orgs = stack.orgs().await;
    let off = orgs
        .update_org(set_allow_request("acme", false))
        .await
        .unwrap()
        .into_inner();
    watch_to_end(&mut stack.jobs().await, &off.job_id).await;
    let on = orgs
        .update_org(set_allow_request("acme", true))
        .await
        .unwrap()
        .into_inner();
    let states = watch_to_end(&mut stack.jobs().await, &on.job_id).await;
    let last = states.last().unwrap();
    assert_eq!(last.kind, pb::JobKind::EnableCustomSso as i32);
    assert_eq!(last.state, pb::JobState::Succeeded as i32);
    assert_eq!(last.processed_members, 0, "enabling touches no member");
    let linked = stack
        .authz()
        .await
        .link_sso(authpb::LinkSsoRequest {
            org_id: "acme".into(),
            member_ids: vec![member_id(1)],
        })
        .await
        .expect("linking allowed again")
        .into_inner();
    assert_eq!(linked.linked, 1);
}

/// Counts the SQL statements org-server ran for UpdateOrg calls: sqlx logs
/// each statement at DEBUG under the `sqlx::query` target, inside the
/// `commit_org_updates` span of the group commit that wrote the request
/// (so background work, such as pruning, is not counted).
fn statements(log: &str) -> Vec<String> {
    log.lines()
        .filter(|line| line.contains("commit_org_updates{") && line.contains("sqlx::query"))
        .filter_map(|line| line.split("summary=").nth(1))
        .map(|summary| summary.chars().take(60).collect())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_org_does_the_same_work_for_10_and_10k_members_and_never_calls_auth() {
    // Seed with a normal stack, then restart org-server on the same files
    // as an API-only replica whose Auth endpoint is a closed port: any call
    // to Auth on the request path would fail the request.
    let stack = Stack::start().await;
    stack.seed_linked_org("small", 10).await;
    stack.seed_linked_org("large", 10_000).await;
    stack.seed_linked_org("warmup", 1).await;
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let org_db = stack.dir.path().join("org.db");
    let api_only = orgauth_e2e::Server::spawn(
        "org-server",
        vec![
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--database".into(),
            format!("sqlite://{}", org_db.display()),
            "--auth-endpoint".into(),
            format!("http://127.0.0.1:{closed_port}"),
            "--workers".into(),
            "0".into(),
            "--tokens-file".into(),
            stack.dir.path().join("tokens").display().to_string(),
            "--org-updates-per-minute".into(),
            "0".into(),
        ],
        vec![("RUST_LOG".into(), "info,sqlx::query=debug".into())],
        stack.dir.path().join("api-only.log"),
    );
    let mut orgs = pb::org_service_client::OrgServiceClient::new(orgauth_e2e::authed(
        api_only.channel().await,
        &stack.tokens.admin,
    ));

    // Warm up first, so that neither measured call pays for opening a
    // pooled connection (whose PRAGMAs sqlx logs too).
    orgs.update_org(set_allow_request("warmup", false))
        .await
        .expect("warm-up UpdateOrg");

    let mut work = Vec::new();
    for org_id in ["small", "large"] {
        let before = statements(&api_only.log()).len();
        let started = std::time::Instant::now();
        let response = orgs
            .update_org(set_allow_request(org_id, false))
            .await
            .expect("UpdateOrg succeeds with Auth unreachable")
            .into_inner();
        let elapsed = started.elapsed();
        assert!(!response.job_id.is_empty());
        // Logs are written synchronously before the response is sent, but
        // give the file a moment anyway.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let statements = statements(&api_only.log()).split_off(before);
        work.push((org_id, statements, elapsed));
    }
    eprintln!("UpdateOrg work: {work:?}");
    assert!(!work[0].1.is_empty(), "statements are logged");
    assert_eq!(
        work[0].1.len(),
        work[1].1.len(),
        "same number of SQL statements for 10 and 10,000 members"
    );

    let job = pb::job_service_client::JobServiceClient::new(orgauth_e2e::authed(
        api_only.channel().await,
        &stack.tokens.admin,
    ))
    .list_jobs(pb::ListJobsRequest {
        org_id: "large".into(),
        state: pb::JobState::Queued as i32,
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .jobs;
    assert_eq!(job.len(), 1, "the job waits, durable, for a worker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_request_id_returns_the_first_response_and_enqueues_nothing() {
    let stack = Stack::start_with(StackOptions {
        workers: 0,
        ..Default::default()
    })
    .await;
    let mut orgs = stack.orgs().await;
    orgs.create_org(pb::CreateOrgRequest {
        org: Some(pb::Org {
            id: "acme".into(),
            display_name: "Acme".into(),
            allow_custom_sso: true,
            ..Default::default()
        }),
        request_id: String::new(),
    })
    .await
    .unwrap();
    let mut request = set_allow_request("acme", false);
    request.request_id = "flip-1".into();
    let first = orgs.update_org(request.clone()).await.unwrap().into_inner();
    let again = orgs.update_org(request.clone()).await.unwrap().into_inner();
    assert_eq!(first, again, "same response, same job");

    let jobs = stack
        .jobs()
        .await
        .list_jobs(pb::ListJobsRequest {
            org_id: "acme".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .jobs;
    let disable_jobs = jobs
        .iter()
        .filter(|j| j.kind == pb::JobKind::DisableCustomSso as i32)
        .count();
    assert_eq!(disable_jobs, 1, "the retry enqueued nothing");

    let mut different = set_allow_request("acme", true);
    different.request_id = "flip-1".into();
    let err = orgs.update_org(different).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("request_id"));
    let org = orgs
        .get_org(pb::GetOrgRequest {
            org_id: "acme".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .org
        .unwrap();
    assert!(!org.allow_custom_sso, "the refused request changed nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_etag_is_aborted_and_changes_nothing() {
    let stack = Stack::start_with(StackOptions {
        workers: 0,
        ..Default::default()
    })
    .await;
    let mut orgs = stack.orgs().await;
    let created = orgs
        .create_org(pb::CreateOrgRequest {
            org: Some(pb::Org {
                id: "acme".into(),
                display_name: "Acme".into(),
                allow_custom_sso: true,
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .org
        .unwrap();
    // Someone else renames the org.
    let renamed = orgs
        .update_org(pb::UpdateOrgRequest {
            org: Some(pb::Org {
                id: "acme".into(),
                display_name: "Acme Corp".into(),
                etag: created.etag.clone(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["display_name".into()],
            }),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        renamed.job_id.is_empty(),
        "a rename has no side effect on Auth"
    );
    let renamed = renamed.org.unwrap();
    assert_ne!(renamed.etag, created.etag);

    // Our flip, based on the stale read, is refused.
    let mut stale = set_allow_request("acme", false);
    stale.org.as_mut().unwrap().etag = created.etag;
    let err = orgs.update_org(stale).await.unwrap_err();
    assert_eq!(err.code(), Code::Aborted, "{err:?}");

    let now = orgs
        .get_org(pb::GetOrgRequest {
            org_id: "acme".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .org
        .unwrap();
    assert_eq!(now, renamed, "nothing changed");
    let jobs = stack
        .jobs()
        .await
        .list_jobs(pb::ListJobsRequest {
            org_id: "acme".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert!(
        jobs.iter()
            .all(|j| j.kind != pb::JobKind::DisableCustomSso as i32),
        "no job was enqueued"
    );

    // With the fresh etag it goes through.
    let mut fresh = set_allow_request("acme", false);
    fresh.org.as_mut().unwrap().etag = renamed.etag;
    assert!(
        !orgs
            .update_org(fresh)
            .await
            .unwrap()
            .into_inner()
            .job_id
            .is_empty()
    );
}
