//! `kiln-train imagenet`: pytorch/examples' ImageNet `main.py` on an ImageFolder set. ResNet,
//! SGD with momentum and weight decay, StepLR(30, 0.1), cross-entropy, Acc@1/Acc@5, a
//! checkpoint every epoch (copied to `model_best.pth.tar` when Acc@1 improves, when the model
//! package `model/` is rewritten too), exact `--resume`. Distributed like main.py with DDP:
//! each worker trains on its shard with the node's batch divided by its devices, gradients
//! are averaged, validation metrics summed over shards, and rank 0 logs and writes.

use std::sync::Arc;
use std::time::Instant;

use burn::lr_scheduler::step::StepLrScheduler;
use burn::lr_scheduler::LrScheduler;
use burn::module::{AutodiffModule, Module};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::Optimizer;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::FloatDType;
use serde::Serialize;

use kiln_data::{open_splits, ClassifyBatch, ClassifyLoader, ClassifyTransform, EpochSampler, LoaderConfig};
use kiln_models::{
    load_pretrained, load_weights, resnet_package_config, PackageConfig, ResNet, ResNetArch, ResNetConfig,
};

use crate::checkpoint::{capture, load_checked, CheckpointRecord, RunState, BEST_FILE, CHECKPOINT_FILE};
use crate::cli::ImagenetArgs;
use crate::ddp::Collective;
use crate::error::TrainError;
use crate::meters::{progress_line, summary_line, topk_accuracy, AverageMeter, MeterFormat};
use crate::mixed::{loss_and_grads, LossScaler};
use crate::optim::{Sgd, SgdConfig};
use crate::parity::ParitySet;
use crate::progress::PassProgress;
use crate::run::{resolve_seed, RunOutput, SavePolicy};
use crate::schedule::epoch_step_lr;

/// StepLR's period and factor in the recipe.
const LR_STEP_EPOCHS: usize = 30;
const LR_GAMMA: f64 = 0.1;
/// The top-k accuracies the recipe reports.
const TOPK: [usize; 2] = [1, 5];

type ResNetOptimizer<B> = OptimizerAdaptor<Sgd, ResNet<B>, B>;
type Checkpoint<B> = CheckpointRecord<
    <ResNet<B> as Module<B>>::Record,
    <ResNetOptimizer<B> as Optimizer<ResNet<B>, B>>::Record,
    <StepLrScheduler as LrScheduler>::Record<B>,
>;

/// One epoch's figures, as written to `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImagenetEpoch {
    /// Epoch number, from 0 like the original's log.
    pub epoch: usize,
    /// Learning rate the epoch trained at.
    pub lr: f64,
    /// Mean training loss per sample.
    pub train_loss: f64,
    /// Training Acc@1 in percent (on augmented crops).
    pub train_acc1: f64,
    /// Mean validation loss per sample.
    pub val_loss: f64,
    /// Validation Acc@1 in percent.
    pub acc1: f64,
    /// Validation Acc@5 (k capped at the class count) in percent.
    pub acc5: f64,
    /// Wall time of the training pass in seconds.
    pub train_seconds: f64,
    /// Wall time of the whole epoch (train + validate + checkpoint) in seconds.
    pub seconds: f64,
    /// Training images per second.
    pub images_per_second: f64,
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct ImagenetSummary {
    /// The epochs this invocation ran.
    pub epochs: Vec<ImagenetEpoch>,
    /// Validation Acc@1 and Acc@5 of the last evaluation.
    pub last: Evaluation,
    /// The best validation Acc@1 of the run, including resumed epochs.
    pub best_acc1: f64,
}

/// A validation pass's averages.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    /// Mean loss per sample.
    pub loss: f64,
    /// Acc@1 in percent.
    pub acc1: f64,
    /// Acc@5 in percent (k capped at the class count).
    pub acc5: f64,
}

