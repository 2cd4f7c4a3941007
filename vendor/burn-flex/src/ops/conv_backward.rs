//! Backward pass of 2D convolution: the input, weight and bias gradients.
//!
//! burn's generic defaults compute the input gradient with a transposed
//! convolution (image by image, with a single-threaded scatter, in burn-flex)
//! and the weight gradient with a forward convolution over batch-swapped
//! tensors whose "kernel" is the whole output gradient plane, once per group.
//! This module computes both as explicit gemm calls on the im2col matrix of
//! one group of one image (`conv_gemm`), tile by tile of output rows:
//!
//! - weight: `dW_g = Σ_b dY_{b,g} · col(x_{b,g})ᵀ`, i.e.
//!   `[c_out/g, OH·OW] × [OH·OW, c_in/g·KH·KW]`, summed over the batch;
//! - input: `dx_{b,g} = col2im(W_gᵀ · dY_{b,g})`, i.e.
//!   `[c_in/g·KH·KW, c_out/g] × [c_out/g, OH·OW]`, scattered back onto the input;
//! - bias: `db[c] = Σ_{b, oh, ow} dY[b, c, oh, ow]`.
//!
//! Fast paths:
//! - pointwise (1×1, stride 1, no padding): the input plane *is* the im2col
//!   matrix, so gemm reads the input and writes the input gradient directly;
//! - depthwise (one input and one output channel per group, YOLOX-style
//!   `groups == channels`): direct per-plane loops with analytic valid ranges,
//!   no gemm (a 1-row gemm per channel would be all dispatch overhead).
//!
//! - 3×3 stride-1 input gradients with enough channels and tiles: Winograd
//!   F(2×2, 3×3) on the output gradient (`conv_winograd`).
//!
//! Parallelism: rayon over images (input gradient), over batch chunks with one
//! partial weight gradient each, summed in a fixed order (weight gradient), or
//! over channels (depthwise weight and bias gradients). gemm itself runs
//! single-threaded unless the batch is smaller than the thread pool.
//!
//! f32 and f64 run natively; f16 and bf16 are computed in f32 and converted back.

use alloc::vec;
use alloc::vec::Vec;
use core::ops::Range;

use burn_backend::DType;
use burn_backend::ops::ConvOptions;
use burn_std::{Bytes, Shape, bf16, f16};

use super::conv_gemm::{
    GemmElement, Geometry, MatRef, for_each_chunk, gemm, gemm_transposed, im2col, im2col_strided,
    num_threads, planes_side_by_side,
};
use super::conv_winograd;
use super::module::{cast_from_f32, cast_to_f32};
use super::par_elementwise::filled;
use crate::{FlexTensor, Layout};

/// Runs the f32 kernel `$kernel(args…)` for half-precision `$half` tensors:
/// every `FlexTensor` argument (passed by reference) is converted to f32, and
/// the result back to `$half`.
macro_rules! via_f32 {
    ($half:ty, $kernel:ident($geometry:expr, $($tensor:expr),+)) => {
        cast_from_f32(
            $kernel::<f32>(
                $geometry,
                $(&cast_to_f32((*$tensor).clone(), <$half>::to_f32)),+
            ),
            <$half>::from_f32,
        )
    };
    ($half:ty, $kernel:ident($tensor:expr)) => {
        cast_from_f32(
            $kernel::<f32>(&cast_to_f32((*$tensor).clone(), <$half>::to_f32)),
            <$half>::from_f32,
        )
    };
}

/// Gradient of `conv2d` with respect to its input `x`, shaped like `x`.
pub fn conv2d_x_backward(
    x: FlexTensor,
    weight: FlexTensor,
    output_grad: FlexTensor,
    options: &ConvOptions<2>,
) -> FlexTensor {
    let geometry = Geometry::for_backward(x.layout().shape(), &weight, &output_grad, options);
    match x.dtype() {
        DType::F32 => x_backward::<f32>(&geometry, &weight, &output_grad),
        DType::F64 => x_backward::<f64>(&geometry, &weight, &output_grad),
        DType::F16 => via_f32!(f16, x_backward(&geometry, &weight, &output_grad)),
        DType::BF16 => via_f32!(bf16, x_backward(&geometry, &weight, &output_grad)),
        dtype => panic!("conv2d_x_backward: unsupported dtype {dtype:?}"),
    }
}

