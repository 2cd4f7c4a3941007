//! COCO bounding-box evaluation with the semantics of pycocotools' `COCOeval` (iouType `bbox`).
//!
//! [`evaluate`] returns the 12 numbers that `COCOeval.summarize()` prints: AP over the IoU
//! thresholds 0.50:0.05:0.95, AP at 0.50 and 0.75, AP for small, medium and large objects, AR
//! with at most 1, 10 and 100 detections per image and category, and AR for small, medium and
//! large objects. It follows pycocotools step by step, so the numbers agree with it to rounding:
//!
//! - every image of the ground truth's image list and every category of its category list is
//!   evaluated; a category without ground truth gets -1 and is left out of the means;
//! - per image and category, detections are sorted by score (highest first, ties keep input
//!   order) and cut to the 100 best; ground truths are sorted with the ignored ones last;
//! - a ground truth is ignored when it is a crowd region or its `area` field is outside the area
//!   range; a detection's area is its box's `w * h`;
//! - IoU with a crowd region is the intersection over the detection's area, and a crowd region
//!   can match any number of detections;
//! - for each IoU threshold, detections in score order take the still unmatched ground truth with
//!   the best IoU at or above the threshold, with pycocotools' exact tie-breaking;
//! - detections matched to an ignored ground truth, and unmatched detections outside the area
//!   range, are ignored;
//! - precision is made monotone and sampled at the recall thresholds 0:0.01:1.
//!
//! One difference: pycocotools tells matched from unmatched detections by the matched ground
//! truth's annotation id, so a ground truth with id 0 never counts as a match there. Here
//! matches are tracked directly, which is the same for every dataset whose ids start at 1 (COCO's
//! do).

use std::cmp::Ordering;
use std::collections::HashMap;

/// Number of IoU thresholds (0.50, 0.55, ..., 0.95).
const IOU_COUNT: usize = 10;
/// Number of recall thresholds (0.00, 0.01, ..., 1.00).
const RECALL_COUNT: usize = 101;
/// Index of the 0.50 and the 0.75 IoU thresholds.
const IOU_50: usize = 0;
const IOU_75: usize = 5;
/// Detections kept per image and category, in pycocotools' order (the last is the largest).
const MAX_DETS: [usize; 3] = [1, 10, 100];
/// Area ranges all, small, medium, large (bounds inclusive, as in pycocotools).
const AREA_RANGES: [(f64, f64); 4] = [
    (0.0, 1e10),
    (0.0, 32.0 * 32.0),
    (32.0 * 32.0, 96.0 * 96.0),
    (96.0 * 96.0, 1e10),
];
/// Indices into [`AREA_RANGES`].
const ALL: usize = 0;
const SMALL: usize = 1;
const MEDIUM: usize = 2;
const LARGE: usize = 3;

/// The labels of the 12 numbers in [`CocoStats::stats`], as `COCOeval.summarize()` prints them.
pub const STAT_LABELS: [&str; 12] = [
    "AP @[IoU=0.50:0.95 | area=all | maxDets=100]",
    "AP @[IoU=0.50 | area=all | maxDets=100]",
    "AP @[IoU=0.75 | area=all | maxDets=100]",
    "AP @[IoU=0.50:0.95 | area=small | maxDets=100]",
    "AP @[IoU=0.50:0.95 | area=medium | maxDets=100]",
    "AP @[IoU=0.50:0.95 | area=large | maxDets=100]",
    "AR @[IoU=0.50:0.95 | area=all | maxDets=1]",
    "AR @[IoU=0.50:0.95 | area=all | maxDets=10]",
    "AR @[IoU=0.50:0.95 | area=all | maxDets=100]",
    "AR @[IoU=0.50:0.95 | area=small | maxDets=100]",
    "AR @[IoU=0.50:0.95 | area=medium | maxDets=100]",
    "AR @[IoU=0.50:0.95 | area=large | maxDets=100]",
];

/// One ground-truth object (a COCO annotation).
#[derive(Debug, Clone, PartialEq)]
pub struct GtBox {
    /// The image it belongs to.
    pub image_id: u64,
    /// Its category.
    pub category_id: u64,
    /// Box `[x, y, w, h]` in pixels.
    pub bbox: [f64; 4],
    /// The annotation's `area` field (for COCO, the segmentation's area), which decides its
    /// small/medium/large range.
    pub area: f64,
    /// A crowd region: never counted as a miss, and detections on it are ignored.
    pub iscrowd: bool,
}

/// One detection (a COCO result entry).
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    /// The image it was found on.
    pub image_id: u64,
    /// Its predicted category. Detections of a category not in the ground truth's category list
    /// are skipped, as pycocotools does.
    pub category_id: u64,
    /// Box `[x, y, w, h]` in pixels.
    pub bbox: [f64; 4],
    /// Confidence; higher ranks first.
    pub score: f64,
}

