//! Progress bars for long phases. They draw on standard error only when it
//! is a terminal, so scripts and logs see nothing but the final result line.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar over the bytes of an upload.
pub(crate) struct Transfer(ProgressBar);

impl Transfer {
    /// A bar labelled `what`.
    pub(crate) fn new(what: &str) -> Self {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(what.to_string());
        Transfer(bar)
    }

    /// Shows `sent` of `total` bytes.
    pub(crate) fn update(&self, sent: u64, total: u64) {
        self.0.set_length(total);
        self.0.set_position(sent);
    }

    /// Removes the bar.
    pub(crate) fn finish(&self) {
        self.0.finish_and_clear();
    }
}

/// A bar over a job's DP-SGD steps, labelled with the job's phase and ε spent.
pub(crate) struct Steps(ProgressBar);

impl Steps {
    /// A bar for a job of at most `max_steps` steps.
    pub(crate) fn new(max_steps: u64) -> Self {
        let bar = ProgressBar::new(max_steps);
        bar.set_style(
            ProgressStyle::with_template("{prefix:>15} [{bar:30}] {pos}/{len} steps  {msg}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        Steps(bar)
    }

    /// Shows the job's public status.
    pub(crate) fn update(&self, phase: &str, steps: u64, epsilon_spent: f64) {
        self.0.set_prefix(phase.to_string());
        self.0.set_position(steps);
        self.0.set_message(format!("ε = {epsilon_spent:.3}"));
    }

    /// Removes the bar.
    pub(crate) fn finish(&self) {
        self.0.finish_and_clear();
    }
}
