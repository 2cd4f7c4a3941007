//! The CPU matrix-multiply's packing policy, for every process that runs kiln's models on the
//! CPU backend: `kiln-train`, `kiln-serve` and `kiln-bench` each set it first thing.
//!
//! burn-flex's convolutions are gemm calls on im2col columns that it builds in tiles of at
//! most 1 MiB, so that they stay in L2 (`vendor/README.md`). The `gemm` crate copies a
//! column-major left operand into packed panels before multiplying whenever a block of the
//! product has more than `threshold · 6` columns (default threshold 8: 48 columns). gemm
//! computes a row-major product as its transpose, so the convolution forward's left operand
//! is the im2col tile itself (`[plane, c_in·9]`, column-major, times `[c_in·9, c_out]`), and
//! the input gradient's is the output gradient's plane: packing makes a second copy of data
//! already in cache. With the threshold at its maximum, 256, gemm reads such an operand in
//! place. A scratch program timing the MNIST `Net`'s forward + backward at batch 64, the two
//! settings alternating step by step in one process (2 threads, 2026-11-30), measured medians
//! of 38.0, 35.6, 37.2 and 32.6 ms with the default against 37.0, 35.2, 36.2 and 32.1 ms with
//! 256 (1–3% faster each time); ResNet-18 and ResNet-50 steps at batch 32 were unchanged
//! within noise (2,011 against 2,035 ms and 7,184 against 7,193 ms). Left operands that are
//! not column-major are packed either way. Packing only moves the operand, so results do not
//! change: `kiln-bench mnist` printed the same test loss and accuracy (0.0454, 9841/10000)
//! after one epoch with either setting.
//!
//! Serving runs the same convolution forward at small batches, and gains more: `kiln-bench
//! serve --concurrency 16`, alternating runs of kiln-serve without and with this setting
//! (2 cores, 2026-11-30), spent 315–331 against 300–310 µs of model CPU per image and answered
//! 0.74–0.77 against 0.80–0.81 of the raw forward's images per second (which `kiln-bench`
//! measures with it).

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
