//! Measurement 1: UpdateOrg latency against org size, next to the floor of
//! a no-op unary RPC on the same server (`grpc.health.v1.Health/Check`).
//!
//! Calls are sequential on one connection. Each UpdateOrg flips the org's
//! `allow_custom_sso`, so every call changes the setting and enqueues a job
//! (superseding the org's previous queued one). org-server runs with
//! `--workers 0` here, so no job competes for the disk. Each UpdateOrg is
//! preceded by one Check, so both histograms see the same conditions.
//!
//! A third figure gives the disk's own floor: appending 4 KiB to a file and
//! `fdatasync`ing it, which is what a SQLite WAL commit with
//! `synchronous=FULL` must at least do.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use orgauth_proto::org::v1::org_service_client::OrgServiceClient;
use tonic_health::pb::health_client::HealthClient;

use crate::error::Result;
use crate::report::{Goal, Latencies, Row, SizeLatency};
use crate::rpc;

/// How many calls, and how many warm-up calls before them.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Unrecorded calls per org before the measured ones.
    pub warmup: usize,
    /// Measured calls per org.
    pub calls: usize,
}

/// A short label for an org size: 10, 10k, 100k, 1M.
pub fn size_label(members: u64) -> String {
    match members {
        m if m >= 1_000_000 && m % 1_000_000 == 0 => format!("{}M", m / 1_000_000),
        m if m >= 1_000 && m % 1_000 == 0 => format!("{}k", m / 1_000),
        m => m.to_string(),
    }
}

/// What [`run`] measured: the table's rows, and the figures behind them
/// that other measurements and the charts compare with.
#[derive(Debug, Clone)]
pub struct Measured {
    /// The rows of measurement 1.
    pub rows: Vec<Row>,
    /// UpdateOrg p50/p99 per org size, smallest first.
    pub sizes: Vec<SizeLatency>,
    /// The Health Check p50 over all sizes (the floor), in milliseconds.
    pub check_p50_ms: f64,
}

impl Measured {
    /// UpdateOrg's p50 for an org of `members` members, if measured.
    pub fn p50_ms(&self, members: u64) -> Option<f64> {
        self.sizes
            .iter()
            .find(|size| size.members == members)
            .map(|size| size.p50_ms)
    }
}

/// Measures UpdateOrg on each `(org id, members)` org, smallest first.
/// `storage` names the database's durability setting, for the rows' note.
pub async fn run(
    org: &rpc::Target,
    orgs: &[(String, u64)],
    plan: Plan,
    storage: &str,
) -> Result<Measured> {
    let channel = rpc::connect(org).await?;
    let mut org_client = OrgServiceClient::new(channel.clone());
    let mut health = HealthClient::new(channel);
    let mut checks = Latencies::new()?;
    let mut per_size = Vec::new();
    for (org_id, members) in orgs {
        let mut allow = rpc::get_allow_custom_sso(&mut org_client, org_id).await?;
        let mut updates = Latencies::new()?;
        for i in 0..plan.warmup + plan.calls {
            let start = Instant::now();
            rpc::health_check(&mut health).await?;
            let check = start.elapsed();
            allow = !allow;
            let start = Instant::now();
            rpc::set_allow_custom_sso(&mut org_client, org_id, allow).await?;
            let update = start.elapsed();
            if i >= plan.warmup {
                checks.record(check);
                updates.record(update);
            }
        }
        per_size.push((*members, updates));
    }

    let check_p50 = checks.p50_ms();
    let check_p99 = checks.p99_ms();
    let note = format!(
        "{} sequential calls after {} warm-up; org-server --workers 0; {storage}",
        plan.calls, plan.warmup
    );
    let mut rows = Vec::new();
    for (members, updates) in &per_size {
        let label = size_label(*members);
        rows.push(
            Row::new(
                1,
                format!("UpdateOrg p50, {label} members"),
                updates.p50_ms(),
                "ms",
                Some((check_p50, "Check p50")),
                Goal::RatioAtMost(3.0),
            )
            .note(note.clone()),
        );
        rows.push(
            Row::new(
                1,
                format!("UpdateOrg p99, {label} members"),
                updates.p99_ms(),
                "ms",
                Some((check_p99, "Check p99")),
                Goal::None,
            )
            .note(note.clone()),
        );
    }
    if let (Some((small, small_updates)), Some((large, large_updates))) =
        (per_size.first(), per_size.last())
    {
        rows.push(
            Row::new(
                1,
                format!(
                    "UpdateOrg p50, {} vs {} members",
                    size_label(*large),
                    size_label(*small)
                ),
                large_updates.p50_ms(),
                "ms",
                Some((small_updates.p50_ms(), "small-org p50")),
                Goal::RatioAtMost(1.2),
            )
            .note(note),
        );
    }
    Ok(Measured {
        rows,
        sizes: per_size
            .iter()
            .map(|(members, updates)| SizeLatency {
                members: *members,
                p50_ms: updates.p50_ms(),
                p99_ms: updates.p99_ms(),
            })
            .collect(),
        check_p50_ms: check_p50,
    })
}

/// The disk's floor for one durable commit: append 4 KiB to a file in
/// `dir` and `fdatasync` it, `samples` times after a few warm-up rounds.
pub fn fdatasync_floor(dir: &Path, samples: usize) -> Result<Latencies> {
    let path = dir.join("fsync-probe");
    let mut file = std::fs::File::create(&path)?;
    let block = [0x5a_u8; 4096];
    let mut latencies = Latencies::new()?;
    for i in 0..samples + 10 {
        let start = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        if i >= 10 {
            latencies.record(start.elapsed());
        }
    }
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(latencies)
}