/// The ground truth of a dataset: its image and category lists and its objects.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CocoGroundTruth {
    /// Every image evaluated, including those without objects (duplicates are allowed).
    pub image_ids: Vec<u64>,
    /// Every category evaluated, including those without objects (duplicates are allowed).
    pub category_ids: Vec<u64>,
    /// The objects.
    pub annotations: Vec<GtBox>,
}

/// The 12 numbers of `COCOeval.summarize()`, labelled by [`STAT_LABELS`]; -1 where nothing could
/// be measured (no ground truth in that area range).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CocoStats {
    /// AP, AP50, AP75, AP small/medium/large, AR 1/10/100, AR small/medium/large.
    pub stats: [f64; 12],
}

/// Why an evaluation was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CocoEvalError {
    /// A detection with a box or score that is not finite, or a box of negative size.
    #[error("detection {index}: {reason}")]
    InvalidDetection {
        /// Its index in the detection list.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A ground truth with a box or area that is not finite, or a box of negative size.
    #[error("ground truth {index}: {reason}")]
    InvalidGroundTruth {
        /// Its index in the annotation list.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
}

/// Evaluates `detections` against `gt` as pycocotools' `COCOeval(gt, dt, "bbox")` followed by
/// `evaluate()`, `accumulate()` and `summarize()` does.
///
/// Errors name the first annotation or detection that is not finite, has a negative width or
/// height, or lies on an image (or, for ground truths, in a category) missing from `gt`'s lists.
pub fn evaluate(gt: &CocoGroundTruth, detections: &[Detection]) -> Result<CocoStats, CocoEvalError> {
    let images = sorted_unique(&gt.image_ids);
    let categories = sorted_unique(&gt.category_ids);
    let cells = group_by_cell(gt, detections, &images, &categories)?;
    let curves: Vec<[[Option<Curve>; MAX_DETS.len()]; AREA_RANGES.len()]> = cells
        .iter()
        .map(|category_cells| {
            std::array::from_fn(|area| {
                let evals: Vec<ImageEval> = category_cells
                    .iter()
                    .filter_map(|cell| evaluate_image(cell, AREA_RANGES[area]))
                    .collect();
                std::array::from_fn(|max_det| accumulate(&evals, MAX_DETS[max_det]))
            })
        })
        .collect();
    Ok(summarize(&curves))
}

/// The ground truths and detections of one image and category.
#[derive(Default)]
struct Cell<'a> {
    gts: Vec<&'a GtBox>,
    dets: Vec<&'a Detection>,
}

/// The sorted, deduplicated ids.
fn sorted_unique(ids: &[u64]) -> Vec<u64> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Checks every input and sorts it into `cells[category][image]`, keeping input order.
fn group_by_cell<'a>(
    gt: &'a CocoGroundTruth,
    detections: &'a [Detection],
    images: &[u64],
    categories: &[u64],
) -> Result<Vec<Vec<Cell<'a>>>, CocoEvalError> {
    let image_index = index_of(images);
    let category_index = index_of(categories);
    let mut cells: Vec<Vec<Cell>> = (0..categories.len())
        .map(|_| (0..images.len()).map(|_| Cell::default()).collect())
        .collect();
    for (index, g) in gt.annotations.iter().enumerate() {
        let invalid = |reason: String| CocoEvalError::InvalidGroundTruth { index, reason };
        check_box(&g.bbox).map_err(invalid)?;
        if !g.area.is_finite() {
            return Err(invalid(format!("area {} is not finite", g.area)));
        }
        let image = lookup(&image_index, g.image_id, "image").map_err(invalid)?;
        let category = lookup(&category_index, g.category_id, "category").map_err(invalid)?;
        cells[category][image].gts.push(g);
    }
    for (index, d) in detections.iter().enumerate() {
        let invalid = |reason: String| CocoEvalError::InvalidDetection { index, reason };
        check_box(&d.bbox).map_err(invalid)?;
        if !d.score.is_finite() {
            return Err(invalid(format!("score {} is not finite", d.score)));
        }
        let image = lookup(&image_index, d.image_id, "image").map_err(invalid)?;
        if let Some(&category) = category_index.get(&d.category_id) {
            cells[category][image].dets.push(d);
        }
    }
    Ok(cells)
}

/// A map from id to its position in `ids`.
fn index_of(ids: &[u64]) -> HashMap<u64, usize> {
    ids.iter().enumerate().map(|(i, &id)| (id, i)).collect()
}

