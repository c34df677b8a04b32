//! What a run reports: latency histograms (HdrHistogram, microsecond
//! resolution), the result rows (measurement, value, baseline, ratio,
//! target, met?), the printed tables (SQLite, and the Postgres column
//! beside it), the machine description and the JSON document written by
//! `--json`.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::error::Result;

/// A latency histogram in microseconds, 1 µs to 10 min, 3 significant
/// digits.
#[derive(Debug, Clone)]
pub struct Latencies(Histogram<u64>);

impl Latencies {
    /// An empty histogram.
    pub fn new() -> Result<Self> {
        Ok(Latencies(Histogram::new_with_bounds(1, 600_000_000, 3)?))
    }

    /// Records one latency (saturating at the upper bound).
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.0.saturating_record(micros.max(1));
    }

    /// Adds another histogram's samples.
    pub fn merge(&mut self, other: &Latencies) -> Result<()> {
        self.0.add(&other.0)?;
        Ok(())
    }

    /// The `q` quantile (0..=1) in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        self.0.value_at_quantile(q) as f64 / 1000.0
    }

    /// The median in milliseconds.
    pub fn p50_ms(&self) -> f64 {
        self.quantile_ms(0.50)
    }

    /// The 99th percentile in milliseconds.
    pub fn p99_ms(&self) -> f64 {
        self.quantile_ms(0.99)
    }

    /// How many samples were recorded.
    pub fn len(&self) -> u64 {
        self.0.len()
    }
}

/// How a value compares with its target.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Goal {
    /// No target: shown for context.
    None,
    /// The ratio must be at most this.
    RatioAtMost(f64),
    /// The ratio must be at least this.
    RatioAtLeast(f64),
    /// The value must be below this.
    ValueBelow(f64),
}

/// One line of the result table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The measurement number (1 to 7), or 0 for context rows.
    pub section: u32,
    /// What was measured.
    pub measurement: String,
    /// The measured value, in `unit`.
    pub value: f64,
    /// The unit of `value` and `baseline` ("ms", "calls/s", "members/s",
    /// "KiB").
    pub unit: String,
    /// The same-run baseline, in `unit`.
    pub baseline: Option<f64>,
    /// What the baseline is.
    pub baseline_name: String,
    /// `value / baseline`.
    pub ratio: Option<f64>,
    /// The target.
    pub goal: Goal,
    /// Whether the target is met (`None` without a target).
    pub met: Option<bool>,
    /// Conditions and caveats of this line.
    pub note: String,
}

impl Row {
    /// A row; the ratio and whether the goal is met are derived.
    pub fn new(
        section: u32,
        measurement: impl Into<String>,
        value: f64,
        unit: &str,
        baseline: Option<(f64, &str)>,
        goal: Goal,
    ) -> Self {
        let ratio = baseline.and_then(|(b, _)| (b > 0.0).then_some(value / b));
        let met = match goal {
            Goal::None => None,
            Goal::RatioAtMost(limit) => ratio.map(|r| r <= limit),
            Goal::RatioAtLeast(limit) => ratio.map(|r| r >= limit),
            Goal::ValueBelow(limit) => Some(value < limit),
        };
        Row {
            section,
            measurement: measurement.into(),
            value,
            unit: unit.to_owned(),
            baseline: baseline.map(|(b, _)| b),
            baseline_name: baseline.map(|(_, n)| n.to_owned()).unwrap_or_default(),
            ratio,
            goal,
            met,
            note: String::new(),
        }
    }

    /// Adds a note.
    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = note.into();
        self
    }

    fn target_text(&self) -> String {
        match self.goal {
            Goal::None => "-".to_owned(),
            Goal::RatioAtMost(limit) => format!("ratio <= {}", fmt_ratio(limit, &self.unit)),
            Goal::RatioAtLeast(limit) => format!("ratio >= {}", fmt_ratio(limit, &self.unit)),
            Goal::ValueBelow(limit) => format!("< {} {}", fmt_value(limit), self.unit),
        }
    }
}

