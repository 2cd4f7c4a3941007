//! `kiln-bench ops`: the per-op profile of CPU training. Times each op of the MNIST `Net`
//! (batch 64), the ResNet stem and stages (batch 32) and Swin-T's first stage (batch 8) on
//! kiln's CPU backend,
//! `Autodiff<Flex>`, and with `--compare-pytorch` the same ops in PyTorch
//! (`benches/reference/ops_profile.py`) on the same thread count in the same run.
//!
//! Each op runs `--warmup` times untimed, then `--reps` times; the median is reported.
//! "fwd+bwd" is the op's forward and the backward of its output's sum; `(x)`, `(w)` and
//! `(x+w)` say which of input and weight require a gradient, so the backward computes the
//! input gradient, the weight gradient, or both.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use burn::backend::{Autodiff, Flex};
use burn::nn::pool::MaxPool2dConfig;
use burn::nn::{BatchNormConfig, DropoutConfig};
use burn::optim::{GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::activation::{log_softmax, relu};
use burn::tensor::module::{conv2d, linear, max_pool2d};
use burn::tensor::ops::ConvOptions;
use burn::tensor::Distribution;
use clap::Args;
use kiln_models::{DeviceChoice, NetConfig};
use kiln_train::optim::AdadeltaConfig;
use serde::{Deserialize, Serialize};

use crate::chart::BarChart;
use crate::report::Report;

/// kiln's CPU training backend.
type B = Autodiff<Flex>;

/// Flags of `kiln-bench ops`.
#[derive(Debug, Clone, Args)]
pub struct OpsBench {
    /// Untimed runs of each op before timing.
    #[arg(long, default_value_t = 2)]
    pub(crate) warmup: usize,
    /// Timed runs of each op; the median is reported.
    #[arg(long, default_value_t = 5)]
    pub(crate) reps: usize,
    /// Also time the ops in PyTorch with the local python3 (needs torch).
    #[arg(long = "compare-pytorch")]
    pub(crate) compare_pytorch: bool,
    /// The PyTorch reference script of the CPU profile.
    #[arg(long, default_value = "benches/reference/ops_profile.py")]
    reference: PathBuf,
    /// Where to write the JSON results (the chart goes beside it, `.svg`).
    #[arg(long, default_value = "bench-ops.json")]
    pub(crate) json: PathBuf,
    /// Device: cpu (the CPU training profile) or cuda[:N] (the GPU profile: every
    /// convolution of ResNet-50 and YOLOX-s through cuDNN and burn's kernels, checked against
    /// each other).
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
    #[command(flatten)]
    pub(crate) gpu: crate::gpu_ops::GpuOpsFlags,
}

/// One op's median time per call on each side.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpTiming {
    /// The op, its shapes and its pass (names shared with the reference script).
    pub op: String,
    /// kiln (burn-flex) milliseconds per call.
    pub kiln_ms: f64,
    /// PyTorch milliseconds per call, when it ran.
    pub torch_ms: Option<f64>,
}

/// The results file of `kiln-bench ops`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpsReport {
    /// Threads of both sides.
    pub threads: usize,
    /// Untimed runs per op.
    pub warmup: usize,
    /// Timed runs per op.
    pub reps: usize,
    /// One entry per op, in profile order.
    pub ops: Vec<OpTiming>,
}

impl Report for OpsReport {
    const BENCH: &'static str = "ops";

    fn chart(&self) -> BarChart {
        BarChart {
            title: format!("Per-op time, kiln (burn-flex) vs PyTorch, {} threads", self.threads),
            unit: "ms per call, median (lower is better)".into(),
            series: vec!["kiln".into(), "PyTorch".into()],
            groups: self
                .ops
                .iter()
                .map(|o| (o.op.clone(), vec![Some(o.kiln_ms), o.torch_ms]))
                .collect(),
        }
    }
}

/// Runs the profile and prints a Markdown table.
pub fn run(args: OpsBench) -> Result<(), String> {
    if let DeviceChoice::Cuda(index) = args.device.resolve(false, cfg!(feature = "cuda"))? {
        return crate::gpu_ops::run(&args, index);
    }
    let threads = threads();
    let kiln: Vec<(String, f64)> = ops()
        .into_iter()
        .map(|(name, mut time)| {
            let ms = median_ms(args.warmup, args.reps, &mut *time);
            eprintln!("kiln    {name}: {ms:.2} ms");
            (name, ms)
        })
        .collect();
    let torch = if args.compare_pytorch {
        reference(&args, threads)?
    } else {
        None
    };
    let ops: Vec<OpTiming> = kiln
        .into_iter()
        .map(|(op, kiln_ms)| OpTiming {
            torch_ms: torch.as_ref().and_then(|t| t.get(&op).copied()),
            op,
            kiln_ms,
        })
        .collect();
    print_table(&ops, threads);
    let report = OpsReport {
        threads,
        warmup: args.warmup,
        reps: args.reps,
        ops,
    };
    crate::report::write(&args.json, &report)
}

