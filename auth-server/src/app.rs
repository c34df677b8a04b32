//! What each AuthService RPC does, in domain terms: takes parsed requests
//! and the authenticated caller, decides whether the caller may, consults
//! the store, and shapes the answer. No tonic types here, so the rules can
//! be tested without a server.
//!
//! Each use case runs in the same order: the request was validated when it
//! was parsed (INVALID_ARGUMENT), then [`authorize`] decides
//! (PERMISSION_DENIED), and only then is storage touched. A refused call
//! has read and written nothing.

use std::sync::Arc;

use orgauth_security::{Caller, PageTokenSealer, Role};
use tracing::{debug, info};

use crate::domain::{
    LinkBatch, LoginDecision, MemberId, OrgId, PageRequest, PageTokens, SsoConnection, SsoPolicy,
    UnlinkBatch, UnlinkOutcome, UnlinkResult, now_micros,
};
use crate::error::AuthError;
use crate::store::AuthStore;

/// The RPCs of AuthService, as authorization sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rpc {
    SetOrgSsoPolicy,
    GetOrgSsoPolicy,
    LinkSso,
    ListSsoConnections,
    CheckSsoLogin,
    BatchUnlinkSso,
}

impl Rpc {
    pub const ALL: [Rpc; 6] = [
        Rpc::SetOrgSsoPolicy,
        Rpc::GetOrgSsoPolicy,
        Rpc::LinkSso,
        Rpc::ListSsoConnections,
        Rpc::CheckSsoLogin,
        Rpc::BatchUnlinkSso,
    ];

    /// The RPC's name in the API.
    pub fn name(self) -> &'static str {
        match self {
            Rpc::SetOrgSsoPolicy => "SetOrgSsoPolicy",
            Rpc::GetOrgSsoPolicy => "GetOrgSsoPolicy",
            Rpc::LinkSso => "LinkSso",
            Rpc::ListSsoConnections => "ListSsoConnections",
            Rpc::CheckSsoLogin => "CheckSsoLogin",
            Rpc::BatchUnlinkSso => "BatchUnlinkSso",
        }
    }

    /// Whether only the `service` role may call it: the two RPCs with which
    /// org-server, the source of truth, brings Auth in line with an org's
    /// setting. Anyone else calling them could turn an org's SSO on behind
    /// org-server's back, or sign its members out.
    pub fn service_only(self) -> bool {
        matches!(self, Rpc::SetOrgSsoPolicy | Rpc::BatchUnlinkSso)
    }
}

/// Whether `caller` may call `rpc` on `org_id`.
///
/// | RPC | `service` | `admin` | `org` |
/// | --- | --- | --- | --- |
/// | SetOrgSsoPolicy, BatchUnlinkSso | any org | `ROLE_NOT_PERMITTED` | `ROLE_NOT_PERMITTED` |
/// | GetOrgSsoPolicy, LinkSso, ListSsoConnections, CheckSsoLogin | any org | any org | its orgs; others `ORG_ACCESS_DENIED` |
///
/// Both refusals are PERMISSION_DENIED. A refusal says nothing about the
/// org (whether Auth knows it, its policy, its connections): it is decided
/// before storage is read.
pub fn authorize(caller: &Caller, rpc: Rpc, org_id: &OrgId) -> Result<(), AuthError> {
    match (rpc.service_only(), caller.role) {
        (_, Role::Service) | (false, Role::Admin) => Ok(()),
        (false, Role::Org) if caller.covers_org(org_id.as_str()) => Ok(()),
        (false, Role::Org) => Err(AuthError::OrgAccessDenied {
            caller: caller.name.to_string(),
            org_id: org_id.to_string(),
        }),
        (true, Role::Admin | Role::Org) => Err(AuthError::RoleNotPermitted {
            rpc: rpc.name(),
            caller: caller.name.to_string(),
            role: caller.role,
        }),
    }
}

