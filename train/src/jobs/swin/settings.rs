//! The run's settings: the config file with main.py's flags applied as its `update_config`
//! does, checked for what kiln runs, and the model shape they give.

use std::path::PathBuf;

use kiln_data::BatchMix;
use kiln_models::SwinConfig;

use super::config::SwinConfigFile;
use crate::cli::SwinArgs;
use crate::error::TrainError;

/// The official datasets.
pub const IMAGENET: &str = "imagenet";
/// ImageNet-22K's map-file layout.
pub const IMAGENET_22K: &str = "imagenet22K";

/// The config `--cfg` and `--opts` give, with the flags applied over it (`update_config`):
/// `OUTPUT` becomes `<output>/<MODEL.NAME>/<TAG>`.
pub fn resolve(args: &SwinArgs) -> Result<SwinConfigFile, TrainError> {
    let mut c = SwinConfigFile::load(&args.cfg, &args.opts).map_err(|e| TrainError::Flag(e.to_string()))?;
    if let Some(b) = args.batch_size {
        c.data.batch_size = b;
    }
    if let Some(p) = &args.data_path {
        c.data.data_path = p.display().to_string();
    }
    if args.zip {
        c.data.zip_mode = true;
    }
    if let Some(m) = &args.cache_mode {
        c.data.cache_mode = m.clone();
    }
    if let Some(p) = &args.pretrained {
        c.model.pretrained = p.display().to_string();
    }
    if let Some(p) = &args.resume {
        c.model.resume = p.display().to_string();
    }
    if let Some(s) = args.accumulation_steps {
        c.train.accumulation_steps = s;
    }
    if args.use_checkpoint {
        c.train.use_checkpoint = true;
    }
    if args.amp_opt_level.as_deref() == Some("O0") || args.disable_amp {
        c.amp_enable = false;
    }
    c.output = args.output.display().to_string();
    if let Some(t) = &args.tag {
        c.tag = t.clone();
    }
    if args.eval {
        c.eval_mode = true;
    }
    if args.throughput {
        c.throughput_mode = true;
    }
    if args.fused_window_process {
        c.fused_window_process = true;
    }
    if args.fused_layernorm {
        c.fused_layernorm = true;
    }
    if let Some(o) = &args.optim {
        c.train.optimizer.name = o.clone();
    }
    if let Some(r) = args.local_rank {
        c.local_rank = r;
    }
    c.output = PathBuf::from(&c.output)
        .join(&c.model.name)
        .join(&c.tag)
        .display()
        .to_string();
    check(&c).map_err(TrainError::Flag)?;
    Ok(c)
}

