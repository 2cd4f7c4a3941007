//! `kiln-bench mnist`: `kiln-train mnist` for N epochs (wall time of the train and test
//! passes, train-pass images/s, test accuracy, from the job's own `metrics.jsonl`) and, with
//! `--compare-pytorch`, the guide's `train.py` recipe (`benches/reference/mnist_train.py`) on
//! the same data, device and cores in the same run, with the ratios.

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Args;
use kiln_models::DeviceChoice;
use serde::{Deserialize, Serialize};

use crate::chart::BarChart;
use crate::report::Report;

/// Flags of `kiln-bench mnist`.
#[derive(Debug, Clone, Args)]
pub struct MnistBench {
    /// Epochs to run on each side.
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    /// MNIST folder (the four idx files).
    #[arg(long, default_value = "data/mnist")]
    data: PathBuf,
    /// Device for both sides: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
    /// Also run the PyTorch original with the local python3 (needs torch).
    #[arg(long = "compare-pytorch")]
    compare_pytorch: bool,
    /// Runs of each side, alternating kiln and PyTorch; each epoch's figures are the best of
    /// its side's runs (on a shared machine speed drifts by tens of percent within minutes).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// The PyTorch reference script.
    #[arg(long, default_value = "benches/reference/mnist_train.py")]
    reference: PathBuf,
    /// Where to write the JSON results.
    #[arg(long, default_value = "bench-mnist.json")]
    json: PathBuf,
}

/// One epoch's figures from either side.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochFigures {
    /// Epoch number, from 1.
    pub epoch: usize,
    /// Wall time of the training pass, seconds.
    pub train_seconds: f64,
    /// Wall time of the test pass, seconds (absent from results written before it was
    /// measured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_seconds: Option<f64>,
    /// The epoch: training pass plus test pass of one run, seconds (what the guide's `train.py`
    /// loop spends per epoch; absent where the test pass was not timed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch_seconds: Option<f64>,
    /// Training images per second.
    pub images_per_second: f64,
    /// Test accuracy in [0, 1].
    pub accuracy: f64,
}

/// The results file of `kiln-bench mnist`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MnistReport {
    /// Device both sides ran on.
    pub device: String,
    /// Threads available to each side.
    pub threads: usize,
    /// kiln's epochs.
    pub kiln: Vec<EpochFigures>,
    /// The reference's epochs, when it ran.
    pub pytorch: Option<Vec<EpochFigures>>,
}

impl Report for MnistReport {
    const BENCH: &'static str = "mnist";

    fn notes(&self) -> Vec<String> {
        let side = |name: &str, e: &EpochFigures| {
            let epoch = e.epoch_seconds.map_or("n/a".into(), |s| format!("{s:.1} s"));
            format!(
                "{name} {epoch} (training pass {:.1} s, test accuracy {:.2}%)",
                e.train_seconds,
                e.accuracy * 100.0
            )
        };
        self.kiln
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let torch = self.pytorch.as_ref().and_then(|t| t.get(i));
                let mut line = format!("epoch {}: {}", k.epoch, side("kiln", k));
                if let Some(t) = torch {
                    line.push_str(&format!(", {}", side("PyTorch", t)));
                    if let (Some(a), Some(b)) = (k.epoch_seconds, t.epoch_seconds) {
                        line.push_str(&format!("; kiln takes {:.2}× PyTorch's time", a / b));
                    }
                }
                line
            })
            .collect()
    }

    fn chart(&self) -> BarChart {
        let torch = |i: usize| self.pytorch.as_ref().and_then(|t| t.get(i));
        BarChart {
            title: format!(
                "kiln-train mnist vs the PyTorch recipe ({}, {} threads)",
                self.device, self.threads
            ),
            unit: "training images/s (higher is better)".into(),
            series: vec!["kiln".into(), "PyTorch".into()],
            groups: self
                .kiln
                .iter()
                .enumerate()
                .map(|(i, k)| {
                    let label = format!("epoch {}", k.epoch);
                    (
                        label,
                        vec![Some(k.images_per_second), torch(i).map(|t| t.images_per_second)],
                    )
                })
                .collect(),
        }
    }
}

/// Runs the benchmark and prints a Markdown table.
pub fn run(args: MnistBench) -> Result<(), String> {
    let out = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (mut kiln, mut torch) = (Vec::new(), None);
    let mut compare = args.compare_pytorch;
    for round in 1..=args.rounds {
        let run = kiln_epochs(&args, &out.path().join(format!("round-{round}")))?;
        eprintln!("kiln    round {round}: {run:?}");
        kiln = best_epochs(kiln, run);
        if compare {
            match reference_epochs(&args)? {
                Some(run) => {
                    eprintln!("pytorch round {round}: {run:?}");
                    torch = Some(best_epochs(torch.unwrap_or_default(), run));
                }
                // No torch here (said on stderr once): kiln's rounds go on alone.
                None => compare = false,
            }
        }
    }
    print!("{}", table(&kiln, torch.as_deref()));
    let report = MnistReport {
        device: args.device.to_string(),
        threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        kiln,
        pytorch: torch,
    };
    crate::report::write(&args.json, &report)
}

