//! Training checkpoints: everything `--resume` needs to continue a run exactly.
//!
//! A checkpoint is one file in burn's named MessagePack record format (not a PyTorch pickle,
//! whatever its name says) holding the next epoch, the architecture, the best Acc@1, the seed,
//! the class names, the model's parameters and buffers, the optimizer's state and the
//! scheduler's state. It is written to a temporary file in the same folder and renamed into
//! place, so a crash never leaves a half-written checkpoint.

use std::fs;
use std::path::{Path, PathBuf};

use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, PrecisionSettings, Record, Recorder};
use burn::tensor::backend::Backend;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The checkpoint the job rewrites every epoch (the original's file name).
pub const CHECKPOINT_FILE: &str = "checkpoint.pth.tar";
/// The copy of the checkpoint with the best validation Acc@1 so far.
pub const BEST_FILE: &str = "model_best.pth.tar";

/// The run's position and metadata, stored beside the tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct RunState {
    /// The epoch to run next (the original stores `epoch + 1`).
    pub epoch: usize,
    /// The architecture name, e.g. `resnet50`.
    pub arch: String,
    /// The best validation Acc@1 so far, in percent.
    pub best_acc1: f64,
    /// The seed the run's data order and augmentation derive from.
    pub seed: u64,
    /// The class names, in class-index order.
    pub classes: Vec<String>,
}

/// The on-disk record: [`RunState`] plus the model (`M`), optimizer (`O`) and scheduler (`S`)
/// records.
pub struct CheckpointRecord<M, O, S> {
    /// The run's position and metadata.
    pub state: RunState,
    /// The model's parameters and buffers.
    pub model: M,
    /// The optimizer's state (momentum buffers).
    pub optimizer: O,
    /// The learning-rate scheduler's state.
    pub scheduler: S,
}

/// The serialised form of a [`CheckpointRecord`].
#[derive(Clone, Serialize, Deserialize)]
#[serde(bound(serialize = "M: Serialize, O: Serialize, S: Serialize"))]
#[serde(bound(deserialize = "M: DeserializeOwned, O: DeserializeOwned, S: DeserializeOwned"))]
pub struct CheckpointItem<M, O, S> {
    epoch: usize,
    arch: String,
    best_acc1: f64,
    seed: u64,
    classes: Vec<String>,
    model: M,
    optimizer: O,
    scheduler: S,
}

impl<B: Backend, M: Record<B>, O: Record<B>, S: Record<B>> Record<B> for CheckpointRecord<M, O, S> {
    type Item<P: PrecisionSettings> = CheckpointItem<M::Item<P>, O::Item<P>, S::Item<P>>;

    fn into_item<P: PrecisionSettings>(self) -> Self::Item<P> {
        let RunState {
            epoch,
            arch,
            best_acc1,
            seed,
            classes,
        } = self.state;
        CheckpointItem {
            epoch,
            arch,
            best_acc1,
            seed,
            classes,
            model: self.model.into_item(),
            optimizer: self.optimizer.into_item(),
            scheduler: self.scheduler.into_item(),
        }
    }

    fn from_item<P: PrecisionSettings>(item: Self::Item<P>, device: &B::Device) -> Self {
        Self {
            state: RunState {
                epoch: item.epoch,
                arch: item.arch,
                best_acc1: item.best_acc1,
                seed: item.seed,
                classes: item.classes,
            },
            model: M::from_item(item.model, device),
            optimizer: O::from_item(item.optimizer, device),
            scheduler: S::from_item(item.scheduler, device),
        }
    }
}

/// Why a checkpoint could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The checkpoint file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file is not a kiln checkpoint for this model and optimizer.
    #[error("{path}: not a kiln checkpoint this run can resume from: {msg}")]
    Format {
        /// The checkpoint file.
        path: PathBuf,
        /// The decoder's complaint.
        msg: String,
    },
}

