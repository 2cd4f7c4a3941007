//! `YOLOPAFPN`: the backbone plus a top-down and bottom-up path aggregation neck.

use burn::prelude::*;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};

use super::blocks::{BaseConv, Conv, CspLayer};
use super::darknet::CspDarknet;
use super::fold::fold_fields;

/// The channels of the three outputs at width 1.
pub const IN_CHANNELS: [usize; 3] = [256, 512, 1024];

/// Backbone and neck.
#[derive(Module, Debug)]
pub struct YoloPafpn<B: Backend> {
    backbone: CspDarknet<B>,
    lateral_conv0: BaseConv<B>,
    c3_p4: CspLayer<B>,
    reduce_conv1: BaseConv<B>,
    c3_p3: CspLayer<B>,
    bu_conv2: Conv<B>,
    c3_n3: CspLayer<B>,
    bu_conv1: Conv<B>,
    c3_n4: CspLayer<B>,
}

impl<B: Backend> YoloPafpn<B> {
    /// The neck for depth and width multipliers.
    pub fn new(depth: f64, width: f64, depthwise: bool, device: &B::Device) -> Self {
        let [c3, c4, c5] = IN_CHANNELS.map(|c| (c as f64 * width) as usize);
        let n = (3.0 * depth).round() as usize;
        let csp = |cin: usize, cout: usize| CspLayer::new([cin, cout], n, false, depthwise, device);
        Self {
            backbone: CspDarknet::new(depth, width, depthwise, device),
            lateral_conv0: BaseConv::new([c5, c4], 1, 1, 1, device),
            c3_p4: csp(2 * c4, c4),
            reduce_conv1: BaseConv::new([c4, c3], 1, 1, 1, device),
            c3_p3: csp(2 * c3, c3),
            bu_conv2: Conv::new([c3, c3], 3, 2, depthwise, device),
            c3_n3: csp(2 * c3, c4),
            bu_conv1: Conv::new([c4, c4], 3, 2, depthwise, device),
            c3_n4: csp(2 * c4, c5),
        }
    }

    /// The stride-8, 16 and 32 feature maps.
    pub fn forward(&self, x: Tensor<B, 4>) -> [Tensor<B, 4>; 3] {
        let [x2, x1, x0] = self.backbone.forward(x);
        let fpn_out0 = self.lateral_conv0.forward(x0);
        let f_out0 = self.c3_p4.forward(Tensor::cat(vec![upsample(fpn_out0.clone()), x1], 1));
        let fpn_out1 = self.reduce_conv1.forward(f_out0);
        let pan_out2 = self.c3_p3.forward(Tensor::cat(vec![upsample(fpn_out1.clone()), x2], 1));
        let p_out1 = self.bu_conv2.forward(pan_out2.clone());
        let pan_out1 = self.c3_n3.forward(Tensor::cat(vec![p_out1, fpn_out1], 1));
        let p_out0 = self.bu_conv1.forward(pan_out1.clone());
        let pan_out0 = self.c3_n4.forward(Tensor::cat(vec![p_out0, fpn_out0], 1));
        [pan_out2, pan_out1, pan_out0]
    }
}

/// Nearest-neighbour ×2.
fn upsample<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [_, _, h, w] = x.dims();
    interpolate(x, [2 * h, 2 * w], InterpolateOptions::new(InterpolateMode::Nearest))
}

fold_fields!(
    YoloPafpn: backbone,
    lateral_conv0,
    c3_p4,
    reduce_conv1,
    c3_p3,
    bu_conv2,
    c3_n3,
    bu_conv1,
    c3_n4
);
