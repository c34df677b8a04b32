//! What each AuthService RPC does, in domain terms: takes parsed requests,
//! consults the store, and shapes the answer. No tonic types here, so the
//! rules can be tested without a server.

use std::sync::Arc;

use tracing::{debug, info};

use crate::domain::{
    LinkBatch, LoginDecision, MemberId, OrgId, PageRequest, SsoConnection, SsoPolicy, UnlinkBatch,
    UnlinkOutcome, UnlinkResult, now_micros,
};
use crate::error::AuthError;
use crate::store::AuthStore;

/// The Auth service's use cases over a store. Cheap to clone.
#[derive(Clone)]
pub struct App {
    /// Where policies and connections live; any backend.
    store: Arc<dyn AuthStore>,
}

/// One page of an org's connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionPage {
    pub connections: Vec<SsoConnection>,
    /// The last member id of this page when more follow; `None` on the last
    /// page, so a caller never fetches an empty one.
    pub next_after: Option<MemberId>,
    /// How many connections the org has in all.
    pub total_size: u64,
}

impl App {
    pub fn new(store: Arc<dyn AuthStore>) -> Self {
        App { store }
    }

    /// The store, for tools that bypass the API (benchmark seeding).
    pub fn store(&self) -> &Arc<dyn AuthStore> {
        &self.store
    }

    pub async fn set_policy(
        &self,
        org_id: &OrgId,
        allow_custom_sso: bool,
    ) -> Result<SsoPolicy, AuthError> {
        let policy = self
            .store
            .set_policy(org_id, allow_custom_sso, now_micros())
            .await?;
        info!(org_id = %org_id, allow_custom_sso, "set sso policy");
        Ok(policy)
    }

    /// The org's policy; an org Auth has never heard of disallows custom SSO.
    pub async fn get_policy(&self, org_id: &OrgId) -> Result<SsoPolicy, AuthError> {
        let policy = self.store.get_policy(org_id).await?;
        Ok(policy.unwrap_or_else(|| SsoPolicy::default_for(org_id.clone())))
    }

    /// Links the members; refused when the org disallows custom SSO.
    /// Returns how many were newly linked.
    pub async fn link_sso(&self, org_id: &OrgId, members: &LinkBatch) -> Result<u64, AuthError> {
        let linked = self.store.link(org_id, members, now_micros()).await?;
        info!(org_id = %org_id, requested = members.ids().len(), linked, "linked members");
        Ok(linked)
    }

    /// Unlinks a batch; one result per requested member, in request order.
    pub async fn batch_unlink_sso(
        &self,
        org_id: &OrgId,
        batch: UnlinkBatch,
    ) -> Result<Vec<UnlinkResult>, AuthError> {
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
        org_id: &OrgId,
        page: &PageRequest,
    ) -> Result<ConnectionPage, AuthError> {
        // One row beyond the page tells whether another page follows.
        let mut connections = self
            .store
            .list_connections(org_id, page.after.as_ref(), page.size.saturating_add(1))
            .await?;
        let more = connections.len() > page.size as usize;
        connections.truncate(page.size as usize);
        let next_after = more
            .then(|| connections.last().map(|c| c.member_id.clone()))
            .flatten();
        let total_size = self.store.count_connections(org_id).await?;
        Ok(ConnectionPage {
            connections,
            next_after,
            total_size,
        })
    }

    pub async fn check_sso_login(
        &self,
        org_id: &OrgId,
        member_id: &MemberId,
    ) -> Result<LoginDecision, AuthError> {
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
        (App::new(Arc::new(store)), dir)
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
        let policy = app.get_policy(&org("nobody")).await.unwrap();
        assert!(!policy.allow_custom_sso);
        assert_eq!(policy.update_time, None);
    }

    #[tokio::test]
    async fn set_policy_stamps_the_time() {
        let (app, _dir) = app().await;
        let before = now_micros();
        let set = app.set_policy(&org("acme"), true).await.unwrap();
        assert!(set.update_time.is_some_and(|t| t >= before));
        assert_eq!(app.get_policy(&org("acme")).await.unwrap(), set);
    }

