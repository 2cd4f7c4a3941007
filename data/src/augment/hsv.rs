//! YOLOX's colour jitter (`augment_hsv`, 0.3): random additive offsets to hue, saturation and
//! value in OpenCV's 8-bit HSV (H in `[0, 180)`, S and V in `[0, 255]`). It changes colours,
//! never positions: each output pixel depends only on the same input pixel.

use image::RgbImage;
use rand::rngs::StdRng;
use rand::Rng;

use crate::transforms::uniform;

/// The largest offsets [`augment_hsv`] may draw, in OpenCV's 8-bit HSV units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HsvGains {
    /// Hue (one unit = 2°).
    pub hue: f64,
    /// Saturation.
    pub saturation: f64,
    /// Value.
    pub value: f64,
}

impl Default for HsvGains {
    /// YOLOX's `augment_hsv(img, hgain=5, sgain=30, vgain=30)`.
    fn default() -> Self {
        Self {
            hue: 5.0,
            saturation: 30.0,
            value: 30.0,
        }
    }
}

/// YOLOX's draw: offsets `U(-1, 1) · gain` for H, S, V, each then kept or zeroed with
/// probability ½, truncated toward zero to integers.
pub fn random_hsv_offsets(gains: HsvGains, rng: &mut StdRng) -> [i16; 3] {
    let scaled = [gains.hue, gains.saturation, gains.value].map(|g| uniform(rng, -1.0, 1.0) * g);
    let keep: [bool; 3] = std::array::from_fn(|_| rng.random_bool(0.5));
    std::array::from_fn(|i| if keep[i] { scaled[i] as i16 } else { 0 })
}

/// Adds `[dh, ds, dv]` to every pixel in OpenCV's 8-bit HSV: hue modulo 180, saturation and
/// value clamped to `[0, 255]`. All-zero offsets leave the image untouched (OpenCV's round
/// trip through HSV would shift some colours by its rounding).
pub fn shift_hsv(img: &mut RgbImage, [dh, ds, dv]: [i16; 3]) {
    if [dh, ds, dv] == [0; 3] {
        return;
    }
    let [dh, ds, dv] = [dh, ds, dv].map(i32::from);
    for px in img.pixels_mut() {
        let [h, s, v] = rgb_to_hsv(px.0);
        px.0 = hsv_to_rgb([(h + dh).rem_euclid(180), (s + ds).clamp(0, 255), (v + dv).clamp(0, 255)]);
    }
}

/// YOLOX's `augment_hsv`: [`shift_hsv`] by [`random_hsv_offsets`].
pub fn augment_hsv(img: &mut RgbImage, gains: HsvGains, rng: &mut StdRng) {
    shift_hsv(img, random_hsv_offsets(gains, rng));
}

/// OpenCV's `COLOR_RGB2HSV` for 8-bit pixels: V = max, S = 255 · (max − min) / max,
/// H = hue in degrees / 2, each rounded.
fn rgb_to_hsv([r, g, b]: [u8; 3]) -> [i32; 3] {
    let (r, g, b) = (i32::from(r), i32::from(g), i32::from(b));
    let v = r.max(g).max(b);
    let diff = v - r.min(g).min(b);
    if diff == 0 {
        return [0, 0, v];
    }
    let s = (diff * 255 + v / 2) / v;
    // Sixths of the circle from red, in units of 2°: red ±30, green 60 ± 30, blue 120 ± 30.
    let sixths = if v == r {
        g - b
    } else if v == g {
        b - r + 2 * diff
    } else {
        r - g + 4 * diff
    };
    let h = (f64::from(sixths) * 30.0 / f64::from(diff) + 0.5).floor() as i32;
    [h.rem_euclid(180), s, v]
}

