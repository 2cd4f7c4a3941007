//! Run-time specialisation of backend-generic code for kiln's CPU backend.
//!
//! kiln's models and optimizers are generic over burn's `Backend`; a few of their steps have a
//! fused CPU kernel that only burn-flex's tensors can run (BatchNorm training, the Adadelta
//! update). Such a step asks [`downcast`] whether the generic tensor primitive it holds *is*
//! the concrete one, and otherwise keeps its generic code, so CUDA builds and other dtypes
//! are unaffected and no trait bound spreads through the code base.

use std::any::Any;

/// `value` as a `U` when `T` is `U`, `None` otherwise (the value is then dropped: pass a clone
/// of an `Arc`-backed tensor primitive).
pub fn downcast<T: 'static, U: 'static>(value: T) -> Option<U> {
    (Box::new(value) as Box<dyn Any>)
        .downcast::<U>()
        .ok()
        .map(|boxed| *boxed)
}
