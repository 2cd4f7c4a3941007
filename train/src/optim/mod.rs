//! Optimizers burn lacks, written on burn's optimizer traits.

pub mod adadelta;

pub use adadelta::{Adadelta, AdadeltaConfig, AdadeltaState};
