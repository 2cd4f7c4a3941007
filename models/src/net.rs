//! The guide's MNIST `Net` (pytorch/examples' mnist CNN), layer for layer.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig, Relu};
use burn::prelude::*;
use burn::tensor::activation::log_softmax;

use crate::dropout::dropout;
use crate::gpu::conv2d;
use crate::package::{InputSpec, PackageConfig};
use crate::pool::max_pool_relu;

/// Hyper-parameters of [`Net`]; the defaults are the guide's.
#[derive(Config, Debug)]
pub struct NetConfig {
    /// Output classes.
    #[config(default = 10)]
    pub num_classes: usize,
    /// Dropout after the pooling layer.
    #[config(default = 0.25)]
    pub dropout1: f64,
    /// Dropout after the first fully connected layer.
    #[config(default = 0.5)]
    pub dropout2: f64,
}

/// Conv(1→32, 3×3) → ReLU → Conv(32→64, 3×3) → ReLU → MaxPool 2×2 → Dropout 0.25 → flatten
/// (9216) → Linear(9216→128) → ReLU → Dropout 0.5 → Linear(128→10) → log_softmax.
///
/// Parameter names (`conv1.weight`, `fc1.bias`, …) are the PyTorch original's. Dropout is
/// active only on an autodiff backend (training); use `model.valid()` to evaluate.
#[derive(Module, Debug)]
pub struct Net<B: Backend> {
    conv1: Conv2d<B>,
    conv2: Conv2d<B>,
    pool: MaxPool2d,
    dropout1: Dropout,
    fc1: Linear<B>,
    dropout2: Dropout,
    fc2: Linear<B>,
    activation: Relu,
}

/// Features entering `fc1`: 64 channels × 12 × 12.
const FLAT_FEATURES: usize = 64 * 12 * 12;

impl NetConfig {
    /// Builds the network with PyTorch's default initialisation (uniform ±1/√fan_in).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Net<B> {
        crate::params::materialized(Net {
            conv1: Conv2dConfig::new([1, 32], [3, 3]).init(device),
            conv2: Conv2dConfig::new([32, 64], [3, 3]).init(device),
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
            dropout1: DropoutConfig::new(self.dropout1).init(),
            fc1: LinearConfig::new(FLAT_FEATURES, 128).init(device),
            dropout2: DropoutConfig::new(self.dropout2).init(),
            fc2: LinearConfig::new(128, self.num_classes).init(device),
            activation: Relu::new(),
        })
    }
}

impl<B: Backend> Net<B> {
    /// Log-probabilities `[N, classes]` for images `[N, 1, 28, 28]` (normalised).
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        let x = self.activation.forward(conv2d(&self.conv1, images));
        // The guide's `max_pool2d(relu(conv2(x)))`, pooled first: ReLU is monotone, so the two
        // orders give the same values and route the same gradients (to the window's maximum
        // when it is positive, nowhere otherwise), and pooling then ReLU is one fused op on
        // kiln's CPU training backend.
        let x = max_pool_relu(&self.pool, conv2d(&self.conv2, x));
        let x = dropout(&self.dropout1, x);
        let x = x.flatten::<2>(1, 3);
        let x = self.activation.forward(self.fc1.forward(x));
        let x = dropout(&self.dropout2, x);
        log_softmax(self.fc2.forward(x), 1)
    }
}

/// The architecture name [`Net`] is recorded under in a model package.
pub const NET_ARCHITECTURE: &str = "mnist_net";
/// The side of [`Net`]'s square grayscale input.
pub const NET_INPUT_SIDE: usize = 28;
/// The normalisation the guide's `train.py` trains with (MNIST's pixel mean and standard
/// deviation), which a package's input must repeat.
pub const NET_INPUT_MEAN: f32 = 0.1307;
/// See [`NET_INPUT_MEAN`].
pub const NET_INPUT_STD: f32 = 0.3081;

