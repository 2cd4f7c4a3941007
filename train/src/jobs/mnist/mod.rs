//! `kiln-train mnist`: the guide's `train.py` (Adadelta, StepLR per epoch, NLL on
//! log-softmax), writing a model package to `<train_url>/model/`. With several workers each
//! trains on its shard of every epoch and gradients are averaged (DDP); rank 0 logs and writes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use burn::data::dataloader::{DataLoader, DataLoaderBuilder};
use burn::data::dataset::transform::SelectionDataset;
use burn::data::dataset::Dataset;
use burn::lr_scheduler::LrScheduler;
use burn::module::AutodiffModule;
use burn::optim::{GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use kiln_data::{EpochSampler, MnistBatch, MnistBatcher, MnistDataset, MnistItem, MnistSplit};
use kiln_models::{net_package_config, Net, NetConfig};

use crate::cli::MnistArgs;
use crate::ddp::Collective;
use crate::error::TrainError;
mod log;
mod loss;

use crate::optim::AdadeltaConfig;
use crate::parity::ParitySet;
use crate::progress::PassProgress;
use crate::run::{resolve_seed, RunOutput, PACKAGE_DIR};
use crate::schedule::epoch_step_lr;
pub use log::{test_line, train_line};
pub use loss::{correct_count, nll_loss_sum};

/// One epoch's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MnistEpoch {
    /// Epoch number, from 1.
    pub epoch: usize,
    /// Mean training loss over the epoch's batches.
    pub train_loss: f64,
    /// Mean test loss per sample.
    pub test_loss: f64,
    /// Test accuracy in [0, 1].
    pub accuracy: f64,
    /// Learning rate the epoch trained at.
    pub lr: f64,
    /// Wall time of the training pass in seconds.
    pub train_seconds: f64,
    /// Wall time of the test pass in seconds.
    pub test_seconds: f64,
    /// Wall time of the whole epoch (train + test) in seconds.
    pub seconds: f64,
    /// Training images per second.
    pub images_per_second: f64,
}

/// What a finished MNIST job reports.
#[derive(Debug, Clone)]
pub struct MnistSummary {
    /// Metrics of every epoch.
    pub epochs: Vec<MnistEpoch>,
    /// The package folder, when one was written.
    pub package: Option<PathBuf>,
}

/// One worker's settings for the passes.
struct Passes<'a, R: Backend> {
    args: &'a MnistArgs,
    dist: &'a Collective<R>,
    /// This worker's batch: `--batch-size` divided by the node's workers.
    batch_size: usize,
    test_batch_size: usize,
    loader_threads: usize,
}

/// Runs the whole job as worker `dist` on `device` of autodiff backend `B`.
pub fn run<B: AutodiffBackend>(
    args: &MnistArgs,
    dist: &Collective<B::InnerBackend>,
    device: B::Device,
) -> Result<MnistSummary, TrainError> {
    let train_set = Arc::new(MnistDataset::from_dir(&args.data_url, MnistSplit::Train)?);
    let test_set = Arc::new(MnistDataset::from_dir(&args.data_url, MnistSplit::Test)?);
    let (train_len, test_len) = (train_set.len(), test_set.len());
    if dist.is_root() {
        tracing::info!(train = train_len, test = test_len, data = %args.data_url.display(), "MNIST loaded");
    }
    let passes = Passes {
        args,
        dist,
        batch_size: dist.per_device(args.batch_size, false, "--batch-size")?,
        test_batch_size: dist.per_device(args.test_batch_size, false, "--test-batch-size")?,
        loader_threads: dist.per_device(args.workers, true, "--workers")?,
    };
    let train_sampler = dist.shard(EpochSampler::new(train_len, true, args.seed))?;
    let test_sampler = dist.shard(EpochSampler::new(test_len, false, 0))?.without_padding();

    let seed = resolve_seed(Some(args.seed), None, dist, &device)?;
    let net_config = NetConfig::new();
    let mut model: Net<B> = dist.sync_module(net_config.init(&device))?;
    let mut optim = AdadeltaConfig::new().init::<B, Net<B>>();
    let mut scheduler = epoch_step_lr(args.lr, 1, args.gamma).map_err(TrainError::Flag)?;

    let mut output = RunOutput::open(dist, &args.train_url, "mnist", args, seed, false)?;
    let mut history = Vec::new();
    for epoch in 1..=args.epochs {
        let lr = scheduler.step();
        let started = Instant::now();
        let loader = passes.loader(
            &train_set,
            train_sampler.indices(epoch as u64),
            passes.batch_size,
            &device,
        );
        let (trained, train_loss, images) =
            passes.train_epoch(epoch, lr, model, &mut optim, &*loader, train_len, &device)?;
        model = trained;
        let train_seconds = started.elapsed().as_secs_f64();
        let test_started = Instant::now();
        let loader = passes.loader(&test_set, test_sampler.indices(0), passes.test_batch_size, &device);
        let (test_loss, correct) = passes.test(&model.valid(), &*loader, test_len, &device)?;
        let test_seconds = test_started.elapsed().as_secs_f64();
        if dist.is_root() {
            println!("\n{}\n", test_line(test_loss, correct, test_len));
        }
        let m = MnistEpoch {
            epoch,
            train_loss,
            test_loss,
            accuracy: correct as f64 / test_len as f64,
            lr,
            train_seconds,
            test_seconds,
            seconds: started.elapsed().as_secs_f64(),
            images_per_second: images as f64 / train_seconds,
        };
        output.record_epoch(epoch, m.seconds, m.images_per_second, &m)?;
        history.push(m);
    }

    let package = if args.no_save_model || !dist.is_root() {
        None
    } else {
        let dir = package_dir(&args.train_url);
        let net = model.valid();
        ParitySet::from_mnist(&test_set)?.write_package(
            &dir,
            &net_package_config(&net_config),
            &net,
            |x| net.forward(x),
            true,
            &device,
        )?;
        tracing::info!(package = %dir.display(), "model package written");
        Some(dir)
    };
    Ok(MnistSummary {
        epochs: history,
        package,
    })
}

