//! YOLOX's building blocks (`network_blocks.py`): conv + BatchNorm + SiLU, its depthwise
//! variant, the CSP bottleneck and layer, SPP and Focus.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::silu;

use super::fold::{fold_fields, FoldBatchNorms};
use crate::norm::{conv_optional_batch_norm, fold_into};

/// YOLOX's BatchNorm settings (`init_yolo`): ε 1e-3, momentum 0.03.
const BN_EPSILON: f64 = 1e-3;
const BN_MOMENTUM: f64 = 0.03;

/// `BaseConv`: conv (no bias, "same" padding) → BatchNorm → SiLU.
#[derive(Module, Debug)]
pub struct BaseConv<B: Backend> {
    conv: Conv2d<B>,
    /// `None` once folded into `conv` ([`FoldBatchNorms`]).
    bn: Option<BatchNorm<B>>,
}

impl<B: Backend> BaseConv<B> {
    /// `in → out` channels, `kernel`×`kernel`, `stride`, `groups`.
    pub fn new(channels: [usize; 2], kernel: usize, stride: usize, groups: usize, device: &B::Device) -> Self {
        let pad = (kernel - 1) / 2;
        Self {
            conv: Conv2dConfig::new(channels, [kernel, kernel])
                .with_stride([stride, stride])
                .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
                .with_groups(groups)
                .with_bias(false)
                .init(device),
            bn: Some(
                BatchNormConfig::new(channels[1])
                    .with_epsilon(BN_EPSILON)
                    .with_momentum(BN_MOMENTUM)
                    .init(device),
            ),
        }
    }

    /// SiLU(BN(conv(x))).
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        silu(conv_optional_batch_norm(&self.conv, &self.bn, x))
    }
}

impl<B: Backend> FoldBatchNorms for BaseConv<B> {
    fn fold_batch_norms(&mut self) {
        fold_into(&mut self.conv, &mut self.bn);
    }
}

/// A 3×3-style convolution: a [`BaseConv`], or with `depthwise` (YOLOX-nano) `DWConv`, a
/// depthwise conv followed by a 1×1 pointwise one.
#[derive(Module, Debug)]
pub struct Conv<B: Backend> {
    dconv: BaseConv<B>,
    pconv: Option<BaseConv<B>>,
}

impl<B: Backend> Conv<B> {
    /// `in → out` channels, `kernel`, `stride`; depthwise-separable when `depthwise`.
    pub fn new(channels: [usize; 2], kernel: usize, stride: usize, depthwise: bool, device: &B::Device) -> Self {
        let [cin, cout] = channels;
        if depthwise {
            Self {
                dconv: BaseConv::new([cin, cin], kernel, stride, cin, device),
                pconv: Some(BaseConv::new([cin, cout], 1, 1, 1, device)),
            }
        } else {
            Self {
                dconv: BaseConv::new(channels, kernel, stride, 1, device),
                pconv: None,
            }
        }
    }

    /// The convolution(s).
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = self.dconv.forward(x);
        match &self.pconv {
            Some(p) => p.forward(x),
            None => x,
        }
    }
}

/// `Bottleneck`: 1×1 to `out × expansion`, 3×3 back to `out`, plus the input when `shortcut`
/// and the channel counts agree.
#[derive(Module, Debug)]
pub struct Bottleneck<B: Backend> {
    conv1: BaseConv<B>,
    conv2: Conv<B>,
    add: bool,
}

impl<B: Backend> Bottleneck<B> {
    fn new(channels: [usize; 2], shortcut: bool, expansion: f64, depthwise: bool, device: &B::Device) -> Self {
        let [cin, cout] = channels;
        let hidden = (cout as f64 * expansion) as usize;
        Self {
            conv1: BaseConv::new([cin, hidden], 1, 1, 1, device),
            conv2: Conv::new([hidden, cout], 3, 1, depthwise, device),
            add: shortcut && cin == cout,
        }
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let y = self.conv2.forward(self.conv1.forward(x.clone()));
        if self.add {
            y + x
        } else {
            y
        }
    }
}

