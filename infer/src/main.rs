//! `kiln-serve`: parses flags, picks the backend and device, serves.

use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use burn::backend::Flex;
use clap::Parser;
use kiln_infer::batcher::BatchPolicy;
use kiln_infer::process::LISTENING_PREFIX;
use kiln_infer::registry::ImageModel;
use kiln_infer::tls::TlsMode;
use kiln_infer::{
    package_factory, package_loader, serve, serve_repository, termination_signal, RepositoryConfig, ServeArgs,
    ServeConfig, WorkerLayout,
};
use kiln_models::PackageConfig;

/// The model loader for the backend chosen from `--device`.
type Loader = Box<dyn FnOnce() -> Result<Box<dyn ImageModel>, String> + Send>;
use kiln_models::DeviceChoice;

fn main() -> ExitCode {
    // The CPU backend's convolutions read their im2col tiles in place, as in kiln-train and in
    // kiln-bench's raw forward (`kiln_models::cpu::gemm_packing`: 5% more requests at concurrency 16).
    kiln_models::cpu::prepare_process(kiln_models::cpu::Workload::Serving);
    // Autotune results and compiled kernels kept across runs (before any GPU work).
    #[cfg(feature = "cuda")]
    kiln_models::gpu::cache::persist_kernel_caches();
    let args = ServeArgs::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("KILN_LOG").unwrap_or_else(|_| "info".into()))
        .init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiln-serve: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The server's configuration from its flags, for a machine with `cores` cores and a model on
/// a GPU or not.
fn config(args: &ServeArgs, cores: usize, on_gpu: bool) -> Result<ServeConfig, String> {
    let host: IpAddr = args
        .host
        .parse()
        .map_err(|_| format!("--host {:?} is not an IP address", args.host))?;
    let positive = |name: &str, v: f64| {
        if v.is_finite() && v > 0.0 {
            Ok(v)
        } else {
            Err(format!("{name} must be a positive number, got {v}"))
        }
    };
    let tls = match (&args.tls_cert, &args.tls_key, args.tls_self_signed) {
        (Some(cert), Some(key), _) => TlsMode::Files {
            cert: cert.clone(),
            key: key.clone(),
        },
        (_, _, true) => TlsMode::SelfSigned,
        _ => TlsMode::Off,
    };
    Ok(ServeConfig {
        model_dir: args.model_dir.clone(),
        addr: SocketAddr::new(host, args.port),
        tls,
        policy: BatchPolicy {
            max_batch: args.max_batch.map_or(if on_gpu { 32 } else { 8 }, |n| n as usize),
            max_delay: Duration::from_millis(args.max_delay_ms),
            queue_capacity: args.queue as usize,
            poll: Duration::from_micros(args.poll_us),
            layout: WorkerLayout::new(args.workers.map_or(if on_gpu { 1 } else { 2 }, |n| n as usize), cores),
        },
        max_body: (positive("--max-body-mb", args.max_body_mb)? * 1_000_000.0) as usize,
        max_pixels: args.max_pixels.max(1),
        timeout: Duration::from_secs_f64(positive("--timeout-s", args.timeout_s)?),
        drain: Duration::from_secs(45),
        unready_grace: Duration::try_from_secs_f64(args.unready_grace_s).map_err(|_| {
            format!(
                "--unready-grace-s {}: expected seconds of at least 0",
                args.unready_grace_s
            )
        })?,
        decode_memory: (positive("--decode-memory-mb", args.decode_memory_mb)? * 1_000_000.0) as u64,
        decode_slots: cores,
        header_timeout: Duration::from_secs_f64(positive("--header-timeout-s", args.header_timeout_s)?),
        max_connections: args
            .max_connections
            .map_or_else(kiln_infer::connections::default_cap, |n| n as usize),
        device: String::new(),
    })
}

fn run(args: ServeArgs) -> Result<(), String> {
    let device = args.device.resolve(false, cfg!(feature = "cuda"))?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut config = config(&args, cores, device != DeviceChoice::Cpu)?;
    config.device = device.to_string();
    let http_threads = args.http_threads.map_or((cores / 4).max(1), |n| n as usize);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(http_threads)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let listening = |addr, scheme| println!("{LISTENING_PREFIX}{scheme}://{addr}");
    if let Some(root) = &args.model_repository {
        tracing::info!(%device, model_repository = %root.display(), "kiln-serve starting");
        let poll = args
            .repository_poll_secs
            .map(|s| {
                Duration::try_from_secs_f64(s)
                    .ok()
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| format!("--repository-poll-secs {s}: expected a positive number of seconds"))
            })
            .transpose()?;
        let factory = match device {
            #[cfg(feature = "cuda")]
            DeviceChoice::Cuda(i) => package_factory::<burn::backend::Cuda>(burn::backend::cuda::CudaDevice::new(i)),
            _ => package_factory::<Flex>(Default::default()),
        };
        let repository = RepositoryConfig {
            root: root.clone(),
            factory,
            default_model: args.default_model.clone(),
            poll,
        };
        return runtime
            .block_on(serve_repository(config, repository, listening, termination_signal()))
            .map_err(|e| e.to_string());
    }
    tracing::info!(%device, model_dir = %config.model_dir.display(), "kiln-serve starting");
    let package = PackageConfig::read(&config.model_dir).map_err(|e| e.to_string())?;
    let dir = config.model_dir.clone();
    let loader: Loader = match device {
        #[cfg(feature = "cuda")]
        DeviceChoice::Cuda(i) => {
            use burn::backend::{cuda::CudaDevice, Cuda};
            Box::new(package_loader::<Cuda>(dir, package.clone(), CudaDevice::new(i)))
        }
        _ => Box::new(package_loader::<Flex>(dir, package.clone(), Default::default())),
    };
    runtime
        .block_on(serve(config, package, loader, listening, termination_signal()))
        .map_err(|e| e.to_string())
}
