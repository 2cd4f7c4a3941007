//! Optimizers burn lacks, or runs as many passes over the weights (SGD), written on burn's
//! optimizer traits.

pub mod adadelta;
pub mod clip;
pub mod decay;
pub mod decoupled;
pub mod sgd;

pub use adadelta::{Adadelta, AdadeltaConfig, AdadeltaState};
pub use clip::clip_grad_norm;
pub use decay::decay_weights;
pub use decoupled::DecayGroup;
pub use sgd::{Sgd, SgdConfig, SgdState};
