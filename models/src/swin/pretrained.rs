//! Loading the official Swin Transformer checkpoints (`swin_tiny_patch4_window7_224.pth`, the
//! ImageNet-22K `…_22k.pth`, …) for fine-tuning, as microsoft/Swin-Transformer's
//! `utils.load_pretrained` does: derived buffers dropped, relative position bias tables and the
//! absolute position embedding resized bicubically to the model's window and input size, and
//! the classifier mapped from ImageNet-22K to ImageNet-1K or re-initialised to zero.
//!
//! `map22kto1k.txt` (the ImageNet-1K classes' rows of the 22K classifier, one per line) is the
//! official repository's `data/map22kto1k.txt`, © Microsoft Corporation, under the MIT License.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::OnceLock;

use burn::module::ParamId;
use burn::prelude::*;
use burn::tensor::DType;
use burn_store::pytorch::PytorchReader;
use burn_store::{BurnToPyTorchAdapter, ModuleSnapshot, PyTorchToBurnAdapter, TensorSnapshot};

use super::SwinTransformer;
use crate::package::PackageError;

/// The official `data/map22kto1k.txt`.
const MAP_22K_TO_1K: &str = include_str!("map22kto1k.txt");

/// Classes of ImageNet-22K's classifier in the official checkpoints.
pub const CLASSES_22K: usize = 21841;

/// Checkpoint buffers the model derives from its configuration (key substrings, as the
/// official code matches them).
const DERIVED_BUFFERS: [&str; 3] = ["relative_position_index", "relative_coords_table", "attn_mask"];

/// How many names of each kind an error message lists.
const LISTED: usize = 8;

/// The ImageNet-22K classifier row of each ImageNet-1K class (1,000 entries), the official
/// `data/map22kto1k.txt`.
pub fn imagenet_22k_to_1k() -> &'static [usize] {
    static MAP: OnceLock<Vec<usize>> = OnceLock::new();
    MAP.get_or_init(|| {
        MAP_22K_TO_1K
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|l| l.parse().expect("map22kto1k.txt holds one class index per line"))
            .collect()
    })
}

/// A tensor the load resized bicubically: `from × from` positions to `to × to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resized {
    /// The state-dict key.
    pub key: String,
    /// The checkpoint's grid side (`2·window − 1` for a bias table, patches per side for APE).
    pub from: usize,
    /// The model's grid side.
    pub to: usize,
}

/// What happened to the classifier `head`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadLoad {
    /// Same class count: loaded as it is.
    Loaded,
    /// The class map picked the model's rows from the checkpoint's `file_classes` rows (the
    /// 22K → 1K map by default).
    Mapped {
        /// Classes of the checkpoint's head.
        file_classes: usize,
    },
    /// Another class count and no map: weight and bias set to zero (the official re-init).
    Reinitialised {
        /// Classes of the checkpoint's head.
        file_classes: usize,
    },
    /// The checkpoint has no `head.weight`/`head.bias`: the model keeps its own.
    NotInFile,
}

/// What [`load_swin_pretrained`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwinPretrainedReport {
    /// Tensors copied from the checkpoint into the model (resized and mapped ones included).
    pub loaded: usize,
    /// Derived buffers dropped (`relative_position_index`, `relative_coords_table`,
    /// `attn_mask`).
    pub dropped_buffers: usize,
    /// Bias tables and the absolute position embedding resized to the model's grid.
    pub resized: Vec<Resized>,
    /// Bias tables whose head count differs from the model's: the model keeps its own.
    pub kept_tables: Vec<String>,
    /// The classifier.
    pub head: HeadLoad,
    /// Model tensors the checkpoint lacks (they keep the model's initialisation).
    pub missing: Vec<String>,
    /// Checkpoint tensors the model has no place for (ignored).
    pub unexpected: Vec<String>,
}

impl fmt::Display for SwinPretrainedReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "loaded {} tensors", self.loaded)?;
        if self.dropped_buffers > 0 {
            write!(f, ", dropped {} derived buffers", self.dropped_buffers)?;
        }
        if !self.resized.is_empty() {
            let items: Vec<String> = self
                .resized
                .iter()
                .map(|r| format!("{} {}×{} → {}×{}", r.key, r.from, r.from, r.to, r.to))
                .collect();
            write!(f, ", resized bicubically: {}", list(&items))?;
        }
        if !self.kept_tables.is_empty() {
            write!(
                f,
                ", kept the model's own bias tables (other head counts): {}",
                list(&self.kept_tables)
            )?;
        }
        match self.head {
            HeadLoad::Loaded => {}
            HeadLoad::Mapped { file_classes } => {
                write!(f, ", mapped the head's {file_classes} classes to the model's")?
            }
            HeadLoad::Reinitialised { file_classes } => write!(
                f,
                ", re-initialised the head to zero (the checkpoint's has {file_classes} classes)"
            )?,
            HeadLoad::NotInFile => write!(f, ", the checkpoint has no head")?,
        }
        if !self.missing.is_empty() {
            write!(
                f,
                "; missing from the file (left as initialised): {}",
                list(&self.missing)
            )?;
        }
        if !self.unexpected.is_empty() {
            write!(f, "; not in the model (ignored): {}", list(&self.unexpected))?;
        }
        Ok(())
    }
}

