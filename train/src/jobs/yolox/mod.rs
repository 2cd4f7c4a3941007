//! `kiln-train yolox`: Megvii's YOLOX `tools/train.py` on a COCO folder. Mosaic, MixUp, HSV
//! and flip augmentation (off for the last `no_aug_epochs`, when the L1 box loss turns on),
//! SimOTA label assignment, SGD with Nesterov momentum and weight decay on the convolution
//! weights only, the `yoloxwarmcos` schedule scaled by the batch size, an EMA of the weights for
//! evaluation and saving, COCO mAP every `eval_interval` epochs, checkpoints with exact resume,
//! and the detection model package of the best EMA weights. Distributed like YOLOX with DDP:
//! each worker trains on its shard with the batch divided over the devices, gradients are
//! averaged, and rank 0 logs and writes.

mod ema;
mod eval;
mod exp;
mod log;
mod trainer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use burn::lr_scheduler::LrScheduler;
use burn::module::{AutodiffModule, Module};
use burn::optim::Optimizer;
use burn::prelude::*;
use burn::record::Record;
use burn::tensor::backend::AutodiffBackend;
use serde::Serialize;

use kiln_data::{CocoDataset, DetectLoader, DetectMode, EpochSampler, LoaderConfig, YoloxAugConfig};
use kiln_models::yolox::Yolox;
use kiln_models::{write_package, yolox_package_config, PackageConfig};

use crate::checkpoint::{load_checked, CheckpointRecord, RunState};
use crate::cli::YoloxArgs;
use crate::ddp::Collective;
use crate::error::TrainError;
use crate::progress::PassProgress;
use crate::run::{resolve_seed, RunOutput, SavePolicy};
use crate::schedule::YoloxWarmCos;
use ema::ModelEma;

pub use exp::Exp;
pub use log::IterLog;
pub use trainer::{Trainer, YoloxOptimizer};

/// The checkpoint rewritten every epoch (YOLOX's file name).
pub const LATEST_CKPT: &str = "latest_ckpt.pth";
/// The checkpoint of the best evaluation so far.
pub const BEST_CKPT: &str = "best_ckpt.pth";

type Checkpoint<B> = CheckpointRecord<
    Weights<B>,
    <YoloxOptimizer<B> as Optimizer<Yolox<B>, B>>::Record,
    <YoloxWarmCos as LrScheduler>::Record<B>,
>;

/// The tensors a checkpoint holds: the trained weights, their moving average and its count.
#[derive(Record)]
pub struct Weights<B: Backend> {
    /// The model being trained.
    model: <Yolox<B> as Module<B>>::Record,
    /// The EMA of the model.
    ema: <Yolox<B> as Module<B>>::Record,
    /// Updates the EMA has seen.
    ema_updates: usize,
}

/// One epoch's figures, as written to `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct YoloxEpoch {
    /// Epoch number, from 1 like YOLOX's log.
    pub epoch: usize,
    /// Learning rate at the epoch's last iteration.
    pub lr: f64,
    /// Mean total loss per iteration.
    pub total_loss: f64,
    /// Mean IoU loss (weighted ×5 in the total).
    pub iou_loss: f64,
    /// Mean objectness loss.
    pub conf_loss: f64,
    /// Mean classification loss.
    pub cls_loss: f64,
    /// Mean L1 box loss (0 before the no-augmentation epochs).
    pub l1_loss: f64,
    /// COCO AP@[.50:.95] of the evaluated weights, when this epoch evaluated.
    pub ap50_95: Option<f64>,
    /// COCO AP@.50, when this epoch evaluated.
    pub ap50: Option<f64>,
    /// Wall time of the training pass in seconds.
    pub train_seconds: f64,
    /// Wall time of the whole epoch (train, evaluation, checkpoint) in seconds.
    pub seconds: f64,
    /// Training images per second.
    pub images_per_second: f64,
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct YoloxSummary {
    /// The epochs this invocation ran.
    pub epochs: Vec<YoloxEpoch>,
    /// The best AP@[.50:.95] of the run, including resumed epochs (-1 before any evaluation).
    pub best_ap: f64,
}

