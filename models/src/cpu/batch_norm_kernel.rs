//! BatchNorm's training forward and backward as fused loops over f32 slices, for the CPU.
//!
//! The input is `[N, C, HW]` row-major (an NCHW tensor with its spatial dimensions flattened):
//! row `r` holds `HW` values of channel `r % C`. Per channel, over its `M = N·HW` values:
//!
//! ```text
//! forward:   μ = Σx / M,  σ² = Σ(x − μ)² / M (biased),  s = 1 / √(σ² + ε)
//!            y = γ·s·(x − μ) + β
//! backward:  dβ = Σdy,  dγ = s·Σdy·(x − μ)
//!            dx = γ·s·(dy − dβ / M − (x − μ)·s²·Σdy·(x − μ) / M)
//! ```
//!
//! (PyTorch's `batch_norm` forward and backward formulas.) The statistics and the channel sums
//! read the data once per sum, accumulating in f64, one channel per rayon task; `y` and `dx`
//! are written in one pass, one row per task. burn's composition of tensor ops for the same
//! step reads and writes the activation about thirty times; this makes eight passes.

use rayon::prelude::*;

/// A `[N, C, HW]` activation's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Planes {
    /// Batch size `N`.
    pub batch: usize,
    /// Channels `C`.
    pub channels: usize,
    /// Values per row, `H·W`.
    pub plane: usize,
}

impl Planes {
    /// Values per channel, `N·H·W`.
    fn per_channel(&self) -> usize {
        self.batch * self.plane
    }

    /// The rows of channel `c`.
    fn rows<'a>(&self, data: &'a [f32], c: usize) -> impl Iterator<Item = &'a [f32]> + 'a {
        let (channels, plane) = (self.channels, self.plane);
        (0..self.batch).map(move |n| &data[(n * channels + c) * plane..][..plane])
    }
}

/// Per-channel batch statistics of a training forward.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BatchStats {
    /// μ per channel.
    pub mean: Vec<f32>,
    /// Biased σ² per channel.
    pub var: Vec<f32>,
    /// `1 / √(σ² + ε)` per channel.
    pub inv_std: Vec<f32>,
}

/// `y` and the batch statistics of `x`.
pub(crate) fn forward(x: &[f32], shape: Planes, gamma: &[f32], beta: &[f32], epsilon: f64) -> (Vec<f32>, BatchStats) {
    let m = shape.per_channel() as f64;
    let (mean, var): (Vec<f32>, Vec<f32>) = (0..shape.channels)
        .into_par_iter()
        .map(|c| {
            let mean = shape.rows(x, c).map(|row| sum(row, |v| v as f64)).sum::<f64>() / m;
            let var = shape
                .rows(x, c)
                .map(|row| sum(row, |v| (v as f64 - mean).powi(2)))
                .sum::<f64>()
                / m;
            (mean as f32, var as f32)
        })
        .unzip();
    let inv_std: Vec<f32> = var
        .iter()
        .map(|&v| (1.0 / (v as f64 + epsilon).sqrt()) as f32)
        .collect();
    // y = x·a + b with a = γ·s, b = β − μ·a, per channel.
    let a: Vec<f32> = (0..shape.channels).map(|c| gamma[c] * inv_std[c]).collect();
    let b: Vec<f32> = (0..shape.channels).map(|c| beta[c] - mean[c] * a[c]).collect();
    let mut y = vec![0.0f32; x.len()];
    y.par_chunks_mut(shape.plane)
        .zip(x.par_chunks(shape.plane))
        .enumerate()
        .for_each(|(r, (y_row, x_row))| {
            let c = r % shape.channels;
            for (o, &v) in y_row.iter_mut().zip(x_row) {
                *o = v * a[c] + b[c];
            }
        });
    (y, BatchStats { mean, var, inv_std })
}

