//! Forward 2D convolution as gemm calls on NCHW data, writing straight into
//! the output: for each image and group, `Y_g = W_g · col(x_g) (+ bias)`, i.e.
//! `[c_out/g, c_in/g·KH·KW] × [c_in/g·KH·KW, OH·OW]`, computed tile by tile of
//! whole output rows, each tile's product stored at its place in the
//! `[c_out, OH·OW]` output image (gemm writes rows `OH·OW` apart).
//!
//! burn-flex 0.21.0's generic path instead converts the whole batch to NHWC on
//! one thread, reorders the weight, allocates a column tile and a result buffer
//! per tile and group, and scatters every result element back to NCHW. This
//! path skips all of that; the bias is the gemm's initial destination.
//!
//! It handles groups, stride, padding and dilation; pointwise convolutions
//! (1×1, stride 1, no padding) skip im2col (gemm reads the input plane
//! directly). Depthwise convolutions and half-precision tensors stay on
//! burn-flex's own kernels (a direct depthwise loop, native f16 gemm): for
//! those [`conv2d`] hands its inputs back.
//!
//! 3×3 stride-1 convolutions with enough channels and tiles run as Winograd
//! F(2×2, 3×3) instead (`conv_winograd`).
//!
//! Parallelism: one image per rayon task; gemm itself uses the pool only when
//! the batch is smaller than the pool.

use alloc::vec;
use core::mem::MaybeUninit;

use burn_backend::DType;
use burn_backend::ops::ConvOptions;
use burn_std::{Bytes, Shape};

use super::conv_gemm::{
    GemmElement, Geometry, MatRef, for_each_chunk, gemm, gemm_strided, im2col, im2col_strided,
    num_threads, planes_side_by_side,
};
use super::conv_winograd;
use crate::{FlexTensor, Layout};

/// `conv2d(x, weight, bias)` for f32 and f64 non-depthwise convolutions, or
/// `Err` with the inputs handed back for the cases this module leaves to
/// burn-flex's own kernels.
pub fn conv2d(
    x: FlexTensor,
    weight: FlexTensor,
    bias: Option<FlexTensor>,
    options: &ConvOptions<2>,
) -> Result<FlexTensor, (FlexTensor, FlexTensor, Option<FlexTensor>)> {
    let geometry = Geometry::new(x.layout().shape(), weight.layout().shape(), options);
    if geometry.is_depthwise() {
        return Err((x, weight, bias));
    }
    match x.dtype() {
        DType::F32 => Ok(forward::<f32>(&geometry, &x, &weight, bias.as_ref())),
        DType::F64 => Ok(forward::<f64>(&geometry, &x, &weight, bias.as_ref())),
        _ => Err((x, weight, bias)),
    }
}

/// The output `[batch, channels_out, out_h, out_w]`.
fn forward<T: GemmElement>(
    g: &Geometry,
    x: &FlexTensor,
    weight: &FlexTensor,
    bias: Option<&FlexTensor>,
) -> FlexTensor {
    let x = x.to_contiguous();
    let weight = weight.to_contiguous();
    let bias = bias.map(FlexTensor::to_contiguous);
    let (x, w) = (x.storage::<T>(), weight.storage::<T>());
    let bias = bias.as_ref().map(|b| b.storage::<T>());
    // The output is initialised image by image by the thread that computes it (bias or
    // zeros), not zeroed up front on this thread.
    let len = g.batch * g.channels_out * g.out_plane();
    let mut y = Vec::with_capacity(len);
    let y_uninit = &mut y.spare_capacity_mut()[..len];
    let images = g.images_per_gemm();
    if conv_winograd::applies(g) {
        conv_winograd::forward(g, x, w, bias, y_uninit);
    } else if images > 1 && g.out_plane() < FORWARD_GROUPED_PLANE {
        forward_grouped(g, x, w, bias, y_uninit, images);
    } else {
        forward_gemm(g, x, w, bias, y_uninit);
    }
    // SAFETY: both kernels write every element (`forward_gemm` fills each image's block
    // before use; `conv_winograd::forward` writes every output of every tile).
    unsafe { y.set_len(len) };
    let shape = Shape::from(vec![g.batch, g.channels_out, g.out_h, g.out_w]);
    FlexTensor::new(Bytes::from_elems(y), Layout::contiguous(shape), T::dtype())
}

