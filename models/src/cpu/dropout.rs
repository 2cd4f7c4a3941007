//! Dropout on `Autodiff<Flex>` as one burn autodiff op: the forward draws the keep mask and
//! writes `x · mask / (1 − p)` in one pass, keeping the mask as bytes; the backward writes
//! `dy · mask / (1 − p)` in one pass.
//!
//! The mask is drawn in streams of [`STREAM`] elements, each from a Xoshiro256++ generator
//! seeded by a value drawn from the backend's seeded generator, so the mask depends on the
//! seed only (not on the thread count), and the streams fill in parallel.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::Flex;
use burn::prelude::*;
use burn::tensor::{DType, Distribution};
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use rayon::prelude::*;

use super::specialize::{
    as_flex_autodiff, backward_unary, flex_tensor, from_flex_autodiff, record_unary,
    FlexAutodiffTensor as AutodiffTensor,
};

/// Elements per independently seeded stream of the mask.
const STREAM: usize = 1 << 16;

/// `dropout(x)` with probability `prob` by the fused op; `None` unless `B` is
/// `Autodiff<Flex>` and `x` is f32.
pub(crate) fn train<B: Backend, const D: usize>(prob: f64, x: &Tensor<B, D>) -> Option<Tensor<B, D>> {
    if x.dtype() != DType::F32 {
        return None;
    }
    from_flex_autodiff(dropout_op(as_flex_autodiff(x)?, prob))
}

/// What the backward pass needs: the keep mask (0 or 1 per element) and `1 / (1 − p)`.
#[derive(Debug, Clone)]
struct SavedMask {
    keep: Vec<u8>,
    scale: f32,
}

/// The fused op's backward: `dx = dy · mask · scale`.
#[derive(Debug)]
struct DropoutBackward;

impl Backward<Flex, 1> for DropoutBackward {
    type State = SavedMask;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        backward_unary(ops, grads, |dy, SavedMask { keep, scale }| {
            let mut dx = vec![0.0f32; keep.len()];
            dx.par_chunks_mut(STREAM)
                .zip(dy.storage::<f32>().par_chunks(STREAM).zip(keep.par_chunks(STREAM)))
                .for_each(|(dx, (dy, keep))| {
                    for ((dx, &dy), &k) in dx.iter_mut().zip(dy).zip(keep) {
                        *dx = dy * (f32::from(k) * scale);
                    }
                });
            (dx, dy.layout().shape().to_vec())
        });
    }
}

/// Runs the forward and records the op when `x` tracks gradients.
fn dropout_op(x: AutodiffTensor, prob: f64) -> AutodiffTensor {
    let x_data = x.primitive.to_contiguous();
    let dims = x_data.layout().shape().to_vec();
    let keep_prob = 1.0 - prob;
    let scale = if keep_prob > 0.0 { (1.0 / keep_prob) as f32 } else { 0.0 };
    let (y, keep) = masked(
        x_data.storage::<f32>(),
        keep_prob,
        &stream_seeds(x_data.storage::<f32>().len()),
        scale,
    );
    let y = flex_tensor(y, dims);
    record_unary(DropoutBackward, &x, SavedMask { keep, scale }, y)
}

/// One 62-bit seed per [`STREAM`] of `len` elements, from two 31-bit draws of the backend's
/// seeded generator (burn-flex's default integers are i32).
fn stream_seeds(len: usize) -> Vec<u64> {
    let streams = len.div_ceil(STREAM);
    let halves: Vec<u64> = Tensor::<Flex, 1, Int>::random(
        [2 * streams],
        Distribution::Uniform(0.0, f64::from(i32::MAX)),
        &Default::default(),
    )
    .into_data()
    .iter::<i64>()
    .map(|half| half as u64)
    .collect();
    halves.chunks_exact(2).map(|pair| (pair[0] << 31) | pair[1]).collect()
}

