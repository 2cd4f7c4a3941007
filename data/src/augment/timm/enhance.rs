//! PIL's `ImageEnhance` operations on RGB images: each blends the image with a "degenerate"
//! version of itself, `Image.blend(degenerate, img, factor)`, with PIL's single-precision
//! arithmetic and truncation.

use image::{Rgb, RgbImage};

use crate::transforms::pil_luma;

/// `Image.blend(degenerate, img, factor)`: `degenerate + factor · (img - degenerate)` per
/// channel, computed in `f32` as PIL does and truncated to 0..=255. Factor 0 gives
/// `degenerate`, 1 gives `img`, values outside [0, 1] extrapolate.
///
/// # Panics
///
/// When the images differ in size.
pub fn blend(degenerate: &RgbImage, img: &RgbImage, factor: f64) -> RgbImage {
    assert_eq!(degenerate.dimensions(), img.dimensions(), "blend of images of one size");
    let alpha = factor as f32;
    let data = degenerate
        .as_raw()
        .iter()
        .zip(img.as_raw())
        .map(|(&a, &b)| {
            // A float-to-int `as` saturates: the clipping PIL does when extrapolating.
            (f32::from(a) + alpha * (i32::from(b) - i32::from(a)) as f32) as u8
        })
        .collect();
    RgbImage::from_raw(img.width(), img.height(), data).expect("same size")
}

/// `ImageEnhance.Color(img).enhance(factor)`: blend with the image's grey version (PIL's luma,
/// `convert("L").convert("RGB")`).
pub fn color(img: &RgbImage, factor: f64) -> RgbImage {
    let mut grey = img.clone();
    for px in grey.pixels_mut() {
        *px = Rgb([pil_luma(px.0); 3]);
    }
    blend(&grey, img, factor)
}

/// `ImageEnhance.Contrast(img).enhance(factor)`: blend with a flat grey of the image's mean
/// luma, rounded half up (`int(mean + 0.5)`).
pub fn contrast(img: &RgbImage, factor: f64) -> RgbImage {
    let total: u64 = img.pixels().map(|p| u64::from(pil_luma(p.0))).sum();
    let count = (u64::from(img.width()) * u64::from(img.height())).max(1);
    let mean = (total as f64 / count as f64 + 0.5) as u8;
    blend(
        &RgbImage::from_pixel(img.width(), img.height(), Rgb([mean; 3])),
        img,
        factor,
    )
}

/// `ImageEnhance.Brightness(img).enhance(factor)`: blend with black.
pub fn brightness(img: &RgbImage, factor: f64) -> RgbImage {
    blend(&RgbImage::new(img.width(), img.height()), img, factor)
}

/// `ImageEnhance.Sharpness(img).enhance(factor)`: blend with [`smooth`]'s output.
pub fn sharpness(img: &RgbImage, factor: f64) -> RgbImage {
    blend(&smooth(img), img, factor)
}

