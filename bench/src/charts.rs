//! The run's pictures, drawn by the benchmark itself (plotters, SVG backend
//! only) into the directory given by `--svg-dir`:
//!
//! - `updateorg-latency.svg`: UpdateOrg p50 against org size, ours and the
//!   naive inline baseline (measurements 1 and 3), with the Health Check
//!   floor; both axes logarithmic, since the two differ by orders of
//!   magnitude.
//! - `unlink-sweep.svg`: unlink throughput end to end against batch size,
//!   one line per parallelism, next to Auth's store at the same batch size
//!   and parallelism (dashed), from the sweep of measurement 4.
//!
//! Text is emitted as SVG `<text>` (no font is embedded or needed), so the
//! pictures stay small and render with the viewer's sans-serif font.

use std::path::{Path, PathBuf};

use plotters::element::DashedPathElement;
use plotters::prelude::*;

use crate::error::{Result, fail};
use crate::latency::size_label;
use crate::naive::NaivePoint;
use crate::report::{SizeLatency, SweepPoint};

/// File name of the latency chart.
pub const LATENCY_SVG: &str = "updateorg-latency.svg";

/// File name of the sweep chart.
pub const SWEEP_SVG: &str = "unlink-sweep.svg";

const SIZE: (u32, u32) = (900, 560);

/// Line colours, one per series family (parallelism 1, 2, 4, 8, ...).
const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];

/// What the charts show.
#[derive(Debug, Clone, Copy)]
pub struct Data<'a> {
    /// Measurement 1, per org size.
    pub sizes: &'a [SizeLatency],
    /// Health Check p50 of measurement 1, ms.
    pub check_p50_ms: Option<f64>,
    /// Measurement 3.
    pub naive: &'a [NaivePoint],
    /// The sweep of measurement 4.
    pub sweep: &'a [SweepPoint],
}

