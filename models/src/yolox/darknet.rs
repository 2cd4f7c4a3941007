//! `CSPDarknet`: the YOLOX backbone, returning the stride-8, 16 and 32 features
//! (`dark3`, `dark4`, `dark5`).

use burn::prelude::*;

use super::blocks::{Conv, CspLayer, Focus, SppBottleneck};
use super::fold::fold_fields;

/// One downsampling stage: a stride-2 conv, (SPP,) a CSP layer.
#[derive(Module, Debug)]
pub struct Stage<B: Backend> {
    down: Conv<B>,
    spp: Option<SppBottleneck<B>>,
    csp: CspLayer<B>,
}

impl<B: Backend> Stage<B> {
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut x = self.down.forward(x);
        if let Some(spp) = &self.spp {
            x = spp.forward(x);
        }
        self.csp.forward(x)
    }
}

/// The backbone for depth and width multipliers.
#[derive(Module, Debug)]
pub struct CspDarknet<B: Backend> {
    stem: Focus<B>,
    dark2: Stage<B>,
    dark3: Stage<B>,
    dark4: Stage<B>,
    dark5: Stage<B>,
}

impl<B: Backend> CspDarknet<B> {
    /// base channels `width × 64`, base depth `max(round(depth × 3), 1)`.
    pub fn new(depth: f64, width: f64, depthwise: bool, device: &B::Device) -> Self {
        let c = (width * 64.0) as usize;
        let d = ((depth * 3.0).round() as usize).max(1);
        let stage = |cin: usize, cout: usize, n: usize, last: bool| Stage {
            down: Conv::new([cin, cout], 3, 2, depthwise, device),
            spp: last.then(|| SppBottleneck::new([cout, cout], device)),
            csp: CspLayer::new([cout, cout], n, !last, depthwise, device),
        };
        Self {
            stem: Focus::new([3, c], 3, device),
            dark2: stage(c, 2 * c, d, false),
            dark3: stage(2 * c, 4 * c, 3 * d, false),
            dark4: stage(4 * c, 8 * c, 3 * d, false),
            dark5: stage(8 * c, 16 * c, d, true),
        }
    }

    /// `dark3`, `dark4`, `dark5` of images `[N, 3, H, W]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> [Tensor<B, 4>; 3] {
        let x = self.dark2.forward(self.stem.forward(x));
        let d3 = self.dark3.forward(x);
        let d4 = self.dark4.forward(d3.clone());
        let d5 = self.dark5.forward(d4.clone());
        [d3, d4, d5]
    }
}

fold_fields!(Stage: down, spp, csp);
fold_fields!(CspDarknet: stem, dark2, dark3, dark4, dark5);
