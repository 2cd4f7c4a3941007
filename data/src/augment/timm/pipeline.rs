//! The whole training and evaluation transforms: timm's `transforms_imagenet_train` as Swin
//! calls it, and Swin's evaluation `build_transform`.

use image::imageops;
use image::RgbImage;
use rand::rngs::StdRng;

use super::{randint, ColorJitter, Interpolation, RandAugment, RandomErasing, Resample};
use crate::transforms::{
    to_tensor_normalized, CenterCrop, RandomHorizontalFlip, RandomResizedCrop, Resize, IMAGENET_MEAN, IMAGENET_STD,
};

/// The first step of [`TimmTrain`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrainCrop {
    /// timm's `RandomResizedCropAndInterpolation(size, scale=(0.08, 1), ratio=(3/4, 4/3))`:
    /// torchvision's random window (see [`RandomResizedCrop::get_params`]), then, for
    /// [`Interpolation::Random`], a filter drawn per image.
    RandomResized {
        /// The resize filter.
        interpolation: Interpolation,
    },
    /// torchvision `RandomCrop(size, padding)`: zero padding on every side, then a uniform
    /// `size × size` window. Swin uses it with padding 4 instead of the resized crop when
    /// `DATA.IMG_SIZE` ≤ 32. Where the padded image is still smaller than the crop
    /// (torchvision raises), the window is zero-padded on the right and bottom.
    Padded {
        /// Zeros added on each side.
        padding: u32,
    },
}

/// The colour/photometric step of [`TimmTrain`]: timm applies RandAugment when an
/// auto-augment string is given, else the colour jitter (never both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColorAugment {
    /// Neither.
    None,
    /// [`RandAugment`].
    RandAugment(RandAugment),
    /// [`ColorJitter`].
    ColorJitter(ColorJitter),
}

/// timm 0.4.12's `transforms_imagenet_train` (no vertical flip, ImageNet mean/std): [`TrainCrop`],
/// `RandomHorizontalFlip(0.5)`, [`ColorAugment`], `ToTensor()` + `Normalize`, then
/// [`RandomErasing`] on the tensor. Output `[3, size, size]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimmTrain {
    /// Side of the square output.
    pub size: u32,
    /// The cropping step.
    pub crop: TrainCrop,
    /// The colour step.
    pub color: ColorAugment,
    /// Random erasing on the normalised tensor, if any.
    pub erasing: Option<RandomErasing>,
}

impl TimmTrain {
    /// Random resized crop with `interpolation` and flip only (add a colour step and erasing
    /// through the fields).
    pub fn new(size: u32, interpolation: Interpolation) -> Self {
        Self {
            size,
            crop: TrainCrop::RandomResized { interpolation },
            color: ColorAugment::None,
            erasing: None,
        }
    }

    /// The image steps: crop, flip and colour augmentation.
    pub fn augment(&self, img: RgbImage, rng: &mut StdRng) -> RgbImage {
        let img = match self.crop {
            TrainCrop::RandomResized { interpolation } => {
                let crop = RandomResizedCrop::new(self.size);
                let window = crop.get_params(img.width(), img.height(), rng);
                let filter = interpolation.pick(rng).filter();
                crop.resized_crop(&img, window, filter)
            }
            TrainCrop::Padded { padding } => padded_random_crop(&img, self.size, padding, rng),
        };
        let img = RandomHorizontalFlip::default().apply(img, rng);
        match self.color {
            ColorAugment::None => img,
            ColorAugment::RandAugment(ra) => ra.apply(img, rng),
            ColorAugment::ColorJitter(jitter) => jitter.apply(img, rng),
        }
    }

    /// Transforms one image to its normalised `[3, size, size]` tensor.
    pub fn apply(&self, img: RgbImage, rng: &mut StdRng) -> Vec<f32> {
        let img = self.augment(img, rng);
        let mut chw = to_tensor_normalized(&img, &IMAGENET_MEAN, &IMAGENET_STD);
        if let Some(erasing) = self.erasing {
            let s = self.size as usize;
            erasing.apply(&mut chw, [3, s, s], rng);
        }
        chw
    }
}

