//! Model repository: several models at once, each loaded beside the version it replaces,
//! warmed up and parity-checked, then swapped in atomically while in-flight requests finish
//! on the old one. A failed load keeps the old version serving and shows in the log, in
//! `/metrics` (`kiln_model_loads_total{outcome="failed"}`) and in the repository index.
//!
//! Loads come from the start, from polling ([`poll`], `--repository-poll-secs`) and from
//! Triton's `POST /v2/repository/models/{name}/load|unload` ([`crate::v2::repository`]).

pub mod layout;
pub mod poll;
pub mod table;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kiln_models::PackageConfig;
use tokio::sync::oneshot;

use crate::batcher::{panic_message, BatchPolicy, Batcher};
use crate::metrics::Metrics;
use crate::preprocess::Preprocessor;
use crate::registry::{ImageModel, Prediction};

pub use layout::{ModelSource, Stamp, VersionDir};
pub use table::{Entry, ModelInfo, ModelState, ModelTable, Served};

/// Builds one package's model; runs on a model worker thread.
pub type ModelLoader = Box<dyn FnOnce() -> Result<Box<dyn ImageModel>, String> + Send>;

/// Makes the loader of the package at a folder, with its `config.json` read: how a
/// repository builds each version on the backend and device chosen at start.
pub type ModelFactory = Arc<dyn Fn(&Path, &PackageConfig) -> ModelLoader + Send + Sync>;

/// How models get built.
enum Builder {
    /// One loader for one package, used once (a server of one package).
    Once(Mutex<Option<(PackageConfig, ModelLoader)>>),
    /// A loader per version folder.
    Each(ModelFactory),
}

/// What a load did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loaded {
    /// The serving version is the latest on disk, with the same files.
    Unchanged,
    /// `version` now serves, in place of `replaced`.
    Swapped {
        /// The version now serving.
        version: u64,
        /// The version it replaced.
        replaced: Option<String>,
    },
    /// The model's folder is gone: it no longer serves.
    Removed,
    /// Unloaded by request, so polling left it alone.
    Unloaded,
}

/// What every loaded version is given: its queue's batching, the metrics it reports to, its
/// images' pixel limit and the device its page names.
pub struct LoadSettings {
    /// Batching limits and model workers of each version.
    pub policy: BatchPolicy,
    /// The server's metrics.
    pub metrics: Arc<Metrics>,
    /// Largest image in pixels.
    pub max_pixels: u64,
    /// The device the models run on, as the page shows it.
    pub device: String,
}

/// The served models, where they come from and how to load more.
pub struct Repository {
    /// Where models are found.
    pub source: ModelSource,
    /// What serves now.
    pub table: ModelTable,
    builder: Builder,
    settings: LoadSettings,
}

impl Repository {
    /// A repository of `source`'s models that builds each with `factory`; `default` names the
    /// contract route's model (the first by name when `None`).
    pub fn new(
        source: ModelSource,
        factory: ModelFactory,
        default: Option<String>,
        settings: LoadSettings,
    ) -> Result<Self, String> {
        let (names, warnings) = source.model_names()?;
        for w in warnings {
            tracing::warn!("{w}");
        }
        let default = match default {
            Some(d) if names.contains(&d) => d,
            Some(d) => {
                return Err(format!(
                    "--default-model {d:?} is not a model of the repository (it has: {})",
                    names.join(", ")
                ))
            }
            None => names.first().cloned().ok_or_else(|| match &source {
                ModelSource::Repository { root } => format!(
                    "model repository {}: no model folder (lay it out as <name>/<version>/config.json)",
                    root.display()
                ),
                ModelSource::Package { dir, .. } => format!("{}: no model", dir.display()),
            })?,
        };
        Ok(Self {
            table: ModelTable::new(&names, default),
            source,
            builder: Builder::Each(factory),
            settings,
        })
    }

    /// A repository of the one package at `dir`, served as model `name` version 1 and built
    /// once by `loader`.
    pub fn single(
        dir: &Path,
        name: String,
        package: PackageConfig,
        loader: ModelLoader,
        settings: LoadSettings,
    ) -> Self {
        Self {
            table: ModelTable::new(std::slice::from_ref(&name), name.clone()),
            source: ModelSource::Package {
                dir: dir.to_path_buf(),
                name,
            },
            builder: Builder::Once(Mutex::new(Some((package, loader)))),
            settings,
        }
    }

