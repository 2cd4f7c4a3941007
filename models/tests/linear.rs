//! Linear layers of kiln's CPU backend. The vendored burn-flex folds an input's leading
//! dimensions into the rows of one matrix product (vendor/README.md); these tests hold its
//! `linear` and `linear_{x,weight,bias}_backward` to a naive f64 loop, and to burn's default
//! (the weight broadcast over a batched matmul, the weight gradient summed over the batch)
//! through `Autodiff<Flex>` and `burn::nn::Linear`, at the ranks and shapes kiln's models use:
//! a 2D classifier head, Swin's `[windows, 49, C]` window attention and `[B, L, C]` MLP, and a
//! non-contiguous input.

use burn::backend::Autodiff;
use burn::module::Param;
use burn::nn::LinearConfig;
use burn::prelude::*;
use burn::tensor::Distribution;
use burn_flex::Flex;

type Ad = Autodiff<Flex>;

/// Every element of `got` within 1e-4 of `want`, relative to `want`'s largest magnitude.
fn assert_close(got: &[f32], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(1e-12f64, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            ((*g as f64) - w).abs() <= 1e-4 * scale,
            "{what}: element {i} is {g}, want {w}"
        );
    }
}

fn values<const D: usize>(t: Tensor<Flex, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

/// `y[r, j] = b[j] + Σ_k x[r, k] w[k, j]` over the rows `r` of `x` flattened to `[rows, K]`,
/// and the gradients of `Σ y · g`: `dx = g wᵀ`, `dw = xᵀ g`, `db = Σ_r g`, in f64.
fn naive(x: &[f32], w: &[f32], b: &[f32], g: &[f32], k: usize, n: usize) -> [Vec<f64>; 4] {
    let rows = x.len() / k;
    let mut y = vec![0.0; rows * n];
    let mut dx = vec![0.0; rows * k];
    let mut dw = vec![0.0; k * n];
    let mut db = vec![0.0; n];
    for r in 0..rows {
        for j in 0..n {
            let mut acc = b[j] as f64;
            for i in 0..k {
                acc += x[r * k + i] as f64 * w[i * n + j] as f64;
                dx[r * k + i] += g[r * n + j] as f64 * w[i * n + j] as f64;
                dw[i * n + j] += x[r * k + i] as f64 * g[r * n + j] as f64;
            }
            y[r * n + j] = acc;
            db[j] += g[r * n + j] as f64;
        }
    }
    [y, dx, dw, db]
}

/// A linear layer `k → n` on an input of `dims` (the last `k`), through `burn::nn::Linear` on
/// `Autodiff<Flex>`: its output and gradients against the naive loop and against the
/// broadcast batched matmul burn's default runs.
fn check<const D: usize>(dims: [usize; D], n: usize, transposed: bool) {
    let device = Default::default();
    let k = dims[D - 1];
    // A transposed input is a non-contiguous view: stored with its last two dimensions
    // swapped.
    let x = if transposed {
        let mut stored = dims;
        stored.swap(D - 2, D - 1);
        Tensor::<Flex, D>::random(stored, Distribution::Normal(0.0, 1.0), &device).swap_dims(D - 2, D - 1)
    } else {
        Tensor::<Flex, D>::random(dims, Distribution::Normal(0.0, 1.0), &device)
    };
    let linear = LinearConfig::new(k, n).init::<Ad>(&device);
    let w = linear.weight.val().inner();
    let b = linear.bias.as_ref().unwrap().val().inner();
    let mut out_dims = dims;
    out_dims[D - 1] = n;
    let g = Tensor::<Flex, D>::random(out_dims, Distribution::Normal(0.0, 1.0), &device);

    let xa = Tensor::<Ad, D>::from_inner(x.clone()).require_grad();
    let y = linear.forward(xa.clone());
    let grads = (y.clone() * Tensor::from_inner(g.clone())).sum().backward();
    let got = [
        values(y.inner()),
        values(xa.grad(&grads).unwrap()),
        values(linear.weight.val().grad(&grads).unwrap()),
        values(linear.bias.as_ref().unwrap().val().grad(&grads).unwrap()),
    ];
    let [y_want, dx_want, dw_want, db_want] = naive(
        &values(x.clone()),
        &values(w.clone()),
        &values(b.clone()),
        &values(g.clone()),
        k,
        n,
    );
    let what = format!("{dims:?} → {n}{}", if transposed { ", transposed input" } else { "" });
    assert_close(&got[0], &y_want, &format!("{what}: output"));
    assert_close(&got[1], &dx_want, &format!("{what}: input gradient"));
    assert_close(&got[2], &dw_want, &format!("{what}: weight gradient"));
    assert_close(&got[3], &db_want, &format!("{what}: bias gradient"));

    // burn's default: the weight broadcast over a batched matmul.
    let wa = Tensor::<Ad, 2>::from_inner(w).require_grad();
    let xb = Tensor::<Ad, D>::from_inner(x).require_grad();
    let yb = xb.clone().matmul(wa.clone().unsqueeze::<D>()) + Tensor::<Ad, 1>::from_inner(b).unsqueeze::<D>();
    let grads = (yb.clone() * Tensor::from_inner(g)).sum().backward();
    let f64s = |v: Vec<f32>| v.into_iter().map(f64::from).collect::<Vec<_>>();
    assert_close(
        &got[0],
        &f64s(values(yb.inner())),
        &format!("{what}: output vs batched matmul"),
    );
    assert_close(
        &got[2],
        &f64s(values(wa.grad(&grads).unwrap())),
        &format!("{what}: weight gradient vs batched matmul"),
    );
    assert_close(
        &got[1],
        &f64s(values(xb.grad(&grads).unwrap())),
        &format!("{what}: input gradient vs batched matmul"),
    );
}

#[test]
fn a_classifier_head_on_a_batch_of_vectors() {
    check([4, 64], 10, false);
}

#[test]
fn swin_window_attention_and_mlp_shapes() {
    // `[windows, 49, C]` → qkv and `[B, L, C]` → the MLP's hidden layer.
    check([12, 49, 16], 48, false);
    check([2, 3, 49, 8], 24, false);
    check([2, 56, 24], 96, true);
}

#[test]
fn a_bias_free_layer_and_a_one_dimensional_input() {
    let device = Default::default();
    let mut linear = LinearConfig::new(5, 3).with_bias(false).init::<Flex>(&device);
    linear.weight = Param::from_tensor(Tensor::from_data(
        TensorData::new((0..15).map(|v| v as f32).collect::<Vec<_>>(), [5, 3]),
        &device,
    ));
    let x = Tensor::<Flex, 1>::from_data([1.0, 0.0, -1.0, 2.0, 0.5], &device);
    // y_j = Σ_i x_i (3i + j): by hand, j = 0: 0 - 6 + 18 + 6 = 18; each j adds Σ x_i = 2.5.
    assert_eq!(values(linear.forward(x)), [18.0, 20.5, 23.0]);
}
