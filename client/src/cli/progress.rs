//! A meter for bulk operations (`member seed`): a bar on stderr when it is a
//! terminal, otherwise a line on stderr at most once a second. Results stay
//! on stdout; this is only for the impatient human.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often the plain meter prints a line.
const LINE_INTERVAL: Duration = Duration::from_secs(1);

pub struct Meter {
    label: &'static str,
    total: u64,
    done: u64,
    started: Instant,
    /// The bar, when stderr is a terminal.
    bar: Option<ProgressBar>,
    /// When the plain meter last printed.
    last_line: Instant,
}

impl Meter {
    pub fn new(label: &'static str, total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{prefix} [{wide_bar}] {human_pos}/{human_len} {per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(label);
            bar
        });
        let now = Instant::now();
        Self {
            label,
            total,
            done: 0,
            started: now,
            bar,
            last_line: now,
        }
    }

    pub fn add(&mut self, count: u64) {
        self.done += count;
        match &self.bar {
            Some(bar) => bar.set_position(self.done),
            None if self.last_line.elapsed() >= LINE_INTERVAL => {
                self.last_line = Instant::now();
                eprintln!(
                    "{} {}/{} ({})",
                    self.label,
                    self.done,
                    self.total,
                    rate(self.done, self.started.elapsed())
                );
            }
            None => {}
        }
    }

    /// Clears the bar; returns how long the operation took.
    pub fn finish(self) -> Duration {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        self.started.elapsed()
    }

    /// How many items were done so far.
    pub fn done(&self) -> u64 {
        self.done
    }
}

/// `"12345 members/s"`, or `"-"` before any time has passed.
pub fn rate(count: u64, elapsed: Duration) -> String {
    let seconds = elapsed.as_secs_f64();
    if seconds <= 0.0 {
        return "-".to_owned();
    }
    // Precision loss is irrelevant for a rate printed without decimals.
    #[allow(clippy::cast_precision_loss)]
    let per_second = count as f64 / seconds;
    format!("{per_second:.0} members/s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_is_per_second_without_decimals() {
        assert_eq!(rate(3_000, Duration::from_millis(1_500)), "2000 members/s");
        assert_eq!(rate(10, Duration::ZERO), "-");
    }
}
