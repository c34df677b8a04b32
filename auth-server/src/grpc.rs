//! The tonic adapter: each RPC takes the caller the authenticator attached,
//! parses its request into domain types (INVALID_ARGUMENT on the first bad
//! field), calls [`App`] (which authorizes, then touches storage), and
//! converts the answer to protobuf. Errors become a `tonic::Status` through
//! the one `From<AuthError>` in [`crate::error`].

use orgauth_proto::auth::v1 as pb;
use orgauth_proto::auth::v1::auth_service_server::AuthService;
use orgauth_security::Caller;
use prost_types::Timestamp;
use tonic::{Request, Response, Status};

use crate::app::App;
use crate::domain::{
    LinkBatch, LoginDecision, MemberId, Micros, OrgId, SsoConnection, SsoPolicy, UnlinkBatch,
    UnlinkOutcome, UnlinkResult,
};
use crate::error::AuthError;

/// Serves `orgauth.auth.v1.AuthService`. Must sit behind
/// `orgauth_runtime::access::Authenticator`, which attaches the caller;
/// a request without one is refused as UNAUTHENTICATED.
#[derive(Clone)]
pub struct AuthGrpc {
    /// What the RPCs do; this type only translates.
    app: App,
}

impl AuthGrpc {
    pub fn new(app: App) -> Self {
        AuthGrpc { app }
    }
}

/// The caller the authenticator attached to `request`.
fn caller_of<T>(request: &Request<T>) -> Result<Caller, AuthError> {
    orgauth_runtime::access::caller(request).map_err(|_| AuthError::Unauthenticated)
}

#[tonic::async_trait]
impl AuthService for AuthGrpc {
    async fn set_org_sso_policy(
        &self,
        request: Request<pb::SetOrgSsoPolicyRequest>,
    ) -> Result<Response<pb::SetOrgSsoPolicyResponse>, Status> {
        let caller = caller_of(&request)?;
        let request = request.into_inner();
        let org_id = OrgId::parse(request.org_id)?;
        let policy = self
            .app
            .set_policy(&caller, &org_id, request.allow_custom_sso)
            .await?;
        Ok(Response::new(pb::SetOrgSsoPolicyResponse {
            policy: Some(policy_to_pb(policy)),
        }))
    }

    async fn get_org_sso_policy(
        &self,
        request: Request<pb::GetOrgSsoPolicyRequest>,
    ) -> Result<Response<pb::GetOrgSsoPolicyResponse>, Status> {
        let caller = caller_of(&request)?;
        let org_id = OrgId::parse(request.into_inner().org_id)?;
        let policy = self.app.get_policy(&caller, &org_id).await?;
        Ok(Response::new(pb::GetOrgSsoPolicyResponse {
            policy: Some(policy_to_pb(policy)),
        }))
    }

    async fn link_sso(
        &self,
        request: Request<pb::LinkSsoRequest>,
    ) -> Result<Response<pb::LinkSsoResponse>, Status> {
        let caller = caller_of(&request)?;
        let request = request.into_inner();
        let org_id = OrgId::parse(request.org_id)?;
        let members = LinkBatch::parse(request.member_ids)?;
        let linked = self.app.link_sso(&caller, &org_id, &members).await?;
        Ok(Response::new(pb::LinkSsoResponse {
            // At most MAX_BATCH, so this never saturates.
            linked: i32::try_from(linked).unwrap_or(i32::MAX),
        }))
    }

    async fn list_sso_connections(
        &self,
        request: Request<pb::ListSsoConnectionsRequest>,
    ) -> Result<Response<pb::ListSsoConnectionsResponse>, Status> {
        let caller = caller_of(&request)?;
        let request = request.into_inner();
        let org_id = OrgId::parse(request.org_id)?;
        let page_request =
            self.app
                .page_request(&org_id, request.page_size, &request.page_token)?;
        let page = self
            .app
            .list_connections(&caller, &org_id, &page_request)
            .await?;
        Ok(Response::new(pb::ListSsoConnectionsResponse {
            connections: page.connections.into_iter().map(connection_to_pb).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
            total_size: i64::try_from(page.total_size).unwrap_or(i64::MAX),
        }))
    }

