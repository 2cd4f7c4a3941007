//! What a Swin run trains and keeps: the model, AdamW with the official decay grouping, the
//! cosine schedule, the run state, and the checkpoints (`ckpt_epoch_N.pth` every `SAVE_FREQ`
//! epochs, auto-resume from the latest, the package `model/` of the best weights).

use std::path::{Path, PathBuf};

use burn::lr_scheduler::LrScheduler;
use burn::module::{AutodiffModule, Module};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, Optimizer};
use burn::tensor::backend::AutodiffBackend;

use kiln_models::package::Interpolation;
use kiln_models::swin::takes_weight_decay;
use kiln_models::{swin_package_config, PackageConfig, SwinConfig, SwinTransformer};

use super::config::SwinConfigFile;
use super::log::RunLog;
use crate::checkpoint::{capture, load_checked, CheckpointRecord, RunState};
use crate::ddp::Collective;
use crate::error::TrainError;
use crate::optim::DecayGroup;
use crate::parity::ParitySet;
use crate::run::{resolve_seed, SavePolicy};
use crate::schedule::{swin_scaled_lr, SwinCosine};

/// The copy of the checkpoint with the best Acc@1 (kiln's; the package is rewritten from it
/// when a crash damaged it).
pub const BEST_FILE: &str = "ckpt_best.pth";

pub(super) type SwinOptimizer<B> = OptimizerAdaptor<AdamW, SwinTransformer<B>, B>;
pub(super) type Checkpoint<B> = CheckpointRecord<
    <SwinTransformer<B> as Module<B>>::Record,
    <SwinOptimizer<B> as Optimizer<SwinTransformer<B>, B>>::Record,
    usize,
>;

/// The checkpoint of epoch `epoch` in `dir` (the official name).
pub fn checkpoint_path(dir: &Path, epoch: usize) -> PathBuf {
    dir.join(format!("ckpt_epoch_{epoch}.pth"))
}

/// The latest `ckpt_epoch_N.pth` in `dir` by epoch number (`TRAIN.AUTO_RESUME`; the official
/// code takes the newest file, which is the same file unless files were copied in).
pub fn latest_checkpoint(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let epoch = name
                .strip_prefix("ckpt_epoch_")?
                .strip_suffix(".pth")?
                .parse::<usize>()
                .ok()?;
            Some((epoch, e.path()))
        })
        .max_by_key(|(epoch, _)| *epoch)
        .map(|(_, path)| path)
}

/// The network's shape as a checkpoint records it, so a resume with another shape is refused.
pub fn arch_name(model: &SwinConfig) -> String {
    format!(
        "swin embed {} depths {:?} heads {:?} window {} patch {} img {} ape {}",
        model.embed_dim, model.depths, model.num_heads, model.window_size, model.patch_size, model.img_size, model.ape
    )
}

/// The model, optimizer, schedule and run state being trained.
pub struct SwinRun<'a, B: AutodiffBackend> {
    pub(super) dist: &'a Collective<B::InnerBackend>,
    pub(super) model: SwinTransformer<B>,
    pub(super) optim: SwinOptimizer<B>,
    pub(super) scheduler: SwinCosine,
    pub(super) decay: DecayGroup,
    pub(super) state: RunState,
    pub(super) shape: SwinConfig,
    pub(super) package: PackageConfig,
    /// The held-out images the package carries for serving's parity check.
    pub(super) parity: ParitySet,
    pub(super) device: B::Device,
    /// Whether the run continues a checkpoint.
    pub(super) resumed: bool,
    output: PathBuf,
}

impl<'a, B: AutodiffBackend> SwinRun<'a, B> {
    /// A fresh model (or `MODEL.PRETRAINED`'s weights), or everything restored from the
    /// checkpoint to resume; rank 0's seed and weights on every worker.
    pub fn new(
        c: &SwinConfigFile,
        amp: bool,
        shape: SwinConfig,
        classes: &[String],
        updates_per_epoch: usize,
        dist: &'a Collective<B::InnerBackend>,
        log: &mut RunLog,
        device: &B::Device,
    ) -> Result<Self, TrainError> {
        let output = PathBuf::from(&c.output);
        let resume = resume_path(c, log);
        let checkpoint = resume
            .as_deref()
            .map(|p| Checkpoint::<B>::load::<B>(p, device))
            .transpose()?;
        let seed = resolve_seed(
            checkpoint.is_none().then_some(c.seed),
            checkpoint.as_ref().map(|ck| ck.state.seed),
            dist,
            device,
        )?;
        log.line(&format!("Creating model:{}/{}", c.model.kind, c.model.name));
        let mut model = shape.init::<B>(device);
        log.line(&format!("number of params: {}", model.num_trainable_params()));
        let world = dist.world();
        let accumulation = c.train.accumulation_steps;
        let scale = |rate: f64| swin_scaled_lr(rate, c.data.batch_size, world, accumulation);
        let [lr, warmup_lr, min_lr] = [c.train.base_lr, c.train.warmup_lr, c.train.min_lr].map(scale);
        let mut scheduler = SwinCosine::new(
            lr,
            warmup_lr,
            min_lr,
            updates_per_epoch,
            c.train.epochs,
            c.train.warmup_epochs,
        )
        .map_err(TrainError::Flag)?;
        let betas = &c.train.optimizer.betas;
        let mut optim = AdamWConfig::new()
            .with_beta_1(betas[0] as f32)
            .with_beta_2(betas[1] as f32)
            .with_epsilon(c.train.optimizer.eps as f32)
            .with_weight_decay(0.0)
            .init::<B, SwinTransformer<B>>();
        let mut state = RunState {
            epoch: c.train.start_epoch,
            arch: arch_name(&shape),
            best_score: 0.0,
            seed,
            classes: classes.to_vec(),
            loss_scale: None,
        };
        if let (Some(path), Some(checkpoint)) = (resume.as_deref(), checkpoint) {
            checkpoint.state.check_resumable(path, &state)?;
            log.line(&format!(
                "==============> Resuming form {}....................",
                path.display()
            ));
            model = load_checked(model, checkpoint.model, path)?;
            optim = optim.load_record(checkpoint.optimizer);
            scheduler = scheduler.load_record::<B>(checkpoint.scheduler);
            state = checkpoint.state;
            log.line(&format!(
                "=> loaded successfully '{}' (epoch {})",
                path.display(),
                state.epoch.saturating_sub(1)
            ));
        } else if !c.model.pretrained.is_empty() {
            model = super::pretrained::load::<B>(model, Path::new(&c.model.pretrained), log)?;
        }
        // In mixed precision the loss scale carries on from the checkpoint (GradScaler's state).
        state.loss_scale = amp.then(|| state.loss_scale.take().unwrap_or_default());
        let resumed = resume.is_some();
        let model = dist.sync_module(model)?;
        let decay = DecayGroup::select(&model, takes_weight_decay);
        let interpolation = match c.data.interpolation.as_str() {
            "bicubic" => Interpolation::Bicubic,
            _ => Interpolation::Bilinear,
        };
        let package = swin_package_config(&shape, classes, interpolation, c.test.crop);
        Ok(Self {
            dist,
            model,
            optim,
            scheduler,
            decay,
            state,
            shape,
            package,
            parity: ParitySet::default(),
            device: device.clone(),
            resumed,
            output,
        })
    }

