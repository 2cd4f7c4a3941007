//! Weight decay on the weights alone, as YOLOX groups its parameters: convolution (and
//! linear) weights decay; BatchNorm weights and every bias do not.

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

/// Adds `decay · w` to the gradient of every parameter `w` of rank 2 or more, as torch's
/// `SGD(weight_decay)` does for the parameter group holding them; rank-1 parameters
/// (BatchNorm's γ and β, biases) and BatchNorm's running statistics, which have no gradient,
/// are left alone. Call it before the optimizer step.
pub fn decay_weights<B: AutodiffBackend, M: AutodiffModule<B>>(
    grads: GradientsParams,
    model: &M,
    decay: f64,
) -> GradientsParams {
    let mut visitor = DecayWeights::<B> {
        grads,
        decay,
        _backend: std::marker::PhantomData,
    };
    model.visit(&mut visitor);
    visitor.grads
}

struct DecayWeights<B> {
    grads: GradientsParams,
    decay: f64,
    _backend: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for DecayWeights<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if D < 2 {
            return;
        }
        if let Some(grad) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            let decayed = grad.add(param.val().inner().mul_scalar(self.decay));
            self.grads.register(param.id, decayed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig};
    use burn_flex::Flex;

    type B = Autodiff<Flex>;

    #[derive(Module, Debug)]
    struct Tiny<B: Backend> {
        linear: Linear<B>,
        bn: BatchNorm<B>,
    }

    #[test]
    fn only_weights_of_rank_two_or_more_decay() {
        let device = Default::default();
        let model = Tiny::<B> {
            linear: LinearConfig::new(2, 2).init(&device),
            bn: BatchNormConfig::new(2).init(&device),
        };
        // loss = sum(bn(linear(x))) for a batch of 2 rows, as a [2, 2, 1, 1] image.
        let x = Tensor::<B, 2>::from_floats([[1.0, 2.0], [3.0, -1.0]], &device);
        let y = model.bn.forward(model.linear.forward(x).reshape([2, 2, 1, 1]));
        let grads = GradientsParams::from_grads(y.sum().backward(), &model);
        let before = |g: &GradientsParams, id| g.get::<Flex, 1>(id).unwrap().into_data().to_vec::<f32>().unwrap();
        let weight_before: Vec<f32> = grads
            .get::<Flex, 2>(model.linear.weight.id)
            .unwrap()
            .into_data()
            .to_vec()
            .unwrap();
        let bias_before = before(&grads, model.linear.bias.as_ref().unwrap().id);
        let gamma_before = before(&grads, model.bn.gamma.id);

        let grads = decay_weights(grads, &model, 0.5);
        let weight: Vec<f32> = model.linear.weight.val().into_data().to_vec().unwrap();
        let weight_after: Vec<f32> = grads
            .get::<Flex, 2>(model.linear.weight.id)
            .unwrap()
            .into_data()
            .to_vec()
            .unwrap();
        for ((a, b), w) in weight_after.iter().zip(&weight_before).zip(&weight) {
            assert!((a - (b + 0.5 * w)).abs() < 1e-6, "{a} vs {b} + 0.5 * {w}");
        }
        assert_eq!(before(&grads, model.linear.bias.as_ref().unwrap().id), bias_before);
        assert_eq!(before(&grads, model.bn.gamma.id), gamma_before);
    }
}
