//! YOLOX's `random_affine` (0.3): a random rotation, scale and shear about the origin plus a
//! translation (`get_affine_matrix`), applied to the pixels with OpenCV `warpAffine`'s
//! semantics (bilinear, constant 114 border) and to the boxes by their four corners
//! (`apply_affine_to_bboxes`).

use image::{Rgb, RgbImage};
use rand::rngs::StdRng;

use super::YoloxAugConfig;
use crate::coco::CocoBox;
use crate::letterbox::PAD_VALUE;
use crate::transforms::uniform;

/// A 2×3 affine map of pixel coordinates, `[x', y'] = [[a, b, c], [d, e, f]] · [x, y, 1]`:
/// the matrix OpenCV's `warpAffine` takes (source → destination).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Affine(pub [[f64; 3]; 2]);

impl Affine {
    /// Maps a point.
    pub fn apply(&self, x: f64, y: f64) -> (f64, f64) {
        let [[a, b, c], [d, e, f]] = self.0;
        (a * x + b * y + c, d * x + e * y + f)
    }

    /// The inverse map, or `None` when the matrix is singular (or not finite).
    pub fn inverse(&self) -> Option<Affine> {
        let [[a, b, c], [d, e, f]] = self.0;
        let det = a * e - b * d;
        if det == 0.0 || !det.is_finite() {
            return None;
        }
        let (ia, ib, id, ie) = (e / det, -b / det, -d / det, a / det);
        Some(Affine([[ia, ib, -(ia * c + ib * f)], [id, ie, -(id * c + ie * f)]]))
    }
}

/// YOLOX's `get_affine_matrix` for a `size × size` output: angle `U(-degrees, degrees)`, scale
/// `U(mosaic_scale)`, shears `tan(U(-shear, shear)°)` in x then y, translations
/// `U(-translate, translate) · size` in x then y (drawn in that order). The rotation and scale
/// are OpenCV's `getRotationMatrix2D` about the origin (positive angles turn counter-clockwise
/// on screen); the x shear is added to the second row and the y shear to the first, as YOLOX
/// does.
pub fn random_affine_matrix(config: &YoloxAugConfig, rng: &mut StdRng) -> Affine {
    let size = f64::from(config.input_size);
    let angle = uniform(rng, -config.degrees, config.degrees).to_radians();
    let scale = uniform(rng, config.mosaic_scale.0, config.mosaic_scale.1);
    let shear_x = uniform(rng, -config.shear, config.shear).to_radians().tan();
    let shear_y = uniform(rng, -config.shear, config.shear).to_radians().tan();
    let tx = uniform(rng, -config.translate, config.translate) * size;
    let ty = uniform(rng, -config.translate, config.translate) * size;
    let (alpha, beta) = (scale * angle.cos(), scale * angle.sin());
    // getRotationMatrix2D about (0, 0): [[α, β, 0], [-β, α, 0]].
    let r0 = [alpha, beta];
    let r1 = [-beta, alpha];
    Affine([
        [r0[0] + shear_y * r1[0], r0[1] + shear_y * r1[1], tx],
        [r1[0] + shear_x * r0[0], r1[1] + shear_x * r0[1], ty],
    ])
}

