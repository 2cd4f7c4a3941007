//! One module per training job; each is a function from its flags to a model package.

pub mod imagenet;
pub mod mnist;
pub mod yolox;

/// A seed for runs that were given none: the clock mixed with the process id.
fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (std::process::id() as u64) << 32
}

/// Makes the package at `package` hold the weights the checkpoint `best` recorded before a
/// run goes on: a run that died while writing it (or a disk that filled up) may have left
/// none, or a damaged one. Removes the temporary files and folders a dead writer left in
/// `output` first; `rewrite` writes the package from `best` when it is needed.
pub(crate) fn repair_package(
    output: &std::path::Path,
    package: &std::path::Path,
    best: &std::path::Path,
    rewrite: impl FnOnce() -> Result<(), crate::error::TrainError>,
) -> Result<(), crate::error::TrainError> {
    crate::checkpoint::remove_stale_temporaries(output);
    kiln_models::package::recover_package(package)?;
    if !best.is_file() || kiln_models::package::verify_package(package).is_ok() {
        return Ok(());
    }
    rewrite()?;
    println!(
        "=> rewrote the model package '{}' from '{}'",
        package.display(),
        best.display()
    );
    Ok(())
}
