//! The CPU matrix-multiply's packing policy, for every process that runs kiln's models on the
//! CPU backend.
//!
//! burn-flex's convolutions are gemm calls on im2col tiles of at most 1 MiB, sized to stay in
//! L2. The `gemm` crate copies a column-major left operand into packed panels whenever a block
//! of the product is wider than `threshold · 6` columns (default 8). For the convolution
//! forward and input gradient that operand is the im2col tile itself, already in cache, so
//! packing only makes a second copy; at the maximum threshold, 256, gemm reads it in place.
//! Results do not change (packing only moves the operand); the training step and the served
//! forward take a few percent less CPU (`git log` of this file has the measurements).

/// The most `gemm` accepts; a column-major left operand is then packed only for products
/// wider than 1,536 columns.
pub const LHS_PACKING_THRESHOLD: usize = 256;

/// Sets gemm's left-operand packing threshold to [`LHS_PACKING_THRESHOLD`], process-wide.
/// Call it once before tensor work.
pub fn read_lhs_in_place() {
    set_lhs_packing_threshold(LHS_PACKING_THRESHOLD);
}

/// Sets gemm's left-operand packing threshold (gemm caps it at 256), process-wide, for
/// single- and multi-threaded products.
pub fn set_lhs_packing_threshold(threshold: usize) {
    gemm::set_lhs_packing_threshold_single_thread(threshold);
    gemm::set_lhs_packing_threshold_multi_thread(threshold);
}

/// gemm's left-operand packing threshold for single-threaded products now (gemm's default
/// until something sets it).
pub fn lhs_packing_threshold() -> usize {
    gemm::get_lhs_packing_threshold_single_thread()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threshold_reaches_gemm() {
        set_lhs_packing_threshold(8);
        assert_eq!(lhs_packing_threshold(), 8);
        assert_eq!(gemm::get_lhs_packing_threshold_multi_thread(), 8);
        read_lhs_in_place();
        assert_eq!(lhs_packing_threshold(), LHS_PACKING_THRESHOLD);
        assert_eq!(gemm::get_lhs_packing_threshold_multi_thread(), LHS_PACKING_THRESHOLD);
    }
}
