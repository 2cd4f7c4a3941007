//! `kiln-bench serve`: kiln-serve on loopback under 1/16/64 concurrent clients, against the
//! raw forward throughput of the same model on the same CPU, measured in the same run; with
//! `--bad-share`, a soak with hostile uploads mixed in and the server's memory sampled.

use std::cell::RefCell;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use burn::backend::Flex;
use burn::data::dataset::Dataset;
use burn::prelude::Backend;
use clap::Args;
use image::{DynamicImage, GrayImage, ImageFormat};
use kiln_data::{MnistDataset, MnistItem, MnistSplit};
use kiln_infer::process::spawn_loopback;
use kiln_infer::WorkerLayout;
use kiln_models::{net_package_config, write_package, NetConfig};
use serde::{Deserialize, Serialize};

use crate::chart::BarChart;
use crate::cpu::CpuClock;
use crate::hostile::{hostile_uploads, mix};
use crate::load::{drive, LoadResult, Upload};
use crate::raw::forward_images_per_second;
use crate::report::Report;

/// Flags of `kiln-bench serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeBench {
    /// Model package to serve; default: a fresh MNIST Net (weights do not change the speed).
    #[arg(long = "model-dir")]
    model_dir: Option<PathBuf>,
    /// MNIST folder the request digits come from.
    #[arg(long, default_value = "data/mnist")]
    data: PathBuf,
    /// Concurrency levels.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    concurrency: Vec<usize>,
    /// Seconds per level.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// The server's --max-batch (its CPU default); the raw forward runs batches of this size.
    #[arg(long = "max-batch", default_value_t = 8)]
    max_batch: usize,
    /// The server's --workers; the raw ceiling is measured with this split of the cores too.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Also drive this predict URL the same way (e.g. the guide's Flask app).
    #[arg(long)]
    compare: Option<String>,
    /// Share of requests carrying a hostile upload (broken files, a decompression bomb, a
    /// heavy 2000×2000 16-bit PNG), e.g. 0.1; each must get its expected answer.
    #[arg(long = "bad-share", default_value_t = 0.0)]
    bad_share: f64,
    /// Seconds between samples of the server's resident memory during each level.
    #[arg(long = "rss-every-s", default_value_t = 10.0)]
    rss_every_s: f64,
    /// Extra flags for kiln-serve, e.g. `--serve-arg=--http-threads=2` (repeatable).
    #[arg(long = "serve-arg", allow_hyphen_values = true)]
    serve_args: Vec<String>,
    /// Where to write the JSON results.
    #[arg(long, default_value = "bench-serve.json")]
    json: PathBuf,
}

/// The raw forward throughput for each of `layouts` in turn: the highest, after printing each.
fn best_raw_forward(
    package: &Path,
    digits: &[MnistItem],
    batch: usize,
    window: Duration,
    layouts: &[WorkerLayout],
) -> Result<f64, String> {
    let mut best: f64 = 0.0;
    for &layout in layouts {
        let r = forward_images_per_second(package, digits, batch, window, layout)?;
        println!(
            "raw forward, {} worker(s) × {} thread(s), batch {batch}: {r:.0} images/s",
            layout.workers, layout.threads_per_worker
        );
        best = best.max(r);
    }
    Ok(best)
}

struct Server {
    child: Child,
    url: String,
    ready_ms: f64,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `kiln-serve` binary beside this one.
pub fn kiln_serve_path() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let p = exe.with_file_name("kiln-serve");
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "{} not found: build it with `cargo build --release -p kiln-infer`",
            p.display()
        ))
    }
}

