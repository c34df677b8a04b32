//! `orgctl job list --watch`: a live view of many jobs at once.
//!
//! The view lists the newest jobs matching the filters, opens a WatchJob
//! stream (the client library's reconnecting watch) for each one still
//! QUEUED or RUNNING, and lists again every `--interval` to pick up new
//! jobs. Jobs it cannot watch (past [`MAX_WATCHES`], or refused by the
//! server's watch limits) are polled with GetJob on each round instead.
//! Every update goes through [`Board::apply`], which keeps only the newest
//! version of each job, so a stale list never undoes what a watch said.
//! A job that drops out of the view (older than the `--page-size` newest)
//! has its watch aborted at once, and whatever that watch still had on the
//! way is ignored: the view never holds more streams than rows it shows,
//! and never more than [`MAX_WATCHES`].
//!
//! On a terminal the view is a table redrawn in place; otherwise (or with
//! `--output json`) it prints one line or JSON object per change. A job
//! stays in the view after it leaves the `--state` filter, so one can see
//! it finish.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io::IsTerminal;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use orgauth_client::pb::org::{Job, JobState};
use orgauth_client::{ClientError, OrgClient, is_terminal, job_state_name};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::MissedTickBehavior;
use tonic::Code;
use tracing::{info, warn};

use super::output::{Output, job_json, job_text, print_line, progress_cell};
use super::table::Table;
use super::watch::format_seconds;
use super::{CliError, ExitStatus};

/// The most WatchJob streams the view holds open at once; the jobs past it
/// are polled. Servers cap open streams per token (1,000 by default), and
/// other tools of the same operator need some too.
const MAX_WATCHES: usize = 32;

/// The jobs shown when `--page-size` is not given: about a screenful.
pub const DEFAULT_ROWS: i32 = 20;

/// The quickest the terminal table is redrawn: a job reports every batch,
/// far more often than anyone can read.
const REDRAW_EVERY: Duration = Duration::from_millis(200);

/// GetJob calls in flight when polling the jobs that are not watched.
const POLL_PARALLELISM: usize = 8;

/// What the view shows and how it ends.
#[derive(Debug, Clone)]
pub struct LiveArgs {
    /// Only jobs of this org (empty: every org).
    pub org_id: String,
    /// Only jobs in this state when first listed (unspecified: any).
    pub state: JobState,
    /// How many of the newest jobs to list and show.
    pub rows: i32,
    /// How often to list again.
    pub interval: Duration,
    /// Exit once no job shown is QUEUED or RUNNING.
    pub until_idle: bool,
    /// How long listing may keep failing (server restarting) before the
    /// view gives up.
    pub retry_budget: Duration,
}

/// How changes are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The table, redrawn in place on the terminal.
    Screen,
    /// One line per change.
    Lines,
    /// One JSON object per change.
    Json,
}

/// What a watch task reports, tagged with the watch it comes from.
struct Event {
    /// The [`Watches`] serial of the watch that sent it.
    watch: u64,
    kind: EventKind,
}

enum EventKind {
    Update(Job),
    /// The watch ended: after the job's terminal state (`None`), or with an
    /// error the client library could not recover from.
    Ended {
        job_id: String,
        error: Option<ClientError>,
    },
}

