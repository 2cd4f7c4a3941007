//! 3×3 stride-1 convolutions by Winograd's minimal filtering F(2×2, 3×3)
//! (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016):
//! each 2×2 block of output is `A^T [ (G g G^T) ⊙ (B^T d B) ] A` for the 4×4
//! input tile `d` under it and each 3×3 kernel `g`, summed over input channels.
//! Per output channel pair that is 16 multiplications for 4 outputs instead of
//! 36, and the sum over input channels of each of the 16 tile positions is one
//! gemm: `M_ξ[o, t] = Σ_i U_ξ[o, i] · V_ξ[i, t]` over tiles `t`. The transforms
//! use only additions (and halvings in `G`); results differ from the direct
//! sum by rounding, about 1e-6 of the output's largest magnitude in f32.
//!
//! Forward: [`forward`] for convolutions with [`applies`]. Input gradient of
//! the same convolutions: a 3×3 stride-1 convolution of the output gradient
//! with the kernels rotated by 180° and the channel axes swapped, padded by
//! `2 − padding` ([`x_backward`]).
//!
//! Work is split into tasks of whole images (several for small planes, so a
//! gemm has at least [`MIN_TILES_PER_GEMM`] columns), one rayon task each; a
//! task transforms a chunk of tile rows of its images into `V`, runs the 16
//! gemms into `M`, and writes the chunk's outputs, so `V` and `M` stay small.

use alloc::vec;
use alloc::vec::Vec;
use core::mem::MaybeUninit;
use core::ops::Range;

use super::conv_gemm::{GemmElement, Geometry, MatRef, for_each_chunk, gemm, num_threads};

/// Positions of a transformed 4×4 tile (`ξ = 4·row + column`).
const TAPS: usize = 16;

/// Tiles (gemm columns) a task puts in one gemm at least, where the batch allows.
const MIN_TILES_PER_GEMM: usize = 128;

/// Elements of a task's `V` and `M` scratch together, unless one chunk of
/// [`MIN_TILES_PER_GEMM`] tiles needs more.
const SCRATCH_ELEMS: usize = 1 << 17;

/// Fewest input and output channels worth the transforms: the gemms are
/// `[c_out, c_in] × [c_in, tiles]`. (The MNIST net's 32→64 layer measured
/// 10% slower than im2col at batch 64, and its input gradient, a 64→32
/// convolution, 1.5× slower than col2im; ResNet's 64-channel layers 1.2–1.4×
/// faster.)
const MIN_CHANNELS: usize = 64;

/// Fewest 2×2 tiles in the whole batch: below this, transforming the kernels
/// costs more than the gemms save (ResNet's 512-channel 7×7 stage at batch 1,
/// 16 tiles, measured 2.7× slower than im2col).
const MIN_TILES: usize = 256;

/// Whether [`forward`] computes this convolution: a 3×3 kernel, stride 1,
/// no dilation, one group, at least [`MIN_CHANNELS`] input and output
/// channels, and [`MIN_TILES`] tiles.
pub(super) fn applies(g: &Geometry) -> bool {
    g.kernel_h == 3
        && g.kernel_w == 3
        && g.stride == [1, 1]
        && g.dilation == [1, 1]
        && g.groups == 1
        && g.channels_in >= MIN_CHANNELS
        && g.channels_out >= MIN_CHANNELS
        && g.batch * g.out_h.div_ceil(2) * g.out_w.div_ceil(2) >= MIN_TILES
}

/// Whether [`x_backward`] computes this convolution's input gradient: the
/// padding is at most 2 (the gradient's padding is `2 − padding`) and the
/// gradient's own convolution ([`transposed`]) has [`applies`].
pub(super) fn applies_to_x_backward(g: &Geometry) -> bool {
    g.padding[0] <= 2 && g.padding[1] <= 2 && applies(&transposed(g))
}

/// The convolution that gives `g`'s input gradient from its output
/// gradient: kernels rotated by 180° with the channel axes swapped, stride 1,
/// padding `2 − padding`. Requires a 3×3 stride-1 `g` with padding ≤ 2.
fn transposed(g: &Geometry) -> Geometry {
    Geometry {
        channels_in: g.channels_out,
        in_h: g.out_h,
        in_w: g.out_w,
        channels_out: g.channels_in,
        in_per_group: g.channels_out,
        out_per_group: g.channels_in,
        out_h: g.in_h,
        out_w: g.in_w,
        padding: [2 - g.padding[0], 2 - g.padding[1]],
        ..*g
    }
}