/// Gradient of `conv2d` with respect to its `weight`, shaped like `weight`.
pub fn conv2d_weight_backward(
    x: FlexTensor,
    weight: FlexTensor,
    output_grad: FlexTensor,
    options: &ConvOptions<2>,
) -> FlexTensor {
    let geometry = Geometry::for_backward(x.layout().shape(), &weight, &output_grad, options);
    match x.dtype() {
        DType::F32 => weight_backward::<f32>(&geometry, &x, &output_grad),
        DType::F64 => weight_backward::<f64>(&geometry, &x, &output_grad),
        DType::F16 => via_f32!(f16, weight_backward(&geometry, &x, &output_grad)),
        DType::BF16 => via_f32!(bf16, weight_backward(&geometry, &x, &output_grad)),
        dtype => panic!("conv2d_weight_backward: unsupported dtype {dtype:?}"),
    }
}

/// Gradient of `conv2d` with respect to its `bias`: the output gradient summed
/// over batch and space, shaped like `bias`.
pub fn conv2d_bias_backward(bias: FlexTensor, output_grad: FlexTensor) -> FlexTensor {
    let bias_shape = bias.layout().shape().clone();
    let grad = match output_grad.dtype() {
        DType::F32 => bias_backward::<f32>(&output_grad),
        DType::F64 => bias_backward::<f64>(&output_grad),
        DType::F16 => via_f32!(f16, bias_backward(&output_grad)),
        DType::BF16 => via_f32!(bf16, bias_backward(&output_grad)),
        dtype => panic!("conv2d_bias_backward: unsupported dtype {dtype:?}"),
    };
    grad.reshape(bias_shape)
}

/// Input gradient: `[batch, channels_in, in_h, in_w]`.
fn x_backward<T: GemmElement>(
    geometry: &Geometry,
    weight: &FlexTensor,
    output_grad: &FlexTensor,
) -> FlexTensor {
    let weight = weight.to_contiguous();
    let output_grad = output_grad.to_contiguous();
    let (w, dy) = (weight.storage::<T>(), output_grad.storage::<T>());
    let g = geometry;
    let shape = Shape::from(vec![g.batch, g.channels_in, g.in_h, g.in_w]);
    if let Some(tap) = g.single_tap() {
        // dX = dY · W_tap: `[batch, c_out] × [c_out, c_in]`.
        let mut dx = filled(g.batch * g.channels_in, T::zero());
        let dy_mat = MatRef::new(dy, g.batch, g.channels_out, g.channels_out, 1);
        let w_tap = g.tap_weights(w, tap);
        let w_mat = MatRef::new(&w_tap, g.channels_out, g.channels_in, g.channels_in, 1);
        gemm(&mut dx, false, dy_mat, w_mat, true);
        return FlexTensor::new(Bytes::from_elems(dx), Layout::contiguous(shape), T::dtype());
    }
    if conv_winograd::applies_to_x_backward(g) {
        let len = g.batch * g.channels_in * g.in_plane();
        let mut dx = Vec::with_capacity(len);
        conv_winograd::x_backward(g, dy, w, &mut dx.spare_capacity_mut()[..len]);
        // SAFETY: `conv_winograd::x_backward` writes every element of the input gradient.
        unsafe { dx.set_len(len) };
        return FlexTensor::new(Bytes::from_elems(dx), Layout::contiguous(shape), T::dtype());
    }
    let mut dx = filled(g.batch * g.channels_in * g.in_plane(), T::zero());
    let group = g.images_per_gemm();
    if g.is_depthwise() {
        x_backward_depthwise(g, w, dy, &mut dx);
    } else if group > 1 {
        x_backward_grouped(g, group, w, dy, &mut dx);
    } else {
        x_backward_gemm(g, w, dy, &mut dx);
    }
    FlexTensor::new(Bytes::from_elems(dx), Layout::contiguous(shape), T::dtype())
}

