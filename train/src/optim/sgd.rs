//! SGD with momentum and weight decay as burn's `Sgd` computes it (PyTorch's `torch.optim.SGD`
//! formula), with the update fused into one pass on the CPU backend
//! ([`kiln_models::cpu::sgd`]). Its state has burn's `SgdState` record layout
//! (`momentum.velocity`), so checkpoints written with burn's optimizer still load.
//!
//! For each parameter `p` with gradient `g`:
//! ```text
//! g  = g + wd·p                               (weight decay)
//! v  = (1 − dampening)·g + momentum·v         (v = g on the first step)
//! g  = v, or g + momentum·v with Nesterov
//! p -= lr·g
//! ```

use burn::config::Config;
use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{LearningRate, SimpleOptimizer};
use burn::record::Record;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use kiln_models::cpu::sgd::{sgd_step, SgdMomentum};

/// SGD's hyper-parameters (the learning rate is given per step).
#[derive(Config, Debug)]
pub struct SgdConfig {
    /// L2 penalty added to the gradient (`weight_decay`); none by default.
    pub weight_decay: Option<f64>,
    /// Momentum, dampening and Nesterov; plain SGD by default.
    pub momentum: Option<MomentumConfig>,
}

/// The SGD update rule.
#[derive(Clone, Debug)]
pub struct Sgd {
    weight_decay: Option<f64>,
    momentum: Option<SgdMomentum>,
}

/// A parameter's velocity (burn's `MomentumState`).
#[derive(Record, Clone)]
pub struct SgdVelocity<B: Backend, const D: usize> {
    /// The running velocity.
    pub velocity: Tensor<B, D>,
}

/// Per-parameter state (burn's `SgdState`): the velocity, with momentum.
#[derive(Record, Clone)]
pub struct SgdState<B: Backend, const D: usize> {
    /// The velocity, when the optimizer has momentum.
    pub momentum: Option<SgdVelocity<B, D>>,
}

impl SgdConfig {
    /// `torch.optim.SGD(lr, momentum, weight_decay)`: no dampening, no Nesterov; a zero
    /// momentum or weight decay leaves it out.
    pub fn torch(momentum: f64, weight_decay: f64) -> Self {
        Self::new()
            .with_momentum((momentum > 0.0).then_some(MomentumConfig {
                momentum,
                dampening: 0.0,
                nesterov: false,
            }))
            .with_weight_decay((weight_decay > 0.0).then_some(weight_decay))
    }

    /// The update rule alone.
    pub fn build(&self) -> Sgd {
        Sgd {
            weight_decay: self.weight_decay,
            momentum: self.momentum.as_ref().map(|m| SgdMomentum {
                momentum: m.momentum,
                dampening: m.dampening,
                nesterov: m.nesterov,
            }),
        }
    }

    /// An optimizer for module `M` on autodiff backend `B`.
    pub fn init<B: AutodiffBackend, M: AutodiffModule<B>>(&self) -> OptimizerAdaptor<Sgd, M, B> {
        OptimizerAdaptor::from(self.build())
    }
}

impl<B: Backend> SimpleOptimizer<B> for Sgd {
    type State<const D: usize> = SgdState<B, D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<B, D>, Option<Self::State<D>>) {
        let velocity = state.and_then(|s| s.momentum).map(|m| m.velocity);
        let (tensor, velocity) = match sgd_step(lr, self.weight_decay, self.momentum, &tensor, &grad, velocity.as_ref())
        {
            Some(fused) => fused,
            None => self.step_generic(lr, tensor, grad, velocity),
        };
        let momentum = velocity.map(|velocity| SgdVelocity { velocity });
        (tensor, Some(SgdState { momentum }))
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &B::Device) -> Self::State<D> {
        SgdState {
            momentum: state.momentum.map(|m| SgdVelocity {
                velocity: m.velocity.to_device(device),
            }),
        }
    }
}