/// OpenCV `warpAffine(img, m, (width, height), INTER_LINEAR, BORDER_CONSTANT, 114)`: each output
/// pixel `(x, y)` samples the input bilinearly at `m⁻¹(x, y)` (pixel indices as coordinates),
/// and neighbours outside the input count as 114. A singular `m` gives a canvas of 114.
pub fn warp_affine(img: &RgbImage, m: &Affine, width: u32, height: u32) -> RgbImage {
    let mut out = RgbImage::from_pixel(width, height, Rgb([PAD_VALUE; 3]));
    let Some(inv) = m.inverse() else { return out };
    let (w, h) = (i64::from(img.width()), i64::from(img.height()));
    let texel = |x: i64, y: i64| -> [f32; 3] {
        if (0..w).contains(&x) && (0..h).contains(&y) {
            img.get_pixel(x as u32, y as u32).0.map(f32::from)
        } else {
            [f32::from(PAD_VALUE); 3]
        }
    };
    for (x, y, px) in out.enumerate_pixels_mut() {
        let (sx, sy) = inv.apply(f64::from(x), f64::from(y));
        let (fx, fy) = (sx.floor(), sy.floor());
        // Far outside (or not finite): the border; also keeps the i64 casts in range.
        if !(fx > -2.0 && fy > -2.0 && fx < w as f64 + 1.0 && fy < h as f64 + 1.0) {
            continue;
        }
        let (x0, y0) = (fx as i64, fy as i64);
        let (ax, ay) = ((sx - fx) as f32, (sy - fy) as f32);
        let (p00, p10, p01, p11) = (
            texel(x0, y0),
            texel(x0 + 1, y0),
            texel(x0, y0 + 1),
            texel(x0 + 1, y0 + 1),
        );
        for c in 0..3 {
            let top = p00[c] + (p10[c] - p00[c]) * ax;
            let bottom = p01[c] + (p11[c] - p01[c]) * ax;
            px.0[c] = (top + (bottom - top) * ay).round().clamp(0.0, 255.0) as u8;
        }
    }
    out
}

/// YOLOX's `apply_affine_to_bboxes`: each box's four corners through `m`, their enclosing box,
/// clipped to `width × height`. Unlike YOLOX, a box left with no area (it fell outside the
/// output) is dropped here rather than passed on as a zero-size target.
pub fn affine_boxes(boxes: &[CocoBox], m: &Affine, width: u32, height: u32) -> Vec<CocoBox> {
    let (w, h) = (f64::from(width), f64::from(height));
    boxes
        .iter()
        .filter_map(|b| {
            let [x1, y1, x2, y2] = b.xyxy.map(f64::from);
            let corners = [(x1, y1), (x2, y2), (x1, y2), (x2, y1)].map(|(x, y)| m.apply(x, y));
            let (mut lo_x, mut lo_y, mut hi_x, mut hi_y) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
            for (x, y) in corners {
                (lo_x, lo_y, hi_x, hi_y) = (lo_x.min(x), lo_y.min(y), hi_x.max(x), hi_y.max(y));
            }
            clipped_box(b.class, [lo_x, lo_y, hi_x, hi_y], w, h)
        })
        .collect()
}

/// `xyxy` clipped to `[0, width] × [0, height]`, or `None` when no area is left.
pub(super) fn clipped_box(class: usize, [x1, y1, x2, y2]: [f64; 4], width: f64, height: f64) -> Option<CocoBox> {
    let xyxy = [
        x1.clamp(0.0, width),
        y1.clamp(0.0, height),
        x2.clamp(0.0, width),
        y2.clamp(0.0, height),
    ]
    .map(|v| v as f32);
    (xyxy[2] > xyxy[0] && xyxy[3] > xyxy[1]).then_some(CocoBox { class, xyxy })
}

