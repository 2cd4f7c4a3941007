//! YOLOX's training loss (`YOLOXHead.get_losses`, yolox 0.3.0) on the model's raw level
//! outputs, with SimOTA ([`super::assign`]) choosing the foreground cells.
//!
//! Conventions:
//! - Inputs are [`super::Yolox::forward`]'s levels, `[N, 5 + C, H / s, W / s]` for stride `s`,
//!   channels `(reg x, reg y, reg log w, reg log h, objectness logit, C class logits)`, raw.
//! - Targets are per image a list of [`TargetBox`], corner boxes in input pixels, classes
//!   `0..C`; an image may have none.
//! - Cells are flattened level by level, row-major ([`super::assign`]), to `[N · A, …]` rows
//!   with `A` cells per image; predicted boxes decode to `[cx, cy, w, h]` pixels as
//!   [`super::decode`] does.
//!
//! With `F` foreground cells over the batch, the loss is
//! `(5 · Σ_fg (1 − IoU²) + Σ_all BCE(obj, fg) + Σ_fg BCE(cls, one_hot · IoU) [+ Σ_fg |reg − l1|]) / max(F, 1)`.

use super::TargetBox;
use burn::prelude::*;
use burn::tensor::activation::log_sigmoid;

use super::assign::{center_form, grid_cells, Assignment, Candidates, Cell};

/// YOLOX's weight of the IoU term (`reg_weight`).
const IOU_WEIGHT: f32 = 5.0;

/// YOLOX's loss. `Default` leaves the L1 term off, as YOLOX does until its last,
/// no-augmentation epochs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct YoloxLoss {
    /// Add the L1 term between the raw box outputs and [`super::Cell::l1_target`].
    pub l1: bool,
}

/// The loss's terms, each already divided by `max(num_fg, 1)`, for logging.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LossParts {
    /// `5 · Σ_fg (1 − IoU²)`: the weighted IoU term.
    pub iou: f64,
    /// `Σ_all BCE(objectness, fg)`.
    pub obj: f64,
    /// `Σ_fg BCE(class logits, one_hot(class) · IoU)`.
    pub cls: f64,
    /// `Σ_fg |raw box − L1 target|`; 0 when the term is off.
    pub l1: f64,
    /// Foreground cells over the batch.
    pub num_fg: usize,
    /// Ground-truth boxes over the batch.
    pub num_gt: usize,
}

impl LossParts {
    /// The loss's value: the sum of the four terms.
    pub fn total(&self) -> f64 {
        self.iou + self.obj + self.cls + self.l1
    }
}

/// [`YoloxLoss::forward`]'s result.
#[derive(Debug, Clone)]
pub struct YoloxLossOutput<B: Backend> {
    /// The loss, shape `[1]`, with the levels' gradient graph.
    pub loss: Tensor<B, 1>,
    /// Its terms as numbers.
    pub parts: LossParts,
    /// Each image's SimOTA result.
    pub assignments: Vec<Assignment>,
}