    /// The package config of the contract route's model, read before anything loads (its
    /// `apis` name the predict paths).
    pub fn default_package(&self) -> Result<PackageConfig, String> {
        if let Builder::Once(once) = &self.builder {
            if let Some((package, _)) = &*once.lock().unwrap_or_else(|p| p.into_inner()) {
                return Ok(package.clone());
            }
        }
        let name = self.table.default_name();
        let version = self
            .source
            .latest(name)?
            .ok_or_else(|| format!("model {name:?} has no folder"))?;
        PackageConfig::read(&version.dir).map_err(|e| e.to_string())
    }

    /// Brings model `name` up to date with its latest version on disk: loads it beside the
    /// serving one and swaps it in, or removes the model when its folder is gone. `requested`
    /// is a load request: it retries a load that failed on the same files and lifts an
    /// unload; polling does neither. The error says why the load failed (the old version, if
    /// any, still serves).
    pub async fn sync(&self, name: &str, requested: bool) -> Result<Loaded, String> {
        let lock = self.table.load_lock(name);
        let _one_at_a_time = lock.lock().await;
        let target = {
            let source = self.source.clone();
            let name = name.to_string();
            tokio::task::spawn_blocking(move || source.latest(&name))
                .await
                .map_err(|e| e.to_string())?
        };
        let (serving, failed, unloaded) = {
            let entries = self.table.read();
            let e = entries.get(name);
            (
                e.and_then(|e| e.serving.clone()),
                e.and_then(|e| e.failed.clone()),
                e.is_some_and(|e| e.unloaded),
            )
        };
        if unloaded && !requested {
            return Ok(Loaded::Unloaded);
        }
        let target = match target {
            Ok(Some(t)) => t,
            Ok(None) => {
                self.remove(name);
                return Ok(Loaded::Removed);
            }
            Err(e) => {
                self.record_failure(name, 0, Stamp::default(), &e, serving.as_deref());
                return Err(e);
            }
        };
        let current = serving
            .as_ref()
            .is_some_and(|s| s.info.version == target.version.to_string() && s.stamp == target.stamp);
        if current {
            self.table.write().entry(name.to_string()).or_default().unloaded = false;
            return Ok(Loaded::Unchanged);
        }
        if let Some((version, stamp, why)) = failed {
            if !requested && version == target.version && stamp == target.stamp {
                return Err(why);
            }
        }
        match self.load(name, &target).await {
            Ok(served) => {
                let replaced = serving.map(|s| s.info.version.clone());
                {
                    let mut entries = self.table.write();
                    let entry = entries.entry(name.to_string()).or_default();
                    entry.serving = Some(Arc::new(served));
                    entry.failed = None;
                    entry.unloaded = false;
                }
                self.settings
                    .metrics
                    .model_loads
                    .with_label_values(&[name, "loaded"])
                    .inc();
                self.settings
                    .metrics
                    .serving_version
                    .with_label_values(&[name])
                    .set(target.version as i64);
                match &replaced {
                    Some(old) => {
                        tracing::info!(model = name, version = target.version, replaced = %old, "model version swapped in")
                    }
                    None => tracing::info!(model = name, version = target.version, "model ready"),
                }
                Ok(Loaded::Swapped {
                    version: target.version,
                    replaced,
                })
            }
            Err(e) => {
                self.record_failure(name, target.version, target.stamp, &e, serving.as_deref());
                Err(e)
            }
        }
    }

    /// Stops serving `name` by request; its in-flight requests finish. Polling leaves it
    /// unloaded until a load request. False when no such model is known.
    pub async fn unload(&self, name: &str) -> bool {
        if !self.table.read().contains_key(name) {
            return false;
        }
        let lock = self.table.load_lock(name);
        let _after_any_load = lock.lock().await;
        let mut entries = self.table.write();
        let Some(entry) = entries.get_mut(name) else {
            return false;
        };
        entry.serving = None;
        entry.unloaded = true;
        drop(entries);
        let _ = self.settings.metrics.serving_version.remove_label_values(&[name]);
        tracing::info!(model = name, "model unloaded");
        true
    }

