//! Gradient clipping by the global norm, as `torch.nn.utils.clip_grad_norm_` does it (and
//! returns the norm, which Swin-Transformer logs as `grad_norm`): the L2 norm over every
//! gradient together, and when it exceeds `max_norm` every gradient scaled by
//! `max_norm / (norm + 1e-6)`.

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

/// torch's guard against dividing by a zero norm.
const EPSILON: f64 = 1e-6;

/// The global L2 norm of `model`'s gradients in `grads` and the gradients, clipped to
/// `max_norm` when it is positive and the norm exceeds it. One host read for the norm.
pub fn clip_grad_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    grads: GradientsParams,
    model: &M,
    max_norm: f64,
) -> (GradientsParams, f64) {
    let mut squares = SumOfSquares::<B> {
        grads: &grads,
        total: None,
    };
    model.visit(&mut squares);
    let norm = squares.total.map_or(0.0, |t| t.into_scalar().elem::<f64>().sqrt());
    if max_norm <= 0.0 || norm <= max_norm {
        return (grads, norm);
    }
    let factor = max_norm / (norm + EPSILON);
    let mut scale = Scale::<B> {
        grads,
        factor,
        _backend: std::marker::PhantomData,
    };
    model.visit(&mut scale);
    (scale.grads, norm)
}

struct SumOfSquares<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    total: Option<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SumOfSquares<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(grad) = self.grads.get::<B::InnerBackend, D>(param.id) {
            let sum = grad.powi_scalar(2).sum();
            self.total = Some(match self.total.take() {
                Some(total) => total + sum,
                None => sum,
            });
        }
    }
}

struct Scale<B> {
    grads: GradientsParams,
    factor: f64,
    _backend: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(grad) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            self.grads.register(param.id, grad.mul_scalar(self.factor));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use burn::nn::{Linear, LinearConfig};
    use burn_flex::Flex;

    type B = Autodiff<Flex>;

    fn grads_of(model: &Linear<B>) -> GradientsParams {
        // loss = sum(W x + b) for x = [3, 4]: dW = [[3, 3], [4, 4]], db = [1, 1];
        // ‖g‖² = 9 + 9 + 16 + 16 + 1 + 1 = 52.
        let x = Tensor::<B, 2>::from_floats([[3.0, 4.0]], &Default::default());
        GradientsParams::from_grads(model.forward(x).sum().backward(), model)
    }

    fn values(g: &GradientsParams, model: &Linear<B>) -> Vec<f32> {
        let mut v: Vec<f32> = g.get::<Flex, 2>(model.weight.id).unwrap().into_data().to_vec().unwrap();
        v.extend(
            g.get::<Flex, 1>(model.bias.as_ref().unwrap().id)
                .unwrap()
                .into_data()
                .to_vec::<f32>()
                .unwrap(),
        );
        v
    }

    #[test]
    fn the_norm_is_global_and_clipping_scales_every_gradient() {
        let model = LinearConfig::new(2, 2).init::<B>(&Default::default());
        let (g, norm) = clip_grad_norm(grads_of(&model), &model, 100.0);
        assert!((norm - 52f64.sqrt()).abs() < 1e-5, "{norm}");
        assert_eq!(
            values(&g, &model),
            [3.0, 3.0, 4.0, 4.0, 1.0, 1.0],
            "under the limit: unchanged"
        );

        let (g, norm) = clip_grad_norm(grads_of(&model), &model, 1.0);
        assert!((norm - 52f64.sqrt()).abs() < 1e-5, "the norm before clipping");
        let factor = 1.0 / (52f64.sqrt() + 1e-6);
        for (got, raw) in values(&g, &model).iter().zip([3.0, 3.0, 4.0, 4.0, 1.0, 1.0]) {
            assert!((*got as f64 - raw * factor).abs() < 1e-6, "{got} vs {}", raw * factor);
        }
        let (_, clipped_norm) = clip_grad_norm(g, &model, 0.0);
        assert!((clipped_norm - 1.0).abs() < 1e-5, "{clipped_norm}");
    }
}
