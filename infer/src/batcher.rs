//! Dynamic batching: concurrent requests' images are grouped into one forward pass on a
//! dedicated inference thread, off the async executor, behind a bounded queue.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::metrics::Metrics;
use crate::registry::{ImageModel, Prediction};

/// Batching limits.
#[derive(Debug, Clone, Copy)]
pub struct BatchPolicy {
    /// Most images in one forward pass.
    pub max_batch: usize,
    /// Longest a batch waits for more images while requests are still being prepared.
    pub max_delay: Duration,
    /// Most images waiting for the model; beyond it requests are refused (429).
    pub queue_capacity: usize,
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
    preparing: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
}

/// Marks a request as "being prepared" until dropped, so the inference thread knows more
/// images are on their way and a short wait will fill the batch.
pub struct Preparing(Arc<AtomicUsize>);

impl Drop for Preparing {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Batcher {
    /// Starts the inference thread. `load` runs on that thread (so the model never crosses
    /// threads) and its result is reported through `on_loaded` before serving begins.
    pub fn start<L, R>(policy: BatchPolicy, metrics: Arc<Metrics>, load: L, on_loaded: R) -> Self
    where
        L: FnOnce() -> Result<Box<dyn ImageModel>, String> + Send + 'static,
        R: FnOnce(Result<(), String>) + Send + 'static,
    {
        let (tx, rx) = sync_channel(policy.queue_capacity);
        let preparing = Arc::new(AtomicUsize::new(0));
        let (p, m) = (preparing.clone(), metrics.clone());
        std::thread::Builder::new()
            .name("kiln-inference".into())
            .spawn(move || match load() {
                Ok(model) => {
                    on_loaded(Ok(()));
                    serve_batches(&*model, rx, policy, &p, &m);
                }
                Err(e) => on_loaded(Err(e)),
            })
            .expect("spawn inference thread");
        Self { tx, preparing, metrics }
    }

    /// Call when a request starts decoding images; keep the guard until they are submitted.
    pub fn preparing(&self) -> Preparing {
        self.preparing.fetch_add(1, Ordering::SeqCst);
        Preparing(self.preparing.clone())
    }

    /// Queues one prepared image; the receiver yields the model's prediction for it.
    pub fn submit(&self, input: Vec<f32>) -> Result<oneshot::Receiver<Prediction>, Overloaded> {
        let (reply, rx) = oneshot::channel();
        match self.tx.try_send(Job { input, reply }) {
            Ok(()) => {
                self.metrics.queue_depth.inc();
                Ok(rx)
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => Err(Overloaded),
        }
    }
}

fn serve_batches(
    model: &dyn ImageModel,
    rx: Receiver<Job>,
    policy: BatchPolicy,
    preparing: &AtomicUsize,
    metrics: &Metrics,
) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        let deadline = Instant::now() + policy.max_delay;
        while jobs.len() < policy.max_batch {
            // Take whatever is queued; wait (briefly) only while more images are being prepared.
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) if preparing.load(Ordering::SeqCst) == 0 => break,
                Err(_) => match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(job) => jobs.push(job),
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                },
            }
        }
        metrics.queue_depth.sub(jobs.len() as i64);
        let n = jobs.len();
        let mut inputs = Vec::with_capacity(n * jobs[0].input.len());
        let mut replies = Vec::with_capacity(n);
        for job in jobs {
            inputs.extend_from_slice(&job.input);
            replies.push(job.reply);
        }
        let started = Instant::now();
        let predictions = model.predict(inputs, n);
        metrics.batch_size.observe(n as f64);
        metrics.inference_seconds.observe(started.elapsed().as_secs_f64());
        for (reply, prediction) in replies.into_iter().zip(predictions) {
            // A client that went away no longer needs its answer.
            let _ = reply.send(prediction);
        }
    }
}
