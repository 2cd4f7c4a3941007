//! Dynamic batching: concurrent requests' images are grouped into one forward pass on a
//! model worker thread, off the async executor, behind a bounded queue. Several workers share
//! the queue and the model: while one runs a batch, the next forms and starts on another.
//!
//! A batch closes when it is full, when its oldest image has waited `max_delay`, when no
//! request is still decoding images (nothing more is on its way), or as soon as another
//! worker is free too: a free worker is an idle core, and the images still on their way
//! will start the next batch there. So a worker waits for company only while every other
//! worker is busy, and concurrent clients settle into one group per worker instead of
//! piling into one batch that leaves the other cores idle. Workers sleep on one condition
//! variable that is signalled only when one of those conditions may have changed, not for
//! every image.
//!
//! A worker with nothing to take first polls for [`BatchPolicy::poll`] before it sleeps.
//! Under load the next image is usually that close, and a sleeping worker's core halts:
//! waking it (an interrupt to a halted core, a costly exit on a virtual machine) took long
//! enough that `kiln-bench serve` counted 43–50 µs of idle CPU per request at concurrency 16
//! with sleeping workers, and 2–8 µs with polling ones, which answered 2–6% more requests.
//! Polling costs the HTTP side nothing: the model's threads run at a lower priority
//! ([`crate::workers::MODEL_NICE`]), so any request work preempts them.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::metrics::Metrics;
use crate::registry::{ImageModel, Prediction};
use crate::workers::{WorkerLayout, MODEL_THREAD_PREFIX};

/// Batching limits.
#[derive(Debug, Clone, Copy)]
pub struct BatchPolicy {
    /// Most images in one forward pass.
    pub max_batch: usize,
    /// Longest a batch waits, from its oldest image, for more images still being prepared.
    pub max_delay: Duration,
    /// Most images waiting for the model; beyond it requests are refused (429).
    pub queue_capacity: usize,
    /// How long a worker with nothing to take polls the queue before it sleeps.
    pub poll: Duration,
    /// Model workers and the threads each one's forward pass uses.
    pub layout: WorkerLayout,
}

/// One image waiting for the model.
struct Job {
    input: Vec<f32>,
    queued: Instant,
    /// Past this the request no longer wants the answer: the job is dropped unrun.
    deadline: Option<Instant>,
    reply: oneshot::Sender<Reply>,
}

/// What a queued image gets back.
pub type Reply = Result<Prediction, Expired>;

/// The image's deadline passed while it waited for the model; it was not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expired;

/// The queue is full: the caller should answer 429, asking the client to come back after
/// `retry_after` (the time the queue takes to drain at the measured rate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overloaded {
    /// When a retry may find room.
    pub retry_after: Duration,
}

/// Images answered per second, an exponentially weighted average over recent batches.
#[derive(Debug, Clone, Copy, Default)]
struct DrainRate {
    per_second: f64,
    last: Option<Instant>,
}

impl DrainRate {
    /// Weight of the newest batch in the average.
    const WEIGHT: f64 = 0.2;

    /// Records `n` images answered at `now`.
    fn record(&mut self, n: usize, now: Instant) {
        if let Some(last) = self.last {
            let seconds = now.saturating_duration_since(last).as_secs_f64().max(1e-4);
            let rate = n as f64 / seconds;
            self.per_second = if self.per_second == 0.0 {
                rate
            } else {
                Self::WEIGHT * rate + (1.0 - Self::WEIGHT) * self.per_second
            };
        }
        self.last = Some(now);
    }

    /// How long `queued` images take to drain: at least a second, and 60 s when nothing has
    /// been measured yet.
    fn drain_time(&self, queued: usize) -> Duration {
        if self.per_second <= 0.0 {
            return Duration::from_secs(60);
        }
        Duration::from_secs_f64((queued as f64 / self.per_second).clamp(1.0, 3600.0)).max(Duration::from_secs(1))
    }
}

/// The sending side of the batcher, shared by request handlers. Dropping the last clone
/// stops the workers once the queue is empty.
#[derive(Clone)]
pub struct Batcher {
    queue: Arc<Queue>,
    _open: Arc<Open>,
}