/// `y = conv2d(x, w) + bias` (`x`: `[batch, c_in, in_h, in_w]`, `w`:
/// `[c_out, c_in, 3, 3]`), writing every element of `y`
/// (`[batch, c_out, out_h, out_w]`). Requires [`applies`].
pub(super) fn forward<T: GemmElement>(
    g: &Geometry,
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    y: &mut [MaybeUninit<T>],
) {
    debug_assert!(applies(g));
    let u = transform_weight(w, g.channels_out, g.channels_in, false);
    run(g, x, &u, bias, y);
}

/// The input gradient `dx` (`[batch, c_in, in_h, in_w]`, every element
/// written) of `y = conv2d(x, w)` for the output gradient `dy`. Requires
/// [`applies_to_x_backward`].
pub(super) fn x_backward<T: GemmElement>(
    g: &Geometry,
    dy: &[T],
    w: &[T],
    dx: &mut [MaybeUninit<T>],
) {
    debug_assert!(applies_to_x_backward(g));
    let u = transform_weight(w, g.channels_out, g.channels_in, true);
    run(&transposed(g), dy, &u, None, dx);
}

/// The transformed kernels, `[rows, TAPS, cols]`: `U_ξ[o, i] = (G w[o, i] Gᵀ)_ξ`
/// with `rows = c_out`, `cols = c_in`; or, when `rotated`, the kernels of the
/// input-gradient convolution, `U_ξ[i, o] = (G rot180(w[o, i]) Gᵀ)_ξ`, with
/// `rows = c_in`, `cols = c_out`. `G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1]`.
fn transform_weight<T: GemmElement>(w: &[T], c_out: usize, c_in: usize, rotated: bool) -> Vec<T> {
    let (rows, cols) = if rotated {
        (c_in, c_out)
    } else {
        (c_out, c_in)
    };
    let mut u = vec![T::zero(); rows * TAPS * cols];
    for_each_chunk(
        &mut u,
        TAPS * cols,
        || vec![T::zero(); (9 + 12) * cols],
        |scratch, row, u_row| transform_weight_row_simd(w, c_in, rotated, row, scratch, u_row),
    );
    u
}

/// Row `row` of [`transform_weight`]'s result (`u_row`: `[TAPS, cols]`), with
/// `scratch` holding `21·cols` elements.
#[inline(always)]
fn transform_weight_row<T: GemmElement>(
    w: &[T],
    c_in: usize,
    rotated: bool,
    row: usize,
    scratch: &mut [T],
    u_row: &mut [T],
) {
    let cols = u_row.len() / TAPS;
    // One row's kernels tap-major (`k[t][col]`), then `G k` (`gk[3·r + j][col]`,
    // 4×3 per kernel), then `(G k) Gᵀ`, each step a pass over all columns.
    let (k, gk) = scratch.split_at_mut(9 * cols);
    for col in 0..cols {
        let (o, i) = if rotated { (col, row) } else { (row, col) };
        let kernel = &w[(o * c_in + i) * 9..][..9];
        for (t, &value) in kernel.iter().enumerate() {
            let t = if rotated { 8 - t } else { t };
            k[t * cols + col] = value;
        }
    }
    let k = |t: usize| &k[t * cols..][..cols];
    for j in 0..3 {
        through_g(
            k(j),
            k(3 + j),
            k(6 + j),
            four_mut(gk, 3 * cols, j * cols, cols),
        );
    }
    let gk = |t: usize| &gk[t * cols..][..cols];
    for r in 0..4 {
        through_g(
            gk(3 * r),
            gk(3 * r + 1),
            gk(3 * r + 2),
            four_mut(u_row, cols, 4 * r * cols, cols),
        );
    }
}