/// An error naming the key when the config asks for something kiln's Swin job does not run.
pub fn check(c: &SwinConfigFile) -> Result<(), String> {
    let refuse = |key: &str, value: &dyn std::fmt::Debug, why: &str| Err(format!("{key} {value:?}: {why}"));
    if c.model.kind != "swin" {
        return refuse(
            "MODEL.TYPE",
            &c.model.kind,
            "kiln trains `swin` (not Swin V2, MLP or MoE)",
        );
    }
    if c.data.dataset != IMAGENET && c.data.dataset != IMAGENET_22K {
        return refuse("DATA.DATASET", &c.data.dataset, "expected imagenet or imagenet22K");
    }
    if c.data.zip_mode {
        return refuse("DATA.ZIP_MODE", &true, "zipped datasets are not supported; unpack them");
    }
    if c.data.data_path.is_empty() {
        return Err("DATA.DATA_PATH is empty: pass --data-path".into());
    }
    if !matches!(c.data.interpolation.as_str(), "bicubic" | "bilinear") {
        return refuse(
            "DATA.INTERPOLATION",
            &c.data.interpolation,
            "expected bicubic or bilinear",
        );
    }
    if c.data.img_size <= 32 {
        return refuse(
            "DATA.IMG_SIZE",
            &c.data.img_size,
            "kiln trains inputs larger than 32 pixels",
        );
    }
    if c.model.drop_rate != 0.0 {
        return refuse(
            "MODEL.DROP_RATE",
            &c.model.drop_rate,
            "kiln's Swin has no dropout layers (every official config uses 0)",
        );
    }
    if !(0.0..1.0).contains(&c.model.drop_path_rate) {
        return refuse("MODEL.DROP_PATH_RATE", &c.model.drop_path_rate, "must be in [0, 1)");
    }
    if !(0.0..1.0).contains(&c.model.label_smoothing) {
        return refuse("MODEL.LABEL_SMOOTHING", &c.model.label_smoothing, "must be in [0, 1)");
    }
    if c.model.swin.qk_scale.is_some() {
        return refuse(
            "MODEL.SWIN.QK_SCALE",
            &c.model.swin.qk_scale,
            "kiln scales attention by head_dim^-0.5",
        );
    }
    if c.train.lr_scheduler.name != "cosine" || !c.train.lr_scheduler.warmup_prefix {
        return refuse(
            "TRAIN.LR_SCHEDULER.NAME",
            &c.train.lr_scheduler.name,
            "kiln runs the cosine schedule with WARMUP_PREFIX True",
        );
    }
    if c.train.optimizer.name != "adamw" {
        return refuse("TRAIN.OPTIMIZER.NAME", &c.train.optimizer.name, "kiln runs adamw");
    }
    let betas = &c.train.optimizer.betas;
    if betas.len() != 2 || betas.iter().any(|b| !(0.0..1.0).contains(b)) {
        return refuse("TRAIN.OPTIMIZER.BETAS", betas, "expected two values in [0, 1)");
    }
    if c.train.layer_decay != 1.0 {
        return refuse(
            "TRAIN.LAYER_DECAY",
            &c.train.layer_decay,
            "layer-wise decay (SimMIM) is not supported",
        );
    }
    if c.train.accumulation_steps == 0 || c.data.batch_size == 0 {
        return Err("DATA.BATCH_SIZE and TRAIN.ACCUMULATION_STEPS must be at least 1".into());
    }
    if c.train.epochs == 0 || c.train.warmup_epochs >= c.train.epochs {
        return Err(format!(
            "TRAIN.WARMUP_EPOCHS {} must be below TRAIN.EPOCHS {}",
            c.train.warmup_epochs, c.train.epochs
        ));
    }
    if c.aug.mixup_mode != "batch" {
        return refuse("AUG.MIXUP_MODE", &c.aug.mixup_mode, "kiln mixes per batch");
    }
    if c.aug.cutmix_minmax.is_some() {
        return refuse(
            "AUG.CUTMIX_MINMAX",
            &c.aug.cutmix_minmax,
            "not supported; use AUG.CUTMIX's α",
        );
    }
    let mix = batch_mix(c);
    mix.validate()?;
    if mix.is_active() && c.data.batch_size % 2 != 0 {
        return refuse(
            "DATA.BATCH_SIZE",
            &c.data.batch_size,
            "Mixup/CutMix needs an even batch (as timm)",
        );
    }
    if c.save_freq == 0 || c.print_freq == 0 {
        return Err("SAVE_FREQ and PRINT_FREQ must be at least 1".into());
    }
    Ok(())
}

/// The batch mixing `AUG` asks for.
pub fn batch_mix(c: &SwinConfigFile) -> BatchMix {
    BatchMix {
        mixup_alpha: c.aug.mixup,
        cutmix_alpha: c.aug.cutmix,
        prob: c.aug.mixup_prob,
        switch_prob: c.aug.mixup_switch_prob,
    }
}