/// Gradients `(dx, dγ, dβ)` for the output gradient `dy` of [`forward`] on `x`.
pub(crate) fn backward(
    x: &[f32],
    dy: &[f32],
    shape: Planes,
    gamma: &[f32],
    stats: &BatchStats,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let m = shape.per_channel() as f64;
    // Σdy and Σdy·(x − μ) per channel.
    let (sum_dy, sum_dy_xc): (Vec<f64>, Vec<f64>) = (0..shape.channels)
        .into_par_iter()
        .map(|c| {
            let mean = stats.mean[c] as f64;
            shape
                .rows(x, c)
                .zip(shape.rows(dy, c))
                .fold((0.0, 0.0), |(s, sc), (x_row, dy_row)| {
                    (s + sum(dy_row, |v| v as f64), sc + dot_centered(dy_row, x_row, mean))
                })
        })
        .unzip();
    let d_beta: Vec<f32> = sum_dy.iter().map(|&v| v as f32).collect();
    let d_gamma: Vec<f32> = (0..shape.channels)
        .map(|c| (sum_dy_xc[c] * stats.inv_std[c] as f64) as f32)
        .collect();
    // dx = k_dy·dy + k_x·x + k_1 per channel.
    let coefficients: Vec<[f32; 3]> = (0..shape.channels)
        .map(|c| {
            let s = stats.inv_std[c] as f64;
            let g = gamma[c] as f64 * s;
            let proj = s * s * sum_dy_xc[c] / m;
            let k_x = -g * proj;
            let k_1 = -g * sum_dy[c] / m - k_x * stats.mean[c] as f64;
            [g as f32, k_x as f32, k_1 as f32]
        })
        .collect();
    let mut dx = vec![0.0f32; x.len()];
    dx.par_chunks_mut(shape.plane)
        .zip(x.par_chunks(shape.plane).zip(dy.par_chunks(shape.plane)))
        .enumerate()
        .for_each(|(r, (dx_row, (x_row, dy_row)))| {
            let [k_dy, k_x, k_1] = coefficients[r % shape.channels];
            for ((o, &xv), &g) in dx_row.iter_mut().zip(x_row).zip(dy_row) {
                *o = k_dy * g + k_x * xv + k_1;
            }
        });
    (dx, d_gamma, d_beta)
}

/// `Σ f(v)` over `values` in f64, with eight independent accumulators (vectorizes).
fn sum(values: &[f32], f: impl Fn(f32) -> f64) -> f64 {
    let mut lanes = [0.0f64; 8];
    let chunks = values.chunks_exact(8);
    let tail: f64 = chunks.remainder().iter().map(|&v| f(v)).sum();
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += f(v);
        }
    }
    lanes.iter().sum::<f64>() + tail
}

/// `Σ dy·(x − mean)` in f64, with eight independent accumulators.
fn dot_centered(dy: &[f32], x: &[f32], mean: f64) -> f64 {
    let mut lanes = [0.0f64; 8];
    let (dy_chunks, x_chunks) = (dy.chunks_exact(8), x.chunks_exact(8));
    let tail: f64 = dy_chunks
        .remainder()
        .iter()
        .zip(x_chunks.remainder())
        .map(|(&g, &v)| g as f64 * (v as f64 - mean))
        .sum();
    for (g8, x8) in dy_chunks.zip(x_chunks) {
        for ((lane, &g), &v) in lanes.iter_mut().zip(g8).zip(x8) {
            *lane += g as f64 * (v as f64 - mean);
        }
    }
    lanes.iter().sum::<f64>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::tests::close;

    /// One channel holding 1, 2 (first image) and 3, 4 (second), γ = 2, β = 1, ε = 0:
    /// μ = 2.5, σ² = 1.25, s = 1/√1.25, x̂ = (−1.5, −0.5, 0.5, 1.5)·s.
    #[test]
    fn one_channel_by_hand() {
        let shape = Planes {
            batch: 2,
            channels: 1,
            plane: 2,
        };
        let x = [1.0, 2.0, 3.0, 4.0];
        let s = 1.0 / 1.25f64.sqrt();
        let x_hat = [-1.5 * s, -0.5 * s, 0.5 * s, 1.5 * s];
        let (y, stats) = forward(&x, shape, &[2.0], &[1.0], 0.0);
        close(&y, &x_hat.map(|v| 2.0 * v + 1.0));
        close(&stats.mean, &[2.5]);
        close(&stats.var, &[1.25]);
        // dy = (1, 0, 0, 0): dβ = 1, dγ = x̂₀, dx = γ·s·(dy − 1/4 − x̂·x̂₀/4).
        let (dx, d_gamma, d_beta) = backward(&x, &[1.0, 0.0, 0.0, 0.0], shape, &[2.0], &stats);
        close(&d_beta, &[1.0]);
        close(&d_gamma, &[x_hat[0]]);
        let want: Vec<f64> = (0..4)
            .map(|i| 2.0 * s * (f64::from(i == 0) - 0.25 - x_hat[i] * x_hat[0] / 4.0))
            .collect();
        close(&dx, &want);
    }

    /// Rows are interleaved by channel: row r belongs to channel r % C.
    #[test]
    fn channels_are_normalised_separately() {
        let shape = Planes {
            batch: 2,
            channels: 2,
            plane: 1,
        };
        // Channel 0: 0 and 2; channel 1: 10 and 30.
        let (y, stats) = forward(&[0.0, 10.0, 2.0, 30.0], shape, &[1.0, 1.0], &[0.0, 0.0], 0.0);
        close(&stats.mean, &[1.0, 20.0]);
        close(&stats.var, &[1.0, 100.0]);
        close(&y, &[-1.0, -1.0, 1.0, 1.0]);
    }
}
