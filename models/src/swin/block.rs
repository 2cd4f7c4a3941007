//! Swin's building blocks, with the official module and parameter names: window attention
//! (`attn.qkv`, `attn.proj`, `attn.relative_position_bias_table`), the MLP (`mlp.fc1`,
//! `mlp.fc2`), the (shifted-)window block (`norm1`, `attn`, `norm2`, `mlp`) and patch merging
//! (`downsample.norm`, `downsample.reduction`).

use burn::module::Param;
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::Distribution;

use super::window::{partition, relative_position_index, reverse, shift_mask};

/// The official initialisation of linear layers: weights N(0, 0.02) (timm's `trunc_normal_`
/// cuts at ±2, a hundred standard deviations out), biases 0.
pub(crate) fn linear<B: Backend>(d_in: usize, d_out: usize, bias: bool, device: &B::Device) -> Linear<B> {
    let mut layer = LinearConfig::new(d_in, d_out).with_bias(bias).init(device);
    layer.weight = Param::from_tensor(Tensor::random([d_in, d_out], Distribution::Normal(0.0, 0.02), device));
    if bias {
        layer.bias = Some(Param::from_tensor(Tensor::zeros([d_out], device)));
    }
    layer
}

/// PyTorch's LayerNorm ε, which every Swin LayerNorm uses.
pub(crate) const LAYER_NORM_EPSILON: f64 = 1e-5;

/// LayerNorm with PyTorch's ε (weight 1, bias 0).
pub(crate) fn layer_norm<B: Backend>(dim: usize, device: &B::Device) -> LayerNorm<B> {
    LayerNormConfig::new(dim).with_epsilon(LAYER_NORM_EPSILON).init(device)
}

/// `ln(x)` for a LayerNorm built by [`layer_norm`] ([`crate::norm::layer_norm`]: one fused op
/// in CPU training).
pub(crate) fn norm<B: Backend, const D: usize>(ln: &LayerNorm<B>, x: Tensor<B, D>) -> Tensor<B, D> {
    crate::norm::layer_norm(ln, LAYER_NORM_EPSILON, x)
}

/// Stochastic depth (timm's `DropPath`): in training (an autodiff backend, or `always`), each
/// sample's residual branch is kept with probability `1 − prob` (a `[B, 1, 1]` mask of ones and
/// zeros) and the kept ones scaled by `1 / (1 − prob)` ([`dropped`]); no mask otherwise.
pub(crate) fn drop_path_mask<B: Backend>(
    batch: usize,
    prob: f64,
    always: bool,
    device: &B::Device,
) -> Option<Tensor<B, 3>> {
    (prob != 0.0 && (always || B::ad_enabled(device)))
        .then(|| Tensor::<B, 3>::random([batch, 1, 1], Distribution::Bernoulli(1.0 - prob), device))
}

/// `x` with the samples of `mask` dropped and the others scaled by `1 / (1 − prob)`.
fn dropped<B: Backend>(x: Tensor<B, 3>, mask: Option<Tensor<B, 3>>, prob: f64) -> Tensor<B, 3> {
    match mask {
        Some(m) => {
            let m = m.cast(x.dtype());
            x * m.div_scalar(1.0 - prob)
        }
        None => x,
    }
}

/// The two stochastic-depth masks of one block's pass (attention branch, MLP branch).
pub type DropMasks<B> = [Option<Tensor<B, 3>>; 2];

/// Multi-head self-attention within windows, with a learned bias per relative position.
#[derive(Module, Debug)]
pub struct WindowAttention<B: Backend> {
    /// `[(2·window − 1)², heads]`.
    pub relative_position_bias_table: Param<Tensor<B, 2>>,
    /// Queries, keys and values in one projection.
    pub qkv: Linear<B>,
    /// The output projection.
    pub proj: Linear<B>,
    heads: usize,
    window: usize,
    /// [`relative_position_index`] of the window.
    #[module(skip)]
    index: Vec<i64>,
}

impl<B: Backend> WindowAttention<B> {
    /// Attention over `window × window` windows of `dim` channels in `heads` heads.
    pub fn new(dim: usize, window: usize, heads: usize, qkv_bias: bool, device: &B::Device) -> Self {
        let side = 2 * window - 1;
        Self {
            relative_position_bias_table: Param::from_tensor(Tensor::random(
                [side * side, heads],
                Distribution::Normal(0.0, 0.02),
                device,
            )),
            qkv: linear(dim, 3 * dim, qkv_bias, device),
            proj: linear(dim, dim, true, device),
            heads,
            window,
            index: relative_position_index(window),
        }
    }

