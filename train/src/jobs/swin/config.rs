//! Swin-Transformer's configuration as its `config.py` builds it: the official defaults, then
//! the YAML file given to `--cfg` (after the files its `BASE:` list names, relative to it,
//! recursively), then `--opts KEY VALUE` pairs, then the command-line flags main.py maps onto
//! config keys. As yacs does, a key the defaults lack is an error naming it; kiln also names
//! the file, and refuses a value whose type the default's cannot take.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use yaml_rust2::{Yaml, YamlLoader};

/// How deep `BASE:` files may nest (a cycle is an error long before this).
const MAX_BASE_DEPTH: usize = 16;

/// The whole configuration, with the official key names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE", deny_unknown_fields)]
pub struct SwinConfigFile {
    /// Base config files (merged before the file naming them).
    pub base: Vec<String>,
    /// Data settings.
    pub data: DataConfig,
    /// Model settings.
    pub model: ModelConfig,
    /// Training settings.
    pub train: TrainConfig,
    /// Augmentation settings.
    pub aug: AugConfig,
    /// Evaluation settings.
    pub test: TestConfig,
    /// SimMIM's AMP switch (accepted, unused).
    pub enable_amp: bool,
    /// Mixed precision on CUDA.
    pub amp_enable: bool,
    /// Apex's deprecated opt level (accepted, unused).
    pub amp_opt_level: String,
    /// Output folder; becomes `<OUTPUT>/<MODEL.NAME>/<TAG>`.
    pub output: String,
    /// Experiment tag.
    pub tag: String,
    /// Epochs between checkpoints.
    pub save_freq: usize,
    /// Batches between log lines.
    pub print_freq: usize,
    /// Random seed (plus the rank, as the official code seeds each process).
    pub seed: u64,
    /// Evaluate only.
    pub eval_mode: bool,
    /// Measure throughput only.
    pub throughput_mode: bool,
    /// The process's local rank.
    pub local_rank: usize,
    /// Fused window kernels (CUDA extension in the original; accepted, unused).
    pub fused_window_process: bool,
    /// Fused LayerNorm (apex in the original; accepted, unused).
    pub fused_layernorm: bool,
}

/// `DATA`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE", deny_unknown_fields)]
pub struct DataConfig {
    /// Batch size per device.
    pub batch_size: usize,
    /// Dataset root.
    pub data_path: String,
    /// `imagenet` (ImageFolder `train/`, `val/`) or `imagenet22K` (map files).
    pub dataset: String,
    /// Input side.
    pub img_size: usize,
    /// Resize filter: `bicubic` or `bilinear`.
    pub interpolation: String,
    /// Zipped dataset (not supported by kiln).
    pub zip_mode: bool,
    /// Cache mode of the zipped dataset (accepted, unused).
    pub cache_mode: String,
    /// Pinned host memory (accepted; kiln's loader manages its buffers).
    pub pin_memory: bool,
    /// Data-loading threads.
    pub num_workers: usize,
    /// SimMIM's mask patch size (accepted, unused).
    pub mask_patch_size: usize,
    /// SimMIM's mask ratio (accepted, unused).
    pub mask_ratio: f64,
}

/// `MODEL`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE", deny_unknown_fields)]
pub struct ModelConfig {
    /// Model family: `swin`.
    #[serde(rename = "TYPE")]
    pub kind: String,
    /// Model name (the output subfolder).
    pub name: String,
    /// Weights to fine-tune from.
    pub pretrained: String,
    /// Checkpoint to resume.
    pub resume: String,
    /// Classes (set from the data).
    pub num_classes: usize,
    /// Dropout (0 in every official config; kiln's model has none).
    pub drop_rate: f64,
    /// Stochastic depth of the last block.
    pub drop_path_rate: f64,
    /// Label smoothing.
    pub label_smoothing: f64,
    /// The Swin shape.
    pub swin: SwinShape,
}

