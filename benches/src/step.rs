//! `kiln-bench imagenet`: the ResNet training step of `kiln-train imagenet` (forward,
//! cross-entropy, backward, SGD with momentum and weight decay) and its evaluation forward, in
//! images per second, on random batches so only the model's speed is measured; with
//! `--compare-pytorch`, torchvision's same step (`benches/reference/resnet_step.py`) in the
//! same run, and the ratios.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, Optimizer, SgdConfig};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Distribution;
use clap::Args;
use kiln_models::{DeviceChoice, ResNetArch, ResNetConfig};
use serde::{Deserialize, Serialize};

use crate::chart::BarChart;
use crate::report::Report;

/// Flags of `kiln-bench imagenet`.
#[derive(Debug, Clone, Args)]
pub struct StepBench {
    /// Architectures to measure.
    #[arg(
        short = 'a',
        long = "arch",
        value_delimiter = ',',
        default_value = "resnet18,resnet50"
    )]
    archs: Vec<ResNetArch>,
    /// Images per step.
    #[arg(short = 'b', long = "batch-size", default_value_t = 32)]
    batch: usize,
    /// Square input side.
    #[arg(long = "image-size", default_value_t = 224)]
    image_size: usize,
    /// Classes of the classifier (1000 like ImageNet).
    #[arg(long, default_value_t = 1000)]
    classes: usize,
    /// Timed steps per measurement, after one warm-up step.
    #[arg(long, default_value_t = 3)]
    steps: usize,
    /// Measurements of each side, alternating kiln and PyTorch; each figure is the best of its
    /// side's rounds (on a shared machine speed drifts by tens of percent within minutes).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Device: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// Also run torchvision's step with the local python3 (needs torch and torchvision).
    #[arg(long = "compare-pytorch")]
    pub(crate) compare_pytorch: bool,
    /// The PyTorch reference script.
    #[arg(long, default_value = "benches/reference/resnet_step.py")]
    reference: PathBuf,
    /// Where to write the JSON results.
    #[arg(long, default_value = "bench-imagenet.json")]
    pub(crate) json: PathBuf,
}

/// One architecture's figures, from kiln or from the reference.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepResult {
    /// Architecture name.
    pub arch: String,
    /// Images per step.
    pub batch: usize,
    /// Device it ran on.
    pub device: String,
    /// Training-step throughput.
    pub train_images_per_second: f64,
    /// Evaluation-forward throughput.
    pub eval_images_per_second: f64,
}

impl StepResult {
    /// Each throughput the higher of `self`'s and `other`'s.
    fn best_of(self, other: StepResult) -> StepResult {
        StepResult {
            train_images_per_second: self.train_images_per_second.max(other.train_images_per_second),
            eval_images_per_second: self.eval_images_per_second.max(other.eval_images_per_second),
            ..self
        }
    }
}

/// kiln's figures and, with `--compare-pytorch`, the reference's, one row per architecture.
pub type Rows = Vec<(StepResult, Option<StepResult>)>;

/// Runs the benchmark and prints a Markdown table.
pub fn run(args: StepBench) -> Result<(), String> {
    let rows = measure_all(&args)?;
    print_table(&rows, args.compare_pytorch);
    let report = StepReport {
        threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        image_size: args.image_size,
        results: rows
            .into_iter()
            .map(|(kiln, pytorch)| StepPair { kiln, pytorch })
            .collect(),
    };
    crate::report::write(&args.json, &report)
}

/// One architecture's figures in a results file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepPair {
    /// kiln's figures.
    pub kiln: StepResult,
    /// The reference's figures, when it ran.
    pub pytorch: Option<StepResult>,
}

/// The results file of `kiln-bench imagenet`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepReport {
    /// Threads available to each side.
    pub threads: usize,
    /// Square input side.
    pub image_size: usize,
    /// One entry per architecture.
    pub results: Vec<StepPair>,
}

impl Report for StepReport {
    const BENCH: &'static str = "imagenet";

    fn chart(&self) -> BarChart {
        let groups = self.results.iter().flat_map(|p| {
            let k = &p.kiln;
            let head = format!("{} b{} on {}", k.arch, k.batch, k.device);
            let t = p.pytorch.as_ref();
            [
                (
                    format!("{head}: train step"),
                    vec![Some(k.train_images_per_second), t.map(|t| t.train_images_per_second)],
                ),
                (
                    format!("{head}: eval forward"),
                    vec![Some(k.eval_images_per_second), t.map(|t| t.eval_images_per_second)],
                ),
            ]
        });
        BarChart {
            title: format!(
                "ResNet at {0}×{0}: kiln vs torchvision ({1} threads)",
                self.image_size, self.threads
            ),
            unit: "images/s (higher is better)".into(),
            series: vec!["kiln".into(), "PyTorch".into()],
            groups: groups.collect(),
        }
    }
}

