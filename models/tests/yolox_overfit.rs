//! A YOLOX-nano overfits a small batch with [`YoloxLoss`]. In its own test binary: burn's
//! backend RNG is process-wide, so a test building models concurrently would change this
//! model's initialisation and the training trajectory the thresholds were set on.

use burn::backend::Autodiff;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, Optimizer, SgdConfig};
use burn::prelude::*;
use burn_flex::Flex;
use kiln_models::yolox::TargetBox;
use kiln_models::yolox::{Yolox, YoloxLoss, YoloxVariant, STRIDES};

type Ad = Autodiff<Flex>;

#[test]
fn a_nano_model_overfits_a_small_batch() {
    // Two 64×64 images, gray with flat coloured rectangles, one box per rectangle, 2 classes;
    // 30 steps of SGD with momentum on the same batch. Halving YOLOX's loss takes longer than
    // that from scratch: SimOTA keeps moving the foreground, the IoU term learns slowly and the
    // IoU-aware class targets rise with the IoU (the official PyTorch YOLOX-nano, same data,
    // lr, and steps, ends at 0.55–0.76 of its first loss over 6 seeds; kiln at 0.48–0.79 over
    // seeds 0–7: 0.79 for seed 0, with objectness only down to 0.74; seed 3's IoU term rises
    // as SimOTA adds foreground). So, from seed 1's initialisation (0.49): the total falls by
    // a quarter, objectness by half, and the IoU term falls.
    let device = Default::default();
    Ad::seed(&device, 1);
    let targets = vec![
        vec![
            TargetBox {
                class: 0,
                xyxy: [6.0, 8.0, 30.0, 40.0],
            },
            TargetBox {
                class: 1,
                xyxy: [34.0, 28.0, 58.0, 56.0],
            },
        ],
        vec![TargetBox {
            class: 1,
            xyxy: [16.0, 12.0, 48.0, 44.0],
        }],
    ];
    let colour = [[0.9f32, 0.1, 0.1], [0.1, 0.2, 0.9]];
    let mut pixels = vec![0.5f32; 2 * 3 * 64 * 64];
    for (i, boxes) in targets.iter().enumerate() {
        for b in boxes {
            let [x1, y1, x2, y2] = b.xyxy.map(|v| v as usize);
            for (c, value) in colour[b.class].iter().enumerate() {
                for y in y1..y2 {
                    pixels[((i * 3 + c) * 64 + y) * 64 + x1..((i * 3 + c) * 64 + y) * 64 + x2].fill(*value);
                }
            }
        }
    }
    let images = Tensor::<Ad, 4>::from_data(TensorData::new(pixels, [2, 3, 64, 64]), &device);

    let mut model = Yolox::<Ad>::new(YoloxVariant::Nano, 2, &device);
    let mut optim = SgdConfig::new()
        .with_momentum(Some(MomentumConfig {
            momentum: 0.9,
            dampening: 0.0,
            nesterov: false,
        }))
        .init::<Ad, Yolox<Ad>>();
    let loss = YoloxLoss::default();
    let mut history = Vec::new();
    for _ in 0..30 {
        let out = loss.forward(&model.forward(images.clone()), &STRIDES, &targets);
        history.push(out.parts);
        let grads = GradientsParams::from_grads(out.loss.backward(), &model);
        model = optim.step(0.002, model, grads);
    }
    let (first, last) = (
        history[0],
        loss.forward(&model.forward(images), &STRIDES, &targets).parts,
    );
    eprintln!("overfit: first {first:?}\n         last {last:?}");
    assert!(history.iter().all(|p| p.total().is_finite()));
    assert!(
        last.total() < 0.75 * first.total(),
        "total {} → {}",
        first.total(),
        last.total()
    );
    assert!(last.obj < 0.5 * first.obj, "objectness {} → {}", first.obj, last.obj);
    assert!(last.iou < first.iou, "IoU term {} → {}", first.iou, last.iou);
}
