use burn::backend::Autodiff;
use burn_flex::Flex;

use super::*;
use crate::yolox::STRIDES;

type Ad = Autodiff<Flex>;

fn softplus(x: f64) -> f64 {
    (1.0 + x.exp()).ln()
}

fn values<const D: usize>(t: Tensor<Flex, D>) -> Vec<f32> {
    t.into_data().to_vec().unwrap()
}

fn close(got: f64, want: f64, tol: f64) {
    assert!(
        (got - want).abs() <= tol * want.abs().max(1.0),
        "got {got}, want {want}"
    );
}

/// A `[n, 5 + classes, h, w]` level whose every cell of image `i` holds `cell(i)`.
fn uniform_level(n: usize, h: usize, w: usize, cell: impl Fn(usize) -> Vec<f32>) -> Tensor<Flex, 4> {
    let channels = cell(0).len();
    let data: Vec<f32> = (0..n)
        .flat_map(|i| cell(i).into_iter().flat_map(move |v| std::iter::repeat_n(v, h * w)))
        .collect();
    Tensor::from_data(TensorData::new(data, [n, channels, h, w]), &Default::default())
}

#[test]
fn bce_with_logits_is_pytorchs_formula() {
    // ℓ = −[t·ln σ(x) + (1 − t)·ln(1 − σ(x))], by hand.
    let cases: [(f32, f32, f64); 6] = [
        (0.0, 1.0, std::f64::consts::LN_2),
        (2.0, 0.25, softplus(2.0) - 0.5),
        (-3.0, 0.0, softplus(-3.0)),
        (
            1.5,
            0.7,
            -(0.7 * (1.0 / (1.0 + (-1.5f64).exp())).ln() + 0.3 * (1.0 / (1.0 + 1.5f64.exp())).ln()),
        ),
        (60.0, 0.0, 60.0),
        (-60.0, 1.0, 60.0),
    ];
    let device = Default::default();
    let x = Tensor::<Flex, 1>::from_floats(cases.map(|c| c.0), &device);
    let t = Tensor::<Flex, 1>::from_floats(cases.map(|c| c.1), &device);
    let got = values(bce_with_logits(x, t));
    for (got, (x, t, want)) in got.iter().zip(cases) {
        assert!(got.is_finite(), "x {x} t {t}");
        close(*got as f64, want, 1e-6);
    }
    // Confident and right: ~e^−20, not a cancellation's 0 or noise of ulp(20).
    let tiny = values(bce_with_logits(
        Tensor::<Flex, 1>::from_floats([-20.0], &device),
        Tensor::zeros([1], &device),
    ));
    close(tiny[0] as f64, softplus(-20.0), 1e-5);
}

#[test]
fn iou_loss_is_one_minus_iou_squared() {
    // Centre-form boxes: overlapping 80 / 120 = 2/3; identical; disjoint; nested 16 / 64.
    let pred = [
        [10.0, 10.0, 10.0, 10.0],
        [5.0, 5.0, 4.0, 6.0],
        [0.0, 0.0, 2.0, 2.0],
        [10.0, 10.0, 4.0, 4.0],
    ];
    let target = [
        [12.0, 10.0, 10.0, 10.0],
        [5.0, 5.0, 4.0, 6.0],
        [10.0, 0.0, 2.0, 2.0],
        [10.0, 10.0, 8.0, 8.0],
    ];
    let want = [1.0 - 4.0 / 9.0, 0.0, 1.0, 1.0 - 0.0625];
    let device = Default::default();
    let to_tensor = |b: [[f32; 4]; 4]| Tensor::<Flex, 2>::from_data(TensorData::new(b.concat(), [4, 4]), &device);
    let got = values(iou_loss(to_tensor(pred), to_tensor(target)));
    for (got, want) in got.iter().zip(want) {
        close(*got as f64, want, 1e-6);
    }

    // Gradient for the first pair: moving the prediction right by δ widens the 8×10 overlap by
    // δ (I' = 10, U' = −10), so IoU' = (10·120 + 80·10) / 120² and the loss' = −2·IoU·IoU';
    // widening it by δ adds δ/2 on the right only (I' = 5, U' = 10 − 5).
    let pred = Tensor::<Ad, 2>::from_floats([[10.0, 10.0, 10.0, 10.0]], &device).require_grad();
    let target = Tensor::<Ad, 2>::from_floats([[12.0, 10.0, 10.0, 10.0]], &device);
    let grads = iou_loss(pred.clone(), target).sum().backward();
    let grad = values(pred.grad(&grads).unwrap());
    let iou = 2.0 / 3.0;
    close(grad[0] as f64, -2.0 * iou * (2000.0 / 14400.0), 1e-5);
    close(grad[2] as f64, -2.0 * iou * (200.0 / 14400.0), 1e-5);
}

