//! `kiln-bench swin`: the training step of `kiln-train swin` (forward, soft-target
//! cross-entropy on mixed, smoothed targets, backward, gradient clipping at norm 5, AdamW with
//! the official weight-decay grouping) and its evaluation forward, in images per second on a
//! fixed random batch so only the model's speed is measured; with `--compare-pytorch`, the same
//! step of the official PyTorch model (`benches/reference/swin_step.py`: microsoft/
//! Swin-Transformer's `models/swin_transformer.py` with `--swin-repo`, timm's otherwise) in the
//! same run, and the ratios. With `--train-images`, 10 epochs projected beside the guide's
//! Table 4-2 Swin-Transformer row (ImageNet-21K on one V100), whose image count the guide does
//! not give.

use std::fmt;
use std::path::PathBuf;

use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Distribution;
use clap::{Args, ValueEnum};
use kiln_models::swin::takes_weight_decay;
use kiln_models::{DeviceChoice, SwinConfig, SwinTransformer};
use kiln_train::jobs::swin::targets::{mixup_targets, soft_target_cross_entropy};
use kiln_train::optim::{clip_grad_norm, DecayGroup};
use serde::{Deserialize, Serialize};

use crate::chart::BarChart;
use crate::documented::{hms, projected, DOCUMENTED_EPOCHS};
use crate::report::Report;
use crate::step::{
    best_of_rounds, on_device, pairs, per_step_seconds, print_table, reference, step_chart, threads, throughput,
    KilnStep, StepFlags, StepPair, StepResult,
};

/// The learning rate of every step (the guide's config's `BASE_LR`; the value does not change
/// the speed).
const LR: f64 = 1.25e-4;
/// AdamW's weight decay (`TRAIN.WEIGHT_DECAY`).
const WEIGHT_DECAY: f64 = 0.05;
/// The gradient norm clipped to (`TRAIN.CLIP_GRAD`).
const CLIP_GRAD: f64 = 5.0;
/// The targets' mixing weight (the job draws one per batch from its Mixup/CutMix).
const MIX_LAM: f64 = 0.7;
/// `MODEL.LABEL_SMOOTHING`.
const SMOOTHING: f64 = 0.1;
/// The guide's Table 4-2: Swin-Transformer (Swin-B, `swin_base_patch4_window7_224_22k.yaml`),
/// ImageNet-21K, 10 epochs on 1 × V100, in seconds (197:25:03).
pub(crate) const DOCUMENTED_SECONDS: f64 = 197.0 * 3600.0 + 25.0 * 60.0 + 3.0;

/// A Swin Transformer size, as the official configs name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SwinSize {
    /// Swin-T: embed 96, depths 2/2/6/2.
    Tiny,
    /// Swin-S: embed 96, depths 2/2/18/2.
    Small,
    /// Swin-B: embed 128, depths 2/2/18/2 (the guide's job).
    Base,
    /// Swin-L: embed 192, depths 2/2/18/2.
    Large,
}

impl SwinSize {
    /// The model's shape with `classes` outputs.
    pub fn config(self, classes: usize) -> SwinConfig {
        match self {
            Self::Tiny => SwinConfig::tiny(classes),
            Self::Small => SwinConfig::small(classes),
            Self::Base => SwinConfig::base(classes),
            Self::Large => SwinConfig::large(classes),
        }
    }

    /// `MODEL.DROP_PATH_RATE` of the official ImageNet-22K config
    /// (`configs/swin/swin_<size>_patch4_window7_224_22k.yaml`), the kind of job the guide runs.
    pub fn drop_path_22k(self) -> f64 {
        match self {
            Self::Tiny => 0.1,
            Self::Small | Self::Base | Self::Large => 0.2,
        }
    }

    /// The size's name (`tiny`), as the reference script takes it.
    fn name(self) -> &'static str {
        match self {
            Self::Tiny => "tiny",
            Self::Small => "small",
            Self::Base => "base",
            Self::Large => "large",
        }
    }
}

impl fmt::Display for SwinSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "swin-{}", self.name())
    }
}

