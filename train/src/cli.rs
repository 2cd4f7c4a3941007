//! Command-line flags, in the guide's spellings (`--data_url`, `--batch-size`, `--no-cuda`, …;
//! `--key value` and `--key=value` both work).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use kiln_models::DeviceChoice;

/// `kiln-train`: the guide's training jobs on burn, on CPU or CUDA.
#[derive(Debug, Parser)]
#[command(name = "kiln-train", version, about, long_about = None)]
pub struct Cli {
    /// The job to run.
    #[command(subcommand)]
    pub job: Job,
}

/// The training jobs.
#[derive(Debug, Subcommand)]
pub enum Job {
    /// The MNIST CNN (the guide's `train.py`): Adadelta, StepLR, 14 epochs, model package out.
    Mnist(MnistArgs),
}

/// Flags of `kiln-train mnist`; defaults are the guide's `train.py`.
#[derive(Debug, Clone, Args)]
pub struct MnistArgs {
    /// Folder holding the four MNIST idx files (gzip or raw).
    #[arg(long = "data_url", visible_alias = "data-url", default_value = "data/mnist")]
    pub data_url: PathBuf,
    /// Output folder: the model package goes to <train_url>/model/, metrics to metrics.jsonl.
    #[arg(long = "train_url", visible_alias = "train-url", default_value = "output")]
    pub train_url: PathBuf,
    /// Training batch size (shuffled every epoch).
    #[arg(long = "batch-size", visible_alias = "batch_size", default_value_t = 64, value_parser = positive)]
    pub batch_size: usize,
    /// Test batch size.
    #[arg(long = "test-batch-size", visible_alias = "test_batch_size", default_value_t = 1000, value_parser = positive)]
    pub test_batch_size: usize,
    /// Number of epochs.
    #[arg(long, default_value_t = 14, value_parser = positive)]
    pub epochs: usize,
    /// Adadelta learning rate.
    #[arg(long, default_value_t = 1.0, value_parser = positive_f64)]
    pub lr: f64,
    /// StepLR factor: lr ×= gamma after every epoch.
    #[arg(long, default_value_t = 0.7, value_parser = positive_f64)]
    pub gamma: f64,
    /// Train on the CPU even when CUDA is available.
    #[arg(long = "no-cuda", visible_alias = "no_cuda")]
    pub no_cuda: bool,
    /// One batch per epoch, to check the pipeline end to end.
    #[arg(long = "dry-run", visible_alias = "dry_run")]
    pub dry_run: bool,
    /// Random seed (weights, shuffling, dropout).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Batches between training log lines.
    #[arg(long = "log-interval", visible_alias = "log_interval", default_value_t = 10, value_parser = positive)]
    pub log_interval: usize,
    /// Save the model package (the guide's default; kept for compatibility).
    #[arg(long = "save-model", visible_alias = "save_model")]
    pub save_model: bool,
    /// Do not write the model package.
    #[arg(long = "no-save-model", conflicts_with = "save_model")]
    pub no_save_model: bool,
    /// Device: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// Data-loading threads (0 loads on the training thread).
    #[arg(long, visible_alias = "num_workers", default_value_t = 1)]
    pub workers: usize,
}

fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{s:?} is not a whole number: {e}")),
    }
}

fn positive_f64(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
        Ok(_) => Err(format!("{s} must be a positive finite number")),
        Err(e) => Err(format!("{s:?} is not a number: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mnist(args: &[&str]) -> Result<MnistArgs, clap::Error> {
        let mut argv = vec!["kiln-train", "mnist"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).map(|c| match c.job {
            Job::Mnist(a) => a,
        })
    }

    #[test]
    fn defaults_are_the_guides() {
        let a = mnist(&[]).unwrap();
        assert_eq!(
            (a.batch_size, a.test_batch_size, a.epochs, a.log_interval, a.seed),
            (64, 1000, 14, 10, 1)
        );
        assert_eq!((a.lr, a.gamma), (1.0, 0.7));
        assert!(!a.no_cuda && !a.dry_run && !a.no_save_model);
        assert_eq!(a.device, DeviceChoice::Auto);
    }

    #[test]
    fn guide_spellings_and_equals_forms_parse() {
        let a = mnist(&[
            "--data_url=/in",
            "--train_url",
            "/out",
            "--batch-size=32",
            "--test-batch-size",
            "500",
            "--log-interval=5",
            "--dry-run",
            "--no-cuda",
            "--save-model",
            "--epochs=2",
            "--lr=0.5",
            "--gamma",
            "0.9",
            "--seed=7",
            "--device=cpu",
            "--workers=0",
        ])
        .unwrap();
        assert_eq!(a.data_url, PathBuf::from("/in"));
        assert_eq!(a.train_url, PathBuf::from("/out"));
        assert_eq!(
            (
                a.batch_size,
                a.test_batch_size,
                a.log_interval,
                a.epochs,
                a.seed,
                a.workers
            ),
            (32, 500, 5, 2, 7, 0)
        );
        assert_eq!((a.lr, a.gamma), (0.5, 0.9));
        assert!(a.dry_run && a.no_cuda && a.save_model);
        let b = mnist(&["--data-url", "/x", "--batch_size", "8"]).unwrap();
        assert_eq!((b.data_url, b.batch_size), (PathBuf::from("/x"), 8));
    }

    #[test]
    fn bad_flags_are_rejected_with_the_flag_named() {
        for (args, needle) in [
            (vec!["--batch-size=0"], "--batch-size"),
            (vec!["--lr=-1"], "--lr"),
            (vec!["--gamma=nan"], "--gamma"),
            (vec!["--device=tpu"], "--device"),
            (vec!["--epochs=two"], "--epochs"),
            (vec!["--bogus"], "--bogus"),
        ] {
            let e = mnist(&args).unwrap_err().to_string();
            assert!(e.contains(needle), "{args:?}: {e}");
        }
    }
}