    async fn check_sso_login(
        &self,
        request: Request<pb::CheckSsoLoginRequest>,
    ) -> Result<Response<pb::CheckSsoLoginResponse>, Status> {
        let caller = caller_of(&request)?;
        let request = request.into_inner();
        let org_id = OrgId::parse(request.org_id)?;
        let member_id = MemberId::parse("member_id", request.member_id)?;
        let response = match self
            .app
            .check_sso_login(&caller, &org_id, &member_id)
            .await?
        {
            LoginDecision::Allowed => pb::CheckSsoLoginResponse {
                allowed: true,
                reason: String::new(),
            },
            LoginDecision::Denied(reason) => pb::CheckSsoLoginResponse {
                allowed: false,
                reason: reason.as_str().to_owned(),
            },
        };
        Ok(Response::new(response))
    }

    async fn batch_unlink_sso(
        &self,
        request: Request<pb::BatchUnlinkSsoRequest>,
    ) -> Result<Response<pb::BatchUnlinkSsoResponse>, Status> {
        let caller = caller_of(&request)?;
        let request = request.into_inner();
        let org_id = OrgId::parse(request.org_id)?;
        let batch = UnlinkBatch::parse(request.member_ids)?;
        let results = self.app.batch_unlink_sso(&caller, &org_id, batch).await?;
        Ok(Response::new(pb::BatchUnlinkSsoResponse {
            results: results.into_iter().map(unlink_result_to_pb).collect(),
        }))
    }
}

fn policy_to_pb(policy: SsoPolicy) -> pb::SsoPolicy {
    pb::SsoPolicy {
        org_id: policy.org_id.into_string(),
        allow_custom_sso: policy.allow_custom_sso,
        update_time: policy.update_time.map(timestamp),
    }
}

fn connection_to_pb(connection: SsoConnection) -> pb::SsoConnection {
    pb::SsoConnection {
        org_id: connection.org_id.into_string(),
        member_id: connection.member_id.into_string(),
        create_time: Some(timestamp(connection.create_time)),
    }
}

fn unlink_result_to_pb(result: UnlinkResult) -> pb::UnlinkResult {
    let (outcome, error_code, error_message) = match result.outcome {
        UnlinkOutcome::Unlinked => (pb::UnlinkOutcome::Unlinked, "", String::new()),
        UnlinkOutcome::NotLinked => (pb::UnlinkOutcome::NotLinked, "", String::new()),
        // The code a call with only this member would have failed with.
        UnlinkOutcome::Invalid { reason } => (pb::UnlinkOutcome::Error, "INVALID_ARGUMENT", reason),
    };
    pb::UnlinkResult {
        member_id: result.member_id,
        outcome: outcome.into(),
        error_code: error_code.to_owned(),
        error_message,
    }
}

