//! Learning-rate schedules, on burn's `LrScheduler`.

use burn::lr_scheduler::step::{StepLrScheduler, StepLrSchedulerConfig};
use burn::lr_scheduler::LrScheduler;
use burn::tensor::backend::Backend;

/// torch's `StepLR(step_size, gamma)` stepped once per epoch: epoch `e` (from 1) trains at
/// `lr · gamma^((e − 1) / step_size)`. Call `step()` at the start of each epoch.
pub fn epoch_step_lr(lr: f64, step_size: usize, gamma: f64) -> Result<StepLrScheduler, String> {
    StepLrSchedulerConfig::new(lr, step_size).with_gamma(gamma).init()
}

/// YOLOX's `yoloxwarmcos` schedule, stepped once per iteration: a quadratic warm-up from
/// `warmup_lr_start` to `lr` over the warm-up iterations, a cosine from `lr` down to
/// `lr · min_lr_ratio` until the no-augmentation iterations, then `lr · min_lr_ratio` flat.
/// Iterations count from 1 (the trainer asks for `progress_in_iter + 1`).
#[derive(Debug, Clone, PartialEq)]
pub struct YoloxWarmCos {
    lr: f64,
    min_lr_ratio: f64,
    total_iters: usize,
    warmup_iters: usize,
    warmup_lr_start: f64,
    no_aug_iters: usize,
    /// Iterations already stepped.
    iter: usize,
}

impl YoloxWarmCos {
    /// The schedule for `epochs` epochs of `iters_per_epoch` iterations at peak `lr`, with
    /// `warmup_epochs` of warm-up and `no_aug_epochs` at the floor (YOLOX's defaults: 5 and 15
    /// epochs, floor ratio 0.05, warm-up start 0).
    pub fn new(
        lr: f64,
        iters_per_epoch: usize,
        epochs: usize,
        warmup_epochs: usize,
        no_aug_epochs: usize,
        min_lr_ratio: f64,
    ) -> Result<Self, String> {
        if iters_per_epoch == 0 || epochs == 0 {
            return Err("the schedule needs at least one epoch of at least one iteration".into());
        }
        if warmup_epochs + no_aug_epochs > epochs {
            return Err(format!(
                "{warmup_epochs} warm-up and {no_aug_epochs} no-augmentation epochs do not fit in {epochs} epochs"
            ));
        }
        Ok(Self {
            lr,
            min_lr_ratio,
            total_iters: iters_per_epoch * epochs,
            warmup_iters: iters_per_epoch * warmup_epochs,
            warmup_lr_start: 0.0,
            no_aug_iters: iters_per_epoch * no_aug_epochs,
            iter: 0,
        })
    }

    /// The learning rate of iteration `iter` (from 1).
    pub fn lr_at(&self, iter: usize) -> f64 {
        let min_lr = self.lr * self.min_lr_ratio;
        if iter <= self.warmup_iters {
            let t = iter as f64 / self.warmup_iters as f64;
            (self.lr - self.warmup_lr_start) * t * t + self.warmup_lr_start
        } else if iter >= self.total_iters - self.no_aug_iters {
            min_lr
        } else {
            let span = (self.total_iters - self.warmup_iters - self.no_aug_iters) as f64;
            let t = (iter - self.warmup_iters) as f64 / span;
            min_lr + 0.5 * (self.lr - min_lr) * (1.0 + (std::f64::consts::PI * t).cos())
        }
    }
}

impl LrScheduler for YoloxWarmCos {
    /// The iterations already stepped.
    type Record<B: Backend> = usize;

    fn step(&mut self) -> f64 {
        self.iter += 1;
        self.lr_at(self.iter)
    }

    fn to_record<B: Backend>(&self) -> usize {
        self.iter
    }

    fn load_record<B: Backend>(mut self, record: usize) -> Self {
        self.iter = record;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn_flex::Flex;

    #[test]
    fn yolox_warm_cos_matches_the_formula() {
        // 10 epochs of 4 iterations, 2 warm-up and 2 no-aug epochs, lr 0.01: values computed with
        // YOLOX's yolox_warm_cos_lr in Python.
        let mut s = YoloxWarmCos::new(0.01, 4, 10, 2, 2, 0.05).unwrap();
        let lrs: Vec<f64> = (0..40).map(|_| s.step()).collect();
        let want = [
            (1, 0.00015625),
            (4, 0.0025),
            (8, 0.01),
            (9, 0.0099593630915256),
            (12, 0.009363620667976084),
            (20, 0.00525),
            (31, 0.0005406369084744007),
            (32, 0.0005),
            (40, 0.0005),
        ];
        for (iter, lr) in want {
            assert!(
                (lrs[iter - 1] - lr).abs() < 1e-15,
                "iter {iter}: {} vs {lr}",
                lrs[iter - 1]
            );
        }
        // Resuming from a record continues the sequence.
        let record = LrScheduler::to_record::<Flex>(&s);
        let fresh = YoloxWarmCos::new(0.01, 4, 10, 2, 2, 0.05).unwrap();
        let mut resumed = LrScheduler::load_record::<Flex>(fresh, 11);
        assert_eq!(resumed.step(), lrs[11]);
        assert_eq!(record, 40);
        assert!(YoloxWarmCos::new(0.01, 4, 3, 2, 2, 0.05).is_err());
        assert!(YoloxWarmCos::new(0.01, 0, 3, 0, 0, 0.05).is_err());
    }

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