/// The threads burn-flex's rayon pool uses: `RAYON_NUM_THREADS`, else every core.
fn threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Median milliseconds of `time` (which returns the duration of the part it measures).
pub(crate) fn median_ms(warmup: usize, reps: usize, time: &mut dyn FnMut() -> Duration) -> f64 {
    for _ in 0..warmup {
        time();
    }
    let mut ms: Vec<f64> = (0..reps.max(1)).map(|_| time().as_secs_f64() * 1e3).collect();
    median(&mut ms)
}

/// The median (mean of the middle two for an even count); NaN when empty.
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// A named timing: runs the op once and returns how long its measured part took.
type TimedOp = (String, Box<dyn FnMut() -> Duration>);

/// Random N(0, 1) values, tracked for gradients when `grad`.
fn randn<const D: usize>(shape: [usize; D], grad: bool) -> Tensor<B, D> {
    let t = Tensor::random(shape, Distribution::Normal(0.0, 1.0), &Default::default());
    if grad {
        t.require_grad()
    } else {
        t
    }
}

/// Which passes of an op are timed.
#[derive(Debug, Clone, Copy)]
enum Pass {
    /// The forward alone (with autodiff tracking, as in training).
    Forward,
    /// The forward, then the backward of the output's sum.
    Backward,
}

/// Times `f` for `pass`.
fn timed<const D: usize>(name: &str, pass: Pass, f: impl Fn() -> Tensor<B, D> + 'static) -> TimedOp {
    let suffix = match pass {
        Pass::Forward => "fwd",
        Pass::Backward => "fwd+bwd",
    };
    let run = move || {
        let started = Instant::now();
        let y = f();
        if let Pass::Backward = pass {
            let _grads = y.sum().backward();
        }
        started.elapsed()
    };
    (format!("{name} {suffix}"), Box::new(run))
}

/// A convolution with random input `[n, c_in, side, side]` and weight `[c_out, c_in, k, k]`,
/// optional bias; `grad` says whether input and weight require gradients.
fn conv(
    [n, c_in, side]: [usize; 3],
    [c_out, k, stride, pad]: [usize; 4],
    bias: bool,
    (x_grad, w_grad): (bool, bool),
) -> impl Fn() -> Tensor<B, 4> + 'static {
    let x = randn([n, c_in, side, side], x_grad);
    let w = randn([c_out, c_in, k, k], w_grad);
    let b = bias.then(|| randn([c_out], w_grad));
    move || {
        conv2d(
            x.clone(),
            w.clone(),
            b.clone(),
            ConvOptions::new([stride; 2], [pad; 2], [1, 1], 1),
        )
    }
}

