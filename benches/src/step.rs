//! `kiln-bench imagenet`: the ResNet training step of `kiln-train imagenet` (forward,
//! cross-entropy, backward, SGD with momentum and weight decay) and its evaluation forward, in
//! images per second, on random batches so only the model's speed is measured; with
//! `--compare-pytorch`, torchvision's same step (`benches/reference/resnet_step.py`) in the
//! same run, and the ratios. The pieces every such step bench shares (flags, rounds, the
//! reference run, table and chart) are here too; `kiln-bench swin` uses them.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Distribution;
use clap::Args;
use kiln_models::{DeviceChoice, ResNetArch, ResNetConfig};
use kiln_train::optim::SgdConfig;
use serde::{Deserialize, Serialize};

use crate::chart::BarChart;
use crate::report::Report;
use crate::results::figure;

/// The flags every step bench takes (`kiln-bench imagenet`, `documented`, `swin`); a bench
/// changes a default with `#[command(mut_arg(...))]`.
#[derive(Debug, Clone, Args)]
pub struct StepFlags {
    /// Images per step.
    #[arg(short = 'b', long = "batch-size", default_value_t = 32)]
    pub(crate) batch: usize,
    /// Square input side.
    #[arg(long = "image-size", default_value_t = 224)]
    pub(crate) image_size: usize,
    /// Classes of the classifier (1000 like ImageNet).
    #[arg(long, default_value_t = 1000)]
    pub(crate) classes: usize,
    /// Timed steps per measurement, after one warm-up step.
    #[arg(long, default_value_t = 3)]
    pub(crate) steps: usize,
    /// Measurements of each side, alternating kiln and PyTorch; each figure is the best of its
    /// side's rounds (on a shared machine speed drifts by tens of percent within minutes).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) rounds: u32,
    /// Device: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub(crate) device: DeviceChoice,
    /// Also run the PyTorch reference (`--reference`) with `--python`, on the same device;
    /// without torch the bench says so and reports kiln alone.
    #[arg(long = "compare-pytorch")]
    pub(crate) compare_pytorch: bool,
    /// The Python interpreter that runs the reference.
    #[arg(long, default_value = "python3")]
    pub(crate) python: PathBuf,
    /// The PyTorch reference script.
    #[arg(long, default_value = "benches/reference/resnet_step.py")]
    pub(crate) reference: PathBuf,
    /// Where to write the JSON results.
    #[arg(long, default_value = "bench-imagenet.json")]
    pub(crate) json: PathBuf,
}

impl StepFlags {
    /// The arguments every reference script takes: batch, steps, input side, classes.
    pub(crate) fn reference_args(&self) -> Vec<String> {
        [
            ("--batch-size", self.batch),
            ("--steps", self.steps),
            ("--image-size", self.image_size),
            ("--classes", self.classes),
        ]
        .into_iter()
        .flat_map(|(flag, value)| [flag.to_string(), value.to_string()])
        .collect()
    }
}

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
    /// Batch, input, device, rounds, the reference and the results file.
    #[command(flatten)]
    pub(crate) flags: StepFlags,
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
    /// The implementation the reference ran, where it says (`kiln-bench swin`'s: the official
    /// repository's model or timm's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Seconds of kiln's first training step and first evaluation forward, before the timed
    /// ones: on a GPU they include compiling and autotuning kernels not yet cached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_step_seconds: Option<[f64; 2]>,
}

impl StepResult {
    /// "first step X s against Y s warm" for the training step and the evaluation forward,
    /// where kiln measured them.
    pub(crate) fn first_run_note(&self) -> Option<String> {
        let head = format!("{} b{} on {}", self.arch, self.batch, self.device);
        let per_second = [self.train_images_per_second, self.eval_images_per_second];
        Some(first_run_note(&head, self.batch, per_second, self.first_step_seconds?))
    }

    /// Each throughput the higher of `self`'s and `other`'s.
    fn best_of(self, other: StepResult) -> StepResult {
        StepResult {
            train_images_per_second: self.train_images_per_second.max(other.train_images_per_second),
            eval_images_per_second: self.eval_images_per_second.max(other.eval_images_per_second),
            ..self
        }
    }
}

