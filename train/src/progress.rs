//! A progress bar for long passes, shown only when stdout is a terminal, so logs and pipes
//! get exactly the contract's lines.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// Progress over the batches of one pass; prints log lines without tearing the bar.
pub struct PassProgress {
    bar: Option<ProgressBar>,
}

impl PassProgress {
    /// A bar of `len` steps labelled `label`, or a silent tracker when stdout is not a terminal.
    pub fn new(len: usize, label: String) -> Self {
        let bar = std::io::stdout().is_terminal().then(|| {
            let bar = ProgressBar::new(len as u64);
            bar.set_style(
                ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            bar.set_message(label);
            bar
        });
        Self { bar }
    }

    /// Prints a line to stdout above the bar.
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| println!("{line}")),
            None => println!("{line}"),
        }
    }

    /// Advances one step.
    pub fn inc(&self) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }

    /// Removes the bar.
    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