/// Every op of the profile, in order: the MNIST `Net` at batch 64, then ResNet at batch 32.
fn ops() -> Vec<TimedOp> {
    use Pass::{Backward, Forward};
    B::seed(&Default::default(), 0);
    let conv1 = |g| conv([64, 1, 28], [32, 3, 1, 0], true, g);
    let conv2 = |g| conv([64, 32, 26], [64, 3, 1, 0], true, g);
    let stem = |g| conv([32, 3, 224], [64, 7, 2, 3], false, g);
    let stage1 = |g| conv([32, 64, 56], [64, 3, 1, 1], false, g);
    let stage3 = |g| conv([32, 256, 14], [256, 3, 1, 1], false, g);
    let stage4 = |g| conv([32, 512, 7], [512, 3, 1, 1], false, g);
    let pool_in = randn([64, 64, 24, 24], true);
    let dropout_in = randn([64, 64, 12, 12], true);
    let dropout = DropoutConfig::new(0.25).init();
    let (fc_in, fc_w, fc_b) = (randn([64, 9216], true), randn([9216, 128], true), randn([128], true));
    let logits = randn([64, 10], true);
    let bn_in = randn([32, 64, 112, 112], true);
    let bn = BatchNormConfig::new(64).init::<B>(&Default::default());
    let resnet_pool_in = randn([32, 64, 112, 112], true);
    vec![
        // conv1's input is the data: only the weight needs a gradient in training.
        timed("MNIST conv1 1→32 3×3 on 28×28", Forward, conv1((false, true))),
        timed("MNIST conv1 (w)", Backward, conv1((false, true))),
        timed("MNIST conv2 32→64 3×3 on 26×26", Forward, conv2((true, true))),
        timed("MNIST conv2 (x+w)", Backward, conv2((true, true))),
        timed("MNIST conv2 (x)", Backward, conv2((true, false))),
        timed("MNIST conv2 (w)", Backward, conv2((false, true))),
        timed("MNIST max-pool 2×2 [64,64,24,24]", Backward, {
            let pool_in = pool_in.clone();
            move || max_pool2d(pool_in.clone(), [2, 2], [2, 2], [0, 0], [1, 1], false)
        }),
        timed("MNIST max-pool 2×2 + ReLU [64,64,24,24]", Backward, {
            let pool_in = pool_in.clone();
            move || relu(max_pool2d(pool_in.clone(), [2, 2], [2, 2], [0, 0], [1, 1], false))
        }),
        // What kiln's `Net` runs instead of burn's pooling and ReLU.
        timed("MNIST kiln max-pool 2×2 + ReLU [64,64,24,24]", Backward, move || {
            kiln_models::max_pool_relu(
                &MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
                pool_in.clone(),
            )
        }),
        timed("MNIST dropout 0.25 [64,64,12,12]", Backward, {
            let (dropout, dropout_in) = (dropout.clone(), dropout_in.clone());
            move || dropout.forward(dropout_in.clone())
        }),
        // What kiln's `Net` runs instead of burn's `Dropout::forward`.
        timed("MNIST kiln dropout 0.25 [64,64,12,12]", Backward, move || {
            kiln_models::dropout(&dropout, dropout_in.clone())
        }),
        timed("MNIST linear 9216→128", Backward, move || {
            linear(fc_in.clone(), fc_w.clone(), Some(fc_b.clone()))
        }),
        timed("MNIST log-softmax [64,10]", Backward, move || {
            log_softmax(logits.clone(), 1)
        }),
        net_step(),
        adadelta_step(),
        // The stem's input is the data: weight gradient only.
        timed("ResNet conv 7×7/2 3→64 on 224×224", Forward, stem((false, true))),
        timed("ResNet conv 7×7/2 (w)", Backward, stem((false, true))),
        timed("ResNet conv 3×3 64→64 on 56×56", Forward, stage1((true, true))),
        timed("ResNet conv 3×3 64→64 (x+w)", Backward, stage1((true, true))),
        timed("ResNet conv 3×3 256→256 on 14×14", Forward, stage3((true, true))),
        timed("ResNet conv 3×3 256→256 (x+w)", Backward, stage3((true, true))),
        timed("ResNet conv 3×3 512→512 on 7×7", Forward, stage4((true, true))),
        timed("ResNet conv 3×3 512→512 (x+w)", Backward, stage4((true, true))),
        timed("ResNet batchnorm [32,64,112,112] train", Backward, {
            let (bn, bn_in) = (bn.clone(), bn_in.clone());
            move || bn.forward(bn_in.clone())
        }),
        // What kiln's ResNet runs instead of burn's `BatchNorm::forward`.
        timed("ResNet kiln batchnorm [32,64,112,112] train", Backward, move || {
            kiln_models::batch_norm(&bn, bn_in.clone())
        }),
        timed("ResNet max-pool 3×3/2 pad 1 [32,64,112,112]", Backward, move || {
            max_pool2d(resnet_pool_in.clone(), [3, 3], [2, 2], [1, 1], [1, 1], false)
        }),
    ]
    .into_iter()
    .chain(swin_ops())
    .collect()
}

