//! `kiln-bench ops --device cuda`: the per-op profile of GPU training. Every distinct
//! convolution of ResNet-50 (224 px) and YOLOX-s (640 px), as recorded from the models' own
//! forward passes, in its three passes (forward, data gradient, filter gradient) through
//! cuDNN as kiln runs it and through burn's kernels; then BatchNorm, pooling, a matmul, an
//! elementwise chain and the SGD step. With `--compare-pytorch` the same ops run in PyTorch
//! (`benches/reference/gpu_ops.py`) on the same GPU in the same run.
//!
//! Each convolution pass is also a numerical check: cuDNN's result against burn's kernel's on
//! the same inputs, as the largest difference relative to the largest magnitude of burn's
//! result. The bench fails when one exceeds `--tolerance` or when cuDNN refused a pass (run
//! with `NVIDIA_TF32_OVERRIDE=0` to compare in full f32).

use std::path::PathBuf;

use clap::Args;
use kiln_models::gpu::conv_geometry::ConvGeometry;
use serde::{Deserialize, Serialize};

use crate::chart::BarChart;
use crate::report::Report;

/// Flags of `kiln-bench ops` that only the GPU profile reads.
#[derive(Debug, Clone, Args)]
pub struct GpuOpsFlags {
    /// Images per ResNet-50 convolution on the GPU.
    #[arg(long = "resnet-batch", default_value_t = 128)]
    pub resnet_batch: usize,
    /// Images per YOLOX-s convolution on the GPU.
    #[arg(long = "yolox-batch", default_value_t = 32)]
    pub yolox_batch: usize,
    /// The largest relative difference between cuDNN's and burn's result a pass may have.
    #[arg(long, default_value_t = 5e-3)]
    pub tolerance: f64,
    /// The Python interpreter that runs the GPU reference.
    #[arg(long, default_value = "python3")]
    pub python: PathBuf,
    /// The PyTorch reference script for the GPU profile.
    #[arg(long = "gpu-reference", default_value = "benches/reference/gpu_ops.py")]
    pub gpu_reference: PathBuf,
}

/// One op of the GPU profile, as the reference script reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OpSpec {
    /// One pass of a convolution (`forward`, `data_grad` or `filter_grad`).
    Conv {
        /// The name both sides report.
        name: String,
        /// `forward`, `data_grad` or `filter_grad`.
        pass: String,
        /// `[n, c_in, h, w]`.
        input: [usize; 4],
        /// `[c_out, c_in / groups, kh, kw]`.
        weight: [usize; 4],
        /// `[h, w]`.
        stride: [usize; 2],
        /// `[h, w]`, both sides.
        padding: [usize; 2],
        /// `[h, w]`.
        dilation: [usize; 2],
        /// Channel groups.
        groups: usize,
    },
    /// BatchNorm in training, forward and backward.
    BatchNorm {
        /// The name both sides report.
        name: String,
        /// `[n, c, h, w]`.
        shape: [usize; 4],
    },
    /// 3×3 stride-2 max pooling with padding 1, forward and backward.
    MaxPool {
        /// The name both sides report.
        name: String,
        /// `[n, c, h, w]`.
        shape: [usize; 4],
    },
    /// `x · Wᵀ + b`, forward and backward.
    Linear {
        /// The name both sides report.
        name: String,
        /// `[rows, in]`.
        input: [usize; 2],
        /// Output features.
        out: usize,
    },
    /// `relu(a + b)`, a residual join, forward and backward.
    AddRelu {
        /// The name both sides report.
        name: String,
        /// `[n, c, h, w]`.
        shape: [usize; 4],
    },
    /// One SGD step (momentum 0.9, weight decay 1e-4) over ResNet-50's parameters.
    SgdResnet50 {
        /// The name both sides report.
        name: String,
    },
}

impl OpSpec {
    /// The name both sides report.
    pub fn name(&self) -> &str {
        match self {
            OpSpec::Conv { name, .. }
            | OpSpec::BatchNorm { name, .. }
            | OpSpec::MaxPool { name, .. }
            | OpSpec::Linear { name, .. }
            | OpSpec::AddRelu { name, .. }
            | OpSpec::SgdResnet50 { name } => name,
        }
    }
}

