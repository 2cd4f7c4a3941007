//! BatchNorm's forward in a layout burn-flex runs fast, and LayerNorm's with the CPU training
//! backend's fused op.

mod fold;

pub use fold::{conv_optional_batch_norm, fold_into};

use burn::nn::{BatchNorm, LayerNorm};
use burn::prelude::*;
use burn::tensor::{DType, FloatDType};

/// `ln(x)`, normalising over the last dimension; `epsilon` must be the ε `ln` was built with
/// (burn keeps it private). In training on the CPU backend (`Autodiff<Flex>`, f32) this is one
/// fused op with its own backward ([`crate::cpu::layer_norm`]); every other backend and dtype
/// runs burn's `LayerNorm::forward`.
pub fn layer_norm<B: Backend, const D: usize>(ln: &LayerNorm<B>, epsilon: f64, x: Tensor<B, D>) -> Tensor<B, D> {
    if B::ad_enabled(&x.device()) {
        if let Some(y) = crate::cpu::layer_norm::train(ln, epsilon, &x) {
            return y;
        }
    }
    ln.forward(x)
}

/// `bn(x)` for `[N, C, H, W]` with burn's `BatchNorm` semantics (batch statistics and a
/// momentum update of the running statistics on an autodiff backend, running statistics
/// otherwise), computed on the `[N·C, H·W]` view: burn-flex broadcasts a `[N·C, 1]` column
/// about 5× faster than a `[1, C, 1, 1]` tensor (a `[32, 64, 112, 112]` multiply: 70 ms
/// against 372 ms), and burn's own forward makes four or five such passes.
///
/// Half-precision inputs (mixed-precision training) are normalised in f32, as PyTorch's
/// autocast runs BatchNorm, and the result is cast back; f32 inputs pass through unchanged.
///
/// In training on the CPU backend (`Autodiff<Flex>`, f32) the normalisation and its backward
/// are one fused op instead ([`crate::cpu::batch_norm`]), with the same results.
pub fn batch_norm<B: Backend>(bn: &BatchNorm<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let device = x.device();
    if B::ad_enabled(&device) {
        if let Some((y, mean, var)) = crate::cpu::batch_norm::train(bn, &x) {
            let vector = |v: Vec<f32>| {
                let len = v.len();
                Tensor::<B, 1>::from_data(TensorData::new(v, [len]), &device)
            };
            update_running(bn, vector(mean), vector(var), &device);
            return y;
        }
    }
    let dtype = x.dtype();
    let [n, c, h, w] = x.dims();
    let rows = to_f32(x).reshape([n * c, h * w]);
    let gamma = to_f32(bn.gamma.val());
    let beta = to_f32(bn.beta.val());
    // A per-channel vector `[C]` as one value per row of the `[N·C, H·W]` view.
    let per_row = |v: Tensor<B, 1>| v.unsqueeze_dim::<2>(0).repeat_dim(0, n).reshape([n * c, 1]);
    // The per-channel mean of per-row values `[N·C, 1]` (every row holds H·W values).
    let channel_mean = |v: Tensor<B, 2>| v.reshape([n, c]).mean_dim(0).reshape([c]);
    let y = if B::ad_enabled(&device) {
        let mean = channel_mean(rows.clone().mean_dim(1));
        let centered = rows.sub(per_row(mean.clone()));
        let var = channel_mean(centered.clone().square().mean_dim(1));
        update_running(bn, mean, var.clone(), &device);
        let scale = gamma.div(var.add_scalar(bn.epsilon).sqrt());
        centered.mul(per_row(scale)).add(per_row(beta))
    } else {
        let mean = bn.running_mean.value().to_device(&device);
        let var = bn.running_var.value().to_device(&device);
        let scale = gamma.div(var.add_scalar(bn.epsilon).sqrt());
        let shift = beta.sub(mean.mul(scale.clone()));
        rows.mul(per_row(scale)).add(per_row(shift))
    };
    let y = y.reshape([n, c, h, w]);
    if dtype == DType::F32 {
        y
    } else {
        y.cast(dtype)
    }
}

/// `t` in f32 (itself, with no extra graph node, when it already is).
fn to_f32<B: Backend, const D: usize>(t: Tensor<B, D>) -> Tensor<B, D> {
    if t.dtype() == DType::F32 {
        t
    } else {
        t.cast(FloatDType::F32)
    }
}

