//! How the CPU is shared among model workers: each worker thread runs whole batches on its own
//! thread pool, so two batches can be in flight at once, and a worker never waits at a
//! parallel join for a thread the HTTP side has preempted.
//!
//! The model's threads run at a lower priority (nice [`MODEL_NICE`]) than the HTTP side.
//! A request's way through the server (read, decode, queue; later the answer) is short and
//! on every request's critical path, while a batch is long CPU work: with equal priority the
//! short work queues behind running batches, the next batch's images arrive late, and cores
//! sit idle in between (`kiln-bench serve` reports that idle time per request). Where nothing
//! else runs, nice changes nothing: the model still gets every idle cycle.

/// Name prefix of every model thread: each worker is `kiln-inference-N`, and its pool's
/// threads inherit the name (Linux keeps a name's first 15 bytes), so a thread's name tells
/// model work from HTTP work (`kiln-bench serve` splits the server's CPU by it).
pub const MODEL_THREAD_PREFIX: &str = "kiln-inference";

/// The nice value of the model's threads (0 is the default; higher runs later). A
/// non-privileged process may raise its threads' nice value, never lower it.
pub const MODEL_NICE: i32 = 10;

/// Lowers the calling thread's priority to [`MODEL_NICE`] (Linux gives each thread its own
/// nice value). Elsewhere, or if it fails, the thread keeps its priority.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: `setpriority` only changes the calling thread's scheduling priority (who 0 is
    // the caller); it reads no memory of ours.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, MODEL_NICE);
    }
}

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

    /// Runs `work` in a pool of `threads_per_worker` threads as the current rayon pool, so
    /// the CPU backend's parallel kernels use that many threads; every thread that runs it
    /// is at nice [`MODEL_NICE`].
    pub fn run_worker<T: Send>(&self, work: impl FnOnce() -> T + Send) -> T {
        lower_priority();
        match rayon::ThreadPoolBuilder::new()
            .num_threads(self.threads_per_worker)
            .start_handler(|_| lower_priority())
            .build()
        {
            Ok(pool) => pool.install(work),
            // No pool: the global one still runs the work, only with its own thread count.
            Err(_) => work(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The nice value of the calling thread.
    #[cfg(target_os = "linux")]
    fn nice() -> i32 {
        // SAFETY: reads the calling thread's priority; errno-free for valid arguments.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn model_work_runs_at_the_model_nice_value_on_every_pool_thread() {
        let layout = WorkerLayout::new(1, 2);
        let outer = std::thread::spawn(move || {
            let before = nice();
            let inside = layout.run_worker(|| {
                let (a, b) = rayon::join(nice, nice);
                [nice(), a, b]
            });
            (before, inside)
        });
        let (before, inside) = outer.join().unwrap();
        // A thread may raise its nice value but not lower it: a test run already at a higher
        // one keeps it.
        assert_eq!(inside, [before.max(MODEL_NICE); 3]);
    }
}
