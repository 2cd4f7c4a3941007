//! cuDNN's convolution passes (forward, data gradient, filter gradient) on the memory of burn's
//! CUDA tensors. The library is loaded at run time (cudarc's dynamic loading), so a kiln built
//! with `cuda` still runs, on burn's kernels, where cuDNN is absent.
//!
//! Ordering with burn: cubecl runs its kernels on its own non-blocking streams, which it does
//! not expose, so a pass first waits for the calling thread's cubecl stream (inputs written,
//! freed memory no longer read), then runs on this device's cuDNN stream and waits for it
//! before its output is handed back. Each device has one handle, stream and algorithm cache,
//! behind a lock.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex, OnceLock};

use burn::tensor::{DType, Shape};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use cubecl_cuda::CudaRuntime;
use cudarc::cudnn::{result as dnn, sys};
use cudarc::driver::result as driver;

use super::conv_geometry::{choose, descriptor_strides, dims_i32, packed_strides, ConvGeometry, Proposal};

/// A tensor of burn's CUDA backend, without fusion.
pub(crate) type CudaTensor = CubeTensor<CudaRuntime>;

/// The environment variable that turns cuDNN off (`0`, `off` or `false`): burn's kernels then
/// run every convolution.
pub const CUDNN_ENV: &str = "KILN_CUDNN";

/// The most workspace one pass may take, as the algorithm chooser's limit.
const WORKSPACE_LIMIT: usize = 1 << 30;

/// A convolution's three passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pass {
    /// `y = conv(x, w)`.
    Forward,
    /// `dx` from `dy` and `w`.
    Data,
    /// `dw` from `x` and `dy`.
    Filter,
}

/// cuDNN's version, when the library is loaded and not turned off by [`CUDNN_ENV`]; else why
/// not. Decided once per process.
pub fn library() -> Result<usize, String> {
    static LIBRARY: OnceLock<Result<usize, String>> = OnceLock::new();
    LIBRARY
        .get_or_init(|| {
            if let Ok(value) = std::env::var(CUDNN_ENV) {
                if matches!(value.to_ascii_lowercase().as_str(), "0" | "off" | "false") {
                    return Err(format!("turned off by {CUDNN_ENV}={value}"));
                }
            }
            // SAFETY: only looks for the library file and loads it.
            if !unsafe { sys::is_culib_present() } {
                return Err("libcudnn not found on the library path".into());
            }
            dnn::version_check().map_err(|e| format!("cuDNN version check failed: {e}"))?;
            Ok(dnn::get_version())
        })
        .clone()
}

/// One device's cuDNN state.
struct Device {
    handle: sys::cudnnHandle_t,
    stream: cudarc::driver::sys::CUstream,
    context: cudarc::driver::sys::CUcontext,
    /// By pass, convolution, dtype and the element strides of `x` and `y` (or their gradients).
    algorithms: HashMap<(Pass, ConvGeometry, DType, [i32; 8]), Choice>,
}

// SAFETY: the raw handle, stream and context are used only under the device's lock.
unsafe impl Send for Device {}

/// An algorithm of one of the three passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Algo {
    Forward(sys::cudnnConvolutionFwdAlgo_t),
    Data(sys::cudnnConvolutionBwdDataAlgo_t),
    Filter(sys::cudnnConvolutionBwdFilterAlgo_t),
}

/// The algorithm chosen for a pass and the math mode and workspace it runs with.
#[derive(Debug, Clone, Copy)]
struct Choice {
    algo: Algo,
    math: sys::cudnnMathType_t,
    workspace: usize,
}

fn device(index: usize) -> Result<Arc<Mutex<Device>>, String> {
    static DEVICES: OnceLock<Mutex<HashMap<usize, Arc<Mutex<Device>>>>> = OnceLock::new();
    let mut devices = DEVICES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(device) = devices.get(&index) {
        return Ok(device.clone());
    }
    let ordinal = i32::try_from(index).map_err(|_| format!("device index {index}"))?;
    // SAFETY: cubecl initialised the driver and holds this device's primary context, which
    // this retains (the same context, so its memory is addressable here) and makes current.
    let device = unsafe {
        let cu_device = driver::device::get(ordinal).map_err(|e| format!("cuDeviceGet({index}): {e:?}"))?;
        let context = driver::primary_ctx::retain(cu_device).map_err(|e| format!("primary context: {e:?}"))?;
        driver::ctx::set_current(context).map_err(|e| format!("cuCtxSetCurrent: {e:?}"))?;
        let stream = driver::stream::create(driver::stream::StreamKind::NonBlocking)
            .map_err(|e| format!("cuStreamCreate: {e:?}"))?;
        let handle = dnn::create_handle().map_err(|e| format!("cudnnCreate: {e}"))?;
        dnn::set_stream(handle, stream as sys::cudaStream_t).map_err(|e| format!("cudnnSetStream: {e}"))?;
        Device {
            handle,
            stream,
            context,
            algorithms: HashMap::new(),
        }
    };
    let device = Arc::new(Mutex::new(device));
    devices.insert(index, device.clone());
    Ok(device)
}

