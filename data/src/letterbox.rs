//! YOLOX's letterbox (`preproc`): resize keeping the aspect ratio so the image fits the input
//! size, paste it at the top-left corner of a canvas filled with 114, and scale the boxes by
//! the same ratio, so every box stays on its pixels. Validation uses it alone; training
//! augmentation ends with it.

use image::imageops::{self, FilterType};
use image::{Rgb, RgbImage};

use crate::coco::CocoBox;

/// The grey YOLOX pads with.
pub const PAD_VALUE: u8 = 114;

/// A letterboxed image and where the original went.
#[derive(Debug, Clone)]
pub struct Letterboxed {
    /// The `width × height` canvas.
    pub image: RgbImage,
    /// Scale from original pixels to canvas pixels.
    pub ratio: f32,
    /// The boxes, scaled by `ratio`.
    pub boxes: Vec<CocoBox>,
}

/// Resizes `img` to fit `width × height` keeping its aspect, as YOLOX's `preproc` and mosaic
/// do: ratio `min(height / h, width / w)`, bilinear resize to `(w × ratio, h × ratio)` truncated
/// (at least one pixel, at most the box). Returns the resized image and the ratio; an image
/// that already has that size is returned as it is.
pub fn fit(img: &RgbImage, width: u32, height: u32) -> (RgbImage, f32) {
    let (w, h) = img.dimensions();
    let ratio = (height as f32 / h as f32).min(width as f32 / w as f32);
    let rw = ((w as f32 * ratio) as u32).clamp(1, width);
    let rh = ((h as f32 * ratio) as u32).clamp(1, height);
    let resized = if (rw, rh) == (w, h) {
        img.clone()
    } else {
        imageops::resize(img, rw, rh, FilterType::Triangle)
    };
    (resized, ratio)
}

/// Fits `img` into a `width × height` canvas (YOLOX's `preproc`): [`fit`], then padding 114 to
/// the right and bottom; `boxes` scale with the pixels.
pub fn letterbox(img: &RgbImage, boxes: &[CocoBox], width: u32, height: u32) -> Letterboxed {
    let (resized, ratio) = fit(img, width, height);
    let mut image = RgbImage::from_pixel(width, height, Rgb([PAD_VALUE; 3]));
    imageops::replace(&mut image, &resized, 0, 0);
    let boxes = boxes
        .iter()
        .map(|b| CocoBox {
            class: b.class,
            xyxy: b.xyxy.map(|v| v * ratio),
        })
        .collect();
    Letterboxed { image, ratio, boxes }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Mean of the red channel over `[x1, x2) × [y1, y2)`.
    fn mean(img: &RgbImage, [x1, y1, x2, y2]: [u32; 4]) -> f32 {
        let mut sum = 0u32;
        for y in y1..y2 {
            for x in x1..x2 {
                sum += img.get_pixel(x, y).0[0] as u32;
            }
        }
        sum as f32 / ((x2 - x1) * (y2 - y1)) as f32
    }

    #[test]
    fn a_box_stays_on_its_pixels() {
        // A white 40×40 square at (40, 20) on a black 200×100 image.
        let img = RgbImage::from_fn(200, 100, |x, y| {
            let inside = (40..80).contains(&x) && (20..60).contains(&y);
            Rgb([if inside { 255 } else { 0 }; 3])
        });
        let square = CocoBox {
            class: 3,
            xyxy: [40.0, 20.0, 80.0, 60.0],
        };
        let out = letterbox(&img, &[square], 64, 64);
        // min(64/100, 64/200) = 0.32: the image becomes 64×32 at the top.
        assert_eq!(out.ratio, 0.32);
        let [x1, y1, x2, y2] = out.boxes[0].xyxy;
        assert_eq!(out.boxes[0].class, 3);
        for (got, want) in [x1, y1, x2, y2].iter().zip([12.8, 6.4, 25.6, 19.2]) {
            assert!((got - want).abs() < 1e-4, "{:?}", out.boxes[0].xyxy);
        }
        // Inside the scaled box (less a pixel of blur) it is white; beside it, black.
        let inner = [x1.ceil() as u32 + 1, y1.ceil() as u32 + 1, x2 as u32 - 1, y2 as u32 - 1];
        assert!(mean(&out.image, inner) > 240.0, "{}", mean(&out.image, inner));
        assert!(mean(&out.image, [40, 0, 64, 32]) < 5.0);
        // Below the 32 resized rows: the padding grey.
        assert_eq!(mean(&out.image, [0, 32, 64, 64]), PAD_VALUE as f32);
        assert_eq!(out.image.dimensions(), (64, 64));
    }

    #[test]
    fn a_tall_image_is_padded_on_the_right() {
        let img = RgbImage::from_pixel(30, 60, Rgb([9, 9, 9]));
        let out = letterbox(&img, &[], 40, 40);
        assert_eq!(out.ratio, 40.0 / 60.0);
        assert_eq!(mean(&out.image, [0, 0, 20, 40]), 9.0);
        assert_eq!(mean(&out.image, [20, 0, 40, 40]), PAD_VALUE as f32);
    }
}