/// `head: first training step X s against Y s warm, first evaluation …` from the first
/// steps' seconds and the steady images per second of `batch`-image steps.
pub(crate) fn first_run_note(
    head: &str,
    batch: usize,
    [train_ips, eval_ips]: [f64; 2],
    [train, eval]: [f64; 2],
) -> String {
    format!(
        "{head}: first training step {train:.3} s against {:.3} s warm, first evaluation {eval:.3} s against {:.3} s",
        batch as f64 / train_ips,
        batch as f64 / eval_ips,
    )
}

/// kiln's figures and, with `--compare-pytorch`, the reference's, one row per architecture.
pub type Rows = Vec<(StepResult, Option<StepResult>)>;

/// Runs the benchmark and prints a Markdown table.
pub fn run(args: StepBench) -> Result<(), String> {
    let rows = measure_all(&args)?;
    print_table(&rows, args.flags.compare_pytorch);
    let report = StepReport {
        threads: threads(),
        image_size: args.flags.image_size,
        results: pairs(rows),
    };
    crate::report::write(&args.flags.json, &report)
}

/// The threads this process may run on (each side's default).
pub(crate) fn threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// One architecture's figures in a results file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepPair {
    /// kiln's figures.
    pub kiln: StepResult,
    /// The reference's figures, when it ran.
    pub pytorch: Option<StepResult>,
}

/// `rows` as a results file holds them.
pub(crate) fn pairs(rows: Rows) -> Vec<StepPair> {
    rows.into_iter()
        .map(|(kiln, pytorch)| StepPair { kiln, pytorch })
        .collect()
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

    fn notes(&self) -> Vec<String> {
        self.results.iter().filter_map(|p| p.kiln.first_run_note()).collect()
    }

    fn chart(&self) -> BarChart {
        BarChart {
            title: format!(
                "ResNet at {0}×{0}: kiln vs torchvision ({1} threads)",
                self.image_size, self.threads
            ),
            ..step_chart(&self.results)
        }
    }
}

