//! The served models: for each model name, the version answering requests now, and what
//! became of its latest load. A request takes the serving version (an `Arc`) once and keeps
//! it to the end, so a swap never changes the model under a request: the old version's queue
//! drains, then its workers stop.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde_json::Value;

use crate::batcher::Batcher;
use crate::preprocess::Preprocessor;
use crate::repository::layout::Stamp;

/// The served model as the v2 protocol describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    /// The model's name (the package or model folder's name).
    pub name: String,
    /// Its version (the version folder's name; `1` for one package).
    pub version: String,
    /// The model input `[C, H, W]`.
    pub input: [usize; 3],
    /// Whether it detects objects (else it classifies).
    pub detector: bool,
}

/// One loaded, warmed-up and parity-checked model version with its own queue and workers.
pub struct Served {
    /// Name, version and tensor shapes.
    pub info: ModelInfo,
    /// Upload → model input.
    pub preprocessor: Preprocessor,
    /// Output labels in class order.
    pub labels: Vec<Value>,
    /// The queue to this version's model workers.
    pub batcher: Batcher,
    /// The prediction page's description of it (`GET /info`, less `ready`).
    pub page_info: Value,
    /// Its files when it was loaded.
    pub stamp: Stamp,
}

/// What the repository index says of a model (Triton's states).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelState {
    /// Its first version is loading.
    Loading,
    /// A version is serving.
    Ready,
    /// Nothing serves: its load failed (why), or it was unloaded.
    Unavailable(String),
}

/// One model name's slot.
#[derive(Default)]
pub struct Entry {
    /// The version answering requests.
    pub serving: Option<Arc<Served>>,
    /// Unloaded by request: polling leaves it alone until a load request.
    pub unloaded: bool,
    /// The last load that failed, by version and stamp, with why: not retried until its
    /// files change (or a load request asks again).
    pub failed: Option<(u64, Stamp, String)>,
    /// Loads of this model run one at a time.
    pub lock: Arc<tokio::sync::Mutex<()>>,
}

impl Entry {
    /// The index state.
    pub fn state(&self) -> ModelState {
        match (&self.serving, &self.failed) {
            (Some(_), _) => ModelState::Ready,
            (None, _) if self.unloaded => ModelState::Unavailable("unloaded".into()),
            (None, Some((_, _, why))) => ModelState::Unavailable(why.clone()),
            (None, None) => ModelState::Loading,
        }
    }
}

/// Every model name the server knows, and the one the contract route answers with.
pub struct ModelTable {
    entries: RwLock<BTreeMap<String, Entry>>,
    /// The model `POST /` and the WebSocket route use.
    default: String,
}

impl ModelTable {
    /// A table of `names`, nothing loaded yet; `default` answers the contract route.
    pub fn new(names: &[String], default: String) -> Self {
        let entries = names.iter().map(|n| (n.clone(), Entry::default())).collect();
        Self {
            entries: RwLock::new(entries),
            default,
        }
    }

    /// The contract route's model name.
    pub fn default_name(&self) -> &str {
        &self.default
    }

    /// Read access to every entry.
    pub fn read(&self) -> RwLockReadGuard<'_, BTreeMap<String, Entry>> {
        self.entries.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Write access to every entry (hold it only to change them, never across an await).
    pub fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<String, Entry>> {
        self.entries.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The version of `name` serving now.
    pub fn serving(&self, name: &str) -> Option<Arc<Served>> {
        self.read().get(name).and_then(|e| e.serving.clone())
    }

    /// The contract route's model, when it serves.
    pub fn default_serving(&self) -> Option<Arc<Served>> {
        self.serving(&self.default)
    }

    /// `name`'s load lock, adding an empty entry for a model not yet known.
    pub fn load_lock(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.write().entry(name.to_string()).or_default().lock.clone()
    }

    /// Every model's name, serving version and state, in name order.
    pub fn index(&self) -> Vec<(String, Option<String>, ModelState)> {
        self.read()
            .iter()
            .map(|(name, e)| {
                let version = e.serving.as_ref().map(|s| s.info.version.clone());
                (name.clone(), version, e.state())
            })
            .collect()
    }
}