/// Runs the job (training, or `-e` evaluation) as worker `dist` on `device` of autodiff
/// backend `B`.
pub fn run<B: AutodiffBackend>(
    args: &ImagenetArgs,
    dist: &Collective<B::InnerBackend>,
    device: B::Device,
) -> Result<ImagenetSummary, TrainError> {
    let (train_set, val_set) = open_splits(&args.data)?;
    let classes = train_set.classes().to_vec();
    if dist.is_root() {
        tracing::info!(
            train = train_set.len(),
            val = val_set.len(),
            classes = classes.len(),
            data = %args.data.display(),
            "ImageFolder opened"
        );
    }
    let loader_config = loader_config(args, dist)?;
    let eval_transform = ClassifyTransform::Eval {
        resize: eval_resize(args.image_size) as u32,
        crop: args.image_size as u32,
    };
    // Rank 0 writes the package, with its parity images.
    let parity = if dist.is_root() {
        ParitySet::from_folder(&val_set, &eval_transform)?
    } else {
        ParitySet::default()
    };
    let val_sampler = dist
        .shard(EpochSampler::new(val_set.len(), false, 0))?
        .without_padding();
    let val_loader = ClassifyLoader::new(Arc::new(val_set), eval_transform, val_sampler, loader_config)?;
    if args.evaluate {
        return evaluate_only::<B>(args, dist, &classes, &val_loader, &device);
    }

    let mut run = RunSetup::<B>::new(args, dist, &classes, &device)?;
    run.parity = parity;
    if dist.is_root() {
        run.repair_package(args.arch)?;
    }
    let train_transform = ClassifyTransform::Train {
        size: args.image_size as u32,
    };
    let train_sampler = dist.shard(EpochSampler::new(train_set.len(), true, run.state.seed))?;
    let train_loader = ClassifyLoader::new(Arc::new(train_set), train_transform, train_sampler, loader_config)?;
    let resumed = args.resume_path().is_some();
    let mut output = RunOutput::open(dist, &args.output, "imagenet", args, run.state.seed, resumed)?;
    let mut history = Vec::new();
    let mut last = None;
    for epoch in run.state.epoch..args.epochs {
        let lr = run.scheduler.step();
        let started = Instant::now();
        let (train_loss, train_acc1, images) = train_epoch(args, epoch, lr, &mut run, &train_loader)?;
        let train_seconds = started.elapsed().as_secs_f64();
        let eval = run.validate(&val_loader, args.print_freq)?;
        let is_best = run.state.record_score(eval.acc1);
        run.state.epoch = epoch + 1;
        if dist.is_root() {
            run.save(is_best)?;
        }
        let m = ImagenetEpoch {
            epoch,
            lr,
            train_loss,
            train_acc1,
            val_loss: eval.loss,
            acc1: eval.acc1,
            acc5: eval.acc5,
            train_seconds,
            seconds: started.elapsed().as_secs_f64(),
            images_per_second: images as f64 / train_seconds,
        };
        output.record_epoch(epoch, m.seconds, m.images_per_second, &m)?;
        history.push(m);
        last = Some(eval);
    }
    let last = match last {
        Some(eval) => eval,
        None => run.validate(&val_loader, args.print_freq)?,
    };
    Ok(ImagenetSummary {
        epochs: history,
        last,
        best_acc1: run.state.best_score,
    })
}

/// This worker's loader: the node's batch and `-j` threads divided by its devices.
fn loader_config<R: Backend>(args: &ImagenetArgs, dist: &Collective<R>) -> Result<LoaderConfig, TrainError> {
    let batch_size = dist.per_device(args.batch_size, false, "--batch-size")?;
    let workers = dist.per_device(args.workers, true, "--workers")?;
    Ok(LoaderConfig {
        batch_size,
        workers,
        prefetch_batches: 2 * workers.max(1),
    })
}

/// Sums meters over all workers, in place.
fn reduce_meters<R: Backend>(
    dist: &Collective<R>,
    meters: &mut [&mut AverageMeter],
    device: &R::Device,
) -> Result<(), TrainError> {
    let totals: Vec<f64> = meters.iter().flat_map(|m| m.totals()).collect();
    let summed = dist.sum(&totals, device)?;
    for (meter, pair) in meters.iter_mut().zip(summed.chunks(2)) {
        meter.set_totals([pair[0], pair[1]]);
    }
    Ok(())
}

/// The model, optimizer, scheduler and run state being trained.
struct RunSetup<'a, B: AutodiffBackend> {
    dist: &'a Collective<B::InnerBackend>,
    model: ResNet<B>,
    optim: ResNetOptimizer<B>,
    scheduler: StepLrScheduler,
    state: RunState,
    config: PackageConfig,
    /// The held-out images the package carries for serving's parity check.
    parity: ParitySet,
    saves: SavePolicy,
    device: B::Device,
}