/// The Auth service's use cases over a store. Cheap to clone.
#[derive(Clone)]
pub struct App {
    /// Where policies and connections live; any backend.
    store: Arc<dyn AuthStore>,
    /// Seals and opens ListSsoConnections' page tokens.
    pages: PageTokens,
}

/// One page of an org's connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionPage {
    pub connections: Vec<SsoConnection>,
    /// The sealed token of the next page when more follow; `None` on the
    /// last page, so a caller never fetches an empty one.
    pub next_page_token: Option<String>,
    /// How many connections the org has in all.
    pub total_size: u64,
}

impl App {
    pub fn new(store: Arc<dyn AuthStore>, pages: PageTokens) -> Self {
        App { store, pages }
    }

    /// An app over `store`, sealing page tokens with the key kept in it
    /// (created on first use).
    pub async fn open(store: Arc<dyn AuthStore>) -> Result<Self, AuthError> {
        let key = store.page_token_key().await?;
        let sealer = PageTokenSealer::new(&key)
            .map_err(|reason| AuthError::Internal(format!("stored page token key: {reason}")))?;
        Ok(App::new(store, PageTokens::new(sealer)))
    }

    /// The store, for tools that bypass the API (benchmark seeding).
    pub fn store(&self) -> &Arc<dyn AuthStore> {
        &self.store
    }

    /// Validates the paging fields of a ListSsoConnections request for
    /// `org_id`: the page token must be one this service sealed for that org.
    pub fn page_request(
        &self,
        org_id: &OrgId,
        page_size: i32,
        page_token: &str,
    ) -> Result<PageRequest, AuthError> {
        PageRequest::parse(page_size, page_token, org_id, &self.pages)
    }

    pub async fn set_policy(
        &self,
        caller: &Caller,
        org_id: &OrgId,
        allow_custom_sso: bool,
    ) -> Result<SsoPolicy, AuthError> {
        authorize(caller, Rpc::SetOrgSsoPolicy, org_id)?;
        let policy = self
            .store
            .set_policy(org_id, allow_custom_sso, now_micros())
            .await?;
        info!(org_id = %org_id, allow_custom_sso, caller = %caller.name, "set sso policy");
        Ok(policy)
    }

    /// The org's policy; an org Auth has never heard of disallows custom SSO.
    pub async fn get_policy(
        &self,
        caller: &Caller,
        org_id: &OrgId,
    ) -> Result<SsoPolicy, AuthError> {
        authorize(caller, Rpc::GetOrgSsoPolicy, org_id)?;
        let policy = self.store.get_policy(org_id).await?;
        Ok(policy.unwrap_or_else(|| SsoPolicy::default_for(org_id.clone())))
    }

    /// Links the members; refused when the org disallows custom SSO.
    /// Returns how many were newly linked.
    pub async fn link_sso(
        &self,
        caller: &Caller,
        org_id: &OrgId,
        members: &LinkBatch,
    ) -> Result<u64, AuthError> {
        authorize(caller, Rpc::LinkSso, org_id)?;
        let linked = self.store.link(org_id, members, now_micros()).await?;
        info!(
            org_id = %org_id,
            requested = members.ids().len(),
            linked,
            caller = %caller.name,
            "linked members"
        );
        Ok(linked)
    }

    /// Unlinks a batch; one result per requested member, in request order.
    pub async fn batch_unlink_sso(
        &self,
        caller: &Caller,
        org_id: &OrgId,
        batch: UnlinkBatch,
    ) -> Result<Vec<UnlinkResult>, AuthError> {
        authorize(caller, Rpc::BatchUnlinkSso, org_id)?;
        // An all-invalid batch still answers, without a database round trip.
        let unlinked = if batch.to_unlink().is_empty() {
            Vec::new()
        } else {
            self.store.unlink(org_id, batch.to_unlink()).await?
        };
        let results = batch.into_results(&unlinked);
        let invalid = results
            .iter()
            .filter(|r| matches!(r.outcome, UnlinkOutcome::Invalid { .. }))
            .count();
        // Debug, not info: a large org's unlink runs thousands of these, and
        // org-server's job already reports the totals.
        debug!(
            org_id = %org_id,
            requested = results.len(),
            unlinked = unlinked.len(),
            invalid,
            "unlinked batch"
        );
        Ok(results)
    }

