//! `kiln-train`: parses flags, resolves the device and the distributed layout, picks the
//! backend and runs the job on every local worker.

use std::io::IsTerminal;
use std::process::ExitCode;

use burn::backend::{Autodiff, Flex};
use clap::Parser;
use kiln_train::ddp::{self, DistPlan};
use kiln_train::{jobs, Cli, DeviceChoice, DeviceSpec, DistArgs, Job, TrainError};

fn main() -> ExitCode {
    kiln_models::cpu::prepare_process(kiln_models::cpu::Workload::Training);
    // Autotune results and compiled kernels kept across runs (before any GPU work).
    #[cfg(feature = "cuda")]
    kiln_models::gpu::cache::persist_kernel_caches();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KILN_LOG")
                .unwrap_or_else(|_| "info,burn_collective=off,burn_communication=off".into()),
        )
        .init();
    match run(cli.job) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiln-train: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `$job` with `$B` bound to the autodiff backend of `$device` and `$dev` to a function
/// from a local worker index to its device.
macro_rules! on_backend {
    ($device:expr, |$B:ident, $dev:ident| $job:expr) => {
        match $device {
            #[cfg(feature = "cuda")]
            DeviceChoice::Cuda(first) => {
                type $B = Autodiff<burn::backend::Cuda>;
                let $dev = move |local: usize| burn::backend::cuda::CudaDevice::new(first + local);
                $job
            }
            _ => {
                type $B = Autodiff<Flex>;
                let $dev = |_local: usize| Default::default();
                $job
            }
        }
    };
}

fn run(job: Job) -> Result<(), TrainError> {
    match job {
        Job::Mnist(args) => {
            let plan = plan(args.device, args.no_cuda, &args.dist)?;
            tracing::info!(device = %plan.device, workers = plan.world_size(), "kiln-train mnist");
            on_backend!(plan.device, |B, dev| ddp::launch::<B, _, _>(&plan, dev, move |c, d| {
                jobs::mnist::run::<B>(&args, &c, d).map(drop)
            })
            .map(drop))
        }
        Job::Imagenet(args) => {
            // main.py's `--gpu N` picks one GPU, like `--device cuda:N`.
            let device = match args.gpu {
                Some(i) => DeviceSpec {
                    choice: DeviceChoice::Cuda(i),
                    cpu_workers: None,
                },
                None => args.device,
            };
            let plan = plan(device, false, &args.dist)?;
            tracing::info!(device = %plan.device, workers = plan.world_size(), "kiln-train imagenet");
            on_backend!(plan.device, |B, dev| ddp::launch::<B, _, _>(&plan, dev, move |c, d| {
                jobs::imagenet::run::<B>(&args, &c, d).map(drop)
            })
            .map(drop))
        }
        Job::Swin(args) => {
            // torch.distributed.launch passes `--local_rank`; torchrun sets LOCAL_RANK.
            let local_rank = args.local_rank.map(|r| r.to_string());
            let env = move |name: &str| match (name, &local_rank) {
                ("LOCAL_RANK", Some(r)) => Some(r.clone()),
                _ => std::env::var(name).ok(),
            };
            let plan = plan_with(args.device, false, &args.dist, &env)?;
            // The job sees the device the plan resolved (`auto` made concrete).
            let mut args = args;
            args.device.choice = plan.device;
            tracing::info!(device = %plan.device, workers = plan.world_size(), "kiln-train swin");
            on_backend!(plan.device, |B, dev| ddp::launch::<B, _, _>(&plan, dev, move |c, d| {
                jobs::swin::run::<B>(&args, &c, d).map(drop)
            })
            .map(drop))
        }
        Job::Yolox(args) => {
            let plan = plan(args.device, false, &args.dist)?;
            tracing::info!(device = %plan.device, workers = plan.world_size(), "kiln-train yolox");
            on_backend!(plan.device, |B, dev| ddp::launch::<B, _, _>(&plan, dev, move |c, d| {
                jobs::yolox::run::<B>(&args, &c, d).map(drop)
            })
            .map(drop))
        }
    }
}

/// The device this binary can use, and the run's layout from the flags and the environment.
fn plan(device: DeviceSpec, no_cuda: bool, dist_args: &DistArgs) -> Result<DistPlan, TrainError> {
    plan_with(device, no_cuda, dist_args, &|name: &str| std::env::var(name).ok())
}

/// [`plan`] with the environment looked up through `env`.
fn plan_with(
    mut device: DeviceSpec,
    no_cuda: bool,
    dist_args: &DistArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<DistPlan, TrainError> {
    device.choice = device
        .choice
        .resolve(no_cuda, cfg!(feature = "cuda"))
        .map_err(TrainError::Flag)?;
    ddp::resolve(dist_args, device, env, &ddp::visible_gpus).map_err(TrainError::Flag)
}
