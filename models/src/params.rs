//! Parameter counts as PyTorch reports them.

use burn::prelude::*;
use burn_store::ModuleSnapshot;

/// Trainable parameters of `module`, as PyTorch counts them: [`Module::num_params`] also
/// counts BatchNorm's running mean and variance, which are buffers in PyTorch.
pub(crate) fn trainable_params<B: Backend, M: ModuleSnapshot<B>>(module: &M) -> usize {
    module
        .collect(None, None, false)
        .iter()
        .filter(|s| {
            let path = s.full_path();
            !path.ends_with(".running_mean") && !path.ends_with(".running_var")
        })
        .map(|s| s.shape.num_elements())
        .sum()
}
