//! BatchNorm training on kiln's CPU training backend, `Autodiff<Flex>`, as one burn autodiff
//! op with its own backward ([`super::batch_norm_kernel`]), instead of the composition of tensor ops that
//! every other backend runs.
//!
//! kiln's models stay generic over `B: Backend`: [`train`] recognises the CPU backend at run
//! time by downcasting the tensors' primitives ([`super::specialize`]) and answers `None` for
//! any other backend or dtype, so CUDA and half precision keep the generic path.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::Flex;
use burn::nn::BatchNorm;
use burn::prelude::*;
use burn::tensor::DType;

use super::batch_norm_kernel::{self as fused, BatchStats, Planes};
use super::specialize::{
    as_flex_autodiff, flex_tensor, from_flex_autodiff, register_norm_grads, FlexAutodiffTensor as AutodiffTensor,
};

/// `bn(x)` in training mode with the fused op, and the batch statistics `(mean, biased
/// variance)` for the running-statistics update; `None` unless `B` is `Autodiff<Flex>` (any
/// checkpointing) and `x` is f32.
pub(crate) fn train<B: Backend>(bn: &BatchNorm<B>, x: &Tensor<B, 4>) -> Option<(Tensor<B, 4>, Vec<f32>, Vec<f32>)> {
    if x.dtype() != DType::F32 {
        return None;
    }
    let x_ad = as_flex_autodiff(x)?;
    let gamma = as_flex_autodiff(&bn.gamma.val())?;
    let beta = as_flex_autodiff(&bn.beta.val())?;
    let (y, stats) = batch_norm_op(x_ad, gamma, beta, bn.epsilon);
    Some((from_flex_autodiff(y)?, stats.mean, stats.var))
}

/// What the backward pass needs: the input, γ and the statistics.
#[derive(Debug, Clone)]
struct SavedForBackward {
    x: FlexTensor,
    gamma: Vec<f32>,
    shape: Planes,
    stats: BatchStats,
}

/// The fused op's backward: `dx`, `dγ`, `dβ` to whichever of the three parents track gradients.
#[derive(Debug)]
struct BatchNormBackward;

impl Backward<Flex, 3> for BatchNormBackward {
    type State = SavedForBackward;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node).to_contiguous();
        let saved = ops.state;
        let (dx, d_gamma, d_beta) = fused::backward(
            saved.x.storage::<f32>(),
            dy.storage::<f32>(),
            saved.shape,
            &saved.gamma,
            &saved.stats,
        );
        let dims = saved.x.layout().shape().to_vec();
        let ids = [node_x, node_gamma, node_beta].map(|node| node.map(|n| n.id));
        register_norm_grads(grads, ids, (dx, dims), d_gamma, d_beta);
    }
}

/// Runs the forward and records the op on the autodiff graph when any input tracks gradients.
fn batch_norm_op(
    x: AutodiffTensor,
    gamma: AutodiffTensor,
    beta: AutodiffTensor,
    epsilon: f64,
) -> (AutodiffTensor, BatchStats) {
    let x_data = x.primitive.to_contiguous();
    let dims = x_data.layout().shape().to_vec();
    let shape = Planes {
        batch: dims[0],
        channels: dims[1],
        plane: dims[2..].iter().product(),
    };
    let gamma_values = f32_values(&gamma.primitive);
    let (y, stats) = fused::forward(
        x_data.storage::<f32>(),
        shape,
        &gamma_values,
        &f32_values(&beta.primitive),
        epsilon,
    );
    let y = flex_tensor(y, dims);
    let output = match BatchNormBackward
        .prepare::<NoCheckpointing>([x.node.clone(), gamma.node.clone(), beta.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(
            SavedForBackward {
                x: x_data,
                gamma: gamma_values,
                shape,
                stats: stats.clone(),
            },
            y,
        ),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    (output, stats)
}

/// A 1-D f32 tensor's values.
fn f32_values(tensor: &FlexTensor) -> Vec<f32> {
    tensor.to_contiguous().storage::<f32>().to_vec()
}
