//! One YOLOX training step, shared by the job and `kiln-bench yolox`: forward, SimOTA loss,
//! backward, gradient average over the workers, weight decay on the convolution weights,
//! SGD with Nesterov momentum, EMA update; in f32 or with mixed precision ([`crate::mixed`]).

use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::momentum::MomentumConfig;
use burn::optim::Optimizer;

use crate::optim::{Sgd, SgdConfig};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::FloatDType;
use kiln_data::CocoBox;
use kiln_models::yolox::{LossParts, TargetBox, Yolox, YoloxLoss, STRIDES};

use super::ema::ModelEma;
use super::Exp;
use crate::ddp::{Collective, DistError};
use crate::mixed::{loss_and_grads, LossScaler};
use crate::optim::decay_weights;

/// SGD over a YOLOX model on autodiff backend `B`.
pub type YoloxOptimizer<B> = OptimizerAdaptor<Sgd, Yolox<B>, B>;

/// The trained model, its optimizer and its moving average.
pub struct Trainer<B: AutodiffBackend> {
    /// The model being trained.
    pub model: Yolox<B>,
    /// SGD with Nesterov momentum (weight decay is applied by [`Trainer::step`]).
    pub optim: YoloxOptimizer<B>,
    /// The moving average of the weights.
    pub ema: ModelEma<Yolox<B::InnerBackend>>,
    use_ema: bool,
    weight_decay: f64,
    /// The loss scale of mixed-precision training; `None` trains in f32.
    pub(super) scaler: Option<LossScaler>,
}

impl<B: AutodiffBackend> Trainer<B> {
    /// A fresh `exp.variant` model for `classes` classes on `device`, seeded by the backend's
    /// current seed; `fp16` trains with mixed precision.
    pub fn new(exp: &Exp, classes: usize, fp16: bool, device: &B::Device) -> Self {
        let model = Yolox::<B>::new(exp.variant, classes, device);
        let optim = SgdConfig::new()
            .with_momentum(Some(MomentumConfig {
                momentum: exp.momentum,
                dampening: 0.0,
                nesterov: true,
            }))
            .init::<B, Yolox<B>>();
        Self {
            ema: ModelEma::new(model.valid(), 0),
            model,
            optim,
            use_ema: exp.ema,
            weight_decay: exp.weight_decay,
            scaler: fp16.then(LossScaler::default),
        }
    }

    /// The loader's boxes as the loss takes them.
    pub fn targets(boxes: &[Vec<CocoBox>]) -> Vec<Vec<TargetBox>> {
        boxes
            .iter()
            .map(|image| {
                image
                    .iter()
                    .map(|b| TargetBox {
                        class: b.class,
                        xyxy: b.xyxy,
                    })
                    .collect()
            })
            .collect()
    }

    /// Trains on one batch of `images` (`[N, 3, H, W]`, raw 0–255 BGR) with boxes `targets`
    /// (per image, input pixels) at learning rate `lr`, the L1 loss on when `use_l1`; returns
    /// the batch's losses.
    pub fn step(
        &mut self,
        images: Tensor<B, 4>,
        targets: &[Vec<TargetBox>],
        lr: f64,
        use_l1: bool,
        dist: &Collective<B::InnerBackend>,
    ) -> Result<LossParts, DistError> {
        let criterion = YoloxLoss { l1: use_l1 };
        let scale = self.scaler.as_ref().map(LossScaler::scale);
        let (_, parts, grads) = loss_and_grads(&self.model, scale, |model, dtype| {
            let outputs: Vec<Tensor<B, 4>> = model
                .forward(images.cast(dtype))
                .into_iter()
                .map(|o| o.cast(FloatDType::F32))
                .collect();
            let loss = criterion.forward(&outputs, &STRIDES, targets);
            (loss.loss, loss.parts)
        });
        let grads = dist.average_grads(grads, &self.model)?;
        // GradScaler skips the step whose gradients overflowed, and halves the scale.
        let finite = LossScaler::takes_step(self.scaler.as_mut(), &grads, &self.model);
        if finite {
            let grads = decay_weights(grads, &self.model, self.weight_decay);
            self.model = self.optim.step(lr, self.model.clone(), grads);
            if self.use_ema {
                self.ema.update(&self.model.valid());
            }
        }
        Ok(parts)
    }

    /// Whether evaluation (and the package) uses the EMA weights.
    pub fn uses_ema(&self) -> bool {
        self.use_ema
    }

    /// The weights evaluation and the package use: the EMA, or the model itself without it.
    pub fn eval_model(&self) -> Yolox<B::InnerBackend> {
        if self.use_ema {
            self.ema.module().clone()
        } else {
            self.model.valid()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use burn::module::ModuleVisitor;
    use burn::module::Param;
    use burn_flex::Flex;
    use kiln_models::YoloxVariant;

    type B = Autodiff<Flex>;

    /// Σ |w| over a model's floats, to see that a step changed them, and whether all are f32.
    struct AbsSum(f64, bool);

    impl<Bk: Backend> ModuleVisitor<Bk> for AbsSum {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Bk, D>>) {
            let value = param.val();
            self.1 &= value.dtype() == burn::tensor::DType::F32;
            self.0 += value.abs().sum().into_scalar().elem::<f64>();
        }
    }

    fn weights(model: &Yolox<B>) -> (f64, bool) {
        let mut sum = AbsSum(0.0, true);
        model.visit(&mut sum);
        (sum.0, sum.1)
    }

    #[test]
    fn f32_and_mixed_precision_steps_train_and_agree_on_the_loss() {
        let device = Default::default();
        let exp = Exp::new(YoloxVariant::Nano);
        B::seed(&device, 7);
        let images = Tensor::<B, 4>::random([2, 3, 64, 64], burn::tensor::Distribution::Uniform(0.0, 255.0), &device);
        let targets = vec![
            vec![TargetBox {
                class: 1,
                xyxy: [8.0, 8.0, 40.0, 30.0],
            }],
            vec![],
        ];
        let dist = Collective::single();
        // One initialisation for both: the backend's RNG is process-wide, so seeding before
        // each `Trainer::new` would not guarantee the same weights while other tests run.
        let init = Trainer::<B>::new(&exp, 3, false, &device).model;
        let mut losses = Vec::new();
        for fp16 in [false, true] {
            let mut trainer = Trainer::<B>::new(&exp, 3, fp16, &device);
            trainer.model = init.clone();
            trainer.ema = ModelEma::new(init.valid(), 0);
            let before = weights(&trainer.model);
            let parts = trainer.step(images.clone(), &targets, 0.01, true, &dist).unwrap();
            assert!(parts.total().is_finite() && parts.total() > 0.0, "{parts:?}");
            assert_eq!(parts.num_gt, 1);
            // A mixed-precision step whose scaled gradients overflow f16 is skipped and the
            // scale halved (GradScaler): within a few steps one is taken.
            let mut steps = 1;
            while weights(&trainer.model).0 == before.0 && steps < 20 {
                trainer.step(images.clone(), &targets, 0.01, true, &dist).unwrap();
                steps += 1;
            }
            let (after, all_f32) = weights(&trainer.model);
            assert_ne!(after, before.0, "fp16 {fp16}: {steps} steps changed nothing");
            assert_eq!(
                steps == 1,
                !fp16 || trainer.scaler.as_ref().unwrap().scale() == 65_536.0
            );
            // The master weights stay f32.
            assert!(all_f32 && before.1);
            losses.push(parts.total());
        }
        // The same seed and batch: f16 compute gives nearly the f32 loss.
        assert!((losses[0] - losses[1]).abs() < 0.05 * losses[0], "{losses:?}");
    }
}
