//! The identity a request runs as, and the scope of each role.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// What a token lets its holder do.
///
/// - `Admin`: every org, every RPC a person or operator calls.
/// - `Org`: only the orgs listed on the token — those orgs, their members
///   and their jobs.
/// - `Service`: the identity org-server uses to call auth-server; the only
///   role auth-server accepts for `SetOrgSsoPolicy` and `BatchUnlinkSso`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Admin,
    Org,
    Service,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Admin, Role::Org, Role::Service];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Org => "org",
            Role::Service => "service",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?}: use admin, org or service"))
    }
}

/// The one rule for org ids, shared by both servers and the tokens file:
/// 1 to 63 characters of `[a-z0-9-]`, starting with a letter or digit (safe
/// in URLs, logs and file names).
pub fn is_valid_org_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0] != b'-'
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

/// An authenticated caller. Cheap to clone: requests carry one each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name from the tokens file: safe to log, never a secret.
    pub name: Arc<str>,
    pub role: Role,
    /// For [`Role::Org`], the orgs it may touch; empty for other roles.
    pub orgs: Arc<BTreeSet<String>>,
}

impl Caller {
    pub fn new(name: &str, role: Role, orgs: impl IntoIterator<Item = String>) -> Caller {
        Caller {
            name: name.into(),
            role,
            orgs: Arc::new(orgs.into_iter().collect()),
        }
    }

    /// Whether this caller may read and change `org_id` and what belongs to
    /// it. The `service` role answers false: each server decides what the
    /// service identity may do.
    pub fn covers_org(&self, org_id: &str) -> bool {
        match self.role {
            Role::Admin => true,
            Role::Org => self.orgs.contains(org_id),
            Role::Service => false,
        }
    }

    /// The orgs a listing must be narrowed to: `None` means every org.
    pub fn org_scope(&self) -> Option<&BTreeSet<String>> {
        match self.role {
            Role::Admin => None,
            Role::Org | Role::Service => Some(&self.orgs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_and_reject_unknown() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!("root".parse::<Role>().is_err());
        assert!("Admin".parse::<Role>().is_err());
    }

    #[test]
    fn scopes() {
        let admin = Caller::new("ops", Role::Admin, []);
        let org = Caller::new("acme-bot", Role::Org, ["acme".to_owned()]);
        let service = Caller::new("org-server", Role::Service, []);
        assert!(admin.covers_org("anything"));
        assert!(org.covers_org("acme") && !org.covers_org("globex"));
        assert!(!service.covers_org("acme"));
        assert_eq!(admin.org_scope(), None);
        assert_eq!(org.org_scope().map(|s| s.len()), Some(1));
        assert_eq!(service.org_scope().map(|s| s.len()), Some(0));
    }
}