/// Loads an official Swin checkpoint into `model` for fine-tuning, as the official
/// `load_pretrained`:
///
/// - the file is `torch.save({'model': state_dict})` (the official layout; other top-level
///   tensors are ignored) or a bare state dict. A full training checkpoint
///   (`ckpt_epoch_*.pth`, with the optimizer's state) is refused by burn-store's pickle reader
///   (integer dict keys): its `model` entry must be saved alone first;
/// - `relative_position_index`, `relative_coords_table` and `attn_mask` entries are dropped
///   (the model derives them);
/// - a `relative_position_bias_table` `[L1, nH]` of another window size is resized to the
///   model's `[L2, nH]` by [`bicubic_resize`] of its `√L1 × √L1` grid; one with another head
///   count is not loaded (the model keeps its own table; the official code would stop with a
///   size mismatch there);
/// - an `absolute_pos_embed` `[1, L1, C]` of another input size is resized the same way;
/// - a `head` with another class count than the model's: `class_map` (the checkpoint's row
///   of each model class), or, when it is `None`, [`imagenet_22k_to_1k`] for a 21,841-class
///   head and a 1,000-class model, selects the rows; with neither, the model's head weight and
///   bias are set to zero.
///
/// Like the official `strict=False` load, model tensors absent from the file keep their
/// initialisation and file tensors the model lacks are ignored; both are listed in the report.
/// Errors (naming the file): an unreadable file, a model tensor stored as another type than
/// float32, one whose shape differs from the model's in a way the rules above do not resolve
/// (named with both shapes, PyTorch layout), a bad class map, or a file without any tensor of
/// the model.
pub fn load_swin_pretrained<B: Backend>(
    mut model: SwinTransformer<B>,
    path: &Path,
    class_map: Option<&[usize]>,
) -> Result<(SwinTransformer<B>, SwinPretrainedReport), PackageError> {
    if !path.is_file() {
        return Err(PackageError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "checkpoint file not found"),
        });
    }
    let err = |msg: String| PackageError::Weights {
        path: path.to_path_buf(),
        msg,
    };
    let reader = PytorchReader::new(path).map_err(|e| {
        let msg = e.to_string();
        // burn-store's pickle reader refuses the integer keys of an optimizer's state.
        if msg.contains("dict key must be a string") {
            err(format!(
                "{msg} (a training checkpoint with optimizer state? save its model alone: \
                 torch.save({{'model': torch.load(f)['model']}}, out))"
            ))
        } else {
            err(msg)
        }
    })?;
    let mut file = state_dict(reader.into_tensors());

    // The model's tensors under PyTorch's names and in PyTorch's layout.
    let wanted: BTreeMap<String, Vec<usize>> = model
        .collect(None, Some(Box::new(BurnToPyTorchAdapter)), true)
        .iter()
        .map(|s| (s.full_path(), s.shape.to_vec()))
        .collect();

    let before = file.len();
    file.retain(|key, _| !DERIVED_BUFFERS.iter().any(|b| key.contains(b)));
    let dropped_buffers = before - file.len();

    let not_f32: Vec<String> = file
        .iter()
        .filter(|(key, s)| s.dtype != DType::F32 && wanted.contains_key(*key))
        .map(|(key, s)| format!("{key} ({:?})", s.dtype))
        .collect();
    if !not_f32.is_empty() {
        return Err(err(format!(
            "only float32 checkpoints are supported: {}",
            list(&not_f32)
        )));
    }

    let mut resized = Vec::new();
    let mut kept_tables = Vec::new();
    let tables: Vec<String> = file
        .keys()
        .filter(|k| k.contains("relative_position_bias_table"))
        .cloned()
        .collect();
    for key in tables {
        let (Some(want), have) = (wanted.get(&key), shape(&file[&key])) else {
            continue;
        };
        let ([l1, h1], [l2, h2]) = (have.as_slice(), want.as_slice()) else {
            continue;
        };
        if h1 != h2 {
            file.remove(&key);
            kept_tables.push(key);
        } else if l1 != l2 {
            let (s1, s2) = (side(&key, *l1).map_err(&err)?, side(&key, *l2).map_err(&err)?);
            let values = floats(&file[&key], &key).map_err(&err)?;
            let data = TensorData::new(bicubic_resize(&values, *h1, s1, s2), [*l2, *h2]);
            file.insert(key.clone(), snapshot(&key, data));
            resized.push(Resized { key, from: s1, to: s2 });
        }
    }

    let ape = "absolute_pos_embed";
    if let (Some(snap), Some(want)) = (file.get(ape), wanted.get(ape)) {
        if let ([1, l1, c1], [1, l2, c2]) = (shape(snap).as_slice(), want.as_slice()) {
            if c1 == c2 && l1 != l2 {
                let (s1, s2) = (side(ape, *l1).map_err(&err)?, side(ape, *l2).map_err(&err)?);
                let values = floats(snap, ape).map_err(&err)?;
                let data = TensorData::new(bicubic_resize(&values, *c1, s1, s2), [1, *l2, *c2]);
                file.insert(ape.to_string(), snapshot(ape, data));
                resized.push(Resized {
                    key: ape.to_string(),
                    from: s1,
                    to: s2,
                });
            }
        }
    }

    let model_classes = wanted.get("head.bias").map(|s| s[0]);
    let file_classes = file
        .get("head.bias")
        .or_else(|| file.get("head.weight"))
        .map(|s| shape(s)[0]);
    let mut zero_head = false;
    let head = match (file_classes, model_classes) {
        (None, _) => HeadLoad::NotInFile,
        (Some(n1), Some(n2)) if n1 != n2 => {
            let map = class_map.or_else(|| (n1 == CLASSES_22K && n2 == 1000).then(imagenet_22k_to_1k));
            match map {
                Some(map) => {
                    check_map(map, n1, n2).map_err(&err)?;
                    for key in ["head.weight", "head.bias"] {
                        if let Some(snap) = file.get(key) {
                            let data = select_rows(snap, key, map).map_err(&err)?;
                            file.insert(key.to_string(), snapshot(key, data));
                        }
                    }
                    HeadLoad::Mapped { file_classes: n1 }
                }
                None => {
                    file.remove("head.weight");
                    file.remove("head.bias");
                    zero_head = true;
                    HeadLoad::Reinitialised { file_classes: n1 }
                }
            }
        }
        _ => HeadLoad::Loaded,
    };

    let mut mismatched = Vec::new();
    let mut unexpected = Vec::new();
    for (key, snap) in &file {
        match wanted.get(key) {
            Some(want) if shape(snap) != *want => {
                mismatched.push(format!("{key} (file {:?}, model {want:?})", shape(snap)))
            }
            Some(_) => {}
            None => unexpected.push(key.clone()),
        }
    }
    if !mismatched.is_empty() {
        return Err(err(format!(
            "tensor shapes differ from the model's (PyTorch layout): {}",
            list(&mismatched)
        )));
    }
    let head_keys = ["head.weight", "head.bias"];
    let missing: Vec<String> = wanted
        .keys()
        .filter(|k| !file.contains_key(*k) && !kept_tables.contains(*k))
        .filter(|k| !(zero_head && head_keys.contains(&k.as_str())))
        .cloned()
        .collect();
    let snapshots: Vec<TensorSnapshot> = file
        .into_iter()
        .filter(|(key, _)| wanted.contains_key(key))
        .map(|(_, s)| s)
        .collect();
    if snapshots.is_empty() {
        return Err(err(format!(
            "no tensor of this Swin model in the file (it has {}: {})",
            unexpected.len(),
            list(&unexpected)
        )));
    }
    let result = model.apply(snapshots, None, Some(Box::new(PyTorchToBurnAdapter)), true);
    if !result.errors.is_empty() {
        let errors: Vec<String> = result.errors.iter().map(|e| e.to_string()).collect();
        return Err(err(list(&errors)));
    }
    if zero_head {
        model.head.weight = model.head.weight.map(|w| w.zeros_like());
        model.head.bias = model.head.bias.map(|b| b.map(|b| b.zeros_like()));
    }
    let report = SwinPretrainedReport {
        loaded: result.applied.len(),
        dropped_buffers,
        resized,
        kept_tables,
        head,
        missing,
        unexpected,
    };
    Ok((model, report))
}