async fn start_server(
    package: &Path,
    max_batch: usize,
    workers: usize,
    serve_args: &[String],
) -> Result<Server, String> {
    let started = Instant::now();
    let mut extra = [
        "--max-batch",
        &max_batch.to_string(),
        "--workers",
        &workers.to_string(),
        "--queue",
        "4096",
    ]
    .map(String::from)
    .to_vec();
    extra.extend_from_slice(serve_args);
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let (child, base) = spawn_loopback(&kiln_serve_path()?, package, &extra)?;
    loop {
        if reqwest::get(format!("{base}/health"))
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            break;
        }
        if started.elapsed() > Duration::from_secs(30) {
            return Err("kiln-serve not ready after 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let ready_ms = started.elapsed().as_secs_f64() * 1e3;
    Ok(Server {
        child,
        url: format!("{base}/"),
        ready_ms,
    })
}

/// From the server's own histogram of `POST /`: (requests at most 20 ms, all requests).
async fn server_latency_counts(url: &str) -> (f64, f64) {
    let text = match reqwest::get(format!("{url}metrics")).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => return (f64::NAN, f64::NAN),
    };
    let value = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (
        value("kiln_http_request_duration_seconds_bucket{path=\"/\",le=\"0.02\"}"),
        value("kiln_http_request_duration_seconds_count{path=\"/\"}"),
    )
}

/// Resident and peak resident memory of a process, in MB (Linux /proc).
fn rss_mb(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The first `n` MNIST test digits and each as a 28×28 grayscale PNG file.
pub fn digit_pngs(data: &Path, n: usize) -> Result<(Vec<MnistItem>, Vec<Vec<u8>>), String> {
    let test = MnistDataset::from_dir(data, MnistSplit::Test).map_err(|e| e.to_string())?;
    let items: Vec<MnistItem> = (0..n.min(test.len())).filter_map(|i| test.get(i)).collect();
    let pngs = items
        .iter()
        .map(|d| {
            let img = GrayImage::from_raw(28, 28, d.image.to_vec()).expect("784 bytes");
            let mut buf = Cursor::new(Vec::new());
            DynamicImage::ImageLuma8(img)
                .write_to(&mut buf, ImageFormat::Png)
                .expect("png");
            buf.into_inner()
        })
        .collect();
    Ok((items, pngs))
}

/// Runs the benchmark and prints a Markdown table.
pub fn run(args: ServeBench) -> Result<(), String> {
    // One client thread: a closed loop of async clients needs no more, and every core it
    // leaves idle goes to the server being measured.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;
    let package = match &args.model_dir {
        Some(p) => p.clone(),
        None => {
            let dir = scratch.path().join("model");
            let device = Default::default();
            Flex::seed(&device, 1);
            let cfg = NetConfig::new();
            write_package(&dir, &net_package_config(&cfg), &cfg.init::<Flex>(&device)).map_err(|e| e.to_string())?;
            dir
        }
    };
    let (items, pngs) = digit_pngs(&args.data, 256)?;
    let good: Vec<Upload> = pngs.iter().cloned().map(Upload::good).collect();
    let digit = GrayImage::from_raw(28, 28, items[0].image.to_vec()).ok_or("a digit is not 28×28")?;
    let uploads = mix(&good, &hostile_uploads(&pngs[0], &digit), args.bad_share);
    let rss_every = Duration::from_secs_f64(args.rss_every_s.max(0.1));
    let window = Duration::from_secs_f64(args.seconds);
    // A soak's long levels need no longer a ceiling measurement than a short run's.
    let raw_window = window.min(Duration::from_secs(10));

    // The raw ceiling is measured before and after the load and the higher figure kept: on a
    // shared machine a single measurement can land in a slow moment, which would flatter the server.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let layouts = [WorkerLayout::new(1, cores), WorkerLayout::new(args.workers, cores)];
    let raw_before = best_raw_forward(&package, &items, args.max_batch, raw_window, &layouts)?;
    let samples = RefCell::new(Vec::new());
    let (results, ready_ms, rss, compare) = runtime.block_on(async {
        let server = start_server(&package, args.max_batch, args.workers, &args.serve_args).await?;
        let mut results = Vec::new();
        for &c in &args.concurrency {
            let before = server_latency_counts(&server.url).await;
            let cpu_before = CpuClock::now(server.child.id());
            let pid = server.child.id();
            let level_started = Instant::now();
            let sampler = async {
                loop {
                    tokio::time::sleep(rss_every).await;
                    samples.borrow_mut().push(RssSample {
                        concurrency: c,
                        seconds: level_started.elapsed().as_secs_f64(),
                        rss_mb: rss_mb(pid).0,
                    });
                }
            };
            let mut r = tokio::select! {
                r = drive(&server.url, "image", &uploads, c, window) => r?,
                _ = sampler => unreachable!("the sampler never ends"),
            };
            let cpu_after = CpuClock::now(server.child.id());
            let after = server_latency_counts(&server.url).await;
            r.server_share_under_20ms = Some((after.0 - before.0) / (after.1 - before.1).max(1.0));
            r.cpu_per_request = Some(cpu_before.per_request(&cpu_after, r.requests as f64));
            results.push(r);
        }
        let rss = rss_mb(server.child.id());
        let mut compare = Vec::new();
        if let Some(url) = &args.compare {
            for &c in &args.concurrency {
                compare.push(drive(url, "image", &uploads, c, window).await?);
            }
        }
        Ok::<_, String>((results, server.ready_ms, rss, compare))
    })?;
    let raw_after = best_raw_forward(&package, &items, args.max_batch, raw_window, &layouts)?;
    let raw = raw_before.max(raw_after);

    println!(
        "## kiln-bench serve ({} s per level, max batch {})\n",
        args.seconds, args.max_batch
    );
    println!(
        "raw forward (the best split of the cores): {raw:.0} images/s at batch {} (before the load {raw_before:.0}, after {raw_after:.0})",
        args.max_batch
    );
    println!(
        "kiln-serve ready (/health 200) {ready_ms:.0} ms after spawn; RSS {:.1} MB, peak {:.1} MB\n",
        rss.0, rss.1
    );
    let samples = samples.into_inner();
    print_rss_samples(&samples);
    println!(
        "| server | concurrency | req/s | vs raw forward | p50 ms | p90 ms | p99 ms | errors | refused as expected | server-side ≤ 20 ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let row = |name: &str, r: &LoadResult| {
        let share = r
            .server_share_under_20ms
            .map_or("-".to_string(), |s| format!("{:.1}%", s * 100.0));
        println!(
            "| {name} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {share} |",
            r.concurrency,
            r.requests_per_second,
            r.requests_per_second / raw,
            r.p50_ms,
            r.p90_ms,
            r.p99_ms,
            r.errors,
            r.refused_as_expected
        )
    };
    results.iter().for_each(|r| row("kiln-serve", r));
    compare.iter().for_each(|r| row("compared", r));
    print_cpu_table(&results, raw, cores);
    for (k, o) in results.iter().zip(&compare) {
        println!(
            "kiln/compared req/s at concurrency {}: {:.2}",
            k.concurrency,
            k.requests_per_second / o.requests_per_second
        );
    }
    let report = ServeReport {
        raw_forward_images_per_second: raw,
        raw_forward_before_load: raw_before,
        raw_forward_after_load: raw_after,
        max_batch: args.max_batch,
        ready_ms,
        rss_mb: rss.0,
        peak_rss_mb: rss.1,
        kiln: results,
        compared: compare,
        bad_share: args.bad_share,
        rss_samples: samples,
        threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    };
    crate::report::write(&args.json, &report)
}

/// The server's memory through each level: every sample, and the medians of its first and
/// second halves (equal within noise when memory is flat).
fn print_rss_samples(samples: &[RssSample]) {
    for (c, level) in rss_by_level(samples) {
        let mbs: Vec<String> = level.iter().map(|mb| format!("{mb:.0}")).collect();
        let (first, second) = level.split_at(level.len() / 2);
        let max = level.iter().copied().fold(f64::MIN, f64::max);
        println!(
            "RSS at concurrency {c}, MB, one sample each --rss-every-s: {}\n  median {:.1} MB in the first half, {:.1} MB in the second, max {max:.1} MB\n",
            mbs.join(" "),
            median(first),
            median(second)
        );
    }
}

/// Each level's memory samples in MB, for the levels with enough (4) to compare halves.
fn rss_by_level(samples: &[RssSample]) -> Vec<(usize, Vec<f64>)> {
    let mut levels: Vec<usize> = samples.iter().map(|s| s.concurrency).collect();
    levels.dedup();
    levels
        .into_iter()
        .map(|c| {
            let mb = samples.iter().filter(|s| s.concurrency == c).map(|s| s.rss_mb);
            (c, mb.collect::<Vec<f64>>())
        })
        .filter(|(_, level)| level.len() >= 4)
        .collect()
}

/// The median of `values` (NaN when empty).
fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Where each request's CPU went at every level, and the share of the raw forward
/// throughput the server could reach if its model ran as fast as in the raw measurement and
/// no core were ever idle: the raw forward's CPU per image over that plus the HTTP side's
/// and the load generator's CPU per request (all on the same `cores`).
fn print_cpu_table(results: &[LoadResult], raw: f64, cores: usize) {
    let raw_us = cores as f64 / raw * 1e6;
    println!("\nCPU per request, µs (the raw forward: {raw_us:.0} µs of CPU per image):\n");
    println!("| concurrency | model | HTTP side | load generator | idle | ceiling (no idle, model at raw speed) |");
    println!("|---|---|---|---|---|---|");
    for r in results {
        if let Some(c) = r.cpu_per_request {
            println!(
                "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} |",
                r.concurrency,
                c.model_us,
                c.http_us,
                c.client_us,
                c.idle_us,
                raw_us / (raw_us + c.http_us + c.client_us)
            );
        }
    }
}

/// The results file of `kiln-bench serve`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServeReport {
    /// The higher of the two raw forward measurements, images/s.
    pub raw_forward_images_per_second: f64,
    /// Raw forward images/s before the load.
    pub raw_forward_before_load: f64,
    /// Raw forward images/s after the load.
    pub raw_forward_after_load: f64,
    /// The server's --max-batch.
    pub max_batch: usize,
    /// Milliseconds from spawn to `/health` 200.
    pub ready_ms: f64,
    /// Resident memory of the server after the load, MB.
    pub rss_mb: f64,
    /// Peak resident memory of the server, MB.
    pub peak_rss_mb: f64,
    /// kiln-serve, one entry per concurrency level.
    pub kiln: Vec<LoadResult>,
    /// The `--compare` server, one entry per level (empty without `--compare`).
    pub compared: Vec<LoadResult>,
    /// Threads of this machine.
    pub threads: usize,
    /// Share of requests that carried a hostile upload.
    #[serde(default)]
    pub bad_share: f64,
    /// The server's resident memory, sampled through each level.
    #[serde(default)]
    pub rss_samples: Vec<RssSample>,
}

/// One sample of the server's resident memory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RssSample {
    /// The level's concurrency.
    pub concurrency: usize,
    /// Seconds since the level started.
    pub seconds: f64,
    /// Resident memory, MB.
    pub rss_mb: f64,
}