/// The three passes of each geometry of `model`, with the batch set to `batch`.
pub fn conv_specs(model: &str, batch: usize, geometries: &[ConvGeometry]) -> Vec<OpSpec> {
    let mut specs = Vec::new();
    for g in geometries {
        let [_, c_in, h, w] = g.input;
        let [c_out, _, kh, kw] = g.weight;
        let group = if g.groups > 1 {
            format!(" g{}", g.groups)
        } else {
            String::new()
        };
        let shape = format!(
            "{model} conv {kh}×{kw}/{} {c_in}→{c_out}{group} on {h}×{w} b{batch}",
            g.stride[0]
        );
        for pass in ["forward", "data_grad", "filter_grad"] {
            specs.push(OpSpec::Conv {
                name: format!("{shape} {pass}"),
                pass: pass.into(),
                input: [batch, c_in, h, w],
                weight: g.weight,
                stride: g.stride,
                padding: g.padding,
                dilation: g.dilation,
                groups: g.groups,
            });
        }
    }
    specs
}

/// The ops after the convolutions, at ResNet-50's batch `batch`.
pub fn other_specs(batch: usize) -> Vec<OpSpec> {
    vec![
        OpSpec::BatchNorm {
            name: format!("batchnorm train [{batch},64,112,112]"),
            shape: [batch, 64, 112, 112],
        },
        OpSpec::MaxPool {
            name: format!("max-pool 3×3/2 [{batch},64,112,112]"),
            shape: [batch, 64, 112, 112],
        },
        OpSpec::Linear {
            name: format!("linear 2048→1000 b{batch}"),
            input: [batch, 2048],
            out: 1000,
        },
        OpSpec::AddRelu {
            name: format!("add + relu [{batch},256,56,56]"),
            shape: [batch, 256, 56, 56],
        },
        OpSpec::SgdResnet50 {
            name: "SGD step (ResNet-50 parameters)".into(),
        },
    ]
}

/// Versions of what measured, from the GPU and the reference.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GpuInfo {
    /// `nvidia-smi`'s GPU name.
    pub gpu: String,
    /// `nvidia-smi`'s driver version.
    pub driver: String,
    /// cuDNN's version as kiln loaded it, or why it did not.
    pub kiln_cudnn: String,
    /// PyTorch's version, its CUDA and cuDNN versions (when the reference ran).
    pub torch: Option<String>,
    /// The CUDA version PyTorch was built with.
    pub torch_cuda: Option<String>,
    /// PyTorch's cuDNN version.
    pub torch_cudnn: Option<String>,
}

/// One op's median time per call on each side, and the check of its result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GpuOpTiming {
    /// The op's name.
    pub op: String,
    /// kiln's milliseconds per call (cuDNN for convolutions).
    pub kiln_ms: f64,
    /// burn's own kernel, for convolutions.
    pub burn_ms: Option<f64>,
    /// PyTorch's, when it ran.
    pub torch_ms: Option<f64>,
    /// cuDNN's largest difference from burn's kernel relative to burn's largest magnitude.
    pub relative_difference: Option<f64>,
}

/// The results file of `kiln-bench ops --device cuda`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GpuOpsReport {
    /// What measured.
    pub device: GpuInfo,
    /// Untimed runs per op.
    pub warmup: usize,
    /// Timed runs per op.
    pub reps: usize,
    /// The check's tolerance.
    pub tolerance: f64,
    /// Passes cuDNN refused (they ran on burn's kernels).
    pub cudnn_fallbacks: usize,
    /// One entry per op.
    pub ops: Vec<GpuOpTiming>,
}

impl Report for GpuOpsReport {
    const BENCH: &'static str = "ops-gpu";

    fn chart(&self) -> BarChart {
        BarChart {
            title: format!("Per-op time on {}, kiln vs PyTorch", self.device.gpu),
            unit: "ms per call, median (lower is better)".into(),
            series: vec!["kiln".into(), "burn's kernel".into(), "PyTorch".into()],
            groups: self
                .ops
                .iter()
                .map(|o| (o.op.clone(), vec![Some(o.kiln_ms), o.burn_ms, o.torch_ms]))
                .collect(),
        }
    }

