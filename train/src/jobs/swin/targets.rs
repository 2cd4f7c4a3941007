//! Swin-Transformer's training targets and loss (timm's, as its `main.py` uses them): soft
//! one-hot targets with label smoothing, mixed between each sample and its partner in the
//! reversed batch (`mixup_target`), scored by the soft-target cross-entropy
//! `mean_n Σ_c −target[n, c] · log_softmax(logits)[n, c]`.

use burn::prelude::*;
use burn::tensor::activation::log_softmax;

/// The soft targets `[N, classes]` of `labels` mixed with weight `lam` (timm's `mixup_target`):
/// each row is `lam · smooth(label[n]) + (1 − lam) · smooth(label[N − 1 − n])`, where `smooth`
/// puts `1 − smoothing + smoothing / classes` on the label and `smoothing / classes` elsewhere.
/// `lam = 1` gives the plain smoothed one-hot targets.
pub fn mixup_targets(labels: &[usize], classes: usize, lam: f64, smoothing: f64) -> Vec<f32> {
    let off = smoothing / classes as f64;
    let on = 1.0 - smoothing + off;
    let n = labels.len();
    let mut targets = vec![0.0f32; n * classes];
    for (i, row) in targets.chunks_mut(classes).enumerate() {
        for (c, t) in row.iter_mut().enumerate() {
            let value = |label: usize| if label == c { on } else { off };
            *t = (lam * value(labels[i]) + (1.0 - lam) * value(labels[n - 1 - i])) as f32;
        }
    }
    targets
}

/// timm's `SoftTargetCrossEntropy`: the mean over the batch of `Σ_c −target · log_softmax`.
pub fn soft_target_cross_entropy<B: Backend>(logits: Tensor<B, 2>, targets: Tensor<B, 2>) -> Tensor<B, 1> {
    let [n, _] = logits.dims();
    (targets * log_softmax(logits, 1)).sum().neg().div_scalar(n as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn_flex::Flex;

    #[test]
    fn targets_are_smoothed_and_mixed_with_the_reversed_batch() {
        // 3 samples, 4 classes, smoothing 0.1: off = 0.025, on = 0.925; lam 0.7.
        let t = mixup_targets(&[0, 2, 3], 4, 0.7, 0.1);
        let row = |i: usize| &t[i * 4..(i + 1) * 4];
        // Sample 0 mixes with sample 2 (label 3): class 0 0.7·0.925 + 0.3·0.025, class 3 the reverse.
        let want0 = [0.655, 0.025, 0.025, 0.295];
        // Sample 1 is its own partner: plain smoothed one-hot.
        let want1 = [0.025, 0.025, 0.925, 0.025];
        for (got, want) in [(row(0), want0), (row(1), want1)] {
            for (g, w) in got.iter().zip(want) {
                assert!((*g as f64 - w).abs() < 1e-6, "{got:?} vs {want:?}");
            }
        }
        // Every row sums to 1.
        for i in 0..3 {
            assert!((row(i).iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
        assert_eq!(mixup_targets(&[1], 2, 1.0, 0.0), vec![0.0, 1.0]);
    }

    #[test]
    fn soft_cross_entropy_is_the_mean_of_target_weighted_log_probabilities() {
        let device = Default::default();
        // Logits [0, ln 3] → probabilities [1/4, 3/4]; target [0.5, 0.5]:
        // −(0.5 ln 0.25 + 0.5 ln 0.75) = 0.8369882167858358. Second row: uniform logits,
        // one-hot target → ln 2.
        let logits = Tensor::<Flex, 2>::from_floats([[0.0, 3f32.ln()], [1.0, 1.0]], &device);
        let targets = Tensor::<Flex, 2>::from_floats([[0.5, 0.5], [1.0, 0.0]], &device);
        let loss: f32 = soft_target_cross_entropy(logits, targets).into_scalar();
        let want = (0.836_988_216_785_835_8 + std::f64::consts::LN_2) / 2.0;
        assert!((loss as f64 - want).abs() < 1e-6, "{loss} vs {want}");
    }
}
