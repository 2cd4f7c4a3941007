//! `kiln-train swin`: microsoft/Swin-Transformer's `main.py`. The settings come from its YAML
//! configs ([`config`], [`settings`]); the model is [`kiln_models::SwinTransformer`]; the
//! recipe is the official one: AdamW without decay on norms, biases and position tables, rates
//! scaled by the total batch over 512, the per-update cosine schedule with warm-up, gradient
//! clipping with the norm logged, gradient accumulation, timm's augmentation with
//! Mixup/CutMix and the soft-target cross-entropy ([`targets`]). Checkpoints are
//! `ckpt_epoch_N.pth` in `<output>/<MODEL.NAME>/<tag>/` with auto-resume ([`state`]); the
//! package `model/` holds the best weights. Distributed like the official DDP run: each
//! worker trains on its shard with `DATA.BATCH_SIZE` images, gradients are averaged.

pub mod config;
pub mod log;
mod pretrained;
pub mod settings;
pub mod state;
pub mod targets;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use burn::lr_scheduler::LrScheduler;
use burn::module::AutodiffModule;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{GradientsAccumulator, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::FloatDType;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;

use kiln_data::{
    open_in22k_splits, open_splits, ClassifyBatch, ClassifyLoader, ClassifyTransform, EpochSampler, ImageFolder,
    LoaderConfig, SwinAugConfig,
};
use kiln_models::{load_weights, DeviceChoice, PackageConfig, SwinConfig, SwinTransformer};

use self::config::SwinConfigFile;
use self::log::{peak_memory_mb, test_line, timedelta, train_line, RunLog, TrainFigures};
use self::state::{arch_name, Checkpoint, SwinRun};
use self::targets::{mixup_targets, soft_target_cross_entropy};
use crate::checkpoint::load_checked;
use crate::cli::SwinArgs;
use crate::ddp::Collective;
use crate::error::TrainError;
use crate::meters::{topk_accuracy, AverageMeter, MeterFormat};
use crate::mixed::{loss_and_grads, loss_and_grads_by, LossScaler};
use crate::optim::clip_grad_norm;
use crate::parity::ParitySet;
use crate::run::RunOutput;

/// The top-k accuracies the recipe reports.
const TOPK: [usize; 2] = [1, 5];
/// Forward passes before and during `--throughput`'s measurement (the official 50 and 30).
const THROUGHPUT_WARMUP: usize = 50;
const THROUGHPUT_TIMED: usize = 30;

/// One epoch's figures, as written to `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SwinEpoch {
    /// Epoch number, from 0.
    pub epoch: usize,
    /// Learning rate of the epoch's last update.
    pub lr: f64,
    /// Mean training loss (over the accumulation steps, as logged).
    pub train_loss: f64,
    /// Mean gradient norm before clipping.
    pub grad_norm: f64,
    /// Mean validation loss.
    pub val_loss: f64,
    /// Validation Acc@1 in percent.
    pub acc1: f64,
    /// Validation Acc@5 (k capped at the class count) in percent.
    pub acc5: f64,
    /// The best Acc@1 so far.
    pub max_accuracy: f64,
    /// Wall time of the training pass in seconds.
    pub train_seconds: f64,
    /// Wall time of the epoch (train, validate, save) in seconds.
    pub seconds: f64,
    /// Training images per second over all workers.
    pub images_per_second: f64,
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct SwinSummary {
    /// The epochs this invocation trained.
    pub epochs: Vec<SwinEpoch>,
    /// The last validation.
    pub last: Option<Evaluation>,
    /// The best Acc@1, resumed epochs included.
    pub max_accuracy: f64,
}

/// A validation pass's averages.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    /// Mean loss per image.
    pub loss: f64,
    /// Acc@1 in percent.
    pub acc1: f64,
    /// Acc@5 in percent.
    pub acc5: f64,
}

