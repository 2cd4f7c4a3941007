//! torch's `DistributedSampler` (with `drop_last=False`): each epoch's seeded permutation,
//! padded to a multiple of the number of replicas and dealt out round-robin.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// An invalid sharding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SamplerError {
    /// There must be at least one replica.
    #[error("the number of replicas must be at least 1")]
    NoReplicas,
    /// The rank must be below the number of replicas.
    #[error("rank {rank} is out of range for {num_replicas} replicas (ranks 0..{num_replicas})")]
    RankOutOfRange {
        /// The rank asked for.
        rank: usize,
        /// The number of replicas.
        num_replicas: usize,
    },
}

/// The sample order of one replica, epoch by epoch (torch's `DistributedSampler` with
/// `set_epoch(epoch)` and `drop_last=False`; a single replica by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochSampler {
    len: usize,
    num_replicas: usize,
    rank: usize,
    shuffle: bool,
    seed: u64,
    pad: bool,
}

impl EpochSampler {
    /// A single-replica sampler over `len` samples; `shuffle` draws a new permutation per epoch
    /// from `seed + epoch`.
    pub fn new(len: usize, shuffle: bool, seed: u64) -> Self {
        Self {
            len,
            num_replicas: 1,
            rank: 0,
            shuffle,
            seed,
            pad: true,
        }
    }

    /// The same sampler without padding: every sample goes to exactly one replica, and the
    /// first `len % num_replicas` replicas get one more (for evaluation, where a repeated
    /// sample would bias the metrics).
    pub fn without_padding(self) -> Self {
        Self { pad: false, ..self }
    }

    /// The same sampler restricted to replica `rank` of `num_replicas`.
    pub fn sharded(self, num_replicas: usize, rank: usize) -> Result<Self, SamplerError> {
        if num_replicas == 0 {
            return Err(SamplerError::NoReplicas);
        }
        if rank >= num_replicas {
            return Err(SamplerError::RankOutOfRange { rank, num_replicas });
        }
        Ok(Self {
            num_replicas,
            rank,
            ..self
        })
    }

    /// Number of samples in the dataset.
    pub fn dataset_len(&self) -> usize {
        self.len
    }

    /// Number of replicas sharing the dataset.
    pub fn num_replicas(&self) -> usize {
        self.num_replicas
    }

    /// This replica's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Whether each epoch is shuffled.
    pub fn shuffle(&self) -> bool {
        self.shuffle
    }

    /// The base seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Samples per replica per epoch: `ceil(len / num_replicas)`, or this replica's exact share
    /// without padding.
    pub fn num_samples(&self) -> usize {
        if self.pad {
            self.len.div_ceil(self.num_replicas)
        } else {
            self.len.saturating_sub(self.rank).div_ceil(self.num_replicas)
        }
    }

    /// Position in the epoch's padded, all-replica order of this replica's `local`-th sample.
    pub fn global_position(&self, local: usize) -> usize {
        local * self.num_replicas + self.rank
    }

    /// This replica's dataset indices for `epoch`: the permutation from
    /// `StdRng::seed_from_u64(seed + epoch)` (or `0..len` unshuffled), padded by repeating it from
    /// the start to `num_samples() * num_replicas`, then every `num_replicas`-th from `rank`.
    pub fn indices(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.len).collect();
        if self.shuffle {
            order.shuffle(&mut StdRng::seed_from_u64(self.seed.wrapping_add(epoch)));
        }
        let total = if self.pad {
            self.num_samples() * self.num_replicas
        } else {
            self.len
        };
        let padding: Vec<usize> = order.iter().copied().cycle().take(total - self.len).collect();
        order.extend(padding);
        order.into_iter().skip(self.rank).step_by(self.num_replicas).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shards(len: usize, replicas: usize, epoch: u64) -> Vec<Vec<usize>> {
        (0..replicas)
            .map(|rank| {
                let s = EpochSampler::new(len, true, 7).sharded(replicas, rank).unwrap();
                s.indices(epoch)
            })
            .collect()
    }

    #[test]
    fn unpadded_shards_partition_the_dataset() {
        let parts: Vec<Vec<usize>> = (0..3)
            .map(|rank| {
                let s = EpochSampler::new(10, false, 0)
                    .sharded(3, rank)
                    .unwrap()
                    .without_padding();
                assert_eq!(s.num_samples(), s.indices(0).len());
                s.indices(0)
            })
            .collect();
        assert_eq!(parts, vec![vec![0, 3, 6, 9], vec![1, 4, 7], vec![2, 5, 8]]);
        // More replicas than samples: the extra ones get nothing.
        let empty = EpochSampler::new(2, true, 1).sharded(3, 2).unwrap().without_padding();
        assert_eq!((empty.num_samples(), empty.indices(5)), (0, vec![]));
    }

    #[test]
    fn shards_are_padded_and_cover_every_index() {
        let parts = shards(10, 3, 0);
        assert!(parts.iter().all(|p| p.len() == 4), "{parts:?}");
        // Dealt round-robin from the padded permutation: its first two repeat at the end.
        let mut interleaved = Vec::new();
        for i in 0..4 {
            interleaved.extend(parts.iter().map(|p| p[i]));
        }
        assert_eq!(interleaved[10..], interleaved[..2]);
        let mut first10 = interleaved[..10].to_vec();
        first10.sort();
        assert_eq!(first10, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn padding_wraps_when_replicas_outnumber_samples() {
        let parts = shards(2, 5, 0);
        assert!(parts.iter().all(|p| p.len() == 1));
        let flat: Vec<usize> = parts.iter().map(|p| p[0]).collect();
        assert_eq!(flat[2..], [flat[0], flat[1], flat[0]]);
    }

    #[test]
    fn order_depends_on_seed_and_epoch_only() {
        let s = EpochSampler::new(50, true, 3);
        assert_eq!(s.indices(4), s.indices(4));
        assert_ne!(s.indices(4), s.indices(5));
        assert_ne!(s.indices(4), EpochSampler::new(50, true, 4).indices(4));
        // seed + epoch, as torch's `g.manual_seed(self.seed + self.epoch)`.
        assert_eq!(s.indices(4), EpochSampler::new(50, true, 4).indices(3));
    }

    #[test]
    fn one_replica_is_a_full_permutation() {
        let s = EpochSampler::new(20, true, 1);
        assert_eq!(s.num_samples(), 20);
        let order = s.indices(0);
        assert_ne!(order, (0..20).collect::<Vec<_>>());
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(sorted, (0..20).collect::<Vec<_>>());
        assert_eq!(EpochSampler::new(5, false, 1).indices(3), [0, 1, 2, 3, 4]);
    }

    #[test]
    fn unshuffled_shards_and_positions() {
        let s = EpochSampler::new(7, false, 0).sharded(3, 1).unwrap();
        assert_eq!(s.indices(0), [1, 4, 0]); // 0..7 padded with 0, 1 → [1, 4, 7→0]
        assert_eq!(s.global_position(2), 7);
    }

    #[test]
    fn bad_shardings_are_errors() {
        let s = EpochSampler::new(7, false, 0);
        assert_eq!(s.clone().sharded(0, 0), Err(SamplerError::NoReplicas));
        assert_eq!(
            s.sharded(2, 2),
            Err(SamplerError::RankOutOfRange {
                rank: 2,
                num_replicas: 2
            })
        );
        assert!(EpochSampler::new(0, true, 0).indices(0).is_empty());
    }
}
