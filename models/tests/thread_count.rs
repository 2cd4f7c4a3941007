//! The CPU kernels give the same results whatever the size of the thread pool they run on:
//! kiln-serve's model workers run on pools of one thread, training on the global pool.

use burn::prelude::*;
use burn::tensor::Distribution;
use burn_flex::Flex;
use kiln_models::{NetConfig, ResNetArch, ResNetConfig, Yolox, YoloxVariant};

/// Runs `f` on a fresh pool of `threads` threads.
fn on_threads<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

/// `forward` on one thread and on three agree within 1e-4 relative.
fn same_on_one_and_three_threads(what: &str, forward: impl Fn() -> Vec<f32> + Sync) {
    let one = on_threads(1, &forward);
    let three = on_threads(3, &forward);
    assert_eq!(one.len(), three.len(), "{what}");
    let scale = three.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
    for (i, (a, b)) in one.iter().zip(&three).enumerate() {
        assert!(
            a.is_finite() && (a - b).abs() <= 1e-4 * scale,
            "{what}: output {i} is {a} on one thread, {b} on three"
        );
    }
}

fn input(shape: [usize; 4]) -> Tensor<Flex, 4> {
    let device = Default::default();
    Flex::seed(&device, 3);
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), &device)
}

#[test]
fn net_forward() {
    let net = NetConfig::new().init::<Flex>(&Default::default());
    let x = input([4, 1, 28, 28]);
    same_on_one_and_three_threads("Net", || net.forward(x.clone()).into_data().to_vec().unwrap());
}

#[test]
fn resnet18_forward() {
    let model = ResNetConfig::new(ResNetArch::ResNet18, 10).init::<Flex>(&Default::default());
    let x = input([2, 3, 64, 64]);
    same_on_one_and_three_threads("resnet18", || model.forward(x.clone()).into_data().to_vec().unwrap());
}

#[test]
fn yolox_nano_forward() {
    let model = Yolox::<Flex>::new(YoloxVariant::Nano, 3, &Default::default());
    let x = input([2, 3, 64, 64]);
    same_on_one_and_three_threads("yolox-nano", || {
        model
            .forward(x.clone())
            .into_iter()
            .flat_map(|level| level.into_data().to_vec::<f32>().unwrap())
            .collect()
    });
}
