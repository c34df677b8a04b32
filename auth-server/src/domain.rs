//! The rules of the Auth service, free of transport and storage: what a valid
//! org id, member id, batch and page are, how page tokens are sealed, and how
//! a BatchUnlinkSso or CheckSsoLogin answer follows from what storage
//! reports.
//!
//! Requests are parsed into these types once, at the gRPC boundary; nothing
//! past that boundary re-validates.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use orgauth_security::PageTokenSealer;

use crate::error::AuthError;

/// Most member ids one LinkSso or BatchUnlinkSso call may carry. Bounds the
/// size of one transaction, and so how long it holds SQLite's write lock.
pub const MAX_BATCH: usize = 1000;

/// The page size used when a request leaves `page_size` at 0.
pub const DEFAULT_PAGE_SIZE: u32 = 100;

/// The largest page a caller may ask for.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// Longest org id: the same rule as org-server's, so every org it can create
/// is one Auth accepts.
const MAX_ORG_ID_LEN: usize = 63;

/// Longest member id: the same as org-server's.
const MAX_MEMBER_ID_LEN: usize = 128;

/// Longest part of a rejected value echoed back in an error message; enough
/// to recognise it without returning a megabyte of garbage to the caller.
const MAX_ECHO_LEN: usize = 40;

/// A point in time as unix microseconds, the unit stored in the database.
pub type Micros = i64;

/// The current time as unix microseconds.
pub fn now_micros() -> Micros {
    // A clock before 1970 or after the year 294,247 is not worth failing a
    // request over; clamp instead.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            Micros::try_from(since.as_micros()).unwrap_or(Micros::MAX)
        })
}

/// An organization's id: `[a-z0-9][a-z0-9-]{0,62}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OrgId(String);