/// The data of a run: both splits, the classes, and the validation loader.
struct Data {
    train: Arc<ImageFolder>,
    /// The package's parity images (rank 0's; empty elsewhere).
    parity: ParitySet,
    val_loader: ClassifyLoader,
    val_images: usize,
    classes: Vec<String>,
}

/// Runs the job (training, `--eval` or `--throughput`) as worker `dist` on `device`.
pub fn run<B: AutodiffBackend>(
    args: &SwinArgs,
    dist: &Collective<B::InnerBackend>,
    device: B::Device,
) -> Result<SwinSummary, TrainError> {
    let mut c = settings::resolve(args)?;
    let root = dist.is_root();
    let mut log = if c.eval_mode || c.throughput_mode {
        RunLog::stdout(root)
    } else {
        RunLog::open(Path::new(&c.output), root)?
    };
    let data = open_data(&c, dist)?;
    c.model.num_classes = data.classes.len();
    let shape = settings::model_config(&c, data.classes.len())?;
    if c.eval_mode || c.throughput_mode {
        return evaluate_only::<B>(&c, shape, &data, dist, &mut log, &device);
    }

    let batch = c.data.batch_size;
    let train_sampler = dist.shard(EpochSampler::new(data.train.len(), true, 0))?;
    let steps = train_sampler.num_samples() / batch;
    if steps == 0 {
        return Err(TrainError::Flag(format!(
            "DATA.BATCH_SIZE {batch} is more than the {} training images of each of the {} workers \
             (the official loader drops the last partial batch)",
            train_sampler.num_samples(),
            dist.world()
        )));
    }
    let updates_per_epoch = (steps / c.train.accumulation_steps).max(1);
    // The official autocast runs on CUDA only.
    let amp = c.amp_enable && matches!(args.device.choice, DeviceChoice::Cuda(_));
    let mut run = SwinRun::<B>::new(
        &c,
        amp,
        shape,
        &data.classes,
        updates_per_epoch,
        dist,
        &mut log,
        &device,
    )?;
    run.parity = data.parity.clone();
    if root {
        run.repair_package()?;
    }
    let seed = run.state.seed;
    let train_sampler = dist.shard(EpochSampler::new(data.train.len(), true, seed))?;
    let train_loader = ClassifyLoader::new(
        data.train.clone(),
        train_transform(&c)?,
        train_sampler,
        loader_config(&c),
    )?;
    let mut output = RunOutput::open(dist, Path::new(&c.output), "swin", &c, seed, run.resumed)?;
    if run.resumed {
        let eval = validate(&run.model.valid(), dist, &data.val_loader, &c, &mut log, &device)?;
        log.line(&format!(
            "Accuracy of the network on the {} test images: {:.1}%",
            data.val_images, eval.acc1
        ));
    }
    log.line("Start training");
    let started = Instant::now();
    let mut history = Vec::new();
    let mut last = None;
    for epoch in run.state.epoch..c.train.epochs {
        let epoch_started = Instant::now();
        let pass = train_one_epoch(&c, epoch, steps, &mut run, &train_loader, &mut log)?;
        let train_seconds = epoch_started.elapsed().as_secs_f64();
        let eval = validate(&run.model.valid(), dist, &data.val_loader, &c, &mut log, &device)?;
        log.line(&format!(
            "Accuracy of the network on the {} test images: {:.1}%",
            data.val_images, eval.acc1
        ));
        // A run whose accuracy never leaves 0 (a first epoch over 21,841 classes) still gets
        // its package.
        let is_best = run.state.record_score(eval.acc1) || !run.has_package();
        log.line(&format!("Max accuracy: {:.2}%", run.state.best_score));
        run.state.epoch = epoch + 1;
        if root {
            let save_epoch = epoch % c.save_freq == 0 || epoch + 1 == c.train.epochs;
            run.save(epoch, save_epoch, is_best, &mut log)?;
        }
        let m = SwinEpoch {
            epoch,
            lr: pass.lr,
            train_loss: pass.loss,
            grad_norm: pass.grad_norm,
            val_loss: eval.loss,
            acc1: eval.acc1,
            acc5: eval.acc5,
            max_accuracy: run.state.best_score,
            train_seconds,
            seconds: epoch_started.elapsed().as_secs_f64(),
            images_per_second: pass.images as f64 / train_seconds,
        };
        output.record_epoch(epoch, m.seconds, m.images_per_second, &m)?;
        history.push(m);
        last = Some(eval);
    }
    log.line(&format!("Training time {}", timedelta(started.elapsed().as_secs())));
    Ok(SwinSummary {
        epochs: history,
        last,
        max_accuracy: run.state.best_score,
    })
}

