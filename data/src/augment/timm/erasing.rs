//! timm 0.4.12's `RandomErasing` (`timm/data/random_erasing.py`) on one normalised `[C, H, W]`
//! tensor.

use rand::rngs::StdRng;
use rand::Rng;

use super::{fill_standard_normal, randint, TimmConfigError};
use crate::transforms::{uniform, CropBox};

/// What an erased box is filled with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EraseMode {
    /// Zeros (`const`; the normalised mean).
    Const,
    /// One standard normal value per channel for the whole box (`rand`).
    Rand,
    /// A standard normal value per element (`pixel`).
    Pixel,
}

impl EraseMode {
    /// timm's mode names, case-insensitive: `const` (or empty), `rand`, `pixel`.
    pub fn parse(name: &str) -> Result<Self, TimmConfigError> {
        match name.to_lowercase().as_str() {
            "" | "const" => Ok(Self::Const),
            "rand" => Ok(Self::Rand),
            "pixel" => Ok(Self::Pixel),
            _ => Err(TimmConfigError::new(
                "re_mode",
                name,
                "expected `const`, `rand` or `pixel`",
            )),
        }
    }
}

/// timm's `RandomErasing(probability, mode=..., max_count=...)` with its defaults: area
/// 2 %–1/3 of the image, aspect ratio (height / width) 0.3–1/0.3 drawn log-uniformly, at least
/// one box.
///
/// Per image: with probability `probability`, `count` boxes, `count` uniform on
/// `1..=max_count`; each box tries 10 times for an area `U(0.02, 1/3) · H · W / count` and an
/// aspect `exp(U(ln 0.3, ln (1/0.3)))`, sides `round(√(area · aspect))` (height) and
/// `round(√(area / aspect))` (width), and is placed uniformly at the first try whose sides
/// are both under the image's; a box with no fitting try is skipped.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomErasing {
    probability: f64,
    mode: EraseMode,
    max_count: u32,
}

/// `probability` is checked to be in [0, 1] (not NaN), so equality is reflexive.
impl Eq for RandomErasing {}

/// Smallest box area, as a fraction of the image.
const MIN_AREA: f64 = 0.02;
/// Largest box area, as a fraction of the image.
const MAX_AREA: f64 = 1.0 / 3.0;
/// Smallest aspect ratio (height / width); the largest is its inverse.
const MIN_ASPECT: f64 = 0.3;
/// Tries per box.
const ATTEMPTS: usize = 10;

impl RandomErasing {
    /// Erasing with probability `probability` in [0, 1], up to `max_count` boxes (timm's
    /// `max_count or min_count`: 0 means 1).
    pub fn new(probability: f64, mode: EraseMode, max_count: u32) -> Result<Self, TimmConfigError> {
        if !(0.0..=1.0).contains(&probability) {
            return Err(TimmConfigError::new(
                "re_prob",
                probability,
                "not a probability in [0, 1]",
            ));
        }
        Ok(Self {
            probability,
            mode,
            max_count: max_count.max(1),
        })
    }

    /// The probability of erasing an image.
    pub fn probability(&self) -> f64 {
        self.probability
    }

    /// The fill mode.
    pub fn mode(&self) -> EraseMode {
        self.mode
    }

    /// The most boxes per image.
    pub fn max_count(&self) -> u32 {
        self.max_count
    }

