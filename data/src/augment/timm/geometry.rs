//! PIL's affine resampling (`Image.transform(size, AFFINE, ...)`, `Image.rotate`) on RGB
//! images, as RandAugment's rotate, shear and translate operations use it.
//!
//! PIL's semantics differ from OpenCV's `warpAffine` (the YOLOX [`warp_affine`]), so that
//! warp is not reused: the matrix maps *output* to *input* coordinates and is applied at pixel
//! centres (`x + 0.5`); an output pixel whose source point falls outside the input gets the
//! fill colour, while one inside samples neighbours clamped to the image edge; bilinear and
//! bicubic results are truncated, not rounded; and PIL's bicubic here is the cubic convolution
//! with a = -1 (its `resize` uses a = -0.5).
//!
//! [`warp_affine`]: crate::augment::warp_affine

use image::imageops;
use image::{Rgb, RgbImage};

use super::Resample;
use crate::augment::Affine;

/// `img.transform(img.size, Image.AFFINE, m, resample, fillcolor=fill)`: output pixel `(x, y)`
/// takes the input sampled at `m(x + 0.5, y + 0.5)`, or `fill` where that point lies outside
/// the input.
pub fn pil_affine(img: &RgbImage, m: &Affine, resample: Resample, fill: [u8; 3]) -> RgbImage {
    let (w, h) = img.dimensions();
    let mut out = RgbImage::from_pixel(w, h, Rgb(fill));
    for (x, y, px) in out.enumerate_pixels_mut() {
        let (sx, sy) = m.apply(f64::from(x) + 0.5, f64::from(y) + 0.5);
        if !(sx >= 0.0 && sx < f64::from(w) && sy >= 0.0 && sy < f64::from(h)) {
            continue;
        }
        px.0 = match resample {
            Resample::Bilinear => bilinear(img, sx - 0.5, sy - 0.5),
            Resample::Bicubic => bicubic(img, sx - 0.5, sy - 0.5),
        };
    }
    out
}

/// Channel `c` of the pixel at column `x` (clamped to the image) of row `y`.
fn texel(img: &RgbImage, x: i64, y: u32, c: usize) -> f64 {
    let x = x.clamp(0, i64::from(img.width()) - 1) as u32;
    f64::from(img.get_pixel(x, y).0[c])
}

/// The `N` rows PIL's filters read starting at row `y0`: the first is clamped into the
/// image, each later one that falls outside repeats the one before.
fn rows<const N: usize>(img: &RgbImage, y0: i64) -> [u32; N] {
    let h = i64::from(img.height());
    let mut rows = [y0.clamp(0, h - 1) as u32; N];
    for i in 1..N {
        let y = y0 + i as i64;
        rows[i] = if (0..h).contains(&y) { y as u32 } else { rows[i - 1] };
    }
    rows
}

/// PIL's `bilinear_filter32RGB` at `(x, y)` (pixel indices), truncated.
fn bilinear(img: &RgbImage, x: f64, y: f64) -> [u8; 3] {
    let (fx, fy) = (x.floor(), y.floor());
    let (dx, dy) = (x - fx, y - fy);
    let (x0, y0) = (fx as i64, fy as i64);
    let [r0, r1] = rows::<2>(img, y0);
    std::array::from_fn(|c| {
        let lerp = |row| {
            let (a, b) = (texel(img, x0, row, c), texel(img, x0 + 1, row, c));
            a + (b - a) * dx
        };
        let (v1, v2) = (lerp(r0), lerp(r1));
        (v1 + (v2 - v1) * dy) as u8
    })
}

/// PIL's cubic through four samples at offset `d` from the second (a = -1).
fn cubic(v1: f64, v2: f64, v3: f64, v4: f64, d: f64) -> f64 {
    let p1 = v2;
    let p2 = -v1 + v3;
    let p3 = 2.0 * (v1 - v2) + v3 - v4;
    let p4 = -v1 + v2 - v3 + v4;
    p1 + d * (p2 + d * (p3 + d * p4))
}

