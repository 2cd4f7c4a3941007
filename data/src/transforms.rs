//! torchvision's image classification transforms on `image` buffers, with its exact sizes,
//! offsets, rounding and random-crop algorithm; resizing is bilinear with antialiasing (PIL's
//! behaviour), through `image`'s triangle filter, or with another filter where a method takes
//! one (`CatmullRom` for PIL's bicubic).
//!
//! The presets in [`ClassifyTransform`] are the pytorch/examples ImageNet recipe: train =
//! `RandomResizedCrop(224)` + `RandomHorizontalFlip()` + `ToTensor()` + `Normalize(ImageNet)`,
//! eval = `Resize(256)` + `CenterCrop(224)` + `ToTensor()` + `Normalize(ImageNet)`; its
//! `TimmTrain`/`TimmEval` variants hold Swin-Transformer's timm pipeline
//! ([`augment::timm`](crate::augment::timm)).

use image::imageops::{self, FilterType};
use image::{DynamicImage, GrayImage, ImageBuffer, Pixel, RgbImage};
use rand::rngs::StdRng;
use rand::Rng;

use crate::augment::timm::{TimmEval, TimmTrain};

/// ImageNet's per-channel mean (RGB) of pixels scaled to [0, 1].
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet's per-channel standard deviation (RGB) of pixels scaled to [0, 1].
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// An 8-bit image of any pixel type (RGB, grayscale, ...).
type Image8<P> = ImageBuffer<P, Vec<u8>>;

/// torchvision `Resize(size)` with an int: the shorter side becomes `size`, the longer side
/// `int(size * long / short)` (truncated). An empty side counts as 1, so nothing divides by zero.
pub fn resized_size(w: u32, h: u32, size: u32) -> (u32, u32) {
    let scaled = |long: u32, short: u32| (size as u64 * long as u64 / short.max(1) as u64) as u32;
    if w <= h {
        (size, scaled(h, w))
    } else {
        (scaled(w, h), size)
    }
}

/// torchvision `CenterCrop`: offset `int(round((len - crop) / 2))`, Python rounding
/// (half to even). When the image is smaller than the crop, torchvision first pads
/// `(crop - len) // 2` zeros before it; the offset is then minus that padding.
pub fn crop_offset(len: u32, crop: u32) -> i64 {
    if len < crop {
        return -(((crop - len) / 2) as i64);
    }
    let twice = (len - crop) as i64; // offset × 2
    let floor = twice / 2;
    if twice % 2 == 1 && floor % 2 != 0 {
        floor + 1
    } else {
        floor
    }
}

/// PIL's `convert("L")`: ITU-R 601-2 luma, `L = R·299/1000 + G·587/1000 + B·114/1000`, in PIL's
/// fixed-point form; 8-bit grayscale passes through unchanged, alpha is dropped.
pub fn to_pil_luma(img: DynamicImage) -> GrayImage {
    if let DynamicImage::ImageLuma8(g) = img {
        return g;
    }
    let rgb: RgbImage = img.into_rgb8();
    let (w, h) = rgb.dimensions();
    let data = rgb.pixels().map(|p| pil_luma(p.0)).collect();
    GrayImage::from_raw(w, h, data).expect("one byte per pixel")
}

/// PIL's RGB → L conversion of one pixel (see [`to_pil_luma`]).
pub(crate) fn pil_luma([r, g, b]: [u8; 3]) -> u8 {
    ((r as u32 * 19595 + g as u32 * 38470 + b as u32 * 7471 + 0x8000) >> 16) as u8
}

/// Python's `int(round(x))` for non-negative sizes: half to even; NaN and negatives give 0.
fn round_size(x: f64) -> u32 {
    x.round_ties_even() as u32
}

/// torchvision `Resize(size)`: the shorter side becomes `size` (see [`resized_size`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resize {
    /// Length of the shorter side after resizing.
    pub size: u32,
}

impl Resize {
    /// Resizes `img` (bilinear, antialiased); an image already at the target size is copied.
    pub fn apply<P: Pixel<Subpixel = u8> + 'static>(&self, img: &Image8<P>) -> Image8<P> {
        self.apply_filtered(img, FilterType::Triangle)
    }

    /// Resizes `img` with `filter` (`CatmullRom` for PIL's bicubic), antialiased: `image`
    /// widens the filter by the scale factor when shrinking, as PIL does.
    pub fn apply_filtered<P: Pixel<Subpixel = u8> + 'static>(&self, img: &Image8<P>, filter: FilterType) -> Image8<P> {
        let (w, h) = resized_size(img.width(), img.height(), self.size);
        imageops::resize(img, w, h, filter)
    }
}

