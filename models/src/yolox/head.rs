//! `YOLOXHead`: per level a 1×1 stem, then decoupled classification and regression branches
//! of two 3×3 convs each, predicting classes, the box and objectness.

use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::prelude::*;

use super::blocks::{BaseConv, Conv};
use super::fold::fold_fields;
use super::pafpn::IN_CHANNELS;
use crate::gpu::conv2d;

/// YOLOX's prior probability for the class and objectness biases.
const PRIOR_PROB: f64 = 1e-2;

/// One level's head.
#[derive(Module, Debug)]
pub struct Level<B: Backend> {
    stem: BaseConv<B>,
    cls_convs: Vec<Conv<B>>,
    reg_convs: Vec<Conv<B>>,
    cls_pred: Conv2d<B>,
    reg_pred: Conv2d<B>,
    obj_pred: Conv2d<B>,
}

impl<B: Backend> Level<B> {
    /// `[N, 4 + 1 + classes, H, W]`: box, objectness and class logits, YOLOX's order.
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = self.stem.forward(x);
        let cls = self.cls_convs.iter().fold(x.clone(), |y, c| c.forward(y));
        let reg = self.reg_convs.iter().fold(x, |y, c| c.forward(y));
        Tensor::cat(
            vec![
                conv2d(&self.reg_pred, reg.clone()),
                conv2d(&self.obj_pred, reg),
                conv2d(&self.cls_pred, cls),
            ],
            1,
        )
    }
}

/// The three levels' heads.
#[derive(Module, Debug)]
pub struct YoloxHead<B: Backend> {
    levels: Vec<Level<B>>,
}

impl<B: Backend> YoloxHead<B> {
    /// Heads for `classes` classes at width multiplier `width`.
    pub fn new(classes: usize, width: f64, depthwise: bool, device: &B::Device) -> Self {
        let hidden = (256.0 * width) as usize;
        let prior_bias = -((1.0 - PRIOR_PROB) / PRIOR_PROB).ln();
        // 1×1 predictions; the class and objectness biases start at the prior (YOLOX's
        // `initialize_biases`).
        let pred = |outputs: usize, bias: Option<f64>| {
            let mut conv = Conv2dConfig::new([hidden, outputs], [1, 1]).init(device);
            if let Some(b) = bias {
                conv.bias = Some(Param::from_tensor(Tensor::full([outputs], b, device)));
            }
            conv
        };
        let branch = || -> Vec<Conv<B>> {
            (0..2)
                .map(|_| Conv::new([hidden, hidden], 3, 1, depthwise, device))
                .collect()
        };
        let levels = IN_CHANNELS
            .iter()
            .map(|&c| Level {
                stem: BaseConv::new([(c as f64 * width) as usize, hidden], 1, 1, 1, device),
                cls_convs: branch(),
                reg_convs: branch(),
                cls_pred: pred(classes, Some(prior_bias)),
                reg_pred: pred(4, None),
                obj_pred: pred(1, Some(prior_bias)),
            })
            .collect();
        Self { levels }
    }

    /// Raw outputs of the stride-8, 16 and 32 levels.
    pub fn forward(&self, features: [Tensor<B, 4>; 3]) -> Vec<Tensor<B, 4>> {
        self.levels.iter().zip(features).map(|(l, f)| l.forward(f)).collect()
    }
}

fold_fields!(Level: stem, cls_convs, reg_convs);
fold_fields!(YoloxHead: levels);