/// The position of `id` in the ground truth's list of `kind`s.
fn lookup(index: &HashMap<u64, usize>, id: u64, kind: &str) -> Result<usize, String> {
    index
        .get(&id)
        .copied()
        .ok_or_else(|| format!("{kind} id {id} is not in the ground truth's {kind} list"))
}

/// Refuses boxes that are not finite or have a negative width or height.
fn check_box(bbox: &[f64; 4]) -> Result<(), String> {
    if bbox.iter().any(|v| !v.is_finite()) {
        return Err(format!("box {bbox:?} is not finite"));
    }
    if bbox[2] < 0.0 || bbox[3] < 0.0 {
        return Err(format!("box {bbox:?} has a negative width or height"));
    }
    Ok(())
}

/// numpy's `linspace(start, stop, count)`: `i * step + start`, the last value exactly `stop`.
fn linspace<const N: usize>(start: f64, stop: f64) -> [f64; N] {
    let step = (stop - start) / (N - 1) as f64;
    std::array::from_fn(|i| if i == N - 1 { stop } else { i as f64 * step + start })
}

/// IoU of a detection box with a ground-truth box, as pycocotools' `bbIou`: for a crowd region
/// the intersection is divided by the detection's area alone.
fn iou(det: &[f64; 4], gt: &[f64; 4], crowd: bool) -> f64 {
    let w = (det[0] + det[2]).min(gt[0] + gt[2]) - det[0].max(gt[0]);
    if w <= 0.0 {
        return 0.0;
    }
    let h = (det[1] + det[3]).min(gt[1] + gt[3]) - det[1].max(gt[1]);
    if h <= 0.0 {
        return 0.0;
    }
    let intersection = w * h;
    let det_area = det[2] * det[3];
    let union = if crowd {
        det_area
    } else {
        det_area + gt[2] * gt[3] - intersection
    };
    intersection / union
}

/// The outcome of matching one image and category in one area range.
struct ImageEval {
    /// Detection scores, highest first, at most `MAX_DETS`' largest.
    scores: Vec<f64>,
    /// Per detection (in `scores`' order) and IoU threshold: matched to a ground truth.
    matched: Vec<[bool; IOU_COUNT]>,
    /// Per detection and IoU threshold: left out of precision and recall.
    ignored: Vec<[bool; IOU_COUNT]>,
    /// Ground truths that count (not ignored).
    gt_count: usize,
}

/// Matches one image and category's detections to its ground truths at every IoU threshold
/// (pycocotools' `evaluateImg`); `None` when the cell has neither.
fn evaluate_image(cell: &Cell, (lo, hi): (f64, f64)) -> Option<ImageEval> {
    if cell.gts.is_empty() && cell.dets.is_empty() {
        return None;
    }
    let outside = |area: f64| area < lo || area > hi;
    let mut gts = cell.gts.clone();
    gts.sort_by_key(|g| g.iscrowd || outside(g.area));
    let gt_ignored: Vec<bool> = gts.iter().map(|g| g.iscrowd || outside(g.area)).collect();
    let crowd: Vec<bool> = gts.iter().map(|g| g.iscrowd).collect();
    let mut dets = cell.dets.clone();
    dets.sort_by(|a, b| b.score.partial_cmp(&a.score).unwrap_or(Ordering::Equal));
    dets.truncate(MAX_DETS[MAX_DETS.len() - 1]);
    let ious: Vec<Vec<f64>> = dets
        .iter()
        .map(|d| gts.iter().map(|g| iou(&d.bbox, &g.bbox, g.iscrowd)).collect())
        .collect();

    let mut matched = vec![[false; IOU_COUNT]; dets.len()];
    let mut ignored = vec![[false; IOU_COUNT]; dets.len()];
    for (t, threshold) in linspace::<IOU_COUNT>(0.5, 0.95).into_iter().enumerate() {
        let mut gt_taken = vec![false; gts.len()];
        for (d, det_ious) in ious.iter().enumerate() {
            let available = |g: usize| !gt_taken[g] || crowd[g];
            if let Some(g) = best_match(det_ious, threshold, available, &gt_ignored) {
                matched[d][t] = true;
                ignored[d][t] = gt_ignored[g];
                gt_taken[g] = true;
            }
        }
    }
    for (d, det) in dets.iter().enumerate() {
        if outside(det.bbox[2] * det.bbox[3]) {
            for (ignore, matched) in ignored[d].iter_mut().zip(matched[d]) {
                *ignore |= !matched;
            }
        }
    }
    Some(ImageEval {
        scores: dets.iter().map(|d| d.score).collect(),
        matched,
        ignored,
        gt_count: gt_ignored.iter().filter(|&&i| !i).count(),
    })
}

