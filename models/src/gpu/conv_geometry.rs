//! The shape side of a 2-D convolution handed to a vendor library (cuDNN): which convolutions
//! it can take, their output size, the 4-D dimensions and element strides of its descriptors,
//! and the choice among the algorithms the library proposes. Plain arithmetic, so it is tested
//! on any machine; the library calls themselves are in `cudnn` (the `cuda` feature).

use burn::nn::PaddingConfig2d;

/// A convolution of `x` `[n, c_in, h, w]` with weights `[c_out, c_in / groups, kh, kw]`,
/// symmetric zero padding, stride and dilation per spatial axis (height, width).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConvGeometry {
    /// Input dimensions `[n, c_in, h, w]`.
    pub input: [usize; 4],
    /// Weight dimensions `[c_out, c_in / groups, kh, kw]`.
    pub weight: [usize; 4],
    /// Zero padding on both sides, `[height, width]`.
    pub padding: [usize; 2],
    /// Stride, `[height, width]`.
    pub stride: [usize; 2],
    /// Dilation, `[height, width]`.
    pub dilation: [usize; 2],
    /// Channel groups.
    pub groups: usize,
}

/// Why a convolution stays on burn's kernels.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unsupported {
    /// Top and bottom (or left and right) padding differ; the library pads symmetrically.
    #[error("asymmetric padding {0:?}")]
    AsymmetricPadding(((usize, usize), (usize, usize))),
    /// `PaddingConfig2d::Same`, whose split depends on the input size.
    #[error("'same' padding")]
    SamePadding,
    /// The input's channels are not the weight's per-group channels times the groups, or the
    /// output channels do not divide into the groups.
    #[error("input {input:?} does not match weight {weight:?} with {groups} groups")]
    Channels {
        /// Input dimensions.
        input: [usize; 4],
        /// Weight dimensions.
        weight: [usize; 4],
        /// Groups.
        groups: usize,
    },
    /// A zero stride, dilation, group count or dimension.
    #[error("a zero stride, dilation, group count or dimension")]
    Zero,
    /// The dilated kernel is larger than the padded input.
    #[error("kernel larger than the padded input")]
    KernelTooLarge,
    /// A dimension or element count beyond the library's 32-bit integers.
    #[error("more than 2^31 - 1 elements")]
    TooLarge,
}

impl ConvGeometry {
    /// The convolution of `input` by `weight` with `padding` as burn's `Conv2d` holds it, after
    /// the checks the library needs.
    pub fn new(
        input: [usize; 4],
        weight: [usize; 4],
        padding: &PaddingConfig2d,
        stride: [usize; 2],
        dilation: [usize; 2],
        groups: usize,
    ) -> Result<Self, Unsupported> {
        let padding = match *padding {
            PaddingConfig2d::Valid => [0, 0],
            PaddingConfig2d::Same => return Err(Unsupported::SamePadding),
            PaddingConfig2d::Explicit(top, left, bottom, right) => {
                if top != bottom || left != right {
                    return Err(Unsupported::AsymmetricPadding(((top, bottom), (left, right))));
                }
                [top, left]
            }
        };
        let geometry = Self {
            input,
            weight,
            padding,
            stride,
            dilation,
            groups,
        };
        geometry.check()?;
        Ok(geometry)
    }

    /// The convolution `conv` applies to an input of dimensions `input`.
    pub fn of<B: burn::prelude::Backend>(
        conv: &burn::nn::conv::Conv2d<B>,
        input: [usize; 4],
    ) -> Result<Self, Unsupported> {
        Self::new(
            input,
            conv.weight.dims(),
            &conv.padding,
            conv.stride,
            conv.dilation,
            conv.groups,
        )
    }

    fn check(&self) -> Result<(), Unsupported> {
        let [n, c_in, h, w] = self.input;
        let [c_out, per_group, kh, kw] = self.weight;
        let dims = [n, c_in, h, w, c_out, per_group, kh, kw];
        let steps = [
            self.stride[0],
            self.stride[1],
            self.dilation[0],
            self.dilation[1],
            self.groups,
        ];
        if dims.contains(&0) || steps.contains(&0) {
            return Err(Unsupported::Zero);
        }
        if per_group * self.groups != c_in || c_out % self.groups != 0 {
            return Err(Unsupported::Channels {
                input: self.input,
                weight: self.weight,
                groups: self.groups,
            });
        }
        for axis in 0..2 {
            let extent = [h, w][axis] + 2 * self.padding[axis];
            if self.dilation[axis] * ([kh, kw][axis] - 1) + 1 > extent {
                return Err(Unsupported::KernelTooLarge);
            }
        }
        let largest = [self.input, self.weight, self.output()]
            .iter()
            .map(|dims| dims.iter().product::<usize>())
            .max()
            .unwrap_or(0);
        if largest > i32::MAX as usize {
            return Err(Unsupported::TooLarge);
        }
        Ok(())
    }

