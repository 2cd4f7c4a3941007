//! The shared kit of burn-flex's gemm convolutions (`conv_forward`,
//! `conv_backward`): the geometry of one 2D convolution, the im2col matrix of
//! one group of one image for a tile of output rows,
//! `col[(ci, kh, kw), (oh, ow)] = x[ci, oh·sh + kh·dh − ph, ow·sw + kw·dw − pw]`,
//! a bounds-checked strided gemm, and the rayon helpers.
//!
//! The weight layout `[c_out, c_in/g, KH, KW]` is already the row-major
//! `[c_out, c_in/g·KH·KW]` matrix that multiplies these columns, so no weight
//! reordering is ever done. Columns are built for a tile of whole output rows
//! at a time (at most [`COL_TILE_ELEMS`] elements) so the buffer stays in L2.

use core::ops::Range;

use burn_backend::Element;
use burn_backend::ops::ConvOptions;
use burn_backend::ops::conv::calculate_conv_output_size;
use num_traits::Float;

use super::conv::valid_out_range;
use crate::FlexTensor;

/// Largest im2col tile, in elements (1 MiB of f32), so that the tile and the
/// gemm packing buffers fit in L2. A tile always holds at least one output row.
pub(super) const COL_TILE_ELEMS: usize = 256 * 1024;

/// Output columns one gemm call should cover at least: convolutions whose
/// output plane is smaller (ResNet's 14×14 and 7×7 stages) put the planes of
/// several images side by side in one call ([`Geometry::images_per_gemm`]).
/// One image per call would make a thin gemm (49 columns for 7×7) that
/// streams the whole weight matrix (9 MiB for a 512-channel 3×3) from memory
/// once per image.
pub(super) const GEMM_MIN_COLUMNS: usize = 384;

/// Pointwise convolutions put images side by side only below this plane size:
/// above it one image per gemm measured as fast (gemm reads the input plane in
/// place), below it a 1×1 or 2×2 plane alone fills a sixteenth or a quarter of
/// gemm's 16-lane registers (ResNet-50's late 1×1 layers at 32–64 px).
pub(super) const POINTWISE_GROUPED_PLANE: usize = 64;

/// gemm problems at least this large (m·n·k) use gemm's own rayon parallelism
/// when the batch alone cannot keep the thread pool busy (same threshold as
/// burn-flex's forward convolution).
#[cfg(feature = "rayon")]
pub(super) const GEMM_PARALLEL_THRESHOLD: usize = 192 * 192 * 192;

/// Element types the kernels run on natively.
pub(super) trait GemmElement:
    Float + bytemuck::Pod + Element + Send + Sync + 'static
{
}
impl GemmElement for f32 {}
impl GemmElement for f64 {}

/// Shapes and options of one 2D convolution, read from the input, weight and
/// output-gradient shapes.
#[derive(Debug, Clone, Copy)]
pub(super) struct Geometry {
    pub(super) batch: usize,
    pub(super) channels_in: usize,
    pub(super) in_h: usize,
    pub(super) in_w: usize,
    pub(super) channels_out: usize,
    pub(super) groups: usize,
    /// Input channels per group (the weight's second dimension).
    pub(super) in_per_group: usize,
    pub(super) out_per_group: usize,
    pub(super) kernel_h: usize,
    pub(super) kernel_w: usize,
    pub(super) out_h: usize,
    pub(super) out_w: usize,
    pub(super) stride: [usize; 2],
    pub(super) padding: [usize; 2],
    pub(super) dilation: [usize; 2],
}

