//! SimOTA label assignment, as YOLOX 0.3.0's `YOLOXHead.get_assignments` (its
//! `get_in_boxes_info` and `dynamic_k_matching`), on host data without gradients. Upstream's
//! main branch later replaced the geometry with `get_geometry_constraint` (centre square of 1.5
//! strides only, penalty 1e6); neither the released 0.3.0 package nor this module does that.
//!
//! Conventions:
//! - A *cell* is one grid position of one level. Cells are numbered level by level, in the
//!   order the model emits the levels (strides 8, 16, 32), row-major within a level: the order
//!   of YOLOX's flattened outputs.
//! - Lengths are in input-image pixels. Ground-truth boxes are corner form `[x1, y1, x2, y2]`
//!   ([`TargetBox`]); predicted boxes are decoded centre form `[cx, cy, w, h]` with
//!   `cx = (reg_x + col) · stride`, `w = exp(reg_w) · stride`.
//! - The geometry test uses each cell's centre `((col + 0.5) · stride, (row + 0.5) · stride)`,
//!   as YOLOX does, although the box decoding offsets from the cell's corner.
//!
//! The assignment runs in two steps so that only the candidates' predictions need to leave the
//! device: [`Candidates::new`] needs the geometry alone, [`Candidates::assign`] the candidates'
//! predicted rows.

use super::decode::sigmoid;
use super::TargetBox;

/// Half-width of the square around a gt centre, in strides, whose cells are candidates.
const CENTER_RADIUS: f32 = 2.5;
/// Weight of the IoU cost `−ln(IoU + 1e-8)`.
const IOU_COST_WEIGHT: f32 = 3.0;
/// Cost added to a pair whose cell is not both in the gt box and in its centre square.
const OUTSIDE_COST: f32 = 1e5;
/// Dynamic k sums a gt's largest IoUs over at most this many candidates.
const DYNAMIC_K_IOUS: usize = 10;
/// PyTorch's `binary_cross_entropy` clamps each log term at −100.
const MAX_LOG_LOSS: f32 = 100.0;

/// One grid cell of one output level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cell {
    /// Column in the level's grid.
    pub col: usize,
    /// Row in the level's grid.
    pub row: usize,
    /// The level's stride, in pixels.
    pub stride: usize,
}

impl Cell {
    /// The anchor point of the geometry test: the cell's centre in pixels,
    /// `[(col + 0.5) · stride, (row + 0.5) · stride]`.
    pub fn center(&self) -> [f32; 2] {
        let s = self.stride as f32;
        [(self.col as f32 + 0.5) * s, (self.row as f32 + 0.5) * s]
    }

    /// YOLOX's L1 target (`get_l1_target`) for the raw box outputs of this cell when it
    /// predicts the corner box `xyxy`: `[cx / s − col, cy / s − row, ln(w / s + 1e-8),
    /// ln(h / s + 1e-8)]`, the inverse of the box decoding.
    pub fn l1_target(&self, xyxy: &[f32; 4]) -> [f32; 4] {
        let [cx, cy, w, h] = center_form(xyxy);
        let s = self.stride as f32;
        [
            cx / s - self.col as f32,
            cy / s - self.row as f32,
            (w / s + 1e-8).ln(),
            (h / s + 1e-8).ln(),
        ]
    }
}

/// Every cell of levels of `sizes[i] = [height, width]` at `strides[i]`, in the numbering the
/// module documents.
pub fn grid_cells(sizes: &[[usize; 2]], strides: &[usize]) -> Vec<Cell> {
    sizes
        .iter()
        .zip(strides)
        .flat_map(|(&[h, w], &stride)| {
            (0..h * w).map(move |i| Cell {
                col: i % w,
                row: i / w,
                stride,
            })
        })
        .collect()
}

/// `[x1, y1, x2, y2]` to `[cx, cy, w, h]`.
pub(crate) fn center_form(xyxy: &[f32; 4]) -> [f32; 4] {
    let [x1, y1, x2, y2] = *xyxy;
    [(x1 + x2) / 2.0, (y1 + y2) / 2.0, x2 - x1, y2 - y1]
}

/// One foreground cell and the gt it learns.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Match {
    /// The cell's number (module conventions).
    pub cell: usize,
    /// Index of the gt in the image's target list.
    pub gt: usize,
    /// The gt's class.
    pub class: usize,
    /// IoU between the cell's predicted box and the gt: the class target's value.
    pub iou: f32,
}