/// `MODEL.SWIN`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE", deny_unknown_fields)]
pub struct SwinShape {
    /// Patch side.
    pub patch_size: usize,
    /// Input channels.
    pub in_chans: usize,
    /// First stage's channels.
    pub embed_dim: usize,
    /// Blocks per stage.
    pub depths: Vec<usize>,
    /// Heads per stage.
    pub num_heads: Vec<usize>,
    /// Window side.
    pub window_size: usize,
    /// MLP width over the channels.
    pub mlp_ratio: f64,
    /// Bias on the qkv projection.
    pub qkv_bias: bool,
    /// Attention scale override (none: head_dim^-0.5).
    pub qk_scale: Option<f64>,
    /// Absolute position embedding.
    pub ape: bool,
    /// LayerNorm after the patch embedding.
    pub patch_norm: bool,
}

/// `TRAIN`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE", deny_unknown_fields)]
pub struct TrainConfig {
    /// First epoch.
    pub start_epoch: usize,
    /// Epochs.
    pub epochs: usize,
    /// Warm-up epochs.
    pub warmup_epochs: usize,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f64,
    /// Learning rate at a total batch of 512.
    pub base_lr: f64,
    /// Warm-up start rate at a total batch of 512.
    pub warmup_lr: f64,
    /// Final rate at a total batch of 512.
    pub min_lr: f64,
    /// Gradient clipping norm (0: none).
    pub clip_grad: f64,
    /// Resume from the output folder's latest checkpoint.
    pub auto_resume: bool,
    /// Batches per optimizer update.
    pub accumulation_steps: usize,
    /// Activation checkpointing: each block recomputed in the backward pass.
    pub use_checkpoint: bool,
    /// Schedule.
    pub lr_scheduler: SchedulerConfig,
    /// Optimizer.
    pub optimizer: OptimizerConfig,
    /// SimMIM's layer decay (accepted, must be 1).
    pub layer_decay: f64,
    /// MoE settings (accepted, unused).
    pub moe: MoeConfig,
}

/// `TRAIN.LR_SCHEDULER`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE", deny_unknown_fields)]
pub struct SchedulerConfig {
    /// `cosine` (kiln's only schedule for this job).
    pub name: String,
    /// Step schedule's period (unused by cosine).
    pub decay_epochs: usize,
    /// Step schedule's factor (unused by cosine).
    pub decay_rate: f64,
    /// Warm-up before the cosine, not inside it.
    pub warmup_prefix: bool,
    /// Multi-step factor (unused by cosine).
    pub gamma: f64,
    /// Multi-step epochs (unused by cosine).
    pub multisteps: Vec<usize>,
}

/// `TRAIN.OPTIMIZER`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE", deny_unknown_fields)]
pub struct OptimizerConfig {
    /// `adamw`.
    pub name: String,
    /// Adam's ε.
    pub eps: f64,
    /// Adam's β₁, β₂.
    pub betas: Vec<f64>,
    /// SGD's momentum (unused by AdamW).
    pub momentum: f64,
}

/// `TRAIN.MOE`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE", deny_unknown_fields)]
pub struct MoeConfig {
    /// Save on the master only.
    pub save_master: bool,
}

/// `AUG`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE", deny_unknown_fields)]
pub struct AugConfig {
    /// Colour jitter (timm applies it only without AutoAugment).
    pub color_jitter: f64,
    /// timm's augmentation policy string, or `none`.
    pub auto_augment: String,
    /// Random-erasing probability.
    pub reprob: f64,
    /// Random-erasing fill: `pixel`, `rand` or `const`.
    pub remode: String,
    /// Random-erasing count.
    pub recount: usize,
    /// Mixup's Beta α (0: off).
    pub mixup: f64,
    /// CutMix's Beta α (0: off).
    pub cutmix: f64,
    /// CutMix's area ratio range (overrides its α).
    pub cutmix_minmax: Option<Vec<f64>>,
    /// Probability of mixing a batch at all.
    pub mixup_prob: f64,
    /// Probability of CutMix instead of Mixup when both are on.
    pub mixup_switch_prob: f64,
    /// `batch` (one mix per batch).
    pub mixup_mode: String,
}

