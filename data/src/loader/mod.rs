//! Parallel, prefetching loaders whose output does not depend on the number of workers:
//! [`ClassifyLoader`] over an [`ImageFolder`](crate::ImageFolder), [`DetectLoader`] over a
//! [`CocoDataset`](crate::CocoDataset), and the machinery they share, [`Loader`] over any
//! [`SampleSet`].
//!
//! burn's multi-threaded `DataLoader` hands batches out in the order its threads finish them,
//! so a run's batch order (and with it an exact resume from a checkpoint) changes with timing.
//! Here workers decode batches in parallel, ahead of the consumer, but [`EpochBatches`] yields
//! them strictly in batch order; and each sample's augmentation draws from its own RNG, seeded
//! from (seed, epoch, position in the epoch), so a batch is bit-identical for any number of
//! workers, including none.

mod classify;
mod detect;

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use image::RgbImage;
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::augment::AugmentConfigError;
use crate::sampler::EpochSampler;

pub use classify::{ClassifyBatch, ClassifyLoader, ClassifySet};
pub use detect::{DetectBatch, DetectError, DetectLoader, DetectMode, DetectSet};

/// How a [`Loader`] batches and parallelises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoaderConfig {
    /// Samples per batch (the last batch of an epoch may be smaller).
    pub batch_size: usize,
    /// Decoding threads; 0 decodes on the thread that iterates.
    pub workers: usize,
    /// Finished batches that may wait for the consumer, on top of the one each worker is
    /// decoding.
    pub prefetch_batches: usize,
}

/// An invalid loader setup.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoaderError {
    /// Batches must hold at least one sample.
    #[error("the batch size must be at least 1")]
    ZeroBatchSize,
    /// The sampler was built for a dataset of another size.
    #[error("the sampler covers {sampler} samples but the dataset has {dataset}")]
    SamplerLength {
        /// The sampler's dataset length.
        sampler: usize,
        /// The dataset's length.
        dataset: usize,
    },
    /// A detection loader's augmentation settings are unusable.
    #[error(transparent)]
    Augment(#[from] AugmentConfigError),
}

/// A dataset a [`Loader`] can batch: how one sample is loaded and transformed (with its own
/// seeded RNG), and how samples become a batch. The epoch order, the seeding, the batching and
/// the parallel prefetching are the loader's.
pub trait SampleSet: Send + Sync + 'static {
    /// One loaded, transformed sample.
    type Sample: Send + 'static;
    /// A batch of samples.
    type Batch: Send + 'static;
    /// Why a sample could not be loaded.
    type Error: Send + 'static;

    /// Number of samples; the loader's sampler must cover exactly this many.
    fn dataset_len(&self) -> usize;

    /// Loads and transforms sample `index`; `rng` is this sample's own, seeded from
    /// (seed, epoch, position in the epoch), so the result does not depend on which worker
    /// loads it.
    fn load(&self, index: usize, rng: &mut StdRng) -> Result<Self::Sample, Self::Error>;

    /// Gathers one batch's samples (at least one, in batch order) into a batch.
    fn collate(&self, samples: Vec<Self::Sample>) -> Self::Batch;
}

/// What loading one batch gives.
type BatchResult<S> = Result<<S as SampleSet>::Batch, <S as SampleSet>::Error>;

/// What a worker reports for one ticket: the batch (`None` when stopped part-way), or what its
/// loading panicked with.
type Report<S> = (usize, Result<Option<BatchResult<S>>, Box<dyn Any + Send>>);

/// Loads a [`SampleSet`] epoch by epoch in an [`EpochSampler`]'s order, in batches.
#[derive(Debug, Clone)]
pub struct Loader<S> {
    set: Arc<S>,
    sampler: EpochSampler,
    config: LoaderConfig,
}

impl<S: SampleSet> Loader<S> {
    /// A loader over `set`; the sampler must cover exactly the set's samples.
    pub fn over(set: S, sampler: EpochSampler, config: LoaderConfig) -> Result<Self, LoaderError> {
        if config.batch_size == 0 {
            return Err(LoaderError::ZeroBatchSize);
        }
        if sampler.dataset_len() != set.dataset_len() {
            return Err(LoaderError::SamplerLength {
                sampler: sampler.dataset_len(),
                dataset: set.dataset_len(),
            });
        }
        Ok(Self {
            set: Arc::new(set),
            sampler,
            config,
        })
    }

    /// Batches per epoch, the last partial one included (torch's `drop_last=False`).
    pub fn num_batches(&self) -> usize {
        self.sampler.num_samples().div_ceil(self.config.batch_size)
    }

    /// The sampler that orders the epochs.
    pub fn sampler(&self) -> &EpochSampler {
        &self.sampler
    }

    /// The samples being loaded.
    pub fn set(&self) -> &S {
        &self.set
    }

