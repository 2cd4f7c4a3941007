//! torchvision's `ColorJitter(brightness, contrast, saturation)` on PIL images, as timm uses it
//! when no auto-augment string is given (`color_jitter=0.4` → all three 0.4, no hue).

use image::RgbImage;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use super::{enhance, TimmConfigError};
use crate::transforms::uniform;

/// torchvision `ColorJitter(s, s, s)`: brightness, contrast and saturation factors each
/// `U(max(0, 1 - s), 1 + s)`, applied in a random order (`torch.randperm`) through PIL's
/// `ImageEnhance` Brightness, Contrast and Color. A strength of 0 turns the jitter off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ColorJitter {
    strength: f64,
}

/// `strength` is checked to be finite, so equality is reflexive.
impl Eq for ColorJitter {}

/// One of the jitter's adjustments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Adjust {
    Brightness,
    Contrast,
    Saturation,
    /// torchvision's fourth slot; timm's scalar setting leaves hue off.
    Hue,
}

impl ColorJitter {
    /// The jitter of timm's scalar `color_jitter`: the same finite, non-negative strength for
    /// brightness, contrast and saturation.
    pub fn new(strength: f64) -> Result<Self, TimmConfigError> {
        if !(strength.is_finite() && strength >= 0.0) {
            return Err(TimmConfigError::new(
                "color_jitter",
                strength,
                "not a finite non-negative strength",
            ));
        }
        Ok(Self { strength })
    }

    /// The strength `s`.
    pub fn strength(&self) -> f64 {
        self.strength
    }

    /// The factor range `(max(0, 1 - s), 1 + s)`.
    pub fn range(&self) -> (f64, f64) {
        ((1.0 - self.strength).max(0.0), 1.0 + self.strength)
    }

    /// Jitters one image: a random order of the four adjustments, then a factor for each of
    /// brightness, contrast and saturation (torchvision's `get_params` order), then the
    /// adjustments in that order.
    pub fn apply(&self, img: RgbImage, rng: &mut StdRng) -> RgbImage {
        if self.strength == 0.0 {
            return img;
        }
        let mut order = [Adjust::Brightness, Adjust::Contrast, Adjust::Saturation, Adjust::Hue];
        order.shuffle(rng);
        let (lo, hi) = self.range();
        let factors = [(); 3].map(|_| uniform(rng, lo, hi));
        order.iter().fold(img, |img, adjust| match adjust {
            Adjust::Brightness => enhance::brightness(&img, factors[0]),
            Adjust::Contrast => enhance::contrast(&img, factors[1]),
            Adjust::Saturation => enhance::color(&img, factors[2]),
            Adjust::Hue => img,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;
    use rand::SeedableRng;

    #[test]
    fn strength_sets_the_factor_range() {
        assert_eq!(ColorJitter::new(0.4).unwrap().range(), (0.6, 1.4));
        assert_eq!(ColorJitter::new(1.5).unwrap().range(), (0.0, 2.5));
        assert!(ColorJitter::new(-0.1).is_err());
        assert!(ColorJitter::new(f64::NAN).is_err());
        let img = RgbImage::from_pixel(3, 3, Rgb([200, 100, 50]));
        let mut rng = StdRng::seed_from_u64(0);
        assert_eq!(ColorJitter::new(0.0).unwrap().apply(img.clone(), &mut rng), img);
    }

    #[test]
    fn brightness_stays_within_the_range() {
        // A flat grey image: contrast and saturation leave it as is, so only brightness acts,
        // scaling 100 by a factor in [0.6, 1.4].
        let jitter = ColorJitter::new(0.4).unwrap();
        let img = RgbImage::from_pixel(2, 2, Rgb([100; 3]));
        let mut rng = StdRng::seed_from_u64(1);
        let outs: Vec<u8> = (0..2000)
            .map(|_| jitter.apply(img.clone(), &mut rng).get_pixel(0, 0).0[0])
            .collect();
        assert!(outs.iter().all(|v| (60..=140).contains(v)), "{outs:?}");
        let mean = outs.iter().map(|&v| f64::from(v)).sum::<f64>() / outs.len() as f64;
        // Truncation lowers the mean of 100 · U(0.6, 1.4) by about half a level.
        assert!((mean - 99.5).abs() < 1.5, "{mean}");
        assert!(outs.iter().any(|&v| v < 70) && outs.iter().any(|&v| v > 130));
    }

    #[test]
    fn saturation_moves_towards_grey_or_away() {
        let jitter = ColorJitter::new(0.4).unwrap();
        let img = RgbImage::from_pixel(2, 2, Rgb([200, 100, 50]));
        let mut rng = StdRng::seed_from_u64(2);
        let spreads: Vec<i32> = (0..500)
            .map(|_| {
                let [r, _, b] = jitter.apply(img.clone(), &mut rng).get_pixel(0, 0).0;
                i32::from(r) - i32::from(b)
            })
            .collect();
        // The original spread is 150; brightness, contrast and saturation each scale it by a
        // factor in [0.6, 1.4] (0.216–2.744 together, clipped by the 0..=255 levels).
        assert!(spreads.iter().all(|&s| (30..=255).contains(&s)), "{spreads:?}");
        assert!(spreads.iter().any(|&s| s < 100) && spreads.iter().any(|&s| s > 200));
    }
}