/// Closes the queue when the last [`Batcher`] goes away.
struct Open(Arc<Queue>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.signal();
    }
}

/// What the request handlers and the model workers share.
struct Queue {
    state: Mutex<QueueState>,
    /// Signalled when a waiting worker may be able to take a batch.
    wake: Condvar,
    /// Counts those signals, so a polling worker sees them without the lock.
    signals: AtomicU64,
    /// Workers asleep on `wake`: a signal with none skips the condition variable's system
    /// call (while workers poll, most signals find none).
    sleepers: AtomicUsize,
    policy: BatchPolicy,
    metrics: Arc<Metrics>,
}

#[derive(Default)]
struct QueueState {
    jobs: VecDeque<Job>,
    /// Requests still decoding their images.
    preparing: usize,
    /// Workers not running a batch.
    free: usize,
    /// No request handler is left.
    closed: bool,
    /// The measured drain rate, for `Retry-After`.
    rate: DrainRate,
}

/// Marks a request as "being prepared" until dropped, so a forming batch knows more images
/// are on their way and a short wait will fill it.
pub struct Preparing(Arc<Queue>);

impl Drop for Preparing {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.preparing -= 1;
        let wake = state.preparing == 0 && !state.jobs.is_empty();
        drop(state);
        if wake {
            self.0.signal();
        }
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
        let batcher = Self::idle(policy, metrics);
        let first = batcher.queue.clone();
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
        batcher
    }

    /// The queue with no worker yet.
    fn idle(policy: BatchPolicy, metrics: Arc<Metrics>) -> Self {
        let queue = Arc::new(Queue {
            state: Mutex::default(),
            wake: Condvar::new(),
            signals: AtomicU64::new(0),
            sleepers: AtomicUsize::new(0),
            policy,
            metrics,
        });
        Self {
            _open: Arc::new(Open(queue.clone())),
            queue,
        }
    }

    /// Call when a request starts decoding images; keep the guard until they are submitted.
    pub fn preparing(&self) -> Preparing {
        self.queue.lock().preparing += 1;
        Preparing(self.queue.clone())
    }

    /// Most images the queue holds.
    pub fn capacity(&self) -> usize {
        self.queue.policy.queue_capacity
    }

    /// Queues one prepared image; the receiver yields the model's prediction for it.
    pub fn submit(&self, input: Vec<f32>) -> Result<oneshot::Receiver<Reply>, Overloaded> {
        let mut receivers = self.submit_all(vec![input], None)?;
        Ok(receivers.pop().expect("one image, one receiver"))
    }

    /// Queues a request's images, all or none: when they do not all fit, none is queued (no
    /// image of a refused request is run). Images still queued at `deadline` are dropped
    /// before a batch forms and answered [`Expired`].
    pub fn submit_all(
        &self,
        inputs: Vec<Vec<f32>>,
        deadline: Option<Instant>,
    ) -> Result<Vec<oneshot::Receiver<Reply>>, Overloaded> {
        let count = inputs.len();
        let mut state = self.queue.lock();
        if state.jobs.len() + count > self.queue.policy.queue_capacity {
            return Err(Overloaded {
                retry_after: state.rate.drain_time(state.jobs.len() + count),
            });
        }
        let before = state.jobs.len();
        let queued = Instant::now();
        let receivers = inputs
            .into_iter()
            .map(|input| {
                let (reply, rx) = oneshot::channel();
                state.jobs.push_back(Job {
                    input,
                    queued,
                    deadline,
                    reply,
                });
                rx
            })
            .collect();
        let n = state.jobs.len();
        let max_batch = self.queue.policy.max_batch;
        // A waiting worker can act now only if these are its first images, a batch is full,
        // or nothing more is being prepared.
        let wake = before == 0 || (before < max_batch && n >= max_batch) || state.preparing == 0;
        drop(state);
        if wake && count > 0 {
            self.queue.signal();
        }
        self.queue.metrics.queue_depth.add(count as i64);
        Ok(receivers)
    }
}