#[test]
fn loss_of_a_hand_made_batch() {
    // One 4×4 level at stride 8, 2 classes, 2 images. Image 0 has no gt and all-zero outputs;
    // image 1 has gt class 0 [8, 8, 24, 24], box outputs 0 (cell (c, r) predicts the 8×8
    // box centred on (8c, 8r)), objectness logit 1, class logits (1, −1).
    // SimOTA: every cell is a candidate (centre square (−4, 36)); the best IoU is cell (2, 2)
    // with [12, 20]² → 64 / 256 = 0.25; the ten best IoUs, 0.25 + 4·32/288 + 4·16/304 ≈ 0.9,
    // give k = 1; all class costs are equal, so cell (2, 2), row 16 + 10, is the foreground.
    let level = uniform_level(2, 4, 4, |i| match i {
        0 => vec![0.0; 7],
        _ => vec![0.0, 0.0, 0.0, 0.0, 1.0, 1.0, -1.0],
    });
    let targets = vec![
        vec![],
        vec![TargetBox {
            class: 0,
            xyxy: [8.0, 8.0, 24.0, 24.0],
        }],
    ];
    let out = YoloxLoss { l1: true }.forward(&[level], &[8], &targets);

    let iou = 5.0 * (1.0 - 0.25f64.powi(2));
    let obj = 16.0 * softplus(0.0) + 15.0 * softplus(1.0) + (softplus(1.0) - 1.0);
    let cls = (softplus(1.0) - 0.25) + softplus(-1.0);
    // L1 target of cell (2, 2): (16/8 − 2, 16/8 − 2, ln 2, ln 2) against raw outputs 0.
    let l1 = 2.0 * std::f64::consts::LN_2;
    let p = out.parts;
    assert_eq!((p.num_fg, p.num_gt), (1, 1));
    close(p.iou, iou, 1e-6);
    close(p.obj, obj, 1e-6);
    close(p.cls, cls, 1e-6);
    close(p.l1, l1, 1e-6);
    close(values(out.loss)[0] as f64, iou + obj + cls + l1, 1e-6);
    close(p.total(), iou + obj + cls + l1, 1e-6);

    // Without the L1 term the other terms are unchanged.
    let level = uniform_level(2, 4, 4, |i| match i {
        0 => vec![0.0; 7],
        _ => vec![0.0, 0.0, 0.0, 0.0, 1.0, 1.0, -1.0],
    });
    let without = YoloxLoss::default().forward(&[level], &[8], &targets).parts;
    assert_eq!(without.l1, 0.0);
    close(without.total(), iou + obj + cls, 1e-6);
}

#[test]
fn images_without_gts_have_only_the_objectness_term() {
    // Two levels (4×4 at stride 8, 2×2 at 16): 20 cells per image, objectness logit −2.
    let cell = |_| vec![0.5, 0.5, 0.0, 0.0, -2.0, 3.0, -3.0];
    let levels = [uniform_level(2, 4, 4, cell), uniform_level(2, 2, 2, cell)];
    let out = YoloxLoss { l1: true }.forward(&levels, &[8, 16], &[vec![], vec![]]);
    let p = out.parts;
    assert_eq!((p.num_fg, p.num_gt), (0, 0));
    assert_eq!((p.iou, p.cls, p.l1), (0.0, 0.0, 0.0));
    close(p.obj, 40.0 * softplus(-2.0), 1e-6);
    let total = values(out.loss)[0];
    assert!(total.is_finite());
    close(total as f64, 40.0 * softplus(-2.0), 1e-6);
}

#[test]
fn gradients_reach_every_level_and_are_finite() {
    // Deterministic inputs in [−1.5, 1.5), not burn's process-wide RNG (tests run concurrently).
    let device = Default::default();
    let levels: Vec<Tensor<Ad, 4>> = [[8, 8], [4, 4], [2, 2]]
        .iter()
        .map(|&[h, w]| {
            let values: Vec<f32> = (0..2 * 8 * h * w)
                .map(|i| ((i * 7919 + h) % 3000) as f32 / 1000.0 - 1.5)
                .collect();
            Tensor::<Ad, 4>::from_data(TensorData::new(values, [2, 8, h, w]), &device).require_grad()
        })
        .collect();
    let targets = vec![
        vec![
            TargetBox {
                class: 2,
                xyxy: [4.0, 6.0, 30.0, 40.0],
            },
            TargetBox {
                class: 0,
                xyxy: [20.0, 30.0, 60.0, 62.0],
            },
        ],
        vec![],
    ];
    let out = YoloxLoss { l1: true }.forward(&levels, &STRIDES, &targets);
    let p = out.parts;
    assert!(p.num_fg >= 2 && p.iou > 0.0 && p.cls > 0.0 && p.l1 > 0.0, "{p:?}");
    let grads = out.loss.backward();
    for level in &levels {
        let grad = values(level.grad(&grads).expect("a gradient"));
        assert!(grad.iter().all(|g| g.is_finite()));
        assert!(grad.iter().any(|&g| g != 0.0));
    }
    // Image 1 has no gt, so ∂loss/∂obj at its cells is σ(x) / num_fg, BCE's exact gradient.
    let (grad, x) = (
        values(levels[0].grad(&grads).unwrap()),
        values(levels[0].clone().inner()),
    );
    let at = 64 * 8 + 4 * 64 + 9; // image 1, channel 4, cell 9
    let sigmoid = 1.0 / (1.0 + (-x[at] as f64).exp());
    close(grad[at] as f64, sigmoid / p.num_fg as f64, 1e-5);
}
