//! The MNIST digits: the four idx files of a folder, as a burn dataset and batcher.

use std::path::{Path, PathBuf};

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::tensor::{backend::Backend, Int, Tensor, TensorData};

use crate::idx::{read_idx, IdxArray, IdxError};

/// Image side in pixels.
pub const MNIST_SIDE: usize = 28;
/// Pixels per image.
pub const MNIST_PIXELS: usize = MNIST_SIDE * MNIST_SIDE;
/// Number of digit classes.
pub const MNIST_CLASSES: usize = 10;
/// Mean of the training pixels after scaling to [0, 1] (torchvision's MNIST constant).
pub const MNIST_MEAN: f32 = 0.1307;
/// Standard deviation of the training pixels after scaling to [0, 1].
pub const MNIST_STD: f32 = 0.3081;

/// Which half of MNIST to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MnistSplit {
    /// The 60,000 training digits (`train-*`).
    Train,
    /// The 10,000 test digits (`t10k-*`).
    Test,
}

impl MnistSplit {
    fn prefix(self) -> &'static str {
        match self {
            Self::Train => "train",
            Self::Test => "t10k",
        }
    }
}

/// What is wrong with an MNIST folder.
#[derive(Debug, thiserror::Error)]
pub enum MnistError {
    /// One of the idx files is malformed or unreadable.
    #[error(transparent)]
    Idx(#[from] IdxError),
    /// None of the accepted names for a file exists in the folder.
    #[error("{dir}: no {what} file (looked for {tried})")]
    MissingFile {
        /// The folder searched.
        dir: PathBuf,
        /// Which file, e.g. "train images".
        what: String,
        /// The names tried, comma-separated.
        tried: String,
    },
    /// An idx file has the wrong element type or shape for MNIST.
    #[error("{path}: expected {expected}, found {found}")]
    Shape {
        /// The file.
        path: PathBuf,
        /// What MNIST requires.
        expected: String,
        /// What the file holds.
        found: String,
    },
    /// The images and labels files disagree on the number of digits.
    #[error("{images} holds {n_images} images but {labels} holds {n_labels} labels")]
    CountMismatch {
        /// The images file.
        images: PathBuf,
        /// Its count.
        n_images: usize,
        /// The labels file.
        labels: PathBuf,
        /// Its count.
        n_labels: usize,
    },
    /// A label is not a digit 0–9.
    #[error("{path}: label {label} at index {index} is not a digit 0-9")]
    BadLabel {
        /// The labels file.
        path: PathBuf,
        /// Position of the label.
        index: usize,
        /// The value found.
        label: u8,
    },
}

/// One digit: 28×28 pixels (0–255, row-major) and its label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MnistItem {
    /// Grayscale pixels, white digit on black.
    pub image: [u8; MNIST_PIXELS],
    /// The digit, 0–9.
    pub label: u8,
}

/// A split of MNIST held in memory.
#[derive(Debug, Clone)]
pub struct MnistDataset {
    images: Vec<u8>,
    labels: Vec<u8>,
}

impl MnistDataset {
    /// Reads one split from `dir`, accepting the official names with or without `.gz`
    /// (`train-images-idx3-ubyte.gz`) and the dotted variant (`train-images.idx3-ubyte`).
    pub fn from_dir(dir: impl AsRef<Path>, split: MnistSplit) -> Result<Self, MnistError> {
        let dir = dir.as_ref();
        let images_path = find_file(dir, split.prefix(), "images", 3)?;
        let labels_path = find_file(dir, split.prefix(), "labels", 1)?;
        Self::from_files(&images_path, &labels_path)
    }

    /// Reads an images file and a labels file, checking that they describe the same digits.
    pub fn from_files(images_path: &Path, labels_path: &Path) -> Result<Self, MnistError> {
        let images = read_idx(images_path)?;
        let labels = read_idx(labels_path)?;
        let n_images = expect_u8_shape(images_path, &images, &[MNIST_SIDE, MNIST_SIDE])?;
        let n_labels = expect_u8_shape(labels_path, &labels, &[])?;
        if n_images != n_labels {
            return Err(MnistError::CountMismatch {
                images: images_path.to_path_buf(),
                n_images,
                labels: labels_path.to_path_buf(),
                n_labels,
            });
        }
        let labels = into_u8(labels);
        if let Some((index, &label)) = labels.iter().enumerate().find(|(_, &l)| l as usize >= MNIST_CLASSES) {
            return Err(MnistError::BadLabel {
                path: labels_path.to_path_buf(),
                index,
                label,
            });
        }
        Ok(Self {
            images: into_u8(images),
            labels,
        })
    }

    /// Builds a dataset from raw pixels (`n × 784`) and labels, for tests and tools.
    ///
    /// # Panics
    /// If the lengths disagree or a label is not a digit.
    pub fn from_raw(images: Vec<u8>, labels: Vec<u8>) -> Self {
        assert_eq!(images.len(), labels.len() * MNIST_PIXELS);
        assert!(labels.iter().all(|&l| (l as usize) < MNIST_CLASSES));
        Self { images, labels }
    }