    /// Forgets `name` (its folder is gone); its in-flight requests finish.
    fn remove(&self, name: &str) {
        if self.table.write().remove(name).is_some() {
            let _ = self.settings.metrics.serving_version.remove_label_values(&[name]);
            tracing::info!(model = name, "model folder gone: model removed");
        }
    }

    fn record_failure(&self, name: &str, version: u64, stamp: Stamp, why: &str, serving: Option<&Served>) {
        self.table.write().entry(name.to_string()).or_default().failed = Some((version, stamp, why.to_string()));
        self.settings
            .metrics
            .model_loads
            .with_label_values(&[name, "failed"])
            .inc();
        match serving {
            Some(s) => tracing::error!(
                model = name,
                version,
                serving = %s.info.version,
                "model load failed, the serving version stays: {why}"
            ),
            None => tracing::error!(model = name, version, "model load failed: {why}"),
        }
    }

    /// Loads, warms up and parity-checks `target` on a new queue with its own workers.
    async fn load(&self, name: &str, target: &VersionDir) -> Result<Served, String> {
        let started = Instant::now();
        let (package, loader) = match &self.builder {
            Builder::Once(once) => once
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .ok_or("this server was started on one package and cannot load it again")?,
            Builder::Each(factory) => {
                let dir = target.dir.clone();
                let package = tokio::task::spawn_blocking(move || PackageConfig::read(&dir))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
                let loader = factory(&target.dir, &package);
                (package, loader)
            }
        };
        let input = package.kiln.input.clone();
        let preprocessor = Preprocessor::new(input.clone(), self.settings.max_pixels);
        let (tx, rx) = oneshot::channel();
        let batcher = {
            let input_len = Preprocessor::new(input.clone(), 1).input_len();
            let (checker, dir, samples) = (preprocessor.clone(), target.dir.clone(), package.kiln.parity.clone());
            let metrics = self.settings.metrics.clone();
            Batcher::start(
                self.settings.policy,
                self.settings.metrics.clone(),
                move || {
                    let model = loader()?;
                    warm_up(&*model, input_len)?;
                    if !samples.is_empty() {
                        let largest = crate::parity::check(&*model, &checker, &dir, &samples)?;
                        tracing::info!(
                            images = samples.len(),
                            largest_difference = format!("{largest:.2e}"),
                            "parity check passed"
                        );
                    }
                    metrics.model_load_seconds.set(started.elapsed().as_secs_f64());
                    Ok(model)
                },
                move |r| {
                    let _ = tx.send(r);
                },
            )
        };
        rx.await
            .unwrap_or_else(|_| Err("the model worker thread died while loading".into()))
            .map_err(|e| format!("{} version {}: {e}", name, target.version))?;
        let version = target.version.to_string();
        Ok(Served {
            info: ModelInfo {
                name: name.to_string(),
                version: version.clone(),
                input: [input.channels, input.height, input.width],
                detector: package.model_algorithm == kiln_models::package::OBJECT_DETECTION,
            },
            page_info: crate::page::describe(&package, &self.settings.device, name, &version),
            labels: package.kiln.labels.clone(),
            preprocessor,
            batcher,
            stamp: target.stamp,
        })
    }
}

/// Runs the warm-up pass: a model that panics on an input of the package's shape, or answers
/// it with non-finite values, is refused with the cause.
fn warm_up(model: &dyn ImageModel, input_len: usize) -> Result<(), String> {
    let predictions = catch_unwind(AssertUnwindSafe(|| model.predict(vec![0.0; input_len], 1)))
        .map_err(|panic| format!("the warm-up pass failed: {}", panic_message(&*panic)))?;
    for prediction in predictions {
        if let Prediction::Classes(probs) = prediction {
            if probs.iter().any(|p| !p.is_finite()) {
                return Err("the warm-up pass gave non-finite class probabilities (NaN or infinite weights?)".into());
            }
        }
    }
    Ok(())
}