/// Runs the view until Ctrl-C, or with `--until-idle` until no job shown is
/// QUEUED or RUNNING.
pub async fn watch_jobs(
    client: &OrgClient,
    args: LiveArgs,
    output: Output,
) -> Result<ExitStatus, CliError> {
    let mode = if output.is_json() {
        Mode::Json
    } else if std::io::stdout().is_terminal() {
        Mode::Screen
    } else {
        Mode::Lines
    };
    let rows = usize::try_from(args.rows).unwrap_or(1).max(1);
    let mut board = Board::new(rows);
    let (events_tx, mut events) = mpsc::channel(256);
    // Dropping it (when the view ends, however it ends) aborts every watch.
    let mut watches = Watches::default();
    // Jobs whose watch the server refused: polled from then on.
    let mut unwatchable: HashSet<String> = HashSet::new();
    let mut relist = tokio::time::interval(args.interval);
    relist.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut listing_failed_since: Option<Instant> = None;
    let mut listed_once = false;
    let mut screen = Screen::new(&args);

    loop {
        let mut changed = Vec::new();
        tokio::select! {
            _ = relist.tick() => {
                match list_and_poll(client, &args, &board, &watches).await {
                    Ok(round) => {
                        listing_failed_since = None;
                        listed_once = true;
                        screen.problem = None;
                        for job_id in &round.gone {
                            board.remove(job_id);
                        }
                        for job in round.jobs {
                            if board.apply(job.clone()) {
                                changed.push(job);
                            }
                        }
                    }
                    Err(error) if error.is_transient() => {
                        let since = *listing_failed_since.get_or_insert_with(Instant::now);
                        if since.elapsed() > args.retry_budget {
                            return Err(error.into());
                        }
                        warn!(%error, "listing jobs failed; trying again");
                        screen.problem = Some(format!("listing jobs failed, retrying: {error}"));
                    }
                    Err(error) => return Err(error.into()),
                }
                board.trim();
                // The jobs trimmed (or gone) stop being watched: their
                // watches are aborted (closing their streams) before any
                // new one starts.
                watches.stop_unless(|job_id| board.jobs.contains_key(job_id));
                for job_id in board.to_watch(&watches, &unwatchable, MAX_WATCHES) {
                    let (client, events) = (client.clone(), events_tx.clone());
                    watches.start(job_id.clone(), |watch| follow(client, job_id, watch, events));
                }
                // Ages move on even when nothing else does.
                screen.dirty = true;
            }
            // What a watch sent before it was stopped (its job trimmed) is
            // dropped: it would put the job back on the board.
            Some(event) = events.recv() => match event.kind {
                EventKind::Update(job) if watches.is_current(&job.id, event.watch) => {
                    if board.apply(job.clone()) {
                        changed.push(job);
                    }
                }
                EventKind::Ended { job_id, error } if watches.ended(&job_id, event.watch) => {
                    match error {
                        None => {}
                        Some(error) if error.code() == Code::NotFound => board.remove(&job_id),
                        Some(error) => {
                            info!(%job_id, %error, "cannot watch job; polling it");
                            unwatchable.insert(job_id);
                        }
                    }
                }
                EventKind::Update(_) | EventKind::Ended { .. } => {}
            },
            () = screen.next_draw(), if mode == Mode::Screen && screen.dirty => {}
        }
        watches.reap();

        match mode {
            Mode::Json => changed.iter().for_each(|job| print_line(job_json(job))),
            Mode::Lines => changed
                .iter()
                .for_each(|job| print_line(job_text(job, false))),
            Mode::Screen => {
                screen.dirty |= !changed.is_empty();
                if screen.dirty && screen.may_draw() {
                    screen.draw(&board);
                }
            }
        }
        if args.until_idle && listed_once && board.is_idle() {
            if mode == Mode::Screen {
                screen.draw(&board);
            }
            return Ok(ExitStatus::Success);
        }
    }
}

/// What one round of listing found.
struct Round {
    /// The listed jobs and the polled ones.
    jobs: Vec<Job>,
    /// Polled jobs that no longer exist (pruned): dropped from the view.
    gone: Vec<String>,
}

/// One round: the newest jobs matching the filters, plus the current state
/// of every job shown that is still active but neither watched nor in that
/// list.
async fn list_and_poll(
    client: &OrgClient,
    args: &LiveArgs,
    board: &Board,
    watched: &impl Watched,
) -> Result<Round, ClientError> {
    let page = client
        .list_jobs(&args.org_id, args.state, args.rows, "")
        .await?;
    let listed: HashSet<&str> = page.items.iter().map(|job| job.id.as_str()).collect();
    let to_poll: Vec<String> = board
        .jobs
        .values()
        .filter(|job| !is_terminal(job.state()))
        .filter(|job| !watched.is_watched(&job.id) && !listed.contains(job.id.as_str()))
        .map(|job| job.id.clone())
        .collect();
    let polled: Vec<(String, orgauth_client::Result<Job>)> = futures::stream::iter(to_poll)
        .map(|job_id| async move {
            let result = client.get_job(&job_id).await;
            (job_id, result)
        })
        .buffer_unordered(POLL_PARALLELISM)
        .collect()
        .await;
    let mut round = Round {
        jobs: page.items,
        gone: Vec::new(),
    };
    for (job_id, result) in polled {
        match result {
            Ok(job) => round.jobs.push(job),
            Err(error) if error.code() == Code::NotFound => round.gone.push(job_id),
            Err(error) => return Err(error),
        }
    }
    Ok(round)
}

/// Forwards one job's watch (serial `watch`) to the view until it ends.
async fn follow(client: OrgClient, job_id: String, watch: u64, events: mpsc::Sender<Event>) {
    let mut updates = client.watch_job(job_id.clone());
    let error = loop {
        match updates.next().await {
            Some(Ok(job)) => {
                let event = Event {
                    watch,
                    kind: EventKind::Update(job),
                };
                if events.send(event).await.is_err() {
                    // The view is gone.
                    return;
                }
            }
            Some(Err(error)) => break Some(error),
            None => break None,
        }
    };
    let kind = EventKind::Ended { job_id, error };
    let _ = events.send(Event { watch, kind }).await;
}

