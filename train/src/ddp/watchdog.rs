//! Stops the process when a collective operation waits too long: burn-collective blocks until
//! every peer answers, so a lost node would otherwise hang the job forever.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the watchdog looks at the pending operations.
const POLL: Duration = Duration::from_millis(250);

/// Operations in flight, by global rank, with when they started.
#[derive(Debug)]
pub struct Watchdog {
    pending: Mutex<HashMap<usize, (Instant, &'static str)>>,
    timeout: Duration,
}

/// Disarms its operation when dropped.
#[must_use]
pub struct Armed<'a> {
    watchdog: &'a Watchdog,
    rank: usize,
}

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        self.watchdog.lock().remove(&self.rank);
    }
}

impl Watchdog {
    /// Starts a watchdog thread: an operation pending longer than `timeout` prints which rank
    /// waited for what and exits the process with status 1.
    pub fn start(timeout: Duration) -> Arc<Self> {
        let watchdog = Arc::new(Self {
            pending: Mutex::new(HashMap::new()),
            timeout,
        });
        let weak = Arc::downgrade(&watchdog);
        std::thread::Builder::new()
            .name("kiln-dist-watchdog".into())
            .spawn(move || {
                while let Some(w) = weak.upgrade() {
                    if let Some((rank, what)) = w.expired() {
                        // Ignore a closed stderr: the exit must happen whatever the reader did.
                        let _ = writeln!(
                            std::io::stderr(),
                            "kiln-train: error: rank {rank}: {what} got no answer from the other workers \
                             within {} s (--dist-timeout): a worker or node is lost; stopping",
                            w.timeout.as_secs()
                        );
                        std::process::exit(1);
                    }
                    drop(w);
                    std::thread::sleep(POLL);
                }
            })
            .expect("spawn the watchdog thread");
        watchdog
    }

    /// Marks `what` as pending on `rank` until the returned guard drops.
    pub fn arm(&self, rank: usize, what: &'static str) -> Armed<'_> {
        self.lock().insert(rank, (Instant::now(), what));
        Armed { watchdog: self, rank }
    }

    /// The first operation pending for longer than the timeout.
    fn expired(&self) -> Option<(usize, &'static str)> {
        self.lock()
            .iter()
            .find(|(_, (since, _))| since.elapsed() > self.timeout)
            .map(|(&rank, &(_, what))| (rank, what))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<usize, (Instant, &'static str)>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_operations_expire_and_finished_ones_do_not() {
        let w = Watchdog {
            pending: Mutex::new(HashMap::new()),
            timeout: Duration::from_millis(30),
        };
        {
            let _done = w.arm(0, "all-reduce");
        }
        let _waiting = w.arm(1, "register");
        assert_eq!(w.expired(), None);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(w.expired(), Some((1, "register")));
    }
}
