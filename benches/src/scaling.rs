//! `kiln-bench scaling`: data-parallel CPU scaling of `kiln-train mnist` on a slice of the
//! bundled MNIST, same node batch everywhere: 1 worker using every thread, N workers of 1
//! thread in one process (`--device cpu:N`), and N single-worker nodes as N processes on
//! loopback (the multi-node path, through the orchestrator and WebSocket).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use clap::Args;
use kiln_data::{MnistDataset, MnistSplit};
use serde::{Deserialize, Serialize};

use crate::chart::BarChart;
use crate::mnist::{parse_lines, EpochFigures};
use crate::report::Report;

/// Flags of `kiln-bench scaling`.
#[derive(Debug, Clone, Args)]
pub struct ScalingBench {
    /// MNIST folder (the four idx files).
    #[arg(long, default_value = "data/mnist")]
    data: PathBuf,
    /// Training digits in the slice (the first ones of the training set).
    #[arg(long = "train-digits", default_value_t = 6400)]
    train_digits: usize,
    /// Test digits in the slice.
    #[arg(long = "test-digits", default_value_t = 1000)]
    test_digits: usize,
    /// Workers (and threads) to compare against one worker.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Batch size of a node (divided among its workers).
    #[arg(long = "batch-size", default_value_t = 64)]
    batch_size: usize,
    /// Where to write the JSON results.
    #[arg(long, default_value = "bench-scaling.json")]
    json: PathBuf,
}

/// One layout's epoch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScalingRow {
    /// How the run was laid out, in words.
    pub layout: String,
    /// Processes (nodes).
    pub processes: usize,
    /// Workers in all.
    pub workers: usize,
    /// rayon threads per process.
    pub threads_per_process: usize,
    /// The epoch's figures from rank 0's `metrics.jsonl`.
    pub epoch: EpochFigures,
}

/// The results file of `kiln-bench scaling`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScalingReport {
    /// Threads the machine offers.
    pub threads: usize,
    /// Training digits per epoch.
    pub train_digits: usize,
    /// The node batch.
    pub batch_size: usize,
    /// One row per layout.
    pub rows: Vec<ScalingRow>,
}

impl Report for ScalingReport {
    const BENCH: &'static str = "scaling";

    fn chart(&self) -> BarChart {
        BarChart {
            title: format!(
                "kiln-train mnist data-parallel scaling ({} threads, batch {})",
                self.threads, self.batch_size
            ),
            unit: "training images/s (higher is better)".into(),
            series: vec!["kiln".into()],
            groups: self
                .rows
                .iter()
                .map(|r| (r.layout.clone(), vec![Some(r.epoch.images_per_second)]))
                .collect(),
        }
    }
}

/// Runs the three layouts and prints a Markdown table.
pub fn run(args: ScalingBench) -> Result<(), String> {
    if args.workers < 2 {
        return Err("--workers must be at least 2 to compare layouts".into());
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let data = dir.path().join("mnist");
    write_slice(&args, &data)?;
    let n = args.workers;
    let layouts = [
        (format!("1 worker × {n} threads"), 1, "cpu".to_string(), n),
        (format!("{n} workers × 1 thread"), 1, format!("cpu:{n}"), 1),
        (format!("{n} processes × 1 thread"), n, "cpu".to_string(), 1),
    ];
    let mut rows = Vec::new();
    for (i, (layout, processes, device, threads)) in layouts.into_iter().enumerate() {
        let out = dir.path().join(format!("run{i}"));
        let epoch = epoch_of(&args, &data, &out, processes, &device, threads)?;
        rows.push(ScalingRow {
            layout,
            processes,
            workers: if processes > 1 {
                processes
            } else {
                device_workers(&device)
            },
            threads_per_process: threads,
            epoch,
        });
    }
    print_table(&rows);
    let report = ScalingReport {
        threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        train_digits: args.train_digits,
        batch_size: args.batch_size,
        rows,
    };
    crate::report::write(&args.json, &report)
}

fn device_workers(device: &str) -> usize {
    device.strip_prefix("cpu:").and_then(|n| n.parse().ok()).unwrap_or(1)
}

/// The first digits of each split as raw idx files under `dir`.
fn write_slice(args: &ScalingBench, dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for (split, n, prefix) in [
        (MnistSplit::Train, args.train_digits, "train"),
        (MnistSplit::Test, args.test_digits, "t10k"),
    ] {
        MnistDataset::from_dir(&args.data, split)
            .map_err(|e| e.to_string())?
            .truncated(n)
            .write_idx(dir, prefix)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    Ok(())
}

/// One epoch of `kiln-train mnist` in `processes` processes of `threads` rayon threads each;
/// rank 0's figures.
fn epoch_of(
    args: &ScalingBench,
    data: &Path,
    out: &Path,
    processes: usize,
    device: &str,
    threads: usize,
) -> Result<EpochFigures, String> {
    let train = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .with_file_name("kiln-train");
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let children: Vec<Child> = (0..processes)
        .map(|rank| {
            let mut cmd = Command::new(&train);
            cmd.arg("mnist")
                .arg(format!("--data_url={}", data.display()))
                .arg(format!("--train_url={}", out.join(rank.to_string()).display()))
                .arg(format!("--device={device}"))
                .arg(format!("--batch-size={}", args.batch_size))
                .args(["--epochs=1", "--log-interval=100000", "--no-save-model"])
                .env("RAYON_NUM_THREADS", threads.to_string())
                .env("KILN_LOG", "warn");
            if processes > 1 {
                cmd.arg(format!("--world-size={processes}"))
                    .arg(format!("--rank={rank}"))
                    .arg(format!("--dist-url=tcp://127.0.0.1:{port}"));
            }
            cmd.spawn()
                .map_err(|e| format!("{}: {e} (build it with cargo build --release)", train.display()))
        })
        .collect::<Result<_, _>>()?;
    for child in children {
        let status = child.wait_with_output().map_err(|e| e.to_string())?.status;
        if !status.success() {
            return Err(format!(
                "kiln-train mnist --device={device} ({processes} processes) failed: {status}"
            ));
        }
    }
    let metrics = out.join("0").join("metrics.jsonl");
    let text = std::fs::read_to_string(&metrics).map_err(|e| format!("{}: {e}", metrics.display()))?;
    parse_lines(&text)?
        .pop()
        .ok_or_else(|| format!("{}: no epoch", metrics.display()))
}

fn print_table(rows: &[ScalingRow]) {
    let base = rows[0].epoch.images_per_second;
    println!("| layout | train s | img/s | vs 1 worker | test acc % |");
    println!("|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {:.1} | {:.0} | {:.2}× | {:.1} |",
            r.layout,
            r.epoch.train_seconds,
            r.epoch.images_per_second,
            r.epoch.images_per_second / base,
            100.0 * r.epoch.accuracy
        );
    }
}
