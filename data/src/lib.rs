//! kiln-data: the readers and batchers that feed kiln's training jobs and servers.
//!
//! - [`coco`]: COCO detection annotations and images.
//! - [`idx`]: the idx (SN3) array format, raw or gzip-compressed.
//! - [`mnist`]: MNIST as a burn dataset and batcher.
//! - [`letterbox`](mod@letterbox): YOLOX's aspect-keeping resize and pad, boxes included.
//! - [`augment`]: YOLOX's training augmentation (mosaic, random affine, MixUp, HSV jitter,
//!   flip), seeded; and in [`augment::timm`] timm's ImageNet training transform as
//!   Swin-Transformer configures it (RandAugment, random erasing, bicubic resizing) with
//!   Swin's evaluation transform, built from Swin's config keys by [`SwinAugConfig`].
//! - [`image_folder`]: torchvision's `ImageFolder` (`root/<class>/<image>`) and train/val splits.
//! - [`map_file`]: the ImageNet-22K map files of Swin-Transformer (`[path, class]` lists).
//! - [`transforms`]: torchvision's classification transforms and the ImageNet presets.
//! - [`batch_mix`]: timm's Mixup and CutMix of a classification batch.
//! - [`sampler`]: torch's `DistributedSampler` order, epoch by epoch.
//! - [`coco_eval`]: COCO box detection metrics (AP/AR) with pycocotools' `COCOeval` semantics.
//! - [`fuzz`]: a seeded byte mutator for the bounded fuzz tests.
//! - [`loader`]: parallel, prefetching, worker-count-independent batches: classification over
//!   an ImageFolder, detection over COCO (YOLOX augmentation or letterbox).
#![warn(missing_docs)]

pub mod augment;
pub mod batch_mix;
pub mod coco;
pub mod coco_eval;
pub mod fuzz;
pub mod idx;
pub mod image_folder;
pub mod letterbox;
pub mod loader;
pub mod map_file;
pub mod mnist;
pub mod sampler;
pub mod transforms;

pub use augment::timm::{SwinAugConfig, TimmConfigError, TimmEval, TimmTrain};
pub use augment::{train_sample, train_transform, AugmentConfigError, DetectionSource, InputSample, YoloxAugConfig};
pub use batch_mix::{BatchMix, Mixed};
pub use coco::{CocoBox, CocoDataset, CocoError, CocoImage};
pub use coco_eval::{evaluate as coco_evaluate, CocoEvalError, CocoGroundTruth, CocoStats, Detection, GtBox};
pub use idx::{read_idx, IdxArray, IdxData, IdxError, IdxType};
pub use image_folder::{open_splits, ImageFolder, ImageFolderError, IMG_EXTENSIONS};
pub use letterbox::{letterbox, Letterboxed, PAD_VALUE};
pub use loader::{
    decode_rgb, ClassifyBatch, ClassifyLoader, ClassifySet, DetectBatch, DetectError, DetectLoader, DetectMode,
    DetectSet, EpochBatches, Loader, LoaderConfig, LoaderError, SampleSet,
};
pub use map_file::{open_in22k_splits, open_map_file, MapFileError};
pub use mnist::{MnistBatch, MnistBatcher, MnistDataset, MnistError, MnistItem, MnistSplit};
pub use sampler::{EpochSampler, SamplerError};
pub use transforms::ClassifyTransform;