/// PIL's `bicubic_filter32RGB` at `(x, y)` (pixel indices), clipped and truncated.
fn bicubic(img: &RgbImage, x: f64, y: f64) -> [u8; 3] {
    let (fx, fy) = (x.floor(), y.floor());
    let (dx, dy) = (x - fx, y - fy);
    let (x0, y0) = (fx as i64 - 1, fy as i64 - 1);
    let r = rows::<4>(img, y0);
    std::array::from_fn(|c| {
        let across = |row| {
            let t = |i| texel(img, x0 + i, row, c);
            cubic(t(0), t(1), t(2), t(3), dx)
        };
        let v = cubic(across(r[0]), across(r[1]), across(r[2]), across(r[3]), dy);
        v.clamp(0.0, 255.0) as u8
    })
}

/// Python's `round(x, 15)` (closely: through a scaled integer rounding, which can differ from
/// Python's decimal rounding only within 1e-16 of a tie).
fn round15(x: f64) -> f64 {
    (x * 1e15).round() / 1e15
}

/// `img.rotate(degrees, resample, fillcolor=fill)`: counter-clockwise on screen about the image
/// centre `(w / 2, h / 2)`, same size. As PIL, multiples of 180° (and of 90° on a square image)
/// are exact transposes.
pub fn rotate(img: &RgbImage, degrees: f64, resample: Resample, fill: [u8; 3]) -> RgbImage {
    let angle = degrees.rem_euclid(360.0);
    let (w, h) = img.dimensions();
    if angle == 0.0 {
        return img.clone();
    }
    if angle == 180.0 {
        return imageops::rotate180(img);
    }
    if w == h && angle == 90.0 {
        return imageops::rotate270(img); // 90° counter-clockwise = 270° clockwise
    }
    if w == h && angle == 270.0 {
        return imageops::rotate90(img);
    }
    let (cx, cy) = (f64::from(w) / 2.0, f64::from(h) / 2.0);
    let theta = -angle.to_radians();
    let (a, b) = (round15(theta.cos()), round15(theta.sin()));
    let (d, e) = (round15(-theta.sin()), round15(theta.cos()));
    // Output → input: rotate about the centre.
    let c = a * -cx + b * -cy + cx;
    let f = d * -cx + e * -cy + cy;
    pil_affine(img, &Affine([[a, b, c], [d, e, f]]), resample, fill)
}

/// timm's `shear_x`: the affine map `(1, factor, 0, 0, 1, 0)`, `x_in = x + factor · y`.
pub fn shear_x(img: &RgbImage, factor: f64, resample: Resample, fill: [u8; 3]) -> RgbImage {
    pil_affine(img, &Affine([[1.0, factor, 0.0], [0.0, 1.0, 0.0]]), resample, fill)
}

/// timm's `shear_y`: the affine map `(1, 0, 0, factor, 1, 0)`, `y_in = factor · x + y`.
pub fn shear_y(img: &RgbImage, factor: f64, resample: Resample, fill: [u8; 3]) -> RgbImage {
    pil_affine(img, &Affine([[1.0, 0.0, 0.0], [factor, 1.0, 0.0]]), resample, fill)
}

/// timm's `translate_x_rel`: `x_in = x + pct · width` (a positive `pct` moves the content left).
pub fn translate_x_rel(img: &RgbImage, pct: f64, resample: Resample, fill: [u8; 3]) -> RgbImage {
    let pixels = pct * f64::from(img.width());
    pil_affine(img, &Affine([[1.0, 0.0, pixels], [0.0, 1.0, 0.0]]), resample, fill)
}

