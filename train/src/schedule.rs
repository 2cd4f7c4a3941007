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

/// Swin-Transformer's learning rates scaled for the total batch, as its `main.py` does:
/// `rate · batch per device · devices / 512`, times the accumulation steps when there are
/// several (`BASE_LR`, `WARMUP_LR` and `MIN_LR` alike).
pub fn swin_scaled_lr(rate: f64, batch_per_device: usize, devices: usize, accumulation_steps: usize) -> f64 {
    rate * (batch_per_device * devices) as f64 / 512.0 * accumulation_steps.max(1) as f64
}

/// Swin-Transformer's cosine schedule (timm's `CosineLRScheduler` as its `build_scheduler`
/// sets it up, `WARMUP_PREFIX` on), per optimizer update `t` from 0 over `total` updates:
///
/// ```text
/// t < warmup:  warmup_lr + t · (lr − warmup_lr) / warmup
/// otherwise:   min_lr + ½ (lr − min_lr) (1 + cos(π (t − warmup) / (total − warmup))),
///              min_lr from t = total on
/// ```
///
/// The official loop sets the rate for update `u + 1` after update `u` (`step_update(u)`), and
/// starts at `warmup_lr`: update `u` trains at `lr_at(max(u − 1, 0))`, which [`step`]
/// reproduces.
///
/// [`step`]: LrScheduler::step
#[derive(Debug, Clone, PartialEq)]
pub struct SwinCosine {
    lr: f64,
    warmup_lr: f64,
    min_lr: f64,
    total: usize,
    warmup: usize,
    /// Updates already stepped.
    updates: usize,
}

impl SwinCosine {
    /// `epochs` of `updates_per_epoch` (batches per epoch over the accumulation steps, as the
    /// official code counts them), the first `warmup_epochs` warming up from `warmup_lr` to
    /// `lr`, then a cosine down to `min_lr`.
    pub fn new(
        lr: f64,
        warmup_lr: f64,
        min_lr: f64,
        updates_per_epoch: usize,
        epochs: usize,
        warmup_epochs: usize,
    ) -> Result<Self, String> {
        if updates_per_epoch == 0 || epochs == 0 {
            return Err("the schedule needs at least one epoch of at least one update".into());
        }
        if warmup_epochs >= epochs {
            return Err(format!(
                "WARMUP_EPOCHS {warmup_epochs} leaves none of the {epochs} epochs to decay"
            ));
        }
        Ok(Self {
            lr,
            warmup_lr,
            min_lr,
            total: updates_per_epoch * epochs,
            warmup: updates_per_epoch * warmup_epochs,
            updates: 0,
        })
    }

    /// timm's rate for update count `t` (from 0).
    pub fn lr_at(&self, t: usize) -> f64 {
        if t < self.warmup {
            return self.warmup_lr + t as f64 * (self.lr - self.warmup_lr) / self.warmup as f64;
        }
        let span = self.total - self.warmup;
        let t = t - self.warmup;
        if t >= span {
            return self.min_lr;
        }
        let phase = std::f64::consts::PI * t as f64 / span as f64;
        self.min_lr + 0.5 * (self.lr - self.min_lr) * (1.0 + phase.cos())
    }
}

impl LrScheduler for SwinCosine {
    /// The updates already stepped.
    type Record<B: Backend> = usize;

    fn step(&mut self) -> f64 {
        let lr = self.lr_at(self.updates.saturating_sub(1));
        self.updates += 1;
        lr
    }

    fn to_record<B: Backend>(&self) -> usize {
        self.updates
    }

    fn load_record<B: Backend>(mut self, record: usize) -> Self {
        self.updates = record;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn_flex::Flex;

    /// Swin-T's recipe at a total batch of 1024 (`BASE_LR` 5e-4, `WARMUP_LR` 5e-7, `MIN_LR`
    /// 5e-6 scaled ×2), 10 epochs of 4 updates, 2 of them warming up: values by hand from the
    /// formula in the doc comment.
    #[test]
    fn swin_cosine_matches_timms_formula() {
        let (lr, warm, min) = (
            swin_scaled_lr(5e-4, 128, 8, 1),
            swin_scaled_lr(5e-7, 128, 8, 1),
            swin_scaled_lr(5e-6, 128, 8, 1),
        );
        assert_eq!((lr, warm, min), (1e-3, 1e-6, 1e-5));
        assert_eq!(swin_scaled_lr(5e-4, 64, 8, 2), 1e-3);
        let mut s = SwinCosine::new(lr, warm, min, 4, 10, 2).unwrap();
        // Warm-up over 8 updates: 1e-6 + t · (1e-3 − 1e-6) / 8.
        assert!((s.lr_at(0) - 1e-6).abs() < 1e-18);
        assert!((s.lr_at(4) - (1e-6 + 4.0 * 0.999e-3 / 8.0)).abs() < 1e-15);
        // The cosine over the 32 updates after the warm-up: the peak, the middle, the floor.
        assert!((s.lr_at(8) - 1e-3).abs() < 1e-15);
        assert!((s.lr_at(24) - (1e-5 + 0.5 * 0.99e-3)).abs() < 1e-15);
        assert!((s.lr_at(40) - 1e-5).abs() < 1e-18);
        assert_eq!(s.lr_at(1000), 1e-5);
        // Update u trains at lr_at(max(u − 1, 0)), as the official loop sets it.
        let steps: Vec<f64> = (0..12).map(|_| s.step()).collect();
        assert_eq!(steps[0], s.lr_at(0));
        assert_eq!(steps[1], s.lr_at(0));
        assert_eq!(steps[9], s.lr_at(8));
        let record = LrScheduler::to_record::<Flex>(&s);
        let resumed = LrScheduler::load_record::<Flex>(SwinCosine::new(lr, warm, min, 4, 10, 2).unwrap(), record);
        assert_eq!(resumed, s);
        assert!(SwinCosine::new(lr, warm, min, 4, 2, 2).is_err());
        assert!(SwinCosine::new(lr, warm, min, 0, 2, 0).is_err());
    }

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
