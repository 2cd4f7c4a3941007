//! A convolution followed by a BatchNorm, with the BatchNorm folded into the convolution's
//! weights in inference where that is cheaper.
//!
//! With running statistics, `bn(conv(x)) = conv'(x)` where, per output channel `c`,
//! `s_c = γ_c / √(var_c + ε)`, `W'_c = s_c · W_c` and `b'_c = s_c · (b_c − mean_c) + β_c`
//! (`b_c = 0` for a convolution without bias). The BatchNorm's passes over the activation (a
//! multiply and an add) are then gone: the convolution writes its bias as it computes.
//! Folding costs one pass over the weights instead, so it is done when one image's output
//! positions per channel outnumber the weights per channel (`H·W / stride² > C_in/groups · KH ·
//! KW`): always at the start of a network, never for ResNet's last stage (49 positions against
//! 4,608 weights). The rule ignores the batch size on purpose: folded and unfolded results
//! differ by rounding, and folding must not make a served image's result depend on the images
//! batched with it. (burn-flex's choice of convolution kernel can: 3×3 stride-1 convolutions
//! with 64 channels or more run as Winograd F(2×2, 3×3) once the batch has 256 output tiles,
//! a rounding-level difference too; the MNIST package has no such layer.)
//!
//! A model that only evaluates can instead fold every BatchNorm once, ahead of its passes
//! ([`fold_into`]): the folding then costs nothing per call, so it pays for every layer, and
//! the result still does not depend on the batch. ResNet and YOLOX models do so
//! (`fold_batch_norms`) wherever kiln evaluates or serves them; the per-call rule above is
//! for a model evaluated without that step.

use burn::module::Param;
use burn::nn::conv::Conv2d;
use burn::nn::BatchNorm;
use burn::prelude::*;
use burn::tensor::DType;

use super::batch_norm;
use crate::gpu::conv2d;

/// `bn(conv(x))` for `x` `[N, C_in, H, W]`: [`batch_norm`] of the convolution's output in
/// training, and in inference too unless folding the BatchNorm into the convolution is
/// cheaper (f32 tensors only); both give the same values up to rounding.
pub fn conv_batch_norm<B: Backend>(conv: &Conv2d<B>, bn: &BatchNorm<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    if folding_pays(conv, &x) {
        conv2d(&folded(conv, bn), x)
    } else {
        batch_norm(bn, conv2d(conv, x))
    }
}

/// `bn(conv(x))` where `bn` is present, `conv(x)` where it is `None`: folded into `conv`
/// already by [`fold_into`].
pub fn conv_optional_batch_norm<B: Backend>(
    conv: &Conv2d<B>,
    bn: &Option<BatchNorm<B>>,
    x: Tensor<B, 4>,
) -> Tensor<B, 4> {
    match bn {
        Some(bn) => conv_batch_norm(conv, bn, x),
        None => conv2d(conv, x),
    }
}

/// Folds `bn` with its running statistics into `conv` for inference, once, and leaves `bn`
/// `None`; then `conv(x)` equals the former `bn(conv(x))` up to rounding. A no-op where `bn`
/// is already `None`, and for convolutions whose weights are not f32 (they keep their
/// BatchNorm). A folded pair is for evaluation only: training it would train a network
/// without that BatchNorm.
pub fn fold_into<B: Backend>(conv: &mut Conv2d<B>, bn: &mut Option<BatchNorm<B>>) {
    if conv.weight.dtype() != DType::F32 {
        return;
    }
    if let Some(norm) = bn.take() {
        *conv = folded(conv, &norm);
    }
}

/// Whether `conv_batch_norm` folds for this input: inference, f32, and more output positions
/// per image and channel than weights per channel.
fn folding_pays<B: Backend>(conv: &Conv2d<B>, x: &Tensor<B, 4>) -> bool {
    if B::ad_enabled(&x.device()) || x.dtype() != DType::F32 || conv.weight.dtype() != DType::F32 {
        return false;
    }
    let [_, _, h, w] = x.dims();
    let [_, per_group, kh, kw] = conv.weight.dims();
    let positions = (h / conv.stride[0]).max(1) * (w / conv.stride[1]).max(1);
    positions > per_group * kh * kw
}

