//! GELU and softmax over the last dimension for kiln's CPU backend.
//!
//! - GELU (the exact, erf form: `x·Φ(x)`, PyTorch's default `nn.GELU`) as one pass with a
//!   vectorizable erf ([`erf`]) instead of libm's scalar `erff`: on `Flex` (evaluation) the
//!   forward, on `Autodiff<Flex>` (training) one autodiff op whose backward is
//!   `dy·(Φ(x) + x·φ(x))`, also one pass.
//! - Softmax over the last dimension as one pass per row with a vectorizable exp
//!   ([`exp_non_positive`], where burn-flex's forward calls libm's scalar `expf`); on
//!   `Autodiff<Flex>` one autodiff op with the backward `dx = y ⊙ (dy − Σ dy ⊙ y)` per row,
//!   instead of burn's five recorded ops (max, subtract, exp, sum, divide).
//!
//! [`gelu`] and [`softmax_last`] fall back to burn's generic code on every other backend and
//! dtype.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use burn::backend::Flex;
use burn::prelude::*;
use burn::tensor::DType;
use rayon::prelude::*;

use super::specialize::{
    as_flex, as_flex_autodiff, backward_unary, flex_tensor, from_flex, from_flex_autodiff, record_unary,
};

/// Values per rayon task, at least.
const MIN_VALUES_PER_TASK: usize = 16 * 1024;

/// `gelu(x)` (erf form): the fused kernels on `Flex` and `Autodiff<Flex>` in f32, burn's
/// `activation::gelu` otherwise.
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    fused_gelu(&x).unwrap_or_else(|| burn::tensor::activation::gelu(x))
}

/// `softmax(x, D − 1)`: the fused kernel on `Flex` and `Autodiff<Flex>` (one autodiff op) in
/// f32, burn's `activation::softmax` otherwise.
pub fn softmax_last<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    fused_softmax(&x).unwrap_or_else(|| burn::tensor::activation::softmax(x, D - 1))
}

/// The fused GELU, `None` unless `B` is `Flex` or `Autodiff<Flex>` and `x` is f32.
fn fused_gelu<B: Backend, const D: usize>(x: &Tensor<B, D>) -> Option<Tensor<B, D>> {
    if x.dtype() != DType::F32 {
        return None;
    }
    if let Some(x) = as_flex_autodiff(x) {
        let x_data = x.primitive.to_contiguous();
        let dims = x_data.layout().shape().to_vec();
        let y = flex_tensor(map_values(x_data.storage::<f32>(), gelu_forward_dispatch), dims);
        return from_flex_autodiff(record_unary(GeluBackward, &x, x_data, y));
    }
    let x = as_flex(x)?.to_contiguous();
    let dims = x.layout().shape().to_vec();
    from_flex(flex_tensor(map_values(x.storage::<f32>(), gelu_forward_dispatch), dims))
}

/// The fused softmax over the last dimension, `None` unless `B` is `Flex` or `Autodiff<Flex>`
/// (then one autodiff op) and `x` is f32.
fn fused_softmax<B: Backend, const D: usize>(x: &Tensor<B, D>) -> Option<Tensor<B, D>> {
    if x.dtype() != DType::F32 || D == 0 {
        return None;
    }
    if let Some(x) = as_flex_autodiff(x) {
        let y = softmax_forward(&x.primitive);
        return from_flex_autodiff(record_unary(SoftmaxBackward, &x, y.clone(), y));
    }
    from_flex(softmax_forward(&as_flex(x)?))
}

/// Softmax over the last dimension of an f32 tensor, rows in parallel, with the vectorizable
/// [`exp_non_positive`] (each row's values less its maximum are ≤ 0) instead of libm's `expf`.
fn softmax_forward(x: &FlexTensor) -> FlexTensor {
    let x = x.to_contiguous();
    let dims = x.layout().shape().to_vec();
    let d = (*dims.last().unwrap_or(&1)).max(1);
    let values = x.storage::<f32>();
    let mut y = vec![0.0f32; values.len()];
    let per_task = MIN_VALUES_PER_TASK.div_ceil(d) * d;
    y.par_chunks_mut(per_task)
        .zip(values.par_chunks(per_task))
        .for_each(|(y, x)| softmax_rows_dispatch(x, d, y));
    flex_tensor(y, dims)
}

/// GELU's backward: `dx = dy·(Φ(x) + x·φ(x))` from the saved (contiguous) input.
#[derive(Debug)]
struct GeluBackward;

