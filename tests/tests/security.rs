//! Authentication, authorization and input validation over real
//! processes (issue 5): every hostile request gets its exact status code
//! and google.rpc details (ErrorInfo reason, BadRequest field), and
//! afterwards storage in both services is exactly as it was.
//!
//! Every case is printed (`cargo test --test security -- --nocapture`) as
//! `case: CODE REASON [field]`, the list the closing note of issue 5 cites.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use orgauth_e2e::{
    Stack, StackOptions, error_domain, error_reason, member_id, new_org, outcome,
    set_allow_request, violated_fields,
};
use orgauth_proto::auth::v1 as authpb;
use orgauth_proto::auth::v1::auth_service_client::AuthServiceClient;
use orgauth_proto::org::v1 as pb;
use orgauth_proto::org::v1::job_service_client::JobServiceClient;
use orgauth_proto::org::v1::org_service_client::OrgServiceClient;
use orgauth_security::Role;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

const ORG_DOMAIN: &str = "orgauth.org.v1";
const AUTH_DOMAIN: &str = "orgauth.auth.v1";

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Sends exactly the `authorization` value given (or none at all).
#[derive(Clone)]
struct RawAuthorization(Option<AsciiMetadataValue>);

impl Interceptor for RawAuthorization {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

type Raw = InterceptedService<Channel, RawAuthorization>;

fn raw(channel: Channel, header: Option<&str>) -> Raw {
    let value = header.map(|h| h.parse().expect("header is ASCII"));
    InterceptedService::new(channel, RawAuthorization(value))
}

/// Asserts that `result` failed with `code` and ErrorInfo `reason` in
/// `domain`; prints the case; returns the status.
fn refused<T: std::fmt::Debug>(
    case: &str,
    result: Result<T, Status>,
    code: Code,
    reason: &str,
    domain: &str,
) -> Status {
    let status = match result {
        Ok(value) => panic!("{case}: expected {code:?} {reason}, got OK {value:?}"),
        Err(status) => status,
    };
    eprintln!("{case}: {}", outcome::<()>(&Err(status.clone())));
    assert_eq!(
        (status.code(), error_reason(&status).as_str()),
        (code, reason),
        "{case}: {status:?}"
    );
    assert_eq!(error_domain(&status), domain, "{case}: ErrorInfo.domain");
    status
}

/// Asserts INVALID_ARGUMENT / INVALID_FIELD naming exactly `field`.
fn invalid<T: std::fmt::Debug>(case: &str, result: Result<T, Status>, field: &str, domain: &str) {
    let status = refused(case, result, Code::InvalidArgument, "INVALID_FIELD", domain);
    assert_eq!(
        violated_fields(&status),
        vec![field.to_owned()],
        "{case}: BadRequest field violations; {status:?}"
    );
}

fn members(prefix: &str, n: usize) -> Vec<pb::Member> {
    (0..n)
        .map(|i| pb::Member {
            id: format!("{prefix}{i}"),
            email: format!("{prefix}{i}@example.com"),
        })
        .collect()
}

fn rename_request(org_id: &str, name: &str) -> pb::UpdateOrgRequest {
    pb::UpdateOrgRequest {
        org: Some(pb::Org {
            id: org_id.into(),
            display_name: name.into(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["display_name".into()],
        }),
        request_id: String::new(),
    }
}

async fn member_ids(stack: &Stack, org_id: &str) -> Vec<String> {
    stack
        .orgs()
        .await
        .list_members(pb::ListMembersRequest {
            org_id: org_id.into(),
            page_size: 1000,
            page_token: String::new(),
        })
        .await
        .expect("list members")
        .into_inner()
        .members
        .into_iter()
        .map(|m| m.id)
        .collect()
}

/// Every job, newest first, as (id, org, state, version).
async fn all_jobs(stack: &Stack) -> Vec<(String, String, i32, i64)> {
    stack
        .jobs()
        .await
        .list_jobs(pb::ListJobsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("list jobs")
        .into_inner()
        .jobs
        .into_iter()
        .map(|j| (j.id, j.org_id, j.state, j.version))
        .collect()
}

/// Auth's connections of an org (member ids) and its policy.
async fn auth_state(stack: &Stack, org_id: &str) -> (bool, Vec<String>) {
    let mut authz = stack.authz().await;
    let connections = authz
        .list_sso_connections(authpb::ListSsoConnectionsRequest {
            org_id: org_id.into(),
            page_size: 1000,
            page_token: String::new(),
        })
        .await
        .expect("list connections")
        .into_inner()
        .connections
        .into_iter()
        .map(|c| c.member_id)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    (stack.sso_policy(org_id).await, connections)
}

/// Everything observable in both services about `orgs`.
#[derive(Debug, PartialEq)]
struct Snapshot {
    orgs: Vec<pb::Org>,
    org_ids: Vec<String>,
    members: Vec<Vec<String>>,
    jobs: Vec<(String, String, i32, i64)>,
    auth: Vec<(bool, Vec<String>)>,
}

async fn snapshot(stack: &Stack, orgs: &[&str]) -> Snapshot {
    let mut snapshot = Snapshot {
        orgs: Vec::new(),
        org_ids: stack
            .orgs()
            .await
            .list_orgs(pb::ListOrgsRequest {
                page_size: 1000,
                page_token: String::new(),
            })
            .await
            .expect("list orgs")
            .into_inner()
            .orgs
            .into_iter()
            .map(|o| o.id)
            .collect(),
        members: Vec::new(),
        jobs: all_jobs(stack).await,
        auth: Vec::new(),
    };
    for org_id in orgs {
        snapshot.orgs.push(stack.get_org(org_id).await);
        snapshot.members.push(member_ids(stack, org_id).await);
        snapshot.auth.push(auth_state(stack, org_id).await);
    }
    snapshot
}

/// Links `ids` in Auth for `org_id` after allowing custom SSO there
/// (directly, as the service identity: these stacks run no workers).
async fn link_in_auth(stack: &Stack, org_id: &str, ids: &[String]) {
    let mut authz = stack.authz().await;
    authz
        .set_org_sso_policy(authpb::SetOrgSsoPolicyRequest {
            org_id: org_id.into(),
            allow_custom_sso: true,
        })
        .await
        .expect("set policy");
    authz
        .link_sso(authpb::LinkSsoRequest {
            org_id: org_id.into(),
            member_ids: ids.to_vec(),
        })
        .await
        .expect("link");
}

/// `s` with the character at `at` replaced by another of the same
/// alphabet (letters and digits stay letters and digits).
fn tamper(s: &str, at: usize) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    chars[at] = match chars[at] {
        'a' => 'b',
        'A' => 'B',
        '0' => '1',
        c if c.is_ascii_digit() => '0',
        c if c.is_ascii_uppercase() => 'A',
        _ => 'a',
    };
    chars.into_iter().collect()
}

// ---------------------------------------------------------------------------
// 1. Authentication
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_a_valid_token_are_unauthenticated_on_both_servers() {
    let stack = Stack::start_with(StackOptions {
        workers: 0,
        ..Default::default()
    })
    .await;
    stack
        .orgs()
        .await
        .create_org(new_org("acme", "Acme", true))
        .await
        .unwrap();
    stack
        .orgs()
        .await
        .add_members(pb::AddMembersRequest {
            org_id: "acme".into(),
            members: members("m", 3),
        })
        .await
        .unwrap();
    let linked: Vec<String> = (0..3).map(|i| format!("m{i}")).collect();
    link_in_auth(&stack, "acme", &linked).await;
    let before = snapshot(&stack, &["acme"]).await;

    let admin = stack.tokens.admin.clone();
    let unknown = orgauth_security::token::issue("ghost", Role::Admin, &[], None)
        .unwrap()
        .secret;
    let without_prefix = admin.strip_prefix("oat_").unwrap().to_owned();
    let other_prefix = format!("tok_{without_prefix}");
    let tampered = tamper(&admin, 20);
    assert_ne!(tampered, admin);
    let truncated = admin[..admin.len() - 1].to_owned();
    // (name, authorization header, reason, the secret it must not echo)
    let cases: Vec<(&str, Option<String>, &str, String)> = vec![
        (
            "no authorization header",
            None,
            "TOKEN_MISSING",
            admin.clone(),
        ),
        (
            "Basic scheme with a valid secret",
            Some(format!("Basic {admin}")),
            "TOKEN_MALFORMED",
            admin.clone(),
        ),
        (
            "secret without a scheme",
            Some(admin.clone()),
            "TOKEN_MALFORMED",
            admin.clone(),
        ),
        (
            "Bearer without a secret",
            Some("Bearer".into()),
            "TOKEN_MALFORMED",
            admin.clone(),
        ),
        (
            "secret without the oat_ prefix (old format)",
            Some(format!("Bearer {without_prefix}")),
            "TOKEN_MALFORMED",
            without_prefix.clone(),
        ),
        (
            "secret with a foreign prefix",
            Some(format!("Bearer {other_prefix}")),
            "TOKEN_MALFORMED",
            other_prefix.clone(),
        ),
        (
            "truncated secret",
            Some(format!("Bearer {truncated}")),
            "TOKEN_MALFORMED",
            truncated.clone(),
        ),
        (
            "secret with trailing junk",
            Some(format!("Bearer {admin} x")),
            "TOKEN_MALFORMED",
            admin.clone(),
        ),
        (
            "tampered secret (one character changed)",
            Some(format!("Bearer {tampered}")),
            "TOKEN_UNKNOWN",
            tampered.clone(),
        ),
        (
            "unknown well-formed secret",
            Some(format!("Bearer {unknown}")),
            "TOKEN_UNKNOWN",
            unknown.clone(),
        ),
        (
            "expired token",
            Some(format!("Bearer {}", stack.tokens.expired)),
            "TOKEN_EXPIRED",
            stack.tokens.expired.clone(),
        ),
    ];

    let org_channel = stack.org.channel().await;
    let auth_channel = stack.auth.channel().await;
    for (name, header, reason, secret) in &cases {
        let header = header.as_deref();
        let mut orgs = OrgServiceClient::new(raw(org_channel.clone(), header));
        let mut jobs = JobServiceClient::new(raw(org_channel.clone(), header));
        let mut authz = AuthServiceClient::new(raw(auth_channel.clone(), header));
        let mut statuses = vec![
            refused(
                &format!("org-server GetOrg, {name}"),
                orgs.get_org(pb::GetOrgRequest {
                    org_id: "acme".into(),
                })
                .await,
                Code::Unauthenticated,
                reason,
                ORG_DOMAIN,
            ),
            refused(
                &format!("org-server UpdateOrg (flip off), {name}"),
                orgs.update_org(set_allow_request("acme", false)).await,
                Code::Unauthenticated,
                reason,
                ORG_DOMAIN,
            ),
            refused(
                &format!("org-server ListJobs, {name}"),
                jobs.list_jobs(pb::ListJobsRequest::default()).await,
                Code::Unauthenticated,
                reason,
                ORG_DOMAIN,
            ),
            refused(
                &format!("auth-server SetOrgSsoPolicy (off), {name}"),
                authz
                    .set_org_sso_policy(authpb::SetOrgSsoPolicyRequest {
                        org_id: "acme".into(),
                        allow_custom_sso: false,
                    })
                    .await,
                Code::Unauthenticated,
                reason,
                AUTH_DOMAIN,
            ),
            refused(
                &format!("auth-server BatchUnlinkSso, {name}"),
                authz
                    .batch_unlink_sso(authpb::BatchUnlinkSsoRequest {
                        org_id: "acme".into(),
                        member_ids: linked.clone(),
                    })
                    .await,
                Code::Unauthenticated,
                reason,
                AUTH_DOMAIN,
            ),
            refused(
                &format!("auth-server ListSsoConnections, {name}"),
                authz
                    .list_sso_connections(authpb::ListSsoConnectionsRequest {
                        org_id: "acme".into(),
                        ..Default::default()
                    })
                    .await,
                Code::Unauthenticated,
                reason,
                AUTH_DOMAIN,
            ),
        ];
        // A streaming call is refused the same way.
        let watch = jobs
            .watch_job(pb::WatchJobRequest {
                job_id: uuid::Uuid::now_v7().to_string(),
                since_version: 0,
            })
            .await;
        statuses.push(refused(
            &format!("org-server WatchJob, {name}"),
            watch.map(|_| ()),
            Code::Unauthenticated,
            reason,
            ORG_DOMAIN,
        ));
        for status in statuses {
            assert!(
                !status.message().contains(secret.as_str()) && !status.message().contains(&admin),
                "{name}: the message echoes a secret: {}",
                status.message()
            );
            assert!(
                !format!("{:?}", status.metadata()).contains(secret.as_str()),
                "{name}: the trailers echo the secret"
            );
        }
    }

    // A valid token in a lowercase scheme is accepted (the scheme is
    // case-insensitive), so the refusals above are about the tokens.
    let mut lower =
        OrgServiceClient::new(raw(org_channel.clone(), Some(&format!("bearer {admin}"))));
    lower
        .get_org(pb::GetOrgRequest {
            org_id: "acme".into(),
        })
        .await
        .expect("lowercase bearer scheme with a valid token");

    // Health and reflection need no token, on both servers.
    for (server, channel, service) in [
        ("org-server", &org_channel, "orgauth.org.v1.OrgService"),
        ("auth-server", &auth_channel, "orgauth.auth.v1.AuthService"),
    ] {
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
        for name in ["", service] {
            let status = health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: name.into(),
                })
                .await
                .unwrap_or_else(|s| panic!("{server} health {name:?} without a token: {s:?}"))
                .into_inner()
                .status;
            assert_eq!(
                status,
                tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
                "{server} health {name:?}"
            );
        }
        let services = list_services(channel.clone()).await;
        assert!(
            services.contains(&service.to_owned()),
            "{server} reflection without a token lists {services:?}"
        );
        eprintln!("{server}: health and reflection without a token: OK {services:?}");
    }

