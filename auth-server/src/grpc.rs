//! The tonic adapter: each RPC parses its request into domain types, calls
//! [`App`], and converts the answer to protobuf. Errors become a
//! `tonic::Status` through the one `From<AuthError>` in [`crate::error`].

use orgauth_proto::auth::v1 as pb;
use orgauth_proto::auth::v1::auth_service_server::AuthService;
use prost_types::Timestamp;
use tonic::{Request, Response, Status};

use crate::app::App;
use crate::domain::{
    LinkBatch, LoginDecision, MemberId, Micros, OrgId, PageRequest, SsoConnection, SsoPolicy,
    UnlinkBatch, UnlinkOutcome, UnlinkResult, encode_page_token,
};

/// Serves `orgauth.auth.v1.AuthService`.
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

#[tonic::async_trait]
impl AuthService for AuthGrpc {
    async fn set_org_sso_policy(
        &self,
        request: Request<pb::SetOrgSsoPolicyRequest>,
    ) -> Result<Response<pb::SetOrgSsoPolicyResponse>, Status> {
        let request = request.into_inner();
        let org_id = OrgId::parse(request.org_id)?;
        let policy = self
            .app
            .set_policy(&org_id, request.allow_custom_sso)
            .await?;
        Ok(Response::new(pb::SetOrgSsoPolicyResponse {
            policy: Some(policy_to_pb(policy)),
        }))
    }

    async fn get_org_sso_policy(
        &self,
        request: Request<pb::GetOrgSsoPolicyRequest>,
    ) -> Result<Response<pb::GetOrgSsoPolicyResponse>, Status> {
        let org_id = OrgId::parse(request.into_inner().org_id)?;
        let policy = self.app.get_policy(&org_id).await?;
        Ok(Response::new(pb::GetOrgSsoPolicyResponse {
            policy: Some(policy_to_pb(policy)),
        }))
    }

    async fn link_sso(
        &self,
        request: Request<pb::LinkSsoRequest>,
    ) -> Result<Response<pb::LinkSsoResponse>, Status> {
        let request = request.into_inner();
        let org_id = OrgId::parse(request.org_id)?;
        let members = LinkBatch::parse(request.member_ids)?;
        let linked = self.app.link_sso(&org_id, &members).await?;
        Ok(Response::new(pb::LinkSsoResponse {
            // At most MAX_BATCH, so this never saturates.
            linked: i32::try_from(linked).unwrap_or(i32::MAX),
        }))
    }

    async fn list_sso_connections(
        &self,
        request: Request<pb::ListSsoConnectionsRequest>,
    ) -> Result<Response<pb::ListSsoConnectionsResponse>, Status> {
        let request = request.into_inner();
        let org_id = OrgId::parse(request.org_id)?;
        let page_request = PageRequest::parse(request.page_size, &request.page_token)?;
        let page = self.app.list_connections(&org_id, &page_request).await?;
        Ok(Response::new(pb::ListSsoConnectionsResponse {
            connections: page.connections.into_iter().map(connection_to_pb).collect(),
            next_page_token: page
                .next_after
                .as_ref()
                .map(encode_page_token)
                .unwrap_or_default(),
            total_size: i64::try_from(page.total_size).unwrap_or(i64::MAX),
        }))
    }

    async fn check_sso_login(
        &self,
        request: Request<pb::CheckSsoLoginRequest>,
    ) -> Result<Response<pb::CheckSsoLoginResponse>, Status> {
        let request = request.into_inner();
        let org_id = OrgId::parse(request.org_id)?;
        let member_id = MemberId::parse("member_id", request.member_id)?;
        let response = match self.app.check_sso_login(&org_id, &member_id).await? {
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
        let request = request.into_inner();
        let org_id = OrgId::parse(request.org_id)?;
        let batch = UnlinkBatch::parse(request.member_ids)?;
        let results = self.app.batch_unlink_sso(&org_id, batch).await?;
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

    use tonic::Code;

    use super::*;
    use crate::store::sqlite::SqliteStore;

    async fn service() -> (AuthGrpc, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("auth.db"))
            .await
            .unwrap();
        (AuthGrpc::new(App::new(Arc::new(store))), dir)
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

    #[tokio::test]
    async fn bad_requests_are_invalid_argument_naming_the_field() {
        let (service, _dir) = service().await;
        let status = service
            .get_org_sso_policy(Request::new(pb::GetOrgSsoPolicyRequest {
                org_id: "Not Valid".into(),
            }))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().starts_with("org_id: "),
            "{}",
            status.message()
        );

        let status = service
            .batch_unlink_sso(Request::new(pb::BatchUnlinkSsoRequest {
                org_id: "acme".into(),
                member_ids: (0..1001).map(|i| format!("m{i}")).collect(),
            }))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "member_ids: at most 1000 ids per call, got 1001"
        );

        let status = service
            .list_sso_connections(Request::new(pb::ListSsoConnectionsRequest {
                org_id: "acme".into(),
                page_size: 10,
                page_token: "garbage!".into(),
            }))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "page_token: malformed");

