//! 2×2, stride-2 max pooling followed by ReLU on `Autodiff<Flex>` as one burn autodiff op.
//!
//! The forward writes `max(window)` where it is positive and 0 elsewhere, and keeps per output
//! one byte: the winning tap (0–3, row-major in the window) or [`NO_GRADIENT`]. The backward
//! writes the whole input gradient in one pass: each window's upstream gradient at its winning
//! tap, 0 at the other taps and at the rows and columns an odd size leaves out.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::Flex;
use burn::prelude::*;
use burn::tensor::DType;
use rayon::prelude::*;
use std::mem::MaybeUninit;

use super::specialize::{
    as_flex_autodiff, backward_unary, flex_tensor, from_flex_autodiff, record_unary,
    FlexAutodiffTensor as AutodiffTensor,
};

/// The code of a window whose maximum is not positive: ReLU passes it no gradient.
const NO_GRADIENT: u8 = 4;

/// Planes per rayon task at least (an MNIST plane is 24×24).
const MIN_PLANES_PER_TASK: usize = 16;

/// `relu(max_pool2d(x, 2×2, stride 2))` by the fused op; `None` unless `B` is `Autodiff<Flex>`,
/// `x` is f32 and its planes are at least 2×2.
pub(crate) fn train<B: Backend>(x: &Tensor<B, 4>) -> Option<Tensor<B, 4>> {
    let [_, _, h, w] = x.dims();
    if x.dtype() != DType::F32 || h < 2 || w < 2 {
        return None;
    }
    from_flex_autodiff(pool_relu_op(as_flex_autodiff(x)?))
}

/// What the backward pass needs: the input's shape and each window's code.
#[derive(Debug, Clone)]
struct SavedWinners {
    dims: [usize; 4],
    codes: Vec<u8>,
}

/// The fused op's backward: each window's gradient to its winning tap.
#[derive(Debug)]
struct MaxPoolReluBackward;

impl Backward<Flex, 1> for MaxPoolReluBackward {
    type State = SavedWinners;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        backward_unary(ops, grads, |dy, SavedWinners { dims, codes }| {
            (route_gradient(dy.storage::<f32>(), &codes, dims), dims.to_vec())
        });
    }
}

/// Runs the forward and records the op when `x` tracks gradients.
fn pool_relu_op(x: AutodiffTensor) -> AutodiffTensor {
    let x_data = x.primitive.to_contiguous();
    let shape = x_data.layout().shape();
    let dims = [shape[0], shape[1], shape[2], shape[3]];
    let (y, codes) = pool_relu(x_data.storage::<f32>(), dims);
    let y = flex_tensor(y, vec![dims[0], dims[1], dims[2] / 2, dims[3] / 2]);
    record_unary(MaxPoolReluBackward, &x, SavedWinners { dims, codes }, y)
}

/// `(relu(max_pool2d(x)), codes)` for `x` of shape `[n, c, h, w]`, `h, w ≥ 2`.
fn pool_relu(x: &[f32], [n, c, h, w]: [usize; 4]) -> (Vec<f32>, Vec<u8>) {
    let out_plane = (h / 2) * (w / 2);
    let mut y = vec![0.0f32; n * c * out_plane];
    let mut codes = vec![0u8; n * c * out_plane];
    y.par_chunks_mut(out_plane)
        .zip(codes.par_chunks_mut(out_plane))
        .zip(x.par_chunks(h * w))
        .with_min_len(MIN_PLANES_PER_TASK)
        .for_each(|((y, codes), x)| pool_plane_dispatch(x, w, y, codes));
    (y, codes)
}

/// The input gradient `[n, c, h, w]` from the output gradient `dy` and the forward's `codes`.
fn route_gradient(dy: &[f32], codes: &[u8], [n, c, h, w]: [usize; 4]) -> Vec<f32> {
    let out_plane = (h / 2) * (w / 2);
    let len = n * c * h * w;
    // Not zero-filled first: `route_plane` writes every element (a 9 MB pass saved on the
    // MNIST `Net`).
    let mut dx = Vec::with_capacity(len);
    dx.spare_capacity_mut()[..len]
        .par_chunks_mut(h * w)
        .zip(dy.par_chunks(out_plane).zip(codes.par_chunks(out_plane)))
        .with_min_len(MIN_PLANES_PER_TASK)
        .for_each(|(dx, (dy, codes))| route_plane_dispatch(dy, codes, w, dx));
    // SAFETY: the planes above cover all `len` elements, and `route_plane` writes every
    // element of its plane.
    unsafe { dx.set_len(len) };
    dx
}

with_avx2!(pool_plane_dispatch => pool_plane(x: &[f32], w: usize, y: &mut [f32], codes: &mut [u8]));
with_avx2!(route_plane_dispatch => route_plane(dy: &[f32], codes: &[u8], w: usize, dx: &mut [MaybeUninit<f32>]));