/// Writes both charts into `dir` (created if missing); returns the files
/// written (a chart without data is skipped).
pub fn write(dir: &Path, data: Data<'_>) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    if !data.sizes.is_empty() {
        let path = dir.join(LATENCY_SVG);
        latency_chart(&path, data).map_err(|err| format!("{}: {err}", path.display()))?;
        written.push(path);
    }
    if !data.sweep.is_empty() {
        let path = dir.join(SWEEP_SVG);
        sweep_chart(&path, data.sweep).map_err(|err| format!("{}: {err}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// Plotters' errors carry the backend's error type; the run only needs the
/// message.
fn draw_err(err: impl std::fmt::Display) -> crate::error::BoxError {
    err.to_string().into()
}

fn latency_chart(path: &Path, data: Data<'_>) -> Result<()> {
    let ours: Vec<(f64, f64)> = data
        .sizes
        .iter()
        .map(|s| (s.members as f64, s.p50_ms))
        .collect();
    let naive: Vec<(f64, f64)> = data
        .naive
        .iter()
        .map(|p| (p.members as f64, p.median_ms))
        .collect();
    let all_y = ours
        .iter()
        .chain(&naive)
        .map(|&(_, y)| y)
        .chain(data.check_p50_ms);
    let (y_min, y_max) = all_y.fold((f64::MAX, f64::MIN), |(lo, hi), y| (lo.min(y), hi.max(y)));
    let all_x = ours.iter().chain(&naive).map(|&(x, _)| x);
    let (x_min, x_max) = all_x.fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)));
    if !(y_min > 0.0 && x_min > 0.0) {
        return fail("latency chart: no positive values to plot");
    }
    // A margin of 2x on each side; the ticks fall on powers of ten.
    let x_range = x_min / 2.0..x_max * 2.0;
    let y_range = y_min / 2.0..y_max * 2.0;

    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "UpdateOrg latency (p50) against org size",
            ("sans-serif", 24),
        )
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(x_range.log_scale(), y_range.log_scale())
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_desc("org size (members, log scale)")
        .y_desc("UpdateOrg p50 (ms, log scale)")
        .x_labels(8)
        .y_labels(8)
        .x_label_formatter(&|v| size_label(v.round() as u64))
        .y_label_formatter(&|v| fmt_ms(*v))
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(draw_err)?;

    let blue = COLORS[0];
    let red = COLORS[1];
    chart
        .draw_series(LineSeries::new(ours.clone(), blue.stroke_width(2)))
        .map_err(draw_err)?
        .label("ours: write org + job row, return (unlink runs after)")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], blue.stroke_width(2)));
    chart
        .draw_series(
            ours.iter()
                .map(|&point| Circle::new(point, 4, blue.filled())),
        )
        .map_err(draw_err)?;
    chart
        .draw_series(ours.iter().map(|&point| {
            EmptyElement::at(point)
                + Text::new(
                    value_text(point.1),
                    (-18, 10),
                    ("sans-serif", 13).into_font(),
                )
        }))
        .map_err(draw_err)?;
    if !naive.is_empty() {
        chart
            .draw_series(LineSeries::new(naive.clone(), red.stroke_width(2)))
            .map_err(draw_err)?
            .label("naive: unlink every member before returning (10k, 100k)")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], red.stroke_width(2)));
        chart
            .draw_series(
                naive
                    .iter()
                    .map(|&point| TriangleMarker::new(point, 6, red.filled())),
            )
            .map_err(draw_err)?;
        chart
            .draw_series(naive.iter().map(|&point| {
                EmptyElement::at(point)
                    + Text::new(
                        value_text(point.1),
                        (-56, -6),
                        ("sans-serif", 13).into_font(),
                    )
            }))
            .map_err(draw_err)?;
    }
    if let Some(check) = data.check_p50_ms {
        let grey = RGBColor(110, 110, 110);
        let x0 = chart.x_range().start;
        let x1 = chart.x_range().end;
        chart
            .draw_series(DashedLineSeries::new(
                vec![(x0, check), (x1, check)],
                6,
                4,
                grey.stroke_width(1),
            ))
            .map_err(draw_err)?
            .label("floor: Health Check p50, same server")
            .legend(move |(x, y)| {
                DashedPathElement::new(vec![(x, y), (x + 24, y)], 6, 4, grey.stroke_width(1))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(draw_err)?;
    root.present().map_err(draw_err)?;
    Ok(())
}

fn sweep_chart(path: &Path, sweep: &[SweepPoint]) -> Result<()> {
    let mut parallelisms: Vec<u32> = sweep.iter().map(|p| p.parallelism).collect();
    parallelisms.sort_unstable();
    parallelisms.dedup();
    let batch_max = sweep.iter().map(|p| p.batch_size).max().unwrap_or(1000);
    let rate_max = sweep
        .iter()
        .map(|p| p.end_to_end_members_per_s.max(p.raw_members_per_s))
        .fold(0.0, f64::max);

    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Unlink throughput against batch size and parallelism",
            ("sans-serif", 24),
        )
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(
            0f64..f64::from(batch_max) * 1.1,
            // Headroom above the data for the legend.
            0f64..(rate_max * 1.6).max(1.0),
        )
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_desc("batch size (members per BatchUnlinkSso call)")
        .y_desc("unlink throughput (members/s)")
        .x_labels(12)
        .y_labels(10)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| {
            if *v == 0.0 {
                "0".to_owned()
            } else {
                format!("{:.0}k", v / 1000.0)
            }
        })
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(draw_err)?;

    for (i, &parallelism) in parallelisms.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mut points: Vec<&SweepPoint> = sweep
            .iter()
            .filter(|p| p.parallelism == parallelism)
            .collect();
        points.sort_by_key(|p| p.batch_size);
        let e2e: Vec<(f64, f64)> = points
            .iter()
            .map(|p| (f64::from(p.batch_size), p.end_to_end_members_per_s))
            .collect();
        let raw: Vec<(f64, f64)> = points
            .iter()
            .map(|p| (f64::from(p.batch_size), p.raw_members_per_s))
            .collect();
        chart
            .draw_series(LineSeries::new(e2e.clone(), color.stroke_width(2)))
            .map_err(draw_err)?
            .label(format!("end to end, parallelism {parallelism}"))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(2))
            });
        chart
            .draw_series(
                e2e.iter()
                    .map(|&point| Circle::new(point, 4, color.filled())),
            )
            .map_err(draw_err)?;
        chart
            .draw_series(DashedLineSeries::new(
                raw.clone(),
                6,
                4,
                color.stroke_width(1),
            ))
            .map_err(draw_err)?
            .label(format!("Auth store alone, parallelism {parallelism}"))
            .legend(move |(x, y)| {
                DashedPathElement::new(vec![(x, y), (x + 24, y)], 6, 4, color.stroke_width(1))
            });
        chart
            .draw_series(
                raw.iter()
                    .map(|&point| Cross::new(point, 4, color.stroke_width(1))),
            )
            .map_err(draw_err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(("sans-serif", 13))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(draw_err)?;
    root.present().map_err(draw_err)?;
    Ok(())
}

/// How a point's latency is written beside it.
fn value_text(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else if ms >= 10.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.2} ms")
    }
}

/// A latency tick label: 0.1, 1, 10, 100, 1000 ms.
fn fmt_ms(v: f64) -> String {
    if v >= 1.0 {
        format!("{v:.0}")
    } else if v >= 0.1 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}