impl<'a, B: AutodiffBackend> RunSetup<'a, B> {
    /// A fresh (or `--pretrained`) model, or everything restored from `--resume`; rank 0's
    /// seed and weights on every worker.
    fn new(
        args: &ImagenetArgs,
        dist: &'a Collective<B::InnerBackend>,
        classes: &[String],
        device: &B::Device,
    ) -> Result<Self, TrainError> {
        let resume = args.resume_path();
        let checkpoint = resume.map(|p| Checkpoint::<B>::load::<B>(p, device)).transpose()?;
        let seed = resolve_seed(args.seed, checkpoint.as_ref().map(|c| c.state.seed), dist, device)?;
        let mut model = ResNetConfig::new(args.arch, classes.len()).init::<B>(device);
        let root = dist.is_root();
        if root {
            println!("=> creating model '{}'", args.arch);
        }
        if let Some(path) = &args.pretrained {
            let (loaded, report) = load_pretrained(model, path)?;
            if root {
                println!("=> using pre-trained weights '{}' ({report})", path.display());
            }
            model = loaded;
        }
        let mut optim = sgd(args).init::<B, ResNet<B>>();
        let mut scheduler = epoch_step_lr(args.lr, LR_STEP_EPOCHS, LR_GAMMA).map_err(TrainError::Flag)?;
        let mut state = RunState {
            epoch: args.start_epoch,
            arch: args.arch.to_string(),
            best_score: 0.0,
            seed,
            classes: classes.to_vec(),
            loss_scale: None,
        };
        if let (Some(path), Some(checkpoint)) = (resume, checkpoint) {
            checkpoint.state.check_resumable(path, &state)?;
            if root {
                println!("=> loading checkpoint '{}'", path.display());
            }
            model = load_checked(model, checkpoint.model, path)?;
            optim = optim.load_record(checkpoint.optimizer);
            scheduler = scheduler.load_record::<B>(checkpoint.scheduler);
            state = checkpoint.state;
            if root {
                println!("=> loaded checkpoint '{}' (epoch {})", path.display(), state.epoch);
            }
        }
        // With --amp the loss scale carries on from the checkpoint (GradScaler's state).
        state.loss_scale = args.amp.then(|| state.loss_scale.take().unwrap_or_default());
        let model = dist.sync_module(model)?;
        let mut config = resnet_package_config(args.arch, classes);
        set_input_size(&mut config, args.image_size);
        Ok(Self {
            dist,
            model,
            optim,
            scheduler,
            state,
            config,
            parity: ParitySet::default(),
            saves: SavePolicy::new(&args.output, CHECKPOINT_FILE, BEST_FILE),
            device: device.clone(),
        })
    }

    /// Validates the current weights in evaluation mode, with rank 0's BatchNorm statistics on
    /// every worker (DDP broadcasts buffers from rank 0).
    fn validate(&mut self, loader: &ClassifyLoader, print_freq: usize) -> Result<Evaluation, TrainError> {
        self.model = self.dist.sync_module(self.model.clone())?;
        let classes = self.state.classes.len();
        validate(
            &self.model.valid(),
            self.dist,
            loader,
            classes,
            print_freq,
            &self.device,
        )
    }

    /// Makes `model/` hold the weights `model_best.pth.tar` recorded ([`SavePolicy::repair`]).
    fn repair_package(&self, arch: ResNetArch) -> Result<(), TrainError> {
        self.saves.repair(|best, package| {
            let checkpoint = Checkpoint::<B>::load::<B>(best, &self.device)?;
            let fresh = ResNetConfig::new(arch, self.state.classes.len()).init::<B>(&self.device);
            let model = load_checked(fresh, checkpoint.model, best)?;
            self.write_package(package, &model.valid())
        })
    }

    /// The package of `model` at `dir`, with the parity images and their probabilities.
    fn write_package(&self, dir: &std::path::Path, model: &ResNet<B::InnerBackend>) -> Result<(), TrainError> {
        let folded = model.clone().fold_batch_norms();
        self.parity
            .write_package(dir, &self.config, model, |x| folded.forward(x), false, &self.device)?;
        Ok(())
    }

    /// `checkpoint.pth.tar` every epoch; on a new best the package first and
    /// `model_best.pth.tar` after ([`SavePolicy::save`]).
    fn save(&self, is_best: bool) -> Result<(), TrainError> {
        self.saves.save(
            is_best,
            |package| self.write_package(package, &self.model.valid()),
            |latest| {
                capture(&self.state, &self.model, &self.optim, &self.scheduler).save::<B>(latest)?;
                Ok(())
            },
            None,
        )
    }
}

