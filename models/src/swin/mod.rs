//! Swin Transformer (microsoft/Swin-Transformer's `SwinTransformer`): patch embedding,
//! stages of (shifted-)window attention blocks joined by patch merging, a final LayerNorm,
//! global average pooling and a linear head. Module and parameter names are the official
//! state-dict keys (`patch_embed.proj.weight`, `layers.0.blocks.1.attn.qkv.weight`,
//! `layers.0.blocks.1.attn.relative_position_bias_table`, `layers.2.downsample.reduction.weight`,
//! `norm.weight`, `head.bias`, …); the official buffers `relative_position_index` and
//! `attn_mask` are derived from the configuration instead of stored.
//! [`load_swin_pretrained`] reads the official checkpoints for fine-tuning.

mod block;
mod pretrained;
mod recompute;
pub mod window;

use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{LayerNorm, Linear};
use burn::prelude::*;
use burn::tensor::Distribution;

use block::{layer_norm, linear};
pub use block::{BlockSpec, DropMasks, Mlp, PatchMerging, SwinBlock, WindowAttention};
pub use pretrained::{
    bicubic_resize, imagenet_22k_to_1k, load_swin_pretrained, HeadLoad, Resized, SwinPretrainedReport, CLASSES_22K,
};

/// The package architecture name of a Swin Transformer (its shape is the package's
/// `kiln.swin`).
pub const SWIN_ARCHITECTURE: &str = "swin";

/// A Swin Transformer's shape (the official config's `MODEL.SWIN` and `DATA.IMG_SIZE`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SwinConfig {
    /// Input side (`DATA.IMG_SIZE`, 224).
    pub img_size: usize,
    /// Patch side (4).
    pub patch_size: usize,
    /// Input channels (3).
    pub in_chans: usize,
    /// Output classes (`MODEL.NUM_CLASSES`).
    pub num_classes: usize,
    /// Channels of the first stage (`EMBED_DIM`).
    pub embed_dim: usize,
    /// Blocks per stage (`DEPTHS`).
    pub depths: Vec<usize>,
    /// Attention heads per stage (`NUM_HEADS`).
    pub num_heads: Vec<usize>,
    /// Window side (`WINDOW_SIZE`).
    pub window_size: usize,
    /// MLP hidden width over the channels (`MLP_RATIO`, 4).
    pub mlp_ratio: f64,
    /// A bias on the query, key and value projection (`QKV_BIAS`, true).
    pub qkv_bias: bool,
    /// An absolute position embedding after the patch embedding (`APE`, false).
    pub ape: bool,
    /// LayerNorm after the patch embedding (`PATCH_NORM`, true).
    pub patch_norm: bool,
    /// Stochastic depth of the last block (`MODEL.DROP_PATH_RATE`), rising linearly from 0.
    pub drop_path_rate: f64,
}

impl SwinConfig {
    /// The official defaults (`config.py`) with `embed_dim`, `depths` and `num_heads`.
    pub fn new(embed_dim: usize, depths: &[usize], num_heads: &[usize], num_classes: usize) -> Self {
        Self {
            img_size: 224,
            patch_size: 4,
            in_chans: 3,
            num_classes,
            embed_dim,
            depths: depths.to_vec(),
            num_heads: num_heads.to_vec(),
            window_size: 7,
            mlp_ratio: 4.0,
            qkv_bias: true,
            ape: false,
            patch_norm: true,
            drop_path_rate: 0.1,
        }
    }

    /// Swin-T (`swin_tiny_patch4_window7_224`).
    pub fn tiny(num_classes: usize) -> Self {
        Self::new(96, &[2, 2, 6, 2], &[3, 6, 12, 24], num_classes)
    }

    /// Swin-S.
    pub fn small(num_classes: usize) -> Self {
        Self::new(96, &[2, 2, 18, 2], &[3, 6, 12, 24], num_classes)
    }

    /// Swin-B.
    pub fn base(num_classes: usize) -> Self {
        Self::new(128, &[2, 2, 18, 2], &[4, 8, 16, 32], num_classes)
    }

    /// Swin-L.
    pub fn large(num_classes: usize) -> Self {
        Self::new(192, &[2, 2, 18, 2], &[6, 12, 24, 48], num_classes)
    }