/// `(a, b, c) ↦ (a, (a + b + c)/2, (a − b + c)/2, c)` element by element: one
/// 3-vector through `G`.
#[inline(always)]
fn through_g<T: GemmElement>(a: &[T], b: &[T], c: &[T], [o0, o1, o2, o3]: [&mut [T]; 4]) {
    let half = T::from(0.5).unwrap();
    let n = a.len();
    let (b, c, o0, o1, o2, o3) = (
        &b[..n],
        &c[..n],
        &mut o0[..n],
        &mut o1[..n],
        &mut o2[..n],
        &mut o3[..n],
    );
    for i in 0..n {
        let (x, y, z) = (a[i], b[i], c[i]);
        o0[i] = x;
        o1[i] = (x + y + z) * half;
        o2[i] = (x - y + z) * half;
        o3[i] = z;
    }
}

/// How a convolution's tiles are split: `tiles_h × tiles_w` tiles of 2×2
/// outputs per image, tasks of `images_per_task` images, gemm chunks of
/// `rows_per_chunk` tile rows.
struct Tiling {
    tiles_h: usize,
    tiles_w: usize,
    images_per_task: usize,
    rows_per_chunk: usize,
}

impl Tiling {
    fn new(g: &Geometry) -> Self {
        let (tiles_h, tiles_w) = (g.out_h.div_ceil(2), g.out_w.div_ceil(2));
        let per_image = tiles_h * tiles_w;
        // Several images per task for small planes, as many as reach
        // MIN_TILES_PER_GEMM, or fewer so that the tasks split evenly over the
        // threads (11 tasks on 2 threads would leave one idle for the last).
        let threads = num_threads();
        let wanted = MIN_TILES_PER_GEMM
            .div_ceil(per_image)
            .min(g.batch / threads)
            .max(1);
        let images_per_task = (1..=wanted)
            .rev()
            .find(|&size| g.batch % (size * threads) == 0)
            .unwrap_or(wanted);
        let task_rows = images_per_task * tiles_h;
        let columns =
            (SCRATCH_ELEMS / (TAPS * (g.channels_in + g.channels_out))).max(MIN_TILES_PER_GEMM);
        let most_rows = (columns / tiles_w).clamp(1, task_rows);
        // Even chunks: no thin last gemm.
        let rows_per_chunk = task_rows.div_ceil(task_rows.div_ceil(most_rows));
        Self {
            tiles_h,
            tiles_w,
            images_per_task,
            rows_per_chunk,
        }
    }

    /// Gemm columns of the largest chunk.
    fn chunk_columns(&self) -> usize {
        self.rows_per_chunk * self.tiles_w
    }
}

/// Per-task buffers: the transformed input `V` (`[TAPS, c_in, columns]`),
/// the products `M` (`[TAPS, c_out, columns]`), the input transform's rows
/// (see [`transform_input`]'s `buffer`) and the output transform's.
struct Scratch<T> {
    v: Vec<T>,
    m: Vec<T>,
    rows: Vec<T>,
    out: Vec<T>,
}

/// The convolution `g` (3×3, stride 1) of `x` with transformed kernels `u`
/// (`[c_out, TAPS, c_in]`), plus `bias`, into `y`.
fn run<T: GemmElement>(
    g: &Geometry,
    x: &[T],
    u: &[T],
    bias: Option<&[T]>,
    y: &mut [MaybeUninit<T>],
) {
    let tiling = Tiling::new(g);
    let image_len = g.channels_out * g.out_plane();
    let tasks = g.batch.div_ceil(tiling.images_per_task);
    let inner_parallel = tasks < num_threads();
    let columns = tiling.chunk_columns();
    for_each_chunk(
        y,
        tiling.images_per_task * image_len,
        || Scratch {
            v: vec![T::zero(); TAPS * g.channels_in * columns],
            m: vec![T::zero(); TAPS * g.channels_out * columns],
            rows: vec![T::zero(); input_buffer_len(&tiling)],
            out: vec![T::zero(); 6 * columns],
        },
        |scratch, task, y_task| {
            let x_task = &x[task * tiling.images_per_task * g.channels_in * g.in_plane()..];
            let task_rows = y_task.len() / image_len * tiling.tiles_h;
            for start in (0..task_rows).step_by(tiling.rows_per_chunk) {
                let rows = start..(start + tiling.rows_per_chunk).min(task_rows);
                let n = rows.len() * tiling.tiles_w;
                let v = &mut scratch.v[..TAPS * g.channels_in * n];
                let m = &mut scratch.m[..TAPS * g.channels_out * n];
                transform_input_simd(g, &tiling, x_task, rows.clone(), v, &mut scratch.rows);
                for tap in 0..TAPS {
                    let lhs = MatRef::new(
                        &u[tap * g.channels_in..],
                        g.channels_out,
                        g.channels_in,
                        TAPS * g.channels_in,
                        1,
                    );
                    let rhs = MatRef::new(
                        &v[tap * g.channels_in * n..][..g.channels_in * n],
                        g.channels_in,
                        n,
                        n,
                        1,
                    );
                    let dst = &mut m[tap * g.channels_out * n..][..g.channels_out * n];
                    gemm(dst, false, lhs, rhs, inner_parallel);
                }
                let out = &mut scratch.out[..6 * n];
                transform_output_simd(g, &tiling, m, rows, bias.unwrap_or(&[]), y_task, out);
            }
        },
    );
}

