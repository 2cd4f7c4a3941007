//! The 2-D convolution kiln's networks run ([`conv2d`]): on burn's CUDA backend with cuDNN
//! loaded, cuDNN's forward, data-gradient and filter-gradient passes (what PyTorch runs); on
//! every other backend, or where cuDNN is absent, turned off (`KILN_CUDNN=0`) or cannot take
//! the convolution, burn's own `Conv2d::forward`.
//!
//! On CUDA the passes are custom operations of burn's fusion stream (so they run in order with
//! the fused kernels around them) and, for training, one autodiff node whose backward
//! registers the two gradient passes. A pass cuDNN refuses at run time falls back to burn's
//! kernel for that pass, with a warning once.

use std::cell::RefCell;

use burn::nn::conv::Conv2d;
use burn::prelude::*;

use super::conv_geometry::ConvGeometry;

thread_local! {
    /// The geometries [`conv2d`] saw on this thread while [`record_geometries`] runs.
    static RECORDED: RefCell<Option<Vec<ConvGeometry>>> = const { RefCell::new(None) };
}

/// `conv.forward(x)`, through cuDNN where it runs (see the module documentation).
pub fn conv2d<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    RECORDED.with_borrow_mut(|recorded| {
        if let Some(recorded) = recorded {
            let geometry = ConvGeometry::of(conv, x.dims());
            recorded.extend(geometry.ok().filter(|g| !recorded.contains(g)));
        }
    });
    #[cfg(feature = "cuda")]
    if let Some(y) = cuda::forward(conv, &x) {
        return y;
    }
    conv.forward(x)
}

/// Runs `f` and returns what it returned with every distinct convolution [`conv2d`] ran on
/// this thread meanwhile, in order of first use (the convolutions a network's forward runs,
/// for `kiln-bench ops`). Convolutions the geometry check refuses are left out.
pub fn record_geometries<T>(f: impl FnOnce() -> T) -> (T, Vec<ConvGeometry>) {
    let outer = RECORDED.replace(Some(Vec::new()));
    let value = f();
    let recorded = RECORDED.replace(outer).unwrap_or_default();
    (value, recorded)
}

#[cfg(feature = "cuda")]
pub use cuda::{burn_kernel, cudnn_fallbacks, cudnn_pass};

#[cfg(feature = "cuda")]
mod cuda {
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::{Autodiff, Cuda};
    use burn::nn::conv::Conv2d;
    use burn::prelude::*;
    use burn::tensor::ops::{ConvOptions, FloatTensor, ModuleOps};
    use burn::tensor::{DType, Shape, TensorPrimitive};
    use burn_cubecl::CubeBackend;
    use burn_fusion::stream::{Operation, OperationStreams};
    use burn_fusion::{FusionBackend, FusionRuntime};
    use burn_ir::{CustomOpIr, HandleContainer, OperationIr, OperationOutput, TensorIr};
    use cubecl_cuda::CudaRuntime;

    use crate::cpu::specialize::downcast;
    use crate::gpu::conv_geometry::ConvGeometry;
    use crate::gpu::cudnn::{self, CudaTensor, Pass};

    /// burn's CUDA backend under its fusion layer.
    type Cube = CubeBackend<CudaRuntime, f32, i32, u8>;
    type Runtime = <Cube as FusionBackend>::FusionRuntime;
    /// A tensor of `Cuda` (fusion) and of `Autodiff<Cuda>`.
    type Fused = FloatTensor<Cuda>;
    type Tracked = FloatTensor<Autodiff<Cuda>>;

    pub(super) fn forward<B: Backend>(conv: &Conv2d<B>, x: &Tensor<B, 4>) -> Option<Tensor<B, 4>> {
        let weight = conv.weight.val();
        if !matches!(x.dtype(), DType::F32 | DType::F16 | DType::BF16) || weight.dtype() != x.dtype() {
            return None;
        }
        let geometry = ConvGeometry::of(conv, x.dims()).ok()?;
        let primitive = |t: &Tensor<B, 4>| t.clone().into_primitive().tensor();
        let y = if let (Some(x), Some(w)) = (
            downcast::<_, Tracked>(primitive(x)),
            downcast::<_, Tracked>(primitive(&weight)),
        ) {
            wrap::<B, Tracked>(tracked(x, w, geometry)?)?
        } else if let (Some(x), Some(w)) = (
            downcast::<_, Fused>(primitive(x)),
            downcast::<_, Fused>(primitive(&weight)),
        ) {
            cudnn::library().ok()?;
            wrap::<B, Fused>(pass(Pass::Forward, geometry, x, w))?
        } else {
            return None;
        };
        Some(match &conv.bias {
            Some(bias) => y.add(bias.val().reshape([1, geometry.weight[0], 1, 1])),
            None => y,
        })
    }

