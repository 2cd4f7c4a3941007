//! 2D max pooling with indices, one `(batch, channel)` plane per rayon task,
//! with the window's interior split from its border.
//!
//! burn-flex 0.21.0 runs 2D pooling through its 3D kernel, which checks every
//! tap of every window against the input's bounds with the kernel size known
//! only at run time. Here each output row is split into the windows that lie
//! wholly inside the input (no checks, taps unrolled: the 2×2 and 3×3 kernels
//! of the MNIST `Net` and ResNet are compiled with their sizes as constants)
//! and the few at the padded border, which keep the checks.
//!
//! The result is the 3D kernel's, element for element: the first valid tap
//! starts the running maximum, a later tap replaces it only when strictly
//! greater (so ties keep the first tap, in row-major window order, and a NaN
//! first tap stays), and indices are `ih · in_w + iw` within the plane.

use alloc::vec;

use burn_backend::{DType, Element};
use burn_std::{Bytes, Shape};
use num_traits::Float;

use super::par_elementwise::filled;
use super::pool::pool_output_size;
use crate::{FlexTensor, Layout};

/// `max_pool2d_with_indices` for f32 and f64 tensors, or `Err` with the input
/// handed back for other dtypes.
pub fn max_pool2d_with_indices(
    x: FlexTensor,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
    ceil_mode: bool,
) -> Result<(FlexTensor, FlexTensor), FlexTensor> {
    let window = Window::new(
        x.layout().shape(),
        kernel,
        stride,
        padding,
        dilation,
        ceil_mode,
    );
    match x.dtype() {
        DType::F32 => Ok(pool::<f32>(&x, &window)),
        DType::F64 => Ok(pool::<f64>(&x, &window)),
        _ => Err(x),
    }
}

/// Shapes and options of one 2D max pooling.
#[derive(Debug, Clone, Copy)]
struct Window {
    /// `batch · channels`.
    planes: usize,
    channels: usize,
    batch: usize,
    in_h: usize,
    in_w: usize,
    out_h: usize,
    out_w: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
}

impl Window {
    fn new(
        x_shape: &[usize],
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        dilation: [usize; 2],
        ceil_mode: bool,
    ) -> Self {
        assert_eq!(
            x_shape.len(),
            4,
            "max_pool2d: expected a 4D input, got {x_shape:?}"
        );
        let [out_h, out_w] = [0, 1].map(|axis| {
            pool_output_size(
                x_shape[2 + axis],
                kernel[axis],
                padding[axis],
                stride[axis],
                dilation[axis],
                ceil_mode,
            )
        });
        Self {
            planes: x_shape[0] * x_shape[1],
            batch: x_shape[0],
            channels: x_shape[1],
            in_h: x_shape[2],
            in_w: x_shape[3],
            out_h,
            out_w,
            kernel,
            stride,
            padding,
            dilation,
        }
    }

    /// Outputs along `axis` whose whole window lies inside the input.
    fn interior(&self, axis: usize) -> core::ops::Range<usize> {
        let (in_size, out_size) = if axis == 0 {
            (self.in_h, self.out_h)
        } else {
            (self.in_w, self.out_w)
        };
        let span = self.dilation[axis] * (self.kernel[axis] - 1) + 1;
        // First o with o·stride ≥ pad; last o with o·stride − pad + span ≤ in_size.
        let start = self.padding[axis].div_ceil(self.stride[axis]);
        let end = if in_size + self.padding[axis] >= span {
            (in_size + self.padding[axis] - span) / self.stride[axis] + 1
        } else {
            0
        };
        start.min(out_size)..end.clamp(start.min(out_size), out_size)
    }
}