impl Backward<Flex, 1> for GeluBackward {
    type State = FlexTensor;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        backward_unary(ops, grads, |dy, x| {
            let (x_values, dy_values) = (x.storage::<f32>(), dy.storage::<f32>());
            let mut dx = vec![0.0f32; x_values.len()];
            dx.par_chunks_mut(MIN_VALUES_PER_TASK)
                .zip(
                    x_values
                        .par_chunks(MIN_VALUES_PER_TASK)
                        .zip(dy_values.par_chunks(MIN_VALUES_PER_TASK)),
                )
                .for_each(|(dx, (x, dy))| gelu_backward_dispatch(x, dy, dx));
            (dx, x.layout().shape().to_vec())
        });
    }
}

/// Softmax's backward over the last dimension: `dx = y ⊙ (dy − Σ dy ⊙ y)` per row, from the
/// saved (contiguous) output.
#[derive(Debug)]
struct SoftmaxBackward;

impl Backward<Flex, 1> for SoftmaxBackward {
    type State = FlexTensor;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        backward_unary(ops, grads, |dy, y| {
            let dims = y.layout().shape().to_vec();
            let d = *dims.last().unwrap();
            (softmax_backward(y.storage::<f32>(), dy.storage::<f32>(), d), dims)
        });
    }
}

/// `f` applied to chunks of `x`, in parallel, into a new vector.
fn map_values(x: &[f32], f: fn(&[f32], &mut [f32])) -> Vec<f32> {
    let mut y = vec![0.0f32; x.len()];
    y.par_chunks_mut(MIN_VALUES_PER_TASK)
        .zip(x.par_chunks(MIN_VALUES_PER_TASK))
        .for_each(|(y, x)| f(x, y));
    y
}

/// The input gradient of softmax rows of `d` values with output `y` and output gradient `dy`.
pub(crate) fn softmax_backward(y: &[f32], dy: &[f32], d: usize) -> Vec<f32> {
    assert_eq!(y.len(), dy.len());
    let mut dx = vec![0.0f32; y.len()];
    let per_task = MIN_VALUES_PER_TASK.div_ceil(d.max(1)) * d;
    dx.par_chunks_mut(per_task)
        .zip(y.par_chunks(per_task).zip(dy.par_chunks(per_task)))
        .for_each(|(dx, (y, dy))| softmax_backward_rows_dispatch(y, dy, d, dx));
    dx
}

with_avx2!(gelu_forward_dispatch => gelu_forward(x: &[f32], y: &mut [f32]));
with_avx2!(gelu_backward_dispatch => gelu_backward(x: &[f32], dy: &[f32], dx: &mut [f32]));
with_avx2!(softmax_rows_dispatch => softmax_rows(x: &[f32], d: usize, y: &mut [f32]));
with_avx2!(softmax_backward_rows_dispatch => softmax_backward_rows(y: &[f32], dy: &[f32], d: usize, dx: &mut [f32]));