/// `TEST`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE", deny_unknown_fields)]
pub struct TestConfig {
    /// Resize to `IMG_SIZE·256/224` and centre-crop (else a square resize).
    pub crop: bool,
    /// A sequential validation sampler.
    pub sequential: bool,
    /// Shuffle validation.
    pub shuffle: bool,
}

impl Default for SwinConfigFile {
    /// `config.py`'s `_C` (the keys of the Swin family; SimMIM's and MoE's own are kept so
    /// their files parse).
    fn default() -> Self {
        Self {
            base: vec![String::new()],
            data: DataConfig {
                batch_size: 128,
                data_path: String::new(),
                dataset: "imagenet".into(),
                img_size: 224,
                interpolation: "bicubic".into(),
                zip_mode: false,
                cache_mode: "part".into(),
                pin_memory: true,
                num_workers: 8,
                mask_patch_size: 32,
                mask_ratio: 0.6,
            },
            model: ModelConfig {
                kind: "swin".into(),
                name: "swin_tiny_patch4_window7_224".into(),
                pretrained: String::new(),
                resume: String::new(),
                num_classes: 1000,
                drop_rate: 0.0,
                drop_path_rate: 0.1,
                label_smoothing: 0.1,
                swin: SwinShape {
                    patch_size: 4,
                    in_chans: 3,
                    embed_dim: 96,
                    depths: vec![2, 2, 6, 2],
                    num_heads: vec![3, 6, 12, 24],
                    window_size: 7,
                    mlp_ratio: 4.0,
                    qkv_bias: true,
                    qk_scale: None,
                    ape: false,
                    patch_norm: true,
                },
            },
            train: TrainConfig {
                start_epoch: 0,
                epochs: 300,
                warmup_epochs: 20,
                weight_decay: 0.05,
                base_lr: 5e-4,
                warmup_lr: 5e-7,
                min_lr: 5e-6,
                clip_grad: 5.0,
                auto_resume: true,
                accumulation_steps: 1,
                use_checkpoint: false,
                lr_scheduler: SchedulerConfig {
                    name: "cosine".into(),
                    decay_epochs: 30,
                    decay_rate: 0.1,
                    warmup_prefix: true,
                    gamma: 0.1,
                    multisteps: Vec::new(),
                },
                optimizer: OptimizerConfig {
                    name: "adamw".into(),
                    eps: 1e-8,
                    betas: vec![0.9, 0.999],
                    momentum: 0.9,
                },
                layer_decay: 1.0,
                moe: MoeConfig { save_master: false },
            },
            aug: AugConfig {
                color_jitter: 0.4,
                auto_augment: "rand-m9-mstd0.5-inc1".into(),
                reprob: 0.25,
                remode: "pixel".into(),
                recount: 1,
                mixup: 0.8,
                cutmix: 1.0,
                cutmix_minmax: None,
                mixup_prob: 1.0,
                mixup_switch_prob: 0.5,
                mixup_mode: "batch".into(),
            },
            test: TestConfig {
                crop: true,
                sequential: false,
                shuffle: false,
            },
            enable_amp: false,
            amp_enable: true,
            amp_opt_level: String::new(),
            output: String::new(),
            tag: "default".into(),
            save_freq: 1,
            print_freq: 10,
            seed: 0,
            eval_mode: false,
            throughput_mode: false,
            local_rank: 0,
            fused_window_process: false,
            fused_layernorm: false,
        }
    }
}