/// Measures every `--arch` with kiln and, when asked, with the PyTorch reference.
pub fn measure_all(args: &StepBench) -> Result<Rows, String> {
    let device = args.device.resolve(false, cfg!(feature = "cuda"))?;
    let mut rows = Vec::new();
    for &arch in &args.archs {
        let mut best: Option<(StepResult, Option<StepResult>)> = None;
        for round in 1..=args.rounds {
            let kiln = match device {
                #[cfg(feature = "cuda")]
                DeviceChoice::Cuda(i) => measure::<burn::backend::Autodiff<burn::backend::Cuda>>(
                    args,
                    arch,
                    &burn::backend::cuda::CudaDevice::new(i),
                    device,
                ),
                _ => measure::<burn::backend::Autodiff<burn::backend::Flex>>(args, arch, &Default::default(), device),
            };
            eprintln!("kiln    {arch} round {round}: {kiln:?}");
            let torch = args
                .compare_pytorch
                .then(|| reference(args, arch, device))
                .transpose()?
                .flatten();
            if let Some(t) = &torch {
                eprintln!("pytorch {arch} round {round}: {t:?}");
            }
            best = Some(match best {
                None => (kiln, torch),
                Some((best_kiln, best_torch)) => (
                    best_kiln.best_of(kiln),
                    match (best_torch, torch) {
                        (Some(a), Some(b)) => Some(a.best_of(b)),
                        (a, b) => a.or(b),
                    },
                ),
            });
        }
        rows.extend(best);
    }
    Ok(rows)
}

/// kiln's train-step and eval-forward throughput for `arch` on backend `B`.
fn measure<B: AutodiffBackend>(
    args: &StepBench,
    arch: ResNetArch,
    device: &B::Device,
    choice: DeviceChoice,
) -> StepResult {
    B::seed(device, 0);
    let mut model = ResNetConfig::new(arch, args.classes).init::<B>(device);
    let shape = [args.batch, 3, args.image_size, args.image_size];
    let x = Tensor::<B, 4>::random(shape, Distribution::Normal(0.0, 1.0), device);
    let y = Tensor::<B, 1, Int>::from_data(
        TensorData::new(
            (0..args.batch as i64).map(|i| i % args.classes as i64).collect(),
            [args.batch],
        ),
        device,
    );
    let criterion = CrossEntropyLossConfig::new().init(device);
    let mut optim = SgdConfig::new()
        .with_momentum(Some(MomentumConfig {
            momentum: 0.9,
            dampening: 0.0,
            nesterov: false,
        }))
        .with_weight_decay(Some(WeightDecayConfig::new(1e-4)))
        .init::<B, kiln_models::ResNet<B>>();
    let mut train_step = || {
        let loss = criterion.forward(model.forward(x.clone()), y.clone());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(0.1, model.clone(), grads);
        let _: f32 = loss.into_scalar().elem();
    };
    let train = per_step_seconds(args.steps, &mut train_step);
    // Evaluated as `kiln-train imagenet` validates and kiln-serve serves: BatchNorms folded.
    let eval_model = model.valid().fold_batch_norms();
    let x_eval = x.inner();
    let mut eval_step = || {
        let _ = eval_model.forward(x_eval.clone()).argmax(1).into_data();
    };
    let eval = per_step_seconds(args.steps, &mut eval_step);
    StepResult {
        arch: arch.to_string(),
        batch: args.batch,
        device: choice.to_string(),
        train_images_per_second: args.batch as f64 / train,
        eval_images_per_second: args.batch as f64 / eval,
    }
}

/// Mean seconds of `step` over `steps` runs after one warm-up run.
pub(crate) fn per_step_seconds(steps: usize, step: &mut dyn FnMut()) -> f64 {
    step();
    let started = Instant::now();
    for _ in 0..steps {
        step();
    }
    started.elapsed().as_secs_f64() / steps as f64
}

/// torchvision's figures from the reference script, or `None` (said on stderr) when the local
/// python3 cannot import torch.
fn reference(args: &StepBench, arch: ResNetArch, device: DeviceChoice) -> Result<Option<StepResult>, String> {
    let torch_device = match device {
        DeviceChoice::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".into(),
    };
    let mut cmd = Command::new("python3");
    cmd.arg(&args.reference)
        .args(["-a", &arch.to_string(), "-b", &args.batch.to_string()])
        .args([
            "--steps",
            &args.steps.to_string(),
            "--image-size",
            &args.image_size.to_string(),
        ])
        .args(["--classes", &args.classes.to_string(), "--device", &torch_device]);
    let Some(lines) = crate::reference::json_lines(cmd)? else {
        return Ok(None);
    };
    let line = lines.last().map_or("", String::as_str);
    let mut result: StepResult = serde_json::from_str(line).map_err(|e| format!("reference output {line:?}: {e}"))?;
    result.device = torch_device;
    Ok(Some(result))
}

fn print_table(rows: &[(StepResult, Option<StepResult>)], compare: bool) {
    if compare {
        println!("| arch | batch | device | kiln train img/s | PyTorch train img/s | ratio | kiln eval img/s | PyTorch eval img/s | ratio |");
        println!("|---|---|---|---|---|---|---|---|---|");
    } else {
        println!("| arch | batch | device | kiln train img/s | kiln eval img/s |");
        println!("|---|---|---|---|---|");
    }
    for (k, t) in rows {
        let head = format!(
            "| {} | {} | {} | {:.1}",
            k.arch, k.batch, k.device, k.train_images_per_second
        );
        match (compare, t) {
            (false, _) => println!("{head} | {:.1} |", k.eval_images_per_second),
            (true, Some(t)) => println!(
                "{head} | {:.1} | {:.2}× | {:.1} | {:.1} | {:.2}× |",
                t.train_images_per_second,
                k.train_images_per_second / t.train_images_per_second,
                k.eval_images_per_second,
                t.eval_images_per_second,
                k.eval_images_per_second / t.eval_images_per_second
            ),
            (true, None) => println!("{head} | n/a | n/a | {:.1} | n/a | n/a |", k.eval_images_per_second),
        }
    }
}
