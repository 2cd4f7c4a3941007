//! `kiln-train`: parses flags, picks the backend and device, runs the job.

use std::io::IsTerminal;
use std::process::ExitCode;

use burn::backend::{Autodiff, Flex};
use clap::Parser;
#[cfg(feature = "cuda")]
use kiln_train::DeviceChoice;
use kiln_train::{jobs, Cli, Job, TrainError};

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

fn run(job: Job) -> Result<(), TrainError> {
    match job {
        Job::Mnist(args) => {
            let device = args
                .device
                .resolve(args.no_cuda, cfg!(feature = "cuda"))
                .map_err(TrainError::Flag)?;
            tracing::info!(%device, "kiln-train mnist");
            match device {
                #[cfg(feature = "cuda")]
                DeviceChoice::Cuda(i) => {
                    use burn::backend::{cuda::CudaDevice, Cuda};
                    jobs::mnist::run::<Autodiff<Cuda>>(&args, CudaDevice::new(i))?;
                }
                _ => {
                    jobs::mnist::run::<Autodiff<Flex>>(&args, Default::default())?;
                }
            }
            Ok(())
        }
    }
}
