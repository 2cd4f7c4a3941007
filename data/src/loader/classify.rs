//! Classification batches of an [`ImageFolder`], transformed by a [`ClassifyTransform`].

use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;

use rand::rngs::StdRng;

use super::{decode_rgb, Loader, LoaderConfig, LoaderError, SampleSet};
use crate::image_folder::{ImageFolder, ImageFolderError};
use crate::sampler::EpochSampler;
use crate::transforms::ClassifyTransform;

/// A batch of transformed images and their class indices.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassifyBatch {
    /// Pixels, `[n, 3, S, S]` row-major.
    pub images: Vec<f32>,
    /// Class index of each image.
    pub targets: Vec<i64>,
    /// `[n, 3, S, S]`.
    pub shape: [usize; 4],
}

/// An [`ImageFolder`]'s samples as a [`ClassifyTransform`] makes them: the [`SampleSet`] of a
/// [`ClassifyLoader`].
#[derive(Debug, Clone)]
pub struct ClassifySet {
    folder: Arc<ImageFolder>,
    transform: ClassifyTransform,
}

/// Loads an [`ImageFolder`] epoch by epoch in the [`EpochSampler`]'s order, as
/// [`ClassifyBatch`]es transformed by a [`ClassifyTransform`].
pub type ClassifyLoader = Loader<ClassifySet>;

impl Loader<ClassifySet> {
    /// A loader; the sampler must cover exactly the folder's samples.
    pub fn new(
        folder: Arc<ImageFolder>,
        transform: ClassifyTransform,
        sampler: EpochSampler,
        config: LoaderConfig,
    ) -> Result<Self, LoaderError> {
        Loader::over(ClassifySet { folder, transform }, sampler, config)
    }
}

impl SampleSet for ClassifySet {
    /// The image's `[3, S, S]` pixels and its class.
    type Sample = (Vec<f32>, usize);
    type Batch = ClassifyBatch;
    type Error = ImageFolderError;

    fn dataset_len(&self) -> usize {
        self.folder.len()
    }

    /// Decodes and transforms one file; a decoder that fails or panics is a
    /// [`ImageFolderError::Decode`].
    fn load(&self, index: usize, rng: &mut StdRng) -> Result<(Vec<f32>, usize), ImageFolderError> {
        let (path, class) = self.folder.sample(index);
        let decode_error = |msg: String| ImageFolderError::Decode {
            path: path.to_path_buf(),
            msg,
        };
        let img = decode_rgb(path).map_err(decode_error)?;
        let pixels = panic::catch_unwind(AssertUnwindSafe(|| self.transform.apply(img, rng)))
            .map_err(|_| decode_error("the transform panicked".into()))?;
        Ok((pixels, class))
    }

    fn collate(&self, samples: Vec<(Vec<f32>, usize)>) -> ClassifyBatch {
        let [c, h, w] = self.transform.output_shape();
        let mut batch = ClassifyBatch {
            images: Vec::with_capacity(samples.len() * c * h * w),
            targets: Vec::with_capacity(samples.len()),
            shape: [samples.len(), c, h, w],
        };
        for (pixels, class) in samples {
            batch.images.extend(pixels);
            batch.targets.push(class as i64);
        }
        batch
    }
}
