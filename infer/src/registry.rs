//! The model registry: one [`ImageModel`] entry per architecture family, chosen by the
//! package's `kiln.architecture`: classifiers (MNIST `Net`, ResNets, Swin) answer class
//! probabilities, detectors (YOLOX) boxes.

use std::path::Path;

use burn::prelude::*;
use burn::tensor::activation::softmax;
use kiln_models::package::{ResizeMode, CONFIG_FILE};
use kiln_models::yolox::{decode, Detected, STRIDES};
use kiln_models::{
    load_weights, DetectionSpec, NetConfig, PackageConfig, PackageError, ResNetArch, ResNetConfig, Yolox, YoloxVariant,
    NET_ARCHITECTURE, SWIN_ARCHITECTURE,
};

/// The smallest ResNet input kiln serves: 32×32 leaves layer4 a 1×1 map (stride 32).
const RESNET_MIN_SIDE: usize = 32;

/// What a model says about one image.
#[derive(Debug, Clone, PartialEq)]
pub enum Prediction {
    /// Class probabilities in label order.
    Classes(Vec<f32>),
    /// Detected objects in model-input pixels, best first.
    Objects(Vec<Detected>),
}

/// A loaded model that maps a batch of prepared images to one prediction each.
pub trait ImageModel: Send + Sync {
    /// One prediction per image for `n` prepared images laid end to end (`[n, C, H, W]`).
    fn predict(&self, inputs: Vec<f32>, n: usize) -> Vec<Prediction>;
}

/// Builds the model a package describes, on `device`, with its weights loaded.
pub fn load_model<B: Backend>(
    dir: &Path,
    config: &PackageConfig,
    device: &B::Device,
) -> Result<Box<dyn ImageModel>, PackageError> {
    let classes = config.kiln.labels.len();
    let architecture = config.kiln.architecture.as_str();
    let input = &config.kiln.input;
    let refuse = |msg: String| PackageError::Unsupported {
        path: dir.join(CONFIG_FILE),
        msg,
    };
    if architecture == NET_ARCHITECTURE {
        // The network's first linear layer takes 64 × 12 × 12 features: a 28×28 grey input.
        if (input.channels, input.height, input.width) != (1, 28, 28) {
            return Err(refuse(format!(
                "kiln.input: {NET_ARCHITECTURE} takes 1-channel 28x28 inputs (got {} channels, {}x{})",
                input.channels, input.width, input.height
            )));
        }
        let net = load_weights(
            dir,
            config,
            NetConfig::new().with_num_classes(classes).init::<B>(device),
        )?;
        return Ok(Classifier::boxed(config, device, true, move |x| net.forward(x)));
    }
    if let Ok(arch) = architecture.parse::<ResNetArch>() {
        if input.channels != 3 || input.height < RESNET_MIN_SIDE {
            return Err(refuse(format!(
                "kiln.input: {arch} takes 3-channel inputs of at least {RESNET_MIN_SIDE}x{RESNET_MIN_SIDE} \
                 (got {} channels, {}x{})",
                input.channels, input.width, input.height
            )));
        }
        let resnet = load_weights(dir, config, ResNetConfig::new(arch, classes).init::<B>(device))?.fold_batch_norms();
        return Ok(Classifier::boxed(config, device, false, move |x| resnet.forward(x)));
    }
    if let Ok(variant) = architecture.parse::<YoloxVariant>() {
        return Detector::<B>::boxed(dir, config, device, variant);
    }
    if architecture == SWIN_ARCHITECTURE {
        let shape = config.kiln.swin.clone().ok_or_else(|| {
            refuse(format!(
                "kiln.swin: a {SWIN_ARCHITECTURE} package must give the network's shape"
            ))
        })?;
        shape.validate().map_err(|e| refuse(format!("kiln.swin: {e}")))?;
        if shape.num_classes != classes {
            return Err(refuse(format!(
                "kiln.swin.num_classes {} differs from the {classes} labels",
                shape.num_classes
            )));
        }
        if (input.channels, input.height, input.width) != (shape.in_chans, shape.img_size, shape.img_size) {
            return Err(refuse(format!(
                "kiln.input: this Swin takes {}-channel {s}x{s} inputs (got {} channels, {}x{})",
                shape.in_chans,
                input.channels,
                input.width,
                input.height,
                s = shape.img_size
            )));
        }
        let swin = load_weights(dir, config, shape.init::<B>(device))?;
        return Ok(Classifier::boxed(config, device, false, move |x| swin.forward(x)));
    }
    let known: Vec<String> = std::iter::once(NET_ARCHITECTURE.to_string())
        .chain(ResNetArch::ALL.iter().map(|a| a.to_string()))
        .chain(YoloxVariant::ALL.iter().map(|v| v.to_string()))
        .chain(std::iter::once(SWIN_ARCHITECTURE.to_string()))
        .collect();
    Err(PackageError::Unsupported {
        path: dir.join(CONFIG_FILE),
        msg: format!(
            "kiln.architecture {architecture:?} is not one this server can build (known: {})",
            known.join(", ")
        ),
    })
}

