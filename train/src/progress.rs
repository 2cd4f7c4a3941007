//! A progress bar for long passes, shown only when stdout is a terminal, so logs and pipes
//! get exactly the contract's lines.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// Progress over the batches of one pass; prints log lines without tearing the bar.
pub struct PassProgress {
    bar: Option<ProgressBar>,
    print: bool,
}

impl PassProgress {
    /// A bar of `len` steps labelled `label` on the worker that logs (`logs`), or a silent
    /// tracker when stdout is not a terminal; the other workers of a distributed run print
    /// nothing.
    pub fn new(len: usize, label: String, logs: bool) -> Self {
        if !logs {
            return Self {
                bar: None,
                print: false,
            };
        }
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
        Self { bar, print: true }
    }

    /// Prints a line to stdout above the bar.
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| println!("{line}")),
            None if self.print => println!("{line}"),
            None => {}
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
