//! Who may do what on org-server.
//!
//! - `admin`: everything.
//! - `org`: the orgs on its token — reading and changing them, their
//!   members and their jobs. A request that names another org is
//!   PERMISSION_DENIED before storage is touched (so the answer does not
//!   depend on whether that org exists); a job of another org is NOT_FOUND,
//!   exactly like a job that does not exist. Listings are narrowed to the
//!   token's orgs. Creating orgs is for admins.
//! - `service`: nothing here; it is org-server's own identity towards
//!   auth-server.

use std::collections::BTreeSet;

use orgauth_security::{Caller, Role};

use crate::domain::job::Job;
use crate::error::{Denial, Error, Result};

fn deny(denial: Denial, message: String) -> Error {
    Error::PermissionDenied { denial, message }
}

fn not_service(caller: &Caller) -> Result<()> {
    if caller.role == Role::Service {
        return Err(deny(
            Denial::Role,
            format!(
                "token {:?} has role service, which may call auth-server only",
                caller.name
            ),
        ));
    }
    Ok(())
}

/// For RPCs that are not about one org (CreateOrg).
pub fn require_admin(caller: &Caller, rpc: &str) -> Result<()> {
    if caller.role == Role::Admin {
        return Ok(());
    }
    Err(deny(
        Denial::Role,
        format!(
            "{rpc} needs role admin; token {:?} has role {}",
            caller.name, caller.role
        ),
    ))
}

/// For RPCs that name an org.
pub fn require_org(caller: &Caller, org_id: &str) -> Result<()> {
    not_service(caller)?;
    if caller.covers_org(org_id) {
        return Ok(());
    }
    Err(deny(
        Denial::OrgAccess,
        format!("token {:?} does not cover org {org_id:?}", caller.name),
    ))
}

/// For RPCs that name a job: a job of an org the caller does not cover
/// does not exist, as far as the caller can tell.
pub fn require_job(caller: &Caller, job: &Job) -> Result<()> {
    not_service(caller)?;
    if caller.covers_org(&job.org_id) {
        return Ok(());
    }
    Err(Error::job_not_found(job.id))
}

/// The orgs a listing is narrowed to: `None` for every org.
pub fn listing_scope(caller: &Caller) -> Result<Option<BTreeSet<String>>> {
    not_service(caller)?;
    Ok(caller.org_scope().cloned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::job::{Job, JobKind};

    fn callers() -> [Caller; 3] {
        [
            Caller::new("ops", Role::Admin, []),
            Caller::new("acme-bot", Role::Org, ["acme".to_owned()]),
            Caller::new("org-server", Role::Service, []),
        ]
    }

    fn reason(result: Result<impl std::fmt::Debug>) -> &'static str {
        match result {
            Ok(_) => "OK",
            Err(err) => err.reason(),
        }
    }

    #[test]
    fn the_matrix() {
        let [admin, org, service] = callers();
        let acme_job = Job::queued(
            uuid::Uuid::now_v7(),
            "acme".into(),
            JobKind::DisableCustomSso,
            0,
        );
        let globex_job = Job::queued(
            uuid::Uuid::now_v7(),
            "globex".into(),
            JobKind::DisableCustomSso,
            0,
        );
        let rows = [
            (&admin, ["OK", "OK", "OK", "OK", "OK", "OK"]),
            (
                &org,
                [
                    "ROLE_NOT_PERMITTED",
                    "OK",
                    "ORG_ACCESS_DENIED",
                    "OK",
                    "JOB_NOT_FOUND",
                    "OK",
                ],
            ),
            (&service, ["ROLE_NOT_PERMITTED"; 6]),
        ];
        for (caller, want) in rows {
            let got = [
                reason(require_admin(caller, "CreateOrg")),
                reason(require_org(caller, "acme")),
                reason(require_org(caller, "globex")),
                reason(require_job(caller, &acme_job)),
                reason(require_job(caller, &globex_job)),
                reason(listing_scope(caller)),
            ];
            assert_eq!(got, want, "{}", caller.name);
        }
        assert_eq!(listing_scope(&admin).unwrap(), None);
        assert_eq!(listing_scope(&org).unwrap().unwrap().len(), 1);
    }
}
