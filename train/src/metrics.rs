//! The per-epoch metrics file: one JSON object per line.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One epoch's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// Epoch number, from 1.
    pub epoch: usize,
    /// Mean training loss over the epoch's batches.
    pub train_loss: f64,
    /// Mean test loss per sample.
    pub test_loss: f64,
    /// Test accuracy in [0, 1].
    pub accuracy: f64,
    /// Learning rate the epoch trained at.
    pub lr: f64,
    /// Wall time of the training pass in seconds.
    pub train_seconds: f64,
    /// Wall time of the test pass in seconds.
    pub test_seconds: f64,
    /// Wall time of the whole epoch (train + test) in seconds.
    pub seconds: f64,
    /// Training images per second.
    pub images_per_second: f64,
}

/// Appends [`EpochMetrics`] lines to a file, flushing each one.
pub struct MetricsWriter {
    path: PathBuf,
    file: File,
}

impl MetricsWriter {
    /// Creates (or truncates) the metrics file.
    pub fn create(path: &Path) -> std::io::Result<Self> {
        Self::open(path, false)
    }

    /// Opens the metrics file, appending to it (a resumed run) or truncating it (a new run).
    pub fn open(path: &Path, append: bool) -> std::io::Result<Self> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Appends one epoch's line and logs its wall time and training speed.
    pub fn record<T: Serialize>(
        &mut self,
        epoch: usize,
        seconds: f64,
        images_per_second: f64,
        m: &T,
    ) -> Result<(), crate::TrainError> {
        self.append(m).map_err(|source| crate::TrainError::Io {
            path: self.path.clone(),
            source,
        })?;
        tracing::info!(
            epoch,
            seconds = format!("{seconds:.1}"),
            images_per_s = format!("{images_per_second:.1}"),
            "epoch done"
        );
        Ok(())
    }

    /// Writes one line.
    pub fn append<T: Serialize>(&mut self, m: &T) -> std::io::Result<()> {
        let line = serde_json::to_string(m).expect("metrics serialise");
        writeln!(self.file, "{line}")?;
        self.file.flush()
    }
}