impl OrgId {
    /// Validates the `org_id` field of a request.
    pub fn parse(value: String) -> Result<Self, AuthError> {
        check_org_id(&value).map_err(|reason| AuthError::invalid("org_id", reason))?;
        Ok(OrgId(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for OrgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn check_org_id(value: &str) -> Result<(), String> {
    if orgauth_security::is_valid_org_id(value) {
        return Ok(());
    }
    // Invalid: say how, as precisely as the value allows.
    let Some(first) = value.chars().next() else {
        return Err("must not be empty".to_owned());
    };
    let valid_first = first.is_ascii_lowercase() || first.is_ascii_digit();
    let valid_rest = value
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid_first || !valid_rest {
        return Err(format!(
            "{} is not a valid org id: use lowercase letters, digits and '-', \
             starting with a letter or digit",
            echo(value)
        ));
    }
    if value.len() > MAX_ORG_ID_LEN {
        return Err(format!(
            "must be at most {MAX_ORG_ID_LEN} characters, got {}",
            value.len()
        ));
    }
    Ok(())
}

/// A member's id: 1 to 128 characters of `[A-Za-z0-9._@+-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemberId(String);

impl MemberId {
    /// Validates a member id found in request field `field`.
    pub fn parse(field: impl Into<String>, value: String) -> Result<Self, AuthError> {
        MemberId::new(value).map_err(|reason| AuthError::invalid(field, reason))
    }

    /// Validates a member id; the error says why it is not one. For ids
    /// that do not come from a request field (such as stored ones).
    pub fn new(value: String) -> Result<Self, String> {
        check_member_id(&value)?;
        Ok(MemberId(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn check_member_id(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".to_owned());
    }
    let valid = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '+' | '-'));
    if !valid {
        return Err(format!(
            "{} is not a valid member id: use letters, digits and . _ @ + -",
            echo(value)
        ));
    }
    if value.len() > MAX_MEMBER_ID_LEN {
        return Err(format!(
            "must be at most {MAX_MEMBER_ID_LEN} characters, got {}",
            value.len()
        ));
    }
    Ok(())
}

/// Quotes a rejected value for an error message, escaping control
/// characters and cutting it short.
fn echo(value: &str) -> String {
    match value.char_indices().nth(MAX_ECHO_LEN) {
        Some((cut, _)) => format!("{:?}…", &value[..cut]),
        None => format!("{value:?}"),
    }
}

/// Checks that a `member_ids` list names 1 to [`MAX_BATCH`] members.
/// Counted before any id is looked at, so an oversized list costs nothing
/// more than its decoding.
fn check_batch_len(len: usize) -> Result<(), AuthError> {
    if len == 0 {
        return Err(AuthError::invalid(
            "member_ids",
            "must name at least one member",
        ));
    }
    if len > MAX_BATCH {
        return Err(AuthError::invalid(
            "member_ids",
            format!("at most {MAX_BATCH} ids per call, got {len}"),
        ));
    }
    Ok(())
}

/// Remembers the ids of a list to refuse the second occurrence of one: a
/// caller that names a member twice has a bug worth hearing about, and the
/// answer to "which result is the real one" is then never ambiguous.
struct RepeatCheck<'a>(HashMap<&'a str, usize>);

impl<'a> RepeatCheck<'a> {
    fn with_capacity(len: usize) -> Self {
        RepeatCheck(HashMap::with_capacity(len))
    }

    /// Notes `member_ids[index] = id`; fails if an earlier index held it.
    fn check(&mut self, index: usize, id: &'a str) -> Result<(), AuthError> {
        match self.0.entry(id) {
            Entry::Vacant(entry) => {
                entry.insert(index);
                Ok(())
            }
            Entry::Occupied(entry) => Err(AuthError::invalid(
                format!("member_ids[{index}]"),
                format!("repeats member_ids[{}]; name each member once", entry.get()),
            )),
        }
    }
}

/// The members of a LinkSso call: 1 to [`MAX_BATCH`] distinct valid ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkBatch(Vec<MemberId>);

impl LinkBatch {
    /// Validates the `member_ids` field of a request: one bad or repeated id
    /// refuses the whole call, since linking is not worth doing partially.
    pub fn parse(member_ids: Vec<String>) -> Result<Self, AuthError> {
        check_batch_len(member_ids.len())?;
        let mut repeats = RepeatCheck::with_capacity(member_ids.len());
        for (i, id) in member_ids.iter().enumerate() {
            check_member_id(id)
                .map_err(|reason| AuthError::invalid(format!("member_ids[{i}]"), reason))?;
            repeats.check(i, id)?;
        }
        Ok(LinkBatch(member_ids.into_iter().map(MemberId).collect()))
    }

    pub fn ids(&self) -> &[MemberId] {
        &self.0
    }
}

/// The members of a BatchUnlinkSso call, in request order.
///
/// A wrong count or a repeated id refuses the call. A malformed id does
/// not: the caller is a job working through a whole org, and one bad
/// member must not stall it. That member gets an error result; the others
/// are unlinked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnlinkBatch {
    /// Each requested id, in request order, resolved to what will answer it.
    requested: Vec<Requested>,
    /// The valid ids (distinct): exactly what storage is asked to delete.
    valid: Vec<MemberId>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Requested {
    /// A valid id: `valid[index]`.
    Valid { index: usize },
    /// An id that is not a valid member id.
    Invalid { member_id: String, reason: String },
}

impl UnlinkBatch {
    /// Validates the `member_ids` field of a request: a wrong count or a
    /// repeated id refuses the call; a malformed id only marks that member.
    pub fn parse(member_ids: Vec<String>) -> Result<Self, AuthError> {
        check_batch_len(member_ids.len())?;
        let mut repeats = RepeatCheck::with_capacity(member_ids.len());
        for (i, id) in member_ids.iter().enumerate() {
            repeats.check(i, id)?;
        }
        let mut valid = Vec::with_capacity(member_ids.len());
        let mut requested = Vec::with_capacity(member_ids.len());
        for (i, member_id) in member_ids.into_iter().enumerate() {
            match check_member_id(&member_id) {
                Ok(()) => {
                    requested.push(Requested::Valid { index: valid.len() });
                    valid.push(MemberId(member_id));
                }
                Err(reason) => requested.push(Requested::Invalid {
                    reason: format!("member_ids[{i}]: {reason}"),
                    member_id,
                }),
            }
        }
        Ok(UnlinkBatch { requested, valid })
    }

    /// The valid ids, to be deleted in one statement.
    pub fn to_unlink(&self) -> &[MemberId] {
        &self.valid
    }

    /// One result per requested id, in request order, given the ids storage
    /// reports it actually deleted.
    pub fn into_results(self, unlinked: &[MemberId]) -> Vec<UnlinkResult> {
        let unlinked: HashSet<&MemberId> = unlinked.iter().collect();
        self.requested
            .into_iter()
            .map(|requested| match requested {
                Requested::Valid { index } => {
                    let member_id = &self.valid[index];
                    let outcome = if unlinked.contains(member_id) {
                        UnlinkOutcome::Unlinked
                    } else {
                        UnlinkOutcome::NotLinked
                    };
                    UnlinkResult {
                        member_id: member_id.as_str().to_owned(),
                        outcome,
                    }
                }
                Requested::Invalid { member_id, reason } => UnlinkResult {
                    member_id,
                    outcome: UnlinkOutcome::Invalid { reason },
                },
            })
            .collect()
    }
}

/// What BatchUnlinkSso did for one requested member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnlinkResult {
    /// The id exactly as requested, so the caller can match results to its
    /// request even when the id was malformed.
    pub member_id: String,
    pub outcome: UnlinkOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnlinkOutcome {
    /// The member was linked and no longer is.
    Unlinked,
    /// The member had no connection (or was unlinked earlier in the same
    /// request); nothing changed.
    NotLinked,
    /// The id is not a valid member id; `reason` says why.
    Invalid { reason: String },
}

/// An org's SSO policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsoPolicy {
    pub org_id: OrgId,
    pub allow_custom_sso: bool,
    /// When the policy was last set; `None` for an org Auth has never heard
    /// of, whose policy is the safe default.
    pub update_time: Option<Micros>,
}

impl SsoPolicy {
    /// The policy of an org Auth has never heard of: custom SSO disallowed.
    pub fn default_for(org_id: OrgId) -> Self {
        SsoPolicy {
            org_id,
            allow_custom_sso: false,
            update_time: None,
        }
    }
}

/// A member's link to their org's custom identity provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsoConnection {
    pub org_id: OrgId,
    pub member_id: MemberId,
    pub create_time: Micros,
}

/// Which page of an org's connections a ListSsoConnections call wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// 1 to [`MAX_PAGE_SIZE`].
    pub size: u32,
    /// Start after this member id; `None` for the first page.
    pub after: Option<MemberId>,
}

impl PageRequest {
    /// Validates the `page_size` and `page_token` fields of a request that
    /// lists `org_id`'s connections: the token must have been sealed by
    /// `tokens` for that same org.
    pub fn parse(
        page_size: i32,
        page_token: &str,
        org_id: &OrgId,
        tokens: &PageTokens,
    ) -> Result<Self, AuthError> {
        let size = match u32::try_from(page_size) {
            Ok(0) => DEFAULT_PAGE_SIZE,
            Ok(size) if size <= MAX_PAGE_SIZE => size,
            _ => {
                return Err(AuthError::invalid(
                    "page_size",
                    format!(
                        "must be between 0 and {MAX_PAGE_SIZE} \
                         (0 means {DEFAULT_PAGE_SIZE}), got {page_size}"
                    ),
                ));
            }
        };
        let after = if page_token.is_empty() {
            None
        } else {
            Some(tokens.open(org_id, page_token)?)
        };
        Ok(PageRequest { size, after })
    }
}

/// Page tokens of ListSsoConnections: the last member id of the previous
/// page, sealed with an HMAC over the id and the org it lists
/// (`sso:{org_id}`), so a caller can neither forge or edit a cursor nor
/// replay one against another org.
///
/// The key lives in the database (see [`AuthStore::page_token_key`]), so a
/// token stays good across restarts and on every replica sharing the
/// database.
///
/// [`AuthStore::page_token_key`]: crate::store::AuthStore::page_token_key
#[derive(Debug, Clone)]
pub struct PageTokens(PageTokenSealer);

impl PageTokens {
    pub fn new(sealer: PageTokenSealer) -> Self {
        PageTokens(sealer)
    }

