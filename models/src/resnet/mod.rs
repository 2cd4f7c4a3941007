//! torchvision's ResNet-18/34/50/101/152 ("v1.5": the stride of a bottleneck is on its 3×3
//! convolution), layer for layer, with torchvision's parameter names and initialisation.
//!
//! Saved in a model package ([`write_package`](crate::write_package)) the tensors are exactly
//! torchvision's state_dict: `conv1.weight`, `bn1.running_mean`, `layer1.0.conv1.weight`,
//! `layer2.0.downsample.0.weight`, `layer2.0.downsample.1.running_var`, `fc.weight`, ...
//! [`load_pretrained`] reads torchvision's own checkpoints.

mod arch;
mod block;

mod pretrained;

use burn::nn::conv::Conv2d;
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, Linear, LinearConfig, PaddingConfig2d, Relu};
use burn::prelude::*;

pub use arch::{BlockKind, ResNetArch};
pub use block::{BasicBlock, Block, Bottleneck, Downsample};
pub use pretrained::{load_pretrained, PretrainedReport};

use crate::norm::{conv_optional_batch_norm, fold_into};
use crate::package::{InputSpec, PackageConfig};

/// Which ResNet to build and its number of output classes:
/// `ResNetConfig::new(ResNetArch::ResNet50, 1000).init::<B>(&device)`.
#[derive(Config, Debug)]
pub struct ResNetConfig {
    /// The depth: `resnet18` … `resnet152`.
    pub arch: ResNetArch,
    /// Output classes (1000 for ImageNet and torchvision's pretrained weights).
    pub num_classes: usize,
}

/// A ResNet: conv1 7×7/2 → bn1 → relu → maxpool 3×3/2 → layer1…layer4 → global average pool
/// → fc. [`ResNet::forward`] returns logits. Batch statistics are used on an autodiff backend
/// (training), running statistics otherwise (`model.valid()` to evaluate).
#[derive(Module, Debug)]
pub struct ResNet<B: Backend> {
    conv1: Conv2d<B>,
    bn1: Option<BatchNorm<B>>,
    relu: Relu,
    maxpool: MaxPool2d,
    layer1: Vec<Block<B>>,
    layer2: Vec<Block<B>>,
    layer3: Vec<Block<B>>,
    layer4: Vec<Block<B>>,
    avgpool: AdaptiveAvgPool2d,
    fc: Linear<B>,
}

/// Channels ("planes") of the four stages before the block expansion.
const PLANES: [usize; 4] = [64, 128, 256, 512];

impl ResNetConfig {
    /// Builds the network with torchvision's initialisation: convolutions
    /// N(0, √(2 / fan_out)), BatchNorm weight 1 and bias 0, fc uniform ±1/√in_features.
    pub fn init<B: Backend>(&self, device: &B::Device) -> ResNet<B> {
        let kind = self.arch.block();
        let blocks = self.arch.layers();
        let mut in_channels = PLANES[0];
        let [layer1, layer2, layer3, layer4] = std::array::from_fn(|stage| {
            let stride = if stage == 0 { 1 } else { 2 };
            (0..blocks[stage])
                .map(|b| {
                    let block_stride = if b == 0 { stride } else { 1 };
                    let block = Block::new(kind, in_channels, PLANES[stage], block_stride, device);
                    in_channels = PLANES[stage] * kind.expansion();
                    block
                })
                .collect()
        });
        crate::params::materialized(ResNet {
            conv1: block::conv([3, PLANES[0]], 7, 2, device),
            bn1: block::bn(PLANES[0], device),
            relu: Relu::new(),
            maxpool: MaxPool2dConfig::new([3, 3])
                .with_strides([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(),
            layer1,
            layer2,
            layer3,
            layer4,
            avgpool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            fc: LinearConfig::new(self.arch.features(), self.num_classes).init(device),
        })
    }
}

impl<B: Backend> ResNet<B> {
    /// Logits `[N, num_classes]` for normalised RGB images `[N, 3, H, W]` (224×224 for
    /// ImageNet; the global average pool accepts any size).
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        // torchvision's `maxpool(relu(bn1(conv1(x))))`, pooled first: ReLU is monotone, so the
        // two orders give the same values and route the same gradients, and ReLU then touches
        // a quarter of the stem's elements.
        let x = self
            .maxpool
            .forward(conv_optional_batch_norm(&self.conv1, &self.bn1, images));
        self.head(self.relu.forward(x))
    }

    /// The four stages, the global average pool and `fc`, from the stem's pooled output.
    fn head(&self, mut x: Tensor<B, 4>) -> Tensor<B, 2> {
        for block in [&self.layer1, &self.layer2, &self.layer3, &self.layer4]
            .into_iter()
            .flatten()
        {
            x = block.forward(x);
        }
        let x = self.avgpool.forward(x).flatten::<2>(1, 3);
        self.fc.forward(x)
    }

    /// The same network for evaluation with every BatchNorm folded into its convolution once
    /// (`W' = s·W`, `b' = β − s·mean`, `s = γ / √(var + ε)`), so a forward pass makes no
    /// BatchNorm passes and no per-call folding: equal logits up to rounding, independent of
    /// the batch. For evaluation and serving only (training it would train a network without
    /// BatchNorm); write packages and checkpoints from the unfolded model.
    pub fn fold_batch_norms(mut self) -> Self {
        fold_into(&mut self.conv1, &mut self.bn1);
        for block in [&mut self.layer1, &mut self.layer2, &mut self.layer3, &mut self.layer4]
            .into_iter()
            .flatten()
        {
            block.fold_batch_norms();
        }
        self
    }

    /// Output classes of the classifier `fc`.
    pub fn num_classes(&self) -> usize {
        self.fc.weight.dims()[1]
    }

    /// Trainable parameters, as PyTorch counts them: [`Module::num_params`] also counts
    /// BatchNorm's running mean and variance, which are buffers in PyTorch.
    pub fn num_trainable_params(&self) -> usize {
        crate::params::trainable_params(self)
    }
}

/// The package configuration for a trained ResNet: RGB, shorter side resized to 256, centre
/// crop 224×224, ImageNet normalisation (torchvision's evaluation transform); the labels are
/// the class names in class-index order.
pub fn resnet_package_config(arch: ResNetArch, class_names: &[String]) -> PackageConfig {
    let input = InputSpec::center_crop(3, 224, 256, vec![0.485, 0.456, 0.406], vec![0.229, 0.224, 0.225]);
    let labels = class_names.iter().cloned().map(serde_json::Value::from).collect();
    PackageConfig::image_classification(arch.name(), input, labels)
}

#[cfg(test)]
mod tests;
