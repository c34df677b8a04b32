//! `orgauth-bench`: the project's benchmark suite.
//!
//! Starts the real `auth-server` and `org-server` (release binaries next to
//! this executable) as processes on 127.0.0.1 port 0, with authentication
//! on (tokens it issues itself, see [`servers`]), seeds them through the
//! public API, and measures what the design promises, each figure next to a
//! baseline measured in the same run:
//!
//! 1. UpdateOrg latency against org size ([`latency`]), next to Health Check.
//! 2. UpdateOrg throughput at 1, 16 and 64 clients ([`throughput`]), next to
//!    Health Check throughput.
//! 3. The naive alternative, an UpdateOrg that unlinks every member before
//!    it returns ([`naive`]), next to our UpdateOrg of the same org size.
//! 4. Unlink throughput end to end ([`unlink`]), next to Auth's raw storage
//!    rate, and a batch size x parallelism sweep.
//! 5. Job pickup latency ([`pickup`]).
//! 6. Watch fan-out ([`fanout`]): org-server's memory per WatchJob stream
//!    and the delay from a checkpoint to the last of thousands of watchers,
//!    next to the delay with one watcher.
//!
//! All of that runs on SQLite. Then the Postgres column ([`postgres`])
//! runs 1, 4 and 5 again with both servers on a throw-away PostgreSQL
//! server, plus 7, cross-replica watch delay ([`replicas`]): two
//! org-servers on one database, a watcher on each. Its figures are printed
//! beside the SQLite ones; `--no-postgres` skips it, and it is skipped with
//! a note when PostgreSQL is not installed.
//!
//! With `--svg-dir DIR` it also draws the results as SVG ([`charts`]).
//!
//! ```sh
//! cargo build --release --workspace && ./target/release/orgauth-bench [--quick] [--no-postgres] [--json PATH] [--svg-dir DIR]
//! ```

mod charts;
mod error;
mod fanout;
mod freshness;
mod latency;
mod naive;
mod pickup;
mod postgres;
mod replicas;
mod report;
mod rpc;
mod servers;
mod throughput;
mod unlink;

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;

use crate::error::{Result, fail};
use crate::latency::size_label;
use crate::report::{
    Compared, Goal, Machine, PostgresReport, Report, Row, SizeLatency, SweepPoint,
};
use crate::servers::{OrgOptions, Stack};

/// What both servers' SQLite storage is set to (see their `store::sqlite`).
const DURABILITY: &str =
    "SQLite WAL, synchronous=FULL (fsync of the WAL on every commit), both servers";

/// Benchmark suite of orgauth: real servers on loopback, every figure next
/// to a same-run baseline.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Smaller orgs, fewer calls and shorter windows: about a minute.
    #[arg(long)]
    quick: bool,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Also draw the results as SVG charts into this directory
    /// (`updateorg-latency.svg`, `unlink-sweep.svg`).
    #[arg(long, value_name = "DIR")]
    svg_dir: Option<PathBuf>,
    /// Where `org-server` and `auth-server` are (default: this executable's
    /// directory).
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    /// Run even if a server binary is older than its sources.
    #[arg(long)]
    allow_stale: bool,
    /// Skip the Postgres column (measurements 1, 4, 5 and 7 on PostgreSQL,
    /// beside the SQLite figures).
    #[arg(long)]
    no_postgres: bool,
}

/// Sizes, counts and durations of one run.
#[derive(Debug, Clone)]
struct Plan {
    quick: bool,
    org_sizes: Vec<u64>,
    latency: latency::Plan,
    throughput_levels: Vec<usize>,
    throughput: throughput::Plan,
    unlink_sizes: Vec<u64>,
    sweep_members: u64,
    sweep: Vec<(u32, u32)>,
    pickup: pickup::Plan,
    naive: Vec<naive::Plan>,
    fanout: fanout::Plan,
    fanout_members: u64,
    /// org-server's `--batch-size` while the fan-out's job runs.
    fanout_batch: u32,
    /// The Postgres column.
    postgres: postgres::Plan,
}

