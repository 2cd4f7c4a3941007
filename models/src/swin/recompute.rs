//! Activation checkpointing for Swin (`TRAIN.USE_CHECKPOINT`, main.py's `--use-checkpoint`):
//! the official model runs each block under `torch.utils.checkpoint`, keeping only the block's
//! input and running its forward again in the backward pass. Here the whole network runs
//! first without a graph (the inner backend), keeping each block's and each patch merging's
//! input and the stochastic-depth masks it drew; then, from the loss backwards, each segment
//! runs again on its saved input under autodiff and is differentiated alone, its input's
//! gradient feeding the segment before it. Memory holds one segment's activations at a time
//! (plus the saved inputs) instead of the whole network's; the price is a second forward.

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

use super::{DropMasks, PatchMerging, SwinBlock, SwinTransformer};

/// One segment of the network and what the first pass kept of it: its input, and for a
/// block the stochastic-depth masks it drew.
enum Saved<'a, B: AutodiffBackend> {
    Block(&'a SwinBlock<B>, Tensor<B::InnerBackend, 3>, DropMasks<B::InnerBackend>),
    Merge(&'a PatchMerging<B>, Tensor<B::InnerBackend, 3>),
}

/// Moves the gradient of every parameter of the visited module from `grads` into `out`.
struct Collect<'a, B: AutodiffBackend> {
    grads: &'a mut B::Gradients,
    out: &'a mut GradientsParams,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Collect<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(grad) = param.val().grad_remove(self.grads) {
            self.out.register::<B::InnerBackend, D>(param.id, grad);
        }
    }
}

/// `module`'s parameter gradients in `grads`, added to `out`.
fn collect<B: AutodiffBackend, M: AutodiffModule<B>>(module: &M, grads: &mut B::Gradients, out: &mut GradientsParams) {
    module.visit(&mut Collect::<B> { grads, out });
}

/// Differentiates `y` (a segment's output, computed from `x`) against the gradient `g` of
/// the output: the gradients of its parameters in the returned container, and `x`'s.
fn backward_through<B: AutodiffBackend>(
    y: Tensor<B, 3>,
    g: Tensor<B::InnerBackend, 3>,
    x: &Tensor<B, 3>,
) -> (B::Gradients, Option<Tensor<B::InnerBackend, 3>>) {
    let mut grads = (y * Tensor::from_inner(g)).sum().backward();
    let gx = x.grad_remove(&mut grads);
    (grads, gx)
}

impl<B: AutodiffBackend> SwinTransformer<B> {
    /// The loss `loss_of` gives for the logits of `images`, and the gradients of every
    /// parameter of `self` for that loss times `multiplier` (a mixed-precision loss scale, or
    /// 1), with each block's activations recomputed in the backward pass. The gradients are
    /// those of `loss_of(self.forward(images))`, up to rounding, with the same
    /// stochastic-depth draws in both passes.
    pub fn loss_and_grads_recomputed(
        &self,
        images: Tensor<B, 4>,
        multiplier: f64,
        loss_of: impl FnOnce(Tensor<B, 2>) -> Tensor<B, 1>,
    ) -> (Tensor<B, 1>, GradientsParams) {
        let inner = self.valid();
        let inner_device = images.clone().inner().device();
        // The first pass: no graph; each segment's input kept.
        let mut saved = Vec::new();
        let mut x = inner.embed(images.clone().inner());
        for (layer, inner_layer) in self.layers.iter().zip(&inner.layers) {
            for (block, inner_block) in layer.blocks.iter().zip(&inner_layer.blocks) {
                // Drawn as the autodiff forward draws them (this pass runs without autodiff).
                let masks = inner_block.drop_masks(x.dims()[0], true, &inner_device);
                saved.push(Saved::Block(block, x.clone(), masks.clone()));
                x = inner_block.forward_masked(x, masks);
            }
            if let (Some(merge), Some(inner_merge)) = (&layer.downsample, &inner_layer.downsample) {
                saved.push(Saved::Merge(merge, x.clone()));
                x = inner_merge.forward(x);
            }
        }
        let mut out = GradientsParams::new();
        // The head and the loss, differentiated from the last stage's output.
        let last = Tensor::<B, 3>::from_inner(x).require_grad();
        let loss = loss_of(self.head.forward(self.pool(last.clone())));
        let scaled = if multiplier == 1.0 {
            loss.clone()
        } else {
            loss.clone().mul_scalar(multiplier)
        };
        let mut grads = scaled.backward();
        collect(&self.norm, &mut grads, &mut out);
        collect(&self.head, &mut grads, &mut out);
        let Some(mut g) = last.grad_remove(&mut grads) else {
            return (loss, out);
        };
        // Each segment again, last first, on its saved input.
        for kept in saved.into_iter().rev() {
            let gx = match kept {
                Saved::Block(block, input, masks) => {
                    let x = Tensor::<B, 3>::from_inner(input).require_grad();
                    let masks = masks.map(|m| m.map(Tensor::<B, 3>::from_inner));
                    let (mut grads, gx) = backward_through(block.forward_masked(x.clone(), masks), g, &x);
                    collect(block, &mut grads, &mut out);
                    gx
                }
                Saved::Merge(merge, input) => {
                    let x = Tensor::<B, 3>::from_inner(input).require_grad();
                    let (mut grads, gx) = backward_through(merge.forward(x.clone()), g, &x);
                    collect(merge, &mut grads, &mut out);
                    gx
                }
            };
            let Some(next) = gx else {
                return (loss, out);
            };
            g = next;
        }
        // The patch embedding, from the images.
        let tokens = self.embed(images);
        let mut grads = (tokens * Tensor::from_inner(g)).sum().backward();
        collect(&self.patch_embed, &mut grads, &mut out);
        if let Some(ape) = &self.absolute_pos_embed {
            if let Some(grad) = ape.val().grad_remove(&mut grads) {
                out.register::<B::InnerBackend, 3>(ape.id, grad);
            }
        }
        (loss, out)
    }
}