    /// An error naming the field when the shape cannot be built: every stage's map must be a
    /// whole number of windows (or smaller than one window), heads must divide the channels.
    pub fn validate(&self) -> Result<(), String> {
        if self.depths.is_empty() || self.depths.len() != self.num_heads.len() {
            return Err(format!(
                "DEPTHS {:?} and NUM_HEADS {:?} must name the same number of stages",
                self.depths, self.num_heads
            ));
        }
        if self.patch_size == 0 || self.img_size % self.patch_size != 0 {
            return Err(format!(
                "IMG_SIZE {} is not a multiple of PATCH_SIZE {}",
                self.img_size, self.patch_size
            ));
        }
        let mut side = self.img_size / self.patch_size;
        for (stage, &heads) in self.num_heads.iter().enumerate() {
            let dim = self.embed_dim << stage;
            if heads == 0 || dim % heads != 0 {
                return Err(format!(
                    "NUM_HEADS {heads} does not divide stage {stage}'s {dim} channels"
                ));
            }
            if side > self.window_size && side % self.window_size != 0 {
                return Err(format!(
                    "stage {stage}'s {side}×{side} map is not a whole number of WINDOW_SIZE {} windows",
                    self.window_size
                ));
            }
            if stage + 1 < self.depths.len() {
                if side % 2 != 0 {
                    return Err(format!("stage {stage}'s {side}×{side} map cannot be merged 2×2"));
                }
                side /= 2;
            }
        }
        Ok(())
    }

    /// Builds the network with the official initialisation (linear weights and the bias
    /// tables N(0, 0.02), biases 0, LayerNorms 1 and 0; the patch convolution as PyTorch's
    /// default). Call [`validate`](Self::validate) first: this panics on a shape it refuses.
    pub fn init<B: Backend>(&self, device: &B::Device) -> SwinTransformer<B> {
        self.validate().expect("a valid Swin configuration");
        let side = self.img_size / self.patch_size;
        let total: usize = self.depths.iter().sum();
        let rate = |i: usize| {
            if total > 1 {
                self.drop_path_rate * i as f64 / (total - 1) as f64
            } else {
                0.0
            }
        };
        let mut layers = Vec::with_capacity(self.depths.len());
        let mut first_block = 0;
        for (stage, (&depth, &heads)) in self.depths.iter().zip(&self.num_heads).enumerate() {
            let dim = self.embed_dim << stage;
            let s = side >> stage;
            let blocks = (0..depth)
                .map(|j| {
                    let spec = BlockSpec {
                        dim,
                        resolution: [s, s],
                        heads,
                        window: self.window_size,
                        shifted: j % 2 == 1,
                        mlp_ratio: self.mlp_ratio,
                        qkv_bias: self.qkv_bias,
                        drop_path: rate(first_block + j),
                    };
                    SwinBlock::new(spec, device)
                })
                .collect();
            first_block += depth;
            let downsample = (stage + 1 < self.depths.len()).then(|| PatchMerging::new(dim, [s, s], device));
            layers.push(BasicLayer { blocks, downsample });
        }
        let features = self.embed_dim << (self.depths.len() - 1);
        crate::params::materialized(SwinTransformer {
            patch_embed: PatchEmbed {
                proj: Conv2dConfig::new([self.in_chans, self.embed_dim], [self.patch_size; 2])
                    .with_stride([self.patch_size; 2])
                    .init(device),
                norm: self.patch_norm.then(|| layer_norm(self.embed_dim, device)),
            },
            absolute_pos_embed: self.ape.then(|| {
                Param::from_tensor(Tensor::random(
                    [1, side * side, self.embed_dim],
                    Distribution::Normal(0.0, 0.02),
                    device,
                ))
            }),
            layers,
            norm: layer_norm(features, device),
            head: linear(features, self.num_classes, true, device),
        })
    }
}

