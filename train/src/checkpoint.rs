//! Training checkpoints: everything `--resume` needs to continue a run exactly.
//!
//! A checkpoint is one file in burn's named MessagePack record format (not a PyTorch pickle,
//! whatever its name says) holding the next epoch, the architecture, the best Acc@1, the seed,
//! the class names, the model's parameters and buffers, the optimizer's state and the
//! scheduler's state, behind a header: the magic [`MAGIC`] and the SHA-256 of the rest, which
//! `load` checks, so flipped bits, a cut-off file or appended bytes are an error naming the
//! file, not a silently different run. It is written to a temporary file in the same folder
//! and renamed into place, so a crash never leaves a half-written checkpoint.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, PrecisionSettings, Record, Recorder};
use burn::tensor::backend::Backend;
use kiln_models::checksum::sha256;
use kiln_models::tensor_check::{float_tensors, shape_mismatch};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::mixed::LossScaler;

/// The checkpoint the job rewrites every epoch (the original's file name).
pub const CHECKPOINT_FILE: &str = "checkpoint.pth.tar";
/// The copy of the checkpoint with the best validation Acc@1 so far.
pub const BEST_FILE: &str = "model_best.pth.tar";

/// The first bytes of every kiln checkpoint (format version 1); the SHA-256 of the payload
/// follows.
pub const MAGIC: &[u8; 8] = b"KILNCKP1";

/// Header length: the magic and the checksum.
const HEADER: usize = MAGIC.len() + 32;

/// The run's position and metadata, stored beside the tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct RunState {
    /// The epoch to run next (the original stores `epoch + 1`).
    pub epoch: usize,
    /// The architecture name, e.g. `resnet50`.
    pub arch: String,
    /// The best validation score so far, in the job's own measure: Acc@1 in percent for the
    /// classifiers, COCO AP@[.50:.95] as a fraction for YOLOX (stored under main.py's name,
    /// `best_acc1`).
    pub best_score: f64,
    /// The seed the run's data order and augmentation derive from.
    pub seed: u64,
    /// The class names, in class-index order.
    pub classes: Vec<String>,
    /// The mixed-precision loss scale and its clean-step count (GradScaler's state, which
    /// PyTorch's references save too); `None` in f32 runs.
    pub loss_scale: Option<LossScaler>,
}

impl RunState {
    /// Takes a validation score: whether it beats the best so far, which it then becomes.
    pub fn record_score(&mut self, score: f64) -> bool {
        let is_best = score > self.best_score;
        self.best_score = self.best_score.max(score);
        is_best
    }

