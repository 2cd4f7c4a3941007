//! Adadelta (Zeiler 2012) with PyTorch's formula and defaults, as a burn optimizer.
//!
//! For each parameter `p` with gradient `g` (after optional weight decay `g += wd·p`):
//! ```text
//! v  = ρ·v + (1 − ρ)·g²
//! Δ  = √(u + ε) / √(v + ε) · g
//! u  = ρ·u + (1 − ρ)·Δ²
//! p -= lr · Δ
//! ```

use burn::config::Config;
use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::decay::{WeightDecay, WeightDecayConfig};
use burn::optim::{LearningRate, SimpleOptimizer};
use burn::record::Record;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use kiln_models::cpu::adadelta::{adadelta_step, AdadeltaAverages};

/// Adadelta's hyper-parameters; defaults are `torch.optim.Adadelta`'s.
#[derive(Config, Debug)]
pub struct AdadeltaConfig {
    /// Decay of the running averages (ρ).
    #[config(default = 0.9)]
    pub rho: f64,
    /// Added inside both square roots for stability (ε).
    #[config(default = 1e-6)]
    pub epsilon: f64,
    /// L2 penalty added to the gradient; none by default.
    pub weight_decay: Option<WeightDecayConfig>,
}

/// The Adadelta update rule.
#[derive(Clone)]
pub struct Adadelta {
    rho: f64,
    epsilon: f64,
    weight_decay: Option<WeightDecay>,
}

/// Per-parameter running averages of squared gradients and squared updates.
#[derive(Record, Clone)]
pub struct AdadeltaState<B: Backend, const D: usize> {
    /// Running average of g² (torch's `square_avg`).
    pub square_avg: Tensor<B, D>,
    /// Running average of Δ² (torch's `acc_delta`).
    pub acc_delta: Tensor<B, D>,
}

impl AdadeltaConfig {
    /// The update rule alone.
    pub fn build(&self) -> Adadelta {
        Adadelta {
            rho: self.rho,
            epsilon: self.epsilon,
            weight_decay: self.weight_decay.as_ref().map(WeightDecay::new),
        }
    }

    /// An optimizer for module `M` on autodiff backend `B`.
    pub fn init<B: AutodiffBackend, M: AutodiffModule<B>>(&self) -> OptimizerAdaptor<Adadelta, M, B> {
        OptimizerAdaptor::from(self.build())
    }
}

impl<B: Backend> SimpleOptimizer<B> for Adadelta {
    type State<const D: usize> = AdadeltaState<B, D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<B, D>,
        mut grad: Tensor<B, D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<B, D>, Option<Self::State<D>>) {
        if let Some(decay) = &self.weight_decay {
            grad = decay.transform(grad, tensor.clone());
        }
        match self.step_fused(lr, &tensor, &grad, state.as_ref()) {
            Some((tensor, state)) => (tensor, Some(state)),
            None => self.step_generic(lr, tensor, grad, state),
        }
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &B::Device) -> Self::State<D> {
        AdadeltaState {
            square_avg: state.square_avg.to_device(device),
            acc_delta: state.acc_delta.to_device(device),
        }
    }
}

impl Adadelta {
    /// The update as one pass on the CPU backend ([`adadelta_step`]); `None` elsewhere.
    fn step_fused<B: Backend, const D: usize>(
        &self,
        lr: LearningRate,
        tensor: &Tensor<B, D>,
        grad: &Tensor<B, D>,
        state: Option<&AdadeltaState<B, D>>,
    ) -> Option<(Tensor<B, D>, AdadeltaState<B, D>)> {
        let averages = state.map(|s| AdadeltaAverages {
            square_avg: s.square_avg.clone(),
            acc_delta: s.acc_delta.clone(),
        });
        let (tensor, a) = adadelta_step(self.rho, self.epsilon, lr, tensor, grad, averages.as_ref())?;
        Some((
            tensor,
            AdadeltaState {
                square_avg: a.square_avg,
                acc_delta: a.acc_delta,
            },
        ))
    }