/// The pooled output and its indices, `[batch, channels, out_h, out_w]`.
fn pool<T: Element + Float + bytemuck::Pod + Send + Sync>(
    x: &FlexTensor,
    w: &Window,
) -> (FlexTensor, FlexTensor) {
    let x = x.to_contiguous();
    let x: &[T] = x.storage();
    let (in_plane, out_plane) = (w.in_h * w.in_w, w.out_h * w.out_w);
    let mut output = filled(w.planes * out_plane, T::zero());
    let mut indices = filled(w.planes * out_plane, 0i64);
    let run = |(plane, (out, idx)): (usize, (&mut [T], &mut [i64]))| {
        let x_plane = &x[plane * in_plane..][..in_plane];
        match w.kernel {
            [2, 2] => pool_plane::<T, 2, 2>(w, x_plane, out, idx),
            [3, 3] => pool_plane::<T, 3, 3>(w, x_plane, out, idx),
            _ => pool_plane::<T, 0, 0>(w, x_plane, out, idx),
        }
    };
    if out_plane > 0 {
        #[cfg(feature = "rayon")]
        {
            use rayon::prelude::*;
            output
                .par_chunks_mut(out_plane)
                .zip(indices.par_chunks_mut(out_plane))
                .enumerate()
                .for_each(run);
        }
        #[cfg(not(feature = "rayon"))]
        output
            .chunks_mut(out_plane)
            .zip(indices.chunks_mut(out_plane))
            .enumerate()
            .for_each(run);
    }
    let shape = Shape::from(vec![w.batch, w.channels, w.out_h, w.out_w]);
    (
        FlexTensor::new(
            Bytes::from_elems(output),
            Layout::contiguous(shape.clone()),
            T::dtype(),
        ),
        FlexTensor::new(
            Bytes::from_elems(indices),
            Layout::contiguous(shape),
            DType::I64,
        ),
    )
}

/// Pools one plane. `KH`/`KW` are the kernel's size when known at compile
/// time, 0 when it is read from `w`.
fn pool_plane<T: Float, const KH: usize, const KW: usize>(
    w: &Window,
    x: &[T],
    out: &mut [T],
    idx: &mut [i64],
) {
    let kh = if KH == 0 { w.kernel[0] } else { KH };
    let kw = if KW == 0 { w.kernel[1] } else { KW };
    let [sh, sw] = w.stride;
    let [dh, dw] = w.dilation;
    let rows = w.interior(0);
    let cols = w.interior(1);
    for oh in 0..w.out_h {
        let out_row = &mut out[oh * w.out_w..][..w.out_w];
        let idx_row = &mut idx[oh * w.out_w..][..w.out_w];
        let ih0 = (oh * sh) as isize - w.padding[0] as isize;
        let border = |ow: usize| border_max(w, x, ih0, (ow * sw) as isize - w.padding[1] as isize);
        if !rows.contains(&oh) {
            for ow in 0..w.out_w {
                (out_row[ow], idx_row[ow]) = border(ow);
            }
            continue;
        }
        let ih0 = ih0 as usize;
        for ow in (0..cols.start).chain(cols.end..w.out_w) {
            (out_row[ow], idx_row[ow]) = border(ow);
        }
        for ow in cols.clone() {
            let iw0 = ow * sw - w.padding[1];
            let mut best = x[ih0 * w.in_w + iw0];
            let mut best_at = ih0 * w.in_w + iw0;
            for i in 0..kh {
                let row = (ih0 + i * dh) * w.in_w;
                for j in 0..kw {
                    let at = row + iw0 + j * dw;
                    let value = x[at];
                    if value > best {
                        best = value;
                        best_at = at;
                    }
                }
            }
            out_row[ow] = best;
            idx_row[ow] = best_at as i64;
        }
    }
}

/// The maximum and its index over the window whose top-left tap is at
/// `(ih0, iw0)` (possibly in the padding), checking every tap's bounds. A
/// window wholly in the padding (possible with `ceil_mode`) gives −∞ and
/// index −1, as the 3D kernel does.
fn border_max<T: Float>(w: &Window, x: &[T], ih0: isize, iw0: isize) -> (T, i64) {
    let mut best: Option<(T, usize)> = None;
    for i in 0..w.kernel[0] {
        let ih = ih0 + (i * w.dilation[0]) as isize;
        if ih < 0 || ih >= w.in_h as isize {
            continue;
        }
        for j in 0..w.kernel[1] {
            let iw = iw0 + (j * w.dilation[1]) as isize;
            if iw < 0 || iw >= w.in_w as isize {
                continue;
            }
            let at = ih as usize * w.in_w + iw as usize;
            if best.is_none_or(|(value, _)| x[at] > value) {
                best = Some((x[at], at));
            }
        }
    }
    best.map_or((T::neg_infinity(), -1), |(value, at)| (value, at as i64))
}
