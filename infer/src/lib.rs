//! kiln-infer: `kiln-serve`, the platform's `customize_service` contract for kiln model
//! packages (multipart predict routes, health, metrics, WebSocket, TLS, dynamic batching) and
//! the Open Inference Protocol (KServe v2 / Triton HTTP/REST) beside it.
#![warn(missing_docs)]

pub mod batcher;
pub mod cli;
pub mod connections;
pub mod decode_budget;
pub mod errors;
pub mod metrics;
pub mod observe;
pub mod page;
pub mod parity;
pub mod parse_errors;
pub mod preprocess;
pub mod process;
pub mod registry;
pub mod repository;
pub mod response;
pub mod routes;
pub mod server;
pub mod tls;
pub mod v2;
pub mod workers;

pub use cli::ServeArgs;
pub use server::{
    package_factory, package_loader, serve, serve_repository, termination_signal, RepositoryConfig, ServeConfig,
    ServeError,
};
pub use workers::WorkerLayout;