    /// The listing a token belongs to.
    fn scope(org_id: &OrgId) -> String {
        format!("sso:{org_id}")
    }

    /// The token that resumes `org_id`'s listing after `last`.
    pub fn seal(&self, org_id: &OrgId, last: &MemberId) -> String {
        self.0.seal(&Self::scope(org_id), last.as_str())
    }

    /// The member id a token of `org_id`'s listing resumes after. Anything
    /// this server did not seal for that org is INVALID_ARGUMENT naming
    /// `page_token`, with one message whatever check failed.
    pub fn open(&self, org_id: &OrgId, token: &str) -> Result<MemberId, AuthError> {
        let refused = |err: orgauth_security::PageTokenError| {
            AuthError::invalid("page_token", err.to_string())
        };
        let last = self.0.open(&Self::scope(org_id), token).map_err(refused)?;
        // Only valid ids are ever sealed; a key that opens but does not
        // parse would mean a leaked key, and is refused all the same.
        MemberId::new(last).map_err(|_| refused(orgauth_security::PageTokenError))
    }
}

/// Whether a member may sign in through custom SSO right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginDecision {
    Allowed,
    Denied(DenyReason),
}

/// Why CheckSsoLogin said no.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// The org's policy disallows custom SSO (or Auth has never heard of
    /// the org). Checked first: it holds whatever the member's link says.
    PolicyDisallowsCustomSso,
    /// The policy allows custom SSO but the member is not linked.
    NotLinked,
}

