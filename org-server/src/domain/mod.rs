//! The rules of org-server, free of transport and storage concerns.
//!
//! - [`org`]: organizations and members, input validation, and the plan an
//!   update turns into (which row changes, which job to enqueue).
//! - [`job`]: the job model and its state machine.
//! - [`page`]: page sizes and sealed page tokens.
//! - [`access`]: which caller may do what.

pub mod access;
pub mod job;
pub mod org;
pub mod page;

/// Microseconds since the Unix epoch: how every timestamp is stored.
pub type Micros = i64;

/// The current time in microseconds since the Unix epoch.
pub fn now_micros() -> Micros {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_micros()).unwrap_or(i64::MAX)
}
