//! A YOLOX test package with random weights whose boxes depend on the picture, and the
//! pictures, shared by the detection tests.
#![allow(dead_code)]

use std::io::Cursor;

use burn::backend::Flex;
use burn::module::{ModuleMapper, Param};
use burn::prelude::*;
use image::{DynamicImage, ImageFormat, RgbImage};
use kiln_data::letterbox;
use kiln_models::yolox::{decode, Detected, STRIDES};
use kiln_models::{write_package, yolox_package_config, DetectionSpec, PackageConfig, Yolox, YoloxVariant};

/// The letterboxed input side: small, a multiple of 32.
pub const SIDE: usize = 64;
/// The package's classes.
pub const LABELS: [&str; 3] = ["cat", "dog", "person"];

/// A colourful test picture, `w`×`h`, different for each `seed`.
pub fn picture(w: u32, h: u32, seed: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let v = (x * 7 + y * 13 + seed * 31) % 256;
        image::Rgb([v as u8, (255 - v) as u8, ((x * y + seed) % 256) as u8])
    })
}

pub fn png(img: &RgbImage) -> Vec<u8> {
    let mut buf = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(img.clone())
        .write_to(&mut buf, ImageFormat::Png)
        .unwrap();
    buf.into_inner()
}

/// YOLOX's input for `img`, computed here independently of the server: letterboxed, channels
/// blue, green, red, raw 0..255 values. Also the letterbox ratio.
pub fn yolox_input(img: &RgbImage) -> (Tensor<Flex, 4>, f32) {
    let boxed = letterbox(img, &[], SIDE as u32, SIDE as u32);
    let mut values = Vec::with_capacity(3 * SIDE * SIDE);
    for channel in [2, 1, 0] {
        values.extend(boxed.image.pixels().map(|p| p.0[channel] as f32));
    }
    let x = Tensor::from_data(TensorData::new(values, [1, 3, SIDE, SIDE]), &Default::default());
    (x, boxed.ratio)
}

/// The model's own detections on `img` at `thresholds`, in model-input pixels.
pub fn model_detections(model: &Yolox<Flex>, img: &RgbImage, thresholds: DetectionSpec) -> (Vec<Detected>, f32) {
    let (x, ratio) = yolox_input(img);
    let found = decode(&model.forward(x), &STRIDES, thresholds.conf, thresholds.nms);
    (found.into_iter().next().unwrap(), ratio)
}

/// Multiplies every convolution kernel by a factor.
struct ScaleKernels(f32);

impl ModuleMapper<Flex> for ScaleKernels {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<Flex, D>>) -> Param<Tensor<Flex, D>> {
        let (id, tensor, mapper) = param.consume();
        let factor = if D == 4 { self.0 } else { 1.0 };
        Param::from_mapped_value(id, tensor * factor, mapper)
    }
}

/// A yolox-nano package with random weights, the model as kiln-serve runs it, and how many
/// boxes of picture 0 the package's confidence threshold keeps: the best ten or so (random
/// weights score far below YOLOX's 0.25).
/// The threshold sits in a gap of at least 1% between two scores, so that float sums taken
/// in another order (the server's thread pools are not this process's) keep the same boxes. YOLOX's initialisation
/// leaves an untrained network's outputs almost constant (every score about 1e-4, boxes on
/// the grid); kernels × 2.2 make scores and boxes depend on the picture.
pub fn package(dir: &std::path::Path) -> (Yolox<Flex>, PackageConfig, usize) {
    let device = Default::default();
    Flex::seed(&device, 5);
    let model = Yolox::<Flex>::new(YoloxVariant::Nano, LABELS.len(), &device).map(&mut ScaleKernels(2.2));
    // The server folds the BatchNorms into the convolutions when it loads the package.
    let served = model.clone().fold_batch_norms();
    let mut config = yolox_package_config(YoloxVariant::Nano, (SIDE, SIDE), &LABELS);
    let all = DetectionSpec { conf: 0.0, nms: 0.45 };
    let (found, _) = model_detections(&served, &picture(90, 50, 0), all);
    assert!(found.len() > 10, "{} boxes", found.len());
    let mut scores: Vec<f32> = found.iter().map(|d| d.score).collect();
    scores.sort_by(|a, b| b.total_cmp(a));
    let kept = (10..scores.len())
        .find(|&k| scores[k - 1] >= scores[k] * 1.01)
        .unwrap_or_else(|| panic!("no 1% gap after the tenth score: {scores:?}"));
    config.kiln.detection = Some(DetectionSpec {
        conf: (scores[kept - 1] + scores[kept]) / 2.0,
        nms: 0.45,
    });
    write_package(dir, &config, &model).unwrap();
    (served, config, kept)
}