impl<M, O, S> CheckpointRecord<M, O, S> {
    /// Writes the checkpoint to `path` atomically (temporary file, then rename).
    pub fn save<B: Backend>(self, path: &Path) -> Result<(), CheckpointError>
    where
        Self: Record<B>,
    {
        let bytes =
            Recorder::<B>::record(&NamedMpkBytesRecorder::<FullPrecisionSettings>::new(), self, ()).map_err(|e| {
                CheckpointError::Format {
                    path: path.to_path_buf(),
                    msg: e.to_string(),
                }
            })?;
        write_atomic(path, &bytes)
    }

    /// Reads a checkpoint written by [`save`](Self::save) onto `device`.
    pub fn load<B: Backend>(path: &Path, device: &B::Device) -> Result<Self, CheckpointError>
    where
        Self: Record<B>,
    {
        let bytes = fs::read(path).map_err(|source| CheckpointError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        NamedMpkBytesRecorder::<FullPrecisionSettings>::new()
            .load(bytes, device)
            .map_err(|e| CheckpointError::Format {
                path: path.to_path_buf(),
                msg: e.to_string(),
            })
    }
}

/// Writes `bytes` to a temporary sibling of `path`, syncs it and renames it over `path`.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let io = |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    std::io::Write::write_all(&mut tmp, bytes).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

/// Copies the checkpoint at `from` to `to` atomically (the original's `model_best` copy).
pub fn copy_atomic(from: &Path, to: &Path) -> Result<(), CheckpointError> {
    let bytes = fs::read(from).map_err(|source| CheckpointError::Io {
        path: from.to_path_buf(),
        source,
    })?;
    write_atomic(to, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Module;
    use burn::nn::{Linear, LinearConfig};
    use burn::tensor::Tensor;
    use burn_flex::Flex;

    type Rec = CheckpointRecord<<Linear<Flex> as Module<Flex>>::Record, usize, usize>;

    fn state() -> RunState {
        RunState {
            epoch: 3,
            arch: "resnet18".into(),
            best_acc1: 81.25,
            seed: 42,
            classes: vec!["cat".into(), "dog".into()],
        }
    }

    #[test]
    fn round_trips_state_and_tensors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CHECKPOINT_FILE);
        let device = Default::default();
        let linear: Linear<Flex> = LinearConfig::new(3, 2).init(&device);
        // burn initialises parameters lazily: use them once so the clone saved below holds the
        // same values as the original.
        let x = Tensor::<Flex, 2>::ones([1, 3], &device);
        let expected = linear.forward(x.clone()).into_data();
        let record = Rec {
            state: state(),
            model: linear.clone().into_record(),
            optimizer: 7,
            scheduler: 2,
        };
        record.save::<Flex>(&path).unwrap();
        let got = Rec::load::<Flex>(&path, &device).unwrap();
        assert_eq!(got.state, state());
        assert_eq!((got.optimizer, got.scheduler), (7, 2));
        let restored = LinearConfig::new(3, 2).init::<Flex>(&device).load_record(got.model);
        assert_eq!(restored.forward(x).into_data(), expected);
        // No temporary files are left beside it.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);

        copy_atomic(&path, &dir.path().join(BEST_FILE)).unwrap();
        assert_eq!(
            Rec::load::<Flex>(&dir.path().join(BEST_FILE), &device)
                .unwrap()
                .state
                .epoch,
            3
        );
    }

    #[test]
    fn garbage_and_missing_files_are_named_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk.pth.tar");
        fs::write(&path, b"not a checkpoint").unwrap();
        let err = Rec::load::<Flex>(&path, &Default::default()).err().unwrap().to_string();
        assert!(
            err.contains("junk.pth.tar") && err.contains("not a kiln checkpoint"),
            "{err}"
        );
        let err = Rec::load::<Flex>(&dir.path().join("absent"), &Default::default())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("absent"), "{err}");
    }
}
