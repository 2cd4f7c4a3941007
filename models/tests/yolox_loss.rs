//! kiln-models' YOLOX loss against the official YOLOX 0.3.0 code: a fixture whose SimOTA
//! assignments, loss terms and input gradients `YOLOXHead` computed
//! (`fixtures/yolox_loss/make_fixture.py`).

use burn::backend::Autodiff;
use burn::prelude::*;
use burn_flex::Flex;
use kiln_models::yolox::TargetBox;
use kiln_models::yolox::{Match, YoloxLoss};
use serde_json::Value;

type Ad = Autodiff<Flex>;

fn fixture() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/yolox_loss/fixture.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn usize_of(v: &Value) -> usize {
    v.as_u64().unwrap() as usize
}

fn levels(fx: &Value) -> Vec<Tensor<Ad, 4>> {
    fx["levels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|level| {
            let shape: Vec<usize> = level["shape"].as_array().unwrap().iter().map(usize_of).collect();
            let data = TensorData::new(floats(&level["values"]), [shape[0], shape[1], shape[2], shape[3]]);
            Tensor::<Ad, 4>::from_data(data, &Default::default()).require_grad()
        })
        .collect()
}

fn targets(fx: &Value) -> Vec<Vec<TargetBox>> {
    fx["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|boxes| {
            boxes
                .as_array()
                .unwrap()
                .iter()
                .map(|b| {
                    let xyxy = floats(&b["xyxy"]);
                    TargetBox {
                        class: usize_of(&b["class"]),
                        xyxy: [xyxy[0], xyxy[1], xyxy[2], xyxy[3]],
                    }
                })
                .collect()
        })
        .collect()
}

fn strides(fx: &Value) -> Vec<usize> {
    fx["strides"].as_array().unwrap().iter().map(usize_of).collect()
}

fn assert_close(what: &str, got: f64, want: f64, tol: f64) {
    assert!(
        (got - want).abs() <= tol * want.abs().max(1.0),
        "{what}: got {got}, want {want}"
    );
}

#[test]
fn simota_assignments_are_yoloxs() {
    let fx = fixture();
    let out = YoloxLoss::default().forward(&levels(&fx), &strides(&fx), &targets(&fx));
    let want = fx["assignments"].as_array().unwrap();
    assert_eq!(out.assignments.len(), want.len());
    for (image, (got, want)) in out.assignments.iter().zip(want).enumerate() {
        let want: Vec<Match> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|m| Match {
                cell: usize_of(&m["cell"]),
                gt: usize_of(&m["gt"]),
                class: usize_of(&m["class"]),
                iou: m["iou"].as_f64().unwrap() as f32,
            })
            .collect();
        let key = |m: &Match| (m.cell, m.gt, m.class);
        assert_eq!(
            got.matches.iter().map(key).collect::<Vec<_>>(),
            want.iter().map(key).collect::<Vec<_>>(),
            "image {image}"
        );
        for (g, w) in got.matches.iter().zip(&want) {
            assert_close(
                &format!("image {image} cell {} IoU", g.cell),
                g.iou as f64,
                w.iou as f64,
                1e-5,
            );
        }
    }
}

#[test]
fn loss_terms_and_gradients_are_yoloxs() {
    let fx = fixture();
    let (strides, targets) = (strides(&fx), targets(&fx));
    for (l1, key) in [(false, "no_l1"), (true, "l1")] {
        let levels = levels(&fx);
        let out = YoloxLoss { l1 }.forward(&levels, &strides, &targets);
        let want = &fx["losses"][key];
        let p = out.parts;
        assert_eq!(p.num_fg, usize_of(&want["num_fg"]), "{key}");
        for (name, got) in [
            ("iou", p.iou),
            ("obj", p.obj),
            ("cls", p.cls),
            ("l1", p.l1),
            ("total", p.total()),
        ] {
            assert_close(&format!("{key} {name}"), got, want[name].as_f64().unwrap(), 1e-5);
        }
        let total: f32 = out.loss.clone().into_scalar();
        assert_close(
            &format!("{key} loss tensor"),
            total as f64,
            want["total"].as_f64().unwrap(),
            1e-5,
        );
        if !l1 {
            continue;
        }
        let grads = out.loss.backward();
        for (i, (level, want)) in levels.iter().zip(fx["grads"].as_array().unwrap()).enumerate() {
            let got: Vec<f32> = level.grad(&grads).unwrap().into_data().to_vec().unwrap();
            let want = floats(want);
            assert_eq!(got.len(), want.len());
            for (j, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-6 + 1e-4 * w.abs(),
                    "level {i} value {j}: got {g}, want {w}"
                );
            }
        }
    }
}
