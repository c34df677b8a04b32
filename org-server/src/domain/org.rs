//! Organizations and members: validation of what callers send, and the plan
//! that an update turns into.
//!
//! `plan_update` is where the UpdateOrg rules live (etag check, which fields
//! change, whether Auth must be brought in line). Storage runs it inside its
//! transaction, so the rules are the same on every backend and are unit
//! tested here without a database.

use serde::{Deserialize, Serialize};

use super::Micros;
use super::job::JobKind;
use crate::error::{Error, Result};

/// Most members one AddMembers or RemoveMembers call may carry.
pub const MAX_MEMBERS_PER_CALL: usize = 1000;
/// Longest display name, in characters.
pub const MAX_DISPLAY_NAME_CHARS: usize = 200;
/// Longest idempotency key, in characters.
pub const MAX_REQUEST_ID_CHARS: usize = 128;
/// Longest member id, in characters.
pub const MAX_MEMBER_ID_CHARS: usize = 128;
/// Longest email address, in characters (RFC 5321 path limit rounded up).
pub const MAX_EMAIL_CHARS: usize = 320;

/// An organization as org-server stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Org {
    pub id: String,
    pub display_name: String,
    pub allow_custom_sso: bool,
    /// Bumped by every update of the org row; the etag is derived from it.
    pub revision: i64,
    /// Maintained by AddMembers/RemoveMembers so that jobs and GetOrg know
    /// the org's size without counting rows.
    pub member_count: i64,
    pub create_time: Micros,
    pub update_time: Micros,
}

impl Org {
    /// The opaque etag callers send back for conditional updates.
    pub fn etag(&self) -> String {
        format!("r{}", self.revision)
    }
}

/// A member of an organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    pub email: String,
}

/// A validated CreateOrg request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrg {
    /// `None` asks the server to assign an id.
    pub id: Option<String>,
    pub display_name: String,
    pub allow_custom_sso: bool,
    pub request_id: Option<String>,
}

impl NewOrg {
    pub fn parse(
        id: String,
        display_name: String,
        allow_custom_sso: bool,
        request_id: String,
    ) -> Result<Self> {
        let id = if id.is_empty() {
            None
        } else {
            validate_org_id("org.id", &id)?;
            Some(id)
        };
        validate_display_name("org.display_name", &display_name)?;
        Ok(NewOrg {
            id,
            display_name,
            allow_custom_sso,
            request_id: parse_request_id(request_id)?,
        })
    }

    /// The job a new org needs so that Auth mirrors it. Auth treats an org it
    /// has never heard of as disallowing custom SSO, so only `true` needs one.
    pub fn job_kind(&self) -> Option<JobKind> {
        self.allow_custom_sso.then_some(JobKind::EnableCustomSso)
    }

    /// What makes two CreateOrg requests "the same" for idempotency.
    pub fn fingerprint(&self) -> String {
        format!(
            "create|{}|{}|{}",
            self.id.as_deref().unwrap_or(""),
            self.display_name,
            self.allow_custom_sso
        )
    }
}

/// A validated UpdateOrg request: only the masked fields are `Some`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgUpdate {
    pub org_id: String,
    pub display_name: Option<String>,
    pub allow_custom_sso: Option<bool>,
    /// Non-empty etag: update only if the org still has it.
    pub expected_etag: Option<String>,
    pub request_id: Option<String>,
}

/// The paths UpdateOrg accepts in its field mask.
pub const UPDATABLE_PATHS: &[&str] = &["display_name", "allow_custom_sso"];

