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
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
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

    /// Whether the step with `grads` (of `model`'s parameters) is taken: always without a
    /// scaler; with one, when every gradient is finite, which [`update`](Self::update)s it.
    pub fn takes_step<B: AutodiffBackend, M: AutodiffModule<B>>(
        scaler: Option<&mut Self>,
        grads: &GradientsParams,
        model: &M,
    ) -> bool {
        match scaler {
            Some(scaler) => {
                let finite = all_finite(grads, model);
                scaler.update(finite);
                finite
            }
            None => true,
        }
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

/// The loss `compute` gives for `model` and the gradients of `model`'s parameters: directly,
/// or with a loss `scale` (mixed precision) through an f16 copy of the weights ([`half_copy`])
/// with the loss multiplied by `scale` before backward and the gradients returned in f32
/// divided by it ([`unscale`]). `compute` gets the model to run and the dtype its inputs take
/// (f16 or f32) and returns the f32 loss and whatever else the caller wants from the pass.
pub fn loss_and_grads<B, M, T>(
    model: &M,
    scale: Option<f64>,
    compute: impl FnOnce(&M, FloatDType) -> (Tensor<B, 1>, T),
) -> (Tensor<B, 1>, T, GradientsParams)
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
{
    loss_and_grads_by(model, scale, |model, dtype, multiplier| {
        let (loss, extra) = compute(model, dtype);
        let backward = if multiplier == 1.0 {
            loss.backward()
        } else {
            loss.clone().mul_scalar(multiplier).backward()
        };
        (loss, extra, GradientsParams::from_grads(backward, model))
    })
}

/// [`loss_and_grads`] where `run` computes the gradients itself (e.g. recomputing
/// activations): it gets the model, the dtype of its inputs and the multiplier of the loss
/// whose gradients it must return (the loss scale, or 1).
pub fn loss_and_grads_by<B, M, T>(
    model: &M,
    scale: Option<f64>,
    run: impl FnOnce(&M, FloatDType, f64) -> (Tensor<B, 1>, T, GradientsParams),
) -> (Tensor<B, 1>, T, GradientsParams)
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
{
    let Some(scale) = scale else {
        return run(model, FloatDType::F32, 1.0);
    };
    let half = half_copy(model);
    let (loss, extra, grads) = run(&half, FloatDType::F16, scale);
    (loss, extra, unscale(grads, &half, scale))
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

    #[test]
    fn a_resnet_step_in_mixed_precision_tracks_f32() {
        use kiln_models::{ResNet, ResNetArch, ResNetConfig};
        let device = Default::default();
        B::seed(&device, 3);
        let model = ResNetConfig::new(ResNetArch::ResNet18, 3).init::<B>(&device);
        let x = Tensor::<B, 4>::random([4, 3, 32, 32], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
        let targets = Tensor::<B, 1, Int>::from_ints([0, 1, 2, 1], &device);
        let step = |scale| {
            loss_and_grads(&model, scale, |m: &ResNet<B>, dtype| {
                let logits = m.forward(x.clone().cast(dtype)).cast(FloatDType::F32);
                let loss = burn::nn::loss::CrossEntropyLossConfig::new()
                    .init(&device)
                    .forward(logits, targets.clone());
                (loss, ())
            })
        };
        let (exact_loss, (), exact) = step(None);
        let (half_loss, (), half) = step(Some(1024.0));
        let [exact_loss, half_loss] = [exact_loss, half_loss].map(|l| l.into_scalar().elem::<f64>());
        assert!(
            (exact_loss - half_loss).abs() < 1e-2 * exact_loss,
            "{exact_loss} vs {half_loss}"
        );
        // Every gradient, in f32: the difference's norm over the f32 gradients' norm.
        struct Compare<'a> {
            exact: &'a GradientsParams,
            half: &'a GradientsParams,
            /// Σ (a − b)², Σ a², Σ b², Σ a·b.
            sums: [f64; 4],
        }
        impl ModuleVisitor<B> for Compare<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
                let get = |g: &GradientsParams| {
                    g.get::<Flex, D>(param.id)
                        .map(|t| t.into_data().to_vec::<f32>().unwrap())
                };
                if let (Some(a), Some(b)) = (get(self.exact), get(self.half)) {
                    for (x, y) in a.iter().zip(&b) {
                        let (x, y) = (*x as f64, *y as f64);
                        self.sums[0] += (x - y).powi(2);
                        self.sums[1] += x * x;
                        self.sums[2] += y * y;
                        self.sums[3] += x * y;
                    }
                }
            }
        }
        let mut compare = Compare {
            exact: &exact,
            half: &half,
            sums: [0.0; 4],
        };
        model.visit(&mut compare);
        let [error, exact_norm, half_norm, dot] = compare.sums;
        let relative = (error / exact_norm).sqrt();
        let cosine = dot / (exact_norm * half_norm).sqrt();
        // The CPU backend's f16 convolutions round at every layer (about 1% each here, 20%
        // over ResNet-18's 20 layers at batch 4); cuDNN accumulates f16 in f32 on GPUs. The
        // gradient must still point the same way and be of the same size.
        assert!(cosine > 0.97, "cosine {cosine}, relative error {relative}");
        assert!(relative < 0.3, "relative error {relative}");
        assert!(
            (half_norm / exact_norm).sqrt() - 1.0 < 0.1,
            "norms {exact_norm} {half_norm}"
        );
    }
}