/// Input gradient through `W_gᵀ · dY` and col2im, one image per task.
fn x_backward_gemm<T: GemmElement>(g: &Geometry, w: &[T], dy: &[T], dx: &mut [T]) {
    let col_rows = g.col_rows();
    let inner_parallel = g.batch < num_threads();
    for_each_chunk(
        dx,
        g.channels_in * g.in_plane(),
        || vec![T::zero(); g.col_tile_len()],
        |dcol, b, dx_image| {
            for group in 0..g.groups {
                let w_group =
                    &w[group * g.out_per_group * col_rows..][..g.out_per_group * col_rows];
                let dy_group = &dy
                    [(b * g.channels_out + group * g.out_per_group) * g.out_plane()..]
                    [..g.out_per_group * g.out_plane()];
                let dx_group = &mut dx_image[group * g.in_per_group * g.in_plane()..]
                    [..g.in_per_group * g.in_plane()];
                // W_gᵀ: the row-major [out_per_group, col_rows] weight read transposed.
                let w_t = MatRef::new(w_group, col_rows, g.out_per_group, 1, col_rows);
                if g.is_pointwise() {
                    let dy_mat =
                        MatRef::new(dy_group, g.out_per_group, g.out_plane(), g.out_plane(), 1);
                    gemm(dx_group, false, w_t, dy_mat, inner_parallel);
                    continue;
                }
                for rows in g.row_tiles() {
                    let n = rows.len() * g.out_w;
                    let dcol = &mut dcol[..col_rows * n];
                    let dy_tile = MatRef::new(
                        &dy_group[rows.start * g.out_w..],
                        g.out_per_group,
                        n,
                        g.out_plane(),
                        1,
                    );
                    gemm(dcol, false, w_t, dy_tile, inner_parallel);
                    col2im_add(g, dcol, rows, dx_group);
                }
            }
        },
    );
}

/// Input gradient for `group` images per gemm call (small output planes, one
/// convolution group; see [`Geometry::images_per_gemm`]): their output
/// gradients side by side, `[c_out, group · OH·OW]`, one product `Wᵀ · dY`,
/// scattered back image by image.
fn x_backward_grouped<T: GemmElement>(g: &Geometry, group: usize, w: &[T], dy: &[T], dx: &mut [T]) {
    let (col_rows, plane) = (g.col_rows(), g.out_plane());
    let dx_len = g.channels_in * g.in_plane();
    let w_t = MatRef::new(w, col_rows, g.channels_out, 1, col_rows);
    for_each_chunk(
        dx,
        group * dx_len,
        || {
            (
                vec![T::zero(); g.channels_out * group * plane],
                vec![T::zero(); col_rows * group * plane],
            )
        },
        |(dy_side, dcol), chunk, dx_images| {
            let images = dx_images.len() / dx_len;
            let n = images * plane;
            let dy_side = &mut dy_side[..g.channels_out * n];
            planes_side_by_side(dy, chunk * group, images, [g.channels_out, plane], dy_side);
            let dy_mat = MatRef::new(dy_side, g.channels_out, n, n, 1);
            gemm(&mut dcol[..col_rows * n], false, w_t, dy_mat, false);
            for (j, dx_image) in dx_images.chunks_exact_mut(dx_len).enumerate() {
                col2im_add_strided(g, &dcol[j * plane..], n, 0..g.out_h, dx_image);
            }
        },
    );
}

/// Depthwise input gradient: `dx[b, c] += w[c, i, j] · dY[b, c]` shifted by
/// each kernel offset, one `(b, c)` plane per task.
fn x_backward_depthwise<T: GemmElement>(g: &Geometry, w: &[T], dy: &[T], dx: &mut [T]) {
    let [stride_h, stride_w] = g.stride;
    for_each_chunk(
        dx,
        g.in_plane(),
        || (),
        |_, plane, dx_plane| {
            let channel = plane % g.channels_in;
            let w_channel = &w[channel * g.kernel_plane()..][..g.kernel_plane()];
            let dy_plane = &dy[plane * g.out_plane()..][..g.out_plane()];
            for i in 0..g.kernel_h {
                let (oh_range, ih_first) = g.valid(0, i);
                for j in 0..g.kernel_w {
                    let (ow_range, iw_first) = g.valid(1, j);
                    if ow_range.is_empty() {
                        continue;
                    }
                    let weight = w_channel[i * g.kernel_w + j];
                    for (step, oh) in oh_range.clone().enumerate() {
                        let ih = ih_first + step * stride_h;
                        let src = &dy_plane[oh * g.out_w..][ow_range.clone()];
                        axpy(
                            &mut dx_plane[ih * g.in_w + iw_first..(ih + 1) * g.in_w],
                            src,
                            weight,
                            stride_w,
                        );
                    }
                }
            }
        },
    );
}

