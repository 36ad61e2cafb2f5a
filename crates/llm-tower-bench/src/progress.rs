//! The live progress line on stderr: requests, running rate, errors and
//! p95. Hidden when stderr is not a terminal (CI logs, pipes) or when asked.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::record::Tally;

/// A progress line for one run (cheap to clone: clones share the line).
#[derive(Clone, Debug)]
pub(crate) struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A line titled `title`, expecting `len` requests (`None`: unknown);
    /// drawn only when `visible` and stderr is a terminal.
    pub fn new(title: &str, len: Option<u64>, visible: bool) -> Self {
        let target = if visible && std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr_with_hz(8)
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(len, target);
        let style = match len {
            Some(_) => "{prefix:>14} [{bar:30}] {pos}/{len} {msg}",
            None => "{prefix:>14} {spinner} {pos} {msg}",
        };
        bar.set_style(ProgressStyle::with_template(style).expect("a valid template").progress_chars("=> "));
        bar.set_prefix(title.to_owned());
        Self { bar }
    }

    /// A line that never draws.
    pub fn hidden() -> Self {
        Self { bar: ProgressBar::hidden() }
    }

    /// After each completion: position, and every 32 requests the figures.
    pub(crate) fn update(&self, total: &Tally, elapsed: Duration) {
        self.bar.set_position(total.requests);
        if self.bar.is_hidden() || total.requests % 32 != 0 {
            return;
        }
        let secs = elapsed.as_secs_f64().max(1e-3);
        self.bar.set_message(format!(
            "{:.0} req/s, {} errors, p95 {:.1} ms",
            total.requests as f64 / secs,
            total.requests - total.successes,
            total.latency.value_at_quantile(0.95) as f64 / 1000.0
        ));
    }

    /// Clears the line.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