/// `y = x·Φ(x) = x·(1 + erf(x/√2))/2`.
#[inline(always)]
fn gelu_forward(x: &[f32], y: &mut [f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = 0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// `dx = dy·(Φ(x) + x·φ(x))`, `φ(x) = exp(−x²/2)/√(2π)`.
#[inline(always)]
fn gelu_backward(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    /// `1/√(2π)`.
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    for ((dx, &x), &g) in dx.iter_mut().zip(x).zip(dy) {
        let cdf = 0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
        let pdf = INV_SQRT_2PI * exp_non_positive(-0.5 * x * x);
        *dx = g * (cdf + x * pdf);
    }
}

/// Softmax of each row (`d` values) of `x` into `y`: `exp(x − max) / Σ exp(x − max)`.
#[inline(always)]
fn softmax_rows(x: &[f32], d: usize, y: &mut [f32]) {
    for (x, y) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
        let mut lanes = [f32::NEG_INFINITY; 8];
        let x8 = x.chunks_exact(8);
        let tail = x8.remainder().iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        for a in x8 {
            for i in 0..8 {
                lanes[i] = lanes[i].max(a[i]);
            }
        }
        let max = lanes.iter().fold(tail, |m, &v| m.max(v));
        let mut sums = [0.0f32; 8];
        let (y8, x8) = (y.chunks_exact_mut(8), x.chunks_exact(8));
        let mut tail = 0.0;
        for (y, &x) in y8.into_remainder().iter_mut().zip(x8.remainder()) {
            *y = exp_non_positive(x - max);
            tail += *y;
        }
        for (y, x) in y.chunks_exact_mut(8).zip(x.chunks_exact(8)) {
            for i in 0..8 {
                y[i] = exp_non_positive(x[i] - max);
                sums[i] += y[i];
            }
        }
        let inv = 1.0 / (sums.iter().sum::<f32>() + tail);
        for y in y.iter_mut() {
            *y *= inv;
        }
    }
}

/// Softmax's input gradient for the rows (`d` values each) of `y`, `dy`, into `dx`.
#[inline(always)]
fn softmax_backward_rows(y: &[f32], dy: &[f32], d: usize, dx: &mut [f32]) {
    let rows = y.chunks_exact(d).zip(dy.chunks_exact(d)).zip(dx.chunks_exact_mut(d));
    for ((y, dy), dx) in rows {
        let mut lanes = [0.0f32; 8];
        let (y8, dy8) = (y.chunks_exact(8), dy.chunks_exact(8));
        let tail: f32 = y8.remainder().iter().zip(dy8.remainder()).map(|(a, b)| a * b).sum();
        for (a, b) in y8.zip(dy8) {
            for i in 0..8 {
                lanes[i] += a[i] * b[i];
            }
        }
        let dot = lanes.iter().sum::<f32>() + tail;
        for ((dx, &y), &g) in dx.iter_mut().zip(y).zip(dy) {
            *dx = y * (g - dot);
        }
    }
}

/// erf in f32 without branches or calls (vectorizes): the rational approximation
/// `x·P(x²)/Q(x²)` on `x` clamped to `[−4, 4]` used by Eigen (`generic_fast_erf_float`) and
/// XLA (`ErfImpl32`); within 5e-7 of erf over the whole line in f32 arithmetic (erf(4) =
/// 1 − 1.5e-8).
#[allow(clippy::excessive_precision)]
#[inline(always)]
pub(crate) fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * -2.72614225801306e-10 + 2.77068142495902e-8;
    p = x2 * p + -2.10102402082508e-6;
    p = x2 * p + -5.69250639462346e-5;
    p = x2 * p + -7.34990630326855e-4;
    p = x2 * p + -2.95459980854025e-3;
    p = x2 * p + -1.60960333262415e-2;
    let mut q = x2 * -1.45660718464996e-5 + -2.13374055278905e-4;
    q = x2 * q + -1.68282697438203e-3;
    q = x2 * q + -7.37332916720468e-3;
    q = x2 * q + -1.42647390514189e-2;
    x * p / q
}