/// Flags of `kiln-bench swin`. The defaults (batch 8, 2 timed steps) run Swin-T on a 2-core
/// CPU in about a minute a round and side.
#[derive(Debug, Clone, Args)]
#[command(
    mut_arg("batch", |a| a.default_value("8")),
    mut_arg("steps", |a| a.default_value("2")),
    mut_arg("reference", |a| a.default_value("benches/reference/swin_step.py")),
    mut_arg("json", |a| a.default_value("bench-swin.json"))
)]
pub struct SwinBench {
    /// Sizes to measure.
    #[arg(short = 'm', long = "model", value_delimiter = ',', default_value = "tiny")]
    models: Vec<SwinSize>,
    /// Window side (`MODEL.SWIN.WINDOW_SIZE`).
    #[arg(long, default_value_t = 7)]
    window: usize,
    /// Stochastic depth of the last block (`MODEL.DROP_PATH_RATE`), on both sides [default:
    /// the size's official ImageNet-22K config: tiny 0.1, the others 0.2].
    #[arg(long = "drop-path")]
    drop_path: Option<f64>,
    /// The official microsoft/Swin-Transformer checkout (or its `models/swin_transformer.py`)
    /// whose model the reference runs; timm's model without it.
    #[arg(long = "swin-repo")]
    swin_repo: Option<PathBuf>,
    /// Training images per epoch, to project the guide's 10 epochs (the guide does not give
    /// ImageNet-21K's count; nothing is projected without it).
    #[arg(long = "train-images")]
    train_images: Option<usize>,
    /// Validation images per epoch, for the projection.
    #[arg(long = "val-images", default_value_t = 0)]
    val_images: usize,
    /// Batch, input, device, rounds, the reference and the results file.
    #[command(flatten)]
    flags: StepFlags,
}

impl SwinBench {
    /// The drop-path rate of `size` both sides run.
    fn drop_path(&self, size: SwinSize) -> f64 {
        self.drop_path.unwrap_or_else(|| size.drop_path_22k())
    }

    /// The shape kiln builds for `size`.
    fn config(&self, size: SwinSize) -> SwinConfig {
        SwinConfig {
            img_size: self.flags.image_size,
            window_size: self.window,
            drop_path_rate: self.drop_path(size),
            ..size.config(self.flags.classes)
        }
    }

    /// The reference's own arguments for `size` (the common ones come from [`StepFlags`]).
    fn torch_args(&self, size: SwinSize) -> Vec<String> {
        let mut args: Vec<String> = [
            ("--model", size.name().to_string()),
            ("--window", self.window.to_string()),
            ("--drop-path", self.drop_path(size).to_string()),
            ("--lr", LR.to_string()),
            ("--weight-decay", WEIGHT_DECAY.to_string()),
            ("--clip-grad", CLIP_GRAD.to_string()),
            ("--mix-lam", MIX_LAM.to_string()),
            ("--smoothing", SMOOTHING.to_string()),
        ]
        .into_iter()
        .flat_map(|(flag, value)| [flag.to_string(), value])
        .collect();
        if let Some(repo) = &self.swin_repo {
            args.extend(["--swin-repo".to_string(), repo.display().to_string()]);
        }
        args
    }

    /// Seconds for the guide's 10 epochs at `r`'s speed, with `--train-images`.
    fn projection(&self, r: &StepResult) -> Option<f64> {
        self.train_images
            .map(|train| projected(train, self.val_images, DOCUMENTED_EPOCHS, r))
    }
}

/// One size's figures in a results file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SwinEntry {
    /// kiln's and the reference's figures.
    #[serde(flatten)]
    pub pair: StepPair,
    /// The drop-path rate both sides ran.
    pub drop_path_rate: f64,
    /// kiln's projected seconds for the guide's 10 epochs, with `--train-images`.
    pub kiln_projected_seconds: Option<f64>,
    /// The reference's projected seconds, with `--train-images` when it ran.
    pub pytorch_projected_seconds: Option<f64>,
}

