//! Command-line flags, in the guide's spellings (`--data_url`, `--batch-size`, `--no-cuda`, …;
//! `--key value` and `--key=value` both work).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use kiln_models::{ResNetArch, YoloxVariant};

use crate::ddp::{DeviceSpec, DistArgs};

/// `kiln-train`: the guide's training jobs on burn, on CPU or CUDA.
#[derive(Debug, Parser)]
#[command(name = "kiln-train", version, about, long_about = None)]
pub struct Cli {
    /// The job to run.
    #[command(subcommand)]
    pub job: Job,
}

/// The training jobs. Like Python's argparse, a repeated flag takes its last value.
#[derive(Debug, Subcommand)]
pub enum Job {
    /// The MNIST CNN (the guide's `train.py`): Adadelta, StepLR, 14 epochs, model package out.
    #[command(args_override_self = true)]
    Mnist(MnistArgs),
    /// ResNet on an ImageFolder set (pytorch/examples' ImageNet `main.py`): SGD, StepLR(30),
    /// checkpoints with exact resume, Acc@1/Acc@5, model package out.
    #[command(args_override_self = true)]
    Imagenet(ImagenetArgs),
    /// YOLOX on COCO (Megvii's `tools/train.py`): mosaic/mixup augmentation, SimOTA,
    /// yoloxwarmcos, EMA, COCO mAP, checkpoints with exact resume, detection package out.
    #[command(args_override_self = true)]
    Yolox(YoloxArgs),
    /// Swin Transformer (microsoft/Swin-Transformer's `main.py`): the official YAML configs,
    /// AdamW, cosine schedule, RandAugment, Mixup/CutMix, checkpoints with auto-resume,
    /// classification package out.
    #[command(args_override_self = true)]
    Swin(SwinArgs),
}

/// Flags of `kiln-train mnist`; defaults are the guide's `train.py`.
#[derive(Debug, Clone, Args, Serialize)]
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
    /// Device: auto, cpu, cpu:N (N CPU workers), cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    #[serde(serialize_with = "crate::run::display")]
    pub device: DeviceSpec,
    /// Data-loading threads (0 loads on the training thread).
    #[arg(long, visible_alias = "num_workers", default_value_t = 1)]
    pub workers: usize,
    /// Distributed training.
    #[command(flatten)]
    pub dist: DistArgs,
}

/// Flags of `kiln-train imagenet`; defaults are pytorch/examples' `main.py`.
#[derive(Debug, Clone, Args, Serialize)]
pub struct ImagenetArgs {
    /// Dataset folder holding `train/<class>/*` and `val/<class>/*`.
    #[arg(value_name = "DIR", default_value = "imagenet")]
    pub data: PathBuf,
    /// Model architecture: resnet18, resnet34, resnet50, resnet101 or resnet152.
    #[arg(short = 'a', long = "arch", default_value = "resnet18")]
    #[serde(serialize_with = "crate::run::display")]
    pub arch: ResNetArch,
    /// Data-loading threads (decoding and augmentation run on them, ahead of the model).
    #[arg(short = 'j', long = "workers", default_value_t = 4)]
    pub workers: usize,
    /// Total number of epochs to run.
    #[arg(long, default_value_t = 90)]
    pub epochs: usize,
    /// Epoch to start from (useful on restarts; `--resume` sets it from the checkpoint).
    #[arg(long = "start-epoch", visible_alias = "start_epoch", default_value_t = 0)]
    pub start_epoch: usize,
    /// Mini-batch size (the total over the node's devices).
    #[arg(short = 'b', long = "batch-size", visible_alias = "batch_size", default_value_t = 256, value_parser = positive)]
    pub batch_size: usize,
    /// Initial learning rate.
    #[arg(long = "lr", visible_alias = "learning-rate", default_value_t = 0.1, value_parser = positive_f64)]
    pub lr: f64,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9, value_parser = non_negative_f64)]
    pub momentum: f64,
    /// Weight decay (L2 penalty added to the gradient, as torch's SGD does).
    #[arg(long = "wd", visible_alias = "weight-decay", default_value_t = 1e-4, value_parser = non_negative_f64)]
    pub weight_decay: f64,
    /// Batches between progress lines.
    #[arg(short = 'p', long = "print-freq", visible_alias = "print_freq", default_value_t = 10, value_parser = positive)]
    pub print_freq: usize,
    /// Checkpoint to resume from (a kiln `checkpoint.pth.tar`); with `-e`, a checkpoint or a
    /// model package folder to evaluate.
    #[arg(long, value_name = "PATH", value_parser = path_or_empty)]
    pub resume: Option<PathBuf>,
    /// Evaluate the model on the validation set and exit.
    #[arg(short = 'e', long = "evaluate")]
    pub evaluate: bool,
    /// Start from torchvision weights in a local `.pth` or `.safetensors` file (no downloads);
    /// the classifier is replaced when the class count differs.
    #[arg(long, value_name = "PATH")]
    pub pretrained: Option<PathBuf>,
    /// Seed for weights, data order and augmentation (random when not given; a resumed run
    /// keeps its checkpoint's seed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// GPU id to use (the same as `--device cuda:N`).
    #[arg(long)]
    pub gpu: Option<usize>,
    /// Device: auto, cpu, cpu:N (N CPU workers), cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    #[serde(serialize_with = "crate::run::display")]
    pub device: DeviceSpec,
    /// Folder for checkpoints, `metrics.jsonl` and the model package `model/`.
    #[arg(long, default_value = ".")]
    pub output: PathBuf,
    /// Training crop size (kiln extension; validation resizes to size × 256/224 first).
    #[arg(long = "image-size", default_value_t = 224, value_parser = positive)]
    pub image_size: usize,
    /// Mixed precision (torchvision's references' flag): forward and backward in f16 on an
    /// f16 copy of the f32 weights, BatchNorm statistics and the loss in f32, the loss scaled
    /// as GradScaler does (a step whose gradients overflow is skipped). For GPUs' tensor
    /// cores; the CPU runs it too, slower.
    #[arg(long)]
    pub amp: bool,
    /// Distributed training (main.py's flags and YOLOX's).
    #[command(flatten)]
    pub dist: DistArgs,
}