/// What is wrong with a config file or override.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("{path}: {source}")]
    Io {
        /// The config file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file is not YAML, or not a mapping of keys.
    #[error("{path}: {msg}")]
    Syntax {
        /// The config file.
        path: PathBuf,
        /// The parser's message.
        msg: String,
    },
    /// A key or value the configuration cannot take.
    #[error("{source_name}: {key}: {msg}")]
    Key {
        /// The file, or `--opts`.
        source_name: String,
        /// The full dotted key.
        key: String,
        /// What is wrong.
        msg: String,
    },
}

impl SwinConfigFile {
    /// The defaults with `cfg` (and its bases) merged in, then the `--opts` pairs.
    pub fn load(cfg: &Path, opts: &[String]) -> Result<Self, ConfigError> {
        let mut tree = serde_json::to_value(Self::default()).expect("defaults serialise");
        merge_file(&mut tree, cfg, 0)?;
        merge_opts(&mut tree, opts)?;
        serde_json::from_value(tree).map_err(|e| ConfigError::Key {
            source_name: cfg.display().to_string(),
            key: String::new(),
            msg: e.to_string(),
        })
    }
}

/// Merges `path` into `tree`: its `BASE:` files first (relative to its folder), then itself.
fn merge_file(tree: &mut Value, path: &Path, depth: usize) -> Result<(), ConfigError> {
    if depth > MAX_BASE_DEPTH {
        return Err(ConfigError::Syntax {
            path: path.to_path_buf(),
            msg: format!("BASE files nest more than {MAX_BASE_DEPTH} deep (a cycle?)"),
        });
    }
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let syntax = |msg: String| ConfigError::Syntax {
        path: path.to_path_buf(),
        msg,
    };
    let docs = YamlLoader::load_from_str(&text).map_err(|e| syntax(e.to_string()))?;
    let file = match docs.into_iter().next() {
        None | Some(Yaml::Null) => Value::Object(Map::new()),
        Some(doc) => yaml_to_json(&doc).map_err(syntax)?,
    };
    let Value::Object(file) = file else {
        return Err(syntax("the file is not a mapping of config keys".into()));
    };
    let name = path.display().to_string();
    if let Some(bases) = file.get("BASE") {
        let bases = match bases {
            Value::Array(items) => items.clone(),
            other => vec![other.clone()],
        };
        let dir = path.parent().unwrap_or(Path::new(""));
        for base in bases {
            match base {
                Value::String(s) if s.is_empty() => {}
                Value::String(s) => merge_file(tree, &dir.join(s), depth + 1)?,
                other => {
                    return Err(ConfigError::Key {
                        source_name: name,
                        key: "BASE".into(),
                        msg: format!("expected a list of file names, found {other}"),
                    })
                }
            }
        }
    }
    let mut file = file;
    file.remove("BASE");
    merge_map(tree, file, "", &name)
}

/// Merges `--opts KEY VALUE …` (values parsed as YAML, as yacs `literal_eval`s them).
fn merge_opts(tree: &mut Value, opts: &[String]) -> Result<(), ConfigError> {
    let source_name = "--opts".to_string();
    if opts.len() % 2 != 0 {
        return Err(ConfigError::Key {
            source_name,
            key: opts.last().cloned().unwrap_or_default(),
            msg: "--opts takes KEY VALUE pairs; this key has no value".into(),
        });
    }
    for pair in opts.chunks(2) {
        let (key, text) = (&pair[0], &pair[1]);
        let value = YamlLoader::load_from_str(text)
            .ok()
            .and_then(|d| d.into_iter().next())
            .and_then(|y| yaml_to_json(&y).ok())
            .unwrap_or_else(|| Value::String(text.clone()));
        let mut nested = value;
        for part in key.split('.').rev() {
            let mut map = Map::new();
            map.insert(part.to_string(), nested);
            nested = Value::Object(map);
        }
        let Value::Object(map) = nested else { unreachable!() };
        merge_map(tree, map, "", &source_name)?;
    }
    Ok(())
}

