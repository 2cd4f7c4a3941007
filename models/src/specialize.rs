//! Run-time specialisation of backend-generic code for kiln's CPU backend.
//!
//! kiln's models and optimizers are generic over burn's `Backend`; a few of their steps have a
//! fused CPU kernel that only burn-flex's tensors can run (BatchNorm training, the Adadelta
//! update). Such a step asks [`downcast`] whether the generic tensor primitive it holds *is*
//! the concrete one, and otherwise keeps its generic code, so CUDA builds and other dtypes
//! are unaffected and no trait bound spreads through the code base. The fused autodiff ops
//! (BatchNorm, dropout) share the conversions below.

use std::any::Any;

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

/// An f32 `FlexTensor` of shape `dims` holding `values`.
pub(crate) fn flex_tensor(values: Vec<f32>, dims: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, dims))
}
