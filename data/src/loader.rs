//! A parallel, prefetching loader of [`ImageFolder`] classification batches whose output does
//! not depend on the number of workers.
//!
//! burn's multi-threaded `DataLoader` hands batches out in the order its threads finish them,
//! so a run's batch order (and with it an exact resume from a checkpoint) changes with timing.
//! Here workers decode batches in parallel, ahead of the consumer, but [`EpochBatches`] yields
//! them strictly in batch order; and each sample's augmentation draws from its own RNG, seeded
//! from (seed, epoch, position in the epoch), so a batch is bit-identical for any number of
//! workers, including none.

use std::collections::BTreeMap;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::image_folder::{ImageFolder, ImageFolderError};
use crate::sampler::EpochSampler;
use crate::transforms::ClassifyTransform;

/// A batch of transformed images and their class indices.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassifyBatch {
    /// Pixels, `[n, 3, S, S]` row-major.
    pub images: Vec<f32>,
    /// Class index of each image.
    pub targets: Vec<i64>,
    /// `[n, 3, S, S]`.
    pub shape: [usize; 4],
}

/// How a [`ClassifyLoader`] batches and parallelises.
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
}

/// Loads an [`ImageFolder`] epoch by epoch in the [`EpochSampler`]'s order, as
/// [`ClassifyBatch`]es transformed by a [`ClassifyTransform`].
#[derive(Debug, Clone)]
pub struct ClassifyLoader {
    folder: Arc<ImageFolder>,
    transform: ClassifyTransform,
    sampler: EpochSampler,
    config: LoaderConfig,
}

impl ClassifyLoader {
    /// A loader; the sampler must cover exactly the folder's samples.
    pub fn new(
        folder: Arc<ImageFolder>,
        transform: ClassifyTransform,
        sampler: EpochSampler,
        config: LoaderConfig,
    ) -> Result<Self, LoaderError> {
        if config.batch_size == 0 {
            return Err(LoaderError::ZeroBatchSize);
        }
        if sampler.dataset_len() != folder.len() {
            return Err(LoaderError::SamplerLength {
                sampler: sampler.dataset_len(),
                dataset: folder.len(),
            });
        }
        Ok(Self {
            folder,
            transform,
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

    /// The batches of `epoch`, in order. Workers start at once; dropping the iterator stops
    /// them (each finishes at most the image it is decoding) and waits for them to exit.
    pub fn epoch(&self, epoch: u64) -> EpochBatches {
        let job = Arc::new(EpochJob {
            folder: Arc::clone(&self.folder),
            transform: self.transform,
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
}

/// The result of loading one batch.
type BatchResult = Result<ClassifyBatch, ImageFolderError>;

/// Everything a worker needs to load any batch of one epoch.
#[derive(Debug)]
struct EpochJob {
    folder: Arc<ImageFolder>,
    transform: ClassifyTransform,
    indices: Vec<usize>,
    sampler: EpochSampler,
    epoch: u64,
    batch_size: usize,
    stop: AtomicBool,
}

impl EpochJob {
    fn num_batches(&self) -> usize {
        self.indices.len().div_ceil(self.batch_size)
    }

    /// Loads batch `b`; `None` when asked to stop part-way.
    fn load_batch(&self, b: usize) -> Option<BatchResult> {
        let start = b * self.batch_size;
        let end = (start + self.batch_size).min(self.indices.len());
        let [c, h, w] = self.transform.output_shape();
        let mut batch = ClassifyBatch {
            images: Vec::with_capacity((end - start) * c * h * w),
            targets: Vec::with_capacity(end - start),
            shape: [end - start, c, h, w],
        };
        for local in start..end {
            if self.stop.load(Ordering::Relaxed) {
                return None;
            }
            let (path, class) = self.folder.sample(self.indices[local]);
            let mut rng = StdRng::seed_from_u64(sample_seed(
                self.sampler.seed(),
                self.epoch,
                self.sampler.global_position(local),
            ));
            match load_sample(path, self.transform, &mut rng) {
                Ok(pixels) => batch.images.extend(pixels),
                Err(e) => return Some(Err(e)),
            }
            batch.targets.push(class as i64);
        }
        Some(Ok(batch))
    }
}

/// Decodes and transforms one file; a decoder that fails or panics is a [`ImageFolderError::Decode`].
fn load_sample(
    path: &std::path::Path,
    transform: ClassifyTransform,
    rng: &mut StdRng,
) -> Result<Vec<f32>, ImageFolderError> {
    let decode_error = |msg: String| ImageFolderError::Decode {
        path: path.to_path_buf(),
        msg,
    };
    let decoded = panic::catch_unwind(|| {
        image::ImageReader::open(path)
            .map_err(|e| e.to_string())?
            .with_guessed_format()
            .map_err(|e| e.to_string())?
            .decode()
            .map_err(|e| e.to_string())
    })
    .map_err(|_| decode_error("the decoder panicked".into()))?
    .map_err(decode_error)?;
    if decoded.width() == 0 || decoded.height() == 0 {
        return Err(decode_error("the image is empty".into()));
    }
    let img = decoded.into_rgb8();
    panic::catch_unwind(AssertUnwindSafe(|| transform.apply(img, rng)))
        .map_err(|_| decode_error("the transform panicked".into()))
}

/// The augmentation seed of one sample: a SplitMix64 mix of (seed, epoch, position).
fn sample_seed(seed: u64, epoch: u64, position: usize) -> u64 {
    splitmix64(splitmix64(splitmix64(seed) ^ epoch) ^ position as u64)
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One epoch's batches, in batch order (see [`ClassifyLoader::epoch`]).
#[derive(Debug)]
pub struct EpochBatches {
    job: Arc<EpochJob>,
    next: usize,
    pool: Option<WorkerPool>,
}

impl Iterator for EpochBatches {
    type Item = BatchResult;

    fn next(&mut self) -> Option<BatchResult> {
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

impl Drop for EpochBatches {
    fn drop(&mut self) {
        self.job.stop.store(true, Ordering::Relaxed);
    }
}

/// Worker threads fed batch numbers ("tickets") a bounded window ahead of the consumer.
#[derive(Debug)]
struct WorkerPool {
    tickets: Option<Sender<usize>>,
    results: Receiver<(usize, Option<BatchResult>)>,
    ready: BTreeMap<usize, BatchResult>,
    issued: usize,
    num_batches: usize,
    handles: Vec<JoinHandle<()>>,
}

impl WorkerPool {
    /// Starts up to `workers` threads (`None` when none could start: load inline) and issues
    /// the first `window` tickets.
    fn start(job: &Arc<EpochJob>, workers: usize, window: usize) -> Option<Self> {
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
    fn take(&mut self, b: usize) -> Option<BatchResult> {
        loop {
            if let Some(result) = self.ready.remove(&b) {
                self.issue();
                return Some(result);
            }
            let (i, result) = self.results.recv().ok()?;
            self.ready.insert(i, result?);
        }
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        // `EpochBatches` has set the stop flag; closing the tickets ends each worker's loop.
        self.tickets = None;
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
    }
}

/// A worker: loads the batch of each ticket until the tickets close.
fn work(job: &EpochJob, tickets: &Mutex<Receiver<usize>>, results: &Sender<(usize, Option<BatchResult>)>) {
    loop {
        let ticket = match tickets.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(b) = ticket else { return };
        if results.send((b, job.load_batch(b))).is_err() {
            return;
        }
    }
}