/// Swin-T's first stage at batch 8 (224 px: 3136 tokens of 96 channels, 512 windows of 49,
/// 3 heads of 32): its matmuls, softmax, LayerNorm and GELU as kiln's model runs them.
fn swin_ops() -> Vec<TimedOp> {
    use Pass::{Backward, Forward};
    let (tokens, windows) = (randn([8, 3136, 96], true), randn([512, 49, 96], true));
    let (qkv_w, qkv_b) = (randn([96, 288], true), randn([288], true));
    let (fc1_w, fc1_b) = (randn([96, 384], true), randn([384], true));
    let (q, k) = (randn([512, 3, 49, 32], true), randn([512, 3, 49, 32], true));
    let scores = randn([512, 3, 49, 49], true);
    let hidden = randn([8, 3136, 384], true);
    let norm = burn::nn::LayerNormConfig::new(96).init::<B>(&Default::default());
    let qkv = {
        let (windows, qkv_w, qkv_b) = (windows.clone(), qkv_w.clone(), qkv_b.clone());
        move || linear(windows.clone(), qkv_w.clone(), Some(qkv_b.clone()))
    };
    let attention = {
        let (q, k) = (q.clone(), k.clone());
        move || q.clone().matmul(k.clone().swap_dims(2, 3))
    };
    vec![
        timed("Swin qkv linear [512,49,96]→288", Forward, qkv.clone()),
        timed("Swin qkv linear [512,49,96]→288", Backward, qkv),
        timed("Swin MLP linear [8,3136,96]→384", Backward, {
            let tokens = tokens.clone();
            move || linear(tokens.clone(), fc1_w.clone(), Some(fc1_b.clone()))
        }),
        timed("Swin q·kᵀ [512,3,49,32]", Forward, attention.clone()),
        timed("Swin q·kᵀ [512,3,49,32]", Backward, attention),
        timed("Swin softmax [512,3,49,49]", Backward, move || {
            kiln_models::cpu::activation::softmax_last(scores.clone())
        }),
        timed("Swin LayerNorm [8,3136,96]", Backward, move || {
            kiln_models::layer_norm(&norm, 1e-5, tokens.clone())
        }),
        timed("Swin GELU [8,3136,384]", Backward, move || {
            kiln_models::cpu::activation::gelu(hidden.clone())
        }),
    ]
}

/// MNIST test-sized random images `[64, 1, 28, 28]`.
fn digits() -> Tensor<B, 4> {
    randn([64, 1, 28, 28], false)
}

/// The whole `Net` forward and backward (no optimizer), for scale.
fn net_step() -> TimedOp {
    let net = NetConfig::new().init::<B>(&Default::default());
    let x = digits();
    timed("MNIST Net b64 whole", Pass::Backward, move || net.forward(x.clone()))
}

/// One Adadelta step (kiln-train mnist's optimizer) over the `Net`'s parameters; only the step
/// is timed, the gradients are computed before it.
fn adadelta_step() -> TimedOp {
    let mut net = NetConfig::new().init::<B>(&Default::default());
    let mut optim = AdadeltaConfig::new().init::<B, kiln_models::Net<B>>();
    let x = digits();
    let run = move || {
        let grads = GradientsParams::from_grads(net.forward(x.clone()).sum().backward(), &net);
        let started = Instant::now();
        net = optim.step(1.0, net.clone(), grads);
        started.elapsed()
    };
    ("MNIST Adadelta step (Net parameters)".into(), Box::new(run))
}

/// PyTorch's median ms per op name, or `None` (said on stderr) without torch.
fn reference(args: &OpsBench, threads: usize) -> Result<Option<HashMap<String, f64>>, String> {
    let mut cmd = Command::new("python3");
    cmd.arg(&args.reference)
        .args(["--threads", &threads.to_string()])
        .args(["--warmup", &args.warmup.to_string(), "--reps", &args.reps.to_string()]);
    let Some(lines) = crate::reference::json_lines(cmd)? else {
        return Ok(None);
    };
    let line = lines.last().map_or("", String::as_str);
    serde_json::from_str::<HashMap<String, f64>>(line)
        .map(Some)
        .map_err(|e| format!("{}: output {line:?}: {e}", args.reference.display()))
}

fn print_table(ops: &[OpTiming], threads: usize) {
    println!("\n## Per-op time, median ms per call ({threads} threads)\n");
    println!("| op | kiln ms | PyTorch ms | kiln / PyTorch |");
    println!("|---|---|---|---|");
    for o in ops {
        let (torch, ratio) = o.torch_ms.map_or(("n/a".into(), "n/a".into()), |t| {
            (format!("{t:.2}"), format!("{:.2}×", o.kiln_ms / t))
        });
        println!("| {} | {:.2} | {torch} | {ratio} |", o.op, o.kiln_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&mut [5.0, 1.0, 3.0]), 3.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&mut []).is_nan());
    }

    #[test]
    fn warm_up_runs_are_not_timed() {
        let mut calls = 0;
        let mut time = || {
            calls += 1;
            // The first two (warm-up) calls are slow.
            Duration::from_millis(if calls <= 2 { 100 } else { 2 })
        };
        assert_eq!(median_ms(2, 3, &mut time), 2.0);
        assert_eq!(calls, 5);
    }
}