/// Any classification network: a forward function from `[N, C, H, W]` to scores.
struct Classifier<B: Backend> {
    forward: Box<dyn Fn(Tensor<B, 4>) -> Tensor<B, 2> + Send + Sync>,
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
        forward: impl Fn(Tensor<B, 4>) -> Tensor<B, 2> + Send + Sync + 'static,
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
    fn predict(&self, inputs: Vec<f32>, n: usize) -> Vec<Prediction> {
        let [c, h, w] = self.input;
        let x = Tensor::<B, 4>::from_data(TensorData::new(inputs, [n, c, h, w]), &self.device);
        let scores = (self.forward)(x);
        let probs = if self.log_probs {
            scores.exp()
        } else {
            softmax(scores, 1)
        };
        let probs: Vec<f32> = probs.into_data().convert::<f32>().to_vec().expect("f32 probabilities");
        probs
            .chunks(self.classes)
            .map(|row| Prediction::Classes(row.to_vec()))
            .collect()
    }
}

/// YOLOX: the raw level outputs decoded into boxes (score = objectness × class probability
/// of at least `conf`, class-wise NMS at IoU `nms`), in model-input pixels.
struct Detector<B: Backend> {
    model: Yolox<B>,
    /// `[height, width]` of the letterboxed input.
    input: [usize; 2],
    thresholds: DetectionSpec,
    device: B::Device,
}

impl<B: Backend> Detector<B> {
    /// Loads a YOLOX package: 3-channel letterboxed inputs whose sides are multiples of the
    /// largest stride (32).
    fn boxed(
        dir: &Path,
        config: &PackageConfig,
        device: &B::Device,
        variant: YoloxVariant,
    ) -> Result<Box<dyn ImageModel>, PackageError> {
        let input = &config.kiln.input;
        let stride = STRIDES[STRIDES.len() - 1];
        if input.resize != ResizeMode::Letterbox
            || input.channels != 3
            || !input.height.is_multiple_of(stride)
            || !input.width.is_multiple_of(stride)
        {
            return Err(PackageError::Unsupported {
                path: dir.join(CONFIG_FILE),
                msg: format!(
                    "kiln.input: {variant} takes 3-channel letterboxed inputs with sides that are multiples of {stride} \
                     (got {} channels, {}x{}, resize {:?})",
                    input.channels, input.width, input.height, input.resize
                ),
            });
        }
        let model =
            load_weights(dir, config, Yolox::<B>::new(variant, config.kiln.labels.len(), device))?.fold_batch_norms();
        Ok(Box::new(Self {
            model,
            input: [input.height, input.width],
            thresholds: config.kiln.detection.unwrap_or_default(),
            device: device.clone(),
        }))
    }
}

