//! The Adadelta update as one pass over burn-flex's f32 buffers.
//!
//! burn's tensor ops make about sixteen passes over each parameter for one update (every
//! `mul_scalar`, `add`, `sqrt`, … allocates and writes a new tensor); this loop reads the
//! parameter, its gradient and both running averages once and writes the three new tensors
//! once, with the generic path's operations in the generic path's order (so the same f32
//! results). It runs when the inner backend is burn-flex and the parameter is f32, recognised
//! at run time ([`super::specialize`]); every other backend keeps the generic update.

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};
use rayon::prelude::*;

use super::specialize::{as_flex, flex_values};

/// Elements per rayon task.
const CHUNK: usize = 16 * 1024;

/// Adadelta's running averages of one parameter: of the squared gradients (`v`) and of the
/// squared updates (`u`).
pub struct AdadeltaAverages<B: Backend, const D: usize> {
    /// `v`.
    pub square_avg: Tensor<B, D>,
    /// `u`.
    pub acc_delta: Tensor<B, D>,
}

/// One Adadelta update of `tensor` with `grad` (decay `rho`, `epsilon`, learning rate `lr`):
/// the new parameter and averages, or `None` when the tensors are not burn-flex f32 tensors.
pub fn adadelta_step<B: Backend, const D: usize>(
    rho: f64,
    epsilon: f64,
    lr: f64,
    tensor: &Tensor<B, D>,
    grad: &Tensor<B, D>,
    state: Option<&AdadeltaAverages<B, D>>,
) -> Option<(Tensor<B, D>, AdadeltaAverages<B, D>)> {
    if tensor.dtype() != DType::F32 || grad.dtype() != DType::F32 {
        return None;
    }
    let flex = |t: &Tensor<B, D>| as_flex(t).map(|f| f.to_contiguous());
    let (param, grad_flex) = (flex(tensor)?, flex(grad)?);
    let averages = match state {
        Some(s) => Some((flex(&s.square_avg)?, flex(&s.acc_delta)?)),
        None => None,
    };
    let p = param.storage::<f32>();
    let g = grad_flex.storage::<f32>();
    let zeros;
    let (sq, acc) = match &averages {
        Some((sq, acc)) => (sq.storage::<f32>(), acc.storage::<f32>()),
        None => {
            zeros = vec![0.0f32; p.len()];
            (&zeros[..], &zeros[..])
        }
    };
    let (rho, one_minus_rho) = (rho as f32, (1.0 - rho) as f32);
    let (epsilon, lr) = (epsilon as f32, lr as f32);
    // The outputs are written once, in parallel, without being zeroed first.
    let n = p.len();
    let (mut p_out, mut sq_out, mut acc_out) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    p_out.spare_capacity_mut()[..n]
        .par_chunks_mut(CHUNK)
        .zip(sq_out.spare_capacity_mut()[..n].par_chunks_mut(CHUNK))
        .zip(acc_out.spare_capacity_mut()[..n].par_chunks_mut(CHUNK))
        .enumerate()
        .for_each(|(chunk, ((p_new, sq_new), acc_new))| {
            let at = chunk * CHUNK;
            for i in 0..p_new.len() {
                let (g, j) = (g[at + i], at + i);
                let square_avg = sq[j] * rho + g * g * one_minus_rho;
                let std = (square_avg + epsilon).sqrt();
                let delta = (acc[j] + epsilon).sqrt() / std * g;
                acc_new[i].write(acc[j] * rho + delta * delta * one_minus_rho);
                sq_new[i].write(square_avg);
                p_new[i].write(p[j] - delta * lr);
            }
        });
    // SAFETY: the chunks above cover all `n` elements of each output, and each was written.
    unsafe {
        p_out.set_len(n);
        sq_out.set_len(n);
        acc_out.set_len(n);
    }
    let shape = tensor.shape();
    let back = |values: Vec<f32>| flex_values::<B, D>(values, shape.clone());
    Some((
        back(p_out)?,
        AdadeltaAverages {
            square_avg: back(sq_out)?,
            acc_delta: back(acc_out)?,
        },
    ))
}