/// The results file of `kiln-bench swin`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SwinReport {
    /// Threads available to each side.
    pub threads: usize,
    /// Square input side.
    pub image_size: usize,
    /// Window side.
    pub window: usize,
    /// Training images per epoch of the projection, when given.
    pub train_images: Option<usize>,
    /// Validation images per epoch of the projection.
    pub val_images: usize,
    /// One entry per size.
    pub results: Vec<SwinEntry>,
}

impl Report for SwinReport {
    const BENCH: &'static str = "swin";

    fn chart(&self) -> BarChart {
        BarChart {
            title: format!(
                "Swin at {0}×{0}, window {1}: kiln vs the official PyTorch model ({2} threads)",
                self.image_size, self.window, self.threads
            ),
            ..step_chart(self.results.iter().map(|e| &e.pair))
        }
    }

    fn notes(&self) -> Vec<String> {
        self.results
            .iter()
            .map(|e| {
                let k = &e.pair.kiln;
                let source = e.pair.pytorch.as_ref().and_then(|t| t.source.as_deref());
                let mut note = format!(
                    "{} b{}: drop path {}; reference model: {}",
                    k.arch,
                    k.batch,
                    e.drop_path_rate,
                    source.unwrap_or("none")
                );
                if let (Some(train), Some(kiln)) = (self.train_images, e.kiln_projected_seconds) {
                    note += &format!(
                        "; {DOCUMENTED_EPOCHS} epochs of {train} train + {} val images: kiln {}, PyTorch {} \
                         (the guide's Table 4-2, Swin-B on ImageNet-21K, 1 × V100: {})",
                        self.val_images,
                        hms(kiln),
                        e.pytorch_projected_seconds.map_or("n/a".into(), hms),
                        hms(DOCUMENTED_SECONDS)
                    );
                }
                if let Some(first) = k.first_run_note() {
                    note += &format!("; {first}");
                }
                note
            })
            .collect()
    }
}

/// Runs the benchmark, prints a Markdown table (and the projection) and writes the results.
pub fn run(args: SwinBench) -> Result<(), String> {
    for &size in &args.models {
        args.config(size)
            .validate()
            .map_err(|e| format!("{size} at --image-size {}: {e}", args.flags.image_size))?;
    }
    if args.flags.batch == 0 || args.flags.steps == 0 {
        return Err("--batch-size and --steps must be at least 1".into());
    }
    let device = args.flags.device.resolve(false, cfg!(feature = "cuda"))?;
    let rows = args
        .models
        .iter()
        .map(|&size| {
            let step = SwinStep {
                config: args.config(size),
                name: size.to_string(),
                flags: &args.flags,
            };
            best_of_rounds(
                &args.flags,
                &step.name,
                || on_device(&step, device),
                || reference(&args.flags, &args.torch_args(size), device),
            )
        })
        .collect::<Result<Vec<_>, String>>()?;
    print_table(&rows, args.flags.compare_pytorch);
    match args.train_images {
        Some(train) => {
            println!(
                "\n{DOCUMENTED_EPOCHS} epochs of {train} train + {} val images at these speeds:\n",
                args.val_images
            );
            println!(
                "| size | device | kiln projected | PyTorch projected | the guide (Swin-B, ImageNet-21K, 1 × V100) |"
            );
            println!("|---|---|---|---|---|");
            for (k, t) in &rows {
                let torch = t.as_ref().and_then(|t| args.projection(t));
                println!(
                    "| {} b{} | {} | {} | {} | {} |",
                    k.arch,
                    k.batch,
                    k.device,
                    args.projection(k).map_or("n/a".into(), hms),
                    torch.map_or("n/a".into(), hms),
                    hms(DOCUMENTED_SECONDS)
                );
            }
        }
        None => println!(
            "\n(Not projected to the guide's Table 4-2 Swin rows ({DOCUMENTED_EPOCHS} ImageNet-21K epochs, {} on \
             1 × V100): the guide does not give ImageNet-21K's image count; pass --train-images N.)",
            hms(DOCUMENTED_SECONDS)
        ),
    }
    let drop_paths: Vec<f64> = args.models.iter().map(|&s| args.drop_path(s)).collect();
    let report = SwinReport {
        threads: threads(),
        image_size: args.flags.image_size,
        window: args.window,
        train_images: args.train_images,
        val_images: args.val_images,
        results: pairs(rows)
            .into_iter()
            .zip(drop_paths)
            .map(|(pair, drop_path_rate)| SwinEntry {
                kiln_projected_seconds: args.projection(&pair.kiln),
                pytorch_projected_seconds: pair.pytorch.as_ref().and_then(|t| args.projection(t)),
                pair,
                drop_path_rate,
            })
            .collect(),
    };
    crate::report::write(&args.flags.json, &report)
}