/// Runs the job as worker `dist` on `device` of autodiff backend `B`.
pub fn run<B: AutodiffBackend>(
    args: &YoloxArgs,
    dist: &Collective<B::InnerBackend>,
    device: B::Device,
) -> Result<YoloxSummary, TrainError> {
    if let Some(file) = &args.exp_file {
        return Err(TrainError::Flag(format!(
            "-f {}: kiln has no Python experiment files; choose the model with -n and change settings with trailing `key value` pairs (e.g. `max_epoch 30`)",
            file.display()
        )));
    }
    let mut exp = Exp::new(args.name);
    exp.apply_opts(&args.opts).map_err(TrainError::Flag)?;
    let train_set = Arc::new(CocoDataset::open(&args.data, &exp.train_split)?);
    let val_set = Arc::new(CocoDataset::open(&args.data, &exp.val_split)?);
    exp.num_classes = train_set.class_names().len();
    if val_set.class_names() != train_set.class_names() {
        return Err(TrainError::Flag(format!(
            "{}: the {} and {} annotations list different categories",
            args.data.display(),
            exp.train_split,
            exp.val_split
        )));
    }
    let out = experiment_dir(args);
    if dist.is_root() {
        tracing::info!(
            train = train_set.len(),
            val = val_set.len(),
            classes = exp.num_classes,
            data = %args.data.display(),
            output = %out.display(),
            "COCO opened"
        );
    }
    // `-b` is the total over every device of every node (YOLOX divides it by the world size).
    let batch = dist.per_worker(args.batch_size, "--batch-size")?;
    let loader_config = LoaderConfig {
        batch_size: batch,
        workers: exp.data_num_workers,
        prefetch_batches: 2 * exp.data_num_workers.max(1),
    };
    // Iterations per epoch: this worker's shard in batches (the count does not depend on the seed).
    let iters = dist
        .shard(EpochSampler::new(train_set.len(), true, 0))?
        .num_samples()
        .div_ceil(batch);
    let mut run = RunSetup::<B>::new(args, &exp, iters, dist, &train_set, &device)?;
    if dist.is_root() {
        run.repair_package()?;
    }
    let train_sampler = dist.shard(EpochSampler::new(train_set.len(), true, run.state.seed))?;
    let mut train_loader = DetectLoader::new(
        Arc::clone(&train_set),
        DetectMode::Train(augment(&exp)),
        train_sampler,
        loader_config,
    )?;
    let val_sampler = dist
        .shard(EpochSampler::new(val_set.len(), false, 0))?
        .without_padding();
    let val_mode = DetectMode::Val {
        size: exp.test_size.0 as u32,
    };
    let val_loader = DetectLoader::new(Arc::clone(&val_set), val_mode, val_sampler, loader_config)?;

    let settings = RunSettings { flags: args, exp: &exp };
    let mut output = RunOutput::open(dist, &out, "yolox", &settings, run.state.seed, args.resume)?;
    let mut history = Vec::new();
    for epoch in run.state.epoch..exp.max_epoch {
        let started = Instant::now();
        let no_aug = epoch >= exp.no_aug_start();
        train_loader.set_mosaic(!no_aug);
        if no_aug && dist.is_root() && epoch == exp.no_aug_start() {
            println!("--->No mosaic aug now!\n--->Add additional L1 loss now!");
        }
        let pass = run.train_epoch(&exp, epoch, &train_loader, no_aug)?;
        let train_seconds = started.elapsed().as_secs_f64();
        let evaluate_now = (epoch + 1) % exp.eval_interval == 0 || epoch + 1 == exp.max_epoch;
        let stats = if evaluate_now {
            let model = run.eval_model();
            Some(eval::evaluate(
                &model,
                dist,
                &val_set,
                &val_loader,
                exp.test_conf,
                exp.nmsthre,
                &device,
            )?)
        } else {
            None
        };
        let ap = stats.map(|s| s.stats[0]);
        let is_best = ap.is_some_and(|ap| run.state.record_score(ap));
        run.state.epoch = epoch + 1;
        if dist.is_root() {
            run.save(is_best, exp.save_history_ckpt)?;
        }
        let m = YoloxEpoch {
            epoch: epoch + 1,
            lr: pass.lr,
            total_loss: pass.parts[0],
            iou_loss: pass.parts[1],
            conf_loss: pass.parts[2],
            cls_loss: pass.parts[3],
            l1_loss: pass.parts[4],
            ap50_95: ap,
            ap50: stats.map(|s| s.stats[1]),
            train_seconds,
            seconds: started.elapsed().as_secs_f64(),
            images_per_second: pass.images as f64 / train_seconds,
        };
        output.record_epoch(epoch + 1, m.seconds, m.images_per_second, &m)?;
        history.push(m);
    }
    Ok(YoloxSummary {
        epochs: history,
        best_ap: run.state.best_score,
    })
}

/// `<output>/<experiment-name>`, the name defaulting to the model's (YOLOX's `exp_name`).
fn experiment_dir(args: &YoloxArgs) -> PathBuf {
    let name = args
        .experiment_name
        .clone()
        .unwrap_or_else(|| args.name.to_string().replace('-', "_"));
    args.output.join(name)
}