    fn wrap<B: Backend, P: 'static>(primitive: P) -> Option<Tensor<B, 4>> {
        let primitive = downcast::<_, B::FloatTensorPrimitive>(primitive)?;
        Some(Tensor::from_primitive(TensorPrimitive::Float(primitive)))
    }

    /// The forward pass recorded for autodiff, or `None` where cuDNN is not loaded.
    fn tracked(x: Tracked, w: Tracked, geometry: ConvGeometry) -> Option<Tracked> {
        cudnn::library().ok()?;
        let prepared = ConvBackward
            .prepare::<NoCheckpointing>([x.node.clone(), w.node.clone()])
            .compute_bound()
            .stateful();
        Some(match prepared {
            OpsKind::Tracked(prep) => {
                let y = pass(Pass::Forward, geometry, x.primitive.clone(), w.primitive.clone());
                prep.finish((x.primitive, w.primitive, geometry), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(pass(Pass::Forward, geometry, x.primitive, w.primitive)),
        })
    }

    #[derive(Debug)]
    struct ConvBackward;

    impl Backward<Cuda, 2> for ConvBackward {
        type State = (Fused, Fused, ConvGeometry);

        fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
            let [node_x, node_w] = ops.parents;
            let dy = grads.consume::<Cuda>(&ops.node);
            let (x, w, geometry) = ops.state;
            if let Some(node) = node_x {
                grads.register::<Cuda>(node.id, pass(Pass::Data, geometry, w, dy.clone()));
            }
            if let Some(node) = node_w {
                grads.register::<Cuda>(node.id, pass(Pass::Filter, geometry, x, dy));
            }
        }
    }

    /// `pass` of `geometry` through cuDNN on burn's CUDA backend (`Forward` of `[x, w]`,
    /// `Data` of `[w, dy]`, `Filter` of `[x, dy]`), as training runs it; a pass cuDNN refuses
    /// runs on burn's kernel and counts in [`cudnn_fallbacks`].
    pub fn cudnn_pass(pass: Pass, geometry: &ConvGeometry, a: Tensor<Cuda, 4>, b: Tensor<Cuda, 4>) -> Tensor<Cuda, 4> {
        let [a, b] = [a, b].map(|t| t.into_primitive().tensor());
        Tensor::from_primitive(TensorPrimitive::Float(self::pass(pass, *geometry, a, b)))
    }

    /// `pass` of `geometry` on burn's own kernels, what kiln runs without cuDNN.
    pub fn burn_kernel(pass: Pass, geometry: &ConvGeometry, a: Tensor<Cuda, 4>, b: Tensor<Cuda, 4>) -> Tensor<Cuda, 4> {
        let options = ConvOptions::new(geometry.stride, geometry.padding, geometry.dilation, geometry.groups);
        let device = a.device();
        let dtype = a.dtype();
        let [a, b] = [a, b].map(|t| t.into_primitive().tensor());
        let zeros = |dims: [usize; 4]| {
            <Cuda as burn::tensor::ops::FloatTensorOps<Cuda>>::float_zeros(
                Shape::from(dims.to_vec()),
                &device,
                dtype.into(),
            )
        };
        let out = match pass {
            Pass::Forward => <Cuda>::conv2d(a, b, None, options),
            Pass::Data => <Cuda>::conv2d_x_backward(zeros(geometry.input), a, b, options),
            Pass::Filter => <Cuda>::conv2d_weight_backward(a, zeros(geometry.weight), b, options),
        };
        Tensor::from_primitive(TensorPrimitive::Float(out))
    }

    static FALLBACKS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    /// How many passes cuDNN refused in this process (each then ran on burn's kernel).
    pub fn cudnn_fallbacks() -> usize {
        FALLBACKS.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Queues `pass` on the fusion stream: `Forward` of `[x, w]`, `Data` of `[w, dy]`,
    /// `Filter` of `[x, dy]`.
    fn pass(pass: Pass, geometry: ConvGeometry, a: Fused, b: Fused) -> Fused {
        let out_dims = match pass {
            Pass::Forward => geometry.output(),
            Pass::Data => geometry.input,
            Pass::Filter => geometry.weight,
        };
        let client = a.client.clone();
        let streams = OperationStreams::with_inputs([&a, &b]);
        let out = TensorIr::uninit(client.create_empty_handle(), Shape::from(out_dims.to_vec()), a.dtype);
        let id = match pass {
            Pass::Forward => "kiln_cudnn_conv2d_forward",
            Pass::Data => "kiln_cudnn_conv2d_data_grad",
            Pass::Filter => "kiln_cudnn_conv2d_filter_grad",
        };
        let desc = CustomOpIr::new(id, &[a.into_ir(), b.into_ir()], &[out]);
        client
            .register(
                streams,
                OperationIr::Custom(desc.clone()),
                CudnnPass { desc, pass, geometry },
            )
            .output()
    }

    /// One pass as an operation of the fusion stream.
    #[derive(Debug)]
    struct CudnnPass {
        desc: CustomOpIr,
        pass: Pass,
        geometry: ConvGeometry,
    }

    impl Operation<Runtime> for CudnnPass {
        fn execute(&self, handles: &mut HandleContainer<<Runtime as FusionRuntime>::FusionHandle>) {
            let ([a, b], [out]) = self.desc.as_fixed();
            let a = handles.get_float_tensor::<Cube>(a);
            let b = handles.get_float_tensor::<Cube>(b);
            let result = cudnn::run(self.pass, &self.geometry, a.clone(), b.clone())
                .unwrap_or_else(|reason| burn_pass(self.pass, &self.geometry, a, b, &reason));
            handles.register_float_tensor::<Cube>(&out.id, result);
        }
    }

    /// `pass` on burn's own kernels, after cuDNN refused it for `reason` (warned once).
    fn burn_pass(pass: Pass, geometry: &ConvGeometry, a: CudaTensor, b: CudaTensor, reason: &str) -> CudaTensor {
        FALLBACKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| tracing::warn!(%reason, ?geometry, "cuDNN refused a convolution; burn's kernel runs it"));
        let options = ConvOptions::new(geometry.stride, geometry.padding, geometry.dilation, geometry.groups);
        let zeros = |dims: [usize; 4], like: &CudaTensor| {
            <Cube as burn::tensor::ops::FloatTensorOps<Cube>>::float_zeros(
                Shape::from(dims.to_vec()),
                &like.device,
                like.dtype.into(),
            )
        };
        match pass {
            Pass::Forward => Cube::conv2d(a, b, None, options),
            Pass::Data => {
                let x = zeros(geometry.input, &a);
                Cube::conv2d_x_backward(x, a, b, options)
            }
            Pass::Filter => {
                let w = zeros(geometry.weight, &a);
                Cube::conv2d_weight_backward(a, w, b, options)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::{Autodiff, Flex};
    use burn::nn::conv::Conv2dConfig;
    use burn::nn::PaddingConfig2d;
    use burn::tensor::Distribution;

    use super::*;

    #[test]
    fn the_cpu_runs_burns_convolution_unchanged() {
        let device = Default::default();
        let conv = Conv2dConfig::new([3, 4], [3, 3])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init::<Autodiff<Flex>>(&device);
        let x = Tensor::<Autodiff<Flex>, 4>::random([2, 3, 5, 5], Distribution::Normal(0.0, 1.0), &device);
        let ours = conv2d(&conv, x.clone()).into_data();
        let burns = conv.forward(x).into_data();
        assert_eq!(ours, burns);
    }

    #[test]
    fn recording_lists_each_convolution_once_in_order_of_use() {
        let device = Default::default();
        let wide = Conv2dConfig::new([3, 8], [3, 3])
            .with_stride([2, 2])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init::<Flex>(&device);
        let narrow = Conv2dConfig::new([8, 2], [1, 1]).init::<Flex>(&device);
        let x = Tensor::<Flex, 4>::zeros([1, 3, 8, 8], &device);
        let (y, recorded) = record_geometries(|| {
            let y = conv2d(&wide, x.clone());
            let y = conv2d(&narrow, y);
            // The same layer again on the same input size: recorded once.
            conv2d(
                &narrow,
                conv2d(&wide, x.clone()).add(y.clone().repeat_dim(1, 4)).mul_scalar(0.0),
            );
            y
        });
        assert_eq!(y.dims(), [1, 2, 4, 4]);
        let inputs: Vec<[usize; 4]> = recorded.iter().map(|g| g.input).collect();
        assert_eq!(inputs, vec![[1, 3, 8, 8], [1, 8, 4, 4]]);
        assert_eq!(recorded[0].stride, [2, 2]);
        // Outside the recording nothing is kept.
        conv2d(&narrow, Tensor::zeros([1, 8, 3, 3], &device));
        assert_eq!(record_geometries(|| ()).1, vec![]);
    }

    #[test]
    fn resnet50_runs_23_distinct_convolutions() {
        // The stem; layer1's 1×1 64→64, 3×3 64, 1×1 64→256 (its downsample has the same
        // geometry) and 1×1 256→64; then per later stage: the first block's 1×1 reduce, 3×3
        // stride 2, 1×1 expand and strided downsample, and the other blocks' 1×1 reduce and
        // 3×3 stride 1 (their expand equals the first block's): 1 + 4 + 3 × 6.
        use crate::{ResNetArch, ResNetConfig};
        let device = Default::default();
        let model = ResNetConfig::new(ResNetArch::ResNet50, 10).init::<Flex>(&device);
        let (_, recorded) = record_geometries(|| model.forward(Tensor::zeros([1, 3, 224, 224], &device)));
        assert_eq!(recorded.len(), 23);
        assert_eq!((recorded[0].weight, recorded[0].stride), ([64, 3, 7, 7], [2, 2]));
        let strided_3x3 = recorded
            .iter()
            .filter(|g| g.weight[2] == 3 && g.stride == [2, 2])
            .count();
        assert_eq!(strided_3x3, 3);
    }
}