/// torchvision `CenterCrop(size)`: the centred `size`×`size` window, zero-padded where the
/// image is smaller (see [`crop_offset`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CenterCrop {
    /// Side of the square crop.
    pub size: u32,
}

impl CenterCrop {
    /// Crops (and where needed pads) `img`.
    pub fn apply<P: Pixel<Subpixel = u8> + 'static>(&self, img: &Image8<P>) -> Image8<P> {
        let top = crop_offset(img.height(), self.size);
        let left = crop_offset(img.width(), self.size);
        let mut out = ImageBuffer::new(self.size, self.size);
        imageops::replace(&mut out, img, -left, -top);
        out
    }
}

/// A crop window in pixels, as torchvision's `get_params` returns it (`i, j, h, w`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropBox {
    /// First row.
    pub top: u32,
    /// First column.
    pub left: u32,
    /// Rows.
    pub height: u32,
    /// Columns.
    pub width: u32,
}

/// torchvision `RandomResizedCrop(size, scale, ratio)`: a random window of random area and
/// aspect ratio, resized to `size`×`size` (bilinear, antialiased).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomResizedCrop {
    /// Side of the square output.
    pub size: u32,
    /// Range of the window's area as a fraction of the image's.
    pub scale: (f64, f64),
    /// Range of the window's aspect ratio (width / height), sampled log-uniformly.
    pub ratio: (f64, f64),
}

impl RandomResizedCrop {
    /// torchvision's defaults: scale (0.08, 1.0), ratio (3/4, 4/3).
    pub fn new(size: u32) -> Self {
        Self {
            size,
            scale: (0.08, 1.0),
            ratio: (3.0 / 4.0, 4.0 / 3.0),
        }
    }

    /// torchvision's `get_params`: up to 10 tries of a window with area `U(scale)` × image area
    /// and aspect `exp(U(ln ratio))` that fits, at a uniform position; else the centred window
    /// of the image clamped to the ratio range.
    pub fn get_params(&self, width: u32, height: u32, rng: &mut StdRng) -> CropBox {
        let area = width as f64 * height as f64;
        let (log_lo, log_hi) = (self.ratio.0.ln(), self.ratio.1.ln());
        for _ in 0..10 {
            let target_area = area * uniform(rng, self.scale.0, self.scale.1);
            let aspect = uniform(rng, log_lo, log_hi).exp();
            let cw = round_size((target_area * aspect).sqrt());
            let ch = round_size((target_area / aspect).sqrt());
            if 0 < cw && cw <= width && 0 < ch && ch <= height {
                let top = rng.random_range(0..=height - ch);
                let left = rng.random_range(0..=width - cw);
                return CropBox {
                    top,
                    left,
                    height: ch,
                    width: cw,
                };
            }
        }
        self.fallback(width, height)
    }

    /// The centre crop used when no random window fits.
    fn fallback(&self, width: u32, height: u32) -> CropBox {
        let in_ratio = width as f64 / height as f64;
        let (lo, hi) = (self.ratio.0.min(self.ratio.1), self.ratio.0.max(self.ratio.1));
        let (cw, ch) = if in_ratio < lo {
            (width, round_size(width as f64 / lo).min(height))
        } else if in_ratio > hi {
            (round_size(height as f64 * hi).min(width), height)
        } else {
            (width, height)
        };
        CropBox {
            top: (height - ch) / 2,
            left: (width - cw) / 2,
            height: ch,
            width: cw,
        }
    }

    /// Crops a random window of `img` and resizes it to `size`×`size`.
    pub fn apply(&self, img: &RgbImage, rng: &mut StdRng) -> RgbImage {
        let b = self.get_params(img.width(), img.height(), rng);
        self.resized_crop(img, b, FilterType::Triangle)
    }

    /// Crops the window `b` of `img` and resizes it to `size`×`size` with `filter`
    /// (torchvision's `F.resized_crop`).
    pub fn resized_crop(&self, img: &RgbImage, b: CropBox, filter: FilterType) -> RgbImage {
        let window = imageops::crop_imm(img, b.left, b.top, b.width, b.height).to_image();
        imageops::resize(&window, self.size, self.size, filter)
    }
}