/// One image's SimOTA result.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Assignment {
    /// The foreground cells, ascending by cell number; every cell appears at most once.
    pub matches: Vec<Match>,
}

impl Assignment {
    /// The number of foreground cells.
    pub fn num_fg(&self) -> usize {
        self.matches.len()
    }
}

/// SimOTA's geometry step for one image: the candidate cells, those whose centre lies inside
/// some gt box or within 2.5 strides of some gt centre (both tests strict, as YOLOX's).
#[derive(Debug, Clone)]
pub struct Candidates<'a> {
    gts: &'a [TargetBox],
    cells: Vec<usize>,
    /// `[candidate][gt]`: the candidate's centre is both inside the gt box and inside its
    /// centre square.
    in_both: Vec<bool>,
}

impl<'a> Candidates<'a> {
    /// The candidates among `cells` for the image's `gts`.
    pub fn new(cells: &[Cell], gts: &'a [TargetBox]) -> Self {
        let bounds: Vec<[f32; 6]> = gts
            .iter()
            .map(|gt| {
                let [x1, y1, x2, y2] = gt.xyxy;
                let [cx, cy, _, _] = center_form(&gt.xyxy);
                [x1, y1, x2, y2, cx, cy]
            })
            .collect();
        let mut candidates = Vec::new();
        let mut in_both = Vec::new();
        for (index, cell) in cells.iter().enumerate() {
            let [x, y] = cell.center();
            let radius = CENTER_RADIUS * cell.stride as f32;
            let start = in_both.len();
            let mut any = false;
            for &[x1, y1, x2, y2, cx, cy] in &bounds {
                let in_box = (x - x1 > 0.0) & (x2 - x > 0.0) & (y - y1 > 0.0) & (y2 - y > 0.0);
                let in_center = (x - (cx - radius) > 0.0)
                    & ((cx + radius) - x > 0.0)
                    & (y - (cy - radius) > 0.0)
                    & ((cy + radius) - y > 0.0);
                any |= in_box | in_center;
                in_both.push(in_box & in_center);
            }
            if any {
                candidates.push(index);
            } else {
                in_both.truncate(start);
            }
        }
        Self {
            gts,
            cells: candidates,
            in_both,
        }
    }

    /// The candidate cells' numbers, ascending.
    pub fn cells(&self) -> &[usize] {
        &self.cells
    }

    /// SimOTA's matching, given the candidates' predictions `rows`, one row of `5 + classes`
    /// values per candidate in [`Self::cells`] order: decoded box `[cx, cy, w, h]` in pixels,
    /// objectness logit, class logits.
    ///
    /// Per (gt, candidate) pair, cost = Σ over classes of BCE(√(σ(class)·σ(obj)), one-hot gt
    /// class) + 3·(−ln(IoU + 1e-8)) + 1e5 when the candidate is not both in the gt box and its
    /// centre square. Each gt takes its `k` cheapest candidates, `k` = max(1, ⌊sum of its
    /// min(10, candidates) largest IoUs⌋); a candidate taken by several gts goes to the gt
    /// with the lowest cost for it (over all gts, as YOLOX's `torch.min(cost[:, …], dim=0)`).
    /// Ties go to the lower index.
    ///
    /// # Panics
    /// If `rows` is not `candidates × (5 + classes)` long, or a gt's class is not below
    /// `classes`.
    pub fn assign(&self, rows: &[f32], classes: usize) -> Assignment {
        let m = self.cells.len();
        let width = 5 + classes;
        assert_eq!(
            rows.len(),
            m * width,
            "{m} candidates need {m} rows of {width} predictions"
        );
        if let Some(gt) = self.gts.iter().find(|gt| gt.class >= classes) {
            panic!("gt class {} is not below the {classes} classes", gt.class);
        }
        if m == 0 || self.gts.is_empty() {
            return Assignment::default();
        }
        let costs = PairCosts::new(self, rows, classes);

        // Each gt's k cheapest candidates; k ≤ 10, so bounded lists replace full sorts.
        let n = DYNAMIC_K_IOUS.min(m);
        let mut taken_by = vec![0u32; m];
        let mut owner = vec![0usize; m];
        for g in 0..self.gts.len() {
            let mut best_ious = Smallest::new(n);
            let mut cheapest = Smallest::new(n);
            for c in 0..m {
                let (cost, iou) = costs.pair(g, c);
                best_ious.push(-iou, c);
                cheapest.push(cost, c);
            }
            let iou_sum: f32 = best_ious.items.iter().map(|&(neg, _)| -neg).sum();
            let k = (iou_sum as usize).clamp(1, n);
            for &(_, c) in cheapest.items.iter().take(k) {
                taken_by[c] += 1;
                owner[c] = g;
            }
        }

        let matches = (0..m)
            .filter(|&c| taken_by[c] > 0)
            .map(|c| {
                let gt = if taken_by[c] > 1 {
                    (0..self.gts.len())
                        .map(|g| (costs.pair(g, c).0, g))
                        .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)))
                        .map_or(owner[c], |(_, g)| g)
                } else {
                    owner[c]
                };
                let iou = costs.pair(gt, c).1;
                Match {
                    cell: self.cells[c],
                    gt,
                    class: self.gts[gt].class,
                    iou,
                }
            })
            .collect();
        Assignment { matches }
    }
}