impl DenyReason {
    /// The reason string of the API, stable for callers to match on.
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::PolicyDisallowsCustomSso => "POLICY_DISALLOWS_CUSTOM_SSO",
            DenyReason::NotLinked => "NOT_LINKED",
        }
    }
}

impl LoginDecision {
    /// Sign-in needs both: the org allows custom SSO and the member is linked.
    pub fn decide(policy_allows: bool, linked: bool) -> Self {
        if !policy_allows {
            LoginDecision::Denied(DenyReason::PolicyDisallowsCustomSso)
        } else if !linked {
            LoginDecision::Denied(DenyReason::NotLinked)
        } else {
            LoginDecision::Allowed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|&id| id.to_owned()).collect()
    }

    fn invalid_message(err: AuthError) -> String {
        match err {
            AuthError::InvalidArgument { .. } => err.to_string(),
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn org_ids_follow_org_servers_rule() {
        for good in [
            "a",
            "0",
            "acme",
            "acme-corp",
            "a-",
            "9lives",
            &"a".repeat(63),
        ] {
            assert!(OrgId::parse(good.to_owned()).is_ok(), "{good:?}");
        }
        for bad in [
            "",
            "-acme",
            "Acme",
            "ac me",
            "acme_corp",
            "acmé",
            "acme\n",
            &"a".repeat(64),
        ] {
            let message = invalid_message(OrgId::parse(bad.to_owned()).unwrap_err());
            assert!(message.starts_with("org_id: "), "{bad:?}: {message}");
        }
    }

    #[test]
    fn org_id_errors_say_what_is_wrong() {
        assert_eq!(
            OrgId::parse(String::new()).unwrap_err().to_string(),
            "org_id: must not be empty"
        );
        assert_eq!(
            OrgId::parse("a".repeat(64)).unwrap_err().to_string(),
            "org_id: must be at most 63 characters, got 64"
        );
        assert_eq!(
            OrgId::parse("Acme".into()).unwrap_err().to_string(),
            "org_id: \"Acme\" is not a valid org id: use lowercase letters, digits and '-', \
             starting with a letter or digit"
        );
    }

    #[test]
    fn member_ids_allow_emails_and_reject_the_rest() {
        for good in [
            "m",
            "m0000001",
            "Alice.Smith+sso@example.com",
            "a_b-c",
            &"x".repeat(128),
        ] {
            assert!(
                MemberId::parse("member_id", good.to_owned()).is_ok(),
                "{good:?}"
            );
        }
        for bad in ["", "a b", "a/b", "a:b", "ü", "a\0", &"x".repeat(129)] {
            let message =
                invalid_message(MemberId::parse("member_id", bad.to_owned()).unwrap_err());
            assert!(message.starts_with("member_id: "), "{bad:?}: {message}");
        }
    }

    #[test]
    fn rejected_values_are_echoed_short_and_escaped() {
        let message = MemberId::parse("member_id", format!("\n{}", "y".repeat(10_000)))
            .unwrap_err()
            .to_string();
        assert!(message.starts_with("member_id: \"\\nyyy"), "{message}");
        assert!(message.len() < 200, "{message}");
    }

    #[test]
    fn link_batches_hold_1_to_1000_distinct_valid_ids() {
        assert_eq!(
            LinkBatch::parse(vec![]).unwrap_err().to_string(),
            "member_ids: must name at least one member"
        );
        let too_many: Vec<String> = (0..=MAX_BATCH).map(|i| format!("m{i}")).collect();
        assert_eq!(
            LinkBatch::parse(too_many).unwrap_err().to_string(),
            "member_ids: at most 1000 ids per call, got 1001"
        );
        let full: Vec<String> = (0..MAX_BATCH).map(|i| format!("m{i}")).collect();
        assert_eq!(LinkBatch::parse(full).unwrap().ids().len(), MAX_BATCH);
        let message = LinkBatch::parse(strings(&["ok", "not ok"]))
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with("member_ids[1]: \"not ok\""),
            "{message}"
        );
        for (ids, expected) in [
            (&["a", "b", "a"][..], "member_ids[2]: repeats member_ids[0]"),
            (&["a", ""][..], "member_ids[1]: must not be empty"),
            (
                &["a", "b\0"][..],
                "member_ids[1]: \"b\\0\" is not a valid member id",
            ),
        ] {
            let err = LinkBatch::parse(strings(ids)).unwrap_err();
            assert!(matches!(err, AuthError::InvalidArgument { .. }), "{err:?}");
            assert!(err.to_string().starts_with(expected), "{err}");
        }
    }

    #[test]
    fn unlink_batches_refuse_a_wrong_count_or_a_repeat_but_not_a_bad_id() {
        assert!(matches!(
            UnlinkBatch::parse(vec![]),
            Err(AuthError::InvalidArgument { .. })
        ));
        let too_many: Vec<String> = (0..=MAX_BATCH).map(|i| format!("m{i}")).collect();
        assert_eq!(
            UnlinkBatch::parse(too_many).unwrap_err().to_string(),
            "member_ids: at most 1000 ids per call, got 1001"
        );
        // Repeats are refused even among malformed ids.
        for (ids, field) in [
            (&["a", "b", "a"][..], "member_ids[2]"),
            (&["bad id", "x", "bad id"][..], "member_ids[2]"),
            (&["", ""][..], "member_ids[1]"),
        ] {
            match UnlinkBatch::parse(strings(ids)).unwrap_err() {
                AuthError::InvalidArgument { field: got, .. } => assert_eq!(got, field),
                other => panic!("{other:?}"),
            }
        }
        let batch = UnlinkBatch::parse(strings(&["a", "bad id", "b"])).unwrap();
        assert_eq!(
            batch.to_unlink(),
            &[MemberId("a".into()), MemberId("b".into())]
        );
    }

    #[test]
    fn unlink_results_follow_request_order() {
        let batch = UnlinkBatch::parse(strings(&["b", "a", "", "c"])).unwrap();
        assert_eq!(
            batch.to_unlink(),
            &[
                MemberId("b".into()),
                MemberId("a".into()),
                MemberId("c".into())
            ],
        );
        let results = batch.into_results(&[MemberId("a".into()), MemberId("b".into())]);
        let outcomes: Vec<(&str, &UnlinkOutcome)> = results
            .iter()
            .map(|r| (r.member_id.as_str(), &r.outcome))
            .collect();
        assert_eq!(
            outcomes,
            vec![
                ("b", &UnlinkOutcome::Unlinked),
                ("a", &UnlinkOutcome::Unlinked),
                (
                    "",
                    &UnlinkOutcome::Invalid {
                        reason: "member_ids[2]: must not be empty".into()
                    }
                ),
                ("c", &UnlinkOutcome::NotLinked),
            ]
        );
    }

    fn page_tokens(seed: u8) -> PageTokens {
        PageTokens::new(PageTokenSealer::new(&[seed; 32]).unwrap())
    }

    fn org(id: &str) -> OrgId {
        OrgId::parse(id.to_owned()).unwrap()
    }

    fn page(size: i32, token: &str) -> Result<PageRequest, AuthError> {
        PageRequest::parse(size, token, &org("acme"), &page_tokens(1))
    }

    #[test]
    fn page_size_defaults_to_100_and_is_bounded() {
        assert_eq!(page(0, "").unwrap().size, 100);
        assert_eq!(page(1, "").unwrap().size, 1);
        assert_eq!(page(1000, "").unwrap().size, 1000);
        for bad in [-1, 1001, i32::MIN, i32::MAX] {
            let message = page(bad, "").unwrap_err().to_string();
            assert_eq!(
                message,
                format!("page_size: must be between 0 and 1000 (0 means 100), got {bad}")
            );
        }
    }

    #[test]
    fn page_tokens_round_trip_within_their_org() {
        let last = MemberId("alice@example.com".into());
        let token = page_tokens(1).seal(&org("acme"), &last);
        assert!(!token.contains('='), "no padding: {token}");
        assert_eq!(page(10, &token).unwrap().after, Some(last));
    }

    #[test]
    fn forged_edited_and_foreign_page_tokens_are_invalid_arguments() {
        let tokens = page_tokens(1);
        let last = MemberId("m1".into());
        let token = tokens.seal(&org("acme"), &last);
        let other_org = tokens.seal(&org("globex"), &last);
        let other_key = page_tokens(2).seal(&org("acme"), &last);
        // Each character of the token changed in turn.
        let mut edits = Vec::new();
        for i in 0..token.len() {
            let mut edited = token.clone().into_bytes();
            edited[i] = if edited[i] == b'A' { b'B' } else { b'A' };
            edits.push(String::from_utf8(edited).unwrap());
        }
        // The format before tokens were sealed: base64 of [1] + "m1".
        let unsealed = "AW0x".to_owned();
        let long = "A".repeat(10_000);
        let mut bad = vec![
            other_org,
            other_key,
            unsealed,
            long,
            format!("{token}A"),
            token[..token.len() - 1].to_owned(),
            "!!!".to_owned(),
            "a\0b".to_owned(),
        ];
        bad.extend(edits);
        for token in bad {
            match page(10, &token).unwrap_err() {
                AuthError::InvalidArgument { field, reason } => {
                    assert_eq!(field, "page_token");
                    assert!(reason.starts_with("malformed or tampered"), "{reason}");
                }
                other => panic!("{token:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn login_needs_policy_and_link_and_policy_is_reported_first() {
        use DenyReason::*;
        assert_eq!(LoginDecision::decide(true, true), LoginDecision::Allowed);
        assert_eq!(
            LoginDecision::decide(true, false),
            LoginDecision::Denied(NotLinked)
        );
        assert_eq!(
            LoginDecision::decide(false, true),
            LoginDecision::Denied(PolicyDisallowsCustomSso)
        );
        assert_eq!(
            LoginDecision::decide(false, false),
            LoginDecision::Denied(PolicyDisallowsCustomSso)
        );
        assert_eq!(
            PolicyDisallowsCustomSso.as_str(),
            "POLICY_DISALLOWS_CUSTOM_SSO"
        );
        assert_eq!(NotLinked.as_str(), "NOT_LINKED");
    }
}

/// Property tests over request validation and the page-token decoder:
/// arbitrary input never panics and every refusal is INVALID_ARGUMENT
/// naming a request field. 256 cases per run; `bash scripts/fuzz.sh` runs
/// them longer.
#[cfg(test)]
mod fuzz {
    use orgauth_security::PageTokenSealer;
    use proptest::prelude::*;

    use super::*;

    fn names(err: &AuthError, fields: &[&str]) -> bool {
        match err {
            AuthError::InvalidArgument { field, .. } => fields
                .iter()
                .any(|f| field == f || field.starts_with(&format!("{f}["))),
            _ => false,
        }
    }

    proptest! {
        #[test]
        fn fuzz_ids_and_batches(
            org in "\\PC{0,70}|[a-z0-9-]{1,70}",
            ids in proptest::collection::vec("\\PC{0,20}|[A-Za-z0-9._@+-]{0,130}", 0..12),
        ) {
            if let Err(err) = OrgId::parse(org) {
                prop_assert!(names(&err, &["org_id"]), "{err:?}");
            }
            if let Err(err) = LinkBatch::parse(ids.clone()) {
                prop_assert!(names(&err, &["member_ids"]), "{err:?}");
            }
            if let Err(err) = UnlinkBatch::parse(ids) {
                prop_assert!(names(&err, &["member_ids"]), "{err:?}");
            }
        }

        #[test]
        fn fuzz_page_requests(size in any::<i32>(), token in "\\PC{0,200}|[A-Za-z0-9_-]{1,200}") {
            let tokens = PageTokens::new(PageTokenSealer::new(&[3; 32]).unwrap());
            let org = OrgId::parse("acme".into()).unwrap();
            match PageRequest::parse(size, &token, &org, &tokens) {
                Ok(page) => prop_assert!(token.is_empty() && page.after.is_none()),
                Err(err) => prop_assert!(names(&err, &["page_size", "page_token"]), "{err:?}"),
            }
        }
    }
}
