//! The training jobs' errors, each naming the file or flag at fault.

use std::path::PathBuf;

/// Why a job stopped.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The training data is missing or malformed.
    #[error(transparent)]
    Mnist(#[from] kiln_data::MnistError),
    /// The ImageFolder data is missing or malformed.
    #[error(transparent)]
    ImageFolder(#[from] kiln_data::ImageFolderError),
    /// The COCO data is missing or malformed.
    #[error(transparent)]
    Coco(#[from] kiln_data::CocoError),
    /// A COCO image cannot be loaded or augmented.
    #[error(transparent)]
    Detect(#[from] kiln_data::DetectError),
    /// The data loader's settings are unusable.
    #[error("data loader: {0}")]
    Loader(#[from] kiln_data::LoaderError),
    /// A checkpoint could not be written or read.
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    /// The model package could not be written.
    #[error(transparent)]
    Package(#[from] kiln_models::PackageError),
    /// An output file or folder could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A collective operation of a distributed run failed.
    #[error(transparent)]
    Dist(#[from] crate::ddp::DistError),
    /// A flag's value cannot be used.
    #[error("{0}")]
    Flag(String),
}
