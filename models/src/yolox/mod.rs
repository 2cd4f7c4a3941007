//! YOLOX (Megvii's `yolox` package): CSPDarknet backbone, PAFPN neck and decoupled head, in
//! the variants nano, tiny, s, m, l and x. The forward pass gives each level's raw
//! predictions; [`decode`] turns them into boxes (confidence filter and class-wise NMS), and
//! [`YoloxLoss`] scores them against targets for training, with SimOTA ([`Candidates`])
//! choosing the foreground cells.

mod assign;
mod blocks;
mod darknet;
mod decode;
mod fold;
mod head;
mod loss;
mod pafpn;

use std::fmt;
use std::str::FromStr;

use burn::prelude::*;

use crate::package::{ChannelOrder, DetectionSpec, InputSpec, Interpolation, PackageConfig, PixelScale, ResizeMode};

pub use assign::{grid_cells, Assignment, Candidates, Cell, Match};
pub use blocks::space_to_depth;
pub use decode::{box_iou, decode, nms, Detected};
use head::YoloxHead;
pub use loss::{LossParts, YoloxLoss, YoloxLossOutput};
use pafpn::YoloPafpn;

/// A ground-truth box for training, in input pixels, corner form `[x1, y1, x2, y2]`, with
/// its class index `0..classes`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TargetBox {
    /// Class index.
    pub class: usize,
    /// `[x1, y1, x2, y2]`.
    pub xyxy: [f32; 4],
}

/// The package configuration for a trained YOLOX (the official `ValTransform` and demo):
/// architecture `variant`'s name (`yolox-s`, ...), 3-channel inputs letterboxed to
/// `input_size` = `(height, width)` (YOLOX's `test_size` order; multiples of 32), raw 0..255
/// values in BGR order without normalisation, `class_names` (COCO's, in class-index order, as
/// `CocoDataset::class_names` gives them) as labels, and the [`DetectionSpec::default`]
/// thresholds.
pub fn yolox_package_config<S: AsRef<str>>(
    variant: YoloxVariant,
    input_size: (usize, usize),
    class_names: &[S],
) -> PackageConfig {
    let (height, width) = input_size;
    let input = InputSpec {
        channels: 3,
        height,
        width,
        resize: ResizeMode::Letterbox,
        resize_shorter: 0,
        interpolation: Interpolation::Bilinear,
        scale: PixelScale::Raw,
        mean: vec![0.0; 3],
        std: vec![1.0; 3],
        channel_order: ChannelOrder::Bgr,
    };
    let labels = class_names
        .iter()
        .map(|n| serde_json::Value::from(n.as_ref()))
        .collect();
    PackageConfig::object_detection(&variant.to_string(), input, labels, DetectionSpec::default())
}

/// The strides of the three output levels.
pub const STRIDES: [usize; 3] = [8, 16, 32];

/// The YOLOX variants of the official experiments (`exps/default/yolox_*.py`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum YoloxVariant {
    /// depth 0.33, width 0.25, depthwise convolutions.
    Nano,
    /// depth 0.33, width 0.375.
    Tiny,
    /// depth 0.33, width 0.50.
    S,
    /// depth 0.67, width 0.75.
    M,
    /// depth 1.0, width 1.0.
    L,
    /// depth 1.33, width 1.25.
    X,
}

impl YoloxVariant {
    /// Every variant, smallest first.
    pub const ALL: [Self; 6] = [Self::Nano, Self::Tiny, Self::S, Self::M, Self::L, Self::X];

    /// `(depth, width, depthwise)` multipliers.
    pub fn multipliers(self) -> (f64, f64, bool) {
        match self {
            Self::Nano => (0.33, 0.25, true),
            Self::Tiny => (0.33, 0.375, false),
            Self::S => (0.33, 0.50, false),
            Self::M => (0.67, 0.75, false),
            Self::L => (1.0, 1.0, false),
            Self::X => (1.33, 1.25, false),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Nano => "yolox-nano",
            Self::Tiny => "yolox-tiny",
            Self::S => "yolox-s",
            Self::M => "yolox-m",
            Self::L => "yolox-l",
            Self::X => "yolox-x",
        }
    }
}

impl fmt::Display for YoloxVariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for YoloxVariant {
    type Err = String;

    /// The guide's `-n` names: `yolox-s`, `yolox_s`, `yolox-nano`, …
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let key = s.trim().to_ascii_lowercase().replace('_', "-");
        Self::ALL.into_iter().find(|v| v.name() == key).ok_or_else(|| {
            format!("unknown model {s:?}: expected yolox-nano, yolox-tiny, yolox-s, yolox-m, yolox-l or yolox-x")
        })
    }
}

/// A YOLOX detector.
#[derive(Module, Debug)]
pub struct Yolox<B: Backend> {
    neck: YoloPafpn<B>,
    head: YoloxHead<B>,
}

impl<B: Backend> Yolox<B> {
    /// `variant` for `classes` classes (80 for COCO).
    pub fn new(variant: YoloxVariant, classes: usize, device: &B::Device) -> Self {
        let (depth, width, depthwise) = variant.multipliers();
        crate::params::materialized(Self {
            neck: YoloPafpn::new(depth, width, depthwise, device),
            head: YoloxHead::new(classes, width, depthwise, device),
        })
    }