/// The convolution computing `bn(conv(x))` with `bn`'s running statistics.
fn folded<B: Backend>(conv: &Conv2d<B>, bn: &BatchNorm<B>) -> Conv2d<B> {
    let device = conv.weight.device();
    let mean = bn.running_mean.value().to_device(&device);
    let var = bn.running_var.value().to_device(&device);
    let scale = bn.gamma.val().div(var.add_scalar(bn.epsilon).sqrt());
    let bias = match &conv.bias {
        Some(bias) => bias.val().sub(mean),
        None => mean.neg(),
    };
    let bias = bias.mul(scale.clone()).add(bn.beta.val());
    // Scaled as a [C_out, rest] matrix by a [C_out, 1] column, the layout burn-flex
    // broadcasts fastest.
    let dims = conv.weight.dims();
    let weight = conv
        .weight
        .val()
        .reshape([dims[0], dims[1] * dims[2] * dims[3]])
        .mul(scale.reshape([dims[0], 1]))
        .reshape(dims);
    Conv2d {
        weight: Param::from_tensor(weight),
        bias: Some(Param::from_tensor(bias)),
        ..conv.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use burn::module::RunningState;
    use burn::nn::conv::Conv2dConfig;
    use burn::nn::{BatchNormConfig, PaddingConfig2d};
    use burn::tensor::Distribution;
    use burn_flex::Flex;

    /// A BatchNorm over `c` channels with weights and running statistics far from the defaults.
    fn trained_bn<B: Backend>(c: usize, device: &B::Device) -> BatchNorm<B> {
        let bn = BatchNormConfig::new(c).with_epsilon(1e-3).init::<B>(device);
        let vector = |low: f64, high: f64| Tensor::<B, 1>::random([c], Distribution::Uniform(low, high), device);
        BatchNorm {
            gamma: Param::from_tensor(vector(-2.0, 2.0)),
            beta: Param::from_tensor(vector(-1.0, 1.0)),
            running_mean: RunningState::new(vector(-0.5, 0.5)),
            running_var: RunningState::new(vector(0.05, 3.0)),
            ..bn
        }
    }

    fn conv<B: Backend>(channels: [usize; 2], kernel: usize, stride: usize, groups: usize, bias: bool) -> Conv2d<B> {
        let pad = kernel / 2;
        Conv2dConfig::new(channels, [kernel, kernel])
            .with_stride([stride, stride])
            .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
            .with_groups(groups)
            .with_bias(bias)
            .init(&Default::default())
    }

    #[test]
    fn folding_equals_conv_then_batch_norm() {
        type B = Flex;
        let device = Default::default();
        // (channels, kernel, stride, groups, bias): ResNet's 3×3, strided 1×1 and 7×7 stem,
        // YOLOX's depthwise 3×3, and a convolution with a bias.
        let cases = [
            ([8, 16], 3, 1, 1, false),
            ([16, 8], 1, 2, 1, false),
            ([3, 8], 7, 2, 1, false),
            ([8, 8], 3, 1, 8, false),
            ([4, 6], 3, 1, 1, true),
        ];
        for (channels, kernel, stride, groups, bias) in cases {
            let conv = conv::<B>(channels, kernel, stride, groups, bias);
            let bn = trained_bn::<B>(channels[1], &device);
            let x = Tensor::<B, 4>::random([2, channels[0], 32, 32], Distribution::Normal(0.0, 1.0), &device);
            assert!(
                folding_pays(&conv, &x),
                "{channels:?} k{kernel}: the test must take the fold"
            );
            let want: Vec<f32> = batch_norm(&bn, conv.forward(x.clone())).into_data().to_vec().unwrap();
            let got: Vec<f32> = conv_batch_norm(&conv, &bn, x).into_data().to_vec().unwrap();
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                    "{channels:?} k{kernel}: {g} vs {w}"
                );
            }
        }
    }

    #[test]
    fn folded_value_matches_the_formula() {
        type B = Flex;
        let device = Default::default();
        // One 1×1 channel: conv(x) = 2x + 0.5; bn: γ 3, β 1, mean 0.5, var 4 − ε.
        let conv = Conv2d {
            weight: Param::from_tensor(Tensor::<B, 4>::full([1, 1, 1, 1], 2.0, &device)),
            bias: Some(Param::from_tensor(Tensor::<B, 1>::full([1], 0.5, &device))),
            ..conv::<B>([1, 1], 1, 1, 1, true)
        };
        let bn = BatchNormConfig::new(1).init::<B>(&device);
        let bn = BatchNorm {
            gamma: Param::from_tensor(Tensor::full([1], 3.0, &device)),
            beta: Param::from_tensor(Tensor::full([1], 1.0, &device)),
            running_mean: RunningState::new(Tensor::full([1], 0.5, &device)),
            running_var: RunningState::new(Tensor::full([1], 4.0 - bn.epsilon, &device)),
            ..bn
        };
        let x = Tensor::<B, 4>::full([1, 1, 2, 2], 1.5, &device);
        assert!(folding_pays(&conv, &x));
        // 3 · (2 · 1.5 + 0.5 − 0.5) / 2 + 1 = 5.5
        let y: Vec<f32> = conv_batch_norm(&conv, &bn, x).into_data().to_vec().unwrap();
        assert_eq!(y.len(), 4);
        assert!(y.iter().all(|v| (v - 5.5).abs() < 1e-5), "{y:?}");
    }

    #[test]
    fn training_and_small_planes_are_not_folded() {
        let device = Default::default();
        let x = Tensor::<Autodiff<Flex>, 4>::random([4, 8, 20, 20], Distribution::Default, &device);
        assert!(!folding_pays(&conv::<Autodiff<Flex>>([8, 16], 3, 1, 1, false), &x));
        // ResNet's last stage: 7 · 7 positions, 512 · 9 weights per channel, at any batch.
        let x = Tensor::<Flex, 4>::zeros([128, 512, 7, 7], &device);
        assert!(!folding_pays(&conv::<Flex>([512, 8], 3, 1, 1, false), &x));
    }
}