    #[tokio::test]
    async fn policy_false_stops_links_and_one_pass_unlinks_everyone() {
        let (app, _dir) = app().await;
        let acme = org("acme");
        app.set_policy(&acme, true).await.unwrap();
        assert_eq!(
            app.link_sso(&acme, &link_batch(&["a", "b", "c"]))
                .await
                .unwrap(),
            3
        );

        // The unlink job's order: policy first, then a single pass.
        app.set_policy(&acme, false).await.unwrap();
        let err = app.link_sso(&acme, &link_batch(&["d"])).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "custom SSO is disallowed for org acme; SetOrgSsoPolicy allow_custom_sso=true first"
        );
        let results = app
            .batch_unlink_sso(&acme, unlink_batch(&["a", "b", "c", "d"]))
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
            .list_connections(&acme, &PageRequest::parse(0, "").unwrap())
            .await
            .unwrap();
        assert_eq!(page.total_size, 0);
    }

    #[tokio::test]
    async fn batch_unlink_answers_in_request_order_with_duplicates_and_bad_ids() {
        let (app, _dir) = app().await;
        let acme = org("acme");
        app.set_policy(&acme, true).await.unwrap();
        app.link_sso(&acme, &link_batch(&["m1", "m2", "m3"]))
            .await
            .unwrap();

        let request = ["m3", "ghost", "bad id", "m1", "m3", "m2"];
        let results = app
            .batch_unlink_sso(&acme, unlink_batch(&request))
            .await
            .unwrap();
        assert_eq!(
            outcomes(&results),
            vec![
                ("m3", "UNLINKED"),
                ("ghost", "NOT_LINKED"),
                ("bad id", "ERROR"),
                ("m1", "UNLINKED"),
                ("m3", "NOT_LINKED"),
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
            .batch_unlink_sso(&acme, unlink_batch(&request))
            .await
            .unwrap();
        assert_eq!(
            outcomes(&replay),
            vec![
                ("m3", "NOT_LINKED"),
                ("ghost", "NOT_LINKED"),
                ("bad id", "ERROR"),
                ("m1", "NOT_LINKED"),
                ("m3", "NOT_LINKED"),
                ("m2", "NOT_LINKED"),
            ]
        );
    }

    #[tokio::test]
    async fn a_batch_of_only_bad_ids_still_answers() {
        let (app, _dir) = app().await;
        let results = app
            .batch_unlink_sso(&org("acme"), unlink_batch(&["", "a b"]))
            .await
            .unwrap();
        assert_eq!(outcomes(&results), vec![("", "ERROR"), ("a b", "ERROR")]);
    }

    #[tokio::test]
    async fn pagination_visits_every_connection_once() {
        let (app, _dir) = app().await;
        let acme = org("acme");
        app.set_policy(&acme, true).await.unwrap();
        let ids: Vec<String> = (0..25).map(|i| format!("m{i:02}")).collect();
        app.link_sso(&acme, &LinkBatch::parse(ids.clone()).unwrap())
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
                .list_connections(&acme, &PageRequest::parse(10, &token).unwrap())
                .await
                .unwrap();
            pages += 1;
            assert_eq!(page.total_size, 25);
            seen.extend(page.connections.iter().map(|c| c.member_id.to_string()));
            match page.next_after {
                Some(last) => token = crate::domain::encode_page_token(&last),
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
        app.set_policy(&acme, true).await.unwrap();
        app.link_sso(&acme, &link_batch(&["a", "b"])).await.unwrap();
        let page = app
            .list_connections(&acme, &PageRequest::parse(2, "").unwrap())
            .await
            .unwrap();
        assert_eq!(page.connections.len(), 2);
        assert_eq!(page.next_after, None);
    }

    #[tokio::test]
    async fn check_sso_login_gives_the_reason() {
        let (app, _dir) = app().await;
        let acme = org("acme");
        let m1 = MemberId::new("m1".into()).unwrap();
        let m2 = MemberId::new("m2".into()).unwrap();
        let denied_by_policy = LoginDecision::Denied(DenyReason::PolicyDisallowsCustomSso);

        assert_eq!(
            app.check_sso_login(&acme, &m1).await.unwrap(),
            denied_by_policy
        );
        app.set_policy(&acme, true).await.unwrap();
        app.link_sso(&acme, &link_batch(&["m1"])).await.unwrap();
        assert_eq!(
            app.check_sso_login(&acme, &m1).await.unwrap(),
            LoginDecision::Allowed
        );
        assert_eq!(
            app.check_sso_login(&acme, &m2).await.unwrap(),
            LoginDecision::Denied(DenyReason::NotLinked)
        );
        // A linked member still may not sign in once the policy is off.
        app.set_policy(&acme, false).await.unwrap();
        assert_eq!(
            app.check_sso_login(&acme, &m1).await.unwrap(),
            denied_by_policy
        );
    }
}
