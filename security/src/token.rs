//! Bearer tokens and the tokens file.
//!
//! A token's secret is `oat_` followed by 32 random bytes in URL-safe
//! base64 (47 characters). Servers never see secrets at rest: the tokens
//! file holds each token's SHA-256, one token per line:
//!
//! ```text
//! # NAME       ROLE     HASH                  [orgs=ID,...] [expires=RFC3339]
//! ops          admin    sha256:5f0c…
//! acme-bot     org      sha256:91aa…          orgs=acme,acme-eu
//! org-server   service  sha256:0b7d…          expires=2027-06-01T00:00:00Z
//! ```
//!
//! An unsalted hash is enough because secrets are 256-bit random values,
//! not passwords: there is nothing to guess. Presented tokens are compared
//! against every entry in constant time, so timing reveals nothing about
//! which hash (if any) was close.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::caller::{Caller, Role};

/// Every token secret starts with this, so secret scanners and people can
/// recognise one, and a value in an older or foreign format is refused
/// before hashing.
pub const SECRET_PREFIX: &str = "oat_";
const SECRET_BYTES: usize = 32;
/// `SECRET_PREFIX` plus 32 bytes of unpadded base64.
pub const SECRET_LEN: usize = SECRET_PREFIX.len() + 43;
const HASH_PREFIX: &str = "sha256:";

/// Why a request could not be authenticated. Messages are for the caller
/// and never contain the presented secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthnError {
    #[error("missing credentials: send metadata `authorization: Bearer <token>`")]
    Missing,
    #[error(
        "malformed credentials: expected `authorization: Bearer oat_…` with a token issued by `orgctl token issue`"
    )]
    Malformed,
    #[error("unknown token: it is not in this server's tokens file (revoked or never issued)")]
    Unknown,
    #[error("token {name:?} expired; issue a new one")]
    Expired { name: String },
}

impl AuthnError {
    /// A stable machine-readable reason (google.rpc.ErrorInfo.reason).
    pub fn reason(&self) -> &'static str {
        match self {
            AuthnError::Missing => "TOKEN_MISSING",
            AuthnError::Malformed => "TOKEN_MALFORMED",
            AuthnError::Unknown => "TOKEN_UNKNOWN",
            AuthnError::Expired { .. } => "TOKEN_EXPIRED",
        }
    }
}

/// A tokens file that cannot be used; the server refuses to start.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("cannot read tokens file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("tokens file line {line}: {reason}")]
    Invalid { line: usize, reason: String },
    #[error("tokens file has no tokens: every call would be refused")]
    Empty,
}

#[derive(Debug, Clone)]
struct Entry {
    hash: [u8; 32],
    caller: Caller,
    expires: Option<SystemTime>,
}

/// The tokens a server accepts, loaded from a tokens file.
#[derive(Debug, Clone)]
pub struct TokenSet {
    entries: Vec<Entry>,
}

impl TokenSet {
    pub fn load(path: &Path) -> Result<TokenSet, TokenFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
            path: path.display().to_string(),
            source,
        })?;
        TokenSet::parse(&text)
    }

    pub fn parse(text: &str) -> Result<TokenSet, TokenFileError> {
        let mut entries = Vec::new();
        let mut names = HashSet::new();
        let mut hashes = HashSet::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let content = raw.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let invalid = |reason: String| TokenFileError::Invalid { line, reason };
            let entry = parse_line(content).map_err(invalid)?;
            if !names.insert(entry.caller.name.clone()) {
                return Err(invalid(format!(
                    "name {:?} is used twice",
                    entry.caller.name
                )));
            }
            if !hashes.insert(entry.hash) {
                return Err(invalid("the same hash is listed twice".into()));
            }
            entries.push(entry);
        }
        if entries.is_empty() {
            return Err(TokenFileError::Empty);
        }
        Ok(TokenSet { entries })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Finds the caller a presented secret belongs to.
    pub fn authenticate(&self, secret: &str, now: SystemTime) -> Result<Caller, AuthnError> {
        if !well_formed(secret) {
            return Err(AuthnError::Malformed);
        }
        let presented: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        // Look at every entry whatever matched, so the time taken does not
        // depend on where (or whether) the match is.
        let mut found = None;
        for entry in &self.entries {
            if bool::from(entry.hash.ct_eq(&presented)) {
                found = Some(entry);
            }
        }
        let entry = found.ok_or(AuthnError::Unknown)?;
        if entry.expires.is_some_and(|expires| expires <= now) {
            return Err(AuthnError::Expired {
                name: entry.caller.name.to_string(),
            });
        }
        Ok(entry.caller.clone())
    }
}