/// Flags of `kiln-train yolox`; YOLOX's `tools/train.py` flags. Experiment settings (epochs,
/// sizes, augmentation) are the variant's YOLOX defaults, changed by trailing `key value`
/// pairs like YOLOX's `opts`.
#[derive(Debug, Clone, Args, Serialize)]
pub struct YoloxArgs {
    /// COCO folder: `annotations/instances_{train,val}2017.json`, `train2017/`, `val2017/`.
    #[arg(long, default_value = "/home/ma-user/coco")]
    pub data: PathBuf,
    /// Model variant: yolox-nano, yolox-tiny, yolox-s, yolox-m, yolox-l or yolox-x.
    #[arg(short = 'n', long = "name", default_value = "yolox-s")]
    #[serde(serialize_with = "crate::run::display")]
    pub name: YoloxVariant,
    /// Total batch size over every device of every node.
    #[arg(short = 'b', long = "batch-size", visible_alias = "batch_size", default_value_t = 64, value_parser = positive)]
    pub batch_size: usize,
    /// Mixed precision on CUDA (f16 compute, f32 master weights, dynamic loss scaling).
    #[arg(long)]
    pub fp16: bool,
    /// Checkpoint file: the one `--resume` continues, or initial weights without `--resume`.
    #[arg(short = 'c', long = "ckpt", value_name = "FILE")]
    pub ckpt: Option<PathBuf>,
    /// Resume training from `--ckpt` (default: the experiment folder's `latest_ckpt.pth`).
    #[arg(long)]
    pub resume: bool,
    /// Epoch to resume from (default: the checkpoint's).
    #[arg(short = 'e', long = "start_epoch", visible_alias = "start-epoch")]
    pub start_epoch: Option<usize>,
    /// Experiment name: outputs go to `<output>/<experiment-name>/` (default: the model name).
    #[arg(long = "experiment-name", visible_alias = "expn")]
    pub experiment_name: Option<String>,
    /// Folder holding the experiment folders (YOLOX's `output_dir`).
    #[arg(long, default_value = "YOLOX_outputs")]
    pub output: PathBuf,
    /// Accepted for the guide's command line; kiln allocates GPU memory as it needs it.
    #[arg(short = 'o', long)]
    pub occupy: bool,
    /// Accepted for YOLOX's command line; the loader decodes in parallel instead of caching.
    #[arg(long, num_args = 0..=1, default_missing_value = "ram")]
    pub cache: Option<String>,
    /// YOLOX's experiment file: kiln has no Python; use `-n` and trailing `key value` pairs.
    #[arg(short = 'f', long = "exp_file", visible_alias = "exp-file")]
    pub exp_file: Option<PathBuf>,
    /// Seed for weights, data order and augmentation (random when not given; a resumed run
    /// keeps its checkpoint's seed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Device: auto, cpu, cpu:N (N CPU workers), cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    #[serde(serialize_with = "crate::run::display")]
    pub device: DeviceSpec,
    /// Distributed training (`--devices`, `--num_machines`, `--machine_rank`, `--dist-url`).
    #[command(flatten)]
    pub dist: DistArgs,
    /// Experiment settings to change, as `key value` pairs (`max_epoch 30 input_size 320,320`).
    #[arg(trailing_var_arg = true, num_args = 0.., value_name = "KEY VALUE")]
    pub opts: Vec<String>,
}

