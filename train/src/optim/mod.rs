//! Optimizers burn lacks, written on burn's optimizer traits.

pub mod adadelta;
pub mod decay;

pub use adadelta::{Adadelta, AdadeltaConfig, AdadeltaState};
pub use decay::decay_weights;