/// Output planes below this many positions are computed [`Geometry::images_per_gemm`]
/// images per gemm ([`forward_grouped`]): gemm vectorises along the output plane, so a
/// 2×2 or 4×4 plane alone fills a quarter or one 16-lane register per row of the tile.
const FORWARD_GROUPED_PLANE: usize = 64;

/// `[Y_b … Y_{b+k−1}] = W · [col(x_b) … col(x_{b+k−1})]` for groups of `images` images
/// (one convolution group): one gemm over the images' columns side by side into a
/// scratch `[c_out, images · plane]`, then each image's block copied to its place with
/// the bias added.
fn forward_grouped<T: GemmElement>(
    g: &Geometry,
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    y: &mut [MaybeUninit<T>],
    images: usize,
) {
    let col_rows = g.col_rows();
    let plane = g.out_plane();
    let n = images * plane;
    let image_len = g.channels_out * plane;
    let x_image_len = g.channels_in * g.in_plane();
    for_each_chunk(
        y,
        images * image_len,
        || (vec![T::zero(); col_rows * n], vec![T::zero(); g.channels_out * n]),
        |(col, product), chunk, y_chunk| {
            let first = chunk * images;
            if g.is_pointwise() {
                planes_side_by_side(x, first, images, [g.channels_in, plane], col);
            } else {
                for i in 0..images {
                    let x_image = &x[(first + i) * x_image_len..][..x_image_len];
                    im2col_strided(g, x_image, 0..g.out_h, &mut col[i * plane..], n);
                }
            }
            let w_mat = MatRef::new(w, g.channels_out, col_rows, col_rows, 1);
            let col_mat = MatRef::new(col, col_rows, n, n, 1);
            gemm(product, false, w_mat, col_mat, false);
            for (i, y_image) in y_chunk.chunks_exact_mut(image_len).enumerate() {
                for (c, y_channel) in y_image.chunks_exact_mut(plane).enumerate() {
                    let b = bias.map_or(T::zero(), |bias| bias[c]);
                    let src = &product[c * n + i * plane..][..plane];
                    for (d, &v) in y_channel.iter_mut().zip(src) {
                        d.write(v + b);
                    }
                }
            }
        },
    );
}

/// `Y_{b,g} = W_g · col(x_{b,g}) + bias_g`, one image per task.
fn forward_gemm<T: GemmElement>(
    g: &Geometry,
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    y: &mut [MaybeUninit<T>],
) {
    let col_rows = g.col_rows();
    let plane = g.out_plane();
    let inner_parallel = g.batch < num_threads();
    for_each_chunk(
        y,
        g.channels_out * plane,
        || vec![T::zero(); g.col_tile_len()],
        |col, b, y_image| {
            for (c, y_channel) in y_image.chunks_exact_mut(plane).enumerate() {
                let value = bias.map_or(T::zero(), |bias| bias[c]);
                y_channel.iter_mut().for_each(|v| {
                    v.write(value);
                });
            }
            // SAFETY: every element of `y_image` was written just above, and
            // `MaybeUninit<T>` has `T`'s layout.
            let y_image: &mut [T] = unsafe { &mut *(y_image as *mut [MaybeUninit<T>] as *mut [T]) };
            for group in 0..g.groups {
                let w_group = MatRef::new(
                    &w[group * g.out_per_group * col_rows..][..g.out_per_group * col_rows],
                    g.out_per_group,
                    col_rows,
                    col_rows,
                    1,
                );
                let x_group = &x[(b * g.channels_in + group * g.in_per_group) * g.in_plane()..]
                    [..g.in_per_group * g.in_plane()];
                let y_group =
                    &mut y_image[group * g.out_per_group * plane..][..g.out_per_group * plane];
                if g.is_pointwise() {
                    let x_mat = MatRef::new(x_group, g.in_per_group, plane, plane, 1);
                    gemm_strided(
                        y_group,
                        plane,
                        bias.is_some(),
                        w_group,
                        x_mat,
                        inner_parallel,
                    );
                    continue;
                }
                for rows in g.row_tiles() {
                    let n = rows.len() * g.out_w;
                    let col = &mut col[..col_rows * n];
                    im2col(g, x_group, rows.clone(), col);
                    let col_mat = MatRef::new(col, col_rows, n, n, 1);
                    gemm_strided(
                        &mut y_group[rows.start * g.out_w..],
                        plane,
                        bias.is_some(),
                        w_group,
                        col_mat,
                        inner_parallel,
                    );
                }
            }
        },
    );
}
