//! Linear layers on inputs of any rank as one 2D matrix product (a kiln patch).
//!
//! burn's default `linear` broadcasts the `[K, N]` weight over the input's leading dimensions
//! and runs a batched matmul: for a Swin window attention's `[windows, 49, C]` input that is
//! one small product per window, each packing the same weight again, and its weight gradient
//! is a `[windows, K, N]` stack of per-window products summed afterwards. Here the leading
//! dimensions fold into the rows (`[M, K]`, a view when the input is contiguous): one product
//! for the forward and the input gradient, and the weight gradient `xᵀ · grad` as one product
//! over all `M` rows, which is what a framework's linear layer computes. The bias is written
//! into the output before gemm accumulates the product onto it.

use burn_backend::ops::FloatTensorOps;
use burn_std::Shape;

use crate::ops::matmul::{matmul, matmul_2d_add_row};
use crate::{Flex, FlexTensor};

/// `tensor` as `[rows, last]`: its leading dimensions folded into the rows.
fn rows(tensor: FlexTensor) -> FlexTensor {
    let shape = tensor.layout().shape();
    let dims = shape.num_dims();
    if dims == 2 {
        return tensor;
    }
    let last = shape[dims - 1];
    let rows = shape.num_elements() / last.max(1);
    tensor.reshape(Shape::new([rows, last]))
}

/// `matrix` (`[rows, n]`) back to the leading dimensions of `like` with a last dimension `n`.
fn unfold_rows(matrix: FlexTensor, like: &Shape) -> FlexTensor {
    if like.num_dims() == 2 {
        return matrix;
    }
    let mut dims = like.clone();
    let last = dims.num_dims() - 1;
    dims[last] = matrix.layout().shape()[1];
    matrix.reshape(dims)
}

/// `x · weight (+ bias)` for `x` `[..., K]`, `weight` `[K, N]`, `bias` `[N]`.
pub fn linear(x: FlexTensor, weight: FlexTensor, bias: Option<FlexTensor>) -> FlexTensor {
    let shape = x.layout().shape().clone();
    if shape.num_dims() < 2 {
        let n = weight.layout().shape()[1];
        let out = linear(x.reshape(Shape::new([1, shape[0]])), weight, bias);
        return out.reshape(Shape::new([n]));
    }
    let x = rows(x);
    let out = match bias {
        // The bias written into the output first, the product accumulated onto it.
        Some(bias) if bias.dtype() == x.dtype() => match matmul_2d_add_row(x.clone(), weight.clone(), &bias) {
            Some(out) => out,
            None => with_bias(matmul(x, weight), bias),
        },
        Some(bias) => with_bias(matmul(x, weight), bias),
        None => matmul(x, weight),
    };
    unfold_rows(out, &shape)
}

/// `out` `[M, N]` plus `bias` `[N]` on every row.
fn with_bias(out: FlexTensor, bias: FlexTensor) -> FlexTensor {
    let n = bias.layout().shape()[0];
    Flex::float_add(out, bias.reshape(Shape::new([1, n])))
}

/// The input gradient, `grad · weightᵀ`, for `grad` `[..., N]`.
pub fn linear_x_backward(weight: FlexTensor, output_grad: FlexTensor) -> FlexTensor {
    let shape = output_grad.layout().shape().clone();
    unfold_rows(matmul(rows(output_grad), weight.transpose(0, 1)), &shape)
}

/// The weight gradient, `xᵀ · grad` over every row of the leading dimensions: `[K, N]`.
pub fn linear_weight_backward(x: FlexTensor, output_grad: FlexTensor) -> FlexTensor {
    matmul(rows(x).transpose(0, 1), rows(output_grad))
}

/// The bias gradient, `grad` summed over every row: `[N]`.
pub fn linear_bias_backward(output_grad: FlexTensor) -> FlexTensor {
    let grad = rows(output_grad);
    let n = grad.layout().shape()[1];
    crate::ops::reduce::sum_dim(grad, 0).reshape(Shape::new([n]))
}
