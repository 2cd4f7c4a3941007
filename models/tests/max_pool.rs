//! Max pooling of kiln's CPU backend. burn-flex is vendored with a parallel max-pool backward
//! (vendor/README.md); these tests hold the output, indices and gradient to a naive loop with
//! the same semantics (the first maximum in kernel scan order wins), at the model families'
//! pooling shapes and with padding, dilation and ceil mode.

use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::module::{max_pool2d, max_pool2d_with_indices};
use burn_flex::Flex;

/// One pooling: input `[batch, channels, h, w]`, kernel, stride, padding, dilation, ceil mode.
#[derive(Debug, Clone, Copy)]
struct Case {
    shape: [usize; 4],
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
    ceil_mode: bool,
}

const CASES: &[Case] = &[
    // MNIST Net.
    Case {
        shape: [4, 8, 24, 24],
        kernel: [2, 2],
        stride: [2, 2],
        padding: [0, 0],
        dilation: [1, 1],
        ceil_mode: false,
    },
    // ResNet stem, odd size.
    Case {
        shape: [2, 4, 21, 21],
        kernel: [3, 3],
        stride: [2, 2],
        padding: [1, 1],
        dilation: [1, 1],
        ceil_mode: false,
    },
    // Ceil mode: the last windows hang over the bottom and right edges.
    Case {
        shape: [2, 3, 11, 9],
        kernel: [3, 2],
        stride: [2, 2],
        padding: [1, 0],
        dilation: [1, 1],
        ceil_mode: true,
    },
    // Dilation and asymmetric stride.
    Case {
        shape: [1, 3, 13, 12],
        kernel: [3, 3],
        stride: [1, 2],
        padding: [2, 1],
        dilation: [2, 1],
        ceil_mode: false,
    },
];

impl Case {
    fn out_size(&self) -> [usize; 2] {
        [0, 1].map(|a| {
            let span = self.shape[2 + a] + 2 * self.padding[a] - self.dilation[a] * (self.kernel[a] - 1) - 1;
            if self.ceil_mode {
                span.div_ceil(self.stride[a]) + 1
            } else {
                span / self.stride[a] + 1
            }
        })
    }
}

/// `len` values with many ties (small integers), so the first-maximum rule matters.
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 7) as f32 - 3.0
        })
        .collect()
}

/// Output, plane-relative indices and input gradient for output gradient `dy`, by definition.
fn naive(case: &Case, x: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<i64>, Vec<f32>) {
    let [n, c, h, w] = case.shape;
    let [oh_len, ow_len] = case.out_size();
    let (mut out, mut idx, mut dx) = (Vec::new(), Vec::new(), vec![0.0; x.len()]);
    for plane in 0..n * c {
        for oh in 0..oh_len {
            for ow in 0..ow_len {
                let (mut best, mut best_at) = (f32::NEG_INFINITY, -1i64);
                for kh in 0..case.kernel[0] {
                    for kw in 0..case.kernel[1] {
                        let ih = (oh * case.stride[0] + kh * case.dilation[0]) as isize - case.padding[0] as isize;
                        let iw = (ow * case.stride[1] + kw * case.dilation[1]) as isize - case.padding[1] as isize;
                        if ih < 0 || iw < 0 || ih >= h as isize || iw >= w as isize {
                            continue;
                        }
                        let at = ih as usize * w + iw as usize;
                        if best_at < 0 || x[plane * h * w + at] > best {
                            best = x[plane * h * w + at];
                            best_at = at as i64;
                        }
                    }
                }
                out.push(best);
                idx.push(best_at);
                dx[plane * h * w + best_at as usize] += dy[(plane * oh_len + oh) * ow_len + ow];
            }
        }
    }
    (out, idx, dx)
}

#[test]
fn max_pool2d_output_indices_and_gradient_match_the_definition() {
    type A = Autodiff<Flex>;
    let device = Default::default();
    for (i, case) in CASES.iter().enumerate() {
        let [oh, ow] = case.out_size();
        let x = values(case.shape.iter().product(), 2 * i as u64 + 1);
        let dy = values(case.shape[0] * case.shape[1] * oh * ow, 2 * i as u64 + 2);
        let (want_out, want_idx, want_dx) = naive(case, &x, &dy);

        let x_flex = Tensor::<Flex, 4>::from_data(TensorData::new(x.clone(), case.shape), &device);
        let (out, idx) = max_pool2d_with_indices(
            x_flex,
            case.kernel,
            case.stride,
            case.padding,
            case.dilation,
            case.ceil_mode,
        );
        assert_eq!(
            out.dims(),
            [case.shape[0], case.shape[1], oh, ow],
            "{case:?}: output shape"
        );
        assert_eq!(out.into_data().to_vec::<f32>().unwrap(), want_out, "{case:?}: output");
        let idx: Vec<i64> = idx.into_data().convert::<i64>().to_vec().unwrap();
        assert_eq!(idx, want_idx, "{case:?}: indices");

        let x_ad = Tensor::<A, 4>::from_data(TensorData::new(x, case.shape), &device).require_grad();
        let y = max_pool2d(
            x_ad.clone(),
            case.kernel,
            case.stride,
            case.padding,
            case.dilation,
            case.ceil_mode,
        );
        let dy = Tensor::<A, 4>::from_data(TensorData::new(dy, [case.shape[0], case.shape[1], oh, ow]), &device);
        let grads = (y * dy).sum().backward();
        let dx = x_ad.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap();
        assert_eq!(dx, want_dx, "{case:?}: input gradient");
    }
}