        let status = service
            .check_sso_login(Request::new(pb::CheckSsoLoginRequest {
                org_id: "acme".into(),
                member_id: String::new(),
            }))
            .await
            .unwrap_err();
        assert_eq!(status.message(), "member_id: must not be empty");
    }

    #[tokio::test]
    async fn link_without_policy_is_failed_precondition() {
        let (service, _dir) = service().await;
        let status = service
            .link_sso(Request::new(pb::LinkSsoRequest {
                org_id: "acme".into(),
                member_ids: vec!["m1".into()],
            }))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition);
    }

    #[tokio::test]
    async fn a_bad_member_id_is_a_per_member_error() {
        let (service, _dir) = service().await;
        let results = service
            .batch_unlink_sso(Request::new(pb::BatchUnlinkSsoRequest {
                org_id: "acme".into(),
                member_ids: vec!["m1".into(), "no spaces".into()],
            }))
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

    #[tokio::test]
    async fn policies_and_pages_round_trip() {
        let (service, _dir) = service().await;
        let unknown = service
            .get_org_sso_policy(Request::new(pb::GetOrgSsoPolicyRequest {
                org_id: "acme".into(),
            }))
            .await
            .unwrap()
            .into_inner()
            .policy
            .unwrap();
        assert!(!unknown.allow_custom_sso);
        assert_eq!(unknown.update_time, None);

        let set = service
            .set_org_sso_policy(Request::new(pb::SetOrgSsoPolicyRequest {
                org_id: "acme".into(),
                allow_custom_sso: true,
            }))
            .await
            .unwrap()
            .into_inner()
            .policy
            .unwrap();
        assert!(set.allow_custom_sso);
        assert!(set.update_time.is_some());

        let linked = service
            .link_sso(Request::new(pb::LinkSsoRequest {
                org_id: "acme".into(),
                member_ids: vec!["b".into(), "a".into(), "c".into()],
            }))
            .await
            .unwrap()
            .into_inner()
            .linked;
        assert_eq!(linked, 3);

        let first = service
            .list_sso_connections(Request::new(pb::ListSsoConnectionsRequest {
                org_id: "acme".into(),
                page_size: 2,
                page_token: String::new(),
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(first.total_size, 3);
        let ids: Vec<&str> = first
            .connections
            .iter()
            .map(|c| c.member_id.as_str())
            .collect();
        assert_eq!(ids, ["a", "b"]);
        assert!(first.connections.iter().all(|c| c.create_time.is_some()));
        let second = service
            .list_sso_connections(Request::new(pb::ListSsoConnectionsRequest {
                org_id: "acme".into(),
                page_size: 2,
                page_token: first.next_page_token,
            }))
            .await
            .unwrap()
            .into_inner();
        let ids: Vec<&str> = second
            .connections
            .iter()
            .map(|c| c.member_id.as_str())
            .collect();
        assert_eq!(ids, ["c"]);
        assert!(second.next_page_token.is_empty());

        let check = service
            .check_sso_login(Request::new(pb::CheckSsoLoginRequest {
                org_id: "acme".into(),
                member_id: "zed".into(),
            }))
            .await
            .unwrap()
            .into_inner();
        assert!(!check.allowed);
        assert_eq!(check.reason, "NOT_LINKED");
    }
}