    /// The output dimensions `[n, c_out, h_out, w_out]`, where per axis
    /// `out = ⌊(in + 2·pad − dilation·(k − 1) − 1) / stride⌋ + 1`.
    pub fn output(&self) -> [usize; 4] {
        let out = |axis: usize| {
            let size = self.input[2 + axis] + 2 * self.padding[axis];
            let reach = self.dilation[axis] * (self.weight[2 + axis] - 1) + 1;
            (size - reach) / self.stride[axis] + 1
        };
        [self.input[0], self.weight[0], out(0), out(1)]
    }

    /// The library's `(pad_h, pad_w, stride_h, stride_w, dilation_h, dilation_w)`.
    pub fn convolution_args(&self) -> [i32; 6] {
        [
            self.padding[0],
            self.padding[1],
            self.stride[0],
            self.stride[1],
            self.dilation[0],
            self.dilation[1],
        ]
        .map(to_i32)
    }
}

/// `dims` as the library's 32-bit integers (checked by [`ConvGeometry::new`]).
pub fn dims_i32(dims: [usize; 4]) -> [i32; 4] {
    dims.map(to_i32)
}

fn to_i32(value: usize) -> i32 {
    i32::try_from(value).expect("checked against i32::MAX by ConvGeometry::new")
}

/// The element strides of a packed (row-major) tensor of `dims`.
pub fn packed_strides(dims: [usize; 4]) -> [usize; 4] {
    [dims[1] * dims[2] * dims[3], dims[2] * dims[3], dims[3], 1]
}

/// Strides a tensor descriptor takes: every one positive (a broadcast dimension, stride 0,
/// must be copied out first) and within 32 bits. `None` otherwise.
pub fn descriptor_strides(dims: [usize; 4], strides: &[usize]) -> Option<[i32; 4]> {
    let strides: [usize; 4] = strides.try_into().ok()?;
    let reach: usize = dims.iter().zip(&strides).map(|(d, s)| (d - 1) * s).sum();
    if strides.contains(&0) || reach > i32::MAX as usize {
        return None;
    }
    Some(dims_i32(strides))
}

/// One algorithm the library proposes for a pass, in its order of expected speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proposal<A> {
    /// The algorithm.
    pub algo: A,
    /// Whether the library can run it for this convolution.
    pub runs: bool,
    /// The workspace it needs, in bytes.
    pub workspace: usize,
}

