//! Loading torchvision's pretrained ResNet weights (`resnet50-0676ba61.pth`, ...).

use std::fmt;
use std::path::Path;

use burn::prelude::*;
use burn::tensor::DType;
use burn_store::{ModuleSnapshot, ModuleStore, PyTorchToBurnAdapter, PytorchStore, SafetensorsStore};

use super::ResNet;
use crate::package::PackageError;
use crate::torch_keys::KeyScheme;

/// What [`load_pretrained`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PretrainedReport {
    /// Tensors copied from the checkpoint into the model.
    pub loaded: usize,
    /// Checkpoint entries skipped because burn has no counterpart (BatchNorm's
    /// `num_batches_tracked`).
    pub ignored: usize,
    /// `Some(classes of the checkpoint)` when its classifier `fc` has a different number of
    /// classes than the model: the model's freshly initialised `fc` was kept (fine-tuning).
    pub replaced_classifier: Option<usize>,
}

impl fmt::Display for PretrainedReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "loaded {} tensors", self.loaded)?;
        if self.ignored > 0 {
            write!(f, ", ignored {} num_batches_tracked entries", self.ignored)?;
        }
        if let Some(classes) = self.replaced_classifier {
            write!(f, ", kept a new classifier (the checkpoint's has {classes} classes)")?;
        }
        Ok(())
    }
}

/// Loads torchvision weights into `model` (built for the same architecture) from a local file:
/// a `.pth`/`.pt` written by `torch.save` (a state_dict, or a dict holding one under
/// `"state_dict"`; `module.` prefixes of `nn.DataParallel` are dropped) or a `.safetensors` with
/// the same keys. Every tensor must be present with the right shape, except the classifier:
/// when the checkpoint's `fc` has another number of classes, the model keeps its own freshly
/// initialised `fc` and the report says so. Errors name the file and the tensors.
pub fn load_pretrained<B: Backend>(
    mut model: ResNet<B>,
    path: &Path,
) -> Result<(ResNet<B>, PretrainedReport), PackageError> {
    if !path.is_file() {
        return Err(PackageError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "checkpoint file not found"),
        });
    }
    let extension = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    let report = match extension.as_deref() {
        Some("pth" | "pt") => {
            // PytorchStore always applies the PyTorch → burn adapter.
            let store = PytorchStore::from_file(path)
                .remap(KeyScheme::Torchvision.load_remapper())
                .skip_enum_variants(true)
                .validate(false)
                .allow_partial(true);
            apply(&mut model, store, path)?
        }
        Some("safetensors") => {
            let store = SafetensorsStore::from_file(path)
                .with_from_adapter(PyTorchToBurnAdapter)
                .remap(KeyScheme::Torchvision.load_remapper())
                .skip_enum_variants(true)
                .validate(false)
                .allow_partial(true);
            apply(&mut model, store, path)?
        }
        _ => {
            return Err(PackageError::Unsupported {
                path: path.to_path_buf(),
                msg: "pretrained weights must be a .pth/.pt file (torch.save) or a .safetensors file".into(),
            })
        }
    };
    Ok((model, report))
}

fn apply<B: Backend, S: ModuleStore>(
    model: &mut ResNet<B>,
    mut store: S,
    path: &Path,
) -> Result<PretrainedReport, PackageError> {
    let weights_err = |msg: String| PackageError::Weights {
        path: path.to_path_buf(),
        msg,
    };
    let snapshots = store.get_all_snapshots().map_err(|e| weights_err(e.to_string()))?;
    let not_f32: Vec<String> = snapshots
        .iter()
        .filter(|(key, s)| s.dtype != DType::F32 && !key.ends_with(".num_batches_tracked"))
        .map(|(key, s)| format!("{key} ({:?})", s.dtype))
        .collect();
    if !not_f32.is_empty() {
        return Err(weights_err(format!(
            "only float32 checkpoints are supported: {}",
            not_f32.join(", ")
        )));
    }
    let [features, classes] = model.fc.weight.dims();
    let replaced_classifier = match snapshots.get("fc.weight").map(|s| s.shape.as_slice()) {
        Some(&[theirs, f]) if f == features && theirs != classes => Some(theirs),
        _ => None,
    };
    let tolerated: &[&str] = if replaced_classifier.is_some() {
        &["fc.weight", "fc.bias"]
    } else {
        &[]
    };
    let result = model.load_from(&mut store).map_err(|e| weights_err(e.to_string()))?;
    let summary = KeyScheme::Torchvision
        .check_load(&result, tolerated)
        .map_err(weights_err)?;
    Ok(PretrainedReport {
        loaded: summary.loaded,
        ignored: summary.ignored,
        replaced_classifier,
    })
}