/// YOLOX's `random_affine` to the `input_size × input_size` output: a
/// [`random_affine_matrix`], the pixels through [`warp_affine`], the boxes through
/// [`affine_boxes`].
pub fn random_affine(
    img: &RgbImage,
    boxes: &[CocoBox],
    config: &YoloxAugConfig,
    rng: &mut StdRng,
) -> (RgbImage, Vec<CocoBox>) {
    let m = random_affine_matrix(config, rng);
    let size = config.input_size;
    (warp_affine(img, &m, size, size), affine_boxes(boxes, &m, size, size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn b(class: usize, xyxy: [f32; 4]) -> CocoBox {
        CocoBox { class, xyxy }
    }

    #[test]
    fn inverse_undoes_the_map() {
        let m = Affine([[0.9, 0.2, 5.0], [-0.3, 1.1, -7.0]]);
        let inv = m.inverse().unwrap();
        let (x, y) = m.apply(12.0, 34.0);
        let (bx, by) = inv.apply(x, y);
        assert!((bx - 12.0).abs() < 1e-9 && (by - 34.0).abs() < 1e-9, "{bx} {by}");
        assert_eq!(Affine([[1.0, 2.0, 0.0], [2.0, 4.0, 0.0]]).inverse(), None);
    }

    #[test]
    fn a_translation_moves_pixels_and_pads_with_114() {
        let img = RgbImage::from_fn(6, 4, |x, y| Rgb([(x * 10) as u8, (y * 10) as u8, 7]));
        let shift = Affine([[1.0, 0.0, 2.0], [0.0, 1.0, 1.0]]);
        let out = warp_affine(&img, &shift, 5, 5);
        for (x, y, px) in out.enumerate_pixels() {
            let want = if x >= 2 && y >= 1 {
                Rgb([((x - 2) * 10) as u8, ((y - 1) * 10) as u8, 7])
            } else {
                Rgb([PAD_VALUE; 3])
            };
            assert_eq!(*px, want, "({x}, {y})");
        }
        let identity = Affine([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]);
        assert_eq!(warp_affine(&img, &identity, 6, 4), img);
        // Half a pixel: the mean of neighbours.
        let half = Affine([[1.0, 0.0, -0.5], [0.0, 1.0, 0.0]]);
        assert_eq!(warp_affine(&img, &half, 6, 4).get_pixel(1, 2).0, [15, 20, 7]);
    }

    #[test]
    fn boxes_take_the_enclosing_box_of_their_corners_and_are_clipped() {
        // 90° counter-clockwise on screen about the origin, then shifted by (50, 100).
        let turn = Affine([[0.0, 1.0, 50.0], [-1.0, 0.0, 100.0]]);
        let out = affine_boxes(&[b(3, [10.0, 20.0, 30.0, 60.0])], &turn, 200, 200);
        // (x, y) → (y + 50, 100 - x): x from 70 to 110, y from 70 to 90.
        assert_eq!(out, [b(3, [70.0, 70.0, 110.0, 90.0])]);
        // 45°: all four corners count, not just the two of the diagonal.
        let r = std::f64::consts::FRAC_1_SQRT_2;
        let turn = Affine([[r, r, 20.0], [-r, r, 20.0]]);
        let out = affine_boxes(&[b(1, [0.0, 0.0, 10.0, 10.0])], &turn, 100, 100);
        let want = [20.0, 20.0 - 50f32.sqrt(), 20.0 + 200f32.sqrt(), 20.0 + 50f32.sqrt()];
        for (got, want) in out[0].xyxy.iter().zip(want) {
            assert!((got - want).abs() < 1e-4, "{:?} vs {want:?}", out[0].xyxy);
        }
        // Half outside: clipped; wholly outside: dropped.
        let shift = Affine([[1.0, 0.0, -20.0], [0.0, 1.0, 0.0]]);
        let out = affine_boxes(
            &[
                b(0, [10.0, 5.0, 40.0, 15.0]),
                b(1, [0.0, 0.0, 20.0, 9.0]),
                b(2, [30.0, 2.0, 90.0, 8.0]),
            ],
            &shift,
            50,
            50,
        );
        assert_eq!(out, [b(0, [0.0, 5.0, 20.0, 15.0]), b(2, [10.0, 2.0, 50.0, 8.0])]);
    }

    #[test]
    fn the_random_matrix_stays_in_its_ranges() {
        let config = YoloxAugConfig::default();
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..200 {
            let Affine([[a, b, c], [d, e, f]]) = random_affine_matrix(&config, &mut rng);
            // Scale ≤ 2 and shear ≤ tan 2°: each coefficient at most 2 · (1 + 0.035).
            for v in [a, b, d, e] {
                assert!(v.abs() <= 2.0 * 1.035, "{v}");
            }
            // Determinant = scale² · (1 - shear_x · shear_y) ≥ 0.1² · (1 - tan²2°).
            assert!(a * e - b * d > 0.0099, "{}", a * e - b * d);
            assert!(c.abs() <= 64.0 && f.abs() <= 64.0, "{c} {f}");
        }
        let fixed = YoloxAugConfig {
            degrees: 0.0,
            shear: 0.0,
            translate: 0.0,
            mosaic_scale: (1.0, 1.0),
            ..config
        };
        let identity = Affine([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]);
        assert_eq!(random_affine_matrix(&fixed, &mut rng), identity);
    }
}
