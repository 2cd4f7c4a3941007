//! `relu(max_pool(x))`, the MNIST `Net`'s pooling step, with a fused op on kiln's CPU training
//! backend for 2×2 windows at stride 2.

use burn::nn::pool::MaxPool2d;
use burn::nn::PaddingConfig2d;
use burn::prelude::*;
use burn::tensor::activation::relu;

/// `relu(pool.forward(x))`. On `Autodiff<Flex>` with f32 tensors and a 2×2 window at stride
/// 2 (no padding or dilation, floor mode) this is one fused op ([`crate::cpu::pool`]): one pass forward
/// that keeps each window's winning tap as a byte, one pass backward; burn-flex's pooling
/// instead keeps 64-bit indices and scatters into a zero-filled gradient, and its ReLU is a
/// pass of its own each way. The values and gradients are burn-flex's exactly, ties included
/// (the first maximal tap in row-major order wins) and NaNs too. Other backends, dtypes and
/// windows run burn's own ops.
pub fn max_pool_relu<B: Backend>(pool: &MaxPool2d, x: Tensor<B, 4>) -> Tensor<B, 4> {
    if B::ad_enabled(&x.device()) && is_plain_2x2(pool) {
        if let Some(y) = crate::cpu::pool::train(&x) {
            return y;
        }
    }
    relu(pool.forward(x))
}

/// Whether `pool` takes 2×2 windows at stride 2 with no padding or dilation, in floor mode.
fn is_plain_2x2(pool: &MaxPool2d) -> bool {
    pool.kernel_size == [2, 2]
        && pool.stride == [2, 2]
        && pool.dilation == [1, 1]
        && !pool.ceil_mode
        && matches!(pool.padding, PaddingConfig2d::Valid)
}