/// Whether `secret` has the shape of a token secret (`oat_` and 43
/// URL-safe base64 characters). Says nothing about whether it is known.
pub fn well_formed(secret: &str) -> bool {
    secret.len() == SECRET_LEN
        && secret.starts_with(SECRET_PREFIX)
        && secret[SECRET_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn parse_line(content: &str) -> Result<Entry, String> {
    let mut fields = content.split_whitespace();
    let (Some(name), Some(role), Some(hash)) = (fields.next(), fields.next(), fields.next()) else {
        return Err("expected NAME ROLE sha256:HASH [orgs=ID,...] [expires=RFC3339]".into());
    };
    validate_name(name)?;
    let role: Role = role.parse()?;
    let hash = parse_hash(hash)?;
    let mut orgs = BTreeSet::new();
    let mut expires = None;
    for field in fields {
        match field.split_once('=') {
            Some(("orgs", list)) => {
                for org in list.split(',') {
                    validate_org_id(org)?;
                    orgs.insert(org.to_owned());
                }
            }
            Some(("expires", when)) => {
                expires = Some(humantime::parse_rfc3339(when).map_err(|err| {
                    format!("expires={when:?} is not an RFC 3339 UTC time ({err})")
                })?);
            }
            _ => {
                return Err(format!(
                    "unexpected field {field:?}: use orgs=… or expires=…"
                ));
            }
        }
    }
    match (role, orgs.is_empty()) {
        (Role::Org, true) => return Err("role org needs orgs=ID,...".into()),
        (Role::Admin | Role::Service, false) => {
            return Err(format!("role {role} covers every org: remove orgs=…"));
        }
        _ => {}
    }
    Ok(Entry {
        hash,
        caller: Caller::new(name, role, orgs),
        expires,
    })
}

/// Token names appear in logs: keep them short and printable.
fn validate_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "name {name:?}: use 1 to 64 characters of [A-Za-z0-9._-]"
        ))
    }
}

fn validate_org_id(id: &str) -> Result<(), String> {
    if crate::caller::is_valid_org_id(id) {
        Ok(())
    } else {
        Err(format!(
            "org id {id:?}: use 1 to 63 characters of [a-z0-9-]"
        ))
    }
}

fn parse_hash(field: &str) -> Result<[u8; 32], String> {
    // The field is not repeated: an operator who pasted a secret into the
    // hash column must not find it in the logs.
    let bad = || {
        if field.starts_with(SECRET_PREFIX) {
            "the hash column holds a token secret: store `orgctl token issue`'s line (its sha256: hash), never the secret".to_owned()
        } else {
            "the hash must be sha256: followed by 64 hex digits".to_owned()
        }
    };
    let hex = field.strip_prefix(HASH_PREFIX).ok_or_else(bad)?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let mut hash = [0u8; 32];
    for (i, byte) in hash.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(hash)
}