impl OrgUpdate {
    /// Validates an UpdateOrg request. An empty mask is refused rather than
    /// read as "replace everything": with proto3 defaults, a forgotten mask
    /// would silently turn `allow_custom_sso` off and unlink every member.
    pub fn parse(
        org_id: String,
        display_name: String,
        allow_custom_sso: bool,
        etag: String,
        mask_paths: &[String],
        request_id: String,
    ) -> Result<Self> {
        if org_id.is_empty() {
            return Err(Error::invalid(
                "org.id",
                "required: names the org to update",
            ));
        }
        validate_org_id("org.id", &org_id)?;
        if mask_paths.is_empty() {
            return Err(Error::invalid(
                "update_mask",
                format!(
                    "required: name the fields to change, any of {}",
                    UPDATABLE_PATHS.join(", ")
                ),
            ));
        }
        let mut update = OrgUpdate {
            org_id,
            display_name: None,
            allow_custom_sso: None,
            expected_etag: (!etag.is_empty()).then_some(etag),
            request_id: parse_request_id(request_id)?,
        };
        for path in mask_paths {
            match path.as_str() {
                "display_name" => {
                    validate_display_name("org.display_name", &display_name)?;
                    update.display_name = Some(display_name.clone());
                }
                "allow_custom_sso" => update.allow_custom_sso = Some(allow_custom_sso),
                other => {
                    return Err(Error::invalid(
                        "update_mask",
                        format!(
                            "unknown or immutable path {other:?}; updatable paths are {}",
                            UPDATABLE_PATHS.join(", ")
                        ),
                    ));
                }
            }
        }
        Ok(update)
    }

    /// What makes two UpdateOrg requests "the same" for idempotency.
    pub fn fingerprint(&self) -> String {
        format!(
            "update|{}|{:?}|{:?}|{:?}",
            self.org_id, self.display_name, self.allow_custom_sso, self.expected_etag
        )
    }
}

/// What an update does: the org row to write and the job to enqueue with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdatePlan {
    pub org: Org,
    /// False when every masked field already had its requested value: nothing
    /// is written and the etag stays the same.
    pub changed: bool,
    pub job: Option<JobKind>,
}

/// Decides what an update does to `current`. Pure: storage calls it inside
/// the transaction that read `current`.
pub fn plan_update(current: &Org, update: &OrgUpdate, now: Micros) -> Result<UpdatePlan> {
    if let Some(etag) = &update.expected_etag
        && *etag != current.etag()
    {
        return Err(Error::Aborted(format!(
            "org {} was modified concurrently: etag {etag:?} is stale, current etag is {:?}; \
             re-read the org and retry",
            current.id,
            current.etag()
        )));
    }
    let mut org = current.clone();
    if let Some(name) = &update.display_name {
        org.display_name.clone_from(name);
    }
    let mut job = None;
    if let Some(allow) = update.allow_custom_sso
        && allow != current.allow_custom_sso
    {
        org.allow_custom_sso = allow;
        job = Some(if allow {
            JobKind::EnableCustomSso
        } else {
            JobKind::DisableCustomSso
        });
    }
    let changed = org != *current;
    if changed {
        org.revision += 1;
        org.update_time = now;
    }
    Ok(UpdatePlan { org, changed, job })
}

/// `[a-z0-9][a-z0-9-]{0,62}`: safe in URLs, logs and file names.
pub fn validate_org_id(field: &str, id: &str) -> Result<()> {
    if orgauth_security::is_valid_org_id(id) {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!(
                "{:?} is not a valid org id: use 1 to 63 characters of [a-z0-9-], starting with a letter or digit",
                truncate_for_message(id)
            ),
        ))
    }
}

/// 1 to 128 characters of `[A-Za-z0-9._@+-]`.
pub fn validate_member_id(field: &str, id: &str) -> Result<()> {
    let valid = !id.is_empty()
        && id.len() <= MAX_MEMBER_ID_CHARS
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@+-".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!(
                "{:?} is not a valid member id: use 1 to {MAX_MEMBER_ID_CHARS} characters of [A-Za-z0-9._@+-]",
                truncate_for_message(id)
            ),
        ))
    }
}

fn validate_email(field: &str, email: &str) -> Result<()> {
    if email.is_empty() {
        return Ok(());
    }
    let well_formed = email.chars().count() <= MAX_EMAIL_CHARS
        && !email.chars().any(|c| c.is_control() || c.is_whitespace())
        && matches!(email.split_once('@'), Some((local, domain)) if !local.is_empty() && !domain.is_empty() && !domain.contains('@'));
    if well_formed {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!(
                "{:?} is not an email address (local@domain, at most {MAX_EMAIL_CHARS} characters)",
                truncate_for_message(email)
            ),
        ))
    }
}

