//! Swin-Transformer's augmentation settings (`config.py`'s `DATA`, `AUG` and `TEST` keys) and
//! the transforms its `data/build.py` builds from them.

use super::pipeline::{ColorAugment, TimmEval, TimmTrain, TrainCrop};
use super::{ColorJitter, EraseMode, Interpolation, RandAugment, RandomErasing, TimmConfigError};
use crate::transforms::ClassifyTransform;

/// Swin-Transformer's data augmentation settings (its `config.py` keys), as given; [`Default`]
/// is Swin's default config.
#[derive(Debug, Clone, PartialEq)]
pub struct SwinAugConfig {
    /// `DATA.IMG_SIZE`, 224.
    pub img_size: u32,
    /// `DATA.INTERPOLATION`: `bicubic` (default), `bilinear` or `random`.
    pub interpolation: String,
    /// `AUG.COLOR_JITTER`, 0.4; used only without an auto-augment string, off at ≤ 0.
    pub color_jitter: f64,
    /// `AUG.AUTO_AUGMENT`, `rand-m9-mstd0.5-inc1`; `none` (or empty) for none.
    pub auto_augment: String,
    /// `AUG.REPROB`, 0.25; erasing is off at ≤ 0.
    pub re_prob: f64,
    /// `AUG.REMODE`, `pixel`.
    pub re_mode: String,
    /// `AUG.RECOUNT`, 1.
    pub re_count: u32,
    /// `TEST.CROP`, true.
    pub test_crop: bool,
}

impl Default for SwinAugConfig {
    fn default() -> Self {
        Self {
            img_size: 224,
            interpolation: "bicubic".into(),
            color_jitter: 0.4,
            auto_augment: "rand-m9-mstd0.5-inc1".into(),
            re_prob: 0.25,
            re_mode: "pixel".into(),
            re_count: 1,
            test_crop: true,
        }
    }
}

impl SwinAugConfig {
    /// `DATA.IMG_SIZE`, checked to be positive.
    fn size(&self) -> Result<u32, TimmConfigError> {
        if self.img_size == 0 {
            return Err(TimmConfigError::new("DATA.IMG_SIZE", 0, "must be at least 1"));
        }
        Ok(self.img_size)
    }

    /// `DATA.INTERPOLATION`, parsed.
    fn interpolation(&self) -> Result<Interpolation, TimmConfigError> {
        Interpolation::parse(&self.interpolation).map_err(|e| e.named("DATA.INTERPOLATION"))
    }

    /// Swin's `build_transform(is_train=True)`: timm's `create_transform(IMG_SIZE,
    /// is_training=True, color_jitter=COLOR_JITTER if > 0 else None, auto_augment=AUTO_AUGMENT
    /// if != 'none' else None, re_prob=REPROB, re_mode=REMODE, re_count=RECOUNT,
    /// interpolation=INTERPOLATION)`, with the first step replaced by `RandomCrop(IMG_SIZE,
    /// padding=4)` at `IMG_SIZE` ≤ 32. Errors name the offending key.
    pub fn train(&self) -> Result<TimmTrain, TimmConfigError> {
        let size = self.size()?;
        let interpolation = self.interpolation()?;
        let crop = if size > 32 {
            TrainCrop::RandomResized { interpolation }
        } else {
            TrainCrop::Padded { padding: 4 }
        };
        let color = if !matches!(self.auto_augment.as_str(), "none" | "") {
            let ra = RandAugment::parse(&self.auto_augment, interpolation).map_err(|e| e.named("AUG.AUTO_AUGMENT"))?;
            ColorAugment::RandAugment(ra)
        } else if self.color_jitter > 0.0 {
            let jitter = ColorJitter::new(self.color_jitter).map_err(|e| e.named("AUG.COLOR_JITTER"))?;
            ColorAugment::ColorJitter(jitter)
        } else {
            ColorAugment::None
        };
        let erasing = if self.re_prob > 0.0 {
            let mode = EraseMode::parse(&self.re_mode).map_err(|e| e.named("AUG.REMODE"))?;
            Some(RandomErasing::new(self.re_prob, mode, self.re_count).map_err(|e| e.named("AUG.REPROB"))?)
        } else {
            None
        };
        Ok(TimmTrain {
            size,
            crop,
            color,
            erasing,
        })
    }

    /// Swin's `build_transform(is_train=False)`, see [`TimmEval::swin`].
    pub fn eval(&self) -> Result<TimmEval, TimmConfigError> {
        Ok(TimmEval::swin(self.size()?, self.test_crop, self.interpolation()?))
    }

    /// [`SwinAugConfig::train`] as a [`ClassifyTransform`] for a
    /// [`ClassifyLoader`](crate::ClassifyLoader).
    pub fn train_transform(&self) -> Result<ClassifyTransform, TimmConfigError> {
        self.train().map(ClassifyTransform::TimmTrain)
    }

