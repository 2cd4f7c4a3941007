//! Test scaffolding shared by the ResNet and YOLOX BatchNorm-folding tests: a model trained a
//! few steps (so its BatchNorms are far from their initial state), a count of the BatchNorms
//! left, and the comparison of folded against unfolded outputs.

use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::optim::{GradientsParams, Optimizer, SgdConfig};
use burn::prelude::*;
use burn::tensor::Distribution;
use burn_flex::Flex;
use burn_store::ModuleSnapshot;

/// The CPU training backend the tests train on.
pub(crate) type Ad = Autodiff<Flex>;

/// `model` after three SGD steps (lr 0.01) that lower `loss` on random inputs of
/// `shape`: γ, β and the running statistics of every BatchNorm move.
pub(crate) fn trained<M: AutodiffModule<Ad>>(
    mut model: M,
    shape: [usize; 4],
    loss: impl Fn(&M, Tensor<Ad, 4>) -> Tensor<Ad, 1>,
) -> M {
    let device = Default::default();
    let mut optim = SgdConfig::new().init::<Ad, M>();
    for _ in 0..3 {
        let x = Tensor::<Ad, 4>::random(shape, Distribution::Normal(0.5, 1.0), &device);
        let grads = GradientsParams::from_grads(loss(&model, x).backward(), &model);
        model = optim.step(0.01, model, grads);
    }
    model
}

/// How many BatchNorms `model` holds (its running means).
pub(crate) fn batch_norms<M: ModuleSnapshot<Flex>>(model: &M) -> usize {
    model
        .collect(None, None, false)
        .iter()
        .filter(|s| s.full_path().ends_with("running_mean"))
        .count()
}

/// Asserts that `got` equals `want` within 1e-4 of `want`'s largest magnitude.
pub(crate) fn assert_close(got: &[f32], want: &[f32], what: &str) {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(scale > 0.0 && scale.is_finite(), "{what}: outputs {want:?}");
    assert_eq!(got.len(), want.len(), "{what}");
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() <= 1e-4 * scale, "{what}: {g} vs {w} (largest {scale})");
    }
}