/// Weight gradient: `[channels_out, in_per_group, kernel_h, kernel_w]`.
fn weight_backward<T: GemmElement>(
    geometry: &Geometry,
    x: &FlexTensor,
    output_grad: &FlexTensor,
) -> FlexTensor {
    let x = x.to_contiguous();
    let output_grad = output_grad.to_contiguous();
    let (x, dy) = (x.storage::<T>(), output_grad.storage::<T>());
    let g = geometry;
    let dw = if let Some(tap) = g.single_tap() {
        weight_backward_single_tap(g, x, dy, tap)
    } else if g.is_depthwise() {
        weight_backward_depthwise(g, x, dy)
    } else {
        weight_backward_gemm(g, x, dy)
    };
    let shape = Shape::from(vec![g.channels_out, g.in_per_group, g.kernel_h, g.kernel_w]);
    FlexTensor::new(Bytes::from_elems(dw), Layout::contiguous(shape), T::dtype())
}

/// Weight gradient through `dY_g · col(x_g)ᵀ`: the batch is split into one
/// contiguous chunk per thread, each accumulating its own partial gradient;
/// the partials are then summed in chunk order (deterministic for a given
/// thread count). The partials hold each group's gradient transposed,
/// `[in_per_group·KH·KW, out_per_group]` (see [`gemm_transposed`]); their sum
/// is transposed back in the same pass.
fn weight_backward_gemm<T: GemmElement>(g: &Geometry, x: &[T], dy: &[T]) -> Vec<T> {
    if g.groups == 1 && g.batch * g.out_plane() <= WHOLE_BATCH_COLUMNS {
        return weight_backward_whole_batch(g, x, dy);
    }
    let col_rows = g.col_rows();
    let w_len = g.channels_out * col_rows;
    let threads = num_threads();
    let per_chunk = g.batch.div_ceil(threads.clamp(1, g.batch.max(1))).max(1);
    let chunks = g.batch.div_ceil(per_chunk).max(1);
    let inner_parallel = chunks < threads;
    let group = g.images_per_gemm();
    // Scratch: the im2col columns, and for groups the output gradients side by side.
    let scratch = || {
        if group > 1 {
            let n = group * g.out_plane();
            (
                vec![T::zero(); col_rows * n],
                vec![T::zero(); g.channels_out * n],
            )
        } else {
            (vec![T::zero(); g.col_tile_len()], Vec::new())
        }
    };
    let mut partials = vec![T::zero(); chunks * w_len];
    for_each_chunk(
        &mut partials,
        w_len,
        scratch,
        |(col, dy_side), chunk, dw| {
            let (first, end) = (chunk * per_chunk, ((chunk + 1) * per_chunk).min(g.batch));
            if group > 1 {
                for start in (first..end).step_by(group) {
                    let images = start..(start + group).min(end);
                    weight_grad_side_by_side(g, x, dy, images, (col, dy_side), dw);
                }
            } else {
                for b in first..end {
                    weight_grad_image(g, x, dy, b, col, dw, inner_parallel);
                }
            }
        },
    );
    // Sum the partials in chunk order, transposing each group back on the way: in
    // tiles of TILE × TILE (each partial read along its rows, the gradient written
    // along its columns), blocks of TILE gradient rows in parallel. Read element by
    // element down the transposed partials instead, a 512-channel 3×3 gradient took a
    // cache miss per element, longer than its gemm at 2×2 or 4×4 output planes.
    const TILE: usize = 32;
    let group_len = g.out_per_group * col_rows;
    let mut dw = vec![T::zero(); w_len];
    for (group, dw_group) in dw.chunks_exact_mut(group_len).enumerate() {
        for_each_chunk(dw_group, TILE * col_rows, || (), |_, block, dw_rows| {
            let (first_row, rows) = (block * TILE, dw_rows.len() / col_rows);
            for r0 in (0..col_rows).step_by(TILE) {
                for partial in partials.chunks_exact(w_len) {
                    let partial = &partial[group * group_len..][..group_len];
                    for r in r0..(r0 + TILE).min(col_rows) {
                        let src = &partial[r * g.out_per_group + first_row..][..rows];
                        for (o, &v) in src.iter().enumerate() {
                            dw_rows[o * col_rows + r] = dw_rows[o * col_rows + r] + v;
                        }
                    }
                }
            }
        });
    }
    dw
}