    assert_eq!(
        snapshot(&stack, &["acme"]).await,
        before,
        "no refused call changed anything"
    );
    // No secret that was presented ends up in either server's log.
    for log in [stack.org.log(), stack.auth.log()] {
        for secret in [
            &admin,
            &tampered,
            &unknown,
            &without_prefix,
            &truncated,
            &stack.tokens.expired,
            &stack.tokens.service,
        ] {
            assert!(!log.contains(secret.as_str()), "a secret is in a log");
        }
    }
}

async fn list_services(channel: Channel) -> Vec<String> {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = ServerReflectionClient::new(channel)
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .expect("reflection without a token")
        .into_inner();
    let response = responses
        .next()
        .await
        .expect("a reflection answer")
        .expect("reflection answer is OK");
    match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// 2. Roles on org-server
// ---------------------------------------------------------------------------

/// Collects (case, expected, observed) rows; reports them all at once.
#[derive(Default)]
struct Matrix {
    rows: Vec<(String, String, String)>,
}

impl Matrix {
    fn check<T>(&mut self, case: String, expected: &str, result: &Result<T, Status>) {
        if let Err(status) = result {
            // Refusals never carry another org's data (the orgs' display
            // names all contain this).
            assert!(
                !status.message().contains("Secret Name"),
                "{case}: {}",
                status.message()
            );
        }
        self.rows.push((case, expected.to_owned(), outcome(result)));
    }

    fn assert_all(&self) {
        let mut wrong = Vec::new();
        for (case, expected, observed) in &self.rows {
            eprintln!("{case}: {observed}");
            if expected != observed {
                wrong.push(format!("{case}: expected {expected}, observed {observed}"));
            }
        }
        assert!(
            wrong.is_empty(),
            "{} wrong:\n{}",
            wrong.len(),
            wrong.join("\n")
        );
    }
}

const OK: &str = "OK";
const ROLE: &str = "PERMISSION_DENIED ROLE_NOT_PERMITTED";
const ORG_DENIED: &str = "PERMISSION_DENIED ORG_ACCESS_DENIED";
const JOB_HIDDEN: &str = "NOT_FOUND JOB_NOT_FOUND";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_may_do_exactly_its_part_on_org_server() {
    // No workers: jobs stay QUEUED, so they can be watched and cancelled.
    let stack = Stack::start_with(StackOptions {
        workers: 0,
        ..Default::default()
    })
    .await;
    let mut admin_orgs = stack.orgs().await;
    for (id, name) in [
        ("acme", "Acme Secret Name"),
        ("globex", "Globex Secret Name"),
        ("initech", "Initech Secret Name"),
    ] {
        admin_orgs
            .create_org(new_org(id, name, true))
            .await
            .unwrap();
        admin_orgs
            .add_members(pb::AddMembersRequest {
                org_id: id.into(),
                members: members(&format!("{id}-m"), 3),
            })
            .await
            .unwrap();
    }
    // Each org's newest job: a queued DISABLE job (superseding the queued
    // ENABLE job of its creation).
    let mut job_of = std::collections::HashMap::new();
    for id in ["acme", "globex", "initech"] {
        let job = admin_orgs
            .update_org(set_allow_request(id, false))
            .await
            .unwrap()
            .into_inner()
            .job_id;
        job_of.insert(id, job);
    }
    let jobs_before = all_jobs(&stack).await;

    let tokens = &stack.tokens;
    // (caller, token, own org, another org)
    let callers = [
        ("service", tokens.service.clone(), "acme", "globex"),
        ("globex", tokens.globex.clone(), "globex", "acme"),
        ("acme", tokens.acme.clone(), "acme", "globex"),
        ("admin", tokens.admin.clone(), "initech", "globex"),
    ];
    let mut m = Matrix::default();
    let all_org_ids = ["acme", "globex", "initech"];

    for (who, token, own, other) in &callers {
        let mut orgs = stack.orgs_as(token).await;
        let mut jobs = stack.jobs_as(token).await;
        let service = *who == "service";
        let admin = *who == "admin";
        let expect = |own_org: bool, if_ok: &'static str| -> &'static str {
            if service {
                ROLE
            } else if own_org || admin {
                OK
            } else {
                if_ok
            }
        };

        // CreateOrg: admins only, even for an org id the token covers.
        let new_id = if *who == "acme" {
            "acme-eu".to_owned()
        } else {
            format!("new-by-{who}")
        };
        let created = orgs.create_org(new_org(&new_id, "New", false)).await;
        m.check(
            format!("{who}: CreateOrg {new_id}"),
            if admin { OK } else { ROLE },
            &created,
        );

        for (org_id, own_org) in [(*own, true), (*other, false)] {
            let rel = match (service, own_org) {
                (true, _) => "an",
                (false, true) => "own",
                (false, false) => "other",
            };
            let before = stack.get_org(org_id).await;

            let got = orgs
                .get_org(pb::GetOrgRequest {
                    org_id: org_id.into(),
                })
                .await;
            m.check(
                format!("{who}: GetOrg {rel} org {org_id}"),
                expect(own_org, ORG_DENIED),
                &got,
            );

            let renamed = orgs
                .update_org(rename_request(org_id, &format!("Renamed by {who}")))
                .await;
            m.check(
                format!("{who}: UpdateOrg display_name {rel} org {org_id}"),
                expect(own_org, ORG_DENIED),
                &renamed,
            );
            // Flipping back on would cancel the queued DISABLE job, and
            // cancelling it would too: both are only attempted where they
            // must be refused (the jobs stay to be watched below).
            let denied = expect(own_org, ORG_DENIED) != OK;
            if denied {
                let flipped = orgs.update_org(set_allow_request(org_id, true)).await;
                m.check(
                    format!("{who}: UpdateOrg allow_custom_sso {rel} org {org_id}"),
                    expect(own_org, ORG_DENIED),
                    &flipped,
                );
            }

            let added = orgs
                .add_members(pb::AddMembersRequest {
                    org_id: org_id.into(),
                    members: members(&format!("by-{who}-"), 2),
                })
                .await;
            m.check(
                format!("{who}: AddMembers {rel} org {org_id}"),
                expect(own_org, ORG_DENIED),
                &added,
            );
            let removed = orgs
                .remove_members(pb::RemoveMembersRequest {
                    org_id: org_id.into(),
                    member_ids: vec![format!("by-{who}-1"), format!("{org_id}-m0")],
                })
                .await;
            m.check(
                format!("{who}: RemoveMembers {rel} org {org_id}"),
                expect(own_org, ORG_DENIED),
                &removed,
            );
            let listed = orgs
                .list_members(pb::ListMembersRequest {
                    org_id: org_id.into(),
                    ..Default::default()
                })
                .await;
            m.check(
                format!("{who}: ListMembers {rel} org {org_id}"),
                expect(own_org, ORG_DENIED),
                &listed,
            );
            if let Ok(listed) = &listed {
                assert!(
                    listed
                        .get_ref()
                        .members
                        .iter()
                        .all(|member| member.id.starts_with(&format!("{org_id}-"))
                            || member.id.starts_with("by-")),
                    "{who}: ListMembers {org_id} returned another org's member"
                );
            }

            let job_id = job_of[org_id].clone();
            let got = jobs
                .get_job(pb::GetJobRequest {
                    job_id: job_id.clone(),
                })
                .await;
            m.check(
                format!("{who}: GetJob of {rel} org {org_id}"),
                expect(own_org, JOB_HIDDEN),
                &got,
            );
            if let Err(status) = &got
                && status.code() == Code::NotFound
            {
                // Indistinguishable from a job that does not exist.
                assert_eq!(status.message(), format!("job {job_id:?} not found"));
            }
            let listed = jobs
                .list_jobs(pb::ListJobsRequest {
                    org_id: org_id.into(),
                    ..Default::default()
                })
                .await;
            m.check(
                format!("{who}: ListJobs org_id={org_id} ({rel})"),
                expect(own_org, ORG_DENIED),
                &listed,
            );
            let failures = jobs
                .list_job_failures(pb::ListJobFailuresRequest {
                    job_id: job_id.clone(),
                    ..Default::default()
                })
                .await;
            m.check(
                format!("{who}: ListJobFailures of {rel} org {org_id}"),
                expect(own_org, JOB_HIDDEN),
                &failures,
            );
            let watch = jobs
                .watch_job(pb::WatchJobRequest {
                    job_id: job_id.clone(),
                    since_version: 0,
                })
                .await;
            match watch {
                Ok(response) => {
                    let mut stream = response.into_inner();
                    let first = tokio::time::timeout(Duration::from_secs(10), stream.next())
                        .await
                        .expect("first watch message in time")
                        .expect("a first message")
                        .expect("first message OK");
                    let job = first.job.expect("job");
                    assert_eq!(job.org_id, org_id, "{who}: WatchJob shows the right job");
                    m.check::<()>(
                        format!("{who}: WatchJob of {rel} org {org_id}"),
                        expect(own_org, JOB_HIDDEN),
                        &Ok(()),
                    );
                }
                Err(status) => m.check::<()>(
                    format!("{who}: WatchJob of {rel} org {org_id}"),
                    expect(own_org, JOB_HIDDEN),
                    &Err(status),
                ),
            }
            if denied {
                let cancelled = jobs
                    .cancel_job(pb::CancelJobRequest {
                        job_id: job_id.clone(),
                    })
                    .await;
                m.check(
                    format!("{who}: CancelJob of {rel} org {org_id}"),
                    expect(own_org, JOB_HIDDEN),
                    &cancelled,
                );
            }

            if !own_org && !admin {
                // Nothing about the other org changed.
                assert_eq!(
                    stack.get_org(org_id).await,
                    before,
                    "{who}'s refused calls changed org {org_id}"
                );
            }
        }

        // Listings are narrowed to the caller's orgs.
        let listed = orgs
            .list_orgs(pb::ListOrgsRequest {
                page_size: 1000,
                page_token: String::new(),
            })
            .await;
        m.check(
            format!("{who}: ListOrgs"),
            if service { ROLE } else { OK },
            &listed,
        );
        if let Ok(listed) = listed {
            let ids: BTreeSet<String> =
                listed.into_inner().orgs.into_iter().map(|o| o.id).collect();
            let want: BTreeSet<String> = match *who {
                "admin" => all_org_ids
                    .iter()
                    .map(|s| (*s).to_owned())
                    .chain(std::iter::once("new-by-admin".to_owned()))
                    .collect(),
                other => [if other == "acme" { "acme" } else { "globex" }.to_owned()].into(),
            };
            assert_eq!(ids, want, "{who}: ListOrgs shows exactly its orgs");
        }
        let listed = jobs
            .list_jobs(pb::ListJobsRequest {
                page_size: 1000,
                ..Default::default()
            })
            .await;
        m.check(
            format!("{who}: ListJobs without org filter"),
            if service { ROLE } else { OK },
            &listed,
        );
        if let Ok(listed) = listed {
            let seen: BTreeSet<String> = listed
                .into_inner()
                .jobs
                .into_iter()
                .map(|j| j.org_id)
                .collect();
            let want: BTreeSet<String> = match *who {
                "admin" => all_org_ids.iter().map(|s| (*s).to_owned()).collect(),
                other => [if other == "acme" { "acme" } else { "globex" }.to_owned()].into(),
            };
            assert_eq!(seen, want, "{who}: ListJobs shows only its orgs' jobs");
        }
    }
    // Names near or outside an org token's scope.
    let mut acme_orgs = stack.orgs_as(&tokens.acme).await;
    let mut acme_jobs = stack.jobs_as(&tokens.acme).await;
    for (org_id, expected) in [
        // Covered by the token but never created.
        ("acme-eu", "NOT_FOUND ORG_NOT_FOUND"),
        // A prefix of a covered org is another org.
        ("acm", ORG_DENIED),
        ("acme-e", ORG_DENIED),
        // Whether an uncovered org exists is not revealed.
        ("does-not-exist", ORG_DENIED),
        ("initech", ORG_DENIED),
    ] {
        let got = acme_orgs
            .get_org(pb::GetOrgRequest {
                org_id: org_id.into(),
            })
            .await;
        m.check(format!("acme: GetOrg {org_id}"), expected, &got);
    }
    let unknown_job = uuid::Uuid::now_v7().to_string();
    let got = acme_jobs
        .get_job(pb::GetJobRequest {
            job_id: unknown_job.clone(),
        })
        .await;
    m.check(
        "acme: GetJob of a job that does not exist".into(),
        JOB_HIDDEN,
        &got,
    );
    m.assert_all();

    // The refused calls left every job as it was (the admin's own calls
    // changed nothing about jobs either: it renamed and edited members only).
    assert_eq!(all_jobs(&stack).await, jobs_before, "no job changed");
    assert!(
        member_ids(&stack, "acme")
            .await
            .iter()
            .all(|id| !id.starts_with("by-globex") && !id.starts_with("by-service")),
        "only acme's own callers added members to acme"
    );
    assert_eq!(stack.get_org("acme").await.display_name, "Renamed by acme");
    assert_eq!(
        stack.get_org("globex").await.display_name,
        "Renamed by admin",
        "the admin renamed globex last; acme could not"
    );
    assert_eq!(
        stack.get_org("initech").await.display_name,
        "Renamed by admin"
    );
    for refused_id in ["acme-eu", "new-by-service", "new-by-globex"] {
        let got = stack
            .orgs()
            .await
            .get_org(pb::GetOrgRequest {
                org_id: refused_id.into(),
            })
            .await;
        assert_eq!(outcome(&got), "NOT_FOUND ORG_NOT_FOUND", "{refused_id}");
    }

    // Finally, each org role may cancel its own org's job.
    for (who, token, org_id) in [
        ("acme", &tokens.acme, "acme"),
        ("globex", &tokens.globex, "globex"),
    ] {
        let cancelled = stack
            .jobs_as(token)
            .await
            .cancel_job(pb::CancelJobRequest {
                job_id: job_of[org_id].clone(),
            })
            .await
            .unwrap_or_else(|s| panic!("{who} cancels its own job: {s:?}"))
            .into_inner()
            .job
            .expect("job");
        assert_eq!(cancelled.state, pb::JobState::Cancelled as i32);
        eprintln!("{who}: CancelJob of own org {org_id}: OK");
    }
}

// ---------------------------------------------------------------------------
// 3. Roles on auth-server
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_may_do_exactly_its_part_on_auth_server() {
    let stack = Stack::start_with(StackOptions {
        workers: 0,
        ..Default::default()
    })
    .await;
    let acme_members: Vec<String> = (0..5).map(|i| format!("a{i}")).collect();
    let globex_members: Vec<String> = (0..5).map(|i| format!("g{i}")).collect();
    link_in_auth(&stack, "acme", &acme_members).await;
    link_in_auth(&stack, "globex", &globex_members).await;

    let tokens = &stack.tokens;
    let callers = [
        ("admin", tokens.admin.clone(), "acme", "globex"),
        ("acme", tokens.acme.clone(), "acme", "globex"),
        ("globex", tokens.globex.clone(), "globex", "acme"),
        ("service", tokens.service.clone(), "acme", "globex"),
    ];
    let mut m = Matrix::default();
    for (who, token, own, other) in &callers {
        let mut authz = stack.authz_as(token).await;
        let service = *who == "service";
        let org_role = *who == "acme" || *who == "globex";
        for (org_id, own_org) in [(*own, true), (*other, false)] {
            let rel = if own_org { "own" } else { "other" };
            let readable = if !org_role || own_org { OK } else { ORG_DENIED };
            let before = auth_state(&stack, org_id).await;

            // The two RPCs that change what a member may do, reserved
            // for org-server's service identity. Non-service callers try
            // the damaging direction (policy off, unlink everyone).
            let set = authz
                .set_org_sso_policy(authpb::SetOrgSsoPolicyRequest {
                    org_id: org_id.into(),
                    allow_custom_sso: service,
                })
                .await;
            m.check(
                format!("{who}: SetOrgSsoPolicy {rel} org {org_id}"),
                if service { OK } else { ROLE },
                &set,
            );
            let unlink_ids = if service {
                vec!["not-linked".to_owned()]
            } else {
                before.1.clone()
            };
            let unlinked = authz
                .batch_unlink_sso(authpb::BatchUnlinkSsoRequest {
                    org_id: org_id.into(),
                    member_ids: unlink_ids,
                })
                .await;
            m.check(
                format!("{who}: BatchUnlinkSso {rel} org {org_id}"),
                if service { OK } else { ROLE },
                &unlinked,
            );
            if !service {
                assert_eq!(
                    auth_state(&stack, org_id).await,
                    before,
                    "{who}: refused SetOrgSsoPolicy/BatchUnlinkSso changed {org_id}"
                );
            }

            let policy = authz
                .get_org_sso_policy(authpb::GetOrgSsoPolicyRequest {
                    org_id: org_id.into(),
                })
                .await;
            m.check(
                format!("{who}: GetOrgSsoPolicy {rel} org {org_id}"),
                readable,
                &policy,
            );
            let listed = authz
                .list_sso_connections(authpb::ListSsoConnectionsRequest {
                    org_id: org_id.into(),
                    page_size: 1000,
                    page_token: String::new(),
                })
                .await;
            m.check(
                format!("{who}: ListSsoConnections {rel} org {org_id}"),
                readable,
                &listed,
            );
            if let Ok(listed) = &listed {
                assert!(
                    listed
                        .get_ref()
                        .connections
                        .iter()
                        .all(|c| c.org_id == org_id),
                    "{who}: connections of another org listed"
                );
            }
            let check = authz
                .check_sso_login(authpb::CheckSsoLoginRequest {
                    org_id: org_id.into(),
                    member_id: before.1[0].clone(),
                })
                .await;
            m.check(
                format!("{who}: CheckSsoLogin {rel} org {org_id}"),
                readable,
                &check,
            );
            let link = authz
                .link_sso(authpb::LinkSsoRequest {
                    org_id: org_id.into(),
                    member_ids: vec![format!("linked-by-{who}")],
                })
                .await;
            m.check(
                format!("{who}: LinkSso {rel} org {org_id}"),
                readable,
                &link,
            );
            if readable != OK {
                assert_eq!(
                    auth_state(&stack, org_id).await,
                    before,
                    "{who}: refused calls changed {org_id}"
                );
            }
        }
    }
    m.assert_all();

    // What each org holds now: its five members, plus the members linked
    // by callers allowed to link there.
    let (acme_policy, acme_now) = auth_state(&stack, "acme").await;
    let (globex_policy, globex_now) = auth_state(&stack, "globex").await;
    assert!(acme_policy && globex_policy, "no policy was turned off");
    let want = |base: &[String], by: &[&str]| -> Vec<String> {
        let mut all: Vec<String> = base.to_vec();
        all.extend(by.iter().map(|who| format!("linked-by-{who}")));
        all.sort();
        all
    };
    assert_eq!(
        acme_now,
        want(&acme_members, &["acme", "admin", "service"]),
        "acme's connections: nothing unlinked, globex-bot linked nothing"
    );
    assert_eq!(
        globex_now,
        want(&globex_members, &["admin", "globex", "service"]),
        "globex's connections: nothing unlinked, acme-bot linked nothing"
    );
}

// ---------------------------------------------------------------------------
// 4. Invalid input
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_invalid_input_names_its_field_and_changes_nothing() {
    let stack = Stack::start_with(StackOptions {
        workers: 0,
        ..Default::default()
    })
    .await;
    let mut orgs = stack.orgs().await;
    let mut jobs = stack.jobs().await;
    for id in ["acme", "globex"] {
        orgs.create_org(new_org(id, &format!("Org {id}"), false))
            .await
            .unwrap();
        orgs.add_members(pb::AddMembersRequest {
            org_id: id.into(),
            members: members(&format!("{id}-m"), 3),
        })
        .await
        .unwrap();
        let ids: Vec<String> = (0..3).map(|i| format!("{id}-m{i}")).collect();
        link_in_auth(&stack, id, &ids).await;
    }
    // Two jobs for acme (the first cancelled by the second), one for globex.
    let acme_job = {
        orgs.update_org(set_allow_request("acme", true))
            .await
            .unwrap();
        orgs.update_org(set_allow_request("acme", false))
            .await
            .unwrap()
            .into_inner()
            .job_id
    };
    orgs.update_org(set_allow_request("globex", true))
        .await
        .unwrap();
    let before = snapshot(&stack, &["acme", "globex"]).await;

    // Real page tokens to edit and transplant.
    let members_token = |org_id: &str| pb::ListMembersRequest {
        org_id: org_id.into(),
        page_size: 1,
        page_token: String::new(),
    };
    let acme_members_token = orgs
        .list_members(members_token("acme"))
        .await
        .unwrap()
        .into_inner()
        .next_page_token;
    assert!(!acme_members_token.is_empty());
    let acme_jobs_token = jobs
        .list_jobs(pb::ListJobsRequest {
            org_id: "acme".into(),
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .next_page_token;
    assert!(!acme_jobs_token.is_empty());
    let orgs_token = orgs
        .list_orgs(pb::ListOrgsRequest {
            page_size: 1,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .next_page_token;
    assert!(!orgs_token.is_empty());
    // The tokens work as they are.
    orgs.list_members(pb::ListMembersRequest {
        page_token: acme_members_token.clone(),
        ..members_token("acme")
    })
    .await
    .expect("an untouched token works");

    let d = ORG_DOMAIN;
    let long_id = "a".repeat(64);

    // --- org ids ----------------------------------------------------------
    for (what, id) in [
        ("uppercase", "Acme"),
        ("64 chars", long_id.as_str()),
        ("empty", ""),
    ] {
        invalid(
            &format!("GetOrg org_id {what}"),
            orgs.get_org(pb::GetOrgRequest { org_id: id.into() }).await,
            "org_id",
            d,
        );
    }
    for (what, id) in [
        ("uppercase", "Acme"),
        ("64 chars", long_id.as_str()),
        ("leading dash", "-acme"),
        ("underscore", "acme_corp"),
        ("NUL", "acme\0"),
        ("non-ASCII", "acmé"),
    ] {
        invalid(
            &format!("CreateOrg org.id {what}"),
            orgs.create_org(new_org(id, "X", true)).await,
            "org.id",
            d,
        );
    }
    invalid(
        "CreateOrg without org",
        orgs.create_org(pb::CreateOrgRequest::default()).await,
        "org",
        d,
    );
    invalid(
        "UpdateOrg org.id empty",
        orgs.update_org(set_allow_request("", false)).await,
        "org.id",
        d,
    );
    invalid(
        "UpdateOrg org.id uppercase",
        orgs.update_org(set_allow_request("ACME", false)).await,
        "org.id",
        d,
    );
    invalid(
        "AddMembers org_id uppercase",
        orgs.add_members(pb::AddMembersRequest {
            org_id: "ACME".into(),
            members: members("x", 1),
        })
        .await,
        "org_id",
        d,
    );
    invalid(
        "ListJobs org_id uppercase",
        jobs.list_jobs(pb::ListJobsRequest {
            org_id: "BAD".into(),
            ..Default::default()
        })
        .await,
        "org_id",
        d,
    );

    // --- display names ----------------------------------------------------
    for (what, name) in [
        ("with NUL", "Ac\0me".to_owned()),
        ("with a newline", "Ac\nme".to_owned()),
        ("201 chars", "n".repeat(201)),
        ("blank", "   ".to_owned()),
        ("empty", String::new()),
    ] {
        invalid(
            &format!("CreateOrg display_name {what}"),
            orgs.create_org(new_org("fresh", &name, true)).await,
            "org.display_name",
            d,
        );
        invalid(
            &format!("UpdateOrg display_name {what}"),
            orgs.update_org(rename_request("acme", &name)).await,
            "org.display_name",
            d,
        );
    }

    // --- update masks -----------------------------------------------------
    let with_mask = |paths: &[&str]| {
        let mut request = set_allow_request("acme", true);
        request.update_mask = Some(prost_types::FieldMask {
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
        });
        request
    };
    let mut no_mask = set_allow_request("acme", true);
    no_mask.update_mask = None;
    invalid(
        "UpdateOrg without update_mask",
        orgs.update_org(no_mask).await,
        "update_mask",
        d,
    );
    for paths in [
        &[][..],
        &["colour"],
        &["*"],
        &["id"],
        &["etag"],
        &["member_count"],
        &["create_time"],
        &["allow_custom_sso", "id"],
        &["Allow_Custom_Sso"],
        &["org.allow_custom_sso"],
    ] {
        invalid(
            &format!("UpdateOrg update_mask {paths:?}"),
            orgs.update_org(with_mask(paths)).await,
            "update_mask",
            d,
        );
    }

    // --- request ids --------------------------------------------------------
    let mut long_request_id = set_allow_request("acme", true);
    long_request_id.request_id = "r".repeat(129);
    invalid(
        "UpdateOrg request_id 129 chars",
        orgs.update_org(long_request_id).await,
        "request_id",
        d,
    );
    let mut nul_request_id = set_allow_request("acme", true);
    nul_request_id.request_id = "r\0".into();
    invalid(
        "UpdateOrg request_id with NUL",
        orgs.update_org(nul_request_id).await,
        "request_id",
        d,
    );
    let mut create_long_request_id = new_org("fresh", "Fresh", true);
    create_long_request_id.request_id = "r".repeat(129);
    invalid(
        "CreateOrg request_id 129 chars",
        orgs.create_org(create_long_request_id).await,
        "request_id",
        d,
    );

    // --- members ----------------------------------------------------------
    let add = |list: Vec<pb::Member>| pb::AddMembersRequest {
        org_id: "acme".into(),
        members: list,
    };
    invalid(
        "AddMembers 0 members",
        orgs.add_members(add(vec![])).await,
        "members",
        d,
    );
    invalid(
        "AddMembers 1001 members",
        orgs.add_members(add(members("n", 1001))).await,
        "members",
        d,
    );
    let mut duplicates = members("n", 3);
    duplicates[2].id = duplicates[0].id.clone();
    invalid(
        "AddMembers duplicate ids",
        orgs.add_members(add(duplicates)).await,
        "members[2].id",
        d,
    );
    for (what, email) in [
        ("no @", "not-an-email".to_owned()),
        ("with space", "a b@example.com".to_owned()),
        ("two @", "a@b@example.com".to_owned()),
        ("321 chars", format!("{}@example.com", "e".repeat(309))),
    ] {
        let mut bad = members("n", 2);
        bad[1].email = email;
        invalid(
            &format!("AddMembers email {what}"),
            orgs.add_members(add(bad)).await,
            "members[1].email",
            d,
        );
    }
    for (what, id) in [
        ("with NUL", "n\0".to_owned()),
        ("empty", String::new()),
        ("with space", "a b".to_owned()),
        ("129 chars", "i".repeat(129)),
    ] {
        let mut bad = members("n", 1);
        bad[0].id = id;
        invalid(
            &format!("AddMembers member id {what}"),
            orgs.add_members(add(bad)).await,
            "members[0].id",
            d,
        );
    }
    let remove = |ids: Vec<String>| pb::RemoveMembersRequest {
        org_id: "acme".into(),
        member_ids: ids,
    };
    invalid(
        "RemoveMembers empty",
        orgs.remove_members(remove(vec![])).await,
        "member_ids",
        d,
    );
    invalid(
        "RemoveMembers 1001 ids",
        orgs.remove_members(remove((0..1001).map(member_id).collect()))
            .await,
        "member_ids",
        d,
    );
    invalid(
        "RemoveMembers duplicate ids",
        orgs.remove_members(remove(vec!["acme-m0".into(), "acme-m0".into()]))
            .await,
        "member_ids[1]",
        d,
    );
    invalid(
        "RemoveMembers id with NUL",
        orgs.remove_members(remove(vec!["acme-m0\0".into()])).await,
        "member_ids[0]",
        d,
    );

    // --- page sizes and tokens ---------------------------------------------
    for size in [-1, 1001, i32::MIN] {
        invalid(
            &format!("ListOrgs page_size {size}"),
            orgs.list_orgs(pb::ListOrgsRequest {
                page_size: size,
                page_token: String::new(),
            })
            .await,
            "page_size",
            d,
        );
        invalid(
            &format!("ListMembers page_size {size}"),
            orgs.list_members(pb::ListMembersRequest {
                page_size: size,
                ..members_token("acme")
            })
            .await,
            "page_size",
            d,
        );
        invalid(
            &format!("ListJobs page_size {size}"),
            jobs.list_jobs(pb::ListJobsRequest {
                page_size: size,
                ..Default::default()
            })
            .await,
            "page_size",
            d,
        );
        invalid(
            &format!("ListJobFailures page_size {size}"),
            jobs.list_job_failures(pb::ListJobFailuresRequest {
                job_id: acme_job.clone(),
                page_size: size,
                page_token: String::new(),
            })
            .await,
            "page_size",
            d,
        );
    }
    let edited_members_token = tamper(&acme_members_token, acme_members_token.len() / 2);
    let edited_jobs_token = tamper(&acme_jobs_token, acme_jobs_token.len() / 2);
    for (what, token) in [
        ("garbage", "garbage!".to_owned()),
        ("made-up base64", "djE6YWNtZS1tMA".to_owned()),
        ("edited", edited_members_token.clone()),
        (
            "truncated",
            acme_members_token[..acme_members_token.len() - 2].to_owned(),
        ),
        ("from another org's listing", acme_members_token.clone()),
    ] {
        let org_id = if what.starts_with("from another") {
            "globex"
        } else {
            "acme"
        };
        invalid(
            &format!("ListMembers {org_id} page_token {what}"),
            orgs.list_members(pb::ListMembersRequest {
                page_token: token,
                ..members_token(org_id)
            })
            .await,
            "page_token",
            d,
        );
    }
    invalid(
        "ListOrgs page_token from ListMembers",
        orgs.list_orgs(pb::ListOrgsRequest {
            page_size: 1,
            page_token: acme_members_token.clone(),
        })
        .await,
        "page_token",
        d,
    );
    invalid(
        "ListOrgs page_token edited",
        orgs.list_orgs(pb::ListOrgsRequest {
            page_size: 1,
            page_token: tamper(&orgs_token, orgs_token.len() / 2),
        })
        .await,
        "page_token",
        d,
    );
    for (what, org_id, state, token) in [
        ("garbage", "acme", 0, "garbage!".to_owned()),
        ("edited", "acme", 0, edited_jobs_token.clone()),
        (
            "from another org's listing",
            "globex",
            0,
            acme_jobs_token.clone(),
        ),
        (
            "from the unfiltered listing",
            "",
            0,
            acme_jobs_token.clone(),
        ),
        (
            "from a listing without the state filter",
            "acme",
            pb::JobState::Queued as i32,
            acme_jobs_token.clone(),
        ),
    ] {
        invalid(
            &format!("ListJobs page_token {what}"),
            jobs.list_jobs(pb::ListJobsRequest {
                org_id: org_id.into(),
                state,
                page_size: 1,
                page_token: token,
            })
            .await,
            "page_token",
            d,
        );
    }
    invalid(
        "ListJobFailures page_token from ListMembers",
        jobs.list_job_failures(pb::ListJobFailuresRequest {
            job_id: acme_job.clone(),
            page_size: 1,
            page_token: acme_members_token.clone(),
        })
        .await,
        "page_token",
        d,
    );

    // --- enums and job ids ------------------------------------------------
    for state in [99, -1, 6] {
        invalid(
            &format!("ListJobs state {state}"),
            jobs.list_jobs(pb::ListJobsRequest {
                state,
                ..Default::default()
            })
            .await,
            "state",
            d,
        );
    }
    for bad in [
        "not-a-uuid",
        "",
        "123",
        "01890a5d-ac96-774b-bcce-b302099a805",
    ] {
        invalid(
            &format!("GetJob job_id {bad:?}"),
            jobs.get_job(pb::GetJobRequest { job_id: bad.into() }).await,
            "job_id",
            d,
        );
        invalid(
            &format!("CancelJob job_id {bad:?}"),
            jobs.cancel_job(pb::CancelJobRequest { job_id: bad.into() })
                .await,
            "job_id",
            d,
        );
        invalid(
            &format!("ListJobFailures job_id {bad:?}"),
            jobs.list_job_failures(pb::ListJobFailuresRequest {
                job_id: bad.into(),
                ..Default::default()
            })
            .await,
            "job_id",
            d,
        );
        invalid(
            &format!("WatchJob job_id {bad:?}"),
            jobs.watch_job(pb::WatchJobRequest {
                job_id: bad.into(),
                since_version: 0,
            })
            .await
            .map(|_| ()),
            "job_id",
            d,
        );
    }
    for since in [-1, i64::MIN] {
        invalid(
            &format!("WatchJob since_version {since}"),
            jobs.watch_job(pb::WatchJobRequest {
                job_id: acme_job.clone(),
                since_version: since,
            })
            .await
            .map(|_| ()),
            "since_version",
            d,
        );
    }

    // --- auth-server --------------------------------------------------------
    let mut authz = stack.authz().await;
    let a = AUTH_DOMAIN;
    let link = |ids: Vec<String>| authpb::LinkSsoRequest {
        org_id: "acme".into(),
        member_ids: ids,
    };
    let unlink = |ids: Vec<String>| authpb::BatchUnlinkSsoRequest {
        org_id: "acme".into(),
        member_ids: ids,
    };
    invalid(
        "auth LinkSso member_ids empty",
        authz.link_sso(link(vec![])).await,
        "member_ids",
        a,
    );
    invalid(
        "auth LinkSso 1001 member_ids",
        authz
            .link_sso(link((0..1001).map(member_id).collect()))
            .await,
        "member_ids",
        a,
    );
    invalid(
        "auth LinkSso duplicate member_ids",
        authz
            .link_sso(link(vec!["new1".into(), "new2".into(), "new1".into()]))
            .await,
        "member_ids[2]",
        a,
    );
    invalid(
        "auth LinkSso member id with space",
        authz
            .link_sso(link(vec!["new1".into(), "a b".into()]))
            .await,
        "member_ids[1]",
        a,
    );
    invalid(
        "auth LinkSso org_id uppercase",
        authz
            .link_sso(authpb::LinkSsoRequest {
                org_id: "ACME".into(),
                member_ids: vec!["new1".into()],
            })
            .await,
        "org_id",
        a,
    );
    invalid(
        "auth BatchUnlinkSso member_ids empty",
        authz.batch_unlink_sso(unlink(vec![])).await,
        "member_ids",
        a,
    );
    invalid(
        "auth BatchUnlinkSso 1001 member_ids",
        authz
            .batch_unlink_sso(unlink((0..1001).map(|i| format!("acme-m{i}")).collect()))
            .await,
        "member_ids",
        a,
    );
    invalid(
        "auth BatchUnlinkSso duplicate member_ids",
        authz
            .batch_unlink_sso(unlink(vec![
                "acme-m0".into(),
                "acme-m1".into(),
                "acme-m0".into(),
            ]))
            .await,
        "member_ids[2]",
        a,
    );
    invalid(
        "auth SetOrgSsoPolicy org_id empty",
        authz
            .set_org_sso_policy(authpb::SetOrgSsoPolicyRequest {
                org_id: String::new(),
                allow_custom_sso: false,
            })
            .await,
        "org_id",
        a,
    );
    for (what, member) in [("empty", ""), ("with space", "a b"), ("with NUL", "m\0")] {
        invalid(
            &format!("auth CheckSsoLogin member_id {what}"),
            authz
                .check_sso_login(authpb::CheckSsoLoginRequest {
                    org_id: "acme".into(),
                    member_id: member.into(),
                })
                .await,
            "member_id",
            a,
        );
    }
    let connections = |org_id: &str, size: i32, token: &str| authpb::ListSsoConnectionsRequest {
        org_id: org_id.into(),
        page_size: size,
        page_token: token.into(),
    };
    let sso_token = authz
        .list_sso_connections(connections("acme", 1, ""))
        .await
        .unwrap()
        .into_inner()
        .next_page_token;
    assert!(!sso_token.is_empty());
    for size in [-1, 1001] {
        invalid(
            &format!("auth ListSsoConnections page_size {size}"),
            authz
                .list_sso_connections(connections("acme", size, ""))
                .await,
            "page_size",
            a,
        );
    }
    for (what, org_id, token) in [
        ("garbage", "acme", "garbage!".to_owned()),
        ("edited", "acme", tamper(&sso_token, sso_token.len() / 2)),
        ("from another org's listing", "globex", sso_token.clone()),
        (
            "from org-server's ListMembers",
            "acme",
            acme_members_token.clone(),
        ),
    ] {
        invalid(
            &format!("auth ListSsoConnections page_token {what}"),
            authz
                .list_sso_connections(connections(org_id, 1, &token))
                .await,
            "page_token",
            a,
        );
    }

    assert_eq!(
        snapshot(&stack, &["acme", "globex"]).await,
        before,
        "no invalid request changed anything in either service"
    );
}