/// Both splits of `DATA.DATASET` under `DATA.DATA_PATH` and the validation loader.
fn open_data<R: Backend>(c: &SwinConfigFile, dist: &Collective<R>) -> Result<Data, TrainError> {
    let path = Path::new(&c.data.data_path);
    let (train, val) = if c.data.dataset == settings::IMAGENET_22K {
        open_in22k_splits(path).map_err(|e| TrainError::Flag(e.to_string()))?
    } else {
        open_splits(path)?
    };
    let classes = train.classes().to_vec();
    if dist.is_root() {
        tracing::info!(
            train = train.len(),
            val = val.len(),
            classes = classes.len(),
            data = %path.display(),
            "{} opened",
            c.data.dataset
        );
    }
    let val_images = val.len();
    let parity = if dist.is_root() {
        ParitySet::from_folder(&val, &eval_transform(c)?)?
    } else {
        ParitySet::default()
    };
    let val_sampler = dist.shard(EpochSampler::new(val.len(), false, 0))?.without_padding();
    let val_loader = ClassifyLoader::new(Arc::new(val), eval_transform(c)?, val_sampler, loader_config(c))?;
    Ok(Data {
        train: Arc::new(train),
        parity,
        val_loader,
        val_images,
        classes,
    })
}

/// `DATA.BATCH_SIZE` per worker, `DATA.NUM_WORKERS` decoding threads.
fn loader_config(c: &SwinConfigFile) -> LoaderConfig {
    LoaderConfig {
        batch_size: c.data.batch_size,
        workers: c.data.num_workers,
        prefetch_batches: 2 * c.data.num_workers.max(1),
    }
}

/// timm's training and evaluation transforms as `build_transform` configures them.
fn augmentation(c: &SwinConfigFile) -> SwinAugConfig {
    SwinAugConfig {
        img_size: c.data.img_size as u32,
        interpolation: c.data.interpolation.clone(),
        color_jitter: c.aug.color_jitter,
        auto_augment: c.aug.auto_augment.clone(),
        re_prob: c.aug.reprob,
        re_mode: c.aug.remode.clone(),
        re_count: c.aug.recount as u32,
        test_crop: c.test.crop,
    }
}

/// The official training transform: RandomResizedCrop, flip, RandAugment (or colour
/// jitter), normalisation, random erasing.
fn train_transform(c: &SwinConfigFile) -> Result<ClassifyTransform, TrainError> {
    augmentation(c)
        .train_transform()
        .map_err(|e| TrainError::Flag(e.to_string()))
}

/// The official evaluation transform: resize to `IMG_SIZE·256/224` and centre-crop
/// (`TEST.CROP`), or a square resize.
fn eval_transform(c: &SwinConfigFile) -> Result<ClassifyTransform, TrainError> {
    augmentation(c)
        .eval_transform()
        .map_err(|e| TrainError::Flag(e.to_string()))
}

/// The seed of one batch's Mixup/CutMix draw: (run seed, epoch, batch, rank).
fn mix_seed(seed: u64, epoch: usize, batch: usize, rank: usize) -> u64 {
    let mix = kiln_data::loader::splitmix64;
    mix(mix(mix(mix(seed) ^ epoch as u64) ^ batch as u64) ^ rank as u64)
}