    fn policy(&self, epoch: usize) -> SavePolicy {
        SavePolicy {
            output: self.output.clone(),
            latest: checkpoint_path(&self.output, epoch),
            best: self.output.join(BEST_FILE),
            package: self.output.join(crate::run::PACKAGE_DIR),
        }
    }

    /// Whether the output folder holds a model package.
    pub fn has_package(&self) -> bool {
        self.output
            .join(crate::run::PACKAGE_DIR)
            .join(kiln_models::package::CONFIG_FILE)
            .is_file()
    }

    /// Makes `model/` hold the weights `ckpt_best.pth` recorded ([`SavePolicy::repair`]).
    pub fn repair_package(&self) -> Result<(), TrainError> {
        self.policy(0).repair(|best, package| {
            let checkpoint = Checkpoint::<B>::load::<B>(best, &self.device)?;
            let model = load_checked(self.shape.init::<B>(&self.device), checkpoint.model, best)?;
            self.write_package(package, &model.valid())
        })
    }

    /// The package of `model` at `dir`, with the parity images and their probabilities.
    fn write_package(&self, dir: &Path, model: &SwinTransformer<B::InnerBackend>) -> Result<(), TrainError> {
        self.parity
            .write_package(dir, &self.package, model, |x| model.forward(x), false, &self.device)?;
        Ok(())
    }

    /// Saves the end of `epoch` (rank 0): on a save epoch `ckpt_epoch_N.pth` (with the package
    /// first and the best copy after on a new best, [`SavePolicy::save`]); otherwise the
    /// package alone on a new best.
    pub fn save(&self, epoch: usize, save_epoch: bool, is_best: bool, log: &mut RunLog) -> Result<(), TrainError> {
        let policy = self.policy(epoch);
        let write_package = |package: &Path| self.write_package(package, &self.model.valid());
        if !save_epoch {
            return if is_best {
                write_package(&policy.package)
            } else {
                Ok(())
            };
        }
        log.line(&format!("{} saving......", policy.latest.display()));
        policy.save(
            is_best,
            write_package,
            |latest| {
                capture(&self.state, &self.model, &self.optim, &self.scheduler).save::<B>(latest)?;
                Ok(())
            },
            None,
        )?;
        log.line(&format!("{} saved !!!", policy.latest.display()));
        Ok(())
    }
}

/// The checkpoint to resume: with `TRAIN.AUTO_RESUME` the output folder's latest (over
/// `MODEL.RESUME`, with the official warning), else `MODEL.RESUME`.
fn resume_path(c: &SwinConfigFile, log: &mut RunLog) -> Option<PathBuf> {
    let given = (!c.model.resume.is_empty()).then(|| PathBuf::from(&c.model.resume));
    if !c.train.auto_resume {
        return given;
    }
    let output = Path::new(&c.output);
    match latest_checkpoint(output) {
        Some(found) => {
            if let Some(given) = &given {
                log.line(&format!(
                    "auto-resume changing resume file from {} to {}",
                    given.display(),
                    found.display()
                ));
            }
            log.line(&format!("auto resuming from {}", found.display()));
            Some(found)
        }
        None => {
            log.line(&format!(
                "no checkpoint found in {}, ignoring auto resume",
                output.display()
            ));
            given
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_resume_takes_the_highest_epoch() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(latest_checkpoint(dir.path()), None);
        for name in [
            "ckpt_epoch_2.pth",
            "ckpt_epoch_10.pth",
            "ckpt_epoch_9.pth",
            "ckpt_best.pth",
            "x.pth",
        ] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        assert_eq!(
            latest_checkpoint(dir.path()),
            Some(dir.path().join("ckpt_epoch_10.pth"))
        );
        assert_eq!(checkpoint_path(dir.path(), 3), dir.path().join("ckpt_epoch_3.pth"));
    }
}