impl Plan {
    fn new(quick: bool) -> Self {
        let sweep = if quick {
            vec![(100, 4), (500, 1), (1000, 4)]
        } else {
            let mut points = Vec::new();
            for batch in [100, 500, 1000] {
                for parallelism in [1, 2, 4, 8] {
                    points.push((batch, parallelism));
                }
            }
            points
        };
        let org_sizes = if quick {
            vec![10, 10_000, 100_000]
        } else {
            vec![10, 10_000, 100_000, 1_000_000]
        };
        let latency = latency::Plan {
            warmup: if quick { 20 } else { 50 },
            calls: if quick { 200 } else { 1000 },
        };
        let unlink_sizes = if quick {
            vec![100_000]
        } else {
            vec![100_000, 1_000_000]
        };
        let pickup = pickup::Plan {
            warmup: 20,
            jobs: if quick { 200 } else { 1000 },
        };
        let postgres = postgres::Plan {
            // The same sizes and counts as SQLite's, so the figures compare.
            org_sizes: org_sizes.clone(),
            latency,
            unlink_sizes: unlink_sizes.clone(),
            pickup,
            replicas: replicas::Plan {
                jobs: if quick { 3 } else { 8 },
            },
            replica_members: 100_000,
        };
        Plan {
            quick,
            org_sizes,
            latency,
            throughput_levels: vec![1, 16, 64],
            throughput: throughput::Plan {
                warmup: Duration::from_millis(if quick { 300 } else { 1000 }),
                duration: Duration::from_secs(if quick { 1 } else { 3 }),
            },
            unlink_sizes,
            sweep_members: 100_000,
            sweep,
            pickup,
            naive: vec![
                naive::Plan {
                    members: 10_000,
                    samples: 3,
                },
                naive::Plan {
                    members: 100_000,
                    samples: 2,
                },
            ],
            fanout: fanout::Plan {
                watchers: 10_000,
                connections: 8,
                opening: FANOUT_OPENING,
                window: Duration::from_secs(if quick { 2 } else { 6 }),
                solo_window: Duration::from_millis(500),
            },
            fanout_members: FANOUT_MEMBERS,
            fanout_batch: FANOUT_BATCH,
            postgres,
        }
    }
}

/// The id of the org of `members` members.
fn size_org(members: u64) -> String {
    format!("size-{}", size_label(members).to_lowercase())
}

fn throughput_org(i: usize) -> String {
    format!("tp-{i:02}")
}

const PICKUP_ORG: &str = "pickup";

/// The org whose unlink job the fan-out's watchers watch. Its members are
/// not linked in Auth: the job does the same calls and checkpoints.
const FANOUT_ORG: &str = "fanout";

/// Members of [`FANOUT_ORG`]: with [`FANOUT_BATCH`] and parallelism 1 the
/// job outlasts the fan-out measurement (it is cancelled at its end). It
/// runs at about 100,000 members/s with one watcher, and far slower with
/// 10,000 (see the fan-out's rows), so half of these are left at the end.
const FANOUT_MEMBERS: u64 = 200_000;

/// org-server's `--batch-size` during the fan-out.
const FANOUT_BATCH: u32 = 100;

/// Watches of the fan-out being opened at once. Opening all of them in
/// the same instant would measure the burst (every request's service
/// future alive while it waits for its first read), not what a watcher
/// costs once attached; see `fanout`.
const FANOUT_OPENING: usize = 256;

/// The run's progress on stderr, with the time since the start.
struct Log {
    start: Instant,
    phases: Vec<(String, f64)>,
    phase_start: Instant,
}

impl Log {
    fn new() -> Self {
        let now = Instant::now();
        Log {
            start: now,
            phases: Vec::new(),
            phase_start: now,
        }
    }

    fn say(&self, message: &str) {
        eprintln!("[{:7.1} s] {message}", self.start.elapsed().as_secs_f64());
    }

    fn phase(&mut self, name: &str) {
        self.phase_start = Instant::now();
        self.say(&format!("== {name}"));
    }

