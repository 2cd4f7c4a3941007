//! `kiln-train mnist`: the guide's `train.py` (Adadelta, StepLR per epoch, NLL on
//! log-softmax), writing a model package to `<train_url>/model/`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::data::dataloader::{DataLoader, DataLoaderBuilder};
use burn::data::dataset::Dataset;
use burn::lr_scheduler::LrScheduler;
use burn::module::AutodiffModule;
use burn::optim::{GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

use kiln_data::{MnistBatch, MnistBatcher, MnistDataset, MnistSplit};
use kiln_models::{net_package_config, write_package, Net, NetConfig};

use crate::cli::MnistArgs;
use crate::error::TrainError;
use crate::log::{test_line, train_line};
use crate::loss::{correct_count, nll_loss_sum};
use crate::metrics::{EpochMetrics, MetricsWriter};
use crate::optim::AdadeltaConfig;
use crate::progress::PassProgress;
use crate::schedule::epoch_step_lr;

/// The metrics file name inside `--train_url`.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// What a finished MNIST job reports.
#[derive(Debug, Clone)]
pub struct MnistSummary {
    /// Metrics of every epoch.
    pub epochs: Vec<EpochMetrics>,
    /// The package folder, when one was written.
    pub package: Option<PathBuf>,
}

/// Runs the whole job on `device` of autodiff backend `B`.
pub fn run<B: AutodiffBackend>(args: &MnistArgs, device: B::Device) -> Result<MnistSummary, TrainError> {
    let train_set = MnistDataset::from_dir(&args.data_url, MnistSplit::Train)?;
    let test_set = MnistDataset::from_dir(&args.data_url, MnistSplit::Test)?;
    let (train_len, test_len) = (train_set.len(), test_set.len());
    tracing::info!(train = train_len, test = test_len, data = %args.data_url.display(), "MNIST loaded");

    B::seed(&device, args.seed);
    let net_config = NetConfig::new();
    let mut model: Net<B> = net_config.init(&device);
    let mut optim = AdadeltaConfig::new().init::<B, Net<B>>();
    let mut scheduler = epoch_step_lr(args.lr, 1, args.gamma).map_err(TrainError::Flag)?;

    let train_loader = DataLoaderBuilder::new(MnistBatcher)
        .batch_size(args.batch_size)
        .shuffle(args.seed)
        .num_workers(args.workers)
        .set_device(device.clone())
        .build(train_set);
    let test_loader = DataLoaderBuilder::new(MnistBatcher)
        .batch_size(args.test_batch_size)
        .num_workers(args.workers)
        .set_device(device.clone())
        .build(test_set);

    let mut metrics = MetricsWriter::create(&args.train_url.join(METRICS_FILE)).map_err(|source| TrainError::Io {
        path: args.train_url.join(METRICS_FILE),
        source,
    })?;
    let mut history = Vec::new();
    for epoch in 1..=args.epochs {
        let lr = scheduler.step();
        let started = Instant::now();
        let (trained, train_loss, images) = train_epoch(args, epoch, lr, model, &mut optim, &*train_loader, train_len);
        model = trained;
        let train_seconds = started.elapsed().as_secs_f64();
        let (test_loss, correct) = test(&model.valid(), &*test_loader, test_len);
        println!("\n{}\n", test_line(test_loss, correct, test_len));
        let m = EpochMetrics {
            epoch,
            train_loss,
            test_loss,
            accuracy: correct as f64 / test_len as f64,
            lr,
            train_seconds,
            seconds: started.elapsed().as_secs_f64(),
            images_per_second: images as f64 / train_seconds,
        };
        metrics.record(epoch, m.seconds, m.images_per_second, &m)?;
        history.push(m);
    }

    let package = if args.no_save_model {
        None
    } else {
        let dir = package_dir(&args.train_url);
        write_package(&dir, &net_package_config(&net_config), &model.valid())?;
        tracing::info!(package = %dir.display(), "model package written");
        Some(dir)
    };
    Ok(MnistSummary {
        epochs: history,
        package,
    })
}

/// One pass over the shuffled training set; returns the model, the mean batch loss and the
/// number of images seen.
fn train_epoch<B: AutodiffBackend, O: Optimizer<Net<B>, B>>(
    args: &MnistArgs,
    epoch: usize,
    lr: f64,
    mut model: Net<B>,
    optim: &mut O,
    loader: &dyn DataLoader<B, MnistBatch<B>>,
    dataset_len: usize,
) -> (Net<B>, f64, usize) {
    let num_batches = dataset_len.div_ceil(args.batch_size);
    let progress = PassProgress::new(num_batches, format!("epoch {epoch}"));
    let mut loss_sum: Option<Tensor<B::InnerBackend, 1>> = None;
    let (mut batches, mut images) = (0usize, 0usize);
    for (batch_idx, batch) in loader.iter().enumerate() {
        let n = batch.targets.dims()[0];
        let output = model.forward(batch.images);
        let loss = nll_loss_sum(output, batch.targets).div_scalar(n as f64);
        let loss_value = loss.clone().inner();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(lr, model, grads);
        loss_sum = Some(match loss_sum {
            Some(s) => s + loss_value.clone(),
            None => loss_value.clone(),
        });
        batches += 1;
        images += n;
        progress.inc();
        if batch_idx % args.log_interval == 0 {
            let value: f64 = loss_value.into_scalar().elem();
            progress.println(&train_line(
                epoch,
                batch_idx,
                args.batch_size,
                dataset_len,
                num_batches,
                value,
            ));
            if args.dry_run {
                break;
            }
        }
    }
    progress.finish();
    let mean = loss_sum.map_or(f64::NAN, |s| s.into_scalar().elem::<f64>() / batches as f64);
    (model, mean, images)
}

/// Mean test loss per sample and the number of correct predictions.
fn test<B: Backend>(model: &Net<B>, loader: &dyn DataLoader<B, MnistBatch<B>>, dataset_len: usize) -> (f64, usize) {
    let mut loss_sum = 0.0f64;
    let mut correct = 0usize;
    for batch in loader.iter() {
        let output = model.forward(batch.images);
        loss_sum += nll_loss_sum(output.clone(), batch.targets.clone())
            .into_scalar()
            .elem::<f64>();
        correct += correct_count(output, batch.targets).into_scalar().elem::<i64>() as usize;
    }
    (loss_sum / dataset_len as f64, correct)
}

/// The package folder a run with these flags writes.
pub fn package_dir(train_url: &Path) -> PathBuf {
    train_url.join("model")
}
