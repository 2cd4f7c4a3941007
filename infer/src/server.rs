//! Starting, running and stopping the server.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::ServiceExt;

use axum_server::tls_rustls::RustlsAcceptor;
use axum_server::Handle;
use burn::tensor::backend::Backend;
use kiln_models::PackageConfig;

use crate::batcher::BatchPolicy;
use crate::connections::CappedAcceptor;
use crate::decode_budget::DecodeBudget;
use crate::metrics::Metrics;
use crate::parse_errors::JsonParseErrors;
use crate::registry::{load_model, ImageModel};
use crate::repository::{LoadSettings, ModelFactory, ModelLoader, ModelSource, Repository};
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
    /// How long the server keeps serving, unready, once shutdown begins.
    pub unready_grace: Duration,
    /// Working memory that concurrent decodes share, in bytes.
    pub decode_memory: u64,
    /// Decodes running at once (the cores).
    pub decode_slots: usize,
    /// Longest a client may take to send a request's headers, and a new connection its first
    /// request; then the connection is closed.
    pub header_timeout: Duration,
    /// Most connections open at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// The device the model runs on, as the page shows it (`cpu`, `cuda:0`).
    pub device: String,
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

/// Builds a package's model on `device` of backend `B`: the loader [`serve`] runs on a model
/// worker thread.
pub fn package_loader<B: Backend>(
    dir: PathBuf,
    package: PackageConfig,
    device: B::Device,
) -> impl FnOnce() -> Result<Box<dyn ImageModel>, String> + Send + 'static {
    move || load_model::<B>(&dir, &package, &device).map_err(|e| e.to_string())
}

/// Builds each package of a repository on `device` of backend `B`.
pub fn package_factory<B: Backend>(device: B::Device) -> ModelFactory
where
    B::Device: Send + Sync,
{
    Arc::new(move |dir: &Path, package: &PackageConfig| -> ModelLoader {
        Box::new(package_loader::<B>(dir.to_path_buf(), package.clone(), device.clone()))
    })
}

/// Serves the one `package` in `config.model_dir` until `shutdown` completes (then drains
/// in-flight requests) or the model fails to load. `loader` runs on a model worker thread;
/// `/health` answers 503 until it has returned and a warm-up pass has run. `listening` is
/// told the bound address and scheme.
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
    let metrics = Arc::new(Metrics::new());
    let name = config
        .model_dir
        .file_name()
        .map_or("model".into(), |n| n.to_string_lossy().into_owned());
    let repository = Repository::single(
        &config.model_dir,
        name,
        package,
        Box::new(loader),
        load_settings(&config, &metrics),
    );
    serve_models(config, Arc::new(repository), metrics, None, listening, shutdown).await
}

/// A model repository to serve: its folder, how to build its packages, the contract route's
/// model and how often to look for changes.
pub struct RepositoryConfig {
    /// The repository folder (`<name>/<version>/` packages).
    pub root: PathBuf,
    /// Builds each version's model.
    pub factory: ModelFactory,
    /// The model `POST /` answers with (the first by name when `None`).
    pub default_model: Option<String>,
    /// How often the repository is polled for new, changed and removed models (never when
    /// `None`: then only load and unload requests change what serves).
    pub poll: Option<Duration>,
}

