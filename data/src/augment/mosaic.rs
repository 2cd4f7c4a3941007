//! YOLOX's mosaic (`MosaicDetection`): four images around a random centre of a `2S × 2S`
//! canvas of 114, each resized to fit `S × S`, their boxes shifted with them and clipped to the
//! canvas.

use image::imageops;
use image::{Rgb, RgbImage};
use rand::rngs::StdRng;

use super::affine::clipped_box;
use crate::coco::CocoBox;
use crate::letterbox::{fit, PAD_VALUE};
use crate::transforms::uniform;

/// The mosaic centre `(xc, yc)` for input size `size`: `int(U(0.5·S, 1.5·S))`, y drawn first,
/// as YOLOX does.
pub fn random_mosaic_center(size: u32, rng: &mut StdRng) -> (u32, u32) {
    let s = f64::from(size);
    let yc = uniform(rng, 0.5 * s, 1.5 * s) as u32;
    let xc = uniform(rng, 0.5 * s, 1.5 * s) as u32;
    (xc, yc)
}

/// Four images and their boxes on a `2·size × 2·size` canvas of 114 (YOLOX's
/// `get_mosaic_coordinate`): each image is resized by `min(size / h, size / w)` (sizes
/// truncated) and placed with one corner at `center`: the first to its top-left, then
/// top-right, bottom-left, bottom-right; what falls outside the canvas is cut off. Boxes are
/// scaled and shifted with their image and clipped to the canvas; a box left with no area
/// (wholly cut off) is dropped, where YOLOX would keep it as a zero-size target.
pub fn mosaic(parts: [(&RgbImage, &[CocoBox]); 4], size: u32, center: (u32, u32)) -> (RgbImage, Vec<CocoBox>) {
    let side = 2 * size;
    let mut canvas = RgbImage::from_pixel(side, side, Rgb([PAD_VALUE; 3]));
    let mut boxes = Vec::new();
    let (xc, yc) = (i64::from(center.0), i64::from(center.1));
    for (i, (img, part_boxes)) in parts.into_iter().enumerate() {
        let (resized, scale) = fit(img, size, size);
        let (w, h) = (i64::from(resized.width()), i64::from(resized.height()));
        let left = if i % 2 == 0 { xc - w } else { xc };
        let top = if i < 2 { yc - h } else { yc };
        imageops::replace(&mut canvas, &resized, left, top);
        let limit = f64::from(side);
        boxes.extend(part_boxes.iter().filter_map(|b| {
            let [x1, y1, x2, y2] = b.xyxy.map(|v| f64::from(v) * f64::from(scale));
            let (dx, dy) = (left as f64, top as f64);
            clipped_box(b.class, [x1 + dx, y1 + dy, x2 + dx, y2 + dy], limit, limit)
        }));
    }
    (canvas, boxes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn four_images_meet_at_the_centre() {
        // 20×10 images of one colour each, size 20 (no resize), centre (25, 12) of a 40×40 canvas.
        let colours = [[200, 0, 0], [0, 200, 0], [0, 0, 200], [200, 200, 0]];
        let images = colours.map(|c| RgbImage::from_pixel(20, 10, Rgb(c)));
        let boxes: [Vec<CocoBox>; 4] = std::array::from_fn(|i| {
            vec![CocoBox {
                class: i,
                xyxy: [2.0, 1.0, 18.0, 9.0],
            }]
        });
        let parts: [(&RgbImage, &[CocoBox]); 4] = std::array::from_fn(|i| (&images[i], boxes[i].as_slice()));
        let (canvas, out) = mosaic(parts, 20, (25, 12));
        assert_eq!(canvas.dimensions(), (40, 40));
        // Image origins: (5, 2), (25, 2), (5, 12), (25, 12); the right ones are cut at x = 40.
        let want = [
            [7.0, 3.0, 23.0, 11.0],
            [27.0, 3.0, 40.0, 11.0],
            [7.0, 13.0, 23.0, 21.0],
            [27.0, 13.0, 40.0, 21.0],
        ];
        let got: Vec<_> = out.iter().map(|b| (b.class, b.xyxy)).collect();
        assert_eq!(got, want.iter().copied().enumerate().collect::<Vec<_>>());
        assert_eq!(canvas.get_pixel(5, 2).0, colours[0]);
        assert_eq!(canvas.get_pixel(24, 11).0, colours[0]);
        assert_eq!(canvas.get_pixel(25, 2).0, colours[1]);
        assert_eq!(canvas.get_pixel(39, 11).0, colours[1]);
        assert_eq!(canvas.get_pixel(5, 12).0, colours[2]);
        assert_eq!(canvas.get_pixel(39, 21).0, colours[3]);
        for (x, y) in [(4, 2), (10, 1), (10, 22), (0, 39)] {
            assert_eq!(canvas.get_pixel(x, y).0, [PAD_VALUE; 3], "({x}, {y})");
        }
    }

    #[test]
    fn images_are_resized_to_fit_and_boxes_cut_off_are_dropped() {
        // A 40×20 image at size 10 becomes 10×5 (scale 0.25); centre (5, 5) cuts its left half.
        let img = RgbImage::from_pixel(40, 20, Rgb([9, 9, 9]));
        let boxes = [
            CocoBox {
                class: 0,
                xyxy: [0.0, 0.0, 16.0, 8.0],
            },
            CocoBox {
                class: 1,
                xyxy: [24.0, 4.0, 40.0, 20.0],
            },
        ];
        let parts = [(&img, &boxes[..]), (&img, &[][..]), (&img, &[][..]), (&img, &[][..])];
        let (_, out) = mosaic(parts, 10, (5, 5));
        // Origin (-5, 0): the first box lands at x ≤ -1 and is dropped; the second is kept.
        assert_eq!(
            out,
            [CocoBox {
                class: 1,
                xyxy: [1.0, 1.0, 5.0, 5.0]
            }]
        );
    }

    #[test]
    fn the_centre_stays_in_the_middle_half() {
        let mut rng = StdRng::seed_from_u64(0);
        for _ in 0..500 {
            let (x, y) = random_mosaic_center(64, &mut rng);
            assert!((32..96).contains(&x) && (32..96).contains(&y), "{x} {y}");
        }
    }
}
