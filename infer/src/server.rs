//! Starting, running and stopping the server.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::ServiceExt;
use axum_server::accept::NoDelayAcceptor;
use axum_server::tls_rustls::RustlsAcceptor;
use axum_server::Handle;
use burn::tensor::backend::Backend;
use kiln_models::PackageConfig;

use crate::batcher::{BatchPolicy, Batcher};
use crate::metrics::Metrics;
use crate::preprocess::Preprocessor;
use crate::registry::{load_model, ImageModel};
use crate::routes::{app, predict_paths, AppState};
use crate::tls::{rustls_config, TlsMode};

/// Everything the server is configured with.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The model package folder.
    pub model_dir: PathBuf,
    /// Listen address.
    pub addr: SocketAddr,
    /// HTTP or HTTPS.
    pub tls: TlsMode,
    /// Batching limits.
    pub policy: BatchPolicy,
    /// Largest request body in bytes.
    pub max_body: usize,
    /// Largest image in pixels.
    pub max_pixels: u64,
    /// Predict deadline.
    pub timeout: Duration,
    /// How long shutdown waits for in-flight requests.
    pub drain: Duration,
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The model could not be built or loaded.
    #[error("model load failed: {0}")]
    ModelLoad(String),
    /// TLS could not be set up.
    #[error("{0}")]
    Tls(String),
    /// The socket could not be bound or served.
    #[error("{addr}: {source}")]
    Io {
        /// The listen address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// Builds a package's model on `device` of backend `B`: the loader [`serve`] runs on its
/// inference thread.
pub fn package_loader<B: Backend>(
    dir: PathBuf,
    package: PackageConfig,
    device: B::Device,
) -> impl FnOnce() -> Result<Box<dyn ImageModel>, String> + Send + 'static {
    move || load_model::<B>(&dir, &package, &device).map_err(|e| e.to_string())
}

/// Serves `package` until `shutdown` completes (then drains in-flight requests) or the model
/// fails to load. `loader` runs on the inference thread; `/health` answers 503 until it has
/// returned and a warm-up pass has run. `listening` is told the bound address and scheme.
pub async fn serve<L>(
    config: ServeConfig,
    package: PackageConfig,
    loader: L,
    listening: impl FnOnce(SocketAddr, &'static str) + Send + 'static,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError>
where
    L: FnOnce() -> Result<Box<dyn ImageModel>, String> + Send + 'static,
{
    let started = Instant::now();
    let tls = rustls_config(&config.tls).await.map_err(ServeError::Tls)?;
    let metrics = Arc::new(Metrics::new());

    let (loaded_tx, loaded_rx) = tokio::sync::oneshot::channel();
    let batcher = {
        let metrics = metrics.clone();
        let input_len = Preprocessor::new(package.kiln.input.clone(), 1).input_len();
        Batcher::start(
            config.policy,
            metrics.clone(),
            move || {
                let model = loader()?;
                model.predict(vec![0.0; input_len], 1); // warm-up pass
                metrics.model_load_seconds.set(started.elapsed().as_secs_f64());
                Ok(model)
            },
            move |r| {
                let _ = loaded_tx.send(r);
            },
        )
    };
    let (paths, skipped) = predict_paths(&package.apis);
    for s in skipped {
        tracing::warn!("apis entry left out: {s}");
    }
    let state = Arc::new(AppState {
        ready: AtomicBool::new(false),
        preprocessor: Preprocessor::new(package.kiln.input.clone(), config.max_pixels),
        labels: package.kiln.labels.clone(),
        batcher,
        metrics,
        max_body: config.max_body,
        timeout: config.timeout,
    });
    let application = app(state.clone(), &paths);

    let handle = Handle::new();
    let drain = config.drain;
    tokio::spawn({
        let handle = handle.clone();
        async move {
            shutdown.await;
            tracing::info!("shutting down: draining in-flight requests");
            handle.graceful_shutdown(Some(drain));
        }
    });
    // A load failure is recorded here before it stops the server, so the caller sees it.
    let load_failure: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let loading = tokio::spawn({
        let (handle, state, failure) = (handle.clone(), state.clone(), load_failure.clone());
        async move {
            let result = loaded_rx
                .await
                .unwrap_or_else(|_| Err("the inference thread died".into()));
            match &result {
                Ok(()) => {
                    state.ready.store(true, Ordering::Release);
                    tracing::info!(
                        seconds = format!("{:.3}", started.elapsed().as_secs_f64()),
                        "model ready"
                    );
                }
                Err(e) => {
                    tracing::error!("model load failed: {e}");
                    *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.clone());
                    handle.shutdown();
                }
            }
        }
    });
    let scheme = if tls.is_some() { "https" } else { "http" };
    tokio::spawn({
        let handle = handle.clone();
        async move {
            if let Some(addr) = handle.listening().await {
                listening(addr, scheme);
            }
        }
    });

    let service = ServiceExt::<axum::extract::Request>::into_make_service(application);
    // TCP_NODELAY: small JSON answers go out at once instead of waiting on delayed ACKs.
    let server = axum_server::bind(config.addr).handle(handle);
    let served = match tls {
        Some(tls) => {
            let acceptor = RustlsAcceptor::new(tls).acceptor(NoDelayAcceptor::new());
            server.acceptor(acceptor).serve(service).await
        }
        None => server.acceptor(NoDelayAcceptor::new()).serve(service).await,
    };
    served.map_err(|source| ServeError::Io {
        addr: config.addr,
        source,
    })?;
    loading.abort();
    let failure = load_failure.lock().unwrap_or_else(|p| p.into_inner()).take();
    match failure {
        Some(e) => Err(ServeError::ModelLoad(e)),
        None => Ok(()),
    }
}

/// Completes on SIGTERM or SIGINT (Ctrl-C).
pub async fn termination_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