impl<R: Backend> Passes<'_, R> {
    /// A loader over `indices` of `set`, in that order.
    fn loader<B: Backend>(
        &self,
        set: &Arc<MnistDataset>,
        indices: Vec<usize>,
        batch_size: usize,
        device: &B::Device,
    ) -> Arc<dyn DataLoader<B, MnistBatch<B>>> {
        let selection = SelectionDataset::<MnistDataset, MnistItem>::from_indices_unchecked(set.clone(), indices);
        DataLoaderBuilder::new(MnistBatcher)
            .batch_size(batch_size)
            .num_workers(self.loader_threads)
            .set_device(device.clone())
            .build(selection)
    }

    /// One pass over this worker's shard; returns the model, the mean batch loss over all
    /// workers and the number of images all workers saw.
    fn train_epoch<B: AutodiffBackend<InnerBackend = R>, O: Optimizer<Net<B>, B>>(
        &self,
        epoch: usize,
        lr: f64,
        mut model: Net<B>,
        optim: &mut O,
        loader: &dyn DataLoader<B, MnistBatch<B>>,
        dataset_len: usize,
        device: &R::Device,
    ) -> Result<(Net<B>, f64, usize), TrainError> {
        let num_batches = loader.num_items().div_ceil(self.batch_size);
        let progress = PassProgress::new(num_batches, format!("epoch {epoch}"), self.dist.is_root());
        let mut loss_sum: Option<Tensor<B::InnerBackend, 1>> = None;
        let (mut batches, mut images) = (0usize, 0usize);
        for (batch_idx, batch) in loader.iter().enumerate() {
            let n = batch.targets.dims()[0];
            let output = model.forward(batch.images);
            let loss = nll_loss_sum(output, batch.targets).div_scalar(n as f64);
            let loss_value = loss.clone().inner();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            let grads = self.dist.average_grads(grads, &model)?;
            model = optim.step(lr, model, grads);
            loss_sum = Some(match loss_sum {
                Some(s) => s + loss_value.clone(),
                None => loss_value.clone(),
            });
            batches += 1;
            images += n;
            progress.inc();
            if batch_idx % self.args.log_interval == 0 {
                let local: f64 = loss_value.into_scalar().elem();
                let mean = self.dist.sum(&[local], device)?[0] / self.dist.world() as f64;
                progress.println(&train_line(
                    epoch,
                    batch_idx,
                    self.batch_size * self.dist.world(),
                    dataset_len,
                    num_batches,
                    mean,
                ));
                if self.args.dry_run {
                    break;
                }
            }
        }
        progress.finish();
        let local_sum = loss_sum.map_or(0.0, |s| s.into_scalar().elem::<f64>());
        let totals = self.dist.sum(&[local_sum, batches as f64, images as f64], device)?;
        let mean = if totals[1] > 0.0 {
            totals[0] / totals[1]
        } else {
            f64::NAN
        };
        Ok((model, mean, totals[2] as usize))
    }

    /// Mean test loss per sample and the number of correct predictions, over all workers'
    /// shards of the test set.
    fn test(
        &self,
        model: &Net<R>,
        loader: &dyn DataLoader<R, MnistBatch<R>>,
        dataset_len: usize,
        device: &R::Device,
    ) -> Result<(f64, usize), TrainError> {
        let mut loss_sum = 0.0f64;
        let mut correct = 0usize;
        for batch in loader.iter() {
            let (loss, right) = evaluate(model, batch.images, batch.targets);
            loss_sum += loss;
            correct += right;
        }
        let totals = self.dist.sum(&[loss_sum, correct as f64], device)?;
        Ok((totals[0] / dataset_len as f64, totals[1].round() as usize))
    }
}

