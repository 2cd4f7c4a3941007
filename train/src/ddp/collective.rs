//! One worker's handle on the run's collective: broadcast of rank 0's module state, gradient
//! averaging and metric sums, all through burn-collective's all-reduce. A single-worker run
//! gets a handle whose operations are identities and cost nothing. The handle is typed by the
//! backend its worker registered (the inner backend of an autodiff one): burn-collective keeps
//! one collective per backend type, so an operation on any other type would never meet its
//! peers.

use std::marker::PhantomData;
use std::sync::Arc;

use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::TensorPrimitive;
use burn_collective::{all_reduce, CollectiveError, PeerId, ReduceOperation};

use kiln_data::EpochSampler;

use super::watchdog::Watchdog;
use crate::error::TrainError;

/// A collective operation that failed.
#[derive(Debug, thiserror::Error)]
#[error("rank {rank}: {what} failed: {cause}")]
pub struct DistError {
    /// The global rank that saw the failure.
    pub rank: usize,
    /// The operation.
    pub what: &'static str,
    /// burn-collective's error, in words.
    pub cause: String,
}

/// A worker's place in the run and its way to talk to the others, through backend `R`.
#[derive(Debug)]
pub struct Collective<R: Backend> {
    rank: usize,
    world: usize,
    local_workers: usize,
    watchdog: Option<Arc<Watchdog>>,
    backend: PhantomData<fn() -> R>,
}

impl<R: Backend> Clone for Collective<R> {
    fn clone(&self) -> Self {
        Self {
            watchdog: self.watchdog.clone(),
            backend: PhantomData,
            ..*self
        }
    }
}

impl<R: Backend> Collective<R> {
    /// The only worker of a run.
    pub fn single() -> Self {
        Self {
            rank: 0,
            world: 1,
            local_workers: 1,
            watchdog: None,
            backend: PhantomData,
        }
    }

    /// Global rank `rank` of `world` workers, `local_workers` of them on this node.
    pub(super) fn member(rank: usize, world: usize, local_workers: usize, watchdog: Arc<Watchdog>) -> Self {
        Self {
            rank,
            world,
            local_workers,
            watchdog: Some(watchdog),
            backend: PhantomData,
        }
    }

    /// This worker's global rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of workers in the run.
    pub fn world(&self) -> usize {
        self.world
    }

    /// A node-level count split over this node's workers, as the guide does (`--batch-size`
    /// rounds down, loader threads `-j` round up); `flag` names it in the error when the
    /// split leaves nothing.
    pub fn per_device(&self, total: usize, round_up: bool, flag: &str) -> Result<usize, TrainError> {
        let share = if round_up {
            total.div_ceil(self.local_workers)
        } else {
            total / self.local_workers
        };
        if share == 0 && total > 0 {
            return Err(TrainError::Flag(format!(
                "{flag} {total} is smaller than this node's {} workers",
                self.local_workers
            )));
        }
        Ok(share)
    }

    /// This worker's share of `total` split over every worker of every node (YOLOX's
    /// `batch_size // world_size`); an error naming `flag` when that leaves it nothing.
    pub fn per_worker(&self, total: usize, flag: &str) -> Result<usize, TrainError> {
        let share = total / self.world;
        if share == 0 {
            return Err(TrainError::Flag(format!(
                "{flag} {total} is smaller than the {} workers of all nodes",
                self.world
            )));
        }
        Ok(share)
    }

    /// `sampler` restricted to this worker's shard (DistributedSampler's
    /// `num_replicas = world`, `rank = rank`).
    pub fn shard(&self, sampler: EpochSampler) -> Result<EpochSampler, TrainError> {
        sampler
            .sharded(self.world, self.rank)
            .map_err(|e| TrainError::Flag(e.to_string()))
    }

    /// Whether this worker is global rank 0, the one that logs and writes files.
    pub fn is_root(&self) -> bool {
        self.rank == 0
    }