/// Serves every model of a repository, as [`serve`] serves one package; the server exits
/// with an error when a model found at start fails to load, and afterwards a failed load
/// keeps the previous version serving.
pub async fn serve_repository(
    config: ServeConfig,
    repository: RepositoryConfig,
    listening: impl FnOnce(SocketAddr, &'static str) + Send + 'static,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let metrics = Arc::new(Metrics::new());
    let models = Repository::new(
        ModelSource::Repository { root: repository.root },
        repository.factory,
        repository.default_model,
        load_settings(&config, &metrics),
    )
    .map_err(ServeError::ModelLoad)?;
    serve_models(config, Arc::new(models), metrics, repository.poll, listening, shutdown).await
}

fn load_settings(config: &ServeConfig, metrics: &Arc<Metrics>) -> LoadSettings {
    LoadSettings {
        policy: config.policy,
        metrics: metrics.clone(),
        max_pixels: config.max_pixels,
        device: config.device.clone(),
    }
}

async fn serve_models(
    config: ServeConfig,
    repository: Arc<Repository>,
    metrics: Arc<Metrics>,
    poll: Option<Duration>,
    listening: impl FnOnce(SocketAddr, &'static str) + Send + 'static,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let started = Instant::now();
    let tls = rustls_config(&config.tls).await.map_err(ServeError::Tls)?;
    let package = repository.default_package().map_err(ServeError::ModelLoad)?;
    let (paths, skipped) = predict_paths(&package.apis);
    for s in skipped {
        tracing::warn!("apis entry left out: {s}");
    }
    let default = repository.table.default_name().to_string();
    let version = repository
        .source
        .latest(&default)
        .ok()
        .flatten()
        .map_or(1, |v| v.version);
    let page_info = crate::page::describe(&package, &config.device, &default, &version.to_string());
    let state = Arc::new(AppState {
        ready: AtomicBool::new(false),
        repository: repository.clone(),
        metrics,
        max_body: config.max_body,
        timeout: config.timeout,
        budget: DecodeBudget::new(config.decode_memory, config.decode_slots),
        draining: AtomicBool::new(false),
        page_info,
    });
    let application = app(state.clone(), &paths);

    let handle = Handle::new();
    tokio::spawn({
        let (handle, metrics, drain) = (handle.clone(), state.metrics.clone(), config.drain);
        let (state, grace) = (state.clone(), config.unready_grace);
        async move {
            shutdown.await;
            // Readiness (`/v2/health/ready`) turns false first and the server keeps serving
            // for the grace, so a balancer stops sending before the listener closes.
            state.draining.store(true, Ordering::Release);
            tracing::info!("shutting down: unready, then draining in-flight requests");
            tokio::time::sleep(grace).await;
            stop_when_drained(handle, metrics, drain).await;
        }
    });
    // A load failure is recorded here before it stops the server, so the caller sees it.
    let load_failure: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let loading = tokio::spawn({
        let (handle, state, failure) = (handle.clone(), state.clone(), load_failure.clone());
        async move {
            let names: Vec<String> = repository.table.read().keys().cloned().collect();
            let loads = names.iter().map(|name| {
                let repository = repository.clone();
                let name = name.clone();
                tokio::spawn(async move { repository.sync(&name, false).await })
            });
            let mut first_error = None;
            for load in loads.collect::<Vec<_>>() {
                let result = load
                    .await
                    .unwrap_or_else(|e| Err(format!("the loading task failed: {e}")));
                if let Err(e) = result {
                    first_error.get_or_insert(e);
                }
            }
            match first_error {
                None => {
                    state.ready.store(true, Ordering::Release);
                    tracing::info!(
                        models = names.len(),
                        seconds = format!("{:.3}", started.elapsed().as_secs_f64()),
                        "ready"
                    );
                    if let Some(period) = poll {
                        crate::repository::poll::every(repository, period).await;
                    }
                }
                Some(e) => {
                    *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
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
    let acceptor = CappedAcceptor::new(
        config.max_connections,
        tls.is_none(),
        state.metrics.connections.clone(),
        state.metrics.refused_connections.clone(),
    );
    let mut server = axum_server::bind(config.addr)
        .handle(handle)
        .first_request_timeout(config.header_timeout);
    server
        .http_builder()
        .http1()
        .header_read_timeout(Some(config.header_timeout));
    let served = match tls {
        Some(tls) => {
            let acceptor = RustlsAcceptor::new(tls)
                .handshake_timeout(config.header_timeout)
                .acceptor(acceptor);
            server.acceptor(JsonParseErrors::new(acceptor)).serve(service).await
        }
        None => server.acceptor(JsonParseErrors::new(acceptor)).serve(service).await,
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

/// Graceful shutdown that idle and half-sent connections cannot hold up: connections stop
/// being accepted and idle ones close; once no request has been in flight for a moment (or
/// `drain` has passed), every connection left is closed.
async fn stop_when_drained(handle: Handle<SocketAddr>, metrics: Arc<Metrics>, drain: Duration) {
    handle.graceful_shutdown(Some(drain));
    let settle = Duration::from_millis(100);
    let mut idle_since: Option<Instant> = None;
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if metrics.in_flight.get() > 0 {
            idle_since = None;
            continue;
        }
        // An answer may still be on its way out: wait a moment without requests.
        let since = *idle_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= settle {
            handle.shutdown();
            return;
        }
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