/// The (cost, IoU) of any (gt, candidate) pair, from per-candidate precomputations.
struct PairCosts<'c> {
    candidates: &'c Candidates<'c>,
    /// Per candidate, the predicted box `[x1, y1, x2, y2, area]`.
    boxes: Vec<[f32; 5]>,
    /// `[candidate][slot]`: the class cost for a gt of the class in `slot`.
    class_costs: Vec<f32>,
    /// Per gt, its class's slot: only the classes of the gts get a column.
    slots: Vec<usize>,
    slot_count: usize,
}

impl<'c> PairCosts<'c> {
    fn new(candidates: &'c Candidates<'c>, rows: &[f32], classes: usize) -> Self {
        let mut slot_of_class = vec![None; classes];
        let mut slot_count = 0;
        let slots = candidates
            .gts
            .iter()
            .map(|gt| {
                *slot_of_class[gt.class].get_or_insert_with(|| {
                    slot_count += 1;
                    slot_count - 1
                })
            })
            .collect();
        let mut boxes = Vec::with_capacity(candidates.cells.len());
        let mut class_costs = Vec::with_capacity(candidates.cells.len() * slot_count);
        let mut deltas = vec![0f32; slot_count];
        for row in rows.chunks_exact(5 + classes) {
            let [cx, cy, w, h] = [row[0], row[1], row[2], row[3]];
            boxes.push([cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0, w * h]);
            // BCE against one-hot class k: Σ_c −ln(1 − p_c), with class k's term swapped for −ln p_k.
            let objectness = sigmoid(row[4]);
            let mut all_negative = 0.0;
            for (&logit, slot) in row[5..].iter().zip(&slot_of_class) {
                let p = (sigmoid(logit) * objectness).sqrt();
                all_negative += bce_negative(p);
                if let Some(s) = *slot {
                    deltas[s] = bce_positive(p) - bce_negative(p);
                }
            }
            class_costs.extend(deltas.iter().map(|d| all_negative + d));
        }
        Self {
            candidates,
            boxes,
            class_costs,
            slots,
            slot_count,
        }
    }

    fn pair(&self, gt: usize, candidate: usize) -> (f32, f32) {
        let g = self.candidates.gts.len();
        let iou = iou(&self.candidates.gts[gt].xyxy, &self.boxes[candidate]);
        let outside = if self.candidates.in_both[candidate * g + gt] {
            0.0
        } else {
            OUTSIDE_COST
        };
        let class_cost = self.class_costs[candidate * self.slot_count + self.slots[gt]];
        (class_cost + IOU_COST_WEIGHT * -(iou + 1e-8).ln() + outside, iou)
    }
}

/// The `capacity` smallest `(key, index)` pushed, ascending by key then index; NaN keys are
/// never kept.
struct Smallest {
    items: Vec<(f32, usize)>,
    capacity: usize,
}

impl Smallest {
    fn new(capacity: usize) -> Self {
        Self {
            items: Vec::with_capacity(capacity + 1),
            capacity,
        }
    }

