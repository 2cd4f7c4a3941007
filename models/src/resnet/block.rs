//! torchvision's residual blocks: `BasicBlock`, `Bottleneck` and their `downsample` branch.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Initializer, PaddingConfig2d, Relu};
use burn::prelude::*;

use crate::norm::{conv_optional_batch_norm, fold_into};

use super::arch::BlockKind;

/// A convolution without bias, initialised as torchvision does:
/// `kaiming_normal_(mode="fan_out", nonlinearity="relu")`, i.e. N(0, √(2 / (out · kh · kw))).
pub(super) fn conv<B: Backend>(channels: [usize; 2], kernel: usize, stride: usize, device: &B::Device) -> Conv2d<B> {
    let pad = kernel / 2;
    Conv2dConfig::new(channels, [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_bias(false)
        .with_initializer(Initializer::KaimingNormal {
            gain: std::f64::consts::SQRT_2,
            fan_out_only: true,
        })
        .init(device)
}

/// BatchNorm with PyTorch's defaults (ε 1e-5, momentum 0.1; weight 1, bias 0, mean 0, var 1).
/// Every BatchNorm of a ResNet is an `Option`: `None` once folded into its convolution
/// ([`ResNet::fold_batch_norms`](super::ResNet::fold_batch_norms)).
pub(super) fn bn<B: Backend>(channels: usize, device: &B::Device) -> Option<BatchNorm<B>> {
    Some(BatchNormConfig::new(channels).init(device))
}

/// The shortcut's projection, torchvision's `downsample = Sequential(conv1x1, BatchNorm)`;
/// its fields are stored as `downsample.0` and `downsample.1`.
#[derive(Module, Debug)]
pub struct Downsample<B: Backend> {
    conv: Conv2d<B>,
    bn: Option<BatchNorm<B>>,
}

impl<B: Backend> Downsample<B> {
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        conv_optional_batch_norm(&self.conv, &self.bn, x)
    }
}

/// Two 3×3 convolutions (the first strided) with a residual connection.
#[derive(Module, Debug)]
pub struct BasicBlock<B: Backend> {
    conv1: Conv2d<B>,
    bn1: Option<BatchNorm<B>>,
    conv2: Conv2d<B>,
    bn2: Option<BatchNorm<B>>,
    relu: Relu,
    downsample: Option<Downsample<B>>,
}

/// 1×1 reduce → 3×3 (strided, torchvision "v1.5") → 1×1 expand, with a residual connection.
#[derive(Module, Debug)]
pub struct Bottleneck<B: Backend> {
    conv1: Conv2d<B>,
    bn1: Option<BatchNorm<B>>,
    conv2: Conv2d<B>,
    bn2: Option<BatchNorm<B>>,
    conv3: Conv2d<B>,
    bn3: Option<BatchNorm<B>>,
    relu: Relu,
    downsample: Option<Downsample<B>>,
}

/// One residual block of a stage. The variant names are not part of the tensor names: stores
/// are used with `skip_enum_variants(true)`, so a block's weights are `layer1.0.conv1.weight`.
#[derive(Module, Debug)]
pub enum Block<B: Backend> {
    /// A ResNet-18/34 block.
    Basic(BasicBlock<B>),
    /// A ResNet-50/101/152 block.
    Bottleneck(Bottleneck<B>),
}

impl<B: Backend> Block<B> {
    /// A block taking `in_channels` to `planes × expansion` channels with the given stride;
    /// it gets a projection shortcut when the stride or the channel count changes.
    pub(super) fn new(kind: BlockKind, in_channels: usize, planes: usize, stride: usize, device: &B::Device) -> Self {
        let out = planes * kind.expansion();
        let downsample = (stride != 1 || in_channels != out).then(|| Downsample {
            conv: conv([in_channels, out], 1, stride, device),
            bn: bn(out, device),
        });
        match kind {
            BlockKind::Basic => Self::Basic(BasicBlock {
                conv1: conv([in_channels, planes], 3, stride, device),
                bn1: bn(planes, device),
                conv2: conv([planes, planes], 3, 1, device),
                bn2: bn(planes, device),
                relu: Relu::new(),
                downsample,
            }),
            BlockKind::Bottleneck => Self::Bottleneck(Bottleneck {
                conv1: conv([in_channels, planes], 1, 1, device),
                bn1: bn(planes, device),
                conv2: conv([planes, planes], 3, stride, device),
                bn2: bn(planes, device),
                conv3: conv([planes, out], 1, 1, device),
                bn3: bn(out, device),
                relu: Relu::new(),
                downsample,
            }),
        }
    }

    /// Folds each BatchNorm into its convolution (see [`fold_into`]).
    pub(super) fn fold_batch_norms(&mut self) {
        let (pairs, downsample) = match self {
            Self::Basic(b) => (
                vec![(&mut b.conv1, &mut b.bn1), (&mut b.conv2, &mut b.bn2)],
                &mut b.downsample,
            ),
            Self::Bottleneck(b) => (
                vec![
                    (&mut b.conv1, &mut b.bn1),
                    (&mut b.conv2, &mut b.bn2),
                    (&mut b.conv3, &mut b.bn3),
                ],
                &mut b.downsample,
            ),
        };
        for (conv, bn) in pairs {
            fold_into(conv, bn);
        }
        if let Some(d) = downsample {
            fold_into(&mut d.conv, &mut d.bn);
        }
    }

    /// The block's output for `x` `[N, in_channels, H, W]`.
    pub(super) fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        match self {
            Self::Basic(b) => {
                let identity = shortcut(&b.downsample, x.clone());
                let out = b.relu.forward(conv_optional_batch_norm(&b.conv1, &b.bn1, x));
                let out = conv_optional_batch_norm(&b.conv2, &b.bn2, out);
                b.relu.forward(out + identity)
            }
            Self::Bottleneck(b) => {
                let identity = shortcut(&b.downsample, x.clone());
                let out = b.relu.forward(conv_optional_batch_norm(&b.conv1, &b.bn1, x));
                let out = b.relu.forward(conv_optional_batch_norm(&b.conv2, &b.bn2, out));
                let out = conv_optional_batch_norm(&b.conv3, &b.bn3, out);
                b.relu.forward(out + identity)
            }
        }
    }
}

fn shortcut<B: Backend>(downsample: &Option<Downsample<B>>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    match downsample {
        Some(d) => d.forward(x),
        None => x,
    }
}