impl EpochFigures {
    /// The faster training pass of `self` and `other` (its time, speed and accuracy), with the
    /// shorter test pass and the shorter whole epoch of the two.
    fn best_of(self, other: EpochFigures) -> EpochFigures {
        let shorter = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let test_seconds = shorter(self.test_seconds, other.test_seconds);
        let epoch_seconds = shorter(self.epoch_seconds, other.epoch_seconds);
        let faster = if other.train_seconds < self.train_seconds {
            other
        } else {
            self
        };
        EpochFigures {
            test_seconds,
            epoch_seconds,
            ..faster
        }
    }
}

/// Each epoch's best (see [`EpochFigures::best_of`]) of `best` (the earlier runs; empty before
/// the first) and `run`.
fn best_epochs(best: Vec<EpochFigures>, run: Vec<EpochFigures>) -> Vec<EpochFigures> {
    if best.is_empty() {
        return run;
    }
    best.into_iter().zip(run).map(|(b, r)| b.best_of(r)).collect()
}

/// Runs the `kiln-train` binary beside this one and reads its metrics file.
fn kiln_epochs(args: &MnistBench, out: &Path) -> Result<Vec<EpochFigures>, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let train = exe.with_file_name("kiln-train");
    let status = Command::new(&train)
        .arg("mnist")
        .arg(format!("--epochs={}", args.epochs))
        .arg(format!("--data_url={}", args.data.display()))
        .arg(format!("--train_url={}", out.display()))
        .arg(format!("--device={}", args.device))
        .args(["--log-interval=100000", "--no-save-model"])
        .status()
        .map_err(|e| format!("{}: {e} (build it with cargo build --release)", train.display()))?;
    if !status.success() {
        return Err(format!("kiln-train mnist failed: {status}"));
    }
    let metrics = out.join("metrics.jsonl");
    let text = std::fs::read_to_string(&metrics).map_err(|e| format!("{}: {e}", metrics.display()))?;
    parse_lines(&text)
}

/// The reference's per-epoch JSON lines, or `None` (said on stderr) without torch.
fn reference_epochs(args: &MnistBench) -> Result<Option<Vec<EpochFigures>>, String> {
    let mut cmd = Command::new("python3");
    cmd.arg(&args.reference)
        .args(["--epochs", &args.epochs.to_string(), "--log-interval", "100000"])
        .arg("--data_url")
        .arg(&args.data);
    if !matches!(args.device, DeviceChoice::Cuda(_)) {
        cmd.arg("--no-cuda");
    }
    match crate::reference::json_lines(cmd)? {
        Some(lines) => parse_lines(&lines.join("\n")).map(Some),
        None => Ok(None),
    }
}

/// Epoch figures from JSON lines (`metrics.jsonl`, or the reference script's output).
pub fn parse_lines(text: &str) -> Result<Vec<EpochFigures>, String> {
    text.lines()
        .map(|l| {
            let figures: EpochFigures = serde_json::from_str(l).map_err(|e| format!("metrics line {l:?}: {e}"))?;
            let epoch_seconds = figures
                .epoch_seconds
                .or(figures.test_seconds.map(|test| figures.train_seconds + test));
            Ok(EpochFigures {
                epoch_seconds,
                ..figures
            })
        })
        .collect()
}