/// Which jobs have a watch running: what [`Board::to_watch`] and
/// [`list_and_poll`] need to know.
trait Watched {
    fn is_watched(&self, job_id: &str) -> bool;
    fn count(&self) -> usize;
}

/// The running watch tasks, at most one per job. Each watch gets a serial
/// number that tags its events, so that the view can tell the current watch
/// of a job from one it stopped (whose last events may still be queued),
/// even once the job is watched again. Dropping this aborts every watch.
#[derive(Default)]
struct Watches {
    tasks: JoinSet<()>,
    /// The serial and the task of each watched job's watch.
    by_job: HashMap<String, (u64, AbortHandle)>,
    next_serial: u64,
}

impl Watches {
    /// Starts watching a job with the task `follow(serial)` makes; a watch
    /// already running for that job is stopped first.
    fn start<F>(&mut self, job_id: String, follow: impl FnOnce(u64) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let serial = self.next_serial;
        self.next_serial += 1;
        let task = self.tasks.spawn(follow(serial));
        if let Some((_, previous)) = self.by_job.insert(job_id, (serial, task)) {
            previous.abort();
        }
    }

    /// Aborts the watch of every job `keep` says no to.
    fn stop_unless(&mut self, keep: impl Fn(&str) -> bool) {
        self.by_job.retain(|job_id, (_, task)| {
            let kept = keep(job_id);
            if !kept {
                task.abort();
            }
            kept
        });
    }

    /// Whether watch `serial` is the one running for the job.
    fn is_current(&self, job_id: &str, serial: u64) -> bool {
        self.by_job
            .get(job_id)
            .is_some_and(|(current, _)| *current == serial)
    }

    /// Watch `serial` of the job ended on its own; returns whether it was
    /// the current one (and so whether its end means anything).
    fn ended(&mut self, job_id: &str, serial: u64) -> bool {
        let current = self.is_current(job_id, serial);
        if current {
            self.by_job.remove(job_id);
        }
        current
    }

    /// Frees the tasks that finished or were aborted, so the set stays small.
    fn reap(&mut self) {
        while self.tasks.try_join_next().is_some() {}
    }
}

impl Watched for Watches {
    fn is_watched(&self, job_id: &str) -> bool {
        self.by_job.contains_key(job_id)
    }

    fn count(&self) -> usize {
        self.by_job.len()
    }
}

/// The jobs in view, newest version of each.
#[derive(Debug)]
struct Board {
    jobs: HashMap<String, Job>,
    /// How many jobs are shown at most: the newest ones.
    rows: usize,
}

impl Board {
    fn new(rows: usize) -> Self {
        Self {
            jobs: HashMap::new(),
            rows,
        }
    }

    /// Takes a job in if it is new or newer than the one held; returns
    /// whether anything changed.
    fn apply(&mut self, job: Job) -> bool {
        match self.jobs.get(&job.id) {
            Some(held) if held.version >= job.version => false,
            _ => {
                self.jobs.insert(job.id.clone(), job);
                true
            }
        }
    }

    fn remove(&mut self, job_id: &str) {
        self.jobs.remove(job_id);
    }

    /// The jobs, newest first (creation time, then id: ids are UUIDv7, so
    /// they sort by creation too).
    fn sorted(&self) -> Vec<&Job> {
        let mut jobs: Vec<&Job> = self.jobs.values().collect();
        jobs.sort_by(|a, b| {
            let key = |job: &Job| {
                job.create_time
                    .map(|time| (time.seconds, time.nanos))
                    .unwrap_or_default()
            };
            key(b).cmp(&key(a)).then_with(|| b.id.cmp(&a.id))
        });
        jobs
    }

    /// Forgets the oldest jobs beyond the number of rows shown.
    fn trim(&mut self) {
        if self.jobs.len() <= self.rows {
            return;
        }
        let evicted: Vec<String> = self.sorted()[self.rows..]
            .iter()
            .map(|job| job.id.clone())
            .collect();
        for job_id in evicted {
            self.jobs.remove(&job_id);
        }
    }

    /// Active jobs to start watching, newest first, within the cap.
    fn to_watch(
        &self,
        watched: &impl Watched,
        unwatchable: &HashSet<String>,
        cap: usize,
    ) -> Vec<String> {
        self.sorted()
            .into_iter()
            .filter(|job| !is_terminal(job.state()))
            .filter(|job| !watched.is_watched(&job.id) && !unwatchable.contains(&job.id))
            .take(cap.saturating_sub(watched.count()))
            .map(|job| job.id.clone())
            .collect()
    }