    fn notes(&self) -> Vec<String> {
        let mut notes = vec![format!(
            "{} (driver {}), kiln's cuDNN {}, PyTorch {} (CUDA {}, cuDNN {})",
            self.device.gpu,
            self.device.driver,
            self.device.kiln_cudnn,
            self.device.torch.as_deref().unwrap_or("n/a"),
            self.device.torch_cuda.as_deref().unwrap_or("n/a"),
            self.device.torch_cudnn.as_deref().unwrap_or("n/a"),
        )];
        notes.extend(self.failures());
        notes
    }
}

impl GpuOpsReport {
    /// What failed the check: passes beyond the tolerance and refused passes.
    pub fn failures(&self) -> Vec<String> {
        let mut failures: Vec<String> = self
            .ops
            .iter()
            .filter_map(|o| {
                let d = o.relative_difference?;
                // NaN (a non-finite result) fails too.
                (d.is_nan() || d > self.tolerance).then(|| format!("{}: relative difference {d:.2e}", o.op))
            })
            .collect();
        if self.cudnn_fallbacks > 0 {
            failures.push(format!(
                "{} passes ran on burn's kernels: cuDNN refused them",
                self.cudnn_fallbacks
            ));
        }
        failures
    }

    /// The Markdown table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "\n## Per-op time on {}, median ms per call\n\n| op | kiln | burn's kernel | PyTorch | kiln / PyTorch | cuDNN vs burn |\n|---|---|---|---|---|---|\n",
            self.device.gpu
        );
        let ms = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.3}"));
        for o in &self.ops {
            let ratio = o.torch_ms.map_or("n/a".into(), |t| format!("{:.2}×", o.kiln_ms / t));
            let diff = o.relative_difference.map_or("".into(), |d| format!("{d:.1e}"));
            out += &format!(
                "| {} | {:.3} | {} | {} | {ratio} | {diff} |\n",
                o.op,
                o.kiln_ms,
                ms(o.burn_ms),
                ms(o.torch_ms)
            );
        }
        out
    }
}

/// The largest `|a − b|` over the largest `|b|` (0 for two zero tensors, NaN when either holds
/// a NaN or an infinity).
pub fn relative_difference(a: &[f32], b: &[f32]) -> f64 {
    if a.len() != b.len() {
        return f64::NAN;
    }
    let mut largest_difference = 0.0f64;
    let mut largest = 0.0f64;
    for (&x, &y) in a.iter().zip(b) {
        if !x.is_finite() || !y.is_finite() {
            return f64::NAN;
        }
        largest_difference = largest_difference.max((x as f64 - y as f64).abs());
        largest = largest.max((y as f64).abs());
    }
    if largest_difference == 0.0 {
        0.0
    } else {
        largest_difference / largest
    }
}

#[cfg(feature = "cuda")]
pub use measure::run;

/// Without CUDA in the build: says so.
#[cfg(not(feature = "cuda"))]
pub fn run(_args: &crate::ops::OpsBench, _device: usize) -> Result<(), String> {
    Err("kiln-bench was built without CUDA: rebuild with --features cuda for --device cuda".into())
}

#[cfg(feature = "cuda")]
mod measure {
    use std::collections::HashMap;
    use std::process::Command;
    use std::time::Instant;

    use burn::backend::cuda::CudaDevice;
    use burn::backend::{Autodiff, Cuda};
    use burn::nn::BatchNormConfig;
    use burn::optim::{GradientsParams, Optimizer};
    use burn::prelude::*;
    use burn::tensor::activation::relu;
    use burn::tensor::module::{linear, max_pool2d};
    use burn::tensor::Distribution;
    use kiln_models::gpu::conv::{burn_kernel, cudnn_fallbacks, cudnn_pass};
    use kiln_models::gpu::conv_geometry::ConvGeometry;
    use kiln_models::gpu::cudnn::{self, Pass};
    use kiln_models::gpu::record_geometries;
    use kiln_models::{ResNetArch, ResNetConfig, Yolox, YoloxVariant};
    use kiln_train::optim::SgdConfig;

