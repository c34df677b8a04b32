//! The Postgres column: the measurements whose figures depend on the
//! storage backend, run again with both servers on PostgreSQL, after the
//! SQLite suite (whose servers are stopped by then), and printed beside the
//! SQLite figures of the same run.
//!
//! - 1: UpdateOrg latency at the same org sizes, next to Health Check on
//!   the same server ([`latency`], org-server `--workers 0`).
//! - 4: unlink end to end at the same sizes, next to Auth's own PostgreSQL
//!   store (`auth_server::store::postgres::PgStore`, in this process) on a
//!   fresh database of the same server ([`unlink`]).
//! - 5: job pickup ([`pickup`]) on one replica, and through an API-only
//!   second replica whose jobs run on the first.
//! - 7: cross-replica watch delay ([`replicas`]).
//!
//! PostgreSQL comes from `orgauth_testkit::TempPostgres::start_durable`: a
//! throw-away server on 127.0.0.1, its data directory on disk, with
//! PostgreSQL's durability defaults (`fsync`, `synchronous_commit`,
//! `full_page_writes` on), so every commit waits for its WAL flush, as
//! SQLite's do. The settings are read back from the server and stated
//! beside the figures.
//! auth-server and org-server each get a database of their own (`auth`,
//! `org`) on that server, with their default pools (8 connections).
//!
//! When PostgreSQL is not installed the column is skipped with a note.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use orgauth_testkit::TempPostgres;

use crate::error::{BoxError, Result};
use crate::latency;
use crate::replicas::{self, CrossReplica};
use crate::report::{Goal, Row, SizeLatency};
use crate::servers::{Backend, OrgOptions, Stack};
use crate::{Log, PICKUP_ORG, pickup, rpc, size_org, unlink};

/// Sizes and counts of the Postgres column.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Org sizes of measurement 1 (the SQLite suite's).
    pub org_sizes: Vec<u64>,
    /// Calls of measurement 1.
    pub latency: latency::Plan,
    /// Org sizes unlinked end to end (measurement 4).
    pub unlink_sizes: Vec<u64>,
    /// Jobs of measurement 5, on replica A and again through replica B.
    pub pickup: pickup::Plan,
    /// Jobs of measurement 7.
    pub replicas: replicas::Plan,
    /// Members of the org measurement 7 unlinks (one of `unlink_sizes`,
    /// already unlinked by measurement 4).
    pub replica_members: u64,
}

/// What the column came to.
#[derive(Debug)]
pub enum Outcome {
    /// Not run: `--no-postgres`, or PostgreSQL is not installed.
    Skipped(String),
    /// Started but failed; the SQLite figures still stand.
    Failed {
        /// What failed.
        error: String,
        /// The server's settings, when it got that far.
        durability: Option<String>,
    },
    /// Measured.
    Measured(Column),
}

/// The Postgres column's figures.
#[derive(Debug)]
pub struct Column {
    /// The PostgreSQL server and its durability settings, in words.
    pub durability: String,
    /// The rows (named as the SQLite rows of the same measurement).
    pub rows: Vec<Row>,
    /// UpdateOrg latency per org size.
    pub sizes: Vec<SizeLatency>,
    /// Health Check p50 of measurement 1, ms.
    pub check_p50_ms: f64,
    /// Measurement 7.
    pub cross_replica: CrossReplica,
}

/// Starts a throw-away PostgreSQL server and measures the column on it.
pub async fn run(bin_dir: &Path, plan: &Plan, log: &mut Log) -> Outcome {
    log.phase("pg: start PostgreSQL");
    let pg = match tokio::task::spawn_blocking(TempPostgres::start_durable).await {
        Ok(Some(pg)) => Arc::new(pg),
        Ok(None) => {
            return Outcome::Skipped(
                "PostgreSQL binaries not found (orgauth-testkit printed why above)".to_owned(),
            );
        }
        Err(err) => {
            return Outcome::Failed {
                error: format!("starting PostgreSQL failed: {err}"),
                durability: None,
            };
        }
    };
    let durability = match describe(&pg).await {
        Ok(durability) => durability,
        Err(err) => {
            stop(pg).await;
            return Outcome::Failed {
                error: format!("reading PostgreSQL's settings failed: {err}"),
                durability: None,
            };
        }
    };
    log.say(&format!("   {durability}"));
    log.end_phase("pg: start PostgreSQL");
    let outcome = match measure(bin_dir, plan, &pg, log, &durability).await {
        Ok(column) => Outcome::Measured(column),
        Err(err) => Outcome::Failed {
            error: err.to_string(),
            durability: Some(durability),
        },
    };
    stop(pg).await;
    outcome
}

/// Stops the server and removes its directory (which blocks).
async fn stop(pg: Arc<TempPostgres>) {
    let _ = tokio::task::spawn_blocking(move || drop(pg)).await;
}

