//! LayerNorm over the last dimension on kiln's CPU training backend, `Autodiff<Flex>`, as one
//! burn autodiff op with its own backward ([`super::layer_norm_kernel`]), instead of the
//! composition of tensor ops (mean, subtract, square, mean, add, sqrt, divide, multiply, add,
//! each recorded and differentiated on its own) that burn's autodiff runs.
//!
//! Without autodiff, burn-flex's own `layer_norm` is already one fused pass; [`train`] answers
//! `None` there, and for any other backend or dtype, which keep burn's `LayerNorm::forward`.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::Flex;
use burn::nn::LayerNorm;
use burn::prelude::*;
use burn::tensor::DType;

use super::layer_norm_kernel::{self as fused, RowStats};
use super::specialize::{
    as_flex_autodiff, flex_tensor, from_flex_autodiff, register_norm_grads, FlexAutodiffTensor as AutodiffTensor,
};

/// `ln(x)` (with `ln`'s ε given as `epsilon`: burn keeps it private) by the fused op; `None`
/// unless `B` is `Autodiff<Flex>`, `x` is f32 and `ln` has a bias.
pub(crate) fn train<B: Backend, const D: usize>(
    ln: &LayerNorm<B>,
    epsilon: f64,
    x: &Tensor<B, D>,
) -> Option<Tensor<B, D>> {
    if x.dtype() != DType::F32 {
        return None;
    }
    let x_ad = as_flex_autodiff(x)?;
    let gamma = as_flex_autodiff(&ln.gamma.val())?;
    let beta = as_flex_autodiff(&ln.beta.as_ref()?.val())?;
    from_flex_autodiff(layer_norm_op(x_ad, gamma, beta, epsilon))
}

/// What the backward pass needs: the input, γ and the row statistics.
#[derive(Debug, Clone)]
struct SavedForBackward {
    x: FlexTensor,
    gamma: Vec<f32>,
    stats: RowStats,
}

/// The fused op's backward: `dx`, `dγ`, `dβ` to whichever of the three parents track gradients.
#[derive(Debug)]
struct LayerNormBackward;

impl Backward<Flex, 3> for LayerNormBackward {
    type State = SavedForBackward;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node).to_contiguous();
        let saved = ops.state;
        let d = saved.gamma.len();
        let (dx, d_gamma, d_beta) = fused::backward(
            saved.x.storage::<f32>(),
            dy.storage::<f32>(),
            d,
            &saved.gamma,
            &saved.stats,
        );
        let dims = saved.x.layout().shape().to_vec();
        let ids = [node_x, node_gamma, node_beta].map(|node| node.map(|n| n.id));
        register_norm_grads(grads, ids, (dx, dims), d_gamma, d_beta);
    }
}

/// Runs the forward and records the op on the autodiff graph when any input tracks gradients.
fn layer_norm_op(x: AutodiffTensor, gamma: AutodiffTensor, beta: AutodiffTensor, epsilon: f64) -> AutodiffTensor {
    let x_data = x.primitive.to_contiguous();
    let dims = x_data.layout().shape().to_vec();
    let d = *dims.last().expect("LayerNorm of a rank-0 tensor");
    let gamma_values = f32_values(&gamma.primitive);
    let (y, stats) = fused::forward(
        x_data.storage::<f32>(),
        d,
        &gamma_values,
        Some(&f32_values(&beta.primitive)),
        epsilon,
    );
    let y = flex_tensor(y, dims);
    match LayerNormBackward
        .prepare::<NoCheckpointing>([x.node.clone(), gamma.node.clone(), beta.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(
            SavedForBackward {
                x: x_data,
                gamma: gamma_values,
                stats,
            },
            y,
        ),
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}

/// A 1-D f32 tensor's values.
fn f32_values(tensor: &FlexTensor) -> Vec<f32> {
    tensor.to_contiguous().storage::<f32>().to_vec()
}

#[cfg(test)]
pub(crate) mod tests {
    use burn::backend::{Autodiff, Flex};
    use burn::nn::{LayerNorm, LayerNormConfig};
    use burn::prelude::*;
    use burn::tensor::{Distribution, FloatDType};

    type Ad = Autodiff<Flex>;

    pub(crate) fn assert_close(got: &[f32], want: &[f32], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1.0);
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= 2e-5 * scale, "{what}[{i}]: {g} vs {w}");
        }
    }

    fn random_ln(d: usize, device: &burn::backend::flex::FlexDevice) -> LayerNorm<Ad> {
        let mut ln = LayerNormConfig::new(d).init::<Ad>(device);
        ln.gamma = ln
            .gamma
            .map(|_| Tensor::random([d], Distribution::Normal(1.0, 0.5), device).require_grad());
        ln.beta = ln
            .beta
            .map(|b| b.map(|_| Tensor::random([d], Distribution::Normal(0.0, 0.5), device).require_grad()));
        ln
    }

    /// Forward values and the gradients of the input, γ and β equal burn's `LayerNorm` on a
    /// random input (offset, as activations are), for odd and SIMD-sized rows and a
    /// non-contiguous (transposed) input.
    #[test]
    fn equals_burns_layer_norm() {
        let device = Default::default();
        for (dims, transpose) in [
            ([2, 5, 96], false),
            ([4, 300, 96], false),
            ([2, 500, 40], true),
            ([3, 7, 13], false),
            ([4, 9, 20], true),
            ([1, 1, 1], false),
        ] {
            let d = if transpose { dims[1] } else { dims[2] };
            let ln = random_ln(d, &device);
            let base = Tensor::<Ad, 3>::random(dims, Distribution::Normal(3.0, 2.0), &device);
            let upstream_dims = if transpose { [dims[0], dims[2], dims[1]] } else { dims };
            let upstream = Tensor::<Ad, 3>::random(upstream_dims, Distribution::Normal(0.0, 1.0), &device);
            let run = |fused: bool| {
                let x = Tensor::<Ad, 3>::from_inner(base.clone().inner()).require_grad();
                let input = if transpose {
                    x.clone().swap_dims(1, 2)
                } else {
                    x.clone()
                };
                let y = if fused {
                    super::train(&ln, 1e-5, &input).expect("the fused path")
                } else {
                    ln.forward(input)
                };
                let grads = (y.clone() * upstream.clone()).sum().backward();
                let values = |data: TensorData| data.to_vec::<f32>().unwrap();
                [
                    values(y.into_data()),
                    values(x.grad(&grads).unwrap().into_data()),
                    values(ln.gamma.val().grad(&grads).unwrap().into_data()),
                    values(ln.beta.as_ref().unwrap().val().grad(&grads).unwrap().into_data()),
                ]
            };
            let (fused, burn) = (run(true), run(false));
            for (what, (got, want)) in ["y", "dx", "dγ", "dβ"].iter().zip(fused.iter().zip(&burn)) {
                assert_close(got, want, what);
            }
        }
    }

    /// Only the CPU training backend in f32 takes the fused op.
    #[test]
    fn only_the_cpu_training_backend_takes_the_fused_op() {
        let device = Default::default();
        let x = Tensor::<Ad, 2>::random([3, 8], Distribution::Default, &device);
        assert!(super::train(&LayerNormConfig::new(8).init::<Ad>(&device), 1e-5, &x).is_some());
        let half = x.cast(FloatDType::F16);
        assert!(super::train(&LayerNormConfig::new(8).init::<Ad>(&device), 1e-5, &half).is_none());
        let plain = Tensor::<Flex, 2>::random([3, 8], Distribution::Default, &device);
        assert!(super::train(&LayerNormConfig::new(8).init::<Flex>(&device), 1e-5, &plain).is_none());
    }
}
