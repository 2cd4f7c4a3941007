//! Convolutions of kiln's CPU backend. burn-flex is vendored with its own gemm-based
//! `conv2d` forward and `conv2d_{x,weight,bias}_backward` (vendor/README.md); these tests hold
//! them to a naive f64 loop and the gradients also to burn's generic default implementations
//! (rebuilt here from public ops, as burn-backend 0.21 writes them), at every convolution shape
//! the model families use, through the ops and through `Autodiff<Flex>` and
//! `burn::nn::conv::Conv2d`.
//!
//! "Equal" means: every element within 1e-4 of the reference, relative to the reference
//! tensor's largest magnitude.

use burn::backend::Autodiff;
use burn::module::Param;
use burn::nn::conv::Conv2dConfig;
use burn::nn::PaddingConfig2d;
use burn::prelude::*;
use burn::tensor::module::{conv2d, conv_transpose2d};
use burn::tensor::ops::conv::calculate_padding_out;
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions, ModuleOps};
use burn::tensor::{f16, DType, TensorPrimitive};
use burn_flex::{Flex, FlexTensor};

/// One convolution: shapes and options.
#[derive(Debug, Clone, Copy)]
struct Case {
    name: &'static str,
    batch: usize,
    /// `[in, out]`.
    channels: [usize; 2],
    /// Input `[height, width]`.
    size: [usize; 2],
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
    groups: usize,
}

/// A square convolution without dilation.
const fn square(
    name: &'static str,
    channels: [usize; 2],
    size: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    groups: usize,
) -> Case {
    Case {
        name,
        batch: 2,
        channels,
        size: [size, size],
        kernel: [kernel, kernel],
        stride: [stride, stride],
        padding: [padding, padding],
        dilation: [1, 1],
        groups,
    }
}

/// `case` at another batch size.
const fn batched(case: Case, batch: usize) -> Case {
    Case { batch, ..case }
}