    /// Indices must be pushed in ascending order, so equal keys stay in index order.
    fn push(&mut self, key: f32, index: usize) {
        let full = self.items.len() == self.capacity;
        if key.is_nan() || full && self.items.last().is_some_and(|&(worst, _)| key >= worst) {
            return;
        }
        let at = self.items.partition_point(|&(k, _)| k <= key);
        self.items.insert(at, (key, index));
        self.items.truncate(self.capacity);
    }
}

/// IoU of a corner box and a predicted box `[x1, y1, x2, y2, area]` (YOLOX's `bboxes_iou`; 0
/// when the union is empty).
fn iou(gt: &[f32; 4], pred: &[f32; 5]) -> f32 {
    let (ix1, iy1) = (gt[0].max(pred[0]), gt[1].max(pred[1]));
    let (ix2, iy2) = (gt[2].min(pred[2]), gt[3].min(pred[3]));
    let inter = if ix1 < ix2 && iy1 < iy2 {
        (ix2 - ix1) * (iy2 - iy1)
    } else {
        0.0
    };
    let union = (gt[2] - gt[0]) * (gt[3] - gt[1]) + pred[4] - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

/// BCE of probability `p` against target 1: `−ln p`, clamped as PyTorch does.
fn bce_positive(p: f32) -> f32 {
    (-p.ln()).min(MAX_LOG_LOSS)
}

/// BCE of probability `p` against target 0: `−ln(1 − p)`, clamped as PyTorch does.
fn bce_negative(p: f32) -> f32 {
    (-(1.0 - p).ln()).min(MAX_LOG_LOSS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gt(class: usize, xyxy: [f32; 4]) -> TargetBox {
        TargetBox { class, xyxy }
    }

    /// One 8×8 level at stride 8 (a 64×64 image).
    fn level_8x8() -> Vec<Cell> {
        grid_cells(&[[8, 8]], &[8])
    }

    /// Rows for `candidates` (2 classes): every candidate predicts a box far outside the image
    /// (IoU 0), objectness and class logits 0, except the cells of `set`.
    fn rows(candidates: &Candidates, set: &[(usize, [f32; 7])]) -> Vec<f32> {
        candidates
            .cells()
            .iter()
            .flat_map(|cell| {
                set.iter()
                    .find(|(c, _)| c == cell)
                    .map_or([-1000.0, -1000.0, 8.0, 8.0, 0.0, 0.0, 0.0], |(_, row)| *row)
            })
            .collect()
    }

    /// The class cost of a candidate whose class probabilities are `p` for gt class `class`.
    fn class_cost(p: &[f64], class: usize) -> f64 {
        p.iter()
            .enumerate()
            .map(|(c, &p)| if c == class { -p.ln() } else { -(1.0 - p).ln() })
            .sum()
    }

    fn sigmoid64(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    #[test]
    fn cells_are_numbered_level_by_level_row_major() {
        let cells = grid_cells(&[[2, 3], [1, 2]], &[8, 16]);
        assert_eq!(cells.len(), 8);
        assert_eq!(
            cells[4],
            Cell {
                col: 1,
                row: 1,
                stride: 8
            }
        );
        assert_eq!(
            cells[7],
            Cell {
                col: 1,
                row: 0,
                stride: 16
            }
        );
        assert_eq!(cells[7].center(), [24.0, 8.0]);
    }

    #[test]
    fn l1_target_inverts_the_decoding() {
        // Cell (col 3, row 2) at stride 16; gt centre (56, 52), size 32 × 64.
        let cell = Cell {
            col: 3,
            row: 2,
            stride: 16,
        };
        let t = cell.l1_target(&[40.0, 20.0, 72.0, 84.0]);
        let want = [56.0 / 16.0 - 3.0, 52.0 / 16.0 - 2.0, 2f32.ln(), 4f32.ln()];
        for (got, want) in t.iter().zip(want) {
            assert!((got - want).abs() < 1e-6, "{t:?}");
        }
        assert_eq!(t[..2], [0.5, 1.25]);
    }

    #[test]
    fn candidates_are_in_box_or_in_centre_square() {
        // gt 0 [8, 8, 24, 24]: centre (16, 16); in box: centres 12, 20 (cols/rows 1–2); centre
        // square (−4, 36): cols/rows 0–3. gt 1 [10, 8, 30, 24]: centre (20, 16); in box: x
        // centres 12, 20, 28 (cols 1–3), rows 1–2; centre square x (0, 40): cols 0–4, rows 0–3.
        let cells = level_8x8();
        let gts = [gt(0, [8.0, 8.0, 24.0, 24.0]), gt(1, [10.0, 8.0, 30.0, 24.0])];
        let candidates = Candidates::new(&cells, &gts);
        let want: Vec<usize> = (0..4).flat_map(|row| (0..5).map(move |col| row * 8 + col)).collect();
        assert_eq!(candidates.cells(), want.as_slice());
        let in_both = |gi: usize| -> Vec<usize> {
            (0..want.len())
                .filter(|&c| candidates.in_both[c * 2 + gi])
                .map(|c| want[c])
                .collect()
        };
        assert_eq!(in_both(0), vec![9, 10, 17, 18]);
        assert_eq!(in_both(1), vec![9, 10, 11, 17, 18, 19]);
        // Col 5 (centre 44) is in neither gt's box nor centre square.
        assert!(!candidates.cells().contains(&5));
    }

    #[test]
    fn simota_matches_by_cost_and_resolves_a_conflict() {
        // The gts of `candidates_are_in_box_or_in_centre_square`. Hand-set cells (objectness
        // logit 10, so √(σ(cls)·σ(obj)) ≈ √σ(cls)):
        // - P (cell 9) predicts gt 0's box exactly but favours class 1 (logits −4, 4);
        // - Q (cell 10) predicts gt 1's box exactly but favours class 0 (logits 4, −4);
        // - R (cell 18) predicts gt 0's box exactly and favours class 0.
        let cells = level_8x8();
        let gts = [gt(0, [8.0, 8.0, 24.0, 24.0]), gt(1, [10.0, 8.0, 30.0, 24.0])];
        let candidates = Candidates::new(&cells, &gts);
        let box0 = [16.0, 16.0, 16.0, 16.0];
        let box1 = [20.0, 16.0, 20.0, 16.0];
        let row = |b: [f32; 4], l0: f32, l1: f32| [b[0], b[1], b[2], b[3], 10.0, l0, l1];
        let set = [
            (9, row(box0, -4.0, 4.0)),
            (10, row(box1, 4.0, -4.0)),
            (18, row(box0, 4.0, -4.0)),
        ];
        let assignment = candidates.assign(&rows(&candidates, &set), 2);

        // IoU(gt 0, gt 1 box) = (14·16) / (256 + 320 − 224) = 224 / 352.
        let cross = 224.0 / 352.0;
        // Dynamic k: gt 0's IoUs are 1 (P), 1 (R), 0.636 (Q), 0 elsewhere → ⌊2.64⌋ = 2; gt 1's
        // are 1 (Q), 0.636 (P), 0.636 (R) → ⌊2.27⌋ = 2.
        let p_hi = (sigmoid64(4.0) * sigmoid64(10.0)).sqrt();
        let p_lo = (sigmoid64(-4.0) * sigmoid64(10.0)).sqrt();
        let iou_cost = |iou: f64| -3.0 * (iou + 1e-8).ln();
        // gt 0 (class 0): R = good class + IoU 1; Q = good class + IoU 0.636; P = bad class.
        let (cost0_r, cost0_q, cost0_p) = (
            class_cost(&[p_hi, p_lo], 0) + iou_cost(1.0),
            class_cost(&[p_hi, p_lo], 0) + iou_cost(cross),
            class_cost(&[p_lo, p_hi], 0) + iou_cost(1.0),
        );
        assert!(cost0_r < cost0_q && cost0_q < cost0_p, "{cost0_r} {cost0_q} {cost0_p}");
        // gt 1 (class 1): P = good class + IoU 0.636; Q = bad class + IoU 1; R = bad + 0.636.
        let (cost1_p, cost1_q, cost1_r) = (
            class_cost(&[p_lo, p_hi], 1) + iou_cost(cross),
            class_cost(&[p_hi, p_lo], 1) + iou_cost(1.0),
            class_cost(&[p_hi, p_lo], 1) + iou_cost(cross),
        );
        assert!(cost1_p < cost1_q && cost1_q < cost1_r, "{cost1_p} {cost1_q} {cost1_r}");
        // So gt 0 takes {R, Q}, gt 1 takes {P, Q}; Q is cheaper for gt 0 (≈ 1.51 < ≈ 6.72).
        assert!(cost0_q < cost1_q);

        let got: Vec<(usize, usize, usize)> = assignment.matches.iter().map(|m| (m.cell, m.gt, m.class)).collect();
        assert_eq!(got, vec![(9, 1, 1), (10, 0, 0), (18, 0, 0)]);
        assert_eq!(assignment.num_fg(), 3);
        let ious: Vec<f32> = assignment.matches.iter().map(|m| m.iou).collect();
        for (got, want) in ious.iter().zip([cross, cross, 1.0]) {
            assert!((*got as f64 - want).abs() < 1e-6, "{ious:?}");
        }
    }

    #[test]
    fn a_gt_between_cell_centres_still_gets_its_cheapest_candidate() {
        // gt [0, 0, 2, 2] holds no cell centre (the first is at 4), so every pair pays the
        // outside cost; its centre square (−19, 21) makes cols/rows 0–2 candidates. All IoUs
        // are 0, so k = 1, and the cheapest candidate is the one whose class is most likely.
        let cells = level_8x8();
        let gts = [gt(1, [0.0, 0.0, 2.0, 2.0])];
        let candidates = Candidates::new(&cells, &gts);
        assert_eq!(candidates.cells(), &[0, 1, 2, 8, 9, 10, 16, 17, 18]);
        let set = [(17, [-1000.0, -1000.0, 8.0, 8.0, 3.0, -2.0, 3.0])];
        let assignment = candidates.assign(&rows(&candidates, &set), 2);
        let got: Vec<(usize, usize, usize)> = assignment.matches.iter().map(|m| (m.cell, m.gt, m.class)).collect();
        assert_eq!(got, vec![(17, 0, 1)]);
        assert_eq!(assignment.matches[0].iou, 0.0);
    }

    #[test]
    fn dynamic_k_counts_the_ten_best_ious() {
        // One gt [0, 0, 64, 64] covering the whole 8×8 level: all 64 cells are in the box, and
        // those within 20 px of (32, 32), cols/rows 2–5, also in the centre square. Twelve of
        // these predict the left half of the image (IoU 0.5), the rest IoU 0: the ten best
        // IoUs sum to 5, so the gt takes 5 cells, the cheapest: the highest class logits.
        let cells = level_8x8();
        let gts = [gt(0, [0.0, 0.0, 64.0, 64.0])];
        let candidates = Candidates::new(&cells, &gts);
        assert_eq!(candidates.cells().len(), 64);
        let half_image = [18, 19, 20, 21, 26, 27, 28, 29, 34, 35, 36, 37];
        let set: Vec<(usize, [f32; 7])> = half_image
            .iter()
            .enumerate()
            .map(|(i, &cell)| (cell, [16.0, 32.0, 32.0, 64.0, 0.0, i as f32 / 10.0, 0.0]))
            .collect();
        let assignment = candidates.assign(&rows(&candidates, &set), 2);
        let got: Vec<usize> = assignment.matches.iter().map(|m| m.cell).collect();
        assert_eq!(got, vec![29, 34, 35, 36, 37]);
        assert!(assignment.matches.iter().all(|m| (m.iou - 0.5).abs() < 1e-6));
    }

    #[test]
    fn nothing_to_assign_without_gts_or_candidates() {
        let cells = level_8x8();
        let none = Candidates::new(&cells, &[]);
        assert!(none.cells().is_empty());
        assert_eq!(none.assign(&[], 2).num_fg(), 0);
        // A gt far outside the image has no candidate.
        let far = [gt(0, [500.0, 500.0, 510.0, 510.0])];
        let candidates = Candidates::new(&cells, &far);
        assert!(candidates.cells().is_empty());
        assert_eq!(candidates.assign(&[], 2), Assignment::default());
    }

    #[test]
    fn class_cost_clamps_like_pytorch() {
        // σ(100) is 1 in f32: −ln(1 − p) would be infinite; PyTorch clamps the log at −100.
        let p = (sigmoid(100.0) * sigmoid(100.0)).sqrt();
        assert_eq!(bce_negative(p), 100.0);
        assert!((bce_positive(0.5) - std::f32::consts::LN_2).abs() < 1e-7);
    }
}