/// Flags of `kiln-train swin`: microsoft/Swin-Transformer's `main.py`. The settings come from
/// `--cfg` over the official defaults; these flags override single keys.
#[derive(Debug, Clone, Args, Serialize)]
pub struct SwinArgs {
    /// The YAML config (e.g. `configs/swin/swin_base_patch4_window7_224_22k.yaml`).
    #[arg(long, value_name = "FILE")]
    pub cfg: PathBuf,
    /// Config keys to change, as `KEY VALUE` pairs (`--opts TRAIN.EPOCHS 10 AUG.MIXUP 0`).
    #[arg(long, num_args = 1.., value_name = "KEY VALUE", allow_hyphen_values = true)]
    pub opts: Vec<String>,
    /// Batch size per device (`DATA.BATCH_SIZE`).
    #[arg(long = "batch-size", visible_alias = "batch_size", value_parser = positive)]
    pub batch_size: Option<usize>,
    /// Dataset root (`DATA.DATA_PATH`).
    #[arg(long = "data-path", visible_alias = "data_path")]
    pub data_path: Option<PathBuf>,
    /// Zipped datasets are not supported by kiln (refused with an error).
    #[arg(long)]
    pub zip: bool,
    /// Accepted for main.py's command line (zip caching); kiln decodes in parallel instead.
    #[arg(long = "cache-mode", visible_alias = "cache_mode")]
    pub cache_mode: Option<String>,
    /// Weights to fine-tune from: an official `.pth` (its `model` key), 22K heads mapped to 1K.
    #[arg(long)]
    pub pretrained: Option<PathBuf>,
    /// A kiln checkpoint to resume (`ckpt_epoch_N.pth`); with `--eval`, also a model package.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Batches per optimizer update (`TRAIN.ACCUMULATION_STEPS`).
    #[arg(long = "accumulation-steps", visible_alias = "accumulation_steps", value_parser = positive)]
    pub accumulation_steps: Option<usize>,
    /// Activation checkpointing (`TRAIN.USE_CHECKPOINT`): each block's activations are
    /// recomputed in the backward pass instead of kept, trading a second forward for memory.
    #[arg(long = "use-checkpoint", visible_alias = "use_checkpoint")]
    pub use_checkpoint: bool,
    /// Train in f32 on CUDA too (mixed precision is on by default there).
    #[arg(long = "disable_amp", visible_alias = "disable-amp")]
    pub disable_amp: bool,
    /// Apex's deprecated opt level; `O0` disables mixed precision as in main.py.
    #[arg(long = "amp-opt-level", visible_alias = "amp_opt_level")]
    pub amp_opt_level: Option<String>,
    /// Output root: the run writes to `<output>/<MODEL.NAME>/<tag>/`.
    #[arg(long, default_value = "output")]
    pub output: PathBuf,
    /// Experiment tag (`TAG`, default `default`).
    #[arg(long)]
    pub tag: Option<String>,
    /// Evaluate only (`--resume` checkpoint or package, or `--pretrained` weights).
    #[arg(long)]
    pub eval: bool,
    /// Measure evaluation throughput only.
    #[arg(long)]
    pub throughput: bool,
    /// The local rank torch.distributed.launch passes (`LOCAL_RANK` is read too).
    #[arg(long = "local_rank", visible_alias = "local-rank")]
    pub local_rank: Option<usize>,
    /// Accepted for main.py's command line (a CUDA extension there).
    #[arg(long = "fused_window_process")]
    pub fused_window_process: bool,
    /// Accepted for main.py's command line (apex's LayerNorm there).
    #[arg(long = "fused_layernorm")]
    pub fused_layernorm: bool,
    /// Optimizer override (`TRAIN.OPTIMIZER.NAME`): kiln runs `adamw`.
    #[arg(long)]
    pub optim: Option<String>,
    /// Device: auto, cpu, cpu:N (N CPU workers), cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    #[serde(serialize_with = "crate::run::display")]
    pub device: DeviceSpec,
    /// Distributed training (torch.distributed.launch's environment, the platform's, or
    /// main.py-style flags).
    #[command(flatten)]
    pub dist: DistArgs,
}

