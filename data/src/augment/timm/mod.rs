//! timm 0.4.12's ImageNet training transform as Swin-Transformer builds it (`data/build.py`'s
//! `build_transform`, through timm's `create_transform`), and Swin's evaluation transform, on
//! `image` buffers, drawing from a seeded [`StdRng`] so a sample is reproducible.
//!
//! Training ([`TimmTrain`]), for the default Swin settings
//! (`create_transform(224, is_training=True, color_jitter=0.4,
//! auto_augment='rand-m9-mstd0.5-inc1', re_prob=0.25, re_mode='pixel', re_count=1,
//! interpolation='bicubic')`):
//!
//! 1. `RandomResizedCropAndInterpolation(224, scale=(0.08, 1), ratio=(3/4, 4/3))`, bicubic;
//! 2. `RandomHorizontalFlip(0.5)`;
//! 3. [`RandAugment`] (`rand-m9-mstd0.5-inc1`), or [`ColorJitter`] when there is no
//!    auto-augment string (timm applies one or the other, never both);
//! 4. `ToTensor()` + `Normalize(ImageNet mean, std)`;
//! 5. [`RandomErasing`] on the normalised tensor.
//!
//! Evaluation ([`TimmEval`]): `Resize(int(256 / 224 · S))` + `CenterCrop(S)`, or with
//! `TEST.CROP` off `Resize((S, S))`, then `ToTensor()` + `Normalize`.
//!
//! [`SwinAugConfig`] builds both from Swin's config values (`DATA.IMG_SIZE`,
//! `DATA.INTERPOLATION`, `AUG.*`, `TEST.CROP`), as
//! [`ClassifyTransform`](crate::ClassifyTransform)s for a
//! [`ClassifyLoader`](crate::ClassifyLoader), including Swin's switch at `IMG_SIZE` ≤ 32
//! (`RandomCrop(S, padding=4)` for training, no resize for evaluation).
//!
//! The PIL operations RandAugment uses are reimplemented with PIL's arithmetic (checked against
//! Pillow itself by a fixture made with `benches/reference/timm_ops_fixture.py`):
//! [`point`] (`ImageOps`), [`enhance`] (`ImageEnhance`, `Image.blend`) and [`geometry`]
//! (`Image.transform` / `Image.rotate` with an affine map).
//!
//! Resizing (the random resized crop and the evaluation resize) goes through `image`'s
//! separable resampler: [`Resample::Bicubic`] is its Catmull-Rom filter (the cubic with
//! a = -0.5 that PIL's `resize` uses), [`Resample::Bilinear`] its triangle filter. Like PIL, it
//! widens the filter by the scale factor when shrinking (antialiasing) and renormalises the
//! weights at the borders; unlike PIL it keeps the intermediate pass in `f32` and rounds once,
//! where PIL rounds each pass to 8 bits with 22-bit fixed-point weights, so a resized pixel can
//! differ from PIL's by one level.
//!
//! The random draws follow timm's order and distributions, but not Python's random streams: a
//! seed here does not give the sample the same seed gives in Python.

pub mod enhance;
pub mod geometry;
pub mod point;

mod color_jitter;
mod erasing;
mod pipeline;
mod rand_augment;
mod rand_ops;
mod swin;

#[cfg(test)]
mod pil_fixture;

use image::imageops::FilterType;
use rand::rngs::StdRng;
use rand::Rng;

pub use color_jitter::ColorJitter;
pub use erasing::{EraseMode, RandomErasing};
pub use pipeline::{ColorAugment, EvalResize, TimmEval, TimmTrain, TrainCrop};
pub use rand_augment::RandAugment;
pub use rand_ops::{RandOp, MAX_LEVEL, RAND_INCREASING_TRANSFORMS, RAND_TRANSFORMS};
pub use swin::SwinAugConfig;

/// A resampling filter for resizing and for the affine RandAugment operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resample {
    /// PIL's `BILINEAR`.
    Bilinear,
    /// PIL's `BICUBIC`.
    Bicubic,
}

impl Resample {
    /// `image`'s filter for this resampling: triangle (bilinear) or Catmull-Rom (bicubic with
    /// a = -0.5, PIL's resize kernel).
    pub fn filter(self) -> FilterType {
        match self {
            Self::Bilinear => FilterType::Triangle,
            Self::Bicubic => FilterType::CatmullRom,
        }
    }
}

/// timm's interpolation setting (Swin's `DATA.INTERPOLATION`): one filter, or `random`, which
/// picks bilinear or bicubic with equal odds at each use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Interpolation {
    /// Always bilinear.
    Bilinear,
    /// Always bicubic.
    Bicubic,
    /// Bilinear or bicubic, drawn at each use (timm's `_RANDOM_INTERPOLATION`).
    Random,
}