    /// The update in burn tensor ops, for every backend but burn-flex.
    fn step_generic<B: Backend, const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<AdadeltaState<B, D>>,
    ) -> (Tensor<B, D>, Option<AdadeltaState<B, D>>) {
        let (square_avg, acc_delta) = match state {
            Some(s) => (s.square_avg, s.acc_delta),
            None => (grad.zeros_like(), grad.zeros_like()),
        };
        let one_minus_rho = 1.0 - self.rho;
        let square_avg = square_avg.mul_scalar(self.rho) + grad.clone().square().mul_scalar(one_minus_rho);
        let std = square_avg.clone().add_scalar(self.epsilon).sqrt();
        let delta = acc_delta.clone().add_scalar(self.epsilon).sqrt().div(std).mul(grad);
        let acc_delta = acc_delta.mul_scalar(self.rho) + delta.clone().square().mul_scalar(one_minus_rho);
        let tensor = tensor - delta.mul_scalar(lr);
        (tensor, Some(AdadeltaState { square_avg, acc_delta }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;
    use burn_flex::Flex;

    fn t(v: &[f32]) -> Tensor<Flex, 1> {
        Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), &Default::default())
    }

    fn close(a: Tensor<Flex, 1>, want: &[f64]) {
        let got = a.into_data().to_vec::<f32>().unwrap();
        for (g, w) in got.iter().zip(want) {
            assert!(
                ((*g as f64) - w).abs() < 1e-6 * w.abs().max(1.0),
                "got {got:?}, want {want:?}"
            );
        }
    }

    /// Two steps (lr 1.0 then 0.7) on p = [1, −2] with g = [0.5, −1] then [0.25, 3], against
    /// values computed by hand from torch's formula (ρ 0.9, ε 1e-6) in double precision.
    #[test]
    fn matches_torch_formula_over_two_steps() {
        let opt = AdadeltaConfig::new().build();
        let (p, s) = SimpleOptimizer::<Flex>::step(&opt, 1.0, t(&[1.0, -2.0]), t(&[0.5, -1.0]), None);
        close(p.clone(), &[0.996_837_785_583_487_6, -1.996_837_738_151_101_3]);
        let s = s.unwrap();
        close(s.square_avg.clone(), &[0.025, 0.1]);
        close(
            s.acc_delta.clone(),
            &[9.999_600_015_999_36e-7, 9.999_900_000_999_991e-7],
        );
        let (p, s) = SimpleOptimizer::<Flex>::step(&opt, 0.7, p, t(&[0.25, 3.0]), Some(s));
        close(p, &[0.995_378_224_664_033_6, -1.999_822_539_210_645_2]);
        let s = s.unwrap();
        close(s.square_avg, &[0.02875, 0.99]);
        close(s.acc_delta, &[1.334_722_792_786_316_6e-6, 2.718_161_890_917_381_3e-6]);
    }

    /// On burn-flex the update is the fused loop ([`adadelta_step`]); it gives the generic tensor-op
    /// update's values over two steps, parameter and both running averages, on 40,000
    /// elements (more than one rayon chunk).
    #[test]
    fn the_fused_cpu_update_equals_the_generic_one() {
        let values = |seed: u32| -> Vec<f32> {
            (0..40_000u32)
                .map(|i| ((i.wrapping_mul(2_654_435_761) ^ seed) % 2001) as f32 / 1000.0 - 1.0)
                .collect()
        };
        let opt = AdadeltaConfig::new().build();
        let (p0, g1, g2) = (t(&values(1)), t(&values(2)), t(&values(3)));
        let fused1 = opt
            .step_fused(1.0, &p0, &g1, None)
            .expect("burn-flex f32 tensors take the fused path");
        let (gp1, gs1) = opt.step_generic(1.0, p0, g1, None);
        let gs1 = gs1.unwrap();
        let fused2 = opt.step_fused(0.7, &fused1.0, &g2, Some(&fused1.1)).unwrap();
        let (gp2, gs2) = opt.step_generic(0.7, gp1.clone(), g2, Some(gs1.clone()));
        let gs2 = gs2.unwrap();
        let vec = |t: Tensor<Flex, 1>| t.into_data().to_vec::<f32>().unwrap();
        for (what, got, want) in [
            ("parameter, step 1", fused1.0, gp1),
            ("square_avg, step 1", fused1.1.square_avg, gs1.square_avg),
            ("acc_delta, step 1", fused1.1.acc_delta, gs1.acc_delta),
            ("parameter, step 2", fused2.0, gp2),
            ("square_avg, step 2", fused2.1.square_avg, gs2.square_avg),
            ("acc_delta, step 2", fused2.1.acc_delta, gs2.acc_delta),
        ] {
            for (g, w) in vec(got).iter().zip(vec(want)) {
                assert!((g - w).abs() <= 1e-6 * w.abs().max(1e-6), "{what}: {g} vs {w}");
            }
        }
    }

    /// Weight decay adds wd·p to the gradient before the update: with wd 0.5, p 2 and g 0
    /// the effective gradient is 1, so Δ = √ε / √(0.1 + ε).
    #[test]
    fn weight_decay_is_added_to_the_gradient() {
        let opt = AdadeltaConfig::new()
            .with_weight_decay(Some(WeightDecayConfig::new(0.5)))
            .build();
        let (p, _) = SimpleOptimizer::<Flex>::step(&opt, 1.0, t(&[2.0]), t(&[0.0]), None);
        let delta = (1e-6f64).sqrt() / (0.1f64 + 1e-6).sqrt();
        close(p, &[2.0 - delta]);
    }
}
