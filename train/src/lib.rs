//! kiln-train: the guide's training jobs (`mnist`, `imagenet`, `yolox`, `swin`) on burn,
//! generic over the backend; `main` picks the backend and device from `--device`.
#![warn(missing_docs)]

pub mod checkpoint;
pub mod cli;
pub mod ddp;
pub mod error;
pub mod jobs;
pub mod meters;
pub mod mixed;
pub mod optim;
pub mod parity;
pub mod progress;
pub mod run;
pub mod schedule;

pub use cli::{Cli, ImagenetArgs, Job, MnistArgs, SwinArgs, YoloxArgs};
pub use ddp::{DeviceSpec, DistArgs};
pub use error::TrainError;
pub use kiln_models::DeviceChoice;