impl Geometry {
    /// The geometry of `conv2d(x, weight)` for an input of shape `x_shape`,
    /// with the output size computed from the options.
    pub(super) fn new(x_shape: &[usize], w_shape: &[usize], options: &ConvOptions<2>) -> Self {
        assert!(
            x_shape.len() == 4 && w_shape.len() == 4,
            "conv2d: expected a 4D input and weight, got {x_shape:?} and {w_shape:?}"
        );
        let groups = options.groups;
        assert!(groups > 0, "conv2d: groups must be positive");
        let [out_h, out_w] = [0, 1].map(|axis| {
            calculate_conv_output_size(
                w_shape[2 + axis],
                options.stride[axis],
                options.padding[axis],
                options.dilation[axis],
                x_shape[2 + axis],
            )
        });
        let geometry = Self {
            batch: x_shape[0],
            channels_in: x_shape[1],
            in_h: x_shape[2],
            in_w: x_shape[3],
            channels_out: w_shape[0],
            groups,
            in_per_group: w_shape[1],
            out_per_group: w_shape[0] / groups,
            kernel_h: w_shape[2],
            kernel_w: w_shape[3],
            out_h,
            out_w,
            stride: options.stride,
            padding: options.padding,
            dilation: options.dilation,
        };
        assert!(
            geometry.channels_in == groups * geometry.in_per_group
                && geometry.channels_out == groups * geometry.out_per_group,
            "conv2d: {groups} groups do not fit input {x_shape:?} and weight {w_shape:?}"
        );
        geometry
    }

    /// The geometry of the convolution whose output gradient is `output_grad`;
    /// panics unless its shape is the output's.
    pub(super) fn for_backward(
        x_shape: &[usize],
        weight: &FlexTensor,
        output_grad: &FlexTensor,
        options: &ConvOptions<2>,
    ) -> Self {
        let geometry = Self::new(x_shape, weight.layout().shape(), options);
        let dy_shape = output_grad.layout().shape();
        assert!(
            dy_shape[..]
                == [
                    geometry.batch,
                    geometry.channels_out,
                    geometry.out_h,
                    geometry.out_w
                ],
            "conv2d backward: output gradient {dy_shape:?} does not match input {x_shape:?} and weight {:?}",
            weight.layout().shape()
        );
        geometry
    }

    pub(super) fn in_plane(&self) -> usize {
        self.in_h * self.in_w
    }

    pub(super) fn out_plane(&self) -> usize {
        self.out_h * self.out_w
    }

    pub(super) fn kernel_plane(&self) -> usize {
        self.kernel_h * self.kernel_w
    }

    /// Rows of the im2col matrix of one group: `in_per_group · KH · KW`.
    pub(super) fn col_rows(&self) -> usize {
        self.in_per_group * self.kernel_plane()
    }

    /// The kernel tap (`i · KW + j`) through which a convolution of a 1×1 input
    /// into a 1×1 output (one group) reads that input; every other tap reads
    /// padding. The gradients of such a convolution (ResNet's late 3×3 layers at
    /// 32 px) are matrix products with that tap's weights, a ninth of their
    /// im2col gemms. (The forward keeps im2col: packing the tap's weights for
    /// one product measured slower than the full product there.)
    /// (1×1 kernels keep their own paths: for them this is no saving.)
    pub(super) fn single_tap(&self) -> Option<usize> {
        let one_by_one = [self.in_h, self.in_w, self.out_h, self.out_w] == [1, 1, 1, 1];
        if self.groups != 1 || !one_by_one || self.kernel_plane() == 1 {
            return None;
        }
        // Output 0 reads input `i · dilation − padding`, which must be 0.
        let tap = |axis: usize, kernel: usize| {
            let (pad, dilation) = (self.padding[axis], self.dilation[axis]);
            (pad % dilation == 0 && pad / dilation < kernel).then_some(pad / dilation)
        };
        Some(tap(0, self.kernel_h)? * self.kernel_w + tap(1, self.kernel_w)?)
    }

    /// Tap `tap`'s weights as a packed row-major `[c_out, c_in]` matrix (gemm reads
    /// a weight strided by the kernel plane in both directions far slower).
    pub(super) fn tap_weights<T: Copy>(&self, w: &[T], tap: usize) -> Vec<T> {
        w.iter().skip(tap).step_by(self.kernel_plane()).copied().collect()
    }

    /// 1×1 kernel, stride 1, no padding: im2col is the identity.
    pub(super) fn is_pointwise(&self) -> bool {
        self.kernel_h == 1 && self.kernel_w == 1 && self.stride == [1, 1] && self.padding == [0, 0]
    }