/// The weight gradient of a convolution that reads its 1×1 input through kernel tap
/// `tap` alone ([`Geometry::single_tap`]): `dW_tap = dYᵀ · X` (`[c_out, batch] ×
/// [batch, c_in]`), every other tap zero.
fn weight_backward_single_tap<T: GemmElement>(g: &Geometry, x: &[T], dy: &[T], tap: usize) -> Vec<T> {
    let mut product = vec![T::zero(); g.channels_out * g.channels_in];
    let dy_t = MatRef::new(dy, g.channels_out, g.batch, 1, g.channels_out);
    let x_mat = MatRef::new(x, g.batch, g.channels_in, g.channels_in, 1);
    gemm(&mut product, false, dy_t, x_mat, true);
    let kernel_plane = g.kernel_plane();
    let mut dw = vec![T::zero(); g.channels_out * g.channels_in * kernel_plane];
    for (at, &value) in product.iter().enumerate() {
        dw[at * kernel_plane + tap] = value;
    }
    dw
}

/// Batches whose output planes hold at most this many positions in all (ResNet's
/// late stages at small inputs: 32 images of 2×2 or 4×4) take the weight gradient in one
/// gemm over the whole batch ([`weight_backward_whole_batch`]).
const WHOLE_BATCH_COLUMNS: usize = 1024;

/// `dW = [dY_0 … dY_{B−1}] · [col(x_0) … col(x_{B−1})]ᵀ`: the whole batch's columns and
/// output gradients side by side, one gemm (on the pool when large) straight into the
/// row-major gradient. For small planes this replaces per-thread partial gradients, which
/// cost a pass over the weights each (allocating, transposing, summing) for little gemm
/// work each.
fn weight_backward_whole_batch<T: GemmElement>(g: &Geometry, x: &[T], dy: &[T]) -> Vec<T> {
    let (col_rows, plane) = (g.col_rows(), g.out_plane());
    let n = g.batch * plane;
    let mut col = vec![T::zero(); col_rows * n];
    if g.is_pointwise() {
        planes_side_by_side(x, 0, g.batch, [g.channels_in, plane], &mut col);
    } else {
        let x_len = g.channels_in * g.in_plane();
        for b in 0..g.batch {
            im2col_strided(g, &x[b * x_len..][..x_len], 0..g.out_h, &mut col[b * plane..], n);
        }
    }
    let mut dy_side = vec![T::zero(); g.channels_out * n];
    planes_side_by_side(dy, 0, g.batch, [g.channels_out, plane], &mut dy_side);
    let mut dw = vec![T::zero(); g.channels_out * col_rows];
    let dy_mat = MatRef::new(&dy_side, g.channels_out, n, n, 1);
    let col_t = MatRef::new(&col, n, col_rows, 1, n);
    gemm(&mut dw, false, dy_mat, col_t, true);
    dw
}

/// `dwᵀ += Σ_g (dY_{b,g} · col(x_{b,g})ᵀ)ᵀ` for image `b`, tile by tile of output
/// rows (`dw` holds each group's gradient transposed).
fn weight_grad_image<T: GemmElement>(
    g: &Geometry,
    x: &[T],
    dy: &[T],
    b: usize,
    col: &mut [T],
    dw: &mut [T],
    inner_parallel: bool,
) {
    let col_rows = g.col_rows();
    for group in 0..g.groups {
        let x_group = &x[(b * g.channels_in + group * g.in_per_group) * g.in_plane()..]
            [..g.in_per_group * g.in_plane()];
        let dy_group = &dy[(b * g.channels_out + group * g.out_per_group) * g.out_plane()..]
            [..g.out_per_group * g.out_plane()];
        let dw_group = &mut dw[group * g.out_per_group * col_rows..][..g.out_per_group * col_rows];
        if g.is_pointwise() {
            // col(x_g)ᵀ is the row-major [in_per_group, plane] input read transposed.
            let x_t = MatRef::new(x_group, g.in_plane(), g.in_per_group, 1, g.in_plane());
            let dy_mat = MatRef::new(dy_group, g.out_per_group, g.out_plane(), g.out_plane(), 1);
            gemm_transposed(dw_group, true, dy_mat, x_t, inner_parallel);
            continue;
        }
        for rows in g.row_tiles() {
            let n = rows.len() * g.out_w;
            let col = &mut col[..col_rows * n];
            im2col(g, x_group, rows.clone(), col);
            let dy_tile = MatRef::new(
                &dy_group[rows.start * g.out_w..],
                g.out_per_group,
                n,
                g.out_plane(),
                1,
            );
            let col_t = MatRef::new(col, n, col_rows, 1, n);
            gemm_transposed(dw_group, true, dy_tile, col_t, inner_parallel);
        }
    }
}

