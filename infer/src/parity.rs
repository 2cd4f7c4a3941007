//! The train–serve parity check: a package's held-out images (`kiln.parity`, files in
//! `parity/`) go through this server's own decoding, preprocessing and model at load, and must
//! reproduce the class probabilities the training job computed for them before the server
//! is ready. A package that fails is refused, naming the image and the largest difference.

use std::path::Path;

use kiln_models::package::PARITY_DIR;
use kiln_models::ParitySample;

use crate::preprocess::Preprocessor;
use crate::registry::{ImageModel, Prediction};

/// The largest difference of a class probability that still counts as the same answer: f32
/// rounding of batched against single-image forward passes stays below 1e-5.
pub const TOLERANCE: f32 = 1e-4;

/// Runs every sample through `preprocessor` and `model`; the largest difference seen, or why
/// the package fails.
pub fn check(
    model: &dyn ImageModel,
    preprocessor: &Preprocessor,
    package: &Path,
    samples: &[ParitySample],
) -> Result<f32, String> {
    let mut largest = 0.0f32;
    for sample in samples {
        let path = package.join(PARITY_DIR).join(&sample.file);
        let name = format!("{PARITY_DIR}/{}", sample.file);
        let bytes = std::fs::read(&path).map_err(|e| format!("parity check: {}: {e}", path.display()))?;
        let prepared = preprocessor
            .prepare(&bytes)
            .map_err(|e| format!("parity check: {name}: this server cannot prepare the image: {e}"))?;
        let served = match model.predict(prepared.input, 1).pop() {
            Some(Prediction::Classes(p)) => p,
            _ => return Err(format!("parity check: {name}: the model gave no class probabilities")),
        };
        if served.len() != sample.probabilities.len() {
            return Err(format!(
                "parity check: {name}: the package records {} classes, the model answers {}",
                sample.probabilities.len(),
                served.len()
            ));
        }
        let (class, difference) = served
            .iter()
            .zip(&sample.probabilities)
            .map(|(s, p)| (s - p).abs())
            .enumerate()
            .fold(
                (0, 0.0f32),
                |best, (i, d)| if d > best.1 || d.is_nan() { (i, d) } else { best },
            );
        if !(difference <= TOLERANCE) {
            return Err(format!(
                "parity check failed: {name}: class {class}'s probability is {} in the package and {} served \
                 (largest difference {difference:.3e}, tolerance {TOLERANCE:.0e}): this server's decoding, \
                 preprocessing or model differs from the training job's",
                sample.probabilities[class], served[class]
            ));
        }
        largest = largest.max(difference);
    }
    Ok(largest)
}