fn fmt_value(value: f64) -> String {
    if value >= 10_000.0 {
        format!("{:.0}", value)
    } else if value >= 100.0 {
        format!("{value:.1}")
    } else if value >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

/// Ratios of latencies read as "times the baseline", ratios of rates as a
/// percentage of it.
fn fmt_ratio(ratio: f64, unit: &str) -> String {
    if matches!(unit, "ms" | "s") {
        format!("{ratio:.2}x")
    } else {
        format!("{:.0}%", ratio * 100.0)
    }
}

/// The rows as a plain-text table (also valid Markdown).
pub fn table(rows: &[Row]) -> String {
    let header = [
        "#",
        "measurement",
        "value",
        "baseline",
        "ratio",
        "target",
        "met?",
    ];
    let body: Vec<[String; 7]> = rows
        .iter()
        .map(|row| {
            [
                if row.section == 0 {
                    "-".to_owned()
                } else {
                    row.section.to_string()
                },
                row.measurement.clone(),
                format!("{} {}", fmt_value(row.value), row.unit),
                match row.baseline {
                    Some(b) => format!("{} {} ({})", fmt_value(b), row.unit, row.baseline_name),
                    None => "-".to_owned(),
                },
                row.ratio
                    .map_or_else(|| "-".to_owned(), |r| fmt_ratio(r, &row.unit)),
                row.target_text(),
                match row.met {
                    Some(true) => "yes".to_owned(),
                    Some(false) => "NO".to_owned(),
                    None => "-".to_owned(),
                },
            ]
        })
        .collect();
    render_table(&header, &body)
}

/// A row of the Postgres column beside the SQLite figure of the same
/// measurement in the same run (matched by the measurement's name).
#[derive(Debug, Clone, Serialize)]
pub struct Compared {
    /// The Postgres figure, with its own same-run baseline and target.
    #[serde(flatten)]
    pub postgres: Row,
    /// The SQLite figure of the same measurement, if it has one.
    pub sqlite: Option<f64>,
    /// `postgres.value / sqlite`.
    pub postgres_vs_sqlite: Option<f64>,
}

impl Compared {
    /// Pairs each Postgres row with the SQLite row of the same name.
    pub fn pair(postgres: &[Row], sqlite: &[Row]) -> Vec<Compared> {
        postgres
            .iter()
            .map(|row| {
                let sqlite = sqlite
                    .iter()
                    .find(|s| s.measurement == row.measurement && s.unit == row.unit)
                    .map(|s| s.value);
                Compared {
                    postgres: row.clone(),
                    sqlite,
                    postgres_vs_sqlite: sqlite.and_then(|s| (s > 0.0).then(|| row.value / s)),
                }
            })
            .collect()
    }
}

/// The Postgres column beside SQLite as a plain-text table (also valid
/// Markdown): SQLite's figure, Postgres's, their ratio, then Postgres's
/// own same-run baseline, ratio and target.
pub fn compare_table(rows: &[Compared]) -> String {
    let header = [
        "#",
        "measurement",
        "SQLite",
        "Postgres",
        "PG/SQLite",
        "Postgres baseline",
        "ratio",
        "target",
        "met?",
    ];
    let body: Vec<[String; 9]> = rows
        .iter()
        .map(|compared| {
            let row = &compared.postgres;
            [
                row.section.to_string(),
                row.measurement.clone(),
                compared.sqlite.map_or_else(
                    || "-".to_owned(),
                    |s| format!("{} {}", fmt_value(s), row.unit),
                ),
                format!("{} {}", fmt_value(row.value), row.unit),
                compared
                    .postgres_vs_sqlite
                    .map_or_else(|| "-".to_owned(), |r| fmt_ratio(r, &row.unit)),
                match row.baseline {
                    Some(b) => format!("{} {} ({})", fmt_value(b), row.unit, row.baseline_name),
                    None => "-".to_owned(),
                },
                row.ratio
                    .map_or_else(|| "-".to_owned(), |r| fmt_ratio(r, &row.unit)),
                row.target_text(),
                match row.met {
                    Some(true) => "yes".to_owned(),
                    Some(false) => "NO".to_owned(),
                    None => "-".to_owned(),
                },
            ]
        })
        .collect();
    render_table(&header, &body)
}

fn render_table<const N: usize>(header: &[&str; N], body: &[[String; N]]) -> String {
    let mut widths = header.map(str::len);
    for line in body {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let render = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let mut out = render(&header.map(str::to_owned));
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    out.push_str(&format!("|-{}-|\n", rule.join("-|-")));
    for line in body {
        out.push_str(&render(line));
    }
    out
}

/// The Postgres column of a run, as `--json` writes it.
#[derive(Debug, Clone, Serialize)]
pub struct PostgresReport {
    /// "measured", "skipped" or "failed".
    pub status: String,
    /// Why it was skipped or how it failed.
    pub reason: Option<String>,
    /// The PostgreSQL server and its settings, in words (as `durability`
    /// for SQLite).
    pub durability: Option<String>,
    /// The rows, each beside SQLite's figure of the same measurement.
    pub rows: Vec<Compared>,
    /// UpdateOrg latency per org size on Postgres.
    pub update_latency: Vec<SizeLatency>,
    /// Health Check p50 of the Postgres latency measurement, ms.
    pub check_p50_ms: Option<f64>,
    /// Measurement 7: cross-replica watch delay.
    pub cross_replica: Option<crate::replicas::CrossReplica>,
    /// Wall time of the Postgres column, seconds.
    pub wall_s: f64,
}

/// The machine the run is on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Logical CPUs available to this process.
    pub cpus: usize,
    /// `MemTotal` from /proc/meminfo, in MiB.
    pub memory_mib: u64,
    /// The kernel release.
    pub kernel: String,
    /// The CPU model, from /proc/cpuinfo.
    pub cpu_model: String,
}

impl Machine {
    /// Reads the machine's description from /proc (empty fields elsewhere).
    pub fn describe() -> Self {
        let cpus = std::thread::available_parallelism().map_or(0, usize::from);
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_mib = meminfo
            .lines()
            .find_map(|line| line.strip_prefix("MemTotal:"))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map_or(0, |kib| kib / 1024);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned();
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|line| line.strip_prefix("model name"))
            .map(|rest| rest.trim_start_matches([' ', '\t', ':']).trim().to_owned())
            .unwrap_or_default();
        Machine {
            cpus,
            memory_mib,
            kernel,
            cpu_model,
        }
    }
}