/// The training augmentation of `exp` (mosaic on; the loader turns it off for the
/// no-augmentation epochs).
fn augment(exp: &Exp) -> YoloxAugConfig {
    YoloxAugConfig {
        input_size: exp.input_size.0 as u32,
        mosaic: true,
        mosaic_prob: exp.mosaic_prob,
        mixup: exp.enable_mixup,
        mixup_prob: exp.mixup_prob,
        degrees: exp.degrees,
        translate: exp.translate,
        mosaic_scale: exp.mosaic_scale,
        mixup_scale: exp.mixup_scale,
        shear: exp.shear,
        hsv_prob: exp.hsv_prob,
        flip_prob: exp.flip_prob,
        ..YoloxAugConfig::default()
    }
}

/// What `run.json` records of a YOLOX run: its flags and the experiment they resolved to.
#[derive(Serialize)]
struct RunSettings<'a> {
    flags: &'a YoloxArgs,
    exp: &'a Exp,
}

/// One training pass's averages.
struct Pass {
    /// Mean losses `[total, iou, conf, cls, l1]` over all workers.
    parts: [f64; 5],
    lr: f64,
    images: usize,
}

/// The model, its EMA, the optimizer, the schedule and the run state.
struct RunSetup<'a, B: AutodiffBackend> {
    dist: &'a Collective<B::InnerBackend>,
    trainer: Trainer<B>,
    scheduler: YoloxWarmCos,
    state: RunState,
    package: PackageConfig,
    saves: SavePolicy,
    device: B::Device,
}

impl<'a, B: AutodiffBackend> RunSetup<'a, B> {
    /// A fresh model (or `-c` weights), or everything restored from `--resume`; rank 0's seed
    /// and weights on every worker.
    fn new(
        args: &YoloxArgs,
        exp: &Exp,
        iters_per_epoch: usize,
        dist: &'a Collective<B::InnerBackend>,
        train_set: &CocoDataset,
        device: &B::Device,
    ) -> Result<Self, TrainError> {
        let out = experiment_dir(args);
        let resume_path = args
            .resume
            .then(|| args.ckpt.clone().unwrap_or_else(|| out.join(LATEST_CKPT)));
        let checkpoint_path = resume_path.clone().or_else(|| args.ckpt.clone());
        let checkpoint = checkpoint_path
            .as_deref()
            .map(|p| Checkpoint::<B>::load::<B>(p, device))
            .transpose()?;
        let seed = resolve_seed(args.seed, checkpoint.as_ref().map(|c| c.state.seed), dist, device)?;
        let classes: Vec<String> = train_set.class_names().iter().map(|s| s.to_string()).collect();
        let root = dist.is_root();
        let lr = exp.basic_lr_per_img * args.batch_size as f64;
        let scheduler = YoloxWarmCos::new(
            lr,
            iters_per_epoch,
            exp.max_epoch,
            exp.warmup_epochs,
            exp.no_aug_epochs,
            exp.min_lr_ratio,
        )
        .map_err(TrainError::Flag)?;
        let mut run = Self {
            dist,
            trainer: Trainer::new(exp, classes.len(), args.fp16, device),
            scheduler,
            state: RunState {
                epoch: 0,
                arch: exp.variant.to_string(),
                // Below any AP, so the first evaluation writes `best_ckpt.pth` and the package.
                best_score: -1.0,
                seed,
                classes: classes.clone(),
                loss_scale: None,
            },
            package: yolox_package_config(exp.variant, exp.test_size, &classes),
            saves: SavePolicy::new(&out, LATEST_CKPT, BEST_CKPT),
            device: device.clone(),
        };
        if let (Some(path), Some(checkpoint)) = (checkpoint_path.as_deref(), checkpoint) {
            run.restore(path, checkpoint, resume_path.is_some())?;
            if root {
                println!("=> loaded checkpoint '{}' (epoch {})", path.display(), run.state.epoch);
            }
        }
        if let Some(epoch) = args.start_epoch {
            run.state.epoch = epoch;
        }
        run.trainer.model = dist.sync_module(run.trainer.model)?;
        if root {
            println!(
                "Model {} with {} parameters; {} classes",
                exp.variant,
                run.trainer.model.num_trainable_params(),
                classes.len()
            );
        }
        Ok(run)
    }