/// The text of a caught panic.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Runs `work` on a new model worker thread numbered `index`, inside its own thread pool.
fn spawn_worker(index: usize, layout: WorkerLayout, work: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .name(format!("{MODEL_THREAD_PREFIX}-{index}"))
        .spawn(move || layout.run_worker(work))
        .expect("spawn a model worker thread");
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Tells waiting workers that they may be able to take a batch. Call after the change,
    /// with or without the lock.
    fn signal(&self) {
        self.signals.fetch_add(1, Ordering::SeqCst);
        // A worker counts itself a sleeper under the lock, before its wait releases the lock;
        // every change worth a signal is made under the lock, so it comes after that count.
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            self.wake.notify_all();
        }
    }

    /// Gives up the lock for a while. With `poll` set: until the next signal, the policy's
    /// poll time or `deadline`, whichever comes first, polling meanwhile so that the core does
    /// not go idle; `poll` stays set only if a signal ended it. Otherwise: sleeps until a
    /// signal or `deadline` (it may also wake early), and sets `poll` for the next wait.
    fn wait<'a>(
        &'a self,
        state: MutexGuard<'a, QueueState>,
        deadline: Option<Instant>,
        poll: &mut bool,
    ) -> MutexGuard<'a, QueueState> {
        if *poll {
            let seen = self.signals.load(Ordering::Acquire);
            drop(state);
            let spin_end = Instant::now() + self.policy.poll;
            let end = deadline.map_or(spin_end, |d| d.min(spin_end));
            while self.signals.load(Ordering::Acquire) == seen && Instant::now() < end {
                std::hint::spin_loop();
            }
            *poll = self.signals.load(Ordering::Acquire) != seen;
            return self.lock();
        }
        *poll = true;
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        let state = match deadline {
            None => self.wake.wait(state).unwrap_or_else(|p| p.into_inner()),
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                self.wake.wait_timeout(state, left).unwrap_or_else(|p| p.into_inner()).0
            }
        };
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
        state
    }

    /// Answers [`Expired`] to every queued image whose deadline has passed, and drops it.
    fn drop_expired(&self, state: &mut QueueState) {
        let now = Instant::now();
        if !state.jobs.iter().any(|j| j.deadline.is_some_and(|d| d <= now)) {
            return;
        }
        let before = state.jobs.len();
        let mut kept = VecDeque::with_capacity(before);
        for job in state.jobs.drain(..) {
            match job.deadline {
                Some(d) if d <= now => {
                    let _ = job.reply.send(Err(Expired));
                }
                _ => kept.push_back(job),
            }
        }
        state.jobs = kept;
        let dropped = before - state.jobs.len();
        if dropped > 0 {
            self.metrics.queue_depth.sub(dropped as i64);
            self.metrics.expired.inc_by(dropped as u64);
        }
    }

    /// Forms batches and runs them until the queue is closed and empty.
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
            // A model that panics on a batch fails that batch's requests (their replies are
            // dropped unsent), not the worker.
            let predictions = match catch_unwind(AssertUnwindSafe(|| model.predict(inputs, n))) {
                Ok(predictions) => predictions,
                Err(panic) => {
                    tracing::error!("the model failed on a batch of {n}: {}", panic_message(&*panic));
                    continue;
                }
            };
            self.metrics.batch_size.observe(n as f64);
            self.metrics.inference_seconds.observe(started.elapsed().as_secs_f64());
            self.lock().rate.record(n, Instant::now());
            for (reply, prediction) in replies.into_iter().zip(predictions) {
                // A client that went away no longer needs its answer.
                let _ = reply.send(Ok(prediction));
            }
        }
    }

    /// The next batch, by the rules in the module docs; `None` once the queue is closed and
    /// empty.
    fn next_batch(&self) -> Option<Vec<Job>> {
        let mut state = self.lock();
        state.free += 1;
        if state.free > 1 {
            // A forming batch elsewhere may now go: it is no longer the only free worker.
            self.signal();
        }
        // Poll first; sleep only after a poll that saw no signal. Every wait is followed by a
        // fresh look at the queue under the lock, which is what keeps a sleep from missing a
        // signal.
        let mut poll = true;
        loop {
            self.drop_expired(&mut state);
            let Some(oldest) = state.jobs.front().map(|j| j.queued) else {
                if state.closed {
                    state.free -= 1;
                    return None;
                }
                state = self.wait(state, None, &mut poll);
                continue;
            };
            let deadline = oldest + self.policy.max_delay;
            let now = Instant::now();
            let go = state.jobs.len() >= self.policy.max_batch
                || state.preparing == 0
                || state.free > 1
                || state.closed
                || now >= deadline;
            if go {
                let n = state.jobs.len().min(self.policy.max_batch);
                state.free -= 1;
                let batch: Vec<Job> = state.jobs.drain(..n).collect();
                if !state.jobs.is_empty() {
                    // What is left is another worker's first image.
                    self.signal();
                }
                return Some(batch);
            }
            state = self.wait(state, Some(deadline), &mut poll);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A queue for two workers, with no worker running: the tests play the workers.
    fn queue(max_batch: usize, max_delay: Duration) -> Batcher {
        polling_queue(max_batch, max_delay, Duration::from_micros(200))
    }

    /// As [`queue`], with idle workers polling for `poll` before they sleep.
    fn polling_queue(max_batch: usize, max_delay: Duration, poll: Duration) -> Batcher {
        let policy = BatchPolicy {
            max_batch,
            max_delay,
            queue_capacity: 64,
            poll,
            layout: WorkerLayout::new(2, 2),
        };
        Batcher::idle(policy, Arc::new(Metrics::new()))
    }

    /// Queues an image whose first value is `tag`.
    fn submit(b: &Batcher, tag: f32) {
        let _reply = b.submit(vec![tag]).unwrap();
    }

    fn tags(batch: &[Job]) -> Vec<f32> {
        batch.iter().map(|j| j.input[0]).collect()
    }

    /// Plays a worker on its own thread: the tags of the batch it takes.
    fn worker(b: &Batcher) -> std::thread::JoinHandle<Vec<f32>> {
        let q = b.queue.clone();
        std::thread::spawn(move || tags(&q.next_batch().unwrap()))
    }

    /// Queues image 1.0 while a request is still being prepared, and starts a worker on it:
    /// the worker, checked to be still waiting, and the request's mark.
    fn waiting_worker(b: &Batcher) -> (std::thread::JoinHandle<Vec<f32>>, Preparing) {
        let preparing = b.preparing();
        submit(b, 1.0);
        let w = worker(b);
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !w.is_finished(),
            "the batch closed while an image was still being prepared"
        );
        (w, preparing)
    }

    #[test]
    fn a_lone_free_worker_waits_for_images_still_being_prepared() {
        let b = queue(32, Duration::from_secs(30));
        let (w, preparing) = waiting_worker(&b);
        submit(&b, 2.0);
        drop(preparing);
        assert_eq!(w.join().unwrap(), vec![1.0, 2.0]);
    }

    #[test]
    fn a_second_free_worker_makes_the_forming_batch_go() {
        let b = queue(32, Duration::from_secs(30));
        let (first, preparing) = waiting_worker(&b);
        // A second worker comes free: one of the two takes the queued image at once.
        let second = worker(&b);
        let started = Instant::now();
        while !first.is_finished() && !second.is_finished() {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "neither worker took the image"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let (went, alone) = if first.is_finished() {
            (first, second)
        } else {
            (second, first)
        };
        assert_eq!(went.join().unwrap(), vec![1.0]);
        // The other is the only free worker again, so it waits for what is being prepared.
        submit(&b, 2.0);
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !alone.is_finished(),
            "a lone free worker went while an image was being prepared"
        );
        drop(preparing);
        assert_eq!(alone.join().unwrap(), vec![2.0]);
    }

    #[test]
    fn a_full_batch_goes_and_the_rest_waits_for_the_next() {
        let b = queue(2, Duration::from_secs(30));
        let _preparing = b.preparing();
        for tag in [1.0, 2.0, 3.0] {
            submit(&b, tag);
        }
        assert_eq!(worker(&b).join().unwrap(), vec![1.0, 2.0]);
        assert_eq!(b.queue.lock().jobs.len(), 1);
    }

    #[test]
    fn a_batch_goes_once_its_oldest_image_has_waited_max_delay() {
        let b = queue(32, Duration::from_millis(100));
        let _preparing = b.preparing();
        submit(&b, 1.0);
        let started = Instant::now();
        assert_eq!(worker(&b).join().unwrap(), vec![1.0]);
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(90), "went after {waited:?}");
        assert!(waited < Duration::from_secs(5), "went after {waited:?}");
    }

    #[test]
    fn images_past_their_deadline_are_dropped_unrun() {
        let b = queue(32, Duration::from_millis(1));
        let mut expired = b
            .submit_all(vec![vec![1.0]], Some(Instant::now() - Duration::from_millis(1)))
            .unwrap();
        let _kept = b
            .submit_all(vec![vec![2.0]], Some(Instant::now() + Duration::from_secs(60)))
            .unwrap();
        assert_eq!(worker(&b).join().unwrap(), vec![2.0]);
        assert_eq!(expired.pop().unwrap().try_recv().unwrap(), Err(Expired));
        assert_eq!(b.queue.metrics.expired.get(), 1);
    }

    #[test]
    fn retry_after_is_the_queue_at_the_measured_rate() {
        let mut rate = DrainRate::default();
        assert_eq!(rate.drain_time(10), Duration::from_secs(60), "nothing measured yet");
        let t = Instant::now();
        rate.record(8, t);
        rate.record(8, t + Duration::from_millis(100));
        // 80 images/s: 400 queued images take 5 s; a few images at least a second.
        assert_eq!(rate.drain_time(400).as_secs(), 5);
        assert_eq!(rate.drain_time(2), Duration::from_secs(1));
        let b = polling_queue(32, Duration::from_secs(30), Duration::ZERO);
        let full = b.submit_all(vec![vec![0.0]; 65], None).unwrap_err();
        assert_eq!(full.retry_after, Duration::from_secs(60));
    }

    #[test]
    fn workers_stop_once_the_last_sender_is_gone() {
        let b = queue(32, Duration::from_secs(30));
        let q = b.queue.clone();
        submit(&b, 1.0);
        drop(b);
        assert_eq!(tags(&q.next_batch().unwrap()), vec![1.0]);
        assert!(q.next_batch().is_none());
    }

    /// A worker waiting on an empty queue with `poll`: how long it took to take an image
    /// queued 50 ms after it started. Fails, instead of hanging, if it took none in 10 s.
    fn pickup_after_50ms(poll: Duration) -> Duration {
        let b = polling_queue(32, Duration::from_secs(30), poll);
        let w = worker(&b);
        let (done, taken) = std::sync::mpsc::channel();
        std::thread::spawn(move || done.send(w.join().unwrap()));
        std::thread::sleep(Duration::from_millis(50));
        let queued = Instant::now();
        submit(&b, 1.0);
        let batch = taken
            .recv_timeout(Duration::from_secs(10))
            .expect("the worker took no image in 10 s");
        assert_eq!(batch, vec![1.0]);
        queued.elapsed()
    }

    #[test]
    fn a_polling_worker_takes_an_image_as_soon_as_it_is_queued() {
        // Still polling (for 30 s) when the image comes: only the poll itself can see it.
        let took = pickup_after_50ms(Duration::from_secs(30));
        assert!(took < Duration::from_secs(5), "took {took:?}");
    }

    #[test]
    fn a_worker_that_polls_briefly_or_not_at_all_sleeps_and_is_woken() {
        for poll in [Duration::ZERO, Duration::from_millis(1)] {
            let took = pickup_after_50ms(poll);
            assert!(took < Duration::from_secs(5), "poll {poll:?}: took {took:?}");
        }
    }
}
