//! `kiln-bench`: measures kiln and, in the same run, what it is compared with.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kiln_benches::{chart_cmd, documented, mnist, ops, report_cmd, scaling, serve, step, swap, swin, yolox};

/// kiln's benchmarks.
#[derive(Debug, Parser)]
#[command(name = "kiln-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// kiln-serve under load on loopback vs the model's raw batched forward pass.
    Serve(serve::ServeBench),
    /// kiln-serve's model repository under load: latency and failed requests while model
    /// versions are swapped in, against the same load without swaps.
    Swap(swap::SwapBench),
    /// kiln-train mnist epochs (time, images/s, accuracy), vs the guide's PyTorch train.py with
    /// --compare-pytorch.
    Mnist(mnist::MnistBench),
    /// ResNet training-step and evaluation throughput (kiln-train imagenet's model), vs
    /// torchvision with --compare-pytorch.
    Imagenet(step::StepBench),
    /// YOLOX training-step and evaluation throughput (kiln-train yolox's step), with the guide's
    /// YOLOX row of Table 4-2 beside kiln's projection.
    Yolox(yolox::YoloxBench),
    /// Swin training-step and evaluation throughput (kiln-train swin's step), vs the official
    /// model with --compare-pytorch.
    Swin(swin::SwinBench),
    /// The guide's Table 4-2 beside kiln's projection for the same job on this machine.
    Documented(documented::DocumentedBench),
    /// Per-op training profile, vs PyTorch with --compare-pytorch: on the CPU the MNIST Net,
    /// ResNet and Swin-T shapes; with --device cuda every ResNet-50 and YOLOX-s convolution through
    /// cuDNN and burn's kernels (checked against each other), BatchNorm, pooling, matmul and the
    /// SGD step.
    Ops(ops::OpsBench),
    /// Data-parallel CPU scaling of kiln-train mnist: 1 worker × N threads vs N workers × 1
    /// thread vs N processes on loopback.
    Scaling(scaling::ScalingBench),
    /// SVG charts of results files (.json) and of training curves (metrics.jsonl files).
    Chart(chart_cmd::ChartBench),
    /// Rewrites the results section of benches/README.md from benches/results/*.json.
    Report(report_cmd::ReportArgs),
}

fn main() -> ExitCode {
    // In-process training steps run as kiln-train runs them (the huge-page restart gives the
    // programs this one starts, such as the PyTorch references, the user's environment back).
    kiln_models::cpu::prepare_process(kiln_models::cpu::Workload::Training);
    #[cfg(feature = "cuda")]
    kiln_models::gpu::cache::persist_kernel_caches();
    let cli = Cli::parse();
    let result = match cli.bench {
        Bench::Serve(args) => serve::run(args),
        Bench::Swap(args) => swap::run(args),
        Bench::Mnist(args) => mnist::run(args),
        Bench::Imagenet(args) => step::run(args),
        Bench::Yolox(args) => yolox::run(args),
        Bench::Swin(args) => swin::run(args),
        Bench::Documented(args) => documented::run(args),
        Bench::Ops(args) => ops::run(args),
        Bench::Scaling(args) => scaling::run(args),
        Bench::Chart(args) => chart_cmd::run(args),
        Bench::Report(args) => report_cmd::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiln-bench: error: {e}");
            ExitCode::FAILURE
        }
    }
}