    pub async fn list_connections(
        &self,
        caller: &Caller,
        org_id: &OrgId,
        page: &PageRequest,
    ) -> Result<ConnectionPage, AuthError> {
        authorize(caller, Rpc::ListSsoConnections, org_id)?;
        // One row beyond the page tells whether another page follows.
        let mut connections = self
            .store
            .list_connections(org_id, page.after.as_ref(), page.size.saturating_add(1))
            .await?;
        let more = connections.len() > page.size as usize;
        connections.truncate(page.size as usize);
        let next_page_token = more
            .then(|| connections.last())
            .flatten()
            .map(|last| self.pages.seal(org_id, &last.member_id));
        let total_size = self.store.count_connections(org_id).await?;
        Ok(ConnectionPage {
            connections,
            next_page_token,
            total_size,
        })
    }

    pub async fn check_sso_login(
        &self,
        caller: &Caller,
        org_id: &OrgId,
        member_id: &MemberId,
    ) -> Result<LoginDecision, AuthError> {
        authorize(caller, Rpc::CheckSsoLogin, org_id)?;
        let facts = self.store.login_facts(org_id, member_id).await?;
        Ok(LoginDecision::decide(facts.policy_allows, facts.linked))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::DenyReason;
    use crate::store::sqlite::SqliteStore;

    async fn app() -> (App, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("auth.db"))
            .await
            .unwrap();
        (App::open(Arc::new(store)).await.unwrap(), dir)
    }

    fn service() -> Caller {
        Caller::new("org-server", Role::Service, [])
    }

    fn org(id: &str) -> OrgId {
        OrgId::parse(id.to_owned()).unwrap()
    }

    fn link_batch(ids: &[&str]) -> LinkBatch {
        LinkBatch::parse(ids.iter().map(|&id| id.to_owned()).collect()).unwrap()
    }

    fn unlink_batch(ids: &[&str]) -> UnlinkBatch {
        UnlinkBatch::parse(ids.iter().map(|&id| id.to_owned()).collect()).unwrap()
    }

    fn outcomes(results: &[UnlinkResult]) -> Vec<(&str, &str)> {
        results
            .iter()
            .map(|r| {
                let outcome = match r.outcome {
                    UnlinkOutcome::Unlinked => "UNLINKED",
                    UnlinkOutcome::NotLinked => "NOT_LINKED",
                    UnlinkOutcome::Invalid { .. } => "ERROR",
                };
                (r.member_id.as_str(), outcome)
            })
            .collect()
    }

    #[tokio::test]
    async fn an_unknown_org_has_the_safe_default_policy() {
        let (app, _dir) = app().await;
        let policy = app.get_policy(&service(), &org("nobody")).await.unwrap();
        assert!(!policy.allow_custom_sso);
        assert_eq!(policy.update_time, None);
    }

    #[tokio::test]
    async fn set_policy_stamps_the_time() {
        let (app, _dir) = app().await;
        let before = now_micros();
        let set = app
            .set_policy(&service(), &org("acme"), true)
            .await
            .unwrap();
        assert!(set.update_time.is_some_and(|t| t >= before));
        assert_eq!(app.get_policy(&service(), &org("acme")).await.unwrap(), set);
    }