impl Sgd {
    /// The update in burn tensor ops (burn's `Sgd`, op for op), for every backend but
    /// burn-flex.
    fn step_generic<B: Backend, const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<B, D>,
        mut grad: Tensor<B, D>,
        velocity: Option<Tensor<B, D>>,
    ) -> (Tensor<B, D>, Option<Tensor<B, D>>) {
        if let Some(wd) = self.weight_decay {
            grad = tensor.clone().mul_scalar(wd).add(grad);
        }
        let mut new_velocity = None;
        if let Some(m) = self.momentum {
            let v = match velocity {
                Some(v) => grad.clone().mul_scalar(1.0 - m.dampening).add(v.mul_scalar(m.momentum)),
                None => grad.clone(),
            };
            grad = if m.nesterov {
                v.clone().mul_scalar(m.momentum).add(grad)
            } else {
                v.clone()
            };
            new_velocity = Some(v);
        }
        (tensor - grad.mul_scalar(lr), new_velocity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Module;
    use burn::optim::decay::WeightDecayConfig;
    use burn::optim::{GradientsParams, Optimizer};
    use burn::tensor::TensorData;
    use burn_flex::Flex;

    fn t(v: &[f32]) -> Tensor<Flex, 1> {
        Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), &Default::default())
    }

    fn config(nesterov: bool, dampening: f64) -> SgdConfig {
        SgdConfig::new()
            .with_weight_decay(Some(1e-2))
            .with_momentum(Some(MomentumConfig {
                momentum: 0.9,
                dampening,
                nesterov,
            }))
    }

    /// Two steps (lr 0.1 then 0.05) on p = 1 with g = 0.5 then −2, wd 0.01, momentum 0.9, by
    /// hand: g₁ = 0.5 + 0.01 = 0.51, v₁ = 0.51, p₁ = 1 − 0.051 = 0.949; g₂ = −2 + 0.00949 =
    /// −1.99051, v₂ = −1.99051 + 0.9 · 0.51 = −1.53151, p₂ = 0.949 + 0.0765755 = 1.0255755.
    #[test]
    fn matches_the_formula_over_two_steps() {
        let opt = config(false, 0.0).build();
        let (p, s) = SimpleOptimizer::<Flex>::step(&opt, 0.1, t(&[1.0]), t(&[0.5]), None);
        let value = |t: Tensor<Flex, 1>| t.into_data().to_vec::<f32>().unwrap()[0] as f64;
        assert!((value(p.clone()) - 0.949).abs() < 1e-6);
        let (p, s) = SimpleOptimizer::<Flex>::step(&opt, 0.05, p, t(&[-2.0]), s);
        assert!((value(p) - 1.025_575_5).abs() < 1e-6);
        assert!((value(s.unwrap().momentum.unwrap().velocity) + 1.531_51).abs() < 1e-6);
    }

    /// The fused CPU update equals the generic one bit for bit, parameter and velocity, over
    /// two steps on 40,000 elements (more than one rayon chunk), with and without Nesterov,
    /// dampening and momentum.
    #[test]
    fn the_fused_cpu_update_equals_the_generic_one() {
        let values = |seed: u32| -> Vec<f32> {
            (0..40_000u32)
                .map(|i| ((i.wrapping_mul(2_654_435_761) ^ seed) % 2001) as f32 / 1000.0 - 1.0)
                .collect()
        };
        let plain = SgdConfig::new().with_weight_decay(Some(1e-4));
        for cfg in [config(false, 0.0), config(true, 0.0), config(false, 0.3), plain] {
            let opt = cfg.build();
            let (p0, g1, g2) = (t(&values(1)), t(&values(2)), t(&values(3)));
            let fused1 = sgd_step(0.1, opt.weight_decay, opt.momentum, &p0, &g1, None).expect("the fused path");
            let generic1 = opt.step_generic(0.1, p0, g1, None);
            let fused2 = sgd_step(0.05, opt.weight_decay, opt.momentum, &fused1.0, &g2, fused1.1.as_ref()).unwrap();
            let generic2 = opt.step_generic(0.05, generic1.0.clone(), g2, generic1.1.clone());
            let vec = |t: Option<Tensor<Flex, 1>>| t.map(|t| t.into_data().to_vec::<f32>().unwrap());
            assert_eq!(vec(Some(fused1.0)), vec(Some(generic1.0)), "{cfg:?}");
            assert_eq!(vec(fused1.1), vec(generic1.1), "{cfg:?}");
            assert_eq!(vec(Some(fused2.0)), vec(Some(generic2.0)), "{cfg:?}");
            assert_eq!(vec(fused2.1), vec(generic2.1), "{cfg:?}");
        }
    }

    type Ad = burn::backend::Autodiff<Flex>;

    /// A 3 → 2 linear layer with its weights drawn once (a clone of a lazy module draws its
    /// own weights).
    fn linear_model() -> burn::nn::Linear<Ad> {
        let model: burn::nn::Linear<Ad> = burn::nn::LinearConfig::new(3, 2).init(&Default::default());
        model.clone().load_record(model.into_record())
    }

    /// Over a module, kiln's SGD equals burn's `Sgd` with the same settings, bit for bit.
    #[test]
    fn equals_burns_sgd_on_a_module() {
        use burn::nn::Linear;
        type B = Ad;
        let device = Default::default();
        let model = linear_model();
        let x = Tensor::<B, 2>::from_floats([[0.5, -1.0, 2.0], [1.5, 0.25, -0.5]], &device);
        let mut ours = config(false, 0.0).init::<B, Linear<B>>();
        let mut burns = burn::optim::SgdConfig::new()
            .with_weight_decay(Some(WeightDecayConfig::new(1e-2)))
            .with_momentum(Some(MomentumConfig {
                momentum: 0.9,
                dampening: 0.0,
                nesterov: false,
            }))
            .init::<B, Linear<B>>();
        let (mut a, mut b) = (model.clone(), model);
        for lr in [0.1, 0.05, 0.02] {
            let grads = GradientsParams::from_grads(a.forward(x.clone()).sum().backward(), &a);
            a = ours.step(lr, a, grads);
            let grads = GradientsParams::from_grads(b.forward(x.clone()).sum().backward(), &b);
            b = burns.step(lr, b, grads);
        }
        assert_eq!(a.weight.val().into_data(), b.weight.val().into_data());
    }

    /// The state keeps burn's record layout: the optimizer record burn's `Sgd` writes (as
    /// checkpoints did before) loads into kiln's, velocities included.
    #[test]
    fn burns_optimizer_records_load() {
        use burn::nn::Linear;
        use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
        type B = Ad;
        let device = Default::default();
        let model = linear_model();
        let x = Tensor::<B, 2>::from_floats([[0.5, -1.0, 2.0]], &device);
        let momentum = MomentumConfig {
            momentum: 0.9,
            dampening: 0.0,
            nesterov: false,
        };
        let mut burns = burn::optim::SgdConfig::new()
            .with_momentum(Some(momentum.clone()))
            .init::<B, Linear<B>>();
        let grads = GradientsParams::from_grads(model.forward(x.clone()).sum().backward(), &model);
        let stepped = burns.step(0.1, model.clone(), grads);
        let recorder = NamedMpkBytesRecorder::<FullPrecisionSettings>::new();
        let bytes = Recorder::<B>::record(&recorder, burns.to_record(), ()).unwrap();
        let record = Recorder::<B>::load(&recorder, bytes, &device).unwrap();
        let mut ours = SgdConfig::new().with_momentum(Some(momentum)).init::<B, Linear<B>>();
        ours = ours.load_record(record);
        // The next step from the loaded velocity equals burn's next step.
        let grads = |m: &Linear<B>| GradientsParams::from_grads(m.forward(x.clone()).sum().backward(), m);
        let a = ours.step(0.1, stepped.clone(), grads(&stepped));
        let b = burns.step(0.1, stepped.clone(), grads(&stepped));
        assert_eq!(a.weight.val().into_data(), b.weight.val().into_data());
    }
}
