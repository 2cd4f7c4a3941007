//! PIL's per-pixel `ImageOps` operations on RGB images, as RandAugment uses them: each channel
//! goes through a 256-entry lookup table (entries clipped to 0..=255 as `Image.point` does).

use image::RgbImage;

/// A lookup table for one channel.
type Lut = [u8; 256];

/// A table from a function of the level, clipped to 0..=255.
fn lut_from(f: impl Fn(u32) -> i64) -> Lut {
    std::array::from_fn(|i| f(i as u32).clamp(0, 255) as u8)
}

/// Maps every channel through its own table.
fn map_channels(mut img: RgbImage, luts: &[Lut; 3]) -> RgbImage {
    for px in img.pixels_mut() {
        for (v, lut) in px.0.iter_mut().zip(luts) {
            *v = lut[*v as usize];
        }
    }
    img
}

/// Maps every channel through one table.
fn map_all(img: RgbImage, lut: Lut) -> RgbImage {
    map_channels(img, &[lut; 3])
}

/// Per-channel histograms (PIL's `histogram()` of an RGB image, 3 × 256 counts).
fn histograms(img: &RgbImage) -> [[u64; 256]; 3] {
    let mut h = [[0u64; 256]; 3];
    for px in img.pixels() {
        for (c, &v) in px.0.iter().enumerate() {
            h[c][v as usize] += 1;
        }
    }
    h
}

/// The identity table.
fn identity() -> Lut {
    lut_from(i64::from)
}

/// `ImageOps.autocontrast(img)` (no cutoff): per channel, the lowest level present maps to 0
/// and the highest to 255, `int(v · 255 / (hi - lo) - lo · 255 / (hi - lo))` in between; a
/// channel with a single level is left as is.
pub fn autocontrast(img: RgbImage) -> RgbImage {
    let luts = histograms(&img).map(|h| {
        let lo = h.iter().position(|&n| n > 0);
        let hi = h.iter().rposition(|&n| n > 0);
        match (lo, hi) {
            (Some(lo), Some(hi)) if hi > lo => {
                let scale = 255.0 / (hi - lo) as f64;
                let offset = -(lo as f64) * scale;
                lut_from(|v| (v as f64 * scale + offset) as i64)
            }
            _ => identity(),
        }
    });
    map_channels(img, &luts)
}

/// `ImageOps.equalize(img)`: per channel, with the counts `h` of the levels present and `step =
/// (Σh - h_last) // 255` (`h_last` the count of the highest level present), level `i` maps to
/// `(step // 2 + Σ_{j<i} h[j]) // step`; a channel with one level present or `step` 0 is left
/// as is.
pub fn equalize(img: RgbImage) -> RgbImage {
    let luts = histograms(&img).map(|h| {
        let present: Vec<u64> = h.iter().copied().filter(|&n| n > 0).collect();
        let Some(&last) = present.last() else { return identity() };
        let step = (present.iter().sum::<u64>() - last) / 255;
        if present.len() <= 1 || step == 0 {
            return identity();
        }
        let mut n = step / 2;
        std::array::from_fn(|i| {
            let v = (n / step).min(255) as u8;
            n += h[i];
            v
        })
    });
    map_channels(img, &luts)
}

/// `ImageOps.invert(img)`: `255 - v`.
pub fn invert(img: RgbImage) -> RgbImage {
    map_all(img, lut_from(|v| 255 - i64::from(v)))
}

/// `ImageOps.posterize(img, bits)`: keeps the `bits` most significant bits of each level.
/// 8 or more bits leave the image as is (timm's `posterize` returns it unchanged); 0 bits give
/// black, as Pillow up to 12.3 does (Pillow 13 refuses 0 bits, which timm 0.4.12's
/// `PosterizeIncreasing` asks for at magnitude 10).
pub fn posterize(img: RgbImage, bits: u32) -> RgbImage {
    if bits >= 8 {
        return img;
    }
    let mask = !((1u32 << (8 - bits)) - 1);
    map_all(img, lut_from(|v| i64::from(v & mask)))
}

/// `ImageOps.solarize(img, threshold)`: levels at or above `threshold` become `255 - v`.
pub fn solarize(img: RgbImage, threshold: u32) -> RgbImage {
    map_all(
        img,
        lut_from(|v| {
            if v < threshold {
                i64::from(v)
            } else {
                255 - i64::from(v)
            }
        }),
    )
}