/// `dwᵀ += ([dY_b …] · [col(x_b) …]ᵀ)ᵀ` for the `images` of a
/// [`Geometry::images_per_gemm`] group (one convolution group): one gemm whose
/// inner dimension is the images' output planes side by side.
fn weight_grad_side_by_side<T: GemmElement>(
    g: &Geometry,
    x: &[T],
    dy: &[T],
    images: Range<usize>,
    (col, dy_side): (&mut [T], &mut [T]),
    dw: &mut [T],
) {
    let (col_rows, plane) = (g.col_rows(), g.out_plane());
    let x_len = g.channels_in * g.in_plane();
    let n = images.len() * plane;
    let dy_side = &mut dy_side[..g.channels_out * n];
    planes_side_by_side(
        dy,
        images.start,
        images.len(),
        [g.channels_out, plane],
        dy_side,
    );
    for (j, b) in images.enumerate() {
        im2col_strided(
            g,
            &x[b * x_len..][..x_len],
            0..g.out_h,
            &mut col[j * plane..],
            n,
        );
    }
    let dy_mat = MatRef::new(dy_side, g.channels_out, n, n, 1);
    let col_t = MatRef::new(&col[..col_rows * n], n, col_rows, 1, n);
    gemm_transposed(dw, true, dy_mat, col_t, false);
}

/// Depthwise weight gradient: `dw[c, i, j] = Σ_b ⟨dY[b, c], x[b, c] shifted by (i, j)⟩`,
/// one channel per task.
fn weight_backward_depthwise<T: GemmElement>(g: &Geometry, x: &[T], dy: &[T]) -> Vec<T> {
    let [stride_h, stride_w] = g.stride;
    let mut dw = vec![T::zero(); g.channels_out * g.kernel_plane()];
    for_each_chunk(
        &mut dw,
        g.kernel_plane(),
        || (),
        |_, channel, dw_channel| {
            for b in 0..g.batch {
                let plane = b * g.channels_in + channel;
                let x_plane = &x[plane * g.in_plane()..][..g.in_plane()];
                let dy_plane = &dy[plane * g.out_plane()..][..g.out_plane()];
                for i in 0..g.kernel_h {
                    let (oh_range, ih_first) = g.valid(0, i);
                    for j in 0..g.kernel_w {
                        let (ow_range, iw_first) = g.valid(1, j);
                        if ow_range.is_empty() {
                            continue;
                        }
                        let mut acc = T::zero();
                        for (step, oh) in oh_range.clone().enumerate() {
                            let ih = ih_first + step * stride_h;
                            let dy_row = &dy_plane[oh * g.out_w..][ow_range.clone()];
                            let x_row = &x_plane[ih * g.in_w + iw_first..(ih + 1) * g.in_w];
                            acc = acc + dot(dy_row, x_row, stride_w);
                        }
                        dw_channel[i * g.kernel_w + j] = dw_channel[i * g.kernel_w + j] + acc;
                    }
                }
            }
        },
    );
    dw
}

/// Bias gradient: `[channels_out]`, one channel per task.
fn bias_backward<T: GemmElement>(output_grad: &FlexTensor) -> FlexTensor {
    let output_grad = output_grad.to_contiguous();
    let shape = output_grad.layout().shape();
    assert_eq!(
        shape.len(),
        4,
        "conv2d_bias_backward: expected a 4D output gradient"
    );
    let (batch, channels, plane) = (shape[0], shape[1], shape[2] * shape[3]);
    let dy = output_grad.storage::<T>();
    let mut db = vec![T::zero(); channels];
    for_each_chunk(
        &mut db,
        1,
        || (),
        |_, channel, db_channel| {
            db_channel[0] = (0..batch).fold(T::zero(), |acc, b| {
                acc + sum(&dy[(b * channels + channel) * plane..][..plane])
            });
        },
    );
    FlexTensor::new(
        Bytes::from_elems(db),
        Layout::contiguous(Shape::from(vec![channels])),
        T::dtype(),
    )
}

