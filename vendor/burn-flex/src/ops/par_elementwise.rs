//! Elementwise loops split over rayon's pool once a tensor is large enough for the split to
//! pay for itself. burn-flex ran its unary, binary and scalar ops on the calling thread only,
//! leaving the other cores idle through every ReLU, dropout product and gradient sum of a
//! training step. kiln's addition.

use alloc::vec::Vec;

/// Elements per parallel task, at least: smaller tensors stay on the calling thread.
pub(crate) const MIN_CHUNK: usize = 1 << 15;

/// Chunk length for `n` elements: about four tasks per thread, never under [`MIN_CHUNK`].
#[cfg(feature = "rayon")]
fn chunk_len(n: usize) -> Option<usize> {
    let threads = rayon::current_num_threads();
    (threads > 1 && n >= 2 * MIN_CHUNK).then(|| n.div_ceil(4 * threads).max(MIN_CHUNK))
}

/// Runs `f` over `dst` in chunks, in parallel when `dst` is large.
pub(crate) fn for_each_mut<T: Send>(dst: &mut [T], f: impl Fn(&mut [T]) + Sync) {
    #[cfg(feature = "rayon")]
    if let Some(chunk) = chunk_len(dst.len()) {
        use rayon::prelude::*;
        dst.par_chunks_mut(chunk).for_each(&f);
        return;
    }
    f(dst)
}

/// Runs `f` over matching chunks of `dst` and `src` (of equal length), in parallel when large.
pub(crate) fn for_each_pair_mut<T: Send, U: Sync>(
    dst: &mut [T],
    src: &[U],
    f: impl Fn(&mut [T], &[U]) + Sync,
) {
    assert_eq!(dst.len(), src.len(), "elementwise: operand lengths differ");
    #[cfg(feature = "rayon")]
    if let Some(chunk) = chunk_len(dst.len()) {
        use rayon::prelude::*;
        dst.par_chunks_mut(chunk)
            .zip(src.par_chunks(chunk))
            .for_each(|(d, s)| f(d, s));
        return;
    }
    f(dst, src)
}

/// Runs `f(i, block)` over the `block`-element blocks of `dst` (the last may be shorter),
/// in parallel; unlike [`for_each_mut`], the split does not depend on the thread count.
pub(crate) fn for_each_block_mut<T: Send>(
    dst: &mut [T],
    block: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        dst.par_chunks_mut(block)
            .enumerate()
            .for_each(|(i, b)| f(i, b));
    }
    #[cfg(not(feature = "rayon"))]
    dst.chunks_mut(block).enumerate().for_each(|(i, b)| f(i, b));
}

/// `n` copies of `value`, written in parallel when `n` is large: a large zeroed buffer is a
/// memset that would otherwise run on the calling thread alone.
pub(crate) fn filled<T: Copy + Send + Sync>(n: usize, value: T) -> Vec<T> {
    let mut values = Vec::with_capacity(n);
    for_each_mut(&mut values.spare_capacity_mut()[..n], |chunk| {
        chunk.iter_mut().for_each(|v| {
            v.write(value);
        })
    });
    // SAFETY: the loop above wrote all `n` elements.
    unsafe { values.set_len(n) };
    values
}

/// `f` of each element of `src`, collected in order, in parallel when `src` is large.
pub(crate) fn map<T: Copy + Sync, U: Send>(src: &[T], f: impl Fn(T) -> U + Sync) -> Vec<U> {
    #[cfg(feature = "rayon")]
    if let Some(chunk) = chunk_len(src.len()) {
        use rayon::prelude::*;
        return src.par_iter().with_min_len(chunk).map(|&x| f(x)).collect();
    }
    src.iter().map(|&x| f(x)).collect()
}

/// `f` of each pair of elements of `a` and `b` (of equal length), collected in order, in
/// parallel when large.
pub(crate) fn map_pairs<T: Copy + Sync, U: Send>(
    a: &[T],
    b: &[T],
    f: impl Fn(T, T) -> U + Sync,
) -> Vec<U> {
    assert_eq!(a.len(), b.len(), "elementwise: operand lengths differ");
    #[cfg(feature = "rayon")]
    if let Some(chunk) = chunk_len(a.len()) {
        use rayon::prelude::*;
        return a
            .par_iter()
            .zip(b.par_iter())
            .with_min_len(chunk)
            .map(|(&x, &y)| f(x, y))
            .collect();
    }
    a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect()
}