/// The Markdown table of `kiln`'s epochs beside `torch`'s, with each figure's ratio.
fn table(kiln: &[EpochFigures], torch: Option<&[EpochFigures]>) -> String {
    let mut out = String::from(
        "| epoch | kiln train s | PyTorch train s | time ratio | kiln test s | PyTorch test s | test ratio \
         | kiln epoch s | PyTorch epoch s | epoch ratio | kiln img/s | PyTorch img/s | kiln acc % | PyTorch acc % |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let seconds = |s: Option<f64>| s.map_or("n/a".to_string(), |s| format!("{s:.2}"));
    let ratio = |k: Option<f64>, t: Option<f64>| match (k, t) {
        (Some(k), Some(t)) => format!("{:.2}×", k / t),
        _ => "n/a".to_string(),
    };
    for (i, k) in kiln.iter().enumerate() {
        let t = torch.and_then(|t| t.get(i));
        let cell = |f: &dyn Fn(&EpochFigures) -> String| t.map_or("n/a".to_string(), f);
        let (t_test, t_epoch) = (t.and_then(|t| t.test_seconds), t.and_then(|t| t.epoch_seconds));
        out.push_str(&format!(
            "| {} | {:.1} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {} | {:.2} | {} |\n",
            k.epoch,
            k.train_seconds,
            cell(&|t| format!("{:.1}", t.train_seconds)),
            ratio(Some(k.train_seconds), t.map(|t| t.train_seconds)),
            seconds(k.test_seconds),
            seconds(t_test),
            ratio(k.test_seconds, t_test),
            seconds(k.epoch_seconds),
            seconds(t_epoch),
            ratio(k.epoch_seconds, t_epoch),
            k.images_per_second,
            cell(&|t| format!("{:.0}", t.images_per_second)),
            100.0 * k.accuracy,
            cell(&|t| format!("{:.2}", 100.0 * t.accuracy)),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kiln_and_reference_lines() {
        let kiln = r#"{"epoch":1,"train_loss":0.3,"test_loss":0.04,"accuracy":0.9856,"lr":1.0,"train_seconds":233.5,"test_seconds":6.9,"seconds":240.4,"images_per_second":257.0}"#;
        let torch = r#"{"epoch": 1, "train_seconds": 39.5, "test_seconds": 1.2, "images_per_second": 1517.0, "accuracy": 0.9844, "device": "cpu", "threads": 2}"#;
        let got = parse_lines(&format!("{kiln}\n{torch}")).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].train_seconds, got[1].images_per_second), (233.5, 1517.0));
        assert_eq!((got[0].test_seconds, got[1].test_seconds), (Some(6.9), Some(1.2)));
        assert_eq!(
            (got[0].epoch_seconds, got[1].epoch_seconds),
            (Some(233.5 + 6.9), Some(39.5 + 1.2))
        );
        assert!(parse_lines("{\"epoch\": 1}").unwrap_err().contains("epoch"));
    }

    /// Figures of one run's epoch, its epoch time the sum of its two passes.
    fn figures(epoch: usize, train_seconds: f64, test_seconds: Option<f64>, accuracy: f64) -> EpochFigures {
        EpochFigures {
            epoch,
            train_seconds,
            test_seconds,
            epoch_seconds: test_seconds.map(|test| train_seconds + test),
            images_per_second: 60_000.0 / train_seconds,
            accuracy,
        }
    }

    #[test]
    fn rounds_keep_each_epochs_faster_passes() {
        let first = vec![figures(1, 40.0, Some(2.5), 0.98), figures(2, 38.0, Some(3.0), 0.99)];
        let second = vec![figures(1, 36.0, Some(2.9), 0.97), figures(2, 41.0, None, 0.985)];
        let best = best_epochs(best_epochs(Vec::new(), first), second);
        // Epoch 1: the second run trained faster (its accuracy comes with it), the first
        // tested faster, and the whole epoch is the second run's 38.9 s (not 36 + 2.5, which no
        // run took); epoch 2: the first run on every count.
        assert_eq!(
            best.iter()
                .map(|e| (e.epoch, e.train_seconds, e.test_seconds, e.epoch_seconds, e.accuracy))
                .collect::<Vec<_>>(),
            vec![
                (1, 36.0, Some(2.5), Some(38.9), 0.97),
                (2, 38.0, Some(3.0), Some(41.0), 0.99)
            ]
        );
        assert_eq!(best[0].images_per_second, 60_000.0 / 36.0);
    }

    #[test]
    fn table_gives_each_pass_and_the_whole_epoch_its_ratio() {
        let kiln = [figures(1, 37.8, Some(2.5), 0.9841)];
        let torch = [figures(1, 51.7, Some(5.9), 0.9846)];
        let text = table(&kiln, Some(&torch[..]));
        let row = text.lines().nth(2).unwrap();
        let cells: Vec<&str> = row.split('|').map(str::trim).filter(|c| !c.is_empty()).collect();
        // Train 37.8 / 51.7, test 2.5 / 5.9, epoch 40.3 / 57.6.
        assert_eq!(
            cells,
            [
                "1", "37.8", "51.7", "0.73×", "2.50", "5.90", "0.42×", "40.30", "57.60", "0.70×", "1587", "1161",
                "98.41", "98.46"
            ]
        );
        assert_eq!(text.lines().next().unwrap().matches('|').count(), 15);
        let without_reference = table(&kiln, None);
        assert!(without_reference
            .lines()
            .nth(2)
            .unwrap()
            .contains("| 40.30 | n/a | n/a |"));
    }

    #[test]
    fn results_written_before_the_test_pass_was_timed_still_read() {
        let old = r#"{"epoch":1,"train_seconds":35.4,"images_per_second":1697.2,"accuracy":0.9841}"#;
        let got = parse_lines(old).unwrap();
        assert_eq!(
            (got[0].train_seconds, got[0].test_seconds, got[0].epoch_seconds),
            (35.4, None, None)
        );
    }
}