    /// Loads a checkpoint's weights; when `resume`, also its optimizer, schedule and position.
    fn restore(&mut self, path: &Path, checkpoint: Checkpoint<B>, resume: bool) -> Result<(), TrainError> {
        checkpoint.state.check_resumable(path, &self.state)?;
        let trainer = &mut self.trainer;
        trainer.model = load_checked(trainer.model.clone(), checkpoint.model.model, path)?;
        let ema = load_checked(trainer.model.clone(), checkpoint.model.ema, path)?.valid();
        trainer.ema = ModelEma::new(ema, checkpoint.model.ema_updates);
        if resume {
            trainer.optim = trainer.optim.clone().load_record(checkpoint.optimizer);
            self.scheduler = self.scheduler.clone().load_record::<B>(checkpoint.scheduler);
            self.state = checkpoint.state;
            // With --fp16 the loss scale carries on from the checkpoint (GradScaler's state).
            if trainer.scaler.is_some() {
                trainer.scaler = Some(self.state.loss_scale.take().unwrap_or_default());
            }
        }
        Ok(())
    }

    /// The weights evaluation and the package use.
    fn eval_model(&self) -> Yolox<B::InnerBackend> {
        self.trainer.eval_model()
    }

    /// One pass over the training set.
    fn train_epoch(
        &mut self,
        exp: &Exp,
        epoch: usize,
        loader: &DetectLoader,
        no_aug: bool,
    ) -> Result<Pass, TrainError> {
        let iters = loader.num_batches();
        let root = self.dist.is_root();
        let progress = PassProgress::new(iters, format!("epoch {}", epoch + 1), root);
        let mut log = IterLog::new(epoch, exp.max_epoch, iters, exp.input_size.0);
        let mut images = 0;
        let mut lr = 0.0;
        let mut end = Instant::now();
        for (i, batch) in loader.epoch(epoch as u64).enumerate() {
            let batch = batch?;
            let data_time = end.elapsed().as_secs_f64();
            lr = self.scheduler.step();
            let n = batch.targets.len();
            let input = Tensor::<B, 4>::from_data(TensorData::new(batch.images, batch.shape), &self.device);
            let parts = self
                .trainer
                .step(input, &Trainer::<B>::targets(&batch.targets), lr, no_aug, self.dist)?;
            images += n;
            log.update(parts, data_time, end.elapsed().as_secs_f64());
            end = Instant::now();
            progress.inc();
            if (i + 1) % exp.print_interval == 0 {
                progress.println(&log.line(i + 1, lr));
            }
        }
        progress.finish();
        let parts = self.reduce(log.mean())?;
        let images = self.dist.sum(&[images as f64], &self.device)?[0] as usize;
        Ok(Pass { parts, lr, images })
    }

    /// The epoch's mean losses averaged over all workers.
    fn reduce(&self, parts: [f64; 5]) -> Result<[f64; 5], TrainError> {
        let world = self.dist.world() as f64;
        let summed = self.dist.sum(&parts, &self.device)?;
        Ok([0, 1, 2, 3, 4].map(|i| summed[i] / world))
    }

    /// Makes `model/` hold the weights `best_ckpt.pth` recorded ([`SavePolicy::repair`]).
    fn repair_package(&self) -> Result<(), TrainError> {
        self.saves.repair(|best, package| {
            let checkpoint = Checkpoint::<B>::load::<B>(best, &self.device)?;
            let record = if self.trainer.uses_ema() {
                checkpoint.model.ema
            } else {
                checkpoint.model.model
            };
            let model = load_checked(self.trainer.model.clone(), record, best)?.valid();
            write_package(package, &self.package, &model)?;
            Ok(())
        })
    }

    /// `latest_ckpt.pth` every epoch, copied to `epoch_<n>_ckpt.pth` when `history`; on a new
    /// best the package of the evaluated weights first and `best_ckpt.pth` after
    /// ([`SavePolicy::save`]).
    fn save(&self, is_best: bool, history: bool) -> Result<(), TrainError> {
        let history = history.then(|| self.saves.output.join(format!("epoch_{}_ckpt.pth", self.state.epoch)));
        self.saves.save(
            is_best,
            |package| Ok(write_package(package, &self.package, &self.eval_model()).map(drop)?),
            |latest| {
                Checkpoint::<B> {
                    state: RunState {
                        loss_scale: self.trainer.scaler.clone(),
                        ..self.state.clone()
                    },
                    model: Weights {
                        model: self.trainer.model.clone().into_record(),
                        ema: Yolox::<B>::from_inner(self.trainer.ema.module().clone()).into_record(),
                        ema_updates: self.trainer.ema.updates(),
                    },
                    optimizer: self.trainer.optim.to_record(),
                    scheduler: self.scheduler.to_record::<B>(),
                }
                .save::<B>(latest)?;
                Ok(())
            },
            history.as_deref(),
        )
    }
}
