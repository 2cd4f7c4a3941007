//! Learning-rate schedules, on burn's `LrScheduler`.

use burn::lr_scheduler::step::{StepLrScheduler, StepLrSchedulerConfig};

/// torch's `StepLR(step_size, gamma)` stepped once per epoch: epoch `e` (from 1) trains at
/// `lr · gamma^((e − 1) / step_size)`. Call `step()` at the start of each epoch.
pub fn epoch_step_lr(lr: f64, step_size: usize, gamma: f64) -> Result<StepLrScheduler, String> {
    StepLrSchedulerConfig::new(lr, step_size).with_gamma(gamma).init()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::lr_scheduler::LrScheduler;

    #[test]
    fn mnist_schedule_is_lr_times_gamma_per_epoch() {
        let mut s = epoch_step_lr(1.0, 1, 0.7).unwrap();
        let lrs: Vec<f64> = (0..4).map(|_| s.step()).collect();
        let want = [1.0, 0.7, 0.49, 0.343];
        for (g, w) in lrs.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{lrs:?}");
        }
    }

    #[test]
    fn imagenet_schedule_steps_every_30_epochs() {
        let mut s = epoch_step_lr(0.1, 30, 0.1).unwrap();
        let lrs: Vec<f64> = (0..61).map(|_| s.step()).collect();
        assert_eq!((lrs[0], lrs[29]), (0.1, 0.1));
        assert!((lrs[30] - 0.01).abs() < 1e-12 && (lrs[60] - 0.001).abs() < 1e-12);
        assert!(epoch_step_lr(0.1, 0, 0.1).is_err());
    }
}
