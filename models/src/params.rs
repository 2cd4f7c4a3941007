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

/// `module` with every parameter initialised now, in declaration order. burn initialises a
/// parameter lazily, drawing from the backend's random generator on first use; a copy of a
/// module made before that (mixed precision's f16 copy, an EMA, a broadcast to other workers)
/// draws its own different values, and the draws follow the order of use. kiln's networks
/// call this last in their constructors, so a seed gives one network whatever runs it.
pub(crate) fn materialized<B: Backend, M: Module<B>>(module: M) -> M {
    module.visit(&mut Materialize);
    module
}

struct Materialize;

impl<B: Backend> burn::module::ModuleVisitor<B> for Materialize {
    fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<B, D>>) {
        let _ = param.val();
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;
    use burn::nn::LinearConfig;

    use super::*;

    #[test]
    fn a_materialized_module_and_its_copies_hold_the_same_values() {
        let device = Default::default();
        Flex::seed(&device, 7);
        let lazy = LinearConfig::new(4, 3).init::<Flex>(&device);
        // A copy of a lazy module initialises on its own: other values.
        let copy = lazy.clone();
        let values = |m: &burn::nn::Linear<Flex>| m.weight.val().into_data().to_vec::<f32>().unwrap();
        assert_ne!(values(&copy), values(&lazy));

        Flex::seed(&device, 7);
        let eager = materialized(LinearConfig::new(4, 3).init::<Flex>(&device));
        let copy = eager.clone();
        assert_eq!(values(&copy), values(&eager));
    }
}