/// The ground truth a detection matches at `threshold`, exactly as pycocotools' loop picks it:
/// ground truths in order (ignored ones last), the best IoU so far replaced by any later one at
/// least as good, and the search stopped at the ignored ones once a counted one matched.
fn best_match(ious: &[f64], threshold: f64, available: impl Fn(usize) -> bool, gt_ignored: &[bool]) -> Option<usize> {
    let mut best_iou = threshold.min(1.0 - 1e-10);
    let mut best = None;
    for (g, &iou) in ious.iter().enumerate() {
        if !available(g) {
            continue;
        }
        if best.is_some_and(|m: usize| !gt_ignored[m] && gt_ignored[g]) {
            break;
        }
        if iou < best_iou {
            continue;
        }
        best_iou = iou;
        best = Some(g);
    }
    best
}

/// One category's precision/recall in one area range with one detection limit.
struct Curve {
    /// Interpolated precision per IoU threshold at each recall threshold.
    precision: [[f64; RECALL_COUNT]; IOU_COUNT],
    /// Final recall per IoU threshold.
    recall: [f64; IOU_COUNT],
}

/// pycocotools' `accumulate` for one category, area range and detection limit: `None` (its -1)
/// when no ground truth counts.
fn accumulate(evals: &[ImageEval], max_det: usize) -> Option<Curve> {
    let gt_count: usize = evals.iter().map(|e| e.gt_count).sum();
    if gt_count == 0 {
        return None;
    }
    let mut ranked: Vec<(f64, &[bool; IOU_COUNT], &[bool; IOU_COUNT])> = evals
        .iter()
        .flat_map(|e| {
            let n = e.scores.len().min(max_det);
            (0..n).map(move |d| (e.scores[d], &e.matched[d], &e.ignored[d]))
        })
        .collect();
    ranked.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap_or(Ordering::Equal));
    let recall_thresholds = linspace::<RECALL_COUNT>(0.0, 1.0);
    let mut curve = Curve {
        precision: [[0.0; RECALL_COUNT]; IOU_COUNT],
        recall: [0.0; IOU_COUNT],
    };
    for t in 0..IOU_COUNT {
        let (recall, precision) = pr_points(ranked.iter().map(|&(_, m, i)| (m[t], i[t])), gt_count);
        curve.recall[t] = recall.last().copied().unwrap_or(0.0);
        for (r, &threshold) in recall_thresholds.iter().enumerate() {
            let at = recall.partition_point(|&rc| rc < threshold);
            curve.precision[t][r] = precision.get(at).copied().unwrap_or(0.0);
        }
    }
    Some(curve)
}

/// Recall and monotone (right-to-left maximum) precision after each counted detection, from
/// `(matched, ignored)` pairs in score order.
fn pr_points(ranked: impl Iterator<Item = (bool, bool)>, gt_count: usize) -> (Vec<f64>, Vec<f64>) {
    let (mut tp, mut fp) = (0.0, 0.0);
    let (mut recall, mut precision) = (Vec::new(), Vec::new());
    for (matched, ignored) in ranked {
        if !ignored {
            if matched {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
        }
        recall.push(tp / gt_count as f64);
        precision.push(tp / (tp + fp + f64::EPSILON));
    }
    for i in (1..precision.len()).rev() {
        precision[i - 1] = precision[i - 1].max(precision[i]);
    }
    (recall, precision)
}

/// The 12 means of `COCOeval.summarize()` over the curves `curves[category][area][max_det]`.
fn summarize(curves: &[[[Option<Curve>; MAX_DETS.len()]; AREA_RANGES.len()]]) -> CocoStats {
    let last = MAX_DETS.len() - 1;
    let ap = |iou: Option<usize>, area: usize| {
        mean_measured(curves.iter().filter_map(|c| c[area][last].as_ref()).flat_map(|c| {
            let rows = iou.map_or(0..IOU_COUNT, |t| t..t + 1);
            c.precision[rows].iter().flatten().copied()
        }))
    };
    let ar = |area: usize, max_det: usize| {
        mean_measured(
            curves
                .iter()
                .filter_map(|c| c[area][max_det].as_ref())
                .flat_map(|c| c.recall),
        )
    };
    CocoStats {
        stats: [
            ap(None, ALL),
            ap(Some(IOU_50), ALL),
            ap(Some(IOU_75), ALL),
            ap(None, SMALL),
            ap(None, MEDIUM),
            ap(None, LARGE),
            ar(ALL, 0),
            ar(ALL, 1),
            ar(ALL, last),
            ar(SMALL, last),
            ar(MEDIUM, last),
            ar(LARGE, last),
        ],
    }
}

/// The mean of the values, or -1 when there are none.
fn mean_measured(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, count) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if count == 0 {
        -1.0
    } else {
        sum / count as f64
    }
}