/// Adds the columns `col` (`[col_rows, rows.len() · out_w]`) for output rows
/// `rows` back onto the input gradient of one group of one image
/// (`dx_group`: `[in_per_group, in_h, in_w]`): the adjoint of [`im2col`].
fn col2im_add<T: GemmElement>(g: &Geometry, col: &[T], rows: Range<usize>, dx_group: &mut [T]) {
    col2im_add_strided(g, col, rows.len() * g.out_w, rows, dx_group);
}

/// [`col2im_add`] from a matrix whose rows are `row_stride` elements apart.
fn col2im_add_strided<T: GemmElement>(
    g: &Geometry,
    col: &[T],
    row_stride: usize,
    rows: Range<usize>,
    dx_group: &mut [T],
) {
    let n = rows.len() * g.out_w;
    let [stride_h, stride_w] = g.stride;
    assert!(
        n <= row_stride && col.len() >= g.col_rows().saturating_sub(1) * row_stride + n,
        "col2im: {} rows of {n} columns at stride {row_stride} overrun {} elements",
        g.col_rows(),
        col.len()
    );
    // Each kernel tap's valid output ranges, computed once (see `im2col_strided`).
    let taps: Vec<[(Range<usize>, usize); 2]> = (0..g.kernel_plane())
        .map(|tap| [g.valid(0, tap / g.kernel_w), g.valid(1, tap % g.kernel_w)])
        .collect();
    let col_rows = col.chunks(row_stride).take(g.col_rows());
    for (r, col_row) in col_rows.map(|row| &row[..n]).enumerate() {
        let (channel, tap) = (r / g.kernel_plane(), r % g.kernel_plane());
        let dx_plane = &mut dx_group[channel * g.in_plane()..][..g.in_plane()];
        let [(oh_range, ih_first), (ow_range, iw_first)] = &taps[tap];
        let (oh_range, ih_first, ow_range, iw_first) = (oh_range.clone(), *ih_first, ow_range.clone(), *iw_first);
        if ow_range.is_empty() {
            continue;
        }
        let oh_start = rows.start.max(oh_range.start);
        let oh_end = rows.end.min(oh_range.end);
        for oh in oh_start..oh_end {
            let ih = ih_first + (oh - oh_range.start) * stride_h;
            let src = &col_row[(oh - rows.start) * g.out_w..][ow_range.clone()];
            axpy(
                &mut dx_plane[ih * g.in_w + iw_first..(ih + 1) * g.in_w],
                src,
                T::one(),
                stride_w,
            );
        }
    }
}

/// `dst[i · stride] += scale · src[i]` for every `i` of `src`; the unit-stride
/// case is written separately so that it vectorizes.
fn axpy<T: GemmElement>(dst: &mut [T], src: &[T], scale: T, stride: usize) {
    if stride == 1 {
        for (d, &s) in dst[..src.len()].iter_mut().zip(src) {
            *d = *d + scale * s;
        }
    } else {
        for (d, &s) in dst.iter_mut().step_by(stride).zip(src) {
            *d = *d + scale * s;
        }
    }
}

/// `Σ a[i] · b[i · stride]`, with eight independent accumulators when `stride`
/// is 1 so that the loop vectorizes and rounding errors stay small.
fn dot<T: GemmElement>(a: &[T], b: &[T], stride: usize) -> T {
    if stride != 1 {
        return a
            .iter()
            .zip(b.iter().step_by(stride))
            .fold(T::zero(), |acc, (&x, &y)| acc + x * y);
    }
    let b = &b[..a.len()];
    let mut lanes = [T::zero(); 8];
    let (a_chunks, b_chunks) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .fold(T::zero(), |acc, (&x, &y)| acc + x * y);
    for (x, y) in a_chunks.zip(b_chunks) {
        for ((lane, &x), &y) in lanes.iter_mut().zip(x).zip(y) {
            *lane = *lane + x * y;
        }
    }
    lanes.iter().fold(tail, |acc, &l| acc + l)
}

/// `Σ a[i]`, with eight independent accumulators.
fn sum<T: GemmElement>(a: &[T]) -> T {
    let mut lanes = [T::zero(); 8];
    let chunks = a.chunks_exact(8);
    let tail = chunks.remainder().iter().fold(T::zero(), |acc, &x| acc + x);
    for x in chunks {
        for (lane, &x) in lanes.iter_mut().zip(x) {
            *lane = *lane + x;
        }
    }
    lanes.iter().fold(tail, |acc, &l| acc + l)
}