/// Resizes a `from × from` grid of `channels`-vectors (`[from·from, channels]`, positions
/// row-major, channels last: a bias table `[L, nH]`, an `absolute_pos_embed` `[1, L, C]`) to
/// `to × to`, as `torch.nn.functional.interpolate(mode='bicubic', align_corners=False)` of the
/// `[channels, from, from]` planes: output position `o` samples the input at
/// `(o + ½)·from/to − ½`, weighting the 4 nearest positions of each axis with the cubic
/// convolution kernel of `A = −0.75`, indices beyond the border clamped to it.
pub fn bicubic_resize(grid: &[f32], channels: usize, from: usize, to: usize) -> Vec<f32> {
    assert_eq!(grid.len(), from * from * channels, "a [from², channels] grid");
    let taps: Vec<([usize; 4], [f64; 4])> = (0..to)
        .map(|o| {
            let real = (o as f64 + 0.5) * from as f64 / to as f64 - 0.5;
            let floor = real.floor();
            let t = real - floor;
            let index = |k: i64| (floor as i64 - 1 + k).clamp(0, from as i64 - 1) as usize;
            ([index(0), index(1), index(2), index(3)], cubic_weights(t))
        })
        .collect();
    let mut out = vec![0f32; to * to * channels];
    for (oy, (ys, wy)) in taps.iter().enumerate() {
        for (ox, (xs, wx)) in taps.iter().enumerate() {
            for c in 0..channels {
                let mut sum = 0f64;
                for (y, wy) in ys.iter().zip(wy) {
                    let row: f64 = xs
                        .iter()
                        .zip(wx)
                        .map(|(x, wx)| wx * grid[(y * from + x) * channels + c] as f64)
                        .sum();
                    sum += wy * row;
                }
                out[(oy * to + ox) * channels + c] = sum as f32;
            }
        }
    }
    out
}