/// What one training pass measured.
struct Pass {
    loss: f64,
    grad_norm: f64,
    lr: f64,
    images: usize,
}

/// One epoch of `steps` full batches (`train_one_epoch`).
fn train_one_epoch<B: AutodiffBackend>(
    c: &SwinConfigFile,
    epoch: usize,
    steps: usize,
    run: &mut SwinRun<B>,
    loader: &ClassifyLoader,
    log: &mut RunLog,
) -> Result<Pass, TrainError> {
    let device = run.device.clone();
    let classes = run.state.classes.len();
    let accumulation = c.train.accumulation_steps;
    let mix = settings::batch_mix(c);
    // Stochastic depth draws from the backend's generator: seeded per epoch, so a resumed
    // epoch draws what the uninterrupted run drew.
    B::seed(&device, mix_seed(run.state.seed, epoch, usize::MAX, run.dist.rank()));
    let mut accumulator = GradientsAccumulator::<SwinTransformer<B>>::new();
    let (mut batch_time, mut loss_meter, mut norm_meter, mut scale_meter) = (
        AverageMeter::new("time", MeterFormat::Seconds),
        AverageMeter::new("loss", MeterFormat::Exp4),
        AverageMeter::new("grad_norm", MeterFormat::Exp4),
        AverageMeter::new("loss_scale", MeterFormat::Exp4),
    );
    let (mut lr, mut images) = (0.0, 0);
    let mut end = Instant::now();
    for (idx, batch) in loader.epoch(epoch as u64).take(steps).enumerate() {
        let ClassifyBatch {
            images: mut pixels,
            targets: labels,
            shape,
        } = batch?;
        let mut rng = StdRng::seed_from_u64(mix_seed(run.state.seed, epoch, idx, run.dist.rank()));
        let mixed = mix.apply(&mut pixels, shape, &mut rng);
        let labels: Vec<usize> = labels.iter().map(|&l| l as usize).collect();
        let n = labels.len();
        let soft = mixup_targets(&labels, classes, mixed.lam(), c.model.label_smoothing);
        let x = Tensor::<B, 4>::from_data(TensorData::new(pixels, shape), &device);
        let y = Tensor::<B, 2>::from_data(TensorData::new(soft, [n, classes]), &device);
        let scale = run.state.loss_scale.as_ref().map(LossScaler::scale);
        let (loss, grads) = forward_backward(&run.model, x, y, accumulation, scale, c.train.use_checkpoint);
        let update = (idx + 1) % accumulation == 0;
        let grads = if accumulation > 1 {
            accumulator.accumulate(&run.model, grads);
            update.then(|| accumulator.grads())
        } else {
            Some(grads)
        };
        if let (true, Some(grads)) = (update, grads) {
            let grads = run.dist.average_grads(grads, &run.model)?;
            let (grads, norm) = clip_grad_norm(grads, &run.model, c.train.clip_grad);
            lr = run.scheduler.step();
            // GradScaler skips the step whose gradients overflowed, and halves the scale.
            let finite = norm.is_finite();
            if let Some(scaler) = run.state.loss_scale.as_mut() {
                scaler.update(finite);
            }
            if finite {
                let model = run.decay.apply(run.model.clone(), lr * c.train.weight_decay);
                run.model = run.optim.step(lr, model, grads);
            }
            norm_meter.update(norm, 1);
        }
        loss_meter.update(loss.into_scalar().elem::<f64>(), n);
        scale_meter.update(scale.unwrap_or(1.0), 1);
        images += n;
        batch_time.update(end.elapsed().as_secs_f64(), 1);
        end = Instant::now();
        if idx % c.print_freq == 0 {
            log.line(&train_line(&TrainFigures {
                epoch: [epoch, c.train.epochs],
                step: [idx, steps],
                eta_seconds: batch_time.avg() * (steps - idx) as f64,
                lr,
                wd: c.train.weight_decay,
                time: &batch_time,
                loss: &loss_meter,
                grad_norm: &norm_meter,
                loss_scale: &scale_meter,
                mem_mb: peak_memory_mb(),
            }));
        }
    }
    let device_inner = device.clone();
    let totals = [loss_meter.totals(), norm_meter.totals(), [images as f64, 0.0]].concat();
    let summed = run.dist.sum(&totals, &device_inner)?;
    loss_meter.set_totals([summed[0], summed[1]]);
    norm_meter.set_totals([summed[2], summed[3]]);
    let elapsed = batch_time.totals()[0];
    log.line(&format!("EPOCH {epoch} training takes {}", timedelta(elapsed as u64)));
    Ok(Pass {
        loss: loss_meter.avg(),
        grad_norm: norm_meter.avg(),
        lr,
        images: summed[4] as usize,
    })
}

