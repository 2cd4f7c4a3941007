//! Training augmentation. [`timm`] holds timm 0.4.12's ImageNet training transform as
//! Swin-Transformer uses it (RandAugment, random erasing, colour jitter, PIL's operations);
//! the rest of this module is YOLOX's.
//!
//! YOLOX's training augmentation, with the semantics of YOLOX 0.3 (`yolox/data/data_augment.py`,
//! `yolox/data/datasets/mosaicdetection.py`) and the defaults of `yolox/exp/yolox_base.py`,
//! on `image` buffers and corner-form [`CocoBox`](crate::CocoBox)es, drawing from a seeded
//! [`StdRng`](rand::rngs::StdRng) so a sample is reproducible.
//!
//! One training sample ([`train_sample`]) is YOLOX's `MosaicDetection.__getitem__`:
//!
//! - with probability `mosaic_prob` (when mosaic is on): a [`mosaic`] of the image and three
//!   partners drawn uniformly from the dataset, then [`random_affine`] to the `S × S` input,
//!   then, with probability `mixup_prob` (when MixUp is on and a box is left), [`mixup`] with a
//!   partner drawn among the images that have boxes;
//! - then [`train_transform`] (`TrainTransform`): [`augment_hsv`] with probability `hsv_prob`,
//!   [`hflip`] with probability `flip_prob`, [`letterbox`](crate::letterbox()) to `S × S`, boxes
//!   of width or height ≤ 1 pixel dropped, at most `max_labels` kept.
//!
//! Validation is [`letterbox`](crate::letterbox()) alone (YOLOX's `ValTransform`).
//!
//! Where this differs from YOLOX 0.3, deliberately:
//!
//! - boxes left with no area (cut off by the mosaic canvas or moved out of the output by the
//!   affine warp) are dropped at once rather than carried as zero-size targets. The final
//!   ≤ 1 pixel filter would drop them anyway, except that YOLOX's affine warp can turn a
//!   zero-width box into a thin slanted one that survives it;
//! - `TrainTransform`'s fallback is left out: when no box survives the ≤ 1 pixel filter, YOLOX
//!   returns the un-jittered, un-mirrored image with all of its boxes, tiny or empty; here the
//!   sample simply has no targets;
//! - MixUp keeps YOLOX 0.1–0.2's filter on the mixed-in boxes (see [`mixup`]);
//! - crowd annotations are never targets (YOLOX's COCO reader keeps them);
//! - resizing is bilinear with antialiasing (`image`'s triangle filter), as
//!   [`letterbox`](crate::letterbox()) does, where OpenCV's `INTER_LINEAR` samples without it;
//! - multi-scale training (YOLOX's `random_resize` of the batch every 10 iterations) belongs to
//!   the training loop, not here.

mod affine;
mod flip;
mod hsv;
mod mixup;
mod mosaic;
mod pipeline;
pub mod timm;

pub use affine::{affine_boxes, random_affine, random_affine_matrix, warp_affine, Affine};
pub use flip::hflip;
pub use hsv::{augment_hsv, random_hsv_offsets, shift_hsv, HsvGains};
pub use mixup::mixup;
pub use mosaic::{mosaic, random_mosaic_center};
pub use pipeline::{train_sample, train_transform, DetectionSource, InputSample};

/// YOLOX's training augmentation settings; [`Default`] is `yolox_base.py` (YOLOX-S/M/L/X).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct YoloxAugConfig {
    /// Side `S` of the square network input (`input_size`), 640.
    pub input_size: u32,
    /// Whether mosaic (and with it MixUp) may run (`enable_mosaic`); YOLOX turns it off for the
    /// last `no_aug_epochs` (15) epochs.
    pub mosaic: bool,
    /// Probability of a mosaic sample (`mosaic_prob`), 1.0.
    pub mosaic_prob: f64,
    /// Whether MixUp may run on a mosaic sample (`enable_mixup`), true.
    pub mixup: bool,
    /// Probability of MixUp on a mosaic sample (`mixup_prob`), 1.0.
    pub mixup_prob: f64,
    /// Rotation range in degrees, `U(-degrees, degrees)` (`degrees`), 10.
    pub degrees: f64,
    /// Translation range as a fraction of `S`, `U(-translate, translate)` (`translate`), 0.1.
    pub translate: f64,
    /// Scale range of the affine warp after the mosaic (`mosaic_scale`), (0.1, 2.0).
    pub mosaic_scale: (f64, f64),
    /// Scale range of the MixUp partner (`mixup_scale`), (0.5, 1.5).
    pub mixup_scale: (f64, f64),
    /// Shear range in degrees, `U(-shear, shear)` per axis (`shear`), 2.
    pub shear: f64,
    /// Probability of the HSV jitter (`hsv_prob`), 1.0.
    pub hsv_prob: f64,
    /// Probability of the horizontal flip (`flip_prob`), 0.5.
    pub flip_prob: f64,
    /// Most targets kept per image (`TrainTransform(max_labels=...)`), 120. YOLOX's training
    /// transform is built with 120 and serves the no-augmentation epochs too; the 50 of its
    /// plain `COCODataset` transform is never used in training.
    pub max_labels: usize,
}

