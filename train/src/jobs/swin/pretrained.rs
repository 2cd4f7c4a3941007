//! `--pretrained`: official Swin weights into the run's model, as the official
//! `load_pretrained` does it ([`kiln_models::load_swin_pretrained`]: derived buffers dropped,
//! bias tables and position embeddings resized bicubically, a 22K head mapped to 1K classes,
//! any other head re-initialised to zero), with its report logged.

use std::path::Path;

use burn::tensor::backend::AutodiffBackend;
use kiln_models::{load_swin_pretrained, SwinTransformer};

use super::log::RunLog;
use crate::error::TrainError;

/// `model` with the weights of the official checkpoint at `path`.
pub fn load<B: AutodiffBackend>(
    model: SwinTransformer<B>,
    path: &Path,
    log: &mut RunLog,
) -> Result<SwinTransformer<B>, TrainError> {
    log.line(&format!(
        "==============> Loading weight {} for fine-tuning......",
        path.display()
    ));
    let (model, report) = load_swin_pretrained(model, path, None)?;
    log.line(&format!("{report}"));
    log.line(&format!("=> loaded successfully '{}'", path.display()));
    Ok(model)
}