    fn end_phase(&mut self, name: &str) {
        let took = self.phase_start.elapsed().as_secs_f64();
        self.phases.push((name.to_owned(), took));
        self.say(&format!("   {name} took {took:.1} s"));
    }
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => {}
        Err(err) => {
            eprintln!("orgauth-bench: {err}");
            std::process::exit(1);
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let bin_dir = match cli.bin_dir {
        Some(dir) => dir,
        None => match std::env::current_exe()?.parent() {
            Some(dir) => dir.to_path_buf(),
            None => return fail("cannot find the directory of this executable"),
        },
    };
    for name in ["org-server", "auth-server"] {
        if !bin_dir.join(name).exists() {
            return fail(format!(
                "{} not found: run `cargo build --release --workspace` first",
                bin_dir.join(name).display()
            ));
        }
    }
    if !cli.allow_stale {
        freshness::check(&bin_dir)?;
    }
    let plan = Plan::new(cli.quick);
    let machine = Machine::describe();
    let started_unix_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    eprintln!(
        "orgauth-bench{}: {} CPUs ({}), {} MiB, kernel {}; {DURABILITY}",
        if plan.quick { " --quick" } else { "" },
        machine.cpus,
        machine.cpu_model,
        machine.memory_mib,
        machine.kernel
    );

    let mut log = Log::new();
    let mut stack = Stack::start(&bin_dir, OrgOptions::default())?;
    let suite = suite(&plan, &mut stack, &mut log).await;
    let Results {
        rows,
        sweep,
        sizes,
        check_p50_ms,
        naive,
        fanout,
    } = match suite {
        Ok(results) => results,
        Err(err) => {
            eprintln!("{}", stack.log_tails());
            return Err(err);
        }
    };
    drop(stack);
    let sqlite_s = log.start.elapsed().as_secs_f64();

    let pg_start = Instant::now();
    let pg_outcome = if cli.no_postgres {
        postgres::Outcome::Skipped("--no-postgres".to_owned())
    } else {
        postgres::run(&bin_dir, &plan.postgres, &mut log).await
    };
    let pg_s = pg_start.elapsed().as_secs_f64();
    let pg_report = postgres_report(pg_outcome, &rows, pg_s);
    let wall_s = log.start.elapsed().as_secs_f64();

    let mut svg = Vec::new();
    if let Some(dir) = &cli.svg_dir {
        let data = charts::Data {
            sizes: &sizes,
            check_p50_ms,
            naive: &naive,
            sweep: &sweep,
        };
        for path in charts::write(dir, data)? {
            eprintln!("wrote {}", path.display());
            svg.push(path.display().to_string());
        }
    }

    println!();
    println!("{}", report::table(&rows));
    if !sweep.is_empty() {
        println!(
            "Unlink sweep, {} members, end to end (UpdateOrg -> terminal WatchJob) next to Auth's store with the same batch size and parallelism:",
            plan.sweep_members
        );
        println!("{}", sweep_table(&sweep));
    }
    println!("Notes:");
    for row in &rows {
        if !row.note.is_empty() {
            println!("- {}: {}", row.measurement, row.note);
        }
    }
    println!("- durability: {DURABILITY}");
    print_postgres(&pg_report);
    println!("Run:");
    let phases: Vec<String> = log
        .phases
        .iter()
        .map(|(name, s)| format!("{name} {s:.1} s"))
        .collect();
    println!("- phases: {}", phases.join(", "));
    println!(
        "Wall time: {wall_s:.1} s (SQLite suite {sqlite_s:.1} s, Postgres column {pg_s:.1} s)"
    );

    if let Some(path) = cli.json {
        let report = Report {
            quick: plan.quick,
            started_unix_s,
            wall_s,
            machine,
            durability: DURABILITY.to_owned(),
            rows,
            sweep,
            update_latency: sizes,
            check_p50_ms,
            naive,
            fanout,
            postgres: pg_report.clone(),
            svg,
            phases: log.phases,
        };
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
        eprintln!("wrote {}", path.display());
    }
    if pg_report.status == "failed" {
        return fail(format!(
            "the Postgres column failed (the SQLite figures above stand): {}",
            pg_report.reason.as_deref().unwrap_or("")
        ));
    }
    Ok(())
}

/// The Postgres column as reported, its rows beside the SQLite `rows` of
/// the same names.
fn postgres_report(outcome: postgres::Outcome, sqlite: &[Row], wall_s: f64) -> PostgresReport {
    let empty = |status: &str, reason: String, durability: Option<String>| PostgresReport {
        status: status.to_owned(),
        reason: Some(reason),
        durability,
        rows: Vec::new(),
        update_latency: Vec::new(),
        check_p50_ms: None,
        cross_replica: None,
        wall_s,
    };
    match outcome {
        postgres::Outcome::Skipped(reason) => empty("skipped", reason, None),
        postgres::Outcome::Failed { error, durability } => empty("failed", error, durability),
        postgres::Outcome::Measured(column) => PostgresReport {
            status: "measured".to_owned(),
            reason: None,
            durability: Some(column.durability),
            rows: Compared::pair(&column.rows, sqlite),
            update_latency: column.sizes,
            check_p50_ms: Some(column.check_p50_ms),
            cross_replica: Some(column.cross_replica),
            wall_s,
        },
    }
}

/// Prints the Postgres column (after the SQLite notes): its setup, the
/// table beside SQLite and its notes, or why it is missing.
fn print_postgres(report: &PostgresReport) {
    println!();
    match report.status.as_str() {
        "measured" => {
            println!(
                "Postgres column: measurements 1, 4 and 5 again with both servers on \
                 PostgreSQL, and 7 (two org-server replicas on one database), beside the \
                 SQLite figures of this run."
            );
            println!("- SQLite: {DURABILITY}");
            println!(
                "- Postgres: {}",
                report.durability.as_deref().unwrap_or("?")
            );
            println!();
            println!("{}", report::compare_table(&report.rows));
            println!("Notes (Postgres):");
            for compared in &report.rows {
                let row = &compared.postgres;
                if !row.note.is_empty() {
                    println!("- {}: {}", row.measurement, row.note);
                }
            }
        }
        status => println!(
            "Postgres column {status}: {}",
            report.reason.as_deref().unwrap_or("")
        ),
    }
}

fn sweep_table(sweep: &[SweepPoint]) -> String {
    let mut out = String::from(
        "| batch | parallelism | end to end (members/s) | Auth store (members/s) | ratio |\n\
         |------:|------------:|-----------------------:|-----------------------:|------:|\n",
    );
    for point in sweep {
        out.push_str(&format!(
            "| {} | {} | {:.0} | {:.0} | {:.0}% |\n",
            point.batch_size,
            point.parallelism,
            point.end_to_end_members_per_s,
            point.raw_members_per_s,
            100.0 * point.end_to_end_members_per_s / point.raw_members_per_s
        ));
    }
    out
}

/// Everything the suite measured.
struct Results {
    rows: Vec<Row>,
    sweep: Vec<SweepPoint>,
    /// Measurement 1 per org size, for measurement 3 and the charts.
    sizes: Vec<SizeLatency>,
    check_p50_ms: Option<f64>,
    naive: Vec<naive::NaivePoint>,
    fanout: Option<fanout::Fanout>,
}

async fn suite(plan: &Plan, stack: &mut Stack, log: &mut Log) -> Result<Results> {
    let mut rows = Vec::new();
    let mut sweep = Vec::new();

    log.say(&format!(
        "auth-server pid {}, org-server pid {}",
        stack.auth_pid(),
        stack.org_pid().unwrap_or(0)
    ));
    log.phase("seed");
    seed(plan, stack, log).await?;
    log.end_phase("seed");

    log.phase("5: job pickup");
    rows.extend(pickup::run(&stack.org()?, PICKUP_ORG, plan.pickup).await?);
    log.end_phase("5: job pickup");

    log.phase("4: unlink end to end and raw");
    let mut unlink_rows = Vec::new();
    for &members in &plan.unlink_sizes {
        let e2e =
            unlink::end_to_end(&stack.org()?, &stack.auth(), &size_org(members), members).await?;
        log.say(&format!("   end to end {members}: {}", e2e.breakdown()));
        let raw = unlink::raw(members, 500, 4).await?;
        log.say(&format!(
            "   raw {members}: {:.2} s",
            raw.elapsed.as_secs_f64()
        ));
        unlink_rows.extend(unlink::rows(&e2e, &raw, "Auth store 500x4"));
    }
    rows.extend(unlink_rows);
    log.end_phase("4: unlink end to end and raw");

    log.phase("4: unlink sweep");
    let members = plan.sweep_members;
    let org_id = size_org(members);
    for &(batch_size, parallelism) in &plan.sweep {
        stack.restart_org(OrgOptions {
            workers: 4,
            batch_size,
            parallelism,
        })?;
        log.say(&format!(
            "   org-server pid {} --batch-size {batch_size} --parallelism {parallelism}",
            stack.org_pid().unwrap_or(0)
        ));
        let relink_start = Instant::now();
        unlink::relink(&stack.org()?, &stack.auth(), &org_id, members).await?;
        let relinked = relink_start.elapsed();
        let e2e = unlink::end_to_end(&stack.org()?, &stack.auth(), &org_id, members).await?;
        let raw = unlink::raw(
            members,
            usize::try_from(batch_size)?,
            usize::try_from(parallelism)?,
        )
        .await?;
        log.say(&format!(
            "   batch {batch_size} x {parallelism}: relink {:.1} s; {}; raw {:.2} s",
            relinked.as_secs_f64(),
            e2e.breakdown(),
            raw.elapsed.as_secs_f64()
        ));
        sweep.push(SweepPoint {
            batch_size,
            parallelism,
            end_to_end_members_per_s: e2e.rate(),
            raw_members_per_s: raw.rate,
        });
    }
    log.end_phase("4: unlink sweep");

    // Before measurement 1, which leaves queued jobs behind (it runs with
    // --workers 0): here the fan-out's job is the only one.
    log.phase("6: watch fan-out");
    stack.restart_org(OrgOptions {
        workers: 4,
        batch_size: plan.fanout_batch,
        parallelism: 1,
    })?;
    let org_pid = stack
        .org_pid()
        .ok_or_else(|| crate::error::BoxError::from("org-server is not running"))?;
    log.say(&format!(
        "   org-server pid {org_pid} --batch-size {} --parallelism 1; {} watchers over {} connections",
        plan.fanout_batch, plan.fanout.watchers, plan.fanout.connections
    ));
    let fan = fanout::run(&stack.org()?, org_pid, FANOUT_ORG, plan.fanout).await?;
    log.say(&format!(
        "   VmRSS {} -> {} -> {} KiB ({:.0} / {:.0} B per watcher); attach {:.2} s; \
         {} of {} checkpoints measured, delay p50 {:.1} ms p99 {:.1} ms max {:.1} ms; \
         alone p50 {:.2} ms p99 {:.2} ms; {} messages",
        fan.rss_before_kib,
        fan.rss_attached_kib,
        fan.rss_end_kib,
        fan.bytes_per_watcher,
        fan.bytes_per_watcher_end,
        fan.attach_s,
        fan.checkpoints,
        fan.versions_in_window,
        fan.delay_p50_ms,
        fan.delay_p99_ms,
        fan.delay_max_ms,
        fan.solo_p50_ms,
        fan.solo_p99_ms,
        fan.messages
    ));
    rows.extend(fanout_rows(plan, &fan));
    log.end_phase("6: watch fan-out");

    log.phase("1: UpdateOrg latency");
    stack.restart_org(OrgOptions {
        workers: 0,
        ..OrgOptions::default()
    })?;
    log.say(&format!(
        "   org-server pid {} --workers 0",
        stack.org_pid().unwrap_or(0)
    ));
    let sized: Vec<(String, u64)> = plan
        .org_sizes
        .iter()
        .map(|&members| (size_org(members), members))
        .collect();
    let measured =
        latency::run(&stack.org()?, &sized, plan.latency, "WAL, synchronous=FULL").await?;
    rows.extend(measured.rows.iter().cloned());
    let probe_dir = tempfile::Builder::new()
        .prefix("orgauth-bench-fsync-")
        .tempdir()?;
    let fsync = latency::fdatasync_floor(probe_dir.path(), 500)?;
    rows.push(
        Row::new(
            1,
            "disk: 4 KiB append + fdatasync p50",
            fsync.p50_ms(),
            "ms",
            None,
            Goal::None,
        )
        .note(format!(
            "p99 {:.2} ms over {} samples, same filesystem as the databases; the least a durable commit costs",
            fsync.p99_ms(),
            fsync.len()
        )),
    );
    log.end_phase("1: UpdateOrg latency");

    log.phase("3: naive inline UpdateOrg");
    let naive_points = naive::run(&stack.auth(), &plan.naive).await?;
    for point in &naive_points {
        let label = size_label(point.members);
        let samples: Vec<String> = point
            .samples_ms
            .iter()
            .map(|ms| format!("{ms:.0}"))
            .collect();
        log.say(&format!(
            "   {label}: {} ms ({:.0}% in BatchUnlinkSso)",
            samples.join(", "),
            100.0 * point.unlink_share
        ));
        rows.push(
            Row::new(
                3,
                format!("naive inline UpdateOrg, {label} members (median)"),
                point.median_ms,
                "ms",
                measured
                    .p50_ms(point.members)
                    .map(|ours| (ours, "our UpdateOrg p50")),
                Goal::None,
            )
            .note(format!(
                "{} samples: {} ms; org write, SetOrgSsoPolicy, then {} sequential \
                 BatchUnlinkSso of {} ({:.0}% of the time), org-server's store and Auth \
                 client in process, real auth-server; re-linked between samples",
                point.samples_ms.len(),
                samples.join(", "),
                point.members.div_ceil(naive::PAGE as u64),
                naive::PAGE,
                100.0 * point.unlink_share
            )),
        );
    }
    log.end_phase("3: naive inline UpdateOrg");

    log.phase("2: UpdateOrg throughput");
    let tp_orgs: Vec<String> = (0..64).map(throughput_org).collect();
    rows.extend(
        throughput::run(
            &stack.org()?,
            &tp_orgs,
            &plan.throughput_levels,
            plan.throughput,
        )
        .await?,
    );
    log.end_phase("2: UpdateOrg throughput");

    rows.sort_by_key(|row| row.section);
    Ok(Results {
        rows,
        sweep,
        check_p50_ms: Some(measured.check_p50_ms),
        sizes: measured.sizes,
        naive: naive_points,
        fanout: Some(fan),
    })
}

/// The rows of measurement 6.
fn fanout_rows(plan: &Plan, fan: &fanout::Fanout) -> Vec<Row> {
    let setup = format!(
        "{} watchers over {} connections on one unlink job (batch {}, parallelism 1){}",
        fan.watchers,
        fan.connections,
        plan.fanout_batch,
        if fan.watchers < 10_000 {
            "; fewer than the 10,000 of the target"
        } else {
            ""
        }
    );
    let cpu = format!(
        "CPU during the window: org-server {:.0}%, this benchmark {:.0}% of one core",
        100.0 * fan.server_cpu_s / fan.cpu_window_s,
        100.0 * fan.bench_cpu_s / fan.cpu_window_s
    );
    let delay_note = format!(
        "{setup}; {} checkpoints in {:.1} s ({} versions written; each watcher received \
         {:.0}% of them itself, the others coalesced into a newer one); max {:.1} ms; \
         baseline: one watcher alone, {} checkpoints; {cpu}",
        fan.checkpoints,
        fan.window_s,
        fan.versions_in_window,
        100.0 * fan.received_share,
        fan.delay_max_ms,
        fan.solo_checkpoints
    );
    vec![
        Row::new(
            6,
            "watch fan-out: org-server memory per watcher",
            fan.bytes_per_watcher / 1024.0,
            "KiB",
            None,
            Goal::ValueBelow(8.0),
        )
        .note(format!(
            "{setup}; VmRSS {:.1} MiB before, {:.1} MiB with every watcher attached, \
             {:.1} MiB at the end of the window ({:.2} KiB per watcher); watches opened \
             {} at a time, attach took {:.2} s",
            fan.rss_before_kib as f64 / 1024.0,
            fan.rss_attached_kib as f64 / 1024.0,
            fan.rss_end_kib as f64 / 1024.0,
            fan.bytes_per_watcher_end / 1024.0,
            plan.fanout.opening,
            fan.attach_s
        )),
        Row::new(
            6,
            "watch fan-out: checkpoint -> last watcher p50",
            fan.delay_p50_ms,
            "ms",
            Some((fan.solo_p50_ms, "1 watcher p50")),
            Goal::None,
        )
        .note(delay_note.clone()),
        Row::new(
            6,
            "watch fan-out: checkpoint -> last watcher p99",
            fan.delay_p99_ms,
            "ms",
            Some((fan.solo_p99_ms, "1 watcher p99")),
            Goal::ValueBelow(200.0),
        )
        .note(delay_note),
        Row::new(
            6,
            "watch fan-out: the job's unlink rate meanwhile",
            fan.members_per_s,
            "members/s",
            Some((fan.solo_members_per_s, "1 watcher")),
            Goal::None,
        )
        .note(format!(
            "{setup}; the worker shares org-server's runtime and the two cores with the \
             fan-out; {cpu}"
        )),
    ]
}

/// Creates every org with custom SSO allowed (waiting for each creation
/// job), adds the sized orgs' members and links those the unlink needs.
async fn seed(plan: &Plan, stack: &Stack, log: &Log) -> Result<()> {
    let channel = rpc::connect(&stack.org()?).await?;
    let mut org_ids: Vec<String> = plan.org_sizes.iter().map(|&m| size_org(m)).collect();
    org_ids.extend((0..64).map(throughput_org));
    org_ids.push(PICKUP_ORG.to_owned());
    org_ids.push(FANOUT_ORG.to_owned());
    rpc::create_orgs(&channel, &org_ids).await?;
    log.say(&format!("   created {} orgs", org_ids.len()));

    seed_sized_orgs(&channel, stack, &plan.org_sizes, log, |members| {
        plan.unlink_sizes.contains(&members) || members == plan.sweep_members
    })
    .await?;
    let start = Instant::now();
    rpc::add_members(&channel, FANOUT_ORG, plan.fanout_members).await?;
    log.say(&format!(
        "   {FANOUT_ORG}: AddMembers {:.1} s",
        start.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// Adds each sized org's members, links them in Auth when `link` says the
/// org's size needs it, and logs the seeding rates.
async fn seed_sized_orgs(
    channel: &rpc::AuthedChannel,
    stack: &Stack,
    sizes: &[u64],
    log: &Log,
    link: impl Fn(u64) -> bool,
) -> Result<()> {
    let auth_channel = rpc::connect(&stack.auth()).await?;
    for &members in sizes {
        let org_id = size_org(members);
        let start = Instant::now();
        rpc::add_members(channel, &org_id, members).await?;
        let added = start.elapsed();
        let linked = if link(members) {
            let start = Instant::now();
            rpc::link_members(&auth_channel, &org_id, members).await?;
            Some(start.elapsed())
        } else {
            None
        };
        log.say(&format!(
            "   {org_id}: AddMembers {:.1} s ({:.0}/s){}",
            added.as_secs_f64(),
            members as f64 / added.as_secs_f64(),
            linked.map_or_else(String::new, |d| format!(
                ", LinkSso {:.1} s ({:.0}/s)",
                d.as_secs_f64(),
                members as f64 / d.as_secs_f64()
            ))
        ));
    }
    Ok(())
}
