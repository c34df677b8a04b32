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
use crate::domain::job::{Job, JobFilter, JobState, MemberFailure};
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
            // In the request's span: its trace_id ties the job to the call
            // that enqueued it (the job's run is a trace of its own).
            tracing::info!(
                job_id = %new_job.id,
                kind = ?new_job.kind,
                superseded = write.superseded.len(),
                "job enqueued"
            );
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

    /// Checks that the caller may list jobs with `filter`, and narrows an
    /// org token's listing of every org to its orgs.
    fn scope_job_listing(caller: &Caller, filter: &mut JobFilter) -> Result<()> {
        match &filter.org_id {
            Some(org_id) => {
                validate_org_id("org_id", org_id)?;
                require_org(caller, org_id)?;
            }
            None => filter.within = listing_scope(caller)?,
        }
        Ok(())
    }

    /// The sequence number a job listing continues before.
    fn jobs_before(&self, page: &PageRequest, scope: &str) -> Result<Option<i64>> {
        self.guards
            .pages
            .after(page, scope)?
            .as_deref()
            .map(|key| {
                key.parse::<i64>().map_err(|_| {
                    Error::invalid("page_token", "malformed: pass next_page_token unchanged")
                })
            })
            .transpose()
    }

    pub async fn list_jobs(
        &self,
        caller: &Caller,
        mut filter: JobFilter,
        page: PageRequest,
    ) -> Result<Page<Job>> {
        Self::scope_job_listing(caller, &mut filter)?;
        // The filters are part of the scope: a token from one listing
        // cannot continue another.
        let scope = format!(
            "jobs:{}:{}",
            filter.org_id.as_deref().unwrap_or(""),
            filter.state.map(|s| s as i64).unwrap_or(0)
        );
        let before_seq = self.jobs_before(&page, &scope)?;
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

    /// [`App::list_jobs`], further narrowed to finished jobs (`done`) or
    /// unfinished ones (`!done`): ListOperations' `done` filter. The store
    /// is read once per matching state and the reads are merged newest
    /// first, so every page holds exactly the matching jobs and its token
    /// resumes right after the last one.
    pub async fn list_jobs_done(
        &self,
        caller: &Caller,
        mut filter: JobFilter,
        done: Option<bool>,
        page: PageRequest,
    ) -> Result<Page<Job>> {
        let Some(done) = done else {
            return self.list_jobs(caller, filter, page).await;
        };
        Self::scope_job_listing(caller, &mut filter)?;
        let scope = format!(
            "jobs:{}:{}:done={done}",
            filter.org_id.as_deref().unwrap_or(""),
            filter.state.map(|s| s as i64).unwrap_or(0)
        );
        let before_seq = self.jobs_before(&page, &scope)?;
        // A state that contradicts `done` matches nothing: no read at all.
        let states = JobState::ALL
            .into_iter()
            .filter(|s| s.is_terminal() == done && filter.state.is_none_or(|f| f == *s));
        let mut jobs = Vec::new();
        for state in states {
            let one = JobFilter {
                state: Some(state),
                ..filter.clone()
            };
            jobs.extend(
                self.store
                    .list_jobs(&one, before_seq, page.size + 1)
                    .await?,
            );
        }
        jobs.sort_unstable_by(|(a, _), (b, _)| b.cmp(a));
        jobs.truncate(page.size + 1);
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

    /// Starts watching a job. The first state yielded is the current one
    /// (or, with `since_version`, the first newer one), and the watch always
    /// ends with the job's terminal state, even one whose version the
    /// caller already has (`<= since_version`): a finished job's last state
    /// is sent once more, and a job that ends at or below `since_version`
    /// still ends the watch. [`JobWatch::caller_saw_end`] tells whether the
    /// watch would only repeat an end the caller has seen.
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
        // The hub may hold a newer state than the read (never an older one).
        let newest = subscription.latest();
        let now = newest.as_deref().unwrap_or(&job);
        let caller_saw_end = now.state.is_terminal() && now.version <= since_version;
        Ok(JobWatch {
            subscription,
            last_sent: since_version,
            finished: false,
            caller_saw_end,
            shutdown: self.shutdown.clone(),
            _permit: permit,
        })
    }

    /// The job once it has ended, or its latest state when `deadline`
    /// passes first: WaitOperation. Built on a watch, so it wakes the
    /// moment the job ends instead of polling, and it counts against the
    /// same watch caps while it waits. When the server starts shutting
    /// down the wait ends early with the latest state, which is a valid
    /// answer (the job is simply not done yet). The caller takes
    /// `deadline` when the call arrives, so the time spent opening the
    /// watch and reading the job counts against it.
    pub async fn wait_job(
        &self,
        caller: &Caller,
        job_id: Uuid,
        deadline: tokio::time::Instant,
    ) -> Result<Arc<Job>> {
        let mut watch = self.watch_job(caller, job_id, 0).await?;
        let mut latest = watch.next().await.ok_or_else(|| {
            Error::Internal(format!(
                "the watch of job {job_id} ended before its first state"
            ))
        })??;
        let deadline = tokio::time::sleep_until(deadline);
        tokio::pin!(deadline);
        while !latest.state.is_terminal() {
            tokio::select! {
                () = &mut deadline => break,
                next = watch.next() => match next {
                    Some(Ok(job)) => latest = job,
                    Some(Err(_)) | None => break,
                },
            }
        }
        Ok(latest)
    }
}

/// One watcher's view of a job: newer states as they come, ending after the
/// terminal state. Dropping it releases everything it holds.
pub struct JobWatch {
    subscription: Subscription,
    /// The newest version the caller has: `since_version`, then the last
    /// version sent.
    last_sent: i64,
    finished: bool,
    /// See [`JobWatch::caller_saw_end`].
    caller_saw_end: bool,
    shutdown: CancellationToken,
    /// Counts this stream against the caller's and the server's caps.
    _permit: WatchPermit,
}

impl JobWatch {
    /// Whether the job had already ended when the watch started and the
    /// caller's `since_version` is at or above its terminal version: all
    /// the watch would send is that terminal state once more. WatchJob
    /// sends it (so every stream ends with the terminal state); the SSE
    /// route answers 204 instead, which stops an EventSource from
    /// reconnecting forever.
    pub fn caller_saw_end(&self) -> bool {
        self.caller_saw_end
    }

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
            job = self.subscription.next_after_or_end(self.last_sent) => {
                let job = job?;
                self.last_sent = self.last_sent.max(job.version);
                self.finished = job.state.is_terminal();
                Some(Ok(job))
            }
        }
    }
}