/// The bars of step results, kiln beside PyTorch: train step and eval forward per entry (the
/// caller gives the title).
pub(crate) fn step_chart<'a>(results: impl IntoIterator<Item = &'a StepPair>) -> BarChart {
    let groups = results.into_iter().flat_map(|p| {
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
        title: String::new(),
        unit: "images/s (higher is better)".into(),
        series: vec!["kiln".into(), "PyTorch".into()],
        groups: groups.collect(),
    }
}

/// A kiln training step and evaluation forward that [`on_device`] measures.
pub(crate) trait KilnStep {
    /// kiln's figures on backend `B`, on `device` (`choice` in words).
    fn measure<B: AutodiffBackend>(&self, device: &B::Device, choice: DeviceChoice) -> StepResult;
}

/// `step` measured on the resolved device: burn's CUDA backend for a GPU, burn-flex otherwise.
pub(crate) fn on_device(step: &impl KilnStep, choice: DeviceChoice) -> StepResult {
    match choice {
        #[cfg(feature = "cuda")]
        DeviceChoice::Cuda(i) => step
            .measure::<burn::backend::Autodiff<burn::backend::Cuda>>(&burn::backend::cuda::CudaDevice::new(i), choice),
        _ => step.measure::<burn::backend::Autodiff<burn::backend::Flex>>(&Default::default(), choice),
    }
}

/// `flags.rounds` measurements of kiln (`kiln`) and, with `--compare-pytorch`, of the
/// reference (`torch`), alternating, each side's best throughputs kept; `name` labels the
/// progress lines on stderr.
pub(crate) fn best_of_rounds(
    flags: &StepFlags,
    name: &str,
    kiln: impl Fn() -> StepResult,
    torch: impl Fn() -> Result<Option<StepResult>, String>,
) -> Result<(StepResult, Option<StepResult>), String> {
    let mut best: Option<(StepResult, Option<StepResult>)> = None;
    for round in 1..=flags.rounds {
        let kiln = kiln();
        eprintln!("kiln    {name} round {round}: {kiln:?}");
        let torch = if flags.compare_pytorch { torch()? } else { None };
        if let Some(t) = &torch {
            eprintln!("pytorch {name} round {round}: {t:?}");
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
    Ok(best.expect("at least one round"))
}

/// Measures every `--arch` with kiln and, when asked, with the PyTorch reference.
pub fn measure_all(args: &StepBench) -> Result<Rows, String> {
    let device = args.flags.device.resolve(false, cfg!(feature = "cuda"))?;
    args.archs
        .iter()
        .map(|&arch| {
            let step = ResNetStep { args, arch };
            let torch_args = ["-a".to_string(), arch.to_string()];
            best_of_rounds(
                &args.flags,
                &arch.to_string(),
                || on_device(&step, device),
                || reference(&args.flags, &torch_args, device),
            )
        })
        .collect()
}

/// The ResNet step of one architecture.
struct ResNetStep<'a> {
    args: &'a StepBench,
    arch: ResNetArch,
}

impl KilnStep for ResNetStep<'_> {
    /// kiln's train-step and eval-forward throughput for the architecture on backend `B`.
    fn measure<B: AutodiffBackend>(&self, device: &B::Device, choice: DeviceChoice) -> StepResult {
        let args = &self.args.flags;
        B::seed(device, 0);
        let mut model = ResNetConfig::new(self.arch, args.classes).init::<B>(device);
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
        // kiln-train imagenet's optimizer with main.py's defaults.
        let mut optim = SgdConfig::torch(0.9, 1e-4).init::<B, kiln_models::ResNet<B>>();
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
        throughput(self.arch.to_string(), args.batch, choice, [train, eval])
    }
}

/// kiln's figures from the seconds of one train step and one eval forward of `batch` images.
pub(crate) fn throughput(
    arch: String,
    batch: usize,
    choice: DeviceChoice,
    [train, eval]: [StepSeconds; 2],
) -> StepResult {
    StepResult {
        arch,
        batch,
        device: choice.to_string(),
        train_images_per_second: batch as f64 / train.steady,
        eval_images_per_second: batch as f64 / eval.steady,
        source: None,
        first_step_seconds: Some([train.first, eval.first]),
    }
}

/// A step's first run and its mean over the timed runs after it, in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct StepSeconds {
    /// The first (warm-up) run: on a GPU it compiles and autotunes the kernels it meets.
    pub first: f64,
    /// The mean of the `steps` runs after it.
    pub steady: f64,
}

/// `step` run once (timed apart), then `steps` times.
pub(crate) fn per_step_seconds(steps: usize, step: &mut dyn FnMut()) -> StepSeconds {
    let started = Instant::now();
    step();
    let first = started.elapsed().as_secs_f64();
    let started = Instant::now();
    for _ in 0..steps {
        step();
    }
    StepSeconds {
        first,
        steady: started.elapsed().as_secs_f64() / steps as f64,
    }
}

/// PyTorch's name of the device kiln measured on.
fn torch_device(device: DeviceChoice) -> String {
    match device {
        DeviceChoice::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".into(),
    }
}

/// The reference's figures: `flags.reference` run by `flags.python` with `extra` and the
/// common arguments, on `device`; `None` (said on stderr) when it cannot run (no torch).
pub(crate) fn reference(
    flags: &StepFlags,
    extra: &[String],
    device: DeviceChoice,
) -> Result<Option<StepResult>, String> {
    let torch_device = torch_device(device);
    let mut cmd = Command::new(&flags.python);
    cmd.arg(&flags.reference)
        .args(extra)
        .args(flags.reference_args())
        .args(["--device", &torch_device]);
    let Some(lines) = crate::reference::json_lines(cmd)? else {
        return Ok(None);
    };
    parse_reference(lines.last().map_or("", String::as_str), &torch_device).map(Some)
}

/// The figures of the reference's last JSON line, on `torch_device`.
pub(crate) fn parse_reference(line: &str, torch_device: &str) -> Result<StepResult, String> {
    let mut result: StepResult = serde_json::from_str(line).map_err(|e| format!("reference output {line:?}: {e}"))?;
    result.device = torch_device.into();
    Ok(result)
}

