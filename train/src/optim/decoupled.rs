//! AdamW's decoupled weight decay for a chosen group of parameters, as PyTorch's `AdamW`
//! applies it to the parameter group that has `weight_decay` (Swin-Transformer's
//! `set_weight_decay` leaves norms, biases and position tables out): each parameter `p` of
//! the group becomes `p · (1 − lr · decay)` before the Adam update, which is then computed
//! from the gradient alone. Run burn's `AdamW` with zero decay after [`DecayGroup::apply`].

use std::collections::HashSet;

use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

/// The parameters that take weight decay, by id.
#[derive(Debug, Clone, Default)]
pub struct DecayGroup {
    ids: HashSet<ParamId>,
}

impl DecayGroup {
    /// The float parameters of `model` for which `takes(path, rank)` holds; `path` is the
    /// parameter's dotted state-dict key (`layers.0.blocks.1.attn.qkv.weight`).
    pub fn select<B: Backend, M: Module<B>>(model: &M, takes: impl Fn(&str, usize) -> bool) -> Self {
        let mut visitor = Select {
            path: Vec::new(),
            takes,
            ids: HashSet::new(),
        };
        model.visit(&mut visitor);
        Self { ids: visitor.ids }
    }

    /// Whether the parameter `id` decays.
    pub fn contains(&self, id: &ParamId) -> bool {
        self.ids.contains(id)
    }

    /// How many parameters decay.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether none does.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// `model` with every parameter of the group multiplied by `1 − rate` (`rate` = learning
    /// rate × weight decay); a zero rate returns it unchanged.
    pub fn apply<B: AutodiffBackend, M: AutodiffModule<B>>(&self, model: M, rate: f64) -> M {
        if rate == 0.0 || self.ids.is_empty() {
            return model;
        }
        model.map(&mut Shrink {
            group: self,
            factor: 1.0 - rate,
        })
    }
}

struct Select<F> {
    path: Vec<String>,
    takes: F,
    ids: HashSet<ParamId>,
}

impl<B: Backend, F: Fn(&str, usize) -> bool> ModuleVisitor<B> for Select<F> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if (self.takes)(&self.path.join("."), D) {
            self.ids.insert(param.id);
        }
    }
}

struct Shrink<'a> {
    group: &'a DecayGroup,
    factor: f64,
}

impl<B: AutodiffBackend> ModuleMapper<B> for Shrink<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        if !self.group.contains(&param.id) {
            return param;
        }
        let (id, tensor, mapper) = param.consume();
        let require_grad = tensor.is_require_grad();
        let mut shrunk = Tensor::from_inner(tensor.inner().mul_scalar(self.factor));
        if require_grad {
            shrunk = shrunk.require_grad();
        }
        Param::from_mapped_value(id, shrunk, mapper)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
    use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
    use burn_flex::Flex;

    type B = Autodiff<Flex>;

    #[derive(Module, Debug)]
    struct Tiny<B: Backend> {
        fc: Linear<B>,
        norm: LayerNorm<B>,
    }

    fn floats<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().to_vec().unwrap()
    }

    #[test]
    fn the_group_is_chosen_by_path_and_rank() {
        let device = Default::default();
        let model = Tiny::<B> {
            fc: LinearConfig::new(2, 2).init(&device),
            norm: LayerNormConfig::new(2).init(&device),
        };
        let seen = std::cell::RefCell::new(Vec::new());
        let group = DecayGroup::select(&model, |path, rank| {
            seen.borrow_mut().push((path.to_string(), rank));
            path == "fc.weight"
        });
        let seen = seen.into_inner();
        assert!(group.contains(&model.fc.weight.id));
        assert!(!group.contains(&model.fc.bias.as_ref().unwrap().id));
        assert_eq!(group.len(), 1);
        assert!(seen.contains(&("fc.weight".into(), 2)), "{seen:?}");
        assert!(
            seen.contains(&("norm.gamma".into(), 1)) || seen.contains(&("norm.weight".into(), 1)),
            "{seen:?}"
        );
    }

    /// One AdamW step by hand: with decay 0.1 and lr 0.5 a decaying weight `w` with gradient
    /// `g` becomes `w·(1 − 0.05) − 0.5 · ĝ/(√v̂ + ε)`, and the first step's `ĝ/√v̂` is
    /// `sign(g)`: `w·0.95 − 0.5·sign(g)`. Parameters outside the group move by `−0.5·sign(g)`.
    #[test]
    fn decay_then_adam_is_torchs_adamw() {
        let device = Default::default();
        let model = Tiny::<B> {
            fc: LinearConfig::new(2, 2).init(&device),
            norm: LayerNormConfig::new(2).init(&device),
        };
        let w = floats(model.fc.weight.val());
        let b = floats(model.fc.bias.as_ref().unwrap().val());
        let x = Tensor::<B, 2>::from_floats([[1.0, -2.0]], &device);
        let grads = GradientsParams::from_grads(model.fc.forward(x).sum().backward(), &model);
        let group = DecayGroup::select(&model, |path, _| path == "fc.weight");
        let mut adam = AdamWConfig::new().with_weight_decay(0.0).init::<B, Tiny<B>>();
        let model = group.apply(model, 0.5 * 0.1);
        let model = adam.step(0.5, model, grads);
        // dW[i][j] = x[i] (burn's weight is [in, out]): rows +1 and −2.
        let want_w: Vec<f32> = w
            .iter()
            .enumerate()
            .map(|(k, w)| w * 0.95 - 0.5 * if k < 2 { 1.0 } else { -1.0 })
            .collect();
        for (got, want) in floats(model.fc.weight.val()).iter().zip(&want_w) {
            assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        }
        for (got, b) in floats(model.fc.bias.as_ref().unwrap().val()).iter().zip(&b) {
            assert!(
                (got - (b - 0.5)).abs() < 1e-5,
                "bias has no decay: {got} vs {}",
                b - 0.5
            );
        }
        assert!(model.fc.weight.val().is_require_grad());
    }
}
