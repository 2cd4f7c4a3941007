//! Data-parallel training with torch DDP's semantics on burn-collective: one worker per
//! device (threads of this process), nodes meeting at an orchestrator on the master, rank 0's
//! weights broadcast at the start, gradients averaged every step, metrics summed, a watchdog
//! that stops the job when a peer is lost.

mod args;
mod collective;
mod launch;
mod plan;
mod watchdog;

pub use args::{DistArgs, DEFAULT_TIMEOUT_SECS};
pub use collective::{Collective, DistError};
pub use launch::launch;
pub use plan::{resolve, visible_gpus, DeviceSpec, DistPlan, Master, PLACEHOLDER_DIST_URL};
