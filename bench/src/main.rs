//! `orgauth-bench`: the project's benchmark suite.
//!
//! Starts the real `auth-server` and `org-server` (release binaries next to
//! this executable) as processes on 127.0.0.1 port 0, seeds them through
//! the public API, and measures what the design promises, each figure next
//! to a baseline measured in the same run:
//!
//! 1. UpdateOrg latency against org size ([`latency`]), next to Health Check.
//! 2. UpdateOrg throughput at 1, 16 and 64 clients ([`throughput`]), next to
//!    Health Check throughput.
//! 4. Unlink throughput end to end ([`unlink`]), next to Auth's raw storage
//!    rate, and a batch size x parallelism sweep.
//! 5. Job pickup latency ([`pickup`]).
//!
//! ```sh
//! cargo build --release --workspace && ./target/release/orgauth-bench [--quick] [--json PATH]
//! ```
//!
//! Measurements 3 (the naive inline baseline) and 6 (watch fan-out memory)
//! are not implemented yet; see `docs/benchmarks.md`.

mod error;
mod freshness;
mod latency;
mod pickup;
mod report;
mod rpc;
mod servers;
mod throughput;
mod unlink;

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use orgauth_proto::org::v1::job_service_client::JobServiceClient;
use orgauth_proto::org::v1::org_service_client::OrgServiceClient;

use crate::error::{Result, fail};
use crate::latency::size_label;
use crate::report::{Goal, Machine, Report, Row, SweepPoint};
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
    /// Where `org-server` and `auth-server` are (default: this executable's
    /// directory).
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    /// Run even if a server binary is older than its sources.
    #[arg(long)]
    allow_stale: bool,
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
        Plan {
            quick,
            org_sizes: if quick {
                vec![10, 10_000, 100_000]
            } else {
                vec![10, 10_000, 100_000, 1_000_000]
            },
            latency: latency::Plan {
                warmup: if quick { 20 } else { 50 },
                calls: if quick { 200 } else { 1000 },
            },
            throughput_levels: vec![1, 16, 64],
            throughput: throughput::Plan {
                warmup: Duration::from_millis(if quick { 300 } else { 1000 }),
                duration: Duration::from_secs(if quick { 1 } else { 3 }),
            },
            unlink_sizes: if quick {
                vec![100_000]
            } else {
                vec![100_000, 1_000_000]
            },
            sweep_members: 100_000,
            sweep,
            pickup: pickup::Plan {
                warmup: 20,
                jobs: if quick { 200 } else { 1000 },
            },
        }
    }
}

fn size_org(members: u64) -> String {
    format!("size-{}", size_label(members).to_lowercase())
}

fn throughput_org(i: usize) -> String {
    format!("tp-{i:02}")
}