fn timestamp(micros: Micros) -> Timestamp {
    Timestamp {
        seconds: micros.div_euclid(1_000_000),
        // In 0..1_000_000_000, so the conversion cannot fail.
        nanos: i32::try_from(micros.rem_euclid(1_000_000) * 1_000).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use orgauth_security::Role;
    use tonic::Code;
    use tonic_types::StatusExt;

    use super::*;
    use crate::error::ERROR_DOMAIN;
    use crate::store::sqlite::SqliteStore;

    async fn service() -> (AuthGrpc, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("auth.db"))
            .await
            .unwrap();
        let app = App::open(Arc::new(store)).await.unwrap();
        (AuthGrpc::new(app), dir)
    }

    fn org_server() -> Caller {
        Caller::new("org-server", Role::Service, [])
    }

    fn ops() -> Caller {
        Caller::new("ops", Role::Admin, [])
    }

    fn acme_bot() -> Caller {
        Caller::new("acme-bot", Role::Org, ["acme".to_owned()])
    }

    /// A request as the authenticator passes it on: with its caller.
    fn from<T>(caller: &Caller, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.extensions_mut().insert(caller.clone());
        request
    }

    /// The code, ErrorInfo reason and first BadRequest field of a status;
    /// checks the ErrorInfo is there, in auth-server's domain.
    fn problem(status: &Status) -> (Code, String, Option<String>) {
        let details = status.get_error_details();
        let info = details
            .error_info()
            .unwrap_or_else(|| panic!("no ErrorInfo: {status:?}"));
        assert_eq!(info.domain, ERROR_DOMAIN);
        let field = details
            .bad_request()
            .and_then(|bad| bad.field_violations.first())
            .map(|violation| violation.field.clone());
        (status.code(), info.reason.clone(), field)
    }

    #[test]
    fn timestamps_split_micros_exactly() {
        assert_eq!(
            timestamp(1_700_000_000_123_456),
            Timestamp {
                seconds: 1_700_000_000,
                nanos: 123_456_000
            }
        );
        assert_eq!(
            timestamp(-1),
            Timestamp {
                seconds: -1,
                nanos: 999_999_000
            }
        );
    }

    /// Calls `rpc` as `caller` on `org_id` with an otherwise valid request,
    /// and returns the status code and reason (`"OK"` for success).
    async fn call(service: &AuthGrpc, caller: &Caller, rpc: &str, org_id: &str) -> (Code, String) {
        let org_id = org_id.to_owned();
        let result = match rpc {
            "SetOrgSsoPolicy" => service
                .set_org_sso_policy(from(
                    caller,
                    pb::SetOrgSsoPolicyRequest {
                        org_id,
                        allow_custom_sso: true,
                    },
                ))
                .await
                .map(drop),
            "GetOrgSsoPolicy" => service
                .get_org_sso_policy(from(caller, pb::GetOrgSsoPolicyRequest { org_id }))
                .await
                .map(drop),
            "LinkSso" => service
                .link_sso(from(
                    caller,
                    pb::LinkSsoRequest {
                        org_id,
                        member_ids: vec!["m1".into()],
                    },
                ))
                .await
                .map(drop),
            "ListSsoConnections" => service
                .list_sso_connections(from(
                    caller,
                    pb::ListSsoConnectionsRequest {
                        org_id,
                        ..Default::default()
                    },
                ))
                .await
                .map(drop),
            "CheckSsoLogin" => service
                .check_sso_login(from(
                    caller,
                    pb::CheckSsoLoginRequest {
                        org_id,
                        member_id: "m1".into(),
                    },
                ))
                .await
                .map(drop),
            "BatchUnlinkSso" => service
                .batch_unlink_sso(from(
                    caller,
                    pb::BatchUnlinkSsoRequest {
                        org_id,
                        member_ids: vec!["m1".into()],
                    },
                ))
                .await
                .map(drop),
            other => panic!("unknown rpc {other}"),
        };
        match result {
            Ok(()) => (Code::Ok, "OK".into()),
            Err(status) => {
                let (code, reason, _) = problem(&status);
                (code, reason)
            }
        }
    }

    #[tokio::test]
    async fn each_role_may_call_exactly_what_it_should() {
        use Code::{Ok as Allowed, PermissionDenied as Denied};
        let (service, _dir) = service().await;
        for org_id in ["acme", "globex"] {
            call(&service, &org_server(), "SetOrgSsoPolicy", org_id).await;
        }
        let role = (Denied, "ROLE_NOT_PERMITTED");
        let org = (Denied, "ORG_ACCESS_DENIED");
        let ok = (Allowed, "OK");
        // (rpc, service, admin, org on its org, org on another org)
        let matrix = [
            ("SetOrgSsoPolicy", ok, role, role, role),
            ("GetOrgSsoPolicy", ok, ok, ok, org),
            ("LinkSso", ok, ok, ok, org),
            ("ListSsoConnections", ok, ok, ok, org),
            ("CheckSsoLogin", ok, ok, ok, org),
            ("BatchUnlinkSso", ok, role, role, role),
        ];
        assert_eq!(matrix.len(), crate::app::Rpc::ALL.len());
        for (rpc, by_service, by_admin, by_org_own, by_org_other) in matrix {
            let expect = |(code, reason): (Code, &str)| (code, reason.to_owned());
            for org_id in ["acme", "globex"] {
                assert_eq!(
                    call(&service, &org_server(), rpc, org_id).await,
                    expect(by_service),
                    "service {rpc} {org_id}"
                );
                assert_eq!(
                    call(&service, &ops(), rpc, org_id).await,
                    expect(by_admin),
                    "admin {rpc} {org_id}"
                );
            }
            assert_eq!(
                call(&service, &acme_bot(), rpc, "acme").await,
                expect(by_org_own),
                "org {rpc} acme"
            );
            assert_eq!(
                call(&service, &acme_bot(), rpc, "globex").await,
                expect(by_org_other),
                "org {rpc} globex"
            );
        }
    }

    #[tokio::test]
    async fn a_request_without_a_caller_is_refused() {
        let (service, _dir) = service().await;
        let status = service
            .get_org_sso_policy(Request::new(pb::GetOrgSsoPolicyRequest {
                org_id: "acme".into(),
            }))
            .await
            .unwrap_err();
        assert_eq!(
            problem(&status),
            (Code::Unauthenticated, "TOKEN_MISSING".into(), None)
        );
    }

    #[tokio::test]
    async fn bad_requests_are_invalid_argument_naming_the_field() {
        let (service, _dir) = service().await;
        let ids = |ids: &[&str]| ids.iter().map(|&id| id.to_owned()).collect::<Vec<_>>();
        let huge = "a".repeat(1 << 20);
        let long_member = "m".repeat(129);

        for (org_id, field) in [
            ("", "org_id"),
            ("Not Valid", "org_id"),
            ("acme\0", "org_id"),
            ("-acme", "org_id"),
            (&"a".repeat(64), "org_id"),
            (&huge, "org_id"),
        ] {
            let status = service
                .get_org_sso_policy(from(
                    &ops(),
                    pb::GetOrgSsoPolicyRequest {
                        org_id: org_id.to_owned(),
                    },
                ))
                .await
                .unwrap_err();
            assert_eq!(
                problem(&status),
                (
                    Code::InvalidArgument,
                    "INVALID_FIELD".into(),
                    Some(field.into())
                ),
                "{:?}",
                org_id.get(..20)
            );
            assert!(status.message().len() < 300, "short: {}", status.message());
        }

        let link_cases: [(Vec<String>, &str); 7] = [
            (vec![], "member_ids"),
            ((0..1001).map(|i| format!("m{i}")).collect(), "member_ids"),
            (ids(&["a", "b", "a"]), "member_ids[2]"),
            (ids(&["a", ""]), "member_ids[1]"),
            (ids(&["a\0"]), "member_ids[0]"),
            (vec!["a".into(), long_member.clone()], "member_ids[1]"),
            (ids(&["a", "b c"]), "member_ids[1]"),
        ];
        for (member_ids, field) in link_cases {
            let status = service
                .link_sso(from(
                    &ops(),
                    pb::LinkSsoRequest {
                        org_id: "acme".into(),
                        member_ids,
                    },
                ))
                .await
                .unwrap_err();
            assert_eq!(
                problem(&status),
                (
                    Code::InvalidArgument,
                    "INVALID_FIELD".into(),
                    Some(field.into())
                )
            );
        }

        let unlink_cases: [(Vec<String>, &str); 4] = [
            (vec![], "member_ids"),
            ((0..1001).map(|i| format!("m{i}")).collect(), "member_ids"),
            (ids(&["a", "b", "a"]), "member_ids[2]"),
            (ids(&["", ""]), "member_ids[1]"),
        ];
        for (member_ids, field) in unlink_cases {
            let status = service
                .batch_unlink_sso(from(
                    &org_server(),
                    pb::BatchUnlinkSsoRequest {
                        org_id: "acme".into(),
                        member_ids,
                    },
                ))
                .await
                .unwrap_err();
            assert_eq!(
                problem(&status),
                (
                    Code::InvalidArgument,
                    "INVALID_FIELD".into(),
                    Some(field.into())
                )
            );
        }
        let status = service
            .batch_unlink_sso(from(
                &org_server(),
                pb::BatchUnlinkSsoRequest {
                    org_id: "acme".into(),
                    member_ids: (0..1001).map(|i| format!("m{i}")).collect(),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(
            status.message(),
            "member_ids: at most 1000 ids per call, got 1001"
        );

        for (page_size, page_token, field) in [
            (-1, "", "page_size"),
            (1001, "", "page_size"),
            (i32::MIN, "", "page_size"),
            (10, "garbage!", "page_token"),
            (10, "AW0x", "page_token"),
            (10, &*huge, "page_token"),
        ] {
            let status = service
                .list_sso_connections(from(
                    &ops(),
                    pb::ListSsoConnectionsRequest {
                        org_id: "acme".into(),
                        page_size,
                        page_token: page_token.to_owned(),
                    },
                ))
                .await
                .unwrap_err();
            assert_eq!(
                problem(&status),
                (
                    Code::InvalidArgument,
                    "INVALID_FIELD".into(),
                    Some(field.into())
                )
            );
        }

        for member_id in ["", "a b", "a\0", &long_member] {
            let status = service
                .check_sso_login(from(
                    &ops(),
                    pb::CheckSsoLoginRequest {
                        org_id: "acme".into(),
                        member_id: member_id.to_owned(),
                    },
                ))
                .await
                .unwrap_err();
            assert_eq!(
                problem(&status),
                (
                    Code::InvalidArgument,
                    "INVALID_FIELD".into(),
                    Some("member_id".into())
                )
            );
        }
        let status = service
            .check_sso_login(from(
                &ops(),
                pb::CheckSsoLoginRequest {
                    org_id: "acme".into(),
                    member_id: String::new(),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(status.message(), "member_id: must not be empty");
    }

    #[tokio::test]
    async fn validation_comes_before_authorization() {
        let (service, _dir) = service().await;
        // A caller refused either way learns first that its request is bad.
        let status = service
            .set_org_sso_policy(from(
                &ops(),
                pb::SetOrgSsoPolicyRequest {
                    org_id: "BAD".into(),
                    allow_custom_sso: true,
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(problem(&status).1, "INVALID_FIELD");
        let status = service
            .link_sso(from(
                &acme_bot(),
                pb::LinkSsoRequest {
                    org_id: "globex".into(),
                    member_ids: vec![],
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(problem(&status).1, "INVALID_FIELD");
        // And a valid request from the wrong caller is refused.
        let status = service
            .link_sso(from(
                &acme_bot(),
                pb::LinkSsoRequest {
                    org_id: "globex".into(),
                    member_ids: vec!["m1".into()],
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(
            problem(&status),
            (Code::PermissionDenied, "ORG_ACCESS_DENIED".into(), None)
        );
        assert_eq!(
            status.message(),
            "token \"acme-bot\" does not cover org globex"
        );
    }

    #[tokio::test]
    async fn link_without_policy_is_failed_precondition() {
        let (service, _dir) = service().await;
        let status = service
            .link_sso(from(
                &ops(),
                pb::LinkSsoRequest {
                    org_id: "acme".into(),
                    member_ids: vec!["m1".into()],
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(
            problem(&status),
            (
                Code::FailedPrecondition,
                "CUSTOM_SSO_DISALLOWED".into(),
                None
            )
        );
    }

    #[tokio::test]
    async fn a_bad_member_id_is_a_per_member_error() {
        let (service, _dir) = service().await;
        let results = service
            .batch_unlink_sso(from(
                &org_server(),
                pb::BatchUnlinkSsoRequest {
                    org_id: "acme".into(),
                    member_ids: vec!["m1".into(), "no spaces".into()],
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .results;
        assert_eq!(results.len(), 2);
        assert_eq!(results[0].outcome(), pb::UnlinkOutcome::NotLinked);
        assert!(results[0].error_code.is_empty());
        assert_eq!(results[1].member_id, "no spaces");
        assert_eq!(results[1].outcome(), pb::UnlinkOutcome::Error);
        assert_eq!(results[1].error_code, "INVALID_ARGUMENT");
        assert!(
            results[1].error_message.starts_with("member_ids[1]: "),
            "{}",
            results[1].error_message
        );
    }

    async fn list(
        service: &AuthGrpc,
        org_id: &str,
        page_token: String,
    ) -> Result<pb::ListSsoConnectionsResponse, Status> {
        service
            .list_sso_connections(from(
                &ops(),
                pb::ListSsoConnectionsRequest {
                    org_id: org_id.into(),
                    page_size: 2,
                    page_token,
                },
            ))
            .await
            .map(Response::into_inner)
    }

    #[tokio::test]
    async fn tampered_or_foreign_page_tokens_are_refused() {
        let (service, _dir) = service().await;
        for org_id in ["acme", "globex"] {
            call(&service, &org_server(), "SetOrgSsoPolicy", org_id).await;
            service
                .link_sso(from(
                    &ops(),
                    pb::LinkSsoRequest {
                        org_id: org_id.into(),
                        member_ids: vec!["a".into(), "b".into(), "c".into()],
                    },
                ))
                .await
                .unwrap();
        }
        let token = list(&service, "acme", String::new())
            .await
            .unwrap()
            .next_page_token;
        assert!(!token.is_empty());
        assert_eq!(
            list(&service, "acme", token.clone())
                .await
                .unwrap()
                .connections
                .len(),
            1
        );

        // The same cursor on another org's listing.
        let foreign = list(&service, "globex", token.clone()).await.unwrap_err();
        // A token sealed by another server (another database, another key).
        let (other, _other_dir) = self::service().await;
        let elsewhere = list(&other, "acme", token.clone()).await.unwrap_err();
        let mut statuses = vec![foreign, elsewhere];
        // Every single-character edit.
        for i in 0..token.len() {
            let mut edited = token.clone().into_bytes();
            edited[i] = if edited[i] == b'x' { b'y' } else { b'x' };
            let edited = String::from_utf8(edited).unwrap();
            statuses.push(list(&service, "acme", edited).await.unwrap_err());
        }
        for status in statuses {
            assert_eq!(
                problem(&status),
                (
                    Code::InvalidArgument,
                    "INVALID_FIELD".into(),
                    Some("page_token".into())
                )
            );
            assert!(
                status
                    .message()
                    .starts_with("page_token: malformed or tampered"),
                "{}",
                status.message()
            );
        }
    }

    #[tokio::test]
    async fn policies_and_pages_round_trip() {
        let (service, _dir) = service().await;
        let unknown = service
            .get_org_sso_policy(from(
                &ops(),
                pb::GetOrgSsoPolicyRequest {
                    org_id: "acme".into(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .policy
            .unwrap();
        assert!(!unknown.allow_custom_sso);
        assert_eq!(unknown.update_time, None);

        let set = service
            .set_org_sso_policy(from(
                &org_server(),
                pb::SetOrgSsoPolicyRequest {
                    org_id: "acme".into(),
                    allow_custom_sso: true,
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .policy
            .unwrap();
        assert!(set.allow_custom_sso);
        assert!(set.update_time.is_some());

        let linked = service
            .link_sso(from(
                &acme_bot(),
                pb::LinkSsoRequest {
                    org_id: "acme".into(),
                    member_ids: vec!["b".into(), "a".into(), "c".into()],
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .linked;
        assert_eq!(linked, 3);

        let first = list(&service, "acme", String::new()).await.unwrap();
        assert_eq!(first.total_size, 3);
        let ids: Vec<&str> = first
            .connections
            .iter()
            .map(|c| c.member_id.as_str())
            .collect();
        assert_eq!(ids, ["a", "b"]);
        assert!(first.connections.iter().all(|c| c.create_time.is_some()));
        let second = list(&service, "acme", first.next_page_token).await.unwrap();
        let ids: Vec<&str> = second
            .connections
            .iter()
            .map(|c| c.member_id.as_str())
            .collect();
        assert_eq!(ids, ["c"]);
        assert!(second.next_page_token.is_empty());

        let check = service
            .check_sso_login(from(
                &acme_bot(),
                pb::CheckSsoLoginRequest {
                    org_id: "acme".into(),
                    member_id: "zed".into(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(!check.allowed);
        assert_eq!(check.reason, "NOT_LINKED");
    }
}