/// `U(lo, hi)` as torch's `uniform_` draws it, without panicking on an empty range.
pub(crate) fn uniform(rng: &mut StdRng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.random::<f64>()
}

/// torchvision `RandomHorizontalFlip(p)`: mirrors left-right when `U(0, 1) < p`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomHorizontalFlip {
    /// Probability of flipping.
    pub p: f64,
}

impl Default for RandomHorizontalFlip {
    /// torchvision's default, p = 0.5.
    fn default() -> Self {
        Self { p: 0.5 }
    }
}

impl RandomHorizontalFlip {
    /// Flips `img` with probability `p` (one draw from `rng`).
    pub fn apply(&self, mut img: RgbImage, rng: &mut StdRng) -> RgbImage {
        if rng.random::<f64>() < self.p {
            imageops::flip_horizontal_in_place(&mut img);
        }
        img
    }
}

/// torchvision `ToTensor()` + `Normalize(mean, std)`: `[C, H, W]` row-major (CHW),
/// `(pixel / 255 - mean[c]) / std[c]`, for grayscale (C = 1) or RGB (C = 3); `mean` and `std`
/// hold one value per channel.
pub fn to_tensor_normalized<P: Pixel<Subpixel = u8>>(img: &Image8<P>, mean: &[f32], std: &[f32]) -> Vec<f32> {
    let channels = P::CHANNEL_COUNT as usize;
    assert!(
        mean.len() == channels && std.len() == channels,
        "one mean and std per channel"
    );
    let plane = img.width() as usize * img.height() as usize;
    let mut out = vec![0f32; channels * plane];
    for (i, px) in img.pixels().enumerate() {
        for (c, &v) in px.channels().iter().enumerate() {
            out[c * plane + i] = (v as f32 / 255.0 - mean[c]) / std[c];
        }
    }
    out
}

/// A whole classification pipeline, image → normalised `[3, S, S]` tensor (ImageNet mean/std).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClassifyTransform {
    /// `RandomResizedCrop(size)` + `RandomHorizontalFlip()` + `ToTensor()` + `Normalize`.
    Train {
        /// Output side.
        size: u32,
    },
    /// `Resize(resize)` + `CenterCrop(crop)` + `ToTensor()` + `Normalize`.
    Eval {
        /// Shorter side after resizing.
        resize: u32,
        /// Output side.
        crop: u32,
    },
    /// timm's training transform as Swin-Transformer configures it (random resized crop with
    /// its interpolation, flip, RandAugment or colour jitter, random erasing); build it with
    /// [`SwinAugConfig::train_transform`](crate::augment::timm::SwinAugConfig::train_transform).
    TimmTrain(TimmTrain),
    /// Swin-Transformer's evaluation transform (bicubic or bilinear resize, centre crop); build
    /// it with [`SwinAugConfig::eval_transform`](crate::augment::timm::SwinAugConfig::eval_transform).
    TimmEval(TimmEval),
}

impl ClassifyTransform {
    /// The ImageNet training preset: 224×224 random resized crops, random flips.
    pub fn imagenet_train() -> Self {
        Self::Train { size: 224 }
    }

    /// The ImageNet evaluation preset: resize to 256, centre crop 224.
    pub fn imagenet_eval() -> Self {
        Self::Eval { resize: 256, crop: 224 }
    }

    /// Side of the square output.
    pub fn size(&self) -> u32 {
        match *self {
            Self::Train { size } => size,
            Self::Eval { crop, .. } => crop,
            Self::TimmTrain(t) => t.size,
            Self::TimmEval(e) => e.size,
        }
    }

    /// Shape of [`ClassifyTransform::apply`]'s output: `[3, size, size]`.
    pub fn output_shape(&self) -> [usize; 3] {
        let s = self.size() as usize;
        [3, s, s]
    }

    /// Transforms one image; `rng` drives the training augmentations (eval draws nothing).
    pub fn apply(&self, img: RgbImage, rng: &mut StdRng) -> Vec<f32> {
        let img = match *self {
            Self::Train { size } => {
                let cropped = RandomResizedCrop::new(size).apply(&img, rng);
                RandomHorizontalFlip::default().apply(cropped, rng)
            }
            Self::Eval { resize, crop } => CenterCrop { size: crop }.apply(&Resize { size: resize }.apply(&img)),
            Self::TimmTrain(t) => return t.apply(img, rng),
            Self::TimmEval(e) => return e.apply(&img),
        };
        to_tensor_normalized(&img, &IMAGENET_MEAN, &IMAGENET_STD)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Luma, Rgb};
    use rand::SeedableRng;