/// The network `MODEL.SWIN` and `DATA.IMG_SIZE` describe, for `classes` classes.
pub fn model_config(c: &SwinConfigFile, classes: usize) -> Result<SwinConfig, TrainError> {
    let s = &c.model.swin;
    let mut model = SwinConfig::new(s.embed_dim, &s.depths, &s.num_heads, classes);
    model.img_size = c.data.img_size;
    model.patch_size = s.patch_size;
    model.in_chans = s.in_chans;
    model.window_size = s.window_size;
    model.mlp_ratio = s.mlp_ratio;
    model.qkv_bias = s.qkv_bias;
    model.ape = s.ape;
    model.patch_norm = s.patch_norm;
    model.drop_path_rate = c.model.drop_path_rate;
    model
        .validate()
        .map_err(|e| TrainError::Flag(format!("MODEL.SWIN: {e}")))?;
    if s.in_chans != 3 {
        return Err(TrainError::Flag(format!(
            "MODEL.SWIN.IN_CHANS {}: kiln reads RGB images",
            s.in_chans
        )));
    }
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> SwinArgs {
        let cfg = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../configs/swin/swin_tiny_patch4_window7_224.yaml"
        );
        let mut argv = vec!["kiln-train", "swin", "--cfg", cfg];
        argv.extend_from_slice(extra);
        match crate::Cli::try_parse_from(argv).unwrap().job {
            crate::Job::Swin(a) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn flags_override_the_config_as_update_config_does() {
        let c = resolve(&args(&[
            "--data-path",
            "/data/in1k",
            "--batch-size",
            "64",
            "--accumulation-steps",
            "2",
            "--tag",
            "t1",
            "--disable_amp",
            "--eval",
            "--opts",
            "TRAIN.EPOCHS",
            "30",
            "DATA.NUM_WORKERS",
            "2",
        ]))
        .unwrap();
        assert_eq!(
            (c.data.batch_size, c.train.accumulation_steps, c.train.epochs),
            (64, 2, 30)
        );
        assert_eq!(c.data.data_path, "/data/in1k");
        assert_eq!(c.output, "output/swin_tiny_patch4_window7_224/t1");
        assert!(!c.amp_enable && c.eval_mode && !c.throughput_mode);
        assert_eq!(c.data.num_workers, 2);
        let m = model_config(&c, 10).unwrap();
        assert_eq!(
            (m.embed_dim, m.depths.clone(), m.num_classes, m.drop_path_rate),
            (96, vec![2, 2, 6, 2], 10, 0.2)
        );
    }

    #[test]
    fn what_kiln_does_not_run_is_refused_by_key() {
        for (extra, needle) in [
            (vec!["--opts", "MODEL.TYPE", "swinv2"], "MODEL.TYPE"),
            (vec!["--zip"], "DATA.ZIP_MODE"),
            (vec!["--optim", "sgd"], "TRAIN.OPTIMIZER.NAME"),
            (vec!["--opts", "AUG.MIXUP_MODE", "elem"], "AUG.MIXUP_MODE"),
            (vec!["--batch-size", "3"], "DATA.BATCH_SIZE"),
            (vec!["--opts", "MODEL.DROP_RATE", "0.1"], "MODEL.DROP_RATE"),
            (vec!["--opts", "TRAIN.WARMUP_EPOCHS", "400"], "TRAIN.WARMUP_EPOCHS"),
        ] {
            let mut a = vec!["--data-path", "/d"];
            a.extend(extra.iter());
            let e = resolve(&args(&a)).unwrap_err().to_string();
            assert!(e.contains(needle), "{extra:?}: {e}");
        }
        let e = resolve(&args(&[])).unwrap_err().to_string();
        assert!(e.contains("--data-path"), "{e}");
        let c = resolve(&args(&["--data-path", "/d", "--opts", "MODEL.SWIN.WINDOW_SIZE", "5"])).unwrap();
        let e = model_config(&c, 10).unwrap_err().to_string();
        assert!(e.contains("MODEL.SWIN") && e.contains("WINDOW_SIZE"), "{e}");
    }
}