    /// One input and one output channel per group.
    pub(super) fn is_depthwise(&self) -> bool {
        self.in_per_group == 1 && self.out_per_group == 1
    }

    /// Output rows per im2col tile: as many as fit in [`COL_TILE_ELEMS`], at least one.
    pub(super) fn tile_rows(&self) -> usize {
        (COL_TILE_ELEMS / (self.col_rows() * self.out_w).max(1)).clamp(1, self.out_h.max(1))
    }

    /// Elements of the im2col scratch buffer (none for pointwise convolutions).
    pub(super) fn col_tile_len(&self) -> usize {
        if self.is_pointwise() {
            0
        } else {
            self.col_rows() * self.tile_rows() * self.out_w
        }
    }

    /// Images whose output planes one gemm call covers side by side: 1 for
    /// planes of [`GEMM_MIN_COLUMNS`] or more, for grouped convolutions, for
    /// pointwise ones on planes of [`POINTWISE_GROUPED_PLANE`] or more, and
    /// when no larger group divides the batch evenly among the pool's threads;
    /// otherwise the largest group of at most `2 · GEMM_MIN_COLUMNS / plane`
    /// images that does. (The forward groups planes under 64 positions only:
    /// above that grouping measured no faster there.)
    pub(super) fn images_per_gemm(&self) -> usize {
        let plane = self.out_plane();
        let pointwise_alone = self.is_pointwise() && plane >= POINTWISE_GROUPED_PLANE;
        if self.groups != 1 || pointwise_alone || plane == 0 || plane >= GEMM_MIN_COLUMNS {
            return 1;
        }
        let threads = num_threads();
        let largest = (2 * GEMM_MIN_COLUMNS / plane).max(1);
        (2..=largest)
            .rev()
            .find(|&size| self.batch % (size * threads) == 0)
            .unwrap_or(1)
    }

    /// Output-row tiles covering `0..out_h`.
    pub(super) fn row_tiles(&self) -> impl Iterator<Item = Range<usize>> + '_ {
        let step = self.tile_rows();
        (0..self.out_h)
            .step_by(step)
            .map(move |start| start..(start + step).min(self.out_h))
    }

    /// Output positions along `axis` (0: height, 1: width) whose input index
    /// for kernel offset `k` lies inside the input, and the input index of the first.
    pub(super) fn valid(&self, axis: usize, k: usize) -> (Range<usize>, usize) {
        let (in_size, out_size) = if axis == 0 {
            (self.in_h, self.out_h)
        } else {
            (self.in_w, self.out_w)
        };
        let (start, end) = valid_out_range(
            k,
            self.dilation[axis],
            self.padding[axis],
            self.stride[axis],
            in_size,
            out_size,
        );
        let first_in = (start * self.stride[axis] + k * self.dilation[axis])
            .saturating_sub(self.padding[axis]);
        (start..end, first_in)
    }
}
/// Fills `col` (`[col_rows, rows.len() · out_w]`, row-major) with the im2col
/// matrix of one group of one image (`x_group`: `[in_per_group, in_h, in_w]`)
/// for output rows `rows`; taps that fall in the padding are zero.
pub(super) fn im2col<T: GemmElement>(
    g: &Geometry,
    x_group: &[T],
    rows: Range<usize>,
    col: &mut [T],
) {
    let n = rows.len() * g.out_w;
    im2col_strided(g, x_group, rows, col, n);
}