impl<B: Backend> ImageModel for Detector<B> {
    fn predict(&self, inputs: Vec<f32>, n: usize) -> Vec<Prediction> {
        let [h, w] = self.input;
        let x = Tensor::<B, 4>::from_data(TensorData::new(inputs, [n, 3, h, w]), &self.device);
        let DetectionSpec { conf, nms } = self.thresholds;
        decode(&self.model.forward(x), &STRIDES, conf, nms)
            .into_iter()
            .map(Prediction::Objects)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn_flex::Flex;

    fn refusal(config: &PackageConfig) -> String {
        match load_model::<Flex>(Path::new("/nonexistent"), config, &Default::default()) {
            Err(e @ PackageError::Unsupported { .. }) => e.to_string(),
            Err(e) => panic!("not an Unsupported error: {e}"),
            Ok(_) => panic!("loaded"),
        }
    }

    #[test]
    fn yolox_inputs_must_be_letterboxed_multiples_of_32() {
        let names = ["a"];
        let config = kiln_models::yolox_package_config(YoloxVariant::Nano, (64, 48), &names);
        let msg = refusal(&config);
        assert!(msg.contains("yolox-nano") && msg.contains("multiples of 32"), "{msg}");
        let mut config = kiln_models::yolox_package_config(YoloxVariant::Nano, (64, 64), &names);
        config.kiln.input.resize = ResizeMode::CenterCrop;
        assert!(refusal(&config).contains("letterboxed"));
    }

    #[test]
    fn inputs_the_network_cannot_take_are_refused() {
        let mut config = kiln_models::net_package_config(&NetConfig::new());
        config.kiln.input.channels = 3;
        let msg = refusal(&config);
        assert!(msg.contains("1-channel 28x28") && msg.contains("3 channels"), "{msg}");
        let mut config = kiln_models::net_package_config(&NetConfig::new());
        (config.kiln.input.height, config.kiln.input.width) = (32, 32);
        assert!(refusal(&config).contains("32x32"));
        let mut config = kiln_models::resnet_package_config(ResNetArch::ResNet18, &["cat".to_string()]);
        (config.kiln.input.height, config.kiln.input.width) = (16, 16);
        assert!(refusal(&config).contains("at least 32x32"));
    }

    fn micro_swin(classes: usize) -> kiln_models::SwinConfig {
        let mut shape = kiln_models::SwinConfig::new(16, &[2, 2], &[1, 2], classes);
        shape.img_size = 56;
        shape
    }

    #[test]
    fn swin_packages_must_carry_a_shape_that_fits_them() {
        let labels = ["cat".to_string(), "dog".to_string()];
        let interpolation = kiln_models::package::Interpolation::Bicubic;
        let mut config = kiln_models::swin_package_config(&micro_swin(2), &labels, interpolation, true);
        config.kiln.swin = None;
        assert!(refusal(&config).contains("kiln.swin"));
        let config = kiln_models::swin_package_config(&micro_swin(3), &labels, interpolation, true);
        assert!(refusal(&config).contains("3 differs from the 2 labels"));
        let mut config = kiln_models::swin_package_config(&micro_swin(2), &labels, interpolation, true);
        (config.kiln.input.height, config.kiln.input.width) = (64, 64);
        let msg = refusal(&config);
        assert!(msg.contains("56x56") && msg.contains("64x64"), "{msg}");
        let mut shape = micro_swin(2);
        shape.window_size = 5;
        let config = kiln_models::swin_package_config(&shape, &labels, interpolation, true);
        assert!(refusal(&config).contains("WINDOW_SIZE"));
    }

    #[test]
    fn a_swin_package_serves_probabilities() {
        let dir = tempfile::tempdir().unwrap();
        let labels = ["cat".to_string(), "dog".to_string()];
        let shape = micro_swin(2);
        let config =
            kiln_models::swin_package_config(&shape, &labels, kiln_models::package::Interpolation::Bicubic, true);
        let device = Default::default();
        let model = shape.init::<Flex>(&device);
        let pkg = dir.path().join("model");
        let written = kiln_models::write_package(&pkg, &config, &model).unwrap();
        let served = load_model::<Flex>(&pkg, &written, &device).unwrap();
        let input = vec![0.25f32; 3 * 56 * 56];
        let Prediction::Classes(probs) = &served.predict(input.clone(), 1)[0] else {
            panic!("a classifier")
        };
        let logits = model.forward(Tensor::<Flex, 4>::from_data(
            TensorData::new(input, [1, 3, 56, 56]),
            &device,
        ));
        let want: Vec<f32> = softmax(logits, 1).into_data().to_vec().unwrap();
        assert_eq!(probs, &want);
    }

    #[test]
    fn unknown_architectures_name_the_known_ones() {
        let mut config = kiln_models::yolox_package_config(YoloxVariant::S, (64, 64), &["a"]);
        config.kiln.architecture = "yolov8".into();
        let msg = refusal(&config);
        assert!(
            msg.contains("\"yolov8\"") && msg.contains("resnet50, ") && msg.contains("yolox-x, swin"),
            "{msg}"
        );
    }
}