const PICKUP_ORG: &str = "pickup";

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
    let (rows, sweep) = match suite {
        Ok(results) => results,
        Err(err) => {
            eprintln!("{}", stack.log_tails());
            return Err(err);
        }
    };
    drop(stack);
    let wall_s = log.start.elapsed().as_secs_f64();

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
    let phases: Vec<String> = log
        .phases
        .iter()
        .map(|(name, s)| format!("{name} {s:.1} s"))
        .collect();
    println!("- phases: {}", phases.join(", "));
    println!("Wall time: {wall_s:.1} s");

    if let Some(path) = cli.json {
        let report = Report {
            quick: plan.quick,
            started_unix_s,
            wall_s,
            machine,
            durability: DURABILITY.to_owned(),
            rows,
            sweep,
            phases: log.phases,
        };
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
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

async fn suite(
    plan: &Plan,
    stack: &mut Stack,
    log: &mut Log,
) -> Result<(Vec<Row>, Vec<SweepPoint>)> {
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
    rows.extend(pickup::run(stack.org_addr()?, PICKUP_ORG, plan.pickup).await?);
    log.end_phase("5: job pickup");

    log.phase("4: unlink end to end and raw");
    let mut unlink_rows = Vec::new();
    for &members in &plan.unlink_sizes {
        let e2e = unlink::end_to_end(
            stack.org_addr()?,
            stack.auth_addr(),
            &size_org(members),
            members,
        )
        .await?;
        log.say(&format!("   end to end {members}: {}", e2e.breakdown()));
        let raw = unlink::raw(members, 500, 4).await?;
        log.say(&format!(
            "   raw {members}: {:.2} s",
            raw.elapsed.as_secs_f64()
        ));
        let label = size_label(members);
        unlink_rows.push(
            Row::new(
                4,
                format!("unlink {label} members, end to end"),
                e2e.rate(),
                "members/s",
                Some((raw.rate, "Auth store 500x4")),
                Goal::RatioAtLeast(0.60),
            )
            .note(format!(
                "batch 500, parallelism 4; {}; raw {:.2} s",
                e2e.breakdown(),
                raw.elapsed.as_secs_f64()
            )),
        );
        if members >= 1_000_000 {
            unlink_rows.push(
                Row::new(
                    4,
                    format!("unlink {label} members, wall time"),
                    e2e.total.as_secs_f64(),
                    "s",
                    Some((raw.elapsed.as_secs_f64(), "Auth store 500x4")),
                    Goal::ValueBelow(6.0),
                )
                .note("UpdateOrg start to the terminal WatchJob message"),
            );
        }
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
        unlink::relink(stack.org_addr()?, stack.auth_addr(), &org_id, members).await?;
        let relinked = relink_start.elapsed();
        let e2e =
            unlink::end_to_end(stack.org_addr()?, stack.auth_addr(), &org_id, members).await?;
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
    rows.extend(latency::run(stack.org_addr()?, &sized, plan.latency).await?);
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

    log.phase("2: UpdateOrg throughput");
    let tp_orgs: Vec<String> = (0..64).map(throughput_org).collect();
    rows.extend(
        throughput::run(
            stack.org_addr()?,
            &tp_orgs,
            &plan.throughput_levels,
            plan.throughput,
        )
        .await?,
    );
    log.end_phase("2: UpdateOrg throughput");

    rows.sort_by_key(|row| row.section);
    Ok((rows, sweep))
}

/// Creates every org with custom SSO allowed (waiting for each creation
/// job), adds the sized orgs' members and links those the unlink needs.
async fn seed(plan: &Plan, stack: &Stack, log: &Log) -> Result<()> {
    let channel = rpc::connect(stack.org_addr()?).await?;
    let mut org_ids: Vec<String> = plan.org_sizes.iter().map(|&m| size_org(m)).collect();
    org_ids.extend((0..64).map(throughput_org));
    org_ids.push(PICKUP_ORG.to_owned());
    futures::stream::iter(org_ids.iter())
        .map(|org_id| {
            let channel = channel.clone();
            async move {
                let mut orgs = OrgServiceClient::new(channel.clone());
                let mut jobs = JobServiceClient::new(channel);
                let job_id = rpc::create_org(&mut orgs, org_id, true).await?;
                if job_id.is_empty() {
                    return fail(format!("CreateOrg({org_id}) enqueued no job"));
                }
                let timeline = rpc::follow_job(&mut jobs, &job_id, unlink::UNLINK_TIMEOUT).await?;
                rpc::ensure_succeeded(&timeline.job)
            }
        })
        .buffer_unordered(rpc::SEED_IN_FLIGHT)
        .try_collect::<()>()
        .await?;
    log.say(&format!("   created {} orgs", org_ids.len()));

    let auth_channel = rpc::connect(stack.auth_addr()).await?;
    for &members in &plan.org_sizes {
        let org_id = size_org(members);
        let start = Instant::now();
        rpc::add_members(&channel, &org_id, members).await?;
        let added = start.elapsed();
        let linked = if plan.unlink_sizes.contains(&members) || members == plan.sweep_members {
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
