//! Dynamic batching: concurrent requests' images are grouped into one forward pass on a
//! model worker thread, off the async executor, behind a bounded queue. Several workers share
//! the queue and the model: while one runs a batch, the next forms and starts on another.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::metrics::Metrics;
use crate::registry::{ImageModel, Prediction};
use crate::workers::WorkerLayout;

/// Batching limits.
#[derive(Debug, Clone, Copy)]
pub struct BatchPolicy {
    /// Most images in one forward pass.
    pub max_batch: usize,
    /// Longest a batch waits for more images while requests are still being prepared.
    pub max_delay: Duration,
    /// Most images waiting for the model; beyond it requests are refused (429).
    pub queue_capacity: usize,
    /// Model workers and the threads each one's forward pass uses.
    pub layout: WorkerLayout,
}

/// One image waiting for the model.
struct Job {
    input: Vec<f32>,
    reply: oneshot::Sender<Prediction>,
}

/// The queue is full: the caller should answer 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overloaded;

/// The sending side of the batcher, shared by request handlers.
#[derive(Clone)]
pub struct Batcher {
    tx: SyncSender<Job>,
    queue: Arc<Queue>,
}

/// The receiving side, shared by the model workers: one at a time forms a batch from it.
struct Queue {
    rx: Mutex<Receiver<Job>>,
    /// Requests still decoding their images.
    preparing: AtomicUsize,
    policy: BatchPolicy,
    metrics: Arc<Metrics>,
}

/// Marks a request as "being prepared" until dropped, so the inference thread knows more
/// images are on their way and a short wait will fill the batch.
pub struct Preparing(Arc<Queue>);

impl Drop for Preparing {
    fn drop(&mut self) {
        self.0.preparing.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Batcher {
    /// Starts the model workers. `load` runs on the first worker's thread and its result is
    /// reported through `on_loaded` before serving begins; the others then share that model.
    pub fn start<L, R>(policy: BatchPolicy, metrics: Arc<Metrics>, load: L, on_loaded: R) -> Self
    where
        L: FnOnce() -> Result<Box<dyn ImageModel>, String> + Send + 'static,
        R: FnOnce(Result<(), String>) + Send + 'static,
    {
        let (tx, rx) = sync_channel(policy.queue_capacity);
        let queue = Arc::new(Queue {
            rx: Mutex::new(rx),
            preparing: AtomicUsize::new(0),
            policy,
            metrics,
        });
        let first = queue.clone();
        spawn_worker(0, policy.layout, move || match load() {
            Ok(model) => {
                let model: Arc<dyn ImageModel> = model.into();
                on_loaded(Ok(()));
                for i in 1..policy.layout.workers {
                    let (queue, model) = (first.clone(), model.clone());
                    spawn_worker(i, policy.layout, move || queue.serve_batches(&*model));
                }
                first.serve_batches(&*model);
            }
            Err(e) => on_loaded(Err(e)),
        });
        Self { tx, queue }
    }

    /// Call when a request starts decoding images; keep the guard until they are submitted.
    pub fn preparing(&self) -> Preparing {
        self.queue.preparing.fetch_add(1, Ordering::SeqCst);
        Preparing(self.queue.clone())
    }

    /// Queues one prepared image; the receiver yields the model's prediction for it.
    pub fn submit(&self, input: Vec<f32>) -> Result<oneshot::Receiver<Prediction>, Overloaded> {
        let (reply, rx) = oneshot::channel();
        match self.tx.try_send(Job { input, reply }) {
            Ok(()) => {
                self.queue.metrics.queue_depth.inc();
                Ok(rx)
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => Err(Overloaded),
        }
    }
}

/// Runs `work` on a new model worker thread numbered `index`, inside its own thread pool.
fn spawn_worker(index: usize, layout: WorkerLayout, work: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .name(format!("kiln-inference-{index}"))
        .spawn(move || layout.run_worker(work))
        .expect("spawn a model worker thread");
}

impl Queue {
    /// Forms batches and runs them until every sender is gone.
    fn serve_batches(&self, model: &dyn ImageModel) {
        while let Some(jobs) = self.next_batch() {
            self.metrics.queue_depth.sub(jobs.len() as i64);
            let n = jobs.len();
            let mut inputs = Vec::with_capacity(n * jobs[0].input.len());
            let mut replies = Vec::with_capacity(n);
            for job in jobs {
                inputs.extend_from_slice(&job.input);
                replies.push(job.reply);
            }
            let started = Instant::now();
            let predictions = model.predict(inputs, n);
            self.metrics.batch_size.observe(n as f64);
            self.metrics.inference_seconds.observe(started.elapsed().as_secs_f64());
            for (reply, prediction) in replies.into_iter().zip(predictions) {
                // A client that went away no longer needs its answer.
                let _ = reply.send(prediction);
            }
        }
    }

    /// The next batch: waits for one image, then takes whatever is queued, waiting (briefly)
    /// only while more images are being prepared. `None` once the queue is closed. Other
    /// workers wait for the queue meanwhile, so each batch is formed by one worker.
    fn next_batch(&self) -> Option<Vec<Job>> {
        let rx = self.rx.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut jobs = vec![rx.recv().ok()?];
        let deadline = Instant::now() + self.policy.max_delay;
        while jobs.len() < self.policy.max_batch {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) if self.preparing.load(Ordering::SeqCst) == 0 => break,
                Err(_) => match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(job) => jobs.push(job),
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                },
            }
        }
        Some(jobs)
    }
}