/// `exp(x)` for `x ≤ 0` in f32 without branches or calls (vectorizes): Cephes' `expf`
/// (`x = n·ln 2 + r`, `|r| ≤ ln 2 / 2`, a degree-7 polynomial of `r`, scaled by `2ⁿ` through
/// the exponent bits), with `x` clamped to −87 (exp(−87) ≈ 1.6e-38, the smallest normal f32's
/// neighbourhood).
#[allow(clippy::excessive_precision)]
#[inline(always)]
pub(crate) fn exp_non_positive(x: f32) -> f32 {
    let x = x.max(-87.0);
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    let r = x - n * 0.693359375 - n * -2.12194440e-4;
    let r2 = r * r;
    let mut p = 1.9875691500e-4 * r + 1.3981999507e-3;
    p = p * r + 8.3334519073e-3;
    p = p * r + 4.1665795894e-2;
    p = p * r + 1.6666665459e-1;
    p = p * r + 5.0000001201e-1;
    p = p * r2 + r + 1.0;
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::layer_norm::tests::assert_close;
    use burn::backend::Autodiff;
    use burn::tensor::{Distribution, FloatDType};

    type Ad = Autodiff<Flex>;

    /// erf in f64 by its Maclaurin series, `2/√π · Σ (−1)ⁿ x²ⁿ⁺¹ / (n!(2n + 1))` (for `|x| ≤ 4`
    /// its largest term is below 1e6, so f64 keeps it to about 1e-10).
    fn erf_series(x: f64) -> f64 {
        let (mut term, mut sum) = (x, 0.0);
        for n in 0..200 {
            sum += term / (2 * n + 1) as f64;
            term *= -x * x / (n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    /// The approximations against f64 references on a fine grid.
    #[test]
    fn erf_and_exp_are_accurate() {
        let mut worst_erf = 0.0f64;
        let mut worst_exp = 0.0f64;
        for i in -200_000i32..=200_000 {
            let x = i as f32 * 2e-5;
            worst_erf = worst_erf.max((erf(x) as f64 - erf_series(x as f64)).abs());
            let e = -(i.unsigned_abs() as f32) * 4.3e-4;
            let want = (e as f64).exp();
            worst_exp = worst_exp.max((exp_non_positive(e) as f64 - want).abs() / want);
        }
        eprintln!("worst erf error {worst_erf:e}, exp relative error {worst_exp:e}");
        assert!(worst_erf < 5e-7, "erf: {worst_erf}");
        assert!(worst_exp < 5e-7, "exp: {worst_exp}");
        assert_eq!(erf(100.0), 1.0);
        assert_eq!(erf(-100.0), -1.0);
        assert!(exp_non_positive(-1000.0) < 1e-37);
    }

    /// The values and input gradients of `op` on the CPU training backend and of `generic`
    /// (burn's), on an input of `dims` (transposed first when `transpose`).
    fn compare(
        dims: [usize; 3],
        transpose: bool,
        scale: f32,
        op: impl Fn(Tensor<Ad, 3>) -> Tensor<Ad, 3>,
        generic: impl Fn(Tensor<Ad, 3>) -> Tensor<Ad, 3>,
    ) {
        let device = Default::default();
        let base = Tensor::<Ad, 3>::random(dims, Distribution::Normal(0.0, scale as f64), &device);
        let out_dims = if transpose { [dims[0], dims[2], dims[1]] } else { dims };
        let upstream = Tensor::<Ad, 3>::random(out_dims, Distribution::Normal(0.0, 1.0), &device);
        let run = |f: &dyn Fn(Tensor<Ad, 3>) -> Tensor<Ad, 3>| {
            let x = Tensor::<Ad, 3>::from_inner(base.clone().inner()).require_grad();
            let input = if transpose {
                x.clone().swap_dims(1, 2)
            } else {
                x.clone()
            };
            let y = f(input);
            let grads = (y.clone() * upstream.clone()).sum().backward();
            let values = |data: TensorData| data.to_vec::<f32>().unwrap();
            [values(y.into_data()), values(x.grad(&grads).unwrap().into_data())]
        };
        let (fused, burn) = (run(&op), run(&generic));
        assert_close(&fused[0], &burn[0], "y");
        assert_close(&fused[1], &burn[1], "dx");
    }

    #[test]
    fn gelu_equals_burns() {
        for (dims, transpose) in [([2, 5, 96], false), ([3, 7, 13], true), ([1, 1, 1], false)] {
            compare(dims, transpose, 3.0, gelu, burn::tensor::activation::gelu);
        }
        // Evaluation (no autodiff): the fused forward.
        let x = Tensor::<Flex, 2>::random([9, 37], Distribution::Normal(0.0, 3.0), &Default::default());
        let got = gelu(x.clone().transpose()).into_data().to_vec::<f32>().unwrap();
        let want = burn::tensor::activation::gelu(x.transpose())
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        assert_close(&got, &want, "eval");
    }

    #[test]
    fn softmax_equals_burns() {
        for (dims, transpose) in [([2, 5, 49], false), ([3, 7, 13], true), ([2, 3, 1], false)] {
            compare(dims, transpose, 4.0, softmax_last, |x| {
                burn::tensor::activation::softmax(x, 2)
            });
        }
        // Without autodiff (evaluation), over a wide range: exp of values far below the row's
        // maximum underflows to 0 as in burn's.
        let device = Default::default();
        let x = Tensor::<Flex, 3>::random([4, 6, 49], Distribution::Normal(0.0, 30.0), &device);
        let values = |t: Tensor<Flex, 3>| t.into_data().to_vec::<f32>().unwrap();
        let want = values(burn::tensor::activation::softmax(x.clone(), 2));
        assert_close(&values(softmax_last(x)), &want, "evaluation y");
    }

    /// Only `Flex` and `Autodiff<Flex>` in f32 take the fused GELU, only `Autodiff<Flex>` the
    /// fused softmax.
    #[test]
    fn only_the_cpu_backends_take_the_fused_ops() {
        let device = Default::default();
        let x = Tensor::<Ad, 2>::random([3, 8], Distribution::Default, &device);
        assert!(fused_gelu(&x).is_some() && fused_softmax(&x).is_some());
        let half = x.cast(FloatDType::F16);
        assert!(fused_gelu(&half).is_none() && fused_softmax(&half).is_none());
        let plain = Tensor::<Flex, 2>::random([3, 8], Distribution::Default, &device);
        assert!(fused_gelu(&plain).is_some() && fused_softmax(&plain).is_some());
    }
}
