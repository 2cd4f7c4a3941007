//! YOLOX's horizontal flip (`_mirror`): the image mirrored left-right, each box's x range
//! mirrored about the image width.

use image::{imageops, RgbImage};

use crate::coco::CocoBox;

/// Mirrors `img` left-right (pixel `x` moves to `W − 1 − x`) and `boxes` with it:
/// `[x1, y1, x2, y2]` becomes `[W − x2, y1, W − x1, y2]`.
pub fn hflip(img: &mut RgbImage, boxes: &mut [CocoBox]) {
    let width = img.width() as f32;
    imageops::flip_horizontal_in_place(img);
    for b in boxes {
        let [x1, y1, x2, y2] = b.xyxy;
        b.xyxy = [width - x2, y1, width - x1, y2];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    #[test]
    fn flipping_mirrors_pixels_and_boxes_exactly() {
        let mut img = RgbImage::from_fn(100, 3, |x, y| Rgb([x as u8, y as u8, 0]));
        let mut boxes = [
            CocoBox {
                class: 4,
                xyxy: [10.0, 20.0, 30.5, 40.0],
            },
            CocoBox {
                class: 0,
                xyxy: [0.0, 0.0, 100.0, 3.0],
            },
        ];
        hflip(&mut img, &mut boxes);
        assert_eq!(boxes[0].xyxy, [69.5, 20.0, 90.0, 40.0]);
        assert_eq!(boxes[0].class, 4);
        assert_eq!(boxes[1].xyxy, [0.0, 0.0, 100.0, 3.0]);
        assert_eq!(img.get_pixel(0, 2).0, [99, 2, 0]);
        assert_eq!(img.get_pixel(99, 1).0, [0, 1, 0]);
        assert_eq!(img.get_pixel(30, 0).0, [69, 0, 0]);
        // Twice is the identity.
        let before = (img.clone(), boxes);
        hflip(&mut img, &mut boxes);
        hflip(&mut img, &mut boxes);
        assert_eq!((img, boxes), before);
    }
}
