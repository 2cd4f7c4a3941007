//! From raw level outputs to detections, as YOLOX's `decode_outputs` + `postprocess`: boxes
//! from grid offsets and strides, score = objectness × best class probability, a confidence
//! filter, then class-wise non-maximum suppression.

use burn::prelude::*;

/// One detected object, in input-image pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detected {
    /// Class index.
    pub class: usize,
    /// Objectness × class probability.
    pub score: f32,
    /// `[x1, y1, x2, y2]`.
    pub xyxy: [f32; 4],
}

/// Decodes `levels` (the model's outputs, one per stride) into each image's detections with a
/// score of at least `conf`, after class-wise NMS at IoU `nms_iou`; best first.
pub fn decode<B: Backend>(levels: &[Tensor<B, 4>], strides: &[usize], conf: f32, nms_iou: f32) -> Vec<Vec<Detected>> {
    let batch = levels.first().map_or(0, |l| l.dims()[0]);
    let mut per_image = vec![Vec::new(); batch];
    for (level, &stride) in levels.iter().zip(strides) {
        let [n, channels, h, w] = level.dims();
        let values: Vec<f32> = level.clone().into_data().convert::<f32>().to_vec().unwrap_or_default();
        let at = |i: usize, c: usize, y: usize, x: usize| values[((i * channels + c) * h + y) * w + x];
        for (i, found) in per_image.iter_mut().enumerate().take(n) {
            for y in 0..h {
                for x in 0..w {
                    let objectness = sigmoid(at(i, 4, y, x));
                    let (class, p) = (5..channels)
                        .map(|c| (c - 5, sigmoid(at(i, c, y, x))))
                        .fold((0, f32::MIN), |best, cur| if cur.1 > best.1 { cur } else { best });
                    let score = objectness * p;
                    // `!(>=)`: a NaN score is dropped too, as YOLOX's `>= conf_thre` mask does.
                    if !(score >= conf) {
                        continue;
                    }
                    let s = stride as f32;
                    let cx = (at(i, 0, y, x) + x as f32) * s;
                    let cy = (at(i, 1, y, x) + y as f32) * s;
                    let bw = at(i, 2, y, x).exp() * s;
                    let bh = at(i, 3, y, x).exp() * s;
                    let xyxy = [cx - bw / 2.0, cy - bh / 2.0, cx + bw / 2.0, cy + bh / 2.0];
                    // A diverged model's box (an overflowed size, a NaN offset) can match
                    // nothing and cannot be answered as JSON: it is dropped.
                    if xyxy.iter().all(|v| v.is_finite()) {
                        found.push(Detected { class, score, xyxy });
                    }
                }
            }
        }
    }
    per_image.into_iter().map(|d| nms(d, nms_iou)).collect()
}

/// Class-wise non-maximum suppression: best score first, a box is dropped when its IoU with a
/// kept box of the same class exceeds `iou`.
pub fn nms(mut detections: Vec<Detected>, iou: f32) -> Vec<Detected> {
    detections.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Detected> = Vec::with_capacity(detections.len());
    for d in detections {
        if kept
            .iter()
            .all(|k| k.class != d.class || box_iou(&k.xyxy, &d.xyxy) <= iou)
        {
            kept.push(d);
        }
    }
    kept
}

/// Intersection over union of two corner boxes (0 when both are empty).
pub fn box_iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let union = area(a) + area(b) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

/// The logistic function.
pub(crate) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn_flex::Flex;

    fn det(class: usize, score: f32, xyxy: [f32; 4]) -> Detected {
        Detected { class, score, xyxy }
    }

    #[test]
    fn a_confident_cell_becomes_its_box() {
        // One image, 2 classes, a 2×2 grid at stride 8; only cell (x 1, y 0) is confident.
        let (h, w, channels) = (2, 2, 7);
        let mut raw = vec![-10.0f32; channels * h * w];
        let mut set = |c: usize, v: f32| raw[(c * h) * w + 1] = v;
        for (c, v) in [
            (0, 0.5),
            (1, 0.5),
            (2, 2f32.ln()),
            (3, 4f32.ln()),
            (4, 10.0),
            (5, -3.0),
            (6, 10.0),
        ] {
            set(c, v);
        }
        let level = Tensor::<Flex, 1>::from_floats(raw.as_slice(), &Default::default()).reshape([1, channels, h, w]);
        let found = decode(&[level], &[8], 0.5, 0.65);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].len(), 1, "{:?}", found[0]);
        let d = found[0][0];
        assert_eq!(d.class, 1);
        // centre ((0.5 + 1) · 8, (0.5 + 0) · 8) = (12, 4), size (2 · 8, 4 · 8) = (16, 32).
        for (got, want) in d.xyxy.iter().zip([4.0, -12.0, 20.0, 20.0]) {
            assert!((got - want).abs() < 1e-4, "{:?}", d.xyxy);
        }
        let expected = sigmoid(10.0) * sigmoid(10.0);
        assert!((d.score - expected).abs() < 1e-6);
    }

    /// A diverged model's cells (an overflowing size, a NaN offset, a NaN score) give no box.
    #[test]
    fn non_finite_predictions_give_no_box() {
        let (h, w, channels) = (1, 3, 6);
        // Three confident cells of one class: the first sound, the second with a size that
        // overflows, the third with a NaN offset; plus a NaN objectness nowhere confident.
        let mut raw = vec![0.0f32; channels * h * w];
        for x in 0..w {
            raw[4 * w + x] = 10.0;
            raw[5 * w + x] = 10.0;
        }
        raw[2 * w + 1] = 200.0;
        raw[w + 2] = f32::NAN;
        let level = Tensor::<Flex, 1>::from_floats(raw.as_slice(), &Default::default()).reshape([1, channels, h, w]);
        let found = decode(&[level], &[8], 0.5, 0.65);
        assert_eq!(found[0].len(), 1, "{:?}", found[0]);
        assert!(found[0][0].xyxy.iter().all(|v| v.is_finite()));

        let mut nan_score = vec![0.0f32; channels];
        nan_score[4] = f32::NAN;
        nan_score[5] = 10.0;
        let level =
            Tensor::<Flex, 1>::from_floats(nan_score.as_slice(), &Default::default()).reshape([1, channels, 1, 1]);
        assert!(decode(&[level], &[8], 0.5, 0.65)[0].is_empty());
    }

    #[test]
    fn nms_drops_overlaps_of_the_same_class_only() {
        let boxes = vec![
            det(0, 0.6, [1.0, 1.0, 11.0, 11.0]),
            det(0, 0.9, [0.0, 0.0, 10.0, 10.0]),
            det(1, 0.8, [0.0, 0.0, 10.0, 10.0]),
            det(0, 0.5, [20.0, 20.0, 30.0, 30.0]),
        ];
        // IoU of the two class-0 boxes: 81 / 119 ≈ 0.68.
        assert!((box_iou(&boxes[0].xyxy, &boxes[1].xyxy) - 81.0 / 119.0).abs() < 1e-6);
        let kept = nms(boxes.clone(), 0.65);
        assert_eq!(kept, vec![boxes[1], boxes[2], boxes[3]]);
        assert_eq!(nms(boxes, 0.7).len(), 4);
    }
}