    /// Replaces every float tensor of `module` (parameters and running statistics) by rank 0's,
    /// as DDP does when it wraps a model.
    pub fn sync_module<B, M>(&self, module: M) -> Result<M, DistError>
    where
        B: AutodiffBackend<InnerBackend = R>,
        M: AutodiffModule<B>,
    {
        if self.world == 1 {
            return Ok(module);
        }
        // burn's `RunningState` (BatchNorm's running statistics) keeps a training step's update
        // pending beside its value until `valid`/`into_record` folds it in, and `visit`/`map`
        // see only the value: without this round trip every rank would broadcast stale
        // statistics and then fold its own pending ones back in over rank 0's.
        let module = M::from_inner(module.valid());
        let mut gather = Flatten::<B>::default();
        module.visit(&mut gather);
        // A sum where every rank but 0 adds zeros is a broadcast (burn-collective has no
        // multi-node broadcast).
        let mine = gather.into_flat();
        let mine = if self.is_root() { mine } else { mine.zeros_like() };
        let flat = self.all_reduce_sum(mine, "broadcast of rank 0's weights")?;
        let mut scatter = Unflatten::<B> { flat, offset: 0 };
        Ok(module.map(&mut scatter))
    }

    /// Averages `grads` over all workers, bucketed into one all-reduce in the module's
    /// parameter order (the same on every worker, whatever the parameter ids).
    pub fn average_grads<B, M>(&self, grads: GradientsParams, module: &M) -> Result<GradientsParams, DistError>
    where
        B: AutodiffBackend<InnerBackend = R>,
        M: AutodiffModule<B>,
    {
        if self.world == 1 {
            return Ok(grads);
        }
        let mut gather = GatherGrads::<B> {
            grads,
            flat: Vec::new(),
            had_grad: Vec::new(),
        };
        module.visit(&mut gather);
        let GatherGrads { grads, flat, had_grad } = gather;
        let Some(flat) = cat(flat) else {
            return Ok(grads);
        };
        let mean = self
            .all_reduce_sum(flat, "all-reduce of gradients")?
            .div_scalar(self.world as f64);
        let mut scatter = ScatterGrads::<B> {
            grads,
            flat: mean,
            offset: 0,
            had_grad: had_grad.into_iter(),
        };
        module.visit(&mut scatter);
        Ok(scatter.grads)
    }

    /// Sums `values` over all workers (kept to about f64 precision by sending each value as
    /// an f32 pair, high and low parts).
    pub fn sum(&self, values: &[f64], device: &R::Device) -> Result<Vec<f64>, DistError> {
        // Every worker asks with the same length, so an empty sum needs no message.
        if self.world == 1 || values.is_empty() {
            return Ok(values.to_vec());
        }
        let mut split = Vec::with_capacity(values.len() * 2);
        for &v in values {
            let high = v as f32;
            split.extend([high, (v - high as f64) as f32]);
        }
        // burn-collective's ring all-reduce between nodes slices the tensor into one part per
        // node, so it refuses a tensor shorter than the node count: pad with zeros.
        split.resize(split.len().max(self.world), 0.0);
        let len = split.len();
        let tensor = Tensor::<R, 1>::from_data(TensorData::new(split, [len]), device);
        let summed = self.all_reduce_sum(tensor, "sum of metrics")?;
        let parts = summed.into_data().convert::<f32>().to_vec::<f32>().unwrap_or_default();
        Ok(parts
            .get(..values.len() * 2)
            .unwrap_or_default()
            .chunks(2)
            .map(|p| p[0] as f64 + p[1] as f64)
            .collect())
    }