    /// Erases boxes of `chw`, a `[C, H, W]` row-major tensor of shape `shape`, in place, and
    /// returns them (none when the draw skips the image).
    ///
    /// # Panics
    ///
    /// When `chw.len()` is not the product of `shape`.
    pub fn apply(&self, chw: &mut [f32], shape: [usize; 3], rng: &mut StdRng) -> Vec<CropBox> {
        let [channels, height, width] = shape;
        assert_eq!(chw.len(), channels * height * width, "tensor of shape {shape:?}");
        if rng.random::<f64>() > self.probability {
            return Vec::new();
        }
        let count = if self.max_count == 1 {
            1
        } else {
            randint(rng, 1, self.max_count)
        };
        let area = (height * width) as f64;
        let (log_lo, log_hi) = (MIN_ASPECT.ln(), (1.0 / MIN_ASPECT).ln());
        let mut boxes = Vec::new();
        for _ in 0..count {
            for _ in 0..ATTEMPTS {
                let target = uniform(rng, MIN_AREA, MAX_AREA) * area / f64::from(count);
                let aspect = uniform(rng, log_lo, log_hi).exp();
                let h = (target * aspect).sqrt().round_ties_even() as usize;
                let w = (target / aspect).sqrt().round_ties_even() as usize;
                if w < width && h < height {
                    let top = randint(rng, 0, (height - h) as u32) as usize;
                    let left = randint(rng, 0, (width - w) as u32) as usize;
                    self.fill(chw, shape, [top, left, h, w], rng);
                    boxes.push(CropBox {
                        top: top as u32,
                        left: left as u32,
                        height: h as u32,
                        width: w as u32,
                    });
                    break;
                }
            }
        }
        boxes
    }