impl ImagenetArgs {
    /// The checkpoint (or package) to resume from; `--resume ""` (the original's default)
    /// means none.
    pub fn resume_path(&self) -> Option<&std::path::Path> {
        self.resume.as_deref().filter(|p| !p.as_os_str().is_empty())
    }
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

fn path_or_empty(s: &str) -> Result<PathBuf, String> {
    Ok(PathBuf::from(s))
}

fn non_negative_f64(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
        Ok(_) => Err(format!("{s} must be a non-negative finite number")),
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
            other => panic!("parsed as {other:?}"),
        })
    }

    fn imagenet(args: &[&str]) -> Result<ImagenetArgs, clap::Error> {
        let mut argv = vec!["kiln-train", "imagenet"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).map(|c| match c.job {
            Job::Imagenet(a) => a,
            other => panic!("parsed as {other:?}"),
        })
    }

    #[test]
    fn imagenet_defaults_are_main_py_s() {
        let a = imagenet(&["dog_cat_1w/"]).unwrap();
        assert_eq!(a.data, PathBuf::from("dog_cat_1w/"));
        assert_eq!(a.arch, ResNetArch::ResNet18);
        assert_eq!(
            (a.workers, a.epochs, a.start_epoch, a.batch_size, a.print_freq),
            (4, 90, 0, 256, 10)
        );
        assert_eq!((a.lr, a.momentum, a.weight_decay), (0.1, 0.9, 1e-4));
        assert_eq!((a.dist.world_size, a.dist.rank), (-1, -1));
        assert_eq!(
            (a.dist.dist_url.as_str(), a.dist.dist_backend.as_str()),
            ("tcp://224.66.41.62:23456", "nccl")
        );
        assert!(!a.evaluate && !a.dist.multiprocessing_distributed && a.seed.is_none() && a.gpu.is_none());
        assert_eq!(a.resume_path(), None);
        assert_eq!(imagenet(&["--resume", ""]).unwrap().resume_path(), None);
        assert_eq!(a.image_size, 224);
    }

    #[test]
    fn imagenet_guide_command_parses() {
        let a = imagenet(&["-a", "resnet50", "-b", "128", "--epochs", "5", "dog_cat_1w/"]).unwrap();
        assert_eq!((a.arch, a.batch_size, a.epochs), (ResNetArch::ResNet50, 128, 5));
        let a = imagenet(&[
            "--arch=resnet34",
            "-j",
            "2",
            "--lr=0.01",
            "--wd",
            "5e-4",
            "--weight-decay=1e-5",
            "-p",
            "1",
            "--resume",
            "ck.pth.tar",
            "-e",
            "--seed=3",
            "--gpu=1",
            "--world-size=2",
            "--rank=0",
            "--multiprocessing-distributed",
            "--start-epoch=4",
            "data",
        ])
        .unwrap();
        assert_eq!(
            (a.arch, a.workers, a.print_freq, a.start_epoch),
            (ResNetArch::ResNet34, 2, 1, 4)
        );
        assert_eq!((a.lr, a.weight_decay), (0.01, 1e-5));
        assert_eq!(
            (a.seed, a.gpu, a.dist.world_size, a.dist.rank),
            (Some(3), Some(1), 2, 0)
        );
        assert!(a.evaluate && a.dist.multiprocessing_distributed);
        assert_eq!(a.resume_path(), Some(std::path::Path::new("ck.pth.tar")));
    }

    #[test]
    fn imagenet_bad_flags_name_the_flag() {
        for (args, needle) in [
            (vec!["-a", "vgg16"], "resnet18"),
            (vec!["-b", "0"], "--batch-size"),
            (vec!["--momentum=-0.5"], "--momentum"),
            (vec!["--lr=0"], "--lr"),
            (vec!["--pretrained"], "--pretrained"),
        ] {
            let e = imagenet(&args).unwrap_err().to_string();
            assert!(e.contains(needle), "{args:?}: {e}");
        }
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
        assert_eq!(a.device, "auto".parse().unwrap());
        assert_eq!(a.dist.dist_timeout, crate::ddp::DEFAULT_TIMEOUT_SECS);
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
            "--device=cpu:2",
            "--workers=0",
            "--dist-timeout=9",
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
        assert_eq!((a.device.cpu_workers, a.dist.dist_timeout), (Some(2), 9));
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