/// timm's `solarize_add(img, add, threshold)`: levels below `threshold` get `add` added
/// (capped at 255), the others are kept.
pub fn solarize_add(img: RgbImage, add: u32, threshold: u32) -> RgbImage {
    map_all(
        img,
        lut_from(|v| {
            if v < threshold {
                i64::from(v + add).min(255)
            } else {
                i64::from(v)
            }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    /// A one-row image of the given pixels.
    fn row(pixels: &[[u8; 3]]) -> RgbImage {
        RgbImage::from_fn(pixels.len() as u32, 1, |x, _| Rgb(pixels[x as usize]))
    }

    fn values(img: &RgbImage) -> Vec<[u8; 3]> {
        img.pixels().map(|p| p.0).collect()
    }

    #[test]
    fn posterize_keeps_the_top_bits() {
        let img = row(&[[0, 127, 255], [200, 31, 96]]);
        // 2 bits: mask 0b1100_0000.
        assert_eq!(values(&posterize(img.clone(), 2)), [[0, 64, 192], [192, 0, 64]]);
        // 4 bits: mask 0xF0.
        assert_eq!(values(&posterize(img.clone(), 4)), [[0, 112, 240], [192, 16, 96]]);
        assert_eq!(values(&posterize(img.clone(), 0)), [[0; 3], [0; 3]]);
        assert_eq!(posterize(img.clone(), 8), img);
    }

    #[test]
    fn solarize_inverts_from_the_threshold() {
        let img = row(&[[0, 127, 128], [200, 255, 129]]);
        assert_eq!(values(&solarize(img.clone(), 128)), [[0, 127, 127], [55, 0, 126]]);
        assert_eq!(solarize(img.clone(), 256), img, "256: nothing is at or above");
        assert_eq!(values(&solarize(img.clone(), 0)), [[255, 128, 127], [55, 0, 126]]);
        assert_eq!(values(&solarize_add(img, 100, 128)), [[100, 227, 128], [200, 255, 129]]);
        assert_eq!(
            values(&solarize_add(row(&[[127, 160, 30]]), 200, 128)),
            [[255, 160, 230]]
        );
    }

    #[test]
    fn invert_negates() {
        assert_eq!(values(&invert(row(&[[0, 1, 255]]))), [[255, 254, 0]]);
    }

    #[test]
    fn autocontrast_stretches_each_channel() {
        // R spans 50..=150: scale 2.55, v → int(2.55 v - 127.5); G is constant; B spans 0..=255.
        let img = row(&[[50, 9, 0], [100, 9, 128], [150, 9, 255]]);
        let out = values(&autocontrast(img));
        assert_eq!(out, [[0, 9, 0], [127, 9, 128], [255, 9, 255]]);
        // int(2.55 · 70 - 127.5) = 51 (PIL gives the same).
        let out = values(&autocontrast(row(&[[50, 0, 0], [70, 0, 0], [150, 0, 0]])));
        assert_eq!(out, [[0, 0, 0], [51, 0, 0], [255, 0, 0]]);
    }

    #[test]
    fn equalize_spreads_a_known_histogram() {
        // Channel R: levels 10 ×3, 20 ×1, 30 ×1 on 5 pixels → step = (5 - 1) // 255 = 0: as is.
        let img = row(&[[10, 0, 0], [10, 0, 0], [10, 0, 0], [20, 0, 0], [30, 0, 0]]);
        assert_eq!(equalize(img.clone()), img);
        // 510 pixels: 255 at level 10, 170 at 20, 85 at 30. step = (510 - 85) // 255 = 1,
        // n starts at 0: 10 → 0, 20 → 255, 30 → 255 + 170 = 425, clipped to 255.
        let mut big = RgbImage::new(510, 1);
        for (x, _, px) in big.enumerate_pixels_mut() {
            let v = if x < 255 {
                10
            } else if x < 425 {
                20
            } else {
                30
            };
            *px = Rgb([v, v, 7]);
        }
        let out = equalize(big);
        assert_eq!(out.get_pixel(0, 0).0, [0, 0, 7]);
        assert_eq!(out.get_pixel(300, 0).0, [255, 255, 7]);
        assert_eq!(out.get_pixel(500, 0).0, [255, 255, 7]);
        // 1020 pixels, 510 at 0, 255 at 100, 255 at 200: step = (1020 - 255) // 255 = 3,
        // n = 1: 0 → 0, 100 → (1 + 510) // 3 = 170, 200 → (1 + 765) // 3 = 255.
        let mut img = RgbImage::new(1020, 1);
        for (x, _, px) in img.enumerate_pixels_mut() {
            let v = if x < 510 {
                0
            } else if x < 765 {
                100
            } else {
                200
            };
            *px = Rgb([v; 3]);
        }
        let out = equalize(img);
        assert_eq!(out.get_pixel(0, 0).0, [0; 3]);
        assert_eq!(out.get_pixel(600, 0).0, [170; 3]);
        assert_eq!(out.get_pixel(900, 0).0, [255; 3]);
    }
}