/// Merges `update` into the object `tree` at `prefix`, checking each key and value type.
fn merge_map(tree: &mut Value, update: Map<String, Value>, prefix: &str, source: &str) -> Result<(), ConfigError> {
    for (key, value) in update {
        let full = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        let error = |msg: String| ConfigError::Key {
            source_name: source.to_string(),
            key: full.clone(),
            msg,
        };
        let Some(slot) = tree.get_mut(&key) else {
            return Err(error("non-existent config key".into()));
        };
        match (slot, value) {
            (slot @ Value::Object(_), Value::Object(inner)) => merge_map(slot, inner, &full, source)?,
            (Value::Object(_), other) => return Err(error(format!("is a section; cannot set it to {other}"))),
            (slot, value) => *slot = coerce(slot, value).map_err(error)?,
        }
    }
    Ok(())
}

/// `value` in the type of the default `old`; an error saying both otherwise.
fn coerce(old: &Value, value: Value) -> Result<Value, String> {
    let number = |v: &Value| match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    let mismatch = |want: &str, got: &Value| format!("expected {want}, found {got}");
    Ok(match old {
        Value::Bool(_) => match &value {
            Value::Bool(_) => value,
            Value::String(s) if matches!(s.as_str(), "True" | "true") => Value::Bool(true),
            Value::String(s) if matches!(s.as_str(), "False" | "false") => Value::Bool(false),
            other => return Err(mismatch("true or false", other)),
        },
        Value::Number(n) if n.is_f64() => match number(&value) {
            Some(x) if x.is_finite() => Value::from(x),
            _ => return Err(mismatch("a number", &value)),
        },
        Value::Number(_) => match &value {
            Value::Number(n) if n.is_u64() => value,
            other => return Err(mismatch("a whole number of at least 0", other)),
        },
        Value::String(_) => match value {
            Value::String(_) => value,
            // An unquoted number or flag where a string is expected, as yacs would keep it.
            Value::Number(n) => Value::String(n.to_string()),
            Value::Bool(b) => Value::String(if b { "True" } else { "False" }.into()),
            other => return Err(mismatch("a string", &other)),
        },
        Value::Array(_) => match value {
            Value::Array(_) => value,
            other => return Err(mismatch("a list", &other)),
        },
        // Keys whose default is None take what they are given.
        Value::Null | Value::Object(_) => value,
    })
}

