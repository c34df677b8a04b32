//! Job changes made by any replica, heard through PostgreSQL's
//! LISTEN/NOTIFY, so that every replica's workers and WatchJob streams
//! learn of them at once.
//!
//! The schema's trigger announces every committed job change on channel
//! `orgauth_jobs` (see `migrations/postgres/0001_init.sql`). One listener
//! per process turns those into [`JobChange`]s. They are hints, never the
//! source of truth: receivers re-read the row. A listener that loses its
//! connection misses what was sent meanwhile, so after every reconnect it
//! reports [`JobChange::Missed`], on which receivers re-read everything
//! they care about; that is how a terminal state is never missed.
//!
//! A connection can also die silently (a network partition, a failover
//! behind a proxy). The listener pings its connection after a quiet spell
//! and starts over when the ping fails or hangs.
//!
//! SQLite serves one process, which learns of its own changes directly, so
//! it has no listener.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgNotification, PgPoolOptions};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::domain::job::JobState;

/// The channel the schema's trigger notifies.
pub const CHANNEL: &str = "orgauth_jobs";

/// How long the listener waits without a notification before it checks
/// that its connection is alive.
const QUIET_SPELL: Duration = Duration::from_secs(10);

/// How long a liveness ping may take before the connection is presumed
/// dead.
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest pause between two attempts to reconnect.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Changes waiting for the consumer. Beyond this the listener reports
/// [`JobChange::Missed`] instead of queueing more.
const QUEUE: usize = 4096;

/// What the listener heard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobChange {
    /// A job's row changed and now has `version`.
    Changed {
        job_id: Uuid,
        version: i64,
        state: JobState,
        /// The change may have made a job runnable: a job was enqueued, a
        /// job ended (unblocking its org's next one), or a lease was
        /// handed back.
        claimable: bool,
        /// The job is running and was just asked to stop (CancelJob, or
        /// superseded): whichever replica runs it should stop now.
        stop_requested: bool,
    },
    /// Changes may have gone unheard (the listener reconnected, or the
    /// consumer fell behind): re-read whatever matters.
    Missed,
}

impl JobChange {
    /// Parses the trigger's payload, `"JOB_ID VERSION STATE CLAIMABLE STOP"`.
    pub fn parse(payload: &str) -> Option<JobChange> {
        let mut fields = payload.split(' ');
        let job_id = Uuid::try_parse(fields.next()?).ok()?;
        let version = fields.next()?.parse().ok()?;
        let state = JobState::from_i64(fields.next()?.parse().ok()?)?;
        let flag = |field: Option<&str>| match field? {
            "1" => Some(true),
            "0" => Some(false),
            _ => None,
        };
        let claimable = flag(fields.next())?;
        let stop_requested = flag(fields.next())?;
        if fields.next().is_some() {
            return None;
        }
        Some(JobChange::Changed {
            job_id,
            version,
            state,
            claimable,
            stop_requested,
        })
    }
}

/// Starts this process's listener on the database `url` names. It runs
/// until `shutdown`; the receiver ends then.
///
/// The first connection is made here, so a server that starts has heard
/// every change committed after its start.
pub async fn listen(
    url: &str,
    shutdown: CancellationToken,
) -> Result<mpsc::Receiver<JobChange>, sqlx::Error> {
    let options = PgConnectOptions::from_str(url)?;
    let listener = subscribe(&options).await?;
    let (sender, receiver) = mpsc::channel(QUEUE);
    tokio::spawn(run(options, listener, sender, shutdown));
    Ok(receiver)
}

/// A listener on [`CHANNEL`], on a connection of its own (outside the
/// store's pool, whose connections come and go and carry a
/// statement_timeout meant for queries).
async fn subscribe(options: &PgConnectOptions) -> Result<PgListener, sqlx::Error> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .max_lifetime(None)
        .idle_timeout(None)
        .acquire_timeout(PING_TIMEOUT)
        .connect_with(options.clone())
        .await?;
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

async fn run(
    options: PgConnectOptions,
    mut listener: PgListener,
    sender: mpsc::Sender<JobChange>,
    shutdown: CancellationToken,
) {
    info!(channel = CHANNEL, "listening for job changes");
    // Set when a change could not be queued (the consumer is behind):
    // [`JobChange::Missed`] is owed as soon as the queue has room.
    let mut owe_missed = false;
    loop {
        let heard = tokio::select! {
            () = shutdown.cancelled() => return,
            () = sender.closed() => return,
            permit = sender.reserve(), if owe_missed => {
                let Ok(permit) = permit else { return };
                permit.send(JobChange::Missed);
                owe_missed = false;
                continue;
            }
            heard = tokio::time::timeout(QUIET_SPELL, listener.try_recv()) => heard,
        };
        let lost = match heard {
            Ok(Ok(Some(notification))) => {
                if !forward(&sender, &notification) {
                    owe_missed = true;
                }
                continue;
            }
            // sqlx reconnected (and re-subscribed) already: only what was
            // sent while it was away is lost.
            Ok(Ok(None)) => {
                warn!("job-change listener reconnected; re-reading watched jobs");
                owe_missed = true;
                continue;
            }
            Ok(Err(err)) => err.to_string(),
            Err(_quiet) => match ping(&mut listener).await {
                Ok(()) => continue,
                Err(reason) => reason,
            },
        };
        warn!(error = %lost, "job-change listener lost its connection; reconnecting");
        let Some(fresh) = reconnect(&options, &shutdown).await else {
            return;
        };
        listener = fresh;
        info!("job-change listener reconnected; re-reading watched jobs");
        owe_missed = true;
    }
}

