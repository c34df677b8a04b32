//! Test fixtures shared by the unit tests: a temporary SQLite store and an
//! in-memory Auth that records what it was asked.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::domain::job::UnlinkOutcome;
use crate::domain::org::{Member, NewOrg, OrgUpdate};
use crate::jobs::auth::{AuthCallError, AuthGateway};
use crate::store::{OrgWrite, SqliteStore, Store, StoreOptions};

pub struct TestStore {
    pub store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
}

pub async fn store() -> TestStore {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("org.db");
    let store = SqliteStore::open(path.to_str().expect("utf-8 path"), &StoreOptions::default())
        .await
        .expect("open store");
    TestStore {
        store: Arc::new(store),
        _dir: dir,
    }
}

pub fn member_id(i: usize) -> String {
    format!("m{i:07}")
}

/// Creates an org that allows custom SSO with `members` members.
pub async fn org_with_members(store: &dyn Store, org_id: &str, members: usize) {
    store
        .create_org(&NewOrg {
            id: Some(org_id.into()),
            display_name: org_id.into(),
            allow_custom_sso: true,
            request_id: None,
        })
        .await
        .expect("create org");
    let ids: Vec<usize> = (0..members).collect();
    for chunk in ids.chunks(1000) {
        let batch: Vec<Member> = chunk
            .iter()
            .map(|&i| Member {
                id: member_id(i),
                email: String::new(),
            })
            .collect();
        store
            .add_members(org_id, &batch)
            .await
            .expect("add members");
    }
}

pub async fn set_allow(store: &dyn Store, org_id: &str, allow: bool) -> OrgWrite {
    store
        .update_org(&OrgUpdate {
            org_id: org_id.into(),
            display_name: None,
            allow_custom_sso: Some(allow),
            expected_etag: None,
            request_id: None,
        })
        .await
        .expect("update org")
}

/// An Auth service in memory. Every member starts linked.
#[derive(Default)]
pub struct FakeAuth {
    pub linked: Mutex<BTreeSet<String>>,
    /// Every call in order: "policy:false", "unlink:m0000000..m0000099".
    pub calls: Mutex<Vec<String>>,
    /// Fail this many of the next calls with UNAVAILABLE.
    pub fail_next: AtomicUsize,
    /// Members Auth refuses to unlink, with a permanent per-member error.
    pub refuse: Mutex<BTreeSet<String>>,
    in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
    pub policies: Mutex<HashMap<String, bool>>,
}

impl FakeAuth {
    pub fn with_linked(members: usize) -> Arc<Self> {
        let auth = FakeAuth::default();
        *auth.linked.lock().unwrap() = (0..members).map(member_id).collect();
        Arc::new(auth)
    }

    fn maybe_fail(&self) -> Result<(), AuthCallError> {
        let failed = self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failed {
            return Err(AuthCallError {
                code: "UNAVAILABLE".into(),
                message: "connection refused".into(),
                transient: true,
            });
        }
        Ok(())
    }
}

#[async_trait]
impl AuthGateway for FakeAuth {
    async fn set_sso_policy(&self, org_id: &str, allow: bool) -> Result<(), AuthCallError> {
        self.maybe_fail()?;
        self.calls.lock().unwrap().push(format!("policy:{allow}"));
        self.policies.lock().unwrap().insert(org_id.into(), allow);
        Ok(())
    }

    async fn batch_unlink(
        &self,
        _org_id: &str,
        member_ids: &[String],
    ) -> Result<Vec<UnlinkOutcome>, AuthCallError> {
        self.maybe_fail()?;
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        // Let other batches start, so parallelism is actually exercised.
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        self.calls.lock().unwrap().push(format!(
            "unlink:{}..{}",
            member_ids.first().map_or("", String::as_str),
            member_ids.last().map_or("", String::as_str)
        ));
        let refuse = self.refuse.lock().unwrap().clone();
        let mut linked = self.linked.lock().unwrap();
        let outcomes = member_ids
            .iter()
            .map(|id| {
                if refuse.contains(id) {
                    UnlinkOutcome::Failed {
                        code: "FAILED_PRECONDITION".into(),
                        message: "member is locked".into(),
                    }
                } else if linked.remove(id) {
                    UnlinkOutcome::Unlinked
                } else {
                    UnlinkOutcome::NotLinked
                }
            })
            .collect();
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        Ok(outcomes)
    }
}
