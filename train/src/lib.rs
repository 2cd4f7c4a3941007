//! kiln-train: the guide's training jobs (`mnist`, `imagenet`, `yolox`) on burn,
//! generic over the backend; `main` picks the backend and device from `--device`.
#![warn(missing_docs)]

pub mod checkpoint;
pub mod cli;
pub mod ddp;
pub mod ema;
pub mod error;
pub mod float_mode;
pub mod heap;
pub mod jobs;
pub mod meters;
pub mod mixed;
pub mod optim;
pub mod progress;
pub mod run;
pub mod schedule;

pub use cli::{Cli, ImagenetArgs, Job, MnistArgs, YoloxArgs};
pub use ddp::{DeviceSpec, DistArgs};
pub use error::TrainError;
pub use kiln_models::DeviceChoice;

/// Sets up a process that runs training steps as `kiln-train` runs them: the heap on
/// transparent huge pages (a restart, see [`heap::use_transparent_huge_pages`]), freed memory
/// kept for reuse ([`heap::keep_freed_memory`]), denormal floats flushed to zero
/// ([`float_mode::flush_denormals`]) and gemm reading im2col tiles in place
/// ([`kiln_models::gemm_packing::read_lhs_in_place`]). Call it first thing in `main`, before any thread starts;
/// `kiln-train` and `kiln-bench` (whose in-process steps must measure kiln-train's) both do.
pub fn prepare_training_process() {
    heap::use_transparent_huge_pages();
    heap::keep_freed_memory();
    float_mode::flush_denormals();
    kiln_models::gemm_packing::read_lhs_in_place();
}