/// The package configuration for a trained [`Net`]: grayscale 28×28 input, shorter side
/// resized to 28, MNIST normalisation, labels 0–9 (the guide's `customize_service`).
pub fn net_package_config(config: &NetConfig) -> PackageConfig {
    let side = NET_INPUT_SIDE;
    let input = InputSpec::center_crop(1, side, side, vec![NET_INPUT_MEAN], vec![NET_INPUT_STD]);
    let labels = (0..config.num_classes).map(serde_json::Value::from).collect();
    PackageConfig::image_classification(NET_ARCHITECTURE, input, labels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use burn::module::AutodiffModule;
    use burn_flex::Flex;

    #[test]
    fn parameter_count_is_the_guides() {
        let net = NetConfig::new().init::<Flex>(&Default::default());
        assert_eq!(net.num_params(), 1_199_882);
    }

    #[test]
    fn outputs_log_probabilities() {
        let device = Default::default();
        let net = NetConfig::new().init::<Flex>(&device);
        let x = Tensor::<Flex, 4>::random([3, 1, 28, 28], burn::tensor::Distribution::Default, &device);
        let out = net.forward(x);
        assert_eq!(out.dims(), [3, 10]);
        let sums = out.exp().sum_dim(1).into_data().to_vec::<f32>().unwrap();
        for s in sums {
            assert!((s - 1.0).abs() < 1e-5, "{s}");
        }
    }

    /// Pooling before the second ReLU gives the guide's order's values and gradients, to the
    /// bit: inputs with negative and positive windows, dropout off.
    #[test]
    fn pooling_before_relu_is_the_guides_order() {
        type Ad = Autodiff<Flex>;
        let device = Default::default();
        Ad::seed(&device, 4);
        let net = NetConfig::new()
            .with_dropout1(0.0)
            .with_dropout2(0.0)
            .init::<Ad>(&device);
        let x = Tensor::<Ad, 4>::random([4, 1, 28, 28], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
        let guide = |net: &Net<Ad>| {
            let x = net.activation.forward(net.conv1.forward(x.clone()));
            let x = net.pool.forward(net.activation.forward(net.conv2.forward(x)));
            let x = net.activation.forward(net.fc1.forward(x.flatten::<2>(1, 3)));
            log_softmax(net.fc2.forward(x), 1)
        };
        let floats = |t: Tensor<Flex, 4>| t.into_data().to_vec::<f32>().unwrap();
        let mut runs = Vec::new();
        for out in [net.forward(x.clone()), guide(&net)] {
            // Weights the classes unevenly so that every gradient path carries a signal.
            let weights =
                Tensor::<Ad, 2>::from_floats([[1.0, -2.0, 3.0, 0.5, -1.0, 2.0, 0.0, 1.5, -0.5, 4.0]], &device);
            let grads = (out.clone() * weights).sum().backward();
            let out: Vec<f32> = out.into_data().to_vec().unwrap();
            let conv1 = floats(net.conv1.weight.grad(&grads).unwrap());
            let conv2 = floats(net.conv2.weight.grad(&grads).unwrap());
            runs.push((out, conv1, conv2));
        }
        assert_eq!(runs[0], runs[1]);
        assert!(runs[0].2.iter().any(|&g| g != 0.0), "the gradients must carry a signal");
    }

    #[test]
    fn dropout_only_in_training() {
        type Ad = Autodiff<Flex>;
        let device = Default::default();
        let net = NetConfig::new().init::<Ad>(&device);
        let x = Tensor::<Ad, 4>::ones([2, 1, 28, 28], &device);
        let a = net.forward(x.clone()).into_data();
        let b = net.forward(x.clone()).into_data();
        assert_ne!(a, b, "training forward passes must differ (dropout active)");

        let eval = net.valid();
        let x = x.inner();
        let a = eval.forward(x.clone()).into_data();
        let b = eval.forward(x).into_data();
        assert_eq!(a, b, "evaluation forward passes must be deterministic");
    }
}
