//! YOLOX's MixUp (`MosaicDetection.mixup`): a second image, letterboxed to the output size,
//! rescaled by a random jitter, maybe mirrored, cropped at a random offset and blended half and
//! half into the first; the boxes of both are kept.

use image::imageops::{self, FilterType};
use image::RgbImage;
use rand::rngs::StdRng;
use rand::Rng;

use super::flip::hflip;
use crate::coco::CocoBox;
use crate::letterbox::letterbox;
use crate::transforms::uniform;

/// Blends `partner` into `img` (YOLOX's `mixup`, with `mixup_scale = scale`):
///
/// 1. `partner` is letterboxed to `img`'s size (114 padding), then resized by a jitter
///    `U(scale)`, and mirrored left-right when `U(0, 1) > 0.5`;
/// 2. it is put at the top-left of a black canvas at least as large as `img`, and the canvas is
///    cropped to `img`'s size at a random offset (`randint(0, excess − 1)` per axis, y first);
/// 3. its boxes follow (scaled, clipped to the resized image, mirrored, shifted, clipped to
///    the output). Only boxes that keep a useful part stay — YOLOX's `box_candidates`: wider
///    and taller than 5 pixels, at least 20 % of their area before the crop, aspect ratio
///    below 20;
/// 4. if any stays, the output is `⌊(img + partner) / 2⌋` per channel with both sets of
///    boxes; otherwise `img` and `boxes` come back unchanged.
///
/// The box filter and the no-box case are YOLOX 0.1–0.2's; YOLOX 0.3 keeps every clipped
/// box, tiny or empty, and always blends.
pub fn mixup(
    img: RgbImage,
    mut boxes: Vec<CocoBox>,
    partner: &RgbImage,
    partner_boxes: &[CocoBox],
    scale: (f64, f64),
    rng: &mut StdRng,
) -> (RgbImage, Vec<CocoBox>) {
    let jitter = uniform(rng, scale.0, scale.1);
    let flip = rng.random::<f64>() > 0.5;
    let (width, height) = img.dimensions();
    let boxed = letterbox(partner, partner_boxes, width, height);
    let jw = ((f64::from(width) * jitter) as u32).max(1);
    let jh = ((f64::from(height) * jitter) as u32).max(1);
    let mut pasted = if (jw, jh) == (width, height) {
        boxed.image
    } else {
        imageops::resize(&boxed.image, jw, jh, FilterType::Triangle)
    };
    // YOLOX scales the boxes by the nominal ratio, not the truncated size's.
    let factor = f64::from(boxed.ratio) * jitter;
    let mut placed: Vec<CocoBox> = partner_boxes
        .iter()
        .map(|b| {
            let [x1, y1, x2, y2] = b.xyxy.map(|v| f64::from(v) * factor);
            let (w, h) = (f64::from(jw), f64::from(jh));
            CocoBox {
                class: b.class,
                xyxy: [x1.clamp(0.0, w), y1.clamp(0.0, h), x2.clamp(0.0, w), y2.clamp(0.0, h)].map(|v| v as f32),
            }
        })
        .collect();
    if flip {
        hflip(&mut pasted, &mut placed);
    }
    let y_offset = if jh > height {
        rng.random_range(0..jh - height)
    } else {
        0
    };
    let x_offset = if jw > width { rng.random_range(0..jw - width) } else { 0 };
    let (dx, dy) = (x_offset as f32, y_offset as f32);
    let (w, h) = (width as f32, height as f32);
    let kept: Vec<CocoBox> = placed
        .iter()
        .filter_map(|b| {
            let [x1, y1, x2, y2] = b.xyxy;
            let cropped = [
                (x1 - dx).clamp(0.0, w),
                (y1 - dy).clamp(0.0, h),
                (x2 - dx).clamp(0.0, w),
                (y2 - dy).clamp(0.0, h),
            ];
            box_candidate(b.xyxy, cropped).then_some(CocoBox {
                class: b.class,
                xyxy: cropped,
            })
        })
        .collect();
    if kept.is_empty() {
        return (img, boxes);
    }
    let mut out = img;
    for (x, y, px) in out.enumerate_pixels_mut() {
        let (sx, sy) = (x + x_offset, y + y_offset);
        let other = if sx < jw && sy < jh {
            pasted.get_pixel(sx, sy).0
        } else {
            [0; 3]
        };
        for (c, o) in px.0.iter_mut().zip(other) {
            *c = ((u16::from(*c) + u16::from(o)) / 2) as u8;
        }
    }
    boxes.extend(kept);
    (out, boxes)
}