/// `img.filter(ImageFilter.SMOOTH)`: the 3×3 kernel `[[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13`
/// in `f32`, rounded half up; the one-pixel border is copied unchanged, and an image under
/// 3×3 is returned as is.
pub fn smooth(img: &RgbImage) -> RgbImage {
    let (w, h) = img.dimensions();
    let mut out = img.clone();
    if w < 3 || h < 3 {
        return out;
    }
    let edge = 1.0f32 / 13.0;
    let centre = 5.0f32 / 13.0;
    let at = |x: u32, y: u32, c: usize| f32::from(img.get_pixel(x, y).0[c]);
    // One kernel row: left · k0 + middle · k1 + right · k2, in PIL's order.
    let row =
        |x: u32, y: u32, c: usize, middle: f32| at(x - 1, y, c) * edge + at(x, y, c) * middle + at(x + 1, y, c) * edge;
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            let px = out.get_pixel_mut(x, y);
            for c in 0..3 {
                // PIL adds 0.5 to the offset (0) for rounding, then the rows below, at and above.
                let mut ss = 0.5f32;
                ss += row(x, y + 1, c, edge);
                ss += row(x, y, c, centre);
                ss += row(x, y - 1, c, edge);
                px.0[c] = ss as u8;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn px(r: u8, g: u8, b: u8) -> RgbImage {
        RgbImage::from_pixel(1, 1, Rgb([r, g, b]))
    }

    #[test]
    fn blend_truncates_and_clips() {
        let a = px(10, 200, 0);
        let b = px(20, 100, 255);
        // 10 + 0.25 · 10 = 12.5 → 12; 200 - 25 = 175; 0.25 · 255 = 63.75 → 63.
        assert_eq!(blend(&a, &b, 0.25).get_pixel(0, 0).0, [12, 175, 63]);
        // Extrapolation: 10 + 1.9 · 10 = 29; 200 - 190 = 10; 1.9 · 255 = 484.5 → 255.
        assert_eq!(blend(&a, &b, 1.9).get_pixel(0, 0).0, [29, 10, 255]);
        // Below zero: 10 - 0.5 · 10 = 5; 200 + 50 = 250; 0 - 127.5 → 0.
        assert_eq!(blend(&a, &b, -0.5).get_pixel(0, 0).0, [5, 250, 0]);
        assert_eq!(blend(&a, &b, 0.0), a);
        assert_eq!(blend(&a, &b, 1.0), b);
    }

    #[test]
    fn enhancements_blend_with_their_degenerate_images() {
        // Luma of (200, 100, 50) = 124 (see `to_pil_luma`).
        let img = px(200, 100, 50);
        // Colour 0.5: 124 + 0.5 · (v - 124) → 162, 112, 87.
        assert_eq!(color(&img, 0.5).get_pixel(0, 0).0, [162, 112, 87]);
        assert_eq!(color(&img, 0.0).get_pixel(0, 0).0, [124; 3]);
        // Brightness 0.5: half, truncated: 100, 50, 25; 1.5: 255 (300), 150, 75.
        assert_eq!(brightness(&img, 0.5).get_pixel(0, 0).0, [100, 50, 25]);
        assert_eq!(brightness(&img, 1.5).get_pixel(0, 0).0, [255, 150, 75]);
        // Contrast: lumas 0 and 255 average 127.5 → int(128.0) = 128; factor 0.5:
        // 128 + 0.5 · (0 - 128) = 64, 128 + 0.5 · 127 = 191.5 → 191.
        let two = RgbImage::from_fn(2, 1, |x, _| Rgb([if x == 0 { 0 } else { 255 }; 3]));
        let out = contrast(&two, 0.5);
        assert_eq!(out.get_pixel(0, 0).0, [64; 3]);
        assert_eq!(out.get_pixel(1, 0).0, [191; 3]);
        assert_eq!(contrast(&two, 0.0).get_pixel(1, 0).0, [128; 3]);
    }

    #[test]
    fn smooth_weights_the_centre_five_of_thirteen() {
        // A single bright pixel in the middle of a 3×3 black image: 255 · 5/13 = 98.08 → 98;
        // the border stays as it was.
        let mut img = RgbImage::new(3, 3);
        img.put_pixel(1, 1, Rgb([255, 13, 0]));
        let out = smooth(&img);
        assert_eq!(out.get_pixel(1, 1).0, [98, 5, 0]);
        assert_eq!(out.get_pixel(0, 0).0, [0; 3]);
        // A bright corner of 4×4: (1, 1) sees it with weight 1/13: 19.6 + 0.5 → 20.
        let mut img = RgbImage::new(4, 4);
        img.put_pixel(0, 0, Rgb([255; 3]));
        let out = smooth(&img);
        assert_eq!(out.get_pixel(1, 1).0, [20; 3]);
        assert_eq!(out.get_pixel(0, 0).0, [255; 3]);
        assert_eq!(out.get_pixel(2, 2).0, [0; 3]);
        // Sharpness 2: 2 · img - smooth, clipped: the centre of the first image,
        // 98 + 2 · (255 - 98) = 412 → 255, its neighbours 0 + 2 · (0 - 0) = 0.
        let mut img = RgbImage::new(3, 3);
        img.put_pixel(1, 1, Rgb([255, 13, 0]));
        let out = sharpness(&img, 2.0);
        assert_eq!(out.get_pixel(1, 1).0, [255, 21, 0]);
        // Too small to filter: unchanged.
        let tiny = RgbImage::from_pixel(2, 5, Rgb([9, 8, 7]));
        assert_eq!(smooth(&tiny), tiny);
    }
}
