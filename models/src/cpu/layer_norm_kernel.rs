//! LayerNorm over the last dimension, forward and backward, as fused loops over f32 rows.
//!
//! The input is `[R, D]` row-major; each row is normalised over its `D` values:
//!
//! ```text
//! forward:   μ = Σx / D,  σ² = Σ(x − μ)² / D (biased),  s = 1 / √(σ² + ε)
//!            x̂ = (x − μ)·s,  y = γ·x̂ + β   (computed as (x − μ) / √(σ² + ε), as burn does)
//! backward:  g = γ·dy,  dx = s·(g − Σg / D − x̂·Σ(g·x̂) / D)
//!            dγ = Σ_rows dy·x̂,  dβ = Σ_rows dy
//! ```
//!
//! (PyTorch's `layer_norm` and `layer_norm_backward` formulas.) Each row stays in the L1 cache
//! while it is read: the forward reads `x` three times and writes `y` once per row, the
//! backward reads `x` and `dy` twice and writes `dx` once; rayon splits the rows into tasks,
//! and each backward task sums its own `dγ`, `dβ` in f64, which are then added up.

use rayon::prelude::*;

/// Values per rayon task, at least (whole rows).
const MIN_VALUES_PER_TASK: usize = 16 * 1024;

/// Rows per rayon task for rows of `d` values.
fn rows_per_task(d: usize) -> usize {
    MIN_VALUES_PER_TASK.div_ceil(d.max(1))
}

/// Per-row statistics of a forward: `μ` and `s = 1 / √(σ² + ε)`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RowStats {
    /// μ per row.
    pub mean: Vec<f32>,
    /// `1 / √(σ² + ε)` per row.
    pub inv_std: Vec<f32>,
}

/// `y` and the row statistics of `x` (`[rows, d]`), `β = 0` when `beta` is `None`.
pub(crate) fn forward(x: &[f32], d: usize, gamma: &[f32], beta: Option<&[f32]>, epsilon: f64) -> (Vec<f32>, RowStats) {
    assert_eq!(gamma.len(), d);
    assert_eq!(x.len() % d, 0);
    let rows = x.len() / d;
    let zeros;
    let beta = match beta {
        Some(beta) => beta,
        None => {
            zeros = vec![0.0f32; d];
            &zeros
        }
    };
    let mut y = vec![0.0f32; x.len()];
    let mut mean = vec![0.0f32; rows];
    let mut inv_std = vec![0.0f32; rows];
    let per_task = rows_per_task(d);
    y.par_chunks_mut(per_task * d)
        .zip(x.par_chunks(per_task * d))
        .zip(mean.par_chunks_mut(per_task).zip(inv_std.par_chunks_mut(per_task)))
        .for_each(|((y, x), (mean, inv_std))| {
            forward_rows_dispatch(x, d, gamma, beta, epsilon as f32, y, mean, inv_std)
        });
    (y, RowStats { mean, inv_std })
}

/// Gradients `(dx, dγ, dβ)` for the output gradient `dy` of [`forward`] on `x`.
pub(crate) fn backward(
    x: &[f32],
    dy: &[f32],
    d: usize,
    gamma: &[f32],
    stats: &RowStats,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    assert_eq!(x.len(), dy.len());
    assert_eq!(gamma.len(), d);
    let mut dx = vec![0.0f32; x.len()];
    let per_task = rows_per_task(d);
    let partials: Vec<(Vec<f64>, Vec<f64>)> = dx
        .par_chunks_mut(per_task * d)
        .zip(x.par_chunks(per_task * d).zip(dy.par_chunks(per_task * d)))
        .zip(stats.mean.par_chunks(per_task).zip(stats.inv_std.par_chunks(per_task)))
        .map(|((dx, (x, dy)), (mean, inv_std))| {
            let mut d_gamma = vec![0.0f64; d];
            let mut d_beta = vec![0.0f64; d];
            backward_rows_dispatch(x, dy, d, gamma, mean, inv_std, dx, &mut d_gamma, &mut d_beta);
            (d_gamma, d_beta)
        })
        .collect();
    let mut d_gamma = vec![0.0f64; d];
    let mut d_beta = vec![0.0f64; d];
    for (g, b) in &partials {
        for i in 0..d {
            d_gamma[i] += g[i];
            d_beta[i] += b[i];
        }
    }
    let to_f32 = |v: Vec<f64>| v.into_iter().map(|v| v as f32).collect();
    (dx, to_f32(d_gamma), to_f32(d_beta))
}

with_avx2!(forward_rows_dispatch => forward_rows(
    x: &[f32], d: usize, gamma: &[f32], beta: &[f32], epsilon: f32,
    y: &mut [f32], mean: &mut [f32], inv_std: &mut [f32]
));
with_avx2!(backward_rows_dispatch => backward_rows(
    x: &[f32], dy: &[f32], d: usize, gamma: &[f32], mean: &[f32], inv_std: &[f32],
    dx: &mut [f32], d_gamma: &mut [f64], d_beta: &mut [f64]
));

