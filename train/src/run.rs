//! The scaffold every job's run stands on, so that a job supplies only its data, model, step
//! and evaluation:
//!
//! - the seed ([`resolve_seed`]): the flag, else the resumed checkpoint's, else a random one,
//!   rank 0's on every worker;
//! - the output files, on rank 0 ([`RunOutput`]): `run.json` with the settings the run
//!   resolved (its flags, the experiment, the seed and the layout, as burn's `Config` files and
//!   YOLOX's experiment dump record them) and `metrics.jsonl`, one JSON line per epoch;
//! - the checkpoint policy ([`SavePolicy`]): on a new best the model package is written before
//!   the checkpoint records that best, and a resumed run first repairs what a crash left.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::prelude::Backend;
use serde::Serialize;

use crate::checkpoint::{copy_atomic, remove_stale_temporaries};
use crate::ddp::{Collective, DistError};
use crate::error::TrainError;

/// The per-epoch metrics file inside a run's output folder.
pub const METRICS_FILE: &str = "metrics.jsonl";
/// The resolved settings of the run, inside its output folder.
pub const RUN_FILE: &str = "run.json";
/// The model package folder inside a run's output folder.
pub const PACKAGE_DIR: &str = "model";

/// A seed for runs that were given none: the clock mixed with the process id.
fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (std::process::id() as u64) << 32
}

/// The seed the run trains with: `flag`, else `saved` (a resumed checkpoint's), else a random
/// one; rank 0's on every worker, and the backend seeded with it.
pub fn resolve_seed<R: Backend>(
    flag: Option<u64>,
    saved: Option<u64>,
    dist: &Collective<R>,
    device: &R::Device,
) -> Result<u64, DistError> {
    let seed = dist.share_u64(flag.or(saved).unwrap_or_else(random_seed), device)?;
    R::seed(device, seed);
    Ok(seed)
}

/// `run.json`: what a run resolved before it trained.
#[derive(Debug, Serialize)]
struct RunRecord<'a, S: Serialize> {
    job: &'a str,
    kiln_version: &'a str,
    command: Vec<String>,
    started_unix_seconds: u64,
    resumed: bool,
    seed: u64,
    world_size: usize,
    settings: &'a S,
}

/// A run's output files on rank 0 (nothing on the other ranks).
pub struct RunOutput {
    metrics: Option<(PathBuf, File)>,
}

impl RunOutput {
    /// Creates `dir` and writes `run.json` there (the job's name, kiln's version, the command
    /// line, `settings`, the seed and the number of workers), then opens `metrics.jsonl`,
    /// appending when `resumed` and starting it afresh otherwise. Rank 0 only.
    pub fn open<R: Backend, S: Serialize>(
        dist: &Collective<R>,
        dir: &Path,
        job: &str,
        settings: &S,
        seed: u64,
        resumed: bool,
    ) -> Result<Self, TrainError> {
        if !dist.is_root() {
            return Ok(Self { metrics: None });
        }
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| TrainError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let record = RunRecord {
            job,
            kiln_version: env!("CARGO_PKG_VERSION"),
            command: std::env::args().collect(),
            started_unix_seconds: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            resumed,
            seed,
            world_size: dist.world(),
            settings,
        };
        let run_file = dir.join(RUN_FILE);
        let text = serde_json::to_string_pretty(&record).expect("settings serialise") + "\n";
        let temporary = dir.join(format!(".{RUN_FILE}.tmp-{}", std::process::id()));
        std::fs::write(&temporary, text)
            .and_then(|()| std::fs::rename(&temporary, &run_file))
            .map_err(io(&run_file))?;
        let metrics = dir.join(METRICS_FILE);
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .append(resumed)
            .truncate(!resumed)
            .open(&metrics)
            .map_err(io(&metrics))?;
        Ok(Self {
            metrics: Some((metrics, file)),
        })
    }