    /// An error naming `path` unless this (a checkpoint's state) is for the architecture and
    /// classes of `wanted`, the run about to load it.
    pub fn check_resumable(&self, path: &Path, wanted: &RunState) -> Result<(), crate::TrainError> {
        if self.arch != wanted.arch {
            return Err(crate::TrainError::Flag(format!(
                "{}: checkpoint is for {}, this run is {}",
                path.display(),
                self.arch,
                wanted.arch
            )));
        }
        if self.classes != wanted.classes {
            return Err(crate::TrainError::Flag(format!(
                "{}: checkpoint classes {:?} differ from the data's {:?}",
                path.display(),
                self.classes,
                wanted.classes
            )));
        }
        Ok(())
    }
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
    /// Absent from checkpoints written before mixed precision saved its scale.
    #[serde(default)]
    loss_scale: Option<LossScaler>,
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
            best_score,
            seed,
            classes,
            loss_scale,
        } = self.state;
        CheckpointItem {
            epoch,
            arch,
            best_acc1: best_score,
            seed,
            classes,
            loss_scale,
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
                best_score: item.best_acc1,
                seed: item.seed,
                classes: item.classes,
                loss_scale: item.loss_scale,
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

/// The checkpoint of a run now: its state and the records of its model, optimizer and
/// scheduler.
pub fn capture<B, M, O, S>(
    state: &RunState,
    model: &M,
    optim: &O,
    scheduler: &S,
) -> CheckpointRecord<M::Record, O::Record, S::Record<B>>
where
    B: burn::tensor::backend::AutodiffBackend,
    M: burn::module::AutodiffModule<B>,
    O: burn::optim::Optimizer<M, B>,
    S: burn::lr_scheduler::LrScheduler,
{
    CheckpointRecord {
        state: state.clone(),
        model: model.clone().into_record(),
        optimizer: optim.to_record(),
        scheduler: scheduler.to_record::<B>(),
    }
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
        let mut file = Vec::with_capacity(HEADER + bytes.len());
        file.extend_from_slice(MAGIC);
        file.extend_from_slice(&sha256(&bytes));
        file.extend_from_slice(&bytes);
        write_atomic(path, &file)
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
        let format = |msg: String| CheckpointError::Format {
            path: path.to_path_buf(),
            msg,
        };
        if bytes.len() < HEADER || &bytes[..MAGIC.len()] != MAGIC {
            return Err(format(
                "it does not start with kiln's checkpoint header (written by another program or an older kiln)".into(),
            ));
        }
        let payload = &bytes[HEADER..];
        if sha256(payload)[..] != bytes[MAGIC.len()..HEADER] {
            return Err(format(
                "checksum mismatch: the content is not what was written (the file is damaged, cut off or \
                 has bytes appended)"
                    .into(),
            ));
        }
        NamedMpkBytesRecorder::<FullPrecisionSettings>::new()
            .load(payload.to_vec(), device)
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
    let mut tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .permissions(fs::Permissions::from_mode(0o644))
        .tempfile_in(dir)
        .map_err(io)?;
    std::io::Write::write_all(&mut tmp, bytes).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Name prefix of the temporary files checkpoints are written to before the rename.
const TEMP_PREFIX: &str = ".tmp-kiln-ckpt";

/// Removes the temporary checkpoint files a run that died left in `dir`; returns how many.
/// Call before a run starts writing there.
pub fn remove_stale_temporaries(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(TEMP_PREFIX))
        .filter(|e| fs::remove_file(e.path()).is_ok())
        .count()
}

/// Loads `record` into `model`, checking that every tensor has the shape a fresh `model` has:
/// a checkpoint of another configuration is an error naming `path`, not a panic later.
pub fn load_checked<B: Backend, M: Module<B>>(model: M, record: M::Record, path: &Path) -> Result<M, CheckpointError> {
    let fresh = float_tensors(&model);
    let loaded = model.load_record(record);
    match shape_mismatch(&fresh, &float_tensors(&loaded)) {
        None => Ok(loaded),
        Some(msg) => Err(CheckpointError::Format {
            path: path.to_path_buf(),
            msg: format!("it does not fit this model: {msg}"),
        }),
    }
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
            best_score: 81.25,
            seed: 42,
            classes: vec!["cat".into(), "dog".into()],
            // A scale that overflowed once: 2¹⁵, not the default 2¹⁶.
            loss_scale: Some({
                let mut scaler = LossScaler::default();
                scaler.update(false);
                scaler
            }),
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

    fn saved(dir: &Path) -> PathBuf {
        let path = dir.join(CHECKPOINT_FILE);
        let linear: Linear<Flex> = LinearConfig::new(3, 2).init(&Default::default());
        Rec {
            state: state(),
            model: linear.into_record(),
            optimizer: 7,
            scheduler: 2,
        }
        .save::<Flex>(&path)
        .unwrap();
        path
    }

    fn load_error(path: &Path) -> String {
        Rec::load::<Flex>(path, &Default::default()).err().unwrap().to_string()
    }

    /// A flipped bit in the tensor data, appended bytes and a cut-off file all fail the
    /// checksum, naming the file.
    #[test]
    fn damage_fails_the_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let path = saved(dir.path());
        let good = fs::read(&path).unwrap();
        let mut flipped = good.clone();
        let i = flipped.len() - 5;
        flipped[i] ^= 1;
        let mut appended = good.clone();
        appended.extend_from_slice(b"garbage");
        for bad in [flipped, appended, good[..good.len() - 10].to_vec()] {
            fs::write(&path, &bad).unwrap();
            let err = load_error(&path);
            assert!(
                err.contains(CHECKPOINT_FILE) && err.contains("checksum mismatch"),
                "{err}"
            );
        }
        fs::write(&path, &good[HEADER..]).unwrap();
        assert!(load_error(&path).contains("header"));
    }

    #[test]
    fn checkpoints_are_readable_by_all_and_leave_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let path = saved(dir.path());
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o644);
        fs::write(dir.path().join(format!("{TEMP_PREFIX}Ab12Cd")), b"half").unwrap();
        assert_eq!(remove_stale_temporaries(dir.path()), 1);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(CHECKPOINT_FILE)]);
    }

    /// A checkpoint of a model with other shapes is an error naming the file and the tensor.
    #[test]
    fn a_record_of_other_shapes_is_refused() {
        let device = Default::default();
        let small: Linear<Flex> = LinearConfig::new(3, 2).init(&device);
        let large: Linear<Flex> = LinearConfig::new(4, 2).init(&device);
        let path = Path::new("run/checkpoint.pth.tar");
        let err = load_checked(small.clone(), large.into_record(), path)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("checkpoint.pth.tar") && err.contains("weight"), "{err}");
        assert!(load_checked(small.clone(), small.into_record(), path).is_ok());
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
