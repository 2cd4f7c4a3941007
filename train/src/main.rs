//! `kiln-train`: parses flags, picks the backend and device, runs the job.

use std::io::IsTerminal;
use std::process::ExitCode;

use burn::backend::{Autodiff, Flex};
use clap::Parser;
use kiln_train::{jobs, Cli, DeviceChoice, Job, TrainError};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("KILN_LOG").unwrap_or_else(|_| "info".into()))
        .init();
    match run(cli.job) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiln-train: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `$job` with `$B` bound to the autodiff backend of `$device` and `$dev` to its device.
macro_rules! on_backend {
    ($device:expr, |$B:ident, $dev:ident| $job:expr) => {
        match $device {
            #[cfg(feature = "cuda")]
            DeviceChoice::Cuda(i) => {
                type $B = Autodiff<burn::backend::Cuda>;
                let $dev = burn::backend::cuda::CudaDevice::new(i);
                $job
            }
            _ => {
                type $B = Autodiff<Flex>;
                let $dev = Default::default();
                $job
            }
        }
    };
}

fn run(job: Job) -> Result<(), TrainError> {
    let cuda_built = cfg!(feature = "cuda");
    match job {
        Job::Mnist(args) => {
            let device = args
                .device
                .resolve(args.no_cuda, cuda_built)
                .map_err(TrainError::Flag)?;
            tracing::info!(%device, "kiln-train mnist");
            on_backend!(device, |B, dev| jobs::mnist::run::<B>(&args, dev).map(drop))
        }
        Job::Imagenet(args) => {
            // main.py's `--gpu N` picks one GPU, like `--device cuda:N`.
            let wanted = args.gpu.map_or(args.device, DeviceChoice::Cuda);
            let device = wanted.resolve(false, cuda_built).map_err(TrainError::Flag)?;
            tracing::info!(%device, "kiln-train imagenet");
            on_backend!(device, |B, dev| jobs::imagenet::run::<B>(&args, dev).map(drop))
        }
    }
}