/// The loss (over `accumulation`) of `model` on images `x` against soft targets `y`, and its
/// gradients; with a loss `scale`, in mixed precision as autocast with GradScaler
/// ([`loss_and_grads`]).
fn forward_backward<B: AutodiffBackend>(
    model: &SwinTransformer<B>,
    x: Tensor<B, 4>,
    y: Tensor<B, 2>,
    accumulation: usize,
    scale: Option<f64>,
    recompute: bool,
) -> (Tensor<B, 1>, GradientsParams) {
    let loss_of = |logits: Tensor<B, 2>| {
        soft_target_cross_entropy(logits.cast(FloatDType::F32), y).div_scalar(accumulation as f64)
    };
    if recompute {
        // TRAIN.USE_CHECKPOINT: each block's activations recomputed in the backward pass.
        let (loss, (), grads) = loss_and_grads_by(model, scale, |model, dtype, multiplier| {
            let (loss, grads) = model.loss_and_grads_recomputed(x.cast(dtype), multiplier, loss_of);
            (loss, (), grads)
        });
        return (loss, grads);
    }
    let (loss, (), grads) = loss_and_grads(model, scale, |model, dtype| (loss_of(model.forward(x.cast(dtype))), ()));
    (loss, grads)
}

/// One pass over the validation set (`validate`): the official `Test:` lines and
/// ` * Acc@1 … Acc@5 …`, figures summed over every worker's shard.
fn validate<B: Backend>(
    model: &SwinTransformer<B>,
    dist: &Collective<B>,
    loader: &ClassifyLoader,
    c: &SwinConfigFile,
    log: &mut RunLog,
    device: &B::Device,
) -> Result<Evaluation, TrainError> {
    let criterion = CrossEntropyLossConfig::new().init(device);
    let classes = model.head.weight.dims()[1];
    let num_batches = loader.num_batches();
    let (mut time, mut loss_meter, mut acc1, mut acc5) = (
        AverageMeter::new("Time", MeterFormat::Seconds),
        AverageMeter::new("Loss", MeterFormat::Exp4),
        AverageMeter::new("Acc@1", MeterFormat::Percent),
        AverageMeter::new("Acc@5", MeterFormat::Percent),
    );
    let mut end = Instant::now();
    for (idx, batch) in loader.epoch(0).enumerate() {
        let batch = batch?;
        let n = batch.targets.len();
        let x = Tensor::<B, 4>::from_data(TensorData::new(batch.images, batch.shape), device);
        let y = Tensor::<B, 1, Int>::from_data(TensorData::new(batch.targets.clone(), [n]), device);
        let logits = model.forward(x);
        let loss = criterion.forward(logits.clone(), y);
        let scores: Vec<f32> = logits.into_data().convert::<f32>().to_vec().expect("f32 scores");
        let acc = topk_accuracy(&scores, classes, &batch.targets, &TOPK);
        loss_meter.update(loss.into_scalar().elem::<f64>(), n);
        acc1.update(acc[0], n);
        acc5.update(acc[1], n);
        time.update(end.elapsed().as_secs_f64(), 1);
        end = Instant::now();
        if idx % c.print_freq == 0 {
            log.line(&test_line(
                [idx, num_batches],
                &time,
                &loss_meter,
                &acc1,
                &acc5,
                peak_memory_mb(),
            ));
        }
    }
    let totals = [loss_meter.totals(), acc1.totals(), acc5.totals()].concat();
    let summed = dist.sum(&totals, device)?;
    loss_meter.set_totals([summed[0], summed[1]]);
    acc1.set_totals([summed[2], summed[3]]);
    acc5.set_totals([summed[4], summed[5]]);
    log.line(&format!(" * Acc@1 {:.3} Acc@5 {:.3}", acc1.avg(), acc5.avg()));
    Ok(Evaluation {
        loss: loss_meter.avg(),
        acc1: acc1.avg(),
        acc5: acc5.avg(),
    })
}