    use super::*;
    use crate::ops::OpsBench;

    type Ad = Autodiff<Cuda>;

    /// Runs the GPU profile on CUDA device `index`.
    pub fn run(args: &OpsBench, index: usize) -> Result<(), String> {
        let flags = &args.gpu;
        let device = CudaDevice::new(index);
        let resnet = {
            let model = ResNetConfig::new(ResNetArch::ResNet50, 1000).init::<Cuda>(&device);
            record_geometries(|| model.forward(Tensor::zeros([1, 3, 224, 224], &device))).1
        };
        let yolox = {
            let model = Yolox::<Cuda>::new(YoloxVariant::S, 80, &device);
            record_geometries(|| model.forward(Tensor::zeros([1, 3, 640, 640], &device))).1
        };
        eprintln!(
            "{} ResNet-50 and {} YOLOX-s convolution shapes",
            resnet.len(),
            yolox.len()
        );
        let mut specs = conv_specs("ResNet-50", flags.resnet_batch, &resnet);
        specs.extend(conv_specs("YOLOX-s", flags.yolox_batch, &yolox));
        specs.extend(other_specs(flags.resnet_batch));

        let mut ops = Vec::new();
        for spec in &specs {
            let timing = measure(spec, &device, args.warmup, args.reps)?;
            eprintln!("kiln    {}: {:.3} ms", timing.op, timing.kiln_ms);
            ops.push(timing);
        }
        let (info, torch) = reference(args, &specs, index)?;
        for op in &mut ops {
            op.torch_ms = torch.as_ref().and_then(|t| t.get(&op.op).copied());
        }
        let report = GpuOpsReport {
            device: info,
            warmup: args.warmup,
            reps: args.reps,
            tolerance: flags.tolerance,
            cudnn_fallbacks: cudnn_fallbacks(),
            ops,
        };
        println!("{}", report.table());
        crate::report::write(&args.json, &report)?;
        let failures = report.failures();
        if failures.is_empty() {
            Ok(())
        } else {
            Err(format!("cuDNN check failed:\n{}", failures.join("\n")))
        }
    }

    fn random<const D: usize, B: Backend>(shape: [usize; D], device: &B::Device) -> Tensor<B, D> {
        Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
    }

    /// Median milliseconds of `f`, each call waited for ([`crate::ops::median_ms`]).
    fn median_ms<T>(warmup: usize, reps: usize, device: &CudaDevice, mut f: impl FnMut() -> T) -> f64 {
        crate::ops::median_ms(warmup, reps, &mut || {
            let started = Instant::now();
            let _kept = f();
            let _ = <Cuda>::sync(device);
            started.elapsed()
        })
    }