/// torchvision `RandomCrop(size, padding)` (see [`TrainCrop::Padded`]).
fn padded_random_crop(img: &RgbImage, size: u32, padding: u32, rng: &mut StdRng) -> RgbImage {
    let (w, h) = (img.width() + 2 * padding, img.height() + 2 * padding);
    let top = randint(rng, 0, h.saturating_sub(size));
    let left = randint(rng, 0, w.saturating_sub(size));
    let mut out = RgbImage::new(size, size);
    imageops::replace(
        &mut out,
        img,
        i64::from(padding) - i64::from(left),
        i64::from(padding) - i64::from(top),
    );
    out
}

/// How [`TimmEval`] brings an image to `size × size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EvalResize {
    /// `Resize(shorter)` (the shorter side to `shorter`, see
    /// [`resized_size`](crate::transforms::resized_size)) + `CenterCrop(size)`: Swin's
    /// `TEST.CROP`, with `shorter = int(256 / 224 · size)`.
    ShorterThenCrop {
        /// Length of the shorter side after resizing.
        shorter: u32,
    },
    /// `Resize((size, size))`, ignoring the aspect ratio: Swin without `TEST.CROP`.
    Square,
    /// No resizing: Swin at `DATA.IMG_SIZE` ≤ 32, where images are expected at `size × size`
    /// already. Other sizes are centre-cropped or zero-padded to it (Swin's loader would fail
    /// to batch them).
    None,
}

/// Swin's evaluation transform: [`EvalResize`] with `resample`, then `ToTensor()` +
/// `Normalize`. Output `[3, size, size]`; draws nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimmEval {
    /// Side of the square output.
    pub size: u32,
    /// The resizing.
    pub resize: EvalResize,
    /// The resize filter.
    pub resample: Resample,
}

impl TimmEval {
    /// Swin's `build_transform(is_train=False)` for `DATA.IMG_SIZE = size`, `TEST.CROP = crop`
    /// and `DATA.INTERPOLATION = interpolation` (`random` resolves to bilinear, as timm's
    /// `_pil_interp` does).
    pub fn swin(size: u32, crop: bool, interpolation: Interpolation) -> Self {
        let resize = if size <= 32 {
            EvalResize::None
        } else if crop {
            EvalResize::ShorterThenCrop {
                shorter: ((256.0 / 224.0) * f64::from(size)) as u32,
            }
        } else {
            EvalResize::Square
        };
        Self {
            size,
            resize,
            resample: interpolation.fixed(),
        }
    }

    /// The resized image.
    pub fn resize_image(&self, img: &RgbImage) -> RgbImage {
        let crop = CenterCrop { size: self.size };
        match self.resize {
            EvalResize::ShorterThenCrop { shorter } => {
                crop.apply(&Resize { size: shorter }.apply_filtered(img, self.resample.filter()))
            }
            EvalResize::Square => imageops::resize(img, self.size, self.size, self.resample.filter()),
            EvalResize::None if img.dimensions() == (self.size, self.size) => img.clone(),
            EvalResize::None => crop.apply(img),
        }
    }