/// Every convolution shape of kiln's models (channels and sizes cut down where the real ones
/// only make the test slower), plus odd sizes whose last input rows no output reads, and
/// grouped, dilated and asymmetric cases.
const CASES: &[Case] = &[
    // MNIST Net.
    square("mnist conv1 1→32 3×3", [1, 32], 28, 3, 1, 0, 1),
    square("mnist conv2 32→64 3×3", [32, 64], 26, 3, 1, 0, 1),
    // ResNet.
    square("resnet stem 3→64 7×7/2 p3", [3, 64], 32, 7, 2, 3, 1),
    square("resnet stem, odd size", [3, 16], 33, 7, 2, 3, 1),
    square("resnet 3×3/1 p1 64→64", [64, 64], 14, 3, 1, 1, 1),
    square("resnet 3×3/2 p1 64→128, odd size", [64, 128], 15, 3, 2, 1, 1),
    square("resnet 1×1/1 64→256", [64, 256], 14, 1, 1, 0, 1),
    square("resnet 1×1/2 64→128 downsample", [64, 128], 14, 1, 2, 0, 1),
    square("resnet 1×1/2, odd size", [32, 64], 15, 1, 2, 0, 1),
    // YOLOX.
    square("yolox 3×3/2 p1 16→32", [16, 32], 17, 3, 2, 1, 1),
    square("yolox 1×1 32→16", [32, 16], 13, 1, 1, 0, 1),
    square("yolox depthwise 3×3/1 p1", [32, 32], 16, 3, 1, 1, 32),
    square("yolox depthwise 3×3/2 p1", [32, 32], 16, 3, 2, 1, 32),
    square("yolox depthwise 3×3/2 p1, odd size", [24, 24], 15, 3, 2, 1, 24),
    // Small output planes, batch 12 (it splits evenly over 1–4 threads): burn-flex's backward
    // puts several images' planes side by side in one gemm (`images_per_gemm`, ResNet's 14×14
    // and 7×7 stages).
    batched(square("resnet 3×3/1 p1 on 7×7", [16, 24], 7, 3, 1, 1, 1), 12),
    batched(square("resnet 3×3/2 p1 14→7", [16, 8], 14, 3, 2, 1, 1), 12),
    batched(square("resnet 3×3/1 p1 on 14×14", [8, 8], 14, 3, 1, 1, 1), 12),
    batched(square("resnet 1×1/2 14→7", [16, 24], 14, 1, 2, 0, 1), 12),
    batched(square("resnet 1×1/1 on 7×7", [24, 16], 7, 1, 1, 0, 1), 12),
    // Planes under 64 positions run the forward several images per gemm too, and batches of
    // at most 1,024 output positions take the weight gradient in one gemm over the whole
    // batch (ResNet's late stages at 32–64 px: 4×4 and 2×2 planes, batch 32).
    batched(square("resnet 3×3/1 p1 on 2×2", [16, 24], 2, 3, 1, 1, 1), 32),
    batched(square("resnet 3×3/2 p1 8→4", [8, 16], 8, 3, 2, 1, 1), 32),
    batched(square("resnet 1×1/1 on 4×4", [24, 16], 4, 1, 1, 0, 1), 32),
    batched(square("resnet 1×1/2 4→2", [16, 24], 4, 1, 2, 0, 1), 32),
    // A 1×1 input into a 1×1 output reads one kernel tap (the others are padding): a
    // matrix product with that tap's weights (ResNet's late 3×3 layers at 32 px).
    batched(square("resnet 3×3/1 p1 on 1×1", [16, 24], 1, 3, 1, 1, 1), 32),
    batched(square("5×5/1 p2 on 1×1", [8, 12], 1, 5, 1, 2, 1), 6),
    // 3×3 stride-1 convolutions with at least 64 input and output channels and 256 2×2 output
    // tiles in the batch run as Winograd F(2×2, 3×3) in burn-flex (`conv_winograd`), forward
    // and input gradient. Whole and partial tiles, several images per gemm, padding 0, 1 and 2,
    // unequal channel counts.
    square("winograd 3×3/1 p1 64→64", [64, 64], 24, 3, 1, 1, 1),
    square("winograd 3×3/1 p1 96→64, odd size", [96, 64], 23, 3, 1, 1, 1),
    square("winograd 3×3/1 p2 64→64", [64, 64], 24, 3, 1, 2, 1),
    square("winograd 3×3/1 p0 64→64, odd size", [64, 64], 27, 3, 1, 0, 1),
    batched(square("winograd 3×3/1 p1 on 7×7", [64, 64], 7, 3, 1, 1, 1), 16),
    // Other groupings and options.
    square("groups 2, 4→6", [4, 6], 9, 3, 1, 1, 2),
    square("groups 4, channel multiplier 2", [4, 8], 9, 3, 2, 1, 4),
    square("grouped 1×1, groups 4", [8, 8], 7, 1, 1, 0, 4),
    Case {
        name: "asymmetric kernel, stride, padding and dilation",
        batch: 3,
        channels: [5, 7],
        size: [13, 11],
        kernel: [3, 5],
        stride: [2, 1],
        padding: [1, 2],
        dilation: [2, 1],
        groups: 1,
    },
    Case {
        name: "depthwise 5×3, dilation 2, stride [1, 2]",
        batch: 3,
        channels: [6, 6],
        size: [12, 13],
        kernel: [5, 3],
        stride: [1, 2],
        padding: [2, 1],
        dilation: [2, 2],
        groups: 6,
    },
];

impl Case {
    fn out_size(&self) -> [usize; 2] {
        [0, 1].map(|a| {
            (self.size[a] + 2 * self.padding[a] - self.dilation[a] * (self.kernel[a] - 1) - 1) / self.stride[a] + 1
        })
    }

    fn x_shape(&self) -> [usize; 4] {
        [self.batch, self.channels[0], self.size[0], self.size[1]]
    }

    fn weight_shape(&self) -> [usize; 4] {
        [
            self.channels[1],
            self.channels[0] / self.groups,
            self.kernel[0],
            self.kernel[1],
        ]
    }

    fn out_shape(&self) -> [usize; 4] {
        let [h, w] = self.out_size();
        [self.batch, self.channels[1], h, w]
    }

    fn options(&self) -> ConvOptions<2> {
        ConvOptions::new(self.stride, self.padding, self.dilation, self.groups)
    }