/// [`im2col`] into a matrix whose rows are `row_stride` elements apart (the
/// columns of one image inside a [`Geometry::images_per_gemm`] group).
pub(super) fn im2col_strided<T: GemmElement>(
    g: &Geometry,
    x_group: &[T],
    rows: Range<usize>,
    col: &mut [T],
    row_stride: usize,
) {
    let n = rows.len() * g.out_w;
    let [stride_h, stride_w] = g.stride;
    assert!(
        n <= row_stride && col.len() >= g.col_rows().saturating_sub(1) * row_stride + n,
        "im2col: {} rows of {n} columns at stride {row_stride} overrun {} elements",
        g.col_rows(),
        col.len()
    );
    // The valid output ranges of each kernel tap, the same for every channel: computed
    // once, not once per row (at 1×1 or 2×2 outputs a row holds one to four elements).
    let taps: Vec<[(Range<usize>, usize); 2]> = (0..g.kernel_plane())
        .map(|tap| [g.valid(0, tap / g.kernel_w), g.valid(1, tap % g.kernel_w)])
        .collect();
    let col_rows = col.chunks_mut(row_stride).take(g.col_rows());
    for (r, col_row) in col_rows.map(|row| &mut row[..n]).enumerate() {
        let (channel, tap) = (r / g.kernel_plane(), r % g.kernel_plane());
        let x_plane = &x_group[channel * g.in_plane()..][..g.in_plane()];
        let [(oh_range, ih_first), (ow_range, iw_first)] = &taps[tap];
        let (ih_first, iw_first) = (*ih_first, *iw_first);
        for (oh, dst) in rows.clone().zip(col_row.chunks_exact_mut(g.out_w)) {
            if !oh_range.contains(&oh) || ow_range.is_empty() {
                dst.fill(T::zero());
                continue;
            }
            let ih = ih_first + (oh - oh_range.start) * stride_h;
            let src = &x_plane[ih * g.in_w + iw_first..(ih + 1) * g.in_w];
            dst[..ow_range.start].fill(T::zero());
            dst[ow_range.end..].fill(T::zero());
            let dst = &mut dst[ow_range.clone()];
            if stride_w == 1 {
                dst.copy_from_slice(&src[..dst.len()]);
            } else if stride_w == 2 {
                // The even elements, through pairs: a loop the compiler vectorises
                // (`step_by` is not), for ResNet's stem and stride-2 convolutions.
                let paired = dst.len().min(src.len() / 2);
                for (d, pair) in dst[..paired].iter_mut().zip(src.chunks_exact(2)) {
                    *d = pair[0];
                }
                if let Some(d) = dst.get_mut(paired) {
                    *d = src[2 * paired];
                }
            } else {
                for (d, &s) in dst.iter_mut().zip(src.iter().step_by(stride_w)) {
                    *d = s;
                }
            }
        }
    }
}

/// Copies the `[channels, plane]` blocks of `images` consecutive images, from
/// image `first` of `src` (`[batch, channels, plane]`), side by side into
/// `dst` (`[channels, images · plane]`): the layout of a
/// [`Geometry::images_per_gemm`] group's gemm operand.
pub(super) fn planes_side_by_side<T: Copy>(
    src: &[T],
    first: usize,
    images: usize,
    [channels, plane]: [usize; 2],
    dst: &mut [T],
) {
    let n = images * plane;
    for (c, dst_row) in dst.chunks_exact_mut(n).take(channels).enumerate() {
        for (j, dst_plane) in dst_row.chunks_exact_mut(plane).enumerate() {
            dst_plane.copy_from_slice(&src[((first + j) * channels + c) * plane..][..plane]);
        }
    }
}

/// A read-only strided matrix over a slice: element `(i, j)` is
/// `data[i · row_stride + j · col_stride]`.
#[derive(Clone, Copy)]
pub(super) struct MatRef<'a, T> {
    data: &'a [T],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a, T> MatRef<'a, T> {
    /// Panics unless every element lies inside `data`.
    pub(super) fn new(
        data: &'a [T],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Self {
        if rows > 0 && cols > 0 {
            assert!(
                (rows - 1) * row_stride + (cols - 1) * col_stride < data.len(),
                "MatRef: {rows}×{cols} matrix with strides ({row_stride}, {col_stride}) overruns {} elements",
                data.len()
            );
        }
        Self {
            data,
            rows,
            cols,
            row_stride,
            col_stride,
        }
    }
}

/// `dst = lhs · rhs`, or `dst += lhs · rhs` when `accumulate`, with `dst` the
/// row-major `[lhs.rows, rhs.cols]` matrix at the start of the slice. `parallel`
/// lets gemm use the rayon pool for large products.
pub(super) fn gemm<T: GemmElement>(
    dst: &mut [T],
    accumulate: bool,
    lhs: MatRef<'_, T>,
    rhs: MatRef<'_, T>,
    parallel: bool,
) {
    gemm_strided(dst, rhs.cols, accumulate, lhs, rhs, parallel);
}