/// cuDNN's data type for a tensor dtype, and the math mode PyTorch uses for it: f32 may use
/// TF32 tensor cores (PyTorch's default for convolutions, `allow_tf32`), half types use tensor
/// cores.
fn data_type(dtype: DType) -> Result<(sys::cudnnDataType_t, sys::cudnnMathType_t), String> {
    use sys::cudnnDataType_t::*;
    use sys::cudnnMathType_t::*;
    match dtype {
        DType::F32 => Ok((CUDNN_DATA_FLOAT, CUDNN_DEFAULT_MATH)),
        DType::F16 => Ok((CUDNN_DATA_HALF, CUDNN_TENSOR_OP_MATH)),
        DType::BF16 => Ok((CUDNN_DATA_BFLOAT16, CUDNN_TENSOR_OP_MATH)),
        other => Err(format!("dtype {other:?}")),
    }
}

/// The descriptors of one convolution, destroyed on drop.
struct Descriptors {
    x_strides: [i32; 4],
    y_strides: [i32; 4],
    x: sys::cudnnTensorDescriptor_t,
    w: sys::cudnnFilterDescriptor_t,
    y: sys::cudnnTensorDescriptor_t,
    conv: sys::cudnnConvolutionDescriptor_t,
}

impl Descriptors {
    /// `x` and `y` with the element strides given (the filter is always packed).
    fn new(geometry: &ConvGeometry, dtype: DType, x_strides: [i32; 4], y_strides: [i32; 4]) -> Result<Self, String> {
        let (data, math) = data_type(dtype)?;
        let fail = |what: &'static str| move |e: dnn::CudnnError| format!("{what}: {e}");
        let descriptors = Self {
            x_strides,
            y_strides,
            x: dnn::create_tensor_descriptor().map_err(fail("x descriptor"))?,
            w: dnn::create_filter_descriptor().map_err(fail("w descriptor"))?,
            y: dnn::create_tensor_descriptor().map_err(fail("y descriptor"))?,
            conv: dnn::create_convolution_descriptor().map_err(fail("conv descriptor"))?,
        };
        let [pad_h, pad_w, stride_h, stride_w, dilation_h, dilation_w] = geometry.convolution_args();
        // SAFETY: the descriptors were just created and are destroyed only on drop.
        unsafe {
            dnn::set_tensor4d_descriptor_ex(descriptors.x, data, dims_i32(geometry.input), x_strides)
                .map_err(fail("x descriptor"))?;
            dnn::set_filter4d_descriptor(
                descriptors.w,
                data,
                sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW,
                dims_i32(geometry.weight),
            )
            .map_err(fail("w descriptor"))?;
            dnn::set_tensor4d_descriptor_ex(descriptors.y, data, dims_i32(geometry.output()), y_strides)
                .map_err(fail("y descriptor"))?;
            dnn::set_convolution2d_descriptor(
                descriptors.conv,
                pad_h,
                pad_w,
                stride_h,
                stride_w,
                dilation_h,
                dilation_w,
                sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
                sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
            )
            .map_err(fail("conv descriptor"))?;
            dnn::set_convolution_group_count(descriptors.conv, geometry.groups as i32).map_err(fail("groups"))?;
            dnn::set_convolution_math_type(descriptors.conv, math).map_err(fail("math type"))?;
        }
        Ok(descriptors)
    }
}

impl Drop for Descriptors {
    fn drop(&mut self) {
        // SAFETY: created in `new`, destroyed once here.
        unsafe {
            let _ = dnn::destroy_tensor_descriptor(self.x);
            let _ = dnn::destroy_filter_descriptor(self.w);
            let _ = dnn::destroy_tensor_descriptor(self.y);
            let _ = dnn::destroy_convolution_descriptor(self.conv);
        }
    }
}

/// Up to this many algorithms are asked for per pass.
const PROPOSALS: usize = 16;