/// Declares `fn $name`, which runs `$body` (an `#[inline(always)]` fn taking
/// the same arguments) compiled for the widest SIMD instruction set the CPU
/// has (macerator's run-time dispatch, with the `simd` feature), so that the
/// plain loops of the transforms are vectorised for that set rather than for
/// the build's baseline target.
macro_rules! vectorized {
    ($name:ident => $body:ident($($arg:ident: $ty:ty),* $(,)?)) => {
        #[cfg(feature = "simd")]
        #[macerator::with_simd]
        fn $name<S: macerator::Simd, T: GemmElement>($($arg: $ty),*) {
            $body($($arg),*)
        }

        #[cfg(not(feature = "simd"))]
        fn $name<T: GemmElement>($($arg: $ty),*) {
            $body($($arg),*)
        }
    };
}

vectorized!(transform_weight_row_simd => transform_weight_row(
    w: &[T], c_in: usize, rotated: bool, row: usize, scratch: &mut [T], u_row: &mut [T],
));
vectorized!(transform_input_simd => transform_input(
    g: &Geometry, tiling: &Tiling, x_task: &[T], rows: Range<usize>, v: &mut [T], buffer: &mut [T],
));
vectorized!(transform_output_simd => transform_output(
    g: &Geometry,
    tiling: &Tiling,
    m: &[T],
    rows: Range<usize>,
    bias: &[T],
    y_task: &mut [MaybeUninit<T>],
    out: &mut [T],
));

/// Writes `B^T d B` for every tile of the task's tile rows `rows` (row `r`
/// is tile row `r % tiles_h` of image `r / tiles_h` of `x_task`, `[images,
/// c_in, in_h, in_w]`) into `v` (`[TAPS, c_in, n]`, tile row `q` of the chunk
/// at columns `q·tiles_w..`), with `B^T = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1]`.
/// Taps in the padding are zero. `buffer` holds [`input_buffer_len`] elements.
///
/// Each input row goes through `B` once ([`row_through_b`]: four values per
/// tile, kept for even and odd rows apart), then each tile row's four rows
/// through `B^T`: with even rows `E` and odd rows `O`, tile row `q` combines
/// `E[q], O[q], E[q + 1], O[q + 1]`, so that for a run of tile rows of one
/// image every `B^T` output is one elementwise pass over contiguous slices
/// (`tiles_w ·` rows long), which vectorises even for 7×7 and 14×14 planes,
/// whose 4- and 7-tile rows do not.
#[inline(always)]
fn transform_input<T: GemmElement>(
    g: &Geometry,
    tiling: &Tiling,
    x_task: &[T],
    rows: Range<usize>,
    v: &mut [T],
    buffer: &mut [T],
) {
    let tw = tiling.tiles_w;
    let n = rows.len() * tw;
    let pad_h = g.padding[0];
    let plane_stride = g.channels_in * n;
    // Eight arrays of (tile rows + 1) · tw: B-transformed even rows (k = 0..4), then odd rows.
    let capacity = (tiling.rows_per_chunk + 1) * tw;
    let (transformed_rows, row_scratch) = buffer.split_at_mut(8 * capacity);
    row_scratch.fill(T::zero());
    let mut row = rows.start;
    while row < rows.end {
        // A run of tile rows `first..first + count` of one image, at chunk row `row - rows.start`.
        let (image, first) = (row / tiling.tiles_h, row % tiling.tiles_h);
        let count = (tiling.tiles_h - first).min(rows.end - row);
        let (run_len, column) = (count * tw, (row - rows.start) * tw);
        for c in 0..g.channels_in {
            let plane = &x_task[(image * g.channels_in + c) * g.in_plane()..][..g.in_plane()];
            for pair in 0..=count {
                for parity in 0..2 {
                    let input_row = (2 * (first + pair) + parity)
                        .checked_sub(pad_h)
                        .filter(|&ih| ih < g.in_h)
                        .map(|ih| &plane[ih * g.in_w..][..g.in_w]);
                    let out = four_mut(
                        &mut transformed_rows[4 * parity * capacity..],
                        capacity,
                        pair * tw,
                        tw,
                    );
                    row_through_b(g, tw, input_row, row_scratch, out);
                }
            }
            for k in 0..4 {
                let even = &transformed_rows[k * capacity..][..capacity];
                let odd = &transformed_rows[(4 + k) * capacity..][..capacity];
                let (e0, e1) = (&even[..run_len], &even[tw..tw + run_len]);
                let (o0, o1) = (&odd[..run_len], &odd[tw..tw + run_len]);
                let [v0, v1, v2, v3] = four_mut(
                    &mut v[k * plane_stride..],
                    4 * plane_stride,
                    c * n + column,
                    run_len,
                );
                through_b(e0, o0, e1, o1, [v0, v1, v2, v3]);
            }
        }
        row += count;
    }
}