/// OpenCV's `COLOR_HSV2RGB` for 8-bit pixels (H in `[0, 180)`), rounded.
fn hsv_to_rgb([h, s, v]: [i32; 3]) -> [u8; 3] {
    let v = v as f32 / 255.0;
    let s = s as f32 / 255.0;
    let h = h as f32 * (6.0 / 180.0);
    let sector = h.floor();
    let f = h - sector;
    let tab = [v, v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f))];
    let [r, g, b] = match sector as i32 {
        0 => [tab[0], tab[3], tab[1]],
        1 => [tab[2], tab[0], tab[1]],
        2 => [tab[1], tab[0], tab[3]],
        3 => [tab[1], tab[2], tab[0]],
        4 => [tab[3], tab[1], tab[0]],
        _ => [tab[0], tab[1], tab[2]],
    };
    [r, g, b].map(|c| (c * 255.0).round().clamp(0.0, 255.0) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;
    use rand::SeedableRng;
    use std::collections::HashMap;

    #[test]
    fn conversions_match_opencv() {
        assert_eq!(rgb_to_hsv([255, 0, 0]), [0, 255, 255]);
        assert_eq!(rgb_to_hsv([0, 255, 0]), [60, 255, 255]);
        assert_eq!(rgb_to_hsv([0, 0, 128]), [120, 255, 128]);
        assert_eq!(rgb_to_hsv([255, 0, 128]), [165, 255, 255]);
        assert_eq!(rgb_to_hsv([90, 90, 90]), [0, 0, 90]);
        assert_eq!(rgb_to_hsv([200, 100, 100]), [0, 128, 200]);
        assert_eq!(hsv_to_rgb([60, 255, 255]), [0, 255, 0]);
        assert_eq!(hsv_to_rgb([30, 255, 200]), [200, 200, 0]);
        assert_eq!(hsv_to_rgb([0, 0, 77]), [77, 77, 77]);
        // The 8-bit round trip is off by at most a hue step's worth.
        for r in (0..=255).step_by(15) {
            for g in (0..=255).step_by(17) {
                for b in (0..=255).step_by(51) {
                    let back = hsv_to_rgb(rgb_to_hsv([r, g, b]));
                    for (x, y) in back.iter().zip([r, g, b]) {
                        assert!(x.abs_diff(y) <= 5, "{:?} → {back:?}", [r, g, b]);
                    }
                }
            }
        }
    }

    #[test]
    fn shifts_act_on_hue_saturation_and_value() {
        let mut img = RgbImage::from_pixel(2, 1, Rgb([255, 0, 0]));
        shift_hsv(&mut img, [60, 0, 0]); // +120°: red → green
        assert_eq!(img.get_pixel(0, 0).0, [0, 255, 0]);
        shift_hsv(&mut img, [70, 0, -55]); // 260°, a violet, at V 200
        assert_eq!(img.get_pixel(1, 0).0, [67, 0, 200]);
        shift_hsv(&mut img, [100, 0, 0]); // 460° wraps to 100°
        assert_eq!(rgb_to_hsv(img.get_pixel(0, 0).0), [50, 255, 200]);
        shift_hsv(&mut img, [0, -300, 0]); // no saturation left: grey
        assert_eq!(img.get_pixel(0, 0).0, [200, 200, 200]);
    }

    #[test]
    fn zero_gains_leave_the_image_unchanged() {
        let img = RgbImage::from_fn(16, 9, |x, y| Rgb([(x * 16) as u8, (y * 28) as u8, (x * y) as u8]));
        let zero = HsvGains {
            hue: 0.0,
            saturation: 0.0,
            value: 0.0,
        };
        for seed in 0..20 {
            let mut out = img.clone();
            augment_hsv(&mut out, zero, &mut StdRng::seed_from_u64(seed));
            assert_eq!(out, img);
        }
    }

    #[test]
    fn jitter_changes_colours_but_never_moves_pixels() {
        // Coloured blocks on grey: after the jitter, equal input colours stay equal, so every
        // block keeps its outline.
        let palette = [
            [90, 90, 90],
            [220, 30, 30],
            [30, 200, 60],
            [40, 60, 230],
            [250, 250, 250],
        ];
        let img = RgbImage::from_fn(40, 30, |x, y| Rgb(palette[((x / 8 + y / 6) % 5) as usize]));
        let mut changed_seeds = 0;
        for seed in 0..16 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut out = img.clone();
            augment_hsv(&mut out, HsvGains::default(), &mut rng);
            let mut seen: HashMap<[u8; 3], [u8; 3]> = HashMap::new();
            for (a, b) in img.pixels().zip(out.pixels()) {
                assert_eq!(*seen.entry(a.0).or_insert(b.0), b.0, "seed {seed}: {:?}", a.0);
            }
            // Distinct colours stay distinct: the blocks' outlines survive.
            let mut images: Vec<_> = seen.values().collect();
            images.sort();
            images.dedup();
            assert_eq!(images.len(), palette.len(), "seed {seed}");
            changed_seeds += usize::from(out != img);
            // The same seed draws the same jitter.
            let mut again = img.clone();
            augment_hsv(&mut again, HsvGains::default(), &mut StdRng::seed_from_u64(seed));
            assert_eq!(again, out);
        }
        // Each seed zeroes all three offsets with probability ≥ ⅛: most must change something.
        assert!(changed_seeds >= 8, "{changed_seeds}");
    }

    #[test]
    fn offsets_stay_within_the_gains() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut seen_nonzero = [false; 3];
        for _ in 0..500 {
            let [h, s, v] = random_hsv_offsets(HsvGains::default(), &mut rng);
            assert!(h.abs() < 5 && s.abs() < 30 && v.abs() < 30, "{h} {s} {v}");
            for (seen, o) in seen_nonzero.iter_mut().zip([h, s, v]) {
                *seen |= o != 0;
            }
        }
        assert_eq!(seen_nonzero, [true; 3]);
    }
}