    #[tokio::test]
    async fn policy_false_stops_links_and_one_pass_unlinks_everyone() {
        let (app, _dir) = app().await;
        let acme = org("acme");
        app.set_policy(&service(), &acme, true).await.unwrap();
        assert_eq!(
            app.link_sso(&service(), &acme, &link_batch(&["a", "b", "c"]))
                .await
                .unwrap(),
            3
        );

        // The unlink job's order: policy first, then a single pass.
        app.set_policy(&service(), &acme, false).await.unwrap();
        let err = app
            .link_sso(&service(), &acme, &link_batch(&["d"]))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "custom SSO is disallowed for org acme; SetOrgSsoPolicy allow_custom_sso=true first"
        );
        let results = app
            .batch_unlink_sso(&service(), &acme, unlink_batch(&["a", "b", "c", "d"]))
            .await
            .unwrap();
        assert_eq!(
            outcomes(&results),
            vec![
                ("a", "UNLINKED"),
                ("b", "UNLINKED"),
                ("c", "UNLINKED"),
                ("d", "NOT_LINKED")
            ]
        );
        let page = app
            .list_connections(&service(), &acme, &app.page_request(&acme, 0, "").unwrap())
            .await
            .unwrap();
        assert_eq!(page.total_size, 0);
    }

    #[tokio::test]
    async fn batch_unlink_answers_in_request_order_with_bad_ids() {
        let (app, _dir) = app().await;
        let acme = org("acme");
        app.set_policy(&service(), &acme, true).await.unwrap();
        app.link_sso(&service(), &acme, &link_batch(&["m1", "m2", "m3"]))
            .await
            .unwrap();

        let request = ["m3", "ghost", "bad id", "m1", "m2"];
        let results = app
            .batch_unlink_sso(&service(), &acme, unlink_batch(&request))
            .await
            .unwrap();
        assert_eq!(
            outcomes(&results),
            vec![
                ("m3", "UNLINKED"),
                ("ghost", "NOT_LINKED"),
                ("bad id", "ERROR"),
                ("m1", "UNLINKED"),
                ("m2", "UNLINKED"),
            ]
        );
        let UnlinkOutcome::Invalid { reason } = &results[2].outcome else {
            panic!("{results:?}");
        };
        assert!(
            reason.starts_with("member_ids[2]: \"bad id\" is not a valid member id"),
            "{reason}"
        );

        // Replaying the batch is harmless: everything is already unlinked.
        let replay = app
            .batch_unlink_sso(&service(), &acme, unlink_batch(&request))
            .await
            .unwrap();
        assert_eq!(
            outcomes(&replay),
            vec![
                ("m3", "NOT_LINKED"),
                ("ghost", "NOT_LINKED"),
                ("bad id", "ERROR"),
                ("m1", "NOT_LINKED"),
                ("m2", "NOT_LINKED"),
            ]
        );
    }

    #[tokio::test]
    async fn a_batch_of_only_bad_ids_still_answers() {
        let (app, _dir) = app().await;
        let results = app
            .batch_unlink_sso(&service(), &org("acme"), unlink_batch(&["", "a b"]))
            .await
            .unwrap();
        assert_eq!(outcomes(&results), vec![("", "ERROR"), ("a b", "ERROR")]);
    }

    #[tokio::test]
    async fn pagination_visits_every_connection_once() {
        let (app, _dir) = app().await;
        let acme = org("acme");
        app.set_policy(&service(), &acme, true).await.unwrap();
        let ids: Vec<String> = (0..25).map(|i| format!("m{i:02}")).collect();
        app.link_sso(&service(), &acme, &LinkBatch::parse(ids.clone()).unwrap())
            .await
            .unwrap();
        // Another org's connections must not leak into acme's pages.
        app.store()
            .seed_connections(&org("globex"), &[MemberId::new("m00".into()).unwrap()], 1)
            .await
            .unwrap();

        let mut seen = Vec::new();
        let mut token = String::new();
        let mut pages = 0;
        loop {
            let page = app
                .list_connections(
                    &service(),
                    &acme,
                    &app.page_request(&acme, 10, &token).unwrap(),
                )
                .await
                .unwrap();
            pages += 1;
            assert_eq!(page.total_size, 25);
            seen.extend(page.connections.iter().map(|c| c.member_id.to_string()));
            match page.next_page_token {
                Some(next) => token = next,
                None => break,
            }
        }
        assert_eq!(pages, 3);
        assert_eq!(seen, ids);
    }

    #[tokio::test]
    async fn an_exactly_full_last_page_has_no_next_token() {
        let (app, _dir) = app().await;
        let acme = org("acme");
        app.set_policy(&service(), &acme, true).await.unwrap();
        app.link_sso(&service(), &acme, &link_batch(&["a", "b"]))
            .await
            .unwrap();
        let page = app
            .list_connections(&service(), &acme, &app.page_request(&acme, 2, "").unwrap())
            .await
            .unwrap();
        assert_eq!(page.connections.len(), 2);
        assert_eq!(page.next_page_token, None);
    }

    #[tokio::test]
    async fn check_sso_login_gives_the_reason() {
        let (app, _dir) = app().await;
        let acme = org("acme");
        let m1 = MemberId::new("m1".into()).unwrap();
        let m2 = MemberId::new("m2".into()).unwrap();
        let denied_by_policy = LoginDecision::Denied(DenyReason::PolicyDisallowsCustomSso);

        assert_eq!(
            app.check_sso_login(&service(), &acme, &m1).await.unwrap(),
            denied_by_policy
        );
        app.set_policy(&service(), &acme, true).await.unwrap();
        app.link_sso(&service(), &acme, &link_batch(&["m1"]))
            .await
            .unwrap();
        assert_eq!(
            app.check_sso_login(&service(), &acme, &m1).await.unwrap(),
            LoginDecision::Allowed
        );
        assert_eq!(
            app.check_sso_login(&service(), &acme, &m2).await.unwrap(),
            LoginDecision::Denied(DenyReason::NotLinked)
        );
        // A linked member still may not sign in once the policy is off.
        app.set_policy(&service(), &acme, false).await.unwrap();
        assert_eq!(
            app.check_sso_login(&service(), &acme, &m1).await.unwrap(),
            denied_by_policy
        );
    }

    fn admin() -> Caller {
        Caller::new("ops", Role::Admin, [])
    }

    fn acme_bot() -> Caller {
        Caller::new(
            "acme-bot",
            Role::Org,
            ["acme".to_owned(), "acme-eu".to_owned()],
        )
    }

    /// What `authorize` answers: "ok" or the refusal's reason.
    fn verdict(caller: &Caller, rpc: Rpc, org_id: &str) -> &'static str {
        match authorize(caller, rpc, &org(org_id)) {
            Ok(()) => "ok",
            Err(err) => {
                assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
                err.reason()
            }
        }
    }

    #[test]
    fn authorization_matrix() {
        use Rpc::*;
        let cases = [
            (
                SetOrgSsoPolicy,
                [
                    "ok",
                    "ROLE_NOT_PERMITTED",
                    "ROLE_NOT_PERMITTED",
                    "ROLE_NOT_PERMITTED",
                ],
            ),
            (
                BatchUnlinkSso,
                [
                    "ok",
                    "ROLE_NOT_PERMITTED",
                    "ROLE_NOT_PERMITTED",
                    "ROLE_NOT_PERMITTED",
                ],
            ),
            (GetOrgSsoPolicy, ["ok", "ok", "ok", "ORG_ACCESS_DENIED"]),
            (LinkSso, ["ok", "ok", "ok", "ORG_ACCESS_DENIED"]),
            (ListSsoConnections, ["ok", "ok", "ok", "ORG_ACCESS_DENIED"]),
            (CheckSsoLogin, ["ok", "ok", "ok", "ORG_ACCESS_DENIED"]),
        ];
        assert_eq!(cases.len(), Rpc::ALL.len());
        for (rpc, [by_service, by_admin, by_org_own, by_org_other]) in cases {
            for org_id in ["acme", "globex"] {
                assert_eq!(verdict(&service(), rpc, org_id), by_service, "{rpc:?}");
                assert_eq!(verdict(&admin(), rpc, org_id), by_admin, "{rpc:?}");
            }
            assert_eq!(verdict(&acme_bot(), rpc, "acme"), by_org_own, "{rpc:?}");
            assert_eq!(verdict(&acme_bot(), rpc, "acme-eu"), by_org_own, "{rpc:?}");
            assert_eq!(verdict(&acme_bot(), rpc, "globex"), by_org_other, "{rpc:?}");
            // A prefix of a covered org is another org.
            assert_eq!(verdict(&acme_bot(), rpc, "acm"), by_org_other, "{rpc:?}");
        }
    }

    #[tokio::test]
    async fn refused_calls_change_nothing() {
        let (app, _dir) = app().await;
        let acme = org("acme");
        let globex = org("globex");
        app.set_policy(&service(), &acme, true).await.unwrap();
        app.set_policy(&service(), &globex, true).await.unwrap();
        app.link_sso(&service(), &acme, &link_batch(&["m1"]))
            .await
            .unwrap();

        for caller in [admin(), acme_bot()] {
            let err = app.set_policy(&caller, &acme, false).await.unwrap_err();
            assert_eq!(err.reason(), "ROLE_NOT_PERMITTED");
            let err = app
                .batch_unlink_sso(&caller, &acme, unlink_batch(&["m1"]))
                .await
                .unwrap_err();
            assert_eq!(err.reason(), "ROLE_NOT_PERMITTED");
        }
        let err = app
            .link_sso(&acme_bot(), &globex, &link_batch(&["m2"]))
            .await
            .unwrap_err();
        assert_eq!(err.reason(), "ORG_ACCESS_DENIED");

        assert!(
            app.get_policy(&admin(), &acme)
                .await
                .unwrap()
                .allow_custom_sso
        );
        let all = app.page_request(&acme, 0, "").unwrap();
        let page = app.list_connections(&admin(), &acme, &all).await.unwrap();
        assert_eq!(page.total_size, 1, "m1 still linked");
        let all = app.page_request(&globex, 0, "").unwrap();
        let page = app.list_connections(&admin(), &globex, &all).await.unwrap();
        assert_eq!(page.total_size, 0, "nothing linked in globex");
    }

    #[tokio::test]
    async fn page_tokens_survive_a_restart_and_stay_in_their_org() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.db");
        let store = Arc::new(SqliteStore::open(&path).await.unwrap());
        let app = App::open(store.clone()).await.unwrap();
        let acme = org("acme");
        app.set_policy(&service(), &acme, true).await.unwrap();
        app.link_sso(&service(), &acme, &link_batch(&["a", "b", "c"]))
            .await
            .unwrap();
        let first = app
            .list_connections(&admin(), &acme, &app.page_request(&acme, 2, "").unwrap())
            .await
            .unwrap();
        let token = first.next_page_token.unwrap();
        store.close().await;
        drop(app);

        let app = App::open(Arc::new(SqliteStore::open(&path).await.unwrap()))
            .await
            .unwrap();
        let rest = app
            .list_connections(
                &admin(),
                &acme,
                &app.page_request(&acme, 2, &token).unwrap(),
            )
            .await
            .unwrap();
        let ids: Vec<&str> = rest
            .connections
            .iter()
            .map(|c| c.member_id.as_str())
            .collect();
        assert_eq!(ids, ["c"]);

        let err = app.page_request(&org("globex"), 2, &token).unwrap_err();
        assert!(
            matches!(&err, AuthError::InvalidArgument { field, .. } if field == "page_token"),
            "{err:?}"
        );

        // Another database, another key: its tokens do not open here.
        let (other, _other_dir) = self::app().await;
        let err = other.page_request(&acme, 2, &token).unwrap_err();
        assert_eq!(err.reason(), "INVALID_FIELD");
    }
}