/// [`gemm`] into a destination whose rows are `dst_row_stride` elements apart
/// (e.g. a tile of output rows inside a whole `[channels, plane]` image).
pub(super) fn gemm_strided<T: GemmElement>(
    dst: &mut [T],
    dst_row_stride: usize,
    accumulate: bool,
    lhs: MatRef<'_, T>,
    rhs: MatRef<'_, T>,
    parallel: bool,
) {
    assert!(rhs.cols <= dst_row_stride, "gemm: destination rows overlap");
    gemm_raw(dst, [dst_row_stride, 1], accumulate, lhs, rhs, parallel);
}

/// `dst = (lhs · rhs)ᵀ`, or `dst += (lhs · rhs)ᵀ` when `accumulate`, with `dst`
/// the row-major `[rhs.cols, lhs.rows]` matrix at the start of the slice. For
/// a row-major left operand and a column-major right one (the weight
/// gradient's `dY · col(x)ᵀ`) gemm runs 8–16% faster into this column-major
/// destination than into a row-major one (measured on the MNIST and ResNet
/// 3×3 weight gradients, 2 threads).
pub(super) fn gemm_transposed<T: GemmElement>(
    dst: &mut [T],
    accumulate: bool,
    lhs: MatRef<'_, T>,
    rhs: MatRef<'_, T>,
    parallel: bool,
) {
    gemm_raw(dst, [1, lhs.rows], accumulate, lhs, rhs, parallel);
}

/// The one gemm call: `dst (+)= lhs · rhs` with the destination's element
/// `(i, j)` at `dst[i · row_stride + j · col_stride]`; panics unless every
/// such element lies inside `dst`.
fn gemm_raw<T: GemmElement>(
    dst: &mut [T],
    [dst_row_stride, dst_col_stride]: [usize; 2],
    accumulate: bool,
    lhs: MatRef<'_, T>,
    rhs: MatRef<'_, T>,
    parallel: bool,
) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    assert_eq!(k, rhs.rows, "gemm: inner dimensions differ");
    assert!(
        m == 0 || n == 0 || (m - 1) * dst_row_stride + (n - 1) * dst_col_stride < dst.len(),
        "gemm: destination too small"
    );
    #[cfg(feature = "rayon")]
    let parallelism = if parallel && m * n * k >= GEMM_PARALLEL_THRESHOLD {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    #[cfg(not(feature = "rayon"))]
    let parallelism = {
        let _ = parallel;
        gemm::Parallelism::None
    };
    // SAFETY: `MatRef::new` checked that every element of `lhs` and `rhs` lies
    // inside its slice, and the assert above that `dst` holds the m×n result
    // at the given strides; `dst` is a unique borrow, so it aliases
    // neither operand.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_col_stride as isize,
            dst_row_stride as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            T::one(),
            T::one(),
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Threads of the rayon pool (1 without rayon).
pub(super) fn num_threads() -> usize {
    #[cfg(feature = "rayon")]
    {
        rayon::current_num_threads()
    }
    #[cfg(not(feature = "rayon"))]
    {
        1
    }
}

/// Calls `f(scratch, index, chunk)` for every `chunk_len`-long chunk of `data`,
/// in parallel with rayon, with one `scratch` value per worker made by `init`.
pub(super) fn for_each_chunk<T: Send, S>(
    data: &mut [T],
    chunk_len: usize,
    init: impl Fn() -> S + Sync + Send,
    f: impl Fn(&mut S, usize, &mut [T]) + Sync + Send,
) {
    if chunk_len == 0 {
        return;
    }
    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        data.par_chunks_mut(chunk_len)
            .enumerate()
            .for_each_init(init, |scratch, (index, chunk)| f(scratch, index, chunk));
    }
    #[cfg(not(feature = "rayon"))]
    {
        let mut scratch = init();
        for (index, chunk) in data.chunks_mut(chunk_len).enumerate() {
            f(&mut scratch, index, chunk);
        }
    }
}