    /// `x`: `[windows · B, N, C]`; `mask`: `[windows, N, N]` for shifted windows.
    pub fn forward(&self, x: Tensor<B, 3>, mask: Option<Tensor<B, 3>>) -> Tensor<B, 3> {
        let [bw, n, c] = x.dims();
        let (heads, d) = (self.heads, c / self.heads);
        let qkv = self
            .qkv
            .forward(x)
            .reshape([bw, n, 3, heads, d])
            .permute([2, 0, 3, 1, 4]);
        let part = |i: usize| qkv.clone().slice([i..i + 1]).reshape([bw, heads, n, d]);
        let (q, k, v) = (part(0), part(1), part(2));
        let q = q.mul_scalar((d as f64).powf(-0.5));
        let mut attn = q.matmul(k.swap_dims(2, 3));
        let device = attn.device();
        let index = Tensor::<B, 1, Int>::from_data(TensorData::new(self.index.clone(), [n * n]), &device);
        let bias = self
            .relative_position_bias_table
            .val()
            .select(0, index)
            .reshape([n, n, heads])
            .permute([2, 0, 1]);
        // The bias (and the mask of shifted windows) as one contiguous row added to every
        // image's `[windows · heads · N · N]` scores: burn-flex adds a shared row with its SIMD
        // broadcast kernel, where a permuted `[heads, N, N]` or a `[windows, 1, N, N]` operand
        // would take its scalar strided loop.
        let bias = match mask {
            Some(mask) => {
                // The mask is built in f32; a half-precision forward adds it in f16.
                let mask = mask.cast(attn.dtype());
                let windows = mask.dims()[0];
                (bias.unsqueeze::<4>() + mask.unsqueeze_dim::<4>(1)).reshape([1, windows * heads * n * n])
            }
            None => bias.reshape([1, heads * n * n]),
        };
        let row = bias.dims()[1];
        attn = (attn.reshape([bw * heads * n * n / row, row]) + bias).reshape([bw, heads, n, n]);
        let attn = crate::cpu::activation::softmax_last(attn);
        let out = attn.matmul(v).swap_dims(1, 2).reshape([bw, n, c]);
        self.proj.forward(out)
    }

    /// The window side.
    pub fn window(&self) -> usize {
        self.window
    }
}

/// The MLP of a block: `fc2(gelu(fc1(x)))`.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// `dim → hidden`.
    pub fc1: Linear<B>,
    /// `hidden → dim`.
    pub fc2: Linear<B>,
}

impl<B: Backend> Mlp<B> {
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.fc2.forward(crate::cpu::activation::gelu(self.fc1.forward(x)))
    }
}

/// One Swin block: (shifted-)window attention and an MLP, each a pre-norm residual branch.
#[derive(Module, Debug)]
pub struct SwinBlock<B: Backend> {
    /// Before the attention.
    pub norm1: LayerNorm<B>,
    /// The window attention.
    pub attn: WindowAttention<B>,
    /// Before the MLP.
    pub norm2: LayerNorm<B>,
    /// The MLP.
    pub mlp: Mlp<B>,
    resolution: [usize; 2],
    shift: usize,
    drop_path: f64,
    /// [`shift_mask`] of the map, for shifted blocks.
    #[module(skip)]
    mask: Option<Vec<f32>>,
}

/// How one block is built.
#[derive(Debug, Clone, Copy)]
pub struct BlockSpec {
    /// Channels.
    pub dim: usize,
    /// The map's `[height, width]`.
    pub resolution: [usize; 2],
    /// Attention heads.
    pub heads: usize,
    /// The window side.
    pub window: usize,
    /// Whether this block shifts its windows (every second block).
    pub shifted: bool,
    /// Hidden width of the MLP over `dim`.
    pub mlp_ratio: f64,
    /// A bias on the query, key and value projection.
    pub qkv_bias: bool,
    /// Stochastic depth of this block.
    pub drop_path: f64,
}