/// `--eval` (validate the `--resume` checkpoint or package, the `--pretrained` weights or a
/// fresh model) or `--throughput` (images per second of the forward pass on the first
/// validation batch).
fn evaluate_only<B: AutodiffBackend>(
    c: &SwinConfigFile,
    shape: SwinConfig,
    data: &Data,
    dist: &Collective<B::InnerBackend>,
    log: &mut RunLog,
    device: &B::Device,
) -> Result<SwinSummary, TrainError> {
    B::seed(device, c.seed);
    let model = evaluation_model::<B>(c, &shape, &data.classes, log, device)?;
    if c.throughput_mode {
        throughput(&model, &data.val_loader, log, device)?;
        return Ok(SwinSummary {
            epochs: Vec::new(),
            last: None,
            max_accuracy: 0.0,
        });
    }
    let eval = validate(&model, dist, &data.val_loader, c, log, device)?;
    log.line(&format!(
        "Accuracy of the network on the {} test images: {:.1}%",
        data.val_images, eval.acc1
    ));
    Ok(SwinSummary {
        epochs: Vec::new(),
        last: Some(eval),
        max_accuracy: eval.acc1,
    })
}

fn evaluation_model<B: AutodiffBackend>(
    c: &SwinConfigFile,
    shape: &SwinConfig,
    classes: &[String],
    log: &mut RunLog,
    device: &B::Device,
) -> Result<SwinTransformer<B::InnerBackend>, TrainError> {
    let model = shape.init::<B>(device);
    if c.model.resume.is_empty() {
        if c.model.pretrained.is_empty() {
            return Ok(model.valid());
        }
        return Ok(pretrained::load::<B>(model, Path::new(&c.model.pretrained), log)?.valid());
    }
    let path = Path::new(&c.model.resume);
    if path.is_dir() {
        let config = PackageConfig::read(path)?;
        if config.kiln.swin.as_ref() != Some(shape)
            && config.kiln.swin.as_ref().map(arch_name) != Some(arch_name(shape))
        {
            return Err(TrainError::Flag(format!(
                "{}: the package's network ({}) is not the config's ({})",
                path.display(),
                config.kiln.swin.as_ref().map_or("not a Swin".into(), arch_name),
                arch_name(shape)
            )));
        }
        if config.kiln.labels.len() != classes.len() {
            return Err(TrainError::Flag(format!(
                "{}: the package has {} classes, the data {}",
                path.display(),
                config.kiln.labels.len(),
                classes.len()
            )));
        }
        log.line(&format!("=> loading model package '{}'", path.display()));
        return Ok(load_weights(path, &config, model)?.valid());
    }
    let checkpoint = Checkpoint::<B>::load::<B>(path, device)?;
    log.line(&format!(
        "==============> Resuming form {}....................",
        path.display()
    ));
    let model = load_checked(model, checkpoint.model, path)?;
    log.line(&format!(
        "=> loaded successfully '{}' (epoch {})",
        path.display(),
        checkpoint.state.epoch.saturating_sub(1)
    ));
    Ok(model.valid())
}

