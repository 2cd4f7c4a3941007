//! A whole YOLOX training sample: `MosaicDetection.__getitem__` and `TrainTransform`.

use image::RgbImage;
use rand::rngs::StdRng;
use rand::Rng;

use super::affine::random_affine;
use super::flip::hflip;
use super::hsv::{augment_hsv, HsvGains};
use super::mixup::mixup;
use super::mosaic::{mosaic, random_mosaic_center};
use super::YoloxAugConfig;
use crate::coco::CocoBox;
use crate::letterbox::{letterbox, Letterboxed};

/// The images a training sample is made from: the sample's own and its mosaic and MixUp
/// partners.
pub trait DetectionSource {
    /// Why an image cannot be loaded.
    type Error;

    /// Number of images; indices run `0..num_images()`.
    fn num_images(&self) -> usize;

    /// The indices of the images with at least one box, among which MixUp draws its partner
    /// (YOLOX redraws until it finds one; drawing from this list is the same distribution).
    fn annotated(&self) -> &[usize];

    /// Image `index`, decoded, and its target boxes in its pixels.
    fn load_image(&self, index: usize) -> Result<(RgbImage, Vec<CocoBox>), Self::Error>;
}

/// A sample at the network's input size.
#[derive(Debug, Clone, PartialEq)]
pub struct InputSample {
    /// The `S × S` RGB input.
    pub image: RgbImage,
    /// Its target boxes, corner form, in input pixels.
    pub boxes: Vec<CocoBox>,
    /// Scale from the source image's pixels to input pixels (the letterbox ratio); `None` for a
    /// mosaic, which mixes several images.
    pub ratio: Option<f32>,
}

/// YOLOX's `TrainTransform`: [`augment_hsv`] (YOLOX's gains) with probability `hsv_prob`,
/// [`hflip`] with probability `flip_prob`, [`letterbox`] to `input_size`, then boxes of width
/// or height ≤ 1 input pixel are dropped and at most `max_labels` kept. An image without boxes
/// is only letterboxed, as in YOLOX.
pub fn train_transform(
    mut img: RgbImage,
    mut boxes: Vec<CocoBox>,
    config: &YoloxAugConfig,
    rng: &mut StdRng,
) -> Letterboxed {
    let size = config.input_size;
    if !boxes.is_empty() {
        if rng.random::<f64>() < config.hsv_prob {
            augment_hsv(&mut img, HsvGains::default(), rng);
        }
        if rng.random::<f64>() < config.flip_prob {
            hflip(&mut img, &mut boxes);
        }
    }
    let mut out = letterbox(&img, &boxes, size, size);
    out.boxes.retain(|b| {
        let [x1, y1, x2, y2] = b.xyxy;
        x2 - x1 > 1.0 && y2 - y1 > 1.0
    });
    out.boxes.truncate(config.max_labels);
    out
}

/// One YOLOX training sample of image `index` (see the [module](super) docs): with probability
/// `mosaic_prob` a mosaic with three partners drawn uniformly from `source`, the affine warp
/// and maybe MixUp; then [`train_transform`]. Every random choice, the partners included, comes
/// from `rng`.
pub fn train_sample<S: DetectionSource + ?Sized>(
    source: &S,
    index: usize,
    config: &YoloxAugConfig,
    rng: &mut StdRng,
) -> Result<InputSample, S::Error> {
    let (img, boxes) = source.load_image(index)?;
    if !(config.mosaic && rng.random::<f64>() < config.mosaic_prob) {
        let out = train_transform(img, boxes, config, rng);
        return Ok(InputSample {
            image: out.image,
            boxes: out.boxes,
            ratio: Some(out.ratio),
        });
    }
    let size = config.input_size;
    let center = random_mosaic_center(size, rng);
    let n = source.num_images();
    let mut parts = vec![(img, boxes)];
    for _ in 0..3 {
        parts.push(source.load_image(rng.random_range(0..n))?);
    }
    let quad: [(&RgbImage, &[CocoBox]); 4] = std::array::from_fn(|i| (&parts[i].0, parts[i].1.as_slice()));
    let (canvas, boxes) = mosaic(quad, size, center);
    let (mut img, mut boxes) = random_affine(&canvas, &boxes, config, rng);
    let annotated = source.annotated();
    if config.mixup && !boxes.is_empty() && !annotated.is_empty() && rng.random::<f64>() < config.mixup_prob {
        let (partner, partner_boxes) = source.load_image(annotated[rng.random_range(0..annotated.len())])?;
        (img, boxes) = mixup(img, boxes, &partner, &partner_boxes, config.mixup_scale, rng);
    }
    let out = train_transform(img, boxes, config, rng);
    Ok(InputSample {
        image: out.image,
        boxes: out.boxes,
        ratio: None,
    })
}
