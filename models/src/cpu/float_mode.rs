//! The training process's floating-point mode on x86-64 CPUs: denormals flushed to zero.
//!
//! As MNIST training converges, values far below f32's normal range (about 1e-38: the
//! gradients of very confident log-softmax outputs, and what they touch downstream) appear in
//! the backward pass, and x86 cores take a slow microcode path for every arithmetic operation
//! on such a denormal: the second epoch ran up to a quarter slower than the first. Flushing
//! them changes no test accuracy digit; GPUs' deep-learning kernels flush denormals the same
//! way.

/// MXCSR's flush-to-zero (results) and denormals-are-zero (inputs) bits.
#[cfg(target_arch = "x86_64")]
const FTZ_DAZ: u32 = 0x8040;

/// Sets flush-to-zero and denormals-are-zero on this thread.
#[allow(deprecated)] // `_mm_getcsr`/`_mm_setcsr`: the only stable way to set MXCSR.
fn set_on_this_thread() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE is part of x86-64; only the two denormal bits of MXCSR change.
    unsafe {
        use std::arch::x86_64::{_mm_getcsr, _mm_setcsr};
        _mm_setcsr(_mm_getcsr() | FTZ_DAZ);
    }
}

/// Flushes denormals to zero on the calling thread and on every thread of rayon's global pool,
/// where burn-flex runs its kernels; call it first thing in `main`, before any tensor work
/// (the pool is built here). A no-op on other architectures.
pub fn flush_denormals() {
    set_on_this_thread();
    if let Err(e) = rayon::ThreadPoolBuilder::new()
        .start_handler(|_| set_on_this_thread())
        .build_global()
    {
        tracing::warn!("rayon's pool was already built, its threads keep denormals: {e}");
    }
}