/// timm's `translate_y_rel`: `y_in = y + pct · height` (a positive `pct` moves the content up).
pub fn translate_y_rel(img: &RgbImage, pct: f64, resample: Resample, fill: [u8; 3]) -> RgbImage {
    let pixels = pct * f64::from(img.height());
    pil_affine(img, &Affine([[1.0, 0.0, 0.0], [0.0, 1.0, pixels]]), resample, fill)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILL: [u8; 3] = [124, 116, 104];

    /// Each pixel encodes its position: R = 10·x, G = 10·y, B = 7.
    fn coords(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| Rgb([(10 * x) as u8, (10 * y) as u8, 7]))
    }

    #[test]
    fn whole_pixel_translations_move_pixels_and_fill_the_rest() {
        let img = coords(10, 5);
        for resample in [Resample::Bilinear, Resample::Bicubic] {
            // pct 0.2 of 10 = 2 pixels: output x samples x + 2, so content moves left by 2.
            let out = translate_x_rel(&img, 0.2, resample, FILL);
            assert_eq!(out.get_pixel(0, 3).0, [20, 30, 7]);
            assert_eq!(out.get_pixel(7, 1).0, [90, 10, 7]);
            assert_eq!(out.get_pixel(8, 1).0, FILL);
            assert_eq!(out.get_pixel(9, 4).0, FILL);
            // -0.4 of 5 = -2 rows: content moves down by 2.
            let out = translate_y_rel(&img, -0.4, resample, FILL);
            assert_eq!(out.get_pixel(3, 1).0, FILL);
            assert_eq!(out.get_pixel(3, 2).0, [30, 0, 7]);
            assert_eq!(out.get_pixel(3, 4).0, [30, 20, 7]);
        }
    }

    #[test]
    fn shear_maps_by_row_and_column() {
        let img = coords(8, 8);
        // x_in = x + 0.25 · y at centres: output (2, 3) samples x = 2.5 + 0.25 · 3.5 = 3.375,
        // pixel index 2.875 (R 28.75 → 28); output (2, 0) samples 2.625, index 2.125 → 21.
        let out = shear_x(&img, 0.25, Resample::Bilinear, FILL);
        assert_eq!(out.get_pixel(2, 3).0, [28, 30, 7]);
        assert_eq!(out.get_pixel(2, 0).0, [21, 0, 7]);
        // Bottom-right: x_in = 7.5 + 0.25 · 7.5 = 9.375 ≥ 8: fill.
        assert_eq!(out.get_pixel(7, 7).0, FILL);
        // shear_y by -1 at column 4 (centre 4.5): y_in = y + 0.5 - 4.5; output (4, 6) samples
        // y = 2, pixel index 1.5, halfway between rows 1 and 2 (the cubic keeps a ramp linear).
        let out = shear_y(&img, -1.0, Resample::Bicubic, FILL);
        assert_eq!(out.get_pixel(4, 6).0, [40, 15, 7]);
        assert_eq!(out.get_pixel(4, 3).0, FILL);
    }

    #[test]
    fn rotation_turns_about_the_centre() {
        // 90° counter-clockwise on a 7×5 image (not square: the general path). Output (x, y)
        // samples input (cx - (y + 0.5 - cy), cy + (x + 0.5 - cx)) with (cx, cy) = (3.5, 2.5):
        // output (3, 2) ← centre (3, 2); output (4, 2) ← input (3.5, 3.5) → pixel (3, 3);
        // output (3, 0) ← input (5.5, 2.5) → pixel (5, 2).
        let img = coords(7, 5);
        for resample in [Resample::Bilinear, Resample::Bicubic] {
            let out = rotate(&img, 90.0, resample, FILL);
            assert_eq!(out.get_pixel(3, 2).0, [30, 20, 7]);
            assert_eq!(out.get_pixel(4, 2).0, [30, 30, 7]);
            assert_eq!(out.get_pixel(3, 0).0, [50, 20, 7]);
            // Output (0, 0) ← input (5.5, -0.5): outside.
            assert_eq!(out.get_pixel(0, 0).0, FILL);
        }
        assert_eq!(rotate(&img, 0.0, Resample::Bicubic, FILL), img);
        assert_eq!(rotate(&img, -360.0, Resample::Bicubic, FILL), img);
        assert_eq!(
            rotate(&img, 180.0, Resample::Bicubic, FILL).get_pixel(0, 0).0,
            [60, 40, 7]
        );
        // A square image turns by transposition: 90° counter-clockwise puts the top-right
        // pixel at the top-left.
        let sq = coords(4, 4);
        assert_eq!(
            rotate(&sq, 90.0, Resample::Bilinear, FILL).get_pixel(0, 0).0,
            [30, 0, 7]
        );
        assert_eq!(
            rotate(&sq, -90.0, Resample::Bilinear, FILL).get_pixel(0, 0).0,
            [0, 30, 7]
        );
    }

    #[test]
    fn bicubic_is_pil_a_minus_one_cubic() {
        // Halfway between samples 0, 0, 100, 100 (a = -1): p1 = 0, p2 = 100, p3 = p4 = 0 → 50.
        assert_eq!(cubic(0.0, 0.0, 100.0, 100.0, 0.5), 50.0);
        // a = -1 overshoots more than Catmull-Rom: 0, 0, 0, 100 at d = 0.5 → -12.5 (CR: -6.25).
        assert_eq!(cubic(0.0, 0.0, 0.0, 100.0, 0.5), -12.5);
        assert_eq!(cubic(10.0, 20.0, 30.0, 40.0, 0.0), 20.0);
    }
}