    fn rng(seed: u64) -> StdRng {
        StdRng::seed_from_u64(seed)
    }

    /// Each pixel encodes its position: R = x, G = y, B = 7.
    fn coords(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| Rgb([x as u8, y as u8, 7]))
    }

    fn norm(v: u8, c: usize) -> f32 {
        (v as f32 / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
    }

    #[test]
    fn torchvision_sizes_and_offsets() {
        assert_eq!(resized_size(56, 84, 28), (28, 42));
        assert_eq!(resized_size(100, 30, 28), (93, 28)); // int(28 * 100 / 30) = 93
        assert_eq!(resized_size(500, 375, 256), (341, 256));
        // round((42 - 28) / 2) = 7; round(65 / 2 = 32.5) = 32; round(0.5) = 0; round(1.5) = 2
        assert_eq!(crop_offset(42, 28), 7);
        assert_eq!(crop_offset(93, 28), 32);
        assert_eq!(crop_offset(29, 28), 0);
        assert_eq!(crop_offset(31, 28), 2);
        assert_eq!(crop_offset(256, 224), 16);
        // Smaller than the crop: torchvision pads (28 - 26) // 2 = 1 and (28 - 25) // 2 = 1 first.
        assert_eq!(crop_offset(26, 28), -1);
        assert_eq!(crop_offset(25, 28), -1);
        assert_eq!(crop_offset(0, 3), -1);
    }

    #[test]
    fn pil_luma_formula() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(1, 1, Rgb([200, 100, 50])));
        // 200·0.299 + 100·0.587 + 50·0.114 = 124.2 → 124
        assert_eq!(to_pil_luma(img).get_pixel(0, 0).0, [124]);
        let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(1, 1, Rgb([255, 255, 255])));
        assert_eq!(to_pil_luma(img).get_pixel(0, 0).0, [255]);
    }

    #[test]
    fn resize_makes_the_shorter_side_size() {
        let out = Resize { size: 256 }.apply(&RgbImage::from_pixel(500, 375, Rgb([10, 200, 30])));
        assert_eq!(out.dimensions(), (341, 256));
        assert_eq!(out.get_pixel(170, 128).0, [10, 200, 30]);
        let out = Resize { size: 8 }.apply(&GrayImage::new(4, 12));
        assert_eq!(out.dimensions(), (8, 24));
        let img = coords(16, 20);
        assert_eq!(
            Resize { size: 16 }.apply(&img),
            img,
            "already the right size: unchanged"
        );
    }

    #[test]
    fn resize_downscale_is_antialiased() {
        // Alternating black/white columns average to grey, not to one of the two.
        let img = RgbImage::from_fn(64, 64, |x, _| Rgb([if x % 2 == 0 { 0 } else { 255 }; 3]));
        let out = Resize { size: 8 }.apply(&img);
        let v = out.get_pixel(4, 4).0[0];
        assert!((120..=135).contains(&v), "{v}");
    }

    #[test]
    fn bicubic_resize_rings_where_bilinear_cannot() {
        // A step from 50 to 200, enlarged 4×: Catmull-Rom (PIL's bicubic, a = -0.5) undershoots
        // below 50 and overshoots above 200 beside the edge; the triangle filter stays within.
        let img = GrayImage::from_fn(8, 8, |x, _| Luma([if x < 4 { 50 } else { 200 }]));
        let resize = Resize { size: 32 };
        let cubic = resize.apply_filtered(&img, FilterType::CatmullRom);
        let linear = resize.apply_filtered(&img, FilterType::Triangle);
        assert_eq!(linear, resize.apply(&img));
        let row = |im: &GrayImage| (0..32).map(|x| im.get_pixel(x, 16).0[0]).collect::<Vec<u8>>();
        let (c, l) = (row(&cubic), row(&linear));
        assert!(c.iter().any(|&v| v < 50) && c.iter().any(|&v| v > 200), "{c:?}");
        assert!(l.iter().all(|&v| (50..=200).contains(&v)), "{l:?}");
        assert_eq!((c[0], c[31]), (50, 200));
    }

    #[test]
    fn resized_crop_takes_the_given_window() {
        let t = RandomResizedCrop::new(4);
        let window = CropBox {
            top: 2,
            left: 3,
            height: 4,
            width: 4,
        };
        let out = t.resized_crop(&coords(10, 8), window, FilterType::CatmullRom);
        assert_eq!(out.get_pixel(0, 0).0, [3, 2, 7]);
        assert_eq!(out.get_pixel(3, 3).0, [6, 5, 7]);
    }

    #[test]
    fn center_crop_takes_the_torchvision_window() {
        // 10×7 → 4×4: left = round(3) = 3, top = round(1.5) = 2.
        let out = CenterCrop { size: 4 }.apply(&coords(10, 7));
        assert_eq!(out.dimensions(), (4, 4));
        assert_eq!(out.get_pixel(0, 0).0, [3, 2, 7]);
        assert_eq!(out.get_pixel(3, 3).0, [6, 5, 7]);
    }

    #[test]
    fn center_crop_pads_smaller_images_with_zeros() {
        // 3×5 → 6×6: torchvision pads left (6 - 3) // 2 = 1, top (6 - 5) // 2 = 0.
        let out = CenterCrop { size: 6 }.apply(&coords(3, 5));
        assert_eq!(out.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(out.get_pixel(1, 0).0, [0, 0, 7]);
        assert_eq!(out.get_pixel(3, 4).0, [2, 4, 7]);
        assert_eq!(out.get_pixel(4, 4).0, [0, 0, 0]);
        assert_eq!(out.get_pixel(2, 5).0, [0, 0, 0]);
    }

    #[test]
    fn random_resized_crop_boxes_fit_the_ranges() {
        let t = RandomResizedCrop::new(32);
        let mut tries = rng(3);
        for _ in 0..500 {
            let b = t.get_params(60, 40, &mut tries);
            assert!(b.width > 0 && b.height > 0);
            assert!(b.left + b.width <= 60 && b.top + b.height <= 40, "{b:?}");
            let area = (b.width * b.height) as f64 / 2400.0;
            let aspect = b.width as f64 / b.height as f64;
            // Rounding to whole pixels moves both a little off the sampled values.
            assert!((0.07..=1.0).contains(&area), "{b:?}");
            assert!((0.7..=1.45).contains(&aspect), "{b:?}");
        }
    }

    #[test]
    fn random_resized_crop_follows_the_seed() {
        let t = RandomResizedCrop::new(32);
        let boxes = |seed| {
            let mut r = rng(seed);
            (0..8).map(|_| t.get_params(64, 48, &mut r)).collect::<Vec<_>>()
        };
        assert_eq!(boxes(1), boxes(1));
        assert_ne!(boxes(1), boxes(2));
    }

    #[test]
    fn random_resized_crop_falls_back_to_the_centre() {
        // No window of ≥ 99% of the area fits a 1000×10 image within the ratio range.
        let t = RandomResizedCrop {
            scale: (0.99, 1.0),
            ..RandomResizedCrop::new(8)
        };
        // Too wide: height 10, width round(10 · 4/3 = 13.3) = 13, left (1000 - 13) // 2 = 493.
        let wide = CropBox {
            top: 0,
            left: 493,
            height: 10,
            width: 13,
        };
        assert_eq!(t.get_params(1000, 10, &mut rng(5)), wide);
        // Too tall: width 10, height round(10 / (3/4) = 13.3) = 13, top 493.
        let tall = CropBox {
            top: 493,
            left: 0,
            height: 13,
            width: 10,
        };
        assert_eq!(t.get_params(10, 1000, &mut rng(5)), tall);
        // Within the ratio range but the area cannot fit: the whole image.
        let t = RandomResizedCrop { scale: (2.0, 2.0), ..t };
        let whole = CropBox {
            top: 0,
            left: 0,
            height: 30,
            width: 40,
        };
        assert_eq!(t.get_params(40, 30, &mut rng(5)), whole);
    }

    #[test]
    fn random_resized_crop_pixels_are_the_window() {
        // Area a quarter, ratio 1: a 32×32 window of a 64×64 image, output 32 = no resampling.
        let t = RandomResizedCrop {
            size: 32,
            scale: (0.25, 0.25),
            ratio: (1.0, 1.0),
        };
        let img = coords(64, 64);
        let b = t.get_params(64, 64, &mut rng(9));
        assert_eq!((b.width, b.height), (32, 32));
        let out = t.apply(&img, &mut rng(9));
        assert_eq!(out.dimensions(), (32, 32));
        assert_eq!(out.get_pixel(0, 0).0, [b.left as u8, b.top as u8, 7]);
        assert_eq!(out.get_pixel(31, 5).0, [b.left as u8 + 31, b.top as u8 + 5, 7]);
    }

    #[test]
    fn random_resized_crop_of_the_whole_image_resizes_it() {
        // Quadrants red / green / blue / white; the full-image window shrinks 64 → 16.
        let img = RgbImage::from_fn(64, 64, |x, y| match (x < 32, y < 32) {
            (true, true) => Rgb([255, 0, 0]),
            (false, true) => Rgb([0, 255, 0]),
            (true, false) => Rgb([0, 0, 255]),
            (false, false) => Rgb([255, 255, 255]),
        });
        let t = RandomResizedCrop {
            size: 16,
            scale: (1.0, 1.0),
            ratio: (1.0, 1.0),
        };
        let out = t.apply(&img, &mut rng(0));
        assert_eq!(out.get_pixel(2, 2).0, [255, 0, 0]);
        assert_eq!(out.get_pixel(13, 2).0, [0, 255, 0]);
        assert_eq!(out.get_pixel(2, 13).0, [0, 0, 255]);
        assert_eq!(out.get_pixel(13, 13).0, [255, 255, 255]);
    }

    #[test]
    fn horizontal_flip_mirrors_pixels() {
        let img = coords(5, 3);
        let flipped = RandomHorizontalFlip { p: 1.0 }.apply(img.clone(), &mut rng(0));
        assert_eq!(flipped.get_pixel(0, 1).0, [4, 1, 7]);
        assert_eq!(flipped.get_pixel(4, 2).0, [0, 2, 7]);
        assert_eq!(RandomHorizontalFlip { p: 0.0 }.apply(img.clone(), &mut rng(0)), img);
        let flips = (0..200)
            .filter(|&s| RandomHorizontalFlip::default().apply(img.clone(), &mut rng(s)) != img)
            .count();
        assert!((70..=130).contains(&flips), "{flips} of 200 flipped");
    }

    #[test]
    fn to_tensor_normalizes_channels_first() {
        let img = RgbImage::from_fn(2, 1, |x, _| if x == 0 { Rgb([255, 0, 128]) } else { Rgb([0, 0, 0]) });
        let v = to_tensor_normalized(&img, &IMAGENET_MEAN, &IMAGENET_STD);
        assert_eq!(v.len(), 6);
        // (1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (128/255 - 0.406) / 0.225
        let expected = [2.248_908, -2.117_904, -2.035_714, -2.035_714, 0.426_492, -1.804_444];
        for (got, want) in v.iter().zip(expected) {
            assert!((got - want).abs() < 1e-5, "{v:?}");
        }
    }

    #[test]
    fn eval_preset_resizes_and_centre_crops() {
        // 300×200, left half red, right half blue → 384×256 (boundary at x = 192) → crop
        // left 80, top 16: output x maps to resized x + 80.
        let img = RgbImage::from_fn(
            300,
            200,
            |x, _| if x < 150 { Rgb([255, 0, 0]) } else { Rgb([0, 0, 255]) },
        );
        let t = ClassifyTransform::imagenet_eval();
        assert_eq!(t.output_shape(), [3, 224, 224]);
        let v = t.apply(img, &mut rng(0));
        assert_eq!(v.len(), 3 * 224 * 224);
        let at = |c: usize, y: usize, x: usize| v[c * 224 * 224 + y * 224 + x];
        assert_eq!(
            [at(0, 0, 0), at(1, 0, 0), at(2, 0, 0)],
            [norm(255, 0), norm(0, 1), norm(0, 2)]
        );
        assert_eq!([at(0, 100, 223), at(2, 100, 223)], [norm(0, 0), norm(255, 2)]);
        // Resized x = 191 straddles the boundary: mostly red, a little blue.
        assert!(at(0, 50, 111) < norm(255, 0) && at(0, 50, 111) > norm(128, 0));
        assert!(at(2, 50, 111) > norm(0, 2) && at(2, 50, 111) < norm(128, 2));
    }

    #[test]
    fn train_preset_is_seeded() {
        let img = coords(48, 40);
        let t = ClassifyTransform::Train { size: 24 };
        assert_eq!(t.output_shape(), [3, 24, 24]);
        let a = t.apply(img.clone(), &mut rng(1));
        assert_eq!(a.len(), 3 * 24 * 24);
        assert_eq!(a, t.apply(img.clone(), &mut rng(1)));
        assert_ne!(a, t.apply(img, &mut rng(2)));
    }
}