    /// No job shown is QUEUED or RUNNING.
    fn is_idle(&self) -> bool {
        self.jobs.values().all(|job| is_terminal(job.state()))
    }

    /// The view as a table: id, org, state, progress, failures, attempt, age.
    fn table(&self, now: SystemTime) -> Table {
        let mut table = Table::new(&["ID", "ORG", "STATE", "PROGRESS", "FAILED", "ATTEMPT", "AGE"]);
        for job in self.sorted() {
            table.push(vec![
                job.id.clone(),
                job.org_id.clone(),
                job_state_name(job.state()).to_owned(),
                progress_cell(job),
                job.failed_members.to_string(),
                job.attempt.to_string(),
                age(job, now),
            ]);
        }
        table
    }
}

/// How long ago the job was created, as `42s`, `3m05s`, `2h07m`.
fn age(job: &Job, now: SystemTime) -> String {
    job.create_time
        .and_then(|time| SystemTime::try_from(time).ok())
        .and_then(|created| now.duration_since(created).ok())
        .map_or_else(|| "-".to_owned(), format_seconds)
}

/// The terminal view: a title line and the table, redrawn in place.
struct Screen {
    title: String,
    dirty: bool,
    last_draw: Option<Instant>,
    /// Shown under the title while listing fails.
    problem: Option<String>,
}

impl Screen {
    fn new(args: &LiveArgs) -> Self {
        let mut title = "orgctl job list --watch".to_owned();
        if !args.org_id.is_empty() {
            title.push_str(&format!(" --org {}", args.org_id));
        }
        if args.state != JobState::Unspecified {
            title.push_str(&format!(
                " --state {}",
                job_state_name(args.state).to_ascii_lowercase()
            ));
        }
        title.push_str(&format!(
            "  (every {}; Ctrl-C to quit)",
            humantime::format_duration(args.interval)
        ));
        Self {
            title,
            dirty: true,
            last_draw: None,
            problem: None,
        }
    }

    fn may_draw(&self) -> bool {
        self.last_draw
            .is_none_or(|drawn| drawn.elapsed() >= REDRAW_EVERY)
    }

    /// Resolves when the next redraw is allowed.
    async fn next_draw(&self) {
        if let Some(drawn) = self.last_draw {
            tokio::time::sleep_until((drawn + REDRAW_EVERY).into()).await;
        }
    }