impl Report for ServeReport {
    const BENCH: &'static str = "serve";

    fn notes(&self) -> Vec<String> {
        let mut notes: Vec<String> = self
            .kiln
            .iter()
            .map(|r| {
                format!(
                    "concurrency {}: {} requests, p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, {} errors, {} hostile uploads refused as expected",
                    r.concurrency, r.requests, r.p50_ms, r.p90_ms, r.p99_ms, r.errors, r.refused_as_expected
                )
            })
            .collect();
        if self.bad_share > 0.0 {
            notes.push(format!(
                "{:.0}% of the requests carried a hostile upload",
                self.bad_share * 100.0
            ));
        }
        for (c, level) in rss_by_level(&self.rss_samples) {
            let (first, second) = level.split_at(level.len() / 2);
            notes.push(format!(
                "resident memory at concurrency {c}, {} samples: {:.0}–{:.0} MB, median {:.0} MB in the first half and {:.0} MB in the second",
                level.len(),
                level.iter().copied().fold(f64::MAX, f64::min),
                level.iter().copied().fold(f64::MIN, f64::max),
                median(first),
                median(second)
            ));
        }
        notes.push(format!(
            "ready {:.0} ms after spawn; resident {:.0} MB after the load, peak {:.0} MB",
            self.ready_ms, self.rss_mb, self.peak_rss_mb
        ));
        notes
    }

    fn chart(&self) -> BarChart {
        let mut series = vec!["kiln-serve".to_string()];
        if !self.compared.is_empty() {
            series.push("compared server".into());
        }
        let mut raw = vec![None; series.len()];
        raw[0] = Some(self.raw_forward_images_per_second);
        let mut groups = vec![(format!("raw batched forward, batch {} (no HTTP)", self.max_batch), raw)];
        for (i, k) in self.kiln.iter().enumerate() {
            let mut values = vec![Some(k.requests_per_second)];
            if !self.compared.is_empty() {
                values.push(self.compared.get(i).map(|c| c.requests_per_second));
            }
            groups.push((format!("concurrency {}", k.concurrency), values));
        }
        BarChart {
            title: format!("Serving MNIST digits on loopback ({} threads)", self.threads),
            unit: "requests/s; images/s for the raw forward (higher is better)".into(),
            series,
            groups,
        }
    }
}