/// torch's `SGD(lr, momentum, weight_decay)`: decay added to the gradient, then momentum.
fn sgd(args: &ImagenetArgs) -> SgdConfig {
    SgdConfig::torch(args.momentum, args.weight_decay)
}

/// Input size `size`, validation resize `size × 256 / 224` (224 → 256).
fn set_input_size(config: &mut PackageConfig, size: usize) {
    config.kiln.input.height = size;
    config.kiln.input.width = size;
    config.kiln.input.resize_shorter = eval_resize(size);
}

/// The recipe's validation resize for crop `size`: 256 for 224, in proportion otherwise.
fn eval_resize(size: usize) -> usize {
    size * 256 / 224
}

/// A batch moved onto the device: images `[n, 3, S, S]` and class indices `[n]`.
fn to_tensors<B: Backend>(batch: ClassifyBatch, device: &B::Device) -> (Tensor<B, 4>, Tensor<B, 1, Int>, Vec<i64>) {
    let n = batch.targets.len();
    let images = Tensor::from_data(TensorData::new(batch.images, batch.shape), device);
    let targets = Tensor::from_data(TensorData::new(batch.targets.clone(), [n]), device);
    (images, targets, batch.targets)
}

/// Scores `[n, classes]` copied to the host as f32.
fn host_scores<B: Backend>(output: Tensor<B, 2>) -> Vec<f32> {
    output.into_data().convert::<f32>().to_vec().expect("f32 scores")
}

/// One training pass; returns the mean loss, the mean Acc@1 and the number of images.
fn train_epoch<B: AutodiffBackend>(
    args: &ImagenetArgs,
    epoch: usize,
    lr: f64,
    run: &mut RunSetup<B>,
    loader: &ClassifyLoader,
) -> Result<(f64, f64, usize), TrainError> {
    let device = run.device.clone();
    let num_batches = loader.num_batches();
    let classes = run.state.classes.len();
    let criterion = CrossEntropyLossConfig::new().init(&device);
    let mut batch_time = AverageMeter::new("Time", MeterFormat::Seconds);
    let mut data_time = AverageMeter::new("Data", MeterFormat::Seconds);
    let mut losses = AverageMeter::new("Loss", MeterFormat::Exp4);
    let mut top1 = AverageMeter::new("Acc@1", MeterFormat::Percent);
    let mut top5 = AverageMeter::new("Acc@5", MeterFormat::Percent);
    let progress = PassProgress::new(num_batches, format!("epoch {epoch}"), run.dist.is_root());
    let prefix = format!("Epoch: [{epoch}]");
    let mut images = 0;
    let mut end = Instant::now();
    for (i, batch) in loader.epoch(epoch as u64).enumerate() {
        let batch = batch?;
        data_time.update(end.elapsed().as_secs_f64(), 1);
        let (x, y, targets) = to_tensors::<B>(batch, &device);
        let n = targets.len();
        let scale = run.state.loss_scale.as_ref().map(LossScaler::scale);
        let (loss, output, grads) = loss_and_grads(&run.model, scale, |model, dtype| {
            let output = model.forward(x.cast(dtype)).cast(FloatDType::F32);
            (criterion.forward(output.clone(), y), output)
        });
        let acc = topk_accuracy(&host_scores(output.inner()), classes, &targets, &TOPK);
        let grads = run.dist.average_grads(grads, &run.model)?;
        // GradScaler skips the step whose gradients overflowed, and halves the scale.
        if LossScaler::takes_step(run.state.loss_scale.as_mut(), &grads, &run.model) {
            run.model = run.optim.step(lr, run.model.clone(), grads);
        }
        losses.update(loss.into_scalar().elem::<f64>(), n);
        top1.update(acc[0], n);
        top5.update(acc[1], n);
        images += n;
        batch_time.update(end.elapsed().as_secs_f64(), 1);
        end = Instant::now();
        progress.inc();
        if i % args.print_freq == 0 {
            let meters = [&batch_time, &data_time, &losses, &top1, &top5];
            progress.println(&progress_line(&prefix, i, num_batches, &meters));
        }
    }
    progress.finish();
    reduce_meters(run.dist, &mut [&mut losses, &mut top1], &device)?;
    let images = run.dist.sum(&[images as f64], &device)?[0] as usize;
    Ok((losses.avg(), top1.avg(), images))
}