    /// Transforms one image to its normalised `[3, size, size]` tensor.
    pub fn apply(&self, img: &RgbImage) -> Vec<f32> {
        to_tensor_normalized(&self.resize_image(img), &IMAGENET_MEAN, &IMAGENET_STD)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::augment::timm::SwinAugConfig;
    use crate::transforms::ClassifyTransform;
    use image::Rgb;
    use rand::SeedableRng;

    fn rng(seed: u64) -> StdRng {
        StdRng::seed_from_u64(seed)
    }

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, 90]))
    }

    #[test]
    fn training_output_is_shaped_normalised_and_seeded() {
        let t = SwinAugConfig {
            img_size: 48,
            ..SwinAugConfig::default()
        }
        .train()
        .unwrap();
        let img = gradient(80, 60);
        let a = t.apply(img.clone(), &mut rng(1));
        assert_eq!(a.len(), 3 * 48 * 48);
        assert_eq!(a, t.apply(img.clone(), &mut rng(1)));
        assert_ne!(a, t.apply(img.clone(), &mut rng(2)));
        // Normalised pixels lie in [(0 - mean) / std, (1 - mean) / std]; pixel-mode erasing
        // adds standard normal values, which rarely leave [-5, 5].
        assert!(a.iter().all(|v| v.is_finite() && v.abs() < 6.0));
        // Without erasing, every value is a normalised 8-bit level.
        let plain = TimmTrain { erasing: None, ..t };
        let v = plain.apply(img, &mut rng(3));
        let plane = 48 * 48;
        for (i, &x) in v.iter().enumerate() {
            let c = i / plane;
            let level = (x * IMAGENET_STD[c] + IMAGENET_MEAN[c]) * 255.0;
            assert!((level - level.round()).abs() < 1e-3, "{level}");
        }
    }

    #[test]
    fn padded_crop_takes_a_window_of_the_padded_image() {
        let img = gradient(32, 32);
        let mut r = rng(5);
        let mut offsets = std::collections::HashSet::new();
        for _ in 0..300 {
            let out = padded_random_crop(&img, 32, 4, &mut r);
            assert_eq!(out.dimensions(), (32, 32));
            // Find where the image's (0, 0) landed: a shift of -4..=4 in each direction.
            let shift = (-4i32..=4)
                .flat_map(|dy| (-4i32..=4).map(move |dx| (dx, dy)))
                .find(|&(dx, dy)| {
                    (0..32).all(|y| {
                        (0..32).all(|x| {
                            let (sx, sy) = (x - dx, y - dy);
                            let want = if (0..32).contains(&sx) && (0..32).contains(&sy) {
                                *img.get_pixel(sx as u32, sy as u32)
                            } else {
                                Rgb([0; 3])
                            };
                            *out.get_pixel(x as u32, y as u32) == want
                        })
                    })
                })
                .expect("a shifted, zero-padded copy");
            offsets.insert(shift);
        }
        assert!(offsets.len() > 60, "{} of 81 shifts seen", offsets.len());
        // Smaller than the crop even padded: zeros fill the rest.
        let out = padded_random_crop(&gradient(10, 10), 32, 4, &mut r);
        assert_eq!(out.get_pixel(4, 4).0, gradient(10, 10).get_pixel(0, 0).0);
        assert_eq!(out.get_pixel(31, 31).0, [0; 3]);
    }

    #[test]
    fn eval_resizes_crops_and_draws_nothing() {
        // 300×200, left half red, right half blue → shorter side 256: 384×256, then the
        // centre 224: left offset 80. Far from the boundary the colours are exact.
        let img = RgbImage::from_fn(
            300,
            200,
            |x, _| if x < 150 { Rgb([255, 0, 0]) } else { Rgb([0, 0, 255]) },
        );
        let e = SwinAugConfig::default().eval().unwrap();
        let out = e.resize_image(&img);
        assert_eq!(out.dimensions(), (224, 224));
        assert_eq!(out.get_pixel(0, 0).0, [255, 0, 0]);
        assert_eq!(out.get_pixel(223, 100).0, [0, 0, 255]);
        let v = e.apply(&img);
        assert_eq!(v.len(), 3 * 224 * 224);
        let t = ClassifyTransform::TimmEval(e);
        assert_eq!(t.apply(img.clone(), &mut rng(0)), v);
        assert_eq!(t.apply(img.clone(), &mut rng(9)), v);
        // Square: both sides to 224, the boundary moves to x = 112.
        let sq = TimmEval {
            resize: EvalResize::Square,
            ..e
        };
        let out = sq.resize_image(&img);
        assert_eq!(out.dimensions(), (224, 224));
        assert_eq!(out.get_pixel(105, 5).0, [255, 0, 0]);
        assert_eq!(out.get_pixel(118, 5).0, [0, 0, 255]);
        // No resize: an image of the size passes as is; another is centre-cropped.
        let none = TimmEval::swin(16, true, Interpolation::Bicubic);
        let small = gradient(16, 16);
        assert_eq!(none.resize_image(&small), small);
        assert_eq!(
            none.resize_image(&gradient(20, 16)).get_pixel(0, 0),
            gradient(20, 16).get_pixel(2, 0)
        );
    }
}
