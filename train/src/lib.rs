//! kiln-train: the guide's training jobs (`mnist`, `imagenet`, `yolox`) on burn,
//! generic over the backend; `main` picks the backend and device from `--device`.
#![warn(missing_docs)]

pub mod checkpoint;
pub mod cli;
pub mod dist;
pub mod ema;
pub mod error;
pub mod float_mode;
pub mod heap;
pub mod jobs;
pub mod log;
pub mod loss;
pub mod meters;
pub mod metrics;
pub mod mixed;
pub mod optim;
pub mod progress;
pub mod schedule;

pub use cli::{Cli, ImagenetArgs, Job, MnistArgs, YoloxArgs};
pub use dist::{DeviceSpec, DistArgs};
pub use error::TrainError;
pub use kiln_models::DeviceChoice;