impl YoloxLoss {
    /// The loss of the batch's `levels` (one per entry of `strides`) against `targets` (one
    /// list per image).
    ///
    /// # Panics
    /// If `levels` is empty or not as long as `strides`, the levels disagree on batch size or
    /// channels, a level has fewer than 5 channels, `targets` is not one list per image, or a
    /// target's class is not below the number of classes.
    pub fn forward<B: Backend>(
        &self,
        levels: &[Tensor<B, 4>],
        strides: &[usize],
        targets: &[Vec<TargetBox>],
    ) -> YoloxLossOutput<B> {
        assert!(
            !levels.is_empty() && levels.len() == strides.len(),
            "one stride per level"
        );
        let [n, width, _, _] = levels[0].dims();
        assert!(width >= 5, "levels need 5 + classes channels, got {width}");
        assert!(
            levels.iter().all(|l| l.dims()[..2] == [n, width]),
            "levels disagree on batch size or channels"
        );
        assert_eq!(targets.len(), n, "one target list per image");
        let classes = width - 5;
        let device = levels[0].device();
        let sizes: Vec<[usize; 2]> = levels.iter().map(|l| [l.dims()[2], l.dims()[3]]).collect();
        let cells = grid_cells(&sizes, strides);
        let a = cells.len();

        let (raw, boxes) = flatten(levels, &cells);
        let assignments = assign_batch(&cells, targets, &raw, &boxes, classes);
        let fg = Foreground::new(&assignments, targets, &cells, classes, self.l1);
        let num_fg = fg.rows.len();
        let num_gt = targets.iter().map(Vec::len).sum();

        // The loss terms, summed.
        let mut objectness = vec![0f32; n * a];
        for &row in &fg.rows {
            objectness[row as usize] = 1.0;
        }
        let objectness = Tensor::from_data(TensorData::new(objectness, [n * a, 1]), &device);
        let obj = bce_with_logits(raw.clone().narrow(1, 4, 1), objectness).sum();
        let zero = || Tensor::<B, 1>::zeros([1], &device);
        let (iou, cls, l1) = if num_fg == 0 {
            (zero(), zero(), zero())
        } else {
            let rows = index(fg.rows, &device);
            let target = |values: Vec<f32>, width: usize| {
                Tensor::<B, 2>::from_data(TensorData::new(values, [num_fg, width]), &device)
            };
            let iou = iou_loss(boxes.select(0, rows.clone()), target(fg.boxes, 4)).sum();
            let fg_raw = raw.select(0, rows);
            let cls = bce_with_logits(fg_raw.clone().narrow(1, 5, classes), target(fg.classes, classes)).sum();
            let l1 = if self.l1 {
                (fg_raw.narrow(1, 0, 4) - target(fg.l1, 4)).abs().sum()
            } else {
                zero()
            };
            (iou.mul_scalar(IOU_WEIGHT), cls, l1)
        };
        let terms = Tensor::cat(vec![iou, obj, cls, l1], 0).div_scalar(num_fg.max(1) as f32);
        let values = to_f32(terms.clone().detach());
        let parts = LossParts {
            iou: values[0] as f64,
            obj: values[1] as f64,
            cls: values[2] as f64,
            l1: values[3] as f64,
            num_fg,
            num_gt,
        };
        YoloxLossOutput {
            loss: terms.sum(),
            parts,
            assignments,
        }
    }
}

/// The batch's raw outputs `[N · A, 5 + C]` and decoded boxes `[N · A, 4]` (`[cx, cy, w, h]`
/// pixels), rows image-major, cells in `cells`' order.
fn flatten<B: Backend>(levels: &[Tensor<B, 4>], cells: &[Cell]) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let [n, width, _, _] = levels[0].dims();
    let (a, device) = (cells.len(), levels[0].device());
    let raw = Tensor::cat(
        levels
            .iter()
            .map(|l| {
                let [_, _, h, w] = l.dims();
                l.clone().reshape([n, width, h * w]).swap_dims(1, 2)
            })
            .collect(),
        1,
    );
    let offsets: Vec<f32> = cells.iter().flat_map(|c| [c.col as f32, c.row as f32]).collect();
    let offsets = Tensor::<B, 3>::from_data(TensorData::new(offsets, [1, a, 2]), &device);
    let scales: Vec<f32> = cells.iter().map(|c| c.stride as f32).collect();
    let scales = Tensor::<B, 3>::from_data(TensorData::new(scales, [1, a, 1]), &device);
    let boxes = Tensor::cat(
        vec![
            (raw.clone().narrow(2, 0, 2) + offsets) * scales.clone(),
            raw.clone().narrow(2, 2, 2).exp() * scales,
        ],
        2,
    );
    (raw.reshape([n * a, width]), boxes.reshape([n * a, 4]))
}

/// SimOTA for every image, on the host: only the candidate cells' boxes and logits leave the
/// device, in one transfer; images are handled on parallel threads.
fn assign_batch<B: Backend>(
    cells: &[Cell],
    targets: &[Vec<TargetBox>],
    raw: &Tensor<B, 2>,
    boxes: &Tensor<B, 2>,
    classes: usize,
) -> Vec<Assignment> {
    let a = cells.len();
    let candidates = parallel_map(targets, |gts| Candidates::new(cells, gts));
    let rows: Vec<i64> = candidates
        .iter()
        .enumerate()
        .flat_map(|(i, c)| c.cells().iter().map(move |&cell| (i * a + cell) as i64))
        .collect();
    let predicted = if rows.is_empty() {
        Vec::new()
    } else {
        let device = raw.device();
        let detached = Tensor::cat(vec![boxes.clone(), raw.clone().narrow(1, 4, 1 + classes)], 1).detach();
        to_f32(detached.select(0, index(rows, &device)))
    };
    let mut rest = predicted.as_slice();
    let jobs: Vec<(&Candidates, &[f32])> = candidates
        .iter()
        .map(|c| {
            let (mine, others) = rest.split_at(c.cells().len() * (5 + classes));
            rest = others;
            (c, mine)
        })
        .collect();
    parallel_map(&jobs, |(c, rows)| c.assign(rows, classes))
}