/// Elements of [`transform_input`]'s `buffer` for `tiling`.
fn input_buffer_len(tiling: &Tiling) -> usize {
    8 * (tiling.rows_per_chunk + 1) * tiling.tiles_w + 4 * (tiling.tiles_w + 1)
}

/// One input row (`None`: a row of the padding) through `B`: for each tile
/// `t`, with `d = row[2t − pad_w..2t − pad_w + 4]` (zero outside the row),
/// `out[k][t]` for `(d0 − d2, d1 + d2, d2 − d1, d1 − d3)`. `scratch` holds
/// `4·(tiles + 1)` elements, zero outside the row's columns.
#[inline(always)]
fn row_through_b<T: GemmElement>(
    g: &Geometry,
    tiles: usize,
    input_row: Option<&[T]>,
    scratch: &mut [T],
    [o0, o1, o2, o3]: [&mut [T]; 4],
) {
    let Some(input_row) = input_row else {
        for out in [o0, o1, o2, o3] {
            out.fill(T::zero());
        }
        return;
    };
    let len = 2 * tiles + 2;
    let (padded, halves) = scratch.split_at_mut(len);
    padded[g.padding[1]..][..g.in_w].copy_from_slice(input_row);
    let (even, odd) = halves.split_at_mut(tiles + 1);
    for ((e, o), pair) in even
        .iter_mut()
        .zip(odd.iter_mut())
        .zip(padded.chunks_exact(2))
    {
        *e = pair[0];
        *o = pair[1];
    }
    through_b(
        &even[..tiles],
        &odd[..tiles],
        &even[1..=tiles],
        &odd[1..=tiles],
        [o0, o1, o2, o3],
    );
}

/// `(d0, d1, d2, d3) ↦ (d0 − d2, d1 + d2, d2 − d1, d1 − d3)` element by element:
/// four values through `B` (or `Bᵀ`, the same combination), as [`through_g`]
/// is for the kernels.
#[inline(always)]
fn through_b<T: GemmElement>(
    d0: &[T],
    d1: &[T],
    d2: &[T],
    d3: &[T],
    [o0, o1, o2, o3]: [&mut [T]; 4],
) {
    let n = d0.len();
    let (d1, d2, d3, o0, o1, o2, o3) = (
        &d1[..n],
        &d2[..n],
        &d3[..n],
        &mut o0[..n],
        &mut o1[..n],
        &mut o2[..n],
        &mut o3[..n],
    );
    for i in 0..n {
        o0[i] = d0[i] - d2[i];
        o1[i] = d1[i] + d2[i];
        o2[i] = d2[i] - d1[i];
        o3[i] = d1[i] - d3[i];
    }
}

