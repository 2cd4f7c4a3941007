//! The training process's heap policy.
//!
//! Every burn-flex op allocates its output, so one CPU training step allocates and frees
//! hundreds of buffers of 0.1–30 MB. With glibc's defaults most of these are `mmap`ed and
//! `munmap`ed each time, or the heap top is trimmed and regrown, and every new page is
//! zero-filled by the kernel on first touch: page faults, and TLB shootdowns across the
//! pool's threads. [`keep_freed_memory`] makes glibc serve them from its heap and keep freed
//! memory for reuse. `kiln-bench ops` (MNIST `Net` b64 forward + backward) measured 106–108 ms
//! with the defaults against 70–83 ms with this policy, and the Adadelta step 11–15 against
//! 7.7–9.2 ms. The cost is a resident size that stays at the step's peak.

/// Allocations below this size come from the heap, not from their own `mmap` (glibc's
/// largest allowed threshold on 64-bit targets).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 32 << 20;

/// Free memory at the top of the heap is returned to the system only beyond this size.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 256 << 20;

/// Extra memory requested each time the heap grows.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TOP_PAD: libc::c_int = 64 << 20;

/// Sets the heap policy above; call it once, first thing in `main`, before threads start.
/// A no-op where the C library is not glibc (the policy is glibc's `mallopt`).
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only changes allocator parameters; it is called before any other
    // thread exists, with parameters and values glibc documents for it.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        libc::mallopt(libc::M_TOP_PAD, TOP_PAD);
    }
}
