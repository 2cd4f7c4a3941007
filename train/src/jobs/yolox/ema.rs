//! YOLOX's `ModelEMA`: an exponential moving average of a model's weights and BatchNorm
//! statistics, which YOLOX evaluates and saves instead of the raw weights.
//!
//! After each optimizer step, every floating-point tensor `v` of the average moves towards the
//! model's `m`: `v ← d · v + (1 − d) · m` with `d = decay · (1 − exp(−updates / 2000))`, so
//! early averages follow the model closely and later ones smooth over about `1 / (1 − decay)`
//! steps.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;

/// YOLOX's decay.
pub const EMA_DECAY: f64 = 0.9998;
/// The updates over which the effective decay ramps up (YOLOX's `tau`).
const EMA_RAMP: f64 = 2000.0;

/// The moving average of a module `M` on backend `B` (the non-autodiff backend).
#[derive(Debug, Clone)]
pub struct ModelEma<M> {
    module: M,
    updates: usize,
}

impl<M> ModelEma<M> {
    /// An average starting at `module`, having seen `updates` updates (0 for a new run, the
    /// checkpoint's count when resuming).
    pub fn new(module: M, updates: usize) -> Self {
        Self { module, updates }
    }

    /// The averaged module.
    pub fn module(&self) -> &M {
        &self.module
    }

    /// Updates applied so far.
    pub fn updates(&self) -> usize {
        self.updates
    }

    /// The decay used by update number `updates` (from 1).
    pub fn decay_at(updates: usize) -> f64 {
        EMA_DECAY * (1.0 - (-(updates as f64) / EMA_RAMP).exp())
    }

    /// Moves the average towards `model` (the same architecture, e.g. `model.valid()`).
    pub fn update<B: Backend>(&mut self, model: &M)
    where
        M: Module<B>,
    {
        self.updates += 1;
        let d = Self::decay_at(self.updates);
        let mut current = Flattened(Vec::new());
        model.visit(&mut current);
        let mut blend = Blend {
            model: current.0.into_iter(),
            keep: d,
        };
        self.module = self.module.clone().map(&mut blend);
    }
}

/// Collects a module's float tensors, flattened, in visiting order.
struct Flattened<B: Backend>(Vec<Tensor<B, 1>>);

impl<B: Backend> ModuleVisitor<B> for Flattened<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let value = param.val();
        let n = value.shape().num_elements();
        self.0.push(value.reshape([n]));
    }
}

/// Replaces each float tensor `v` of the average by `keep · v + (1 − keep) · m`, taking the
/// model's tensors `m` in the same visiting order.
struct Blend<B: Backend> {
    model: std::vec::IntoIter<Tensor<B, 1>>,
    keep: f64,
}

impl<B: Backend> ModuleMapper<B> for Blend<B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let current = self
            .model
            .next()
            .expect("the averaged module and the model have the same architecture");
        let keep = self.keep;
        param.map(|v| {
            let m = current.reshape(v.shape());
            v.mul_scalar(keep).add(m.mul_scalar(1.0 - keep))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig};
    use burn_flex::Flex;

    #[derive(Module, Debug)]
    struct Tiny<B: Backend> {
        linear: Linear<B>,
        bn: BatchNorm<B>,
    }

    fn tiny(device: &burn_flex::FlexDevice) -> Tiny<Flex> {
        Tiny {
            linear: LinearConfig::new(2, 2).init(device),
            bn: BatchNormConfig::new(2).init(device),
        }
    }

    fn floats(m: &Tiny<Flex>) -> Vec<f32> {
        let mut all = Flattened(Vec::new());
        m.visit(&mut all);
        all.0
            .into_iter()
            .flat_map(|t| t.into_data().to_vec::<f32>().unwrap())
            .collect()
    }

    #[test]
    fn decay_ramps_up_like_yolox() {
        // 0.9998 · (1 − e^(−1/2000)) and 0.9998 · (1 − e^(−1)), computed with Python's math.
        assert!((ModelEma::<()>::decay_at(1) - 4.997_750_458_265_429e-4).abs() < 1e-15);
        assert!((ModelEma::<()>::decay_at(2000) - 0.631_994_134_716_792).abs() < 1e-12);
        assert!(ModelEma::<()>::decay_at(100_000) > 0.9997);
    }

    #[test]
    fn blends_every_float_tensor_including_running_statistics() {
        let device = Default::default();
        let start = tiny(&device);
        let target = tiny(&device).map(&mut Fill(3.0));
        let before = floats(&start);
        let mut ema = ModelEma::new(start, 0);
        ema.update(&target);
        let d = ModelEma::<()>::decay_at(1);
        let after = floats(ema.module());
        assert_eq!(after.len(), before.len());
        // weights, bias, gamma, beta, running mean and running var all moved the same way.
        assert_eq!(after.len(), 4 + 2 + 2 + 2 + 2 + 2);
        for (a, b) in after.iter().zip(&before) {
            let want = d * *b as f64 + (1.0 - d) * 3.0;
            assert!((*a as f64 - want).abs() < 1e-5, "{a} vs {want}");
        }
        assert_eq!(ema.updates(), 1);
    }

    /// Sets every float tensor to one value.
    struct Fill(f64);

    impl<B: Backend> ModuleMapper<B> for Fill {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let v = self.0;
            param.map(|t| t.zeros_like().add_scalar(v))
        }
    }
}