/// Four disjoint `len`-long windows of `data`, starting at `offset`,
/// `offset + stride`, `offset + 2·stride` and `offset + 3·stride`.
#[inline(always)]
fn four_mut<T>(data: &mut [T], stride: usize, offset: usize, len: usize) -> [&mut [T]; 4] {
    assert!(
        len <= stride,
        "four_mut: windows of {len} overlap at stride {stride}"
    );
    let (first, rest) = data[offset..].split_at_mut(stride);
    let (second, rest) = rest.split_at_mut(stride);
    let (third, rest) = rest.split_at_mut(stride);
    [
        &mut first[..len],
        &mut second[..len],
        &mut third[..len],
        &mut rest[..len],
    ]
}

/// Writes the outputs of the task's tile rows `rows` into `y_task`
/// (`[images, c_out, out_h, out_w]`; rows past `out_h` and columns past
/// `out_w` dropped) from `m` (`[TAPS, c_out, n]`): `A^T m A + bias` with
/// `A^T = [1 1 1 0; 0 1 −1 −1]`; `bias` has one value per output channel, or
/// none. `out` holds `6·n` elements of scratch.
#[inline(always)]
fn transform_output<T: GemmElement>(
    g: &Geometry,
    tiling: &Tiling,
    m: &[T],
    rows: Range<usize>,
    bias: &[T],
    y_task: &mut [MaybeUninit<T>],
    out: &mut [T],
) {
    let tw = tiling.tiles_w;
    let n = rows.len() * tw;
    let (s, pair) = out.split_at_mut(4 * n);
    let (left, right) = pair.split_at_mut(n);
    let right = &mut right[..n];
    for co in 0..g.channels_out {
        let b = bias.get(co).copied().unwrap_or(T::zero());
        let tap = |xi: usize| &m[(xi * g.channels_out + co) * n..][..n];
        for out_row in 0..2 {
            // Rows through `A^T` (m0 + m1 + m2 for output row 0, m1 − m2 − m3
            // for row 1), then the columns of every tile, plus the bias.
            for (j, s) in s.chunks_exact_mut(n).enumerate() {
                let (m0, m1, m2, m3) = (tap(j), tap(4 + j), tap(8 + j), tap(12 + j));
                if out_row == 0 {
                    combine(m0, m1, m2, m3, s, a_row0);
                } else {
                    combine(m0, m1, m2, m3, s, a_row1);
                }
            }
            let (s0, s123) = s.split_at(n);
            let (s1, s23) = s123.split_at(n);
            let (s2, s3) = s23.split_at(n);
            for col in 0..n {
                left[col] = a_row0(s0[col], s1[col], s2[col], s3[col]) + b;
                right[col] = a_row1(s0[col], s1[col], s2[col], s3[col]) + b;
            }
            for (q, row) in rows.clone().enumerate() {
                let (image, tile_row) = (row / tiling.tiles_h, row % tiling.tiles_h);
                let oh = 2 * tile_row + out_row;
                if oh >= g.out_h {
                    continue;
                }
                let y_row = &mut y_task[((image * g.channels_out + co) * g.out_h + oh) * g.out_w..]
                    [..g.out_w];
                let (left, right) = (&left[q * tw..][..tw], &right[q * tw..][..tw]);
                let mut pairs = y_row.chunks_exact_mut(2);
                for ((slot, &l), &r) in (&mut pairs).zip(left).zip(right) {
                    slot[0].write(l);
                    slot[1].write(r);
                }
                if let Some(slot) = pairs.into_remainder().first_mut() {
                    slot.write(left[tw - 1]);
                }
            }
        }
    }
}

/// `out[i] = f(a[i], b[i], c[i], d[i])`.
#[inline(always)]
fn combine<T: Copy>(
    a: &[T],
    b: &[T],
    c: &[T],
    d: &[T],
    out: &mut [T],
    f: impl Fn(T, T, T, T) -> T,
) {
    let n = out.len();
    let (a, b, c, d) = (&a[..n], &b[..n], &c[..n], &d[..n]);
    for i in 0..n {
        out[i] = f(a[i], b[i], c[i], d[i]);
    }
}

/// The first row of `A^T`: `m0 + m1 + m2`.
#[inline(always)]
fn a_row0<T: GemmElement>(m0: T, m1: T, m2: T, _m3: T) -> T {
    m0 + m1 + m2
}

/// The second row of `A^T`: `m1 − m2 − m3`.
#[inline(always)]
fn a_row1<T: GemmElement>(_m0: T, m1: T, m2: T, m3: T) -> T {
    m1 - m2 - m3
}