/// `CSPLayer`: two 1×1 branches of `out / 2` channels, `n` bottlenecks on the first, joined by
/// a 1×1 conv.
#[derive(Module, Debug)]
pub struct CspLayer<B: Backend> {
    conv1: BaseConv<B>,
    conv2: BaseConv<B>,
    conv3: BaseConv<B>,
    m: Vec<Bottleneck<B>>,
}

impl<B: Backend> CspLayer<B> {
    /// `in → out` channels with `n` bottlenecks.
    pub fn new(channels: [usize; 2], n: usize, shortcut: bool, depthwise: bool, device: &B::Device) -> Self {
        let [cin, cout] = channels;
        let hidden = cout / 2;
        Self {
            conv1: BaseConv::new([cin, hidden], 1, 1, 1, device),
            conv2: BaseConv::new([cin, hidden], 1, 1, 1, device),
            conv3: BaseConv::new([2 * hidden, cout], 1, 1, 1, device),
            m: (0..n)
                .map(|_| Bottleneck::new([hidden, hidden], shortcut, 1.0, depthwise, device))
                .collect(),
        }
    }

    /// conv3(cat(m(conv1(x)), conv2(x))).
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x1 = self.m.iter().fold(self.conv1.forward(x.clone()), |y, b| b.forward(y));
        let x2 = self.conv2.forward(x);
        self.conv3.forward(Tensor::cat(vec![x1, x2], 1))
    }
}

/// `SPPBottleneck`: 1×1 to half the channels, max-pools 5, 9 and 13 (stride 1) beside the
/// input, 1×1 to `out`.
#[derive(Module, Debug)]
pub struct SppBottleneck<B: Backend> {
    conv1: BaseConv<B>,
    m: Vec<MaxPool2d>,
    conv2: BaseConv<B>,
}

impl<B: Backend> SppBottleneck<B> {
    /// `in → out` channels.
    pub fn new(channels: [usize; 2], device: &B::Device) -> Self {
        let [cin, cout] = channels;
        let hidden = cin / 2;
        let kernels = [5, 9, 13];
        Self {
            conv1: BaseConv::new([cin, hidden], 1, 1, 1, device),
            m: kernels
                .iter()
                .map(|&k| {
                    MaxPool2dConfig::new([k, k])
                        .with_strides([1, 1])
                        .with_padding(PaddingConfig2d::Explicit(k / 2, k / 2, k / 2, k / 2))
                        .init()
                })
                .collect(),
            conv2: BaseConv::new([hidden * (kernels.len() + 1), cout], 1, 1, 1, device),
        }
    }

    /// conv2(cat(x, pool5(x), pool9(x), pool13(x))) with x = conv1(input).
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = self.conv1.forward(x);
        let mut parts = vec![x.clone()];
        parts.extend(self.m.iter().map(|p| p.forward(x.clone())));
        self.conv2.forward(Tensor::cat(parts, 1))
    }
}

/// `Focus`: space to depth (each 2×2 block's four pixels become channels, in YOLOX's order
/// top-left, bottom-left, top-right, bottom-right), then a [`BaseConv`].
#[derive(Module, Debug)]
pub struct Focus<B: Backend> {
    conv: BaseConv<B>,
}

impl<B: Backend> Focus<B> {
    /// `in → out` channels (the conv sees `4 × in`), `kernel`.
    pub fn new(channels: [usize; 2], kernel: usize, device: &B::Device) -> Self {
        Self {
            conv: BaseConv::new([4 * channels[0], channels[1]], kernel, 1, 1, device),
        }
    }

    /// `[N, C, H, W]` (H, W even) → `[N, out, H/2, W/2]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.conv.forward(space_to_depth(x))
    }
}

/// `[N, C, H, W]` → `[N, 4C, H/2, W/2]`, channel group `2 · (x odd) + (y odd)`.
pub fn space_to_depth<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    x.reshape([n, c, h / 2, 2, w / 2, 2])
        .permute([0, 5, 3, 1, 2, 4])
        .reshape([n, 4 * c, h / 2, w / 2])
}

fold_fields!(Conv: dconv, pconv);
fold_fields!(Bottleneck: conv1, conv2);
fold_fields!(CspLayer: conv1, conv2, conv3, m);
fold_fields!(SppBottleneck: conv1, conv2);
fold_fields!(Focus: conv);
