//! What each RPC does, in domain terms and without transport types: the
//! seam between the gRPC adapters and storage, the worker pool and the
//! watch hub.
//!
//! After a write commits, `App` tells the rest of the process about it:
//! superseded jobs are pushed to their watchers, running jobs that must stop
//! are signalled, and the worker pool is woken for a new job.

use std::sync::Arc;

use orgauth_security::Caller;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::domain::access::{listing_scope, require_admin, require_job, require_org};
use crate::domain::job::{Job, JobFilter, MemberFailure};
use crate::domain::org::{
    Member, NewOrg, Org, OrgUpdate, validate_member_ids, validate_new_members, validate_org_id,
};
use crate::domain::page::{PageRequest, Pages};
use crate::error::{Error, Result};
use crate::jobs::hub::{Subscription, WatchHub};
use crate::jobs::worker::Wakeup;
use crate::jobs::{RunningJobs, StopReason};
use crate::limits::{OrgUpdateLimiter, WatchLimits, WatchPermit};
use crate::store::{CancelOutcome, OrgWrite, Store};

pub struct App {
    store: Arc<dyn Store>,
    hub: Arc<WatchHub>,
    running: Arc<RunningJobs>,
    wakeup: Arc<Wakeup>,
    /// Fires on shutdown: open watches end with UNAVAILABLE.
    shutdown: CancellationToken,
    guards: Guards,
}

/// What App checks besides the domain rules: page-token sealing and the
/// limits that protect the server.
pub struct Guards {
    pub pages: Pages,
    /// `None`: UpdateOrg is not rate limited.
    pub org_updates: Option<OrgUpdateLimiter>,
    pub watches: Arc<WatchLimits>,
}

/// A page of results and the token for the next one ("" at the end).
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: String,
}

impl App {
    pub fn new(
        store: Arc<dyn Store>,
        hub: Arc<WatchHub>,
        running: Arc<RunningJobs>,
        wakeup: Arc<Wakeup>,
        shutdown: CancellationToken,
        guards: Guards,
    ) -> Self {
        App {
            store,
            hub,
            running,
            wakeup,
            shutdown,
            guards,
        }
    }

    /// A job the caller may see, or NOT_FOUND.
    async fn visible_job(&self, caller: &Caller, job_id: Uuid) -> Result<Job> {
        let job = self
            .store
            .get_job(job_id)
            .await?
            .ok_or_else(|| Error::job_not_found(job_id))?;
        require_job(caller, &job)?;
        Ok(job)
    }

    #[tracing::instrument(skip_all, fields(org_id = new.id.as_deref().unwrap_or("")))]
    pub async fn create_org(&self, caller: &Caller, new: NewOrg) -> Result<OrgWrite> {
        require_admin(caller, "CreateOrg")?;
        let write = self.store.create_org(&new).await?;
        self.after_write(&write);
        Ok(write)
    }

    pub async fn get_org(&self, caller: &Caller, org_id: &str) -> Result<Org> {
        validate_org_id("org_id", org_id)?;
        require_org(caller, org_id)?;
        self.store
            .get_org(org_id)
            .await?
            .ok_or_else(|| Error::org_not_found(org_id))
    }

    pub async fn list_orgs(&self, caller: &Caller, page: PageRequest) -> Result<Page<Org>> {
        let within = listing_scope(caller)?;
        const SCOPE: &str = "orgs";
        let after = self.guards.pages.after(&page, SCOPE)?;
        let mut orgs = self
            .store
            .list_orgs(within.as_ref(), after.as_deref(), page.size + 1)
            .await?;
        let next_page_token = self
            .guards
            .pages
            .next_token(&page, SCOPE, &mut orgs, |org| org.id.clone());
        Ok(Page {
            items: orgs,
            next_page_token,
        })
    }

    /// The synchronous half of a settings change: one transaction, no call
    /// to Auth, independent of the org's size.
    #[tracing::instrument(skip_all, fields(org_id = %update.org_id))]
    pub async fn update_org(&self, caller: &Caller, update: OrgUpdate) -> Result<OrgWrite> {
        require_org(caller, &update.org_id)?;
        // Only an update that touches allow_custom_sso can start a mass
        // unlink, so only those count against the org's rate; a rename is
        // never limited.
        if update.allow_custom_sso.is_some()
            && let Some(limiter) = &self.guards.org_updates
        {
            limiter.check(&update.org_id)?;
        }
        let write = self.store.update_org(&update).await?;
        self.after_write(&write);
        Ok(write)
    }

    fn after_write(&self, write: &OrgWrite) {
        for job in &write.superseded {
            self.hub.publish(job);
        }
        if let Some(new_job) = &write.new_job {
            for stopping in &write.stop_requested {
                self.running.stop(
                    *stopping,
                    StopReason::Cancelled(format!("superseded by job {}", new_job.id)),
                );
            }
            self.wakeup.wake();
        }
    }

    #[tracing::instrument(skip(self, members), fields(count = members.len()))]
    pub async fn add_members(
        &self,
        caller: &Caller,
        org_id: &str,
        members: &[Member],
    ) -> Result<u64> {
        validate_org_id("org_id", org_id)?;
        validate_new_members(members)?;
        require_org(caller, org_id)?;
        self.store.add_members(org_id, members).await
    }

    #[tracing::instrument(skip(self, member_ids), fields(count = member_ids.len()))]
    pub async fn remove_members(
        &self,
        caller: &Caller,
        org_id: &str,
        member_ids: &[String],
    ) -> Result<u64> {
        validate_org_id("org_id", org_id)?;
        validate_member_ids(member_ids)?;
        require_org(caller, org_id)?;
        self.store.remove_members(org_id, member_ids).await
    }