/// `sha256:` and the hex SHA-256 of `secret`: what the tokens file stores.
pub fn hash_secret(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    let mut out = String::with_capacity(HASH_PREFIX.len() + 64);
    out.push_str(HASH_PREFIX);
    for byte in digest {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// A secret held in memory (a token given by flag or environment): its
/// `Debug` never shows it, so logging a configuration cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

/// A newly issued token: the secret to hand to its holder (shown once), and
/// the line to append to the tokens file. Its `Debug` hides the secret.
#[derive(Clone)]
pub struct IssuedToken {
    pub secret: String,
    pub line: String,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("secret", &"..")
            .field("line", &self.line)
            .finish()
    }
}

/// Issues a token. The line is checked by the same parser servers use, so
/// an issued line always loads.
pub fn issue(
    name: &str,
    role: Role,
    orgs: &[String],
    expires: Option<SystemTime>,
) -> Result<IssuedToken, String> {
    let mut bytes = [0u8; SECRET_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    let secret = format!("{SECRET_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    let mut line = format!("{name} {role} {}", hash_secret(&secret));
    if !orgs.is_empty() {
        line.push_str(&format!(" orgs={}", orgs.join(",")));
    }
    if let Some(expires) = expires {
        line.push_str(&format!(
            " expires={}",
            humantime::format_rfc3339_seconds(expires)
        ));
    }
    parse_line(&line)?;
    Ok(IssuedToken { secret, line })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn now() -> SystemTime {
        SystemTime::now()
    }

    #[test]
    fn issued_tokens_authenticate_as_their_caller() {
        let admin = issue("ops", Role::Admin, &[], None).unwrap();
        let org = issue("acme-bot", Role::Org, &["acme".into(), "b".into()], None).unwrap();
        let set = TokenSet::parse(&format!(
            "# comment\n{}\n\n{}  # trailing\n",
            admin.line, org.line
        ))
        .unwrap();
        assert_eq!(set.len(), 2);
        let caller = set.authenticate(&admin.secret, now()).unwrap();
        assert_eq!((&*caller.name, caller.role), ("ops", Role::Admin));
        let caller = set.authenticate(&org.secret, now()).unwrap();
        assert_eq!(caller.role, Role::Org);
        assert!(caller.covers_org("b") && !caller.covers_org("c"));
        assert_eq!(admin.secret.len(), SECRET_LEN);
        assert!(!admin.line.contains(&admin.secret));
    }

    #[test]
    fn tampered_unknown_and_foreign_format_tokens_are_refused() {
        let token = issue("ops", Role::Admin, &[], None).unwrap();
        let set = TokenSet::parse(&token.line).unwrap();
        let mut tampered = token.secret.clone().into_bytes();
        let last = tampered.len() - 1;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert_eq!(set.authenticate(&tampered, now()), Err(AuthnError::Unknown));
        let other = issue("x", Role::Admin, &[], None).unwrap();
        assert_eq!(
            set.authenticate(&other.secret, now()),
            Err(AuthnError::Unknown)
        );
        for bad in [
            "",
            "oat_",
            "token",
            &token.secret[..SECRET_LEN - 1],
            &format!("{}A", token.secret),
            &token.secret.replace("oat_", "oak_"),
            &format!("oat_{}", "+".repeat(43)),
            &hash_secret(&token.secret),
        ] {
            assert_eq!(
                set.authenticate(bad, now()),
                Err(AuthnError::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_secret_pasted_as_a_hash_is_refused_without_being_repeated() {
        let token = issue("ops", Role::Admin, &[], None).unwrap();
        for field in [token.secret.clone(), format!("sha256:{}", token.secret)] {
            let err = TokenSet::parse(&format!("ops admin {field}")).unwrap_err();
            assert!(!err.to_string().contains(&token.secret[4..]), "{err}");
        }
        assert!(!format!("{token:?}").contains(&token.secret));
    }

    #[test]
    fn expired_tokens_name_themselves_but_not_their_secret() {
        let past = now() - Duration::from_secs(3600);
        let token = issue("old", Role::Admin, &[], Some(past)).unwrap();
        let set = TokenSet::parse(&token.line).unwrap();
        let err = set.authenticate(&token.secret, now()).unwrap_err();
        assert_eq!(err, AuthnError::Expired { name: "old".into() });
        assert!(!err.to_string().contains(&token.secret));
        assert_eq!(err.reason(), "TOKEN_EXPIRED");
        let future = issue(
            "new",
            Role::Admin,
            &[],
            Some(now() + Duration::from_secs(3600)),
        )
        .unwrap();
        let set = TokenSet::parse(&future.line).unwrap();
        assert!(set.authenticate(&future.secret, now()).is_ok());
    }

    #[test]
    fn bad_files_are_refused_with_the_line() {
        let hash = hash_secret("oat_x");
        let cases = [
            (String::new(), None),
            ("# only a comment".to_owned(), None),
            (
                format!("ops admin {hash}\nops admin {}", hash_secret("y")),
                Some(2),
            ),
            (format!("a admin {hash}\nb admin {hash}"), Some(2)),
            (format!("ops root {hash}"), Some(1)),
            (format!("ops org {hash}"), Some(1)),
            (format!("ops admin {hash} orgs=acme"), Some(1)),
            (format!("ops org {hash} orgs=ACME"), Some(1)),
            (format!("ops admin {hash} expires=tomorrow"), Some(1)),
            (format!("ops admin {hash} colour=blue"), Some(1)),
            ("ops admin md5:abc".to_owned(), Some(1)),
            ("ops admin sha256:zz".to_owned(), Some(1)),
            // 64 bytes, but multi-byte characters: refused, not a panic.
            (format!("ops admin sha256:a{}a", "é".repeat(31)), Some(1)),
            (format!("ops admin sha256:+{}", "f".repeat(63)), Some(1)),
            (format!("\nbad/name admin {hash}"), Some(2)),
            ("ops admin".to_owned(), Some(1)),
        ];
        for (text, line) in cases {
            match (TokenSet::parse(&text), line) {
                (Err(TokenFileError::Empty), None) => {}
                (Err(TokenFileError::Invalid { line: got, .. }), Some(want)) => {
                    assert_eq!(got, want, "{text}")
                }
                (other, _) => panic!("{text:?}: {other:?}"),
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn fuzz_presented_tokens_never_panic_or_pass(secret in ".{0,80}") {
            let token = issue("ops", Role::Admin, &[], None).unwrap();
            let set = TokenSet::parse(&token.line).unwrap();
            proptest::prop_assume!(secret != token.secret);
            proptest::prop_assert!(set.authenticate(&secret, now()).is_err());
        }

        #[test]
        fn fuzz_token_files_never_panic(text in "(.{0,100}\n){0,5}") {
            let _ = TokenSet::parse(&text);
        }
    }
}