    /// [`SwinAugConfig::eval`] as a [`ClassifyTransform`] for a
    /// [`ClassifyLoader`](crate::ClassifyLoader).
    pub fn eval_transform(&self) -> Result<ClassifyTransform, TimmConfigError> {
        self.eval().map(ClassifyTransform::TimmEval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::augment::timm::{EvalResize, Resample};

    #[test]
    fn swin_defaults_build_timms_pipeline() {
        let t = SwinAugConfig::default().train().unwrap();
        assert_eq!(t.size, 224);
        assert_eq!(
            t.crop,
            TrainCrop::RandomResized {
                interpolation: Interpolation::Bicubic
            }
        );
        let ColorAugment::RandAugment(ra) = t.color else {
            panic!("{:?}", t.color)
        };
        assert_eq!(
            ra,
            RandAugment::parse("rand-m9-mstd0.5-inc1", Interpolation::Bicubic).unwrap()
        );
        let erasing = t.erasing.unwrap();
        assert_eq!(
            (erasing.probability(), erasing.mode(), erasing.max_count()),
            (0.25, EraseMode::Pixel, 1)
        );
        let e = SwinAugConfig::default().eval().unwrap();
        assert_eq!(e.resize, EvalResize::ShorterThenCrop { shorter: 256 });
        assert_eq!(e.resample, Resample::Bicubic);
        let transform = SwinAugConfig::default().train_transform().unwrap();
        assert_eq!(transform.output_shape(), [3, 224, 224]);
        assert_eq!(
            SwinAugConfig::default().eval_transform().unwrap().output_shape(),
            [3, 224, 224]
        );
    }

    #[test]
    fn swin_switches_follow_its_config() {
        // No auto-augment: colour jitter 0.4; none of either: nothing; no erasing at REPROB 0.
        let cfg = SwinAugConfig {
            auto_augment: "none".into(),
            re_prob: 0.0,
            re_mode: "bogus".into(),
            ..SwinAugConfig::default()
        };
        let t = cfg.train().unwrap();
        assert_eq!(t.color, ColorAugment::ColorJitter(ColorJitter::new(0.4).unwrap()));
        assert_eq!(t.erasing, None);
        let t = SwinAugConfig {
            color_jitter: 0.0,
            ..cfg.clone()
        }
        .train()
        .unwrap();
        assert_eq!(t.color, ColorAugment::None);
        // Small images: RandomCrop(padding 4) and no resize for evaluation.
        let small = SwinAugConfig {
            img_size: 32,
            ..SwinAugConfig::default()
        };
        assert_eq!(small.train().unwrap().crop, TrainCrop::Padded { padding: 4 });
        assert_eq!(small.eval().unwrap().resize, EvalResize::None);
        // Eval: 256/224 of the size, truncated; a square resize without TEST.CROP; `random`
        // resizes bilinearly.
        let e = SwinAugConfig {
            img_size: 384,
            interpolation: "random".into(),
            ..SwinAugConfig::default()
        }
        .eval()
        .unwrap();
        assert_eq!(e.resize, EvalResize::ShorterThenCrop { shorter: 438 });
        assert_eq!(e.resample, Resample::Bilinear);
        let e = SwinAugConfig {
            test_crop: false,
            ..SwinAugConfig::default()
        };
        assert_eq!(e.eval().unwrap().resize, EvalResize::Square);
    }

    #[test]
    fn bad_settings_name_their_swin_key() {
        let base = SwinAugConfig::default();
        for (cfg, key) in [
            (
                SwinAugConfig {
                    img_size: 0,
                    ..base.clone()
                },
                "DATA.IMG_SIZE",
            ),
            (
                SwinAugConfig {
                    interpolation: "lanczos".into(),
                    ..base.clone()
                },
                "DATA.INTERPOLATION",
            ),
            (
                SwinAugConfig {
                    auto_augment: "rand-m9-foo1".into(),
                    ..base.clone()
                },
                "AUG.AUTO_AUGMENT",
            ),
            (
                SwinAugConfig {
                    auto_augment: "none".into(),
                    color_jitter: f64::INFINITY,
                    ..base.clone()
                },
                "AUG.COLOR_JITTER",
            ),
            (
                SwinAugConfig {
                    re_mode: "bogus".into(),
                    ..base.clone()
                },
                "AUG.REMODE",
            ),
            (
                SwinAugConfig {
                    re_prob: 2.0,
                    ..base.clone()
                },
                "AUG.REPROB",
            ),
        ] {
            let err = cfg.train().unwrap_err();
            assert_eq!(err.setting, key);
            assert!(err.to_string().starts_with(key), "{err}");
        }
        assert_eq!(
            SwinAugConfig {
                interpolation: "nearest".into(),
                ..base
            }
            .eval()
            .unwrap_err()
            .setting,
            "DATA.INTERPOLATION"
        );
    }
}