    /// Rank 0's `value` on every worker (a seed drawn on rank 0, say), sent as four exact
    /// 16-bit parts.
    pub fn share_u64(&self, value: u64, device: &R::Device) -> Result<u64, DistError> {
        let mine = if self.is_root() { value } else { 0 };
        let parts: Vec<f64> = (0..4).map(|i| ((mine >> (16 * i)) & 0xffff) as f64).collect();
        let parts = self.sum(&parts, device)?;
        Ok(parts
            .iter()
            .enumerate()
            .fold(0, |v, (i, p)| v | ((*p as u64) << (16 * i))))
    }

    fn all_reduce_sum(&self, tensor: Tensor<R, 1>, what: &'static str) -> Result<Tensor<R, 1>, DistError> {
        let _armed = self.watchdog.as_ref().map(|w| w.arm(self.rank, what));
        let primitive = tensor.into_primitive().tensor();
        all_reduce::<R>(PeerId::from(self.rank), primitive, ReduceOperation::Sum)
            .map(|t| Tensor::from_primitive(TensorPrimitive::Float(t)))
            .map_err(|e| self.error(what, e))
    }

    /// Wraps burn-collective's error with this worker's rank.
    pub(super) fn error(&self, what: &'static str, cause: CollectiveError) -> DistError {
        DistError {
            rank: self.rank,
            what,
            cause: format!("{cause:?}"),
        }
    }
}

/// Concatenates flattened tensors; `None` when there are none.
fn cat<B: Backend>(parts: Vec<Tensor<B, 1>>) -> Option<Tensor<B, 1>> {
    (!parts.is_empty()).then(|| Tensor::cat(parts, 0))
}

/// Collects every float tensor of a module, flattened, in visiting order.
struct Flatten<B: AutodiffBackend> {
    parts: Vec<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> Default for Flatten<B> {
    fn default() -> Self {
        Self { parts: Vec::new() }
    }
}

impl<B: AutodiffBackend> Flatten<B> {
    fn into_flat(self) -> Tensor<B::InnerBackend, 1> {
        cat(self.parts).expect("a module to synchronise has tensors")
    }
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Flatten<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let t = param.val().inner();
        let n = t.shape().num_elements();
        self.parts.push(t.reshape([n]));
    }
}

/// Puts consecutive slices of `flat` back into the module's float tensors, keeping each
/// parameter's id and whether it requires gradients.
struct Unflatten<B: AutodiffBackend> {
    flat: Tensor<B::InnerBackend, 1>,
    offset: usize,
}

impl<B: AutodiffBackend> ModuleMapper<B> for Unflatten<B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let shape = tensor.shape();
        let n = shape.num_elements();
        let slice = self.flat.clone().slice(self.offset..self.offset + n).reshape(shape);
        self.offset += n;
        let mut value = Tensor::from_inner(slice);
        if tensor.is_require_grad() {
            value = value.require_grad();
        }
        Param::from_mapped_value(id, value, mapper)
    }
}

/// Takes the gradient of every parameter that has one, flattened, in visiting order, and
/// notes which float tensors had one.
struct GatherGrads<B: AutodiffBackend> {
    grads: GradientsParams,
    flat: Vec<Tensor<B::InnerBackend, 1>>,
    had_grad: Vec<bool>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for GatherGrads<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let grad = self.grads.remove::<B::InnerBackend, D>(param.id);
        self.had_grad.push(grad.is_some());
        if let Some(g) = grad {
            let n = g.shape().num_elements();
            self.flat.push(g.reshape([n]));
        }
    }
}

/// Registers the averaged slices back under their parameters' ids, visiting in the same order.
struct ScatterGrads<B: AutodiffBackend> {
    grads: GradientsParams,
    flat: Tensor<B::InnerBackend, 1>,
    offset: usize,
    had_grad: std::vec::IntoIter<bool>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for ScatterGrads<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if self.had_grad.next() == Some(true) {
            let shape = param.val().shape();
            let n = shape.num_elements();
            let g = self.flat.clone().slice(self.offset..self.offset + n).reshape(shape);
            self.offset += n;
            self.grads.register::<B::InnerBackend, D>(param.id, g);
        }
    }
}