    fn draw(&mut self, board: &Board) {
        let active = board
            .jobs
            .values()
            .filter(|job| !is_terminal(job.state()))
            .count();
        // Home and clear the whole screen: it also wipes any log line that
        // landed on it since the last draw.
        let mut frame = format!(
            "\x1b[H\x1b[2J{}\n{} jobs, {active} active\n",
            self.title,
            board.jobs.len()
        );
        if let Some(problem) = &self.problem {
            frame.push_str(&format!("{problem}\n"));
        }
        frame.push('\n');
        frame.push_str(&board.table(SystemTime::now()).take_lines().join("\n"));
        print_line(frame);
        self.dirty = false;
        self.last_draw = Some(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orgauth_client::pb::prost_types::Timestamp;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn job(id: &str, created: i64, version: i64, state: JobState) -> Job {
        let mut job = Job {
            id: id.into(),
            org_id: "acme".into(),
            version,
            total_members: 200,
            processed_members: 50,
            create_time: Some(Timestamp {
                seconds: created,
                nanos: 0,
            }),
            ..Job::default()
        };
        job.set_state(state);
        job
    }

    #[test]
    fn only_newer_versions_change_the_board() {
        let mut board = Board::new(10);
        assert!(board.apply(job("a", 1, 3, JobState::Running)));
        assert!(!board.apply(job("a", 1, 3, JobState::Running)));
        assert!(
            !board.apply(job("a", 1, 2, JobState::Queued)),
            "a stale list"
        );
        assert!(board.apply(job("a", 1, 4, JobState::Succeeded)));
        assert_eq!(board.jobs["a"].state(), JobState::Succeeded);
    }

    #[test]
    fn idle_once_every_job_has_ended() {
        let mut board = Board::new(10);
        assert!(board.is_idle(), "an empty view is idle");
        board.apply(job("a", 1, 1, JobState::Queued));
        board.apply(job("b", 2, 1, JobState::Succeeded));
        assert!(!board.is_idle());
        board.apply(job("a", 1, 2, JobState::Failed));
        assert!(board.is_idle());
    }

    #[test]
    fn keeps_the_newest_rows_and_watches_active_jobs_within_the_cap() {
        let mut board = Board::new(3);
        for (id, created, state) in [
            ("old", 1, JobState::Running),
            ("b", 2, JobState::Succeeded),
            ("c", 3, JobState::Running),
            ("d", 4, JobState::Queued),
        ] {
            board.apply(job(id, created, 1, state));
        }
        board.trim();
        let ids: Vec<&str> = board.sorted().iter().map(|job| job.id.as_str()).collect();
        assert_eq!(ids, ["d", "c", "b"]);

        let none = HashSet::new();
        assert_eq!(board.to_watch(&none, &none, 32), ["d", "c"]);
        assert_eq!(board.to_watch(&none, &none, 1), ["d"]);
        let watched: HashSet<String> = ["d".to_owned()].into();
        assert_eq!(board.to_watch(&watched, &none, 1), Vec::<String>::new());
        let refused: HashSet<String> = ["c".to_owned()].into();
        assert_eq!(board.to_watch(&watched, &refused, 32), Vec::<String>::new());
    }

    impl Watched for HashSet<String> {
        fn is_watched(&self, job_id: &str) -> bool {
            self.contains(job_id)
        }

        fn count(&self) -> usize {
            self.len()
        }
    }

    /// Counts the watch tasks alive: each holds one of these until it ends
    /// or is aborted.
    struct Alive(Arc<AtomicUsize>);

    impl Drop for Alive {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// A watch task that never ends on its own, like the watch of a job
    /// that keeps running.
    fn endless(alive: &Arc<AtomicUsize>) -> impl Future<Output = ()> + Send + 'static {
        alive.fetch_add(1, Ordering::SeqCst);
        let guard = Alive(alive.clone());
        async move {
            let _guard = guard;
            std::future::pending::<()>().await;
        }
    }

    /// Lets the aborted tasks be dropped.
    async fn settle(watches: &mut Watches) {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        watches.reap();
    }

    #[tokio::test]
    async fn trimmed_jobs_stop_being_watched_and_their_late_events_are_ignored() {
        let alive = Arc::new(AtomicUsize::new(0));
        let mut board = Board::new(2);
        let mut watches = Watches::default();
        let none = HashSet::new();
        // More jobs start than there are rows, round after round.
        for round in 0..20_i64 {
            for n in 0..3 {
                let id = format!("job-{round:02}-{n}");
                board.apply(job(&id, round * 3 + n, 1, JobState::Running));
            }
            board.trim();
            watches.stop_unless(|job_id| board.jobs.contains_key(job_id));
            for job_id in board.to_watch(&watches, &none, MAX_WATCHES) {
                watches.start(job_id, |_| endless(&alive));
            }
            settle(&mut watches).await;
            assert_eq!(watches.count(), 2, "round {round}");
            assert_eq!(
                alive.load(Ordering::SeqCst),
                2,
                "round {round}: tasks alive"
            );
            assert_eq!(watches.tasks.len(), 2, "round {round}: tasks held");
        }
        let mut watched: Vec<&String> = watches.by_job.keys().collect();
        watched.sort();
        assert_eq!(watched, ["job-19-1", "job-19-2"]);

        // The serial tells the running watch of a job from a stopped one.
        let (serial, _) = watches.by_job["job-19-2"];
        assert!(watches.is_current("job-19-2", serial));
        assert!(!watches.is_current("job-19-0", serial), "a trimmed job");
        watches.start("job-19-2".into(), |_| endless(&alive));
        settle(&mut watches).await;
        assert_eq!(alive.load(Ordering::SeqCst), 2, "the old watch was aborted");
        assert!(!watches.is_current("job-19-2", serial), "the old watch");
        assert!(!watches.ended("job-19-2", serial), "its end means nothing");
        assert!(watches.is_watched("job-19-2"));
        let (serial, _) = watches.by_job["job-19-2"];
        assert!(watches.ended("job-19-2", serial));
        assert!(!watches.is_watched("job-19-2"));

        // The view ending aborts whatever is left.
        drop(watches);
        tokio::task::yield_now().await;
        assert_eq!(alive.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn the_table_shows_progress_attempt_and_age() {
        let mut board = Board::new(10);
        let mut running = job("0190", 1_000, 1, JobState::Running);
        running.attempt = 2;
        board.apply(running);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_185);
        let lines = board.table(now).take_lines();
        assert_eq!(
            lines,
            [
                "ID    ORG   STATE    PROGRESS    FAILED  ATTEMPT  AGE",
                "0190  acme  RUNNING  50/200 25%  0       2        3m05s",
            ]
        );
    }
}