/// The first proposal that runs within `workspace_limit` bytes of workspace, as PyTorch
/// chooses without benchmarking (`cudnnGetConvolution*Algorithm_v7`'s order).
pub fn choose<A: Copy>(proposals: &[Proposal<A>], workspace_limit: usize) -> Option<Proposal<A>> {
    proposals
        .iter()
        .find(|p| p.runs && p.workspace <= workspace_limit)
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn explicit(p: usize) -> PaddingConfig2d {
        PaddingConfig2d::Explicit(p, p, p, p)
    }

    #[test]
    fn output_sizes_follow_the_formula_for_the_networks_layers() {
        // ResNet's stem: 7×7 stride 2 pad 3 on 224 → 112 (⌊(224 + 6 − 7) / 2⌋ + 1 = 112).
        let stem = ConvGeometry::new([8, 3, 224, 224], [64, 3, 7, 7], &explicit(3), [2, 2], [1, 1], 1).unwrap();
        assert_eq!(stem.output(), [8, 64, 112, 112]);
        // A 3×3 stride-2 downsampling on an odd side: ⌊(15 + 2 − 3) / 2⌋ + 1 = 8.
        let down = ConvGeometry::new([2, 16, 15, 15], [32, 16, 3, 3], &explicit(1), [2, 2], [1, 1], 1).unwrap();
        assert_eq!(down.output(), [2, 32, 8, 8]);
        // Dilation 2 reaches 5 pixels: ⌊(10 + 0 − 5) / 1⌋ + 1 = 6; no padding.
        let dilated =
            ConvGeometry::new([1, 4, 10, 10], [4, 4, 3, 3], &PaddingConfig2d::Valid, [1, 1], [2, 2], 1).unwrap();
        assert_eq!(dilated.output(), [1, 4, 6, 6]);
        // A depthwise 3×3 (YOLOX's DWConv): groups = channels, one input channel per group.
        let depthwise = ConvGeometry::new([4, 32, 20, 20], [32, 1, 3, 3], &explicit(1), [1, 1], [1, 1], 32).unwrap();
        assert_eq!(depthwise.output(), [4, 32, 20, 20]);
        assert_eq!(depthwise.convolution_args(), [1, 1, 1, 1, 1, 1]);
    }

    #[test]
    fn output_sizes_equal_burns_convolution() {
        use burn::backend::Flex;
        use burn::nn::conv::Conv2dConfig;
        use burn::prelude::*;
        let device = Default::default();
        for (side, kernel, stride, pad, dilation, groups) in [
            (9, 3, 2, 1, 1, 1),
            (8, 1, 1, 0, 1, 2),
            (11, 5, 3, 2, 2, 1),
            (6, 3, 1, 1, 1, 4),
        ] {
            let conv = Conv2dConfig::new([4, 8], [kernel, kernel])
                .with_stride([stride, stride])
                .with_padding(explicit(pad))
                .with_dilation([dilation, dilation])
                .with_groups(groups)
                .init::<Flex>(&device);
            let x = Tensor::<Flex, 4>::zeros([2, 4, side, side], &device);
            let geometry = ConvGeometry::of(&conv, x.dims()).unwrap();
            assert_eq!(geometry.output(), conv.forward(x).dims(), "side {side} kernel {kernel}");
        }
    }

    #[test]
    fn what_the_library_cannot_take_is_named() {
        let geometry = |input, weight, padding: PaddingConfig2d, groups| {
            ConvGeometry::new(input, weight, &padding, [1, 1], [1, 1], groups)
        };
        assert_eq!(
            geometry([1, 3, 8, 8], [4, 3, 3, 3], PaddingConfig2d::Explicit(1, 1, 0, 0), 1),
            Err(Unsupported::AsymmetricPadding(((1, 0), (1, 0))))
        );
        assert_eq!(
            geometry([1, 3, 8, 8], [4, 3, 3, 3], PaddingConfig2d::Same, 1),
            Err(Unsupported::SamePadding)
        );
        assert!(matches!(
            geometry([1, 6, 8, 8], [4, 3, 3, 3], explicit(1), 1),
            Err(Unsupported::Channels { .. })
        ));
        assert!(matches!(
            geometry([1, 6, 8, 8], [5, 3, 3, 3], explicit(1), 2),
            Err(Unsupported::Channels { .. })
        ));
        assert_eq!(
            geometry([0, 3, 8, 8], [4, 3, 3, 3], explicit(1), 1),
            Err(Unsupported::Zero)
        );
        assert_eq!(
            geometry([1, 3, 2, 2], [4, 3, 5, 5], PaddingConfig2d::Valid, 1),
            Err(Unsupported::KernelTooLarge)
        );
        // 2^31 input elements: 2048 images of 1 × 1024 × 1024.
        assert_eq!(
            geometry([2048, 1, 1024, 1024], [1, 1, 1, 1], PaddingConfig2d::Valid, 1),
            Err(Unsupported::TooLarge)
        );
    }

    #[test]
    fn descriptor_strides_refuse_broadcasts_and_keep_real_layouts() {
        assert_eq!(packed_strides([2, 3, 4, 5]), [60, 20, 5, 1]);
        assert_eq!(descriptor_strides([2, 3, 4, 5], &[60, 20, 5, 1]), Some([60, 20, 5, 1]));
        // Channels-last [N, H, W, C] memory seen as NCHW.
        assert_eq!(descriptor_strides([2, 3, 4, 5], &[60, 1, 15, 3]), Some([60, 1, 15, 3]));
        // A gradient broadcast from a scalar (stride 0) must be made contiguous first.
        assert_eq!(descriptor_strides([2, 3, 4, 5], &[0, 0, 0, 0]), None);
        assert_eq!(descriptor_strides([2, 3, 4, 5], &[60, 20, 5]), None);
    }

    #[test]
    fn the_first_runnable_proposal_within_the_workspace_wins() {
        let p = |algo, runs, workspace| Proposal { algo, runs, workspace };
        let proposals = [p(7, false, 0), p(1, true, 1 << 30), p(6, true, 1 << 20), p(0, true, 0)];
        assert_eq!(choose(&proposals, 1 << 31).map(|p| p.algo), Some(1));
        assert_eq!(choose(&proposals, 1 << 24).map(|p| p.algo), Some(6));
        assert_eq!(choose(&proposals, 0).map(|p| p.algo), Some(0));
        assert_eq!(choose(&proposals[..2], 0), None);
    }
}