/// `(x · mask · scale, mask)`: each element is kept with probability `keep_prob`, stream `i`
/// of the mask drawn from `seeds[i]`.
fn masked(x: &[f32], keep_prob: f64, seeds: &[u64], scale: f32) -> (Vec<f32>, Vec<u8>) {
    // Kept when a uniform 32-bit draw is below keep_prob · 2³², i.e. at most `last_kept`
    // (compared as u32: a u64 comparison keeps the loop below from vectorizing on x86-64's
    // baseline SSE2, which has no 64-bit compare).
    let threshold = (keep_prob.clamp(0.0, 1.0) * 4_294_967_296.0).round() as u64;
    let Some(last_kept) = threshold.checked_sub(1).map(|t| t as u32) else {
        // p = 1: nothing is kept (and `scale` is 0).
        return (x.iter().map(|&x| x * 0.0).collect(), vec![0; x.len()]);
    };
    let mut y = vec![0.0f32; x.len()];
    let mut keep = vec![0u8; x.len()];
    y.par_chunks_mut(STREAM)
        .zip(keep.par_chunks_mut(STREAM))
        .zip(x.par_chunks(STREAM))
        .zip(seeds.par_iter())
        .for_each(|(((y, keep), x), &seed)| {
            let mut rng = SmallRng::seed_from_u64(seed);
            // 32-bit draws for 64 elements at a time (two per `next_u64`), then a loop that
            // vectorizes.
            let mut draws = [0u32; 64];
            for ((y, keep), x) in y.chunks_mut(64).zip(keep.chunks_mut(64)).zip(x.chunks(64)) {
                for pair in draws.chunks_exact_mut(2) {
                    let bits = rng.next_u64();
                    pair[0] = bits as u32;
                    pair[1] = (bits >> 32) as u32;
                }
                for (((y, k), &x), &draw) in y.iter_mut().zip(keep.iter_mut()).zip(x).zip(&draws) {
                    *k = u8::from(draw <= last_kept);
                    *y = x * (f32::from(*k) * scale);
                }
            }
        });
    (y, keep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dropout::dropout;
    use burn::backend::Autodiff;
    use burn::nn::DropoutConfig;

    type Ad = Autodiff<Flex>;

    #[test]
    fn keeps_one_minus_p_scaled_and_routes_the_gradient_through_the_mask() {
        let device = Default::default();
        let n = 300_000;
        let x = Tensor::<Ad, 1>::ones([n], &device).require_grad();
        let y = dropout(&DropoutConfig::new(0.25).init(), x.clone());
        let values: Vec<f32> = y.clone().inner().into_data().to_vec().unwrap();
        let scale = 1.0 / 0.75;
        assert!(values.iter().all(|&v| v == 0.0 || (v - scale).abs() < 1e-6));
        let kept = values.iter().filter(|&&v| v != 0.0).count() as f64 / n as f64;
        assert!((kept - 0.75).abs() < 0.005, "kept {kept}");
        // d(Σ y · w)/dx = w · mask / 0.75 = w · y, since x is all ones.
        let w = Tensor::<Ad, 1>::random([n], Distribution::Normal(0.0, 1.0), &device);
        let grads = (y * w.clone()).sum().backward();
        let dx: Vec<f32> = x.grad(&grads).unwrap().into_data().to_vec().unwrap();
        let w: Vec<f32> = w.inner().into_data().to_vec().unwrap();
        for ((&dx, &w), &y) in dx.iter().zip(&w).zip(&values) {
            assert!((dx - w * y).abs() <= 1e-6 * (1.0 + (w * y).abs()), "{dx} vs {}", w * y);
        }
    }

    #[test]
    fn the_mask_depends_on_the_seeds_only() {
        let x: Vec<f32> = (0..200_000).map(|i| i as f32).collect();
        let seeds = [11, 12, 13, 14];
        let on = |threads: usize, seeds: &[u64]| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| masked(&x, 0.5, seeds, 2.0))
        };
        let (y1, keep1) = on(1, &seeds);
        let (y3, keep3) = on(3, &seeds);
        assert_eq!(keep1, keep3);
        assert_eq!(y1, y3);
        assert!(y1
            .iter()
            .zip(&x)
            .zip(&keep1)
            .all(|((&y, &x), &k)| y == x * 2.0 * f32::from(k)));
        let (_, other) = on(3, &[11, 12, 13, 15]);
        assert_eq!(keep1[..3 * STREAM], other[..3 * STREAM], "streams are independent");
        assert_ne!(keep1[3 * STREAM..], other[3 * STREAM..], "another seed, another stream");
    }

    /// Element `i` of a stream is kept exactly when the `i`-th 32-bit draw of its generator
    /// (the low, then the high half of each `next_u64`) is below `keep_prob · 2³²`, computed
    /// here in 64-bit arithmetic; `keep_prob` 0 keeps nothing and 1 everything.
    #[test]
    fn keeps_the_draws_below_keep_prob_times_two_to_the_32() {
        let x: Vec<f32> = (0..3000).map(|i| i as f32 - 1500.0).collect();
        let seed = 7;
        let mut rng = SmallRng::seed_from_u64(seed);
        let draws: Vec<u64> = (0..x.len() / 2)
            .flat_map(|_| {
                let bits = rng.next_u64();
                [bits & 0xffff_ffff, bits >> 32]
            })
            .collect();
        for keep_prob in [0.0, 0.3, 0.75, 1.0] {
            let (y, keep) = masked(&x, keep_prob, &[seed], 2.0);
            let threshold = (keep_prob * 4_294_967_296.0).round() as u64;
            for (i, &draw) in draws.iter().enumerate() {
                assert_eq!(
                    keep[i],
                    u8::from(draw < threshold),
                    "keep_prob {keep_prob}, element {i}"
                );
                assert_eq!(y[i], x[i] * (f32::from(keep[i]) * 2.0));
            }
            let kept = keep.iter().filter(|&&k| k == 1).count() as f64 / x.len() as f64;
            assert!((kept - keep_prob).abs() < 0.05, "keep_prob {keep_prob}: kept {kept}");
        }
    }

    #[test]
    fn inference_and_zero_probability_are_the_identity() {
        let device = Default::default();
        let x = Tensor::<Flex, 2>::random([64, 128], Distribution::Default, &device);
        let y = dropout(&DropoutConfig::new(0.5).init(), x.clone());
        assert_eq!(y.into_data(), x.clone().into_data());
        let x = Tensor::<Ad, 2>::from_inner(x);
        let y = dropout(&DropoutConfig::new(0.0).init(), x.clone());
        assert_eq!(y.into_data(), x.into_data());
    }
}