/// burn's (and torch's) running-statistics update: `running = (1 − m) · running + m · batch`
/// (the variance is the biased batch variance, as burn computes it).
fn update_running<B: Backend>(bn: &BatchNorm<B>, mean: Tensor<B, 1>, var: Tensor<B, 1>, device: &B::Device) {
    let m = bn.momentum;
    let running_mean = bn.running_mean.value_sync().to_device(device);
    let running_var = bn.running_var.value_sync().to_device(device);
    let running_mean = running_mean.mul_scalar(1.0 - m).add(mean.detach().mul_scalar(m));
    let running_var = running_var.mul_scalar(1.0 - m).add(var.detach().mul_scalar(m));
    bn.running_mean.update(running_mean.detach());
    bn.running_var.update(running_var.detach());
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use burn::module::{Param, RunningState};
    use burn::nn::BatchNormConfig;
    use burn::tensor::Distribution;
    use burn_flex::Flex;

    /// A BatchNorm over 5 channels with non-trivial weights and running statistics.
    fn trained_bn<B: Backend>(device: &B::Device) -> BatchNorm<B> {
        let bn = BatchNormConfig::new(5).init::<B>(device);
        let t = |values: [f32; 5]| Tensor::<B, 1>::from_floats(values, device);
        BatchNorm {
            gamma: Param::from_tensor(t([0.5, 1.5, -1.0, 2.0, 0.1])),
            beta: Param::from_tensor(t([0.0, -0.3, 0.7, 1.0, -2.0])),
            running_mean: RunningState::new(t([0.1, -0.2, 0.3, 1.5, -1.0])),
            running_var: RunningState::new(t([1.0, 0.25, 4.0, 0.01, 2.5])),
            ..bn
        }
    }

    #[test]
    fn evaluation_equals_burns_batch_norm() {
        let device = Default::default();
        let bn = trained_bn::<Flex>(&device);
        let x = Tensor::<Flex, 4>::random([3, 5, 4, 6], Distribution::Normal(0.0, 2.0), &device);
        let want: Vec<f32> = bn.forward(x.clone()).into_data().to_vec().unwrap();
        let got: Vec<f32> = batch_norm(&bn, x).into_data().to_vec().unwrap();
        close(got, want, "evaluation output");
        // Channel 3 at a known input: (1.5 - 1.5) / 0.1 · 2 + 1 = 1.
        let x = Tensor::<Flex, 4>::full([1, 5, 1, 1], 1.5, &device);
        let y: Vec<f32> = batch_norm(&bn, x).into_data().to_vec().unwrap();
        assert!((y[3] - 1.0).abs() < 1e-5, "{y:?}");
    }

    fn close(got: Vec<f32>, want: Vec<f32>, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "{what}: {g} vs {w}");
        }
    }

    #[test]
    fn the_cpu_training_backend_takes_the_fused_op() {
        let device = Default::default();
        let x = Tensor::<Autodiff<Flex>, 4>::random([2, 5, 2, 2], Distribution::Default, &device);
        assert!(crate::cpu::batch_norm::train(&trained_bn::<Autodiff<Flex>>(&device), &x).is_some());
        let x = Tensor::<Flex, 4>::random([2, 5, 2, 2], Distribution::Default, &device);
        assert!(crate::cpu::batch_norm::train(&trained_bn::<Flex>(&device), &x).is_none());
    }

    #[test]
    fn training_matches_burns_batch_norm_with_gradients() {
        type Ad = Autodiff<Flex>;
        let device = Default::default();
        let x = Tensor::<Ad, 4>::random([4, 5, 3, 3], Distribution::Normal(1.0, 2.0), &device).require_grad();
        let weights = Tensor::<Ad, 4>::random([4, 5, 3, 3], Distribution::Default, &device);
        let ours = trained_bn::<Ad>(&device);
        let theirs = trained_bn::<Ad>(&device);
        let y_ours = batch_norm(&ours, x.clone());
        let y_theirs = theirs.forward(x.clone());
        let vec = |t: Tensor<Flex, 4>| t.into_data().to_vec::<f32>().unwrap();
        close(vec(y_ours.clone().inner()), vec(y_theirs.clone().inner()), "output");
        let vec1 = |t: Tensor<Flex, 1>| t.into_data().to_vec::<f32>().unwrap();
        close(
            vec1(ours.running_mean.value().inner()),
            vec1(theirs.running_mean.value().inner()),
            "running mean",
        );
        close(
            vec1(ours.running_var.value().inner()),
            vec1(theirs.running_var.value().inner()),
            "running var",
        );
        let g_ours = (y_ours * weights.clone()).sum().backward();
        let g_theirs = (y_theirs * weights).sum().backward();
        close(
            vec(x.grad(&g_ours).unwrap()),
            vec(x.grad(&g_theirs).unwrap()),
            "input gradient",
        );
        close(
            vec1(ours.gamma.val().grad(&g_ours).unwrap()),
            vec1(theirs.gamma.val().grad(&g_theirs).unwrap()),
            "gamma gradient",
        );
        close(
            vec1(ours.beta.val().grad(&g_ours).unwrap()),
            vec1(theirs.beta.val().grad(&g_theirs).unwrap()),
            "beta gradient",
        );
    }
}