/// One size's step, measured by [`on_device`].
struct SwinStep<'a> {
    config: SwinConfig,
    name: String,
    flags: &'a StepFlags,
}

impl KilnStep for SwinStep<'_> {
    fn measure<B: AutodiffBackend>(&self, device: &B::Device, choice: DeviceChoice) -> StepResult {
        B::seed(device, 0);
        let mut trainer = SwinTrainer::<B>::new(&self.config, self.flags.batch, device);
        let train = per_step_seconds(self.flags.steps, &mut || {
            let loss = trainer.step(LR);
            assert!(loss.is_finite(), "loss {loss}");
        });
        // Evaluated as the job validates: the inner model, logits read back.
        let model = trainer.model.valid();
        let images = trainer.images.inner();
        let eval = per_step_seconds(self.flags.steps, &mut || {
            let _ = model.forward(images.clone()).into_data();
        });
        throughput(self.name.clone(), self.flags.batch, choice, [train, eval])
    }
}

/// `kiln-train swin`'s update (`train_one_epoch`, one worker, no accumulation) on a fixed
/// random batch with fixed mixed targets.
struct SwinTrainer<B: AutodiffBackend> {
    model: SwinTransformer<B>,
    optim: OptimizerAdaptor<AdamW, SwinTransformer<B>, B>,
    decay: DecayGroup,
    images: Tensor<B, 4>,
    targets: Tensor<B, 2>,
}

impl<B: AutodiffBackend> SwinTrainer<B> {
    /// A fresh model of `config`, its optimizer, and a batch of `batch` images.
    fn new(config: &SwinConfig, batch: usize, device: &B::Device) -> Self {
        let model = config.init::<B>(device);
        let side = config.img_size;
        let images = Tensor::random([batch, 3, side, side], Distribution::Normal(0.0, 1.0), device);
        let classes = config.num_classes;
        let labels: Vec<usize> = (0..batch).map(|i| i % classes).collect();
        let soft = mixup_targets(&labels, classes, MIX_LAM, SMOOTHING);
        Self {
            decay: DecayGroup::select(&model, takes_weight_decay),
            optim: AdamWConfig::new()
                .with_epsilon(1e-8)
                .with_weight_decay(0.0)
                .init::<B, SwinTransformer<B>>(),
            model,
            images,
            targets: Tensor::from_data(TensorData::new(soft, [batch, classes]), device),
        }
    }

    /// One update at learning rate `lr`: forward, soft-target cross-entropy, backward, clip,
    /// the decay group's decoupled decay, AdamW; the loss before the update.
    fn step(&mut self, lr: f64) -> f64 {
        let logits = self.model.forward(self.images.clone());
        let loss = soft_target_cross_entropy(logits, self.targets.clone());
        let grads = GradientsParams::from_grads(loss.backward(), &self.model);
        let (grads, _norm) = clip_grad_norm(grads, &self.model, CLIP_GRAD);
        let model = self.decay.apply(self.model.clone(), lr * WEIGHT_DECAY);
        self.model = self.optim.step(lr, model, grads);
        loss.into_scalar().elem()
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::{Autodiff, Flex};
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        swin: SwinBench,
    }

    fn parse(args: &[&str]) -> SwinBench {
        Cli::parse_from(std::iter::once("kiln-bench").chain(args.iter().copied())).swin
    }

