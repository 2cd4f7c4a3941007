//! The MNIST job's log lines, formatted exactly as the guide's `train.py` prints them.

/// `Train Epoch: 1 [640/60000 (1%)]\tLoss: 0.302751`: `seen` is batch index × batch size,
/// the percentage is batch index over the number of batches, rounded half-to-even like
/// Python's `{:.0f}`.
pub fn train_line(
    epoch: usize,
    batch_idx: usize,
    batch_size: usize,
    dataset_len: usize,
    num_batches: usize,
    loss: f64,
) -> String {
    format!(
        "Train Epoch: {epoch} [{}/{dataset_len} ({:.0}%)]\tLoss: {loss:.6}",
        batch_idx * batch_size,
        100.0 * batch_idx as f64 / num_batches as f64
    )
}

/// `Test set: Average loss: 0.0463, Accuracy: 9849/10000 (98%)` (the original wraps it in
/// blank lines, which the caller prints).
pub fn test_line(avg_loss: f64, correct: usize, total: usize) -> String {
    format!(
        "Test set: Average loss: {avg_loss:.4}, Accuracy: {correct}/{total} ({:.0}%)",
        100.0 * correct as f64 / total as f64
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn train_line_matches_the_contract() {
        // Batch 10 of 938 at batch size 64.
        assert_eq!(
            train_line(1, 10, 64, 60000, 938, 0.302751),
            "Train Epoch: 1 [640/60000 (1%)]\tLoss: 0.302751"
        );
        assert_eq!(
            train_line(14, 0, 64, 60000, 938, 2.3),
            "Train Epoch: 14 [0/60000 (0%)]\tLoss: 2.300000"
        );
        // 930/938 = 99.15% → 99.
        assert_eq!(
            train_line(2, 930, 64, 60000, 938, 0.0123456789),
            "Train Epoch: 2 [59520/60000 (99%)]\tLoss: 0.012346"
        );
    }

    #[test]
    fn test_line_matches_the_contract() {
        assert_eq!(
            test_line(0.04634, 9849, 10000),
            "Test set: Average loss: 0.0463, Accuracy: 9849/10000 (98%)"
        );
        // Python rounds 98.5 to 98 (half to even), and so must we.
        assert_eq!(
            test_line(0.1, 985, 1000),
            "Test set: Average loss: 0.1000, Accuracy: 985/1000 (98%)"
        );
        assert_eq!(
            test_line(0.1, 995, 1000),
            "Test set: Average loss: 0.1000, Accuracy: 995/1000 (100%)"
        );
    }
}
