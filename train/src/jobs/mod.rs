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