    /// The bench's step lowers the loss of its fixed batch: with a micro model (no stochastic
    /// depth), a few updates at a large rate fit the mixed targets better.
    #[test]
    fn the_step_reduces_the_loss_on_its_batch() {
        type B = Autodiff<Flex>;
        let device = Default::default();
        B::seed(&device, 7);
        let config = SwinConfig {
            img_size: 32,
            window_size: 4,
            drop_path_rate: 0.0,
            ..SwinConfig::new(16, &[2, 2], &[2, 4], 5)
        };
        config.validate().unwrap();
        let mut trainer = SwinTrainer::<B>::new(&config, 4, &device);
        assert!(!trainer.decay.is_empty());
        let losses: Vec<f64> = (0..8).map(|_| trainer.step(3e-3)).collect();
        assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
        assert!(losses[7] < 0.8 * losses[0], "{losses:?}");
    }

    /// `swin` keeps its own defaults for the shared flags, `imagenet` its own.
    #[test]
    fn defaults_are_the_swin_benchs() {
        let args = parse(&[]);
        assert_eq!((args.flags.batch, args.flags.steps), (8, 2));
        assert_eq!(args.flags.reference, PathBuf::from("benches/reference/swin_step.py"));
        assert_eq!(args.flags.json, PathBuf::from("bench-swin.json"));
        assert_eq!(args.models, vec![SwinSize::Tiny]);
        assert_eq!(args.flags.python, PathBuf::from("python3"));
        let imagenet = crate::step::tests::test_flags();
        assert_eq!((imagenet.batch, imagenet.steps), (32, 3));
        assert_eq!(imagenet.reference, PathBuf::from("benches/reference/resnet_step.py"));
    }

    /// Both sides run the same shape: kiln's config and the reference's arguments agree on
    /// window, drop path (the 22K config's unless given) and the official repository.
    #[test]
    fn both_sides_get_the_same_shape() {
        let args = parse(&[
            "-m",
            "tiny,base",
            "--window",
            "7",
            "--image-size",
            "224",
            "--classes",
            "21841",
            "--swin-repo",
            "/tmp/swin",
        ]);
        let base = args.config(SwinSize::Base);
        assert_eq!(
            (base.embed_dim, base.num_classes, base.drop_path_rate),
            (128, 21841, 0.2)
        );
        assert_eq!(args.config(SwinSize::Tiny).drop_path_rate, 0.1);
        let torch = args.torch_args(SwinSize::Base).join(" ");
        assert!(
            torch.starts_with("--model base --window 7 --drop-path 0.2 --lr 0.000125"),
            "{torch}"
        );
        assert!(torch.ends_with("--swin-repo /tmp/swin"), "{torch}");
        let common = args.flags.reference_args().join(" ");
        assert_eq!(common, "--batch-size 8 --steps 2 --image-size 224 --classes 21841");
        let given = parse(&["--drop-path", "0.5"]);
        assert_eq!(given.config(SwinSize::Tiny).drop_path_rate, 0.5);
        assert!(given.torch_args(SwinSize::Tiny).join(" ").contains("--drop-path 0.5"));
    }

    /// The projection is the documented epochs of the given images at the measured speeds.
    #[test]
    fn projections_need_the_image_count() {
        let seconds = |steady| crate::step::StepSeconds { first: 9.0, steady };
        let r = throughput("swin-base".into(), 8, DeviceChoice::Cpu, [seconds(4.0), seconds(1.0)]);
        assert_eq!(r.first_step_seconds, Some([9.0, 9.0]));
        assert_eq!(
            r.first_run_note().unwrap(),
            "swin-base b8 on cpu: first training step 9.000 s against 4.000 s warm, first evaluation 9.000 s against 1.000 s"
        );
        assert!(parse(&[]).projection(&r).is_none());
        let args = parse(&["--train-images", "1000", "--val-images", "200"]);
        // 1000 / 2 img/s + 200 / 8 img/s = 525 s an epoch.
        assert_eq!(args.projection(&r), Some(5250.0));
        assert_eq!(hms(DOCUMENTED_SECONDS), "197:25:03");
    }
}