/// The Markdown table of `rows`, with the reference's columns and the ratios when `compare`.
pub(crate) fn print_table(rows: &[(StepResult, Option<StepResult>)], compare: bool) {
    if compare {
        println!("| arch | batch | device | kiln train img/s | PyTorch train img/s | ratio | kiln eval img/s | PyTorch eval img/s | ratio |");
        println!("|---|---|---|---|---|---|---|---|---|");
    } else {
        println!("| arch | batch | device | kiln train img/s | kiln eval img/s |");
        println!("|---|---|---|---|---|");
    }
    for (k, t) in rows {
        let f = figure;
        let head = format!(
            "| {} | {} | {} | {}",
            k.arch,
            k.batch,
            k.device,
            f(k.train_images_per_second)
        );
        match (compare, t) {
            (false, _) => println!("{head} | {} |", f(k.eval_images_per_second)),
            (true, Some(t)) => println!(
                "{head} | {} | {}× | {} | {} | {}× |",
                f(t.train_images_per_second),
                f(k.train_images_per_second / t.train_images_per_second),
                f(k.eval_images_per_second),
                f(t.eval_images_per_second),
                f(k.eval_images_per_second / t.eval_images_per_second)
            ),
            (true, None) => println!("{head} | n/a | n/a | {} | n/a | n/a |", f(k.eval_images_per_second)),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The reference's JSON line reads as its figures, on the device kiln ran on, with the
    /// implementation it names; a line that is not its JSON is an error that quotes it.
    #[test]
    fn reference_lines_parse_with_the_device_kiln_used() {
        let line = r#"{"arch": "swin-tiny", "batch": 8, "device": "cpu", "train_images_per_second": 1.5, "eval_images_per_second": 6.25, "threads": 2, "source": "timm 0.4.12"}"#;
        let r = parse_reference(line, "cuda:1").unwrap();
        assert_eq!(
            (r.arch.as_str(), r.batch, r.device.as_str()),
            ("swin-tiny", 8, "cuda:1")
        );
        assert_eq!((r.train_images_per_second, r.eval_images_per_second), (1.5, 6.25));
        assert_eq!(r.source.as_deref(), Some("timm 0.4.12"));
        let resnet = r#"{"arch": "resnet18", "batch": 4, "device": "cpu", "train_images_per_second": 2.0, "eval_images_per_second": 3.0}"#;
        assert_eq!(parse_reference(resnet, "cpu").unwrap().source, None);
        let err = parse_reference("{\"arch\": 3}", "cpu").unwrap_err();
        assert!(err.contains("reference output \"{\\\"arch\\\": 3}\""), "{err}");
    }

    /// Rounds keep each side's best train and eval figure, which may come from different
    /// rounds; without --compare-pytorch the reference is never run.
    #[test]
    fn rounds_keep_each_sides_best() {
        use std::cell::Cell;
        let flags = StepFlags {
            rounds: 3,
            compare_pytorch: true,
            ..test_flags()
        };
        let figures = [(2.0, 9.0), (3.0, 7.0), (1.0, 8.0)];
        let round = Cell::new(0);
        let result = |(train, eval): (f64, f64)| StepResult {
            arch: "a".into(),
            batch: 1,
            device: "cpu".into(),
            train_images_per_second: train,
            eval_images_per_second: eval,
            source: None,
            first_step_seconds: None,
        };
        let kiln = || {
            round.set(round.get() + 1);
            result(figures[round.get() - 1])
        };
        let torch = || {
            let (train, eval) = figures[round.get() - 1];
            Ok(Some(result((eval, train))))
        };
        let (k, t) = best_of_rounds(&flags, "a", kiln, torch).unwrap();
        assert_eq!((k.train_images_per_second, k.eval_images_per_second), (3.0, 9.0));
        let t = t.unwrap();
        assert_eq!((t.train_images_per_second, t.eval_images_per_second), (9.0, 3.0));
        let flags = StepFlags {
            compare_pytorch: false,
            ..flags
        };
        let (_, t) = best_of_rounds(&flags, "a", || result((1.0, 1.0)), || panic!("ran the reference")).unwrap();
        assert!(t.is_none());
    }

    /// The defaults of `kiln-bench imagenet`'s common flags.
    pub(crate) fn test_flags() -> StepFlags {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            flags: StepFlags,
        }
        <Cli as clap::Parser>::parse_from(["kiln-bench"]).flags
    }
}