/// Runs `f` on the server on a blocking thread (the testkit's calls run
/// client programs and wait for them; they panic on failure).
async fn blocking<T: Send + 'static>(
    pg: &Arc<TempPostgres>,
    f: impl FnOnce(&TempPostgres) -> T + Send + 'static,
) -> Result<T> {
    let pg = Arc::clone(pg);
    tokio::task::spawn_blocking(move || f(&pg))
        .await
        .map_err(|err| BoxError::from(format!("PostgreSQL client call failed: {err}")))
}

/// The server's version and durability settings as it reports them, and
/// the filesystem its data directory is on.
async fn describe(pg: &Arc<TempPostgres>) -> Result<String> {
    let settings = blocking(pg, |pg| {
        pg.psql(
            "postgres",
            "SELECT current_setting('server_version') || '|' || current_setting('fsync') \
             || '|' || current_setting('synchronous_commit') || '|' \
             || current_setting('full_page_writes') || '|' || current_setting('shared_buffers')",
        )
    })
    .await?;
    let fields: Vec<&str> = settings.trim().split('|').collect();
    let [
        version,
        fsync,
        synchronous_commit,
        full_page_writes,
        shared_buffers,
    ] = fields[..]
    else {
        return Err(format!("unexpected settings from psql: {settings:?}").into());
    };
    let data_dir = pg.data_dir().to_path_buf();
    let filesystem = Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(&data_dir)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map_or_else(
            || "an unknown filesystem".to_owned(),
            |output| String::from_utf8_lossy(&output.stdout).trim().to_owned(),
        );
    let durable = fsync == "on" && synchronous_commit != "off" && filesystem != "tmpfs";
    let verdict = if durable {
        "commits wait for an fsync of the WAL, as SQLite's do"
    } else {
        "NOT durable: no commit waits for a disk, so Postgres's commit costs here \
         are a lower bound, where SQLite's include an fsync per commit"
    };
    Ok(format!(
        "PostgreSQL {version} (orgauth-testkit's throw-away server): fsync={fsync}, \
         synchronous_commit={synchronous_commit}, full_page_writes={full_page_writes}, \
         shared_buffers={shared_buffers}, data directory on {filesystem} ({}); {verdict}; \
         both servers on it (databases org and auth), pools of 8 connections",
        data_dir.display()
    ))
}

async fn measure(
    bin_dir: &Path,
    plan: &Plan,
    pg: &Arc<TempPostgres>,
    log: &mut Log,
    durability: &str,
) -> Result<Column> {
    let (org_url, auth_url) = blocking(pg, |pg| {
        (pg.create_database("org"), pg.create_database("auth"))
    })
    .await?;
    let backend = Backend::Postgres { org_url, auth_url };
    let mut stack = Stack::start_on(bin_dir, backend, OrgOptions::default())?;
    match suite(plan, &mut stack, pg, log, durability).await {
        Ok(column) => Ok(column),
        Err(err) => {
            eprintln!("{}", stack.log_tails());
            Err(err)
        }
    }
}