    /// Writes the digits as raw idx files with the official names,
    /// `<prefix>-images-idx3-ubyte` and `<prefix>-labels-idx1-ubyte` (prefix `train` or
    /// `t10k`), so a slice of MNIST can be handed to a job.
    pub fn write_idx(&self, dir: &Path, prefix: &str) -> std::io::Result<()> {
        let n = self.labels.len();
        let images = IdxArray {
            dims: vec![n, MNIST_SIDE, MNIST_SIDE],
            data: crate::idx::IdxData::U8(self.images.clone()),
        };
        let labels = IdxArray {
            dims: vec![n],
            data: crate::idx::IdxData::U8(self.labels.clone()),
        };
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), images.to_bytes())?;
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), labels.to_bytes())
    }

    /// The first `n` digits only (all of them if there are fewer).
    pub fn truncated(mut self, n: usize) -> Self {
        let n = n.min(self.labels.len());
        self.labels.truncate(n);
        self.images.truncate(n * MNIST_PIXELS);
        self
    }
}

impl Dataset<MnistItem> for MnistDataset {
    fn get(&self, index: usize) -> Option<MnistItem> {
        let label = *self.labels.get(index)?;
        let start = index * MNIST_PIXELS;
        let image = self.images[start..start + MNIST_PIXELS]
            .try_into()
            .expect("images hold 784 bytes per label");
        Some(MnistItem { image, label })
    }

    fn len(&self) -> usize {
        self.labels.len()
    }
}

fn find_file(dir: &Path, prefix: &str, kind: &str, ndim: u8) -> Result<PathBuf, MnistError> {
    let names = [
        format!("{prefix}-{kind}-idx{ndim}-ubyte.gz"),
        format!("{prefix}-{kind}-idx{ndim}-ubyte"),
        format!("{prefix}-{kind}.idx{ndim}-ubyte"),
        format!("{prefix}-{kind}.idx{ndim}-ubyte.gz"),
    ];
    names
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
        .ok_or_else(|| MnistError::MissingFile {
            dir: dir.to_path_buf(),
            what: format!("{} {kind}", if prefix == "train" { "train" } else { "test" }),
            tried: names.join(", "),
        })
}

/// Checks that `arr` is u8 with shape `[N, inner...]` and returns `N`.
fn expect_u8_shape(path: &Path, arr: &IdxArray, inner: &[usize]) -> Result<usize, MnistError> {
    let ok_dims = arr.dims.len() == inner.len() + 1 && arr.dims[1..] == *inner;
    if arr.as_u8().is_none() || !ok_dims {
        let expected = inner.iter().fold("u8 [N".to_string(), |s, d| format!("{s}, {d}")) + "]";
        return Err(MnistError::Shape {
            path: path.to_path_buf(),
            expected,
            found: format!("{:?} {:?}", arr.data.idx_type(), arr.dims),
        });
    }
    Ok(arr.dims[0])
}

fn into_u8(arr: IdxArray) -> Vec<u8> {
    match arr.data {
        crate::idx::IdxData::U8(v) => v,
        _ => unreachable!("checked by expect_u8_shape"),
    }
}

/// Scales a pixel to [0, 1] and normalises it with MNIST's mean and std.
#[inline]
pub fn normalize_pixel(p: u8) -> f32 {
    (p as f32 / 255.0 - MNIST_MEAN) / MNIST_STD
}

/// A batch of digits on a device: images `[N, 1, 28, 28]` normalised, targets `[N]`.
#[derive(Debug, Clone)]
pub struct MnistBatch<B: Backend> {
    /// Normalised images.
    pub images: Tensor<B, 4>,
    /// Digit labels.
    pub targets: Tensor<B, 1, Int>,
}

/// Turns digits into an [`MnistBatch`]: pixel/255, then (x − 0.1307) / 0.3081.
#[derive(Debug, Clone, Copy, Default)]
pub struct MnistBatcher;

