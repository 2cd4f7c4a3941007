//! How the CPU is shared among model workers: each worker thread runs whole batches on its own
//! thread pool, so two batches can be in flight at once, and a worker never waits at a
//! parallel join for a thread the HTTP side has preempted.

/// The number of model workers and the threads each one's forward pass uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerLayout {
    /// Model workers: threads that each take a batch from the queue and run it.
    pub workers: usize,
    /// Threads of each worker's own pool (its forward pass's parallelism).
    pub threads_per_worker: usize,
}

impl WorkerLayout {
    /// `workers` workers sharing `cores` cores evenly (at least one thread each).
    pub fn new(workers: usize, cores: usize) -> Self {
        let workers = workers.max(1);
        Self {
            workers,
            threads_per_worker: (cores / workers).max(1),
        }
    }

    /// Runs `work` on this thread with a pool of `threads_per_worker` threads as the current
    /// rayon pool, so the CPU backend's parallel kernels use that many threads.
    pub fn run_worker<T: Send>(&self, work: impl FnOnce() -> T + Send) -> T {
        match rayon::ThreadPoolBuilder::new()
            .num_threads(self.threads_per_worker)
            .build()
        {
            Ok(pool) => pool.install(work),
            // No pool: the global one still runs the work, only with its own thread count.
            Err(_) => work(),
        }
    }
}