    /// The batches of `epoch`, in order. Workers start at once; dropping the iterator stops
    /// them (each finishes at most the sample it is loading) and waits for them to exit.
    pub fn epoch(&self, epoch: u64) -> EpochBatches<S> {
        let job = Arc::new(EpochJob {
            set: Arc::clone(&self.set),
            indices: self.sampler.indices(epoch),
            sampler: self.sampler.clone(),
            epoch,
            batch_size: self.config.batch_size,
            stop: AtomicBool::new(false),
        });
        let window = self.config.workers + self.config.prefetch_batches;
        let pool = WorkerPool::start(&job, self.config.workers, window);
        EpochBatches { job, next: 0, pool }
    }

    /// The set, to change between epochs; epochs already started keep the set they began with.
    fn set_mut(&mut self) -> &mut S
    where
        S: Clone,
    {
        Arc::make_mut(&mut self.set)
    }
}

/// Everything a worker needs to load any batch of one epoch.
struct EpochJob<S> {
    set: Arc<S>,
    indices: Vec<usize>,
    sampler: EpochSampler,
    epoch: u64,
    batch_size: usize,
    stop: AtomicBool,
}

impl<S: SampleSet> EpochJob<S> {
    fn num_batches(&self) -> usize {
        self.indices.len().div_ceil(self.batch_size)
    }

    /// Loads batch `b`; `None` when asked to stop part-way.
    fn load_batch(&self, b: usize) -> Option<BatchResult<S>> {
        let start = b * self.batch_size;
        let end = (start + self.batch_size).min(self.indices.len());
        let mut samples = Vec::with_capacity(end - start);
        for local in start..end {
            if self.stop.load(Ordering::Relaxed) {
                return None;
            }
            let mut rng = StdRng::seed_from_u64(sample_seed(
                self.sampler.seed(),
                self.epoch,
                self.sampler.global_position(local),
            ));
            match self.set.load(self.indices[local], &mut rng) {
                Ok(sample) => samples.push(sample),
                Err(e) => return Some(Err(e)),
            }
        }
        Some(Ok(self.set.collate(samples)))
    }
}

/// Decodes an image file as RGB; a decoder that fails or panics, or an empty image, is an error
/// message (the caller names the file).
pub fn decode_rgb(path: &Path) -> Result<RgbImage, String> {
    let decoded = panic::catch_unwind(|| {
        image::ImageReader::open(path)
            .map_err(|e| e.to_string())?
            .with_guessed_format()
            .map_err(|e| e.to_string())?
            .decode()
            .map_err(|e| e.to_string())
    })
    .map_err(|_| "the decoder panicked".to_string())??;
    if decoded.width() == 0 || decoded.height() == 0 {
        return Err("the image is empty".into());
    }
    Ok(decoded.into_rgb8())
}

/// The augmentation seed of one sample: a SplitMix64 mix of (seed, epoch, position).
fn sample_seed(seed: u64, epoch: u64, position: usize) -> u64 {
    splitmix64(splitmix64(splitmix64(seed) ^ epoch) ^ position as u64)
}

/// SplitMix64's output function: a well-mixed 64-bit value of `x` (seed derivation).
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One epoch's batches, in batch order (see [`Loader::epoch`]).
pub struct EpochBatches<S: SampleSet> {
    job: Arc<EpochJob<S>>,
    next: usize,
    pool: Option<WorkerPool<S>>,
}

impl<S: SampleSet> fmt::Debug for EpochBatches<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EpochBatches")
            .field("epoch", &self.job.epoch)
            .field("next", &self.next)
            .field("num_batches", &self.job.num_batches())
            .field("workers", &self.pool.as_ref().map_or(0, |p| p.handles.len()))
            .finish()
    }
}

impl<S: SampleSet> Iterator for EpochBatches<S> {
    type Item = BatchResult<S>;

    fn next(&mut self) -> Option<BatchResult<S>> {
        if self.next >= self.job.num_batches() {
            return None;
        }
        let result = match &mut self.pool {
            Some(pool) => pool.take(self.next)?,
            None => self.job.load_batch(self.next)?,
        };
        self.next += 1;
        Some(result)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.job.num_batches() - self.next;
        (left, Some(left))
    }
}

impl<S: SampleSet> Drop for EpochBatches<S> {
    fn drop(&mut self) {
        self.job.stop.store(true, Ordering::Relaxed);
    }
}

/// Worker threads fed batch numbers ("tickets") a bounded window ahead of the consumer.
struct WorkerPool<S: SampleSet> {
    tickets: Option<Sender<usize>>,
    results: Receiver<Report<S>>,
    ready: BTreeMap<usize, BatchResult<S>>,
    issued: usize,
    num_batches: usize,
    handles: Vec<JoinHandle<()>>,
}

