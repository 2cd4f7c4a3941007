//! kiln's CPU speed, in one place: what the CPU backend (burn-flex with SIMD and rayon) runs
//! differently from burn's generic path, and the process settings the CPU programs share.
//! A burn upgrade touches this module tree and `vendor/burn-flex` (see `vendor/README.md`).
//!
//! - Fused ops on `Autodiff<Flex>` f32 tensors, chosen at run time by downcasting the tensor
//!   primitives ([`specialize`]): BatchNorm training ([`batch_norm`], [`batch_norm_kernel`]),
//!   LayerNorm training ([`layer_norm`], [`layer_norm_kernel`]), GELU (training and
//!   evaluation) and softmax training ([`activation`]), dropout ([`dropout`]), 2×2 max pooling
//!   + ReLU ([`pool`]), the Adadelta update ([`adadelta`]) and the SGD update ([`sgd`]). Every other backend and dtype keeps burn's generic code; each op has a test
//!   that the CPU backend takes its fused path and another backend does not.
//! - Process settings, applied by [`prepare_process`]: the training heap policy ([`heap`]),
//!   denormals flushed to zero ([`float_mode`]) and gemm reading im2col tiles in place
//!   ([`gemm_packing`]).

/// Declares `$name`, which runs the `#[inline(always)]` kernel `$kernel` compiled for AVX2 and
/// FMA where the CPU has them (the crate's baseline x86-64 target is SSE2), else as built.
macro_rules! with_avx2 {
    ($name:ident => $kernel:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)?) => {
        fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $kernel($($arg),*)
                }
                // SAFETY: the CPU has AVX2 and FMA, checked just above.
                return unsafe { avx2($($arg),*) };
            }
            $kernel($($arg),*)
        }
    };
}

pub mod activation;
pub mod adadelta;
pub(crate) mod batch_norm;
pub(crate) mod batch_norm_kernel;
pub(crate) mod dropout;
pub mod float_mode;
pub mod gemm_packing;
pub mod heap;
pub(crate) mod layer_norm;
pub(crate) mod layer_norm_kernel;
pub(crate) mod pool;
pub mod sgd;
pub mod specialize;

/// What a process runs, for [`prepare_process`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// Training steps (`kiln-train`, and `kiln-bench`, whose in-process steps must run as
    /// kiln-train's do): every setting.
    Training,
    /// Batched inference (`kiln-serve`): gemm's packing only; the heap keeps glibc's defaults,
    /// so memory freed after a large upload goes back to the system.
    Serving,
}

/// Sets up the process for `workload`. Call it first thing in `main`, before any thread
/// starts: for training it may restart the process once with the heap on transparent huge
/// pages ([`heap::use_transparent_huge_pages`]), then keeps freed memory for reuse
/// ([`heap::keep_freed_memory`]) and flushes denormals ([`float_mode::flush_denormals`]);
/// every workload gets gemm reading im2col tiles in place ([`gemm_packing::read_lhs_in_place`]).
pub fn prepare_process(workload: Workload) {
    if workload == Workload::Training {
        heap::use_transparent_huge_pages();
        heap::keep_freed_memory();
        float_mode::flush_denormals();
    }
    gemm_packing::read_lhs_in_place();
}

#[cfg(test)]
pub(crate) mod tests {
    use burn::backend::{Autodiff, Flex};
    use burn::prelude::*;
    use burn::tensor::{Distribution, FloatDType};

    /// Asserts `got` equals the hand-derived `want` within 1e-5 (the fused kernels' tests).
    pub(crate) fn close(got: &[f32], want: &[f64]) {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-5, "{got:?} vs {want:?}");
        }
    }

    /// Dropout and pooling + ReLU take their fused op on the CPU training backend, and burn's
    /// generic one without autodiff or in f16 (BatchNorm's and Adadelta's tests sit with their
    /// generic code, which they compare against).
    #[test]
    fn the_cpu_training_backend_takes_the_fused_ops() {
        let device = Default::default();
        let x = Tensor::<Autodiff<Flex>, 4>::random([2, 3, 4, 4], Distribution::Default, &device);
        assert!(super::dropout::train(0.5, &x).is_some());
        assert!(super::pool::train(&x).is_some());
        let half = x.cast(FloatDType::F16);
        assert!(super::dropout::train(0.5, &half).is_none());
        assert!(super::pool::train(&half).is_none());
        let plain = Tensor::<Flex, 4>::random([2, 3, 4, 4], Distribution::Default, &device);
        assert!(super::dropout::train(0.5, &plain).is_none());
        assert!(super::pool::train(&plain).is_none());
    }

    /// The vendored burn-flex copies permuted tensors of rank ≥ 3 plane by plane (a Swin
    /// window partition, a head split): every element lands where index arithmetic puts it.
    #[test]
    fn permuted_copies_of_any_rank_put_every_element_in_place() {
        let device = Default::default();
        let dims = [2, 3, 4, 5, 3, 2];
        let n: usize = dims.iter().product();
        let values: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let x = Tensor::<Flex, 6>::from_data(TensorData::new(values, dims), &device);
        let axes = [0, 1, 3, 2, 4, 5];
        let got: Vec<f32> = x.clone().permute(axes).into_data().to_vec().unwrap();
        let src_strides: Vec<usize> = (0..6).map(|d| dims[d + 1..].iter().product()).collect();
        let out_dims: Vec<usize> = axes.iter().map(|&a| dims[a]).collect();
        let mut want = Vec::with_capacity(n);
        let mut index = [0usize; 6];
        for _ in 0..n {
            let offset: usize = (0..6).map(|d| index[d] * src_strides[axes[d]]).sum();
            want.push(offset as f32);
            for d in (0..6).rev() {
                index[d] += 1;
                if index[d] < out_dims[d] {
                    break;
                }
                index[d] = 0;
            }
        }
        assert_eq!(got, want);
        // A head split with a size-1 axis and a slice: the same arithmetic through burn's ops.
        let y = x
            .reshape([2, 3, 20, 6])
            .slice([0..2, 1..3, 0..20, 0..6])
            .swap_dims(1, 2);
        let got: Vec<f32> = y.into_data().to_vec().unwrap();
        let mut want = Vec::new();
        for a in 0..2 {
            for c in 0..20 {
                for b in 1..3 {
                    for d in 0..6 {
                        want.push((((a * 3 + b) * 20 + c) * 6 + d) as f32);
                    }
                }
            }
        }
        assert_eq!(got, want);
    }
}
