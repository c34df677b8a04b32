//! Limits that keep one caller or one org from exhausting the server:
//!
//! - [`OrgUpdateLimiter`]: UpdateOrg calls that touch `allow_custom_sso`,
//!   per org (GCRA: a burst, then a steady rate), so repeated flips cannot
//!   start an unbounded series of mass unlinks. A retried request counts
//!   again (it gets RetryInfo). Per process: with several replicas the
//!   effective limit is the sum over replicas.
//! - [`WatchLimits`]: open WatchJob streams per caller and per server. A
//!   [`WatchPermit`] lives inside the stream, so it is released when the
//!   stream ends or its client goes away, not when the handler returns.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use orgauth_security::Caller;

use crate::error::{Error, Limit, Result};

/// How often (in checks) idle orgs are forgotten, bounding the limiter's
/// memory by the orgs updated recently rather than ever.
const FORGET_EVERY: u64 = 4096;

/// UpdateOrg calls per org.
pub struct OrgUpdateLimiter {
    limiter: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
    checks: AtomicU64,
}

impl OrgUpdateLimiter {
    /// `per_minute` sustained, bursts of `burst`; `None` when `per_minute`
    /// is 0 (no limit).
    pub fn new(per_minute: u32, burst: u32) -> Option<OrgUpdateLimiter> {
        let rate = NonZeroU32::new(per_minute)?;
        let burst = NonZeroU32::new(burst).unwrap_or(rate);
        Some(OrgUpdateLimiter {
            limiter: RateLimiter::keyed(Quota::per_minute(rate).allow_burst(burst)),
            clock: DefaultClock::default(),
            checks: AtomicU64::new(0),
        })
    }

    /// Takes one update from `org_id`'s allowance, or says when the next
    /// one is allowed.
    pub fn check(&self, org_id: &str) -> Result<()> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % FORGET_EVERY == FORGET_EVERY - 1 {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
        self.limiter.check_key(&org_id.to_owned()).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            // Round up so a client that waits exactly this long succeeds.
            let retry_after = Duration::from_secs(wait.as_secs() + 1);
            Error::ResourceExhausted {
                limit: Limit::OrgUpdateRate,
                message: format!(
                    "too many updates of org {org_id:?}; retry in {}s (each update may start a mass unlink)",
                    retry_after.as_secs()
                ),
                retry_after: Some(retry_after),
            }
        })
    }
}

/// Caps on open WatchJob streams.
pub struct WatchLimits {
    per_caller: usize,
    per_server: usize,
    open: Mutex<OpenWatches>,
}

#[derive(Default)]
struct OpenWatches {
    total: usize,
    by_caller: HashMap<Arc<str>, usize>,
}

impl WatchLimits {
    pub fn new(per_caller: usize, per_server: usize) -> Arc<WatchLimits> {
        Arc::new(WatchLimits {
            per_caller,
            per_server,
            open: Mutex::new(OpenWatches::default()),
        })
    }

    /// Reserves one stream for `caller`, or refuses with
    /// RESOURCE_EXHAUSTED.
    pub fn acquire(self: &Arc<Self>, caller: &Caller) -> Result<WatchPermit> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.total >= self.per_server {
            return Err(Error::ResourceExhausted {
                limit: Limit::WatchesPerServer,
                message: format!(
                    "this server has {} open WatchJob streams, its limit; retry later or on another replica",
                    open.total
                ),
                retry_after: Some(Duration::from_secs(1)),
            });
        }
        let mine = open.by_caller.get(&caller.name).copied().unwrap_or(0);
        if mine >= self.per_caller {
            return Err(Error::ResourceExhausted {
                limit: Limit::WatchesPerCaller,
                message: format!(
                    "token {:?} already has {mine} open WatchJob streams, its limit; close some first",
                    caller.name
                ),
                retry_after: None,
            });
        }
        open.total += 1;
        *open.by_caller.entry(Arc::clone(&caller.name)).or_default() += 1;
        Ok(WatchPermit {
            limits: Arc::clone(self),
            caller: Arc::clone(&caller.name),
        })
    }

    /// Streams open now (the `orgauth_watch_streams_open` gauge).
    pub fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

/// One open WatchJob stream; dropping it frees the slot.
pub struct WatchPermit {
    limits: Arc<WatchLimits>,
    caller: Arc<str>,
}

impl Drop for WatchPermit {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().unwrap_or_else(|e| e.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(count) = open.by_caller.get_mut(&self.caller) {
            *count -= 1;
            if *count == 0 {
                open.by_caller.remove(&self.caller);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use orgauth_security::Role;

    use super::*;

    #[test]
    fn updates_beyond_the_burst_wait_and_other_orgs_are_unaffected() {
        let limiter = OrgUpdateLimiter::new(1, 3).unwrap();
        for _ in 0..3 {
            limiter.check("acme").unwrap();
        }
        let err = limiter.check("acme").unwrap_err();
        assert_eq!(err.reason(), "ORG_UPDATE_RATE_LIMITED");
        let Error::ResourceExhausted { retry_after, .. } = err else {
            unreachable!()
        };
        let wait = retry_after.unwrap();
        assert!(
            wait > Duration::from_secs(1) && wait <= Duration::from_secs(61),
            "{wait:?}"
        );
        limiter.check("globex").unwrap();
        assert!(OrgUpdateLimiter::new(0, 10).is_none());
    }

    #[test]
    fn watch_caps_per_caller_and_server_and_release_on_drop() {
        let limits = WatchLimits::new(2, 3);
        let alice = Caller::new("alice", Role::Admin, []);
        let bob = Caller::new("bob", Role::Admin, []);
        let a1 = limits.acquire(&alice).unwrap();
        let _a2 = limits.acquire(&alice).unwrap();
        let err = limits.acquire(&alice).err().unwrap();
        assert_eq!(err.reason(), "WATCH_LIMIT_PER_CALLER");
        let _b1 = limits.acquire(&bob).unwrap();
        let err = limits.acquire(&bob).err().unwrap();
        assert_eq!(err.reason(), "WATCH_LIMIT_PER_SERVER");
        drop(a1);
        assert_eq!(limits.open(), 2);
        let _b2 = limits.acquire(&bob).unwrap();
    }
}