impl<B: Backend> Batcher<B, MnistItem, MnistBatch<B>> for MnistBatcher {
    fn batch(&self, items: Vec<MnistItem>, device: &B::Device) -> MnistBatch<B> {
        let n = items.len();
        let pixels: Vec<f32> = items
            .iter()
            .flat_map(|it| it.image.iter().map(|&p| normalize_pixel(p)))
            .collect();
        let labels: Vec<i64> = items.iter().map(|it| it.label as i64).collect();
        MnistBatch {
            images: Tensor::from_data(TensorData::new(pixels, [n, 1, MNIST_SIDE, MNIST_SIDE]), device),
            targets: Tensor::from_data(TensorData::new(labels, [n]), device),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idx::IdxData;

    fn idx_u8(dims: Vec<usize>, data: Vec<u8>) -> Vec<u8> {
        IdxArray {
            dims,
            data: IdxData::U8(data),
        }
        .to_bytes()
    }

    fn write_split(dir: &Path, images: &[u8], labels: &[u8], dotted: bool) {
        let (i, l) = if dotted {
            ("train-images.idx3-ubyte", "train-labels.idx1-ubyte")
        } else {
            ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
        };
        std::fs::write(dir.join(i), images).unwrap();
        std::fs::write(dir.join(l), labels).unwrap();
    }

    #[test]
    fn write_idx_round_trips_through_from_dir() {
        let images: Vec<u8> = (0..3 * MNIST_PIXELS).map(|i| (i * 7 % 256) as u8).collect();
        let ds = MnistDataset::from_raw(images, vec![3, 1, 4]);
        let dir = tempfile::tempdir().unwrap();
        ds.write_idx(dir.path(), "t10k").unwrap();
        let back = MnistDataset::from_dir(dir.path(), MnistSplit::Test).unwrap();
        assert_eq!(back.len(), 3);
        for i in 0..3 {
            assert_eq!(back.get(i), ds.get(i));
        }
    }

    #[test]
    fn reads_dotted_names_and_items() {
        let dir = tempfile::tempdir().unwrap();
        let mut px = vec![0u8; 2 * MNIST_PIXELS];
        px[MNIST_PIXELS + 5] = 200;
        write_split(
            dir.path(),
            &idx_u8(vec![2, 28, 28], px),
            &idx_u8(vec![2], vec![3, 9]),
            true,
        );
        let ds = MnistDataset::from_dir(dir.path(), MnistSplit::Train).unwrap();
        assert_eq!(ds.len(), 2);
        let it = ds.get(1).unwrap();
        assert_eq!((it.label, it.image[5]), (9, 200));
        assert!(ds.get(2).is_none());
    }

    #[test]
    fn count_mismatch_names_both_files() {
        let dir = tempfile::tempdir().unwrap();
        write_split(
            dir.path(),
            &idx_u8(vec![2, 28, 28], vec![0; 2 * MNIST_PIXELS]),
            &idx_u8(vec![3], vec![1, 2, 3]),
            false,
        );
        let e = MnistDataset::from_dir(dir.path(), MnistSplit::Train).unwrap_err();
        assert!(matches!(
            e,
            MnistError::CountMismatch {
                n_images: 2,
                n_labels: 3,
                ..
            }
        ));
        let msg = e.to_string();
        assert!(msg.contains("train-images-idx3-ubyte") && msg.contains("train-labels-idx1-ubyte"));
    }

    #[test]
    fn wrong_shape_and_bad_label_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        write_split(
            dir.path(),
            &idx_u8(vec![1, 27, 29], vec![0; 27 * 29]),
            &idx_u8(vec![1], vec![1]),
            false,
        );
        let e = MnistDataset::from_dir(dir.path(), MnistSplit::Train).unwrap_err();
        assert!(e.to_string().contains("expected u8 [N, 28, 28]"), "{e}");

        write_split(
            dir.path(),
            &idx_u8(vec![1, 28, 28], vec![0; MNIST_PIXELS]),
            &idx_u8(vec![1], vec![10]),
            false,
        );
        let e = MnistDataset::from_dir(dir.path(), MnistSplit::Train).unwrap_err();
        assert!(
            matches!(
                e,
                MnistError::BadLabel {
                    index: 0,
                    label: 10,
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn missing_file_lists_the_names_tried() {
        let dir = tempfile::tempdir().unwrap();
        let e = MnistDataset::from_dir(dir.path(), MnistSplit::Test).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("t10k-images-idx3-ubyte.gz") && msg.contains("t10k-images.idx3-ubyte"),
            "{msg}"
        );
    }

    #[test]
    fn batcher_normalises_with_mnist_constants() {
        type B = burn_flex::Flex;
        let mut image = [0u8; MNIST_PIXELS];
        image[0] = 255;
        let items = vec![MnistItem { image, label: 7 }];
        let batch: MnistBatch<B> = MnistBatcher.batch(items, &Default::default());
        assert_eq!(batch.images.dims(), [1, 1, 28, 28]);
        let v = batch.images.into_data().to_vec::<f32>().unwrap();
        assert!((v[0] - (1.0 - 0.1307) / 0.3081).abs() < 1e-6);
        assert!((v[1] - (-0.1307 / 0.3081)).abs() < 1e-6);
        let t = batch.targets.into_data().convert::<i64>().to_vec::<i64>().unwrap();
        assert_eq!(t, vec![7]);
    }

    /// The bundled real MNIST: 60,000 + 10,000 digits with the known first labels.
    #[test]
    fn bundled_mnist_reads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("mnist");
        let train = MnistDataset::from_dir(&dir, MnistSplit::Train).unwrap();
        let test = MnistDataset::from_dir(&dir, MnistSplit::Test).unwrap();
        assert_eq!((train.len(), test.len()), (60_000, 10_000));
        let first: Vec<u8> = (0..5).map(|i| train.get(i).unwrap().label).collect();
        assert_eq!(first, vec![5, 0, 4, 1, 9]);
        assert_eq!(test.get(0).unwrap().label, 7);
    }
}
