//! `kiln-bench swap`: kiln-serve's model repository under load. Concurrent clients post digits
//! to the contract route for a window with no swap, then for a window during which new model
//! versions are written into the repository and loaded by Triton's load request, in
//! alternating rounds: every request must succeed, and the latency with swaps is printed as a
//! ratio of the latency without them.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use burn::backend::Flex;
use burn::prelude::Backend;
use clap::Args;
use kiln_infer::process::spawn_loopback_repository;
use kiln_models::{net_package_config, write_package, NetConfig};
use serde::{Deserialize, Serialize};

use crate::chart::BarChart;
use crate::load::{drive, LoadResult, Upload};
use crate::report::Report;
use crate::serve::{digit_pngs, kiln_serve_path};

/// Flags of `kiln-bench swap`.
#[derive(Debug, Clone, Args)]
pub struct SwapBench {
    /// MNIST folder the request digits come from.
    #[arg(long, default_value = "data/mnist")]
    data: PathBuf,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Seconds per window.
    #[arg(long, default_value_t = 30.0)]
    seconds: f64,
    /// Version swaps in each window with swaps, evenly spread.
    #[arg(long, default_value_t = 10)]
    swaps: usize,
    /// Rounds of a window without swaps followed by one with them.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// The server's --max-batch.
    #[arg(long = "max-batch", default_value_t = 8)]
    max_batch: usize,
    /// The server's --workers.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Where to write the JSON results.
    #[arg(long, default_value = "bench-swap.json")]
    json: PathBuf,
}

/// What `kiln-bench swap` measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SwapReport {
    /// Concurrent clients.
    pub concurrency: usize,
    /// Seconds per window.
    pub seconds: f64,
    /// Swaps per window with swaps.
    pub swaps: usize,
    /// Each round's window without swaps.
    pub quiet: Vec<LoadResult>,
    /// Each round's window with swaps.
    pub swapping: Vec<LoadResult>,
    /// Seconds each load request took (load, warm-up, swap), in order.
    pub load_seconds: Vec<f64>,
    /// Load requests not answered 200.
    pub failed_loads: usize,
    /// Cores of the machine.
    pub threads: usize,
}

/// Writes version `version` of model `digits` into `root` as a deployment would: copied
/// beside the repository, then moved in whole.
fn add_version(root: &Path, first: &Path, version: usize) -> Result<(), String> {
    let staging = root.with_file_name(format!(".staging-{version}"));
    std::fs::create_dir_all(&staging).map_err(|e| format!("{}: {e}", staging.display()))?;
    for entry in std::fs::read_dir(first).map_err(|e| e.to_string())? {
        let entry = entry.map_err(|e| e.to_string())?;
        std::fs::copy(entry.path(), staging.join(entry.file_name())).map_err(|e| e.to_string())?;
    }
    let dir = root.join("digits").join(version.to_string());
    std::fs::rename(&staging, &dir).map_err(|e| format!("{}: {e}", dir.display()))
}

/// `swaps` swaps spread over `window`, starting at version `next`: the seconds each load
/// request took and how many failed.
async fn swap_during(
    base: &str,
    root: &Path,
    first: &Path,
    next: &mut usize,
    swaps: usize,
    window: Duration,
) -> Result<(Vec<f64>, usize), String> {
    let client = reqwest::Client::new();
    let gap = window / (swaps as u32 + 1);
    let (mut seconds, mut failed) = (Vec::new(), 0);
    for _ in 0..swaps {
        tokio::time::sleep(gap).await;
        add_version(root, first, *next)?;
        *next += 1;
        let started = Instant::now();
        let r = client
            .post(format!("{base}/v2/repository/models/digits/load"))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        seconds.push(started.elapsed().as_secs_f64());
        if r.status() != 200 {
            failed += 1;
            eprintln!(
                "load request answered {}: {}",
                r.status(),
                r.text().await.unwrap_or_default()
            );
        }
    }
    Ok((seconds, failed))
}