async fn suite(
    plan: &Plan,
    stack: &mut Stack,
    pg: &Arc<TempPostgres>,
    log: &mut Log,
    durability: &str,
) -> Result<Column> {
    log.say(&format!(
        "   auth-server pid {}, org-server pid {} (both on PostgreSQL)",
        stack.auth_pid(),
        stack.org_pid().unwrap_or(0)
    ));
    log.phase("pg seed");
    seed(plan, stack, log).await?;
    log.end_phase("pg seed");

    log.phase("pg 5: job pickup");
    let mut rows = pickup::run(&stack.org()?, PICKUP_ORG, plan.pickup).await?;
    log.end_phase("pg 5: job pickup");

    log.phase("pg 4: unlink end to end and raw");
    for &members in &plan.unlink_sizes {
        let e2e =
            unlink::end_to_end(&stack.org()?, &stack.auth(), &size_org(members), members).await?;
        log.say(&format!("   end to end {members}: {}", e2e.breakdown()));
        let raw_url = blocking(pg, move |pg| pg.create_database(&format!("raw_{members}"))).await?;
        let raw = unlink::raw_postgres(&raw_url, members, 500, 4).await?;
        log.say(&format!(
            "   raw {members} (Auth PgStore): {:.2} s",
            raw.elapsed.as_secs_f64()
        ));
        rows.extend(unlink::rows(&e2e, &raw, "Auth PgStore 500x4"));
    }
    log.end_phase("pg 4: unlink end to end and raw");

    log.phase("pg 7: two replicas");
    stack.start_replica(OrgOptions {
        workers: 0,
        ..OrgOptions::default()
    })?;
    log.say(&format!(
        "   replica A pid {} --workers 4, replica B pid {} --workers 0, one database",
        stack.org_pid().unwrap_or(0),
        stack.replica_pid().unwrap_or(0)
    ));
    let via_b = pickup::run(&stack.replica()?, PICKUP_ORG, plan.pickup).await?;
    for mut row in via_b {
        row.measurement = row
            .measurement
            .replacen("job pickup", "job pickup through replica B", 1);
        row.note = format!(
            "UpdateOrg and WatchJob on replica B (--workers 0), the job run by replica A, \
             which hears of it through the database; {}",
            row.note
        );
        rows.push(row);
    }
    let cross = replicas::run(
        &stack.org()?,
        &stack.replica()?,
        &size_org(plan.replica_members),
        plan.replica_members,
        plan.replicas,
    )
    .await?;
    log.say(&format!(
        "   {} versions over {} jobs: on A p50 {:.2} ms p99 {:.2} ms; on B p50 {:.2} ms \
         p99 {:.2} ms; B behind A p50 {:.2} ms p99 {:.2} ms (min {:.2}, max {:.2}); \
         job start through B p50 {:.1} ms",
        cross.versions,
        cross.jobs,
        cross.a_delay_p50_ms,
        cross.a_delay_p99_ms,
        cross.b_delay_p50_ms,
        cross.b_delay_p99_ms,
        cross.lag_p50_ms,
        cross.lag_p99_ms,
        cross.lag_min_ms,
        cross.lag_max_ms,
        cross.start_p50_ms
    ));
    stack.stop_replica()?;
    rows.extend(cross_rows(&cross));
    log.end_phase("pg 7: two replicas");

    log.phase("pg 1: UpdateOrg latency");
    stack.restart_org(OrgOptions {
        workers: 0,
        ..OrgOptions::default()
    })?;
    let sized: Vec<(String, u64)> = plan
        .org_sizes
        .iter()
        .map(|&members| (size_org(members), members))
        .collect();
    let storage = if durability.contains("NOT durable") {
        "PostgreSQL, not durable (fsync=off; see the Postgres setup line)"
    } else {
        "PostgreSQL, durable commits"
    };
    let measured = latency::run(&stack.org()?, &sized, plan.latency, storage).await?;
    rows.extend(measured.rows.iter().cloned());
    log.end_phase("pg 1: UpdateOrg latency");

    rows.sort_by_key(|row| row.section);
    Ok(Column {
        durability: durability.to_owned(),
        rows,
        sizes: measured.sizes,
        check_p50_ms: measured.check_p50_ms,
        cross_replica: cross,
    })
}

/// The rows of measurement 7.
fn cross_rows(cross: &CrossReplica) -> Vec<Row> {
    let note = format!(
        "{} unlink jobs of {} members (none linked: the same calls and checkpoints), \
         created through replica B (--workers 0) and run by replica A (--workers 4, \
         batch 500, parallelism 4); one watcher on each replica, opened right after \
         UpdateOrg; {} versions written while both watched (A received {:.0}% of them \
         itself, B {:.0}%, the rest coalesced into a newer one); B had a version no \
         later than A for {:.0}% of them; lag min {:.2} ms, max {:.2} ms; \
         UpdateOrg on B -> RUNNING seen on A p50 {:.1} ms; {:.0} members/s",
        cross.jobs,
        cross.members,
        cross.versions,
        100.0 * cross.a_received_share,
        100.0 * cross.b_received_share,
        100.0 * cross.b_first_share,
        cross.lag_min_ms,
        cross.lag_max_ms,
        cross.start_p50_ms,
        cross.members_per_s
    );
    vec![
        Row::new(
            7,
            "watch delay on replica B p50 (update_time -> received)",
            cross.b_delay_p50_ms,
            "ms",
            Some((cross.a_delay_p50_ms, "on A p50")),
            Goal::None,
        )
        .note(note.clone()),
        Row::new(
            7,
            "watch delay on replica B p99",
            cross.b_delay_p99_ms,
            "ms",
            Some((cross.a_delay_p99_ms, "on A p99")),
            Goal::None,
        )
        .note(note.clone()),
        Row::new(
            7,
            "watch lag of B behind A, per version, p50",
            cross.lag_p50_ms,
            "ms",
            None,
            Goal::None,
        )
        .note(note.clone()),
        Row::new(
            7,
            "watch lag of B behind A, per version, p99",
            cross.lag_p99_ms,
            "ms",
            None,
            Goal::None,
        )
        .note(note),
    ]
}

/// Creates the sized orgs and the pickup org, adds the sized orgs'
/// members and links those the unlink needs.
async fn seed(plan: &Plan, stack: &Stack, log: &Log) -> Result<()> {
    let channel = rpc::connect(&stack.org()?).await?;
    let mut org_ids: Vec<String> = plan.org_sizes.iter().map(|&m| size_org(m)).collect();
    org_ids.push(PICKUP_ORG.to_owned());
    rpc::create_orgs(&channel, &org_ids).await?;
    log.say(&format!("   created {} orgs", org_ids.len()));
    crate::seed_sized_orgs(&channel, stack, &plan.org_sizes, log, |members| {
        plan.unlink_sizes.contains(&members)
    })
    .await?;
    Ok(())
}