    fn measure(spec: &OpSpec, device: &CudaDevice, warmup: usize, reps: usize) -> Result<GpuOpTiming, String> {
        let timing = |kiln_ms, burn_ms, relative_difference| GpuOpTiming {
            op: spec.name().to_string(),
            kiln_ms,
            burn_ms,
            torch_ms: None,
            relative_difference,
        };
        Ok(match spec {
            OpSpec::Conv {
                pass,
                input,
                weight,
                stride,
                padding,
                dilation,
                groups,
                ..
            } => {
                let padding = burn::nn::PaddingConfig2d::Explicit(padding[0], padding[1], padding[0], padding[1]);
                let g = ConvGeometry::new(*input, *weight, &padding, *stride, *dilation, *groups)
                    .map_err(|e| format!("{}: {e}", spec.name()))?;
                let pass = match pass.as_str() {
                    "forward" => Pass::Forward,
                    "data_grad" => Pass::Data,
                    _ => Pass::Filter,
                };
                let (a, b) = match pass {
                    Pass::Forward => (random::<4, Cuda>(g.input, device), random(g.weight, device)),
                    Pass::Data => (random(g.weight, device), random(g.output(), device)),
                    Pass::Filter => (random(g.input, device), random(g.output(), device)),
                };
                let ours = cudnn_pass(pass, &g, a.clone(), b.clone());
                let theirs = burn_kernel(pass, &g, a.clone(), b.clone());
                let values = |t: Tensor<Cuda, 4>| t.into_data().convert::<f32>().to_vec::<f32>().unwrap_or_default();
                let difference = relative_difference(&values(ours), &values(theirs));
                let kiln = median_ms(warmup, reps, device, || cudnn_pass(pass, &g, a.clone(), b.clone()));
                let burn = median_ms(warmup, reps, device, || burn_kernel(pass, &g, a.clone(), b.clone()));
                timing(kiln, Some(burn), Some(difference))
            }
            OpSpec::BatchNorm { shape, .. } => {
                let bn = BatchNormConfig::new(shape[1]).init::<Ad>(device);
                let x = random::<4, Ad>(*shape, device).require_grad();
                timing(
                    median_ms(warmup, reps, device, || {
                        kiln_models::batch_norm(&bn, x.clone()).sum().backward()
                    }),
                    None,
                    None,
                )
            }
            OpSpec::MaxPool { shape, .. } => {
                let x = random::<4, Ad>(*shape, device).require_grad();
                timing(
                    median_ms(warmup, reps, device, || {
                        max_pool2d(x.clone(), [3, 3], [2, 2], [1, 1], [1, 1], false)
                            .sum()
                            .backward()
                    }),
                    None,
                    None,
                )
            }
            OpSpec::Linear { input, out, .. } => {
                let x = random::<2, Ad>(*input, device).require_grad();
                let w = random::<2, Ad>([input[1], *out], device).require_grad();
                let b = random::<1, Ad>([*out], device).require_grad();
                timing(
                    median_ms(warmup, reps, device, || {
                        linear(x.clone(), w.clone(), Some(b.clone())).sum().backward()
                    }),
                    None,
                    None,
                )
            }
            OpSpec::AddRelu { shape, .. } => {
                let a = random::<4, Ad>(*shape, device).require_grad();
                let b = random::<4, Ad>(*shape, device).require_grad();
                timing(
                    median_ms(warmup, reps, device, || relu(a.clone() + b.clone()).sum().backward()),
                    None,
                    None,
                )
            }
            OpSpec::SgdResnet50 { .. } => {
                let mut model = ResNetConfig::new(ResNetArch::ResNet50, 1000).init::<Ad>(device);
                let mut optim = SgdConfig::torch(0.9, 1e-4).init::<Ad, kiln_models::ResNet<Ad>>();
                let x = random::<4, Ad>([2, 3, 64, 64], device);
                let gradients = |model: &kiln_models::ResNet<Ad>| {
                    let grads = GradientsParams::from_grads(model.forward(x.clone()).sum().backward(), model);
                    let _ = <Cuda>::sync(device);
                    grads
                };
                // One untimed step creates the momentum buffers, as in training.
                let grads = gradients(&model);
                model = optim.step(0.1, model, grads);
                // Only the step is timed; the gradients are computed before it.
                let ms = crate::ops::median_ms(0, reps, &mut || {
                    let grads = gradients(&model);
                    let started = Instant::now();
                    model = optim.step(0.1, model.clone(), grads);
                    let _ = <Cuda>::sync(device);
                    started.elapsed()
                });
                timing(ms, None, None)
            }
        })
    }

