//! timm 0.4.12's RandAugment operations (`timm/data/auto_augment.py`): the two operation
//! lists, the choice weights, each operation's level-to-argument scaling (`LEVEL_TO_ARG`) and
//! the PIL operation it runs (`NAME_TO_OP`).

use image::RgbImage;

use super::{enhance, geometry, point, Resample};
use crate::transforms::IMAGENET_MEAN;

/// The highest magnitude level (timm's `_MAX_LEVEL`); sampled magnitudes are clipped to
/// `[0, MAX_LEVEL]`.
pub const MAX_LEVEL: f64 = 10.0;

/// Default translation range as a fraction of the image side (timm's `translate_pct`).
const TRANSLATE_PCT: f64 = 0.45;

/// One RandAugment operation, by timm's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RandOp {
    /// `ImageOps.autocontrast`.
    AutoContrast,
    /// `ImageOps.equalize`.
    Equalize,
    /// `ImageOps.invert`.
    Invert,
    /// Rotation by `±level / 10 · 30` degrees.
    Rotate,
    /// Posterize to `int(level / 10 · 4)` bits.
    Posterize,
    /// Posterize to `4 - int(level / 10 · 4)` bits.
    PosterizeIncreasing,
    /// Solarize at `int(level / 10 · 256)`.
    Solarize,
    /// Solarize at `256 - int(level / 10 · 256)`.
    SolarizeIncreasing,
    /// Add `int(level / 10 · 110)` below 128.
    SolarizeAdd,
    /// `ImageEnhance.Color` with factor `level / 10 · 1.8 + 0.1`.
    Color,
    /// `ImageEnhance.Color` with factor `1 ± level / 10 · 0.9`.
    ColorIncreasing,
    /// `ImageEnhance.Contrast` with factor `level / 10 · 1.8 + 0.1`.
    Contrast,
    /// `ImageEnhance.Contrast` with factor `1 ± level / 10 · 0.9`.
    ContrastIncreasing,
    /// `ImageEnhance.Brightness` with factor `level / 10 · 1.8 + 0.1`.
    Brightness,
    /// `ImageEnhance.Brightness` with factor `1 ± level / 10 · 0.9`.
    BrightnessIncreasing,
    /// `ImageEnhance.Sharpness` with factor `level / 10 · 1.8 + 0.1`.
    Sharpness,
    /// `ImageEnhance.Sharpness` with factor `1 ± level / 10 · 0.9`.
    SharpnessIncreasing,
    /// Horizontal shear by `±level / 10 · 0.3`.
    ShearX,
    /// Vertical shear by `±level / 10 · 0.3`.
    ShearY,
    /// Horizontal translation by `±level / 10 · 0.45` of the width.
    TranslateXRel,
    /// Vertical translation by `±level / 10 · 0.45` of the height.
    TranslateYRel,
}

/// timm's `_RAND_TRANSFORMS`, in its order.
pub const RAND_TRANSFORMS: [RandOp; 15] = [
    RandOp::AutoContrast,
    RandOp::Equalize,
    RandOp::Invert,
    RandOp::Rotate,
    RandOp::Posterize,
    RandOp::Solarize,
    RandOp::SolarizeAdd,
    RandOp::Color,
    RandOp::Contrast,
    RandOp::Brightness,
    RandOp::Sharpness,
    RandOp::ShearX,
    RandOp::ShearY,
    RandOp::TranslateXRel,
    RandOp::TranslateYRel,
];

/// timm's `_RAND_INCREASING_TRANSFORMS` (`inc1`), in its order.
pub const RAND_INCREASING_TRANSFORMS: [RandOp; 15] = [
    RandOp::AutoContrast,
    RandOp::Equalize,
    RandOp::Invert,
    RandOp::Rotate,
    RandOp::PosterizeIncreasing,
    RandOp::SolarizeIncreasing,
    RandOp::SolarizeAdd,
    RandOp::ColorIncreasing,
    RandOp::ContrastIncreasing,
    RandOp::BrightnessIncreasing,
    RandOp::SharpnessIncreasing,
    RandOp::ShearX,
    RandOp::ShearY,
    RandOp::TranslateXRel,
    RandOp::TranslateYRel,
];

/// timm's `_RAND_CHOICE_WEIGHTS_0` (`w0`), by position in [`RAND_TRANSFORMS`] (timm looks them
/// up by the plain names, and applies them by position to the increasing list too).
pub(super) const CHOICE_WEIGHTS_0: [f64; 15] = [
    0.025, 0.005, 0.0, 0.3, 0.0, 0.005, 0.005, 0.025, 0.005, 0.005, 0.025, 0.2, 0.2, 0.1, 0.1,
];

impl RandOp {
    /// Whether timm draws a random sign for the argument (`_randomly_negate`).
    pub fn is_signed(self) -> bool {
        use RandOp::*;
        matches!(
            self,
            Rotate
                | ColorIncreasing
                | ContrastIncreasing
                | BrightnessIncreasing
                | SharpnessIncreasing
                | ShearX
                | ShearY
                | TranslateXRel
                | TranslateYRel
        )
    }

    /// Whether the operation resamples the image (and so uses the interpolation).
    pub fn is_geometric(self) -> bool {
        use RandOp::*;
        matches!(self, Rotate | ShearX | ShearY | TranslateXRel | TranslateYRel)
    }

