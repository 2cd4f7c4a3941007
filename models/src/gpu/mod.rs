//! kiln's GPU speed, in one place: what burn's CUDA backend runs differently in kiln, and the
//! process settings GPU programs share.
//!
//! - [`cache`]: cubecl's autotune results and compiled kernels kept across runs.
//! - [`conv`]: 2-D convolutions (forward and both gradients) through cuDNN, loaded at run time
//!   ([`cudnn`], the `cuda` feature), with the shape arithmetic in [`conv_geometry`]; burn's
//!   kernels wherever cuDNN is absent or cannot take a convolution.

pub mod cache;
pub mod conv;
pub mod conv_geometry;
#[cfg(feature = "cuda")]
pub mod cudnn;

pub use conv::{conv2d, record_geometries};