impl<B: Backend> SwinBlock<B> {
    /// The block `spec` describes. As the official code, a map no larger than the window is
    /// one window and is not shifted.
    pub fn new(spec: BlockSpec, device: &B::Device) -> Self {
        let [h, w] = spec.resolution;
        let (window, shift) = if h.min(w) <= spec.window {
            (h.min(w), 0)
        } else {
            (spec.window, if spec.shifted { spec.window / 2 } else { 0 })
        };
        let hidden = (spec.dim as f64 * spec.mlp_ratio) as usize;
        Self {
            norm1: layer_norm(spec.dim, device),
            attn: WindowAttention::new(spec.dim, window, spec.heads, spec.qkv_bias, device),
            norm2: layer_norm(spec.dim, device),
            mlp: Mlp {
                fc1: linear(spec.dim, hidden, true, device),
                fc2: linear(hidden, spec.dim, true, device),
            },
            resolution: spec.resolution,
            shift,
            drop_path: spec.drop_path,
            mask: (shift > 0).then(|| shift_mask(h, w, window, shift)),
        }
    }

    /// `x`: `[B, H·W, C]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let masks = self.drop_masks(x.dims()[0], false, &x.device());
        self.forward_masked(x, masks)
    }

    /// This block's stochastic-depth masks for a batch of `batch` (drawn in training, or
    /// `always`).
    pub fn drop_masks(&self, batch: usize, always: bool, device: &B::Device) -> DropMasks<B> {
        [(); 2].map(|_| drop_path_mask(batch, self.drop_path, always, device))
    }

    /// [`forward`](Self::forward) with given stochastic-depth masks (so that a second pass
    /// drops the same samples).
    pub fn forward_masked(&self, x: Tensor<B, 3>, [attn_mask, mlp_mask]: DropMasks<B>) -> Tensor<B, 3> {
        let [b, l, c] = x.dims();
        let [h, w] = self.resolution;
        let window = self.attn.window();
        let shortcut = x.clone();
        let mut map = norm(&self.norm1, x).reshape([b, h, w, c]);
        // The official `torch.roll(x, (-shift, -shift))`: position `i` takes `i + shift`. burn's
        // `roll(shift)` is that (`cat(x[shift..], x[..shift])`, torch.roll's opposite sign).
        let s = self.shift as i64;
        if s > 0 {
            map = map.roll(&[s, s], &[1, 2]);
        }
        let mask = self.mask.as_ref().map(|m| {
            let n = window * window;
            Tensor::<B, 3>::from_data(TensorData::new(m.clone(), [m.len() / (n * n), n, n]), &map.device())
        });
        let windows = self.attn.forward(partition(map, window), mask);
        let mut map = reverse(windows, window, h, w);
        if s > 0 {
            map = map.roll(&[-s, -s], &[1, 2]);
        }
        let x = shortcut + dropped(map.reshape([b, l, c]), attn_mask, self.drop_path);
        let branch = self.mlp.forward(norm(&self.norm2, x.clone()));
        x + dropped(branch, mlp_mask, self.drop_path)
    }
}

/// Patch merging between stages: each 2×2 neighbourhood's channels concatenated (`4C`),
/// normalised and projected to `2C`, halving the map.
#[derive(Module, Debug)]
pub struct PatchMerging<B: Backend> {
    /// `4C → 2C`, without bias.
    pub reduction: Linear<B>,
    /// Over `4C`.
    pub norm: LayerNorm<B>,
    resolution: [usize; 2],
}

impl<B: Backend> PatchMerging<B> {
    /// Merging for a `resolution` map of `dim` channels.
    pub fn new(dim: usize, resolution: [usize; 2], device: &B::Device) -> Self {
        Self {
            reduction: linear(4 * dim, 2 * dim, false, device),
            norm: layer_norm(4 * dim, device),
            resolution,
        }
    }

    /// `x`: `[B, H·W, C]` → `[B, H/2 · W/2, 2C]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let merged = neighbours(x, self.resolution);
        self.reduction.forward(norm(&self.norm, merged))
    }
}

/// Each 2×2 neighbourhood of a `[B, H·W, C]` map as one `4C` vector, `[B, H/2 · W/2, 4C]`, in
/// the official order: (even row, even column), (odd, even), (even, odd), (odd, odd).
pub(crate) fn neighbours<B: Backend>(x: Tensor<B, 3>, [h, w]: [usize; 2]) -> Tensor<B, 3> {
    let [b, _, c] = x.dims();
    x.reshape([b, h / 2, 2, w / 2, 2, c])
        .permute([0, 1, 3, 4, 2, 5])
        .reshape([b, h / 2 * (w / 2), 4 * c])
}