    /// timm's `level_to_arg` for a magnitude `level` in `[0, 10]`, with the sign flipped when
    /// `negate` (only signed operations have one; for the increasing enhancements the sign is
    /// on the distance from 1). Integer arguments (bits, thresholds, additions) come back as
    /// whole numbers; the operations without an argument give 0.
    pub fn argument(self, level: f64, negate: bool) -> f64 {
        use RandOp::*;
        let frac = level / MAX_LEVEL;
        let sign = |v: f64| if negate { -v } else { v };
        match self {
            AutoContrast | Equalize | Invert => 0.0,
            Rotate => sign(frac * 30.0),
            Posterize => (frac * 4.0).trunc(),
            PosterizeIncreasing => 4.0 - (frac * 4.0).trunc(),
            Solarize => (frac * 256.0).trunc(),
            SolarizeIncreasing => 256.0 - (frac * 256.0).trunc(),
            SolarizeAdd => (frac * 110.0).trunc(),
            Color | Contrast | Brightness | Sharpness => frac * 1.8 + 0.1,
            ColorIncreasing | ContrastIncreasing | BrightnessIncreasing | SharpnessIncreasing => 1.0 + sign(frac * 0.9),
            ShearX | ShearY => sign(frac * 0.3),
            TranslateXRel | TranslateYRel => sign(frac * TRANSLATE_PCT),
        }
    }

    /// Applies the operation with its argument (as [`RandOp::argument`] gives it); geometric
    /// operations resample with `resample` and fill uncovered pixels with `fill`.
    pub fn apply(self, img: RgbImage, arg: f64, resample: Resample, fill: [u8; 3]) -> RgbImage {
        use RandOp::*;
        match self {
            AutoContrast => point::autocontrast(img),
            Equalize => point::equalize(img),
            Invert => point::invert(img),
            Rotate => geometry::rotate(&img, arg, resample, fill),
            Posterize | PosterizeIncreasing => point::posterize(img, arg as u32),
            Solarize | SolarizeIncreasing => point::solarize(img, arg as u32),
            SolarizeAdd => point::solarize_add(img, arg as u32, 128),
            Color | ColorIncreasing => enhance::color(&img, arg),
            Contrast | ContrastIncreasing => enhance::contrast(&img, arg),
            Brightness | BrightnessIncreasing => enhance::brightness(&img, arg),
            Sharpness | SharpnessIncreasing => enhance::sharpness(&img, arg),
            ShearX => geometry::shear_x(&img, arg, resample, fill),
            ShearY => geometry::shear_y(&img, arg, resample, fill),
            TranslateXRel => geometry::translate_x_rel(&img, arg, resample, fill),
            TranslateYRel => geometry::translate_y_rel(&img, arg, resample, fill),
        }
    }
}

/// timm's fill colour for the geometric operations (`img_mean`): `min(255, round(255 · m))` of
/// each ImageNet mean, (124, 116, 104).
pub(super) fn imagenet_fill() -> [u8; 3] {
    IMAGENET_MEAN.map(|m| (255.0 * f64::from(m)).round_ties_even().min(255.0) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_arguments_follow_timm() {
        use RandOp::*;
        assert_eq!(Rotate.argument(9.0, false), 27.0);
        assert_eq!(Rotate.argument(9.0, true), -27.0);
        assert_eq!(Rotate.argument(10.0, false), 30.0);
        // int(0.9 · 4) = 3; increasing: 4 - 3 = 1; at 10: 0 bits.
        assert_eq!(Posterize.argument(9.0, false), 3.0);
        assert_eq!(PosterizeIncreasing.argument(9.0, false), 1.0);
        assert_eq!(PosterizeIncreasing.argument(10.0, false), 0.0);
        assert_eq!(PosterizeIncreasing.argument(4.9, false), 3.0); // 4 - int(1.96)
                                                                   // int(0.9 · 256) = int(230.4) = 230; increasing: 26.
        assert_eq!(Solarize.argument(9.0, false), 230.0);
        assert_eq!(SolarizeIncreasing.argument(9.0, false), 26.0);
        assert_eq!(SolarizeIncreasing.argument(0.0, false), 256.0);
        assert_eq!(SolarizeAdd.argument(9.0, false), 99.0);
        assert!((Color.argument(9.0, false) - 1.72).abs() < 1e-12);
        assert!((ColorIncreasing.argument(9.0, false) - 1.81).abs() < 1e-12);
        assert!((SharpnessIncreasing.argument(9.0, true) - 0.19).abs() < 1e-12);
        assert!((ShearX.argument(9.0, true) + 0.27).abs() < 1e-12);
        assert!((TranslateYRel.argument(9.0, false) - 0.405).abs() < 1e-12);
        assert_eq!(Equalize.argument(9.0, true), 0.0);
        for op in RAND_INCREASING_TRANSFORMS {
            assert_eq!(
                op.is_signed(),
                op.argument(7.0, true) != op.argument(7.0, false),
                "{op:?}"
            );
        }
    }

    #[test]
    fn imagenet_fill_is_timms_img_mean() {
        assert_eq!(imagenet_fill(), [124, 116, 104]);
    }
}