/// One point of the batch size x parallelism sweep.
#[derive(Debug, Clone, Serialize)]
pub struct SweepPoint {
    /// `--batch-size`.
    pub batch_size: u32,
    /// `--parallelism`.
    pub parallelism: u32,
    /// Members per second, UpdateOrg to the terminal WatchJob message.
    pub end_to_end_members_per_s: f64,
    /// Members per second deleted by Auth's store directly, same batch size
    /// and parallelism.
    pub raw_members_per_s: f64,
}

/// UpdateOrg latency for one org size (measurement 1).
#[derive(Debug, Clone, Serialize)]
pub struct SizeLatency {
    /// Members of the org.
    pub members: u64,
    /// UpdateOrg p50, milliseconds.
    pub p50_ms: f64,
    /// UpdateOrg p99, milliseconds.
    pub p99_ms: f64,
}

/// Everything `--json` writes.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `--quick` was given.
    pub quick: bool,
    /// Seconds since the Unix epoch when the run started.
    pub started_unix_s: u64,
    /// Wall time of the whole run, seconds.
    pub wall_s: f64,
    /// The machine.
    pub machine: Machine,
    /// Storage settings of both servers.
    pub durability: String,
    /// The table's rows.
    pub rows: Vec<Row>,
    /// The unlink sweep.
    pub sweep: Vec<SweepPoint>,
    /// Measurement 1 per org size.
    pub update_latency: Vec<SizeLatency>,
    /// Health Check p50 of measurement 1 (the floor), ms.
    pub check_p50_ms: Option<f64>,
    /// Measurement 3: the naive inline UpdateOrg per org size.
    pub naive: Vec<crate::naive::NaivePoint>,
    /// Measurement 6: watch fan-out.
    pub fanout: Option<crate::fanout::Fanout>,
    /// The Postgres column (measurements 1, 4, 5 and 7 on PostgreSQL).
    pub postgres: PostgresReport,
    /// The SVG charts written (`--svg-dir`).
    pub svg: Vec<String>,
    /// How long each phase took, seconds.
    pub phases: Vec<(String, f64)>,
}