fn validate_display_name(field: &str, name: &str) -> Result<()> {
    if name.trim().is_empty() {
        return Err(Error::invalid(field, "required: must not be blank"));
    }
    if name.chars().count() > MAX_DISPLAY_NAME_CHARS {
        return Err(Error::invalid(
            field,
            format!("at most {MAX_DISPLAY_NAME_CHARS} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(())
}

fn parse_request_id(request_id: String) -> Result<Option<String>> {
    if request_id.is_empty() {
        return Ok(None);
    }
    if request_id.chars().count() > MAX_REQUEST_ID_CHARS
        || request_id.chars().any(|c| c.is_control())
    {
        return Err(Error::invalid(
            "request_id",
            format!("at most {MAX_REQUEST_ID_CHARS} printable characters"),
        ));
    }
    Ok(Some(request_id))
}

/// Validates an AddMembers batch: 1 to 1,000 members, distinct, well formed.
pub fn validate_new_members(members: &[Member]) -> Result<()> {
    check_batch_len("members", members.len())?;
    let mut seen = std::collections::HashSet::with_capacity(members.len());
    for (i, member) in members.iter().enumerate() {
        validate_member_id(&format!("members[{i}].id"), &member.id)?;
        validate_email(&format!("members[{i}].email"), &member.email)?;
        if !seen.insert(member.id.as_str()) {
            return Err(Error::invalid(
                format!("members[{i}].id"),
                format!("duplicate member id {:?} in one request", member.id),
            ));
        }
    }
    Ok(())
}

/// Validates a RemoveMembers batch: 1 to 1,000 distinct, well-formed ids.
pub fn validate_member_ids(ids: &[String]) -> Result<()> {
    check_batch_len("member_ids", ids.len())?;
    let mut seen = std::collections::HashSet::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        validate_member_id(&format!("member_ids[{i}]"), id)?;
        if !seen.insert(id.as_str()) {
            return Err(Error::invalid(
                format!("member_ids[{i}]"),
                format!("duplicate member id {id:?} in one request"),
            ));
        }
    }
    Ok(())
}

fn check_batch_len(field: &str, len: usize) -> Result<()> {
    if len == 0 {
        return Err(Error::invalid(field, "required: at least one"));
    }
    if len > MAX_MEMBERS_PER_CALL {
        return Err(Error::invalid(
            field,
            format!("at most {MAX_MEMBERS_PER_CALL} per call, got {len}"),
        ));
    }
    Ok(())
}

/// Keeps error messages short when a caller sends a huge string.
fn truncate_for_message(s: &str) -> String {
    const SHOWN: usize = 64;
    if s.chars().count() <= SHOWN {
        s.to_owned()
    } else {
        let head: String = s.chars().take(SHOWN).collect();
        format!("{head}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn org(allow: bool) -> Org {
        Org {
            id: "acme".into(),
            display_name: "Acme".into(),
            allow_custom_sso: allow,
            revision: 3,
            member_count: 10,
            create_time: 1,
            update_time: 2,
        }
    }

    fn update(mask: &[&str], allow: bool, etag: &str) -> Result<OrgUpdate> {
        OrgUpdate::parse(
            "acme".into(),
            "New name".into(),
            allow,
            etag.into(),
            &mask.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            String::new(),
        )
    }

    fn field_of(err: Error) -> String {
        match err {
            Error::InvalidArgument { field, .. } => field,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn org_ids() {
        for ok in ["a", "acme", "0", "acme-corp-2", &"a".repeat(63)] {
            validate_org_id("f", ok).unwrap();
        }
        for bad in [
            "",
            "-acme",
            "Acme",
            "acme_corp",
            "acme corp",
            "ac\0me",
            &"a".repeat(64),
            "é",
        ] {
            assert_eq!(
                field_of(validate_org_id("f", bad).unwrap_err()),
                "f",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn member_ids() {
        for ok in ["m1", "alice@example.com", "A.b_c+d-e", &"x".repeat(128)] {
            validate_member_id("f", ok).unwrap();
        }
        for bad in ["", "a b", "a/b", "a\0", &"x".repeat(129), "ü"] {
            validate_member_id("f", bad).unwrap_err();
        }
    }

    #[test]
    fn member_batches() {
        let m = |id: &str, email: &str| Member {
            id: id.into(),
            email: email.into(),
        };
        validate_new_members(&[m("a", ""), m("b", "b@x.io")]).unwrap();
        assert_eq!(field_of(validate_new_members(&[]).unwrap_err()), "members");
        let too_many: Vec<_> = (0..1001).map(|i| m(&format!("m{i}"), "")).collect();
        assert_eq!(
            field_of(validate_new_members(&too_many).unwrap_err()),
            "members"
        );
        assert_eq!(
            field_of(validate_new_members(&[m("a", ""), m("a", "")]).unwrap_err()),
            "members[1].id"
        );
        assert_eq!(
            field_of(validate_new_members(&[m("a", "not-an-email")]).unwrap_err()),
            "members[0].email"
        );
        assert_eq!(
            field_of(validate_member_ids(&["a".into(), "a".into()]).unwrap_err()),
            "member_ids[1]"
        );
    }

    #[test]
    fn update_mask_rules() {
        assert_eq!(field_of(update(&[], false, "").unwrap_err()), "update_mask");
        assert_eq!(
            field_of(update(&["*"], false, "").unwrap_err()),
            "update_mask"
        );
        assert_eq!(
            field_of(update(&["etag"], false, "").unwrap_err()),
            "update_mask"
        );
        assert_eq!(
            field_of(update(&["id"], false, "").unwrap_err()),
            "update_mask"
        );
        let u = update(&["allow_custom_sso"], false, "").unwrap();
        assert_eq!(u.allow_custom_sso, Some(false));
        assert_eq!(u.display_name, None, "unmasked fields are ignored");
    }

    #[test]
    fn disabling_sso_plans_an_unlink_job() {
        let plan = plan_update(
            &org(true),
            &update(&["allow_custom_sso"], false, "").unwrap(),
            9,
        )
        .unwrap();
        assert_eq!(plan.job, Some(JobKind::DisableCustomSso));
        assert!(!plan.org.allow_custom_sso);
        assert_eq!(plan.org.revision, 4);
        assert_eq!(plan.org.update_time, 9);
    }

    #[test]
    fn enabling_sso_plans_a_policy_job() {
        let plan = plan_update(
            &org(false),
            &update(&["allow_custom_sso"], true, "").unwrap(),
            9,
        )
        .unwrap();
        assert_eq!(plan.job, Some(JobKind::EnableCustomSso));
    }

    #[test]
    fn unchanged_setting_plans_nothing() {
        let plan = plan_update(
            &org(true),
            &update(&["allow_custom_sso"], true, "").unwrap(),
            9,
        )
        .unwrap();
        assert_eq!(plan.job, None);
        assert!(!plan.changed);
        assert_eq!(plan.org, org(true), "etag must not move on a no-op");
    }

    #[test]
    fn display_name_change_needs_no_job() {
        let plan = plan_update(
            &org(true),
            &update(&["display_name"], false, "").unwrap(),
            9,
        )
        .unwrap();
        assert_eq!(plan.job, None);
        assert!(plan.changed);
        assert!(
            plan.org.allow_custom_sso,
            "unmasked allow_custom_sso=false is ignored"
        );
        assert_eq!(plan.org.display_name, "New name");
    }

    #[test]
    fn stale_etag_is_aborted() {
        let err = plan_update(
            &org(true),
            &update(&["allow_custom_sso"], false, "r2").unwrap(),
            9,
        )
        .unwrap_err();
        assert!(matches!(err, Error::Aborted(_)), "{err:?}");
        plan_update(
            &org(true),
            &update(&["allow_custom_sso"], false, "r3").unwrap(),
            9,
        )
        .unwrap();
    }

    #[test]
    fn create_needs_a_job_only_when_allowing() {
        let new = |allow| NewOrg::parse(String::new(), "X".into(), allow, String::new()).unwrap();
        assert_eq!(new(true).job_kind(), Some(JobKind::EnableCustomSso));
        assert_eq!(new(false).job_kind(), None);
        assert_eq!(
            field_of(NewOrg::parse(String::new(), " ".into(), false, String::new()).unwrap_err()),
            "org.display_name"
        );
        assert_eq!(
            field_of(NewOrg::parse(String::new(), "x".into(), false, "r".repeat(129)).unwrap_err()),
            "request_id"
        );
    }
}

/// Property tests over request validation: arbitrary input never panics,
/// every refusal names a field of the request, and whatever is accepted
/// satisfies the invariants storage relies on. They run 256 cases each in
/// the normal test run; `PROPTEST_CASES=100000 cargo test -p org-server
/// fuzz` runs them longer.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    const FIELDS: &[&str] = &[
        "org.id",
        "org.display_name",
        "update_mask",
        "request_id",
        "members",
        "member_ids",
    ];

    fn names_a_field(err: &Error) -> bool {
        match err {
            Error::InvalidArgument { field, .. } => FIELDS
                .iter()
                .any(|f| field == f || field.starts_with(&format!("{f}["))),
            _ => false,
        }
    }

    fn valid_org_id(id: &str) -> bool {
        validate_org_id("org.id", id).is_ok()
    }

    proptest! {
        #[test]
        fn fuzz_update_org(
            id in "\\PC{0,70}|[a-z0-9-]{1,70}",
            name in "\\PC{0,210}|[\\x00-\\x1f]{0,3}",
            allow in any::<bool>(),
            etag in "\\PC{0,10}",
            paths in proptest::collection::vec("display_name|allow_custom_sso|\\*|id|\\PC{0,20}", 0..4),
            request_id in "\\PC{0,140}",
        ) {
            match OrgUpdate::parse(id.clone(), name.clone(), allow, etag, &paths, request_id) {
                Ok(update) => {
                    prop_assert!(valid_org_id(&update.org_id));
                    prop_assert!(!paths.is_empty());
                    prop_assert!(paths.iter().all(|p| UPDATABLE_PATHS.contains(&p.as_str())));
                    if let Some(name) = &update.display_name {
                        prop_assert!(name.chars().count() <= MAX_DISPLAY_NAME_CHARS);
                        prop_assert!(!name.chars().any(char::is_control));
                    }
                    prop_assert!(update.request_id.is_none_or(|r| r.chars().count() <= MAX_REQUEST_ID_CHARS));
                }
                Err(err) => prop_assert!(names_a_field(&err), "{err:?}"),
            }
        }

        #[test]
        fn fuzz_create_org(
            id in "\\PC{0,70}|[a-z0-9-]{0,70}",
            name in "\\PC{0,210}",
            request_id in "\\PC{0,140}",
        ) {
            match NewOrg::parse(id, name, true, request_id) {
                Ok(new) => {
                    prop_assert!(new.id.as_deref().is_none_or(valid_org_id));
                    prop_assert!(!new.display_name.trim().is_empty());
                }
                Err(err) => prop_assert!(names_a_field(&err), "{err:?}"),
            }
        }

        #[test]
        fn fuzz_members(
            members in proptest::collection::vec(("[A-Za-z0-9._@+-]{0,130}|\\PC{0,20}", "\\PC{0,30}|[a-z]{1,5}@[a-z]{1,5}"), 0..20),
        ) {
            let members: Vec<Member> = members
                .into_iter()
                .map(|(id, email)| Member { id, email })
                .collect();
            match validate_new_members(&members) {
                Ok(()) => {
                    let ids: std::collections::HashSet<_> = members.iter().map(|m| &m.id).collect();
                    prop_assert_eq!(ids.len(), members.len());
                    prop_assert!(members.iter().all(|m| validate_member_id("id", &m.id).is_ok()));
                }
                Err(err) => prop_assert!(names_a_field(&err), "{err:?}"),
            }
            let ids: Vec<String> = members.into_iter().map(|m| m.id).collect();
            if let Err(err) = validate_member_ids(&ids) {
                prop_assert!(names_a_field(&err), "{err:?}");
            }
        }
    }
}
