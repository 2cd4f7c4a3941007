//! kiln-data: the readers and batchers that feed kiln's training jobs and servers.
//!
//! - [`idx`]: the idx (SN3) array format, raw or gzip-compressed.
//! - [`mnist`]: MNIST as a burn dataset and batcher.
#![warn(missing_docs)]

pub mod idx;
pub mod mnist;

pub use idx::{read_idx, IdxArray, IdxData, IdxError, IdxType};
pub use mnist::{MnistBatch, MnistBatcher, MnistDataset, MnistError, MnistItem, MnistSplit};
