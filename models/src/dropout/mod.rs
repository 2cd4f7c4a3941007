//! Dropout in training, as burn's `Dropout` computes it (`x · Bernoulli(1 − p) / (1 − p)`,
//! the identity in inference), with a fused op on kiln's CPU training backend.

use burn::nn::Dropout;
use burn::prelude::*;

/// `dropout.forward(x)`. On `Autodiff<Flex>` with f32 tensors the mask, the scaling and their
/// backward are one fused op ([`crate::cpu::dropout`]): one pass forward and one backward, instead of burn's
/// random tensor, two multiplies and their two backward multiplies. Other backends and
/// dtypes, and inference, run burn's own module.
pub fn dropout<B: Backend, const D: usize>(dropout: &Dropout, x: Tensor<B, D>) -> Tensor<B, D> {
    if B::ad_enabled(&x.device()) && dropout.prob > 0.0 {
        if let Some(y) = crate::cpu::dropout::train(dropout.prob, &x) {
            return y;
        }
    }
    dropout.forward(x)
}