    /// Overwrites the box `[top, left, h, w]` of every channel.
    fn fill(&self, chw: &mut [f32], [channels, height, width]: [usize; 3], b: [usize; 4], rng: &mut StdRng) {
        let [top, left, h, w] = b;
        let values = match self.mode {
            EraseMode::Const => vec![0.0; channels],
            EraseMode::Rand => {
                let mut v = vec![0.0; channels];
                fill_standard_normal(rng, &mut v);
                v
            }
            EraseMode::Pixel => {
                let mut v = vec![0.0; channels * h * w];
                fill_standard_normal(rng, &mut v);
                v
            }
        };
        for c in 0..channels {
            for y in 0..h {
                let row = (c * height + top + y) * width + left;
                for x in 0..w {
                    chw[row + x] = match self.mode {
                        EraseMode::Pixel => values[(c * h + y) * w + x],
                        EraseMode::Const | EraseMode::Rand => values[c],
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    const SHAPE: [usize; 3] = [3, 40, 50];

    fn tensor() -> Vec<f32> {
        (0..3 * 40 * 50).map(|i| 100.0 + i as f32).collect()
    }

    /// Elements of `after` that differ from `before`, by channel.
    fn changed(before: &[f32], after: &[f32]) -> [usize; 3] {
        let plane = SHAPE[1] * SHAPE[2];
        std::array::from_fn(|c| (c * plane..(c + 1) * plane).filter(|&i| before[i] != after[i]).count())
    }

    #[test]
    fn modes_parse_like_timm() {
        assert_eq!(EraseMode::parse("pixel").unwrap(), EraseMode::Pixel);
        assert_eq!(EraseMode::parse("Rand").unwrap(), EraseMode::Rand);
        assert_eq!(EraseMode::parse("").unwrap(), EraseMode::Const);
        assert_eq!(EraseMode::parse("const").unwrap(), EraseMode::Const);
        let err = EraseMode::parse("noise").unwrap_err();
        assert!(err.to_string().contains("\"noise\""), "{err}");
        assert!(RandomErasing::new(1.5, EraseMode::Pixel, 1).is_err());
        assert!(RandomErasing::new(f64::NAN, EraseMode::Pixel, 1).is_err());
        assert_eq!(RandomErasing::new(0.25, EraseMode::Pixel, 0).unwrap().max_count(), 1);
    }

    #[test]
    fn probability_zero_leaves_the_tensor_alone() {
        let e = RandomErasing::new(0.0, EraseMode::Pixel, 3).unwrap();
        let mut t = tensor();
        let mut rng = StdRng::seed_from_u64(0);
        for _ in 0..200 {
            assert!(e.apply(&mut t, SHAPE, &mut rng).is_empty());
        }
        assert_eq!(t, tensor());
    }

    #[test]
    fn boxes_are_erased_in_every_channel_and_nowhere_else() {
        let mut rng = StdRng::seed_from_u64(1);
        for mode in [EraseMode::Const, EraseMode::Rand, EraseMode::Pixel] {
            let e = RandomErasing::new(1.0, mode, 1).unwrap();
            let mut t = tensor();
            let boxes = e.apply(&mut t, SHAPE, &mut rng);
            assert_eq!(boxes.len(), 1);
            let b = boxes[0];
            let n = (b.height * b.width) as usize;
            assert_eq!(changed(&tensor(), &t), [n; 3], "{mode:?} {b:?}");
            let inside = |c: usize, y: u32, x: u32| t[(c * 40 + y as usize) * 50 + x as usize];
            let corner = [0, 1, 2].map(|c| inside(c, b.top, b.left));
            let far = [0, 1, 2].map(|c| inside(c, b.top + b.height - 1, b.left + b.width - 1));
            match mode {
                EraseMode::Const => assert_eq!(corner, [0.0; 3]),
                EraseMode::Rand => assert_eq!(corner, far, "one value per channel"),
                EraseMode::Pixel => assert_ne!(corner, far, "a value per element"),
            }
        }
    }

    #[test]
    fn area_aspect_and_count_statistics() {
        let e = RandomErasing::new(1.0, EraseMode::Const, 1).unwrap();
        let mut rng = StdRng::seed_from_u64(2);
        let (mut areas, mut log_aspects) = (Vec::new(), Vec::new());
        for _ in 0..8000 {
            let mut t = tensor();
            for b in e.apply(&mut t, SHAPE, &mut rng) {
                assert!(b.top + b.height <= 40 && b.left + b.width <= 50, "{b:?}");
                assert!(b.height < 40 && b.width < 50);
                areas.push((b.height * b.width) as f64 / 2000.0);
                log_aspects.push((b.height as f64 / b.width as f64).ln());
            }
        }
        // Every image finds a box in 10 tries on a 40×50 image.
        assert_eq!(areas.len(), 8000);
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        // timm's own RandomErasing on a 40×50 tensor (40 000 images, measured with timm
        // 0.4.12): area fraction mean 0.1735 within [0.018, 0.345]; log aspect (h / w) mean
        // -0.025 within ±1.32, |log aspect| > 0.6 for 49.4 % of the boxes. Areas are
        // U(0.02, 1/3) before the sides are rounded and boxes that do not fit refused.
        assert!(areas.iter().all(|&a| (0.015..=0.35).contains(&a)));
        assert!((0.168..0.179).contains(&mean(&areas)), "{}", mean(&areas));
        assert!(log_aspects.iter().all(|a| a.abs() < 1.4), "{log_aspects:?}");
        assert!((-0.06..0.01).contains(&mean(&log_aspects)), "{}", mean(&log_aspects));
        let spread = log_aspects.iter().filter(|a| a.abs() > 0.6).count() as f64 / log_aspects.len() as f64;
        assert!((0.465..0.525).contains(&spread), "{spread}");

        // Several boxes: 1..=3 uniformly, each of a third of the area.
        let e = RandomErasing::new(1.0, EraseMode::Const, 3).unwrap();
        let mut counts = [0usize; 4];
        for _ in 0..3000 {
            counts[e.apply(&mut tensor(), SHAPE, &mut rng).len()] += 1;
        }
        for n in &counts[1..] {
            assert!((850..=1150).contains(n), "{counts:?}");
        }
    }

    #[test]
    fn erasing_happens_with_its_probability_and_pixel_values_are_standard_normal() {
        let e = RandomErasing::new(0.25, EraseMode::Pixel, 1).unwrap();
        let mut rng = StdRng::seed_from_u64(3);
        let mut values = Vec::new();
        let mut erased = 0;
        for _ in 0..2000 {
            let before = vec![1000.0f32; 3 * 40 * 50];
            let mut t = before.clone();
            if !e.apply(&mut t, SHAPE, &mut rng).is_empty() {
                erased += 1;
            }
            values.extend(t.iter().filter(|&&v| v != 1000.0).map(|&v| v as f64));
        }
        assert!((440..=560).contains(&erased), "{erased}");
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 0.01 && (var - 1.0).abs() < 0.01, "{mean} {var}");
    }
}
