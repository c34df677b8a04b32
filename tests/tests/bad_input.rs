//! Every bad input DESIGN.md names gets its exact status code, and after all
//! of them nothing in either service has changed.

use orgauth_e2e::{Stack, StackOptions, member_id, set_allow_request};
use orgauth_proto::auth::v1 as authpb;
use orgauth_proto::org::v1 as pb;
use tonic::Code;

fn org(id: &str, name: &str) -> Option<pb::Org> {
    Some(pb::Org {
        id: id.into(),
        display_name: name.into(),
        ..Default::default()
    })
}

fn members(n: usize) -> Vec<pb::Member> {
    (0..n)
        .map(|i| pb::Member {
            id: member_id(i),
            email: String::new(),
        })
        .collect()
}

fn expect_code<T: std::fmt::Debug>(what: &str, result: Result<T, tonic::Status>, code: Code) {
    match result {
        Ok(value) => panic!("{what}: expected {code:?}, got OK {value:?}"),
        Err(status) => assert_eq!(status.code(), code, "{what}: {}", status.message()),
    }
}

/// Everything observable about the stack, to compare before and after.
async fn snapshot(stack: &Stack) -> (Vec<pb::Org>, Vec<pb::Member>, Vec<pb::Job>, i64) {
    let orgs = stack
        .orgs()
        .await
        .list_orgs(pb::ListOrgsRequest {
            page_size: 1000,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .orgs;
    let members = stack
        .orgs()
        .await
        .list_members(pb::ListMembersRequest {
            org_id: "acme".into(),
            page_size: 1000,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .members;
    let jobs = stack
        .jobs()
        .await
        .list_jobs(pb::ListJobsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .jobs;
    (orgs, members, jobs, stack.connections("acme").await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_gets_its_code_and_changes_nothing() {
    let stack = Stack::start_with(StackOptions::default()).await;
    stack.seed_linked_org("acme", 10).await;
    let finished_job = stack
        .jobs()
        .await
        .list_jobs(pb::ListJobsRequest {
            org_id: "acme".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .jobs[0]
        .id
        .clone();
    let before = snapshot(&stack).await;
    let mut orgs = stack.orgs().await;
    let mut jobs = stack.jobs().await;
    let mut authz = stack.authz().await;
    use Code::*;

    // CreateOrg
    expect_code(
        "create without org",
        orgs.create_org(pb::CreateOrgRequest::default()).await,
        InvalidArgument,
    );
    for bad_id in [
        "Acme",
        "-acme",
        "acme_corp",
        "a b",
        &"a".repeat(64),
        "acme\0",
    ] {
        expect_code(
            &format!("create id {bad_id:?}"),
            orgs.create_org(pb::CreateOrgRequest {
                org: org(bad_id, "X"),
                request_id: String::new(),
            })
            .await,
            InvalidArgument,
        );
    }
    expect_code(
        "create taken id",
        orgs.create_org(pb::CreateOrgRequest {
            org: org("acme", "Again"),
            request_id: String::new(),
        })
        .await,
        AlreadyExists,
    );
    expect_code(
        "create blank name",
        orgs.create_org(pb::CreateOrgRequest {
            org: org("fresh", "  "),
            request_id: String::new(),
        })
        .await,
        InvalidArgument,
    );
    expect_code(
        "create overlong name",
        orgs.create_org(pb::CreateOrgRequest {
            org: org("fresh", &"n".repeat(201)),
            request_id: String::new(),
        })
        .await,
        InvalidArgument,
    );

    // GetOrg / ListOrgs
    expect_code(
        "get unknown org",
        orgs.get_org(pb::GetOrgRequest {
            org_id: "nope".into(),
        })
        .await,
        NotFound,
    );
    expect_code(
        "get bad org id",
        orgs.get_org(pb::GetOrgRequest {
            org_id: "NOPE".into(),
        })
        .await,
        InvalidArgument,
    );
    for (size, token) in [(-1, ""), (1001, ""), (10, "garbage!"), (10, "djE6")] {
        expect_code(
            &format!("list orgs {size} {token:?}"),
            orgs.list_orgs(pb::ListOrgsRequest {
                page_size: size,
                page_token: token.into(),
            })
            .await,
            InvalidArgument,
        );
    }

    // UpdateOrg
    let mut unknown_path = set_allow_request("acme", false);
    unknown_path.update_mask.as_mut().unwrap().paths =
        vec!["allow_custom_sso".into(), "colour".into()];
    expect_code(
        "update unknown mask path",
        orgs.update_org(unknown_path).await,
        InvalidArgument,
    );
    for immutable in ["id", "etag", "create_time", "member_count", "*"] {
        let mut request = set_allow_request("acme", false);
        request.update_mask.as_mut().unwrap().paths = vec![immutable.into()];
        expect_code(
            &format!("update path {immutable}"),
            orgs.update_org(request).await,
            InvalidArgument,
        );
    }
    let mut no_mask = set_allow_request("acme", false);
    no_mask.update_mask = None;
    expect_code(
        "update without mask",
        orgs.update_org(no_mask).await,
        InvalidArgument,
    );
    expect_code(
        "update without org",
        orgs.update_org(pb::UpdateOrgRequest::default()).await,
        InvalidArgument,
    );
    expect_code(
        "update unknown org",
        orgs.update_org(set_allow_request("nope", false)).await,
        NotFound,
    );
    let mut stale = set_allow_request("acme", false);
    stale.org.as_mut().unwrap().etag = "r999".into();
    expect_code("update stale etag", orgs.update_org(stale).await, Aborted);
    let mut long_request_id = set_allow_request("acme", false);
    long_request_id.request_id = "r".repeat(129);
    expect_code(
        "update long request_id",
        orgs.update_org(long_request_id).await,
        InvalidArgument,
    );

    // AddMembers / RemoveMembers / ListMembers
    let add = |org_id: &str, members: Vec<pb::Member>| pb::AddMembersRequest {
        org_id: org_id.into(),
        members,
    };
    expect_code(
        "add none",
        orgs.add_members(add("acme", vec![])).await,
        InvalidArgument,
    );
    expect_code(
        "add 1001",
        orgs.add_members(add("acme", members(1001))).await,
        InvalidArgument,
    );
    let mut dup = members(2);
    dup[1].id = dup[0].id.clone();
    expect_code(
        "add duplicates",
        orgs.add_members(add("acme", dup)).await,
        InvalidArgument,
    );
    let mut bad_member = members(1);
    bad_member[0].id = "has space".into();
    expect_code(
        "add bad member id",
        orgs.add_members(add("acme", bad_member)).await,
        InvalidArgument,
    );
    let mut bad_email = members(1);
    bad_email[0].email = "not an email".into();
    expect_code(
        "add bad email",
        orgs.add_members(add("acme", bad_email)).await,
        InvalidArgument,
    );
    expect_code(
        "add to unknown org",
        orgs.add_members(add("nope", members(1))).await,
        NotFound,
    );
    let remove = |org_id: &str, ids: Vec<String>| pb::RemoveMembersRequest {
        org_id: org_id.into(),
        member_ids: ids,
    };
    expect_code(
        "remove none",
        orgs.remove_members(remove("acme", vec![])).await,
        InvalidArgument,
    );
    expect_code(
        "remove 1001",
        orgs.remove_members(remove("acme", (0..1001).map(member_id).collect()))
            .await,
        InvalidArgument,
    );
    expect_code(
        "remove duplicates",
        orgs.remove_members(remove("acme", vec![member_id(1), member_id(1)]))
            .await,
        InvalidArgument,
    );
    expect_code(
        "remove from unknown org",
        orgs.remove_members(remove("nope", vec![member_id(1)]))
            .await,
        NotFound,
    );
    expect_code(
        "list members of unknown org",
        orgs.list_members(pb::ListMembersRequest {
            org_id: "nope".into(),
            ..Default::default()
        })
        .await,
        NotFound,
    );

    // Jobs
    for bad in ["", "123", "not-a-uuid"] {
        expect_code(
            &format!("get job {bad:?}"),
            jobs.get_job(pb::GetJobRequest { job_id: bad.into() }).await,
            InvalidArgument,
        );
        expect_code(
            &format!("cancel job {bad:?}"),
            jobs.cancel_job(pb::CancelJobRequest { job_id: bad.into() })
                .await,
            InvalidArgument,
        );
    }
    let unknown = uuid::Uuid::now_v7().to_string();
    expect_code(
        "get unknown job",
        jobs.get_job(pb::GetJobRequest {
            job_id: unknown.clone(),
        })
        .await,
        NotFound,
    );
    expect_code(
        "cancel unknown job",
        jobs.cancel_job(pb::CancelJobRequest {
            job_id: unknown.clone(),
        })
        .await,
        NotFound,
    );
    expect_code(
        "failures of unknown job",
        jobs.list_job_failures(pb::ListJobFailuresRequest {
            job_id: unknown,
            ..Default::default()
        })
        .await,
        NotFound,
    );
    expect_code(
        "cancel a finished job",
        jobs.cancel_job(pb::CancelJobRequest {
            job_id: finished_job,
        })
        .await,
        FailedPrecondition,
    );
    expect_code(
        "list jobs with unknown state",
        jobs.list_jobs(pb::ListJobsRequest {
            state: 42,
            ..Default::default()
        })
        .await,
        InvalidArgument,
    );
    expect_code(
        "list jobs with bad org id",
        jobs.list_jobs(pb::ListJobsRequest {
            org_id: "BAD".into(),
            ..Default::default()
        })
        .await,
        InvalidArgument,
    );

    // Auth
    expect_code(
        "batch unlink 1001",
        authz
            .batch_unlink_sso(authpb::BatchUnlinkSsoRequest {
                org_id: "acme".into(),
                member_ids: (0..1001).map(member_id).collect(),
            })
            .await,
        InvalidArgument,
    );
    expect_code(
        "batch unlink none",
        authz
            .batch_unlink_sso(authpb::BatchUnlinkSsoRequest {
                org_id: "acme".into(),
                member_ids: vec![],
            })
            .await,
        InvalidArgument,
    );
    expect_code(
        "link while policy disallows",
        authz
            .link_sso(authpb::LinkSsoRequest {
                org_id: "never-heard-of".into(),
                member_ids: vec![member_id(1)],
            })
            .await,
        FailedPrecondition,
    );
    expect_code(
        "link 1001",
        authz
            .link_sso(authpb::LinkSsoRequest {
                org_id: "acme".into(),
                member_ids: (0..1001).map(member_id).collect(),
            })
            .await,
        InvalidArgument,
    );

    assert_eq!(
        snapshot(&stack).await,
        before,
        "no bad request changed anything"
    );
}