impl Default for YoloxAugConfig {
    fn default() -> Self {
        Self {
            input_size: 640,
            mosaic: true,
            mosaic_prob: 1.0,
            mixup: true,
            mixup_prob: 1.0,
            degrees: 10.0,
            translate: 0.1,
            mosaic_scale: (0.1, 2.0),
            mixup_scale: (0.5, 1.5),
            shear: 2.0,
            hsv_prob: 1.0,
            flip_prob: 0.5,
            max_labels: 120,
        }
    }
}

/// A [`YoloxAugConfig`] setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("augmentation setting `{field}`: {problem}")]
pub struct AugmentConfigError {
    /// The field, as named in [`YoloxAugConfig`].
    pub field: &'static str,
    /// What is wrong with its value.
    pub problem: String,
}

impl YoloxAugConfig {
    /// `exps/default/yolox_nano.py`: 416 input, `mosaic_scale` (0.5, 1.5), `mosaic_prob` 0.5,
    /// no MixUp. (`yolox_tiny.py` differs only in `mosaic_prob` 1.0, and trains at 640: it sets
    /// a misspelt `input_scale`.)
    pub fn yolox_nano() -> Self {
        Self {
            input_size: 416,
            mosaic_scale: (0.5, 1.5),
            mosaic_prob: 0.5,
            mixup: false,
            ..Self::default()
        }
    }

    /// Checks every setting: a positive input size and `max_labels`, probabilities in [0, 1],
    /// finite non-negative ranges, and scale ranges `(lo, hi)` with `0 < lo ≤ hi`.
    pub fn validate(&self) -> Result<(), AugmentConfigError> {
        let fail = |field, problem: String| Err(AugmentConfigError { field, problem });
        if self.input_size == 0 {
            return fail("input_size", "must be at least 1".into());
        }
        if self.max_labels == 0 {
            return fail("max_labels", "must be at least 1".into());
        }
        for (field, p) in [
            ("mosaic_prob", self.mosaic_prob),
            ("mixup_prob", self.mixup_prob),
            ("hsv_prob", self.hsv_prob),
            ("flip_prob", self.flip_prob),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return fail(field, format!("{p} is not a probability in [0, 1]"));
            }
        }
        for (field, v) in [
            ("degrees", self.degrees),
            ("translate", self.translate),
            ("shear", self.shear),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return fail(field, format!("{v} is not a finite non-negative range"));
            }
        }
        for (field, (lo, hi)) in [("mosaic_scale", self.mosaic_scale), ("mixup_scale", self.mixup_scale)] {
            if !(lo.is_finite() && hi.is_finite() && 0.0 < lo && lo <= hi) {
                return fail(field, format!("({lo}, {hi}) is not a range with 0 < lo ≤ hi"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid_and_bad_settings_are_named() {
        YoloxAugConfig::default().validate().unwrap();
        YoloxAugConfig::yolox_nano().validate().unwrap();
        let base = YoloxAugConfig::default();
        for (config, field) in [
            (YoloxAugConfig { input_size: 0, ..base }, "input_size"),
            (YoloxAugConfig { max_labels: 0, ..base }, "max_labels"),
            (YoloxAugConfig { flip_prob: 1.5, ..base }, "flip_prob"),
            (
                YoloxAugConfig {
                    hsv_prob: f64::NAN,
                    ..base
                },
                "hsv_prob",
            ),
            (YoloxAugConfig { degrees: -1.0, ..base }, "degrees"),
            (
                YoloxAugConfig {
                    shear: f64::INFINITY,
                    ..base
                },
                "shear",
            ),
            (
                YoloxAugConfig {
                    mosaic_scale: (0.0, 2.0),
                    ..base
                },
                "mosaic_scale",
            ),
            (
                YoloxAugConfig {
                    mixup_scale: (1.5, 0.5),
                    ..base
                },
                "mixup_scale",
            ),
        ] {
            let err = config.validate().unwrap_err();
            assert_eq!(err.field, field);
            assert!(err.to_string().contains(field), "{err}");
        }
    }
}
