//! Mixed-precision training, shared by the jobs (YOLOX's `--fp16`; PyTorch's autocast +
//! `GradScaler`): the master weights stay f32; each step runs forward and backward on an f16
//! copy of them (BatchNorm statistics and the loss in f32), the loss multiplied by a scale so
//! small gradients survive f16; the gradients come back as f32, divided by the scale, and a
//! step whose gradients overflowed is skipped and the scale halved (doubled again after 2,000
//! clean steps).

use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::FloatDType;

/// GradScaler's starting scale, 2¹⁶.
const INITIAL_SCALE: f64 = 65_536.0;
/// Clean steps before the scale doubles.
const GROWTH_INTERVAL: usize = 2_000;

/// PyTorch's `GradScaler` policy: the loss scale and when it changes.
#[derive(Debug, Clone, PartialEq)]
pub struct LossScaler {
    scale: f64,
    clean_steps: usize,
}

impl Default for LossScaler {
    fn default() -> Self {
        Self {
            scale: INITIAL_SCALE,
            clean_steps: 0,
        }
    }
}

impl LossScaler {
    /// The factor the loss is multiplied by before backward.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// Records a step whose gradients were all finite (`true`, the step is taken) or not
    /// (`false`, the step is skipped and the scale halved).
    pub fn update(&mut self, finite: bool) {
        if finite {
            self.clean_steps += 1;
            if self.clean_steps == GROWTH_INTERVAL {
                self.scale *= 2.0;
                self.clean_steps = 0;
            }
        } else {
            self.scale /= 2.0;
            self.clean_steps = 0;
        }
    }
}

/// An f16 copy of `model` whose trainable parameters are new leaves with the same ids (so
/// their gradients can be handed to the f32 model's optimizer); running statistics stay f32.
pub fn half_copy<B: AutodiffBackend, M: AutodiffModule<B>>(model: &M) -> M {
    model.clone().map(&mut ToHalf)
}

struct ToHalf;

impl<B: AutodiffBackend> ModuleMapper<B> for ToHalf {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let value = param.val();
        if !value.is_require_grad() {
            return param;
        }
        let half = value.inner().cast(FloatDType::F16);
        Param::initialized(param.id, Tensor::from_inner(half).require_grad())
    }
}

/// The f16 gradients of `half`'s parameters as f32, divided by `scale`.
pub fn unscale<B: AutodiffBackend, M: AutodiffModule<B>>(
    grads: GradientsParams,
    half: &M,
    scale: f64,
) -> GradientsParams {
    let mut visitor = Unscale::<B> {
        grads,
        inv_scale: 1.0 / scale,
        _backend: std::marker::PhantomData,
    };
    half.visit(&mut visitor);
    visitor.grads
}

struct Unscale<B> {
    grads: GradientsParams,
    inv_scale: f64,
    _backend: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Unscale<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(grad) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            let grad = grad.cast(FloatDType::F32).mul_scalar(self.inv_scale);
            self.grads.register(param.id, grad);
        }
    }
}

/// Whether every gradient of `module`'s parameters in `grads` is finite (one device sync).
pub fn all_finite<B: AutodiffBackend, M: AutodiffModule<B>>(grads: &GradientsParams, module: &M) -> bool {
    let mut visitor = AbsSum::<B> { grads, total: None };
    module.visit(&mut visitor);
    visitor.total.is_none_or(|t| t.into_scalar().elem::<f64>().is_finite())
}

struct AbsSum<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    /// Σ |g| over every gradient: not finite exactly when some gradient is not.
    total: Option<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for AbsSum<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(grad) = self.grads.get::<B::InnerBackend, D>(param.id) {
            let size = grad.cast(FloatDType::F32).abs().sum();
            self.total = Some(match self.total.take() {
                Some(t) => t.add(size),
                None => size,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use burn::nn::{Linear, LinearConfig};
    use burn::tensor::DType;
    use burn_flex::Flex;

    type B = Autodiff<Flex>;

    #[test]
    fn scale_halves_on_overflow_and_doubles_after_clean_steps() {
        let mut s = LossScaler::default();
        s.update(false);
        assert_eq!(s.scale(), 32_768.0);
        for _ in 0..GROWTH_INTERVAL - 1 {
            s.update(true);
        }
        assert_eq!(s.scale(), 32_768.0);
        s.update(true);
        assert_eq!(s.scale(), 65_536.0);
    }

    #[test]
    fn half_copy_gives_f32_gradients_equal_to_the_f32_model() {
        let device = Default::default();
        let model: Linear<B> = LinearConfig::new(3, 2).init(&device);
        let model = model.clone().load_record(model.into_record());
        let x = Tensor::<B, 2>::from_floats([[0.5, -1.0, 2.0], [1.5, 0.25, -0.5]], &device);
        let exact = GradientsParams::from_grads(model.forward(x.clone()).sum().backward(), &model);

        let half = half_copy(&model);
        assert_eq!(half.weight.val().dtype(), DType::F16);
        assert_eq!(model.weight.val().dtype(), DType::F32);
        let scale = 1024.0;
        let y = half.forward(x.cast(FloatDType::F16)).cast(FloatDType::F32);
        let grads = GradientsParams::from_grads(y.sum().mul_scalar(scale).backward(), &half);
        let grads = unscale(grads, &half, scale);
        assert!(all_finite(&grads, &model));
        let get = |g: &GradientsParams| -> Vec<f32> {
            let t = g.get::<Flex, 2>(model.weight.id).unwrap();
            assert_eq!(t.dtype(), DType::F32);
            t.into_data().to_vec().unwrap()
        };
        for (a, b) in get(&grads).iter().zip(get(&exact)) {
            assert!((a - b).abs() < 1e-2, "{a} vs {b}");
        }

        // An overflowing loss is reported as not finite.
        let y = half.forward(Tensor::<B, 2>::ones([2, 3], &device).cast(FloatDType::F16));
        let grads = GradientsParams::from_grads(y.sum().mul_scalar(1e9).backward(), &half);
        assert!(!all_finite(&unscale(grads, &half, 1e9), &model));
    }
}