/// Queues the change a notification announces. Returns false when the
/// queue was full and the change was dropped, so a re-read is owed.
fn forward(sender: &mpsc::Sender<JobChange>, notification: &PgNotification) -> bool {
    let Some(change) = JobChange::parse(notification.payload()) else {
        warn!(
            payload = notification.payload(),
            "ignoring a job-change notification that does not parse"
        );
        return true;
    };
    match sender.try_send(change) {
        Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            debug!("job-change queue full; the consumer will re-read");
            false
        }
    }
}

/// Checks the connection with a round trip, bounded by [`PING_TIMEOUT`].
async fn ping(listener: &mut PgListener) -> Result<(), String> {
    match tokio::time::timeout(
        PING_TIMEOUT,
        sqlx::query("SELECT 1").execute(&mut *listener),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => Err(format!("ping failed: {err}")),
        Err(_) => Err(format!("ping got no answer within {PING_TIMEOUT:?}")),
    }
}

/// A new listener, retried with backoff until it subscribes or shutdown.
async fn reconnect(options: &PgConnectOptions, shutdown: &CancellationToken) -> Option<PgListener> {
    let mut backoff = Duration::from_millis(50);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = tokio::time::sleep(backoff) => {}
        }
        match subscribe(options).await {
            Ok(listener) => return Some(listener),
            Err(err) => {
                debug!(error = %err, "job-change listener cannot reconnect yet");
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use orgauth_testkit::TempPostgres;

    use super::*;
    use crate::testing::{org_with_members, pg_store};

    /// The next change that is not `Missed`, or `Missed` itself when
    /// `want_missed`; panics after `within`.
    async fn next(
        changes: &mut mpsc::Receiver<JobChange>,
        want_missed: bool,
        within: Duration,
    ) -> JobChange {
        tokio::time::timeout(within, async {
            loop {
                let change = changes.recv().await.expect("the listener runs");
                if (change == JobChange::Missed) == want_missed {
                    return change;
                }
            }
        })
        .await
        .expect("heard in time")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commits_are_heard_and_a_restarted_database_is_reported_then_heard_again() {
        let Some(mut pg) = TempPostgres::start() else {
            return;
        };
        let url = pg.create_database("main");
        let store = pg_store(&url).await;
        let shutdown = CancellationToken::new();
        let mut changes = listen(&url, shutdown.clone()).await.unwrap();

        // Creating an org that allows custom SSO enqueues its policy job.
        org_with_members(&store, "acme", 3).await;
        let JobChange::Changed {
            state, claimable, ..
        } = next(&mut changes, false, Duration::from_secs(5)).await
        else {
            unreachable!()
        };
        assert_eq!((state, claimable), (JobState::Queued, true));

        // The listener's connection dies with the server; once it is back,
        // the listener says that changes may have been missed...
        drop(store);
        tokio::task::block_in_place(|| pg.restart());
        assert_eq!(
            next(&mut changes, true, Duration::from_secs(30)).await,
            JobChange::Missed
        );
        // ...and hears new commits again.
        let store = pg_store(&url).await;
        org_with_members(&store, "globex", 1).await;
        let heard = next(&mut changes, false, Duration::from_secs(5)).await;
        assert!(matches!(heard, JobChange::Changed { .. }), "{heard:?}");

        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), async {
            while changes.recv().await.is_some() {}
        })
        .await
        .expect("the listener stops on shutdown");
    }

    #[test]
    fn payloads_parse_exactly() {
        let id = Uuid::now_v7();
        assert_eq!(
            JobChange::parse(&format!("{id} 7 2 0 1")),
            Some(JobChange::Changed {
                job_id: id,
                version: 7,
                state: JobState::Running,
                claimable: false,
                stop_requested: true,
            })
        );
        assert_eq!(
            JobChange::parse(&format!("{id} 1 1 1 0")),
            Some(JobChange::Changed {
                job_id: id,
                version: 1,
                state: JobState::Queued,
                claimable: true,
                stop_requested: false,
            })
        );
        for bad in [
            String::new(),
            "not-a-uuid 1 1 1 0".to_owned(),
            format!("{id} x 1 1 0"),
            format!("{id} 1 9 1 0"),
            format!("{id} 1 1 2 0"),
            format!("{id} 1 1 1 2"),
            format!("{id} 1 1 1"),
            format!("{id} 1 1 1 0 extra"),
        ] {
            assert_eq!(JobChange::parse(&bad), None, "{bad:?}");
        }
    }
}