/// Normalises the rows of `x` into `y`, writing each row's μ and s.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn forward_rows(
    x: &[f32],
    d: usize,
    gamma: &[f32],
    beta: &[f32],
    epsilon: f32,
    y: &mut [f32],
    mean: &mut [f32],
    inv_std: &mut [f32],
) {
    let inv_d = 1.0 / d as f32;
    let rows = x.chunks_exact(d).zip(y.chunks_exact_mut(d));
    for ((x, y), (mean, inv_std)) in rows.zip(mean.iter_mut().zip(inv_std.iter_mut())) {
        let mu = sum(x, |v| v) * inv_d;
        let var = sum(x, |v| (v - mu) * (v - mu)) * inv_d;
        let denominator = (var + epsilon).sqrt();
        for (((o, &v), &g), &b) in y.iter_mut().zip(x).zip(gamma).zip(beta) {
            *o = (v - mu) / denominator * g + b;
        }
        *mean = mu;
        *inv_std = 1.0 / denominator;
    }
}

/// The input gradient of the rows of `x` into `dx`, adding their `dγ`, `dβ` to `d_gamma`,
/// `d_beta`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn backward_rows(
    x: &[f32],
    dy: &[f32],
    d: usize,
    gamma: &[f32],
    mean: &[f32],
    inv_std: &[f32],
    dx: &mut [f32],
    d_gamma: &mut [f64],
    d_beta: &mut [f64],
) {
    let inv_d = 1.0 / d as f32;
    let rows = x.chunks_exact(d).zip(dy.chunks_exact(d)).zip(dx.chunks_exact_mut(d));
    for (((x, dy), dx), (&mu, &s)) in rows.zip(mean.iter().zip(inv_std)) {
        // Σg and Σg·x̂ in eight lanes each.
        let (mut sum_g, mut sum_gx) = ([0.0f32; 8], [0.0f32; 8]);
        let (mut tail_g, mut tail_gx) = (0.0f32, 0.0f32);
        let chunks = x.chunks_exact(8).zip(dy.chunks_exact(8)).zip(gamma.chunks_exact(8));
        for ((x8, dy8), g8) in chunks {
            for i in 0..8 {
                let g = dy8[i] * g8[i];
                sum_g[i] += g;
                sum_gx[i] += g * ((x8[i] - mu) * s);
            }
        }
        let done = d - d % 8;
        for i in done..d {
            let g = dy[i] * gamma[i];
            tail_g += g;
            tail_gx += g * ((x[i] - mu) * s);
        }
        let a = (sum_g.iter().sum::<f32>() + tail_g) * inv_d;
        let b = (sum_gx.iter().sum::<f32>() + tail_gx) * inv_d;
        for i in 0..d {
            let x_hat = (x[i] - mu) * s;
            dx[i] = s * (dy[i] * gamma[i] - a - x_hat * b);
            d_gamma[i] += (dy[i] * x_hat) as f64;
            d_beta[i] += dy[i] as f64;
        }
    }
}

/// `Σ f(v)` over `values` in f32, with eight independent accumulators (vectorizes).
#[inline(always)]
fn sum(values: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0.0f32; 8];
    let chunks = values.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += f(v);
        }
    }
    lanes.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::tests::close;

    /// One row 1, 2, 3, 4 with γ = 2, β = 1, ε = 0: μ = 2.5, σ² = 1.25, x̂ = (x − μ)/√1.25;
    /// dy = (1, 0, 0, 0) gives dβ = dy, dγ = dy·x̂ and dx = γ·s·(dy − 1/4 − x̂·x̂₀/4).
    #[test]
    fn one_row_by_hand() {
        let x = [1.0f32, 2.0, 3.0, 4.0];
        let s = 1.0 / 1.25f64.sqrt();
        let x_hat: Vec<f64> = x.iter().map(|&v| (v as f64 - 2.5) * s).collect();
        let (y, stats) = forward(&x, 4, &[2.0; 4], Some(&[1.0; 4]), 0.0);
        close(&y, &x_hat.iter().map(|v| 2.0 * v + 1.0).collect::<Vec<_>>());
        close(&stats.mean, &[2.5]);
        close(&stats.inv_std, &[s]);
        let (dx, d_gamma, d_beta) = backward(&x, &[1.0, 0.0, 0.0, 0.0], 4, &[2.0; 4], &stats);
        close(&d_beta, &[1.0, 0.0, 0.0, 0.0]);
        close(&d_gamma, &[x_hat[0], 0.0, 0.0, 0.0]);
        let want: Vec<f64> = (0..4)
            .map(|i| 2.0 * s * (f64::from(i == 0) - 0.25 - x_hat[i] * x_hat[0] / 4.0))
            .collect();
        close(&dx, &want);
    }
}
