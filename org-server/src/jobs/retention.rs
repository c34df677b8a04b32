//! Retention: finished jobs are kept for a while so callers can read their
//! outcome, then pruned so the jobs table does not grow without bound.
//! Idempotency keys expire on the same clock: a request retried after its
//! job was pruned is treated as new.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::domain::now_micros;
use crate::store::Store;

/// Prunes jobs that ended more than `retention` ago, now and then every
/// `interval`, until `stop` fires.
pub async fn prune_loop(
    store: Arc<dyn Store>,
    retention: Duration,
    interval: Duration,
    stop: CancellationToken,
) {
    let retention_micros = i64::try_from(retention.as_micros()).unwrap_or(i64::MAX);
    loop {
        let cutoff = now_micros().saturating_sub(retention_micros);
        match store.prune_finished_jobs(cutoff).await {
            Ok(0) => {}
            Ok(pruned) => info!(pruned, ?retention, "pruned finished jobs"),
            Err(err) => warn!(error = %err, "pruning finished jobs failed; will retry"),
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = stop.cancelled() => return,
        }
    }
}