/// Images per forward pass of the test pass. A `--test-batch-size` batch (1,000 by default)
/// is evaluated in chunks of this size: at 1,000 images the conv2 activation alone is 147 MB,
/// which glibc maps fresh (and the kernel zero-fills) for every batch, since it is above the
/// 32 MB heap threshold kiln-train sets (`heap`); at 128 it is 19 MB and comes from the heap,
/// still in cache from the chunk before: about a fifth faster, with the same results per
/// sample.
const EVAL_CHUNK: usize = 128;

/// The summed NLL loss and the number of correct predictions of `model` on one test batch,
/// computed [`EVAL_CHUNK`] images at a time.
fn evaluate<B: Backend>(model: &Net<B>, images: Tensor<B, 4>, targets: Tensor<B, 1, Int>) -> (f64, usize) {
    let n = targets.dims()[0];
    let mut loss_sum = 0.0f64;
    let mut correct = 0usize;
    for start in (0..n).step_by(EVAL_CHUNK) {
        let end = (start + EVAL_CHUNK).min(n);
        let output = model.forward(images.clone().slice([start..end]));
        let targets = targets.clone().slice([start..end]);
        loss_sum += nll_loss_sum(output.clone(), targets.clone())
            .into_scalar()
            .elem::<f64>();
        correct += correct_count(output, targets).into_scalar().elem::<i64>() as usize;
    }
    (loss_sum, correct)
}

/// The package folder a run with these flags writes.
pub fn package_dir(train_url: &Path) -> PathBuf {
    train_url.join(PACKAGE_DIR)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;
    use burn_flex::Flex;

    /// The package's input normalisation is the one the loader trains with.
    #[test]
    fn the_package_normalises_as_training_does() {
        use kiln_data::mnist::{MNIST_MEAN, MNIST_SIDE, MNIST_STD};
        let input = kiln_models::net_package_config(&NetConfig::new()).kiln.input;
        assert_eq!((input.height, input.width), (MNIST_SIDE, MNIST_SIDE));
        assert_eq!((input.mean, input.std), (vec![MNIST_MEAN], vec![MNIST_STD]));
    }

    #[test]
    fn chunked_evaluation_matches_one_pass() {
        let device = Default::default();
        Flex::seed(&device, 7);
        let model: Net<Flex> = NetConfig::new().init(&device);
        // More than two chunks, the last one short.
        let n = 2 * EVAL_CHUNK + 45;
        let images = Tensor::<Flex, 4>::random([n, 1, 28, 28], Distribution::Normal(0.0, 1.0), &device);
        let targets = Tensor::<Flex, 1, Int>::random([n], Distribution::Uniform(0.0, 10.0), &device);
        let output = model.forward(images.clone());
        let want_loss: f64 = nll_loss_sum(output.clone(), targets.clone()).into_scalar().elem();
        let want_correct = correct_count(output, targets.clone()).into_scalar().elem::<i64>() as usize;
        let (loss, correct) = evaluate(&model, images, targets);
        assert!(
            (loss - want_loss).abs() <= 1e-5 * want_loss.abs(),
            "{loss} against {want_loss}"
        );
        assert_eq!(correct, want_correct);
        // An untrained net on noise gets some right and some wrong: the count is checked, not 0.
        assert!(correct > 0 && correct < n, "{correct} of {n}");
    }
}