impl<S: SampleSet> WorkerPool<S> {
    /// Starts up to `workers` threads (`None` when none could start: load inline) and issues
    /// the first `window` tickets.
    fn start(job: &Arc<EpochJob<S>>, workers: usize, window: usize) -> Option<Self> {
        let (ticket_tx, ticket_rx) = mpsc::channel();
        let (result_tx, results) = mpsc::channel();
        let ticket_rx = Arc::new(Mutex::new(ticket_rx));
        let handles: Vec<_> = (0..workers)
            .map_while(|i| {
                let (job, tickets, results) = (Arc::clone(job), Arc::clone(&ticket_rx), result_tx.clone());
                thread::Builder::new()
                    .name(format!("kiln-data-{i}"))
                    .spawn(move || work(&job, &tickets, &results))
                    .ok()
            })
            .collect();
        if handles.is_empty() {
            return None;
        }
        let mut pool = Self {
            tickets: Some(ticket_tx),
            results,
            ready: BTreeMap::new(),
            issued: 0,
            num_batches: job.num_batches(),
            handles,
        };
        for _ in 0..window.max(1) {
            pool.issue();
        }
        Some(pool)
    }

    fn issue(&mut self) {
        if self.issued < self.num_batches {
            if let Some(tickets) = &self.tickets {
                // Cannot fail: the workers hold the receiver until the pool drops the sender.
                let _ = tickets.send(self.issued);
            }
            self.issued += 1;
        }
    }

    /// Waits for batch `b`, keeping batches that finish early; `None` if the workers are gone.
    /// A panic while loading a batch is resumed here, on the consumer's thread.
    fn take(&mut self, b: usize) -> Option<BatchResult<S>> {
        loop {
            if let Some(result) = self.ready.remove(&b) {
                self.issue();
                return Some(result);
            }
            let (i, loaded) = self.results.recv().ok()?;
            match loaded {
                Ok(result) => self.ready.insert(i, result?),
                Err(payload) => panic::resume_unwind(payload),
            };
        }
    }
}

impl<S: SampleSet> Drop for WorkerPool<S> {
    fn drop(&mut self) {
        // `EpochBatches` has set the stop flag; closing the tickets ends each worker's loop.
        self.tickets = None;
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
    }
}

/// A worker: loads the batch of each ticket until the tickets close. A panic is caught and
/// sent on, so the consumer sees it instead of waiting forever for the batch.
fn work<S: SampleSet>(job: &EpochJob<S>, tickets: &Mutex<Receiver<usize>>, results: &Sender<Report<S>>) {
    loop {
        let ticket = match tickets.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(b) = ticket else { return };
        let loaded = panic::catch_unwind(AssertUnwindSafe(|| job.load_batch(b)));
        if results.send((b, loaded)).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    /// Sample `i` is `(i, a draw from its RNG)`; sample 5 is an error and sample 7 panics.
    struct Numbers(usize);

    impl SampleSet for Numbers {
        type Sample = (usize, u32);
        type Batch = Vec<(usize, u32)>;
        type Error = String;

        fn dataset_len(&self) -> usize {
            self.0
        }

        fn load(&self, index: usize, rng: &mut StdRng) -> Result<(usize, u32), String> {
            match index {
                5 => Err("five".into()),
                7 => panic!("seven"),
                _ => Ok((index, rng.random())),
            }
        }

        fn collate(&self, samples: Vec<(usize, u32)>) -> Vec<(usize, u32)> {
            samples
        }
    }

    fn batches(len: usize, shuffle: bool, batch_size: usize, workers: usize) -> Vec<BatchResult<Numbers>> {
        let config = LoaderConfig {
            batch_size,
            workers,
            prefetch_batches: 2,
        };
        let loader = Loader::over(Numbers(len), EpochSampler::new(len, shuffle, 9), config).unwrap();
        loader.epoch(4).collect()
    }

    #[test]
    fn batches_come_in_order_whatever_the_workers() {
        let inline = batches(5, true, 2, 0);
        assert_eq!(inline.len(), 3);
        for workers in [1, 2, 5] {
            assert_eq!(batches(5, true, 2, workers), inline, "{workers} workers");
        }
        let order: Vec<usize> = inline
            .iter()
            .flat_map(|b| b.as_ref().unwrap().iter().map(|s| s.0))
            .collect();
        assert_eq!(order, EpochSampler::new(5, true, 9).indices(4));
    }

    #[test]
    fn errors_arrive_with_their_batch_and_panics_reach_the_consumer() {
        for workers in [0, 3] {
            let got = batches(7, false, 2, workers);
            assert!(got[0].is_ok() && got[1].is_ok() && got[3].is_ok(), "{got:?}");
            assert_eq!(got[2], Err("five".to_string()));
            let panicked = panic::catch_unwind(|| batches(8, false, 2, workers));
            let payload = panicked.unwrap_err();
            assert_eq!(payload.downcast_ref::<&str>(), Some(&"seven"), "{workers} workers");
        }
    }
}