    /// The GPU's name and driver, and PyTorch's times per op name when `--compare-pytorch`.
    fn reference(
        args: &OpsBench,
        specs: &[OpSpec],
        index: usize,
    ) -> Result<(GpuInfo, Option<HashMap<String, f64>>), String> {
        let mut info = GpuInfo {
            kiln_cudnn: match cudnn::library() {
                Ok(version) => version.to_string(),
                Err(why) => format!("not used: {why}"),
            },
            ..GpuInfo::default()
        };
        if let Ok(out) = Command::new("nvidia-smi")
            .args([
                "--query-gpu=name,driver_version",
                "--format=csv,noheader",
                "-i",
                &index.to_string(),
            ])
            .output()
        {
            let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let mut fields = line.splitn(2, ", ");
            info.gpu = fields.next().unwrap_or("").to_string();
            info.driver = fields.next().unwrap_or("").to_string();
        }
        if !args.compare_pytorch {
            return Ok((info, None));
        }
        let spec_file = std::env::temp_dir().join(format!("kiln-gpu-ops-{}.json", std::process::id()));
        let text = serde_json::to_string(specs).map_err(|e| e.to_string())?;
        std::fs::write(&spec_file, text).map_err(|e| format!("{}: {e}", spec_file.display()))?;
        let mut cmd = Command::new(&args.gpu.python);
        cmd.arg(&args.gpu.gpu_reference)
            .arg(&spec_file)
            .args(["--device", &format!("cuda:{index}")])
            .args(["--warmup", &args.warmup.to_string(), "--reps", &args.reps.to_string()]);
        let lines = crate::reference::json_lines(cmd)?;
        let _ = std::fs::remove_file(&spec_file);
        let Some(line) = lines.as_ref().and_then(|l| l.last()) else {
            return Ok((info, None));
        };
        #[derive(Deserialize)]
        struct Output {
            torch: String,
            cuda: Option<String>,
            cudnn: Option<String>,
            ms: HashMap<String, f64>,
        }
        let output: Output = serde_json::from_str(line)
            .map_err(|e| format!("{}: output {line:?}: {e}", args.gpu.gpu_reference.display()))?;
        info.torch = Some(output.torch);
        info.torch_cuda = output.cuda;
        info.torch_cudnn = output.cudnn;
        Ok((info, Some(output.ms)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::PaddingConfig2d;

    #[test]
    fn each_geometry_gives_three_passes_at_the_bench_batch() {
        let g = ConvGeometry::new(
            [1, 64, 56, 56],
            [64, 64, 3, 3],
            &PaddingConfig2d::Explicit(1, 1, 1, 1),
            [1, 1],
            [1, 1],
            1,
        )
        .unwrap();
        let specs = conv_specs("ResNet-50", 128, &[g]);
        assert_eq!(specs.len(), 3);
        assert_eq!(specs[0].name(), "ResNet-50 conv 3×3/1 64→64 on 56×56 b128 forward");
        assert_eq!(specs[2].name(), "ResNet-50 conv 3×3/1 64→64 on 56×56 b128 filter_grad");
        let OpSpec::Conv { input, padding, .. } = &specs[1] else {
            panic!("a convolution")
        };
        assert_eq!((*input, *padding), ([128, 64, 56, 56], [1, 1]));
        // What the reference script reads.
        let json = serde_json::to_value(&specs[1]).unwrap();
        assert_eq!(json["kind"], "conv");
        assert_eq!(json["pass"], "data_grad");
        assert_eq!(
            serde_json::to_value(&other_specs(8)[4]).unwrap()["kind"],
            "sgd_resnet50"
        );
    }

    #[test]
    fn relative_differences_are_scaled_by_the_reference() {
        assert_eq!(relative_difference(&[1.0, -4.0], &[1.0, -4.0]), 0.0);
        // |2.02 − 2| = 0.02 over the largest |b| = 4.
        assert!((relative_difference(&[2.02, 4.0], &[2.0, 4.0]) - 0.005).abs() < 1e-6);
        assert!(relative_difference(&[f32::NAN], &[1.0]).is_nan());
        assert!(relative_difference(&[1.0], &[1.0, 2.0]).is_nan());
    }

    #[test]
    fn the_check_fails_beyond_the_tolerance_and_on_refused_passes() {
        let op = |name: &str, d| GpuOpTiming {
            op: name.into(),
            kiln_ms: 1.0,
            burn_ms: Some(2.0),
            torch_ms: None,
            relative_difference: d,
        };
        let mut report = GpuOpsReport {
            device: GpuInfo::default(),
            warmup: 1,
            reps: 1,
            tolerance: 1e-3,
            cudnn_fallbacks: 0,
            ops: vec![op("a", Some(1e-4)), op("b", None), op("c", Some(f64::NAN))],
        };
        assert_eq!(report.failures(), vec!["c: relative difference NaN".to_string()]);
        report.ops[0].relative_difference = Some(2e-3);
        report.cudnn_fallbacks = 2;
        assert_eq!(report.failures().len(), 3);
        assert!(report.table().contains("| a | 1.000 | 2.000 | n/a | n/a | 2.0e-3 |"));
    }
}