/// The classification package of a Swin Transformer of shape `config` trained on
/// `class_names`: Swin-Transformer's evaluation transform (with `crop`, `TEST.CROP`: the
/// shorter side resized to `img_size · 256/224` with `interpolation` and the centre
/// `img_size` cropped; without: resized to `img_size × img_size`; ImageNet's mean and
/// deviation), the shape in `kiln.swin`.
pub fn swin_package_config(
    config: &SwinConfig,
    class_names: &[String],
    interpolation: crate::package::Interpolation,
    crop: bool,
) -> crate::PackageConfig {
    let size = config.img_size;
    let mut input = crate::package::InputSpec::center_crop(
        3,
        size,
        size * 256 / 224,
        vec![0.485, 0.456, 0.406],
        vec![0.229, 0.224, 0.225],
    );
    input.interpolation = interpolation;
    if !crop {
        (input.resize, input.resize_shorter) = (crate::package::ResizeMode::Stretch, 0);
    }
    let labels = class_names.iter().cloned().map(serde_json::Value::from).collect();
    let mut package = crate::PackageConfig::image_classification(SWIN_ARCHITECTURE, input, labels);
    package.kiln.swin = Some(config.clone());
    package
}

/// Whether the parameter at `path` (a state-dict key) of rank `rank` takes AdamW's weight
/// decay in the official recipe (`set_weight_decay` with the model's `no_weight_decay` and
/// `no_weight_decay_keywords`): not the rank-1 parameters (LayerNorm weights, every bias), not
/// `absolute_pos_embed`, not any `relative_position_bias_table`.
pub fn takes_weight_decay(path: &str, rank: usize) -> bool {
    rank > 1
        && !path.ends_with(".bias")
        && path != "absolute_pos_embed"
        && !path.contains("relative_position_bias_table")
}

/// The patch embedding: a `patch × patch` convolution of stride `patch`, then LayerNorm.
#[derive(Module, Debug)]
pub struct PatchEmbed<B: Backend> {
    /// `in_chans → embed_dim`.
    pub proj: Conv2d<B>,
    /// With `PATCH_NORM`.
    pub norm: Option<LayerNorm<B>>,
}

/// One stage: its blocks, then patch merging (all stages but the last).
#[derive(Module, Debug)]
pub struct BasicLayer<B: Backend> {
    /// The blocks, unshifted and shifted in turn.
    pub blocks: Vec<SwinBlock<B>>,
    /// Patch merging into the next stage.
    pub downsample: Option<PatchMerging<B>>,
}

/// A Swin Transformer: [`SwinConfig::init`] builds one, [`forward`](Self::forward) gives the
/// logits.
#[derive(Module, Debug)]
pub struct SwinTransformer<B: Backend> {
    /// Patch embedding.
    pub patch_embed: PatchEmbed<B>,
    /// With `APE`: `[1, patches, embed_dim]`.
    pub absolute_pos_embed: Option<Param<Tensor<B, 3>>>,
    /// The stages.
    pub layers: Vec<BasicLayer<B>>,
    /// The final LayerNorm.
    pub norm: LayerNorm<B>,
    /// The classifier.
    pub head: Linear<B>,
}

impl<B: Backend> SwinTransformer<B> {
    /// The pooled features `[N, C]` of images `[N, 3, H, W]` (`forward_features`).
    pub fn forward_features(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        let mut x = self.embed(images);
        for layer in &self.layers {
            for block in &layer.blocks {
                x = block.forward(x);
            }
            if let Some(merge) = &layer.downsample {
                x = merge.forward(x);
            }
        }
        self.pool(x)
    }

    /// The patch embedding of images `[N, 3, H, W]` as tokens `[N, L, C]` (with the absolute
    /// position embedding, if any).
    pub fn embed(&self, images: Tensor<B, 4>) -> Tensor<B, 3> {
        let x = crate::gpu::conv2d(&self.patch_embed.proj, images);
        let [n, c, h, w] = x.dims();
        let mut x = x.reshape([n, c, h * w]).swap_dims(1, 2);
        if let Some(ln) = &self.patch_embed.norm {
            x = block::norm(ln, x);
        }
        if let Some(ape) = &self.absolute_pos_embed {
            x = x + ape.val();
        }
        x
    }

    /// The last stage's tokens `[N, L, C]`, normalised and averaged: `[N, C]`.
    pub fn pool(&self, x: Tensor<B, 3>) -> Tensor<B, 2> {
        let x = block::norm(&self.norm, x);
        x.mean_dim(1).squeeze_dim(1)
    }

    /// Logits `[N, classes]` of images `[N, 3, H, W]`.
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        self.head.forward(self.forward_features(images))
    }

    /// Trainable parameters (the official count: buffers left out).
    pub fn num_trainable_params(&self) -> usize {
        crate::params::trainable_params(self)
    }
}

#[cfg(test)]
mod tests;