/// A YAML document as JSON: mappings with string keys, sequences, scalars.
fn yaml_to_json(yaml: &Yaml) -> Result<Value, String> {
    Ok(match yaml {
        Yaml::Real(text) => match yaml.as_f64() {
            Some(x) => Value::from(x),
            None => Value::String(text.clone()),
        },
        Yaml::Integer(i) if *i >= 0 => Value::from(*i as u64),
        Yaml::Integer(i) => Value::from(*i as f64),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Array(items) => Value::Array(items.iter().map(yaml_to_json).collect::<Result<_, _>>()?),
        Yaml::Hash(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                let key = match k {
                    Yaml::String(s) => s.clone(),
                    Yaml::Integer(i) => i.to_string(),
                    other => return Err(format!("a mapping key must be a name, found {other:?}")),
                };
                out.insert(key, yaml_to_json(v)?);
            }
            Value::Object(out)
        }
        Yaml::Null => Value::Null,
        Yaml::Alias(_) | Yaml::BadValue => return Err("aliases and bad values are not supported".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The official `swin_base_patch4_window7_224_22k.yaml`, as shipped under `configs/`.
    #[test]
    fn the_shipped_22k_config_merges_over_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/swin/swin_base_patch4_window7_224_22k.yaml");
        let c = SwinConfigFile::load(&path, &[]).unwrap();
        assert_eq!(c.data.dataset, "imagenet22K");
        assert_eq!(c.model.name, "swin_base_patch4_window7_224_22k");
        assert_eq!((c.model.swin.embed_dim, c.model.swin.window_size), (128, 7));
        assert_eq!(c.model.swin.depths, [2, 2, 18, 2]);
        assert_eq!(c.model.swin.num_heads, [4, 8, 16, 32]);
        assert_eq!(
            (c.model.drop_path_rate, c.train.epochs, c.train.warmup_epochs),
            (0.2, 90, 5)
        );
        assert_eq!(
            (c.train.base_lr, c.train.warmup_lr, c.train.min_lr),
            (1.25e-4, 1.25e-7, 1.25e-6)
        );
        // Untouched defaults.
        assert_eq!((c.data.batch_size, c.data.img_size, c.train.clip_grad), (128, 224, 5.0));
        assert_eq!(c.aug.auto_augment, "rand-m9-mstd0.5-inc1");
        assert_eq!(c.train.optimizer.betas, [0.9, 0.999]);
    }

    #[test]
    fn bases_merge_first_and_opts_last() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "base/common.yaml",
            "TRAIN:\n  EPOCHS: 30\n  WEIGHT_DECAY: 1e-8\nTAG: base\n",
        );
        let cfg = write(
            dir.path(),
            "exp/run.yaml",
            "BASE: ['../base/common.yaml']\nTRAIN:\n  EPOCHS: 10\nMODEL:\n  SWIN:\n    DEPTHS: [ 2, 2 ]\n    NUM_HEADS: [1, 2]\n",
        );
        let opts: Vec<String> = [
            "TRAIN.BASE_LR",
            "1e-3",
            "AUG.MIXUP",
            "0",
            "DATA.INTERPOLATION",
            "bilinear",
        ]
        .map(String::from)
        .into();
        let c = SwinConfigFile::load(&cfg, &opts).unwrap();
        assert_eq!(c.train.epochs, 10, "the file overrides its base");
        assert_eq!(c.train.weight_decay, 1e-8, "1e-8 without a dot is still a number");
        assert_eq!(c.tag, "base");
        assert_eq!(c.model.swin.depths, [2, 2]);
        assert_eq!((c.train.base_lr, c.aug.mixup), (1e-3, 0.0));
        assert_eq!(c.data.interpolation, "bilinear");
    }

    #[test]
    fn bad_keys_and_values_name_the_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let case = |text: &str, opts: &[&str]| {
            let cfg = write(dir.path(), "c.yaml", text);
            let opts: Vec<String> = opts.iter().map(|s| s.to_string()).collect();
            SwinConfigFile::load(&cfg, &opts).unwrap_err().to_string()
        };
        let e = case("MODEL:\n  SWIN:\n    EMBED_DIMS: 96\n", &[]);
        assert!(
            e.contains("c.yaml") && e.contains("MODEL.SWIN.EMBED_DIMS") && e.contains("non-existent"),
            "{e}"
        );
        let e = case("TRAIN:\n  EPOCHS: ten\n", &[]);
        assert!(e.contains("TRAIN.EPOCHS") && e.contains("whole number"), "{e}");
        let e = case("TRAIN:\n  BASE_LR: [1]\n", &[]);
        assert!(e.contains("TRAIN.BASE_LR") && e.contains("a number"), "{e}");
        let e = case("DATA: 3\n", &[]);
        assert!(e.contains("DATA") && e.contains("section"), "{e}");
        let e = case("MODEL: [\n", &[]);
        assert!(e.contains("c.yaml"), "{e}");
        let e = case("", &["TRAIN.EPOCHS"]);
        assert!(e.contains("--opts") && e.contains("no value"), "{e}");
        let e = case("", &["TRAIN.NOPE", "1"]);
        assert!(e.contains("--opts") && e.contains("TRAIN.NOPE"), "{e}");
        let e = case("BASE: ['missing.yaml']\n", &[]);
        assert!(e.contains("missing.yaml"), "{e}");
        let e = case("BASE: ['c.yaml']\n", &[]);
        assert!(e.contains("nest"), "a file that is its own base: {e}");
    }
}
