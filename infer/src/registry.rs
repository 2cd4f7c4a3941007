//! The model registry: one [`ImageModel`] entry per architecture family, chosen by the
//! package's `kiln.architecture`.

use std::path::Path;

use burn::prelude::*;
use burn::tensor::activation::softmax;
use kiln_models::{load_weights, NetConfig, PackageConfig, PackageError, ResNetArch, ResNetConfig, NET_ARCHITECTURE};

/// A loaded model that maps a batch of prepared images to class probabilities.
pub trait ImageModel {
    /// Probabilities `[n, classes]` (row-major) for `n` prepared images laid end to end
    /// (`[n, C, H, W]`).
    fn probabilities(&self, inputs: Vec<f32>, n: usize) -> Vec<f32>;

    /// Number of output classes.
    fn num_classes(&self) -> usize;
}

/// Builds the model a package describes, on `device`, with its weights loaded.
pub fn load_model<B: Backend>(
    dir: &Path,
    config: &PackageConfig,
    device: &B::Device,
) -> Result<Box<dyn ImageModel>, PackageError> {
    let classes = config.kiln.labels.len();
    let architecture = config.kiln.architecture.as_str();
    if architecture == NET_ARCHITECTURE {
        let net = load_weights(
            dir,
            config,
            NetConfig::new().with_num_classes(classes).init::<B>(device),
        )?;
        return Ok(Classifier::boxed(config, device, true, move |x| net.forward(x)));
    }
    if let Ok(arch) = architecture.parse::<ResNetArch>() {
        let resnet = load_weights(dir, config, ResNetConfig::new(arch, classes).init::<B>(device))?;
        return Ok(Classifier::boxed(config, device, false, move |x| resnet.forward(x)));
    }
    let known: Vec<String> = std::iter::once(NET_ARCHITECTURE.to_string())
        .chain(ResNetArch::ALL.iter().map(|a| a.to_string()))
        .collect();
    Err(PackageError::Unsupported {
        path: dir.join(kiln_models::package::CONFIG_FILE),
        msg: format!(
            "kiln.architecture {architecture:?} is not one this server can build (known: {})",
            known.join(", ")
        ),
    })
}

/// Any classification network: a forward function from `[N, C, H, W]` to scores.
struct Classifier<B: Backend> {
    forward: Box<dyn Fn(Tensor<B, 4>) -> Tensor<B, 2>>,
    input: [usize; 3],
    classes: usize,
    device: B::Device,
    /// Whether the network already ends in log-softmax (else it returns logits).
    log_probs: bool,
}

impl<B: Backend> Classifier<B> {
    /// A classifier for the package's input shape and labels around `forward`.
    fn boxed(
        config: &PackageConfig,
        device: &B::Device,
        log_probs: bool,
        forward: impl Fn(Tensor<B, 4>) -> Tensor<B, 2> + 'static,
    ) -> Box<dyn ImageModel> {
        let input = &config.kiln.input;
        Box::new(Self {
            forward: Box::new(forward),
            input: [input.channels, input.height, input.width],
            classes: config.kiln.labels.len(),
            device: device.clone(),
            log_probs,
        })
    }
}

impl<B: Backend> ImageModel for Classifier<B> {
    fn probabilities(&self, inputs: Vec<f32>, n: usize) -> Vec<f32> {
        let [c, h, w] = self.input;
        let x = Tensor::<B, 4>::from_data(TensorData::new(inputs, [n, c, h, w]), &self.device);
        let scores = (self.forward)(x);
        let probs = if self.log_probs {
            scores.exp()
        } else {
            softmax(scores, 1)
        };
        probs.into_data().convert::<f32>().to_vec().expect("f32 probabilities")
    }

    fn num_classes(&self) -> usize {
        self.classes
    }
}