/// YOLOX's `box_candidates(before, after, wh_thr=5, ar_thr=20, area_thr=0.2)`.
fn box_candidate(before: [f32; 4], after: [f32; 4]) -> bool {
    let (w1, h1) = (before[2] - before[0], before[3] - before[1]);
    let (w2, h2) = (after[2] - after[0], after[3] - after[1]);
    let aspect = (w2 / (h2 + 1e-16)).max(h2 / (w2 + 1e-16));
    w2 > 5.0 && h2 > 5.0 && w2 * h2 / (w1 * h1 + 1e-16) > 0.2 && aspect < 20.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;
    use rand::SeedableRng;

    fn rect(w: u32, h: u32, [x1, y1, x2, y2]: [u32; 4], colour: [u8; 3]) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            if (x1..x2).contains(&x) && (y1..y2).contains(&y) {
                Rgb(colour)
            } else {
                Rgb([0; 3])
            }
        })
    }

    fn b(class: usize, xyxy: [f32; 4]) -> CocoBox {
        CocoBox { class, xyxy }
    }

    #[test]
    fn same_size_partner_blends_in_place_or_mirrored() {
        let img = rect(64, 48, [40, 8, 60, 40], [200, 0, 0]);
        let partner = rect(64, 48, [4, 10, 24, 30], [0, 240, 0]);
        let mut flips = [false; 2];
        for seed in 0..12 {
            let mut rng = StdRng::seed_from_u64(seed);
            let (out, boxes) = mixup(
                img.clone(),
                vec![b(0, [40.0, 8.0, 60.0, 40.0])],
                &partner,
                &[b(1, [4.0, 10.0, 24.0, 30.0])],
                (1.0, 1.0),
                &mut rng,
            );
            // Jitter 1, same size: no resize, no offset; mirrored or not.
            let flipped = boxes[1].xyxy == [40.0, 10.0, 60.0, 30.0];
            assert!(flipped || boxes[1].xyxy == [4.0, 10.0, 24.0, 30.0], "{boxes:?}");
            flips[usize::from(flipped)] = true;
            assert_eq!(boxes[0], b(0, [40.0, 8.0, 60.0, 40.0]));
            assert_eq!(boxes[1].class, 1);
            let green_x = if flipped { 50 } else { 14 };
            assert_eq!(
                out.get_pixel(green_x, 20).0,
                if flipped { [100, 120, 0] } else { [0, 120, 0] }
            );
            assert_eq!(out.get_pixel(50, 9).0, [100, 0, 0]);
            assert_eq!(out.get_pixel(30, 45).0, [0; 3]);
        }
        assert_eq!(flips, [true; 2], "both flips in 12 seeds");
    }

    #[test]
    fn a_larger_partner_is_cropped_and_its_boxes_clipped() {
        // Jitter 2: the 32×32 letterbox becomes 64×64, cropped to 32×32 at offsets in 0..32.
        let img = RgbImage::from_pixel(32, 32, Rgb([0; 3]));
        let partner = rect(32, 32, [8, 8, 24, 24], [0, 0, 250]);
        for seed in 0..20 {
            let mut rng = StdRng::seed_from_u64(seed);
            let (out, boxes) = mixup(
                img.clone(),
                vec![],
                &partner,
                &[b(2, [8.0, 8.0, 24.0, 24.0])],
                (2.0, 2.0),
                &mut rng,
            );
            // At 2× the box is [16, 16, 48, 48] (mirrored: the same); any crop keeps ≥ 16 × 16.
            let [kept] = boxes.as_slice() else {
                panic!("seed {seed}: {boxes:?}")
            };
            let [x1, y1, x2, y2] = kept.xyxy;
            assert!(x2 - x1 >= 16.0 && y2 - y1 >= 16.0, "{kept:?}");
            assert!(x1 >= 0.0 && y1 >= 0.0 && x2 <= 32.0 && y2 <= 32.0, "{kept:?}");
            // Inside the box (a pixel in from its edges) the blue is half there; outside, black.
            for (x, y, px) in out.enumerate_pixels() {
                let (x, y) = (x as f32 + 0.5, y as f32 + 0.5);
                if x > x1 + 1.0 && x < x2 - 1.0 && y > y1 + 1.0 && y < y2 - 1.0 {
                    assert_eq!(px.0, [0, 0, 125], "seed {seed} ({x}, {y})");
                } else if x < x1 - 1.0 || x > x2 + 1.0 || y < y1 - 1.0 || y > y2 + 1.0 {
                    assert_eq!(px.0, [0; 3], "seed {seed} ({x}, {y})");
                }
            }
        }
    }

    #[test]
    fn without_a_kept_box_nothing_is_blended() {
        let img = rect(32, 32, [0, 0, 8, 8], [10, 20, 30]);
        let partner = rect(32, 32, [8, 8, 11, 11], [0, 0, 250]);
        let own = vec![b(0, [0.0, 0.0, 8.0, 8.0])];
        for seed in 0..5 {
            let mut rng = StdRng::seed_from_u64(seed);
            let tiny = [b(2, [8.0, 8.0, 11.0, 11.0])]; // at most 4.5 pixels wide
            let (out, boxes) = mixup(img.clone(), own.clone(), &partner, &tiny, (0.5, 1.5), &mut rng);
            assert_eq!((out, boxes), (img.clone(), own.clone()));
        }
    }

    #[test]
    fn small_or_cut_boxes_are_not_candidates() {
        assert!(box_candidate([0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]));
        assert!(!box_candidate([0.0, 0.0, 5.0, 10.0], [0.0, 0.0, 5.0, 10.0]));
        assert!(!box_candidate([0.0, 0.0, 100.0, 100.0], [0.0, 0.0, 40.0, 40.0]));
        assert!(!box_candidate([0.0, 0.0, 210.0, 10.0], [0.0, 0.0, 210.0, 10.0]));
    }
}