/// `items.iter().map(f)`, in order, spread over the available cores; a panic in `f` is
/// re-raised.
fn parallel_map<'a, T: Sync, R: Send>(items: &'a [T], f: impl Fn(&'a T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_thread = items.len().div_ceil(threads).max(1);
    let f = &f;
    std::thread::scope(|scope| {
        let workers: Vec<_> = items
            .chunks(per_thread)
            .map(|chunk| scope.spawn(move || chunk.iter().map(f).collect::<Vec<_>>()))
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect()
    })
}

/// The batch's foreground on the host, row-aligned: rows of the flattened outputs, gt boxes
/// `[cx, cy, w, h]`, class targets `one_hot(class) · IoU`, L1 targets (when on).
struct Foreground {
    rows: Vec<i64>,
    boxes: Vec<f32>,
    classes: Vec<f32>,
    l1: Vec<f32>,
}

impl Foreground {
    fn new(assignments: &[Assignment], targets: &[Vec<TargetBox>], cells: &[Cell], classes: usize, l1: bool) -> Self {
        let mut fg = Self {
            rows: Vec::new(),
            boxes: Vec::new(),
            classes: Vec::new(),
            l1: Vec::new(),
        };
        for (i, (assignment, gts)) in assignments.iter().zip(targets).enumerate() {
            for m in &assignment.matches {
                let xyxy = &gts[m.gt].xyxy;
                fg.rows.push((i * cells.len() + m.cell) as i64);
                fg.boxes.extend(center_form(xyxy));
                fg.classes
                    .extend((0..classes).map(|c| if c == m.class { m.iou } else { 0.0 }));
                if l1 {
                    fg.l1.extend(cells[m.cell].l1_target(xyxy));
                }
            }
        }
        fg
    }
}

fn index<B: Backend>(rows: Vec<i64>, device: &B::Device) -> Tensor<B, 1, Int> {
    let len = rows.len();
    Tensor::from_data(TensorData::new(rows, [len]), device)
}

fn to_f32<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().expect("converted to f32")
}

/// PyTorch's `BCEWithLogitsLoss(reduction="none")`: `−[t·ln σ(x) + (1 − t)·ln(1 − σ(x))]`,
/// computed as `softplus(x) − x·t` with `softplus(x) = −ln σ(−x)`, which is stable for any `x`
/// (equal to `max(x, 0) − x·t + ln(1 + e^−|x|)`) and whose gradient is exactly `σ(x) − t`.
fn bce_with_logits<B: Backend, const D: usize>(logits: Tensor<B, D>, targets: Tensor<B, D>) -> Tensor<B, D> {
    log_sigmoid(logits.clone().neg()).neg() - logits * targets
}

/// YOLOX's `IOUloss(loss_type="iou")` per row: `1 − IoU²` between centre-form boxes `[F, 4]`,
/// IoU = intersection / (union + 1e-16). Shape `[F]`.
fn iou_loss<B: Backend>(pred: Tensor<B, 2>, target: Tensor<B, 2>) -> Tensor<B, 1> {
    let rows = pred.dims()[0];
    let corners = |b: Tensor<B, 2>| {
        let center = b.clone().narrow(1, 0, 2);
        let half = b.narrow(1, 2, 2).div_scalar(2.0);
        (center.clone() - half.clone(), center + half)
    };
    let area = |b: Tensor<B, 2>| b.clone().narrow(1, 2, 1) * b.narrow(1, 3, 1);
    let (pred_tl, pred_br) = corners(pred.clone());
    let (target_tl, target_br) = corners(target.clone());
    let overlap = (pred_br.min_pair(target_br) - pred_tl.max_pair(target_tl)).clamp_min(0.0);
    let intersection = overlap.clone().narrow(1, 0, 1) * overlap.narrow(1, 1, 1);
    let union = area(pred) + area(target) - intersection.clone();
    let iou = intersection / union.add_scalar(1e-16);
    iou.powi_scalar(2).neg().add_scalar(1.0).reshape([rows])
}

#[cfg(test)]
mod tests;