/// One pass over the validation set, with the BatchNorms folded into the convolutions once
/// for the pass ([`ResNet::fold_batch_norms`]); prints progress lines and the
/// ` * Acc@1 … Acc@5 …` summary.
fn validate<B: Backend>(
    model: &ResNet<B>,
    dist: &Collective<B>,
    loader: &ClassifyLoader,
    classes: usize,
    print_freq: usize,
    device: &B::Device,
) -> Result<Evaluation, TrainError> {
    let model = model.clone().fold_batch_norms();
    let num_batches = loader.num_batches();
    let criterion = CrossEntropyLossConfig::new().init(device);
    let mut batch_time = AverageMeter::new("Time", MeterFormat::Seconds);
    let mut losses = AverageMeter::new("Loss", MeterFormat::Exp4);
    let mut top1 = AverageMeter::new("Acc@1", MeterFormat::Percent);
    let mut top5 = AverageMeter::new("Acc@5", MeterFormat::Percent);
    let progress = PassProgress::new(num_batches, "validate".into(), dist.is_root());
    let mut end = Instant::now();
    for (i, batch) in loader.epoch(0).enumerate() {
        let (x, y, targets) = to_tensors::<B>(batch?, device);
        let n = targets.len();
        let output = model.forward(x);
        let loss = criterion.forward(output.clone(), y);
        let acc = topk_accuracy(&host_scores(output), classes, &targets, &TOPK);
        losses.update(loss.into_scalar().elem::<f64>(), n);
        top1.update(acc[0], n);
        top5.update(acc[1], n);
        batch_time.update(end.elapsed().as_secs_f64(), 1);
        end = Instant::now();
        progress.inc();
        if i % print_freq == 0 {
            let meters = [&batch_time, &losses, &top1, &top5];
            progress.println(&progress_line("Test: ", i, num_batches, &meters));
        }
    }
    progress.finish();
    reduce_meters(dist, &mut [&mut losses, &mut top1, &mut top5], device)?;
    if dist.is_root() {
        println!("{}", summary_line(&[&top1, &top5]));
    }
    Ok(Evaluation {
        loss: losses.avg(),
        acc1: top1.avg(),
        acc5: top5.avg(),
    })
}

/// `-e`: evaluate a checkpoint (`--resume FILE`), a model package (`--resume DIR`), pretrained
/// weights or a fresh model on the validation set.
fn evaluate_only<B: AutodiffBackend>(
    args: &ImagenetArgs,
    dist: &Collective<B::InnerBackend>,
    classes: &[String],
    loader: &ClassifyLoader,
    device: &B::Device,
) -> Result<ImagenetSummary, TrainError> {
    let model = evaluation_model::<B>(args, dist.is_root(), classes, device)?;
    let last = validate(&model, dist, loader, classes.len(), args.print_freq, device)?;
    Ok(ImagenetSummary {
        epochs: Vec::new(),
        last,
        best_acc1: last.acc1,
    })
}

fn evaluation_model<B: AutodiffBackend>(
    args: &ImagenetArgs,
    root: bool,
    classes: &[String],
    device: &B::Device,
) -> Result<ResNet<B::InnerBackend>, TrainError> {
    B::seed(device, args.seed.unwrap_or(0));
    let model = ResNetConfig::new(args.arch, classes.len()).init::<B>(device);
    let Some(path) = args.resume_path() else {
        return match &args.pretrained {
            Some(p) => Ok(load_pretrained(model, p)?.0.valid()),
            None => Ok(model.valid()),
        };
    };
    if path.is_dir() {
        let config = PackageConfig::read(path)?;
        let wanted = resnet_package_config(args.arch, classes);
        if config.kiln.architecture != wanted.kiln.architecture || config.kiln.labels != wanted.kiln.labels {
            return Err(TrainError::Flag(format!(
                "{}: package is {} with labels {:?}, the run wants {} with {:?}",
                path.display(),
                config.kiln.architecture,
                config.kiln.labels,
                wanted.kiln.architecture,
                wanted.kiln.labels
            )));
        }
        if root {
            println!("=> loading model package '{}'", path.display());
        }
        return Ok(load_weights(path, &config, model)?.valid());
    }
    let checkpoint = Checkpoint::<B>::load::<B>(path, device)?;
    let wanted = RunState {
        arch: args.arch.to_string(),
        classes: classes.to_vec(),
        ..checkpoint.state.clone()
    };
    checkpoint.state.check_resumable(path, &wanted)?;
    if root {
        println!(
            "=> loaded checkpoint '{}' (epoch {})",
            path.display(),
            checkpoint.state.epoch
        );
    }
    Ok(load_checked(model, checkpoint.model, path)?.valid())
}