    /// Random input, weight, bias and output gradient, seeded by the case's name.
    fn inputs(&self) -> Inputs {
        let seed = self.name.bytes().fold(0x9e37_79b9_7f4a_7c15u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
        Inputs {
            x: random(self.x_shape().iter().product(), seed),
            weight: random(self.weight_shape().iter().product(), seed + 1),
            bias: random(self.channels[1], seed + 2),
            output_grad: random(self.out_shape().iter().product(), seed + 3),
        }
    }
}

/// One case's random tensors, flat row-major.
struct Inputs {
    x: Vec<f32>,
    weight: Vec<f32>,
    bias: Vec<f32>,
    output_grad: Vec<f32>,
}

/// Gradients of `sum(conv2d(x, weight, bias) · output_grad)`.
struct Grads<T> {
    x: Vec<T>,
    weight: Vec<T>,
    bias: Vec<T>,
}

/// `len` deterministic values uniform in [-1, 1) (xorshift64*).
fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let bits = state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40;
            bits as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// Calls `f(y_at, x_at, w_at)` for every output element and every kernel tap of it that reads
/// inside the input: the flat row-major indices of the output, input and weight elements.
fn for_each_tap(case: &Case, mut f: impl FnMut(usize, usize, usize)) {
    let [batch, c_in, h, w] = case.x_shape();
    let [c_out, in_per_group, kh, kw] = case.weight_shape();
    let [_, _, oh_len, ow_len] = case.out_shape();
    let out_per_group = c_out / case.groups;
    for b in 0..batch {
        for co in 0..c_out {
            let group = co / out_per_group;
            for oh in 0..oh_len {
                for ow in 0..ow_len {
                    let y_at = ((b * c_out + co) * oh_len + oh) * ow_len + ow;
                    for cl in 0..in_per_group {
                        let ci = group * in_per_group + cl;
                        for i in 0..kh {
                            let ih = (oh * case.stride[0] + i * case.dilation[0]) as isize - case.padding[0] as isize;
                            for j in 0..kw {
                                let iw =
                                    (ow * case.stride[1] + j * case.dilation[1]) as isize - case.padding[1] as isize;
                                if ih < 0 || iw < 0 || ih >= h as isize || iw >= w as isize {
                                    continue;
                                }
                                let x_at = ((b * c_in + ci) * h + ih as usize) * w + iw as usize;
                                let w_at = ((co * in_per_group + cl) * kh + i) * kw + j;
                                f(y_at, x_at, w_at);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The output channel of flat output index `y_at`.
fn out_channel(case: &Case, y_at: usize) -> usize {
    let [_, c_out, oh_len, ow_len] = case.out_shape();
    (y_at / (oh_len * ow_len)) % c_out
}

/// The gradients by the definition, accumulated in f64.
fn naive(case: &Case, inputs: &Inputs) -> Grads<f64> {
    let mut grads = Grads {
        x: vec![0.0; inputs.x.len()],
        weight: vec![0.0; inputs.weight.len()],
        bias: vec![0.0; case.channels[1]],
    };
    for (y_at, &dy) in inputs.output_grad.iter().enumerate() {
        grads.bias[out_channel(case, y_at)] += dy as f64;
    }
    for_each_tap(case, |y_at, x_at, w_at| {
        let dy = inputs.output_grad[y_at] as f64;
        grads.x[x_at] += inputs.weight[w_at] as f64 * dy;
        grads.weight[w_at] += inputs.x[x_at] as f64 * dy;
    });
    grads
}

/// The convolution's output by its definition, in f64, with or without the bias.
fn naive_forward(case: &Case, inputs: &Inputs, bias: bool) -> Vec<f64> {
    let mut y: Vec<f64> = (0..inputs.output_grad.len())
        .map(|y_at| {
            if bias {
                inputs.bias[out_channel(case, y_at)] as f64
            } else {
                0.0
            }
        })
        .collect();
    for_each_tap(case, |y_at, x_at, w_at| {
        y[y_at] += inputs.x[x_at] as f64 * inputs.weight[w_at] as f64;
    });
    y
}

fn tensor<B: Backend, const D: usize>(values: &[f32], shape: [usize; D]) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(values.to_vec(), shape), &Default::default())
}

fn values<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Vec<f32> {
    tensor.into_data().convert::<f32>().to_vec().unwrap()
}

fn primitive<const D: usize>(tensor: Tensor<Flex, D>) -> FlexTensor {
    tensor.into_primitive().tensor()
}

fn from_primitive<const D: usize>(primitive: FlexTensor) -> Tensor<Flex, D> {
    Tensor::from_primitive(TensorPrimitive::Float(primitive))
}

/// burn-flex's gradients, from its `ModuleOps` backward functions.
fn flex_ops(case: &Case, inputs: &Inputs) -> Grads<f32> {
    let x = || primitive(tensor::<Flex, 4>(&inputs.x, case.x_shape()));
    let weight = || primitive(tensor::<Flex, 4>(&inputs.weight, case.weight_shape()));
    let dy = || primitive(tensor::<Flex, 4>(&inputs.output_grad, case.out_shape()));
    let bias = primitive(tensor::<Flex, 1>(&inputs.bias, [case.channels[1]]));
    Grads {
        x: values(from_primitive::<4>(Flex::conv2d_x_backward(
            x(),
            weight(),
            dy(),
            case.options(),
        ))),
        weight: values(from_primitive::<4>(Flex::conv2d_weight_backward(
            x(),
            weight(),
            dy(),
            case.options(),
        ))),
        bias: values(from_primitive::<1>(Flex::conv2d_bias_backward(x(), bias, dy()))),
    }
}

/// burn's generic defaults (burn-backend 0.21, `ops::modules::conv::conv2d_*_backward`), which
/// burn-flex overrides, rebuilt from the same public ops: the input gradient is a transposed
/// convolution of the output gradient; the weight gradient, per group, a convolution of the
/// batch-swapped input by the batch-swapped output gradient, cropped to the kernel; the bias
/// gradient a sum.
fn burn_default(case: &Case, inputs: &Inputs) -> Grads<f32> {
    let x = tensor::<Flex, 4>(&inputs.x, case.x_shape());
    let weight = tensor::<Flex, 4>(&inputs.weight, case.weight_shape());
    let dy = tensor::<Flex, 4>(&inputs.output_grad, case.out_shape());
    let [c_out, in_per_group, kh, kw] = case.weight_shape();
    let out_per_group = c_out / case.groups;
    let out_size = case.out_size();

    let padding_out = [0, 1].map(|a| {
        calculate_padding_out(
            case.kernel[a],
            case.stride[a],
            case.padding[a],
            case.dilation[a],
            case.size[a],
            out_size[a],
        )
    });
    let x_grad = conv_transpose2d(
        dy.clone(),
        weight,
        None,
        ConvTransposeOptions::new(case.stride, case.padding, padding_out, case.dilation, case.groups),
    );

    let (x_swapped, dy_swapped) = (x.swap_dims(0, 1), dy.clone().swap_dims(0, 1));
    let per_group = (0..case.groups)
        .map(|g| {
            conv2d(
                x_swapped.clone().narrow(0, g * in_per_group, in_per_group),
                dy_swapped.clone().narrow(0, g * out_per_group, out_per_group),
                None,
                ConvOptions::new(case.dilation, case.padding, case.stride, 1),
            )
            .swap_dims(0, 1)
            .slice([0..out_per_group, 0..in_per_group, 0..kh, 0..kw])
        })
        .collect();
    let weight_grad = Tensor::cat(per_group, 0);

    let bias_grad = dy
        .swap_dims(0, 1)
        .reshape([c_out as i32, -1])
        .sum_dim(1)
        .reshape([c_out]);
    Grads {
        x: values(x_grad),
        weight: values(weight_grad),
        bias: values(bias_grad),
    }
}

/// The gradients through `Autodiff<Flex>` and a `Conv2d` module holding the case's weight
/// (and bias, when `bias`).
fn autodiff(case: &Case, inputs: &Inputs, bias: bool) -> (Grads<f32>, bool) {
    type A = Autodiff<Flex>;
    let [ph, pw] = case.padding;
    let mut conv = Conv2dConfig::new(case.channels, case.kernel)
        .with_stride(case.stride)
        .with_padding(PaddingConfig2d::Explicit(ph, pw, ph, pw))
        .with_dilation(case.dilation)
        .with_groups(case.groups)
        .with_bias(bias)
        .init::<A>(&Default::default());
    conv.weight = Param::from_tensor(tensor(&inputs.weight, case.weight_shape()));
    conv.bias = bias.then(|| Param::from_tensor(tensor(&inputs.bias, [case.channels[1]])));
    let x = tensor::<A, 4>(&inputs.x, case.x_shape()).require_grad();
    let y = conv.forward(x.clone());
    let grads = (y * tensor(&inputs.output_grad, case.out_shape())).sum().backward();
    let bias_grad = conv.bias.as_ref().map(|b| values(b.val().grad(&grads).unwrap()));
    (
        Grads {
            x: values(x.grad(&grads).unwrap()),
            weight: values(conv.weight.val().grad(&grads).unwrap()),
            bias: bias_grad.clone().unwrap_or_default(),
        },
        bias_grad.is_some(),
    )
}

/// Checks every element of `got` within 1e-4 · max|want| of `want`; the first miss, if any.
fn check_close(what: &str, got: &[f32], want: &[f64]) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("{what}: {} elements, expected {}", got.len(), want.len()));
    }
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    if scale == 0.0 {
        return Err(format!("{what}: the reference is all zeros"));
    }
    match got
        .iter()
        .zip(want)
        .enumerate()
        .find(|(_, (&g, &w))| (g as f64 - w).abs() > 1e-4 * scale)
    {
        Some((i, (g, w))) => Err(format!("{what}[{i}]: {g} vs {w} (scale {scale:e})")),
        None => Ok(()),
    }
}

/// Checks the gradients of one case, collecting the misses into `failures`.
fn check_grads(failures: &mut Vec<String>, what: &str, got: &Grads<f32>, want: &Grads<f64>, bias: bool) {
    let mut pairs = vec![("x", &got.x, &want.x), ("weight", &got.weight, &want.weight)];
    if bias {
        pairs.push(("bias", &got.bias, &want.bias));
    }
    for (name, got, want) in pairs {
        if let Err(e) = check_close(&format!("{what}: {name}"), got, want) {
            failures.push(e);
        }
    }
}

/// Panics with every miss.
fn assert_no_failures(failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn widen(grads: Grads<f32>) -> Grads<f64> {
    let widen = |v: Vec<f32>| v.into_iter().map(f64::from).collect();
    Grads {
        x: widen(grads.x),
        weight: widen(grads.weight),
        bias: widen(grads.bias),
    }
}

#[test]
fn flex_forward_matches_the_definition() {
    let mut failures = Vec::new();
    for case in CASES {
        let inputs = case.inputs();
        for bias in [false, true] {
            let output = Flex::conv2d(
                primitive(tensor::<Flex, 4>(&inputs.x, case.x_shape())),
                primitive(tensor::<Flex, 4>(&inputs.weight, case.weight_shape())),
                bias.then(|| primitive(tensor::<Flex, 1>(&inputs.bias, [case.channels[1]]))),
                case.options(),
            );
            let output = from_primitive::<4>(output);
            assert_eq!(output.dims(), case.out_shape(), "{}", case.name);
            let what = format!("{} (bias {bias}) forward", case.name);
            if let Err(failure) = check_close(&what, &values(output), &naive_forward(case, &inputs, bias)) {
                failures.push(failure);
            }
        }
    }
    assert_no_failures(failures);
}

#[test]
fn flex_backward_ops_match_burn_defaults_and_the_definition() {
    let mut failures = Vec::new();
    for case in CASES {
        let inputs = case.inputs();
        let got = flex_ops(case, &inputs);
        let definition = naive(case, &inputs);
        check_grads(
            &mut failures,
            &format!("{} vs definition", case.name),
            &got,
            &definition,
            true,
        );
        let default = widen(burn_default(case, &inputs));
        check_grads(
            &mut failures,
            &format!("{} vs burn default", case.name),
            &got,
            &default,
            true,
        );
    }
    assert_no_failures(failures);
}

#[test]
fn autodiff_conv2d_module_gradients_match_the_definition() {
    let mut failures = Vec::new();
    for case in CASES {
        let inputs = case.inputs();
        let want = naive(case, &inputs);
        for bias in [false, true] {
            let (got, has_bias) = autodiff(case, &inputs, bias);
            assert_eq!(has_bias, bias);
            let what = format!("{} (bias {bias}) through Autodiff", case.name);
            check_grads(&mut failures, &what, &got, &want, bias);
        }
    }
    assert_no_failures(failures);
}

/// burn-flex computes f64 natively, f16 gradients through f32 and the f16 forward on its own
/// f16 path.
#[test]
fn other_float_dtypes_are_computed_too() {
    let case = &CASES[5]; // strided, padded, odd size
    let inputs = case.inputs();
    let want = naive(case, &inputs);
    let want_output = naive_forward(case, &inputs, false);
    let make = |values: &[f32], shape: [usize; 4], dtype: DType| {
        let data = TensorData::new(values.to_vec(), shape);
        FlexTensor::from_data(match dtype {
            DType::F64 => data.convert::<f64>(),
            DType::F16 => data.convert::<f16>(),
            _ => data,
        })
    };
    for (dtype, tolerance) in [(DType::F64, 1e-12), (DType::F16, 1e-2)] {
        let x = || make(&inputs.x, case.x_shape(), dtype);
        let weight = || make(&inputs.weight, case.weight_shape(), dtype);
        let dy = || make(&inputs.output_grad, case.out_shape(), dtype);
        for (what, grad, want) in [
            (
                "forward",
                Flex::conv2d(x(), weight(), None, case.options()),
                &want_output,
            ),
            (
                "x",
                Flex::conv2d_x_backward(x(), weight(), dy(), case.options()),
                &want.x,
            ),
            (
                "weight",
                Flex::conv2d_weight_backward(x(), weight(), dy(), case.options()),
                &want.weight,
            ),
        ] {
            let data = grad.into_data();
            assert_eq!(data.dtype, dtype, "{what} keeps its dtype");
            let got = data.convert::<f64>().to_vec::<f64>().unwrap();
            let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            for (i, (g, w)) in got.iter().zip(want).enumerate() {
                assert!((g - w).abs() <= tolerance * scale, "{dtype:?} {what}[{i}]: {g} vs {w}");
            }
        }
    }
}
