//! Run-time specialisation of backend-generic code for kiln's CPU backend.
//!
//! kiln's models and optimizers are generic over burn's `Backend`; a few of their steps have a
//! fused CPU kernel that only burn-flex's tensors can run (BatchNorm training, the Adadelta
//! update). Such a step asks [`downcast`] whether the generic tensor primitive it holds *is*
//! the concrete one, and otherwise keeps its generic code, so CUDA builds and other dtypes
//! are unaffected and no trait bound spreads through the code base. The fused autodiff ops
//! (BatchNorm, dropout, pooling + ReLU) share the conversions below, and the one-input ones
//! the recording of their forward ([`record_unary`]) and the shape of their backward
//! ([`backward_unary`]).

use std::any::Any;

use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use burn::tensor::TensorPrimitive;

/// `value` as a `U` when `T` is `U`, `None` otherwise (the value is then dropped: pass a clone
/// of an `Arc`-backed tensor primitive).
pub fn downcast<T: 'static, U: 'static>(value: T) -> Option<U> {
    (Box::new(value) as Box<dyn Any>)
        .downcast::<U>()
        .ok()
        .map(|boxed| *boxed)
}

/// The tensor primitive of `Autodiff<Flex>` (burn-autodiff's `AutodiffTensor`, which that
/// crate exports only as this associated type).
pub(crate) type FlexAutodiffTensor = burn::tensor::ops::FloatTensor<Autodiff<Flex>>;

/// `tensor`'s primitive when `B` is `Autodiff<Flex>`, `None` otherwise.
pub(crate) fn as_flex_autodiff<B: Backend, const D: usize>(tensor: &Tensor<B, D>) -> Option<FlexAutodiffTensor> {
    downcast(tensor.clone().into_primitive().tensor())
}

/// The generic tensor holding `primitive` when `B` is `Autodiff<Flex>`, `None` otherwise.
pub(crate) fn from_flex_autodiff<B: Backend, const D: usize>(primitive: FlexAutodiffTensor) -> Option<Tensor<B, D>> {
    let primitive = downcast::<_, B::FloatTensorPrimitive>(primitive)?;
    Some(Tensor::from_primitive(TensorPrimitive::Float(primitive)))
}

/// `tensor`'s primitive when `B` is `Flex`, `None` otherwise.
pub(crate) fn as_flex<B: Backend, const D: usize>(tensor: &Tensor<B, D>) -> Option<FlexTensor> {
    downcast(tensor.clone().into_primitive().tensor())
}

/// The generic tensor holding `primitive` when `B` is `Flex`, `None` otherwise.
pub(crate) fn from_flex<B: Backend, const D: usize>(primitive: FlexTensor) -> Option<Tensor<B, D>> {
    let primitive = downcast::<_, B::FloatTensorPrimitive>(primitive)?;
    Some(Tensor::from_primitive(TensorPrimitive::Float(primitive)))
}

/// The generic tensor of shape `shape` holding f32 `values` when `B` is burn-flex (or
/// `Autodiff` of it for an inner tensor), `None` otherwise: a fused CPU kernel's result.
pub(crate) fn flex_values<B: Backend, const D: usize>(
    values: Vec<f32>,
    shape: burn::tensor::Shape,
) -> Option<Tensor<B, D>> {
    let primitive = downcast::<_, B::FloatTensorPrimitive>(FlexTensor::from_data(TensorData::new(values, shape)))?;
    Some(Tensor::from_primitive(TensorPrimitive::Float(primitive)))
}

/// An f32 `FlexTensor` of shape `dims` holding `values`.
pub(crate) fn flex_tensor(values: Vec<f32>, dims: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, dims))
}

/// The output `y` of a one-input fused op on `Autodiff<Flex>`, recorded with `state` for
/// `backward` when `x` tracks gradients (and as a constant otherwise).
pub(crate) fn record_unary<Op: Backward<Flex, 1>>(
    backward: Op,
    x: &FlexAutodiffTensor,
    state: Op::State,
    y: FlexTensor,
) -> FlexAutodiffTensor {
    match backward
        .prepare::<NoCheckpointing>([x.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(state, y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}

/// Registers a normalisation's gradients with whichever of its parents `[x, γ, β]` track
/// them (their node ids): `dx` shaped like the input (`x_dims`), `dγ` and `dβ` as vectors.
pub(crate) fn register_norm_grads(
    grads: &mut Gradients,
    [node_x, node_gamma, node_beta]: [Option<burn::backend::autodiff::NodeId>; 3],
    (dx, x_dims): (Vec<f32>, Vec<usize>),
    d_gamma: Vec<f32>,
    d_beta: Vec<f32>,
) {
    if let Some(id) = node_x {
        grads.register::<Flex>(id, flex_tensor(dx, x_dims));
    }
    for (node, values) in [(node_gamma, d_gamma), (node_beta, d_beta)] {
        if let Some(id) = node {
            let len = values.len();
            grads.register::<Flex>(id, flex_tensor(values, vec![len]));
        }
    }
}

/// The backward of a one-input fused op: takes the output gradient (contiguous) and, when the
/// input tracks gradients, registers `input_grad(dy, state)` (its values and shape) for it.
pub(crate) fn backward_unary<S>(
    ops: Ops<S, 1>,
    grads: &mut Gradients,
    input_grad: impl FnOnce(&FlexTensor, S) -> (Vec<f32>, Vec<usize>),
) {
    let [node_x] = ops.parents;
    let dy = grads.consume::<Flex>(&ops.node).to_contiguous();
    let Some(node) = node_x else { return };
    let (values, dims) = input_grad(&dy, ops.state);
    grads.register::<Flex>(node.id, flex_tensor(values, dims));
}