impl Device {
    /// The algorithm for `pass`, asked of cuDNN's heuristics once per geometry and dtype.
    fn choice(&mut self, pass: Pass, geometry: &ConvGeometry, dtype: DType, d: &Descriptors) -> Result<Choice, String> {
        let mut strides = [0; 8];
        strides[..4].copy_from_slice(&d.x_strides);
        strides[4..].copy_from_slice(&d.y_strides);
        let key = (pass, *geometry, dtype, strides);
        if let Some(choice) = self.algorithms.get(&key) {
            return Ok(*choice);
        }
        let mut count = 0;
        // SAFETY: the handle and descriptors are live; each perf array holds PROPOSALS entries.
        let proposals: Vec<(Proposal<Algo>, sys::cudnnMathType_t)> = unsafe {
            match pass {
                Pass::Forward => {
                    let mut perf = [std::mem::zeroed::<sys::cudnnConvolutionFwdAlgoPerf_t>(); PROPOSALS];
                    dnn::get_convolution_forward_algorithm(
                        self.handle,
                        d.x,
                        d.w,
                        d.conv,
                        d.y,
                        PROPOSALS as i32,
                        &mut count,
                        perf.as_mut_ptr(),
                    )
                    .map_err(|e| format!("forward algorithms: {e}"))?;
                    perf[..count as usize]
                        .iter()
                        .map(|p| (proposal(Algo::Forward(p.algo), p.status, p.memory), p.mathType))
                        .collect()
                }
                Pass::Data => {
                    let mut perf = [std::mem::zeroed::<sys::cudnnConvolutionBwdDataAlgoPerf_t>(); PROPOSALS];
                    dnn::get_convolution_backward_data_algorithm(
                        self.handle,
                        d.w,
                        d.y,
                        d.conv,
                        d.x,
                        PROPOSALS as i32,
                        &mut count,
                        perf.as_mut_ptr(),
                    )
                    .map_err(|e| format!("data-gradient algorithms: {e}"))?;
                    perf[..count as usize]
                        .iter()
                        .map(|p| (proposal(Algo::Data(p.algo), p.status, p.memory), p.mathType))
                        .collect()
                }
                Pass::Filter => {
                    let mut perf = [std::mem::zeroed::<sys::cudnnConvolutionBwdFilterAlgoPerf_t>(); PROPOSALS];
                    dnn::get_convolution_backward_filter_algorithm(
                        self.handle,
                        d.x,
                        d.y,
                        d.conv,
                        d.w,
                        PROPOSALS as i32,
                        &mut count,
                        perf.as_mut_ptr(),
                    )
                    .map_err(|e| format!("filter-gradient algorithms: {e}"))?;
                    perf[..count as usize]
                        .iter()
                        .map(|p| (proposal(Algo::Filter(p.algo), p.status, p.memory), p.mathType))
                        .collect()
                }
            }
        };
        let plain: Vec<Proposal<Algo>> = proposals.iter().map(|(p, _)| *p).collect();
        let chosen =
            choose(&plain, WORKSPACE_LIMIT).ok_or_else(|| format!("no {pass:?} algorithm for {geometry:?}"))?;
        let math = proposals
            .iter()
            .find(|(p, _)| p.algo == chosen.algo)
            .map(|(_, math)| *math)
            .unwrap_or(sys::cudnnMathType_t::CUDNN_DEFAULT_MATH);
        let choice = Choice {
            algo: chosen.algo,
            math,
            workspace: chosen.workspace,
        };
        self.algorithms.insert(key, choice);
        Ok(choice)
    }
}

fn proposal(algo: Algo, status: sys::cudnnStatus_t, memory: usize) -> Proposal<Algo> {
    Proposal {
        algo,
        runs: status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS,
        workspace: memory,
    }
}

/// A tensor's element strides as a descriptor takes them, copying it to a packed layout first
/// where it has none (a broadcast gradient, say).
fn with_strides(tensor: CudaTensor, dims: [usize; 4]) -> (CudaTensor, [i32; 4]) {
    if let Some(strides) = descriptor_strides(dims, tensor.meta.strides()) {
        return (tensor, strides);
    }
    let tensor = into_contiguous(tensor);
    let strides = descriptor_strides(dims, tensor.meta.strides()).unwrap_or(dims_i32(packed_strides(dims)));
    (tensor, strides)
}

