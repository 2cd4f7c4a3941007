//! The MNIST job's loss and accuracy count (the guide's `F.nll_loss` on log-softmax).

use burn::prelude::*;

/// Negative log-likelihood of `targets` under `log_probs` (`[N, C]`), summed over the batch:
/// `−Σ log_probs[i, targets[i]]` (torch's `nll_loss(reduction='sum')`). Divide by N for the mean.
pub fn nll_loss_sum<B: Backend>(log_probs: Tensor<B, 2>, targets: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    log_probs.gather(1, targets.unsqueeze_dim(1)).sum().neg()
}

/// Number of rows whose largest score is at the target index.
pub fn correct_count<B: Backend>(scores: Tensor<B, 2>, targets: Tensor<B, 1, Int>) -> Tensor<B, 1, Int> {
    scores.argmax(1).squeeze_dim::<1>(1).equal(targets).int().sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn_flex::Flex;

    #[test]
    fn nll_and_accuracy_by_hand() {
        let device = Default::default();
        // log-probabilities of two samples over three classes
        let lp = Tensor::<Flex, 2>::from_floats([[-0.1, -2.0, -3.0], [-1.5, -0.5, -2.5]], &device);
        let t = Tensor::<Flex, 1, Int>::from_ints([0, 2], &device);
        let loss: f32 = nll_loss_sum(lp.clone(), t.clone()).into_scalar();
        assert!((loss - 2.6).abs() < 1e-6, "{loss}");
        let correct: i64 = correct_count(lp, t).into_scalar().elem();
        assert_eq!(correct, 1);
    }
}