/// One plane (`x`: `h × w`) pooled into `y` and `codes` (`⌊h/2⌋ × ⌊w/2⌋`).
#[inline(always)]
fn pool_plane(x: &[f32], w: usize, y: &mut [f32], codes: &mut [u8]) {
    let out_w = w / 2;
    let rows = y.chunks_exact_mut(out_w).zip(codes.chunks_exact_mut(out_w));
    for ((y_row, code_row), pair) in rows.zip(x.chunks_exact(2 * w)) {
        let (top, bottom) = pair.split_at(w);
        let windows = top.chunks_exact(2).zip(bottom.chunks_exact(2));
        for ((y, code), (t, b)) in y_row.iter_mut().zip(code_row.iter_mut()).zip(windows) {
            // burn's order: the first tap starts the maximum, a later one wins only when
            // strictly greater.
            let (mut best, mut at) = (t[0], 0);
            if t[1] > best {
                (best, at) = (t[1], 1);
            }
            if b[0] > best {
                (best, at) = (b[0], 2);
            }
            if b[1] > best {
                (best, at) = (b[1], 3);
            }
            // burn-flex's ReLU keeps what is `> 0` (`x.max(0.0)`: a NaN gives 0, and no
            // gradient).
            let passes = best > 0.0;
            *y = if passes { best } else { 0.0 };
            *code = if passes { at } else { NO_GRADIENT };
        }
    }
}

/// One plane's input gradient (`dx`: `h × w`, every element written) from its output gradient
/// `dy` and `codes`.
#[inline(always)]
fn route_plane(dy: &[f32], codes: &[u8], w: usize, dx: &mut [MaybeUninit<f32>]) {
    let out_w = w / 2;
    let mut pairs = dx.chunks_exact_mut(2 * w);
    for ((pair, dy_row), code_row) in (&mut pairs).zip(dy.chunks_exact(out_w)).zip(codes.chunks_exact(out_w)) {
        let (top, bottom) = pair.split_at_mut(w);
        let windows = top.chunks_exact_mut(2).zip(bottom.chunks_exact_mut(2));
        for ((t, b), (&g, &code)) in windows.zip(dy_row.iter().zip(code_row)) {
            t[0].write(if code == 0 { g } else { 0.0 });
            t[1].write(if code == 1 { g } else { 0.0 });
            b[0].write(if code == 2 { g } else { 0.0 });
            b[1].write(if code == 3 { g } else { 0.0 });
        }
        if w % 2 == 1 {
            top[w - 1].write(0.0);
            bottom[w - 1].write(0.0);
        }
    }
    for element in pairs.into_remainder() {
        element.write(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::max_pool_relu;
    use burn::backend::Autodiff;
    use burn::nn::pool::MaxPool2dConfig;
    use burn::tensor::activation::relu;
    use burn::tensor::Distribution;

    type Ad = Autodiff<Flex>;

    fn pool() -> burn::nn::pool::MaxPool2d {
        MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init()
    }

    /// Hand-derived: a tie goes to the first tap, a window with no positive value gives 0 and
    /// no gradient, and the column an odd width leaves out gets none.
    #[test]
    fn routes_the_gradient_to_the_first_positive_maximum() {
        let device = Default::default();
        let x = Tensor::<Ad, 4>::from_floats([[[[1.0, 3.0, -1.0, -2.0, 9.0], [3.0, 2.0, -4.0, -1.0, 9.0]]]], &device)
            .require_grad();
        let y = max_pool_relu(&pool(), x.clone());
        assert_eq!(y.clone().into_data().to_vec::<f32>().unwrap(), vec![3.0, 0.0]);
        let upstream = Tensor::<Ad, 4>::from_floats([[[[5.0, 7.0]]]], &device);
        let grads = (y * upstream).sum().backward();
        let dx = x.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap();
        assert_eq!(dx, vec![0.0, 5.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    }

    /// Against burn's own `relu(max_pool2d(x))`, bit for bit, on inputs with many ties and
    /// non-positive windows (small integers) and a few NaNs, even and odd plane sizes.
    #[test]
    fn equals_burns_pool_and_relu() {
        let device = Default::default();
        let (mut routed, mut zeroed) = (false, false);
        for dims in [[3, 5, 24, 24], [2, 3, 7, 5], [1, 2, 2, 3]] {
            let mut values = Tensor::<Flex, 4>::random(dims, Distribution::Uniform(-3.0, 3.0), &device)
                .round()
                .into_data()
                .to_vec::<f32>()
                .unwrap();
            // A NaN as a window's first tap and as a later one.
            values[0] = f32::NAN;
            values[3] = f32::NAN;
            let values = Tensor::<Flex, 4>::from_data(TensorData::new(values, dims), &device);
            let upstream_dims = [dims[0], dims[1], dims[2] / 2, dims[3] / 2];
            let upstream = Tensor::<Ad, 4>::random(upstream_dims, Distribution::Normal(0.0, 1.0), &device);
            let run = |fused: bool| {
                let x = Tensor::<Ad, 4>::from_inner(values.clone()).require_grad();
                let y = if fused {
                    max_pool_relu(&pool(), x.clone())
                } else {
                    relu(pool().forward(x.clone()))
                };
                let grads = (y.clone() * upstream.clone()).sum().backward();
                let dx = x.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap();
                (y.into_data().to_vec::<f32>().unwrap(), dx)
            };
            let (fused, burn) = (run(true), run(false));
            assert_eq!(fused, burn, "{dims:?}");
            routed |= fused.1.iter().any(|&g| g != 0.0);
            zeroed |= fused.0.iter().any(|&v| v == 0.0);
        }
        assert!(
            routed && zeroed,
            "the inputs must route gradients and zero some windows"
        );
    }
}