/// The official `throughput`: 50 forward passes of the first validation batch, then 30
/// timed ones.
fn throughput<B: Backend>(
    model: &SwinTransformer<B>,
    loader: &ClassifyLoader,
    log: &mut RunLog,
    device: &B::Device,
) -> Result<(), TrainError> {
    let Some(batch) = loader.epoch(0).next() else {
        return Err(TrainError::Flag("the validation set is empty".into()));
    };
    let batch = batch?;
    let n = batch.targets.len();
    let x = Tensor::<B, 4>::from_data(TensorData::new(batch.images, batch.shape), device);
    for _ in 0..THROUGHPUT_WARMUP {
        let _ = model.forward(x.clone()).into_data();
    }
    log.line(&format!("throughput averaged with {THROUGHPUT_TIMED} times"));
    let started = Instant::now();
    for _ in 0..THROUGHPUT_TIMED {
        let _ = model.forward(x.clone()).into_data();
    }
    let seconds = started.elapsed().as_secs_f64();
    log.line(&format!(
        "batch_size {n} throughput {}",
        (THROUGHPUT_TIMED * n) as f64 / seconds
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use burn_flex::Flex;

    /// The mixed-precision step's loss and gradients track the f32 step's on the micro model.
    #[test]
    fn the_half_precision_step_tracks_the_f32_step() {
        type B = Autodiff<Flex>;
        let device = Default::default();
        let mut shape = SwinConfig::new(16, &[2, 2], &[1, 2], 3);
        (shape.img_size, shape.drop_path_rate) = (56, 0.0);
        B::seed(&device, 3);
        let model = shape.init::<B>(&device);
        let x = Tensor::<B, 4>::random([2, 3, 56, 56], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
        let y = Tensor::<B, 2>::from_data(TensorData::new(mixup_targets(&[0, 2], 3, 0.7, 0.1), [2, 3]), &device);
        let (loss32, grads32) = forward_backward(&model, x.clone(), y.clone(), 2, None, false);
        let (loss16, grads16) = forward_backward(&model, x.clone(), y.clone(), 2, Some(1024.0), false);
        let (a, b): (f64, f64) = (loss32.into_scalar().elem(), loss16.into_scalar().elem());
        assert!((a - b).abs() < 1e-2 * a.abs(), "{a} vs {b}");
        let grad = |g: &GradientsParams| -> Vec<f32> {
            let w = g.get::<Flex, 2>(model.head.weight.id).expect("a head gradient");
            assert_eq!(w.dtype(), burn::tensor::DType::F32);
            w.into_data().to_vec().unwrap()
        };
        let (g32, g16) = (grad(&grads32), grad(&grads16));
        let dot: f32 = g32.iter().zip(&g16).map(|(p, q)| p * q).sum();
        let norm = |v: &[f32]| v.iter().map(|p| p * p).sum::<f32>().sqrt();
        let cosine = dot / (norm(&g32) * norm(&g16));
        assert!(cosine > 0.999, "{cosine}");
        // `--use-checkpoint` recomputes the blocks and gives the same step, in f32 and in
        // mixed precision.
        for (scale, want) in [(None, &g32), (Some(1024.0), &g16)] {
            let (_, recomputed) = forward_backward(&model, x.clone(), y.clone(), 2, scale, true);
            let got = grad(&recomputed);
            let largest = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (g, w) in got.iter().zip(want.iter()) {
                assert!((g - w).abs() <= 1e-3 * largest, "{scale:?}: {g} against {w}");
            }
        }
    }

    #[test]
    fn mixing_seeds_differ_by_epoch_batch_and_rank() {
        let a = mix_seed(1, 0, 0, 0);
        assert_eq!(a, mix_seed(1, 0, 0, 0));
        for other in [
            mix_seed(2, 0, 0, 0),
            mix_seed(1, 1, 0, 0),
            mix_seed(1, 0, 1, 0),
            mix_seed(1, 0, 0, 1),
        ] {
            assert_ne!(a, other);
        }
    }
}
