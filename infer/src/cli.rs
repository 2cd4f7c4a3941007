//! `kiln-serve` flags.

use std::path::PathBuf;

use clap::Parser;
use kiln_models::DeviceChoice;

/// `kiln-serve`: serves a kiln model package with the platform's customize_service contract.
#[derive(Debug, Clone, Parser)]
#[command(name = "kiln-serve", version, about, long_about = None)]
pub struct ServeArgs {
    /// The model package folder (config.json + weights).
    #[arg(
        long = "model-dir",
        visible_alias = "model_dir",
        env = "KILN_MODEL_DIR",
        default_value = "/home/mind/model"
    )]
    pub model_dir: PathBuf,
    /// Serve a model repository instead of one package: `<DIR>/<name>/<version>/` package
    /// folders (Triton's layout), each model's highest version serving as `/v2/models/<name>`.
    #[arg(
        long = "model-repository",
        visible_alias = "model_repository",
        env = "KILN_MODEL_REPOSITORY"
    )]
    pub model_repository: Option<PathBuf>,
    /// With --model-repository: the model the contract route (`POST /`, `/ws`, the page and
    /// `/health`) answers with (default: the first by name).
    #[arg(long = "default-model", requires = "model_repository")]
    pub default_model: Option<String>,
    /// With --model-repository: look for new, changed and removed models every this many
    /// seconds (default: never; then `POST /v2/repository/models/<name>/load|unload` alone
    /// changes what serves).
    #[arg(long = "repository-poll-secs", requires = "model_repository")]
    pub repository_poll_secs: Option<f64>,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    pub host: String,
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Device: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// PEM certificate chain: serve HTTPS (with --tls-key).
    #[arg(long = "tls-cert", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long = "tls-key", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve HTTPS with a self-signed certificate generated at start.
    #[arg(long = "tls-self-signed", conflicts_with = "tls_cert")]
    pub tls_self_signed: bool,
    /// Most images in one forward pass (default: 8 on the CPU, where larger batches run no
    /// faster per image and only keep concurrent requests from spreading over the workers;
    /// 32 on a GPU).
    #[arg(long = "max-batch", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_batch: Option<u32>,
    /// Longest a forming batch waits for images still being decoded (while every other model
    /// worker is busy), in milliseconds after its oldest image was queued.
    #[arg(long = "max-delay-ms", default_value_t = 2)]
    pub max_delay_ms: u64,
    /// How long an idle model worker polls the queue before it sleeps, in microseconds (0:
    /// sleep at once). Polling spares the wake-up of a halted core when the next image is that
    /// close; the polling threads yield to any other work.
    #[arg(long = "poll-us", default_value_t = 200)]
    pub poll_us: u64,
    /// Most images queued for the model; more answers 429.
    #[arg(long = "queue", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub queue: u32,
    /// Largest request body in MB (the gateway's 12 MB).
    #[arg(long = "max-body-mb", default_value_t = 12.0)]
    pub max_body_mb: f64,
    /// Largest image in pixels (width × height) before decoding.
    #[arg(long = "max-pixels", default_value_t = 40_000_000)]
    pub max_pixels: u64,
    /// Model workers sharing the queue and the model, each running whole batches on its own
    /// share of the cores (default: 2 on the CPU, so one batch forms while another runs; 1 on
    /// a GPU).
    #[arg(long = "workers", value_parser = clap::value_parser!(u32).range(1..))]
    pub workers: Option<u32>,
    /// Threads handling HTTP (default: a quarter of the cores, at least 1; the rest are left
    /// to the model workers).
    #[arg(long = "http-threads", value_parser = clap::value_parser!(u32).range(1..))]
    pub http_threads: Option<u32>,
    /// Longest a predict request may take, in seconds (the gateway's 40 s), body and decode
    /// included: a body still arriving then answers 408, anything else 504.
    #[arg(long = "timeout-s", default_value_t = 40.0)]
    pub timeout_s: f64,
    /// Working memory that concurrent image decodes share, in MB: a request waits for its
    /// share, and one needing more than all of it is refused (400).
    #[arg(long = "decode-memory-mb", default_value_t = 1024.0)]
    pub decode_memory_mb: f64,
    /// Longest a client may take to send a request's headers (and a new connection its first
    /// request), in seconds; then the connection is closed.
    #[arg(long = "header-timeout-s", default_value_t = 10.0)]
    pub header_timeout_s: f64,
    /// Most connections open at once; more are answered 503 and closed (default: the file
    /// descriptor limit less 64, at most 10,000).
    #[arg(long = "max-connections", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: Option<u32>,
    /// On SIGTERM, seconds the server keeps serving with `/v2/health/ready` at 503 before it
    /// stops accepting connections and drains, so a load balancer's readiness probe sees it
    /// leave first.
    #[arg(long = "unready-grace-s", default_value_t = 1.0)]
    pub unready_grace_s: f64,
}