    /// Trainable parameters, as PyTorch counts them (BatchNorm statistics left out).
    pub fn num_trainable_params(&self) -> usize {
        crate::params::trainable_params(self)
    }

    /// The same network for evaluation with every BatchNorm folded into its convolution once
    /// (see [`ResNet::fold_batch_norms`](crate::ResNet::fold_batch_norms)): equal predictions
    /// up to rounding, no BatchNorm passes. For evaluation and serving only; write packages
    /// and checkpoints from the unfolded model.
    pub fn fold_batch_norms(mut self) -> Self {
        use fold::FoldBatchNorms as _;
        self.neck.fold_batch_norms();
        self.head.fold_batch_norms();
        self
    }

    /// For images `[N, 3, H, W]` (H, W multiples of 32), each level's raw predictions
    /// `[N, 5 + classes, H / stride, W / stride]` for [`STRIDES`]: box `(x, y, log w, log h)`
    /// offsets, objectness logit, class logits.
    pub fn forward(&self, images: Tensor<B, 4>) -> Vec<Tensor<B, 4>> {
        self.head.forward(self.neck.forward(images))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn_flex::Flex;

    #[test]
    fn parameter_counts_are_the_official_models() {
        // Counted with PyTorch on the yolox 0.3.0 package's YOLOPAFPN + YOLOXHead, 80 classes.
        let expected = [912_159, 5_055_855, 8_968_255, 25_326_495, 54_208_895, 99_071_455];
        let device = Default::default();
        for (variant, expected) in YoloxVariant::ALL.into_iter().zip(expected) {
            let model = Yolox::<Flex>::new(variant, 80, &device);
            assert_eq!(model.num_trainable_params(), expected, "{variant}");
        }
    }

    /// Folding every BatchNorm once gives the unfolded evaluation's predictions (depthwise
    /// and regular convolutions), after training steps moved the BatchNorms' weights and
    /// running statistics, and leaves no BatchNorm behind.
    #[test]
    fn folded_batch_norms_give_the_same_predictions() {
        use crate::fold_tests::{assert_close, batch_norms, trained, Ad};
        use burn::module::AutodiffModule;
        use burn::tensor::Distribution;
        let device = Default::default();
        Ad::seed(&device, 6);
        let flat = |levels: Vec<Tensor<Flex, 4>>| -> Vec<f32> {
            levels
                .into_iter()
                .flat_map(|l| l.into_data().to_vec::<f32>().unwrap())
                .collect()
        };
        for variant in [YoloxVariant::Nano, YoloxVariant::S] {
            let model = Yolox::<Ad>::new(variant, 3, &device);
            let levels_mean = |m: &Yolox<Ad>, x| {
                let means = m.forward(x).into_iter().map(|level| level.mean());
                means.reduce(|a, b| a + b).unwrap()
            };
            let eval = trained(model, [2, 3, 64, 64], levels_mean).valid();
            assert!(batch_norms(&eval) > 0);
            let x = Tensor::<Flex, 4>::random([2, 3, 64, 96], Distribution::Normal(0.0, 1.0), &device);
            let want = flat(eval.forward(x.clone()));
            let folded = eval.fold_batch_norms();
            assert_eq!(batch_norms(&folded), 0, "{variant}: a BatchNorm is left");
            assert_close(&flat(folded.forward(x)), &want, &variant.to_string());
        }
    }

    #[test]
    fn levels_have_strides_8_16_32() {
        let device = Default::default();
        let model = Yolox::<Flex>::new(YoloxVariant::Nano, 3, &device);
        let out = model.forward(Tensor::zeros([2, 3, 64, 96], &device));
        let dims: Vec<[usize; 4]> = out.iter().map(|t| t.dims()).collect();
        assert_eq!(dims, vec![[2, 8, 8, 12], [2, 8, 4, 6], [2, 8, 2, 3]]);
    }

    #[test]
    fn space_to_depth_orders_the_pixels_like_focus() {
        let device = Default::default();
        // One channel, 2×4: values 0..8 row-major.
        let values: Vec<f32> = (0..8).map(|v| v as f32).collect();
        let x = Tensor::<Flex, 1>::from_floats(values.as_slice(), &device).reshape([1, 1, 2, 4]);
        let y: Vec<f32> = space_to_depth(x).into_data().to_vec().unwrap();
        // top-left [0, 2], bottom-left [4, 6], top-right [1, 3], bottom-right [5, 7].
        assert_eq!(y, vec![0.0, 2.0, 4.0, 6.0, 1.0, 3.0, 5.0, 7.0]);
    }

    #[test]
    fn variant_names_parse() {
        assert_eq!("yolox-s".parse(), Ok(YoloxVariant::S));
        assert_eq!("YOLOX_NANO".parse(), Ok(YoloxVariant::Nano));
        assert!("yolov5".parse::<YoloxVariant>().unwrap_err().contains("yolox-s"));
        assert_eq!(YoloxVariant::X.to_string(), "yolox-x");
    }
}