/// The cubic convolution weights of the samples at offsets −1, 0, 1, 2 from a point `t ∈ [0, 1)`
/// past the first (Keys' kernel with PyTorch's `A = −0.75`).
fn cubic_weights(t: f64) -> [f64; 4] {
    const A: f64 = -0.75;
    let near = |x: f64| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let far = |x: f64| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
}

/// The state dict of a checkpoint's flattened tensors: those under `model.` (the official
/// `{'model': state_dict}`) with the prefix removed, or all of them (a bare state dict).
fn state_dict(tensors: impl IntoIterator<Item = (String, TensorSnapshot)>) -> BTreeMap<String, TensorSnapshot> {
    let all: BTreeMap<String, TensorSnapshot> = tensors.into_iter().collect();
    let wrapped = all.keys().any(|k| k.starts_with("model."));
    all.into_iter()
        .filter_map(|(key, mut snap)| {
            let key = if wrapped {
                key.strip_prefix("model.")?.to_string()
            } else {
                key
            };
            snap.path_stack = Some(key.split('.').map(String::from).collect());
            Some((key, snap))
        })
        .collect()
}

fn shape(snap: &TensorSnapshot) -> Vec<usize> {
    snap.shape.to_vec()
}

/// A checkpoint tensor of PyTorch key `key` holding `data`.
fn snapshot(key: &str, data: TensorData) -> TensorSnapshot {
    let path = key.split('.').map(String::from).collect();
    TensorSnapshot::from_data(data, path, Vec::new(), ParamId::new())
}

fn floats(snap: &TensorSnapshot, key: &str) -> Result<Vec<f32>, String> {
    snap.to_data()
        .map_err(|e| format!("{key}: {e}"))?
        .to_vec::<f32>()
        .map_err(|e| format!("{key}: {e:?}"))
}

/// The side of a square grid of `len` positions.
fn side(key: &str, len: usize) -> Result<usize, String> {
    let s = (len as f64).sqrt().round() as usize;
    if s * s == len {
        Ok(s)
    } else {
        Err(format!("{key}: {len} positions are not a square grid"))
    }
}

fn check_map(map: &[usize], file_classes: usize, model_classes: usize) -> Result<(), String> {
    if map.len() != model_classes {
        return Err(format!(
            "the class map has {} entries, the model's head {model_classes} classes",
            map.len()
        ));
    }
    match map.iter().find(|&&row| row >= file_classes) {
        Some(row) => Err(format!(
            "the class map names row {row}, the checkpoint's head has {file_classes} classes"
        )),
        None => Ok(()),
    }
}

/// Rows `map` of a `[classes, …]` tensor.
fn select_rows(snap: &TensorSnapshot, key: &str, map: &[usize]) -> Result<TensorData, String> {
    let mut dims = shape(snap);
    let values = floats(snap, key)?;
    let row: usize = dims[1..].iter().product();
    let selected: Vec<f32> = map
        .iter()
        .flat_map(|&r| values[r * row..(r + 1) * row].iter().copied())
        .collect();
    dims[0] = map.len();
    Ok(TensorData::new(selected, dims))
}

fn list(names: &[String]) -> String {
    let shown = names[..names.len().min(LISTED)].join(", ");
    match names.len().saturating_sub(LISTED) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}