    pub async fn list_members(
        &self,
        caller: &Caller,
        org_id: &str,
        page: PageRequest,
    ) -> Result<Page<Member>> {
        validate_org_id("org_id", org_id)?;
        require_org(caller, org_id)?;
        let scope = format!("members:{org_id}");
        let after = self.guards.pages.after(&page, &scope)?;
        let mut members = self
            .store
            .list_members(org_id, after.as_deref(), page.size + 1)
            .await?;
        let next_page_token = self
            .guards
            .pages
            .next_token(&page, &scope, &mut members, |m| m.id.clone());
        Ok(Page {
            items: members,
            next_page_token,
        })
    }

    pub async fn get_job(&self, caller: &Caller, job_id: Uuid) -> Result<Job> {
        self.visible_job(caller, job_id).await
    }

    pub async fn list_jobs(
        &self,
        caller: &Caller,
        mut filter: JobFilter,
        page: PageRequest,
    ) -> Result<Page<Job>> {
        match &filter.org_id {
            Some(org_id) => {
                validate_org_id("org_id", org_id)?;
                require_org(caller, org_id)?;
            }
            None => filter.within = listing_scope(caller)?,
        }
        // The filters are part of the scope: a token from one listing
        // cannot continue another.
        let scope = format!(
            "jobs:{}:{}",
            filter.org_id.as_deref().unwrap_or(""),
            filter.state.map(|s| s as i64).unwrap_or(0)
        );
        let before_seq = self
            .guards
            .pages
            .after(&page, &scope)?
            .as_deref()
            .map(|key| {
                key.parse::<i64>().map_err(|_| {
                    Error::invalid("page_token", "malformed: pass next_page_token unchanged")
                })
            })
            .transpose()?;
        let mut jobs = self
            .store
            .list_jobs(&filter, before_seq, page.size + 1)
            .await?;
        let next_page_token = self
            .guards
            .pages
            .next_token(&page, &scope, &mut jobs, |(seq, _)| seq.to_string());
        Ok(Page {
            items: jobs.into_iter().map(|(_, job)| job).collect(),
            next_page_token,
        })
    }

    pub async fn list_job_failures(
        &self,
        caller: &Caller,
        job_id: Uuid,
        page: PageRequest,
    ) -> Result<Page<MemberFailure>> {
        self.visible_job(caller, job_id).await?;
        let scope = format!("failures:{job_id}");
        let after = self.guards.pages.after(&page, &scope)?;
        let mut failures = self
            .store
            .list_job_failures(job_id, after.as_deref(), page.size + 1)
            .await?;
        let next_page_token = self
            .guards
            .pages
            .next_token(&page, &scope, &mut failures, |f| f.member_id.clone());
        Ok(Page {
            items: failures,
            next_page_token,
        })
    }

    /// Cancels a queued job at once, or asks a running one to stop at its
    /// next batch boundary. Cancelling twice is harmless.
    #[tracing::instrument(skip(self))]
    pub async fn cancel_job(&self, caller: &Caller, job_id: Uuid) -> Result<Job> {
        self.visible_job(caller, job_id).await?;
        const REASON: &str = "cancelled by CancelJob";
        match self.store.cancel_job(job_id, REASON).await? {
            CancelOutcome::Cancelled(job) => {
                self.hub.publish(&job);
                // The org's next job, if any, may run now.
                self.wakeup.wake();
                Ok(job)
            }
            CancelOutcome::Requested(job) => {
                self.running
                    .stop(job_id, StopReason::Cancelled(REASON.to_owned()));
                Ok(job)
            }
            CancelOutcome::AlreadyCancelled(job) => Ok(job),
        }
    }

    /// Starts watching a job. The first state yielded is the current one (or,
    /// with `since_version`, the first newer one; a finished job whose last
    /// version the caller already saw is sent once more so the stream ends
    /// with its terminal state).
    pub async fn watch_job(
        &self,
        caller: &Caller,
        job_id: Uuid,
        since_version: i64,
    ) -> Result<JobWatch> {
        if since_version < 0 {
            return Err(Error::invalid("since_version", "must not be negative"));
        }
        let permit = self.guards.watches.acquire(caller)?;
        // Subscribe before reading, so a change committed in between is
        // either in what we read or published to the subscription.
        let subscription = self.hub.subscribe(job_id);
        let job = self.visible_job(caller, job_id).await?;
        subscription.offer(&job);
        let last_sent = if job.state.is_terminal() && job.version <= since_version {
            job.version - 1
        } else {
            since_version
        };
        Ok(JobWatch {
            subscription,
            last_sent,
            finished: false,
            shutdown: self.shutdown.clone(),
            _permit: permit,
        })
    }
}

/// One watcher's view of a job: newer states as they come, ending after the
/// terminal state. Dropping it releases everything it holds.
pub struct JobWatch {
    subscription: Subscription,
    last_sent: i64,
    finished: bool,
    shutdown: CancellationToken,
    /// Counts this stream against the caller's and the server's caps.
    _permit: WatchPermit,
}

impl JobWatch {
    /// The next state to send, `None` after the terminal one, or UNAVAILABLE
    /// when the server shuts down (clients resume elsewhere with
    /// `since_version`).
    pub async fn next(&mut self) -> Option<Result<Arc<Job>>> {
        if self.finished {
            return None;
        }
        tokio::select! {
            biased;
            () = self.shutdown.cancelled() => {
                self.finished = true;
                Some(Err(Error::Unavailable(format!(
                    "server is shutting down; reconnect and watch again with since_version={}",
                    self.last_sent
                ))))
            }
            job = self.subscription.next_after(self.last_sent) => {
                let job = job?;
                self.last_sent = job.version;
                self.finished = job.state.is_terminal();
                Some(Ok(job))
            }
        }
    }
}