/// Runs `pass` of the convolution `geometry` with cuDNN: `Forward` takes `[x, w]`, `Data`
/// `[w, dy]` and `Filter` `[x, dy]`; the result (`y`, `dx` or `dw`) is a new packed tensor of
/// the inputs' dtype. An error says what cuDNN refused; the caller then runs burn's kernel.
pub(crate) fn run(pass: Pass, geometry: &ConvGeometry, a: CudaTensor, b: CudaTensor) -> Result<CudaTensor, String> {
    library()?;
    let dtype = a.dtype;
    if b.dtype != dtype {
        return Err(format!("mixed dtypes {dtype:?} and {:?}", b.dtype));
    }
    let (x_dims, w_dims, y_dims) = (geometry.input, geometry.weight, geometry.output());
    let (a_dims, b_dims, out_dims) = match pass {
        Pass::Forward => (x_dims, w_dims, y_dims),
        Pass::Data => (w_dims, y_dims, x_dims),
        Pass::Filter => (x_dims, y_dims, w_dims),
    };
    for (tensor, dims) in [(&a, a_dims), (&b, b_dims)] {
        if tensor.meta.shape()[..] != dims[..] {
            return Err(format!(
                "a {:?} tensor where {dims:?} was expected",
                &tensor.meta.shape()[..]
            ));
        }
    }
    // The filter (weights or their gradient) is always packed; x, y and their gradients may
    // be strided.
    let (a, a_strides) = match pass {
        Pass::Data => (into_contiguous(a), dims_i32(packed_strides(w_dims))),
        _ => with_strides(a, a_dims),
    };
    let (b, b_strides) = match pass {
        Pass::Forward => (into_contiguous(b), dims_i32(packed_strides(w_dims))),
        _ => with_strides(b, b_dims),
    };
    if pass == Pass::Data && !a.is_contiguous() || pass == Pass::Forward && !b.is_contiguous() {
        return Err("weights not packed after a contiguous copy".into());
    }
    let packed_out = dims_i32(packed_strides(out_dims));
    let (x_strides, y_strides) = match pass {
        Pass::Forward => (a_strides, packed_out),
        Pass::Data => (packed_out, b_strides),
        Pass::Filter => (a_strides, b_strides),
    };

    let device = device(a.device.index)?;
    let mut device = device.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: the context is this device's primary context, retained in `device`.
    unsafe { driver::ctx::set_current(device.context) }.map_err(|e| format!("cuCtxSetCurrent: {e:?}"))?;
    let descriptors = Descriptors::new(geometry, dtype, x_strides, y_strides)?;
    let choice = device.choice(pass, geometry, dtype, &descriptors)?;
    // SAFETY: the descriptor is live.
    unsafe { dnn::set_convolution_math_type(descriptors.conv, choice.math) }.map_err(|e| format!("math type: {e}"))?;

    let client = a.client.clone();
    let out_elements: usize = out_dims.iter().product();
    let out = client.empty(out_elements * dtype.size());
    let workspace = (choice.workspace > 0).then(|| client.empty(choice.workspace));
    let resource = |handle: &cubecl_runtime::server::Handle| {
        client
            .get_resource(handle.clone())
            .map_err(|e| format!("device memory: {e:?}"))
    };
    let a_memory = resource(&a.handle)?;
    let b_memory = resource(&b.handle)?;
    let out_memory = resource(&out)?;
    let workspace_memory = workspace.as_ref().map(&resource).transpose()?;
    cubecl_common::future::block_on(client.sync()).map_err(|e| format!("waiting for burn's stream: {e:?}"))?;

    let (a_ptr, b_ptr, out_ptr) = (
        a_memory.resource().ptr as *mut c_void,
        b_memory.resource().ptr as *mut c_void,
        out_memory.resource().ptr as *mut c_void,
    );
    let workspace_ptr = workspace_memory
        .as_ref()
        .map_or(std::ptr::null_mut(), |memory| memory.resource().ptr as *mut c_void);
    let (alpha, beta) = (1.0f32, 0.0f32);
    let (alpha, beta) = (
        &alpha as *const f32 as *const c_void,
        &beta as *const f32 as *const c_void,
    );
    let d = &descriptors;
    // SAFETY: every pointer is live device memory of the size its descriptor describes (kept
    // by the `*_memory` guards), burn's stream has finished with it, and the handle's stream
    // is synchronised before the memory is released or read.
    unsafe {
        let launched = match choice.algo {
            Algo::Forward(algo_fwd) => dnn::convolution_forward(
                device.handle,
                alpha,
                d.x,
                a_ptr,
                d.w,
                b_ptr,
                d.conv,
                algo_fwd,
                workspace_ptr,
                choice.workspace,
                beta,
                d.y,
                out_ptr,
            ),
            Algo::Data(algo_data) => dnn::convolution_backward_data(
                device.handle,
                alpha,
                d.w,
                a_ptr,
                d.y,
                b_ptr,
                d.conv,
                algo_data,
                workspace_ptr,
                choice.workspace,
                beta,
                d.x,
                out_ptr,
            ),
            Algo::Filter(algo_filter) => dnn::convolution_backward_filter(
                device.handle,
                alpha,
                d.x,
                a_ptr,
                d.y,
                b_ptr,
                d.conv,
                algo_filter,
                workspace_ptr,
                choice.workspace,
                beta,
                d.w,
                out_ptr,
            ),
        };
        let synced = driver::stream::synchronize(device.stream);
        launched.map_err(|e| format!("{pass:?} pass: {e}"))?;
        synced.map_err(|e| format!("cuDNN stream: {e:?}"))?;
    }
    drop((a_memory, b_memory, out_memory, workspace_memory));
    Ok(CubeTensor::new_contiguous(
        client,
        a.device.clone(),
        Shape::from(out_dims.to_vec()),
        out,
        dtype,
    ))
}