    /// Appends one epoch's line `m` to `metrics.jsonl` (rank 0; nothing elsewhere) and logs
    /// its wall time and training speed.
    pub fn record_epoch<T: Serialize>(
        &mut self,
        epoch: usize,
        seconds: f64,
        images_per_second: f64,
        m: &T,
    ) -> Result<(), TrainError> {
        let Some((path, file)) = self.metrics.as_mut() else {
            return Ok(());
        };
        let line = serde_json::to_string(m).expect("metrics serialise");
        writeln!(file, "{line}")
            .and_then(|()| file.flush())
            .map_err(|source| TrainError::Io {
                path: path.clone(),
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
}

/// Where a job keeps its checkpoints and package, and the order it writes them in.
#[derive(Debug, Clone)]
pub struct SavePolicy {
    /// The run's output folder.
    pub output: PathBuf,
    /// The checkpoint rewritten every epoch (`checkpoint.pth.tar`, `latest_ckpt.pth`).
    pub latest: PathBuf,
    /// The copy of the checkpoint with the best score (`model_best.pth.tar`, `best_ckpt.pth`).
    pub best: PathBuf,
    /// The model package of the best weights.
    pub package: PathBuf,
}

impl SavePolicy {
    /// The policy for `output` with the job's checkpoint file names; the package is `model/`.
    pub fn new(output: &Path, latest: &str, best: &str) -> Self {
        Self {
            output: output.to_path_buf(),
            latest: output.join(latest),
            best: output.join(best),
            package: output.join(PACKAGE_DIR),
        }
    }

    /// Saves an epoch's end. When `is_best`, `write_package` writes the package first; then
    /// `write_checkpoint` writes the latest checkpoint, which is copied to `history` (when
    /// given) and to the best checkpoint (when `is_best`). In that order a crash leaves either
    /// the old best recorded (the resumed run redoes the epoch and writes the package again)
    /// or the package already holding the newly recorded best.
    pub fn save(
        &self,
        is_best: bool,
        write_package: impl FnOnce(&Path) -> Result<(), TrainError>,
        write_checkpoint: impl FnOnce(&Path) -> Result<(), TrainError>,
        history: Option<&Path>,
    ) -> Result<(), TrainError> {
        if is_best {
            write_package(&self.package)?;
        }
        write_checkpoint(&self.latest)?;
        if let Some(history) = history {
            copy_atomic(&self.latest, history)?;
        }
        if is_best {
            copy_atomic(&self.latest, &self.best)?;
        }
        Ok(())
    }

    /// Makes the package hold the weights the best checkpoint recorded before a run goes on:
    /// a run that died while writing it (or a disk that filled up) may have left none, or a
    /// damaged one. Removes the temporary files and folders a dead writer left first;
    /// `rewrite(best, package)` writes the package from the best checkpoint when needed.
    pub fn repair(&self, rewrite: impl FnOnce(&Path, &Path) -> Result<(), TrainError>) -> Result<(), TrainError> {
        remove_stale_temporaries(&self.output);
        kiln_models::package::recover_package(&self.package)?;
        if !self.best.is_file() || kiln_models::package::verify_package(&self.package).is_ok() {
            return Ok(());
        }
        rewrite(&self.best, &self.package)?;
        println!(
            "=> rewrote the model package '{}' from '{}'",
            self.package.display(),
            self.best.display()
        );
        Ok(())
    }
}

/// Serialises a value by its `Display` form (for flags whose types are not `Serialize`).
pub fn display<T: std::fmt::Display, S: serde::Serializer>(value: &T, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn_flex::Flex;

    #[derive(Serialize)]
    struct Settings {
        lr: f64,
        name: &'static str,
    }

    #[test]
    fn run_json_records_the_settings_and_metrics_append_on_resume() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        let dist = Collective::<Flex>::single();
        let settings = Settings { lr: 0.5, name: "x" };
        let mut run = RunOutput::open(&dist, &out, "mnist", &settings, 7, false).unwrap();
        run.record_epoch(1, 1.0, 2.0, &serde_json::json!({"epoch": 1})).unwrap();
        let record: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join(RUN_FILE)).unwrap()).unwrap();
        assert_eq!(record["job"], "mnist");
        assert_eq!(record["seed"], 7);
        assert_eq!(record["world_size"], 1);
        assert_eq!(record["resumed"], false);
        assert_eq!(record["settings"]["lr"], 0.5);
        assert_eq!(record["kiln_version"], env!("CARGO_PKG_VERSION"));
        drop(run);
        let mut resumed = RunOutput::open(&dist, &out, "mnist", &settings, 7, true).unwrap();
        resumed
            .record_epoch(2, 1.0, 2.0, &serde_json::json!({"epoch": 2}))
            .unwrap();
        let lines = std::fs::read_to_string(out.join(METRICS_FILE)).unwrap();
        assert_eq!(lines, "{\"epoch\":1}\n{\"epoch\":2}\n");
        let mut fresh = RunOutput::open(&dist, &out, "mnist", &settings, 7, false).unwrap();
        fresh
            .record_epoch(1, 1.0, 2.0, &serde_json::json!({"epoch": 1}))
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(out.join(METRICS_FILE)).unwrap(),
            "{\"epoch\":1}\n"
        );
        // No temporary file is left beside run.json.
        let names: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.contains("tmp")), "{names:?}");
    }

    #[test]
    fn a_given_seed_wins_over_a_saved_one() {
        let dist = Collective::<Flex>::single();
        let device = Default::default();
        assert_eq!(resolve_seed(Some(3), Some(9), &dist, &device).unwrap(), 3);
        assert_eq!(resolve_seed(None, Some(9), &dist, &device).unwrap(), 9);
        let a = resolve_seed(None, None, &dist, &device).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert_ne!(a, resolve_seed(None, None, &dist, &device).unwrap());
    }

    #[test]
    fn the_package_is_written_before_the_checkpoint_records_a_best() {
        let dir = tempfile::tempdir().unwrap();
        let policy = SavePolicy::new(dir.path(), "latest", "best");
        let order = std::cell::RefCell::new(Vec::new());
        let history = dir.path().join("epoch_1");
        let save = |is_best: bool, history: Option<&Path>| {
            order.borrow_mut().clear();
            policy
                .save(
                    is_best,
                    |p| {
                        order.borrow_mut().push("package");
                        assert_eq!(p, policy.package);
                        Ok(())
                    },
                    |p| {
                        order.borrow_mut().push("checkpoint");
                        std::fs::write(p, b"ckpt").map_err(|source| TrainError::Io { path: p.into(), source })
                    },
                    history,
                )
                .unwrap();
            order.borrow().clone()
        };
        assert_eq!(save(false, None), ["checkpoint"]);
        assert!(!policy.best.exists());
        assert_eq!(save(true, Some(&history)), ["package", "checkpoint"]);
        assert_eq!(std::fs::read(&policy.best).unwrap(), b"ckpt");
        assert_eq!(std::fs::read(&history).unwrap(), b"ckpt");
        // A failing package write leaves the checkpoint untouched.
        std::fs::write(&policy.latest, b"old").unwrap();
        let failed = policy.save(
            true,
            |p| {
                Err(TrainError::Io {
                    path: p.into(),
                    source: std::io::ErrorKind::StorageFull.into(),
                })
            },
            |_| unreachable!("no checkpoint after a failed package"),
            None,
        );
        assert!(failed.is_err());
        assert_eq!(std::fs::read(&policy.latest).unwrap(), b"old");
    }
}
