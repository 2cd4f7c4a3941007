//! One YOLOX training step, shared by the job and `kiln-bench yolox`: forward, SimOTA loss,
//! backward, gradient average over the workers, weight decay on the convolution weights,
//! SGD with Nesterov momentum, EMA update; in f32 or with mixed precision ([`crate::mixed`]).

use burn::module::{AutodiffModule, Module};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, Optimizer, Sgd, SgdConfig};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::FloatDType;
use kiln_data::CocoBox;
use kiln_models::yolox::{LossParts, Yolox, YoloxLoss, STRIDES};

use super::Exp;
use crate::dist::{Collective, DistError};
use crate::ema::ModelEma;
use crate::mixed::{all_finite, half_copy, unscale, LossScaler};
use crate::optim::decay_weights;

/// SGD over a YOLOX model on autodiff backend `B`.
pub type YoloxOptimizer<B> = OptimizerAdaptor<Sgd<<B as AutodiffBackend>::InnerBackend>, Yolox<B>, B>;

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
    scaler: Option<LossScaler>,
}

impl<B: AutodiffBackend> Trainer<B> {
    /// A fresh `exp.variant` model for `classes` classes on `device`, seeded by the backend's
    /// current seed; `fp16` trains with mixed precision.
    pub fn new(exp: &Exp, classes: usize, fp16: bool, device: &B::Device) -> Self {
        let model = Yolox::<B>::new(exp.variant, classes, device);
        // Materialise the lazily initialised parameters before the EMA copies them.
        let model = model.clone().load_record(model.into_record());
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

    /// Trains on one batch of `images` (`[N, 3, H, W]`, raw 0–255 BGR) with boxes `targets`
    /// (per image, input pixels) at learning rate `lr`, the L1 loss on when `use_l1`; returns
    /// the batch's losses.
    pub fn step(
        &mut self,
        images: Tensor<B, 4>,
        targets: &[Vec<CocoBox>],
        lr: f64,
        use_l1: bool,
        dist: &Collective<B::InnerBackend>,
    ) -> Result<LossParts, DistError> {
        let criterion = YoloxLoss { l1: use_l1 };
        let (parts, grads, finite) = match self.scaler.as_mut() {
            None => {
                let loss = criterion.forward(&self.model.forward(images), &STRIDES, targets);
                let grads = GradientsParams::from_grads(loss.loss.backward(), &self.model);
                (loss.parts, dist.average_grads(grads, &self.model)?, true)
            }
            Some(scaler) => {
                let half = half_copy(&self.model);
                let outputs: Vec<Tensor<B, 4>> = half
                    .forward(images.cast(FloatDType::F16))
                    .into_iter()
                    .map(|o| o.cast(FloatDType::F32))
                    .collect();
                let loss = criterion.forward(&outputs, &STRIDES, targets);
                let scale = scaler.scale();
                let grads = GradientsParams::from_grads(loss.loss.mul_scalar(scale).backward(), &half);
                let grads = dist.average_grads(unscale(grads, &half, scale), &self.model)?;
                let finite = all_finite(&grads, &self.model);
                scaler.update(finite);
                (loss.parts, grads, finite)
            }
        };
        if finite {
            let grads = decay_weights(grads, &self.model, self.weight_decay);
            self.model = self.optim.step(lr, self.model.clone(), grads);
            if self.use_ema {
                self.ema.update(&self.model.valid());
            }
        }
        Ok(parts)
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