/// Runs the benchmark and prints a Markdown table.
pub fn run(args: SwapBench) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;
    let root = scratch.path().join("models");
    let first = root.join("digits/1");
    let device = Default::default();
    Flex::seed(&device, 1);
    let cfg = NetConfig::new();
    write_package(&first, &net_package_config(&cfg), &cfg.init::<Flex>(&device)).map_err(|e| e.to_string())?;
    let (_, pngs) = digit_pngs(&args.data, 256)?;
    let uploads: Vec<Upload> = pngs.into_iter().map(Upload::good).collect();
    let window = Duration::from_secs_f64(args.seconds);
    let extra = [
        "--max-batch".to_string(),
        args.max_batch.to_string(),
        "--workers".into(),
        args.workers.to_string(),
        "--queue".into(),
        "4096".into(),
    ];
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let (child, base) = spawn_loopback_repository(&kiln_serve_path()?, &root, &extra)?;
    let server = Guard(child);
    let report = runtime.block_on(async {
        let started = Instant::now();
        while !reqwest::get(format!("{base}/v2/health/ready"))
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            if started.elapsed() > Duration::from_secs(30) {
                return Err("kiln-serve not ready after 30 s".to_string());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let url = format!("{base}/");
        let (mut quiet, mut swapping, mut load_seconds, mut failed_loads) = (Vec::new(), Vec::new(), Vec::new(), 0);
        let mut next = 2;
        for round in 0..args.rounds {
            quiet.push(drive(&url, "image", &uploads, args.concurrency, window).await?);
            let (load, swaps) = tokio::join!(
                drive(&url, "image", &uploads, args.concurrency, window),
                swap_during(&base, &root, &first, &mut next, args.swaps, window)
            );
            let (seconds, failed) = swaps?;
            swapping.push(load?);
            load_seconds.extend(seconds);
            failed_loads += failed;
            println!("round {} of {} done", round + 1, args.rounds);
        }
        Ok(SwapReport {
            concurrency: args.concurrency,
            seconds: args.seconds,
            swaps: args.swaps,
            quiet,
            swapping,
            load_seconds,
            failed_loads,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        })
    });
    drop(server);
    let report = report?;
    println!(
        "\n## kiln-bench swap ({} clients, {} s windows, {} swaps per window)\n",
        args.concurrency, args.seconds, args.swaps
    );
    println!("| window | req/s | p50 ms | p99 ms | failed requests |");
    println!("|---|---|---|---|---|");
    for (q, s) in report.quiet.iter().zip(&report.swapping) {
        for (name, r) in [("no swaps", q), ("swapping", s)] {
            println!(
                "| {name} | {:.0} | {:.2} | {:.2} | {} |",
                r.requests_per_second, r.p50_ms, r.p99_ms, r.errors
            );
        }
    }
    for line in report.notes() {
        println!("{line}");
    }
    crate::report::write(&args.json, &report)
}

/// The server process, killed when dropped.
struct Guard(std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Report for SwapReport {
    const BENCH: &'static str = "swap";

    fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        for (i, (q, s)) in self.quiet.iter().zip(&self.swapping).enumerate() {
            notes.push(format!(
                "round {}: p99 {:.1} ms with {} swaps against {:.1} ms without ({:.2}×), p50 {:.2}×; \
                 {} of {} requests failed with swaps, {} of {} without",
                i + 1,
                s.p99_ms,
                self.swaps,
                q.p99_ms,
                s.p99_ms / q.p99_ms,
                s.p50_ms / q.p50_ms,
                s.errors,
                s.requests,
                q.errors,
                q.requests
            ));
        }
        let mut sorted = self.load_seconds.clone();
        sorted.sort_by(f64::total_cmp);
        if let (Some(lo), Some(hi)) = (sorted.first(), sorted.last()) {
            notes.push(format!(
                "{} load requests, {} failed; each took {:.0}–{:.0} ms (load, warm-up, swap)",
                sorted.len(),
                self.failed_loads,
                lo * 1e3,
                hi * 1e3
            ));
        }
        notes
    }

    fn chart(&self) -> BarChart {
        let pick = |rs: &[LoadResult], f: fn(&LoadResult) -> f64| rs.iter().map(f).fold(f64::NAN, f64::max);
        let groups = vec![
            (
                "p50 latency".to_string(),
                vec![
                    Some(pick(&self.quiet, |r| r.p50_ms)),
                    Some(pick(&self.swapping, |r| r.p50_ms)),
                ],
            ),
            (
                "p99 latency".to_string(),
                vec![
                    Some(pick(&self.quiet, |r| r.p99_ms)),
                    Some(pick(&self.swapping, |r| r.p99_ms)),
                ],
            ),
        ];
        BarChart {
            title: format!(
                "kiln-serve at {} clients, {} model swaps per {} s ({} threads)",
                self.concurrency, self.swaps, self.seconds, self.threads
            ),
            unit: "ms, the worst round (lower is better)".into(),
            series: vec!["no swaps".into(), "swapping".into()],
            groups,
        }
    }
}
