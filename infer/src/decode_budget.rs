//! What concurrent decodes may hold: a memory budget shared by every request, and a number of
//! decode slots (one per core), so that a burst of image bombs queues instead of growing the
//! heap, and decoding threads never outnumber the cores that also answer requests.
//!
//! Each request reserves its estimated peak ([`crate::preprocess::Plan::bytes`]) before its
//! images are decoded, and gives it back when its inputs are ready. Waiters are served first
//! come, first served.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The budget is counted in units of this many bytes (a semaphore holds at most `u32` permits
/// per acquisition).
const UNIT: u64 = 1024;

/// The shared decode budget.
#[derive(Debug, Clone)]
pub struct DecodeBudget {
    memory: Arc<Semaphore>,
    slots: Arc<Semaphore>,
    bytes: u64,
}

/// A reservation: memory and one decode slot, given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    _memory: OwnedSemaphorePermit,
    _slot: OwnedSemaphorePermit,
}

/// A request needs more than the whole budget: it could never run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverBudget {
    /// The budget in bytes.
    pub budget: u64,
}

impl DecodeBudget {
    /// `bytes` of working memory and `slots` decodes at a time, shared by all requests.
    pub fn new(bytes: u64, slots: usize) -> Self {
        let units = (bytes / UNIT).clamp(1, u32::MAX as u64);
        Self {
            memory: Arc::new(Semaphore::new(units as usize)),
            slots: Arc::new(Semaphore::new(slots.max(1))),
            bytes: units * UNIT,
        }
    }

    /// The budget in bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether a request needing `bytes` could ever be served.
    pub fn check(&self, bytes: u64) -> Result<(), OverBudget> {
        if bytes > self.bytes {
            Err(OverBudget { budget: self.bytes })
        } else {
            Ok(())
        }
    }

    /// Waits until `bytes` of memory and a decode slot are free, and holds them.
    pub async fn reserve(&self, bytes: u64) -> Result<Reservation, OverBudget> {
        self.check(bytes)?;
        let units = bytes.div_ceil(UNIT).max(1) as u32;
        // The semaphores are never closed.
        let memory = self
            .memory
            .clone()
            .acquire_many_owned(units)
            .await
            .expect("the budget is never closed");
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("the budget is never closed");
        Ok(Reservation {
            _memory: memory,
            _slot: slot,
        })
    }

    /// Bytes not reserved now.
    pub fn available(&self) -> u64 {
        self.memory.available_permits() as u64 * UNIT
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn reservations_wait_for_memory_and_give_it_back() {
        let budget = DecodeBudget::new(10 * UNIT, 4);
        let first = budget.reserve(6 * UNIT).await.unwrap();
        assert_eq!(budget.available(), 4 * UNIT);
        // The second does not fit beside the first: it waits until the first is dropped.
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.reserve(5 * UNIT).await.map(|_| ()) }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished());
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("served once memory is free")
            .unwrap()
            .unwrap();
        assert_eq!(budget.available(), 10 * UNIT);
    }

    #[tokio::test]
    async fn more_than_the_whole_budget_is_refused_at_once() {
        let budget = DecodeBudget::new(10 * UNIT, 1);
        assert_eq!(
            budget.reserve(10 * UNIT + 1).await.unwrap_err(),
            OverBudget { budget: 10 * UNIT }
        );
        assert!(budget.reserve(10 * UNIT).await.is_ok());
    }

    #[tokio::test]
    async fn decode_slots_bound_concurrent_decodes() {
        let budget = DecodeBudget::new(100 * UNIT, 1);
        let held = budget.reserve(1).await.unwrap();
        let second = tokio::time::timeout(Duration::from_millis(50), budget.reserve(1)).await;
        assert!(second.is_err(), "a second decode waits for the only slot");
        drop(held);
        assert!(budget.reserve(1).await.is_ok());
    }
}
