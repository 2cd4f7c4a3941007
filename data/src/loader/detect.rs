//! COCO detection batches for YOLOX: training samples through YOLOX's augmentation (mosaic and
//! MixUp partners drawn with the sample's own RNG), validation samples letterboxed.

use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Arc;

use image::RgbImage;
use rand::rngs::StdRng;

use super::{decode_rgb, Loader, LoaderConfig, LoaderError, SampleSet};
use crate::augment::{train_sample, AugmentConfigError, DetectionSource, InputSample, YoloxAugConfig};
use crate::coco::{CocoBox, CocoDataset};
use crate::letterbox::letterbox;
use crate::sampler::EpochSampler;

/// A batch of detection inputs and their targets.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectBatch {
    /// Pixels, `[n, 3, S, S]` row-major, channels in B, G, R order, raw values 0–255 as floats
    /// (no normalisation): the input YOLOX's OpenCV pipeline feeds its model.
    pub images: Vec<f32>,
    /// Each image's target boxes: corner form, input pixels, class indices; no crowd boxes.
    pub targets: Vec<Vec<CocoBox>>,
    /// Each image's COCO id (for a mosaic, the id of the sample's own image, one of the four).
    pub image_ids: Vec<u64>,
    /// Each image's scale from original to input pixels: divide a prediction's coordinates by
    /// it to get back to the original image. `None` for mosaic samples, which mix several
    /// images.
    pub ratios: Vec<Option<f32>>,
    /// `[n, 3, S, S]`.
    pub shape: [usize; 4],
}

/// An image a detection loader cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DetectError {
    /// The file cannot be read or decoded, its size contradicts the annotations, or the
    /// augmentation failed on it.
    #[error("{path}: {problem}")]
    Image {
        /// The image file (for a failed augmentation, the sample's own image).
        path: PathBuf,
        /// What went wrong.
        problem: String,
    },
}

/// What a [`DetectLoader`] makes of each image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DetectMode {
    /// YOLOX's training augmentation ([`train_sample`]).
    Train(YoloxAugConfig),
    /// Validation (YOLOX's `ValTransform`): [`letterbox`] to `size × size` only.
    Val {
        /// Side of the square input.
        size: u32,
    },
}

impl DetectMode {
    /// Side of the square input.
    pub fn input_size(&self) -> u32 {
        match self {
            Self::Train(aug) => aug.input_size,
            Self::Val { size } => *size,
        }
    }
}

/// A [`CocoDataset`]'s images as a [`DetectMode`] makes them: the [`SampleSet`] of a
/// [`DetectLoader`], and the [`DetectionSource`] its mosaics draw from.
#[derive(Debug, Clone)]
pub struct DetectSet {
    dataset: Arc<CocoDataset>,
    annotated: Arc<[usize]>,
    mode: DetectMode,
}

impl DetectSet {
    /// The images.
    pub fn dataset(&self) -> &CocoDataset {
        &self.dataset
    }

    /// What is made of each image.
    pub fn mode(&self) -> &DetectMode {
        &self.mode
    }
}

/// Loads a [`CocoDataset`] epoch by epoch in the [`EpochSampler`]'s order, as
/// [`DetectBatch`]es made by a [`DetectMode`].
pub type DetectLoader = Loader<DetectSet>;

impl Loader<DetectSet> {
    /// A loader; the sampler must cover exactly the dataset's images, and a training
    /// configuration must pass [`YoloxAugConfig::validate`].
    pub fn new(
        dataset: Arc<CocoDataset>,
        mode: DetectMode,
        sampler: EpochSampler,
        config: LoaderConfig,
    ) -> Result<Self, LoaderError> {
        match mode {
            DetectMode::Train(aug) => aug.validate()?,
            DetectMode::Val { size: 0 } => Err(AugmentConfigError {
                field: "input_size",
                problem: "must be at least 1".into(),
            })?,
            DetectMode::Val { .. } => {}
        }
        let annotated = (0..dataset.len())
            .filter(|&i| !dataset.images()[i].boxes.is_empty())
            .collect();
        Loader::over(
            DetectSet {
                dataset,
                annotated,
                mode,
            },
            sampler,
            config,
        )
    }

    /// Turns mosaic (and with it MixUp) on or off for the epochs started from now on: YOLOX
    /// turns it off for its last `no_aug_epochs`. Validation loaders are not affected.
    pub fn set_mosaic(&mut self, enabled: bool) {
        if let DetectMode::Train(aug) = &mut self.set_mut().mode {
            aug.mosaic = enabled;
        }
    }
}

impl DetectionSource for DetectSet {
    type Error = DetectError;

    fn num_images(&self) -> usize {
        self.dataset.len()
    }

    fn annotated(&self) -> &[usize] {
        &self.annotated
    }

    /// Decodes the file and checks its size against the annotations.
    fn load_image(&self, index: usize) -> Result<(RgbImage, Vec<CocoBox>), DetectError> {
        let entry = &self.dataset.images()[index];
        let error = |problem: String| DetectError::Image {
            path: entry.path.clone(),
            problem,
        };
        let img = decode_rgb(&entry.path).map_err(error)?;
        if img.dimensions() != (entry.width, entry.height) {
            return Err(error(format!(
                "the image is {}×{} but its annotations (image {}) say {}×{}",
                img.width(),
                img.height(),
                entry.id,
                entry.width,
                entry.height
            )));
        }
        Ok((img, entry.boxes.clone()))
    }
}

impl SampleSet for DetectSet {
    /// The image's COCO id and its input.
    type Sample = (u64, InputSample);
    type Batch = DetectBatch;
    type Error = DetectError;

    fn dataset_len(&self) -> usize {
        self.dataset.len()
    }

    fn load(&self, index: usize, rng: &mut StdRng) -> Result<(u64, InputSample), DetectError> {
        let entry = &self.dataset.images()[index];
        let sample = panic::catch_unwind(AssertUnwindSafe(|| match self.mode {
            DetectMode::Train(aug) => train_sample(self, index, &aug, rng),
            DetectMode::Val { size } => {
                let (img, boxes) = self.load_image(index)?;
                let out = letterbox(&img, &boxes, size, size);
                Ok(InputSample {
                    image: out.image,
                    boxes: out.boxes,
                    ratio: Some(out.ratio),
                })
            }
        }))
        .map_err(|_| DetectError::Image {
            path: entry.path.clone(),
            problem: "the augmentation panicked".into(),
        })??;
        Ok((entry.id, sample))
    }

    fn collate(&self, samples: Vec<(u64, InputSample)>) -> DetectBatch {
        let s = self.mode.input_size() as usize;
        let plane = s * s;
        let n = samples.len();
        let mut batch = DetectBatch {
            images: vec![0.0; n * 3 * plane],
            targets: Vec::with_capacity(n),
            image_ids: Vec::with_capacity(n),
            ratios: Vec::with_capacity(n),
            shape: [n, 3, s, s],
        };
        for (i, (id, sample)) in samples.into_iter().enumerate() {
            let planes = &mut batch.images[i * 3 * plane..(i + 1) * 3 * plane];
            for (p, px) in sample.image.pixels().enumerate() {
                let [r, g, b] = px.0;
                planes[p] = f32::from(b);
                planes[plane + p] = f32::from(g);
                planes[2 * plane + p] = f32::from(r);
            }
            batch.targets.push(sample.boxes);
            batch.image_ids.push(id);
            batch.ratios.push(sample.ratio);
        }
        batch
    }
}