impl Interpolation {
    /// Parses `bilinear`, `bicubic` or `random` (the values Swin's config accepts). timm maps
    /// any other name but `lanczos` and `hamming` to bilinear; those are refused here.
    pub fn parse(name: &str) -> Result<Self, TimmConfigError> {
        match name {
            "bilinear" => Ok(Self::Bilinear),
            "bicubic" => Ok(Self::Bicubic),
            "random" => Ok(Self::Random),
            _ => Err(TimmConfigError::new(
                "interpolation",
                name,
                "expected `bilinear`, `bicubic` or `random`",
            )),
        }
    }

    /// The filter for one use; `Random` draws one number from `rng`, the others none.
    pub fn pick(self, rng: &mut StdRng) -> Resample {
        match self {
            Self::Bilinear => Resample::Bilinear,
            Self::Bicubic => Resample::Bicubic,
            Self::Random => {
                if rng.random_bool(0.5) {
                    Resample::Bicubic
                } else {
                    Resample::Bilinear
                }
            }
        }
    }

    /// timm's `_pil_interp` for a fixed filter, as Swin's evaluation transform uses it:
    /// `random` resolves to bilinear.
    pub fn fixed(self) -> Resample {
        match self {
            Self::Bicubic => Resample::Bicubic,
            Self::Bilinear | Self::Random => Resample::Bilinear,
        }
    }
}

/// A timm/Swin transform setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting} = {value:?}: {problem}")]
pub struct TimmConfigError {
    /// The setting, by its Swin config key (`AUG.AUTO_AUGMENT`, ...) where the value came from
    /// a [`SwinAugConfig`], else by timm's argument name.
    pub setting: &'static str,
    /// The value as given.
    pub value: String,
    /// What is wrong with it.
    pub problem: String,
}

impl TimmConfigError {
    fn new(setting: &'static str, value: impl ToString, problem: impl Into<String>) -> Self {
        Self {
            setting,
            value: value.to_string(),
            problem: problem.into(),
        }
    }

    /// The same error reported under another setting name.
    fn named(self, setting: &'static str) -> Self {
        Self { setting, ..self }
    }
}

/// One standard normal value (Box–Muller from two uniforms).
pub(crate) fn standard_normal(rng: &mut StdRng) -> f64 {
    let (z, _) = normal_pair(rng);
    z
}

/// Two independent standard normal values from two uniforms (Box–Muller).
fn normal_pair(rng: &mut StdRng) -> (f64, f64) {
    // 1 - U[0, 1) lies in (0, 1], so the logarithm is finite.
    let radius = (-2.0 * (1.0 - rng.random::<f64>()).ln()).sqrt();
    let angle = std::f64::consts::TAU * rng.random::<f64>();
    (radius * angle.cos(), radius * angle.sin())
}

/// Fills `out` with standard normal values (torch's `normal_()`).
pub(crate) fn fill_standard_normal(rng: &mut StdRng, out: &mut [f32]) {
    let mut chunks = out.chunks_exact_mut(2);
    for pair in &mut chunks {
        let (a, b) = normal_pair(rng);
        pair[0] = a as f32;
        pair[1] = b as f32;
    }
    if let [last] = chunks.into_remainder() {
        *last = standard_normal(rng) as f32;
    }
}

/// Python's `random.randint(lo, hi)`: uniform on `lo..=hi`.
pub(crate) fn randint(rng: &mut StdRng, lo: u32, hi: u32) -> u32 {
    rng.random_range(lo..=hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn interpolation_names_and_picks() {
        assert_eq!(Interpolation::parse("bicubic").unwrap(), Interpolation::Bicubic);
        assert_eq!(Interpolation::parse("bilinear").unwrap(), Interpolation::Bilinear);
        assert_eq!(Interpolation::parse("random").unwrap(), Interpolation::Random);
        let err = Interpolation::parse("lanczos").unwrap_err();
        assert!(err.to_string().contains("\"lanczos\""), "{err}");
        assert_eq!(Interpolation::Random.fixed(), Resample::Bilinear);
        assert_eq!(Interpolation::Bicubic.fixed(), Resample::Bicubic);
        let mut rng = StdRng::seed_from_u64(0);
        assert_eq!(Interpolation::Bicubic.pick(&mut rng), Resample::Bicubic);
        let bicubic = (0..1000)
            .filter(|_| Interpolation::Random.pick(&mut rng) == Resample::Bicubic)
            .count();
        assert!((440..=560).contains(&bicubic), "{bicubic}");
    }

    #[test]
    fn normal_values_have_unit_moments() {
        let mut rng = StdRng::seed_from_u64(5);
        let mut v = vec![0f32; 20_001];
        fill_standard_normal(&mut rng, &mut v);
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 0.03, "{mean}");
        assert!((var - 1.0).abs() < 0.04, "{var}");
        // About 68.3 % within one standard deviation.
        let within = v.iter().filter(|x| x.abs() < 1.0).count() as f64 / n;
        assert!((within - 0.683).abs() < 0.015, "{within}");
    }
}
